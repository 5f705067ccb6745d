"""The Fetch hot path: a response written by hand around the segment's bytes.

A fetch response is a list of parts: small prefix bytes (topic and partition headers, offsets, the
records length), then each partition's batches as the memoryview of the segment the engine handed
back (zero-copy, whole batches, from the one holding the fetch offset), then small suffix bytes. The
connection writes them in order; the segment bytes are never joined with the rest or re-encoded.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .framing import INT16, INT32, array_length, bytes_length, string

_PARTITION_HEAD = struct.Struct(">ihqqq")  # index, error, high watermark, last stable offset, log start (v5+)
_NO_ABORTED_CLASSIC = INT32.pack(-1)  # null: no transactions here
_NO_ABORTED_COMPACT = b"\x00"
_NO_PREFERRED_REPLICA = INT32.pack(-1)


class PartitionFetch(NamedTuple):
    partition: int
    error: int
    high_watermark: int
    log_start: int
    records: memoryview | bytes


def response_parts(version: int, topics: list[tuple[str, list[PartitionFetch]]]) -> tuple[list, int]:
    """(parts, their total size) of a Fetch response body, v4-v12 (session id 0: sessionless)."""
    compact = version >= 12
    out: list = []
    head = bytearray(INT32.pack(0))  # throttle_time_ms
    if version >= 7:
        head += INT16.pack(0) + INT32.pack(0)  # error_code, session_id
    head += array_length(len(topics), compact)
    size = 0
    for topic, partitions in topics:
        head += string(topic, compact)
        head += array_length(len(partitions), compact)
        for p in partitions:
            head += _PARTITION_HEAD.pack(p.partition, p.error, p.high_watermark, p.high_watermark, p.log_start)
            if version < 5:  # no log start offset before v5
                del head[-8:]
            head += _NO_ABORTED_COMPACT if compact else _NO_ABORTED_CLASSIC
            if version >= 11:
                head += _NO_PREFERRED_REPLICA
            head += bytes_length(len(p.records), compact)
            if len(p.records):
                out.append(bytes(head))
                size += len(head)
                out.append(p.records)
                size += len(p.records)
                head = bytearray()
            if compact:
                head += b"\x00"  # the partition's tagged fields
        if compact:
            head += b"\x00"  # the topic's tagged fields
    if compact:
        head += b"\x00"  # the response's tagged fields
    out.append(bytes(head))
    size += len(head)
    return out, size
