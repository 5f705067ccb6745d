"""Consumer-group benchmark over gRPC: a tidelog group of 1, 2 and 4 members vs Redis Streams groups.

    python -m benchmarks.groups_bench [--quick] [--json PATH] [--runs N] [--records N] [--partitions 4|8]
                                      [--tmp DIR] [--no-redis] [--default-malloc]

The script starts its own broker (`tidelog serve --fsync never` on a free port of 127.0.0.1) and its own
`redis-server` (no persistence), preloads each once with the same N records of exactly 1 KiB (a tidelog topic
of 4 partitions, or 8 with --partitions 8; a Redis stream), then, for each group size k in (1, 2, 4), lets k member processes of a fresh
group consume everything from the beginning, committing after every poll:

- tidelog: `Consumer(target, group_id=g, topics=[topic], auto_commit=False)`, then `poll()` + `commit()`
  until every assigned partition reached its end offset;
- Redis: `XREADGROUP GROUP g c COUNT 1000 STREAMS s >`, pipelined with the `XACK` of the previous batch's
  ids, until a read comes back empty.

Members are long-lived worker processes (one per member, so the GIL does not cap the client side). Timing
excludes process start and group join: the clock starts when every member is ready (tidelog: the group is
"stable" with k members, per Admin.describe_group, and every member has heartbeated since) and stops when
the last member has committed (acked) its last record; every member stamps that moment with the system-wide
CLOCK_MONOTONIC. Rounds interleave the systems (the order rotates each round); the first round is a warm-up
and is discarded; each figure is the median of >= 3 runs with min and max; ratios are tidelog / Redis in the
same round. Every run is checked: records consumed == N and the committed offsets (Redis: pending entries)
say the whole log was consumed. This is a measuring script: it asserts nothing about speed.

Next to the rates it reports, per group size (medians over the runs): how the records were spread over the
members, how many polls (reads) the run took, when the last member got its first record (tidelog opens its
partition readers in the first poll, inside the timed window), and the CPU used during the timed window by
the server process, by the members (sum) and by the whole machine (which includes anything else running).

Units: MB/s is 10^6 bytes of record payload per second; "1 KiB" records carry exactly 1024 payload bytes.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field

MiB = 1 << 20
RECORD_BYTES = 1024
BATCH = 1000  # records per preload batch; Redis XREADGROUP COUNT
TOPIC = "groups-bench"
STREAM = "groups-bench"
FIELD = b"v"
GROUP_SIZES = (1, 2, 4)
SEED = 20240611
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
    t_end = now()
    return {"records": n, "bytes": nbytes, "t_end": t_end, "polls": polls, "capped": capped,
            "cpu_s": time.process_time() - cpu0, "t_first": t_first, "partitions": sorted(p for _, p in owned)}


def _xread_entries(reply) -> list:
    """Entries of an XREADGROUP reply on one stream, RESP2 ([[name, entries]]) or RESP3 ({name: entries})."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values()))[0] if reply else []
    return reply[0][1]


def _redis_consume(r, group: str, name: str, cap_s: float, max_reads: int) -> dict:
    """XREADGROUP > COUNT 1000, pipelined with the XACK of the previous batch, until a read is empty."""
    n = nbytes = reads = 0
    cpu0 = time.process_time()
    deadline = now() + cap_s
    capped = False
    pending: list = []
    t_first = None
    while True:
        pipe = r.pipeline(transaction=False)
        if pending:
            pipe.xack(STREAM, group, *pending)
        pipe.xreadgroup(group, name, {STREAM: ">"}, count=BATCH)
        reply = pipe.execute()[-1]
        reads += 1
        entries = _xread_entries(reply)
        if not entries:
            break  # and the previous batch was acked by this pipeline
        if t_first is None:
            t_first = now()
        pending = []
        for entry_id, fields in entries:
            pending.append(entry_id)
            nbytes += len(fields[FIELD])
        n += len(entries)
        if now() > deadline or reads >= max_reads:
            r.xack(STREAM, group, *pending)
            capped = True
            break
    t_end = now()
    return {"records": n, "bytes": nbytes, "t_end": t_end, "polls": reads, "capped": capped,
            "cpu_s": time.process_time() - cpu0, "t_first": t_first}


def _worker_main(conn, index: int, tuned: bool) -> None:
    """One member process: commands from the parent over a pipe, one at a time."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    if tuned:
        from tidelog.tuning import tune_malloc
        tune_malloc()
    from tidelog.client import Consumer

    member = r = None
    conn.send(("ok", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        op, args = msg[0], msg[1] if len(msg) > 1 else {}
        try:
            if op == "exit":
                conn.send(("ok", None))
                return
            if op == "t_join":
                member = Consumer(args["target"], group_id=args["group"], topics=[TOPIC], auto_commit=False,
                                  client_id=f"bench-{index}")
                out = member.member_id
            elif op == "t_heartbeat":
                member.heartbeat_now()
                out = member.generation
            elif op == "t_run":
                out = _tidelog_consume(member, args["ends"], args["cap_s"], args["max_polls"])
            elif op == "t_close":
                if member is not None:
                    member.close()
                member, out = None, None
            elif op == "r_connect":
                import redis
                r = redis.Redis(host="127.0.0.1", port=args["port"], protocol=2)
                r.ping()  # the connection is open before the clock starts
                out = None
            elif op == "r_run":
                out = _redis_consume(r, args["group"], f"c{index}", args["cap_s"], args["max_reads"])
            elif op == "r_close":
                if r is not None:
                    r.close()
                r, out = None, None
            else:
                raise ValueError(f"unknown command {op!r}")
            conn.send(("ok", out))
        except BaseException as exc:  # reported to the parent, which stops the benchmark
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


class Members:
    """A fixed set of member processes (spawned once; reused by every run of both systems)."""

    def __init__(self, n: int, tuned: bool) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork after grpc threads exist in the parent
        self.procs, self.conns = [], []
        for i in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(child, i, tuned), name=f"groups-bench-member-{i}",
                            daemon=True)
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

    def send(self, which, op: str, args=None) -> None:
        for i in which:
            self.conns[i].send((op, args if not isinstance(args, list) else args[i]))

    def call(self, which, op: str, args=None, timeout_s: float = 30.0) -> list:
        which = list(which)
        self.send(which, op, args)
        return self._recv(which, timeout_s)

    def close(self) -> None:
        for i, (p, c) in enumerate(zip(self.procs, self.conns)):
            try:
                if p.is_alive():
                    c.send(("exit", None))
            except (OSError, BrokenPipeError):
                pass
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
                p.join(timeout=5)
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
                p.join(timeout=5)


# -- servers -------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_busy_s() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, elapsed CPU seconds of all CPUs) from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / hz, sum(ticks[:8]) / hz


def tidelog_cli() -> list[str]:
    exe = shutil.which("tidelog")
    return [exe] if exe else [sys.executable, "-m", "tidelog"]


class Service:
    """A server subprocess in its own session (the terminal's Ctrl-C does not reach it); stopped by PID."""

    def __init__(self, name: str, argv: list[str], log_path: str) -> None:
        self.name, self.argv, self.log_path = name, argv, log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log_tail(self, n: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads) the server has used so far; 0 where /proc is missing."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return 0.0

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                print(f"{self.name} (pid {self.proc.pid}) ignored SIGTERM for {timeout_s:.0f} s; SIGKILL",
                      file=sys.stderr)
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


def start_tidelog(data_dir: str, log_dir: str) -> tuple[Service, str]:
    port = free_port()
    svc = Service("tidelog serve", tidelog_cli() + ["serve", "--data-dir", data_dir, "--host", "127.0.0.1",
                                                    "--port", str(port), "--fsync", "never",
                                                    "--log-level", "warning", "--metrics-port", "0"],
                  os.path.join(log_dir, "tidelog-serve.log"))
    target = f"127.0.0.1:{port}"
    deadline = now() + 60
    for _ in range(600):
        svc.check_alive()
        rc = subprocess.run(tidelog_cli() + ["health", "--server", target, "--timeout-ms", "2000"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            timeout=30).returncode
        if rc == 0:
            return svc, target
        if now() > deadline:
            break
        time.sleep(0.1)
    svc.stop()
    raise RuntimeError(f"the tidelog broker on {target} did not become healthy within 60 s:\n{svc.log_tail()}")


def ensure_redis() -> str | None:
    """None when redis-server and redis-py are usable (installing them if needed), else why not."""

    def missing() -> list[str]:
        out = [] if shutil.which("redis-server") else ["redis-server"]
        try:
            import redis  # noqa: F401
        except ImportError:
            out.append("the redis module")
        return out

    if not missing():
        return None
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "setup_peers.sh")
    if os.path.exists(script):
        cmds = [["bash", script]]
    else:
        cmds = [["apt-get", "install", "-y", "redis-server"], [sys.executable, "-m", "pip", "install", "redis", "hiredis"]]
    print(f"missing {', '.join(missing())}: running {'; '.join(' '.join(c) for c in cmds)}", file=sys.stderr)
    for cmd in cmds:
        try:
            env = dict(os.environ, PYTHON=sys.executable)
            rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, timeout=900, env=env).returncode
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(cmd)} failed: {exc}"
        if rc != 0:
            return f"{' '.join(cmd)} exited with {rc}"
    import importlib
    importlib.invalidate_caches()
    still = missing()
    return f"still missing after installing: {', '.join(still)}" if still else None


def start_redis(work_dir: str, log_dir: str):
    import redis

    port = free_port()
    svc = Service("redis-server", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", work_dir, "--daemonize", "no"],
                  os.path.join(log_dir, "redis-server.log"))
    r = redis.Redis(host="127.0.0.1", port=port, protocol=2)
    deadline = now() + 30
    for _ in range(600):
        svc.check_alive()
        try:
            r.ping()
            return svc, port, r
        except redis.ConnectionError:
            if now() > deadline:
                break
            time.sleep(0.05)
    svc.stop()
    raise RuntimeError(f"redis-server on port {port} did not answer PING within 30 s:\n{svc.log_tail()}")


# -- preload -------------------------------------------------------------------------------------------
def preload_tidelog(target: str, pool: list[list[bytes]], n: int, partitions: int) -> tuple[dict, float]:
    """n records, partition i % partitions, through the client Producer (1 MiB batches); returns the end
    offsets {(topic, partition): end} and the seconds it took."""
    from tidelog.client import Admin, Producer

    t0 = now()
    with Admin(target) as admin:
        admin.create_topic(TOPIC, partitions)
    npool = len(pool)
    with Producer(target, linger_ms=5, batch_bytes=MiB) as producer:
        send = producer.send
        step = BATCH * partitions
        for start in range(0, n, step):
            for i in range(start, min(start + step, n)):
                send(TOPIC, pool[(i // BATCH) % npool][i % BATCH], partition=i % partitions)
            # Flushing every 1000 records per partition keeps each batch at 1000 records: send() does not
            # start a new batch when the open one is full, so a caller faster than the network thread
            # could otherwise grow a batch past the broker's 8 MiB max_batch_bytes.
            producer.flush(timeout_s=120)
    with Admin(target) as admin:
        ends = {(TOPIC, p): admin.list_offsets(TOPIC, p).high_watermark for p in range(partitions)}
    if sum(ends.values()) != n:
        raise RuntimeError(f"tidelog preload: the topic holds {sum(ends.values())} records, expected {n}")
    return ends, now() - t0


def preload_redis(r, pool: list[list[bytes]], n: int) -> float:
    t0 = now()
    r.delete(STREAM)
    npool = len(pool)
    for b in range(n // BATCH):
        pipe = r.pipeline(transaction=False)
        for v in pool[b % npool]:
            pipe.xadd(STREAM, {FIELD: v})
        pipe.execute()
    if r.xlen(STREAM) != n:
        raise RuntimeError(f"Redis preload: the stream holds {r.xlen(STREAM)} entries, expected {n}")
    return now() - t0


# -- one run of each system ------------------------------------------------------------------------------
@dataclass
class Sample:
    records: int
    nbytes: int
    seconds: float
    capped: bool = False
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

    @property
    def rps(self) -> float:
        return self.records / self.seconds

    @property
    def mbps(self) -> float:
        return self.nbytes / self.seconds / 1e6


def _finish(results: list[dict], t0: float, setup_s: float, broker_cpu_s: float) -> Sample:
    for m in results:  # seconds from the start signal to the member's first record
        m["first_record_s"] = None if m["t_first"] is None else m["t_first"] - t0
    return Sample(sum(m["records"] for m in results), sum(m["bytes"] for m in results),
                  max(m["t_end"] for m in results) - t0, any(m["capped"] for m in results), setup_s,
                  [{k: v for k, v in m.items() if k not in ("t_end", "t_first", "bytes")} for m in results], broker_cpu_s)


class Runner:
    def __init__(self, profile: Profile, members: Members, n: int) -> None:
        self.p, self.members, self.n = profile, members, n
        self.target = self.admin = self.ends = self.tidelog_svc = None
        self.redis = self.redis_port = self.redis_svc = None
        self.max_polls = 20 * (n // BATCH) + 10_000

    def tidelog_run(self, k: int) -> Sample:
        group = f"bench-{k}-{uuid.uuid4().hex[:8]}"
        which = range(k)
        t_setup = now()
        self.members.call(which, "t_join", {"target": self.target, "group": group})
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
                stable = d["state"] == "stable" and len(d["members"]) == k and all(m["assignment"] for m in d["members"])
                if stable and key == previous:
                    break
                previous = key if stable else None
                if now() > deadline:
                    raise RuntimeError(f"group {group} not stable with {k} members after "
                                       f"{self.p.join_timeout_s:.0f} s: {d}")
                time.sleep(0.01)
            setup_s = now() - t_setup
            args = {"ends": self.ends, "cap_s": self.p.cap_s, "max_polls": self.max_polls}
            cpu0, busy0 = self.tidelog_svc.cpu_s(), machine_busy_s()[0]
            t0 = now()
            results = self.members.call(which, "t_run", args, timeout_s=self.p.cap_s + 60)
            cpu, busy = self.tidelog_svc.cpu_s() - cpu0, machine_busy_s()[0] - busy0
        finally:
            self.members.call(which, "t_close")
        sample = _finish(results, t0, setup_s, cpu)
        sample.machine_busy_s = busy
        committed = self.admin.committed_offsets(group)
        if not sample.capped:
            if sample.records != self.n:
                raise RuntimeError(f"tidelog group of {k}: consumed {sample.records} records, expected {self.n}")
            if committed != self.ends:
                raise RuntimeError(f"tidelog group of {k}: committed {committed}, expected {self.ends}")
        self.admin.delete_group(group)
        return sample

    def redis_run(self, k: int) -> Sample:
        group = f"bench-{k}-{uuid.uuid4().hex[:8]}"
        which = range(k)
        t_setup = now()
        self.redis.xgroup_create(STREAM, group, id="0")
        try:
            self.members.call(which, "r_connect", {"port": self.redis_port})
            setup_s = now() - t_setup
            args = {"group": group, "cap_s": self.p.cap_s, "max_reads": self.max_polls}
            cpu0, busy0 = self.redis_svc.cpu_s(), machine_busy_s()[0]
            t0 = now()
            results = self.members.call(which, "r_run", args, timeout_s=self.p.cap_s + 60)
            cpu, busy = self.redis_svc.cpu_s() - cpu0, machine_busy_s()[0] - busy0
            self.members.call(which, "r_close")
            sample = _finish(results, t0, setup_s, cpu)
            sample.machine_busy_s = busy
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


# -- rounds and report ---------------------------------------------------------------------------------
class Bench:
    def __init__(self, profile: Profile, runner: Runner, systems: list[str]) -> None:
        self.p, self.runner, self.systems = profile, runner, systems
        self.samples: dict[tuple[int, str], list[Sample]] = {(k, s): [] for k in GROUP_SIZES for s in systems}
        self.warmups: dict[tuple[int, str], list[Sample]] = {(k, s): [] for k in GROUP_SIZES for s in systems}

    def run(self) -> None:
        fns = {T_NAME: self.runner.tidelog_run, R_NAME: self.runner.redis_run}
        total = self.p.warmup + self.p.runs
        for r in range(total):
            for k in GROUP_SIZES:
                j = r % len(self.systems)
                for system in self.systems[j:] + self.systems[:j]:
                    gc.collect()
                    sample = fns[system](k)
                    (self.warmups if r < self.p.warmup else self.samples)[(k, system)].append(sample)
                    print(f"  round {r + 1}/{total}{' (warm-up)' if r < self.p.warmup else ''}: {system}, "
                          f"group of {k}: {sample.rps / 1e3:,.0f}k records/s, {sample.mbps:,.0f} MB/s "
                          f"({sample.seconds:.2f} s{', CAPPED' if sample.capped else ''}; "
                          f"setup {sample.setup_s:.2f} s untimed)", file=sys.stderr, flush=True)


def series_summary(k: int, system: str, metric: str, samples: list[Sample], warmups: list[Sample]) -> dict:
    get = (lambda s: s.rps) if metric == "records/s" else (lambda s: s.mbps)
    vals = [get(s) for s in samples]
    return {"section": f"group of {k}", "group_size": k, "system": system, "metric": metric,
            "median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals,
            "warmup": [get(s) for s in warmups], "capped_runs": sum(s.capped for s in samples),
            "records_per_run": [s.records for s in samples], "payload_bytes_per_run": [s.nbytes for s in samples],
            "seconds": [s.seconds for s in samples], "setup_seconds_untimed": [s.setup_s for s in samples],
            "server_cpu_cores": [s.broker_cores for s in samples], "member_cpu_cores": [s.member_cores for s in samples],
            "machine_busy_cores": [s.machine_cores for s in samples],
            "members": [s.members for s in samples]}


def paired(a: list[Sample], b: list[Sample]) -> dict:
    va, vb = [s.rps for s in a], [s.rps for s in b]
    per_round = [x / y for x, y in zip(va, vb)]
    return {"ratio": statistics.median(va) / statistics.median(vb), "paired_min": min(per_round),
            "paired_max": max(per_round), "paired": per_round}


def fmt_ratio(r: dict) -> str:
    return f"{r['ratio']:.2f}x ({r['paired_min']:.2f}-{r['paired_max']:.2f})"


def report(bench: Bench, info: dict, settings: dict, elapsed: float) -> tuple[str, dict]:
    p = bench.p
    out = [
        f"# tidelog consumer-group benchmark ({p.name})",
        "",
        f"- machine: nproc={info['nproc']}, {info['cpu_model']}, {info['memory_gib']} GiB RAM, Linux "
        f"{info['kernel']}; Python {info['python']}, grpcio {info['grpcio']}, tidelog {info['tidelog']}"
        + (f", Redis {info['redis_server']}, redis-py {info['redis_py']}"
           f"{' + hiredis ' + info['hiredis'] if info.get('hiredis') else ''}" if info.get("redis_server") else ""),
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
    results: dict = {"series": [], "ratios": [], "scaling": []}
    have_redis = R_NAME in bench.systems
    head = ["group", "system", "records/s median", "min - max", "MB/s median", "min - max", "tidelog / Redis"]
    out += ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for k in GROUP_SIZES:
        for system in bench.systems:
            samples = bench.samples[(k, system)]
            rps = [s.rps for s in samples]
            mbps = [s.mbps for s in samples]
            cell = ""
            if system == T_NAME and have_redis:
                r = paired(samples, bench.samples[(k, R_NAME)])
                results["ratios"].append({"section": f"group of {k}", "group_size": k, "numerator": T_NAME,
                                          "denominator": R_NAME, "metric": "records/s", **r})
                cell = fmt_ratio(r)
            capped = " (capped)" if any(s.capped for s in samples) else ""
            out.append(f"| {k} member{'s' if k > 1 else ''} | {system}{capped} | "
                       f"{statistics.median(rps) / 1e3:,.0f} k | {min(rps) / 1e3:,.0f} - {max(rps) / 1e3:,.0f} k | "
                       f"{statistics.median(mbps):,.0f} | {min(mbps):,.0f} - {max(mbps):,.0f} | {cell} |")
            for metric in ("records/s", "MB/s"):
                results["series"].append(series_summary(k, system, metric, samples, bench.warmups[(k, system)]))
    out.append("")
    out += ["| scaling (records/s, ratio of medians) | " + " | ".join(bench.systems) + " |",
            "|---|" + "---:|" * len(bench.systems)]
    for k in GROUP_SIZES[1:]:
        row = []
        for system in bench.systems:
            r = paired(bench.samples[(k, system)], bench.samples[(1, system)])
            results["scaling"].append({"system": system, "numerator": f"group of {k}", "denominator": "group of 1", **r})
            row.append(fmt_ratio(r))
        out.append(f"| group of {k} / group of 1 | " + " | ".join(row) + " |")
    out.append("")
    # How the work was spread and how often members committed (medians over the runs).
    out += ["| group | system | records per member (median run) | polls+commits (reads+acks) per run | "
            "first record after | CPU cores: server | members (sum) | whole machine |",
            "|---|---|---|---:|---:|---:|---:|---:|"]
    for k in GROUP_SIZES:
        for system in bench.systems:
            samples = bench.samples[(k, system)]
            mid = sorted(samples, key=lambda s: s.rps)[len(samples) // 2]
            shares = ", ".join(f"{m['records']:,}" for m in mid.members)
            polls = statistics.median(sum(m["polls"] for m in s.members) for s in samples)
            broker = statistics.median(s.broker_cores for s in samples)
            clients = statistics.median(s.member_cores for s in samples)
            first = statistics.median(max(m["first_record_s"] or 0 for m in s.members) for s in samples)
            machine = statistics.median(s.machine_cores for s in samples)
            out.append(f"| {k} | {system} | {shares} | {polls:,.0f} | {first * 1e3:.0f} ms | {broker:.2f} | "
                       f"{clients:.2f} | {machine:.2f} |")
    out += ["", f"Total benchmark time: {elapsed:.0f} s"]
    results["elapsed_s"] = elapsed
    return "\n".join(out), results


def machine_info(tmp: str, tuned: bool) -> dict:
    import grpc
    import tidelog

    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1)
    except (ValueError, OSError):
        mem_gib = None
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gib": mem_gib, "python": sys.version.split()[0],
            "implementation": platform.python_implementation(), "kernel": platform.release(),
            "grpcio": grpc.__version__, "tidelog": tidelog.__version__, "tmp_dir": tmp,
            "malloc": ("glibc mallopt M_MMAP_THRESHOLD=16 MiB, M_TRIM_THRESHOLD=256 MiB" if tuned else "default")}


def redis_info(info: dict) -> None:
    try:
        import redis
        info["redis_py"] = redis.__version__
        line = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10).stdout
        info["redis_server"] = next((w.split("=", 1)[1] for w in line.split() if w.startswith("v=")), line.strip())
    except (ImportError, OSError, subprocess.SubprocessError):
        pass
    try:
        import hiredis
        info["hiredis"] = hiredis.__version__
    except ImportError:
        info["hiredis"] = None


# -- main ----------------------------------------------------------------------------------------------
def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.groups_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="400k records, 3 runs (under ~3 minutes)")
    ap.add_argument("--json", metavar="PATH", help="also write every figure (all runs) as JSON here")
    ap.add_argument("--runs", type=int, help="timed runs per figure (>= 3; default 5, or 3 with --quick)")
    ap.add_argument("--records", type=int, help="records preloaded and consumed per run (a multiple of 1000)")
    ap.add_argument("--partitions", type=int, default=4, choices=(4, 8), help="partitions of the topic (default 4)")
    ap.add_argument("--tmp", default="/tmp", help="parent directory of the temporary data (default /tmp)")
    ap.add_argument("--no-redis", action="store_true", help="measure tidelog only")
    ap.add_argument("--default-malloc", action="store_true",
                    help="skip the glibc mallopt tuning PERF.md prescribes for entry points")
    args = ap.parse_args(argv)
    profile = QUICK if args.quick else DEFAULT
    if args.runs is not None:
        if args.runs < 3:
            ap.error("--runs must be at least 3")
        profile = Profile(**{**asdict(profile), "runs": args.runs})
    if args.records is not None:
        if args.records < BATCH or args.records % BATCH:
            ap.error(f"--records must be a positive multiple of {BATCH}")
        profile = Profile(**{**asdict(profile), "records": args.records})
    n = profile.records
    os.makedirs(args.tmp, exist_ok=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # stop the servers and members on SIGTERM too

    from tidelog.tuning import tune_malloc
    tuned = False if args.default_malloc else tune_malloc()
    info = machine_info(os.path.abspath(args.tmp), tuned)
    print(f"# machine: nproc={info['nproc']}, CPU: {info['cpu_model']}, Python {info['python']}, "
          f"malloc: {info['malloc']}", flush=True)

    skipped: dict[str, str] = {}
    systems = [T_NAME]
    if args.no_redis:
        skipped[R_NAME] = "--no-redis"
    else:
        why = ensure_redis()
        if why:
            skipped[R_NAME] = why
            print(f"skipping Redis: {why}", flush=True)
        else:
            systems.append(R_NAME)
            redis_info(info)

    started = now()
    work = tempfile.mkdtemp(prefix="tidelog-groups-bench-", dir=os.path.abspath(args.tmp))
    tidelog_svc = redis_svc = members = admin = rconn = None
    settings = {"records": n, "record_bytes": RECORD_BYTES, "partitions": args.partitions,
                "group_sizes": list(GROUP_SIZES), "redis_count": BATCH, "poll_timeout_s": POLL_TIMEOUT_S,
                "tidelog_server": "tidelog serve --fsync never", "tidelog_producer": "batch_bytes=1 MiB, linger_ms=5",
                "redis_server": "redis-server --save '' --appendonly no"}
    preload: dict[str, float] = {}
    try:
        print("building payloads, starting member processes and servers...", file=sys.stderr, flush=True)
        from benchmarks.embedded import make_pool
        pool = make_pool(profile.pool_batches, RECORD_BYTES, SEED)
        members = Members(max(GROUP_SIZES), tuned)
        runner = Runner(profile, members, n)

        os.makedirs(os.path.join(work, "tidelog"))
        tidelog_svc, runner.target = start_tidelog(os.path.join(work, "tidelog"), work)
        runner.tidelog_svc = tidelog_svc
        from tidelog.client import Admin
        admin = runner.admin = Admin(runner.target)
        runner.ends, preload[T_NAME] = preload_tidelog(runner.target, pool, n, args.partitions)
        print(f"  preloaded tidelog: {n:,} records in {preload[T_NAME]:.1f} s "
              f"({n / preload[T_NAME] / 1e3:,.0f}k records/s, untimed)", file=sys.stderr, flush=True)
        if R_NAME in systems:
            os.makedirs(os.path.join(work, "redis"))
            redis_svc, runner.redis_port, rconn = start_redis(os.path.join(work, "redis"), work)
            runner.redis, runner.redis_svc = rconn, redis_svc
            preload[R_NAME] = preload_redis(rconn, pool, n)
            print(f"  preloaded Redis: {n:,} records in {preload[R_NAME]:.1f} s "
                  f"({n / preload[R_NAME] / 1e3:,.0f}k records/s, untimed)", file=sys.stderr, flush=True)
        del pool
        gc.collect()

        bench = Bench(profile, runner, systems)
        bench.run()
        text, results = report(bench, info, settings, now() - started)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the member processes and servers", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for closer in (lambda: admin and admin.close(), lambda: rconn and rconn.close(),
                       lambda: members and members.close(), lambda: tidelog_svc and tidelog_svc.stop(),
                       lambda: redis_svc and redis_svc.stop()):
            try:
                closer()
            except Exception as exc:  # keep stopping the rest
                print(f"cleanup: {type(exc).__name__}: {exc}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(text)
    for system, why in skipped.items():
        print(f"\n{system} skipped: {why}")
    if args.json:
        doc = {"machine": info, "profile": asdict(profile), "settings": settings, "preload_s_untimed": preload,
               "skipped": skipped, **results}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
