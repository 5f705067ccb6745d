"""Queues with real processes: a broker and worker processes (tests/helpers/queue_worker.py), killed
with SIGKILL. Eight workers on a two-partition topic all get work; a worker killed mid-job has its
records handed to others after the lock; a broker killed and restarted redelivers nothing acknowledged
and no delivery count goes back; a poison message reaches the dead-letter topic after exactly
max_deliveries. Seeded; the seed is printed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

from tidelog import headers as hdr
from tidelog.client import Admin, Consumer, Producer, QueueConsumer

from .server_process import ServerProcess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(target: str, out: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.queue_worker", target, "jobs-workers", "jobs", out, *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def lines(path: str, kind: str) -> list[list[str]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split() for line in f if line.startswith(kind + " ")]


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def produce(target: str, values: list[bytes], **kw) -> None:
    with Producer(target) as p:
        for v in values:
            p.send("jobs", v, **kw)
        p.flush()


def test_eight_workers_share_the_jobs_and_a_killed_workers_jobs_go_to_others(tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"seed={seed}")
    srv = ServerProcess(str(tmp_path / "data")).start()
    procs: list[subprocess.Popen] = []
    try:
        with Admin(srv.target) as admin:
            admin.create_topic("jobs", 2)
        outs = [str(tmp_path / f"w{i}.out") for i in range(8)]
        procs = [worker(srv.target, out, "--hold-s", "0.05", "--lock-ms", "1500") for out in outs]
        wait_for(lambda: all(lines(o, "ready") for o in outs), 60, "eight workers ready")
        jobs = [f"job-{i}".encode() for i in range(400)]
        produce(srv.target, jobs)
        # one worker is killed while it holds a job it has not acknowledged
        victim = rng.randrange(8)
        wait_for(
            lambda: (g := lines(outs[victim], "got")) and len(g) > len(lines(outs[victim], "ack")) and g,
            30,
            "the victim holding a job",
        )
        procs[victim].kill()
        procs[victim].wait()
        acked_by_victim = {tuple(a[1:4]) for a in lines(outs[victim], "ack")}
        in_hand = [g for g in lines(outs[victim], "got") if tuple(g[1:4]) not in acked_by_victim]
        print(f"killed worker {victim} holding {[g[5] for g in in_hand]}")

        def all_done():
            done = [a[5] for o in outs for a in lines(o, "ack")]
            return set(done) >= {j.decode() for j in jobs} and done

        done = wait_for(all_done, 90, "every job acknowledged")
        counts = Counter(done)
        assert set(counts) == {j.decode() for j in jobs}  # none lost
        twice = [v for v, n in counts.items() if n > 1]
        assert not twice, f"seed={seed}: acknowledged twice: {twice}"  # an ack completes it for good
        busy = [i for i, o in enumerate(outs) if lines(o, "ack")]
        assert len(busy) >= 7, f"seed={seed}: only workers {busy} got work"  # more workers than partitions
        for g in in_hand:  # the victim's job went to another worker, as a second delivery, after its lock
            again = [a for o in outs for a in lines(o, "ack") if a[1:4] == g[1:4]]
            assert again and int(again[0][4]) >= 2, (g, again)
    finally:
        stop(procs)
        assert srv.stop() == 0, srv.log()


def test_a_broker_killed_and_restarted_redelivers_nothing_acknowledged_and_counts_never_go_back(tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"seed={seed}")
    srv = ServerProcess(str(tmp_path / "data")).start()
    try:
        with Admin(srv.target) as admin:
            admin.create_topic("jobs", 2)
        produce(srv.target, [f"j{i}".encode() for i in range(200)])
        acked: set[tuple[str, int, int]] = set()
        counts: dict[tuple[str, int, int], int] = {}
        for _round in range(3):
            q = QueueConsumer(srv.target, queue="jobs-workers", topics=["jobs"], lock_ms=2000, auto_extend=False)
            msgs = q.receive(rng.randint(20, 60), wait_ms=2000)
            for m in msgs:
                key = (m.topic, m.partition, m.offset)
                assert key not in acked, f"seed={seed}: {key} delivered again after its ack survived a restart"
                assert m.delivery_count > counts.get(key, 0), f"seed={seed}: the delivery count of {key} went back"
                counts[key] = m.delivery_count
            answered = rng.sample(msgs, len(msgs) // 2)
            assert q.ack(answered) == []
            acked |= {(m.topic, m.partition, m.offset) for m in answered}
            srv.kill()  # SIGKILL: the rest are locked, unanswered
            srv.start()
            time.sleep(2.2)  # their locks end (they survived the restart)
        rest = QueueConsumer(srv.target, queue="jobs-workers", topics=["jobs"], auto_extend=False)
        seen = []
        while len(seen) + len(acked) < 200:
            got = rest.receive(100, wait_ms=3000)
            assert got, f"seed={seed}: records missing: {200 - len(seen) - len(acked)}"
            for m in got:
                key = (m.topic, m.partition, m.offset)
                assert key not in acked and m.delivery_count > counts.get(key, 0), (seed, key)
            seen += got
            rest.ack(got)
        rest.close()
    finally:
        srv.stop()


def test_a_poison_message_reaches_the_dead_letter_topic_after_exactly_max_deliveries(tmp_path):
    srv = ServerProcess(str(tmp_path / "data")).start()
    procs = []
    try:
        with Admin(srv.target) as admin:
            admin.create_topic("jobs", 2)
        outs = [str(tmp_path / f"w{i}.out") for i in range(3)]
        args = ("--max-deliveries", "4", "--dlq", "jobs.dlq", "--fail-values", "poison")
        procs = [worker(srv.target, out, *args) for out in outs]
        wait_for(lambda: all(lines(o, "ready") for o in outs), 60, "workers ready")
        produce(srv.target, [b"a", b"poison", b"b"])

        def dead_letters():
            with Consumer(srv.target, "jobs.dlq", 0, 0) as c:
                return c.poll(0.5)

        (dead,) = wait_for(lambda: _has_topic(srv.target, "jobs.dlq") and dead_letters(), 60, "a dead letter")
        h = dict(dead.headers)
        assert dead.value == b"poison" and h[hdr.DLQ_DELIVERIES] == b"4" and h[hdr.DLQ_REASON] == b"poison"
        assert h[hdr.DLQ_QUEUE] == b"jobs-workers" and h[hdr.DLQ_TOPIC] == b"jobs"
        tries = [g for o in outs for g in lines(o, "got") if g[5] == "poison"]
        assert sorted(int(g[4]) for g in tries) == [1, 2, 3, 4]  # exactly max_deliveries deliveries
        assert sorted(a[5] for o in outs for a in lines(o, "ack")) == ["a", "b"]
    finally:
        stop(procs)
        assert srv.stop() == 0, srv.log()


def _has_topic(target: str, name: str) -> bool:
    with Admin(target) as admin:
        return name in admin.list_topics()
