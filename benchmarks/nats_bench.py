"""NATS JetStream as its users run it for throughput, for the suite (`python -m benchmarks`), with nats-py.

The server is Debian's `nats-server -js` (2.9), started by the harness (servers.start_nats). Stream: one per
run, file storage, one subject, one replica (defaults otherwise). NATS 2.9 has no "fsync every write"
setting (`sync_interval: always` arrived in 2.10): the file store writes each message to the OS and fsyncs
on its own schedule, so its "durable produce" figure is this produce figure, and the report says so.

Produce: JetStream's asynchronous publish (`js.publish_async`), at most WINDOW PubAcks outstanding (nats-py's
`publish_async_max_pending`), then `publish_async_completed()`: the window slides, where awaiting each
PubAck (or gathering a fixed group of them) stalls on the slowest acknowledgement.
Consume: a durable pull consumer (ack policy "all"), `fetch(FETCH_BATCH)` until the stream is read, one
ack (of the last message, covering all before it) per fetch.
"""

from __future__ import annotations

import asyncio
import uuid

from .harness.processes import Proc
from .harness.rounds import Sample, Stopwatch

WINDOW = 4096
FETCH_BATCH = 1000
SETTINGS = (
    "NATS JetStream (Debian nats-server 2.9, `-js`, file store, 1 replica) on 127.0.0.1, nats-py; "
    f"produce: js.publish_async, at most {WINDOW} PubAcks outstanding (a sliding window); consume: durable "
    f"pull consumer, ack policy all, fetch({FETCH_BATCH}) + one ack per fetch"
)
DURABLE_NOTE = (
    "NATS 2.9 cannot fsync per message (sync_interval arrived in 2.10): file store, acked once "
    "written to the OS, fsync on the server's own interval"
)


def url(server: Proc) -> str:
    return f"nats://{server.target}"


async def new_stream(js, **config) -> str:
    """A fresh file-store stream whose one subject has the stream's name (`config`: more StreamConfig
    fields, e.g. retention=RetentionPolicy.WORK_QUEUE)."""
    from nats.js.api import StorageType

    name = f"bench{uuid.uuid4().hex[:8]}"
    await js.add_stream(name=name, subjects=[name], storage=StorageType.FILE, **config)
    return name


async def publish(js, subject: str, values: list[bytes], n: int, cap_s: float) -> tuple[int, float, bool]:
    """n messages with at most WINDOW PubAcks outstanding; (messages, seconds, capped)."""
    npool = len(values)
    done = 0
    clock = Stopwatch(cap_s)
    publish_async = js.publish_async
    futures = []
    for i in range(n):
        futures.append(await publish_async(subject, values[i % npool]))
        done += 1
        if not i & 255 and clock.expired(done, n):
            break
    await asyncio.wait_for(js.publish_async_completed(), cap_s + 60)
    failed = [f.exception() for f in futures if f.exception() is not None]
    if failed:
        raise RuntimeError(f"NATS: {len(failed)} of {done} publishes failed, e.g. {failed[0]}")
    return done, clock.elapsed(), clock.capped


async def _produce(server: Proc, values: list[bytes], n: int, cap_s: float) -> Sample:
    import nats

    nc = await nats.connect(url(server))
    try:
        js = nc.jetstream(publish_async_max_pending=WINDOW)
        stream = await new_stream(js)
        try:
            done, dt, capped = await publish(js, stream, values, n, cap_s)
            info = await js.stream_info(stream)
            if info.state.messages != done:
                raise RuntimeError(f"NATS: stream holds {info.state.messages} messages, expected {done}")
            return Sample(done, done * len(values[0]), dt, capped)
        finally:
            await js.delete_stream(stream)
    finally:
        await nc.close()


async def _consume(server: Proc, values: list[bytes], n: int, cap_s: float) -> Sample:
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig

    nc = await nats.connect(url(server))
    try:
        js = nc.jetstream(publish_async_max_pending=WINDOW)
        stream = await new_stream(js)
        try:
            await publish(js, stream, values, n, 1e9)  # the data set, untimed
            clock = Stopwatch(cap_s)
            sub = await js.pull_subscribe(
                stream, durable="reader", stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.ALL)
            )
            got = total = 0
            for _ in range(n // FETCH_BATCH + 1000):  # bounded
                if got >= n:
                    break
                try:
                    msgs = await sub.fetch(FETCH_BATCH, timeout=2.0)
                except (NatsTimeout, asyncio.TimeoutError):  # nats-py raises either when a fetch times out
                    break
                for m in msgs:
                    total += len(m.data)
                got += len(msgs)
                if msgs:
                    await msgs[-1].ack()
                if clock.expired(got, n):
                    break
            sample = clock.sample(got, total)
            await sub.unsubscribe()
            return sample
        finally:
            await js.delete_stream(stream)
    finally:
        await nc.close()


def produce(server: Proc, values: list[bytes], n: int, cap_s: float) -> Sample:
    return asyncio.run(_produce(server, values, n, cap_s))


def consume(server: Proc, values: list[bytes], n: int, cap_s: float) -> Sample:
    return asyncio.run(_consume(server, values, n, cap_s))
