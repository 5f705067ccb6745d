"""Assignors, pure: (members and their subscriptions, partitions per topic) → assignment.

Deterministic: the same input always gives the same output (members and partitions are sorted), so
a rebalance is reproducible and testable. `sticky` (the default) keeps every partition with its
current owner where balance allows and moves as few as possible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..values import TopicPartition

Assignment = dict[str, list[TopicPartition]]


def _subscribed(members: Mapping[str, Sequence[str]], partitions: Mapping[str, int]) -> list[TopicPartition]:
    topics = sorted({t for subs in members.values() for t in subs if t in partitions})
    return [(t, p) for t in topics for p in range(partitions[t])]


def range_assign(
    members: Mapping[str, Sequence[str]],
    partitions: Mapping[str, int],
    previous: Mapping[str, Sequence[TopicPartition]] | None = None,
) -> Assignment:
    """Per topic, contiguous ranges of partitions to the members subscribed to it (Kafka's range)."""
    out: Assignment = {m: [] for m in sorted(members)}
    for topic in sorted({t for subs in members.values() for t in subs if t in partitions}):
        subscribers = sorted(m for m, subs in members.items() if topic in subs)
        n, k = partitions[topic], len(subscribers)
        start = 0
        for i, m in enumerate(subscribers):
            size = n // k + (1 if i < n % k else 0)
            out[m] += [(topic, p) for p in range(start, start + size)]
            start += size
    return out


def round_robin_assign(
    members: Mapping[str, Sequence[str]],
    partitions: Mapping[str, int],
    previous: Mapping[str, Sequence[TopicPartition]] | None = None,
) -> Assignment:
    """All subscribed partitions dealt in turn to the members subscribed to each (Kafka's round-robin)."""
    out: Assignment = {m: [] for m in sorted(members)}
    order = sorted(members)
    i = 0
    for tp in _subscribed(members, partitions):
        for _ in range(len(order)):
            m = order[i % len(order)]
            i += 1
            if tp[0] in members[m]:
                out[m].append(tp)
                break
    return out


def sticky_assign(
    members: Mapping[str, Sequence[str]],
    partitions: Mapping[str, int],
    previous: Mapping[str, Sequence[TopicPartition]] | None = None,
) -> Assignment:
    """Balanced (counts differ by at most one among members subscribed alike), moving as few
    partitions from their previous owner as it can."""
    previous = previous or {}
    order = sorted(members)
    out: Assignment = {m: [] for m in order}
    all_tps = _subscribed(members, partitions)
    if not order:
        return out
    eligible = {tp: [m for m in order if tp[0] in members[m]] for tp in all_tps}
    owner_of = {tp: m for m, tps in previous.items() if m in members for tp in tps if tp in eligible}
    # Quota: an even share of the partitions each member can take.
    share = {m: 0.0 for m in order}
    for ms in eligible.values():
        for m in ms:
            share[m] += 1 / len(ms)
    quota = {m: int(share[m]) + (1 if share[m] - int(share[m]) > 1e-9 else 0) for m in order}
    floor_quota = {m: int(share[m]) for m in order}
    # 1. keep previous owners up to their floor quota
    for tp in all_tps:
        owner = owner_of.get(tp)
        if (
            owner is not None
            and owner in eligible[tp]
            and len(out[owner]) < max(floor_quota[owner], 1 if share[owner] else 0)
        ):
            out[owner].append(tp)
    taken = {tp for tps in out.values() for tp in tps}
    # 2. previous owners may keep one more (up to the ceiling) where that still leaves balance possible
    for tp in all_tps:
        owner = owner_of.get(tp)
        if tp not in taken and owner is not None and len(out[owner]) < quota[owner]:
            out[owner].append(tp)
            taken.add(tp)
    # 3. the rest to the least-loaded eligible member (ties: name order)
    for tp in all_tps:
        if tp in taken:
            continue
        m = min(eligible[tp], key=lambda x: (len(out[x]) - quota[x], len(out[x]), x))
        out[m].append(tp)
        taken.add(tp)
    # 4. even out: members below their floor take from the most-loaded members above theirs
    while True:
        takers = [m for m in order if len(out[m]) < floor_quota[m]]
        move = None
        for m in takers:
            givers = sorted(
                (g for g in order if len(out[g]) > floor_quota[g] and len(out[g]) - len(out[m]) >= 2),
                key=lambda g: (-len(out[g]), g),
            )
            move = next(((g, tp, m) for g in givers for tp in reversed(out[g]) if m in eligible[tp]), None)
            if move:
                break
        if move is None:
            break
        giver, tp, taker = move
        out[giver].remove(tp)
        out[taker].append(tp)
    return {m: sorted(tps) for m, tps in out.items()}


ASSIGNORS = {"sticky": sticky_assign, "range": range_assign, "roundrobin": round_robin_assign}
