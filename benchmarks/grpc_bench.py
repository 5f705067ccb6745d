"""gRPC benchmark: tidelog produce/consume over its server vs the raw grpcio ceiling and Redis Streams.

    python -m benchmarks.grpc_bench [--quick] [--json PATH] [--runs N] [--tmp DIR] [--only ...] [--no-redis]

It starts `tidelog serve --fsync never`, the raw grpcio ceiling (this module with
`--ceiling-server`: a grpc.aio server, identity serializers, no work) and `redis-server` (no persistence;
skipped with the reason when missing) through benchmarks.harness; the clients run in this process. What is
measured and how to read it: benchmarks/README.md. This is a measuring script: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import struct
import sys
import time
from dataclasses import dataclass

import grpc

from tidelog.client import Admin, Consumer, Producer
from tidelog.client.channel import OPTIONS as TIDELOG_CHANNEL_OPTIONS
from tidelog.codec.batch import iter_batches
from tidelog.tuning import tune_malloc
from tidelog.v1 import tidelog_pb2 as pb
from tidelog.wire import framing

from . import redis_streams
from .harness import cli
from .harness.machine import announce, machine_info, machine_line
from .harness.payloads import SEED, MiB, Payloads
from .harness.processes import LOOPBACK, Processes, log, workspace
from .harness.rounds import Rounds, Sample, Stopwatch
from .harness.servers import redis_if_wanted, start_tidelog
from .harness.tables import Compare, Section, sections_report, targets_table

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRODUCE = "/tidelog.v1.Producer/Produce"
SUBSCRIBE = "/tidelog.v1.Consumer/Subscribe"
CEIL_PRODUCE = "/bench.Ceiling/Produce"  # bidi: 1 MiB bytes in, a 2-byte ack out per message
CEIL_STREAM = "/bench.Ceiling/Stream"  # server stream: n messages of `size` bytes
CEIL_ACK = b"\x08\x01"
CEIL_MESSAGE_BYTES = MiB
CEIL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
CONSUMER_CREDIT_BYTES = 8 << 20  # tidelog.client.Consumer's defaults, used by both consume variants
CONSUMER_MAX_MESSAGE_BYTES = 4 << 20
PRODUCER_LINGER_MS = 5
PRODUCER_BATCH_BYTES = MiB

# System names (also the keys of the JSON output)
T_RAW = "tidelog Produce, raw ~1 MiB batches (grpc.aio, identity serializers)"
T_PRODUCER = "tidelog Producer.send() + flush()"
CEIL_BIDI = "raw grpcio ceiling: bidi, 1 MiB bytes msgs, ack each"
REDIS_XADD = "Redis XADD, pipeline 1000"
T_CONSUMER = "tidelog Consumer (Subscribe), rec.value per record"
T_SUB_RAW = "tidelog Subscribe, raw: parse + iter_batches counts"
CEIL_SSTREAM = "raw grpcio ceiling: server stream, 1 MiB bytes msgs"
REDIS_XREAD = "Redis XREADGROUP COUNT 1000 + XACK"


@dataclass(frozen=True)
class Profile:
    name: str
    runs: int
    warmup: int
    raw_kib: int  # records per run, raw batch produce, 1 KiB
    raw_small: int  # ... 100 B
    producer_kib: int  # records per run, Producer.send(), 1 KiB
    producer_small: int
    redis_kib: int  # XADD records per run, 1 KiB
    redis_small: int
    consume_kib: int  # consume data set (read whole each run), 1 KiB
    consume_small: int
    redis_read: int  # XREADGROUP data set, 1 KiB
    ceiling_bytes: int  # bytes per ceiling run
    window: int  # raw produce: requests in flight (~1 MiB each)
    cap_s: float  # a timed loop stops early past this many seconds (marked "capped")


QUICK = Profile(
    "quick",
    runs=3,
    warmup=1,
    raw_kib=384_000,
    raw_small=3_000_000,
    producer_kib=128_000,
    producer_small=300_000,
    redis_kib=100_000,
    redis_small=200_000,
    consume_kib=384_000,
    consume_small=3_000_000,
    redis_read=100_000,
    ceiling_bytes=512 * MiB,
    window=8,
    cap_s=10.0,
)
DEFAULT = Profile(
    "default",
    runs=5,
    warmup=1,
    raw_kib=768_000,
    raw_small=6_000_000,
    producer_kib=256_000,
    producer_small=600_000,
    redis_kib=300_000,
    redis_small=500_000,
    consume_kib=768_000,
    consume_small=6_000_000,
    redis_read=300_000,
    ceiling_bytes=1024 * MiB,
    window=8,
    cap_s=30.0,
)


# -- the raw grpcio ceiling server (a subprocess: python -m benchmarks.grpc_bench --ceiling-server PORT) ---
def ceiling_server_main(port: int) -> int:
    tune_malloc()  # the same malloc settings as tidelog's server and this benchmark's client side

    async def produce(request_iterator, context):
        async for _ in request_iterator:
            yield CEIL_ACK

    prebuilt = {CEIL_MESSAGE_BYTES: [bytes([65 + i]) * CEIL_MESSAGE_BYTES for i in range(4)]}

    async def stream(request: bytes, context):
        count, size = struct.unpack("<QQ", request)
        if size not in prebuilt:
            prebuilt[size] = [bytes([65 + i]) * size for i in range(4)]
        payloads = prebuilt[size]
        for i in range(count):
            yield payloads[i & 3]

    async def run() -> None:
        server = grpc.aio.server(options=CEIL_OPTIONS + [("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "bench.Ceiling",
                    {
                        "Produce": grpc.stream_stream_rpc_method_handler(
                            produce, request_deserializer=None, response_serializer=None
                        ),
                        "Stream": grpc.unary_stream_rpc_method_handler(
                            stream, request_deserializer=None, response_serializer=None
                        ),
                    },
                ),
            )
        )
        if server.add_insecure_port(f"{LOOPBACK}:{port}") == 0:
            raise OSError(f"cannot listen on {LOOPBACK}:{port}")
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(1.0)

    asyncio.run(run())
    return 0


def grpc_reachable(port: int) -> bool:
    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=1.0)
    return True


def start_ceiling(procs: Processes):
    return procs.serve(
        "grpc-ceiling-server",
        lambda port: [sys.executable, "-m", "benchmarks.grpc_bench", "--ceiling-server", str(port)],
        grpc_reachable,
        cwd=REPO_ROOT,
    )


# -- tidelog clients -------------------------------------------------------------------------------------
async def _cancel(call) -> None:
    """Cancel a call that may still be open and let it settle (no task left pending on the loop)."""
    if not call.done():
        call.cancel()
    try:
        await asyncio.wait_for(call.code(), 5)
    except (asyncio.CancelledError, asyncio.TimeoutError, grpc.RpcError):
        pass


async def _aio_channel(target: str, options, security=None) -> grpc.aio.Channel:
    """security: a tidelog ClientSecurity (TLS, token) for a secured broker (security_bench.py)."""
    credentials = security.channel_credentials(target) if security is not None else None
    if credentials is None:
        channel = grpc.aio.insecure_channel(target, options=options)
    else:
        channel = grpc.aio.secure_channel(target, credentials, options=options + security.options())
    await asyncio.wait_for(channel.channel_ready(), 10)
    return channel


async def stream_produce(
    target: str,
    messages: list[tuple[bytes, int]],
    n_messages: int,
    window: int,
    cap_s: float,
    topic: str | None,
    security=None,
) -> tuple[int, int, float, bool]:
    """Write n_messages on one bidi stream, at most `window` unacknowledged; (records, messages, s, capped).

    topic set: tidelog's Produce, each message framed with encode_produce_request(sequence, topic, 0,
    batch) as it is sent, acks parsed as ProduceResponse (ranged: one may ack several). topic None: the
    ceiling, messages sent as they are, one 2-byte ack each.
    """
    method = PRODUCE if topic is not None else CEIL_PRODUCE
    channel = await _aio_channel(target, TIDELOG_CHANNEL_OPTIONS if topic is not None else CEIL_OPTIONS, security)
    try:
        call = channel.stream_stream(method, request_serializer=None, response_deserializer=None)()
        room = asyncio.Semaphore(window)
        counts: dict[int, int] = {}
        acked = [0, 0]  # records, messages
        encode = framing.encode_produce_request
        parse = pb.ProduceResponse.FromString
        npool = len(messages)

        def ack(sequence: int) -> None:
            acked[0] += counts.pop(sequence)
            acked[1] += 1
            room.release()

        async def read_acks() -> None:
            while True:
                raw = await call.read()
                if raw is grpc.aio.EOF:
                    return
                if topic is None:
                    ack(acked[1])
                    continue
                for result in parse(raw).results:
                    if result.HasField("error"):
                        raise RuntimeError(f"produce failed: {result.error.message} (code {result.error.code})")
                    ack(result.sequence)

        clock = Stopwatch(cap_s)
        reader = asyncio.ensure_future(read_acks())
        try:
            for seq in range(n_messages):
                await room.acquire()
                if reader.done():
                    break
                data, count = messages[seq % npool]
                counts[seq] = count
                await call.write(encode(seq, topic, 0, data) if topic is not None else data)
                if clock.expired(seq + 1, n_messages):
                    break
            await call.done_writing()
            await asyncio.wait_for(reader, cap_s + 30)
        finally:
            if not reader.done():
                reader.cancel()
        dt = clock.elapsed()
        if counts:
            raise RuntimeError(f"{len(counts)} message(s) were never acknowledged")
        return acked[0], acked[1], dt, clock.capped
    finally:
        await channel.close()


def raw_produce_run(ctx: Ctx, pay: Payloads, n_records: int) -> Sample:
    n_batches = max(1, n_records // pay.records_per_batch)
    topic = ctx.new_topic("raw")
    try:
        records, _, dt, capped = ctx.loop.run_until_complete(
            stream_produce(ctx.target, pay.batches, n_batches, ctx.p.window, ctx.p.cap_s, topic)
        )
        ctx.check_end(topic, records, "raw produce")
        return Sample(records, records * pay.size, dt, capped)
    finally:
        ctx.admin.delete_topic(topic)


def producer_run(ctx: Ctx, section: str, pay: Payloads, n_records: int) -> Sample:
    """Producer(linger_ms=5, batch_bytes=1 MiB), defaults otherwise (idempotent, no compression):
    send() n_records to partition 0, then flush(); the clock starts after a first record is delivered
    (the stream is up). The futures are not kept (flush() waits for all of them); what reached the log is
    read back afterwards, and records that did not are reported (the rate counts delivered records only)."""
    topic = ctx.new_topic("producer")
    producer = Producer(ctx.target, linger_ms=PRODUCER_LINGER_MS, batch_bytes=PRODUCER_BATCH_BYTES)
    try:
        producer.send(topic, pay.values[0], partition=0).result(30)
        values = pay.values
        npool = len(values)
        send = producer.send
        done = 0
        clock = Stopwatch(ctx.p.cap_s)
        for i in range(n_records):
            send(topic, values[i % npool], partition=0)
            done += 1
            if not i & 1023 and clock.expired(done, n_records):
                break
        producer.flush(ctx.p.cap_s + 60)
        dt = clock.elapsed()
        delivered = ctx.admin.list_offsets(topic, 0).log_end - 1
        if delivered != done:
            ctx.note(
                section,
                T_PRODUCER,
                f"{done - delivered:,} of {done:,} records sent were not appended "
                "(flush() returned normally; the futures failed)",
            )
        return Sample(delivered, delivered * pay.size, dt, clock.capped)
    finally:
        producer.close(30)
        ctx.admin.delete_topic(topic)


def consumer_run(ctx: Ctx, topic: str, size: int, expect: int) -> Sample:
    """tidelog.client.Consumer from offset 0 (its defaults: credit 8 MiB, responses <= 4 MiB), polling
    and touching len(rec.value) of every record; timed from construction (which opens the stream)."""
    n = total = 0
    clock = Stopwatch(ctx.p.cap_s)
    consumer = Consumer(
        ctx.target, topic, 0, 0, credit_bytes=CONSUMER_CREDIT_BYTES, max_message_bytes=CONSUMER_MAX_MESSAGE_BYTES
    )
    try:
        while n < expect:
            for rec in consumer.poll(1.0):
                total += len(rec.value)
                n += 1
            if clock.expired(n, expect):
                break
        sample = clock.sample(n, total)
    finally:
        consumer.close()
    return check_count("Consumer", sample, expect)


async def raw_subscribe(target: str, topic: str, expect: int, cap_s: float, security=None) -> tuple[int, float, bool]:
    """Subscribe over grpc.aio, responses as raw bytes: credit handed back on arrival, then
    parse_subscribe_response + iter_batches, counting BatchView.count (no object per record)."""
    channel = await _aio_channel(target, TIDELOG_CHANNEL_OPTIONS, security)
    try:
        call = channel.stream_stream(
            SUBSCRIBE, request_serializer=pb.SubscribeRequest.SerializeToString, response_deserializer=None
        )()
        start = pb.SubscribeRequest(
            start=pb.SubscribeStart(
                topic=topic,
                partition=0,
                position=pb.Position(offset=0),
                credit_bytes=CONSUMER_CREDIT_BYTES,
                max_message_bytes=CONSUMER_MAX_MESSAGE_BYTES,
            )
        )
        parse = framing.parse_subscribe_response
        n = 0
        clock = Stopwatch(cap_s)
        await call.write(start)
        while n < expect:
            raw = await call.read()
            if raw is grpc.aio.EOF:
                break
            await call.write(pb.SubscribeRequest(credit_bytes=len(raw)))
            for batch in iter_batches(parse(raw).batches):
                n += batch.count
            if clock.expired(n, expect):
                break
        dt = clock.elapsed()
        await _cancel(call)
        return n, dt, clock.capped
    finally:
        await channel.close()


def raw_subscribe_run(ctx: Ctx, topic: str, size: int, expect: int) -> Sample:
    n, dt, capped = ctx.loop.run_until_complete(raw_subscribe(ctx.target, topic, expect, ctx.p.cap_s))
    return check_count("raw Subscribe", Sample(n, n * size, dt, capped), expect)


# -- the raw grpcio ceiling (client side) ---------------------------------------------------------------
async def ceiling_stream(target: str, n_messages: int, cap_s: float) -> tuple[int, float, bool]:
    channel = await _aio_channel(target, CEIL_OPTIONS)
    try:
        call = channel.unary_stream(CEIL_STREAM, request_serializer=None, response_deserializer=None)(
            struct.pack("<QQ", n_messages, CEIL_MESSAGE_BYTES)
        )
        nbytes = got = 0
        clock = Stopwatch(cap_s)
        while True:
            raw = await call.read()
            if raw is grpc.aio.EOF:
                break
            nbytes += len(raw)
            got += 1
            if clock.expired(got, n_messages):
                break
        await _cancel(call)
        dt = clock.elapsed()
        if got != n_messages and not clock.capped:
            raise RuntimeError(f"ceiling stream: {got} messages, expected {n_messages}")
        return nbytes, dt, clock.capped
    finally:
        await channel.close()


def ceiling_produce_run(ctx: Ctx, size: int) -> Sample:
    n = ctx.p.ceiling_bytes // CEIL_MESSAGE_BYTES
    msgs = [(m, len(m)) for m in ctx.ceiling_messages]
    nbytes, _, dt, capped = ctx.loop.run_until_complete(
        stream_produce(ctx.ceiling_target, msgs, n, ctx.p.window, ctx.p.cap_s, None)
    )
    return Sample(nbytes // size, nbytes, dt, capped)


def ceiling_stream_run(ctx: Ctx, size: int) -> Sample:
    n = ctx.p.ceiling_bytes // CEIL_MESSAGE_BYTES
    nbytes, dt, capped = ctx.loop.run_until_complete(ceiling_stream(ctx.ceiling_target, n, ctx.p.cap_s))
    return Sample(nbytes // size, nbytes, dt, capped)


# -- Redis Streams ---------------------------------------------------------------------------------------
def redis_xadd_run(ctx: Ctx, pay: Payloads, n_records: int) -> Sample:
    key = ctx.new_name("xadd")
    try:
        done, dt, capped = redis_streams.xadd(ctx.redis, key, pay.values, n_records, ctx.p.cap_s)
        if not capped and ctx.redis.xlen(key) != done:
            raise RuntimeError(f"Redis XADD: stream holds {ctx.redis.xlen(key)} entries, expected {done}")
        return Sample(done, done * pay.size, dt, capped)
    finally:
        ctx.redis.delete(key)


def redis_xread_run(ctx: Ctx, key: str, expect: int) -> Sample:
    """A fresh consumer group from id 0 each run, read whole (redis_streams.read_group)."""
    group = ctx.new_name("g")
    ctx.redis.xgroup_create(key, group, id="0")
    try:
        got = redis_streams.read_group(ctx.redis, key, group, "c1", ctx.p.cap_s, expect // redis_streams.COUNT + 10)
    finally:
        ctx.redis.xgroup_destroy(key, group)
    return check_count("Redis XREADGROUP", Sample(got["records"], got["bytes"], got["seconds"], got["capped"]), expect)


# -- context and scenarios -------------------------------------------------------------------------------
def check_count(what: str, sample: Sample, expect: int) -> Sample:
    if sample.records != expect and not sample.capped:
        raise RuntimeError(f"{what}: read {sample.records} records, expected {expect}")
    return sample


class Ctx:
    """What every run needs: the profile, the rounds, the event loop, the servers, and the failures seen."""

    def __init__(
        self,
        profile: Profile,
        rounds: Rounds,
        loop: asyncio.AbstractEventLoop,
        target: str,
        ceiling_target: str = "",
        redis_client=None,
    ) -> None:
        self.p, self.rounds, self.loop = profile, rounds, loop
        self.target, self.ceiling_target, self.redis = target, ceiling_target, redis_client
        self.admin = Admin(target)
        self.notes: dict[tuple[str, str], list[str]] = {}  # failures seen, by (section, system)
        self._n = 0
        base = bytes(range(256)) * (CEIL_MESSAGE_BYTES // 256)
        self.ceiling_messages = [bytes([i]) + base[1:] for i in range(8)]  # distinct 1 MiB messages

    def note(self, section: str, system: str, text: str) -> None:
        log(f"  WARNING: {section}, {system}: {text}")
        self.notes.setdefault((section, system), []).append(text)

    def new_name(self, what: str) -> str:
        self._n += 1
        return f"bench-{what}-{self._n}"

    def new_topic(self, what: str) -> str:
        topic = self.new_name(what)
        self.admin.create_topic(topic, 1)
        return topic

    def check_end(self, topic: str, expect: int, what: str) -> None:
        end = self.admin.list_offsets(topic, 0).log_end
        if end != expect:
            raise RuntimeError(f"{what}: the topic holds {end} records, expected {expect}")


def run_produce(ctx: Ctx, label: str, pay: Payloads, raw_n: int, producer_n: int, redis_n: int) -> None:
    systems = {
        T_RAW: lambda: raw_produce_run(ctx, pay, raw_n),
        T_PRODUCER: lambda: producer_run(ctx, f"produce {label}", pay, producer_n),
        CEIL_BIDI: lambda: ceiling_produce_run(ctx, pay.size),
    }
    if ctx.redis is not None:
        systems[REDIS_XADD] = lambda: redis_xadd_run(ctx, pay, redis_n)
    ctx.rounds.run({f"produce {label}": systems})


def run_consume(ctx: Ctx, label: str, pay: Payloads, n_records: int, redis_n: int | None) -> None:
    topic = ctx.new_topic("consume")
    key = None
    try:
        log(f"  consume {label}: writing the data sets...")
        n_batches = max(1, n_records // pay.records_per_batch)
        records, _, _, _ = ctx.loop.run_until_complete(
            stream_produce(ctx.target, pay.batches, n_batches, ctx.p.window, 1e9, topic)
        )
        ctx.check_end(topic, records, "consume data set")
        systems = {
            T_SUB_RAW: lambda: raw_subscribe_run(ctx, topic, pay.size, records),
            T_CONSUMER: lambda: consumer_run(ctx, topic, pay.size, records),
            CEIL_SSTREAM: lambda: ceiling_stream_run(ctx, pay.size),
        }
        if ctx.redis is not None and redis_n:
            key = ctx.new_name("xread")
            redis_streams.xadd(ctx.redis, key, pay.values, redis_n, 1e9)
            systems[REDIS_XREAD] = lambda: redis_xread_run(ctx, key, redis_n)
        ctx.rounds.run({f"consume {label}": systems})
    finally:
        ctx.admin.delete_topic(topic)
        if key is not None:
            ctx.redis.delete(key)


# -- report ----------------------------------------------------------------------------------------------
def sections(p: Profile, pay_kib: Payloads | None, pay_small: Payloads | None) -> list[Section]:
    vs = (
        Compare("raw batches / this", T_RAW, None, "tidelog"),
        Compare("Producer / this", T_PRODUCER, None, "tidelog"),
    )
    vs_read = (
        Compare("raw Subscribe / this", T_SUB_RAW, None, "tidelog"),
        Compare("Consumer / this", T_CONSUMER, None, "tidelog"),
    )

    def rpb(pay):
        return f"{pay.records_per_batch:,} records/batch, {pay.batch_bytes / MiB:.2f} MiB" if pay else ""

    return [
        Section(
            "produce 1 KiB",
            f"gRPC produce, 1 KiB records, one producer (raw: {p.raw_kib:,} records per "
            f"run, {rpb(pay_kib)}; Producer: {p.producer_kib:,}; Redis: {p.redis_kib:,})",
            ("MB/s", "records/s"),
            vs,
        ),
        Section(
            "produce 100 B",
            f"gRPC produce, 100 B records, one producer (raw: {p.raw_small:,} records "
            f"per run, {rpb(pay_small)}; Producer: {p.producer_small:,}; Redis: {p.redis_small:,})",
            ("records/s", "MB/s"),
            vs,
        ),
        Section(
            "consume 1 KiB",
            f"gRPC consume, 1 KiB records, one consumer (tidelog: {p.consume_kib:,} "
            f"records per run; Redis: {p.redis_read:,})",
            ("MB/s", "records/s"),
            vs_read,
        ),
        Section(
            "consume 100 B",
            f"gRPC consume, 100 B records, one consumer ({p.consume_small:,} records per run)",
            ("records/s", "MB/s"),
            vs_read,
        ),
    ]


def targets(r: Rounds) -> list[tuple]:
    """our gRPC performance targets, for both client paths: (section, name, measured, goal, unit)."""
    out = []
    for who, name in (("raw batches", T_RAW), ("Producer", T_PRODUCER)):
        out += [
            (
                "produce 1 KiB",
                f"produce 1 KiB, {who} / raw bidi ceiling",
                r.paired("produce 1 KiB", name, CEIL_BIDI),
                0.75,
                "x",
            ),
            (
                "produce 1 KiB",
                f"produce 1 KiB, {who} / Redis XADD",
                r.paired("produce 1 KiB", name, REDIS_XADD),
                5.0,
                "x",
            ),
        ]
    for who, name in (("raw Subscribe", T_SUB_RAW), ("Consumer", T_CONSUMER)):
        out += [
            (
                "consume 1 KiB",
                f"consume 1 KiB, {who} / raw server-stream ceiling",
                r.paired("consume 1 KiB", name, CEIL_SSTREAM),
                0.75,
                "x",
            ),
            (
                "consume 1 KiB",
                f"consume 1 KiB, {who} / Redis XREADGROUP",
                r.paired("consume 1 KiB", name, REDIS_XREAD),
                3.0,
                "x",
            ),
        ]
    for who, name in (("raw batches", T_RAW), ("Producer", T_PRODUCER)):
        out.append(
            (
                "produce 100 B",
                f"produce 100 B, {who}: records/s",
                r.median("produce 100 B", name, "records/s"),
                1e6,
                "records/s",
            )
        )
    return out


def settings(p: Profile, info: dict, redis_note: str, with_redis: bool) -> list[str]:
    return [
        machine_line(info, f"grpcio {info['grpcio']}", f"protobuf {info['protobuf']}")
        + "; clients and servers share the machine's cores",
        f"malloc: {info['malloc']} in this process, the ceiling server and `tidelog serve` (tidelog.tuning)",
        f"medians of {p.runs} runs after {p.warmup} warm-up round(s), systems interleaved round by round (order "
        "rotating); min - max across runs; ratios: ratio of medians (min - max of per-round ratios)",
        "MB/s: 10^6 bytes of record payload per second; for the ceiling, message bytes, and its records/s is "
        "that divided by the record size",
        "tidelog server: `tidelog serve --fsync never` (defaults otherwise: segment 1 GiB, 16 I/O threads), "
        "1 partition, fresh topic per produce run; consume reads one data set whole from offset 0 each run",
        "raw produce: pre-built RecordBatch v2 (build_batch, producer_id=-1, no compression) framed per request "
        f"with encode_produce_request, one Produce stream over grpc.aio with identity serializers, {p.window} "
        "requests in flight, ProduceResponse acks parsed",
        f"Producer: tidelog.client.Producer(linger_ms={PRODUCER_LINGER_MS}, batch_bytes=1 MiB), idempotent "
        "(default), send(topic, value, partition=0) then flush()",
        f"consume: Subscribe with credit {CONSUMER_CREDIT_BYTES >> 20} MiB, responses <= "
        f"{CONSUMER_MAX_MESSAGE_BYTES >> 20} MiB (Consumer defaults); raw: grpc.aio, credit returned on "
        "arrival, parse_subscribe_response + iter_batches (BatchView.count)",
        "raw grpcio ceiling: grpc.aio server in its own process, generic handlers, identity serializers, no "
        f"work; bidi: 1 MiB bytes messages, a 2-byte ack each, {p.window} in flight; server stream: 1 MiB bytes "
        "messages; grpc.so_reuseport 0, message limits 64 MiB",
        f"Redis: {redis_note}"
        + (
            ""
            if not with_redis
            else "; `redis-server --save '' --appendonly no` on loopback (no persistence); "
            f"XADD key * v <value> in pipeline(transaction=False) of {redis_streams.PIPELINE}, "
            "no MAXLEN, stream deleted after each run; XREADGROUP COUNT "
            f"{redis_streams.COUNT} '>' pipelined with the XACK of the previous batch, fresh "
            "group from id 0 per run"
        ),
    ]


def report(ctx: Ctx, info: dict, lines: list[str], secs: list[Section], elapsed: float) -> tuple[str, dict]:
    r = ctx.rounds
    out = [f"# tidelog gRPC benchmark ({ctx.p.name})", ""] + [f"- {line}" for line in lines] + [""]
    body, results = sections_report(r, secs, ctx.notes)
    out += body
    rows, results["targets"] = targets_table(targets(r), r.sections())
    out += rows
    if rows:
        out += [
            "",
            "Ratios: ratio of the medians (min-max of the per-round ratios), on payload MB/s (message "
            "bytes for the ceiling); for Redis this equals the ratio of records/s.",
        ]
    out += ["", f"Total benchmark time: {elapsed:.0f} s"]
    results["elapsed_s"] = elapsed
    results["failures"] = [{"section": k, "system": n, "runs": v} for (k, n), v in ctx.notes.items()]
    results["cpu"] = r.meter.sections
    return "\n".join(out), results


# -- main ------------------------------------------------------------------------------------------------
def run(profile: Profile, tmp_parent: str, only: set[str], sizes: set[str], with_redis: bool) -> tuple[str, dict]:
    """Start the servers, measure, stop them; the Markdown report and the JSON document."""
    import google.protobuf

    tuned = tune_malloc()
    started = time.perf_counter()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with workspace("tidelog-grpc-bench-", tmp_parent) as procs, contextlib.ExitStack() as closing:
        closing.callback(loop.close)
        closing.callback(loop.run_until_complete, loop.shutdown_asyncgens())
        info = machine_info(procs.tmp, tuned, grpcio=grpc.__version__, protobuf=google.protobuf.__version__)
        announce(info)
        server = start_tidelog(procs, os.path.join(procs.tmp, "tidelog-data"))
        ceiling = start_ceiling(procs)
        _, redis_client, redis_note = redis_if_wanted(procs, closing, with_redis)
        log("building payloads...")
        pay_kib = Payloads(1024, 32_000, SEED) if "1k" in sizes else None
        pay_small = Payloads(100, 96_000, SEED + 1) if "100" in sizes else None
        ctx = Ctx(profile, Rounds(profile.runs, profile.warmup), loop, server.target, ceiling.target, redis_client)
        closing.callback(ctx.admin.close)
        if "produce" in only:
            if pay_kib:
                run_produce(ctx, "1 KiB", pay_kib, profile.raw_kib, profile.producer_kib, profile.redis_kib)
            if pay_small:
                run_produce(ctx, "100 B", pay_small, profile.raw_small, profile.producer_small, profile.redis_small)
        if "consume" in only:
            if pay_kib:
                run_consume(ctx, "1 KiB", pay_kib, profile.consume_kib, profile.redis_read)
            if pay_small:
                run_consume(ctx, "100 B", pay_small, profile.consume_small, None)
        lines = settings(profile, info, redis_note, redis_client is not None)
        text, results = report(ctx, info, lines, sections(profile, pay_kib, pay_small), time.perf_counter() - started)
        return text, {"machine": info, "profile": dataclasses.asdict(profile), "settings": lines, **results}


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser("python -m benchmarks.grpc_bench", __doc__, "smaller runs, 3 per figure (under a minute)")
    ap.add_argument("--only", default="produce,consume", help="comma-separated subset of: produce, consume")
    ap.add_argument("--sizes", default="1k,100", help="comma-separated subset of: 1k, 100")
    ap.add_argument("--no-redis", action="store_true", help="leave Redis out")
    ap.add_argument("--ceiling-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ceiling_server is not None:
        return ceiling_server_main(args.ceiling_server)
    profile = cli.profile(ap, args, QUICK, DEFAULT)
    only = cli.subset(ap, "--only part(s)", args.only, {"produce", "consume"})
    sizes = cli.subset(ap, "--sizes", args.sizes, {"1k", "100"})
    cli.unwind_on_signals()
    os.makedirs(args.tmp, exist_ok=True)
    try:
        text, doc = run(profile, os.path.abspath(args.tmp), only, sizes, not args.no_redis)
    except KeyboardInterrupt:
        return cli.interrupted()
    return cli.finish(text, args.json, doc)


if __name__ == "__main__":
    sys.exit(main())
