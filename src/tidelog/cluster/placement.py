"""Where a cluster's partitions live: the topic and partition records kept in etcd, and how replicas
are spread over brokers.

Keys, under `/tidelog/<cluster>/`:

- `topics/<name>` → {"partitions", "replication_factor", "config", "created_ms"}
- `partitions/<name>/<p>` → {"replicas", "leader", "leader_epoch", "isr", "storage"}, and while a
  reassignment moves the partition (cluster/reassignment.py) also "adding" and "removing"

A partition record changes only through transactions that compare its mod_revision with the one the
writer read (`PartitionState.version`): two writers (the controller electing a leader, the leader
shrinking its ISR) can never both land on the same state. The leader epoch grows with every change
of leader; the ISR is the set a new leader may be chosen from.

`storage` records, for ISR members, the id of the data directory each was in sync from (the id a
broker registers; engine/storage_identity.py). A member now registered with another id restarted on
an emptied or replaced disk: it holds nothing it once held, so it counts as out of sync (neither
elected nor kept in the ISR) until its leader vouches for it again. Members without a recorded id
(state written before ids existed) are taken at their word.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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
    storage: tuple[tuple[int, str], ...] = ()  # (ISR member, the data-directory id it was in sync from)
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
        if self.storage:
            doc["storage"] = {str(b): s for b, s in self.storage}
        if self.adding:
            doc["adding"] = list(self.adding)
        if self.removing:
            doc["removing"] = list(self.removing)
        return json.dumps(doc).encode()

    @classmethod
    def decode(cls, raw: bytes, version: int) -> PartitionState:
        doc = json.loads(raw)
        storage = doc.get("storage", {})
        if not isinstance(storage, dict):
            raise ValueError(f"storage must be an object, not {storage!r}")
        return cls(
            tuple(int(b) for b in doc["replicas"]),
            int(doc["leader"]),
            int(doc["leader_epoch"]),
            tuple(int(b) for b in doc["isr"]),
            version,
            tuple(sorted((int(b), str(s)) for b, s in storage.items())),
            tuple(int(b) for b in doc.get("adding", ())),
            tuple(int(b) for b in doc.get("removing", ())),
        )

    @property
    def reassigning(self) -> bool:
        return bool(self.adding or self.removing)

    def storage_of(self, broker: int) -> str:
        """The data-directory id `broker` was in sync from ("": not recorded)."""
        return dict(self.storage).get(broker, "")

    def stale(self, broker: int, registered: Mapping[int, str]) -> bool:
        """Whether `broker` is registered now with a data directory other than the one it was in sync
        from (it restarted on an emptied or replaced disk)."""
        recorded, now = self.storage_of(broker), registered.get(broker, "")
        return bool(recorded and now and recorded != now)

    def _storage_for(self, isr: Sequence[int], added: Mapping[int, str] | None) -> tuple[tuple[int, str], ...]:
        known = dict(self.storage)
        known.update({b: s for b, s in (added or {}).items() if s})
        return tuple(sorted((b, known[b]) for b in set(isr) if b in known))

    def with_leader(self, leader: int, isr: Sequence[int], storage: Mapping[int, str] | None = None) -> PartitionState:
        """A new leadership: the epoch grows even when the same broker leads again (it may have lost
        records it once had), so followers always learn that they must check their logs."""
        return replace(
            self,
            leader=leader,
            leader_epoch=self.leader_epoch + 1,
            isr=tuple(isr),
            storage=self._storage_for(isr, storage),
        )

    def with_isr(self, isr: Sequence[int], storage: Mapping[int, str] | None = None) -> PartitionState:
        """The ISR changed: members that left lose their recorded storage; `storage` gives the data
        directory of members that joined (as their leader saw them fetch)."""
        return replace(self, isr=tuple(isr), storage=self._storage_for(isr, storage))


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


def assign_added_replicas(
    brokers: Sequence[int], existing: Sequence[Sequence[int]], added: int, replication_factor: int
) -> list[tuple[int, ...]]:
    """Replica lists for `added` new partitions of a topic whose partitions have the replica lists
    `existing`: the same spread rule as `assign_replicas`, its start continuing the round robin of
    the preferred leaders (after the last partition's), so that leaders stay spread over the brokers."""
    live = sorted(set(brokers))
    last = existing[-1][0] if existing and existing[-1] else None
    start = live.index(last) + 1 if last in live else len(existing)
    return assign_replicas(live, added, replication_factor, start=start % max(len(live), 1))


def elect_leader(
    state: PartitionState, live: set[int], storage: Mapping[int, str] | None = None
) -> PartitionState | None:
    """The partition's state after the live brokers changed, or None when nothing needs to change.

    Clean election only: a new leader comes from the ISR (the preferred order of the replica list).
    Dead brokers leave the ISR, except the last member: it keeps its place so that, when it returns,
    it (and only it, having every committed record) can lead again (the partition is offline meanwhile).
    A broker back on another data directory than the one it was in sync from (`storage`: each live
    broker's registered id) counts as dead here: it cannot lead, and leaves the ISR (the last member
    keeps its place, so the partition stays offline rather than be led by a copy that lost records).
    """
    live = {b for b in live if not state.stale(b, storage or {})}
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
