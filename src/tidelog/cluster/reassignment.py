"""Moving a partition's replicas to other brokers (Kafka's partition reassignment, KIP-455), and taking a
broker out of the cluster by moving every replica it holds (decommission).

The whole state of a move lives in the partition's record in etcd, so any controller can carry it on
after a failover:

- (a) submit: `replicas` becomes the target followed by the replicas that leave (so the target's order,
  its first being the preferred leader, survives in etcd), `adding` = target − old and `removing` =
  old − target. The leader and ISR do not change; the new replicas are followers from now on and copy
  the log like any follower.
- (b) the leader admits a caught-up new replica into the ISR by its ordinary rule (replication/leader.py).
- (c) once every target replica is in the ISR, the controller moves the leadership off a leaving leader
  to the first target replica in the ISR (a clean election: the epoch grows).
- (d) then it writes `replicas` = target, ISR = ISR ∩ target, and clears `adding`/`removing`. Brokers
  no longer named stop their roles and delete a copy of the topic they no longer hold any replica of.

Every write compares the partition's mod_revision with the state it was computed from (the controller's
also the controller epoch), so a step lands once, on exactly the state it was decided on. No record
acknowledged with acks=all can be lost: the ISR only loses brokers that leave, after every target
replica joined it, and a leader changes only to an in-sync replica.

The functions on PartitionState here are pure (unit-tested without etcd); the async ones read and write
etcd. Not thread-safe; callers run them on one event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ClusterUnavailableError, InvalidRequestError, UnknownTopicError
from .metadata import Snapshot, parse
from .placement import NO_LEADER, PartitionState, partition_key

log = logging.getLogger("tidelog.cluster")

# the states `progress` reports for a partition and a wanted target
DONE, IN_PROGRESS, OTHER = "done", "in progress", "not this target"


# -- pure transitions ----------------------------------------------------------------------------------
def target_of(state: PartitionState) -> tuple[int, ...]:
    """Where the partition is going (its replicas when no move runs)."""
    return tuple(b for b in state.replicas if b not in state.removing)


def original_of(state: PartitionState) -> tuple[int, ...]:
    """Where the partition was before the move (what a cancel restores)."""
    return tuple(b for b in state.replicas if b not in state.adding)


def begin(state: PartitionState, target: Sequence[int]) -> PartitionState:
    """Step (a): the state that starts moving `state` to `target`. A target of the same brokers in
    another order needs no copying: it is written as the new replica list at once."""
    target = tuple(target)
    if state.reassigning:
        raise InvalidRequestError("a reassignment is already in progress")
    if set(target) == set(state.replicas):
        return replace(state, replicas=target)
    leaving = tuple(b for b in state.replicas if b not in target)
    return replace(
        state,
        replicas=target + leaving,
        adding=tuple(b for b in target if b not in state.replicas),
        removing=leaving,
    )


def step(state: PartitionState, live: set[int]) -> PartitionState | None:
    """The controller's next step of a move in progress, or None while there is nothing to do yet (a
    target replica not in the ISR, or no live leader: elections come first)."""
    if not state.reassigning or state.leader == NO_LEADER:
        return None
    target = target_of(state)
    if any(b not in state.isr for b in target):
        return None  # (b): the leader admits each new replica once it has caught up
    if state.leader not in target:
        # (c): lead from a target replica first, cleanly, keeping the move's fields for step (d)
        candidates = [b for b in target if b in state.isr and b in live]
        if not candidates:
            return None
        return state.with_leader(candidates[0], state.isr)
    # (d): the target is in sync and leads: the leaving replicas go
    return replace(state.with_isr([b for b in state.isr if b in target]), replicas=target, adding=(), removing=())


def cancel(state: PartitionState) -> PartitionState:
    """Kafka's cancel: back to the original replicas, possible while the leader is still one of them."""
    if not state.reassigning:
        raise InvalidRequestError("no reassignment is in progress")
    original = original_of(state)
    if state.leader != NO_LEADER and state.leader not in original:
        raise InvalidRequestError(
            f"the leader {state.leader} is a new replica, not one of the original {list(original)}: too late to "
            "cancel; let the move finish (or reassign again once it is done)"
        )
    return replace(state.with_isr([b for b in state.isr if b in original]), replicas=original, adding=(), removing=())


def check_target(
    topic: str,
    partition: int,
    state: PartitionState,
    target: Sequence[int],
    live: Iterable[int],
    min_insync_replicas: int,
    allow_replication_factor_change: bool = False,
) -> None:
    """Refuse a target that cannot or should not be applied, with a message naming why."""
    where, live = f"{topic}-{partition}", set(live)
    if not target:
        raise InvalidRequestError(f"{where}: the target replica list is empty")
    dupes = sorted({b for b in target if list(target).count(b) > 1})
    if dupes:
        raise InvalidRequestError(f"{where}: broker(s) {', '.join(map(str, dupes))} named more than once")
    dead = [b for b in target if b not in live]
    if dead:
        raise InvalidRequestError(
            f"{where}: broker(s) {', '.join(map(str, dead))} are not registered (alive) in the cluster; "
            f"live brokers: {', '.join(map(str, sorted(live))) or 'none'}"
        )
    if state.reassigning:
        raise InvalidRequestError(
            f"{where}: a reassignment to {list(target_of(state))} is already in progress; wait for it, "
            "or undo it with --cancel"
        )
    if len(target) != len(state.replicas) and not allow_replication_factor_change:
        raise InvalidRequestError(
            f"{where}: the target has {len(target)} replicas, the partition {len(state.replicas)}; "
            "pass --allow-replication-factor-change to change the replication factor"
        )
    if len(target) < min_insync_replicas:
        raise InvalidRequestError(
            f"{where}: {len(target)} replicas is below the topic's min_insync_replicas={min_insync_replicas}: "
            "no produce with acks=all could succeed"
        )


def progress(state: PartitionState | None, target: Sequence[int]) -> str:
    """DONE, IN_PROGRESS (towards this target) or OTHER (placed elsewhere, or moving elsewhere)."""
    if state is None:
        return OTHER
    if not state.reassigning:
        return DONE if tuple(state.replicas) == tuple(target) else OTHER
    return IN_PROGRESS if target_of(state) == tuple(target) else OTHER


def plan_decommission(
    partitions: Mapping[tuple[str, int], PartitionState], broker: int, live: Iterable[int]
) -> dict[tuple[str, int], tuple[int, ...]]:
    """A target for every partition naming `broker`: its place taken (same position in the list, so the
    replication factor and the preferred order stay) by the live broker with the fewest replicas that
    is not already a replica of that partition (ties: the lowest id). Counts include the moves planned
    so far, so the replicas spread evenly."""
    others = sorted(set(live) - {broker})
    counts = dict.fromkeys(others, 0)
    for state in partitions.values():
        for b in target_of(state):
            if b in counts:
                counts[b] += 1
    plan: dict[tuple[str, int], tuple[int, ...]] = {}
    for key, state in sorted(partitions.items()):
        if broker not in state.replicas:
            continue
        where = f"{key[0]}-{key[1]}"
        if state.reassigning:
            if broker in state.removing:
                continue  # already leaving
            raise InvalidRequestError(
                f"{where}: a reassignment to {list(target_of(state))} is in progress; wait for it (or cancel it) "
                "before decommissioning"
            )
        candidates = [b for b in others if b not in state.replicas]
        if not candidates:
            raise InvalidRequestError(
                f"{where} has {len(state.replicas)} replicas {list(state.replicas)}; broker {broker} cannot leave "
                f"without another live broker to take its place (live: {', '.join(map(str, sorted(live)))})"
            )
        chosen = min(candidates, key=lambda b: (counts[b], b))
        counts[chosen] += 1
        plan[key] = tuple(chosen if b == broker else b for b in state.replicas)
    return plan


# -- etcd ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Submitted:
    topic: str
    partition: int
    before: PartitionState
    after: PartitionState


async def read_snapshot(client: Any, cluster: str) -> Snapshot:
    from .membership import prefix

    found = await client.get_prefix(prefix(cluster))
    return parse(cluster, 0, found)


def _state(snapshot: Snapshot, topic: str, partition: int) -> PartitionState:
    placement = snapshot.topics.get(topic)
    if placement is None:
        raise UnknownTopicError(f"unknown topic {topic!r} in the cluster", topic=topic)
    state = snapshot.partitions.get((topic, partition))
    if state is None or not 0 <= partition < placement.partitions:
        raise InvalidRequestError(f"topic {topic!r} has {placement.partitions} partition(s), not partition {partition}")
    return state


def _min_isr(snapshot: Snapshot, topic: str) -> int:
    from ..config import TopicConfig

    return TopicConfig().with_overrides(snapshot.topics[topic].config).min_insync_replicas


async def _write(
    client: Any, cluster: str, topic: str, partition: int, old: PartitionState, new: PartitionState
) -> None:
    tx = client.transactions
    key = partition_key(cluster, topic, partition)
    done, _ = await client.transaction(
        compare=[tx.mod(key) == old.version], success=[tx.put(key, new.encode())], failure=[]
    )
    if not done:
        raise ClusterUnavailableError(f"{topic}-{partition} changed while it was being written; run the command again")


async def submit(
    client: Any,
    cluster: str,
    targets: Mapping[tuple[str, int], Sequence[int]],
    allow_replication_factor_change: bool = False,
) -> list[Submitted]:
    """Start moving each partition to its target (step a). Every target is checked before anything is
    written, so a bad plan writes nothing. Each partition is one transaction fenced on the mod_revision
    read here."""
    if not targets:
        raise InvalidRequestError("nothing to reassign: the plan names no partition")
    snapshot = await read_snapshot(client, cluster)
    live = set(snapshot.brokers)
    planned = []
    for (topic, partition), target in sorted(targets.items()):
        state = _state(snapshot, topic, partition)
        check_target(topic, partition, state, target, live, _min_isr(snapshot, topic), allow_replication_factor_change)
        planned.append((topic, partition, state, begin(state, target)))
    out = []
    for topic, partition, state, new in planned:
        if new != state:
            await _write(client, cluster, topic, partition, state, new)
            log.info(  # the command prints its own line
                "reassignment started",
                extra={
                    "event": "reassignment_started",
                    "topic": topic,
                    "partition": partition,
                    "replicas": list(new.replicas),
                    "adding": list(new.adding),
                    "removing": list(new.removing),
                },
            )
        out.append(Submitted(topic, partition, state, new))
    return out


async def cancel_moves(client: Any, cluster: str, keys: Iterable[tuple[str, int]]) -> list[Submitted]:
    """Cancel the moves of these partitions (each checked before any is written)."""
    snapshot = await read_snapshot(client, cluster)
    planned = []
    for topic, partition in sorted(set(keys)):
        state = _state(snapshot, topic, partition)
        try:
            planned.append(Submitted(topic, partition, state, cancel(state)))
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"{topic}-{partition}: {exc.message}") from None
    for item in planned:
        await _write(client, cluster, item.topic, item.partition, item.before, item.after)
    return planned


async def progress_of(
    client: Any, cluster: str, targets: Mapping[tuple[str, int], Sequence[int]]
) -> dict[tuple[str, int], tuple[str, PartitionState | None]]:
    """Each partition's progress towards its target, and its state now."""
    snapshot = await read_snapshot(client, cluster)
    out: dict[tuple[str, int], tuple[str, PartitionState | None]] = {}
    for key, target in sorted(targets.items()):
        state = snapshot.partitions.get(key)
        out[key] = (progress(state, target), state)
    return out


async def decommission(client: Any, cluster: str, broker: int) -> list[Submitted]:
    """Plan and submit the moves that take every replica off `broker` (it may be alive or not)."""
    snapshot = await read_snapshot(client, cluster)
    plan = plan_decommission(snapshot.partitions, broker, snapshot.brokers)
    if not plan:
        return []
    return await submit(client, cluster, plan)


async def still_named(client: Any, cluster: str, broker: int) -> list[tuple[str, int]]:
    """The partitions that still name `broker` as a replica (empty: it may be stopped)."""
    snapshot = await read_snapshot(client, cluster)
    return sorted(key for key, state in snapshot.partitions.items() if broker in state.replicas)
