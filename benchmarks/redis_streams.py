"""Redis Streams as its users run it for throughput: XADD pipelined 1000 at a time, and consumer groups
reading 1000 entries per XREADGROUP with the XACK of the previous batch in the same pipeline (one round
trip per 1000 entries, not two). Used by grpc_bench.py, groups_bench.py and the suite alike.
"""

from __future__ import annotations

import time

from .harness.rounds import Stopwatch

PIPELINE = 1000  # XADDs per pipeline
COUNT = 1000  # entries per XREADGROUP
FIELD = b"v"


def xadd(r, key: str, values: list[bytes], n_records: int, cap_s: float) -> tuple[int, float, bool]:
    """XADD key * v <value> n_records times in pipelines of PIPELINE; (records, seconds, capped)."""
    npool = len(values)
    done = 0
    clock = Stopwatch(cap_s)
    while done < n_records:
        pipe = r.pipeline(transaction=False)
        add = pipe.xadd
        end = min(done + PIPELINE, n_records)
        for i in range(done, end):
            add(key, {FIELD: values[i % npool]})
        pipe.execute()
        done = end
        if clock.expired(done, n_records):
            break
    return done, clock.elapsed(), clock.capped


def stream_entries(reply) -> list:
    """Entries of an XREADGROUP reply on one stream, RESP2 ([[name, entries]]) or RESP3 ({name: entries})."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values()))[0]
    return reply[0][1]


def read_group(r, key: str, group: str, consumer: str, cap_s: float, max_reads: int, count: int = COUNT) -> dict:
    """Consume the group's entries until a read comes back empty: XREADGROUP > COUNT `count` (1000), len() of
    every value, each read pipelined with the XACK of the previous batch (the empty read acks the last one).
    `t_end` is when the last XACK was answered."""
    n = nbytes = reads = 0
    pending: list = []
    t_first = t_end = None
    clock = Stopwatch(cap_s)
    while True:
        pipe = r.pipeline(transaction=False)
        if pending:
            pipe.xack(key, group, *pending)
        pipe.xreadgroup(group, consumer, {key: ">"}, count=count)
        entries = stream_entries(pipe.execute()[-1])
        reads += 1
        if pending:
            t_end = time.clock_gettime(time.CLOCK_MONOTONIC)
        if not entries:
            break
        if t_first is None:
            t_first = time.clock_gettime(time.CLOCK_MONOTONIC)
        pending = []
        for entry_id, fields in entries:
            pending.append(entry_id)
            nbytes += len(fields[FIELD])
        n += len(entries)
        if clock.expired(0, 1) or reads >= max_reads:
            r.xack(key, group, *pending)
            t_end = time.clock_gettime(time.CLOCK_MONOTONIC)
            clock.capped = True
            break
    return {
        "records": n,
        "bytes": nbytes,
        "polls": reads,
        "capped": clock.capped,
        "seconds": clock.elapsed(),
        "t_first": t_first,
        "t_end": t_end,
    }
