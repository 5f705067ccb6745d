"""Where a cluster's partitions live: the topic and partition records kept in etcd, and how replicas
are spread over brokers.

Keys, under `/tidelog/<cluster>/`:

- `topics/<name>` → {"partitions", "replication_factor", "config", "created_ms"}
- `partitions/<name>/<p>` → {"replicas", "leader", "leader_epoch", "isr"}, and while a reassignment
  moves the partition (cluster/reassignment.py) also "adding" and "removing"

A partition record changes only through transactions that compare its mod_revision with the one the
writer read (`PartitionState.version`): two writers (the controller electing a leader, the leader
shrinking its ISR) can never both land on the same state. The leader epoch grows with every change
of leader; the ISR is the set a new leader may be chosen from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import InvalidReplicationFactorError
from .membership import prefix

NO_LEADER = -1


def topic_key(cluster: str, topic: str) -> bytes:
    return prefix(cluster) + b"topics/" + topic.encode()


def topics_prefix(cluster: str) -> bytes:
    return prefix(cluster) + b"topics/"


def partition_key(cluster: str, topic: str, partition: int) -> bytes:
    return prefix(cluster) + b"partitions/" + topic.encode() + b"/%d" % partition


def partitions_prefix(cluster: str, topic: str) -> bytes:
    return prefix(cluster) + b"partitions/" + topic.encode() + b"/"


@dataclass(frozen=True)
class TopicPlacement:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, Any] = field(default_factory=dict)  # TopicConfig overrides, typed
    created_ms: int = 0

    def encode(self) -> bytes:
        return json.dumps(
            {
                "partitions": self.partitions,
                "replication_factor": self.replication_factor,
                "config": self.config,
                "created_ms": self.created_ms,
            }
        ).encode()

    @classmethod
    def decode(cls, name: str, raw: bytes) -> TopicPlacement:
        doc = json.loads(raw)
        return cls(
            name,
            int(doc["partitions"]),
            int(doc["replication_factor"]),
            dict(doc.get("config", {})),
            int(doc.get("created_ms", 0)),
        )


@dataclass(frozen=True)
class PartitionState:
    """One partition's replicas, leader and in-sync replicas, as etcd holds them."""

    replicas: tuple[int, ...]
    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    version: int = 0  # the key's mod_revision when read (0: not written yet)
    # A reassignment in progress (cluster/reassignment.py): replicas being copied to, and replicas that
    # leave once every target replica is in sync. Empty when none runs; written only when non-empty,
    # so records of brokers that know nothing of reassignment stay what they were.
    adding: tuple[int, ...] = ()
    removing: tuple[int, ...] = ()

    def encode(self) -> bytes:
        doc: dict[str, Any] = {
            "replicas": list(self.replicas),
            "leader": self.leader,
            "leader_epoch": self.leader_epoch,
            "isr": list(self.isr),
        }
        if self.adding:
            doc["adding"] = list(self.adding)
        if self.removing:
            doc["removing"] = list(self.removing)
        return json.dumps(doc).encode()

    @classmethod
    def decode(cls, raw: bytes, version: int) -> PartitionState:
        doc = json.loads(raw)
        return cls(
            tuple(int(b) for b in doc["replicas"]),
            int(doc["leader"]),
            int(doc["leader_epoch"]),
            tuple(int(b) for b in doc["isr"]),
            version,
            tuple(int(b) for b in doc.get("adding", ())),
            tuple(int(b) for b in doc.get("removing", ())),
        )

    @property
    def reassigning(self) -> bool:
        return bool(self.adding or self.removing)

    def with_leader(self, leader: int, isr: Sequence[int]) -> PartitionState:
        """A new leadership: the epoch grows even when the same broker leads again (it may have lost
        records it once had), so followers always learn that they must check their logs."""
        return replace(self, leader=leader, leader_epoch=self.leader_epoch + 1, isr=tuple(isr))

    def with_isr(self, isr: Sequence[int]) -> PartitionState:
        return replace(self, isr=tuple(isr))


def assign_replicas(
    brokers: Sequence[int], partitions: int, replication_factor: int, start: int = 0
) -> list[tuple[int, ...]]:
    """Replica lists for a new topic, Kafka's way: partition p's first replica (its preferred leader) on
    brokers[(start + p) % n], the others on the brokers after it, so leaders and copies spread evenly."""
    live = sorted(set(brokers))
    if replication_factor < 1:
        raise InvalidReplicationFactorError(f"replication factor must be at least 1, got {replication_factor}")
    if replication_factor > len(live):
        raise InvalidReplicationFactorError(
            f"replication factor {replication_factor} needs as many live brokers; the cluster has {len(live)}"
            f" ({', '.join(map(str, live)) or 'none'})"
        )
    n = len(live)
    return [tuple(live[(start + p + i) % n] for i in range(replication_factor)) for p in range(partitions)]


def elect_leader(state: PartitionState, live: set[int]) -> PartitionState | None:
    """The partition's state after the live brokers changed, or None when nothing needs to change.

    Clean election only: a new leader comes from the ISR (the preferred order of the replica list).
    Dead brokers leave the ISR, except the last member: it keeps its place so that, when it returns,
    it (and only it, having every committed record) can lead again (the partition is offline meanwhile).
    """
    alive_isr = [b for b in state.isr if b in live]
    if state.leader != NO_LEADER and state.leader in live:
        if len(alive_isr) == len(state.isr):
            return None
        return state.with_isr([b for b in state.isr if b in live or b == state.leader])  # drop dead followers
    candidates = [b for b in state.replicas if b in alive_isr]
    if not candidates:
        if state.leader == NO_LEADER:
            return None  # still offline
        return replace(state, leader=NO_LEADER, isr=state.isr)  # the last ISR stays: only it may lead
    leader = candidates[0]
    return state.with_leader(leader, [b for b in state.isr if b in live])
