"""Queues in a three-broker cluster: the queue coordinator (the leader of `__queue_state`-0) is SIGKILLed
while workers take and acknowledge jobs; the next leader carries on from the replicated state. Checked:
every job is acknowledged, none is delivered again after its acknowledgement returned, and a job's
delivery count never goes back. A poison job reaches the dead-letter topic (created in the cluster)
after exactly max_deliveries; the operator's commands reach the coordinator wherever it is."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tidelog.client import Admin, Producer, QueueConsumer
from tidelog.errors import TidelogError

pytestmark = pytest.mark.slow  # real processes

TOPIC = "jobs"


def _coordinator(cluster) -> int:
    meta = cluster.wait(
        lambda: (m := cluster.metadata("__queue_state")) and m[0].leader_id in cluster.live() and m,
        what="a queue coordinator",
    )
    return meta[0].leader_id


def test_queue_carries_on_through_a_coordinator_kill(cluster):
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    cluster.create_topic(TOPIC, partitions=2, rf=3, min_isr=2)
    cluster.wait_leaders(TOPIC, 2, isr=3)
    bootstrap = ",".join(cluster.brokers[b].target for b in cluster.ids)
    jobs = 300 + rng.randrange(200)
    with Producer(bootstrap, acks="all") as producer:
        for i in range(jobs):
            producer.send(TOPIC, b"j%d" % i, partition=i % 2)
        producer.flush(60)

    lock = threading.Lock()
    acked_at: dict[tuple[int, int], float] = {}  # job -> when an ack of it was known to have counted
    deliveries: list[tuple[tuple[int, int], int, float]] = []  # (job, delivery count, receive started)
    failures: list[BaseException] = []
    stop = threading.Event()

    def work(n: int) -> None:
        try:
            with QueueConsumer(
                bootstrap, queue="workers", topics=[TOPIC], lock_ms=4000, auto_extend=False, timeout_s=60
            ) as q:
                while not stop.is_set():
                    started = time.monotonic()
                    batch = q.receive(rng.choice((1, 10, 40)), wait_ms=300)
                    with lock:
                        deliveries.extend(((m.partition, m.offset), m.delivery_count, started) for m in batch)
                    if not batch:
                        continue
                    for attempt in range(50):
                        try:
                            q.ack(batch)
                            break
                        except TidelogError:  # the outcome is unknown (the coordinator died): ack again
                            time.sleep(0.2)
                    else:
                        raise AssertionError("acks failed for 10 s")
                    now = time.monotonic()
                    with lock:
                        for m in batch:  # counted now, or by the answer lost with the old coordinator
                            if m.refused is None or m.refused.startswith("already"):
                                acked_at.setdefault((m.partition, m.offset), now)
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for w in workers:
        w.start()
    try:
        cluster.wait(lambda: failures or len(acked_at) >= jobs // 3, timeout_s=60, what="a third of the jobs acked")
        victim = _coordinator(cluster)
        cluster.kill(victim)  # SIGKILL the queue coordinator while workers receive and ack
        print(f"killed the coordinator, broker {victim}")
        cluster.wait(lambda: failures or _coordinator(cluster) != victim, what="a new coordinator")
        cluster.restart(victim)
        cluster.wait_leaders("__queue_state", 1, isr=3, timeout_s=60)
        cluster.wait(lambda: failures or len(acked_at) >= 2 * jobs // 3, timeout_s=60, what="2/3 of the jobs acked")
        second = rng.choice(cluster.live())  # the coordinator again, or a leader the queue reads from
        cluster.kill(second)
        print(f"killed broker {second} (coordinator: {_coordinator(cluster)})")
        cluster.wait(
            lambda: failures or len(acked_at) >= jobs,
            timeout_s=120,
            what=lambda: f"every job acked ({len(acked_at)} of {jobs})",
        )
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=90)
    assert not failures, f"seed={seed}: a worker failed: {failures[0]!r}"
    assert set(acked_at) == {(i % 2, i // 2) for i in range(jobs)}
    last_count: dict[tuple[int, int], int] = {}
    for job, count, started in sorted(deliveries, key=lambda d: d[2]):
        assert started <= acked_at[job], f"seed={seed}: {job} delivered again after its ack counted"
        assert count > last_count.get(job, 0), f"seed={seed}: {job}'s delivery count went back to {count}"
        last_count[job] = count

    with Admin(bootstrap) as admin:  # the operator's view comes from the new coordinator
        d = admin.describe_queue("workers")
    assert sum(p.in_flight + p.available for p in d.partitions) == 0
    assert sum(p.start for p in d.partitions) == jobs


def test_poison_job_dead_lettered_in_a_cluster(cluster):
    cluster.create_topic(TOPIC, partitions=1, rf=3, min_isr=2)
    cluster.wait_leaders(TOPIC, 1, isr=3)
    bootstrap = ",".join(cluster.brokers[b].target for b in cluster.ids)
    with Producer(bootstrap, acks="all") as producer:
        producer.send(TOPIC, b"poison", key=b"p").result(30)
    with QueueConsumer(
        bootstrap, queue="w", topics=[TOPIC], max_deliveries=3, dead_letter_topic="jobs.dlq", timeout_s=60
    ) as q:
        seen = []
        for _ in range(3):
            (m,) = q.receive(1, wait_ms=5000)
            seen.append(m.delivery_count)
            assert m.release(reason="boom")
        assert seen == [1, 2, 3]
        assert q.receive(1, wait_ms=500) == []
    with Admin(bootstrap) as admin:
        assert admin.describe_queue("w").totals["dead_lettered"] == 1
        topics = admin.list_topics()
    assert "jobs.dlq" in topics
    dlq = cluster.wait(lambda: cluster.metadata("jobs.dlq"), what="the dead-letter topic")
    reply = cluster.call(dlq[0].leader_address, "Consumer", "FetchRecords", _fetch("jobs.dlq"))
    (rec,) = reply.records
    heads = {h.key: h.value for h in rec.headers}
    assert rec.value == b"poison" and heads["tidelog-dlq-delivery-count"] == b"3"


def _fetch(topic: str):
    from tidelog.v1 import tidelog_pb2 as pb

    return pb.FetchRequest(topic=topic, partition=0, offset=0)
