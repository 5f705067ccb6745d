"""gRPC benchmark: tidelog produce/consume over its server vs the raw grpcio ceiling and Redis Streams.

    python -m benchmarks.grpc_bench [--quick] [--json PATH] [--runs N] [--tmp DIR] [--only ...] [--no-redis]

One invocation starts every system itself, each on a free 127.0.0.1 port, and stops each by PID at the
end (also on Ctrl-C, SIGTERM or an error):

- `tidelog serve --fsync never` (a subprocess; ready when its gRPC health check says SERVING),
- the raw grpcio ceiling of PERF.md: a grpc.aio server in a subprocess (this module with
  `--ceiling-server`), generic handlers with identity serializers doing no work,
- Debian's `redis-server` with `--save '' --appendonly no` (skipped, with the reason, when missing;
  `bash benchmarks/setup_peers.sh` installs it).

The clients run in this process. Systems are interleaved round by round (the order rotates), the first
round is a warm-up, each figure is the median of >= 3 runs with min and max, and ratios are taken between
figures of the same run (ratio of medians, with the min-max of the per-round ratios), as in
benchmarks/embedded.py, whose measuring machinery this script reuses. Every loop is bounded by a count and
a time cap. This is a measuring script: it asserts nothing about speed.

Units: MB/s is 10^6 bytes of record payload per second ("1 KiB" records carry exactly 1024 payload bytes,
"100 B" records exactly 100); for the raw ceiling it is message bytes, and its records/s is that byte rate
divided by the record size (records of that size carried with zero framing overhead).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Callable

import grpc

from tidelog.client import Admin, Consumer, Producer
from tidelog.client.channel import OPTIONS as TIDELOG_CHANNEL_OPTIONS
from tidelog.wire import framing
from tidelog.codec.batch import HEADER_SIZE, build_batch, iter_batches
from tidelog.tuning import tune_malloc
from tidelog.v1 import tidelog_pb2 as pb

from .embedded import (Bench, Compare, Sample, Section, Series, fmt, machine_info, make_pool, paired,
                       section_table)

MiB = 1 << 20
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 20240611
LOOPBACK = "127.0.0.1"
TARGET_BATCH_BYTES = MiB  # raw path: records per RecordBatch chosen so a batch is ~1 MiB
PRODUCE = "/tidelog.v1.Producer/Produce"
SUBSCRIBE = "/tidelog.v1.Consumer/Subscribe"
CEIL_PRODUCE = "/bench.Ceiling/Produce"  # bidi: 1 MiB bytes in, a 2-byte ack out per message
CEIL_STREAM = "/bench.Ceiling/Stream"  # server stream: n messages of `size` bytes
CEIL_ACK = b"\x08\x01"
CEIL_MESSAGE_BYTES = MiB
MAX_MESSAGE_BYTES = 64 << 20
CEIL_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
CONSUMER_CREDIT_BYTES = 8 << 20  # tidelog.client.Consumer's defaults, used by both consume variants
CONSUMER_MAX_MESSAGE_BYTES = 4 << 20
PRODUCER_LINGER_MS = 5
PRODUCER_BATCH_BYTES = MiB
REDIS_PIPELINE = 1000
REDIS_COUNT = 1000

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


QUICK = Profile("quick", runs=3, warmup=1, raw_kib=384_000, raw_small=3_000_000, producer_kib=128_000,
                producer_small=300_000, redis_kib=100_000, redis_small=200_000, consume_kib=384_000,
                consume_small=3_000_000, redis_read=100_000, ceiling_bytes=512 * MiB, window=8, cap_s=10.0)
DEFAULT = Profile("default", runs=5, warmup=1, raw_kib=768_000, raw_small=6_000_000, producer_kib=256_000,
                  producer_small=600_000, redis_kib=300_000, redis_small=500_000, consume_kib=768_000,
                  consume_small=6_000_000, redis_read=300_000, ceiling_bytes=1024 * MiB, window=8, cap_s=30.0)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- processes started by the benchmark ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class Processes:
    """Subprocesses this benchmark started; each is stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.procs: list[tuple[str, subprocess.Popen, str]] = []

    def start(self, name: str, argv: list[str], cwd: str | None = None) -> tuple[subprocess.Popen, str]:
        log_path = os.path.join(self.tmp, f"{name}.log")
        with open(log_path, "ab") as out:
            # A session of its own: a Ctrl-C in the terminal reaches only this script, which then stops
            # its children itself, in order.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=cwd or self.tmp)
        self.procs.append((name, proc, log_path))
        log(f"started {name} (pid {proc.pid}): {' '.join(argv)}")
        return proc, log_path

    def stop(self, proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except ProcessLookupError:
                pass
        self.procs = [p for p in self.procs if p[1] is not proc]

    def stop_all(self) -> None:
        for name, proc, _ in reversed(list(self.procs)):
            running = proc.poll() is None
            self.stop(proc)
            if running:
                log(f"stopped {name} (pid {proc.pid}, exit code {proc.returncode})")


def log_tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_until(proc: subprocess.Popen, log_path: str, what: str, ready: Callable[[], bool],
               timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}:\n{log_tail(log_path)}")
        try:
            if ready():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} was not ready within {timeout_s:.0f} s:\n{log_tail(log_path)}")


def grpc_serving(target: str) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def start_tidelog(procs: Processes, data_dir: str) -> tuple[str, subprocess.Popen]:
    exe = shutil.which("tidelog")
    base = [exe] if exe else [sys.executable, "-m", "tidelog"]
    for attempt in range(3):  # the free port may be taken between choosing and binding it
        port = free_port()
        proc, log_path = procs.start("tidelog-server", base + [
            "serve", "--data-dir", data_dir, "--host", LOOPBACK, "--port", str(port), "--fsync", "never",
            "--log-level", "warning", "--metrics-port", "0"])
        target = f"{LOOPBACK}:{port}"
        try:
            wait_until(proc, log_path, "tidelog serve", lambda: grpc_serving(target))
            return target, proc
        except RuntimeError:
            procs.stop(proc)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def start_ceiling(procs: Processes) -> tuple[str, subprocess.Popen]:
    for attempt in range(3):
        port = free_port()
        proc, log_path = procs.start("grpc-ceiling-server", [
            sys.executable, "-m", "benchmarks.grpc_bench", "--ceiling-server", str(port)], cwd=REPO_ROOT)
        target = f"{LOOPBACK}:{port}"
        try:
            wait_until(proc, log_path, "the raw grpcio ceiling server", lambda: "READY" in log_tail(log_path, 5))
            return target, proc
        except RuntimeError:
            procs.stop(proc)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def start_redis(procs: Processes, data_dir: str):
    """(client, process, version text), or (None, None, why not)."""
    exe = shutil.which("redis-server")
    if exe is None:
        return None, None, "redis-server is not installed (run: bash benchmarks/setup_peers.sh)"
    try:
        import redis
        import redis.utils
    except ImportError:
        return None, None, "the redis Python package is not installed (run: bash benchmarks/setup_peers.sh)"
    for attempt in range(3):
        port = free_port()
        proc, log_path = procs.start("redis-server", [
            exe, "--save", "", "--appendonly", "no", "--port", str(port), "--bind", LOOPBACK,
            "--dir", data_dir, "--daemonize", "no", "--logfile", ""])
        client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=60)
        try:
            wait_until(proc, log_path, "redis-server", client.ping)
            version = client.info("server")["redis_version"]
            parser = "hiredis" if redis.utils.HIREDIS_AVAILABLE else "pure-Python parser"
            return client, proc, f"Redis {version}, redis-py {redis.__version__} with {parser}"
        except RuntimeError:
            client.close()
            procs.stop(proc)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


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
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Ceiling", {
            "Produce": grpc.stream_stream_rpc_method_handler(produce, request_deserializer=None,
                                                             response_serializer=None),
            "Stream": grpc.unary_stream_rpc_method_handler(stream, request_deserializer=None,
                                                           response_serializer=None),
        }),))
        if server.add_insecure_port(f"{LOOPBACK}:{port}") == 0:
            raise OSError(f"cannot listen on {LOOPBACK}:{port}")
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("READY", flush=True)
        await stop.wait()
        await server.stop(1.0)

    asyncio.run(run())
    return 0


# -- payloads ----------------------------------------------------------------------------------------------
class Payloads:
    """Seeded JSON-like records of one size (embedded.make_pool), and the same as ~1 MiB RecordBatch v2."""

    def __init__(self, size: int, n_records: int, seed: int) -> None:
        self.size = size
        pool = make_pool(max(1, n_records // 1000), size, seed)
        self.values: list[bytes] = [v for batch in pool for v in batch]
        probe = build_batch(self.values[:1000], timestamp=0, producer_id=-1)
        per_record = (len(probe) - HEADER_SIZE) / 1000
        self.records_per_batch = max(1, int((TARGET_BATCH_BYTES - HEADER_SIZE) / per_record))
        now_ms = int(time.time() * 1000)
        self.batches: list[tuple[bytes, int]] = []  # (batch, record count)
        rpb = self.records_per_batch
        for lo in range(0, len(self.values) - rpb + 1, rpb):
            chunk = self.values[lo:lo + rpb]
            self.batches.append((build_batch(chunk, timestamp=now_ms, producer_id=-1), len(chunk)))
        if not self.batches:
            raise ValueError("too few records for one batch")
        self.batch_bytes = sum(len(b) for b, _ in self.batches) / len(self.batches)


# -- tidelog clients -------------------------------------------------------------------------------------
async def _cancel(call) -> None:
    """Cancel a call that may still be open and let it settle (no task left pending on the loop)."""
    if not call.done():
        call.cancel()
    try:
        await asyncio.wait_for(call.code(), 5)
    except (asyncio.CancelledError, asyncio.TimeoutError, grpc.RpcError):
        pass


async def _aio_channel(target: str, options) -> grpc.aio.Channel:
    channel = grpc.aio.insecure_channel(target, options=options)
    await asyncio.wait_for(channel.channel_ready(), 10)
    return channel


async def stream_produce(target: str, messages: list[tuple[bytes, int]], n_messages: int, window: int,
                         cap_s: float, topic: str | None) -> tuple[int, int, float, bool]:
    """Write n_messages on one bidi stream, at most `window` unacknowledged; (records, messages, s, capped).

    topic set: tidelog's Produce, each message framed with encode_produce_request(sequence, topic, 0,
    batch) as it is sent, acks parsed as ProduceResponse (ranged: one may ack several). topic None: the
    ceiling, messages sent as they are, one 2-byte ack each.
    """
    method = PRODUCE if topic is not None else CEIL_PRODUCE
    channel = await _aio_channel(target, TIDELOG_CHANNEL_OPTIONS if topic is not None else CEIL_OPTIONS)
    try:
        call = channel.stream_stream(method, request_serializer=None, response_deserializer=None)()
        room = asyncio.Semaphore(window)
        counts: dict[int, int] = {}
        acked = [0, 0]  # records, messages
        capped = False
        encode = framing.encode_produce_request
        parse = pb.ProduceResponse.FromString
        npool = len(messages)

        async def read_acks() -> None:
            while True:
                raw = await call.read()
                if raw is grpc.aio.EOF:
                    return
                if topic is None:
                    acked[0] += counts.pop(acked[1])
                    acked[1] += 1
                    room.release()
                    continue
                for result in parse(raw).results:
                    if result.HasField("error"):
                        raise RuntimeError(f"produce failed: {result.error.message} (code {result.error.code})")
                    acked[0] += counts.pop(result.sequence)
                    acked[1] += 1
                    room.release()

        t0 = time.perf_counter()
        deadline = t0 + cap_s
        reader = asyncio.ensure_future(read_acks())
        try:
            for seq in range(n_messages):
                await room.acquire()
                if reader.done():
                    break
                data, count = messages[seq % npool]
                counts[seq] = count
                await call.write(encode(seq, topic, 0, data) if topic is not None else data)
                if time.perf_counter() > deadline:
                    capped = seq + 1 < n_messages
                    break
            await call.done_writing()
            await asyncio.wait_for(reader, cap_s + 30)
        finally:
            if not reader.done():
                reader.cancel()
        dt = time.perf_counter() - t0
        if counts:
            raise RuntimeError(f"{len(counts)} message(s) were never acknowledged")
        return acked[0], acked[1], dt, capped
    finally:
        await channel.close()


def raw_produce_run(ctx: "Ctx", pay: Payloads, n_records: int) -> Sample:
    n_batches = max(1, n_records // pay.records_per_batch)
    topic = ctx.new_topic("raw")
    try:
        records, _, dt, capped = ctx.loop.run_until_complete(
            stream_produce(ctx.target, pay.batches, n_batches, ctx.p.window, ctx.p.cap_s, topic))
        ctx.check_end(topic, records, "raw produce")
        return Sample(records, records * pay.size, dt, capped)
    finally:
        ctx.drop_topic(topic)


def producer_run(ctx: "Ctx", section: str, pay: Payloads, n_records: int) -> Sample:
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
        capped = False
        done = 0
        t0 = time.perf_counter()
        deadline = t0 + ctx.p.cap_s
        for i in range(n_records):
            send(topic, values[i % npool], partition=0)
            done += 1
            if not i & 1023 and time.perf_counter() > deadline:
                capped = done < n_records
                break
        producer.flush(ctx.p.cap_s + 60)
        dt = time.perf_counter() - t0
        delivered = ctx.admin.list_offsets(topic, 0).log_end - 1
        if delivered != done:
            ctx.note(section, T_PRODUCER, f"{done - delivered:,} of {done:,} records sent were not appended "
                     "(flush() returned normally; the futures failed)")
        return Sample(delivered, delivered * pay.size, dt, capped)
    finally:
        producer.close(30)
        ctx.drop_topic(topic)


def consumer_run(ctx: "Ctx", topic: str, size: int, expect: int) -> Sample:
    """tidelog.client.Consumer from offset 0 (its defaults: credit 8 MiB, responses <= 4 MiB), polling
    and touching len(rec.value) of every record; timed from construction (which opens the stream)."""
    n = total = 0
    capped = False
    t0 = time.perf_counter()
    deadline = t0 + ctx.p.cap_s
    consumer = Consumer(ctx.target, topic, 0, 0, credit_bytes=CONSUMER_CREDIT_BYTES,
                        max_message_bytes=CONSUMER_MAX_MESSAGE_BYTES)
    try:
        while n < expect:
            for rec in consumer.poll(1.0):
                total += len(rec.value)
                n += 1
            if time.perf_counter() > deadline:
                capped = n < expect
                break
        dt = time.perf_counter() - t0
    finally:
        consumer.close()
    check_count("Consumer", n, expect, capped)
    return Sample(n, total, dt, capped)


async def raw_subscribe(target: str, topic: str, expect: int, cap_s: float) -> tuple[int, float, bool]:
    """Subscribe over grpc.aio, responses as raw bytes: credit handed back on arrival, then
    parse_subscribe_response + iter_batches, counting BatchView.count (no object per record)."""
    channel = await _aio_channel(target, TIDELOG_CHANNEL_OPTIONS)
    try:
        call = channel.stream_stream(SUBSCRIBE, request_serializer=pb.SubscribeRequest.SerializeToString,
                                     response_deserializer=None)()
        start = pb.SubscribeRequest(start=pb.SubscribeStart(
            topic=topic, partition=0, position=pb.Position(offset=0), credit_bytes=CONSUMER_CREDIT_BYTES,
            max_message_bytes=CONSUMER_MAX_MESSAGE_BYTES))
        parse = framing.parse_subscribe_response
        n = 0
        capped = False
        t0 = time.perf_counter()
        deadline = t0 + cap_s
        await call.write(start)
        while n < expect:
            raw = await call.read()
            if raw is grpc.aio.EOF:
                break
            await call.write(pb.SubscribeRequest(credit_bytes=len(raw)))
            for batch in iter_batches(parse(raw).batches):
                n += batch.count
            if time.perf_counter() > deadline:
                capped = n < expect
                break
        dt = time.perf_counter() - t0
        await _cancel(call)
        return n, dt, capped
    finally:
        await channel.close()


def raw_subscribe_run(ctx: "Ctx", topic: str, size: int, expect: int) -> Sample:
    n, dt, capped = ctx.loop.run_until_complete(raw_subscribe(ctx.target, topic, expect, ctx.p.cap_s))
    check_count("raw Subscribe", n, expect, capped)
    return Sample(n, n * size, dt, capped)


# -- the raw grpcio ceiling (client side) ---------------------------------------------------------------
async def ceiling_stream(target: str, n_messages: int, cap_s: float) -> tuple[int, float, bool]:
    channel = await _aio_channel(target, CEIL_OPTIONS)
    try:
        call = channel.unary_stream(CEIL_STREAM, request_serializer=None, response_deserializer=None)(
            struct.pack("<QQ", n_messages, CEIL_MESSAGE_BYTES))
        nbytes = got = 0
        capped = False
        t0 = time.perf_counter()
        deadline = t0 + cap_s
        while True:
            raw = await call.read()
            if raw is grpc.aio.EOF:
                break
            nbytes += len(raw)
            got += 1
            if time.perf_counter() > deadline:
                capped = got < n_messages
                break
        await _cancel(call)
        dt = time.perf_counter() - t0
        if got != n_messages and not capped:
            raise RuntimeError(f"ceiling stream: {got} messages, expected {n_messages}")
        return nbytes, dt, capped
    finally:
        await channel.close()


def ceiling_produce_run(ctx: "Ctx", size: int) -> Sample:
    n = ctx.p.ceiling_bytes // CEIL_MESSAGE_BYTES
    msgs = [(m, len(m)) for m in ctx.ceiling_messages]
    nbytes, _, dt, capped = ctx.loop.run_until_complete(
        stream_produce(ctx.ceiling_target, msgs, n, ctx.p.window, ctx.p.cap_s, None))
    return Sample(nbytes // size, nbytes, dt, capped)


def ceiling_stream_run(ctx: "Ctx", size: int) -> Sample:
    n = ctx.p.ceiling_bytes // CEIL_MESSAGE_BYTES
    nbytes, dt, capped = ctx.loop.run_until_complete(ceiling_stream(ctx.ceiling_target, n, ctx.p.cap_s))
    return Sample(nbytes // size, nbytes, dt, capped)


# -- Redis Streams ---------------------------------------------------------------------------------------
def redis_xadd(r, key: str, values: list[bytes], n_records: int, cap_s: float) -> tuple[int, float, bool]:
    npool = len(values)
    done = 0
    capped = False
    t0 = time.perf_counter()
    deadline = t0 + cap_s
    while done < n_records:
        pipe = r.pipeline(transaction=False)
        xadd = pipe.xadd
        end = min(done + REDIS_PIPELINE, n_records)
        for i in range(done, end):
            xadd(key, {b"v": values[i % npool]})
        pipe.execute()
        done = end
        if time.perf_counter() > deadline:
            capped = done < n_records
            break
    return done, time.perf_counter() - t0, capped


def redis_xadd_run(ctx: "Ctx", pay: Payloads, n_records: int) -> Sample:
    key = ctx.new_name("xadd")
    try:
        done, dt, capped = redis_xadd(ctx.redis, key, pay.values, n_records, ctx.p.cap_s)
        if not capped and ctx.redis.xlen(key) != done:
            raise RuntimeError(f"Redis XADD: stream holds {ctx.redis.xlen(key)} entries, expected {done}")
        return Sample(done, done * pay.size, dt, capped)
    finally:
        ctx.redis.delete(key)


def redis_xread_run(ctx: "Ctx", key: str, expect: int) -> Sample:
    """A fresh consumer group from id 0 each run: XREADGROUP COUNT 1000 ('>'), touch len(value) of each
    entry, XACK the ids (two round trips per 1000 entries)."""
    r = ctx.redis
    group = ctx.new_name("g")
    r.xgroup_create(key, group, id="0")
    try:
        n = total = 0
        capped = False
        t0 = time.perf_counter()
        deadline = t0 + ctx.p.cap_s
        while n < expect:
            reply = r.xreadgroup(group, "c1", {key: ">"}, count=REDIS_COUNT)
            if not reply:
                break
            entries = reply[0][1]
            ids = []
            for entry_id, fields in entries:
                total += len(fields[b"v"])
                ids.append(entry_id)
            n += len(ids)
            r.xack(key, group, *ids)
            if time.perf_counter() > deadline:
                capped = n < expect
                break
        dt = time.perf_counter() - t0
    finally:
        r.xgroup_destroy(key, group)
    check_count("Redis XREADGROUP", n, expect, capped)
    return Sample(n, total, dt, capped)


# -- machine load during a section ------------------------------------------------------------------------
_HZ = os.sysconf("SC_CLK_TCK")


def _proc_ticks(pid: str) -> tuple[int, int, int]:
    """(utime + stime, ppid, flags) of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]), int(fields[1]), int(fields[6])


class LoadMeter:
    """CPU the machine spent during a section, split into this benchmark's processes (this one and the
    servers it started), kernel work (softirq/irq, kernel threads: loopback TCP, page cache writeback)
    and every other process, so that a run disturbed by foreign load shows it."""

    def __init__(self, procs: "Processes") -> None:
        self.procs = procs
        self.sections: dict[str, dict] = {}

    def _snapshot(self) -> dict:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        ours_pids = {str(os.getpid())} | {str(p.pid) for _, p, _ in self.procs.procs}
        ours = kernel = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                ticks, ppid, flags = _proc_ticks(pid)
            except (OSError, IndexError, ValueError):
                continue
            if pid in ours_pids:
                ours += ticks
            elif flags & 0x00200000 or ppid == 2 or pid == "2":  # PF_KTHREAD
                kernel += ticks
        # user nice system idle iowait irq softirq steal
        return {"t": time.perf_counter(), "busy": sum(v[:8]) - v[3] - v[4], "irq": v[5] + v[6], "ours": ours,
                "kthreads": kernel}

    def start(self, section: str) -> None:
        self.sections[section] = {"start": self._snapshot()}

    def stop(self, section: str) -> None:
        a, b = self.sections[section]["start"], self._snapshot()
        wall = b["t"] - a["t"]

        def cores(key):
            return (b[key] - a[key]) / _HZ / wall

        busy, ours = cores("busy"), cores("ours")
        kernel = cores("irq") + cores("kthreads")
        self.sections[section] = {"wall_s": wall, "busy_cores": busy, "benchmark_cores": ours,
                                  "kernel_cores": kernel, "other_cores": max(busy - ours - kernel, 0.0)}

    def line(self, section: str) -> str | None:
        m = self.sections.get(section)
        if not m or "busy_cores" not in m:
            return None
        text = (f"CPU during this section (cores, average over {m['wall_s']:.0f} s): {m['busy_cores']:.2f} busy of "
                f"{os.cpu_count()}; the benchmark's processes {m['benchmark_cores']:.2f}, kernel (softirq, kernel "
                f"threads) {m['kernel_cores']:.2f}, other processes {m['other_cores']:.2f}")
        if m["other_cores"] >= 0.15:
            text += " -- WARNING: other processes competed for the CPU; these figures are disturbed"
        return text


# -- context and scenarios -------------------------------------------------------------------------------
def check_count(what: str, got: int, expect: int, capped: bool) -> None:
    if got != expect and not capped:
        raise RuntimeError(f"{what}: read {got} records, expected {expect}")


class Ctx:
    def __init__(self, profile: Profile, bench: Bench, loop: asyncio.AbstractEventLoop, target: str,
                 ceiling_target: str, redis_client, meter: LoadMeter | None = None) -> None:
        self.p = profile
        self.meter = meter
        self.bench = bench
        self.loop = loop
        self.target = target
        self.ceiling_target = ceiling_target
        self.redis = redis_client
        self.admin = Admin(target)
        self.notes: dict[tuple[str, str], list[str]] = {}  # failures seen, by (section, system)
        self._n = 0
        base = bytes(range(256)) * (CEIL_MESSAGE_BYTES // 256)
        self.ceiling_messages = [bytes([i]) + base[1:] for i in range(8)]  # distinct 1 MiB messages

    def rounds(self, section: str, systems: dict) -> None:
        if self.meter is not None:
            self.meter.start(section)
        self.bench.rounds(section, systems)
        if self.meter is not None:
            self.meter.stop(section)
            line = self.meter.line(section)
            if line and "WARNING" in line:
                log(f"  {section}: {line}")

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

    def drop_topic(self, topic: str) -> None:
        self.admin.delete_topic(topic)

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
    ctx.rounds(f"produce {label}", systems)


def run_consume(ctx: Ctx, label: str, pay: Payloads, n_records: int, redis_n: int | None) -> None:
    topic = ctx.new_topic("consume")
    key = None
    try:
        log(f"  consume {label}: writing the data sets...")
        n_batches = max(1, n_records // pay.records_per_batch)
        records, _, _, _ = ctx.loop.run_until_complete(
            stream_produce(ctx.target, pay.batches, n_batches, ctx.p.window, 1e9, topic))
        ctx.check_end(topic, records, "consume data set")
        systems = {
            T_SUB_RAW: lambda: raw_subscribe_run(ctx, topic, pay.size, records),
            T_CONSUMER: lambda: consumer_run(ctx, topic, pay.size, records),
            CEIL_SSTREAM: lambda: ceiling_stream_run(ctx, pay.size),
        }
        if ctx.redis is not None and redis_n:
            key = ctx.new_name("xread")
            redis_xadd(ctx.redis, key, pay.values, redis_n, 1e9)
            systems[REDIS_XREAD] = lambda: redis_xread_run(ctx, key, redis_n)
        ctx.rounds(f"consume {label}", systems)
    finally:
        ctx.drop_topic(topic)
        if key is not None:
            ctx.redis.delete(key)


# -- report ----------------------------------------------------------------------------------------------
def sections(p: Profile, pay_kib: Payloads | None, pay_small: Payloads | None) -> list[Section]:
    vs = (Compare("raw batches / this", T_RAW, None, "tidelog"),
          Compare("Producer / this", T_PRODUCER, None, "tidelog"))
    vs_read = (Compare("raw Subscribe / this", T_SUB_RAW, None, "tidelog"),
               Compare("Consumer / this", T_CONSUMER, None, "tidelog"))

    def rpb(pay):
        return f"{pay.records_per_batch:,} records/batch, {pay.batch_bytes / MiB:.2f} MiB" if pay else ""

    return [
        Section("produce 1 KiB", f"gRPC produce, 1 KiB records, one producer (raw: {p.raw_kib:,} records per "
                f"run, {rpb(pay_kib)}; Producer: {p.producer_kib:,}; Redis: {p.redis_kib:,})",
                ("MB/s", "records/s"), vs),
        Section("produce 100 B", f"gRPC produce, 100 B records, one producer (raw: {p.raw_small:,} records "
                f"per run, {rpb(pay_small)}; Producer: {p.producer_small:,}; Redis: {p.redis_small:,})",
                ("records/s", "MB/s"), vs),
        Section("consume 1 KiB", f"gRPC consume, 1 KiB records, one consumer (tidelog: {p.consume_kib:,} "
                f"records per run; Redis: {p.redis_read:,})", ("MB/s", "records/s"), vs_read),
        Section("consume 100 B", f"gRPC consume, 100 B records, one consumer ({p.consume_small:,} records "
                "per run)", ("records/s", "MB/s"), vs_read),
    ]


def report(bench: Bench, info: dict, settings: list[str], secs: list[Section], notes: dict,
           meter: LoadMeter | None, elapsed: float) -> tuple[str, dict]:
    p = bench.p
    out = [f"# tidelog gRPC benchmark ({p.name})", ""]
    out += [f"- {line}" for line in settings]
    out.append("")
    results: dict = {"series": [], "ratios": [], "targets": []}
    have = set(bench.order)
    for sec in secs:
        if not any(key == sec.key for key, _ in bench.order):
            continue
        out += [f"## {sec.title}", ""]
        lines = section_table(bench, sec, results["ratios"])
        flagged = [(system, texts) for (key, system), texts in notes.items() if key == sec.key]
        for i, (system, _) in enumerate(flagged):
            mark = "*" * (i + 1)
            lines = [line.replace(f"| {system} ", f"| {system} ({mark}) ", 1) if line.startswith(f"| {system} ")
                     else line for line in lines]
        out += lines
        for i, (system, texts) in enumerate(flagged):
            out += ["", f"({'*' * (i + 1)}) {system}: in {len(texts)} of {bench.p.warmup + bench.p.runs} runs "
                    f"(warm-up included), " + "; ".join(texts)]
        load = meter.line(sec.key) if meter is not None else None
        if load:
            out += ["", load]
        out.append("")
        for key, system in bench.order:
            if key == sec.key:
                for m in sec.metrics:
                    results["series"].append(Series(key, system, m, bench.samples(key, system),
                                                    bench.warmups[(key, system)]).summary())

    def med(section, system, metric):
        if (section, system) not in have:
            return None
        return Series(section, system, metric, bench.samples(section, system)).median

    def ratio(section, a, b, metric="MB/s"):
        if (section, a) not in have or (section, b) not in have:
            return None
        return paired(bench, section, a, b, metric)

    targets = []  # shared/PERF.md
    for who, name in (("raw batches", T_RAW), ("Producer", T_PRODUCER)):
        targets += [
            (f"produce 1 KiB, {who} / raw bidi ceiling", ratio("produce 1 KiB", name, CEIL_BIDI), 0.75, "x"),
            (f"produce 1 KiB, {who} / Redis XADD", ratio("produce 1 KiB", name, REDIS_XADD), 5.0, "x"),
        ]
    for who, name in (("raw Subscribe", T_SUB_RAW), ("Consumer", T_CONSUMER)):
        targets += [
            (f"consume 1 KiB, {who} / raw server-stream ceiling", ratio("consume 1 KiB", name, CEIL_SSTREAM),
             0.75, "x"),
            (f"consume 1 KiB, {who} / Redis XREADGROUP", ratio("consume 1 KiB", name, REDIS_XREAD), 3.0, "x"),
        ]
    for who, name in (("raw batches", T_RAW), ("Producer", T_PRODUCER)):
        targets.append((f"produce 100 B, {who}: records/s", med("produce 100 B", name, "records/s"), 1e6,
                        "records/s"))
    ran = {key for key, _ in bench.order}
    rows = [t for t in targets if t[1] is not None or t[0].split(",")[0] in ran]
    if rows:
        out += ["## Targets (shared/PERF.md)", "", "| target | measured | goal | met |", "|---|---:|---:|---|"]
    for name, value, goal, unit in rows:
        if value is None:
            out.append(f"| {name} | not measured | >= {goal:.2f}{'x' if unit == 'x' else ''} | - |")
            results["targets"].append({"target": name, "measured": None, "goal": goal, "unit": unit, "met": None})
            continue
        if unit == "x":
            shown = f"{value['ratio']:.2f}x ({value['paired_min']:.2f}-{value['paired_max']:.2f})"
            measured, want = value["ratio"], f"{goal:.2f}x"
        else:
            shown, measured, want = fmt(value, unit), value, fmt(goal, unit)
        met = measured >= goal
        out.append(f"| {name} | {shown} | >= {want} | {'yes' if met else 'NO'} |")
        results["targets"].append({"target": name, "measured": measured, "goal": goal, "unit": unit, "met": met})
    if rows:
        out += ["", "Ratios: ratio of the medians (min-max of the per-round ratios), on payload MB/s (message "
                "bytes for the ceiling); for Redis this equals the ratio of records/s."]
    out += ["", f"Total benchmark time: {elapsed:.0f} s"]
    results["elapsed_s"] = elapsed
    results["failures"] = [{"section": k, "system": n, "runs": v} for (k, n), v in notes.items()]
    results["cpu"] = meter.sections if meter is not None else {}
    return "\n".join(out), results


# -- main ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.grpc_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs, 3 per figure (under a minute)")
    ap.add_argument("--json", metavar="PATH", help="also write every figure (all runs) as JSON here")
    ap.add_argument("--runs", type=int, help="timed runs per figure (>= 3; default 5, or 3 with --quick)")
    ap.add_argument("--tmp", default="/tmp", help="parent directory of the temporary data (default /tmp)")
    ap.add_argument("--only", default="produce,consume", help="comma-separated subset of: produce, consume")
    ap.add_argument("--sizes", default="1k,100", help="comma-separated subset of: 1k, 100")
    ap.add_argument("--no-redis", action="store_true", help="leave Redis out")
    ap.add_argument("--ceiling-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ceiling_server is not None:
        return ceiling_server_main(args.ceiling_server)
    profile = QUICK if args.quick else DEFAULT
    if args.runs is not None:
        if args.runs < 3:
            ap.error("--runs must be at least 3")
        profile = Profile(**{**asdict(profile), "runs": args.runs})
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only - {"produce", "consume"}:
        ap.error(f"unknown --only part(s): {', '.join(sorted(only - {'produce', 'consume'}))}")
    sizes = {s.strip() for s in args.sizes.split(",") if s.strip()}
    if sizes - {"1k", "100"}:
        ap.error(f"unknown --sizes: {', '.join(sorted(sizes - {'1k', '100'}))}")

    # SIGINT, SIGTERM and SIGHUP unwind like Ctrl-C, so that the finally below stops what was started
    # (SIGINT explicitly too: a shell starts background jobs with it ignored).
    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)

    tuned = tune_malloc()
    os.makedirs(args.tmp, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="tidelog-grpc-bench-", dir=os.path.abspath(args.tmp))
    info = machine_info(tmp, tuned)
    import google.protobuf

    info.update({"grpcio": grpc.__version__, "protobuf": google.protobuf.__version__})
    print(f"# machine: nproc={info['nproc']}, CPU: {info['cpu_model']}, Python {info['python']}, "
          f"grpcio {info['grpcio']}, malloc: {info['malloc']}", flush=True)
    started = time.perf_counter()
    procs = Processes(tmp)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    redis_client = None
    ctx = None
    try:
        data_dir = os.path.join(tmp, "tidelog-data")
        target, server = start_tidelog(procs, data_dir)
        ceiling_target, ceiling = start_ceiling(procs)
        redis_note = "left out (--no-redis)"
        redis_proc = None
        if not args.no_redis:
            redis_dir = os.path.join(tmp, "redis")
            os.makedirs(redis_dir, exist_ok=True)
            redis_client, redis_proc, redis_note = start_redis(procs, redis_dir)
            if redis_client is None:
                log(f"skipping Redis: {redis_note}")
                redis_note = f"skipped: {redis_note}"
        log(f"tidelog server pid {server.pid} at {target}; ceiling server pid {ceiling.pid} at {ceiling_target}"
            + (f"; redis-server pid {redis_proc.pid}" if redis_proc else ""))

        log("building payloads...")
        pay_kib = Payloads(1024, 32_000, SEED) if "1k" in sizes else None
        pay_small = Payloads(100, 96_000, SEED + 1) if "100" in sizes else None
        bench = Bench(profile, tmp)
        ctx = Ctx(profile, bench, loop, target, ceiling_target, redis_client, LoadMeter(procs))
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

        settings = [
            f"machine: nproc={info['nproc']}, {info['cpu_model']}, {info['memory_gib']} GiB RAM, Linux "
            f"{info['kernel']}; Python {info['python']}, grpcio {info['grpcio']}, protobuf {info['protobuf']}, "
            f"tidelog {info['tidelog']}; clients and servers share the machine's cores",
            f"malloc: {info['malloc']} in this process, the ceiling server and `tidelog serve` (tidelog.tuning)",
            f"medians of {profile.runs} runs after {profile.warmup} warm-up round(s), systems interleaved round "
            "by round (order rotating); min - max across runs; ratios: ratio of medians (min - max of per-round "
            "ratios)",
            "MB/s: 10^6 bytes of record payload per second; for the ceiling, message bytes, and its records/s is "
            "that divided by the record size",
            "tidelog server: `tidelog serve --fsync never` (defaults otherwise: segment 1 GiB, 16 I/O threads), "
            "1 partition, fresh topic per produce run; consume reads one data set whole from offset 0 each run",
            f"raw produce: pre-built RecordBatch v2 (build_batch, producer_id=-1, no compression) framed per "
            f"request with encode_produce_request, one Produce stream over grpc.aio with identity serializers, "
            f"{profile.window} requests in flight, ProduceResponse acks parsed",
            f"Producer: tidelog.client.Producer(linger_ms={PRODUCER_LINGER_MS}, batch_bytes=1 MiB), idempotent "
            "(default), send(topic, value, partition=0) then flush()",
            f"consume: Subscribe with credit {CONSUMER_CREDIT_BYTES >> 20} MiB, responses <= "
            f"{CONSUMER_MAX_MESSAGE_BYTES >> 20} MiB (Consumer defaults); raw: grpc.aio, credit returned on "
            "arrival, parse_subscribe_response + iter_batches (BatchView.count)",
            f"raw grpcio ceiling: grpc.aio server in its own process, generic handlers, identity serializers, no "
            f"work; bidi: 1 MiB bytes messages, a 2-byte ack each, {profile.window} in flight; server stream: "
            "1 MiB bytes messages; grpc.so_reuseport 0, message limits 64 MiB",
            f"Redis: {redis_note}" + ("" if redis_client is None else
                                      "; `redis-server --save '' --appendonly no` on loopback (no persistence); "
                                      f"XADD key * v <value> in pipeline(transaction=False) of {REDIS_PIPELINE}, "
                                      "no MAXLEN, stream deleted after each run; XREADGROUP COUNT "
                                      f"{REDIS_COUNT} '>' + XACK of those ids, fresh group from id 0 per run"),
        ]
        text, results = report(bench, info, settings,
                               sections(profile, pay_kib, pay_small), ctx.notes, ctx.meter,
                               time.perf_counter() - started)
        print()
        print(text)
        if args.json:
            doc = {"machine": info, "profile": asdict(profile), "settings": settings, **results}
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=1)
            log(f"\nwrote {args.json}")
        return 0
    except KeyboardInterrupt:
        log("interrupted: stopping the servers")
        return 130
    finally:
        if ctx is not None:
            ctx.admin.close()
        if redis_client is not None:
            redis_client.close()
        procs.stop_all()
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
