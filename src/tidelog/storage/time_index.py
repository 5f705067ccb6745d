"""Sparse time index of one segment: running maximum timestamp → batch where it was reached.

Entry layout (12 bytes, big-endian, the shape of Kafka's .timeindex): int64 timestamp, int32 offset
relative to the segment's base. At each batch that gets an offset-index entry, if the segment's
running maximum timestamp has grown since the last time entry, an entry (running max, that batch's
base offset) is written; sealing adds a final entry for the segment's maximum. Timestamps in the file
are therefore strictly increasing, and every record in or before an entry's batch has a timestamp no
larger than the entry's. Rebuilt with the offset index. Not thread-safe for writers.
"""

from __future__ import annotations

import numpy as np

from .index_file import IndexFile


class TimeIndex(IndexFile):
    dtype = np.dtype([("ts", ">i8"), ("rel", ">i4")])

    def scan_start(self, timestamp: int) -> int:
        """Relative offset to start scanning from to find the first record with ts >= timestamp.

        Every batch before the returned offset holds only smaller timestamps: the first entry that
        reaches `timestamp` bounds the search from above, the entry before it from below.
        """
        e = self.view()
        if len(e) == 0:
            return 0
        j = int(np.searchsorted(e["ts"], timestamp, side="left"))
        return int(e["rel"][j - 1]) if j > 0 else 0

    def written(self) -> np.ndarray:
        """The entries that were written: an active segment's file ends in zeroed (timestamp 0) ones."""
        e = self.view()
        return e[e["ts"] != 0] if len(e) else e

    def last(self) -> tuple[int, int]:
        """(timestamp, relative offset) of the last entry, or (-1, -1) when empty."""
        e = self.view()
        if len(e) == 0:
            return -1, -1
        return int(e["ts"][-1]), int(e["rel"][-1])

    def is_consistent(self, max_rel: int) -> bool:
        e = self.view()
        if len(e) == 0:
            return True
        rel = e["rel"].astype(np.int64)
        return bool(
            rel[0] >= 0
            and rel[-1] <= max_rel
            and np.all(np.diff(e["ts"].astype(np.int64)) > 0)
            and np.all(np.diff(rel) >= 0)
        )

    @staticmethod
    def rows(timestamps, rel_offsets) -> np.ndarray:
        out = np.empty(len(timestamps), dtype=TimeIndex.dtype)
        out["ts"] = timestamps
        out["rel"] = rel_offsets
        return out
