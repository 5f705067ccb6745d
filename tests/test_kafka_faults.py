"""Kafka clients through broker and member crashes: an idempotent producer keeps exactly once per
partition across SIGKILLs of the broker, and a SIGKILLed group member's partitions move to the survivor
(one owner at a time, by the session timeout). Seeded; the seed is printed."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tests.helpers.kafka_stream import NumberedStream
from tests.server_process import ServerProcess
from tidelog.client import Consumer

confluent_kafka = pytest.importorskip("confluent_kafka", reason="confluent-kafka is a test dependency")
confluent_admin = pytest.importorskip("confluent_kafka.admin", reason="confluent-kafka is a test dependency")

QUIET = {"log_level": 0}


def test_an_idempotent_producer_writes_each_record_once_through_broker_kills(tmp_path):
    """The broker is SIGKILLed while a producer streams: requests in flight lose their answers, and the
    producer resends them to the restarted broker, which must recognise what it had written."""
    seed = int(os.environ.get("TIDELOG_SEED", random.randrange(1 << 30)))
    print(f"seed={seed}")
    rng = random.Random(seed)
    server = ServerProcess(str(tmp_path / "data"), kafka=True).start()
    total = 30_000
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": server.kafka_target,
            "enable.idempotence": True,
            "linger.ms": rng.choice([0, 1, 5]),
            "batch.num.messages": rng.choice([50, 500]),
            "message.timeout.ms": 120_000,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
            **QUIET,
        }
    )
    stream = NumberedStream(producer, "exactly-once", total, b"." * 200)
    delivered, streaming = stream.delivered, stream.thread
    try:
        streaming.start()
        for _ in range(3):
            time.sleep(rng.uniform(0.2, 0.8))
            server.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            server.start()
        streaming.join(120)
        assert producer.flush(120) == 0, "records left undelivered"
    finally:
        server.stop()
    assert len(delivered) == total and not stream.failed(), f"seed={seed}: failed deliveries {stream.failed()[:5]}"

    server.start()
    try:
        values: list[int] = []
        deadline = time.monotonic() + 60
        with Consumer(server.target, "exactly-once", partition=0, offset="earliest") as c:
            while len(values) < total and time.monotonic() < deadline:
                values += [int(r.value[:8]) for r in c.poll(0.5)]
            values += [int(r.value[:8]) for r in c.poll(0.5)]  # anything past the total: duplicates
    finally:
        server.stop()
    assert values == list(range(total)), (
        f"seed={seed}: {len(values)} records, {len(values) - len(set(values))} duplicates, "
        f"first out of order at {next((k for k, v in enumerate(values) if v != k), None)}"
    )


MEMBER = textwrap.dedent(
    """
    import sys, time
    import confluent_kafka
    c = confluent_kafka.Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 200, "auto.offset.reset": "earliest",
        "log_level": 0})
    c.subscribe([sys.argv[3]])
    while True:
        c.poll(0.2)
        print(sorted(tp.partition for tp in c.assignment()), flush=True)
    """
)


def test_a_killed_members_partitions_move_to_the_survivor_after_its_session(tmp_path):
    config = tmp_path / "tidelog.toml"
    config.write_text("group_initial_rebalance_delay_ms = 200\n")
    server = ServerProcess(str(tmp_path / "data"), "--config", str(config), kafka=True).start()
    admin = confluent_admin.AdminClient({"bootstrap.servers": server.kafka_target, **QUIET})
    admin.create_topics([confluent_admin.NewTopic("jobs", num_partitions=4)])["jobs"].result(10)
    child = subprocess.Popen(
        [sys.executable, "-c", MEMBER, server.kafka_target, "workers", "jobs"],
        stdout=subprocess.PIPE,
        text=True,
    )
    survivor = confluent_kafka.Consumer(
        {
            "bootstrap.servers": server.kafka_target, "group.id": "workers", "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 200, **QUIET,
        }
    )  # fmt: skip
    latest: list[set] = [set()]  # what the child printed last: its assignment

    def follow() -> None:
        for line in child.stdout or ():
            latest[0] = set(json.loads(line))

    threading.Thread(target=follow, daemon=True).start()
    try:
        survivor.subscribe(["jobs"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            survivor.poll(0.2)
            theirs = latest[0]
            mine = {tp.partition for tp in survivor.assignment()}
            if mine and theirs and not mine & theirs and mine | theirs == {0, 1, 2, 3}:
                break
        assert mine and theirs and not mine & theirs, f"split between the two: {mine} / {theirs}"
        child.kill()  # SIGKILL: no LeaveGroup, only its session running out moves its partitions
        child.wait()
        killed_at = time.monotonic()
        while time.monotonic() - killed_at < 30 and {tp.partition for tp in survivor.assignment()} != {0, 1, 2, 3}:
            survivor.poll(0.2)
            assert not {tp.partition for tp in survivor.assignment()} & theirs or time.monotonic() - killed_at > 5, (
                "the survivor got the dead member's partitions before its session could run out"
            )
        assert {tp.partition for tp in survivor.assignment()} == {0, 1, 2, 3}
    finally:
        child.kill()
        survivor.close()
        server.stop()
