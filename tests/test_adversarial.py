"""The adversarial loop: everything a broker must survive at once, round after round, on one data
directory, with a checker for every promise.

Each seeded round runs `tidelog serve` (fsync alternating always / interval) with:
- idempotent `Producer` processes that outlive the broker (they reconnect and resend), writing
  numbered records to a topic that never deletes and to one whose retention deletes constantly,
  both rolling segments every 4 KiB;
- topics created and deleted while traffic flows, some created again at once under the same name;
- a consumer group over the kept topic whose members are SIGKILLed and replaced, or SIGSTOPped
  past their session timeout and resumed;
and ends by SIGKILLing the broker at a random moment. The next round restarts it on the same
directory: it must open without refusing anything.

The checker, after a final clean stop:
- lost: every acknowledged record is stored at its acknowledged partition and offset (on the
  retention topic: unless below the log start);
- duplicated: no record is stored twice (the producers never resend themselves);
- reordered: each producer's records of a partition are stored in the order they were sent;
- topics: every topic whose creation was acknowledged and not deleted exists with its acknowledged
  records; every topic whose deletion was acknowledged is gone, and nothing is left in the trash;
- ownership: no two tenures of a group partition delivered at the same time, every acknowledged
  record of the group's topic was delivered, each tenure in offset order (tests/helpers/ownership.py);
- `tidelog check` finds no problem.

A short run is part of the suite; a long one:
    python -m pytest tests/test_adversarial.py -m long --adversarial-rounds 200 --adversarial-seed 7
"""

from __future__ import annotations

import collections
import os
import random
import signal
import time
from dataclasses import dataclass, field

import pytest

from tidelog import Engine
from tidelog.client import Admin, Producer
from tidelog.errors import TidelogError
from tidelog.examine import check, check_directory

from .helpers import ownership
from .helpers.child import Child
from .server_process import QUICK_GROUPS, ServerProcess

pytestmark = pytest.mark.slow  # a heavier suite: left out by -m 'not slow'

KEPT, CHURNED = "kept", "churned"
GROUP = "adversary"
SESSION_MS = 1500
PRODUCERS = 2
MEMBERS = 2
SMALL = {"segment_bytes": "4096", "index_interval_bytes": "256"}
START_TIMEOUT_S = 300  # a restart opens every segment of a long run (tens of thousands of 4 KiB ones)
PRODUCER_STOP_S = 700  # a producer's last flush ends within its delivery timeout (600 s)


@dataclass
class Ack:
    topic: str
    partition: int
    offset: int
    producer: str
    seq: int


@dataclass
class Run:
    seed: int
    root: str
    acks: list[Ack] = field(default_factory=list)
    fails: int = 0
    topics_alive: dict[str, dict[int, list[tuple[int, bytes]]]] = field(default_factory=dict)
    topics_deleted: set[str] = field(default_factory=set)
    events: list[tuple[int, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    rounds_done: int = 0
    deliveries: list = field(default_factory=list)

    def note(self, what: str) -> None:
        self.events.append((time.monotonic_ns(), what))


def config_file(root: str, fsync: str) -> str:
    path = os.path.join(root, f"broker-{fsync}.toml")
    with open(path, "w") as f:
        f.write(  # the group's first assignment after 200 ms, not the default 3 s (tests/server_process.py)
            f'{QUICK_GROUPS}[engine]\nfsync = "{fsync}"\nfsync_interval_ms = 50\nretention_check_interval_ms = 200\n'
        )
    return path


def read_acks(path: str, producer: str, run: Run) -> bool:
    """Add the producer's acknowledgements to the run; True if it finished (DONE)."""
    done = False
    if not os.path.exists(path):
        return done
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not line.endswith("\n"):
                break  # a line being written when the process was killed
            if parts[0] == "ACK":
                run.acks.append(Ack(parts[1], int(parts[2]), int(parts[3]), producer, int(parts[4])))
            elif parts[0] == "FAIL":
                run.fails += 1
            elif parts[0] == "DONE":
                done = True
    return done


def churn_topics(target: str, rng: random.Random, run: Run, serial: list[int]) -> None:
    """Create and delete topics while traffic flows; some are deleted and created again at once.
    A call that fails (unknown whether it happened) takes its topic out of the checks."""
    with Admin(target, timeout_s=10) as admin:
        for _ in range(rng.randrange(1, 4)):
            alive = sorted(run.topics_alive)
            if alive and rng.random() < 0.5:
                name = rng.choice(alive)
                del run.topics_alive[name]
                try:
                    admin.delete_topic(name)
                except TidelogError:
                    continue
                run.topics_deleted.add(name)
                run.note(f"deleted topic {name}")
                if rng.random() < 0.5:
                    continue  # otherwise: created again at once, under the same name
            else:
                name = f"t{serial[0]}"
                serial[0] += 1
            partitions = rng.randrange(1, 4)
            try:
                admin.create_topic(name, partitions, **SMALL)
            except TidelogError:
                run.topics_deleted.discard(name)
                continue
            run.topics_deleted.discard(name)
            acked = run.topics_alive[name] = {p: [] for p in range(partitions)}
            run.note(f"created topic {name}")
            values = [b"%s-%d" % (name.encode(), i) for i in range(rng.randrange(1, 40))]
            try:
                with Producer(target, linger_ms=0, delivery_timeout_s=10) as producer:
                    futures = [producer.send(name, v, partition=i % partitions) for i, v in enumerate(values)]
                    producer.flush(timeout_s=10)
            except TidelogError:
                futures = []
            for future, value in zip(futures, values):
                if future.done() and future.exception() is None:
                    meta = future.result()
                    acked[meta.partition].append((meta.offset, value))


def run_adversary(root: str, seed: int, rounds: int, rate: float) -> Run:
    """rounds: broker kills; rate: records a second per producer."""
    rng = random.Random(seed)
    run = Run(seed, root)
    data_dir = os.path.join(root, "data")
    logs = os.path.join(root, "logs")
    os.makedirs(logs)
    server = ServerProcess(data_dir, "--config", config_file(root, "always"))
    server.start()
    with Admin(server.target) as admin:
        admin.create_topic(KEPT, 4, **SMALL)
        admin.create_topic(CHURNED, 2, retention_bytes="8192", **SMALL)
    producers = [
        Child(
            [
                "tests.helpers.adversary_producer",
                server.target,
                f"p{i}",
                f"{KEPT},{CHURNED}",
                os.path.join(logs, f"p{i}.acks"),
                str(seed * 100 + i),
                str(rate),
            ],
            f"p{i}",
            os.path.join(logs, f"p{i}.stderr"),
        )
        for i in range(PRODUCERS)
    ]
    members: list[Child] = []
    names = iter(f"m{i}" for i in range(10_000))

    def new_member() -> None:
        name = next(names)
        members.append(
            Child(
                [
                    "tests.helpers.group_member",
                    server.target,
                    GROUP,
                    KEPT,
                    str(SESSION_MS),
                    os.path.join(logs, f"{name}.log"),
                    name,
                ],
                name,
                os.path.join(logs, f"{name}.stderr"),
            )
        )

    for _ in range(MEMBERS):
        new_member()
    serial = [0]
    try:
        for round_no in range(rounds):
            fsync = "always" if round_no % 2 == 0 else "interval"
            if round_no:
                server.extra = ("--config", config_file(root, fsync))
                server.start(timeout_s=START_TIMEOUT_S)  # must open whatever the last SIGKILL left
            run.note(f"round {round_no}: broker up ({fsync})")
            print(f"round {round_no}: broker up ({fsync}), {len(os.listdir(logs))} log files", flush=True)
            until = time.monotonic() + rng.uniform(2.0, 5.0)
            while time.monotonic() < until:
                move = rng.random()
                live = [m for m in members if m.alive()]
                if move < 0.45:
                    churn_topics(server.target, rng, run, serial)
                elif move < 0.55 and live:
                    victim = rng.choice(live)
                    run.note(f"round {round_no}: SIGKILL of member {victim.name}")
                    victim.kill()
                    new_member()
                elif move < 0.63 and live:
                    victim = rng.choice(live)
                    run.note(f"round {round_no}: SIGSTOP of member {victim.name}")
                    victim.signal(signal.SIGSTOP)
                    time.sleep(SESSION_MS / 1000 + rng.uniform(0.2, 1.0))
                    run.note(f"round {round_no}: SIGCONT of member {victim.name}")
                    victim.signal(signal.SIGCONT)
                else:
                    time.sleep(rng.uniform(0.05, 0.4))
            run.note(f"round {round_no}: broker SIGKILL")
            server.kill()
            time.sleep(rng.uniform(0.0, 0.5))
            run.rounds_done += 1
        server.extra = ("--config", config_file(root, "always"))
        server.start(timeout_s=START_TIMEOUT_S)
        run.note("final: broker up")
        for p in producers:  # all told at once: each flushes what it holds while the others do
            p.finish()
        for p in producers:
            p.stop(timeout_s=PRODUCER_STOP_S)
        drain(run, logs, members)
    finally:
        for m in members:
            m.stop(timeout_s=30)
        for p in producers:
            p.kill() if p.alive() else None
        server.stop()
    for p in producers:
        if not read_acks(os.path.join(logs, f"{p.name}.acks"), p.name, run):
            run.violations.append(f"producer {p.name} did not finish (exit {p.proc.returncode}; see {p.name}.stderr)")
    for m in members:
        run.deliveries += ownership.read_deliveries(os.path.join(logs, f"{m.name}.log"))
        if not m.killed and m.proc.returncode != 0:
            run.violations.append(f"member {m.name} ended with code {m.proc.returncode} (see {m.name}.stderr)")
    run.violations += check_log(run, data_dir)
    acked_kept = collections.defaultdict(set)
    for a in run.acks:
        if a.topic == KEPT:
            acked_kept[a.partition].add(a.offset)
    run.violations += ownership.check(run.deliveries, dict(acked_kept), run.events)
    return run


def drain(run: Run, logs: str, members: list[Child], timeout_s: float = 120.0) -> None:
    """Wait until the group delivered every acknowledged record of the kept topic (or time out: the
    checker then reports what was never delivered)."""
    acks = Run(run.seed, run.root)
    for name in sorted(os.listdir(logs)):
        if name.endswith(".acks"):
            read_acks(os.path.join(logs, name), name[:-5], acks)
    want = collections.defaultdict(set)
    for a in acks.acks:
        if a.topic == KEPT:
            want[a.partition].add(a.offset)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = collections.defaultdict(set)
        for m in members:
            for d in ownership.read_deliveries(os.path.join(logs, f"{m.name}.log")):
                got[d.partition].add(d.offset)
        if all(offsets <= got[p] for p, offsets in want.items()):
            return
        time.sleep(0.3)


def stored(eng: Engine, topic: str) -> dict[int, list[tuple[int, bytes]]]:
    out = {}
    for p in range(eng.partitions(topic)):
        records, offset = [], eng.list_offsets(topic, p).log_start
        while True:
            r = eng.fetch(topic, p, offset, max_bytes=4 << 20)
            if not r:
                break
            records += [(rec.offset, bytes(rec.value)) for rec in r]
            offset = r.next_offset
        out[p] = records
    return out


def check_log(run: Run, data_dir: str) -> list[str]:
    violations = []
    with Engine.open(data_dir) as eng:
        topics = set(eng.list_topics())
        logs = {t: stored(eng, t) for t in (KEPT, CHURNED)}
        starts = {p: eng.list_offsets(CHURNED, p).log_start for p in range(eng.partitions(CHURNED))}
        for name, acked in run.topics_alive.items():
            if name not in topics:
                violations.append(f"topic {name}: created (acknowledged) and never deleted, but gone")
                continue
            held = stored(eng, name)
            for p, records in acked.items():
                missing = sorted(set(records) - set(held.get(p, [])))
                if missing:
                    violations.append(f"topic {name}[{p}]: {len(missing)} acknowledged records lost, e.g. {missing[0]}")
        for name in run.topics_deleted - set(run.topics_alive):
            if name in topics:
                violations.append(f"topic {name}: deleted (acknowledged), but still there")
        eng._catalog.trash.drain()
    for topic, partitions in logs.items():
        for p, records in partitions.items():
            at = {offset: value for offset, value in records}
            seen: dict[bytes, int] = {}
            last_seq: dict[str, tuple[int, int]] = {}
            for offset, value in records:
                ident = value.split(b".")[0]
                if ident in seen:
                    violations.append(
                        f"{topic}[{p}]: record {ident.decode()} stored twice, at offsets {seen[ident]} and {offset}"
                    )
                seen[ident] = offset
                producer, _, seq = ident.decode().partition(":")
                if producer in last_seq and last_seq[producer][0] > int(seq):
                    violations.append(
                        f"{topic}[{p}]: {producer}'s record {seq} at offset {offset} after its record "
                        f"{last_seq[producer][0]} at offset {last_seq[producer][1]}"
                    )
                last_seq[producer] = (int(seq), offset)
            for a in run.acks:
                if a.topic != topic or a.partition != p or (topic == CHURNED and a.offset < starts[p]):
                    continue
                value = at.get(a.offset)
                if value is None or value.split(b".")[0] != f"{a.producer}:{a.seq}".encode():
                    violations.append(
                        f"{topic}[{p}]: acknowledged record {a.producer}:{a.seq} at offset {a.offset} "
                        f"{'lost' if value is None else 'holds ' + value[:20].decode()}"
                    )
    leftovers = os.listdir(os.path.join(data_dir, ".trash")) if os.path.isdir(os.path.join(data_dir, ".trash")) else []
    if leftovers:
        violations.append(f"the trash still holds {leftovers}")
    problems = check_directory(data_dir).problems + [
        f"{r.topic}[{r.partition}]: {p}" for r in check(data_dir) for p in r.problems
    ]
    violations += [f"tidelog check: {p}" for p in problems]
    return violations


def summarize(run: Run) -> str:
    moves = collections.Counter(what.split(": ", 1)[-1].split(" of ")[0].split(" topic")[0] for _, what in run.events)
    return (
        f"seed {run.seed}, {run.rounds_done} broker kills: {len(run.acks)} records acknowledged "
        f"({run.fails} failed), {len(run.deliveries)} group deliveries, {len(run.topics_alive)} topics "
        f"alive and {len(run.topics_deleted)} deleted at the end; moves {dict(moves)}; "
        f"{len(run.violations)} violation(s); logs in "
        f"{run.root}/logs" + "".join(f"\n  - {v}" for v in run.violations[:40])
    )


def test_adversarial_short_run(tmp_path):
    seed = int(os.environ.get("TIDELOG_ADVERSARIAL_SEED", random.randrange(1 << 20)))
    run = run_adversary(str(tmp_path), seed, rounds=2, rate=750)  # (many rounds, 1500/s: -m long)
    print(summarize(run))
    assert run.acks and run.deliveries
    assert not run.violations, summarize(run)


@pytest.mark.long
@pytest.mark.slow
@pytest.mark.timeout(12 * 3600)
def test_adversarial_long_run(tmp_path, request):
    rounds = request.config.getoption("--adversarial-rounds")
    seed = request.config.getoption("--adversarial-seed")
    run = run_adversary(str(tmp_path), seed, rounds, rate=request.config.getoption("--adversarial-rate"))
    print(summarize(run))
    assert not run.violations, summarize(run)
