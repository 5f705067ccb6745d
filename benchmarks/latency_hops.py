"""Where a message's time goes, hop by hop: brackets of the end-to-end path, each measured alone.

    python -m benchmarks.latency_hops [--runs N] [--rate R] [--messages N] [--json PATH] [--tmp DIR]
                                      [--rates 1000,5000,10000,50000 [--seconds S] [--fsync never,interval,always]] [--kafka]

One `tidelog serve --fsync never` and the raw grpcio ceiling server (grpc_bench's: a grpc.aio server
that acks each message and does nothing else) on 127.0.0.1. 1 KiB records, one at a time:

- round trips (one message in flight, paced at `--rate`): the grpc.aio ceiling (the floor of any gRPC
  hop here), tidelog's Produce with a pre-encoded request (grpc.aio, identity serializer), and
  `Producer(linger_ms=0).send(...).result()`;
- end to end at `--rate` msgs/s (the consumer in a spawned process from the latest offset): raw produce
  -> raw Subscribe (grpc.aio both sides: the broker's own hops), then the client classes on one side or
  both (their hops). From the scheduled send time with the Producer (time.sleep is precise, and its
  lateness is the client's); from the moment of the write with the raw producer (asyncio's timers wake
  up to 1 ms late: epoll counts milliseconds).

--rates adds Producer(linger_ms=0) -> Consumer at each fixed rate (received / sent, percentiles), against a
broker of each `--fsync` policy (one more `tidelog serve` per policy other than never). --kafka adds the
same brackets through the broker's Kafka listener, confluent-kafka (librdkafka) producing and consuming.

The differences between brackets are the hops: Producer RTT - raw RTT is the producer's thread and loop;
raw e2e - (raw RTT) is the broker's append-to-subscriber path; Producer -> Consumer - raw e2e is the two
client classes. Every run's percentiles are kept; the table gives the median run's and min - max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import struct
import sys
import time

import grpc

from tidelog.codec.batch import build_batch, iter_batches
from tidelog.v1 import tidelog_pb2 as pb
from tidelog.wire import framing, methods

from .grpc_bench import CEIL_PRODUCE, start_ceiling
from .harness.machine import machine_info, machine_line
from .harness.processes import log, workspace
from .harness.servers import start_tidelog

PRODUCE = methods.method("Producer", "Produce").path
SUBSCRIBE = methods.method("Consumer", "Subscribe").path
STAMP = struct.Struct(">q")
SIZE = 1024
PERCENTILES = (50, 90, 99)


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)
    n = len(ordered)
    out = {f"p{p}": ordered[min(n - 1, n * p // 100)] for p in PERCENTILES}
    out["max"] = ordered[-1]
    out["n"] = n
    return out


def _value(when_ns: int) -> bytes:
    return STAMP.pack(when_ns) + b"x" * (SIZE - STAMP.size)


def _request(sequence: int, topic: str, when_ns: int) -> bytes:
    return framing.encode_produce_request(sequence, topic, 0, build_batch([_value(when_ns)], timestamp=0))


async def _paced(n: int, rate: float, step) -> None:
    start = time.monotonic_ns()
    for i in range(n):
        due = start + int(i * 1e9 / rate)
        now = time.monotonic_ns()
        if due > now:
            await asyncio.sleep((due - now) / 1e9)
        await step(i, due)


async def ceiling_rtt(target: str, n: int, rate: float) -> list[float]:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(CEIL_PRODUCE, request_serializer=None, response_deserializer=None)()
        out: list[float] = []
        message = _value(0)

        async def step(i: int, due: int) -> None:
            t0 = time.monotonic_ns()
            await call.write(message)
            await call.read()
            out.append((time.monotonic_ns() - t0) / 1e6)

        await _paced(n, rate, step)
        call.cancel()
        return out


async def raw_produce(
    target: str, topic: str, n: int, rate: float, rtt: list[float] | None = None, security=None
) -> None:
    """Pre-encoded Produce requests on one stream at `rate`; with rtt, one in flight and each round trip kept.
    security: a ClientSecurity for a secured broker (security_bench.py)."""
    from tidelog.client.channel import aio_channel

    async with aio_channel(target, security) as channel:
        call = channel.stream_stream(PRODUCE, request_serializer=None, response_deserializer=None)()

        async def step(i: int, due: int) -> None:
            # stamped when written, not when due: asyncio's timers wake up to 1 ms late (epoll counts
            # milliseconds), which is this loop's lateness, not the broker's
            t0 = time.monotonic_ns()
            await call.write(_request(i, topic, t0))
            if rtt is not None:
                await call.read()
                rtt.append((time.monotonic_ns() - t0) / 1e6)

        await _paced(n, rate, step)
        await call.done_writing()
        while await call.read() is not grpc.aio.EOF:
            pass


def producer_rtt(target: str, topic: str, n: int, rate: float) -> list[float]:
    from tidelog.client import Producer

    out: list[float] = []
    with Producer(target, linger_ms=0) as producer:
        producer.send(topic, _value(0), partition=0).result(10)
        for _ in range(n):
            t0 = time.monotonic_ns()
            producer.send(topic, _value(t0), partition=0).result(10)
            out.append((time.monotonic_ns() - t0) / 1e6)
            time.sleep(max(0.0, 1 / rate - (time.monotonic_ns() - t0) / 1e9))
    return out


def client_produce(target: str, topic: str, n: int, rate: float) -> None:
    """Producer(linger_ms=0), one send() per record at `rate`; each stamped with its scheduled time (or
    the moment of sending, when that is earlier: a sleep under 0.1 ms overshoots more than it waits)."""
    from tidelog.client import Producer

    with Producer(target, linger_ms=0) as producer:
        _paced_sends(n, rate, lambda value: producer.send(topic, value, partition=0))


def _paced_sends(n: int, rate: float, send) -> None:
    """send(value) n times at `rate` from this thread, each value stamped with its scheduled time (or the
    moment of sending, when that is earlier: a sleep under 0.1 ms overshoots more than it waits)."""
    start = time.monotonic_ns()
    for i in range(n):
        due = start + int(i * 1e9 / rate)
        now = time.monotonic_ns()
        if due - now > 100_000:
            time.sleep((due - now) / 1e9)
        send(_value(min(due, time.monotonic_ns())))


# -- consumers (spawned processes) ---------------------------------------------------------------------------
def raw_consumer(target: str, topic: str, n: int, timeout_s: float, out, ready) -> None:
    async def go() -> list[float]:
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.stream_stream(
                SUBSCRIBE, request_serializer=pb.SubscribeRequest.SerializeToString, response_deserializer=None
            )()
            start = pb.SubscribeStart(
                topic=topic, partition=0, position=pb.Position(boundary=pb.LATEST), credit_bytes=256 << 20
            )
            await call.write(pb.SubscribeRequest(start=start))
            ready.set()
            got: list[float] = []
            deadline = time.monotonic() + timeout_s
            while len(got) < n and time.monotonic() < deadline:
                try:
                    raw = await asyncio.wait_for(call.read(), max(deadline - time.monotonic(), 0.01))
                except asyncio.TimeoutError:
                    break
                now = time.monotonic_ns()
                for batch in iter_batches(framing.parse_subscribe_response(raw).batches):
                    got += [(now - STAMP.unpack_from(r.value)[0]) / 1e6 for r in batch.records(0, True)]
            call.cancel()
            return got

    out.put(asyncio.run(go()))


def client_consumer(target: str, topic: str, n: int, timeout_s: float, out, ready) -> None:
    from tidelog.client import Consumer

    got: list[float] = []
    with Consumer(target, topic, partition=0, offset="latest") as consumer:
        ready.set()
        deadline = time.monotonic() + timeout_s
        while len(got) < n and time.monotonic() < deadline:
            for record in consumer.poll(0.05):
                got.append((time.monotonic_ns() - STAMP.unpack_from(record.value)[0]) / 1e6)
    out.put(got)


# -- through the Kafka listener, with librdkafka (confluent-kafka) on both ends --------------------------------
KAFKA_PRODUCER = {"linger.ms": 0, "acks": 1, "enable.idempotence": False, "socket.nagle.disable": True}
"""One request per record while none is in flight (librdkafka batches what queues behind one), the
leader's ack: as Producer(linger_ms=0) against a single broker."""
KAFKA_CONSUMER = {"fetch.wait.max.ms": 100, "fetch.min.bytes": 1, "socket.nagle.disable": True}
"""A fetch waits at the broker for the next record (woken by the append), up to 100 ms."""


def kafka_rtt(bootstrap: str, topic: str, n: int, rate: float) -> list[float]:
    from confluent_kafka import Producer as KafkaProducer

    producer = KafkaProducer({"bootstrap.servers": bootstrap, **KAFKA_PRODUCER})
    out: list[float] = []
    producer.produce(topic, _value(0), partition=0)
    producer.flush(10)
    for _ in range(n):
        t0 = time.monotonic_ns()
        producer.produce(topic, _value(t0), partition=0)
        producer.flush(10)
        out.append((time.monotonic_ns() - t0) / 1e6)
        time.sleep(max(0.0, 1 / rate - (time.monotonic_ns() - t0) / 1e9))
    return out


def kafka_produce(bootstrap: str, topic: str, n: int, rate: float) -> None:
    """confluent-kafka, one produce() per record at `rate`, stamped as client_produce does."""
    from confluent_kafka import Producer as KafkaProducer

    producer = KafkaProducer({"bootstrap.servers": bootstrap, **KAFKA_PRODUCER})
    producer.list_topics(topic, timeout=10)  # the metadata is there before the clock starts

    def send(value: bytes) -> None:
        producer.produce(topic, value, partition=0)
        producer.poll(0)

    _paced_sends(n, rate, send)
    if producer.flush(30):
        raise RuntimeError("confluent-kafka did not deliver everything within 30 s")


def kafka_consumer(bootstrap: str, topic: str, n: int, timeout_s: float, out, ready) -> None:
    from confluent_kafka import OFFSET_END, TopicPartition
    from confluent_kafka import Consumer as KafkaConsumer

    consumer = KafkaConsumer(
        {"bootstrap.servers": bootstrap, "group.id": f"hops-{topic}", "enable.auto.commit": False, **KAFKA_CONSUMER}
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_END)])
    settle = time.monotonic() + 1.0  # the end offset is looked up and the first fetch is waiting
    while time.monotonic() < settle:
        consumer.poll(0.1)
    ready.set()
    got: list[float] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        message = consumer.poll(0.05)
        if message is not None and message.error() is None:
            got.append((time.monotonic_ns() - STAMP.unpack_from(message.value())[0]) / 1e6)
    consumer.close()
    out.put(got)


BRACKETS = {
    "raw produce -> raw Subscribe": (raw_consumer, "raw"),
    "raw produce -> Consumer": (client_consumer, "raw"),
    "Producer -> raw Subscribe": (raw_consumer, "client"),
    "Producer -> Consumer": (client_consumer, "client"),
}
KAFKA_BRACKET = "confluent-kafka -> confluent-kafka, through the Kafka listener"
BRACKETS[KAFKA_BRACKET] = (kafka_consumer, "kafka")


def end_to_end(target: str, name: str, n: int, rate: float, kafka: str | None = None) -> list[float]:
    """One bracket: a consumer in a spawned process, then the producer here at `rate`. `kafka`: the
    Kafka listener's address (the Kafka bracket only)."""
    from tidelog.client import Admin

    consumer, producer = BRACKETS[name]
    topic = f"hops-{time.monotonic_ns()}"
    with Admin(target) as admin:
        admin.create_topic(topic, 1)
    ctx = multiprocessing.get_context("spawn")  # never fork a process that uses gRPC
    out, ready = ctx.Queue(), ctx.Event()
    where = kafka if producer == "kafka" else target
    proc = ctx.Process(target=consumer, args=(where, topic, n, n / rate + 15, out, ready))
    proc.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the consumer did not start")
        time.sleep(0.5)  # the subscription reaches the broker
        if producer == "raw":
            asyncio.run(raw_produce(target, topic, n, rate))
        elif producer == "kafka":
            assert kafka is not None
            kafka_produce(kafka, topic, n, rate)
        else:
            client_produce(target, topic, n, rate)
        got = out.get(timeout=n / rate + 30)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    if len(got) != n:
        log(f"{name}: {len(got):,} of {n:,} messages received")
    return got


def at_rates(
    target: str, rates: list[float], seconds: float, fsync: str, kafka: str | None = None
) -> dict[str, list[float]]:
    """Producer -> Consumer at each rate for `seconds` against a broker running `--fsync fsync`, and
    with `kafka` the Kafka bracket too (received / sent is checked by the caller)."""
    out: dict[str, list[float]] = {}
    for rate in rates:
        n = int(rate * seconds)
        for bracket in ("Producer -> Consumer", *([KAFKA_BRACKET] if kafka else [])):
            name = f"{bracket} at {rate:,.0f} msgs/s, fsync {fsync}"
            BRACKETS_AT_RATE[name] = n
            out[name] = end_to_end(target, bracket, n, rate, kafka)
    return out


BRACKETS_AT_RATE: dict[str, int] = {}  # bracket -> messages sent per run


def measure(target: str, ceiling: str, n: int, rate: float, kafka: str | None = None) -> dict[str, list[float]]:
    """Every bracket once, in a fixed order (the Kafka ones with `kafka`, the listener's address)."""
    from tidelog.client import Admin

    topic = f"rtt-{time.monotonic_ns()}"
    with Admin(target) as admin:
        admin.create_topic(topic, 1)
    out: dict[str, list[float]] = {}
    out["RTT: grpc.aio ceiling (ack each, no work)"] = asyncio.run(ceiling_rtt(ceiling, n, rate))
    raw: list[float] = []
    asyncio.run(raw_produce(target, topic, n, rate, raw))
    out["RTT: tidelog Produce, pre-encoded request"] = raw
    out["RTT: Producer(linger_ms=0).send().result()"] = producer_rtt(target, topic, n, rate)
    if kafka:
        out["RTT: confluent-kafka produce() + flush(), Kafka listener"] = kafka_rtt(kafka, topic, n, rate)
    for name in BRACKETS:
        if kafka or name != KAFKA_BRACKET:
            out[f"e2e: {name}"] = end_to_end(target, name, n, rate, kafka)
    return out


def table(runs: list[dict[str, list[float]]]) -> tuple[str, dict]:
    lines = [
        "| bracket | p50 ms | p90 ms | p99 ms | max ms | messages |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    data: dict = {}
    for name in runs[0]:
        each = [percentiles(run[name]) for run in runs if run[name]]
        data[name] = each
        cells = []
        for key in ("p50", "p90", "p99", "max"):
            values = [e[key] for e in each]
            cells.append(f"{statistics.median(values):.3f} ({min(values):.2f} - {max(values):.2f})")
        lines.append(f"| {name} | {' | '.join(cells)} | {sum(e['n'] for e in each):,} |")
    return "\n".join(lines), data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds of every bracket (default 3)")
    parser.add_argument("--rate", type=float, default=1000.0, help="messages per second (default 1000)")
    parser.add_argument("--messages", type=int, default=3000, help="messages per bracket and run (default 3000)")
    parser.add_argument(
        "--rates",
        default="",
        help="also Producer -> Consumer at these msgs/s, comma-separated (e.g. 1000,5000,10000,50000)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each --rates run (default 5)")
    parser.add_argument(
        "--fsync",
        default="never",
        help="the --rates runs against a broker with each of these fsync policies, comma-separated "
        "(never, interval, always; default never)",
    )
    parser.add_argument(
        "--kafka",
        action="store_true",
        help="also the brackets through the Kafka listener, confluent-kafka (librdkafka) on both ends",
    )
    parser.add_argument("--json", help="also write every run's percentiles here")
    parser.add_argument("--tmp", default="/tmp", help="where the servers' data goes (default /tmp)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.messages < 100 or args.rate <= 0:
        parser.error("--runs must be >= 1, --messages >= 100 and --rate > 0")
    policies = [p.strip() for p in args.fsync.split(",") if p.strip()]
    if not policies or set(policies) - {"never", "interval", "always"}:
        parser.error(f"--fsync takes never, interval and always, not {args.fsync!r}")
    with workspace("tidelog-hops-", args.tmp) as procs:
        server = start_tidelog(procs, f"{procs.tmp}/data", kafka=args.kafka)
        ceiling = start_ceiling(procs)
        others = {
            policy: start_tidelog(
                procs, f"{procs.tmp}/data-{policy}", fsync=policy, name=f"tidelog-{policy}", kafka=args.kafka
            )
            for policy in policies
            if policy != "never"
        }

        def kafka_of(proc) -> str | None:
            return f"{proc.target.rsplit(':', 1)[0]}:{proc.kafka_port}" if args.kafka else None

        rates = [float(r) for r in args.rates.split(",") if r.strip()]
        runs, rate_runs = [], []
        for i in range(args.runs):
            log(f"round {i + 1} of {args.runs}")
            runs.append(measure(server.target, ceiling.target, args.messages, args.rate, kafka_of(server)))
            if rates:
                both: dict[str, list[float]] = {}
                for policy in policies:
                    broker = others.get(policy, server)
                    both.update(at_rates(broker.target, rates, args.seconds, policy, kafka_of(broker)))
                rate_runs.append(both)
    text, data = table(runs)
    print(f"# where a message's time goes ({args.rate:,.0f} msgs/s, 1 KiB, one at a time)\n")
    print(f"- {machine_line(machine_info(args.tmp, False, grpcio=grpc.__version__))}")
    print(f"- {args.runs} runs of {args.messages:,} messages per bracket; median run (min - max)\n")
    print(text)
    if rate_runs:
        rate_text, rate_data = table(rate_runs)
        data.update(rate_data)
        print(f"\n## fixed rates, {args.seconds:g} s per rate\n")
        print(rate_text.replace("| messages |", "| received (sent) |"))
        for name, n in BRACKETS_AT_RATE.items():
            print(f"- {name}: sent {n:,} per run")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rate": args.rate, "messages": args.messages, "brackets": data}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
