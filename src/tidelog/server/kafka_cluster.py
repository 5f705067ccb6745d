"""The Kafka listener's view of a cluster (kafka_protocol/topology.py): the brokers Kafka clients reach,
each partition's leader and replicas, and the group coordinator, from this broker's snapshot of etcd;
produce through the replication rule; topics created and deleted in etcd. Event-loop only.

Kafka clients route by this: they send a partition's produce and fetch requests to its leader and
their group's requests to the coordinator (the leader of `__consumer_offsets`-0), and refresh their
metadata on NOT_LEADER_OR_FOLLOWER or NOT_COORDINATOR, which a broker that moved on answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..cluster import controller as etcd_writes
from ..cluster.placement import NO_LEADER
from ..engine.async_engine import AsyncEngine
from ..errors import (
    BrokerUnavailableError,
    FencedLeaderEpochError,
    TidelogError,
    UnknownLeaderEpochError,
    UnknownTopicError,
)
from ..groups.records import OFFSETS_TOPIC
from ..kafka_protocol.topology import CreatedTopic, Node, PartitionPlacement
from ..replication.manager import ACKS_ALL, ACKS_LEADER, ACKS_NONE, ReplicaManager
from ..values import ProduceResult
from .admin_service import create_in_cluster
from .produce_service import append_replicated

KAFKA_ACKS = {-1: ACKS_ALL, 1: ACKS_LEADER, 0: ACKS_NONE}
JOINING = "the broker is joining its cluster; retry shortly"


def node_of(broker_id: int, endpoint: str) -> Node | None:
    """A broker's Kafka endpoint (host:port, as registered) as a Node; None when it has none."""
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        return None
    return Node(broker_id, host.strip("[]"), int(port))


class KafkaCluster:
    def __init__(
        self,
        engine: AsyncEngine,
        replicas: Callable[[], ReplicaManager | None],
        not_coordinator: Callable[[], TidelogError],
        default_replication_factor: int,
    ) -> None:
        self.engine = engine
        self._replicas = replicas  # None until the broker has joined its cluster
        self._not_coordinator = not_coordinator  # why this broker does not coordinate groups (and who does)
        self.default_replication_factor = default_replication_factor

    def _joined(self) -> ReplicaManager:
        replicas = self._replicas()
        if replicas is None:
            raise BrokerUnavailableError(JOINING)
        return replicas

    def _nodes(self) -> dict[int, Node]:
        replicas = self._replicas()
        if replicas is None:
            return {}
        nodes = {b: node_of(b, info.kafka) for b, info in replicas.snapshot.brokers.items()}
        return {b: n for b, n in sorted(nodes.items()) if n is not None}

    def brokers(self) -> list[Node]:
        return list(self._nodes().values())

    def controller_id(self) -> int:
        replicas = self._replicas()
        controller = replicas.snapshot.controller_id if replicas is not None else None
        return controller if controller is not None else NO_LEADER

    def topic_names(self) -> list[str]:
        replicas = self._replicas()
        topics = replicas.snapshot.topics if replicas is not None else {}
        return sorted(t for t in topics if not t.startswith("__"))

    def placement(self, topic: str) -> list[PartitionPlacement]:
        snapshot = self._joined().snapshot
        placed = snapshot.topics.get(topic)
        if placed is None:
            raise UnknownTopicError(f"unknown topic {topic!r}", topic=topic)
        live = self._nodes()
        out = []
        for p in range(placed.partitions):
            state = snapshot.partitions.get((topic, p))
            if state is None:  # written with the topic, in one transaction: not expected
                out.append(PartitionPlacement(p, NO_LEADER, -1, [], [], []))
                continue
            leader = state.leader if state.leader in live else NO_LEADER
            replicas = list(state.replicas)
            offline = [b for b in replicas if b not in snapshot.brokers]
            out.append(PartitionPlacement(p, leader, state.leader_epoch, replicas, list(state.isr), offline))
        return out

    def check_leader(self, topic: str, partition: int, leader_epoch: int) -> None:
        role = self._joined().leading(topic, partition)
        if leader_epoch == -1 or leader_epoch == role.state.leader_epoch:
            return
        if leader_epoch < role.state.leader_epoch:
            raise FencedLeaderEpochError(
                f"{topic}-{partition}: leader epoch {leader_epoch} is over; this leader's is {role.state.leader_epoch}"
            )
        raise UnknownLeaderEpochError(
            f"{topic}-{partition}: this broker leads epoch {role.state.leader_epoch}, not {leader_epoch} (yet)"
        )

    async def append(
        self, appends: Sequence[tuple[str, int, memoryview]], acks: Sequence[int]
    ) -> list[ProduceResult | TidelogError]:
        replicas = self._replicas()
        if replicas is None:  # not a member yet: its log may be behind a newer leader epoch
            return [BrokerUnavailableError(JOINING) for _ in appends]
        levels = [KAFKA_ACKS[a] for a in acks]
        by_partition: dict[tuple[str, int], int] = {}
        for (topic, partition, _), level in zip(appends, levels):
            # the strictest level of the partition's requests decides its admission (acks=all refused
            # below min_insync_replicas), as each gRPC request does for its own
            if by_partition.get((topic, partition)) != ACKS_ALL:
                by_partition[(topic, partition)] = level
        return await append_replicated(self.engine, replicas, appends, levels, by_partition)

    def coordinator(self) -> Node:
        """The leader of the group-state partition as etcd names it (also this broker: it answers
        NOT_COORDINATOR until it has loaded the groups, and the client asks again)."""
        state = self._joined().snapshot.partitions.get((OFFSETS_TOPIC, 0))
        node = self._nodes().get(state.leader) if state is not None else None
        if node is None:
            raise self._not_coordinator()  # (places the partition when nobody has yet)
        return node

    async def create_topic(
        self, name: str, partitions: int, replication_factor: int, settings: dict[str, Any], validate_only: bool
    ) -> CreatedTopic:
        placement, _, _ = await create_in_cluster(
            self.engine,
            self._joined(),
            name,
            partitions,
            replication_factor,
            settings,
            self.default_replication_factor,
            validate_only,
        )
        return CreatedTopic(placement.partitions, placement.replication_factor)

    async def delete_topic(self, name: str) -> None:
        session = self._joined().session
        await etcd_writes.delete_topic(session.client, session.cluster, name)

    def topic_settings(self, name: str) -> dict[str, Any]:
        placed = self._joined().snapshot.topics.get(name)
        if placed is None:
            raise UnknownTopicError(f"unknown topic {name!r}", topic=name)
        return dict(placed.config)

    async def epoch_end_offset(self, topic: str, partition: int, current_epoch: int, epoch: int) -> tuple[int, int]:
        replicas = self._joined()
        self.check_leader(topic, partition, current_epoch)
        current = replicas.leading(topic, partition).state.leader_epoch
        return await self.engine.offload(replicas.epoch_end_offset, topic, partition, current, epoch)
