"""The ACLs on the Kafka listener, with an unmodified Kafka client (confluent-kafka over SASL/SCRAM): each
refusal carries Kafka's code (TOPIC_/GROUP_AUTHORIZATION_FAILED) and is checked to have done nothing (a
superuser looks afterwards, over gRPC). The same users and ACL file as the gRPC tests' (test_acls.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tidelog.client import Admin, ClientSecurity

from .server_process import ServerProcess

confluent_kafka = pytest.importorskip("confluent_kafka", reason="confluent-kafka is in the test extra")
from confluent_kafka import Consumer as KafkaConsumer  # noqa: E402
from confluent_kafka import KafkaError, KafkaException, TopicPartition  # noqa: E402
from confluent_kafka import Producer as KafkaProducer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


def tidelog(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "tidelog", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """admin (superuser); alice may produce to orders.* and read orders.eu; bob may read orders.eu in group
    billing, and describe the group audit and the topic payments (but not read it)."""
    root = tmp_path_factory.mktemp("kafka-acls")
    users, acls = str(root / "users.json"), str(root / "acls.json")
    tokens = {name: tidelog("users", "add", name, "--users-file", users) for name in ("admin", "alice", "bob")}
    for args in (
        ("--principal", "alice", "--operation", "produce", "--topic", "orders.", "--prefix"),
        ("--principal", "alice", "--operation", "consume", "--topic", "orders.eu"),
        ("--principal", "bob", "--operation", "consume", "--topic", "orders.eu"),
        ("--principal", "bob", "--operation", "consume", "--group", "billing"),
        ("--principal", "bob", "--operation", "describe", "--group", "audit"),
        ("--principal", "bob", "--operation", "describe", "--topic", "payments"),
    ):
        tidelog("acls", "add", *args, "--acls-file", acls)
    (root / "tidelog.toml").write_text("auth_max_failures = 100000\ngroup_initial_rebalance_delay_ms = 200\n")
    server = ServerProcess(
        str(root / "data"), "--config", str(root / "tidelog.toml"), "--users-file", users, "--acls-file", acls,
        "--superusers", "admin", kafka=True,
    ).start()  # fmt: skip
    with Admin(server.target, security=ClientSecurity(token=tokens["admin"])) as admin:
        for topic in ("orders.eu", "orders.secret", "payments"):
            admin.create_topic(topic, 2)
    server.tokens = tokens
    yield server
    server.stop()


def kafka(broker, name: str, **extra) -> dict:
    user, secret = broker.tokens[name].split(":", 1)
    return {"bootstrap.servers": broker.kafka_target, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": user, "sasl.password": secret,
            "socket.timeout.ms": 5000, **extra}  # fmt: skip


def log_ends(broker, topic: str) -> list[int]:
    with Admin(broker.target, security=ClientSecurity(token=broker.tokens["admin"])) as admin:
        return [admin.list_offsets(topic, p).log_end for p in range(2)]


def produced(broker, name: str, topic: str) -> list:
    """What each of three records to `topic` got back: None (stored) or its KafkaError."""
    outcomes: list = []
    producer = KafkaProducer(kafka(broker, name, **{"linger.ms": 0, "message.timeout.ms": 10000}))
    for i in range(3):
        producer.produce(topic, b"r%d" % i, partition=i % 2, on_delivery=lambda err, msg: outcomes.append(err))
    assert producer.flush(20) == 0
    return outcomes


def test_a_kafka_producer_writes_where_the_acls_allow_and_nowhere_else(broker):
    before_eu, before_payments = log_ends(broker, "orders.eu"), log_ends(broker, "payments")
    assert produced(broker, "alice", "orders.eu") == [None, None, None]
    refused = produced(broker, "alice", "payments")
    assert [e.code() for e in refused] == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 3
    assert [e.code() for e in produced(broker, "bob", "orders.eu")] == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 3
    assert sum(log_ends(broker, "orders.eu")) == sum(before_eu) + 3
    assert log_ends(broker, "payments") == before_payments


def test_metadata_lists_only_what_a_client_may_describe(broker):
    bob = AdminClient(kafka(broker, "bob"))
    assert set(bob.list_topics(timeout=10).topics) == {"orders.eu", "payments"}
    asked = bob.list_topics("orders.secret", timeout=10).topics["orders.secret"]
    assert asked.error is not None and asked.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    admin = AdminClient(kafka(broker, "admin"))
    assert {"orders.eu", "orders.secret", "payments"} <= set(admin.list_topics(timeout=10).topics)


def test_a_kafka_consumer_reads_and_commits_only_where_allowed(broker):
    produced(broker, "admin", "payments")
    bob = KafkaConsumer(kafka(broker, "bob", **{"group.id": "billing", "enable.auto.commit": False,
                                                "auto.offset.reset": "earliest"}))  # fmt: skip
    try:
        bob.assign([TopicPartition("payments", 0, 0)])
        errors = []
        deadline = time.monotonic() + 15
        while not errors and time.monotonic() < deadline:
            message = bob.poll(0.5)
            if message is not None:
                assert message.error() is not None, "bob read a record of payments"
                errors.append(message.error().code())
        assert errors == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
        bob.assign([TopicPartition("orders.eu", 0, 0)])
        message = None
        deadline = time.monotonic() + 15
        while (message is None or message.error() is not None) and time.monotonic() < deadline:
            message = bob.poll(0.5)
        assert message is not None and message.error() is None and message.topic() == "orders.eu"
        bob.commit(message=message, asynchronous=False)
        with pytest.raises(KafkaException) as caught:  # its group, a topic it may not read
            bob.commit(offsets=[TopicPartition("payments", 0, 1)], asynchronous=False)
        assert caught.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        bob.close()
    other = KafkaConsumer(kafka(broker, "bob", **{"group.id": "audit", "enable.auto.commit": False}))  # describe only
    try:
        with pytest.raises(KafkaException) as caught:
            other.commit(offsets=[TopicPartition("orders.eu", 0, 1)], asynchronous=False)
        assert caught.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    finally:
        other.close()
    with Admin(broker.target, security=ClientSecurity(token=broker.tokens["admin"])) as admin:
        assert "audit" not in admin.list_groups()  # the refused commit made no group


def test_a_kafka_consumer_cannot_join_a_group_it_may_not_use(broker):
    bob = KafkaConsumer(kafka(broker, "bob", **{"group.id": "elsewhere", "session.timeout.ms": 6000}))
    try:
        bob.subscribe(["orders.eu"])
        error = None
        deadline = time.monotonic() + 15
        while error is None and time.monotonic() < deadline:
            message = bob.poll(0.5)
            if message is not None and message.error() is not None:
                error = message.error().code()
        assert error == KafkaError.GROUP_AUTHORIZATION_FAILED
        assert bob.assignment() == []
    finally:
        bob.close()


def test_kafka_admin_calls_are_refused_and_change_nothing(broker):
    bob = AdminClient(kafka(broker, "bob"))
    created = bob.create_topics([NewTopic("bobs-topic", 1, 1)], request_timeout=10)["bobs-topic"]
    with pytest.raises(KafkaException) as caught:
        created.result(15)
    assert caught.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    deleted = bob.delete_topics(["orders.eu"], request_timeout=10)["orders.eu"]
    with pytest.raises(KafkaException) as caught:
        deleted.result(15)
    assert caught.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    gone = bob.delete_consumer_groups(["billing"], request_timeout=10)["billing"]
    with pytest.raises(KafkaException) as caught:
        gone.result(15)
    assert caught.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    with Admin(broker.target, security=ClientSecurity(token=broker.tokens["admin"])) as admin:
        names = admin.list_topics()
    assert "bobs-topic" not in names and "orders.eu" in names
    listed = {g.group_id for g in bob.list_consumer_groups(request_timeout=10).result(15).valid}
    assert "billing" in listed  # bob's group, kept (and the groups it may not describe unlisted)
    assert listed <= {"billing", "audit"}
    log = broker.log()
    for operation, resource, name in (("create", "topic", "bobs-topic"), ("delete", "topic", "orders.eu"),
                                      ("delete", "group", "billing")):  # fmt: skip
        line = f"tidelog.audit denied principal=bob operation={operation} resource={resource} resource_name={name}"
        assert line in log


def test_a_superuser_creates_and_deletes_over_kafka_with_an_audit_line(broker):
    admin = AdminClient(kafka(broker, "admin"))
    admin.create_topics([NewTopic("made-by-kafka", 1, 1)], request_timeout=10)["made-by-kafka"].result(15)
    admin.delete_topics(["made-by-kafka"], request_timeout=10)["made-by-kafka"].result(15)
    done = [line for line in broker.log().splitlines() if "tidelog.audit done principal=admin method=Kafka/" in line]
    assert any("create topic made-by-kafka" in line for line in done)
    assert any("delete topic made-by-kafka" in line for line in done)


def test_a_client_certificate_names_the_kafka_principal(tmp_path):
    """Mutual TLS without a users file: the certificate's common name is the principal the ACLs name."""
    from .test_security import Certs

    certs = Certs(str(tmp_path))
    mallory_cert, mallory_key = certs.leaf(certs.ca, "mallory", "mallory")
    acls = str(tmp_path / "acls.json")
    tidelog("acls", "add", "--principal", "alice", "--operation", "all", "--topic", "*", "--acls-file", acls)
    server = ServerProcess(
        str(tmp_path / "data"), "--tls-cert", certs.server_cert, "--tls-key", certs.server_key,
        "--tls-client-ca", certs.ca_file, "--acls-file", acls, kafka=True,
    ).start()  # fmt: skip
    try:
        outcomes: dict[str, list] = {}
        for name, cert, key in (("alice", certs.client_cert, certs.client_key), ("mallory", mallory_cert, mallory_key)):
            producer = KafkaProducer({
                "bootstrap.servers": server.kafka_target, "security.protocol": "SSL", "ssl.ca.location": certs.ca_file,
                "ssl.certificate.location": cert, "ssl.key.location": key, "linger.ms": 0,
                "message.timeout.ms": 10000, "allow.auto.create.topics": True,
            })  # fmt: skip
            producer.produce(
                "certified",
                b"from " + name.encode(),
                on_delivery=lambda e, m, n=name: outcomes.setdefault(n, []).append(e),
            )
            assert producer.flush(20) == 0
        assert outcomes["alice"] == [None]
        assert [e.code() for e in outcomes["mallory"]] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
        assert "tidelog.audit denied principal=mallory operation=" in server.log()
    finally:
        server.stop()
