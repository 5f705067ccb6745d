"""The peer suite: `python -m benchmarks --quick | --full`.

Runs, in one invocation, tidelog (embedded and over gRPC) next to every peer it is compared with, and
writes benchmarks/results/<YYYY-MM-DD>[-full].json, .md and .png (report.py). It runs the scenario modules
with suite-sized profiles (their `run()`, whose full reports go to the .log):

- embedded.py: tidelog embedded append/read/durable vs SQLite WAL and the naive length-prefixed file;
- grpc_bench.py: gRPC produce/consume (raw batches, Producer, Consumer) vs the raw grpcio ceiling and
  Redis Streams;
- groups_bench.py: consumer groups of 1/2/4 vs Redis Streams groups;

and adds, in this process (every server started by the harness on a 127.0.0.1 port it bound, stopped by PID):

- NATS JetStream (nats_bench.py) and RabbitMQ (rabbitmq_bench.py) produce/consume, 1 KiB and 100 B;
- durable produce: `tidelog serve --fsync always` (Producer and raw batches) vs `--fsync never`, Redis
  with `appendonly yes, appendfsync always`, NATS file store, RabbitMQ confirms;
- end-to-end latency at fixed rates (latency_bench.py): tidelog, Redis Streams, NATS JetStream.

A peer that cannot be set up is skipped and the reason printed and recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import os
import shutil
import statistics
import tempfile
import time
import traceback
from dataclasses import dataclass

from tidelog.tuning import tune_malloc

from . import embedded, groups_bench, grpc_bench, latency_bench, nats_bench, rabbitmq_bench
from .harness.machine import machine_info, shared_machine_note
from .harness.payloads import SEED, Payloads
from .harness.processes import Processes, log
from .harness.rounds import Rounds, summary
from .harness.servers import Unavailable, nats_version, start_nats, start_rabbitmq, start_redis, start_tidelog

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass(frozen=True)
class Mode:
    name: str
    runs: int
    warmup: int
    embedded: embedded.Profile
    grpc: grpc_bench.Profile
    groups: groups_bench.Profile
    peer_n: dict  # messages per NATS / RabbitMQ run: {("nats"|"rabbit", "produce"|"consume", size): n}
    durable_n: int  # 1 KiB records per durable-produce run (tidelog Producer, Redis)
    rates: tuple  # fixed rates of the e2e latency runs (msgs/s)
    e2e_s: float  # seconds of each e2e latency run
    cap_s: float


def _peer_n(nats: int, rabbit: int) -> dict:
    return {
        (peer, kind, size): n
        for peer, n in (("nats", nats), ("rabbit", rabbit))
        for kind in ("produce", "consume")
        for size in (1024, 100)
    }


QUICK = Mode(
    "quick",
    runs=1,
    warmup=0,
    embedded=embedded.Profile(
        "suite-quick",
        runs=1,
        warmup=0,
        kib_records=128_000,
        small_records=1_000_000,
        durable_records=32_000,
        pool_kib_batches=16,
        pool_small_batches=32,
        io_bytes=0,
        io_runs=0,
        cap_s=5.0,
    ),
    grpc=grpc_bench.Profile(
        "suite-quick",
        runs=1,
        warmup=0,
        raw_kib=256_000,
        raw_small=2_000_000,
        producer_kib=96_000,
        producer_small=200_000,
        redis_kib=60_000,
        redis_small=100_000,
        consume_kib=256_000,
        consume_small=2_000_000,
        redis_read=60_000,
        ceiling_bytes=256 << 20,
        window=8,
        cap_s=5.0,
    ),
    groups=groups_bench.Profile(
        "suite-quick", runs=1, warmup=0, records=100_000, pool_batches=8, cap_s=20.0, join_timeout_s=30.0
    ),
    peer_n=_peer_n(nats=40_000, rabbit=20_000),
    durable_n=32_000,
    rates=(1000, 5000, 10000, 50000),
    e2e_s=3.0,
    cap_s=5.0,
)

FULL = Mode(
    "full",
    runs=3,
    warmup=1,
    embedded=embedded.Profile(
        "suite-full",
        runs=3,
        warmup=1,
        kib_records=128_000,
        small_records=1_000_000,
        durable_records=32_000,
        pool_kib_batches=32,
        pool_small_batches=64,
        io_bytes=0,
        io_runs=0,
        cap_s=10.0,
    ),
    grpc=dataclasses.replace(QUICK.grpc, name="suite-full", runs=3, warmup=1, cap_s=10.0),
    groups=groups_bench.Profile(
        "suite-full", runs=3, warmup=1, records=200_000, pool_batches=16, cap_s=30.0, join_timeout_s=30.0
    ),
    peer_n=_peer_n(nats=100_000, rabbit=60_000),
    durable_n=32_000,
    rates=(1000, 5000, 10000, 50000),
    e2e_s=5.0,
    cap_s=10.0,
)

# names used in the report
NATS = "NATS JetStream"
RABBIT = "RabbitMQ"
REDIS = "Redis Streams"
T_EMB = "tidelog embedded"
T_DUR_PROD = "tidelog Producer, serve --fsync always"
T_DUR_PROD_NEVER = "tidelog Producer, serve --fsync never"
T_DUR_RAW = "tidelog raw batches, serve --fsync always"
REDIS_AOF = "Redis XADD pipeline 1000, appendfsync always"

EMB_DURABLE = (
    'Engine.open(fsync=...), produce() of 1000 records returns after the fsync when "always" '
    "(group commit across producer threads), 1 partition (embedded.py)"
)
TIDELOG_SETTINGS = {
    "tidelog embedded": "Engine.produce 1000 records/call, fsync never, 1 partition, segment 1 GiB, no compression "
    "(embedded.py); reads: fetch 4 MiB",
    "tidelog gRPC": "`tidelog serve --fsync never` on 127.0.0.1, 1 partition; raw: ~1 MiB RecordBatches, 8 in "
    "flight, grpc.aio; Producer(linger_ms=5, batch_bytes=1 MiB), idempotent; Consumer defaults "
    "(credit 8 MiB) (grpc_bench.py)",
    "tidelog durable": "`tidelog serve --fsync always` (fsync before ack, group commit), Producer(linger_ms=5, "
    'batch_bytes=1 MiB) and raw batches; embedded: Engine fsync="always", 1 and 2 producers',
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
    "XREADGROUP COUNT 1000 pipelined with the XACK of the previous batch",
    REDIS_AOF: "redis-server --appendonly yes --appendfsync always (fsync after each event-loop write, i.e. "
    "once per pipeline of 1000), XADD pipeline 1000",
    NATS: nats_bench.SETTINGS,
    RABBIT: rabbitmq_bench.SETTINGS,
    "Redis e2e": "one XADD per message (no pipeline), consumer XREAD BLOCK 100 COUNT 1000 in its own process",
    "NATS e2e": "one js.publish per message awaiting its PubAck, consumer pull fetch(100, timeout 0.2 s), ack none, "
    "in its own process",
}
PEERS_APART = (
    "NATS JetStream and RabbitMQ produce/consume are measured in the suite's peers part, after tidelog's "
    "gRPC part: the same invocation, not the same rounds, so their ratios carry the drift between the two; "
    "the durable-produce and e2e sections interleave every system round by round."
)
REDIS_GROUPS = "redis-server --save '' --appendonly no, XREADGROUP COUNT 1000 + XACK pipelined, one process per member"


def _figure(scenario: str, system: str, s: dict, tidelog: bool, settings: str) -> dict:
    return {
        "scenario": scenario,
        "system": system,
        "metric": "records/s",
        "median": s["median"],
        "min": s["min"],
        "max": s["max"],
        "runs": s["runs"],
        "capped_runs": s.get("capped_runs", 0),
        "tidelog": tidelog,
        "settings": settings,
    }


# -- the scenario modules ------------------------------------------------------------------------------
EMB_SYSTEMS = {  # embedded.py system name -> (suite name, is tidelog, settings key)
    "tidelog": (T_EMB, True, "tidelog embedded"),
    embedded.NAIVE_JOIN: ("naive file, 1000 records/write", False, "naive file"),
    embedded.T_BATCH: ("tidelog embedded, batch view", True, "tidelog embedded"),
    embedded.T_RECORD: ("tidelog embedded, Record per record", True, "tidelog embedded"),
}


def run_embedded(mode: Mode, tmp: str, out: dict) -> None:
    text, doc = embedded.run(mode.embedded, tmp, {"append", "read", "durable"}, tune_malloc())
    out["logs"]["embedded"] = text
    for s in doc["series"]:
        section, system = s["section"], s["system"]
        if s["metric"] != "records/s":
            continue
        if section.startswith("durable"):
            is_t = system.startswith("tidelog")
            name = f"tidelog embedded, {system[len('tidelog ') :]}" if is_t else system
            out["figures"].append(
                _figure(
                    "embedded durable append 1 KiB",
                    name,
                    s,
                    is_t,
                    EMB_DURABLE if is_t else "os.pwrite + os.fdatasync per 1 MiB batch",
                )
            )
            continue
        if system in EMB_SYSTEMS:
            name, is_t, key = EMB_SYSTEMS[system]
        elif system.startswith("SQLite"):
            name, is_t, key = "SQLite WAL", False, "SQLite WAL"
        else:  # the other naive file variants
            name, is_t, key = system, False, "naive file"
        settings = TIDELOG_SETTINGS.get(key) or PEER_SETTINGS.get(key, "")
        out["figures"].append(_figure(f"embedded {section}", name, s, is_t, settings))
    out["targets"] += [dict(t, source="embedded.py") for t in doc["targets"]]
    out["cpu"].update({f"embedded {k}": v for k, v in doc["cpu"].items()})


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
    text, doc = grpc_bench.run(mode.grpc, tmp, {"produce", "consume"}, {"1k", "100"}, True)
    out["logs"]["grpc"] = text
    for s in doc["series"]:
        if s["metric"] == "records/s" and s["system"] in GRPC_SYSTEMS:
            name, is_t = GRPC_SYSTEMS[s["system"]]
            settings = TIDELOG_SETTINGS["tidelog gRPC"] if is_t else PEER_SETTINGS[name]
            out["figures"].append(_figure(s["section"], name, s, is_t, settings))
    out["targets"] += [dict(t, source="grpc_bench.py") for t in doc["targets"] if t["measured"] is not None]
    out["cpu"].update(doc["cpu"])
    for line in doc["settings"]:
        if line.startswith("Redis: skipped"):
            out["skipped"][REDIS + " (gRPC section)"] = line


def run_groups(mode: Mode, tmp: str, out: dict) -> None:
    text, doc = groups_bench.run(mode.groups, tmp, 4, True, tune_malloc())
    out["logs"]["groups"] = text
    for s in doc["series"]:
        if s["metric"] == "records/s":
            is_t = s["system"] == groups_bench.T_NAME
            out["figures"].append(
                _figure(
                    f"consumer {s['section']} (1 KiB)",
                    "tidelog group" if is_t else REDIS,
                    s,
                    is_t,
                    TIDELOG_SETTINGS["tidelog groups"] if is_t else REDIS_GROUPS,
                )
            )
    out["cpu"].update({f"consumer {k}": v for k, v in doc["cpu"].items()})
    out["skipped"].update({f"{system} (groups)": why for system, why in doc["skipped"].items()})


# -- the peers added by the suite ---------------------------------------------------------------------
def _peer(out: dict, name: str, start):
    """A started peer, or None with the reason recorded as skipped."""
    try:
        return start()
    except Unavailable as exc:
        out["skipped"][name] = str(exc)
        log(f"skipping {name}: {exc}")
        return None


def _measured(out: dict, rounds: Rounds, section: str, systems: dict) -> bool:
    """Run a section's rounds; a failure (a peer stalled past its timeouts on a starved machine) is recorded
    as that section skipped, and the sections after it still run."""
    try:
        rounds.run({section: systems})
        return True
    except Exception as exc:
        out["skipped"][section] = f"{type(exc).__name__}: {exc}"
        log(traceback.format_exc())
        return False


def run_peers(mode: Mode, tmp: str, out: dict) -> None:
    tune_malloc()
    procs = Processes(tmp)
    rounds = Rounds(mode.runs, mode.warmup)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    clients, ctxs = [], []
    try:
        nats = _peer(out, NATS, lambda: start_nats(procs, os.path.join(tmp, "nats-store")))
        rabbit = _peer(out, RABBIT, lambda: start_rabbitmq(procs, os.path.join(tmp, "rabbitmq")))
        if nats is not None:
            out["versions"][NATS] = nats_version()
        if rabbit is not None:
            out["versions"][RABBIT] = rabbit.version
        pays = {1024: Payloads(1024, 8_000, SEED), 100: Payloads(100, 40_000, SEED + 1)}
        peers = {NATS: ("nats", nats_bench, nats), RABBIT: ("rabbit", rabbitmq_bench, rabbit)}

        # produce and consume, both sizes
        for kind in ("produce", "consume"):
            for size, label in ((1024, "1 KiB"), (100, "100 B")):
                section = f"{kind} {label}"
                systems = {
                    name: (
                        lambda fn=getattr(module, kind), server=server, values=pays[size].values, n=mode.peer_n[(key, kind, size)]: (
                            fn(server, values, n, mode.cap_s)
                        )
                    )
                    for name, (key, module, server) in peers.items()
                    if server is not None
                }
                if systems and _measured(out, rounds, section, systems):
                    for name in systems:
                        out["figures"].append(
                            _figure(section, name, _summary(rounds, section, name), False, PEER_SETTINGS[name])
                        )

        # durable produce, 1 KiB
        redis_aof = _peer(
            out,
            REDIS_AOF,
            lambda: start_redis(
                procs,
                os.path.join(tmp, "redis-aof"),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                name="redis-server-aof-always",
            ),
        )
        redis_aof = redis_aof and redis_aof[1]
        clients.append(redis_aof)
        t_always = start_tidelog(
            procs, os.path.join(tmp, "tidelog-always"), "always", name="tidelog-server-fsync-always"
        )
        t_never = start_tidelog(procs, os.path.join(tmp, "tidelog-never"), "never", name="tidelog-server-fsync-never")
        prof = grpc_bench.Profile(**{**mode.grpc.__dict__, "cap_s": mode.cap_s})
        section = "durable produce 1 KiB"
        c_always = grpc_bench.Ctx(prof, rounds, loop, t_always.target, "", redis_aof)
        c_never = grpc_bench.Ctx(prof, rounds, loop, t_never.target)
        ctxs += [c_always, c_never]
        pay = pays[1024]
        n = mode.durable_n
        systems = {
            T_DUR_PROD: lambda: grpc_bench.producer_run(c_always, section, pay, n),
            T_DUR_PROD_NEVER: lambda: grpc_bench.producer_run(c_never, section, pay, n),
            T_DUR_RAW: lambda: grpc_bench.raw_produce_run(c_always, pay, max(n, pay.records_per_batch * 8)),
        }
        settings = {
            T_DUR_PROD: TIDELOG_SETTINGS["tidelog durable"],
            T_DUR_PROD_NEVER: TIDELOG_SETTINGS["tidelog gRPC"],
            T_DUR_RAW: TIDELOG_SETTINGS["tidelog durable"],
        }
        if redis_aof is not None:
            systems[REDIS_AOF] = lambda: grpc_bench.redis_xadd_run(c_always, pay, n)
            settings[REDIS_AOF] = PEER_SETTINGS[REDIS_AOF]
        if nats is not None:
            systems[f"{NATS} (file store)"] = lambda: nats_bench.produce(
                nats, pay.values, mode.peer_n[("nats", "produce", 1024)], mode.cap_s
            )
            settings[f"{NATS} (file store)"] = nats_bench.DURABLE_NOTE
        if rabbit is not None:
            systems[f"{RABBIT} (confirms)"] = lambda: rabbitmq_bench.produce(
                rabbit, pay.values, mode.peer_n[("rabbit", "produce", 1024)], mode.cap_s
            )
            settings[f"{RABBIT} (confirms)"] = PEER_SETTINGS[RABBIT]
        for name in systems if _measured(out, rounds, section, systems) else ():
            out["figures"].append(
                _figure(section, name, _summary(rounds, section, name), name.startswith("tidelog"), settings[name])
            )
        for ctx in ctxs:
            out["notes"] += [f"{sec}, {system}: {'; '.join(texts)}" for (sec, system), texts in ctx.notes.items()]

        # end-to-end latency at fixed rates, 1 KiB
        redis_plain = _peer(out, "Redis e2e", lambda: start_redis(procs, os.path.join(tmp, "redis-e2e")))
        clients.append(redis_plain and redis_plain[1])
        values = pays[1024].values
        for rate in mode.rates:
            n = int(rate * mode.e2e_s)
            scenario = f"e2e latency 1 KiB at {rate:,} msgs/s"
            runs = {
                "tidelog": lambda rate=rate, n=n: latency_bench.tidelog_e2e(
                    t_never.target, f"e2e-{rate}-{time.monotonic_ns()}", 1024, rate, n, mode.e2e_s
                )
            }
            if redis_plain is not None:
                proc, client = redis_plain
                runs[REDIS] = lambda rate=rate, n=n: latency_bench.redis_e2e(
                    client, proc.port, f"e2e-{rate}-{time.monotonic_ns()}", values, rate, n, mode.e2e_s
                )
            if nats is not None:
                runs[NATS] = lambda rate=rate, n=n: latency_bench.nats_e2e(
                    nats_bench.url(nats), values, rate, n, mode.e2e_s
                )
            for name in runs if _measured(out, rounds, scenario, runs) else ():
                settings = (
                    TIDELOG_SETTINGS["tidelog e2e"]
                    if name == "tidelog"
                    else PEER_SETTINGS["Redis e2e"]
                    if name == REDIS
                    else PEER_SETTINGS["NATS e2e"]
                )
                out["latency"].append(latency_entry(scenario, name, rate, rounds.samples(scenario, name), settings))
    finally:
        out["cpu"].update(rounds.meter.sections)
        for c in ctxs:
            c.admin.close()
        for c in clients:
            if c is not None:
                c.close()
        procs.stop_all()
        loop.close()


def _summary(rounds: Rounds, section: str, name: str) -> dict:
    return summary(section, name, "records/s", rounds.samples(section, name), rounds.warmups[(section, name)])


def latency_entry(scenario: str, system: str, rate: float, runs: list[dict], settings: str) -> dict:
    """One latency figure from several runs: per percentile the median (and min-max) over the runs."""
    entry = {
        "scenario": scenario,
        "system": system,
        "rate": rate,
        "tidelog": system == "tidelog",
        "settings": settings,
        "runs": runs,
        "sent": [r["sent"] for r in runs],
        "received": [r["received"] for r in runs],
    }
    for p in ("p50", "p90", "p99", "p99.9", "max"):
        vals = [r["latency_ms"][p] for r in runs if r["latency_ms"]]
        entry[p] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)} if vals else None
    return entry


# -- main ------------------------------------------------------------------------------------------------
def run(mode: Mode, out_dir: str = RESULTS_DIR, tmp_parent: str = "/tmp", only: set | None = None) -> dict:
    from . import report

    only = only or {"embedded", "grpc", "groups", "peers"}
    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="tidelog-suite-", dir=tmp_parent)
    out: dict = {
        "mode": mode.name,
        "date": datetime.date.today().isoformat(),
        "machine": machine_info(tmp, True),
        "figures": [],
        "latency": [],
        "targets": [],
        "skipped": {},
        "versions": {},
        "notes": [],
        "logs": {},
        "cpu": {},
        "settings": {**TIDELOG_SETTINGS, **PEER_SETTINGS},
    }
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
                out["skipped"][f"part '{name}'"] = f"{type(exc).__name__}: {exc}"
                log(traceback.format_exc())
            log(f"== {name}: {time.perf_counter() - t0:.0f} s ==")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["elapsed_s"] = time.perf_counter() - started
    out["machine_load"] = shared_machine_note(out["cpu"])
    if "peers" in only and ({"grpc", "groups"} & only):
        out["notes"].append(PEERS_APART)
    for p in report.write(out, out_dir):
        log(f"wrote {p}")
    return out
