"""NATS JetStream peer for the suite (`python -m benchmarks`): produce and consume with nats-py.

Setup: Debian's `nats-server` (2.9) started as `nats-server -js -a 127.0.0.1 -p PORT -sd <tmpdir>`,
stopped by PID. Without `nats-server` or nats-py, NATS is skipped with the reason.

Stream: one per run, file storage, one subject, one replica (defaults otherwise). NATS 2.9 has no
"fsync every write" setting (`sync_interval: always` arrived in 2.10): the file store writes each message
to the OS and fsyncs on its own schedule, so its "durable produce" figure is this produce figure, and the
report says so.

Produce: `js.publish(subject, value)` awaits the PubAck of every message, WINDOW publishes in flight
(asyncio.gather over WINDOW coroutines at a time).
Consume: a durable pull consumer (ack policy "all"), `fetch(FETCH_BATCH)` until the stream is read, one
ack (of the last message, covering all before it) per fetch.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid

from benchmarks.embedded import Sample
from benchmarks.grpc_bench import LOOPBACK, Processes, free_port, wait_until

WINDOW = 256
FETCH_BATCH = 1000
SETTINGS = ("NATS JetStream (Debian nats-server 2.9, `-js`, file store, 1 replica) on 127.0.0.1, nats-py; "
            f"produce: js.publish awaiting each PubAck, {WINDOW} in flight; consume: durable pull consumer, "
            f"ack policy all, fetch({FETCH_BATCH}) + one ack per fetch")
DURABLE_NOTE = ("NATS 2.9 cannot fsync per message (sync_interval arrived in 2.10): file store, acked once "
                "written to the OS, fsync on the server's own interval")


class NatsServer:
    def __init__(self, procs: Processes, tmp: str) -> None:
        self.procs, self.tmp = procs, tmp
        self.proc = None
        self.url = ""
        self.version = ""

    def start(self) -> str | None:
        exe = shutil.which("nats-server")
        if exe is None:
            return "nats-server is not installed (apt-get install nats-server; run: bash benchmarks/setup_peers.sh)"
        try:
            import nats  # noqa: F401
        except ImportError:
            return "the nats-py package is not installed (run: bash benchmarks/setup_peers.sh)"
        store = os.path.join(self.tmp, "nats-store")
        os.makedirs(store, exist_ok=True)
        for attempt in range(3):
            port = free_port()
            self.proc, log_path = self.procs.start("nats-server", [exe, "-js", "-a", LOOPBACK, "-p", str(port),
                                                                    "-sd", store])
            self.url = f"nats://{LOOPBACK}:{port}"

            def ready() -> bool:
                return asyncio.run(_ping(self.url))
            try:
                wait_until(self.proc, log_path, "nats-server", ready, timeout_s=30)
                import subprocess
                self.version = subprocess.run([exe, "--version"], capture_output=True, text=True,
                                              timeout=10).stdout.strip()
                return None
            except RuntimeError as exc:
                self.procs.stop(self.proc)
                self.proc = None
                if attempt == 2:
                    return f"nats-server did not start: {exc}"
        return "nats-server did not start"

    def stop(self) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc)
            self.proc = None


async def _ping(url: str) -> bool:
    import nats

    nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0, allow_reconnect=False)
    try:
        await nc.jetstream().account_info()
        return True
    finally:
        await nc.close()


async def new_stream(js) -> tuple[str, str]:
    from nats.js.api import StorageType

    name = f"bench{uuid.uuid4().hex[:8]}"
    await js.add_stream(name=name, subjects=[name], storage=StorageType.FILE)
    return name, name


async def publish(js, subject: str, values: list[bytes], n: int, cap_s: float) -> tuple[int, float, bool]:
    npool = len(values)
    done = 0
    capped = False
    t0 = time.perf_counter()
    deadline = t0 + cap_s
    while done < n:
        end = min(done + WINDOW, n)
        await asyncio.gather(*(js.publish(subject, values[i % npool]) for i in range(done, end)))
        done = end
        if time.perf_counter() > deadline:
            capped = done < n
            break
    return done, time.perf_counter() - t0, capped


async def _produce(url: str, values: list[bytes], n: int, cap_s: float) -> Sample:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        stream, subject = await new_stream(js)
        try:
            done, dt, capped = await publish(js, subject, values, n, cap_s)
            info = await js.stream_info(stream)
            if info.state.messages != done:
                raise RuntimeError(f"NATS: stream holds {info.state.messages} messages, expected {done}")
            return Sample(done, done * len(values[0]), dt, capped)
        finally:
            await js.delete_stream(stream)
    finally:
        await nc.close()


async def _consume(url: str, values: list[bytes], n: int, cap_s: float) -> Sample:
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        stream, subject = await new_stream(js)
        try:
            await publish(js, subject, values, n, 1e9)  # the data set, untimed
            t0 = time.perf_counter()
            deadline = t0 + cap_s
            sub = await js.pull_subscribe(subject, durable="reader", stream=stream,
                                          config=ConsumerConfig(ack_policy=AckPolicy.ALL))
            got = total = 0
            capped = False
            for _ in range(n // FETCH_BATCH + 1000):  # bounded
                if got >= n:
                    break
                try:
                    msgs = await sub.fetch(FETCH_BATCH, timeout=2.0)
                except NatsTimeout:
                    break
                for m in msgs:
                    total += len(m.data)
                got += len(msgs)
                if msgs:
                    await msgs[-1].ack()
                if time.perf_counter() > deadline:
                    capped = got < n
                    break
            dt = time.perf_counter() - t0
            await sub.unsubscribe()
            return Sample(got, total, dt, capped)
        finally:
            await js.delete_stream(stream)
    finally:
        await nc.close()


def produce(server: NatsServer, values: list[bytes], n: int, cap_s: float) -> Sample:
    return asyncio.run(_produce(server.url, values, n, cap_s))


def consume(server: NatsServer, values: list[bytes], n: int, cap_s: float) -> Sample:
    return asyncio.run(_consume(server.url, values, n, cap_s))
