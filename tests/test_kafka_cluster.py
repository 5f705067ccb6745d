"""Kafka clients against a three-broker cluster: every broker answers the same placement, a partition's
requests are served by its leader only (the others answer NOT_LEADER_OR_FOLLOWER, a stale or future
leader epoch is refused), groups are served by one coordinator, and an idempotent acks=all producer and
a group consumer go through a SIGKILL of the partition's leader and of the group coordinator without
losing or duplicating a record. Seeded; the seed is printed."""

from __future__ import annotations

import os
import random
import struct
import time

import pytest

from tests.helpers.cluster import Cluster
from tests.helpers.kafka_stream import NumberedStream
from tests.test_kafka_protocol import batch, call, produce_frame, read_frame
from tidelog.kafka_protocol import codec
from tidelog.kafka_protocol import errors as kerr
from tidelog.v1 import tidelog_pb2 as pb

confluent_kafka = pytest.importorskip("confluent_kafka", reason="confluent-kafka is a test dependency")
confluent_admin = pytest.importorskip("confluent_kafka.admin", reason="confluent-kafka is a test dependency")
from kafka.protocol.consumer import FetchRequest, FetchResponse, JoinGroupRequest, JoinGroupResponse  # noqa: E402
from kafka.protocol.metadata import (  # noqa: E402
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    MetadataRequest,
    MetadataResponse,
)
from kafka.protocol.producer import ProduceResponse  # noqa: E402

QUIET = {"log_level": 0}
OFFSETS_TOPIC = "__consumer_offsets"


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("kafka-cluster")), kafka=True).start()
    try:
        yield c
    finally:
        c.stop()


def bootstrap(c: Cluster) -> str:
    return ",".join(c.brokers[i].kafka_target for i in c.live())


def connect(c: Cluster, broker_id: int):
    import socket

    s = socket.create_connection(("127.0.0.1", c.brokers[broker_id].kafka_port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def find_coordinator(c: Cluster, broker_id: int, group: str = "g") -> tuple[int, int, int]:
    """FindCoordinator at one broker: (error code, node id, port)."""
    with connect(c, broker_id) as s:
        find = codec.build(FindCoordinatorRequest[2], {"key": group, "key_type": 0})
        found = FindCoordinatorResponse.decode(call(s, find, 2)[4:], version=2)
    return found.error_code, found.node_id, found.port


def coordinator_id(c: Cluster) -> int:
    """The group coordinator as Kafka clients find it (asking places the group-state partition, the
    first time), once it is elected."""

    def found() -> int | None:
        code, node, _ = find_coordinator(c, c.live()[0])
        return node if code == 0 and node in c.live() else None

    return c.wait(found, what="a group coordinator")


def test_every_broker_answers_one_placement_and_only_leaders_serve_partitions(kafka_cluster):
    c = kafka_cluster
    admin = confluent_admin.AdminClient({"bootstrap.servers": bootstrap(c), **QUIET})
    admin.create_topics([confluent_admin.NewTopic("routed", 3, 3)])["routed"].result(15)
    placed = c.wait_leaders("routed", 3, isr=3)
    kafka_ports = {i: c.brokers[i].kafka_port for i in c.ids}
    for broker_id in c.ids:
        with connect(c, broker_id) as s:
            frame = call(s, codec.build(MetadataRequest[9], {"topics": [{"name": "routed"}]}), 9)
        meta = MetadataResponse.decode(frame[5:], version=9)  # (a flexible header: its tags byte)
        assert {b.node_id: b.port for b in meta.brokers} == kafka_ports, "every broker lists every Kafka endpoint"
        (topic,) = meta.topics
        assert topic.error_code == 0
        for p in topic.partitions:
            assert (p.leader_id, p.leader_epoch) == (placed[p.partition_index].leader_id,
                                                     placed[p.partition_index].leader_epoch)  # fmt: skip
            assert sorted(p.replica_nodes) == sorted(p.isr_nodes) == c.ids

    for partition, state in placed.items():
        leader = state.leader_id
        for broker_id in c.ids:
            deadline = time.monotonic() + 10
            while True:
                with connect(c, broker_id) as s:
                    code = _produce(s, partition, b"v%d-%d" % (partition, broker_id))
                # etcd names the leader a moment before it has taken the role up: until then it answers
                # the retriable NOT_LEADER_OR_FOLLOWER, as Kafka's does (a client refreshes and retries)
                if broker_id != leader or code != kerr.NOT_LEADER_OR_FOLLOWER or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            expected = kerr.NONE if broker_id == leader else kerr.NOT_LEADER_OR_FOLLOWER
            assert code == expected, f"produce to routed-{partition} at broker {broker_id} (leader {leader})"
        for broker_id in c.ids:
            with connect(c, broker_id) as s:
                code, records = _fetch(s, partition, -1)
            if broker_id == leader:
                assert code == kerr.NONE and records, "the leader serves the acknowledged record"
            else:
                assert code == kerr.NOT_LEADER_OR_FOLLOWER and not records
        with connect(c, leader) as s:
            assert _fetch(s, partition, state.leader_epoch + 1)[0] == kerr.UNKNOWN_LEADER_EPOCH
            if state.leader_epoch > 0:
                assert _fetch(s, partition, state.leader_epoch - 1)[0] == kerr.FENCED_LEADER_EPOCH

    # groups: every broker names one coordinator; the others refuse group requests
    coordinator = coordinator_id(c)
    for broker_id in c.ids:
        assert find_coordinator(c, broker_id) == (0, coordinator, kafka_ports[coordinator])
        with connect(c, broker_id) as s:
            join = codec.build(
                JoinGroupRequest[5],
                {"group_id": "g", "session_timeout_ms": 6000, "rebalance_timeout_ms": 6000, "member_id": "",
                 "group_instance_id": None, "protocol_type": "consumer",
                 "protocols": [{"name": "range", "metadata": b""}]},
            )  # fmt: skip
            answer = JoinGroupResponse.decode(call(s, join, 5)[4:], version=5)
            if broker_id != coordinator:
                assert answer.error_code == kerr.NOT_COORDINATOR
            else:
                assert answer.error_code == kerr.NONE and answer.generation_id == 1, "the coordinator runs the join"


def _produce(s, partition: int, value: bytes, acks: int = -1, topic: str = "routed") -> int:
    """One produce of `value` to topic-`partition`; its error code."""
    s.sendall(produce_frame(8, topic, batch([value]), correlation_id=5, acks=acks, partition=partition))
    answer = read_frame(s)
    assert answer is not None and struct.unpack_from(">i", answer)[0] == 5
    (topic,) = ProduceResponse.decode(answer[4:], version=8).responses
    (p,) = topic.partition_responses
    return p.error_code


def _fetch(s, partition: int, leader_epoch: int, topic: str = "routed") -> tuple[int, bytes]:
    request = codec.build(
        FetchRequest[11],
        {"replica_id": -1, "max_wait_ms": 0, "min_bytes": 0, "max_bytes": 1 << 20, "isolation_level": 0,
         "session_id": 0, "session_epoch": -1, "forgotten_topics_data": [], "rack_id": "",
         "topics": [{"topic": topic, "partitions": [
             {"partition": partition, "current_leader_epoch": leader_epoch, "fetch_offset": 0,
              "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}]},
    )  # fmt: skip
    answer = FetchResponse.decode(call(s, request, 11)[4:], version=11)
    (topic,) = answer.responses
    (p,) = topic.partitions
    return p.error_code, bytes(p.records or b"")


def test_kafka_admin_tools_manage_a_clusters_topics_and_groups(kafka_cluster):
    """kafka-python's admin client against the cluster: topics created (with their replication factor
    and settings) and deleted in etcd, a topic auto-created for a producer with the default replication
    factor, and groups listed from every broker, described and read back from the coordinator."""
    kafka = pytest.importorskip("kafka", reason="kafka-python is a test dependency")
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

    c = kafka_cluster
    admin = kafka.KafkaAdminClient(bootstrap_servers=bootstrap(c))
    try:
        admin.create_topics([NewTopic("made", 2, 2, topic_configs={"retention.ms": "3600000"})])
        with pytest.raises(kafka.errors.InvalidReplicationFactorError):
            admin.create_topics([NewTopic("too-many-copies", 1, 4)])
        placed = c.wait_leaders("made", 2)
        assert all(len(p.replicas) == 2 for p in placed.values())
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "made")])
        (described,) = configs["topic"].values() if isinstance(configs, dict) else [configs]
        assert described["retention.ms"]["value"] == "3600000"

        producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap(c), "acks": "all", **QUIET})
        for i in range(20):
            producer.produce("auto-made", b"%d" % i)
        assert producer.flush(30) == 0
        assert all(len(p.replicas) == 3 for p in c.metadata("auto-made").values()), "the default: every broker"

        reader = kafka.KafkaConsumer(
            "auto-made", bootstrap_servers=bootstrap(c), group_id="admins", auto_offset_reset="earliest",
            enable_auto_commit=False, consumer_timeout_ms=5000,
        )  # fmt: skip
        assert sorted(int(m.value) for m in reader) == list(range(20))
        reader.commit()
        reader.close()
        assert any(g["group_id"] == "admins" for g in admin.list_groups())
        assert admin.describe_groups(["admins"])["admins"]["group_state"] == "Empty"
        assert admin.list_group_offsets("admins")["admins"][kafka.TopicPartition("auto-made", 0)].offset == 20

        admin.delete_topics(["made"])
        c.wait(lambda: "made" not in c.any_call("Admin", "ListTopics", pb.ListTopicsRequest()).topics,
               what="the topic deleted in etcd")  # fmt: skip
    finally:
        admin.close()


def test_acks_all_is_refused_below_min_insync_replicas_and_acks_1_is_not(kafka_cluster):
    """Kafka's acks=-1 is the replication rule's acks=all: with a follower paused out of the ISR of a
    min_insync_replicas=3 topic, it is refused (NOT_ENOUGH_REPLICAS, nothing written) while acks=1 is
    written by the leader alone."""
    c = kafka_cluster
    c.create_topic("strict", 1, 3, min_isr=3)
    leader = c.wait_leaders("strict", 1, isr=3)[0].leader_id
    follower = next(i for i in c.ids if i != leader)
    c.pause(follower)
    try:
        c.wait(lambda: len(c.call(c.brokers[leader].target, "Admin", "Metadata",
                                  pb.MetadataRequest(topics=["strict"])).topics[0].partitions[0].isr) == 2,
               what="the paused follower out of the ISR")  # fmt: skip
        with connect(c, leader) as s:
            assert _produce(s, 0, b"all", acks=-1, topic="strict") == kerr.NOT_ENOUGH_REPLICAS
            assert _produce(s, 0, b"one", acks=1, topic="strict") == kerr.NONE
            # readable once the in-sync follower has it too (the high watermark), not before
            code, records = c.wait(lambda: (lambda r: r if r[1] else None)(_fetch(s, 0, -1, topic="strict")),
                                   what="the acks=1 record committed")  # fmt: skip
    finally:
        c.resume(follower)
    assert code == kerr.NONE and b"one" in records and b"all" not in records


def test_an_idempotent_acks_all_producer_and_a_group_go_through_leader_and_coordinator_kills(kafka_cluster):
    """SIGKILL the partition's leader, then the group coordinator, while a producer streams with
    acks=all and a group member consumes and commits: every record is acknowledged, the partition holds
    each exactly once in order, and the group ends with everything consumed and committed."""
    seed = int(os.environ.get("TIDELOG_SEED", random.randrange(1 << 30)))
    print(f"seed={seed}")
    rng = random.Random(seed)
    c = kafka_cluster
    c.create_topic("failover", 1, 3, min_isr=2)
    c.wait_leaders("failover", 1, isr=3)
    total = 8000
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap(c),
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": rng.choice(["none", "lz4"]),
            "linger.ms": rng.choice([0, 2]),
            "message.timeout.ms": 120_000,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
            "topic.metadata.refresh.interval.ms": 1000,
            **QUIET,
        }
    )
    # ~1,000 records/s: the stream spans both kills
    stream = NumberedStream(producer, "failover", total, b"." * 100, pause_every=10)
    delivered = stream.delivered

    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap(c),
            "group.id": "survivors",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 300,
            "topic.metadata.refresh.interval.ms": 1000,
            **QUIET,
        }
    )
    consumer.subscribe(["failover"])
    consumed: list[int] = []

    def consume_for(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            m = consumer.poll(0.1)
            if m is not None and not m.error():
                consumed.append(int(m.value()[:8]))
                if len(consumed) % 250 == 0:
                    try:
                        consumer.commit(asynchronous=False)
                    except confluent_kafka.KafkaException:
                        pass  # a commit refused mid-move (NOT_COORDINATOR, a rebalance): the next one lands

    streaming = stream.thread
    killed = []
    try:
        streaming.start()
        warm = time.monotonic() + 30
        while (len(delivered) < 500 or not consumed) and time.monotonic() < warm:
            consume_for(0.1)  # both clients connected, the producer id taken, the group joined
        consume_for(rng.uniform(0.1, 1.0))
        victims = [c.metadata("failover")[0].leader_id, coordinator_id(c)]
        for victim in victims:
            killed.append((victim, len(delivered)))
            c.kill(victim)
            consume_for(rng.uniform(1.0, 2.5))
            c.restart(victim)
            c.wait_leaders("failover", 1, isr=3, timeout_s=60)
        streaming.join(120)
        assert producer.flush(120) == 0, f"seed={seed}: records left undelivered"
        deadline = time.monotonic() + 60
        while len(set(consumed)) < total and time.monotonic() < deadline:
            consume_for(0.5)
        try:
            consumer.commit(asynchronous=False)
        except confluent_kafka.KafkaException as exc:
            if exc.args[0].code() != confluent_kafka.KafkaError._NO_OFFSET:  # (committed already)
                raise
    finally:
        consumer.close()
    print(f"killed (broker, records acknowledged before) {killed}")
    assert 0 < killed[0][1] and killed[-1][1] < total, f"seed={seed}: the kills missed the stream: nothing tested"
    failed = stream.failed()
    assert len(delivered) == total and not failed, f"seed={seed}: failed deliveries {failed[:5]}"
    assert set(consumed) == set(range(total)), f"seed={seed}: the group missed {total - len(set(consumed))}"

    # the log: each record once, in order (read from the leader with a fresh, group-less consumer)
    reader = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap(c), "group.id": "audit", "enable.auto.commit": False, **QUIET}
    )
    try:
        reader.assign([confluent_kafka.TopicPartition("failover", 0, confluent_kafka.OFFSET_BEGINNING)])
        values: list[int] = []
        deadline = time.monotonic() + 60
        while len(values) < total + 1 and time.monotonic() < deadline:
            m = reader.poll(0.3)
            if m is not None and not m.error():
                values.append(int(m.value()[:8]))
            elif m is None and len(values) >= total:
                break
        committed = consumer_committed(c)
    finally:
        reader.close()
    assert values == list(range(total)), (
        f"seed={seed}: {len(values)} records, {len(values) - len(set(values))} duplicates, "
        f"first out of order at {next((k for k, v in enumerate(values) if v != k), None)}"
    )
    assert committed == total, f"seed={seed}: the group's committed offset is {committed}, not {total}"


def consumer_committed(c: Cluster) -> int:
    """The group's committed offset of failover-0, as a Kafka client reads it back."""
    probe = confluent_kafka.Consumer({"bootstrap.servers": bootstrap(c), "group.id": "survivors", **QUIET})
    try:
        (tp,) = probe.committed([confluent_kafka.TopicPartition("failover", 0)], timeout=30)
        return tp.offset
    finally:
        probe.close()
