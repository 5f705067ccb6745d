"""Unmodified Kafka clients against tidelog's Kafka listener, interleaved with tidelog's own gRPC client
and embedded engine on the same topics: confluent-kafka (librdkafka), kafka-python 3.x, aiokafka, and
kcat where installed.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid

import pytest

from tests.server_process import ServerProcess
from tidelog import Engine
from tidelog.client import Admin, Consumer, Producer
from tidelog.errors import InvalidRequestError

confluent_kafka = pytest.importorskip("confluent_kafka", reason="confluent-kafka is a test dependency")
confluent_admin = pytest.importorskip("confluent_kafka.admin", reason="confluent-kafka is a test dependency")
kafka = pytest.importorskip("kafka", reason="kafka-python is a test dependency")

QUIET = {"log_level": 2}  # librdkafka: errors only (it logs every reconnect at info)


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    directory = tmp_path_factory.mktemp("kafka")
    config = directory / "tidelog.toml"
    config.write_text("group_initial_rebalance_delay_ms = 200\n")
    server = ServerProcess(str(directory / "data"), "--config", str(config), kafka=True).start()
    yield server
    server.stop()


def confluent_producer(broker: ServerProcess, **settings):
    return confluent_kafka.Producer({"bootstrap.servers": broker.kafka_target, **QUIET, **settings})


def confluent_consumer(broker: ServerProcess, group: str, **settings):
    return confluent_kafka.Consumer(
        {
            "bootstrap.servers": broker.kafka_target,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            **QUIET,
            **settings,
        }
    )


def produce_confluent(producer, topic: str, values: list[bytes], **kwargs) -> list:
    """Produce and flush; the delivery reports (error, partition, offset) in order of delivery."""
    reports: list = []

    def delivered(err, msg) -> None:
        reports.append((err, msg.partition(), msg.offset(), msg.value()))

    for v in values:
        producer.produce(topic, v, on_delivery=delivered, **kwargs)
        producer.poll(0)
    assert producer.flush(30) == 0, "records left undelivered"
    return reports


def poll_confluent(consumer, count: int, timeout_s: float = 30.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        got.append(msg)
    return got


def read_grpc(broker: ServerProcess, topic: str, partition: int, count: int, timeout_s: float = 20.0) -> list:
    records: list = []
    deadline = time.monotonic() + timeout_s
    with Consumer(broker.target, topic, partition=partition, offset="earliest") as c:
        while len(records) < count and time.monotonic() < deadline:
            records += c.poll(0.5)
    return records


def test_an_idempotent_lz4_producer_writes_what_grpc_and_kafka_consumers_read(broker):
    topic = name("orders")
    values = [f"order-{i}".encode() for i in range(300)]
    producer = confluent_producer(broker, **{"enable.idempotence": True, "compression.type": "lz4", "linger.ms": 5})
    reports = produce_confluent(producer, topic, values, key=b"k")
    assert [r[0] for r in reports] == [None] * len(values)
    assert [r[2] for r in reports] == list(range(len(values))), "offsets in order, no gap, no duplicate"

    records = read_grpc(broker, topic, 0, len(values))
    assert [(r.offset, r.key, r.value) for r in records] == [(i, b"k", v) for i, v in enumerate(values)]

    consumer = confluent_consumer(broker, name("readers"))
    consumer.subscribe([topic])
    got = poll_confluent(consumer, len(values))
    consumer.close()
    assert [(m.offset(), m.key(), m.value()) for m in got] == [(i, b"k", v) for i, v in enumerate(values)]


def test_records_produced_through_grpc_in_every_codec_are_read_by_kafka_clients(broker):
    topic = name("from-grpc")
    with Admin(broker.target) as admin:
        admin.create_topic(topic, 1)
    codecs = ("none", "gzip", "snappy", "lz4", "zstd")
    for compression in codecs:
        with Producer(broker.target, compression=compression) as p:
            for i in range(50):
                p.send(topic, f"{compression}-{i}".encode(), key=str(i).encode(), headers=[("h", b"x")])
            p.flush()
    want = [f"{c}-{i}".encode() for c in codecs for i in range(50)]

    consumer = confluent_consumer(broker, name("g"))
    consumer.subscribe([topic])
    got = poll_confluent(consumer, len(want))
    consumer.close()
    assert [m.value() for m in got] == want
    assert got[0].headers() == [("h", b"x")]

    kp = kafka.KafkaConsumer(
        topic, bootstrap_servers=broker.kafka_target, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    assert [m.value for m in kp] == want
    kp.close()


@pytest.mark.parametrize("acks", [1, "all"])
def test_kafka_python_producers_of_every_codec_are_stored_verbatim_and_read_everywhere(broker, acks):
    topic = name("codecs")
    sent: dict[str, list] = {}
    for codec in ("gzip", "snappy", "lz4", "zstd", None):
        producer = kafka.KafkaProducer(bootstrap_servers=broker.kafka_target, compression_type=codec, acks=acks)
        futures = [producer.send(topic, key=b"k", value=f"{codec}-{i}".encode()) for i in range(20)]
        producer.flush()
        sent[str(codec)] = [f.get(10).offset for f in futures]
        producer.close()
    offsets = [o for batch in sent.values() for o in batch]
    assert offsets == list(range(len(offsets)))

    want = [f"{c}-{i}".encode() for c in ("gzip", "snappy", "lz4", "zstd", None) for i in range(20)]
    assert [r.value for r in read_grpc(broker, topic, 0, len(want))] == want
    consumer = confluent_consumer(broker, name("g"))
    consumer.subscribe([topic])
    assert [m.value() for m in poll_confluent(consumer, len(want))] == want
    consumer.close()


def test_the_embedded_engine_reads_each_codec_as_the_client_compressed_it(tmp_path):
    """Stored verbatim: the batches keep the codec the client chose, and tidelog's readers decode them."""
    server = ServerProcess(str(tmp_path / "data"), kafka=True).start()
    topic = name("verbatim")
    codecs = ("gzip", "snappy", "lz4", "zstd")
    try:
        for codec in codecs:
            producer = kafka.KafkaProducer(bootstrap_servers=server.kafka_target, compression_type=codec, linger_ms=50)
            for i in range(10):
                producer.send(topic, value=f"{codec}-{i}".encode())
            producer.flush()
            producer.close()
    finally:
        server.stop()
    with Engine.open(str(tmp_path / "data")) as engine:
        result = engine.fetch(topic, 0, 0, 1 << 20)
        assert [b.codec for b in result.batches()] == list(codecs)
        assert [r.value for r in result] == [f"{c}-{i}".encode() for c in codecs for i in range(10)]


def test_a_group_commits_and_a_new_member_resumes_where_it_left_off(broker):
    topic, group = name("resume"), name("billing")
    values = [f"v{i}".encode() for i in range(100)]
    produce_confluent(confluent_producer(broker), topic, values)

    first = confluent_consumer(broker, group)
    first.subscribe([topic])
    got = poll_confluent(first, 40)
    assert len(got) == 40
    first.commit(message=got[-1], asynchronous=False)
    first.close()

    with Admin(broker.target) as admin:  # the commit is tidelog's own: its groups tools see it, with lag
        described = admin.describe_group(group)
    (row,) = [p for p in described["partitions"] if p["topic"] == topic]
    assert (row["committed"], row["end"], row["lag"]) == (40, 100, 60)

    second = confluent_consumer(broker, group)
    second.subscribe([topic])
    rest = poll_confluent(second, 60)
    second.close()
    assert [m.offset() for m in rest] == list(range(40, 100))


def test_two_members_split_the_partitions_and_the_survivor_takes_them_all(broker):
    topic, group = name("rebalance"), name("pair")
    admin = confluent_admin.AdminClient({"bootstrap.servers": broker.kafka_target, **QUIET})
    admin.create_topics([confluent_admin.NewTopic(topic, num_partitions=4)])[topic].result(10)
    produce_confluent(confluent_producer(broker), topic, [b"x"] * 40)

    members = [confluent_consumer(broker, group, **{"heartbeat.interval.ms": 200}) for _ in range(2)]
    for m in members:
        m.subscribe([topic])

    def assignments() -> list[set]:
        for m in members:
            m.poll(0.2)
        return [{tp.partition for tp in m.assignment()} for m in members]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        split = assignments()
        if all(split) and sum(len(s) for s in split) == 4:
            break
    assert split[0] and split[1], f"both members own partitions: {split}"
    assert not split[0] & split[1], "no partition has two owners"
    assert split[0] | split[1] == {0, 1, 2, 3}
    with Admin(broker.target) as tidelog_admin:  # tidelog's own tools see the Kafka group as they see theirs
        described = tidelog_admin.describe_group(group)
    assert described["state"] == "stable" and len(described["members"]) == 2
    assert sorted(sorted(p for _, p in m["assignment"]) for m in described["members"]) == sorted(
        sorted(s) for s in split
    )
    assert all(m["topics"] == [topic] for m in described["members"])

    members[1].close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and {tp.partition for tp in members[0].assignment()} != {0, 1, 2, 3}:
        members[0].poll(0.2)
    assert {tp.partition for tp in members[0].assignment()} == {0, 1, 2, 3}
    members[0].close()


def test_kafka_python_admin_manages_topics_offsets_and_groups(broker):
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic, OffsetSpec

    topic, group = name("admin"), name("adm-group")
    admin = kafka.KafkaAdminClient(bootstrap_servers=broker.kafka_target)
    admin.create_topics([NewTopic(topic, 3, 1, topic_configs={"retention.ms": "3600000"})])
    assert topic in admin.list_topics()
    with pytest.raises(kafka.errors.TopicAlreadyExistsError):
        admin.create_topics([NewTopic(topic, 1, 1)])
    with pytest.raises(kafka.errors.InvalidConfigurationError):  # an unknown config is refused, not ignored
        admin.create_topics([NewTopic(name("bad"), 1, 1, topic_configs={"no.such.setting": "1"})])

    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    (described,) = configs["topic"].values() if isinstance(configs, dict) else [configs]
    assert described["retention.ms"]["value"] == "3600000"
    with Admin(broker.target) as tidelog_admin:  # the same setting, seen through tidelog's own API
        assert int(tidelog_admin.describe(topic)["config"]["retention_ms"]) == 3_600_000

    before = int(time.time() * 1000) - 1
    producer = kafka.KafkaProducer(bootstrap_servers=broker.kafka_target)
    for i in range(30):
        producer.send(topic, value=b"v", partition=0)
    producer.flush()
    producer.close()
    tp = kafka.TopicPartition(topic, 0)
    assert admin.list_partition_offsets({tp: OffsetSpec.EARLIEST})[tp].offset == 0
    assert admin.list_partition_offsets({tp: OffsetSpec.LATEST})[tp].offset == 30
    consumer = kafka.KafkaConsumer(bootstrap_servers=broker.kafka_target)
    found = consumer.offsets_for_times({tp: before})[tp]
    assert found is not None and found.offset == 0
    assert consumer.offsets_for_times({tp: int(time.time() * 1000) + 60_000})[tp] is None
    consumer.close()

    reader = kafka.KafkaConsumer(
        topic, bootstrap_servers=broker.kafka_target, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False, consumer_timeout_ms=3000,
    )  # fmt: skip
    assert len(list(reader)) == 30
    reader.commit()
    reader.close()
    assert any(g["group_id"] == group for g in admin.list_groups())
    assert admin.describe_groups([group])[group]["group_state"] == "Empty"
    assert admin.list_group_offsets(group)[group][tp].offset == 30
    admin.delete_groups([group])
    assert not any(g["group_id"] == group for g in admin.list_groups())

    admin.delete_topics([topic])
    assert topic not in admin.list_topics()
    admin.close()


def test_aiokafka_produces_and_consumes(broker):
    aiokafka = pytest.importorskip("aiokafka", reason="aiokafka is a test dependency")
    topic = name("aio")

    async def run() -> list:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=broker.kafka_target, acks="all")
        await producer.start()
        try:
            for i in range(25):
                await producer.send_and_wait(topic, f"a{i}".encode())
        finally:
            await producer.stop()
        consumer = aiokafka.AIOKafkaConsumer(
            topic, bootstrap_servers=broker.kafka_target, group_id=name("aio"), auto_offset_reset="earliest"
        )
        await consumer.start()
        got: list = []
        try:
            while len(got) < 25:
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 20)
                for records in batch.values():
                    got += [r.value for r in records]
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    assert asyncio.run(run()) == [f"a{i}".encode() for i in range(25)]
    assert [r.value for r in read_grpc(broker, topic, 0, 25)] == [f"a{i}".encode() for i in range(25)]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat (Debian package kcat) is not installed")
def test_kcat_lists_topics_and_reads_records(broker):
    topic = name("kcat")
    produce_confluent(confluent_producer(broker), topic, [b"one", b"two"])
    listed = subprocess.run(["kcat", "-b", broker.kafka_target, "-L"], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert f'topic "{topic}"' in listed.stdout
    read = subprocess.run(
        ["kcat", "-b", broker.kafka_target, "-C", "-t", topic, "-e", "-q"], capture_output=True, text=True, timeout=30
    )
    assert read.stdout.split() == ["one", "two"]


def test_one_group_id_is_not_shared_by_kafka_members_and_tidelog_members(broker):
    """The two group protocols never split one group's partitions between them: whichever comes second
    is refused while the other has members."""
    topic = name("one-protocol")
    produce_confluent(confluent_producer(broker), topic, [b"x"])
    kafka_first, tidelog_first = name("kafka-first"), name("tidelog-first")

    member = confluent_consumer(broker, kafka_first)
    member.subscribe([topic])
    assert len(poll_confluent(member, 1)) == 1  # it has joined and been given the partition
    try:
        with pytest.raises(InvalidRequestError, match="Kafka's group protocol"):
            Consumer(broker.target, group_id=kafka_first, topics=[topic]).close()
    finally:
        member.close()

    own = Consumer(broker.target, group_id=tidelog_first, topics=[topic], auto_offset_reset="earliest")
    try:
        deadline = time.monotonic() + 20
        while not own.poll(0.5) and time.monotonic() < deadline:
            pass
        refused = confluent_consumer(broker, tidelog_first)
        refused.subscribe([topic])
        deadline = time.monotonic() + 20
        error = None
        while error is None and time.monotonic() < deadline:
            msg = refused.poll(0.5)
            error = msg.error() if msg is not None and msg.error() else None
        refused.close()
        assert error is not None and error.code() == confluent_kafka.KafkaError.INCONSISTENT_GROUP_PROTOCOL, error
    finally:
        own.close()
