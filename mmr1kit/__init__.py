"""mmr1kit."""

from mmr1kit.noise import filter_library_warnings

filter_library_warnings()  # narrow: see mmr1kit.noise.LIBRARY_WARNINGS
