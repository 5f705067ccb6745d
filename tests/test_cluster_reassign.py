"""Partition reassignment and broker decommission on real processes (one etcd, four brokers), with a
producer (acks=all) and a consumer running and every run checked by the history checker: a leader moved
off its partition, the controller killed mid-move, a broker emptied and stopped, and the refusals."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest

from tidelog.v1 import tidelog_pb2 as pb

from .helpers.cluster import Cluster
from .helpers.history import History
from .test_cluster_replication import check_replicas

pytestmark = pytest.mark.slow  # real processes


@pytest.fixture
def cluster4(tmp_path):
    c = Cluster(str(tmp_path), brokers=4).start()
    try:
        yield c
    finally:
        c.stop()


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *args], capture_output=True, text=True, timeout=120, env=env
    )


def leaders_of(cluster: Cluster, topic: str) -> dict[int, str]:
    return {p: m.leader_address for p, m in cluster.metadata(topic).items() if m.leader_address}


class Load:
    """A producer (acks=all) and a consumer on every partition of a topic, in threads, recorded."""

    def __init__(self, cluster: Cluster, topic: str, partitions: int) -> None:
        self.cluster, self.topic, self.partitions = cluster, topic, partitions
        self.history, self.acked = History(), 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._produce), threading.Thread(target=self._consume)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _leaders(self, leaders: dict) -> dict:
        try:
            return leaders_of(self.cluster, self.topic)
        except Exception:
            time.sleep(0.05)
            return leaders

    def _produce(self) -> None:
        leaders, n = self._leaders({}), 0
        while not self._stop.is_set() and n < 20_000:
            p = n % self.partitions
            if p not in leaders:
                time.sleep(0.05)
                leaders = self._leaders(leaders)
            elif self.cluster.send(self.history, "p1", self.topic, p, b"p1-%d" % n, leaders):
                self.acked += 1
            n += 1

    def _consume(self) -> None:
        leaders, offsets = self._leaders({}), [0] * self.partitions
        while not self._stop.is_set():
            for p in range(self.partitions):
                if p not in leaders:
                    leaders = self._leaders(leaders)
                    continue
                offsets[p] = self.cluster.poll(self.history, "c1", self.topic, p, offsets[p], leaders)

    def wait_acked(self, more: int, what: str) -> None:
        before = self.acked
        self.cluster.wait(lambda: self.acked >= before + more, timeout_s=60, what=what)


def final_check(cluster: Cluster, load: Load):
    """Stop the brokers, dump every replica the cluster names, and run the history checker."""
    return check_replicas(cluster, load.history, load.topic, load.partitions)


def off(meta: dict, broker: int) -> dict | None:
    """The metadata if no partition in it names `broker`."""
    return None if any(broker in m.replicas for m in meta.values()) else meta


def controller_id(cluster: Cluster) -> int:
    return cluster.any_call("Admin", "DescribeCluster", pb.DescribeClusterRequest()).controller_id


def test_a_partition_moves_off_its_leader_under_load_and_the_old_copy_is_deleted(cluster4):
    """[a, b, c] led by a → [b, c, d]: d copies the log and joins the ISR, the leadership moves off a
    cleanly, a leaves and deletes its copy; nothing acknowledged is lost and d's log equals the others'."""
    c = cluster4
    c.create_topic("moves", partitions=1, rf=3, min_isr=2)
    meta = c.wait_leaders("moves", 1, isr=3)[0]
    old, leader = list(meta.replicas), meta.leader_id
    spare = next(b for b in c.ids if b not in old)
    target = [b for b in old if b != leader] + [spare]
    with Load(c, "moves", 1) as load:
        load.wait_acked(150, "acknowledgements before the move")
        moved = cli(
            "topics",
            "reassign",
            "moves",
            "--partition",
            "0",
            "--replicas",
            ",".join(map(str, target)),
            "--wait",
            "--timeout",
            "60",
            "--cluster",
            c.etcd.url,
        )
        assert moved.returncode == 0, moved.stderr
        assert "reassignment started" in moved.stdout and "reassignment done" in moved.stdout
        after = c.wait(lambda: (m := c.metadata("moves")[0]).leader_id in target and len(m.isr) == 3 and m)
        assert list(after.replicas) == target and after.leader_id != leader
        load.wait_acked(100, "acknowledgements after the move")
        verify = cli(
            "topics", "reassign", "moves", "--partition", "0", "--replicas", ",".join(map(str, target)), "--verify",
            "--cluster", c.etcd.url,
        )  # fmt: skip
        assert verify.returncode == 0 and "moves-0: done" in verify.stdout, verify.stdout + verify.stderr
    report, replica_logs, logs, _ = final_check(c, load)
    assert report.ok, str(report)
    assert report.acknowledged >= 250
    committed = min(len(log) for log in replica_logs[("moves", 0)].values())
    assert committed >= report.acknowledged
    for b in target:  # the new replica holds exactly what the others hold
        assert replica_logs[("moves", 0)][b][:committed] == replica_logs[("moves", 0)][target[0]][:committed]
    assert logs[leader] == {}, "the old leader's copy of the topic should be deleted"
    assert not os.path.exists(os.path.join(c.data_dir(leader), "moves-0"))


def test_a_move_carries_on_after_the_controller_is_killed_midway(cluster4):
    """The controller is frozen, the target written, then the controller SIGKILLed before it could act:
    the next controller reads the move from etcd and finishes it (the killed broker stays down, so it
    cannot be the one that did). The controller is one of the leaving replicas."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    c = cluster4
    c.create_topic("failover", partitions=1, rf=3, min_isr=2)
    meta = c.wait_leaders("failover", 1, isr=3)[0]
    controller = controller_id(c)
    replicas = list(meta.replicas)
    if controller not in replicas:  # first a move that makes the controller a replica
        replicas[rng.randrange(3)] = controller
        asyncio.run(submit(c.etcd.url, {("failover", 0): tuple(replicas)}))
        c.wait(lambda: list(c.metadata("failover")[0].replicas) == replicas, what="the first move")
        c.wait_leaders("failover", 1, isr=3)
    spare = next(b for b in c.ids if b not in replicas)
    target = [b if b != controller else spare for b in replicas]
    with Load(c, "failover", 1) as load:
        load.wait_acked(100, "acknowledgements before the move")
        c.pause(controller)  # it can no longer act, and its session has not lapsed yet
        asyncio.run(submit(c.etcd.url, {("failover", 0): tuple(target)}))
        c.kill(controller)  # SIGKILL reaches a stopped process
        print(f"controller {controller} killed; moving {replicas} -> {target}")
        done = c.wait(
            lambda: list((m := c.metadata("failover")[0]).replicas) == target and len(m.isr) == 3 and m,
            timeout_s=60,
            what="the move finished by the next controller",
        )
        assert done.leader_id in target and controller_id(c) not in (controller, -1)
        load.wait_acked(100, "acknowledgements after the move")
    report, _, _, _ = final_check(c, load)
    assert report.ok, f"seed={seed}: {report}"
    assert report.acknowledged >= 200


async def submit(url: str, targets: dict) -> None:
    from tidelog.cluster import etcd, reassignment

    client = etcd.connect(url)
    try:
        await reassignment.submit(client, "tidelog", targets)
    finally:
        await client.close()


def test_decommission_empties_a_broker_under_load_and_stopping_it_loses_nothing(cluster4):
    """The group coordinator's broker is decommissioned: every replica it held (the topic's and
    __consumer_offsets') moves to the least loaded other brokers, the committed offsets survive the
    move, and stopping it afterwards loses no acknowledged record."""
    from .test_cluster_replication import find_coordinator

    c = cluster4
    c.create_topic("load", partitions=3, rf=3, min_isr=2)
    c.wait_leaders("load", 3, isr=3)
    _, joined = find_coordinator(c, pb.JoinGroupRequest(group_id="g", topics=["load"], session_timeout_ms=30_000))
    offsets_meta = c.wait_leaders("__consumer_offsets", 1, isr=3)[0]
    broker = offsets_meta.leader_id  # the coordinator's broker
    address = offsets_meta.leader_address

    def granted():
        beat = c.call(
            address,
            "Groups",
            "Heartbeat",
            pb.HeartbeatRequest(
                group_id="g",
                member_id=joined.member_id,
                generation=joined.generation,
                session_token=joined.session_token,
            ),
        )
        return beat if len(beat.partitions) == 3 else None

    member = c.wait(granted, what="the member's assignment")
    with Load(c, "load", 3) as load:
        load.wait_acked(150, "acknowledgements before the decommission")
        commit = pb.CommitOffsetsRequest(
            group_id="g",
            member_id=member.member_id,
            generation=member.generation,
            offsets=[pb.PartitionOffset(topic="load", partition=p, offset=p + 1) for p in range(3)],
            session_token=joined.session_token,
        )
        c.call(address, "Groups", "CommitOffsets", commit)
        out = cli("cluster", "decommission", str(broker), "--wait", "--timeout", "90", "--cluster", c.etcd.url)
        assert out.returncode == 0, out.stderr
        assert f"broker {broker} holds no replica: it can be stopped" in out.stdout
        for topic in ("load", "__consumer_offsets"):  # etcd has it; a broker's view may be a moment late
            placed = c.wait(lambda: off(c.metadata(topic), broker), what=f"{topic} off broker {broker}")
            assert all(len(m.replicas) == 3 for m in placed.values()), placed
        c.brokers[broker].stop()
        load.wait_acked(150, "acknowledgements after the broker stopped")
        new = c.wait_leaders("__consumer_offsets", 1, timeout_s=60)[0]

        def committed():
            reply = c.call(
                new.leader_address, "Groups", "FetchCommittedOffsets", pb.FetchCommittedOffsetsRequest(group_id="g")
            )
            return {(o.topic, o.partition): o.offset for o in reply.offsets} or None

        assert c.wait(committed, what="the committed offsets after the move") == {("load", p): p + 1 for p in range(3)}
    report, _, logs, _ = final_check(c, load)
    assert report.ok, str(report)
    assert report.acknowledged >= 300
    assert logs[broker] == {}, "the decommissioned broker's copy should be deleted"


def test_bad_reassignments_are_refused_clearly_and_a_move_in_progress_can_be_cancelled(cluster, capsys, monkeypatch):
    """Three brokers: the refusals (exit 2 for the command line, 1 for the cluster's state, one line on
    stderr each), then a move held in progress (its new replica frozen) shown by describe, status and
    --verify, refused a second time, and cancelled back to the original replicas."""
    c = cluster
    url = c.etcd.url
    c.create_topic("pair", partitions=1, rf=2, min_isr=1)
    meta = c.wait_leaders("pair", 1, isr=2)[0]
    original = list(meta.replicas)
    spare = next(b for b in c.ids if b not in original)
    monkeypatch.delenv("TIDELOG_CLUSTER", raising=False)

    def run(*args: str) -> subprocess.CompletedProcess:
        """The CLI in this process (each run in a subprocess would cost a second of start-up)."""
        from tidelog.cli.app import main

        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's own usage errors
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out.out, out.err)

    def refused(code: int, needle: str, *args: str) -> None:
        out = run(*args)
        assert out.returncode == code and needle in out.stderr, (args, out.returncode, out.stdout, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr

    base = ("topics", "reassign")
    refused(2, "--cluster", *base, "pair", "--partition", "0", "--replicas", "1,2")
    refused(2, "--replicas", *base, "pair", "--partition", "0", "--cluster", url)
    refused(2, "broker ids", *base, "pair", "--partition", "0", "--replicas", "1,x", "--cluster", url)
    refused(2, "--plan", *base, "--plan", "/nonexistent/plan.json", "--cluster", url)
    refused(1, "unknown topic", *base, "nope", "--partition", "0", "--replicas", "1,2", "--cluster", url)
    refused(1, "not partition 5", *base, "pair", "--partition", "5", "--replicas", "1,2", "--cluster", url)
    refused(1, "more than once", *base, "pair", "--partition", "0", "--replicas", "1,1", "--cluster", url)
    refused(1, "not registered", *base, "pair", "--partition", "0", "--replicas", "1,9", "--cluster", url)
    refused(
        1, "--allow-replication-factor-change", *base, "pair", "--partition", "0", "--replicas", "1,2,3",
        "--cluster", url,
    )  # fmt: skip
    c.create_topic("triple", partitions=1, rf=3, min_isr=2)
    refused(1, "cannot leave without another live broker", "cluster", "decommission", "1", "--cluster", url)

    target = [original[0], spare]  # keeps the leader? not necessarily; the move is held by freezing `spare`
    c.pause(spare)
    try:
        asyncio.run(submit(url, {("pair", 0): tuple(target)}))
        refused(1, "already in progress", *base, "pair", "--partition", "0", "--replicas", ",".join(map(str, original)),
                "--cluster", url)  # fmt: skip
        verify = run(*base, "pair", "--partition", "0", "--replicas", ",".join(map(str, target)), "--verify",
                     "--cluster", url)  # fmt: skip
        assert "pair-0: in progress" in verify.stdout and f"adding {spare}" in verify.stdout, verify.stdout
        status = run("cluster", "status", "--cluster", url)
        assert "reassignments in progress: 1" in status.stdout, status.stdout + status.stderr
        under = [line for line in status.stdout.splitlines() if "under-replicated:" in line]
        assert not any("pair-0" in line for line in under), status.stdout  # counted against its target
        server = c.brokers[original[0]].target
        from_broker = c.wait(
            lambda: "reassignments in progress: 1" in (o := run("cluster", "status", "--server", server)).stdout and o,
            what="the move in a broker's cluster status",
        )
        assert f"pair-0 (adding {spare}" in from_broker.stdout, from_broker.stdout
        described = run("topics", "describe", "pair", "--server", c.brokers[original[0]].target)
        assert "being reassigned: adding" in described.stdout, described.stdout + described.stderr
        cancelled = run(*base, "pair", "--partition", "0", "--cancel", "--cluster", url)
        assert cancelled.returncode == 0 and "reassignment cancelled" in cancelled.stdout, cancelled.stderr
    finally:
        c.resume(spare)
    # the cancel is in etcd; a broker's metadata shows it once its watch has delivered it
    back = c.wait(
        lambda: (m := c.metadata("pair")[0]) and sorted(m.replicas) == sorted(original) and m,
        what="the cancelled move gone from the metadata",
    )
    assert back.leader_id in original
    refused(1, "no reassignment is in progress", *base, "pair", "--partition", "0", "--cancel", "--cluster", url)


def test_the_coordinator_keeps_a_topics_committed_offsets_when_its_copy_moves_off(cluster, tmp_path):
    """A copy dropped by a reassignment is not a deleted topic: the group coordinator whose broker
    loses its copy of a topic keeps the groups' committed offsets of it. Moved with a --plan file."""
    from .test_cluster_replication import find_coordinator

    c = cluster
    c.create_topic("solo", partitions=1, rf=1)
    c.wait_leaders("solo", 1)
    _, joined = find_coordinator(c, pb.JoinGroupRequest(group_id="g", topics=["solo"], session_timeout_ms=30_000))
    coordinator = c.wait_leaders("__consumer_offsets", 1)[0]
    home, elsewhere = coordinator.leader_id, next(b for b in c.ids if b != coordinator.leader_id)

    def move_to(broker: int) -> None:
        plan = tmp_path / f"plan-{broker}.json"
        plan.write_text(
            json.dumps({"version": 1, "partitions": [{"topic": "solo", "partition": 0, "replicas": [broker]}]})
        )
        out = cli("topics", "reassign", "--plan", str(plan), "--wait", "--timeout", "60", "--cluster", c.etcd.url)
        assert out.returncode == 0, out.stderr
        c.wait(lambda: list(c.metadata("solo")[0].replicas) == [broker], what=f"solo-0 on broker {broker}")

    if list(c.metadata("solo")[0].replicas) != [home]:
        move_to(home)  # the topic's only copy on the coordinator's broker
    leaders = leaders_of(c, "solo")
    history = History()
    for i in range(5):
        c.send_acked(history, "p", "solo", 0, b"s%d" % i, leaders)

    def granted():
        beat = c.call(
            coordinator.leader_address,
            "Groups",
            "Heartbeat",
            pb.HeartbeatRequest(
                group_id="g",
                member_id=joined.member_id,
                generation=joined.generation,
                session_token=joined.session_token,
            ),
        )
        return beat if len(beat.partitions) == 1 else None

    member = c.wait(granted, what="the member's assignment")
    commit = pb.CommitOffsetsRequest(
        group_id="g",
        member_id=member.member_id,
        generation=member.generation,
        offsets=[pb.PartitionOffset(topic="solo", partition=0, offset=3)],
        session_token=joined.session_token,
    )
    c.call(coordinator.leader_address, "Groups", "CommitOffsets", commit)
    move_to(elsewhere)
    c.wait(lambda: dump_absent(c, home), what=f"broker {home}'s copy of solo deleted")
    reply = c.call(
        coordinator.leader_address, "Groups", "FetchCommittedOffsets", pb.FetchCommittedOffsetsRequest(group_id="g")
    )
    assert {(o.topic, o.partition): o.offset for o in reply.offsets} == {("solo", 0): 3}


def dump_absent(cluster: Cluster, broker: int) -> bool:
    """Whether the broker no longer lists a copy of topic `solo` among its partition directories."""
    return not any(name.startswith("solo-") for name in os.listdir(cluster.data_dir(broker)))


async def progress(url: str, targets: dict) -> dict:
    from tidelog.cluster import etcd, reassignment

    client = etcd.connect(url)
    try:
        return {k: status for k, (status, _) in (await reassignment.progress_of(client, "tidelog", targets)).items()}
    finally:
        await client.close()


@pytest.mark.long
def test_reassignments_under_broker_kills_and_pauses_lose_nothing(cluster4):
    """Seeded rounds: a random move of a random partition, and meanwhile a fault (SIGKILL of the leader,
    the controller or a new replica, restarted at once; or the controller paused past its session),
    while a producer (acks=all) and a consumer run; the history checker at the end.
    TIDELOG_REASSIGN_ROUNDS (default 20) and TIDELOG_REASSIGN_SEED replay a run."""
    from tidelog.cluster import reassignment

    seed = int(os.environ.get("TIDELOG_REASSIGN_SEED") or random.randrange(1 << 30))
    rounds = int(os.environ.get("TIDELOG_REASSIGN_ROUNDS", "20"))
    print(f"seed={seed} rounds={rounds}")
    rng = random.Random(seed)
    c = cluster4
    c.create_topic("chaos", partitions=2, rf=3, min_isr=2)
    c.wait_leaders("chaos", 2, isr=3)
    faults: dict[str, int] = {}
    with Load(c, "chaos", 2) as load:
        for n in range(rounds):
            c.wait(
                lambda: len(c.any_call("Admin", "DescribeCluster", pb.DescribeClusterRequest()).brokers) == 4,
                timeout_s=60,
                what="every broker registered",
            )
            p = rng.randrange(2)
            meta = c.wait_leaders("chaos", 2, timeout_s=60)[p]
            target = tuple(rng.sample(c.ids, 3))
            asyncio.run(submit(c.etcd.url, {("chaos", p): target}))
            time.sleep(rng.uniform(0, 0.5))
            fault = rng.choice(["none", "kill-leader", "kill-controller", "kill-new", "pause-controller"])
            new = [b for b in target if b not in meta.replicas]
            victim = {
                "kill-leader": meta.leader_id,
                "kill-controller": controller_id(c),
                "kill-new": new[0] if new else None,
                "pause-controller": controller_id(c),
            }.get(fault)
            if victim is not None and victim in c.ids:
                faults[fault] = faults.get(fault, 0) + 1
                print(f"round {n}: {fault} {victim} at t=+{time.monotonic() - load.history.start:.3f}s")
                if fault == "pause-controller":
                    c.pause(victim)
                    time.sleep(rng.uniform(0.5, 2.0))
                    c.resume(victim)
                else:
                    c.kill(victim)
                    c.restart(victim)
            print(f"round {n}: chaos-{p} {list(meta.replicas)} -> {list(target)}, {fault} {victim}")
            c.wait(
                lambda: asyncio.run(progress(c.etcd.url, {("chaos", p): target}))[("chaos", p)] == reassignment.DONE,
                timeout_s=90,
                what=f"round {n}: the move of chaos-{p} to {list(target)}",
            )
            load.wait_acked(20, f"round {n}: acknowledgements after the move")
    print(f"faults: {faults}")
    c.wait_leaders("chaos", 2, isr=3, timeout_s=60)
    report, _, _, _ = final_check(c, load)
    print(f"acknowledged={report.acknowledged} polled={report.polled} committed={report.committed}")
    assert report.ok, f"seed={seed}: {report}"
