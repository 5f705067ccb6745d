"""`python -m benchmarks.overload --quick | --full`: the broker's memory (RSS) under overload.

Each scenario runs against a fresh `tidelog serve` subprocess on loopback and samples the broker's
VmRSS from /proc/<pid>/status every 20 ms: the figure is the peak during the scenario next to the
idle server's baseline, so results read as deltas and ratios. Scenarios (bounded in count and time):

- stalled consumers: a backlog of B MiB, S subscribers with 1 MiB credit that never read or grant more;
- many stalled subscribers: 256 subscribers, one connection each with a 64 KiB receive window, granting
  1 TiB of credit and never reading; the broker's RSS while they hold on, and how long a live subscriber
  then takes to read the whole backlog (it must not be starved);
- producer flood: N raw Produce streams pushing 256 KiB batches as fast as they can;
- idle connections: C channels, each connected (one health check) and then left idle;
- vanished clients: K client processes with an open Produce and Subscribe stream, SIGKILLed mid-stream;
- restart under load: `Producer` clients while the broker is stopped (SIGTERM) and started again; the
  restarted broker's peak, and acknowledged records lost (must be 0).

Writes benchmarks/results/overload-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .harness import cli
from .harness.processes import Processes, workspace
from .harness.servers import restart_tidelog, start_tidelog

STOP_TIMEOUT_S = 60.0  # a graceful stop may finish in-flight produce streams first
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
QUICK = {
    "backlog_mib": 64,
    "stalled": 4,
    "stalled_many": 256,
    "flood_streams": 16,
    "flood_mib_each": 32,
    "idle": 1000,
    "vanished": 10,
    "restart_records": 20_000,
}
FULL = {
    "backlog_mib": 512,
    "stalled": 8,
    "stalled_many": 256,
    "flood_streams": 32,
    "flood_mib_each": 128,
    "idle": 1000,
    "vanished": 30,
    "restart_records": 100_000,
}
MANY_CREDIT_BYTES = 1 << 40  # 1 TiB: what a client may grant; the broker caps it (max_subscribe_credit_bytes)
# A receive window that stays at 64 KiB: what the broker sends stays in the broker's own buffers, as with
# a client process that is stopped (the worst case for the broker's memory).
STALLED_CLIENT_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 65536),
]


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """VmRSS (everything resident, including mapped segment pages the kernel can drop) or RssAnon
    (the broker's own heap, buffers and stacks) of a process, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """Peak VmRSS and peak RssAnon of a process, sampled from a thread until stopped."""

    def __init__(self, pid: int, period_s: float = 0.02) -> None:
        self.pid, self.period_s, self.peak, self.peak_anon = pid, period_s, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
                self.peak_anon = max(self.peak_anon, rss_mib(self.pid, "RssAnon"))
            except OSError:
                return
            self._stop.wait(self.period_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


class Broker:
    """A fresh `tidelog serve` started by the harness (a 127.0.0.1 port it bound, stopped by PID)."""

    def __init__(self, procs: Processes, data_dir: str, extra: tuple[str, ...]) -> None:
        self.procs = procs
        self.proc = start_tidelog(procs, data_dir, extra=extra)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def target(self) -> str:
        return self.proc.target

    def serving(self) -> bool:
        try:
            with grpc.insecure_channel(self.target) as ch:
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
            return True
        except grpc.RpcError:
            return False

    def restart(self) -> None:
        """SIGTERM (a graceful stop), then the same broker again on the same port and data."""
        self.proc = restart_tidelog(self.procs, self.proc, STOP_TIMEOUT_S)

    def stop(self) -> None:
        self.procs.stop(self.proc, STOP_TIMEOUT_S)


def _batch(size: int) -> bytes:
    import tidelog

    n = max(1, size // 1024)
    return tidelog.build_batch([b"x" * 1000] * n, timestamp=int(time.time() * 1000))


def _produce_raw(target: str, topic: str, partition: int, batch: bytes, count: int) -> int:
    """One raw Produce stream pushing count batches; returns batches acked (0 when refused)."""
    from tidelog.v1 import tidelog_pb2 as pb
    from tidelog.wire import framing

    with grpc.insecure_channel(
        target, options=[("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", 64 << 20)]
    ) as ch:
        stub = ch.stream_stream(
            "/tidelog.v1.Producer/Produce", request_serializer=None, response_deserializer=pb.ProduceResponse.FromString
        )
        try:
            return sum(
                len(r.results)
                for r in stub(
                    (framing.encode_produce_request(i, topic, partition, batch) for i in range(count)), timeout=300
                )
            )
        except grpc.RpcError:
            return 0


def _create(target: str, topic: str, partitions: int) -> None:
    from tidelog.client import Admin

    with Admin(target) as a:
        a.create_topic(topic, partitions)


def scenario_stalled(broker: Broker, p: dict) -> dict:
    from tidelog.v1 import tidelog_pb2 as pb

    _create(broker.target, "backlog", 1)
    batch = _batch(256 * 1024)
    _produce_raw(broker.target, "backlog", 0, batch, p["backlog_mib"] * 4)
    before = rss_mib(broker.pid)
    channels, streams, stop = [], [], threading.Event()

    def hold():
        yield pb.SubscribeRequest(
            start=pb.SubscribeStart(topic="backlog", partition=0, position=pb.Position(offset=0), credit_bytes=1 << 20)
        )
        stop.wait(60)

    with Sampler(broker.pid) as s:
        for _ in range(p["stalled"]):
            ch = grpc.insecure_channel(broker.target, options=[("grpc.use_local_subchannel_pool", 1)])
            stub = ch.stream_stream(
                "/tidelog.v1.Consumer/Subscribe",
                request_serializer=pb.SubscribeRequest.SerializeToString,
                response_deserializer=pb.SubscribeResponse.FromString,
            )
            stream = stub(hold(), timeout=120)
            next(stream)  # the first response proves the subscription started; then we stop reading
            channels.append(ch)
            streams.append(stream)
        time.sleep(3)
        serving = broker.serving()
    stop.set()
    for stream in streams:
        stream.cancel()
    for ch in channels:
        ch.close()
    return {
        "detail": f"{p['backlog_mib']} MiB backlog, {p['stalled']} subscribers with 1 MiB credit not reading",
        "before_mib": before,
        "peak_mib": s.peak,
        "peak_anon_mib": s.peak_anon,
        "still_serving": serving,
    }


def scenario_stalled_many(broker: Broker, p: dict) -> dict:
    """Many subscribers, each on its own connection, granting 1 TiB of credit and never reading; then a
    fresh subscriber reads the whole backlog while they stay stalled."""
    from tidelog.client import Consumer
    from tidelog.v1 import tidelog_pb2 as pb

    backlog_mib = min(p["backlog_mib"], 64)  # more than any one credit: every subscriber has data to take
    _create(broker.target, "backlog", 1)
    _produce_raw(broker.target, "backlog", 0, _batch(256 * 1024), backlog_mib * 4)
    before, before_anon = rss_mib(broker.pid), rss_mib(broker.pid, "RssAnon")
    channels, streams, stop = [], [], threading.Event()

    def hold():
        yield pb.SubscribeRequest(
            start=pb.SubscribeStart(
                topic="backlog", partition=0, position=pb.Position(offset=0), credit_bytes=MANY_CREDIT_BYTES
            )
        )
        stop.wait(300)

    with Sampler(broker.pid) as s:
        for _ in range(p["stalled_many"]):
            ch = grpc.insecure_channel(broker.target, options=STALLED_CLIENT_OPTIONS)
            stream = ch.stream_stream(
                "/tidelog.v1.Consumer/Subscribe",
                request_serializer=pb.SubscribeRequest.SerializeToString,
                response_deserializer=None,
            )(hold(), timeout=300)
            next(stream)  # subscribed; from here on nobody reads
            channels.append(ch)
            streams.append(stream)
        time.sleep(3)
        held, held_anon = rss_mib(broker.pid), rss_mib(broker.pid, "RssAnon")
        started, read = time.monotonic(), 0
        with Consumer(broker.target, "backlog", 0, 0) as c:  # a live reader among the stalled ones
            while read < backlog_mib * 4 * 256 and time.monotonic() - started < 120:
                read += len(c.poll(1.0))
        live_s = time.monotonic() - started
        serving = broker.serving()
    stop.set()
    for stream in streams:
        stream.cancel()
    for ch in channels:
        ch.close()
    return {
        "detail": f"{backlog_mib} MiB backlog, {p['stalled_many']} subscribers (one connection each) with "
        f"1 TiB credit and a 64 KiB window, not reading",
        "before_mib": before,
        "before_anon_mib": before_anon,
        "held_mib": held,
        "held_anon_mib": held_anon,
        "peak_mib": s.peak,
        "peak_anon_mib": s.peak_anon,
        "still_serving": serving,
        "live_reader_s": round(live_s, 2),
        "live_reader_records": read,
    }


def scenario_flood(broker: Broker, p: dict) -> dict:
    _create(broker.target, "flood", 4)
    batch = _batch(256 * 1024)
    count = p["flood_mib_each"] * 4
    acked = [0] * p["flood_streams"]
    before = rss_mib(broker.pid)

    def run(i):
        acked[i] = _produce_raw(broker.target, "flood", i % 4, batch, count)

    with Sampler(broker.pid) as s:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(p["flood_streams"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        serving = broker.serving()
    total = sum(acked) * len(batch) / (1 << 20)
    return {
        "detail": f"{p['flood_streams']} Produce streams x {p['flood_mib_each']} MiB of 256 KiB batches "
        f"({total:.0f} MiB acked)",
        "before_mib": before,
        "peak_mib": s.peak,
        "peak_anon_mib": s.peak_anon,
        "still_serving": serving,
        "refused_streams": sum(1 for a in acked if a == 0),
    }


def scenario_idle(broker: Broker, p: dict) -> dict:
    before = rss_mib(broker.pid)
    channels = []
    with Sampler(broker.pid) as s:
        for _ in range(p["idle"]):
            ch = grpc.insecure_channel(broker.target, options=[("grpc.use_local_subchannel_pool", 1)])
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
            channels.append(ch)
        time.sleep(2)
        serving = broker.serving()
        held = rss_mib(broker.pid)
    for ch in channels:
        ch.close()
    return {
        "detail": f"{p['idle']} connected idle channels",
        "before_mib": before,
        "peak_mib": s.peak,
        "peak_anon_mib": s.peak_anon,
        "held_mib": held,
        "still_serving": serving,
    }


VANISHING = r"""
import sys, threading, time, grpc, tidelog
from tidelog.wire import framing
from tidelog.v1 import tidelog_pb2 as pb
ch = grpc.insecure_channel(sys.argv[1])
sub = ch.stream_stream("/tidelog.v1.Consumer/Subscribe", request_serializer=pb.SubscribeRequest.SerializeToString,
                       response_deserializer=pb.SubscribeResponse.FromString)
def hold():
    yield pb.SubscribeRequest(start=pb.SubscribeStart(topic="gone", partition=0, credit_bytes=1 << 20,
                                                      position=pb.Position(offset=0)))
    threading.Event().wait()
stream = sub(hold())
threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()
batch = tidelog.build_batch([b"v" * 1000] * 64, timestamp=int(time.time() * 1000))
def requests():
    i = 0
    while True:
        yield framing.encode_produce_request(i, "gone", 0, batch)
        i += 1
produce = ch.stream_stream("/tidelog.v1.Producer/Produce", request_serializer=None,
                           response_deserializer=pb.ProduceResponse.FromString)
for n, resp in enumerate(produce(requests())):
    if n == 20:
        print("streaming", flush=True)
"""


def scenario_vanished(broker: Broker, p: dict) -> dict:
    _create(broker.target, "gone", 1)
    before = rss_mib(broker.pid)
    with Sampler(broker.pid) as s:
        children = [
            subprocess.Popen([sys.executable, "-c", VANISHING, broker.target], stdout=subprocess.PIPE, text=True)
            for _ in range(p["vanished"])
        ]
        for child in children:
            child.stdout.readline()  # mid-stream
        for child in children:
            child.kill()
            child.wait()
        time.sleep(2)
        serving = broker.serving()
        after = rss_mib(broker.pid)
    return {
        "detail": f"{p['vanished']} clients SIGKILLed mid Produce+Subscribe",
        "before_mib": before,
        "peak_mib": s.peak,
        "peak_anon_mib": s.peak_anon,
        "after_mib": after,
        "still_serving": serving,
    }


def scenario_restart(broker: Broker, p: dict) -> dict:
    from tidelog.client import Consumer, Producer

    _create(broker.target, "restart", 2)
    futures: list = []
    n = p["restart_records"]
    restarted = threading.Event()

    def produce(part):
        with Producer(broker.target, linger_ms=2, delivery_timeout_s=120) as prod:
            for i in range(n // 2):
                futures.append((part, i, prod.send("restart", b"%d-%07d" % (part, i), partition=part)))
                if i == n // 4:
                    restarted.wait(120)
            prod.flush(120)

    threads = [threading.Thread(target=produce, args=(part,)) for part in (0, 1)]
    for t in threads:
        t.start()
    while sum(f.done() for _, _, f in list(futures)) < n // 8:
        time.sleep(0.01)
    broker.restart()
    with Sampler(broker.pid) as s:
        restarted.set()
        for t in threads:
            t.join(300)
        serving = broker.serving()
    acked = {(part, f.result().offset): b"%d-%07d" % (part, i) for part, i, f in futures if not f.exception()}
    got = {}
    for part in (0, 1):
        with Consumer(broker.target, "restart", part, 0) as c:
            for _ in range(2000):
                records = c.poll(0.5)
                got.update({(part, r.offset): r.value for r in records})
                if not records and len([k for k in got if k[0] == part]) >= n // 2:
                    break
    lost = sum(1 for k, v in acked.items() if got.get(k) != v)
    return {
        "detail": f"2 Producer clients, {n} records, SIGTERM + restart mid-way",
        "before_mib": None,
        "peak_mib": s.peak,
        "peak_anon_mib": s.peak_anon,
        "still_serving": serving,
        "acked": len(acked),
        "lost": lost,
    }


SCENARIOS = [
    ("stalled consumers", scenario_stalled),
    ("many stalled subscribers", scenario_stalled_many),
    ("producer flood", scenario_flood),
    ("idle connections", scenario_idle),
    ("vanished clients", scenario_vanished),
    ("restart under load", scenario_restart),
]


def run(
    params: dict,
    mode: str,
    out_dir: str,
    tmp_parent: str,
    only: list[str] | None = None,
    broker_args: tuple[str, ...] = (),
) -> dict:
    command = " ".join(
        [
            "python -m benchmarks.overload",
            f"--{mode}",
            *(f"--only '{o}'" for o in only or ()),
            *(f"--broker-arg={a}" for a in broker_args),
        ]
    )
    result = {
        "mode": mode,
        "date": datetime.date.today().isoformat(),
        "params": params,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "command": command,
        "scenarios": [],
    }
    with workspace("tidelog-overload-", tmp_parent) as procs:
        for name, fn in SCENARIOS:
            if only and name not in only:
                continue
            broker = Broker(procs, os.path.join(procs.tmp, name.replace(" ", "-")), broker_args)
            try:
                time.sleep(1)
                baseline = rss_mib(broker.pid)
                row = {
                    "scenario": name,
                    "baseline_mib": baseline,
                    "baseline_anon_mib": rss_mib(broker.pid, "RssAnon"),
                    **fn(broker, params),
                }
            finally:
                broker.stop()
            row["peak_over_baseline"] = row["peak_mib"] / baseline
            result["scenarios"].append(row)
            print(
                f"{name}: baseline {baseline:.1f} MiB, peak {row['peak_mib']:.1f} MiB "
                f"({row['peak_over_baseline']:.2f}x) - {row['detail']}",
                flush=True,
            )
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"overload-{result['date']}")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(result))
    return result


def markdown(result: dict) -> str:
    lines = [
        f"# tidelog broker RSS under overload ({result['date']}, {result['mode']})",
        "",
        f"Command: `{result['command']}`. Machine: {result['machine']['cpus']} CPUs, Python "
        f"{result['machine']['python']}, Linux {result['machine']['kernel']}. VmRSS of the `tidelog serve` "
        "process sampled every 20 ms; baseline = the same fresh server idle, 1 s after start. Anon = RssAnon, "
        "the broker's own memory (heap, gRPC buffers, stacks); VmRSS also counts segment pages mapped by "
        "reads, which the kernel can drop.",
        "",
        "| scenario | what | baseline MiB (anon) | peak MiB (anon) | peak / baseline | still serving | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["scenarios"]:
        notes = []
        for key in ("before_mib", "held_mib", "after_mib"):
            if r.get(key) is not None:
                anon = r.get(key.replace("_mib", "_anon_mib"))
                notes.append(f"{key[:-4]} {r[key]:.1f} MiB" + (f" ({anon:.1f} anon)" if anon is not None else ""))
        for key in ("refused_streams", "acked", "lost", "live_reader_s", "live_reader_records"):
            if key in r:
                notes.append(f"{key.replace('_', ' ')} {r[key]}")
        lines.append(
            f"| {r['scenario']} | {r['detail']} | {r['baseline_mib']:.1f} ({r.get('baseline_anon_mib', 0):.1f}) | "
            f"{r['peak_mib']:.1f} ({r.get('peak_anon_mib', 0):.1f}) | "
            f"{r['peak_over_baseline']:.2f}x | {'yes' if r['still_serving'] else 'NO'} | {'; '.join(notes)} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.overload", description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--quick", action="store_true", help="small sizes (about 2 minutes)")
    g.add_argument("--full", action="store_true", help="larger backlogs and floods")
    ap.add_argument("--out", default=RESULTS_DIR, help="results directory (default benchmarks/results)")
    ap.add_argument("--tmp", default="/tmp", help="parent of the temporary data (default /tmp)")
    ap.add_argument(
        "--only", action="append", choices=[name for name, _ in SCENARIOS], help="run only this scenario (repeatable)"
    )
    ap.add_argument(
        "--broker-arg",
        action="append",
        default=[],
        help="an extra argument to `tidelog serve`, e.g. --broker-arg=--config=limits.toml (repeatable)",
    )
    args = ap.parse_args(argv)
    from tidelog.tuning import tune_malloc

    tune_malloc()
    cli.unwind_on_signals()
    try:
        run(
            FULL if args.full else QUICK,
            "full" if args.full else "quick",
            args.out,
            args.tmp,
            args.only,
            tuple(args.broker_arg),
        )
    except KeyboardInterrupt:
        return cli.interrupted()
    return 0


if __name__ == "__main__":
    sys.exit(main())
