"""Where a Kafka client's requests belong when the listener is one broker of a cluster.

A single broker leads every partition and coordinates every group, so the handlers (apis.py) need
nothing more than the engine. In a cluster each partition has one leader, each topic lives in etcd and
one broker coordinates the groups; the server gives the handlers a `Topology` that answers those
questions from the cluster's state (server/kafka_cluster.py), so this package never reads etcd or the
replication state itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from ..errors import TidelogError
from ..values import ProduceResult


class Node(NamedTuple):
    """A broker as Kafka clients reach it."""

    node_id: int
    host: str
    port: int


class PartitionPlacement(NamedTuple):
    partition: int
    leader: int  # -1: no leader now (an election is under way)
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    offline: list[int]  # replicas whose broker is not registered now


class CreatedTopic(NamedTuple):
    partitions: int
    replication_factor: int


class Topology(Protocol):
    def brokers(self) -> list[Node]:
        """The live brokers that serve Kafka clients."""

    def controller_id(self) -> int: ...

    def topic_names(self) -> list[str]:
        """The cluster's topics (not the broker's own)."""

    def placement(self, topic: str) -> list[PartitionPlacement]:
        """Each partition's leader and replicas; UnknownTopicError for a topic the cluster has not."""

    def check_leader(self, topic: str, partition: int, leader_epoch: int) -> None:
        """Raise unless this broker leads the partition now (NotLeaderError naming the leader), or when
        the client's leader epoch (-1: not given) is older or newer than this leader's."""

    async def append(
        self, appends: Sequence[tuple[str, int, memoryview]], acks: Sequence[int]
    ) -> list[ProduceResult | TidelogError]:
        """Append as the partitions' leader, each answered at its acks level (-1, 0 or 1)."""

    def coordinator(self) -> Node:
        """The broker that coordinates consumer groups now; NotCoordinatorError while none does."""

    async def create_topic(
        self, name: str, partitions: int, replication_factor: int, settings: dict[str, Any], validate_only: bool
    ) -> CreatedTopic:
        """Place a topic on the live brokers (replication factor -1: the default)."""

    async def delete_topic(self, name: str) -> None: ...

    def topic_settings(self, name: str) -> dict[str, Any]:
        """The topic's settings as created (overrides of the defaults); UnknownTopicError."""

    async def epoch_end_offset(self, topic: str, partition: int, current_epoch: int, epoch: int) -> tuple[int, int]:
        """(the largest leader epoch <= epoch, the offset it ends at), on the partition's leader."""
