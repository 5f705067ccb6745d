"""Value types the engine, the groups and the client share: results, descriptions, offsets.

Plain immutable values with no behaviour beyond derived properties, so that the client can use them
without importing the engine (tests/test_architecture.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from .config import TopicConfig

TopicPartition = tuple[str, int]
"""(topic, partition)."""


class ProduceResult(NamedTuple):
    """Records acknowledged in one partition: offsets base_offset..last_offset, in order."""

    topic: str
    partition: int
    base_offset: int
    last_offset: int

    # A public attribute that shadows tuple.count on purpose (the number of records acknowledged);
    # mypy sees a property overriding a method.
    @property
    def count(self) -> int:  # type: ignore[override]
        return self.last_offset - self.base_offset + 1


class PartitionStatus(NamedTuple):
    """One partition as monitoring sees it: offsets and sizes now, traffic since the engine opened."""

    topic: str
    partition: int
    info: PartitionInfo
    stats: PartitionStats


class PartitionOffsets(NamedTuple):
    """The named offsets of a partition (see tidelog.partition.offsets)."""

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
    # In a cluster: the partition's leader (None: offline, or a single broker), its epoch, replicas and ISR
    leader_id: int | None = None
    leader_epoch: int = 0
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()
    # A reassignment in progress (empty when none): replicas being added, and replicas leaving
    adding: tuple[int, ...] = ()
    removing: tuple[int, ...] = ()


class TopicDescription(NamedTuple):
    name: str
    config: TopicConfig
    partitions: list[PartitionDescription]
    created_ms: int

    @property
    def size_bytes(self) -> int:
        return sum(p.size_bytes for p in self.partitions)


class PartitionInfo(NamedTuple):
    log_start: int
    log_end: int
    high_watermark: int
    flushed: int
    size_bytes: int
    segments: int


class PartitionStats(NamedTuple):
    """Records and bytes appended to and read from a partition since it was opened."""

    appended_records: int
    appended_bytes: int
    read_records: int
    read_bytes: int


class MemberState(NamedTuple):
    """What a member is told: its id, the generation, and the partitions it may consume now."""

    member_id: str
    generation: int
    assignment: list[TopicPartition]
    heartbeat_interval_ms: int
    session_token: str = ""
    """The member's secret, given by the join that made it a member ("" otherwise): a caller across the
    network must show it to act as the member."""


class ConsumerRecord(NamedTuple):
    """A record with the topic and partition it came from."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple


class ClusterBroker(NamedTuple):
    broker_id: int
    address: str
    epoch: int


class PartitionMetadata(NamedTuple):
    """Where a partition is led (Admin.metadata). leader_address None: no leader now (an election)."""

    partition: int
    leader_id: int | None
    leader_address: str | None
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    # A reassignment in progress (empty when none): replicas being added, and replicas leaving
    adding: tuple[int, ...] = ()
    removing: tuple[int, ...] = ()


class TopicMetadata(NamedTuple):
    name: str
    partitions: list[PartitionMetadata]


class ClusterMetadata(NamedTuple):
    """What clients route by: the brokers and each partition's leader (a single broker leads all)."""

    clustered: bool
    brokers: list[ClusterBroker]
    controller_id: int | None
    topics: list[TopicMetadata]


class ClusterDescription(NamedTuple):
    """What a broker says of its cluster (Admin.describe_cluster)."""

    clustered: bool  # False: a single broker, listed alone in brokers
    cluster_name: str
    this_broker_id: int | None
    brokers: list[ClusterBroker]
    controller_id: int | None
    controller_epoch: int | None


class QueueMessage(NamedTuple):
    """A record handed to a queue consumer (queues): answer for it with (topic, partition, offset,
    delivery_count)."""

    topic: str
    partition: int
    offset: int
    delivery_count: int
    lock_until_ms: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple


class Answer(NamedTuple):
    """A consumer's answer for one delivery."""

    topic: str
    partition: int
    offset: int
    delivery_count: int


class AnswerRefused(NamedTuple):
    topic: str
    partition: int
    offset: int
    why: str


@dataclass(frozen=True)
class QueueConfig:
    """A queue's settings (queues: what its consumers declared first)."""

    topics: tuple[str, ...]
    lock_ms: int = 30_000
    max_deliveries: int = 5
    dead_letter_topic: str = ""
    max_in_flight: int = 1000
    created_ms: int = 0
    fifo: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "topics": list(self.topics),
            "lock_ms": self.lock_ms,
            "max_deliveries": self.max_deliveries,
            "dead_letter_topic": self.dead_letter_topic,
            "max_in_flight": self.max_in_flight,
            "created_ms": self.created_ms,
            "fifo": self.fifo,
        }


class QueuePartitionState(NamedTuple):
    """What `describe` says of one partition of a queue."""

    topic: str
    partition: int
    start: int  # everything before is complete
    log_end: int
    in_flight: int
    available: int  # read and ready now
    delayed: int
    unread: int  # past what the window read so far
    oldest_unacked_ms: int | None  # the age of the record at `start`, when one is outstanding


class QueueDescription(NamedTuple):
    name: str
    config: QueueConfig
    partitions: list[QueuePartitionState]
    totals: dict[str, int]  # acked, released, rejected, expired, dead_lettered, archived, skipped
