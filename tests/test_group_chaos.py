"""Group chaos: members in processes, broker and member SIGKILLs, members paused past their session.

The adversary for the group's ownership guarantee. A seeded schedule SIGKILLs and restarts the broker,
SIGKILLs members (and starts replacements), and SIGSTOPs a member for longer than its session
timeout before SIGCONTing it, while records are produced. Members alternate between consuming with
poll() and record by record (the iterator, which revokes between records). Every member logs each
delivery with its tenure (one uninterrupted ownership of a partition: a new one at every assignment). The checker:

- no double ownership: for each partition, the spans [first delivery, last delivery] of different
  tenures never overlap;
- at least once: every acknowledged record is delivered by some tenure;
- order: each tenure delivers a contiguous run of offsets, in order (nothing skipped);
- no delivery outside a tenure (a record of a partition the member was never assigned).

The short run is part of the suite; the long one is marked slow:
    python -m pytest tests/test_group_chaos.py -m long --group-chaos-rounds 60 --group-chaos-seed 7
"""

from __future__ import annotations

import collections
import os
import random
import signal
import time
from dataclasses import dataclass, field

import pytest

from tidelog.client import Admin, Producer
from tidelog.errors import TidelogError, UnknownGroupError

from .helpers import ownership
from .helpers.child import Child
from .helpers.ownership import Delivery, read_deliveries
from .server_process import ServerProcess, config_file

pytestmark = pytest.mark.slow  # a heavier suite: left out by -m 'not slow'

TOPIC = "chaos"
GROUP = "chaos-group"
PARTITIONS = 4
MEMBERS = 3
SESSION_MS = 1500
ACTIONS = ("kill_broker", "pause_member", "kill_member", "calm")
DRAIN_S = 90.0  # how long the final catch-up may take before the run counts as failed


class MemberProcess(Child):
    def __init__(self, target: str, log_path: str, name: str, mode: str) -> None:
        super().__init__(
            ["tests.helpers.group_member", target, GROUP, TOPIC, str(SESSION_MS), log_path, name, mode],
            name,
            log_path + ".stderr",
        )


@dataclass
class Report:
    seed: int
    deliveries: list[Delivery] = field(default_factory=list)
    acked: dict[int, set[int]] = field(default_factory=dict)
    events: list[tuple[int, str]] = field(default_factory=list)  # (monotonic ns, what the adversary did)
    incidents: list[str] = field(default_factory=list)
    log_dir: str = ""  # the members' delivery logs and stderr


def check(report: Report) -> list[str]:
    """Every violation of the group's guarantees in the run (tests/helpers/ownership.py)."""
    return ownership.check(report.deliveries, report.acked, report.events)


def produce(target: str, rng: random.Random, acked: dict[int, set[int]], count: int) -> None:
    with Producer(target, linger_ms=2) as producer:
        futures = [
            producer.send(TOPIC, b"v%d" % rng.randrange(1 << 30), key=b"k%d" % rng.randrange(1 << 30))
            for _ in range(count)
        ]
        producer.flush()
        for f in futures:
            meta = f.result(timeout=30)
            acked.setdefault(meta.partition, set()).add(meta.offset)


def wait_for_group(target: str, members: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with Admin(target, timeout_s=5) as admin:
        while time.monotonic() < deadline:
            try:
                info = admin.describe_group(GROUP)
                if (
                    info["state"] == "stable"
                    and len(info["members"]) == members
                    and sum(len(m["assignment"]) for m in info["members"]) == PARTITIONS
                ):
                    return
            except (UnknownGroupError, TidelogError):
                pass
            time.sleep(0.1)
    raise AssertionError(f"the group did not become stable with {members} members")


def run_chaos(base_dir: str, seed: int, rounds: int) -> Report:
    rng = random.Random(seed)
    log_dir = os.path.join(base_dir, "deliveries")
    report = Report(seed, log_dir=log_dir)
    # a new group waits 200 ms for its first assignment, not 3 s: members rebalance as they come
    server = ServerProcess(os.path.join(base_dir, "data"), "--config", config_file(base_dir)).start()
    os.makedirs(log_dir)
    members: list[MemberProcess] = []
    names = iter(f"m{i}" for i in range(1000))

    def new_member() -> MemberProcess:
        name = next(names)
        mode = ("poll", "iterate")[len(members) % 2]  # both ways of consuming: poll(), and record by record
        m = MemberProcess(server.target, os.path.join(log_dir, f"{name}.log"), name, mode)
        members.append(m)
        return m

    def note(what: str) -> None:
        report.events.append((time.monotonic_ns(), what))

    # Each action at least once, then seeded choices; a short run still meets every kind of fault.
    schedule = list(ACTIONS) + [rng.choice(ACTIONS) for _ in range(max(rounds - len(ACTIONS), 0))]
    rng.shuffle(schedule)
    schedule = schedule[:rounds]
    try:
        with Admin(server.target) as admin:
            admin.create_topic(TOPIC, PARTITIONS)
        for _ in range(MEMBERS):
            new_member()
        wait_for_group(server.target, MEMBERS)
        for round_no, action in enumerate(schedule):
            produce(server.target, rng, report.acked, rng.randint(20, 150))
            live = [m for m in members if m.alive()]
            if action == "kill_broker":
                note(f"round {round_no}: broker SIGKILL and restart")
                server.kill()
                time.sleep(rng.uniform(0.0, 1.0))
                server.start()
                # Fresh records at once: the old owners' readers reconnect while members rejoin.
                produce(server.target, rng, report.acked, rng.randint(20, 150))
            elif action == "kill_member":
                victim = rng.choice(live)
                note(f"round {round_no}: SIGKILL of member {victim.name}")
                victim.kill()
                new_member()
            elif action == "pause_member":
                victim = rng.choice(live)
                note(f"round {round_no}: SIGSTOP of member {victim.name}")
                victim.signal(signal.SIGSTOP)
                produce(server.target, rng, report.acked, rng.randint(20, 150))  # work for the others meanwhile
                time.sleep(SESSION_MS / 1000 + rng.uniform(0.3, 1.5))  # past its session timeout
                note(f"round {round_no}: SIGCONT of member {victim.name}")
                victim.signal(signal.SIGCONT)
            else:
                note(f"round {round_no}: calm")
            time.sleep(rng.uniform(0.2, 1.2))  # let the group consume (and misbehave) for a while
        produce(server.target, rng, report.acked, 50)
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline:
            delivered = collections.defaultdict(set)
            for m in members:
                for d in read_deliveries(os.path.join(log_dir, f"{m.name}.log")):
                    delivered[d.partition].add(d.offset)
            if all(offsets <= delivered[p] for p, offsets in report.acked.items()):
                break
            time.sleep(0.2)
    finally:
        for m in members:
            m.stop() if m.alive() else None
        server.stop()
    for m in members:
        report.deliveries += read_deliveries(os.path.join(log_dir, f"{m.name}.log"))
    report.incidents = check(report)
    report.incidents += [
        f"member {m.name} ended with code {m.proc.returncode} without being killed by the test "
        f"(a crash, or it hung on close; see {m.name}.log.stderr)"
        for m in members
        if not m.killed and m.proc.returncode != 0
    ]
    return report


def summarize(report: Report, rounds: int) -> str:
    kinds = collections.Counter(
        "broker restart"
        if "broker" in i
        else "pause"
        if "SIGSTOP" in i or "SIGCONT" in i
        else "member kill"
        if "SIGKILL of member" in i
        else "other"
        for i in report.incidents
    )
    return (
        f"seed {report.seed}, {rounds} rounds: {len(report.deliveries)} deliveries of "
        f"{sum(len(v) for v in report.acked.values())} records, {len(report.incidents)} incident(s) "
        f"{dict(kinds)}; logs in {report.log_dir}" + "".join(f"\n  - {i}" for i in report.incidents[:40])
    )


def test_group_chaos_short_run_keeps_one_owner_per_partition_and_delivers_everything(tmp_path):
    seed = int(os.environ.get("TIDELOG_GROUP_CHAOS_SEED", "1"))
    report = run_chaos(str(tmp_path), seed, rounds=6)
    print(summarize(report, 6))
    assert not report.incidents, summarize(report, 6)


@pytest.mark.long
@pytest.mark.slow
@pytest.mark.timeout(6 * 3600)  # the suite's 300 s would cut it; the run bounds itself (~2 s a round + the drain)
def test_group_chaos_long_run(tmp_path, request):
    rounds = request.config.getoption("--group-chaos-rounds")
    seed = request.config.getoption("--group-chaos-seed")
    report = run_chaos(str(tmp_path), seed, rounds)
    print(summarize(report, rounds))
    assert not report.incidents, summarize(report, rounds)


def test_the_checker_finds_overlapping_tenures_gaps_and_lost_records():
    """The checker itself: each kind of violation, planted in a small made-up run."""
    report = Report(0, acked={0: {0, 1, 2, 3}, 1: {0, 1}})
    report.events = [(50, "round 0: broker SIGKILL and restart")]
    report.deliveries = [
        Delivery(10, "a", "a.1", 0, 0),
        Delivery(20, "a", "a.1", 0, 1),
        Delivery(100, "a", "a.1", 0, 2),
        Delivery(60, "b", "b.1", 0, 2),
        Delivery(110, "b", "b.1", 0, 3),  # b starts before a's last delivery
        Delivery(10, "a", "a.2", 1, 0),  # partition 1 offset 1 never delivered
        Delivery(30, "c", "c.1", 1, 0),
        Delivery(40, "c", "c.1", 1, 0),  # a repeat within one tenure
        Delivery(45, "d", "none", 1, 0),  # outside any tenure
    ]
    found = check(report)
    assert any("tenures a.1 and b.1" in i and "broker SIGKILL" in i for i in found)
    assert any("never delivered, from offset 1" in i for i in found)
    assert any("tenure c.1" in i and "gap" in i for i in found)
    assert any("without an assignment" in i for i in found)
    assert len(found) == 4
    assert (
        check(
            Report(
                0,
                acked={0: {0, 1}},
                deliveries=[
                    Delivery(1, "a", "a.1", 0, 0),
                    Delivery(2, "a", "a.1", 0, 1),
                    Delivery(5, "b", "b.1", 0, 1),
                ],
            )
        )
        == []
    )
