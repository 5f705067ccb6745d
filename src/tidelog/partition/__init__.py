"""A partition's log: segments plus named offsets, ordered by one lock."""
