"""Queue benchmark: tidelog queues vs RabbitMQ, Redis Streams, NATS JetStream (ack throughput, job latency).

tidelog's queues (per-message acknowledgement) next to its peers, in the same run:

    python -m benchmarks.queue_bench [--quick] [--json PATH] [--out DIR] [--runs N] [--tmp DIR]
                                     [--only ack,latency] [--systems tidelog,embedded,rabbitmq,redis,nats]
                                     [--workers 1,4,16] [--records N] [--default-malloc]

1. Per-message ack throughput: N records of exactly 1 KiB are produced beforehand (untimed), then 1, 4 and
   16 workers take every record once and acknowledge it; the figure is records acknowledged per second,
   from the start signal (every worker connected) to the last worker's last acknowledgement.
   - tidelog: `QueueConsumer(target, queue, topics)` over gRPC, `batch = receive(100, ack=batch)`, a
     4-partition topic (one worker process each), and the embedded `QueueManager` (one thread each);
   - RabbitMQ: durable queue, persistent messages (filled with publisher confirms, 4,096 in flight),
     `basic_consume`, manual acks, prefetch 100;
   - Redis Streams: one consumer group, N consumers, XREADGROUP COUNT 100 pipelined with the XACK of the
     previous batch;
   - NATS JetStream: a work-queue stream, one durable pull consumer shared by the workers, explicit acks.
2. Job latency at a fixed rate (1,000 jobs/s): the producer stamps each job with its scheduled send time,
   one worker process records `receive time - scheduled time` (no coordinated omission); p50/p99/max.

Every server is started by the harness on a 127.0.0.1 port it bound and stopped by PID. Settings of each
system and how to read the output: benchmarks/README.md. This is a measuring script: it asserts nothing about
speed (it does check that every record was acknowledged exactly as many times as it was produced).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import gc
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from types import SimpleNamespace

from . import latency_bench, nats_bench, rabbitmq_bench, redis_streams
from .groups_bench import GroupSample, Members, member_row, preload_tidelog, sample_of, serve_commands, timed
from .harness import cli
from .harness.machine import announce, machine_busy_s, machine_info, machine_line, shared_machine_note
from .harness.payloads import BATCH, SEED, make_pool
from .harness.processes import Proc, log, proc_table, process_tree, workspace
from .harness.rounds import Rounds, ratio
from .harness.servers import (
    Unavailable,
    nats_version,
    redis_client,
    redis_versions,
    start_nats,
    start_rabbitmq,
    start_redis,
    start_tidelog,
)
from .harness.tables import Compare, Section, fmt_ratio, sections_report, targets_table

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RECORD_BYTES = 1024
PARTITIONS = 4
TOPIC = "queue-bench"
STREAM = "queue-bench"
RECEIVE = 100  # records per receive / XREADGROUP COUNT / fetch, and RabbitMQ's prefetch
ACK_EVERY = RECEIVE // 4  # RabbitMQ: a multiple ack at least every 25 deliveries (and at the end of each burst)
NATS_CONSUMER = "workers"
NATS_MAX_ACK_PENDING = 20_000  # the server's default (1,000) would hold back 16 workers fetching 100 each
IDLE_S = 0.5  # a worker stops once it got nothing for this long (untimed: the clock stops at its last ack)
TARGET_VS_RABBIT, TARGET_VS_REDIS, TARGET_P99_MS = 3.0, 1.0, 5.0

T_GRPC = "tidelog QueueConsumer (gRPC)"
T_EMB = "tidelog embedded QueueManager"
RABBIT = "RabbitMQ"
REDIS = "Redis Streams"
NATS = "NATS JetStream"
SYSTEMS = {"tidelog": T_GRPC, "embedded": T_EMB, "rabbitmq": RABBIT, "redis": REDIS, "nats": NATS}
LATENCY_SYSTEMS = (T_GRPC, RABBIT, REDIS, NATS)  # the embedded line has no producer-to-worker hop to time
PARTS = {"ack", "latency"}

SETTINGS = {
    T_GRPC: f"`tidelog serve --fsync never`, a topic of {PARTITIONS} partitions; each worker a process with "
    f"`QueueConsumer(target, queue=..., topics=[topic], prefetch={RECEIVE})`: `batch = receive({RECEIVE}, wait_ms=500, ack=batch)` "
    "(the previous batch acknowledged in the same call, as offset ranges, recorded before the answer); queue defaults (lock 30 s, "
    "max_in_flight 1000 per partition, auto_extend on); a fresh queue per run from the earliest records",
    T_EMB: f"`Engine.open(fsync='never')` + `QueueManager(engine)` in the benchmark's process, the same "
    f"{PARTITIONS}-partition data; each worker a thread with `QueueConsumer(manager, ...)`, the same loop",
    RABBIT: "private node (one Erlang scheduler, `+S 1:1`), pika SelectConnection; a durable queue filled with "
    f"persistent messages (publisher confirms, up to {rabbitmq_bench.WINDOW} in flight, untimed); each worker a "
    f"process: `basic_consume`, manual acks, prefetch {RECEIVE}, `basic_ack(multiple=True)` every {ACK_EVERY} "
    "deliveries and at the end of each burst read (acks are one-way frames)",
    REDIS: "`redis-server --save '' --appendonly no`, redis-py + hiredis; one stream (XADD pipelined 1000 at a "
    f"time, untimed), one consumer group per run from id 0; each worker a process and a consumer of the group: "
    f"XREADGROUP COUNT {RECEIVE} '>' pipelined with the XACK of the previous batch (one round trip per "
    "batch); XAUTOCLAIM (taking over entries of a dead consumer) is not needed in this steady state",
    NATS: f"`nats-server -js` (file store); a fresh work-queue stream per run (js.publish_async, untimed) and one "
    f"durable pull consumer, ack policy explicit, max_ack_pending {NATS_MAX_ACK_PENDING:,}; each worker a "
    f"process: `fetch({RECEIVE})`, `msg.ack()` of every message (one-way publishes, flushed by nats-py)",
}
LATENCY_SETTINGS = {
    T_GRPC: "Producer(linger_ms=0) in the benchmark's process (keyless, 4 partitions); the worker "
    f"`receive({RECEIVE}, wait_ms=100, ack=the previous batch)` (a long poll woken by new records), stamps",
    RABBIT: "persistent messages published on the schedule by pika's ioloop, confirms asynchronous; the worker "
    f"`basic_consume`, prefetch {RECEIVE}, multiple acks at the end of each burst",
    REDIS: "one XADD per job (no pipeline); the worker XREADGROUP BLOCK 100 COUNT 100 '>' pipelined with the "
    "XACK of the previous batch",
    NATS: "one js.publish per job awaiting its PubAck (a task each); work-queue stream, the worker a pull "
    f"consumer, `fetch({RECEIVE}, timeout=0.2)`, explicit ack of each",
}


@dataclass(frozen=True)
class Profile:
    name: str
    runs: int
    warmup: int
    records: int  # records each ack run takes and acknowledges
    workers: tuple[int, ...]
    cap_s: float  # an ack run stops past this (marked "capped")
    rate: int  # jobs/s of the latency runs
    e2e_s: float  # seconds of each latency run


QUICK = Profile("quick", runs=3, warmup=0, records=10_000, workers=(1, 4, 16), cap_s=20.0, rate=1000, e2e_s=4.0)
DEFAULT = Profile("default", runs=5, warmup=1, records=40_000, workers=(1, 4, 16), cap_s=60.0, rate=1000, e2e_s=10.0)


def now() -> float:
    """CLOCK_MONOTONIC: one clock for the whole machine, so workers' stamps compare with the parent's."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class TreeCpu:
    """CPU seconds of a server's whole process tree (rabbitmq-server's script runs the Erlang VM as a child)."""

    def __init__(self, proc: Proc) -> None:
        self.pid = proc.pid

    def cpu_s(self) -> float:
        table = proc_table()
        return sum(table[p][0] for p in process_tree(self.pid, table) if p in table) / os.sysconf("SC_CLK_TCK")


# -- the workers' loops ------------------------------------------------------------------------------------
def tidelog_work(q, batch: int, cap_s: float, cpu_clock=time.process_time) -> dict:
    """receive(batch, ack=the previous batch) until a receive waited IDLE_S for nothing (the queue is
    drained): one round trip per batch, as Redis's loop pipelines XACK with XREADGROUP."""
    cpu0 = cpu_clock()
    n = nbytes = receives = refused = 0
    t_first, t_end = None, now()
    deadline = t_end + cap_s
    capped = False
    msgs: list = []
    while True:
        acked = msgs
        msgs = q.receive(batch, wait_ms=int(IDLE_S * 1000), ack=acked)
        refused += sum(1 for m in acked if m.refused)
        receives += 1
        if not msgs:
            break
        if t_first is None:
            t_first = now()
        for m in msgs:
            nbytes += len(m.value)
        n += len(msgs)
        t_end = now()
        if t_end > deadline:
            capped = True
            break
    return {
        "records": n - refused,
        "bytes": nbytes,
        "receives": receives,
        "refused": refused,
        "capped": capped,
        "t_first": t_first,
        "t_end": t_end,
        "cpu_s": cpu_clock() - cpu0,
    }


def rabbit_work(conn, args: dict) -> dict:
    """One RabbitMQ worker: connect, set the prefetch, answer the parent ("ok": ready), wait for its start
    signal, then consume and ack until nothing came for IDLE_S. The answer to the start signal is the
    result (sent by the member's main loop when this returns)."""
    st = {"n": 0, "bytes": 0, "pending": 0, "tag": 0, "acks": 0, "t_first": None, "scheduled": False}
    st.update(done=False, capped=False, cpu0=0.0, t_end=0.0, last=0.0, deadline=0.0)

    def on_channel(ch, finish) -> None:
        loop = ch.connection.ioloop

        def flush() -> None:
            st["scheduled"] = False
            if st["pending"]:
                ch.basic_ack(st["tag"], multiple=True)
                st["n"] += st["pending"]
                st["pending"] = 0
                st["acks"] += 1
                st["t_end"] = now()

        def end() -> None:
            if not st["done"]:
                st["done"] = True
                flush()
                finish()

        def on_message(_ch, method, _props, body) -> None:
            t = st["last"] = now()
            if st["t_first"] is None:
                st["t_first"] = t
            st["bytes"] += len(body)
            st["pending"] += 1
            st["tag"] = method.delivery_tag
            if st["pending"] >= ACK_EVERY:
                flush()
            elif not st["scheduled"]:  # ack what this burst brought once the frames read are dispatched
                st["scheduled"] = True
                loop.call_later(0, flush)

        def watch() -> None:
            t = now()
            if t > st["deadline"]:
                st["capped"] = True
                end()
            elif t - st["last"] >= IDLE_S:
                end()
            else:
                loop.call_later(0.05, watch)

        def ready(_frame) -> None:
            conn.send(("ok", os.getpid()))  # the answer to q_open
            op, _ = conn.recv()
            if op != "q_go":
                raise RuntimeError(f"stopped before the run ({op})")
            st["cpu0"] = time.process_time()
            st["last"] = st["t_end"] = now()
            st["deadline"] = st["last"] + args["cap_s"]
            ch.basic_consume(args["queue"], on_message)
            loop.call_later(0.05, watch)

        ch.basic_qos(prefetch_count=args["prefetch"], callback=ready)

    rabbitmq_bench.run_channel(SimpleNamespace(port=args["port"]), on_channel, args["cap_s"] + 120)
    return {
        "records": st["n"],
        "bytes": st["bytes"],
        "receives": st["acks"],
        "refused": 0,
        "capped": st["capped"],
        "t_first": st["t_first"],
        "t_end": st["t_end"],
        "cpu_s": time.process_time() - st["cpu0"],
    }


async def nats_work(nc, sub, batch: int, cap_s: float) -> dict:
    """fetch(batch) and ack each message until a fetch waited IDLE_S for nothing."""
    cpu0 = time.process_time()
    n = nbytes = fetches = 0
    t_first, t_end = None, now()
    deadline = t_end + cap_s
    capped = False
    while True:
        try:
            msgs = await sub.fetch(batch, timeout=IDLE_S)
        except (TimeoutError, asyncio.TimeoutError):  # nats.errors.TimeoutError is a TimeoutError
            break
        fetches += 1
        if t_first is None:
            t_first = now()
        for m in msgs:
            nbytes += len(m.data)
            await m.ack()
        n += len(msgs)
        t_end = now()
        if t_end > deadline:
            capped = True
            break
    await nc.flush()  # every ack reached the server
    return {
        "records": n,
        "bytes": nbytes,
        "receives": fetches,
        "refused": 0,
        "capped": capped,
        "t_first": t_first,
        "t_end": t_end,
        "cpu_s": time.process_time() - cpu0,
    }


def _op(state: dict, index: int, conn, op: str, args: dict):
    if op == "t_open":
        from tidelog.client import QueueConsumer

        state["q"] = QueueConsumer(
            args["target"], queue=args["queue"], topics=[args["topic"]], prefetch=RECEIVE, consumer_id=f"w{index}"
        )
        return None
    if op == "t_run":
        return tidelog_work(state["q"], args["batch"], args["cap_s"])
    if op == "t_close":
        q = state.pop("q", None)
        if q is not None:
            q.close()
        return None
    if op == "r_connect":
        state["r"] = redis_client(args["port"])
        state["r"].ping()  # the connection is open before the clock starts
        return None
    if op == "r_run":
        cpu0 = time.process_time()
        out = redis_streams.read_group(
            state["r"], args["key"], args["group"], f"c{index}", args["cap_s"], args["max_reads"], args["batch"]
        )
        out["receives"], out["refused"] = out.pop("polls"), 0
        out["t_end"] = out["t_end"] or now()
        return {**out, "cpu_s": time.process_time() - cpu0}
    if op == "r_close":
        r = state.pop("r", None)
        if r is not None:
            r.close()
        return None
    if op == "q_open":
        return rabbit_work(conn, args)
    if op == "n_open":
        import nats

        loop = state["loop"] = asyncio.new_event_loop()

        async def open_nats():
            nc = await nats.connect(args["url"])
            sub = await nc.jetstream().pull_subscribe_bind(consumer=args["consumer"], stream=args["stream"])
            return nc, sub

        state["nc"], state["sub"] = loop.run_until_complete(open_nats())
        return None
    if op == "n_run":
        return state["loop"].run_until_complete(nats_work(state["nc"], state["sub"], args["batch"], args["cap_s"]))
    if op == "n_close":
        loop = state.pop("loop", None)
        if loop is not None:
            with contextlib.suppress(Exception):
                loop.run_until_complete(state.pop("sub").unsubscribe())
            loop.run_until_complete(state.pop("nc").close())
            loop.close()
        return None
    raise ValueError(f"unknown command {op!r}")


def worker_main(conn, index: int, tuned: bool) -> None:
    """One worker process (groups_bench.Members)."""
    serve_commands(conn, index, tuned, _op)


# -- the latency workers (each in a spawned process: latency_bench.measure) ---------------------------------
def tidelog_e2e_consumer(target: str, queue: str, topic: str, n: int, timeout_s: float, ready) -> dict:
    from tidelog.client import QueueConsumer
    from tidelog.loadgen.histogram import Latency

    lat, got = Latency(), 0
    with QueueConsumer(target, queue=queue, topics=[topic], start="latest", prefetch=RECEIVE) as q:
        ready.set()
        deadline = time.monotonic() + timeout_s
        msgs: list = []
        while got < n and time.monotonic() < deadline:
            msgs = q.receive(RECEIVE, wait_ms=100, ack=msgs)
            t = time.monotonic_ns()
            for m in msgs:
                latency_bench.record(lat, m.value, t)
            got += len(msgs)
        q.ack(msgs)
    return {"received": got, "latency": lat.encode()}


def rabbit_e2e_consumer(port: int, queue: str, n: int, timeout_s: float, ready) -> dict:
    from tidelog.loadgen.histogram import Latency

    lat = Latency()
    st = {"got": 0, "pending": 0, "tag": 0, "scheduled": False, "done": False}

    def on_channel(ch, finish) -> None:
        loop = ch.connection.ioloop

        def flush() -> None:
            st["scheduled"] = False
            if st["pending"]:
                ch.basic_ack(st["tag"], multiple=True)
                st["pending"] = 0

        def end() -> None:
            if not st["done"]:
                st["done"] = True
                flush()
                finish()

        def on_message(_ch, method, _props, body) -> None:
            latency_bench.record(lat, body, time.monotonic_ns())
            st["got"] += 1
            st["pending"] += 1
            st["tag"] = method.delivery_tag
            if st["got"] >= n:
                end()
            elif not st["scheduled"]:
                st["scheduled"] = True
                loop.call_later(0, flush)

        loop.call_later(timeout_s, end)
        ch.queue_declare(
            queue,
            durable=True,
            callback=lambda _: ch.basic_qos(
                prefetch_count=RECEIVE,
                callback=lambda _: ch.basic_consume(queue, on_message, callback=lambda _: ready.set()),
            ),
        )

    rabbitmq_bench.run_channel(SimpleNamespace(port=port), on_channel, timeout_s + 30)
    return {"received": st["got"], "latency": lat.encode()}


def redis_e2e_consumer(port: int, key: str, n: int, timeout_s: float, ready) -> dict:
    from tidelog.loadgen.histogram import Latency

    r = redis_client(port)
    r.xgroup_create(key, "workers", id="$", mkstream=True)
    lat, got, pending = Latency(), 0, []
    ready.set()
    deadline = time.monotonic() + timeout_s
    while got < n and time.monotonic() < deadline:
        pipe = r.pipeline(transaction=False)
        if pending:
            pipe.xack(key, "workers", *pending)
        pipe.xreadgroup("workers", "w0", {key: ">"}, count=RECEIVE, block=100)
        entries = redis_streams.stream_entries(pipe.execute()[-1])
        t = time.monotonic_ns()
        pending = []
        for entry_id, fields in entries:
            latency_bench.record(lat, fields[redis_streams.FIELD], t)
            pending.append(entry_id)
        got += len(entries)
    if pending:
        r.xack(key, "workers", *pending)
    r.close()
    return {"received": got, "latency": lat.encode()}


async def _nats_e2e_consumer(url: str, stream: str, n: int, timeout_s: float, ready) -> dict:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    from tidelog.loadgen.histogram import Latency

    nc = await nats.connect(url)
    sub = await nc.jetstream().pull_subscribe(
        stream,
        durable=NATS_CONSUMER,
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=NATS_MAX_ACK_PENDING),
    )
    lat, got = Latency(), 0
    ready.set()
    deadline = time.monotonic() + timeout_s
    while got < n and time.monotonic() < deadline:
        try:
            msgs = await sub.fetch(RECEIVE, timeout=0.2)
        except (TimeoutError, asyncio.TimeoutError):
            continue
        t = time.monotonic_ns()
        for m in msgs:
            latency_bench.record(lat, m.data, t)
            await m.ack()
        got += len(msgs)
    await nc.flush()
    await nc.close()
    return {"received": got, "latency": lat.encode()}


def nats_e2e_consumer(url: str, stream: str, n: int, timeout_s: float, ready) -> dict:
    return asyncio.run(_nats_e2e_consumer(url, stream, n, timeout_s, ready))


def rabbit_fixed_rate(server: Proc, queue: str, values: list[bytes], rate: float, n: int, cap_s: float) -> int:
    """latency_bench.fixed_rate on pika's ioloop: job i published (persistent, confirms asynchronous) at
    start + i / rate, stamped with that time; a late one at once, never skipped. Returns how many were sent,
    once all are confirmed."""
    import pika

    props = pika.BasicProperties(delivery_mode=2)
    confirms = rabbitmq_bench.Confirms()
    st: dict = {"i": 0, "stop": None}

    def on_channel(ch, finish) -> None:
        loop = ch.connection.ioloop

        def settled() -> None:
            if st["stop"] is not None and confirms.acked + confirms.nacked >= st["stop"]:
                finish()

        def on_confirm(frame) -> None:
            confirms.settle(frame.method.delivery_tag, frame.method.multiple, frame.method.NAME == "Basic.Ack")
            settled()

        def tick() -> None:
            while st["i"] < n:
                due = latency_bench.scheduled_ns(st["start"], rate, st["i"])
                t = time.monotonic_ns()
                if t >= st["deadline"] or due >= st["deadline"]:
                    break
                if due > t:
                    loop.call_later((due - t) / 1e9, tick)
                    return
                ch.basic_publish("", queue, latency_bench.stamp(values[st["i"] % len(values)], due), props)
                confirms.published_one()
                st["i"] += 1
            st["stop"] = st["i"]
            settled()

        def start(_frame) -> None:
            st["start"] = time.monotonic_ns()
            st["deadline"] = st["start"] + int(cap_s * 1e9)
            tick()

        ch.queue_declare(queue, durable=True, callback=lambda _: ch.confirm_delivery(on_confirm, callback=start))

    rabbitmq_bench.run_channel(server, on_channel, cap_s + 60)
    if confirms.nacked:
        raise RuntimeError(f"RabbitMQ nacked {confirms.nacked} of {confirms.published} publishes")
    return st["stop"]


def rabbit_delete(server: Proc, queue: str) -> int:
    """Delete a queue; returns how many messages it still held."""
    left = [0]

    def on_channel(ch, finish) -> None:
        def deleted(frame) -> None:
            left[0] = frame.method.message_count
            finish()

        ch.queue_delete(queue, callback=deleted)

    rabbitmq_bench.run_channel(server, on_channel, 60)
    return left[0]


# -- one run of each system -------------------------------------------------------------------------------
class Runner:
    """The servers, their clients, the worker processes, and one run per system and worker count."""

    def __init__(self, p: Profile, members: Members, values: list[bytes]) -> None:
        self.p, self.members, self.values, self.n = p, members, values, p.records
        self.tidelog = self.admin = self.ends = None
        self.engine = self.manager = None
        self.redis_proc = self.redis = None
        self.nats = self.nloop = self.nc = None
        self.rabbit = None
        self.notes: dict[tuple[str, str], list[str]] = {}

    def note(self, section: str, system: str, text: str) -> None:
        log(f"  WARNING: {section}, {system}: {text}")
        self.notes.setdefault((section, system), []).append(text)

    def _check(self, k: int, system: str, sample: GroupSample, problems: list[str]) -> GroupSample:
        refused = sum(m.get("refused", 0) for m in sample.members)
        if refused:
            problems.append(f"{refused} answers refused")
        if not sample.capped and sample.records != self.n:
            problems.append(f"acknowledged {sample.records:,} records, expected {self.n:,}")
        if problems:
            raise RuntimeError(f"{system}, {k} workers: " + "; ".join(problems))
        return sample

    # tidelog over gRPC: worker processes
    def tidelog_run(self, k: int) -> GroupSample:
        queue = f"bench-{k}-{uuid.uuid4().hex[:8]}"
        which = range(k)
        t_setup = now()
        self.members.call(which, "t_open", {"target": self.tidelog.target, "queue": queue, "topic": TOPIC})
        try:
            sample = timed(
                self.members,
                k,
                "t_run",
                {"batch": RECEIVE, "cap_s": self.p.cap_s},
                self.tidelog,
                now() - t_setup,
                self.p.cap_s + 60,
            )
        finally:
            self.members.call(which, "t_close")
        problems = [] if sample.capped else _queue_left(self.admin.describe_queue(queue), self.n)
        self.admin.delete_queue(queue)
        return self._check(k, T_GRPC, sample, problems)

    # tidelog embedded: worker threads in this process
    def embedded_run(self, k: int) -> GroupSample:
        from tidelog.client import QueueConsumer

        queue = f"bench-{k}-{uuid.uuid4().hex[:8]}"
        t_setup = now()
        consumers = [QueueConsumer(self.manager, queue=queue, topics=[TOPIC], consumer_id=f"w{i}") for i in range(k)]
        go = threading.Event()
        results: list = [None] * k

        def work(i: int) -> None:
            go.wait()
            try:
                results[i] = tidelog_work(consumers[i], RECEIVE, self.p.cap_s, time.thread_time)
            except BaseException as exc:  # raised below, in this thread
                results[i] = exc

        threads = [threading.Thread(target=work, args=(i,), name=f"queue-bench-worker-{i}") for i in range(k)]
        for t in threads:
            t.start()
        setup_s = now() - t_setup
        cpu0, busy0 = time.process_time(), machine_busy_s()
        t0 = now()
        go.set()
        for t in threads:
            t.join()
        cpu, busy = time.process_time() - cpu0, machine_busy_s() - busy0
        for q in consumers:
            q.close()
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise RuntimeError(f"{T_EMB}: a worker failed: {errors[0]!r}") from errors[0]
        sample = sample_of(results, t0, setup_s, cpu, busy)
        problems = [] if sample.capped else _queue_left(self.manager.describe(queue), self.n)
        self.manager.delete(queue)
        return self._check(k, T_EMB, sample, problems)

    # RabbitMQ: a queue filled per run (untimed), worker processes
    def rabbit_run(self, k: int) -> GroupSample:
        queue = f"bench-{k}-{uuid.uuid4().hex[:8]}"
        which = range(k)
        t_setup = now()
        try:
            rabbitmq_bench.publish(self.rabbit, self.values, self.n, 1e9, queue, delete=False)
            self.members.call(
                which,
                "q_open",
                {"port": self.rabbit.port, "queue": queue, "prefetch": RECEIVE, "cap_s": self.p.cap_s},
                timeout_s=60,
            )
            sample = timed(self.members, k, "q_go", {}, TreeCpu(self.rabbit), now() - t_setup, self.p.cap_s + 120)
        finally:
            left = rabbit_delete(self.rabbit, queue)
        problems = [f"{left:,} messages left in the queue"] if left and not sample.capped else []
        return self._check(k, RABBIT, sample, problems)

    # Redis Streams: the stream written once, a fresh group per run
    def redis_run(self, k: int) -> GroupSample:
        group = f"bench-{k}-{uuid.uuid4().hex[:8]}"
        which = range(k)
        t_setup = now()
        self.redis.xgroup_create(STREAM, group, id="0")
        try:
            self.members.call(which, "r_connect", {"port": self.redis_proc.port})
            args = {
                "key": STREAM,
                "group": group,
                "batch": RECEIVE,
                "cap_s": self.p.cap_s,
                "max_reads": 20 * (self.n // RECEIVE) + 10_000,
            }
            sample = timed(self.members, k, "r_run", args, self.redis_proc, now() - t_setup, self.p.cap_s + 60)
            self.members.call(which, "r_close")
            info = next(g for g in self.redis.xinfo_groups(STREAM) if _s(g["name"]) == group)
            problems = [f"{info['pending']} entries left pending"] if info["pending"] and not sample.capped else []
        finally:
            self.redis.xgroup_destroy(STREAM, group)
        return self._check(k, REDIS, sample, problems)

    # NATS JetStream: a work-queue stream filled per run (untimed), worker processes
    async def _nats_fill(self) -> str:
        from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy

        js = self.nc.jetstream(publish_async_max_pending=nats_bench.WINDOW)
        stream = await nats_bench.new_stream(js, retention=RetentionPolicy.WORK_QUEUE)
        await nats_bench.publish(js, stream, self.values, self.n, 1e9)
        await js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=NATS_CONSUMER, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=NATS_MAX_ACK_PENDING
            ),
        )
        return stream

    async def _nats_left(self, stream: str) -> int:
        """Messages the work-queue stream still holds (acked ones are removed; give it up to 2 s)."""
        js = self.nc.jetstream()
        for _ in range(40):
            left = (await js.stream_info(stream)).state.messages
            if not left:
                return 0
            await asyncio.sleep(0.05)
        return left

    def nats_run(self, k: int) -> GroupSample:
        which = range(k)
        t_setup = now()
        stream = self.nloop.run_until_complete(self._nats_fill())
        try:
            self.members.call(
                which, "n_open", {"url": nats_bench.url(self.nats), "stream": stream, "consumer": NATS_CONSUMER}
            )
            try:
                sample = timed(
                    self.members,
                    k,
                    "n_run",
                    {"batch": RECEIVE, "cap_s": self.p.cap_s},
                    self.nats,
                    now() - t_setup,
                    self.p.cap_s + 60,
                )
            finally:
                self.members.call(which, "n_close")
            left = 0 if sample.capped else self.nloop.run_until_complete(self._nats_left(stream))
        finally:
            self.nloop.run_until_complete(self.nc.jetstream().delete_stream(stream))
        return self._check(k, NATS, sample, [f"{left:,} messages left in the stream"] if left else [])

    # -- job latency at a fixed rate -------------------------------------------------------------------
    def tidelog_e2e(self) -> dict:
        from tidelog.client import Producer

        name = f"e2e-{uuid.uuid4().hex[:8]}"
        self.admin.create_topic(name, PARTITIONS)
        n = int(self.p.rate * self.p.e2e_s)
        try:
            with Producer(self.tidelog.target, linger_ms=0) as producer:
                producer.send(name, b"warm-up").result(30)  # metadata and the stream are up before the clock

                def produce() -> int:
                    sent = latency_bench.fixed_rate(
                        lambda v: producer.send(name, v), self.values, self.p.rate, n, self.p.e2e_s
                    )
                    producer.flush(timeout_s=30)
                    return sent

                return latency_bench.measure(
                    tidelog_e2e_consumer, (self.tidelog.target, name, name), produce, n, self.p.e2e_s + 5
                )
        finally:
            with contextlib.suppress(Exception):
                self.admin.delete_queue(name)
            self.admin.delete_topic(name)

    def rabbit_e2e(self) -> dict:
        queue = f"e2e-{uuid.uuid4().hex[:8]}"
        n = int(self.p.rate * self.p.e2e_s)
        try:
            return latency_bench.measure(
                rabbit_e2e_consumer,
                (self.rabbit.port, queue),
                lambda: rabbit_fixed_rate(self.rabbit, queue, self.values, self.p.rate, n, self.p.e2e_s),
                n,
                self.p.e2e_s + 5,
            )
        finally:
            rabbit_delete(self.rabbit, queue)

    def redis_e2e(self) -> dict:
        n = int(self.p.rate * self.p.e2e_s)
        key = f"e2e-{uuid.uuid4().hex[:8]}"
        return latency_bench.redis_e2e(
            self.redis, self.redis_proc.port, key, self.values, self.p.rate, n, self.p.e2e_s, redis_e2e_consumer
        )

    def nats_e2e(self) -> dict:
        from nats.js.api import RetentionPolicy

        n = int(self.p.rate * self.p.e2e_s)
        return latency_bench.nats_e2e(
            nats_bench.url(self.nats),
            self.values,
            self.p.rate,
            n,
            self.p.e2e_s,
            nats_e2e_consumer,
            retention=RetentionPolicy.WORK_QUEUE,
        )


def _queue_left(d, expect: int) -> list[str]:
    """What a drained tidelog queue should not have: records not acknowledged or still in flight."""
    problems = []
    if d.totals.get("acked") != expect:
        problems.append(f"the queue counts {d.totals.get('acked')} acknowledged, expected {expect}")
    behind = [(p.topic, p.partition, p.start, p.log_end, p.in_flight) for p in d.partitions if p.start != p.log_end]
    if behind:
        problems.append(f"partitions not complete (topic, partition, start, log end, in flight): {behind}")
    return problems


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# -- preload --------------------------------------------------------------------------------------------------
def open_embedded(directory: str, pool: list[list[bytes]], n: int):
    """An engine with the same data as the broker's topic (record i to partition i % PARTITIONS, 1000 per
    produce call) and its QueueManager."""
    from tidelog.engine.engine import Engine
    from tidelog.queues.manager import QueueManager

    engine = Engine.open(directory, fsync="never")
    engine.create_topic(TOPIC, PARTITIONS)
    npool = len(pool)
    for p in range(PARTITIONS):
        mine = [pool[(i // BATCH) % npool][i % BATCH] for i in range(p, n, PARTITIONS)]
        for lo in range(0, len(mine), BATCH):
            engine.produce(TOPIC, mine[lo : lo + BATCH], partition=p)
    return engine, QueueManager(engine)


# -- report -------------------------------------------------------------------------------------------------
def section(k: int) -> str:
    return f"ack, {k} worker{'s' if k > 1 else ''}"


LATENCY = "job latency"


def latency_entry(rounds: Rounds, name: str, rate: int) -> dict:
    from .suite import latency_entry as entry

    e = entry(f"{LATENCY} 1 KiB at {rate:,} jobs/s", name, rate, rounds.samples(LATENCY, name), LATENCY_SETTINGS[name])
    e["tidelog"] = name.startswith("tidelog")
    return e


def targets(rounds: Rounds, p: Profile, latency: list[dict]) -> list[tuple]:
    out = []
    for k in p.workers:
        sec = section(k)
        out.append(
            (
                sec,
                f"per-message ack throughput, {k} worker{'s' if k > 1 else ''}: tidelog (gRPC) / RabbitMQ",
                rounds.paired(sec, T_GRPC, RABBIT, "records/s"),
                TARGET_VS_RABBIT,
                "x",
            )
        )
        out.append(
            (
                sec,
                f"per-message ack throughput, {k} worker{'s' if k > 1 else ''}: tidelog (gRPC) / Redis Streams",
                rounds.paired(sec, T_GRPC, REDIS, "records/s"),
                TARGET_VS_REDIS,
                "x",
            )
        )
    t = next((e for e in latency if e["system"] == T_GRPC and e["p99"]), None)
    out.append(
        (
            LATENCY,
            f"job latency p99 at {p.rate:,} jobs/s, tidelog (gRPC)",
            t["p99"]["median"] if t else None,
            TARGET_P99_MS,
            "ms",
        )
    )
    return out


def report(rounds: Rounds, runner: Runner, p: Profile, info: dict, skipped: dict, elapsed: float) -> tuple[str, dict]:
    acked = any(sec != LATENCY for sec in rounds.sections())
    out = [
        f"# tidelog queues benchmark ({p.name} profile{': indicative figures' if p.name == 'quick' else ''})",
        "",
        "- " + machine_line(info, *(v for v in (info.get("grpcio_line"), info.get("peers_line")) if v)),
        f"- malloc (benchmark and worker processes): {info['malloc']}; data under {info['tmp_dir']}",
    ]
    if acked:
        out += [
            f"- ack throughput: {p.records:,} records of exactly {RECORD_BYTES} B (seeded JSON-like payloads) "
            f"produced beforehand (untimed), then taken and acknowledged once each by "
            f"{', '.join(map(str, p.workers))} workers; figure = records acknowledged per second, from the start "
            "signal (every worker connected) to the last worker's last acknowledgement; a worker stops after "
            f"{IDLE_S} s without records (not counted). Every run is checked: all records acknowledged, nothing "
            "left pending or in flight",
            "- workers: tidelog (gRPC), RabbitMQ, Redis and NATS: one process each (spawned once, reused); tidelog "
            "embedded: one thread each in the benchmark's process (the GIL is shared with the queue manager)",
        ]
    ran_systems = {system for sec in rounds.sections() if sec != LATENCY for system in rounds.systems(sec)}
    out += [f"- {name}: {SETTINGS[name]}" for name in SYSTEMS.values() if name in ran_systems]
    out += [
        f"- medians of {p.runs} runs{f' after {p.warmup} warm-up round(s)' if p.warmup else ' (no warm-up round)'}, "
        "systems interleaved round by round (the order rotating); min - max across runs; ratios: ratio of the "
        "medians (min - max of the per-round ratios)",
        "",
    ]
    vs = (
        Compare("tidelog gRPC / this", T_GRPC, None, "tidelog"),
        Compare("tidelog embedded / this", T_EMB, None, "tidelog"),
    )
    secs = [
        Section(section(k), f"Per-message ack throughput, {k} worker{'s' if k > 1 else ''}", ("records/s", "MB/s"), vs)
        for k in p.workers
    ]
    body, results = sections_report(rounds, secs, runner.notes)
    out += body
    ran = [k for k in p.workers if section(k) in rounds.sections()]
    if ran:
        systems = rounds.systems(section(ran[0]))
        if len(ran) > 1:
            results["scaling"] = []
            out += [
                "| scaling (records/s, ratio of medians) | " + " | ".join(systems) + " |",
                "|---|" + "---:|" * len(systems),
            ]
            for k in ran[1:]:
                row = []
                for system in systems:
                    r = ratio(rounds.samples(section(k), system), rounds.samples(section(ran[0]), system))
                    results["scaling"].append(
                        {"system": system, "numerator": section(k), "denominator": section(ran[0]), **r}
                    )
                    row.append(fmt_ratio(r))
                out.append(f"| {k} workers / {ran[0]} | " + " | ".join(row) + " |")
            out.append("")
        out += [
            "| workers | system | records per worker (median run) | receives (acks) per run | first record after "
            "| CPU cores: server | workers (sum) | whole machine |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for k in ran:
            for system in rounds.systems(section(k)):
                out.append(member_row(k, system, rounds.samples(section(k), system), "receives"))
        out += [
            "",
            "CPU cores = CPU seconds / wall seconds of the timed window: the server's process tree (tidelog "
            "embedded: the whole benchmark process, which includes its worker threads); the workers summed "
            "(threads: their own CPU time); the whole machine (any other load included). RabbitMQ's and NATS's "
            "'receives' count ack frames and fetches; Redis's are XREADGROUPs (each carrying the previous XACK).",
            "",
        ]
    latency = [latency_entry(rounds, name, p.rate) for name in LATENCY_SYSTEMS if rounds.has(LATENCY, name)]
    if latency:
        out += [
            f"## Job latency, 1 KiB jobs at {p.rate:,} jobs/s ({p.e2e_s:.0f} s per run, one worker process)",
            "",
            "| system | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | jobs received / sent (per run) |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for e in latency:
            cells = [
                f"{e[q]['median']:.2f} ({e[q]['min']:.2f} - {e[q]['max']:.2f})" if e[q] else "-"
                for q in ("p50", "p90", "p99", "p99.9", "max")
            ]
            counts = ", ".join(f"{r:,}/{s:,}" for r, s in zip(e["received"], e["sent"]))
            out.append(f"| {e['system']} | " + " | ".join(cells) + f" | {counts} |")
        out += [
            "",
            "Each job carries its *scheduled* send time (CLOCK_MONOTONIC ns); the worker records receive time "
            "- scheduled time (a late producer is charged to the system: no coordinated omission). Medians over "
            "the runs, min - max in brackets.",
            "",
        ]
        for e in latency:
            out.append(f"- {e['system']}: {e['settings']}")
        out.append("")
        load = rounds.meter.line(LATENCY)
        if load:
            out += [load, ""]
    lines, results["targets"] = targets_table(targets(rounds, p, latency), rounds.sections())
    out += lines
    note = shared_machine_note(rounds.meter.sections)
    if note:
        out += ["", note]
    for system, why in skipped.items():
        out += ["", f"{system} skipped: {why}"]
    out += ["", f"Total benchmark time: {elapsed:.0f} s"]
    results["latency"] = latency
    results["elapsed_s"] = elapsed
    results["cpu"] = rounds.meter.sections
    return "\n".join(out), results


# -- main -----------------------------------------------------------------------------------------------------
def _start(skipped: dict, name: str, start):
    try:
        return start()
    except Unavailable as exc:
        skipped[name] = str(exc)
        log(f"skipping {name}: {exc}")
        return None


def run(p: Profile, tmp_parent: str, parts: set[str], systems: set[str], tuned: bool) -> tuple[str, dict]:
    """Start the servers and workers, measure, stop them; the Markdown report and the JSON document."""
    import grpc

    info = machine_info(tmp_parent, tuned, grpcio=grpc.__version__)
    info["grpcio_line"] = f"grpcio {grpc.__version__}"
    announce(info)
    started = now()
    skipped: dict[str, str] = {}
    preload: dict[str, float] = {}
    names = [SYSTEMS[s] for s in SYSTEMS if s in systems]
    with workspace("tidelog-queue-bench-", tmp_parent) as procs, contextlib.ExitStack() as closing:
        work = procs.tmp
        log("building payloads, starting worker processes and servers...")
        pool = make_pool(max(1, min(p.records // BATCH, 32)), RECORD_BYTES, SEED)
        values = [v for batch in pool for v in batch]
        members = None
        if "ack" in parts:
            members = Members(max(p.workers), tuned, target=worker_main, name="queue-bench-worker")
            closing.callback(members.close)
        runner = Runner(p, members, values)
        versions = []
        if T_GRPC in names:
            from tidelog.client import Admin

            runner.tidelog = start_tidelog(procs, os.path.join(work, "tidelog"))
            runner.admin = Admin(runner.tidelog.target)
            closing.callback(runner.admin.close)
            if "ack" in parts:
                runner.ends, preload[T_GRPC] = preload_tidelog(
                    runner.tidelog.target, pool, p.records, PARTITIONS, TOPIC
                )
        if T_EMB in names and "ack" in parts:
            t0 = now()
            runner.engine, runner.manager = open_embedded(os.path.join(work, "embedded"), pool, p.records)
            closing.callback(runner.engine.close)
            preload[T_EMB] = now() - t0
        if REDIS in names:
            started_redis = _start(skipped, REDIS, lambda: start_redis(procs, os.path.join(work, "redis")))
            if started_redis is None:
                names.remove(REDIS)
            else:
                runner.redis_proc, runner.redis = started_redis
                closing.callback(runner.redis.close)
                v = redis_versions(runner.redis)
                info.update(v)
                versions.append(f"Redis {v['redis_server']}")
                if "ack" in parts:
                    t0 = now()
                    redis_streams.xadd(runner.redis, STREAM, values, p.records, 1e9)
                    if runner.redis.xlen(STREAM) != p.records:
                        raise RuntimeError(f"Redis preload: {runner.redis.xlen(STREAM)} entries, expected {p.records}")
                    preload[REDIS] = now() - t0
        if NATS in names:
            runner.nats = _start(skipped, NATS, lambda: start_nats(procs, os.path.join(work, "nats")))
            if runner.nats is None:
                names.remove(NATS)
            else:
                import nats

                runner.nloop = asyncio.new_event_loop()
                closing.callback(runner.nloop.close)
                runner.nc = runner.nloop.run_until_complete(nats.connect(nats_bench.url(runner.nats)))
                closing.callback(lambda: runner.nloop.run_until_complete(runner.nc.close()))
                info["nats_server"] = nats_version()
                versions.append(info["nats_server"])
        if RABBIT in names:
            runner.rabbit = _start(skipped, RABBIT, lambda: start_rabbitmq(procs, os.path.join(work, "rabbitmq")))
            if runner.rabbit is None:
                names.remove(RABBIT)
            else:
                info["rabbitmq"] = runner.rabbit.version
                versions.append(runner.rabbit.version)
        info["peers_line"] = ", ".join(versions)
        for name, s in preload.items():
            log(f"  preloaded {name}: {p.records:,} records in {s:.1f} s (untimed)")
        del pool
        gc.collect()

        rounds = Rounds(p.runs, p.warmup)
        if "ack" in parts:
            fns = {
                T_GRPC: runner.tidelog_run,
                T_EMB: runner.embedded_run,
                RABBIT: runner.rabbit_run,
                REDIS: runner.redis_run,
                NATS: runner.nats_run,
            }
            rounds.run({section(k): {s: (lambda fn=fns[s], k=k: fn(k)) for s in names} for k in p.workers})
        if "latency" in parts:
            fns = {
                T_GRPC: runner.tidelog_e2e,
                RABBIT: runner.rabbit_e2e,
                REDIS: runner.redis_e2e,
                NATS: runner.nats_e2e,
            }
            chosen = {s: fns[s] for s in LATENCY_SYSTEMS if s in names}
            if chosen:
                rounds.run({LATENCY: chosen})
        text, results = report(rounds, runner, p, info, skipped, now() - started)
    return text, {
        "date": datetime.date.today().isoformat(),
        "machine": info,
        "profile": dataclasses.asdict(p),
        "settings": {
            **{f"ack: {k}": v for k, v in SETTINGS.items()},
            **{f"latency: {k}": v for k, v in LATENCY_SETTINGS.items()},
        },
        "preload_s_untimed": preload,
        "skipped": skipped,
        "notes": {f"{sec} / {system}": texts for (sec, system), texts in runner.notes.items()},
        **results,
    }


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser(
        "python -m benchmarks.queue_bench", __doc__, "10k records, 3 runs, 4 s latency runs (about 2 minutes here)"
    )
    ap.add_argument("--only", default="ack,latency", help="comma-separated subset of: ack, latency")
    ap.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated subset of: " + ", ".join(SYSTEMS) + " (tidelog is the gRPC QueueConsumer)",
    )
    ap.add_argument("--workers", help="comma-separated worker counts (default 1,4,16)")
    ap.add_argument("--records", type=int, help="records per ack run (a multiple of 1000)")
    ap.add_argument(
        "--out", default=RESULTS_DIR, help="where <date>-queues[-quick].{md,json} go (default benchmarks/results)"
    )
    ap.add_argument("--default-malloc", action="store_true", help="skip the glibc mallopt tuning our entry points use")
    args = ap.parse_args(argv)
    profile = cli.profile(ap, args, QUICK, DEFAULT)
    if args.records is not None:
        if args.records < BATCH or args.records % BATCH:
            ap.error(f"--records must be a positive multiple of {BATCH}")
        profile = dataclasses.replace(profile, records=args.records)
    if args.workers:
        try:
            workers = tuple(int(w) for w in args.workers.split(",") if w.strip())
        except ValueError:
            ap.error("--workers is a comma-separated list of numbers")
        if not workers or min(workers) < 1:
            ap.error("--workers needs counts of at least 1")
        profile = dataclasses.replace(profile, workers=workers)
    parts = cli.subset(ap, "--only", args.only, PARTS)
    systems = cli.subset(ap, "--systems", args.systems, set(SYSTEMS))
    os.makedirs(args.tmp, exist_ok=True)
    cli.unwind_on_signals()
    from tidelog.tuning import tune_malloc

    tuned = False if args.default_malloc else tune_malloc()
    try:
        text, doc = run(profile, os.path.abspath(args.tmp), parts, systems, tuned)
    except KeyboardInterrupt:
        return cli.interrupted()
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{doc['date']}-queues{'-quick' if args.quick else ''}")
    with open(stem + ".md", "w") as f:
        f.write(text + "\n")
    cli.write_json(stem + ".json", doc)
    log(f"wrote {stem}.md")
    return cli.finish(text, args.json, doc)


if __name__ == "__main__":
    sys.exit(main())
