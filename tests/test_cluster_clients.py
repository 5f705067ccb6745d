"""tidelog's own clients against a three-broker cluster: the Producer (acks=all, idempotent) and a
consumer group carry on when the leader of a partition is SIGKILLed, with every acknowledged record
kept once, in order, and read by the group; the AsyncConsumer follows the new leader too.
Every send and every record read is checked by the history checker."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from tidelog.client import AsyncConsumer, Consumer, Producer

from .helpers.cluster import dump
from .helpers.history import History, check

pytestmark = pytest.mark.slow  # real processes

TOPIC = "orders"


def test_producer_and_group_carry_on_through_a_leader_kill(cluster):
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    cluster.create_topic(TOPIC, partitions=3, rf=3, min_isr=2)
    meta = cluster.wait_leaders(TOPIC, 3, isr=3)
    bootstrap = ",".join(cluster.brokers[b].target for b in cluster.ids)
    history = History()
    read: dict[int, list[tuple[int, bytes]]] = {0: [], 1: [], 2: []}
    stop = threading.Event()

    failures: list[BaseException] = []
    holder: list = []

    def consume() -> None:
        try:
            read_forever()
        except BaseException as exc:  # the test fails with it, not with a silent stop
            failures.append(exc)
            raise

    def read_forever() -> None:
        with Consumer(
            bootstrap, group_id="g", topics=[TOPIC], auto_offset_reset="earliest", session_timeout_ms=10_000
        ) as group:
            holder.append(group)
            while not stop.is_set():
                records = group.poll(0.5)
                by_partition: dict[int, list] = {}
                for r in records:
                    by_partition.setdefault(r.partition, []).append((r.offset, r.value))
                for p, got in by_partition.items():
                    history.poll_ok("group", TOPIC, p, got)
                    read[p].extend(got)
                if records:
                    group.commit()

    reader = threading.Thread(target=consume)
    reader.start()
    n_before, n_after = 300 + rng.randrange(200), 300
    try:
        with Producer(bootstrap, acks="all", linger_ms=2, delivery_timeout_s=60) as producer:
            pending = []

            def send(i: int) -> None:
                value = b"v%d" % i
                p = i % 3
                op = history.send_invoke("producer", TOPIC, p, value)
                pending.append((op, producer.send(TOPIC, value, partition=p)))

            for i in range(n_before):
                send(i)
            producer.flush(60)
            victim = meta[0].leader_id
            cluster.kill(victim)  # SIGKILL the leader of partition 0 while sends are in flight
            for i in range(n_before, n_before + n_after):
                send(i)
                if i % 50 == 0:
                    time.sleep(0.05)
            producer.flush(120)
            errors = []
            for op, future in pending:
                try:
                    history.send_ok(op, future.result(0).offset)
                except Exception as exc:  # noqa: BLE001 - every failure is recorded, the checker judges it
                    history.send_info(op, repr(exc))
                    errors.append(repr(exc))
        # the idempotent producer retries through the failover: every send succeeds
        assert not errors, f"{len(errors)} sends failed, e.g. {errors[:3]}"
        total = n_before + n_after
        cluster.wait(
            lambda: failures or sum(len(v) for v in read.values()) >= total,
            timeout_s=90,
            what=lambda: f"the group reading every acknowledged record ({_progress(read, holder)})",
        )
    finally:
        stop.set()
        reader.join(timeout=60)
    assert not failures, f"the group consumer failed: {failures[0]!r}"
    assert sum(len(read[p]) for p in read) >= total
    final = cluster.wait_leaders(TOPIC, 3)
    for b in cluster.brokers.values():
        b.stop()
    logs = {b: dump(cluster.data_dir(b), TOPIC, 3) for b in cluster.ids if b != victim}
    replica_logs = {(TOPIC, p): {b: logs[b].get(p, []) for b in logs} for p in range(3)}
    in_sync = {(TOPIC, p): set(final[p].isr) - {victim} for p in range(3)}
    committed = {(TOPIC, p): min(len(replica_logs[(TOPIC, p)][b]) for b in in_sync[(TOPIC, p)]) for p in range(3)}
    report = check(history, replica_logs, committed, in_sync)
    assert report.ok, f"seed={seed}: {report}"
    assert report.acknowledged == total  # the idempotent producer's retries made every send succeed
    for p in range(3):  # exactly once per partition in the log, in the order sent
        values = [v for _, v, _ in replica_logs[(TOPIC, p)][next(iter(in_sync[(TOPIC, p)]))]]
        assert len(values) == len(set(values))
        order = [int(v[1:]) for v in values]
        assert order == sorted(order)


def test_async_consumer_follows_the_new_leader(cluster):
    cluster.create_topic(TOPIC, partitions=1, rf=3, min_isr=2)
    meta = cluster.wait_leaders(TOPIC, 1, isr=3)
    bootstrap = ",".join(cluster.brokers[b].target for b in cluster.ids)
    with Producer(bootstrap, acks="all") as producer:
        for i in range(200):
            producer.send(TOPIC, b"a%d" % i, partition=0)
        producer.flush(60)

    more = threading.Thread(target=_produce_more, args=(bootstrap,))

    async def read_all() -> list[bytes]:
        got: list[bytes] = []
        async with AsyncConsumer(bootstrap, TOPIC, partition=0, offset=0) as consumer:
            async for record in consumer:
                got.append(record.value)
                if len(got) == 100:  # kill the leader and produce more, while the consumer goes on reading
                    cluster.kill(meta[0].leader_id)
                    more.start()
                if len(got) == 300:
                    return got
        return got

    try:
        got = asyncio.run(asyncio.wait_for(read_all(), 120))
    finally:
        if more.is_alive() or more.ident:
            more.join(timeout=120)
    assert got == [b"a%d" % i for i in range(200)] + [b"b%d" % i for i in range(100)]


def _produce_more(bootstrap: str) -> None:
    with Producer(bootstrap, acks="all", delivery_timeout_s=60) as producer:
        for i in range(100):
            producer.send(TOPIC, b"b%d" % i, partition=0)
        producer.flush(90)


def _progress(read, holder) -> str:
    group = holder[0] if holder else None
    state = ""
    if group is not None:
        state = f"; assignment {group.assignment()}, positions {[group.position((TOPIC, p)) for p in range(3)]}"
    return f"read per partition {[len(read[p]) for p in sorted(read)]}{state}"
