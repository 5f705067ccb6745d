"""The Producer's adaptive batching: with linger_ms=0 a lone record goes at once, and records sent while
the broker is busy coalesce into one request instead of queueing one request each; nothing is
reordered, lost or written twice on the way."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tidelog.client import Admin, Consumer, Producer
from tidelog.engine.engine import Engine

from .server_process import ServerProcess


@pytest.fixture
def server(tmp_path):
    s = ServerProcess(str(tmp_path / "data"), "--fsync", "never").start()
    try:
        yield s
    finally:
        s.stop()


def read_all(target: str, topic: str, count: int) -> list:
    got: list = []
    with Consumer(target, topic, partition=0, offset="earliest") as consumer:
        deadline = time.monotonic() + 30
        while len(got) < count and time.monotonic() < deadline:
            got += consumer.poll(0.2)
    return got


def test_a_lone_record_goes_at_once_with_linger_zero(server):
    with Admin(server.target) as admin:
        admin.create_topic("lone", 1)
    with Producer(server.target, linger_ms=0) as producer:
        # no flush(), no batch filling up: the record is acknowledged because it was sent at once
        metadata = producer.send("lone", b"now", partition=0).result(10)
        assert metadata.offset == 0
        (record,) = read_all(server.target, "lone", 1)
        assert record.value == b"now"


def test_records_sent_while_the_broker_is_busy_coalesce_into_one_request(server, tmp_path):
    """The broker is paused (SIGSTOP) with two requests in flight: the next records wait in one batch,
    which goes as one request once the broker answers again."""
    with Admin(server.target) as admin:
        admin.create_topic("busy", 1)
    producer = Producer(server.target, linger_ms=0)
    try:
        producer.send("busy", b"warm", partition=0).result(10)  # connected, the stream open
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            futures = []
            for i in range(200):  # one at a time: the producer's loop sees each record on its own
                futures.append(producer.send("busy", b"%04d" % i, partition=0))
                time.sleep(0.002)
            time.sleep(0.2)  # the loop has sent what it may, and holds the rest
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        offsets = [f.result(30).offset for f in futures]
    finally:
        producer.close()
    assert offsets == list(range(1, 201)), "in order, each once"
    server.stop()
    with Engine.open(server.data_dir) as engine:
        batches = list(engine.fetch("busy", 0, 0, max_bytes=1 << 20).batches())
    counts = [b.count for b in batches]
    assert sum(counts) == 201
    # the warm-up record, at most two requests in flight when the broker stopped, then one batch
    assert len(batches) <= 4, f"records were not coalesced: batches of {counts}"
    assert counts[-1] >= 190, f"the records sent while the broker was busy were not one batch: {counts}"
