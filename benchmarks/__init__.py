"""Reproducible measurements of mmr1kit, separate from the tests; `python -m benchmarks.run_all` runs them all."""
