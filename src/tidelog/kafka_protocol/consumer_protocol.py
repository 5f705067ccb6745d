"""The consumer protocol inside a classic group's opaque bytes: what Kafka consumers put in a JoinGroup's
metadata (their subscription) and the leader in each SyncGroup assignment, read here only so that
`tidelog groups describe` can show a Kafka group's members as it shows its own. Read leniently: bytes
another protocol type or a later version put there give what could be read, never an error.

Subscription: int16 version, [string topic], bytes user data, (v1+) owned partitions, ...
Assignment: int16 version, [string topic, [int32 partition]], bytes user data.
"""

from __future__ import annotations

from .framing import MalformedError, Reader


def subscription(data: bytes) -> list[str]:
    """The topics a member subscribed to ([] when unreadable)."""
    try:
        r = Reader(memoryview(data))
        r.int16()
        return [t for t in (r.string(compact=False) for _ in range(max(r.array_length(compact=False), 0))) if t]
    except MalformedError:
        return []


def assignment(data: bytes) -> list[tuple[str, int]]:
    """The (topic, partition) pairs the leader gave a member, sorted ([] when unreadable)."""
    out: list[tuple[str, int]] = []
    try:
        r = Reader(memoryview(data))
        r.int16()
        for _ in range(max(r.array_length(compact=False), 0)):
            topic = r.string(compact=False) or ""
            out += [(topic, r.int32()) for _ in range(max(r.array_length(compact=False), 0))]
    except MalformedError:
        pass
    return sorted(out)
