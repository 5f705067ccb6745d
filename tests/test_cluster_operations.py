"""Cluster operations on real processes (one etcd, three brokers): `topics alter` under load and
replication throttling of a catching-up follower. Every run is checked by the history checker
(tests/helpers/history.py); the seed of each randomised run is printed."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest

from tidelog.errors import InvalidPartitionError, NotEnoughReplicasError, TidelogError
from tidelog.v1 import tidelog_pb2 as pb

from .helpers.cluster import Cluster, Settings
from .helpers.history import History
from .test_cluster_replication import final_check, leaders_of, scrape

pytestmark = pytest.mark.slow  # real processes


def alter(cluster: Cluster, topic: str, partitions: int = 0, min_insync: int = 0) -> pb.TopicDescription:
    return cluster.any_call(
        "Admin", "AlterTopic", pb.AlterTopicRequest(name=topic, partitions=partitions, min_insync_replicas=min_insync)
    )


class Load:
    """A producer (acks=all, round robin over the partitions it knows, which it looks up again every
    50 sends, as a client's metadata refresh does) and a consumer of every known partition."""

    def __init__(self, cluster: Cluster, history: History, topic: str) -> None:
        self.cluster, self.history, self.topic = cluster, history, topic
        self.stop = threading.Event()
        self.acked: dict[int, int] = {}
        self.threads = [threading.Thread(target=self._produce), threading.Thread(target=self._consume)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def total(self) -> int:
        return sum(self.acked.values())

    def _meta(self) -> tuple[int, dict[int, str]]:
        try:
            meta = self.cluster.metadata(self.topic)
        except TidelogError:
            return 0, {}
        return len(meta), {p: m.leader_address for p, m in meta.items() if m.leader_address}

    def _produce(self) -> None:
        count, leaders = self._meta()
        n = 0
        while not self.stop.is_set() and n < 20_000:
            if n % 50 == 0 or not count:
                count, leaders = self._meta() if n % 50 == 0 or not count else (count, leaders)
            if not count:
                time.sleep(0.05)
                n += 1
                continue
            p = n % count
            if p not in leaders:
                time.sleep(0.02)
                count, leaders = self._meta()
            elif self.cluster.send(self.history, "p1", self.topic, p, b"p1-%d" % n, leaders):
                self.acked[p] = self.acked.get(p, 0) + 1
            n += 1

    def _consume(self) -> None:
        offsets: dict[int, int] = {}
        count, leaders = self._meta()
        rounds = 0
        while not self.stop.is_set():
            rounds += 1
            if rounds % 20 == 0 or not count:
                count, leaders = self._meta()
                if not count:
                    time.sleep(0.05)
                    continue
            for p in range(count):
                if p not in leaders:
                    count, leaders = self._meta()
                    break
                offsets[p] = self.cluster.poll(self.history, "c1", self.topic, p, offsets.get(p, 0), leaders)


def test_partitions_grow_and_min_insync_replicas_change_under_load(cluster):
    """2 → 4 partitions and min_insync_replicas 2 → 3 → 2 while a producer (acks=all) and a consumer
    run; with 3 required and a broker killed acks=all is refused (NOT_ENOUGH_REPLICAS) before
    appending, and accepted again once it is back to 2. The history checker finds nothing wrong."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    topic = "grow"
    cluster.create_topic(topic, partitions=2, rf=3, min_isr=2)
    cluster.wait_leaders(topic, 2, isr=3)
    history = History()
    with Load(cluster, history, topic) as load:
        cluster.wait(lambda: load.total() >= 30 + rng.randrange(50), what="acks before the alter")
        desc = alter(cluster, topic, partitions=4)
        assert len(desc.partitions) == 4
        meta = cluster.wait_leaders(topic, 4, isr=3)
        assert {meta[p].replicas[0] for p in range(4)} == {1, 2, 3}  # preferred leaders still spread
        assert all(sorted(m.replicas) == [1, 2, 3] for m in meta.values())
        cluster.wait(lambda: all(load.acked.get(p, 0) >= 10 for p in range(4)), what="acks on the new partitions")
        with pytest.raises(InvalidPartitionError, match="has 4 partitions; the count can only grow"):
            alter(cluster, topic, partitions=3)

        assert alter(cluster, topic, min_insync=3).config["min_insync_replicas"] == "3"
        victim = next(b for b in meta[0].replicas if b != meta[0].leader_id)
        cluster.kill(victim)
        cluster.wait(
            lambda: all(victim not in m.isr and m.leader_address for m in cluster.metadata(topic).values()),
            what=f"broker {victim} leaving every ISR",
        )
        leaders = leaders_of(cluster, topic)
        attempts = iter(range(1_000_000))

        def refused(p: int) -> bool:
            """One logged acks=all attempt: True when the leader refused it before appending (its own
            view of the ISR may trail etcd's by a moment: an earlier attempt may still be taken)."""
            value = b"strict-%d-%d" % (p, next(attempts))
            op = history.send_invoke("p3", topic, p, value)
            request = pb.ProduceRecordsRequest(
                topic=topic, partition=p, records=[pb.Record(value=value)], acks=pb.ACKS_ALL
            )
            try:
                reply = cluster.call(leaders[p], "Producer", "ProduceRecords", request)
            except NotEnoughReplicasError as exc:
                history.send_fail(op, exc.message)
                assert "below min_insync_replicas=3" in exc.message
                return True
            except TidelogError as exc:
                history.send_info(op, f"{type(exc).__name__}: {exc.message}")
                return False
            history.send_ok(op, reply.results[0].base_offset)
            return False

        for p in range(4):  # refused before appending, by the leader, without a restart
            cluster.wait(lambda p=p: refused(p), timeout_s=10, what=f"{topic}-{p} refusing acks=all")
        assert alter(cluster, topic, min_insync=2).config["min_insync_replicas"] == "2"
        for p in range(4):
            cluster.send_acked(history, "p2", topic, p, b"after-%d" % p, leaders)
        before = load.total()
        cluster.wait(lambda: load.total() >= before + 50, what="the load's acks once min_insync_replicas is 2")
        cluster.restart(victim)
        cluster.wait_leaders(topic, 4, isr=3, timeout_s=60)
    report, logs = final_check(cluster, history, topic, 4)
    assert report.ok, f"seed={seed}: {report}"
    assert report.acknowledged >= 100
    assert all(len(copy) > 0 for p in (2, 3) for copy in logs[(topic, p)].values())  # every replica has them


def test_two_alters_at_once_one_lands_and_the_other_reads_the_new_count(cluster):
    cluster.create_topic("race", partitions=1, rf=3)
    cluster.wait_leaders("race", 1, isr=3)
    targets = [cluster.brokers[b].target for b in cluster.ids[:2]]
    outcomes: list[object] = [None, None]

    def run(i: int) -> None:
        try:
            outcomes[i] = len(
                cluster.call(
                    targets[i], "Admin", "AlterTopic", pb.AlterTopicRequest(name="race", partitions=3)
                ).partitions
            )
        except TidelogError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(map(type, outcomes), key=str) == sorted([int, InvalidPartitionError], key=str), outcomes
    refused = next(o for o in outcomes if isinstance(o, InvalidPartitionError))
    assert "has 3 partitions" in refused.message
    assert len(cluster.wait_leaders("race", 3, isr=3)) == 3
    # the command line: a runtime refusal is exit 1 with one line on stderr
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tidelog",
            "topics",
            "alter",
            "race",
            "--min-insync-replicas",
            "4",
            "--server",
            targets[0],
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "tidelog: error: min_insync_replicas must be 1 to the replication factor 3 of topic 'race', got 4: "
        "no acks=all produce could ever succeed"
    ]


def test_a_producer_with_keys_uses_the_added_partitions_after_its_metadata_refresh(cluster):
    """Kafka's documented behaviour: once the producer sees the new count, keys hash over it."""
    from tidelog.client import Admin, Producer

    cluster.create_topic("keyed", partitions=2, rf=3)
    cluster.wait_leaders("keyed", 2, isr=3)
    targets = ",".join(cluster.brokers[b].target for b in cluster.ids)
    keys = [b"user-%d" % i for i in range(40)]
    with Producer(targets, acks="all", metadata_max_age_s=0.5) as producer:
        for k in keys:
            producer.send("keyed", b"before", key=k)
        producer.flush(60)
        alter(cluster, "keyed", partitions=4)
        cluster.wait_leaders("keyed", 4, isr=3)
        time.sleep(1.0)  # past metadata_max_age_s: the producer looks the topic up again
        for k in keys:
            producer.send("keyed", b"after", key=k).result(60)
    with Admin(targets) as admin:
        ends = [p.log_end for p in admin.describe("keyed")["partitions"]]
    assert len(ends) == 4 and sum(ends) == 80
    assert ends[2] + ends[3] > 0, ends  # some keys moved to the new partitions


@dataclass
class Throttled(Settings):
    throttle_bytes_per_s: int = 50_000_000  # each broker's own setting: far above what the test sends

    def toml(self) -> str:
        return super().toml() + f"replication_throttle_bytes_per_s = {self.throttle_bytes_per_s}\n"


def set_throttle(cluster: Cluster, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tidelog", "cluster", "throttle", *args, "--cluster", cluster.etcd.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_follower_catching_up_is_throttled_and_rejoins_while_producers_keep_their_acks(tmp_path):
    """A follower is killed, about 0.75 MB is produced, the throttle is lowered to 200 kB/s at runtime
    (`tidelog cluster throttle`) and the follower restarted: it catches up and rejoins the ISR while
    the producer keeps getting acks (acks=all, min_insync_replicas 2), and the leader's metrics show
    the throttling. Cleared, each broker's own setting applies again. No timing asserted."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    cluster = Cluster(str(tmp_path), 3, Throttled()).start()
    try:
        topic = "bulk"
        cluster.create_topic(topic, partitions=1, rf=3, min_isr=2)
        meta = cluster.wait_leaders(topic, 1, isr=3)
        leader = meta[0].leader_id
        port = cluster.brokers[leader].metrics_port
        assert scrape(port)["tidelog_replication_throttle_bytes_per_second"] == 50_000_000
        victim = rng.choice([b for b in meta[0].replicas if b != leader])
        cluster.kill(victim)
        cluster.wait(lambda: victim not in cluster.metadata(topic)[0].isr, what=f"broker {victim} leaving the ISR")
        history, leaders = History(), leaders_of(cluster, topic)
        blob = bytes(rng.randrange(256) for _ in range(8192))
        bulk = 90  # records of 8 KiB: about 0.75 MB the follower lacks, ~4 s of catching up at 200 kB/s
        for i in range(bulk):
            cluster.send_acked(history, "bulk", topic, 0, b"%d:" % i + blob, leaders)
        assert "-> 200000 bytes/s" in set_throttle(cluster, "--rate", "200000")
        cluster.wait(
            lambda: scrape(port)["tidelog_replication_throttle_bytes_per_second"] == 200_000,
            what="the leader applying the runtime throttle",
        )
        cluster.restart(victim)
        acked_while_catching_up = 0
        n = 0
        deadline = time.monotonic() + 90
        while victim not in cluster.metadata(topic)[0].isr:
            assert time.monotonic() < deadline, "the follower did not rejoin the ISR"
            if cluster.send(history, "p", topic, 0, b"small-%d" % n, leaders):
                acked_while_catching_up += 1
            elif 0 not in leaders:
                leaders = leaders_of(cluster, topic)
            n += 1
        assert acked_while_catching_up > 0
        gauges = scrape(port)
        assert gauges["tidelog_replication_throttled_bytes_total"] > 0
        assert gauges["tidelog_replication_throttled_seconds_total"] > 0
        set_throttle(cluster, "--clear")
        cluster.wait(
            lambda: scrape(port)["tidelog_replication_throttle_bytes_per_second"] == 50_000_000,
            what="the leader going back to its own setting",
        )
        report, _ = final_check(cluster, history, topic, 1)
        assert report.ok, f"seed={seed}: {report}"
        assert report.acknowledged >= bulk + acked_while_catching_up
    finally:
        cluster.stop()
