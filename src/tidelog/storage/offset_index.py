"""Sparse offset index of one segment: relative offset → byte position of a batch in the .log.

Entry layout (8 bytes, big-endian, Kafka's .index layout): int32 offset relative to the segment's base
offset, int32 position of the batch in the .log file. One entry is written for the first batch that
starts in each `index_interval_bytes` window, so a lookup lands at most one window before the batch
it is after. Lookups are numpy binary searches. After an unclean stop the index of every segment that
recovery scans is rebuilt from the log; a sealed segment's index that fails `is_consistent` is rebuilt
too. Not thread-safe for writers (see IndexFile).
"""

from __future__ import annotations

import numpy as np

from .index_file import IndexFile


class OffsetIndex(IndexFile):
    dtype = np.dtype([("rel", ">i4"), ("pos", ">i4")])

    def floor_position(self, pos: int) -> int:
        """Position of the last indexed batch starting at or before pos (0 if none)."""
        entries = self.view()
        if len(entries) == 0:
            return 0
        i = int(np.searchsorted(entries["pos"], pos, side="right")) - 1
        return int(entries["pos"][i]) if i >= 0 else 0

    def written(self) -> np.ndarray:
        """The entries before the preallocated zeros of an active segment's file: positions grow
        strictly, so the first entry that does not grow starts the tail (entry (0, 0) comes first)."""
        e = self.view()
        if len(e) == 0:
            return e
        pos = e["pos"].astype(np.int64)
        return e[: int(np.argmax(np.r_[np.diff(pos) <= 0, True])) + 1]

    def floor_position_of(self, rel_offset: int) -> int:
        """Position of the last indexed batch whose relative offset is <= rel_offset (0 if none)."""
        e = self.written()
        i = int(np.searchsorted(e["rel"].astype(np.int64), rel_offset, side="right")) - 1
        return int(e["pos"][i]) if i >= 0 else 0

    def last(self) -> tuple[int, int]:
        """(relative offset, position) of the last entry, or (-1, 0) when empty."""
        entries = self.view()
        if len(entries) == 0:
            return -1, 0
        return int(entries["rel"][-1]), int(entries["pos"][-1])

    def is_consistent(self, log_size: int) -> bool:
        """Cheap structural check: strictly increasing offsets and positions inside the log."""
        e = self.view()
        if len(e) == 0:
            return True
        rel = e["rel"].astype(np.int64)
        pos = e["pos"].astype(np.int64)
        return bool(
            rel[0] >= 0
            and pos[0] >= 0
            and pos[-1] < max(log_size, 1)
            and np.all(np.diff(rel) > 0)
            and np.all(np.diff(pos) > 0)
        )

    @staticmethod
    def rows(rel_offsets, positions) -> np.ndarray:
        out = np.empty(len(rel_offsets), dtype=OffsetIndex.dtype)
        out["rel"] = rel_offsets
        out["pos"] = positions
        return out
