"""Replicated partitions on real processes: one etcd, three `tidelog serve --cluster` brokers.

Every run logs each produce attempt and each poll in a History and, once the brokers are stopped,
reads every replica's log from its data directory; the history checker (tests/helpers/history.py)
then looks for lost or misplaced acknowledged records, divergent replicas and reads past the high
watermark. The seed of each randomised run is printed, so a failure can be replayed.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time

import pytest

from tidelog.errors import NotEnoughReplicasError, NotLeaderError
from tidelog.v1 import tidelog_pb2 as pb

from .helpers.cluster import Cluster, dump
from .helpers.history import History, check

pytestmark = pytest.mark.slow  # real processes


def leaders_of(cluster: Cluster, topic: str) -> dict[int, str]:
    return {p: m.leader_address for p, m in cluster.metadata(topic).items() if m.leader_address}


def final_check(cluster: Cluster, history: History, topic: str, partitions: int):
    """Stop every broker, dump every replica, and check the history against the committed logs."""
    report, replica_logs, _, _ = check_replicas(cluster, history, topic, partitions)
    return report, replica_logs


def check_replicas(cluster: Cluster, history: History, topic: str, partitions: int):
    """final_check, also returning every broker's dump and the last metadata."""
    meta = cluster.wait_leaders(topic, partitions)
    for b in cluster.brokers.values():
        b.stop()
    logs = {b: dump(cluster.data_dir(b), topic, partitions) for b in cluster.ids}
    replica_logs = {(topic, p): {b: logs[b].get(p, []) for b in meta[p].replicas} for p in range(partitions)}
    # committed: what the in-sync replicas all hold (after a clean stop every ISR member has caught up to the HW)
    in_sync = {(topic, p): set(meta[p].isr) for p in range(partitions)}
    committed = {
        (topic, p): min(len(replica_logs[(topic, p)][b]) for b in in_sync[(topic, p)]) for p in range(partitions)
    }
    return check(history, replica_logs, committed, in_sync), replica_logs, logs, meta


def test_topics_are_placed_routed_and_copied_to_every_replica(cluster):
    desc = cluster.create_topic("orders", partitions=3, rf=3, min_isr=2)
    assert [sorted(p.replicas) for p in desc.partitions] == [[1, 2, 3]] * 3
    meta = cluster.wait_leaders("orders", 3, isr=3)
    assert len({m.leader_id for m in meta.values()}) == 3  # leaders spread over the brokers
    for b in cluster.ids:  # every broker routes alike
        seen = cluster.call(cluster.brokers[b].target, "Admin", "Metadata", pb.MetadataRequest(topics=["orders"]))
        assert {p.partition: p.leader_address for p in seen.topics[0].partitions} == {
            p: m.leader_address for p, m in meta.items()
        }
    cluster.create_topic("solo", partitions=1, rf=1)  # one copy, on one broker only
    for b in cluster.ids:  # every broker lists the cluster's topics, also those it has no copy of
        target = cluster.brokers[b].target
        cluster.wait(
            lambda t=target: (
                list(cluster.call(t, "Admin", "ListTopics", pb.ListTopicsRequest()).topics) == ["orders", "solo"]
            ),
            what=f"broker {b} listing both topics",
        )
    history, leaders = History(), leaders_of(cluster, "orders")
    assert len(leaders) == 3, cluster.metadata("orders")
    for i in range(60):
        cluster.send_acked(history, "p", "orders", i % 3, b"v%d" % i, leaders)
    # a broker that does not lead the partition refuses, naming the leader
    follower = next(b for b in cluster.ids if cluster.brokers[b].target != leaders[0])

    with pytest.raises(NotLeaderError) as refused:
        cluster.call(
            cluster.brokers[follower].target,
            "Producer",
            "ProduceRecords",
            pb.ProduceRecordsRequest(topic="orders", partition=0, records=[pb.Record(value=b"x")]),
        )
    assert refused.value.leader_address == leaders[0]
    for p in range(3):
        offset = 0
        for _ in range(20):
            offset = cluster.poll(history, "c", "orders", p, offset, leaders)
            if offset >= 20:
                break
        assert offset == 20
    from tidelog.client import Admin

    with Admin(cluster.brokers[follower].target) as admin:  # asked of one broker: each leader's offsets
        described = admin.describe("orders")["partitions"]
    assert [(d.leader_id, d.log_end, d.high_watermark) for d in described] == [
        (meta[p].leader_id, 20, 20) for p in range(3)
    ]
    assert all(sorted(d.replicas) == [1, 2, 3] and len(d.isr) == 3 for d in described)
    report, logs = final_check(cluster, history, "orders", 3)
    assert report.ok, str(report)
    assert report.acknowledged == 60 and report.lost == 0 and report.failed + report.indeterminate < 10
    for p in range(3):  # three identical copies, each record stamped with the first leader epoch
        copies = list(logs[("orders", p)].values())
        assert len(copies) == 3 and copies[0] == copies[1] == copies[2] and len(copies[0]) == 20
        assert {epoch for _, _, epoch in copies[0]} == {0}


def test_min_insync_replicas_refuses_acks_all_before_appending(cluster):
    cluster.create_topic("strict", partitions=1, rf=3, min_isr=2)
    meta = cluster.wait_leaders("strict", 1, isr=3)
    leader = meta[0].leader_id
    for b in cluster.ids:
        if b != leader:
            cluster.kill(b)
    cluster.wait(lambda: len(cluster.metadata("strict")[0].isr) == 1, what="the ISR shrinking to the leader")
    history, leaders = History(), leaders_of(cluster, "strict")

    with pytest.raises(NotEnoughReplicasError):
        cluster.call(
            leaders[0],
            "Producer",
            "ProduceRecords",
            pb.ProduceRecordsRequest(topic="strict", partition=0, records=[pb.Record(value=b"x")], acks=pb.ACKS_ALL),
        )
    assert cluster.send(history, "p", "strict", 0, b"one-copy", leaders, acks="1")  # acks=1 still works
    end = cluster.call(leaders[0], "Admin", "ListOffsets", pb.ListOffsetsRequest(topic="strict", partition=0))
    assert end.log_end == 1  # the refused record was never appended
    # the operator sees it: the partition is under-replicated, from any broker and from etcd alike
    for where in (["--server", leaders[0]], ["--cluster", cluster.etcd.url]):
        result = subprocess.run(
            [sys.executable, "-m", "tidelog", "cluster", "status", *where, "--format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        health = json.loads(result.stdout)["partitions"]
        assert health["under_replicated"] == ["strict-0"] and health["offline"] == [], health
    gauges = scrape(cluster.brokers[leader].metrics_port)
    assert gauges["tidelog_leader_partitions"] >= 1
    assert gauges["tidelog_under_replicated_partitions"] == 1
    assert gauges["tidelog_under_min_isr_partitions"] == 1


def scrape(port: int) -> dict[str, float]:
    """The broker's metrics without labels, by sample name."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


@pytest.mark.parametrize(
    "victims",
    [["leader"], ["follower"], ["controller"], ["leader", "leader"]],
    ids=["leader", "follower", "controller", "two-in-turn"],
)
def test_a_killed_broker_loses_no_acknowledged_record(cluster, victims):
    """SIGKILL a broker (the leader of partition 0, one of its followers, the controller; or two
    brokers in turn: the leader, then the new leader once the first is back in sync) while a producer
    (acks=all) and a consumer run; the killed broker restarts, truncates and catches up."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    topic = "events"
    cluster.create_topic(topic, partitions=2, rf=3, min_isr=2)
    meta = cluster.wait_leaders(topic, 2, isr=3)
    history = History()
    stop = threading.Event()
    acked = [0]

    def produce() -> None:
        leaders, n = leaders_of(cluster, topic), 0
        while not stop.is_set() and n < 5000:
            p = n % 2
            if p not in leaders:
                time.sleep(0.05)
                try:
                    leaders = leaders_of(cluster, topic)
                except Exception:
                    pass
            elif cluster.send(history, "p1", topic, p, b"p1-%d" % n, leaders):
                acked[0] += 1
            n += 1

    def consume() -> None:
        leaders, offsets = leaders_of(cluster, topic), [0, 0]
        while not stop.is_set():
            for p in (0, 1):
                if p not in leaders:
                    try:
                        leaders = leaders_of(cluster, topic)
                    except Exception:
                        time.sleep(0.05)
                    continue
                offsets[p] = cluster.poll(history, "c1", topic, p, offsets[p], leaders)

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    try:
        cluster.wait(lambda: acked[0] >= 50 + rng.randrange(100), what="acknowledged records before the kill")
        killed = []
        for victim in victims:
            meta = cluster.wait_leaders(topic, 2, isr=3, timeout_s=60)
            leader = meta[0].leader_id
            if victim == "leader":
                target = leader
            elif victim == "follower":
                target = next(b for b in meta[0].replicas if b != leader)
            else:
                target = cluster.any_call("Admin", "DescribeCluster", pb.DescribeClusterRequest()).controller_id
            killed.append(target)
            cluster.kill(target)
            before = acked[0]
            cluster.wait(
                lambda: acked[0] >= before + 100, timeout_s=60, what=f"acknowledgements after killing {target}"
            )
            cluster.restart(target)
            cluster.wait_leaders(topic, 2, isr=3, timeout_s=60)
            after = acked[0]
            cluster.wait(lambda: acked[0] >= after + 50, timeout_s=60, what="acknowledgements after the restart")
        if len(victims) == 2:
            assert killed[0] != killed[1]  # the second kill hit the leader elected after the first
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    report, _ = final_check(cluster, history, topic, 2)
    assert report.ok, f"seed={seed}: {report}"
    assert report.acknowledged >= 200


def find_coordinator(cluster: Cluster, request) -> tuple[str, object]:
    """Ask any broker; follow NOT_COORDINATOR to the broker it names (retrying while none is named)."""
    from tidelog.errors import NotCoordinatorError

    def attempt():
        try:
            return ("?", cluster.any_call("Groups", "JoinGroup", request))
        except NotCoordinatorError as exc:
            if not exc.leader_address:
                return None
            return (exc.leader_address, cluster.call(exc.leader_address, "Groups", "JoinGroup", request))

    return cluster.wait(attempt, timeout_s=60, what="the group coordinator")


def test_committed_offsets_and_members_survive_the_coordinators_death(cluster):
    cluster.create_topic("jobs", partitions=2, rf=3, min_isr=2)
    leaders = {p: m.leader_address for p, m in cluster.wait_leaders("jobs", 2, isr=3).items()}
    history = History()
    for i in range(100):
        cluster.send_acked(history, "p", "jobs", i % 2, b"j%d" % i, leaders)
    join = pb.JoinGroupRequest(group_id="billing", topics=["jobs"], session_timeout_ms=30_000)
    _, joined = find_coordinator(cluster, join)
    token = joined.session_token  # the member's secret: every call as the member shows it
    coordinator = cluster.metadata("__consumer_offsets")[0]
    assert sorted(coordinator.replicas) == [1, 2, 3]  # the group state is replicated like any partition
    address = coordinator.leader_address

    def granted():
        beat = cluster.call(
            address,
            "Groups",
            "Heartbeat",
            pb.HeartbeatRequest(
                group_id="billing",
                member_id=joined.member_id,
                generation=joined.generation,
                owned=joined.partitions,
                session_token=token,
            ),
        )
        return beat if len(beat.partitions) == 2 else None

    joined = cluster.wait(granted, what="the member's assignment")
    commit = pb.CommitOffsetsRequest(
        group_id="billing",
        member_id=joined.member_id,
        generation=joined.generation,
        offsets=[pb.PartitionOffset(topic="jobs", partition=p, offset=40 + p) for p in (0, 1)],
        session_token=token,
    )
    cluster.call(address, "Groups", "CommitOffsets", commit)
    cluster.kill(coordinator.leader_id)  # SIGKILL: the coordinator's broker dies
    new = cluster.wait(
        lambda: (m := cluster.metadata("__consumer_offsets")[0]).leader_id not in (-1, coordinator.leader_id) and m,
        timeout_s=60,
        what="a new coordinator",
    )

    def committed():
        reply = cluster.call(
            new.leader_address, "Groups", "FetchCommittedOffsets", pb.FetchCommittedOffsetsRequest(group_id="billing")
        )
        return {(o.topic, o.partition): o.offset for o in reply.offsets} or None

    assert cluster.wait(committed, what="the committed offsets on the new coordinator") == {
        ("jobs", 0): 40,
        ("jobs", 1): 41,
    }
    # the member carries on with the new coordinator: same member id, token, generation, partitions
    beat = cluster.call(
        new.leader_address,
        "Groups",
        "Heartbeat",
        pb.HeartbeatRequest(
            group_id="billing",
            member_id=joined.member_id,
            generation=joined.generation,
            owned=joined.partitions,
            session_token=token,
        ),
    )
    assert beat.member_id == joined.member_id and beat.generation == joined.generation
    from tidelog.client import Admin

    others = [cluster.brokers[b].target for b in cluster.live() if cluster.brokers[b].target != new.leader_address]
    with Admin(",".join([*others, new.leader_address])) as admin:  # group admin follows NOT_COORDINATOR
        assert admin.list_groups() == ["billing"]
    assert sorted((tp.topic, tp.partition) for tp in beat.partitions) == [("jobs", 0), ("jobs", 1)]


def tidelog_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tidelog", *args], capture_output=True, text=True, timeout=60)


def test_an_offline_partition_waits_for_its_isr_and_unclean_election_is_explicit(cluster):
    cluster.create_topic("fragile", partitions=1, rf=3, min_isr=1)
    meta = cluster.wait_leaders("fragile", 1, isr=3)[0]
    leader, followers = meta.leader_id, [b for b in meta.replicas if b != meta.leader_id]
    history, leaders = History(), {0: meta.leader_address}
    for i in range(20):
        cluster.send_acked(history, "p", "fragile", 0, b"f%d" % i, leaders)
    for b in followers:
        cluster.kill(b)
    cluster.wait(lambda: list(cluster.metadata("fragile")[0].isr) == [leader], what="the ISR down to the leader")
    for i in range(5):  # acknowledged by the last in-sync replica alone
        cluster.send_acked(history, "p", "fragile", 0, b"alone-%d" % i, leaders)
    cluster.kill(leader)
    cluster.restart(followers[0])  # alive, but not in the ISR: it must not lead on its own
    cluster.wait(lambda: cluster.metadata("fragile")[0].leader_id == -1, what="the partition offline")
    time.sleep(2)  # several controller passes
    assert cluster.metadata("fragile")[0].leader_id == -1  # clean election only
    status = tidelog_cli("cluster", "status", "--cluster", cluster.etcd.url, "--format", "json")
    assert json.loads(status.stdout)["partitions"]["offline"] == ["fragile-0"], status.stderr

    usage = tidelog_cli("cluster", "elect-leader", "fragile", "0", "--preferred", "--unclean")
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1
    elected = tidelog_cli("cluster", "elect-leader", "fragile", "0", "--unclean", "--cluster", cluster.etcd.url)
    assert elected.returncode == 0, elected.stderr
    new = cluster.wait(
        lambda: (m := cluster.metadata("fragile")[0]).leader_id == followers[0] and m, what="the unclean leader"
    )
    assert list(new.isr) == [followers[0]] and new.leader_epoch > meta.leader_epoch
    leaders = {0: new.leader_address}
    cluster.send_acked(history, "p", "fragile", 0, b"after", leaders)  # available again
    again = tidelog_cli("cluster", "elect-leader", "fragile", "0", "--unclean", "--cluster", cluster.etcd.url)
    assert again.returncode == 1 and "live leader" in again.stderr  # refused while a leader lives


def test_topics_deleted_and_created_in_turn_keep_every_broker_working(cluster):
    """Deleting a topic stops its followers' copy loops; that must never wedge a broker's handling of the
    cluster's state (the next topic must get its leaders) nor its shutdown."""
    from tidelog.client import Admin, Producer

    bootstrap = ",".join(cluster.brokers[b].target for b in cluster.ids)
    with Admin(bootstrap) as admin:
        for cycle in range(4):
            name = f"cycle-{cycle}"
            admin.create_topic(name, 3, replication_factor=3, min_insync_replicas="2")
            cluster.wait_leaders(name, 3, isr=3, timeout_s=20)
            with Producer(bootstrap, acks="all", delivery_timeout_s=30) as producer:
                futures = [producer.send(name, b"x" * 512, partition=i % 3) for i in range(3000)]
                producer.flush(60)
            failed = [repr(f.exception(0)) for f in futures if f.exception(0) is not None]
            assert not failed, f"{len(failed)} sends failed, e.g. {failed[:3]}"
            admin.delete_topic(name)
            cluster.wait(lambda n=name: n not in admin.list_topics(), what=f"{name} deleted")
    for b in cluster.brokers.values():
        assert b.stop(timeout_s=15) == 0, b.log()  # a clean, prompt stop


def test_the_cli_creates_produces_consumes_and_describes_on_a_cluster(cluster):
    """The README's session against three brokers, each command given every broker's address."""
    servers = ",".join(cluster.brokers[b].target for b in cluster.ids)
    created = tidelog_cli(
        "topics",
        "create",
        "orders",
        "--partitions",
        "3",
        "--replication-factor",
        "3",
        "--min-insync-replicas",
        "2",
        "--server",
        servers,
    )
    assert created.returncode == 0, created.stderr
    cluster.wait_leaders("orders", 3, isr=3)
    produced = subprocess.run(
        [sys.executable, "-m", "tidelog", "produce", "orders", "--acks", "all", "--server", servers],
        input="".join(f"line-{i}\n" for i in range(30)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert produced.returncode == 0, produced.stderr
    consumed = tidelog_cli("consume", "orders", "--from-beginning", "--max", "30", "--server", servers)
    assert consumed.returncode == 0, consumed.stderr
    values = [line.split()[-1] for line in consumed.stdout.splitlines() if line.strip()]
    assert sorted(values) == sorted(f"line-{i}" for i in range(30)), consumed.stdout
    described = tidelog_cli("topics", "describe", "orders", "--format", "json", "--server", servers)
    assert described.returncode == 0, described.stderr
    parts = json.loads(described.stdout)["partitions"]
    assert sum(p["high_watermark"] for p in parts) == 30
    assert all(sorted(p["replicas"]) == [1, 2, 3] and len(p["isr"]) == 3 for p in parts)


def test_a_broker_back_on_an_emptied_disk_never_leads_before_it_has_caught_up(cluster):
    """The last in-sync replica restarts on an emptied data directory, under its old broker id. Before the
    ISR recorded each member's data directory it was elected at once, and every acknowledged record was
    gone. Now the partition stays offline (the repair is named: an unclean election of a replica that
    still holds the records), and the emptied broker copies everything back before it counts again."""
    import shutil

    cluster.create_topic("wiped", partitions=1, rf=2, min_isr=1)
    meta = cluster.wait_leaders("wiped", 1, isr=2)[0]
    first, second = meta.leader_id, next(b for b in meta.replicas if b != meta.leader_id)
    history, leaders = History(), {0: meta.leader_address}
    for i in range(30):
        cluster.send_acked(history, "p", "wiped", 0, b"w%d" % i, leaders)
    cluster.kill(first)  # the second replica leads, alone in the ISR, with every acknowledged record
    cluster.wait(
        lambda: (m := cluster.metadata("wiped")[0]).leader_id == second and list(m.isr) == [second],
        what="the second replica leading alone",
    )
    cluster.kill(second)
    cluster.wait(lambda: cluster.metadata("wiped")[0].leader_id == -1, what="the partition offline")
    shutil.rmtree(cluster.data_dir(second))  # its disk replaced by an empty one
    cluster.restart(second)
    cluster.wait(lambda: second in [b.broker_id for b in _brokers(cluster)], what="the emptied broker registered")
    time.sleep(2)  # several controller passes: it must not be elected
    after = cluster.metadata("wiped")[0]
    assert after.leader_id == -1, f"broker {second} leads from an emptied disk (epoch {after.leader_epoch})"
    status = tidelog_cli("cluster", "status", "--cluster", cluster.etcd.url, "--format", "json")
    assert json.loads(status.stdout)["partitions"]["offline"] == ["wiped-0"], status.stderr

    cluster.restart(first)  # still holds every acknowledged record, but is not in the ISR: explicit
    cluster.wait(lambda: first in [b.broker_id for b in _brokers(cluster)], what="the first replica back")
    elected = tidelog_cli(
        "cluster", "elect-leader", "wiped", "0", "--unclean", "--broker", str(first), "--cluster", cluster.etcd.url
    )
    assert elected.returncode == 0, elected.stderr
    new = cluster.wait(lambda: (m := cluster.metadata("wiped")[0]).leader_id == first and m, what="the new leader")
    leaders = {0: new.leader_address}
    cluster.send_acked(history, "p", "wiped", 0, b"after", leaders)
    cluster.wait(lambda: len(cluster.metadata("wiped")[0].isr) == 2, what="the emptied broker caught up, in sync")
    offset = 0
    for _ in range(100):  # bounded: the 31 acknowledged records
        if offset >= 31:
            break
        offset = cluster.poll(history, "c", "wiped", 0, offset, leaders)
    assert offset == 31
    cluster.stop()
    logs = {b: dump(cluster.data_dir(b), "wiped", 1).get(0, []) for b in (first, second)}
    report = check(history, {("wiped", 0): logs}, {("wiped", 0): len(logs[first])}, {("wiped", 0): {first, second}})
    assert report.ok, report
    assert [v for _, v, _ in logs[second]] == [v for _, v, _ in logs[first]]  # copied back whole


def _brokers(cluster):
    import asyncio

    from tidelog.cluster import etcd
    from tidelog.cluster.membership import cluster_status

    async def read():
        return (await cluster_status(etcd.connect(cluster.etcd.url), "tidelog")).brokers

    return asyncio.run(read())


def test_a_leader_restarted_within_its_session_acknowledges_nothing_before_it_rejoins(cluster):
    """SIGKILL the leader and start it again at once: its previous session still holds its id, so it
    waits for that to expire before joining. Its port is bound meanwhile, and clients still routed to it
    (etcd names it leader until the old session expires) must not be answered as by a standalone broker:
    records it acknowledged then would be cut when it rejoins as a follower."""
    cluster.create_topic("quick", partitions=1, rf=3, min_isr=2)
    meta = cluster.wait_leaders("quick", 1, isr=3)[0]
    history, leaders = History(), {0: meta.leader_address}
    for i in range(20):
        cluster.send_acked(history, "p", "quick", 0, b"before-%d" % i, leaders)
    cluster.kill(meta.leader_id)
    restarting = threading.Thread(target=cluster.restart, args=(meta.leader_id,))
    restarting.start()
    n = 0
    while restarting.is_alive():  # keep asking the old leader's address, as a client with stale metadata does
        cluster.send(history, "p", "quick", 0, b"during-%d" % n, {0: meta.leader_address})
        n += 1
        time.sleep(0.01)
    restarting.join()
    leaders = {}
    for i in range(20):
        cluster.send_acked(history, "p", "quick", 0, b"after-%d" % i, leaders)
    report, _ = final_check(cluster, history, "quick", 1)
    assert report.ok, str(report)
