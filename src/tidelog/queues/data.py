"""What a queue needs of the topics it serves, and where it gets it.

A queue reads the records of its topics, learns their offsets, writes dead letters and redriven
records, and wants to hear of new records. On a single broker (or embedded) all of that is the engine
in this process (`LocalData`); in a cluster each partition lives with its leader, wherever that is
(server/cluster_queue_data.py). The queue's own state (`__queue_state`) is not here: it is always
written where the queue manager runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .._native.record_batch import Record
from ..engine.engine import Engine
from ..values import PartitionOffsets


class QueueData(Protocol):
    poll_s: float | None
    """None: `add_listener` wakes receivers when records arrive; else how often a waiting receiver
    looks again (records arriving at another broker call no listener here)."""

    def has_topic(self, topic: str) -> bool: ...

    def partitions(self, topic: str) -> int: ...

    def create_topic(self, topic: str, partitions: int) -> None:
        """Create a dead-letter topic the queue names but nobody created (one partition)."""

    def offsets(self, topic: str, partition: int) -> PartitionOffsets: ...

    def record_timestamp(self, topic: str, partition: int, offset: int) -> int | None: ...

    def read(self, topic: str, partition: int, offset: int, max_bytes: int) -> list[Record]:
        """Records at and after offset that every reader may see (below the high watermark)."""

    def produce(self, topic: str, values: list[bytes | None], keys: list[bytes | None], headers: list[list]) -> None:
        """Append, acknowledged as a producer's acks=all would be; partitioned by key as the engine does."""

    def add_listener(self, topic: str, partition: int, listener: Callable[[], None]) -> None: ...

    def remove_listener(self, topic: str, partition: int, listener: Callable[[], None]) -> None: ...


class LocalData:
    """The engine in this process holds every partition (a single broker, or embedded)."""

    poll_s: float | None = None

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def has_topic(self, topic: str) -> bool:
        return self.engine.has_topic(topic)

    def partitions(self, topic: str) -> int:
        return self.engine.partitions(topic)

    def create_topic(self, topic: str, partitions: int) -> None:
        self.engine.create_topic(topic, partitions)

    def offsets(self, topic: str, partition: int) -> PartitionOffsets:
        return self.engine.list_offsets(topic, partition)

    def record_timestamp(self, topic: str, partition: int, offset: int) -> int | None:
        return self.engine.record_timestamp(topic, partition, offset)

    def read(self, topic: str, partition: int, offset: int, max_bytes: int) -> list[Record]:
        return self.engine.fetch(topic, partition, offset, max_bytes).records()

    def produce(self, topic: str, values: list[bytes | None], keys: list[bytes | None], headers: list[list]) -> None:
        self.engine.produce(topic, values, keys=keys, headers=headers)

    def add_listener(self, topic: str, partition: int, listener: Callable[[], None]) -> None:
        self.engine.add_listener(topic, partition, listener)

    def remove_listener(self, topic: str, partition: int, listener: Callable[[], None]) -> None:
        self.engine.remove_listener(topic, partition, listener)
