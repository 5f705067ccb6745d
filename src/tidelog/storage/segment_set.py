"""The ordered segments of one partition: floor lookup by offset, and the active (last) segment.

Not thread-safe: the partition log's lock guards changes. A reader that picked a segment under that
lock may keep using it after it is removed: removal never invalidates views already taken.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from .segment import Segment


class SegmentSet:
    def __init__(self, segments: list[Segment]) -> None:
        if not segments:
            raise AssertionError("a partition always has at least one segment")
        self._segments = sorted(segments, key=lambda s: s.base_offset)
        self._bases = [s.base_offset for s in self._segments]

    @property
    def active(self) -> Segment:
        return self._segments[-1]

    @property
    def first(self) -> Segment:
        return self._segments[0]

    def floor(self, offset: int) -> Segment:
        """The segment holding offset: the last one whose base offset is <= offset."""
        i = bisect.bisect_right(self._bases, offset) - 1
        return self._segments[max(i, 0)]

    def after(self, segment: Segment) -> Segment | None:
        i = bisect.bisect_right(self._bases, segment.base_offset)
        return self._segments[i] if i < len(self._segments) else None

    def add(self, segment: Segment) -> None:
        assert segment.base_offset > self._bases[-1], "segments are added in offset order"
        self._segments.append(segment)
        self._bases.append(segment.base_offset)

    def remove_oldest(self, n: int) -> list[Segment]:
        """Take the n oldest segments out (never the active one)."""
        n = min(n, len(self._segments) - 1)
        removed = self._segments[:n]
        del self._segments[:n], self._bases[:n]
        return removed

    def remove_after(self, segment: Segment) -> list[Segment]:
        """Take out every segment after `segment` (a cut log), which becomes the last one."""
        i = self._segments.index(segment) + 1
        removed = self._segments[i:]
        del self._segments[i:], self._bases[i:]
        return removed

    @property
    def sealed(self) -> list[Segment]:
        return self._segments[:-1]

    def total_size(self) -> int:
        return sum(s.size for s in self._segments)

    def __iter__(self) -> Iterator[Segment]:
        return iter(list(self._segments))

    def __len__(self) -> int:
        return len(self._segments)
