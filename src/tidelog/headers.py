"""Record headers tidelog gives a meaning to. They are ordinary Kafka record headers, so the log stays
readable by any Kafka client; only queue consumers act on them. Shared by the producer (which sets
the delay) and the broker's queues (which honour it and write dead letters). Pure; thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterable

NOT_BEFORE = "tidelog-not-before"
"""Not handed to a queue consumer before this time: milliseconds since the epoch, ASCII decimal.
Plain log consumers (offsets, groups) see the record at once."""

# Set on a dead letter: where it came from and why it was given up
DLQ_QUEUE = "tidelog-dlq-queue"
DLQ_TOPIC = "tidelog-dlq-topic"
DLQ_PARTITION = "tidelog-dlq-partition"
DLQ_OFFSET = "tidelog-dlq-offset"
DLQ_DELIVERIES = "tidelog-dlq-delivery-count"
DLQ_REASON = "tidelog-dlq-reason"
DLQ_HEADERS = (DLQ_QUEUE, DLQ_TOPIC, DLQ_PARTITION, DLQ_OFFSET, DLQ_DELIVERIES, DLQ_REASON)


def not_before_ms(headers: Iterable[tuple[str, bytes | None]]) -> int:
    """The record's not-before time (0: none). A value that is not a number counts as none: the record
    was written by some other client, and delivering it is better than holding it forever."""
    for name, value in headers:
        if name == NOT_BEFORE and value:
            try:
                return max(0, int(bytes(value)))
            except ValueError:
                return 0
    return 0


def with_not_before(headers: Iterable[tuple[str, bytes | None]], at_ms: int) -> list[tuple[str, bytes | None]]:
    """The headers with the not-before time set to `at_ms` (replacing one already there)."""
    return [(k, v) for k, v in headers if k != NOT_BEFORE] + [(NOT_BEFORE, str(int(at_ms)).encode())]


def without(headers: Iterable[tuple[str, bytes | None]], names: Iterable[str]) -> list[tuple[str, bytes | None]]:
    drop = set(names)
    return [(k, v) for k, v in headers if k not in drop]
