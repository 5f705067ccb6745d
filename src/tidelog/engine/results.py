"""What a fetch hands back: whole batches of one partition, zero-copy (the other results are value
types shared with the client: tidelog.values)."""

from __future__ import annotations

from collections.abc import Iterator

from ..codec.batch import BatchView, Record, iter_batches


class FetchResult:
    """Whole record batches of one partition, as they sit in the segment (zero-copy).

    `data` is a memoryview of the segment file's map: the exact bytes to send on the wire. Iterating
    gives Record objects from the requested offset on (a batch may start before it); `batches()`
    gives BatchViews with columnar access and no Python object per record.
    """

    __slots__ = ("topic", "partition", "offset", "next_offset", "high_watermark", "log_start", "data", "copy")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        next_offset: int,
        high_watermark: int,
        log_start: int,
        data: memoryview,
        copy: bool = True,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.next_offset = next_offset
        self.high_watermark = high_watermark
        self.log_start = log_start
        self.data = data
        self.copy = copy

    def batches(self) -> Iterator[BatchView]:
        return iter_batches(self.data)

    def records(self, copy: bool | None = None) -> list[Record]:
        """All records at or after the requested offset; copy=False gives memoryview keys and values."""
        copy = self.copy if copy is None else copy
        out: list[Record] = []
        for batch in self.batches():
            out += batch.records(self.offset, copy)
        return out

    def __iter__(self) -> Iterator[Record]:
        # Batch by batch: a large fetch never holds all of its Record objects at once.
        for batch in self.batches():
            yield from batch.records(self.offset, self.copy)

    def __bool__(self) -> bool:
        return len(self.data) > 0

    @property
    def lag(self) -> int:
        """Records between where this fetch ends and the high watermark."""
        return max(self.high_watermark - self.next_offset, 0)

    def __repr__(self) -> str:
        return (
            f"FetchResult(topic={self.topic!r}, partition={self.partition}, offset={self.offset}, "
            f"next_offset={self.next_offset}, bytes={len(self.data)}, high_watermark={self.high_watermark})"
        )
