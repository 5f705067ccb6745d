"""The controller's work: whenever the live brokers change, give every partition whose leader died a
new leader from its ISR, and take dead followers out of ISRs; and the topic records any broker writes.

Each partition changes in its own transaction, fenced twice: on the controller epoch (a deposed
controller writes nothing) and on the partition's mod_revision (a state changed since it was read,
by a leader shrinking its ISR for instance, is read again, never overwritten).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..errors import ClusterUnavailableError, InvalidRequestError, TopicExistsError, UnknownTopicError
from . import reassignment
from .membership import BrokerSession
from .metadata import Snapshot
from .placement import (
    NO_LEADER,
    PartitionState,
    TopicPlacement,
    elect_leader,
    partition_key,
    partitions_prefix,
    topic_key,
)

log = logging.getLogger("tidelog.cluster")


class Controller:
    """Runs on every broker; acts only while its broker is the controller."""

    def __init__(self, session: BrokerSession) -> None:
        self.session = session
        self.elections = 0  # leaders this broker elected as controller (a metric)

    async def act(self, snapshot: Snapshot) -> bool:
        """Apply what the snapshot calls for; True when something was written (the caller reads again).

        Per partition, one change per pass: an election (or dead followers out of the ISR) first; only
        a partition that needs none carries its reassignment one step on (cluster/reassignment.py). A
        partition changed in this pass waits for the next snapshot (its state here is stale, and the
        write could not land anyway)."""
        if not self.session.is_controller:
            return False
        live, storage = set(snapshot.brokers), snapshot.storage()
        tx = self.session.client.transactions
        wrote = False
        for (topic, partition), state in sorted(snapshot.partitions.items()):
            new, report = elect_leader(state, live, storage), _log_change
            if new is None and state.reassigning:
                new = reassignment.step(state, {b for b in live if not state.stale(b, storage)})
                report = _log_reassignment_step
            if new is None:
                continue
            key = partition_key(self.session.cluster, topic, partition)
            if not await self.session.fenced([tx.put(key, new.encode())], [tx.mod(key) == state.version]):
                if not self.session.is_controller:
                    return wrote
                continue  # changed meanwhile: the next snapshot shows it
            wrote = True
            report(topic, partition, state, new)
            if new.leader_epoch != state.leader_epoch:
                self.elections += 1
        return wrote


def _log_change(topic: str, partition: int, old: PartitionState, new: PartitionState) -> None:
    facts = {
        "topic": topic,
        "partition": partition,
        "leader": new.leader,
        "leader_epoch": new.leader_epoch,
        "isr": list(new.isr),
        "previous_leader": old.leader,
    }
    if new.leader == NO_LEADER:
        log.error("partition offline: no in-sync replica is alive", extra={"event": "partition_offline", **facts})
    elif new.leader_epoch != old.leader_epoch:
        log.warning("leader elected", extra={"event": "leader_elected", **facts})
    else:
        log.info("ISR shrunk: dead brokers removed", extra={"event": "isr_shrunk", **facts})


def _log_reassignment_step(topic: str, partition: int, old: PartitionState, new: PartitionState) -> None:
    facts = {
        "topic": topic,
        "partition": partition,
        "leader": new.leader,
        "leader_epoch": new.leader_epoch,
        "replicas": list(new.replicas),
        "isr": list(new.isr),
    }
    if new.leader_epoch != old.leader_epoch:
        log.warning(
            "leader moved to a target replica of a reassignment",
            extra={"event": "leader_elected", "kind": "reassignment", "previous_leader": old.leader, **facts},
        )
    else:
        log.warning(
            "reassignment completed",
            extra={"event": "reassignment_completed", "removed": list(old.removing), **facts},
        )


async def create_topic(
    client: Any,
    cluster: str,
    topic: TopicPlacement,
    replicas: Sequence[tuple[int, ...]],
    storage: Mapping[int, str] | None = None,
) -> None:
    """Write a new topic and its partitions (leader: the first replica; epoch 0; ISR: every replica,
    each with the data directory it registered, `storage`) in one transaction that lands only if the
    topic does not exist."""
    tx = client.transactions
    key = topic_key(cluster, topic.name)
    puts = [tx.put(key, topic.encode())]
    for p, brokers in enumerate(replicas):
        state = PartitionState(tuple(brokers), brokers[0], 0, ()).with_isr(brokers, storage)
        puts.append(tx.put(partition_key(cluster, topic.name, p), state.encode()))
    done, _ = await client.transaction(compare=[tx.create(key) == 0], success=puts, failure=[])
    if not done:
        raise TopicExistsError(f"topic {topic.name!r} already exists", topic=topic.name)


async def delete_topic(client: Any, cluster: str, name: str) -> None:
    """Remove a topic's records from etcd; every broker then deletes its copies."""
    tx = client.transactions
    key = topic_key(cluster, name)
    start = partitions_prefix(cluster, name)
    end = start[:-1] + bytes([start[-1] + 1])
    done, _ = await client.transaction(
        compare=[tx.create(key) != 0], success=[tx.delete(key), tx.delete(start, range_end=end)], failure=[]
    )
    if not done:
        raise UnknownTopicError(f"topic {name!r} does not exist", topic=name)


async def write_isr(
    client: Any,
    cluster: str,
    topic: str,
    partition: int,
    state: PartitionState,
    isr: Sequence[int],
    storage: Mapping[int, str] | None = None,
) -> PartitionState | None:
    """A leader's change of its ISR (`storage`: the data directory of each member it adds), landing
    only on the state it read (None when it changed meanwhile: a new leader, or the controller's edit;
    the leader then acts on the newer state)."""
    tx = client.transactions
    key = partition_key(cluster, topic, partition)
    new = state.with_isr(isr, storage)
    done, _ = await client.transaction(
        compare=[tx.mod(key) == state.version], success=[tx.put(key, new.encode())], failure=[]
    )
    return new if done else None


async def elect_by_hand(
    client: Any, cluster: str, topic: str, partition: int, kind: str, broker: int | None = None
) -> tuple[PartitionState, PartitionState]:
    """An operator's election (Kafka's kafka-leader-election): (the state before, the state after).

    - "preferred": lead from the first replica again (after restarts moved leaders around), only if it
      is alive and in the ISR: nothing acknowledged can be lost.
    - "unclean": an offline partition (no live leader) led by a live replica outside the ISR (`broker`,
      or the first live replica): the partition becomes available again, and every acknowledged record
      that replica lacks is lost. Refused while a clean choice exists.

    Fenced on the partition's mod_revision: a state changed meanwhile is not overwritten (the caller
    sees ClusterUnavailableError and may try again).
    """
    from .membership import cluster_status

    key = partition_key(cluster, topic, partition)
    found = await client.get(key)
    if found is None:
        raise UnknownTopicError(f"{topic}-{partition} is not placed in cluster {cluster!r}", topic=topic)
    state = PartitionState.decode(found.value, found.mod_revision)
    registered = {b.broker_id: b.storage for b in (await cluster_status(client, cluster)).brokers}
    live = {b for b in registered if not state.stale(b, registered)}  # back on an emptied disk: not clean
    if kind == "preferred":
        preferred = state.replicas[0]
        if state.leader == preferred:
            return state, state
        if preferred not in live or preferred not in state.isr:
            raise InvalidRequestError(
                f"{topic}-{partition}: the preferred replica {preferred} is "
                + (
                    ("back on another data directory" if preferred in registered else "not alive")
                    if preferred not in live
                    else f"not in the ISR {list(state.isr)}"
                )
                + "; nothing was changed"
            )
        new = state.with_leader(preferred, state.isr)
    elif kind == "unclean":
        if state.leader != NO_LEADER and state.leader in live:
            raise InvalidRequestError(f"{topic}-{partition} has a live leader ({state.leader}): nothing to elect")
        clean = [b for b in state.replicas if b in state.isr and b in live]
        if clean:
            raise InvalidRequestError(
                f"{topic}-{partition}: in-sync replica {clean[0]} is alive and will be elected cleanly; "
                "an unclean election is refused"
            )
        candidates = [b for b in state.replicas if b in registered and (broker is None or b == broker)]
        if not candidates:
            raise InvalidRequestError(
                f"{topic}-{partition}: no live replica{'' if broker is None else f' {broker}'} among "
                f"{list(state.replicas)} to elect"
            )
        chosen = candidates[0]
        new = replace(state.with_leader(chosen, [chosen]), storage=())
        new = new.with_isr([chosen], {chosen: registered[chosen]})
    else:
        raise InvalidRequestError(f"election kind must be preferred or unclean, not {kind!r}")
    tx = client.transactions
    done, _ = await client.transaction(
        compare=[tx.mod(key) == state.version], success=[tx.put(key, new.encode())], failure=[]
    )
    if not done:
        raise ClusterUnavailableError(f"{topic}-{partition} changed while electing; run the command again")
    log.warning(
        "leader elected by hand",
        extra={
            "event": "leader_elected",
            "kind": kind,
            "topic": topic,
            "partition": partition,
            "leader": new.leader,
            "leader_epoch": new.leader_epoch,
            "isr": list(new.isr),
        },
    )
    return state, new


async def rebalance_leaders(client: Any, cluster: str) -> list[tuple[str, int, int, int]]:
    """Move every partition's leadership back to its preferred (first) replica where that replica is
    alive and in the ISR (after restarts piled leaders up on a few brokers): [(topic, partition, from,
    to)] for each partition moved. Each move is one fenced preferred election; a partition whose
    preferred replica cannot lead cleanly is left as it is."""
    from .membership import prefix
    from .metadata import parse

    snapshot = parse(cluster, 0, await client.get_prefix(prefix(cluster)))
    moved = []
    for (topic, partition), state in sorted(snapshot.partitions.items()):
        preferred = state.replicas[0]
        if state.leader == preferred or preferred not in state.isr or preferred not in snapshot.brokers:
            continue
        try:
            before, after = await elect_by_hand(client, cluster, topic, partition, "preferred")
        except (InvalidRequestError, ClusterUnavailableError) as exc:
            log.warning("%s-%d: preferred leader not elected: %s", topic, partition, exc.message)
            continue
        if after.leader != before.leader:
            moved.append((topic, partition, before.leader, after.leader))
    return moved
