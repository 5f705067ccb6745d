"""What the engine hands back: produce acknowledgements, fetched batches, descriptions."""

from __future__ import annotations

from typing import Iterator, NamedTuple

from ..codec.batch import BatchView, Record, iter_batches
from ..config import TopicConfig
from ..log.partition_log import PartitionInfo, PartitionStats


class ProduceResult(NamedTuple):
    """Records acknowledged in one partition: offsets base_offset..last_offset, in order."""

    topic: str
    partition: int
    base_offset: int
    last_offset: int

    @property
    def count(self) -> int:
        return self.last_offset - self.base_offset + 1


class PartitionStatus(NamedTuple):
    """One partition as monitoring sees it: offsets and sizes now, traffic since the engine opened."""

    topic: str
    partition: int
    info: PartitionInfo
    stats: PartitionStats


class PartitionOffsets(NamedTuple):
    """The named offsets of a partition (see tidelog.log.offsets)."""

    log_start: int
    log_end: int
    high_watermark: int
    flushed: int

    @property
    def earliest(self) -> int:
        return self.log_start

    @property
    def latest(self) -> int:
        """Where a new reader starting "at the end" begins: the high watermark."""
        return self.high_watermark


class PartitionDescription(NamedTuple):
    partition: int
    log_start: int
    log_end: int
    high_watermark: int
    flushed: int
    size_bytes: int
    segments: int


class TopicDescription(NamedTuple):
    name: str
    config: TopicConfig
    partitions: list[PartitionDescription]
    created_ms: int

    @property
    def size_bytes(self) -> int:
        return sum(p.size_bytes for p in self.partitions)


class FetchResult:
    """Whole record batches of one partition, as they sit in the segment (zero-copy).

    `data` is a memoryview of the segment file's map: the exact bytes to send on the wire. Iterating
    gives Record objects from the requested offset on (a batch may start before it); `batches()`
    gives BatchViews with columnar access and no Python object per record.
    """

    __slots__ = ("topic", "partition", "offset", "next_offset", "high_watermark", "log_start", "data", "copy")

    def __init__(self, topic: str, partition: int, offset: int, next_offset: int, high_watermark: int,
                 log_start: int, data: memoryview, copy: bool = True) -> None:
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
        return (f"FetchResult(topic={self.topic!r}, partition={self.partition}, offset={self.offset}, "
                f"next_offset={self.next_offset}, bytes={len(self.data)}, high_watermark={self.high_watermark})")
