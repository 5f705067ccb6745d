"""The checker of a consumer group's ownership guarantee, over the delivery logs its members write
(tests/helpers/group_member.py): shared by the group chaos test and the adversarial loop.

- no double ownership: for each partition, the spans [first delivery, last delivery] of different
  tenures (one uninterrupted ownership of a partition by a member) never overlap;
- at least once: every acknowledged record is delivered by some tenure;
- order: each tenure delivers a contiguous run of offsets, in order (nothing skipped);
- no delivery outside a tenure (a record of a partition the member was never assigned).
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass


@dataclass
class Delivery:
    t_ns: int
    member: str
    tenure: str
    partition: int
    offset: int


def read_deliveries(log_path: str) -> list[Delivery]:
    out = []
    if not os.path.exists(log_path):
        return out
    with open(log_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 8 and parts[0] == "D":
                out.append(Delivery(int(parts[1]), parts[3], parts[4], int(parts[6]), int(parts[7])))
    return out


def check(deliveries: list[Delivery], acked: dict[int, set[int]], events: list[tuple[int, str]]) -> list[str]:
    """Every violation, as sentences naming the adversary's last move before it (events: (monotonic
    ns, what the adversary did))."""
    incidents = []

    def cause(t_ns: int) -> str:
        before = [what for at, what in events if at <= t_ns]
        return before[-1] if before else "start"

    tenures: dict[str, list[Delivery]] = collections.defaultdict(list)
    for d in sorted(deliveries, key=lambda d: d.t_ns):
        if d.tenure == "none":
            incidents.append(
                f"{d.member} delivered partition {d.partition} offset {d.offset} without an assignment "
                f"(after {cause(d.t_ns)})"
            )
        else:
            tenures[d.tenure].append(d)
    for tenure, items in tenures.items():
        offsets = [d.offset for d in items]
        if offsets != list(range(offsets[0], offsets[0] + len(offsets))):
            incidents.append(
                f"tenure {tenure} of partition {items[0].partition} delivered offsets out of order "
                f"or with a gap: {offsets[:20]}..."
            )
    by_partition = collections.defaultdict(list)
    for tenure, items in tenures.items():
        by_partition[items[0].partition].append((items[0].t_ns, items[-1].t_ns, tenure))
    for partition, spans in sorted(by_partition.items()):
        spans.sort()
        latest_end, latest = -1, None
        for first, last, tenure in spans:
            if latest is not None and first <= latest_end:
                incidents.append(
                    f"partition {partition}: tenures {latest} and {tenure} both delivered within "
                    f"{(latest_end - first) / 1e6:.0f} ms (after {cause(first)})"
                )
            if last > latest_end:
                latest_end, latest = last, tenure
    delivered = collections.defaultdict(set)
    for d in deliveries:
        delivered[d.partition].add(d.offset)
    for partition, offsets in sorted(acked.items()):
        missing = sorted(offsets - delivered[partition])
        if missing:
            incidents.append(
                f"partition {partition}: {len(missing)} acknowledged records never delivered, from offset {missing[0]}"
            )
    return incidents
