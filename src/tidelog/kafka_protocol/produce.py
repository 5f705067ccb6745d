"""The Produce hot path: a request walked by hand, handing the engine one memoryview per partition.

The records of each partition are Kafka's RecordBatch v2 bytes, appended verbatim (the log overwrites
the base offsets in place): nothing of them is copied into Python objects or decoded here. The
response is small and goes through the codec.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import codec
from .framing import MalformedError, Reader

FIRST_VERSION_SERVED = 3  # v0-2 carry message formats v0/v1; refused with UNSUPPORTED_VERSION, as Kafka 4.0 does


class PartitionData(NamedTuple):
    topic: str
    partition: int
    records: memoryview | None


class ProduceRequest(NamedTuple):
    transactional_id: str | None
    acks: int
    timeout_ms: int
    partitions: list[PartitionData]


def parse(body: memoryview, version: int) -> ProduceRequest:
    """Walk a Produce request (v0-v12) without copying its records."""
    compact = version >= 9
    r = Reader(body)
    transactional_id = r.string(compact) if version >= 3 else None
    acks = r.int16()
    timeout_ms = r.int32()
    partitions: list[PartitionData] = []
    for _ in range(max(r.array_length(compact), 0)):
        topic = r.string(compact)
        if topic is None:
            raise MalformedError("a produce request names a null topic")
        for _ in range(max(r.array_length(compact), 0)):
            index = r.int32()
            partitions.append(PartitionData(topic, index, r.nullable_bytes(compact)))
            if compact:
                r.skip_tags()
        if compact:
            r.skip_tags()
    if compact:
        r.skip_tags()
    if acks not in (-1, 0, 1):
        raise MalformedError(f"acks must be -1, 0 or 1, got {acks}")
    return ProduceRequest(transactional_id, acks, timeout_ms, partitions)


class Outcome(NamedTuple):
    """One partition's answer."""

    topic: str
    partition: int
    error: int
    base_offset: int = -1
    message: str | None = None


def encode_response(version: int, outcomes: list[Outcome]) -> bytes:
    topics: dict[str, list[dict[str, Any]]] = {}
    for o in outcomes:
        part: dict[str, Any] = {"index": o.partition, "error_code": o.error, "base_offset": o.base_offset}
        if version >= 8 and o.message is not None:
            part["error_message"] = o.message
        topics.setdefault(o.topic, []).append(part)
    return codec.encode_response(
        codec.SERVED[codec.PRODUCE],
        version,
        {
            "responses": [{"name": t, "partition_responses": parts} for t, parts in topics.items()],
            "throttle_time_ms": 0,
        },
    )


def refused(request: ProduceRequest, error: int, message: str) -> list[Outcome]:
    return [Outcome(p.topic, p.partition, error, -1, message) for p in request.partitions]


NO_TRANSACTIONS = "transactions are not supported by tidelog (produce without transactional.id)"
