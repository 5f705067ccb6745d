"""End-to-end latency at a fixed rate (producer -> broker -> consumer) for the suite (`python -m benchmarks`).

Every message carries its *scheduled* send time (CLOCK_MONOTONIC ns, system-wide, so it holds across
processes) in its first 8 bytes; the producer sends message i at start + i / rate (sleeping until then, or
sending at once when late), and the consumer records `now - scheduled` in a latency histogram
(tidelog.loadgen.histogram.Latency). A stall is charged to every message it delayed: no coordinated
omission. The consumer runs in a process of its own (spawned), started and subscribed before the first
message; the producer runs in the benchmark's process. Every loop is bounded by a count and a deadline.

- tidelog: `tidelog.loadgen.runner.run(BenchConfig(scenario="e2e", linger_ms=0, ...))`, the machinery of
  `tidelog bench e2e` (a producer process with `Producer(linger_ms=0)`, a consumer process from "latest").
- Redis Streams: one `XADD` per message (no pipeline); the consumer `XREAD BLOCK 100 COUNT 1000` from the
  last id it saw.
- NATS JetStream: one `js.publish` per message awaiting its PubAck (a task per message, so a slow ack does
  not delay the schedule); the consumer is a pull consumer, `fetch(100, timeout=0.2)` in a loop, ack none.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import struct
import time
from collections.abc import Callable

from tidelog.loadgen.histogram import Latency

STAMP = struct.Struct(">q")
NATS_WINDOW = 4096  # NATS publishes awaiting their PubAck at once (250,000 unbounded tasks hung at 50k msgs/s)


# -- the schedule and the measurement (pure; unit-tested) ---------------------------------------------
def scheduled_ns(start_ns: int, rate: float, i: int) -> int:
    """When message i is due: start + i / rate."""
    return start_ns + int(round(i * 1e9 / rate))


def stamp(value: bytes, when_ns: int) -> bytes:
    """The value with its first 8 bytes replaced by the scheduled time."""
    return STAMP.pack(when_ns) + value[STAMP.size :]


def record(latency: Latency, value: bytes, now_ns: int) -> int:
    """Record now - scheduled for a stamped value; returns that latency in ns."""
    elapsed = now_ns - STAMP.unpack_from(value)[0]
    latency.record_ns(elapsed)
    return elapsed


def fixed_rate(
    send: Callable[[bytes], None],
    values: list[bytes],
    rate: float,
    n: int,
    cap_s: float,
    clock: Callable[[], int] = time.monotonic_ns,
    sleep: Callable[[float], None] = time.sleep,
    start_ns: int | None = None,
) -> int:
    """Send n stamped values at `rate`/s (late ones at once, never skipped); stops at the deadline.
    Returns how many were sent."""
    start = clock() if start_ns is None else start_ns
    deadline = start + int(cap_s * 1e9)
    npool = len(values)
    for i in range(n):
        due = scheduled_ns(start, rate, i)
        now = clock()
        if now >= deadline or due >= deadline:
            return i
        if due > now:
            sleep((due - now) / 1e9)
        send(stamp(values[i % npool], due))
    return n


# -- consumers (each in a spawned process) -------------------------------------------------------------
def _redis_consumer(port: int, key: str, n: int, timeout_s: float, ready) -> dict:
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    lat = Latency()
    last = "0-0"
    got = 0
    ready.set()
    deadline = time.monotonic() + timeout_s
    while got < n and time.monotonic() < deadline:
        reply = r.xread({key: last}, count=1000, block=100)
        now = time.monotonic_ns()
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                record(lat, fields[b"v"], now)
                got += 1
                last = entry_id
    r.close()
    return {"received": got, "latency": lat.encode()}


async def _nats_consumer_async(url: str, stream: str, n: int, timeout_s: float, ready) -> dict:
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig

    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        stream, durable="e2e", stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
    )
    lat = Latency()
    got = 0
    ready.set()
    deadline = time.monotonic() + timeout_s
    while got < n and time.monotonic() < deadline:
        try:
            msgs = await sub.fetch(100, timeout=0.2)
        except (NatsTimeout, asyncio.TimeoutError):  # nats-py raises either when a fetch times out
            continue
        now = time.monotonic_ns()
        for m in msgs:
            record(lat, m.data, now)
        got += len(msgs)
    await nc.close()
    return {"received": got, "latency": lat.encode()}


def _nats_consumer(url: str, stream: str, n: int, timeout_s: float, ready) -> dict:
    return asyncio.run(_nats_consumer_async(url, stream, n, timeout_s, ready))


def measure(consumer, args: tuple, produce: Callable[[], int], n: int, timeout_s: float) -> dict:
    """Start `consumer(*args, n, timeout_s, ready)` in a spawned process, wait until it set `ready`, run
    `produce()` here (returns how many it sent), then merge the consumer's histogram ({"received",
    "latency": Latency.encode()})."""
    ctx = multiprocessing.get_context("spawn")  # the Manager's process too: no fork of a process using gRPC
    with ctx.Manager() as manager, ctx.Pool(1) as pool:
        ready = manager.Event()
        res = pool.apply_async(consumer, args + (n, timeout_s, ready))
        if not ready.wait(60):
            raise RuntimeError("the latency consumer did not start within 60 s")
        time.sleep(0.3)  # let the subscription reach the broker
        sent = produce()
        out = res.get(timeout_s + 30)
    lat = Latency()
    lat.merge_encoded(out["latency"])
    return {"sent": sent, "received": out["received"], "latency_ms": lat.summary_ms()}


def redis_e2e(
    client, port: int, key: str, values: list[bytes], rate: float, n: int, cap_s: float, consumer=_redis_consumer
) -> dict:
    """One XADD per message at `rate`; `consumer(port, key, n, timeout_s, ready)` reads them in its process."""

    def produce() -> int:
        return fixed_rate(lambda v: client.xadd(key, {b"v": v}), values, rate, n, cap_s)

    try:
        return measure(consumer, (port, key), produce, n, cap_s + 5)
    finally:
        client.delete(key)


def nats_e2e(
    url: str, values: list[bytes], rate: float, n: int, cap_s: float, consumer=_nats_consumer, **stream_config
) -> dict:
    """One acked js.publish per message at `rate` into a fresh stream (`stream_config`: more StreamConfig
    fields); `consumer(url, stream, n, timeout_s, ready)` reads them in its process."""
    import nats

    from benchmarks.nats_bench import new_stream

    async def setup():
        nc = await nats.connect(url)
        stream = await new_stream(nc.jetstream(), **stream_config)
        await nc.close()
        return stream

    stream = asyncio.run(setup())

    def produce() -> int:
        async def go() -> int:
            nc = await nats.connect(url)
            js = nc.jetstream()
            loop = asyncio.get_running_loop()
            window = asyncio.Semaphore(NATS_WINDOW)  # publishes awaiting their PubAck
            pending: set[asyncio.Task] = set()

            async def publish(value: bytes) -> None:
                try:
                    await js.publish(stream, value)
                finally:
                    window.release()

            start = time.monotonic_ns()
            deadline = start + int(cap_s * 1e9)
            sent = 0
            try:
                for i in range(n):
                    due = scheduled_ns(start, rate, i)
                    now = time.monotonic_ns()
                    if now >= deadline:
                        break
                    if due > now:
                        await asyncio.sleep((due - now) / 1e9)
                    await window.acquire()  # a full window holds the schedule back: charged to NATS
                    task = loop.create_task(publish(stamp(values[i % len(values)], due)))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    sent += 1
                if pending:
                    await asyncio.wait(pending, timeout=30)
            finally:
                for task in pending:
                    task.cancel()
                await asyncio.wait_for(nc.close(), 10)
            return sent

        return asyncio.run(go())

    try:
        return measure(consumer, (url, stream), produce, n, cap_s + 5)
    finally:

        async def drop():
            nc = await nats.connect(url)
            await nc.jetstream().delete_stream(stream)
            await nc.close()

        asyncio.run(drop())


def tidelog_e2e(target: str, topic: str, size: int, rate: float, n: int, cap_s: float) -> dict:
    from tidelog.loadgen.runner import BenchConfig, run

    res = run(
        BenchConfig(
            scenario="e2e",
            server=target,
            topic=topic,
            records=n,
            duration_s=cap_s,
            record_size=size,
            linger_ms=0.0,
            rate=rate,
            progress=False,
        )
    )
    return {"sent": n, "received": res.records, "latency_ms": res.latency_ms}
