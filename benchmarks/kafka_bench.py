"""Kafka clients against tidelog's Kafka listener, vs tidelog's gRPC path and Redis Streams, in the same run.

    python -m benchmarks.kafka_bench [--quick] [--json PATH] [--runs N] [--tmp DIR]
                                     [--only produce,consume,latency] [--no-redis]

It starts `tidelog serve --fsync never --kafka-port 0` (gRPC and the Kafka listener on one engine) and
`redis-server` (no persistence; skipped with the reason when missing) through benchmarks.harness; the
clients run in this process (the latency consumers in processes of their own). The gRPC and Redis loops are
grpc_bench's, redis_streams' and latency_bench's. What is measured and how to read it: benchmarks/README.md.
This is a measuring script: it asserts nothing about speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
import time
from dataclasses import dataclass

from tidelog.tuning import tune_malloc

from . import grpc_bench, latency_bench, redis_streams
from .grpc_bench import REDIS_XADD, REDIS_XREAD, T_CONSUMER, T_PRODUCER, T_RAW, T_SUB_RAW
from .harness import cli
from .harness.machine import announce, machine_info, machine_line
from .harness.payloads import SEED, MiB, Payloads
from .harness.processes import log, workspace
from .harness.rounds import Rounds, Sample, Stopwatch
from .harness.servers import Unavailable, redis_if_wanted, start_tidelog
from .harness.tables import Compare, Section, sections_report, targets_table

SIZE = 1024
RATE = 1000  # msgs/s of the end-to-end latency runs
QUIET = 3  # librdkafka log level: errors only

# The confluent-kafka (librdkafka) settings; see the README section for why each is what it is.
PRODUCER = {
    "linger.ms": 5,
    "batch.size": MiB,
    "acks": 1,
    "enable.idempotence": False,
    "delivery.report.only.error": True,  # the delivery callback sees failures only (counted, reported)
}
IDEMPOTENT = {**PRODUCER, "enable.idempotence": True, "acks": "all"}  # librdkafka: idempotence needs acks=all
CONSUMER = {
    "group.id": "kafka-bench-unused",  # required by confluent-kafka; assign() joins no group, nothing committed
    "enable.auto.commit": False,
    "fetch.max.bytes": 64 << 20,
    "max.partition.fetch.bytes": 8 << 20,
    # librdkafka postpones the next fetch by this much once its prefetch queue is past queued.min.messages or
    # queued.max.messages.kbytes (64 MiB): the default 1000 ms stalled a consumer that drains faster than that
    # for a whole second in about 1 run of 3 here; its documentation says to lower it in that case
    "fetch.queue.backoff.ms": 10,
}
LATENCY_PRODUCER = {"linger.ms": 0, "acks": 1, "enable.idempotence": False}
LATENCY_CONSUMER = {**CONSUMER, "fetch.wait.max.ms": 100, "fetch.min.bytes": 1}
CONSUME_BATCH = 1000  # Consumer.consume(num_messages=...) per call

# System names (also the keys of the JSON output); gRPC and Redis ones are grpc_bench's
KAFKA = "Kafka listener"
K_NONE = f"{KAFKA}: confluent-kafka Producer, compression none"
K_LZ4 = f"{KAFKA}: confluent-kafka Producer, compression lz4"
K_IDEMPOTENT = f"{KAFKA}: confluent-kafka Producer, idempotent (acks all), compression none"
K_RAW = f"{KAFKA}: raw Produce frames, ~1 MiB batches (no client library)"
KC_NONE = f"{KAFKA}: confluent-kafka Consumer, data set none"
KC_LZ4 = f"{KAFKA}: confluent-kafka Consumer, data set lz4"
E_KAFKA = f"{KAFKA}: confluent-kafka Producer (linger.ms 0, acks 1) -> Consumer (assigned)"
E_TIDELOG = "tidelog gRPC: Producer(linger_ms=0) -> Consumer (tidelog bench e2e)"
E_REDIS = "Redis: XADD -> XREAD BLOCK 100"

PRODUCE = "produce 1 KiB"
CONSUME = "consume 1 KiB"
LATENCY = f"e2e latency 1 KiB at {RATE:,} msgs/s"


@dataclass(frozen=True)
class Profile:
    name: str
    runs: int
    warmup: int
    kafka_kib: int  # records per Kafka produce run
    raw_kib: int  # records per gRPC raw-batch produce run
    producer_kib: int  # records per tidelog Producer.send() run
    redis_kib: int  # XADD records per run
    consume_kib: int  # records of each consume data set (read whole each run)
    redis_read: int  # XREADGROUP data set
    e2e_s: float  # seconds of each latency run (RATE msgs/s)
    idempotent: bool  # also the idempotent Kafka producer
    cap_s: float  # a timed loop stops early past this many seconds (marked "capped")


QUICK = Profile(
    "quick",
    runs=3,
    warmup=1,
    kafka_kib=256_000,
    raw_kib=384_000,
    producer_kib=128_000,
    redis_kib=60_000,
    consume_kib=384_000,
    redis_read=60_000,
    e2e_s=2.0,
    idempotent=True,
    cap_s=10.0,
)
DEFAULT = Profile(
    "default",
    runs=5,
    warmup=1,
    kafka_kib=768_000,
    raw_kib=768_000,
    producer_kib=384_000,
    redis_kib=200_000,
    consume_kib=768_000,
    redis_read=200_000,
    e2e_s=5.0,
    idempotent=True,
    cap_s=30.0,
)


def kafka_module():
    try:
        import confluent_kafka
    except ImportError:
        raise Unavailable("the confluent-kafka package is not installed (pip install confluent-kafka)") from None
    return confluent_kafka


class Ctx(grpc_bench.Ctx):
    """grpc_bench's context (its loops take it as it is) and the Kafka listener's address."""

    def __init__(self, profile: Profile, rounds: Rounds, loop, target: str, bootstrap: str, redis_client) -> None:
        base = grpc_bench.QUICK if profile.name == "quick" else grpc_bench.DEFAULT
        grpc_profile = dataclasses.replace(base, runs=profile.runs, warmup=profile.warmup, cap_s=profile.cap_s)
        super().__init__(grpc_profile, rounds, loop, target, "", redis_client)
        self.kp = profile
        self.bootstrap = bootstrap
        self.ck = kafka_module()
        self.latency_clients_s: float | None = None  # CPU seconds of the latency runs' client processes

    def producer(self, settings: dict, **more):
        return self.ck.Producer({"bootstrap.servers": self.bootstrap, "log_level": QUIET, **settings, **more})


# -- Kafka clients -----------------------------------------------------------------------------------------
def kafka_produce(ctx: Ctx, topic: str, values: list[bytes], n: int, settings: dict, cap_s: float) -> tuple:
    """confluent-kafka: a first record produced and flushed (connections and metadata up), then, timed,
    produce(topic, value, partition=0) + poll(0) per record and flush(). A full librdkafka queue
    (BufferError) is served with poll() and the record produced again. (sent, failed, seconds, capped)."""
    failed: list = []
    producer = ctx.producer(settings, on_delivery=lambda err, msg: failed.append(err))
    producer.produce(topic, values[0], partition=0)
    if producer.flush(30) or failed:
        raise RuntimeError(f"the first record was not delivered: {failed[:1] or 'flush timed out'}")
    produce, poll = producer.produce, producer.poll
    npool = len(values)
    done = 0
    clock = Stopwatch(cap_s)
    for i in range(n):
        value = values[i % npool]
        try:
            produce(topic, value, partition=0)
        except BufferError:  # queue.buffering.max.messages reached: let librdkafka send, then again
            while True:
                poll(0.001)
                try:
                    produce(topic, value, partition=0)
                    break
                except BufferError:
                    pass
        poll(0)
        done += 1
        if not i & 1023 and clock.expired(done, n):
            break
    left = producer.flush(cap_s + 60)
    dt = clock.elapsed()
    return done, len(failed) + left, dt, clock.capped


def raw_frames_produce(bootstrap: str, topic: str, batches: list[bytes], n: int, window: int, cap_s: float) -> tuple:
    """The listener's own produce ceiling, without a client library's per-record cost: the gRPC raw
    loop's pre-built batches sent as Produce v8 frames (acks 1), `window` requests in flight on one
    connection, answers read by a second thread. (records sent, seconds, capped)."""
    import socket
    import struct
    import threading

    from kafka.protocol.producer import ProduceRequest

    from tidelog.kafka_protocol import codec

    frames = []
    for i, records in enumerate(batches):
        request = codec.build(
            ProduceRequest[8],
            {"transactional_id": None, "acks": 1, "timeout_ms": 30_000,
             "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": records}]}]},
        )  # fmt: skip
        request.with_header(correlation_id=i, client_id="bench")
        frames.append(bytes(request.encode(header=True, framed=True)))
    host, _, port = bootstrap.rpartition(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    slots = threading.Semaphore(window)
    answered = [0]

    def read_answers() -> None:
        stream = sock.makefile("rb")
        for _ in range(n):
            (size,) = struct.unpack(">i", stream.read(4))
            stream.read(size)  # (errors show in the log's end offset, checked by the caller)
            answered[0] += 1
            slots.release()

    clock = Stopwatch(cap_s)
    reader = threading.Thread(target=read_answers, daemon=True)
    reader.start()
    sent = 0
    try:
        for i in range(n):
            slots.acquire()
            sock.sendall(frames[i % len(frames)])
            sent += 1
            if clock.expired(sent, n):
                break
        while answered[0] < sent and reader.is_alive():
            time.sleep(0.0005)
        return sent, clock.elapsed(), clock.capped
    finally:
        sock.close()


def kafka_raw_run(ctx: Ctx, pay: Payloads, n_records: int) -> Sample:
    n_batches = max(1, n_records // pay.records_per_batch)
    topic = ctx.new_topic("kafka-raw")
    try:
        sent, dt, capped = raw_frames_produce(
            ctx.bootstrap, topic, [b for b, _ in pay.batches], n_batches, ctx.p.window, ctx.kp.cap_s
        )
        records = sum(pay.batches[i % len(pay.batches)][1] for i in range(sent))
        ctx.check_end(topic, records, "raw Kafka frames")
        return Sample(records, records * pay.size, dt, capped)
    finally:
        ctx.admin.delete_topic(topic)


def kafka_produce_run(ctx: Ctx, pay: Payloads, n: int, settings: dict, system: str) -> Sample:
    topic = ctx.new_topic("kafka")
    try:
        sent, failed, dt, capped = kafka_produce(ctx, topic, pay.values, n, settings, ctx.kp.cap_s)
        delivered = ctx.admin.list_offsets(topic, 0).log_end - 1  # the first record is not counted
        if failed or delivered != sent:
            ctx.note(PRODUCE, system, f"{sent:,} records produced, {delivered:,} appended, {failed:,} reported failed")
        return Sample(delivered, delivered * pay.size, dt, capped)
    finally:
        ctx.admin.delete_topic(topic)


def kafka_consume_run(ctx: Ctx, topic: str, size: int, expect: int) -> Sample:
    """confluent-kafka Consumer, assign()ed to partition 0 from offset 0 (no group membership, nothing
    committed), consume(1000) in a loop, len(msg.value()) of every record; timed from construction (which
    connects), like grpc_bench's Consumer."""
    n = total = 0
    clock = Stopwatch(ctx.kp.cap_s)
    consumer = ctx.ck.Consumer({"bootstrap.servers": ctx.bootstrap, "log_level": QUIET, **CONSUMER})
    try:
        consumer.assign([ctx.ck.TopicPartition(topic, 0, 0)])
        consume = consumer.consume
        while n < expect:
            # consume() waits for all num_messages (or the timeout): never ask for more than is left
            for msg in consume(min(CONSUME_BATCH, expect - n), 1.0):
                if msg.error() is not None:
                    raise RuntimeError(f"Kafka consumer: {msg.error()}")
                total += len(msg.value())
                n += 1
            if clock.expired(n, expect):
                break
        sample = clock.sample(n, total)
    finally:
        consumer.close()
    return grpc_bench.check_count("Kafka consumer", sample, expect)


def _kafka_latency_consumer(bootstrap: str, topic: str, n: int, timeout_s: float, ready) -> dict:
    """latency_bench.measure's consumer (a spawned process): assigned to partition 0 from offset 0, poll()
    per message, `now - scheduled` of each stamped value; ready once it read the producer's empty first
    record (its fetches are running)."""
    import confluent_kafka

    from tidelog.loadgen.histogram import Latency

    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "log_level": QUIET, **LATENCY_CONSUMER})
    lat = Latency()
    got = 0
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 30
        warm = False
        while not warm and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            warm = msg is not None and msg.error() is None
        ready.set()
        if not warm:
            raise RuntimeError("the Kafka latency consumer read nothing within 30 s")
        deadline = time.monotonic() + timeout_s
        while got < n and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            now = time.monotonic_ns()
            if msg.error() is None and msg.value():
                latency_bench.record(lat, msg.value(), now)
                got += 1
    finally:
        consumer.close()
    return {"received": got, "latency": lat.encode()}


def kafka_e2e_run(ctx: Ctx, values: list[bytes], n: int) -> dict:
    """latency_bench's fixed-rate schedule and measurement with confluent-kafka clients: produce() + poll(0)
    per stamped message (linger.ms 0, acks 1) after an empty first record (untimed), the consumer in its
    own process."""
    topic = ctx.new_topic("e2e")
    try:
        producer = ctx.producer(LATENCY_PRODUCER)
        producer.produce(topic, b"", partition=0)
        if producer.flush(30):
            raise RuntimeError("the Kafka latency producer's first record was not delivered")
        produce, poll = producer.produce, producer.poll

        def send(value: bytes) -> None:
            produce(topic, value, partition=0)
            poll(0)

        def run() -> int:
            sent = latency_bench.fixed_rate(send, values, RATE, n, ctx.kp.e2e_s)
            if producer.flush(30):
                raise RuntimeError("the Kafka latency producer left records undelivered")
            return sent

        return latency_bench.measure(_kafka_latency_consumer, (ctx.bootstrap, topic), run, n, ctx.kp.e2e_s + 5)
    finally:
        ctx.admin.delete_topic(topic)


def tidelog_e2e_run(ctx: Ctx, n: int) -> dict:
    topic = ctx.new_name("e2e-grpc")
    try:
        return latency_bench.tidelog_e2e(ctx.target, topic, SIZE, RATE, n, ctx.kp.e2e_s)
    finally:
        with contextlib.suppress(Exception):
            ctx.admin.delete_topic(topic)


# -- scenarios -----------------------------------------------------------------------------------------------
def run_produce(ctx: Ctx, pay: Payloads) -> None:
    p = ctx.kp
    systems = {
        K_NONE: lambda: kafka_produce_run(ctx, pay, p.kafka_kib, {**PRODUCER, "compression.type": "none"}, K_NONE),
        K_LZ4: lambda: kafka_produce_run(ctx, pay, p.kafka_kib, {**PRODUCER, "compression.type": "lz4"}, K_LZ4),
    }
    if p.idempotent:
        systems[K_IDEMPOTENT] = lambda: kafka_produce_run(
            ctx, pay, p.kafka_kib, {**IDEMPOTENT, "compression.type": "none"}, K_IDEMPOTENT
        )
    systems[K_RAW] = lambda: kafka_raw_run(ctx, pay, p.raw_kib)
    systems[T_RAW] = lambda: grpc_bench.raw_produce_run(ctx, pay, p.raw_kib)
    systems[T_PRODUCER] = lambda: grpc_bench.producer_run(ctx, PRODUCE, pay, p.producer_kib)
    if ctx.redis is not None:
        systems[REDIS_XADD] = lambda: grpc_bench.redis_xadd_run(ctx, pay, p.redis_kib)
    ctx.rounds.run({PRODUCE: systems})


def run_consume(ctx: Ctx, pay: Payloads) -> None:
    """Two data sets written beforehand (untimed) by the confluent-kafka producer of the produce section,
    compression none and lz4; the none one is also what tidelog's Subscribe and Consumer read."""
    p = ctx.kp
    topics: dict[str, tuple[str, int]] = {}
    key = None
    try:
        for compression in ("none", "lz4"):
            topic = ctx.new_topic(f"consume-{compression}")
            log(f"  {CONSUME}: writing the {compression} data set ({p.consume_kib:,} records)...")
            settings = {**PRODUCER, "compression.type": compression}
            _, failed, _, _ = kafka_produce(ctx, topic, pay.values, p.consume_kib, settings, 1e9)
            end = ctx.admin.list_offsets(topic, 0).log_end
            if failed or end != p.consume_kib + 1:
                raise RuntimeError(f"the {compression} data set holds {end} records, expected {p.consume_kib + 1}")
            topics[compression] = (topic, end)
        plain, n_plain = topics["none"]
        lz4, n_lz4 = topics["lz4"]
        systems = {
            KC_NONE: lambda: kafka_consume_run(ctx, plain, pay.size, n_plain),
            KC_LZ4: lambda: kafka_consume_run(ctx, lz4, pay.size, n_lz4),
            T_SUB_RAW: lambda: grpc_bench.raw_subscribe_run(ctx, plain, pay.size, n_plain),
            T_CONSUMER: lambda: grpc_bench.consumer_run(ctx, plain, pay.size, n_plain),
        }
        if ctx.redis is not None:
            key = ctx.new_name("xread")
            redis_streams.xadd(ctx.redis, key, pay.values, p.redis_read, 1e9)
            systems[REDIS_XREAD] = lambda: grpc_bench.redis_xread_run(ctx, key, p.redis_read)
        ctx.rounds.run({CONSUME: systems})
    finally:
        for topic, _ in topics.values():
            ctx.admin.delete_topic(topic)
        if key is not None:
            ctx.redis.delete(key)


def run_latency(ctx: Ctx, pay: Payloads, redis_proc) -> None:
    n = int(RATE * ctx.kp.e2e_s)

    def logged(name: str, fn):
        def run() -> dict:
            out = fn()
            lat = out["latency_ms"]
            log(
                f"  {LATENCY}: {name}: received {out['received']:,} of {out['sent']:,}, "
                + (f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, max {lat['max']:.1f} ms" if lat else "nothing")
            )
            return out

        return run

    systems = {
        E_KAFKA: logged(E_KAFKA, lambda: kafka_e2e_run(ctx, pay.values, n)),
        E_TIDELOG: logged(E_TIDELOG, lambda: tidelog_e2e_run(ctx, n)),
    }
    if ctx.redis is not None:
        systems[E_REDIS] = logged(
            E_REDIS,
            lambda: latency_bench.redis_e2e(
                ctx.redis, redis_proc.port, ctx.new_name("e2e"), pay.values, RATE, n, ctx.kp.e2e_s
            ),
        )
    before = os.times()
    ctx.rounds.run({LATENCY: systems})
    after = os.times()
    # the latency clients' processes end within each run: the harness's CPU split (live processes only)
    # counts them as other processes; what they used is in this process's reaped-children times
    ctx.latency_clients_s = after.children_user + after.children_system - before.children_user - before.children_system


# -- report --------------------------------------------------------------------------------------------------
def sections(p: Profile, pay: Payloads) -> list[Section]:
    produce_vs = (
        Compare("Kafka none / this", K_NONE, None, KAFKA),
        Compare("Kafka lz4 / this", K_LZ4, None, KAFKA),
        Compare("Kafka raw frames / this", K_RAW, None, KAFKA),
    )
    consume_vs = (
        Compare("Kafka none / this", KC_NONE, None, KAFKA),
        Compare("Kafka lz4 / this", KC_LZ4, None, KAFKA),
    )
    return [
        Section(
            PRODUCE,
            f"Produce, 1 KiB records, one producer (Kafka: {p.kafka_kib:,} records per run; gRPC raw: "
            f"{p.raw_kib:,}, {pay.records_per_batch:,} records/batch, {pay.batch_bytes / MiB:.2f} MiB; "
            f"Producer: {p.producer_kib:,}; Redis: {p.redis_kib:,})",
            ("MB/s", "records/s"),
            produce_vs,
        ),
        Section(
            CONSUME,
            f"Consume, 1 KiB records, one consumer ({p.consume_kib + 1:,} records per data set, written by the "
            f"confluent-kafka producer above; Redis: {p.redis_read:,})",
            ("MB/s", "records/s"),
            consume_vs,
        ),
    ]


def targets(r: Rounds) -> list[tuple]:
    """(section, name, measured, goal, unit); the Kafka figures are the compression-none ones."""
    return [
        (
            PRODUCE,
            "Kafka-protocol produce / tidelog gRPC raw-batch produce (1 KiB)",
            r.paired(PRODUCE, K_NONE, T_RAW),
            0.75,
            "x",
        ),
        (
            CONSUME,
            "Kafka-protocol consume / tidelog gRPC Subscribe consume (raw)",
            r.paired(CONSUME, KC_NONE, T_SUB_RAW),
            0.75,
            "x",
        ),
        (
            PRODUCE,
            "Kafka-protocol raw Produce frames / tidelog gRPC raw-batch produce (the listener, no client)",
            r.paired(PRODUCE, K_RAW, T_RAW),
            0.75,
            "x",
        ),
        (PRODUCE, "Kafka-protocol produce / Redis XADD", r.paired(PRODUCE, K_NONE, REDIS_XADD), 5.0, "x"),
        (CONSUME, "Kafka-protocol consume / Redis XREADGROUP", r.paired(CONSUME, KC_NONE, REDIS_XREAD), 5.0, "x"),
    ]


def latency_report(r: Rounds, clients_s: float | None) -> tuple[list[str], list[dict]]:
    """The latency table: per system the median over the runs of each run's p50 / p99 / max (min - max)."""
    from .suite import latency_entry

    if LATENCY not in r.sections():
        return [], []
    entries = [latency_entry(LATENCY, name, RATE, r.samples(LATENCY, name), "") for name in r.systems(LATENCY)]
    out = [
        f"## End-to-end latency, 1 KiB records at {RATE:,} msgs/s (now - scheduled send time; medians of the "
        "runs' figures, min - max)",
        "",
        "| system | p50 ms | p99 ms | max ms | received / sent (all runs) |",
        "|---|---:|---:|---:|---:|",
    ]
    for e in entries:

        def cell(p: str, e=e) -> str:
            v = e[p]
            return "-" if v is None else f"{v['median']:.2f} ({v['min']:.2f} - {v['max']:.2f})"

        out.append(
            f"| {e['system']} | {cell('p50')} | {cell('p99')} | {cell('max')} | "
            f"{sum(e['received']):,} / {sum(e['sent']):,} |"
        )
    load = r.meter.line(LATENCY)
    if load:
        out += ["", load]
    cpu = r.meter.sections.get(LATENCY)
    if cpu and clients_s is not None:
        cores = clients_s / cpu["wall_s"]
        cpu["latency_client_processes_cores"] = cores
        out += [
            "",
            f"Of that, the latency runs' own client processes (spawned and ended within each run, which the CPU "
            f"split above counts as other processes) used {cores:.2f} cores: other processes proper "
            f"{max(cpu['other_cores'] - cores, 0.0):.2f}.",
        ]
    return out + [""], entries


def settings(p: Profile, info: dict, redis_note: str, with_redis: bool) -> list[str]:
    ck = kafka_module()
    return [
        machine_line(
            info, f"confluent-kafka {ck.__version__} (librdkafka {ck.libversion()[0]})", f"grpcio {info['grpcio']}"
        )
        + "; clients and servers share the machine's cores",
        f"malloc: {info['malloc']} in this process and `tidelog serve` (tidelog.tuning)",
        f"medians of {p.runs} runs after {p.warmup} warm-up round(s), systems interleaved round by round (order "
        "rotating); min - max across runs; ratios: ratio of medians (min - max of per-round ratios)",
        "MB/s: 10^6 bytes of record payload per second",
        "tidelog server: `tidelog serve --fsync never --kafka-port 0` (one engine behind gRPC and the Kafka "
        "listener; defaults otherwise), 1 partition, fresh topic per produce run (created over gRPC)",
        "Kafka produce: confluent-kafka Producer, linger.ms 5, batch.size 1 MiB (librdkafka also caps a batch at "
        "message.max.bytes, 1,000,000 by default), acks 1, enable.idempotence false, compression none or lz4"
        + (", and idempotent (acks all, as librdkafka requires)" if p.idempotent else "")
        + "; produce(topic, value, partition=0) + poll(0) per record, then flush(); timed after a first record "
        "was delivered; the log's end offset is checked",
        "Kafka consume: confluent-kafka Consumer assign()ed to partition 0 from offset 0 (a group.id is set as "
        "confluent-kafka requires, no group joined, nothing committed), enable.auto.commit false, fetch.max.bytes "
        "64 MiB, max.partition.fetch.bytes 8 MiB, fetch.queue.backoff.ms 10, consume(1000) in a loop, "
        "len(msg.value()) of every record, timed from construction",
        f"gRPC rows: grpc_bench's loops (raw batches: {p.raw_kib:,} records per run, 8 requests in flight; "
        "Producer(linger_ms=5, batch_bytes=1 MiB), idempotent; raw Subscribe and Consumer, credit 8 MiB, "
        "responses <= 4 MiB) on the same server; consume reads the Kafka-written none data set",
        f"latency: {RATE:,} msgs/s for {p.e2e_s:g} s per run, each value stamped with its scheduled send time, the "
        "consumer in its own process (latency_bench: no coordinated omission); Kafka: producer linger.ms 0, acks 1, "
        "consumer fetch.wait.max.ms 100, fetch.min.bytes 1, poll() per message; tidelog gRPC: latency_bench."
        "tidelog_e2e (`tidelog bench e2e`'s machinery, Producer(linger_ms=0)); Redis: latency_bench.redis_e2e",
        f"Redis: {redis_note}"
        + (
            ""
            if not with_redis
            else "; `redis-server --save '' --appendonly no` on loopback; XADD pipelines of "
            f"{redis_streams.PIPELINE}, XREADGROUP COUNT {redis_streams.COUNT} with the previous XACK pipelined"
        ),
    ]


def report(ctx: Ctx, lines: list[str], secs: list[Section], elapsed: float) -> tuple[str, dict]:
    r = ctx.rounds
    out = [f"# tidelog Kafka-listener benchmark ({ctx.kp.name})", ""] + [f"- {line}" for line in lines] + [""]
    body, results = sections_report(r, secs, ctx.notes)
    out += body
    rows, results["latency"] = latency_report(r, ctx.latency_clients_s)
    out += rows
    rows, results["targets"] = targets_table(targets(r), r.sections())
    out += rows
    if rows:
        out += ["", "Ratios: ratio of the medians (min-max of the per-round ratios), on payload MB/s; the Kafka "
                "figures in the targets are the compression-none ones."]  # fmt: skip
    out += ["", f"Total benchmark time: {elapsed:.0f} s"]
    results["elapsed_s"] = elapsed
    results["failures"] = [{"section": k, "system": n, "runs": v} for (k, n), v in ctx.notes.items()]
    results["cpu"] = r.meter.sections
    return "\n".join(out), results


# -- main ------------------------------------------------------------------------------------------------------
def run(profile: Profile, tmp_parent: str, only: set[str], with_redis: bool) -> tuple[str, dict]:
    """Start the servers, measure, stop them; the Markdown report and the JSON document."""
    import grpc

    kafka_module()  # confluent-kafka is what this measures: missing, say so before starting anything
    tuned = tune_malloc()
    started = time.perf_counter()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with workspace("tidelog-kafka-bench-", tmp_parent) as procs, contextlib.ExitStack() as closing:
        closing.callback(loop.close)
        closing.callback(loop.run_until_complete, loop.shutdown_asyncgens())
        info = machine_info(procs.tmp, tuned, grpcio=grpc.__version__)
        announce(info)
        server = start_tidelog(procs, os.path.join(procs.tmp, "tidelog-data"), kafka=True)
        bootstrap = f"{server.target.rsplit(':', 1)[0]}:{server.kafka_port}"
        log(f"tidelog serves gRPC on {server.target}, Kafka clients on {bootstrap}")
        redis_proc, redis_client, redis_note = redis_if_wanted(procs, closing, with_redis)
        log("building payloads...")
        pay = Payloads(SIZE, 32_000, SEED)
        ctx = Ctx(profile, Rounds(profile.runs, profile.warmup), loop, server.target, bootstrap, redis_client)
        closing.callback(ctx.admin.close)
        if "produce" in only:
            run_produce(ctx, pay)
        if "consume" in only:
            run_consume(ctx, pay)
        if "latency" in only:
            run_latency(ctx, pay, redis_proc)
        lines = settings(profile, info, redis_note, redis_client is not None)
        text, results = report(ctx, lines, sections(profile, pay), time.perf_counter() - started)
        return text, {"machine": info, "profile": dataclasses.asdict(profile), "settings": lines, **results}


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser("python -m benchmarks.kafka_bench", __doc__, "smaller runs, 3 per figure (about a minute)")
    ap.add_argument(
        "--only", default="produce,consume,latency", help="comma-separated subset of: produce, consume, latency"
    )
    ap.add_argument("--no-redis", action="store_true", help="leave Redis out")
    args = ap.parse_args(argv)
    profile = cli.profile(ap, args, QUICK, DEFAULT)
    only = cli.subset(ap, "--only part(s)", args.only, {"produce", "consume", "latency"})
    cli.unwind_on_signals()
    os.makedirs(args.tmp, exist_ok=True)
    try:
        text, doc = run(profile, os.path.abspath(args.tmp), only, not args.no_redis)
    except KeyboardInterrupt:
        return cli.interrupted()
    except Unavailable as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 2
    return cli.finish(text, args.json, doc)


if __name__ == "__main__":
    sys.exit(main())
