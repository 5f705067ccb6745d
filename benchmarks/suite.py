"""The peer suite: `python -m benchmarks --quick | --full`.

Runs, in one invocation, tidelog (embedded and over gRPC) next to every peer it is compared with, and
writes benchmarks/results/<YYYY-MM-DD>[-full].json, .md and .png (report.py). It reuses the colleagues'
modules as they are (their main() with a suite-sized profile and --json, parsed back):

- embedded.py: tidelog embedded append/read/durable vs SQLite WAL and the naive length-prefixed file;
- grpc_bench.py: gRPC produce/consume (raw batches, Producer, Consumer) vs the raw grpcio ceiling and
  Redis Streams;
- groups_bench.py: consumer groups of 1/2/4 vs Redis Streams groups;

and adds, in this process (every server on a free 127.0.0.1 port, started here and stopped by PID):

- NATS JetStream (nats_bench.py) and RabbitMQ (rabbitmq_bench.py) produce/consume, 1 KiB and 100 B;
- durable produce: `tidelog serve --fsync always` (Producer and raw batches) vs `--fsync never`, Redis
  with `appendonly yes, appendfsync always`, NATS file store, RabbitMQ confirms;
- end-to-end latency at fixed rates (latency_bench.py): tidelog, Redis Streams, NATS JetStream.

A peer that cannot be set up is skipped and the reason printed and recorded.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from types import SimpleNamespace

from benchmarks import embedded, groups_bench, grpc_bench, latency_bench, nats_bench, rabbitmq_bench
from benchmarks.embedded import Bench, Series
from benchmarks.grpc_bench import LOOPBACK, Ctx, Payloads, Processes, log, start_redis, start_tidelog

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SEED = 20240611


@dataclass(frozen=True)
class Mode:
    name: str
    runs: int
    warmup: int
    embedded: embedded.Profile
    grpc: grpc_bench.Profile
    groups: groups_bench.Profile
    peer_n: dict            # messages per NATS / RabbitMQ run: {("nats"|"rabbit", "produce"|"consume", size): n}
    durable_n: int          # 1 KiB records per durable-produce run (tidelog Producer, Redis)
    rates: tuple            # fixed rates of the e2e latency runs (msgs/s)
    e2e_s: float            # seconds of each e2e latency run
    cap_s: float


QUICK = Mode(
    "quick", runs=1, warmup=0,
    embedded=embedded.Profile("suite-quick", runs=1, warmup=0, kib_records=128_000, small_records=1_000_000,
                              durable_records=32_000, pool_kib_batches=16, pool_small_batches=32,
                              io_bytes=0, io_runs=0, cap_s=5.0),
    grpc=grpc_bench.Profile("suite-quick", runs=1, warmup=0, raw_kib=256_000, raw_small=2_000_000,
                            producer_kib=96_000, producer_small=200_000, redis_kib=60_000, redis_small=100_000,
                            consume_kib=256_000, consume_small=2_000_000, redis_read=60_000,
                            ceiling_bytes=256 << 20, window=8, cap_s=5.0),
    groups=groups_bench.Profile("suite-quick", runs=1, warmup=0, records=100_000, pool_batches=8, cap_s=20.0,
                                join_timeout_s=30.0),
    peer_n={("nats", "produce", 1024): 10_000, ("nats", "produce", 100): 10_000,
            ("nats", "consume", 1024): 10_000, ("nats", "consume", 100): 10_000,
            ("rabbit", "produce", 1024): 1_000, ("rabbit", "produce", 100): 1_000,
            ("rabbit", "consume", 1024): 10_000, ("rabbit", "consume", 100): 10_000},
    durable_n=32_000, rates=(1000, 5000), e2e_s=3.0, cap_s=5.0)

FULL = Mode(
    "full", runs=3, warmup=1,
    embedded=embedded.Profile("suite-full", runs=3, warmup=1, kib_records=128_000, small_records=1_000_000,
                              durable_records=32_000, pool_kib_batches=32, pool_small_batches=64,
                              io_bytes=0, io_runs=0, cap_s=10.0),
    grpc=grpc_bench.Profile("suite-full", runs=3, warmup=1, raw_kib=256_000, raw_small=2_000_000,
                            producer_kib=96_000, producer_small=200_000, redis_kib=60_000, redis_small=100_000,
                            consume_kib=256_000, consume_small=2_000_000, redis_read=60_000,
                            ceiling_bytes=256 << 20, window=8, cap_s=10.0),
    groups=groups_bench.Profile("suite-full", runs=3, warmup=1, records=200_000, pool_batches=16, cap_s=30.0,
                                join_timeout_s=30.0),
    peer_n={("nats", "produce", 1024): 40_000, ("nats", "produce", 100): 40_000,
            ("nats", "consume", 1024): 40_000, ("nats", "consume", 100): 40_000,
            ("rabbit", "produce", 1024): 3_000, ("rabbit", "produce", 100): 3_000,
            ("rabbit", "consume", 1024): 30_000, ("rabbit", "consume", 100): 30_000},
    durable_n=32_000, rates=(1000, 5000), e2e_s=5.0, cap_s=10.0)

# names used in the report
NATS = "NATS JetStream"
RABBIT = "RabbitMQ"
REDIS = "Redis Streams"
T_EMB = "tidelog embedded"
T_DUR_PROD = "tidelog Producer, serve --fsync always"
T_DUR_PROD_NEVER = "tidelog Producer, serve --fsync never"
T_DUR_RAW = "tidelog raw batches, serve --fsync always"
REDIS_AOF = "Redis XADD pipeline 1000, appendfsync always"

EMB_DURABLE = ('Engine.open(fsync=...), produce() of 1000 records returns after the fsync when "always" '
               '(group commit across producer threads), 1 partition (embedded.py)')
TIDELOG_SETTINGS = {
    "tidelog embedded": "Engine.produce 1000 records/call, fsync never, 1 partition, segment 1 GiB, no compression "
                        "(embedded.py); reads: fetch 4 MiB",
    "tidelog gRPC": "`tidelog serve --fsync never` on 127.0.0.1, 1 partition; raw: ~1 MiB RecordBatches, 8 in "
                    "flight, grpc.aio; Producer(linger_ms=5, batch_bytes=1 MiB), idempotent; Consumer defaults "
                    "(credit 8 MiB) (grpc_bench.py)",
    "tidelog durable": "`tidelog serve --fsync always` (fsync before ack, group commit), Producer(linger_ms=5, "
                       "batch_bytes=1 MiB) and raw batches; embedded: Engine fsync=\"always\", 1 and 2 producers",
    "tidelog e2e": "`tidelog bench e2e` machinery (tidelog.loadgen.runner): Producer(linger_ms=0) process at a fixed "
                   "rate, Consumer process from latest, latency from the scheduled send time",
    "tidelog groups": "`tidelog serve --fsync never`, 4 partitions, Consumer(group_id, auto_commit=False), "
                      "poll + commit, one process per member (groups_bench.py)",
}
PEER_SETTINGS = {
    "SQLite WAL": "journal_mode=WAL, synchronous=OFF, executemany 1000 rows per transaction",
    "naive file": "length-prefixed records appended to one file (per record / 1000 joined per write)",
    "raw grpcio ceiling": "grpc.aio server in its own process, identity serializers, no work, 1 MiB messages",
    REDIS: "redis-server --save '' --appendonly no on 127.0.0.1, redis-py + hiredis; XADD pipeline 1000; "
           "XREADGROUP COUNT 1000 + XACK",
    REDIS_AOF: "redis-server --appendonly yes --appendfsync always (fsync after each event-loop write, i.e. "
               "once per pipeline of 1000), XADD pipeline 1000",
    NATS: nats_bench.SETTINGS,
    RABBIT: rabbitmq_bench.SETTINGS,
    "Redis e2e": "one XADD per message (no pipeline), consumer XREAD BLOCK 100 COUNT 1000 in its own process",
    "NATS e2e": "one js.publish per message awaiting its PubAck, consumer pull fetch(100, timeout 0.2 s), ack none, "
                "in its own process",
}


def _quiet(fn, *args):
    """Run a colleague's main() with its long report going to a log (progress stays on stderr)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = fn(*args)
    return rc, buf.getvalue()


def _figure(scenario: str, system: str, metric: str, s: dict, tidelog: bool, settings: str) -> dict:
    return {"scenario": scenario, "system": system, "metric": metric, "median": s["median"], "min": s["min"],
            "max": s["max"], "runs": s["runs"], "capped_runs": s.get("capped_runs", 0), "tidelog": tidelog,
            "settings": settings}


# -- the colleagues' modules ---------------------------------------------------------------------------
EMB_SYSTEMS = {  # embedded.py system name -> (suite name, is tidelog, settings key)
    "tidelog": (T_EMB, True, "tidelog embedded"),
    "SQLite WAL": ("SQLite WAL", False, "SQLite WAL"),
    embedded.NAIVE_JOIN: ("naive file, 1000 records/write", False, "naive file"),
    "naive file, 1 write/record": ("naive file, 1 write/record", False, "naive file"),
    embedded.T_BATCH: ("tidelog embedded, batch view", True, "tidelog embedded"),
    embedded.T_RECORD: ("tidelog embedded, Record per record", True, "tidelog embedded"),
    "SQLite WAL read": ("SQLite WAL", False, "SQLite WAL"),
}


def run_embedded(mode: Mode, tmp: str, out: dict) -> None:
    path = os.path.join(tmp, "embedded.json")
    old = embedded.QUICK
    embedded.QUICK = mode.embedded
    try:
        rc, text = _quiet(embedded.main, ["--quick", "--only", "append,read,durable", "--json", path,
                                          "--tmp", tmp])
    finally:
        embedded.QUICK = old
    out["logs"]["embedded"] = text
    doc = json.load(open(path))
    for s in doc["series"]:
        section, system = s["section"], s["system"]
        kind, _, size = section.partition(" ")
        if section.startswith("durable"):
            scenario = "embedded durable append 1 KiB"
            name = system if system.startswith("raw") else f"tidelog embedded, {system[len('tidelog '):]}"
            if s["metric"] != "records/s":
                continue
            out["figures"].append(_figure(scenario, name, "records/s", s, system.startswith("tidelog"),
                                          EMB_DURABLE if system.startswith("tidelog")
                                          else "os.pwrite + os.fdatasync per 1 MiB batch"))
            continue
        if s["metric"] != "records/s" or kind not in ("append", "read"):
            continue
        if system in EMB_SYSTEMS:
            name, is_t, key = EMB_SYSTEMS[system]
        elif system.startswith("SQLite"):
            name, is_t, key = "SQLite WAL", False, "SQLite WAL"
        elif system.startswith("naive"):
            name, is_t, key = system, False, "naive file"
        else:
            continue
        settings = TIDELOG_SETTINGS.get(key) or PEER_SETTINGS.get(key, "")
        out["figures"].append(_figure(f"embedded {section}", name, s["metric"], s, is_t, settings))
    out["targets"] += [dict(t, source="embedded.py") for t in doc.get("targets", [])]


GRPC_SYSTEMS = {
    grpc_bench.T_RAW: ("tidelog gRPC raw batches", True),
    grpc_bench.T_PRODUCER: ("tidelog gRPC Producer", True),
    grpc_bench.T_SUB_RAW: ("tidelog gRPC raw Subscribe", True),
    grpc_bench.T_CONSUMER: ("tidelog gRPC Consumer", True),
    grpc_bench.CEIL_BIDI: ("raw grpcio ceiling", False),
    grpc_bench.CEIL_SSTREAM: ("raw grpcio ceiling", False),
    grpc_bench.REDIS_XADD: (REDIS, False),
    grpc_bench.REDIS_XREAD: (REDIS, False),
}


def run_grpc(mode: Mode, tmp: str, out: dict) -> None:
    path = os.path.join(tmp, "grpc.json")
    old = grpc_bench.QUICK
    grpc_bench.QUICK = mode.grpc
    try:
        rc, text = _quiet(grpc_bench.main, ["--quick", "--json", path, "--tmp", tmp])
    finally:
        grpc_bench.QUICK = old
    out["logs"]["grpc"] = text
    if rc != 0 or not os.path.exists(path):
        out["skipped"]["tidelog gRPC (grpc_bench.py)"] = f"grpc_bench.main exited with {rc}"
        return
    doc = json.load(open(path))
    for s in doc["series"]:
        if s["metric"] != "records/s" or s["system"] not in GRPC_SYSTEMS:
            continue
        name, is_t = GRPC_SYSTEMS[s["system"]]
        settings = TIDELOG_SETTINGS["tidelog gRPC"] if is_t else PEER_SETTINGS[name]
        out["figures"].append(_figure(s["section"], name, "records/s", s, is_t, settings))
    out["targets"] += [dict(t, source="grpc_bench.py") for t in doc.get("targets", []) if t.get("measured") is not None]
    for line in doc.get("settings", []):
        if line.startswith("Redis: skipped"):
            out["skipped"][REDIS + " (gRPC section)"] = line


def run_groups(mode: Mode, tmp: str, out: dict) -> None:
    path = os.path.join(tmp, "groups.json")
    old = groups_bench.QUICK
    groups_bench.QUICK = mode.groups
    try:
        # groups_bench.main refuses fewer than 3 runs on its command line; the profile sets them
        rc, text = _quiet(groups_bench.main, ["--quick", "--json", path, "--tmp", tmp])
    finally:
        groups_bench.QUICK = old
    out["logs"]["groups"] = text
    if rc != 0 or not os.path.exists(path):
        out["skipped"]["consumer groups (groups_bench.py)"] = f"groups_bench.main exited with {rc}"
        return
    doc = json.load(open(path))
    for s in doc["series"]:
        if s["metric"] != "records/s":
            continue
        is_t = s["system"] == groups_bench.T_NAME
        name = "tidelog group" if is_t else REDIS
        settings = TIDELOG_SETTINGS["tidelog groups"] if is_t else (
            "redis-server --save '' --appendonly no, XREADGROUP COUNT 1000 + XACK pipelined, one process per member")
        out["figures"].append(_figure(f"consumer {s['section']} (1 KiB)", name, "records/s", s, is_t, settings))
    for system, why in doc.get("skipped", {}).items():
        out["skipped"][f"{system} (groups)"] = why


# -- the peers added by the suite ---------------------------------------------------------------------
def _start_durable_redis(procs: Processes, data_dir: str):
    import redis

    exe = shutil.which("redis-server")
    if exe is None:
        return None, "redis-server is not installed (run: bash benchmarks/setup_peers.sh)"
    port = grpc_bench.free_port()
    proc, log_path = procs.start("redis-server-aof-always", [
        exe, "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--port", str(port), "--bind",
        LOOPBACK, "--dir", data_dir, "--daemonize", "no", "--logfile", ""])
    client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=60)
    grpc_bench.wait_until(proc, log_path, "redis-server (AOF always)", client.ping)
    return client, None


def _start_tidelog_fsync(procs: Processes, data_dir: str, fsync: str) -> str:
    exe = shutil.which("tidelog")
    base = [exe] if exe else [sys.executable, "-m", "tidelog"]
    port = grpc_bench.free_port()
    proc, log_path = procs.start(f"tidelog-server-fsync-{fsync}", base + [
        "serve", "--data-dir", data_dir, "--host", LOOPBACK, "--port", str(port), "--fsync", fsync,
        "--log-level", "warning", "--metrics-port", "0"])
    target = f"{LOOPBACK}:{port}"
    grpc_bench.wait_until(proc, log_path, f"tidelog serve --fsync {fsync}", lambda: grpc_serving_ok(target))
    return target


def grpc_serving_ok(target: str) -> bool:
    return grpc_bench.grpc_serving(target)


def _summary(samples, metric: str) -> dict:
    return Series("", "", metric, samples).summary()


def run_peers(mode: Mode, tmp: str, out: dict) -> None:
    from tidelog.tuning import tune_malloc

    tune_malloc()
    procs = Processes(tmp)
    rounds = Bench(SimpleNamespace(runs=mode.runs, warmup=mode.warmup), tmp)
    nats = nats_bench.NatsServer(procs, tmp)
    rabbit = rabbitmq_bench.Rabbit(procs, tmp)
    ctxs = []
    loop = None
    clients = []
    try:
        why = nats.start()
        if why:
            out["skipped"][NATS] = why
            log(f"skipping NATS: {why}")
            nats = None
        else:
            out["versions"][NATS] = nats.version
        why = rabbit.start()
        if why:
            out["skipped"][RABBIT] = why
            log(f"skipping RabbitMQ: {why}")
            rabbit_ok = False
        else:
            rabbit_ok = True
            out["versions"][RABBIT] = f"RabbitMQ {rabbit.version}"
        pays = {1024: Payloads(1024, 8_000, SEED), 100: Payloads(100, 40_000, SEED + 1)}

        # produce and consume, both sizes
        for kind in ("produce", "consume"):
            for size, label in ((1024, "1 KiB"), (100, "100 B")):
                systems = {}
                values = pays[size].values
                if nats is not None:
                    n = mode.peer_n[("nats", kind, size)]
                    fn = nats_bench.produce if kind == "produce" else nats_bench.consume
                    systems[NATS] = lambda fn=fn, n=n, values=values: fn(nats, values, n, mode.cap_s)
                if rabbit_ok:
                    n = mode.peer_n[("rabbit", kind, size)]
                    fn = rabbitmq_bench.produce if kind == "produce" else rabbitmq_bench.consume
                    systems[RABBIT] = lambda fn=fn, n=n, values=values: fn(rabbit, values, n, mode.cap_s)
                if systems:
                    section = f"{kind} {label}"
                    rounds.rounds(section, systems)
                    for name in systems:
                        out["figures"].append(_figure(section, name, "records/s",
                                                      _summary(rounds.samples(section, name), "records/s"),
                                                      False, PEER_SETTINGS[name]))

        # durable produce, 1 KiB
        import asyncio

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        redis_aof, why = _start_durable_redis(procs, _mkdir(tmp, "redis-aof"))
        if why:
            out["skipped"][REDIS_AOF] = why
        else:
            clients.append(redis_aof)
        t_always = _start_tidelog_fsync(procs, _mkdir(tmp, "tidelog-always"), "always")
        t_never = _start_tidelog_fsync(procs, _mkdir(tmp, "tidelog-never"), "never")
        prof = grpc_bench.Profile(**{**mode.grpc.__dict__, "cap_s": mode.cap_s})
        section = "durable produce 1 KiB"
        c_always = Ctx(prof, rounds, loop, t_always, "", redis_aof)
        c_never = Ctx(prof, rounds, loop, t_never, "", None)
        ctxs += [c_always, c_never]
        pay = pays[1024]
        n = mode.durable_n
        systems = {
            T_DUR_PROD: lambda: grpc_bench.producer_run(c_always, section, pay, n),
            T_DUR_PROD_NEVER: lambda: grpc_bench.producer_run(c_never, section, pay, n),
            T_DUR_RAW: lambda: grpc_bench.raw_produce_run(c_always, pay, max(n, pay.records_per_batch * 8)),
        }
        if redis_aof is not None:
            systems[REDIS_AOF] = lambda: grpc_bench.redis_xadd_run(c_always, pay, n)
        if nats is not None:
            systems[f"{NATS} (file store)"] = lambda: nats_bench.produce(
                nats, pay.values, mode.peer_n[("nats", "produce", 1024)], mode.cap_s)
        if rabbit_ok:
            systems[f"{RABBIT} (confirms)"] = lambda: rabbitmq_bench.produce(
                rabbit, pay.values, mode.peer_n[("rabbit", "produce", 1024)], mode.cap_s)
        rounds.rounds(section, systems)
        for name in systems:
            is_t = name.startswith("tidelog")
            settings = (TIDELOG_SETTINGS["tidelog gRPC"] if name == T_DUR_PROD_NEVER else
                        TIDELOG_SETTINGS["tidelog durable"] if is_t else
                        PEER_SETTINGS[REDIS_AOF] if name == REDIS_AOF else
                        nats_bench.DURABLE_NOTE if name.startswith(NATS) else PEER_SETTINGS[RABBIT])
            out["figures"].append(_figure(section, name, "records/s",
                                          _summary(rounds.samples(section, name), "records/s"), is_t, settings))
        for (sec, system), notes in c_always.notes.items():
            out["notes"].append(f"{sec}, {system}: {'; '.join(notes)}")
        for (sec, system), notes in c_never.notes.items():
            out["notes"].append(f"{sec}, {system}: {'; '.join(notes)}")

        # end-to-end latency at fixed rates, 1 KiB
        redis_plain, _, redis_note = start_redis(procs, _mkdir(tmp, "redis-e2e"))
        if redis_plain is None:
            out["skipped"]["Redis e2e"] = redis_note
        else:
            clients.append(redis_plain)
        values = pays[1024].values
        for rate in mode.rates:
            n = int(rate * mode.e2e_s)
            scenario = f"e2e latency 1 KiB at {rate:,} msgs/s"
            runners = {"tidelog": lambda k, rate=rate, n=n: latency_bench.tidelog_e2e(
                t_never, f"e2e-{rate}-{k}", 1024, rate, n, mode.e2e_s)}
            if redis_plain is not None:
                port = redis_plain.connection_pool.connection_kwargs["port"]
                runners[REDIS] = lambda k, rate=rate, n=n, port=port: latency_bench.redis_e2e(
                    redis_plain, port, f"e2e-{rate}-{k}", values, rate, n, mode.e2e_s)
            if nats is not None:
                runners[NATS] = lambda k, rate=rate, n=n: latency_bench.nats_e2e(nats.url, values, rate, n, mode.e2e_s)
            runs: dict = {name: [] for name in runners}
            for r in range(mode.warmup + mode.runs):
                names = list(runners)
                j = r % len(names)
                for name in names[j:] + names[:j]:
                    gc.collect()
                    res = runners[name](r)
                    if r >= mode.warmup:
                        runs[name].append(res)
                log(f"  {scenario}: round {r + 1}/{mode.warmup + mode.runs} done")
            for name, rs in runs.items():
                settings = (TIDELOG_SETTINGS["tidelog e2e"] if name == "tidelog" else
                            PEER_SETTINGS["Redis e2e"] if name == REDIS else PEER_SETTINGS["NATS e2e"])
                out["latency"].append(latency_entry(scenario, name, rate, rs, settings))
    finally:
        for c in ctxs:
            try:
                c.admin.close()
            except Exception:
                pass
        for c in clients:
            try:
                c.close()
            except Exception:
                pass
        if rabbit is not None:
            rabbit.stop()
        procs.stop_all()
        if loop is not None:
            loop.close()


def latency_entry(scenario: str, system: str, rate: float, runs: list[dict], settings: str) -> dict:
    """One latency figure from several runs: per percentile the median (and min-max) over the runs."""
    entry = {"scenario": scenario, "system": system, "rate": rate, "tidelog": system == "tidelog",
             "settings": settings, "runs": runs,
             "sent": [r["sent"] for r in runs], "received": [r["received"] for r in runs]}
    for p in ("p50", "p90", "p99", "p99.9", "max"):
        vals = [r["latency_ms"][p] for r in runs if r["latency_ms"]]
        entry[p] = ({"median": statistics.median(vals), "min": min(vals), "max": max(vals)} if vals else None)
    return entry


def _mkdir(tmp: str, name: str) -> str:
    path = os.path.join(tmp, name)
    os.makedirs(path, exist_ok=True)
    return path


# -- main ------------------------------------------------------------------------------------------------
def run(mode: Mode, out_dir: str = RESULTS_DIR, tmp_parent: str = "/tmp", only: set | None = None) -> dict:
    from benchmarks import report

    only = only or {"embedded", "grpc", "groups", "peers"}
    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="tidelog-suite-", dir=tmp_parent)
    out: dict = {"mode": mode.name, "date": datetime.date.today().isoformat(),
                 "machine": embedded.machine_info(tmp, True), "figures": [], "latency": [], "targets": [],
                 "skipped": {}, "versions": {}, "notes": [], "logs": {},
                 "settings": {**TIDELOG_SETTINGS, **PEER_SETTINGS}}
    steps = [("embedded", run_embedded), ("grpc", run_grpc), ("groups", run_groups), ("peers", run_peers)]
    try:
        for name, fn in steps:
            if name not in only:
                continue
            t0 = time.perf_counter()
            log(f"== {name} ==")
            try:
                fn(mode, tmp, out)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one broken part does not lose the others
                import traceback

                out["skipped"][f"part '{name}'"] = f"{type(exc).__name__}: {exc}"
                log(traceback.format_exc())
            log(f"== {name}: {time.perf_counter() - t0:.0f} s ==")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["elapsed_s"] = time.perf_counter() - started
    paths = report.write(out, out_dir)
    for p in paths:
        log(f"wrote {p}")
    return out
