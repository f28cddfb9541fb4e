"""mmr1kit."""
