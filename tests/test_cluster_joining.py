"""A broker restarted within its previous session waits for that session to expire before it joins its
cluster; meanwhile its gRPC port is open (clients know its address). It must not act as a single
broker then: a produce appended to its local log outside replication was acknowledged with acks=all
and lost (found by the network chaos loop, seed 20261207, fault 190: 140 acknowledged records lost).
While joining it refuses produce, fetch and metadata as unavailable (retriable; nothing appended)."""

from __future__ import annotations

import threading
import time

import pytest

from tidelog.client import Producer

from .helpers.cluster import Cluster, Settings, dump
from .helpers.history import History, check

pytestmark = pytest.mark.slow  # real processes

TOPIC = "j"


def test_a_broker_joining_its_cluster_acknowledges_nothing(tmp_path):
    """The leader is killed and restarted at once; a Producer that knew it as the leader keeps sending
    (acks=all). Whatever it acknowledges must be in the committed log at the end (history checker)."""
    # a long session: the restarted broker waits (up to) that long for its old registration to expire
    settings = Settings(session_ms=4000, lag_ms=4000, replication_timeout_ms=2000)
    cluster = Cluster(str(tmp_path), 3, settings).start()
    history = History()
    try:
        cluster.create_topic(TOPIC, partitions=1, rf=3, min_isr=2)
        meta = cluster.wait_leaders(TOPIC, 1, isr=3)[0]
        victim = meta.leader_id
        # it knows the leader, as a producer running when the leader died does
        producer = Producer([b.target for b in cluster.brokers.values()], acks="all", delivery_timeout_s=20)
        op = history.send_invoke("p", TOPIC, 0, b"warm")
        history.send_ok(op, producer.send(TOPIC, b"warm", partition=0).result(30).offset)
        cluster.kill(victim)
        restarted = threading.Event()

        def restart() -> None:
            cluster.restart(victim)
            restarted.set()

        thread = threading.Thread(target=restart)
        thread.start()
        n = 0
        try:
            while not restarted.is_set() or n < 200:
                n += 1
                op = history.send_invoke("p", TOPIC, 0, b"j-%d" % n)
                future = producer.send(TOPIC, b"j-%d" % n, partition=0)
                future.add_done_callback(lambda f, op=op: _log(history, op, f))
                time.sleep(0.01)
            producer.flush(30)
        finally:
            producer.close(30)
            thread.join(60)
        final = cluster.wait_leaders(TOPIC, 1, isr=3, timeout_s=60)[0]
        time.sleep(0.5)
    finally:
        cluster.stop()
    logs = {b: dump(cluster.data_dir(b), TOPIC, 1).get(0, []) for b in cluster.ids}
    committed = {(TOPIC, 0): min(len(logs[b]) for b in final.isr)}
    report = check(history, {(TOPIC, 0): logs}, committed, {(TOPIC, 0): set(final.isr)})
    print(report)
    assert report.ok, str(report)
    assert report.acknowledged >= 100


def _log(history: History, op: int, future) -> None:
    error = future.exception(0)
    if error is None:
        history.send_ok(op, future.result(0).offset)
    else:
        history.send_info(op, f"{type(error).__name__}: {error}")
