"""Consumer-group benchmark over gRPC: a tidelog group of 1, 2 and 4 members vs Redis Streams groups.

    python -m benchmarks.groups_bench [--quick] [--json PATH] [--runs N] [--records N] [--partitions 4|8]
                                      [--tmp DIR] [--no-redis] [--default-malloc]

N records of exactly 1 KiB are loaded once into a tidelog topic (4 or 8 partitions) and a Redis stream; then
for each group size k, k member processes of a fresh group consume everything from the beginning,
committing (acking) after every poll. Members are long-lived processes (the GIL does not cap the client
side); the clock runs from the moment every member is ready (tidelog: the group is stable) until the last
member's final commit, stamped with the system-wide CLOCK_MONOTONIC. Every run is checked: all N consumed,
committed offsets at the end (Redis: nothing pending). See benchmarks/README.md. This is a measuring script:
it asserts nothing about speed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import multiprocessing
import os
import signal
import statistics
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field

from . import redis_streams
from .harness import cli
from .harness.machine import announce, machine_busy_s, machine_info, machine_line
from .harness.payloads import BATCH, SEED, MiB, make_pool
from .harness.processes import log, workspace
from .harness.rounds import Rounds, Sample, ratio
from .harness.servers import Unavailable, install_peers, redis_client, redis_versions, start_redis, start_tidelog
from .harness.tables import Compare, Section, fmt_ratio, sections_report

RECORD_BYTES = 1024
TOPIC = "groups-bench"
STREAM = "groups-bench"
GROUP_SIZES = (1, 2, 4)
T_NAME = "tidelog"
R_NAME = "Redis Streams"
POLL_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Profile:
    name: str
    runs: int
    warmup: int
    records: int  # records preloaded (and consumed by every run)
    pool_batches: int  # distinct 1000-record payload batches, reused cyclically for the preload
    cap_s: float  # a run stops past this many seconds (marked "capped")
    join_timeout_s: float  # bound of the wait for a stable group


QUICK = Profile("quick", runs=3, warmup=1, records=400_000, pool_batches=32, cap_s=20.0, join_timeout_s=30.0)
DEFAULT = Profile("default", runs=5, warmup=1, records=1_000_000, pool_batches=64, cap_s=60.0, join_timeout_s=30.0)


def now() -> float:
    """CLOCK_MONOTONIC: one clock for the whole machine, so members' stamps compare with the parent's."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


# -- member processes ----------------------------------------------------------------------------------
def _tidelog_consume(member, ends: dict, cap_s: float, max_polls: int) -> dict:
    """poll() + commit() until every assigned partition reached its end offset (bounded)."""
    n = nbytes = polls = 0
    cpu0 = time.process_time()
    deadline = now() + cap_s
    capped = False
    owned: list = []
    t_first = None
    while True:
        records = member.poll(POLL_TIMEOUT_S)
        if records and t_first is None:
            t_first = now()
        for rec in records:
            nbytes += len(rec.value)
        n += len(records)
        member.commit()
        polls += 1
        owned = member.assignment()
        if owned and all(member.position(tp) >= ends[tp] for tp in owned):
            break
        if now() > deadline or polls >= max_polls:
            capped = True
            break
    return {
        "records": n,
        "bytes": nbytes,
        "t_end": now(),
        "polls": polls,
        "capped": capped,
        "cpu_s": time.process_time() - cpu0,
        "t_first": t_first,
        "partitions": sorted(p for _, p in owned),
    }


def _redis_consume(r, group: str, name: str, cap_s: float, max_reads: int) -> dict:
    cpu0 = time.process_time()
    out = redis_streams.read_group(r, STREAM, group, name, cap_s, max_reads)
    out.pop("seconds")
    return {**out, "t_end": now(), "cpu_s": time.process_time() - cpu0}


def serve_commands(conn, index: int, tuned: bool, handle) -> None:
    """A worker process's main loop: commands from the parent over a pipe, one at a time, each answered
    ("ok", handle(state, index, conn, op, args)) or ("error", text); "exit" ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    if tuned:
        from tidelog.tuning import tune_malloc

        tune_malloc()
    state: dict = {}
    conn.send(("ok", os.getpid()))
    while True:
        try:
            op, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if op == "exit":
                conn.send(("ok", None))
                return
            conn.send(("ok", handle(state, index, conn, op, args)))
        except BaseException as exc:  # reported to the parent, which stops the benchmark
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def _member_op(state: dict, index: int, conn, op: str, args: dict):
    """One command of a group member process."""
    from tidelog.client import Consumer

    if op == "t_join":
        state["member"] = member = Consumer(
            args["target"],
            group_id=args["group"],
            topics=[TOPIC],
            auto_commit=False,
            client_id=f"bench-{index}",
        )
        return member.member_id
    if op == "t_heartbeat":
        state["member"].heartbeat_now()
        return state["member"].generation
    if op == "t_run":
        return _tidelog_consume(state["member"], args["ends"], args["cap_s"], args["max_polls"])
    if op == "t_close":
        member = state.pop("member", None)
        if member is not None:
            member.close()
        return None
    if op == "r_connect":
        state["r"] = r = redis_client(args["port"])
        r.ping()  # the connection is open before the clock starts
        return None
    if op == "r_run":
        return _redis_consume(state["r"], args["group"], f"c{index}", args["cap_s"], args["max_reads"])
    if op == "r_close":
        r = state.pop("r", None)
        if r is not None:
            r.close()
        return None
    raise ValueError(f"unknown command {op!r}")


def _worker_main(conn, index: int, tuned: bool) -> None:
    """One member process."""
    serve_commands(conn, index, tuned, _member_op)


class Members:
    """A fixed set of member processes (spawned once; reused by every run of both systems). `target` is the
    member's main, `target(conn, index, tuned)`: it answers each command with ("ok", value) or ("error", text)
    (queue_bench.py has its own)."""

    def __init__(self, n: int, tuned: bool, target=None, name: str = "groups-bench-member") -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork after grpc threads exist in the parent
        self.procs, self.conns = [], []
        for i in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=target or _worker_main, args=(child, i, tuned), name=f"{name}-{i}", daemon=True)
            p.start()
            child.close()
            self.procs.append(p)
            self.conns.append(parent)
        self.pids = self._recv(range(n), 120.0)

    def _recv(self, which, timeout_s: float) -> list:
        out = []
        deadline = now() + timeout_s
        for i in which:
            if not self.conns[i].poll(max(deadline - now(), 0)):
                raise TimeoutError(f"member process {i} did not answer within {timeout_s:.0f} s")
            status, value = self.conns[i].recv()
            if status != "ok":
                raise RuntimeError(f"member process {i} failed: {value}")
            out.append(value)
        return out

    def call(self, which, op: str, args=None, timeout_s: float = 30.0) -> list:
        which = list(which)
        for i in which:
            self.conns[i].send((op, args or {}))
        return self._recv(which, timeout_s)

    def close(self) -> None:
        for p, c in zip(self.procs, self.conns):
            try:
                if p.is_alive():
                    c.send(("exit", None))
            except (OSError, BrokenPipeError):
                pass
        for p in self.procs:
            p.join(timeout=5)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if p.is_alive():
                    os.kill(p.pid, sig)
                    p.join(timeout=5)


# -- preload -------------------------------------------------------------------------------------------
def preload_tidelog(
    target: str, pool: list[list[bytes]], n: int, partitions: int, topic: str = TOPIC
) -> tuple[dict, float]:
    """n records into a new topic, partition i % partitions, through the client Producer (1 MiB batches);
    returns the end offsets {(topic, partition): end} and the seconds it took."""
    from tidelog.client import Admin, Producer

    t0 = now()
    with Admin(target) as admin:
        admin.create_topic(topic, partitions)
    npool = len(pool)
    with Producer(target, linger_ms=5, batch_bytes=MiB) as producer:
        send = producer.send
        step = BATCH * partitions
        for start in range(0, n, step):
            for i in range(start, min(start + step, n)):
                send(topic, pool[(i // BATCH) % npool][i % BATCH], partition=i % partitions)
            # Flushing every 1000 records per partition keeps each batch at 1000 records: send() does not
            # start a new batch when the open one is full, so a caller faster than the network thread
            # could otherwise grow a batch past the broker's 8 MiB max_batch_bytes.
            producer.flush(timeout_s=120)
    with Admin(target) as admin:
        ends = {(topic, p): admin.list_offsets(topic, p).high_watermark for p in range(partitions)}
    if sum(ends.values()) != n:
        raise RuntimeError(f"tidelog preload: the topic holds {sum(ends.values())} records, expected {n}")
    return ends, now() - t0


def preload_redis(r, pool: list[list[bytes]], n: int) -> float:
    t0 = now()
    r.delete(STREAM)
    redis_streams.xadd(r, STREAM, [v for batch in pool for v in batch], n, 1e9)
    if r.xlen(STREAM) != n:
        raise RuntimeError(f"Redis preload: the stream holds {r.xlen(STREAM)} entries, expected {n}")
    return now() - t0


# -- one run of each system ------------------------------------------------------------------------------
@dataclass
class GroupSample(Sample):
    setup_s: float = 0.0  # untimed: join + wait for a stable group (tidelog), connect (Redis)
    members: list = field(default_factory=list)  # per member: records, polls, cpu_s, partitions
    broker_cpu_s: float = 0.0  # CPU the server process used from the start signal to the last result
    machine_busy_s: float = 0.0  # CPU seconds the whole machine was busy over the same interval

    @property
    def broker_cores(self) -> float:
        return self.broker_cpu_s / self.seconds

    @property
    def machine_cores(self) -> float:
        return self.machine_busy_s / self.seconds

    @property
    def member_cores(self) -> float:
        return sum(m["cpu_s"] for m in self.members) / self.seconds

    def details(self) -> dict:
        return {
            "setup_seconds_untimed": self.setup_s,
            "server_cpu_cores": self.broker_cores,
            "member_cpu_cores": self.member_cores,
            "machine_busy_cores": self.machine_cores,
            "members": self.members,
        }


def member_row(k: int, system: str, samples: list[GroupSample], calls: str) -> str:
    """A table row of how the work spread: records per member (median run), `calls` per run (the
    members' "polls" or "receives"), when the last member had its first record, and the CPU split."""
    mid = sorted(samples, key=lambda s: s.rps)[len(samples) // 2]
    shares = ", ".join(f"{m['records']:,}" for m in mid.members)
    n = statistics.median(sum(m[calls] for m in s.members) for s in samples)
    first = statistics.median(max(m["first_record_s"] or 0 for m in s.members) for s in samples)
    return (
        f"| {k} | {system} | {shares} | {n:,.0f} | {first * 1e3:.0f} ms | "
        f"{statistics.median(s.broker_cores for s in samples):.2f} | "
        f"{statistics.median(s.member_cores for s in samples):.2f} | "
        f"{statistics.median(s.machine_cores for s in samples):.2f} |"
    )


def timed(members: Members, k: int, op: str, args: dict, server, setup_s: float, timeout_s: float) -> GroupSample:
    """The first k members' run (`op`), from the start signal to the last member's end (`t_end`, each
    member's CLOCK_MONOTONIC stamp of its last commit/ack); `server` is what `.cpu_s()` is measured on."""
    cpu0, busy0 = server.cpu_s(), machine_busy_s()
    t0 = now()
    results = members.call(range(k), op, args, timeout_s=timeout_s)
    cpu, busy = server.cpu_s() - cpu0, machine_busy_s() - busy0
    return sample_of(results, t0, setup_s, cpu, busy)


def sample_of(results: list[dict], t0: float, setup_s: float, cpu: float, busy: float) -> GroupSample:
    """One run's figure from its members' reports (started at t0)."""
    for m in results:  # seconds from the start signal to the member's first record
        m["first_record_s"] = None if m["t_first"] is None else m["t_first"] - t0
    return GroupSample(
        sum(m["records"] for m in results),
        sum(m["bytes"] for m in results),
        max(m["t_end"] for m in results) - t0,
        any(m["capped"] for m in results),
        setup_s,
        [{key: v for key, v in m.items() if key not in ("t_end", "t_first", "bytes")} for m in results],
        cpu,
        busy,
    )


class Runner:
    def __init__(self, profile: Profile, members: Members, n: int) -> None:
        self.p, self.members, self.n = profile, members, n
        self.admin = self.ends = self.tidelog = None
        self.redis = self.redis_proc = None
        self.max_polls = 20 * (n // BATCH) + 10_000

    def _timed(self, k: int, op: str, args: dict, server, setup_s: float) -> GroupSample:
        return timed(self.members, k, op, args, server, setup_s, self.p.cap_s + 60)

    def tidelog_run(self, k: int) -> GroupSample:
        group = f"bench-{k}-{uuid.uuid4().hex[:8]}"
        which = range(k)
        t_setup = now()
        self.members.call(which, "t_join", {"target": self.tidelog.target, "group": group})
        try:
            # Wait (bounded) until the group is stable with k members, driving heartbeats so it settles
            # without waiting for the heartbeat interval; two stable checks in a row with the same
            # generation mean every member has applied its final grant.
            deadline = now() + self.p.join_timeout_s
            previous = None
            for _ in range(10_000):
                self.members.call(which, "t_heartbeat")
                d = self.admin.describe_group(group)
                key = (d["generation"], tuple(sorted(m["member_id"] for m in d["members"])))
                stable = (
                    d["state"] == "stable" and len(d["members"]) == k and all(m["assignment"] for m in d["members"])
                )
                if stable and key == previous:
                    break
                previous = key if stable else None
                if now() > deadline:
                    raise RuntimeError(
                        f"group {group} not stable with {k} members after {self.p.join_timeout_s:.0f} s: {d}"
                    )
                time.sleep(0.01)
            sample = self._timed(
                k,
                "t_run",
                {"ends": self.ends, "cap_s": self.p.cap_s, "max_polls": self.max_polls},
                self.tidelog,
                now() - t_setup,
            )
        finally:
            self.members.call(which, "t_close")
        committed = self.admin.committed_offsets(group)
        if not sample.capped:
            if sample.records != self.n:
                raise RuntimeError(f"tidelog group of {k}: consumed {sample.records} records, expected {self.n}")
            if committed != self.ends:
                raise RuntimeError(f"tidelog group of {k}: committed {committed}, expected {self.ends}")
        self.admin.delete_group(group)
        return sample

    def redis_run(self, k: int) -> GroupSample:
        group = f"bench-{k}-{uuid.uuid4().hex[:8]}"
        which = range(k)
        t_setup = now()
        self.redis.xgroup_create(STREAM, group, id="0")
        try:
            self.members.call(which, "r_connect", {"port": self.redis_proc.port})
            sample = self._timed(
                k,
                "r_run",
                {"group": group, "cap_s": self.p.cap_s, "max_reads": self.max_polls},
                self.redis_proc,
                now() - t_setup,
            )
            self.members.call(which, "r_close")
            info = next(g for g in self.redis.xinfo_groups(STREAM) if _s(g["name"]) == group)
            if not sample.capped:
                if sample.records != self.n:
                    raise RuntimeError(f"Redis group of {k}: consumed {sample.records} records, expected {self.n}")
                if info["pending"] != 0:
                    raise RuntimeError(f"Redis group of {k}: {info['pending']} entries left unacknowledged")
        finally:
            self.redis.xgroup_destroy(STREAM, group)
        return sample


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# -- report --------------------------------------------------------------------------------------------
def section(k: int) -> str:
    return f"group of {k}"


def report(rounds: Rounds, p: Profile, info: dict, settings: dict, elapsed: float) -> tuple[str, dict]:
    systems = rounds.systems(section(1))
    out = [
        f"# tidelog consumer-group benchmark ({p.name})",
        "",
        "- "
        + machine_line(info, f"grpcio {info['grpcio']}")
        + (
            f", Redis {info['redis_server']}, redis-py {info['redis_py']}"
            f"{' + hiredis ' + info['hiredis'] if info.get('hiredis') else ''}"
            if info.get("redis_server")
            else ""
        ),
        f"- malloc (benchmark and member processes): {info['malloc']}; data under {info['tmp_dir']}",
        f"- data: {settings['records']:,} records of exactly {RECORD_BYTES} B (seeded JSON-like payloads), "
        "preloaded once per system; every run consumes all of them with a fresh group",
        f"- tidelog: `tidelog serve --fsync never` (one broker process, defaults otherwise), topic of "
        f"{settings['partitions']} partitions filled by the client Producer (batch_bytes 1 MiB, no compression); "
        "members: `Consumer(target, group_id, topics, auto_commit=False)`, poll() + commit() after every poll, "
        "sticky assignor, session timeout 10 s, credit 8 MiB and pushes of <= 4 MiB per partition stream",
        "- Redis: `redis-server --save '' --appendonly no` (no persistence), one stream (XADD, 1000 per "
        "pipeline); members: XREADGROUP GROUP g c COUNT 1000 STREAMS s >, each pipelined with the XACK of "
        "the previous batch's ids (redis-py, RESP2)",
        "- each member is its own process; a record's value is touched (len) once; timed from the start "
        "signal (group stable, every member ready) to the last member's final commit/ack",
        "- last table: medians; 'first record after' includes opening the partition readers (tidelog); CPU "
        "cores = CPU seconds / wall seconds of the timed window (server process; members summed; whole machine, "
        "which includes any other load)",
        f"- medians of {p.runs} runs after {p.warmup} warm-up round(s), systems interleaved round by round; "
        "min - max across runs; tidelog / Redis: ratio of the medians (min - max of per-round ratios)",
        "",
    ]
    vs = (Compare("tidelog / Redis", T_NAME, R_NAME, R_NAME),)
    secs = [
        Section(section(k), f"Group of {k} member{'s' if k > 1 else ''}", ("records/s", "MB/s"), vs)
        for k in GROUP_SIZES
    ]
    body, results = sections_report(rounds, secs)
    out += body
    for entry in results["series"] + results["ratios"]:
        entry["group_size"] = int(entry["section"].split()[-1])
    results["scaling"] = []
    out += ["| scaling (records/s, ratio of medians) | " + " | ".join(systems) + " |", "|---|" + "---:|" * len(systems)]
    for k in GROUP_SIZES[1:]:
        row = []
        for system in systems:
            r = ratio(rounds.samples(section(k), system), rounds.samples(section(1), system))
            results["scaling"].append({"system": system, "numerator": section(k), "denominator": section(1), **r})
            row.append(fmt_ratio(r))
        out.append(f"| group of {k} / group of 1 | " + " | ".join(row) + " |")
    out.append("")
    # How the work was spread and how often members committed (medians over the runs).
    out += [
        "| group | system | records per member (median run) | polls+commits (reads+acks) per run | "
        "first record after | CPU cores: server | members (sum) | whole machine |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for k in GROUP_SIZES:
        for system in systems:
            out.append(member_row(k, system, rounds.samples(section(k), system), "polls"))
    out += ["", f"Total benchmark time: {elapsed:.0f} s"]
    results["elapsed_s"] = elapsed
    results["cpu"] = rounds.meter.sections
    return "\n".join(out), results


# -- main ----------------------------------------------------------------------------------------------
def run(profile: Profile, tmp_parent: str, partitions: int, with_redis: bool, tuned: bool) -> tuple[str, dict]:
    """Start the servers and members, measure, stop them; the Markdown report and the JSON document."""
    import grpc

    n = profile.records
    info = machine_info(tmp_parent, tuned, grpcio=grpc.__version__)
    announce(info)
    skipped: dict[str, str] = {} if with_redis else {R_NAME: "--no-redis"}
    systems = [T_NAME] + ([R_NAME] if with_redis else [])
    started = now()
    settings = {
        "records": n,
        "record_bytes": RECORD_BYTES,
        "partitions": partitions,
        "group_sizes": list(GROUP_SIZES),
        "redis_count": redis_streams.COUNT,
        "poll_timeout_s": POLL_TIMEOUT_S,
        "tidelog_server": "tidelog serve --fsync never",
        "tidelog_producer": "batch_bytes=1 MiB, linger_ms=5",
        "redis_server": "redis-server --save '' --appendonly no",
    }
    preload: dict[str, float] = {}
    with workspace("tidelog-groups-bench-", tmp_parent) as procs, contextlib.ExitStack() as closing:
        work = procs.tmp
        log("building payloads, starting member processes and servers...")
        pool = make_pool(profile.pool_batches, RECORD_BYTES, SEED)
        members = Members(max(GROUP_SIZES), tuned)
        closing.callback(members.close)
        runner = Runner(profile, members, n)
        runner.tidelog = start_tidelog(procs, os.path.join(work, "tidelog"))
        from tidelog.client import Admin

        runner.admin = Admin(runner.tidelog.target)
        closing.callback(runner.admin.close)
        runner.ends, preload[T_NAME] = preload_tidelog(runner.tidelog.target, pool, n, partitions)
        log(
            f"  preloaded tidelog: {n:,} records in {preload[T_NAME]:.1f} s "
            f"({n / preload[T_NAME] / 1e3:,.0f}k records/s, untimed)"
        )
        if R_NAME in systems:
            try:
                runner.redis_proc, runner.redis = start_redis(procs, os.path.join(work, "redis"))
            except Unavailable as exc:  # install it (setup_peers.sh) and try once more
                log(f"{exc}: installing the peers")
                why = install_peers()
                try:
                    runner.redis_proc, runner.redis = start_redis(procs, os.path.join(work, "redis"))
                except Unavailable as again:
                    systems.remove(R_NAME)
                    skipped[R_NAME] = why or str(again)
                    log(f"skipping Redis: {skipped[R_NAME]}")
        if R_NAME in systems:
            closing.callback(runner.redis.close)
            info.update(redis_versions(runner.redis))
            preload[R_NAME] = preload_redis(runner.redis, pool, n)
            log(
                f"  preloaded Redis: {n:,} records in {preload[R_NAME]:.1f} s "
                f"({n / preload[R_NAME] / 1e3:,.0f}k records/s, untimed)"
            )
        del pool
        gc.collect()
        rounds = Rounds(profile.runs, profile.warmup)
        fns = {T_NAME: runner.tidelog_run, R_NAME: runner.redis_run}
        rounds.run({section(k): {s: (lambda fn=fns[s], k=k: fn(k)) for s in systems} for k in GROUP_SIZES})
        text, results = report(rounds, profile, info, settings, now() - started)
    for system, why in skipped.items():
        text += f"\n\n{system} skipped: {why}"
    return text, {
        "machine": info,
        "profile": dataclasses.asdict(profile),
        "settings": settings,
        "preload_s_untimed": preload,
        "skipped": skipped,
        **results,
    }


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser("python -m benchmarks.groups_bench", __doc__, "400k records, 3 runs (under ~3 minutes)")
    ap.add_argument("--records", type=int, help="records preloaded and consumed per run (a multiple of 1000)")
    ap.add_argument("--partitions", type=int, default=4, choices=(4, 8), help="partitions of the topic (default 4)")
    ap.add_argument("--no-redis", action="store_true", help="measure tidelog only")
    ap.add_argument("--default-malloc", action="store_true", help="skip the glibc mallopt tuning our entry points use")
    args = ap.parse_args(argv)
    profile = cli.profile(ap, args, QUICK, DEFAULT)
    if args.records is not None:
        if args.records < BATCH or args.records % BATCH:
            ap.error(f"--records must be a positive multiple of {BATCH}")
        profile = dataclasses.replace(profile, records=args.records)
    os.makedirs(args.tmp, exist_ok=True)
    cli.unwind_on_signals()
    from tidelog.tuning import tune_malloc

    tuned = False if args.default_malloc else tune_malloc()
    try:
        text, doc = run(profile, os.path.abspath(args.tmp), args.partitions, not args.no_redis, tuned)
    except KeyboardInterrupt:
        return cli.interrupted()
    return cli.finish(text, args.json, doc)


if __name__ == "__main__":
    sys.exit(main())
