"""Authorization against a real broker: users and ACLs made with the CLI, each refusal checked to name the
operation and the resource and to have done nothing (a superuser looks afterwards)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tidelog.client import Admin, ClientSecurity, Consumer, GroupConsumer, Producer
from tidelog.client.channel import sync_channel
from tidelog.codec.batch import build_batch
from tidelog.errors import (
    ClusterAuthorizationError,
    GroupAuthorizationError,
    TopicAuthorizationError,
)
from tidelog.security.acls import Acl, decide
from tidelog.server.access import IN_STREAM, NEEDS, STREAM_NEEDS, method_paths
from tidelog.v1.tidelog_pb2 import ProduceResponse
from tidelog.wire import framing, methods

from .server_process import ServerProcess

PRODUCE = methods.method("Producer", "Produce").path


def tidelog(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "tidelog", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """admin (superuser); alice may produce to orders.* and read orders.eu in group billing; bob may only
    read orders.eu in group billing; carol, in group ops, may do anything on the cluster and create topics."""
    root = tmp_path_factory.mktemp("acls")
    users, acls = str(root / "users.json"), str(root / "acls.json")
    tokens = {
        name: tidelog("users", "add", name, "--users-file", users).stdout.strip() for name in ("admin", "alice", "bob")
    }
    tokens["carol"] = tidelog("users", "add", "carol", "--group", "ops", "--users-file", users).stdout.strip()
    for args in (
        ("--principal", "alice", "--operation", "produce", "--topic", "orders.", "--prefix"),
        ("--principal", "alice", "--operation", "consume", "--topic", "orders.eu"),
        ("--principal", "bob", "--operation", "consume", "--topic", "orders.eu"),
        ("--principal", "bob", "--operation", "consume", "--group", "billing"),
        ("--principal", "group:ops", "--operation", "all", "--cluster"),
        ("--principal", "group:ops", "--operation", "create", "--topic", "*"),
    ):
        tidelog("acls", "add", *args, "--acls-file", acls)
    (root / "tidelog.toml").write_text("auth_max_failures = 100000\n")
    server = ServerProcess(
        str(root / "data"),
        "--config",
        str(root / "tidelog.toml"),
        "--users-file",
        users,
        "--acls-file",
        acls,
        "--superusers",
        "admin",
    ).start()
    with Admin(server.target, security=ClientSecurity(token=tokens["admin"])) as admin:
        for topic in ("orders.eu", "orders.secret", "payments"):
            admin.create_topic(topic, 1)
    server.tokens, server.acls_file = tokens, acls
    yield server
    server.stop()


def as_(broker, name: str) -> ClientSecurity:
    return ClientSecurity(token=broker.tokens[name])


def end_offset(broker, topic: str) -> int:
    with Admin(broker.target, security=as_(broker, "admin")) as admin:
        return admin.list_offsets(topic, 0).log_end


def test_a_user_produces_where_a_prefix_allows_and_nowhere_else(broker):
    before = end_offset(broker, "payments")
    with Producer(broker.target, security=as_(broker, "alice"), linger_ms=0) as producer:
        producer.send("orders.eu", b"ok", partition=0).result(10)
        with pytest.raises(TopicAuthorizationError, match="alice may not produce topic 'payments'"):
            producer.send("payments", b"sneaky", partition=0).result(10)
    assert end_offset(broker, "payments") == before


def test_a_consume_only_user_cannot_produce_create_or_delete(broker):
    before = end_offset(broker, "orders.eu")
    with Producer(broker.target, security=as_(broker, "bob"), linger_ms=0, delivery_timeout_s=5) as producer:
        with pytest.raises(TopicAuthorizationError, match="bob may not produce"):
            producer.send("orders.eu", b"from bob", partition=0).result(10)
    assert end_offset(broker, "orders.eu") == before
    with Admin(broker.target, security=as_(broker, "bob")) as admin:
        with pytest.raises(TopicAuthorizationError, match="bob may not create topic 'bobs'"):
            admin.create_topic("bobs", 1)
        with pytest.raises(TopicAuthorizationError, match="bob may not delete topic 'orders.eu'"):
            admin.delete_topic("orders.eu")
        with pytest.raises(ClusterAuthorizationError, match="bob may not describe the cluster"):
            admin.list_topics()
    with Consumer(broker.target, "orders.eu", 0, 0, security=as_(broker, "bob")) as consumer:
        assert len(consumer.poll(5)) == before
    with Admin(broker.target, security=as_(broker, "admin")) as admin:
        assert "bobs" not in admin.list_topics() and "orders.eu" in admin.list_topics()


def test_a_produce_stream_answers_a_refused_request_in_order_and_goes_on(broker):
    """One stream, three requests: orders.eu (allowed), payments (not), orders.eu again. The second is
    answered with the refusal, naming the topic, and appends nothing; the others are appended."""
    eu, pay = end_offset(broker, "orders.eu"), end_offset(broker, "payments")
    batch = build_batch([b"x"], timestamp=0)
    requests = [
        framing.encode_produce_request(i, t, 0, batch) for i, t in enumerate(("orders.eu", "payments", "orders.eu"))
    ]
    with sync_channel(broker.target, as_(broker, "alice")) as channel:
        call = channel.stream_stream(PRODUCE, request_serializer=None, response_deserializer=ProduceResponse.FromString)
        results = {r.sequence: r for response in call(iter(requests)) for r in response.results}
    assert sorted(results) == [0, 1, 2]
    assert not results[0].HasField("error") and not results[2].HasField("error")
    assert results[1].error.code == TopicAuthorizationError.code
    assert "alice may not produce topic 'payments'" in results[1].error.message
    assert end_offset(broker, "orders.eu") == eu + 2
    assert end_offset(broker, "payments") == pay


def test_groups_need_their_own_permission(broker):
    with Producer(broker.target, security=as_(broker, "alice"), linger_ms=0) as producer:
        producer.send("orders.eu", b"for billing", partition=0).result(10)
    member = GroupConsumer(
        broker.target, "billing", ["orders.eu"], security=as_(broker, "bob"), auto_offset_reset="earliest"
    )
    try:
        deadline = time.monotonic() + 30
        got = []
        while not got and time.monotonic() < deadline:
            got = member.poll(1)
        assert got
    finally:
        member.close()
    with pytest.raises(GroupAuthorizationError, match="alice may not consume group 'billing'"):
        GroupConsumer(broker.target, "billing", ["orders.eu"], security=as_(broker, "alice")).poll(1)


def test_a_group_of_users_and_a_superuser(broker):
    with Admin(broker.target, security=as_(broker, "carol")) as admin:
        admin.create_topic("carols", 1)
        assert "carols" in admin.list_topics()
        with pytest.raises(TopicAuthorizationError, match="carol may not delete topic 'carols'"):
            admin.delete_topic("carols")
    with Admin(broker.target, security=as_(broker, "admin")) as admin:
        admin.delete_topic("carols")
    log = broker.log()
    # an audit line for each change done and each refusal, naming who
    assert "tidelog.audit done principal=carol method=Admin/CreateTopic" in log and "create topic carols" in log
    assert "tidelog.audit done principal=admin method=Admin/DeleteTopic" in log and "delete topic carols" in log
    assert "tidelog.audit denied principal=carol operation=delete resource=topic resource_name=carols" in log


def test_a_deny_beats_an_allow_and_acl_changes_apply_without_a_restart(broker):
    with Producer(broker.target, security=as_(broker, "alice"), linger_ms=0) as producer:
        producer.send("orders.secret", b"allowed by the prefix", partition=0).result(10)
    tidelog("acls", "add", "--principal", "alice", "--operation", "produce", "--topic", "orders.secret", "--deny",
            "--acls-file", broker.acls_file)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with Producer(broker.target, security=as_(broker, "alice"), linger_ms=0, delivery_timeout_s=5) as producer:
                try:
                    producer.send("orders.secret", b"now denied", partition=0).result(10)
                except TopicAuthorizationError:
                    break
            assert time.monotonic() < deadline, "the deny did not apply within 10 s"
            time.sleep(0.3)
    finally:
        tidelog("acls", "remove", "--principal", "alice", "--operation", "produce", "--topic", "orders.secret",
                "--deny", "--acls-file", broker.acls_file)  # fmt: skip
    assert "audit_denied" in broker.log() or "denied" in broker.log()


def test_every_method_has_a_rule():
    assert set(NEEDS) | set(STREAM_NEEDS) | IN_STREAM == method_paths()


def test_decide():
    acls = [
        Acl("alice", "topic", "orders.", "produce", prefix=True),
        Acl("alice", "topic", "orders.secret", "produce", deny=True),
        Acl("*", "topic", "public", "consume"),
        Acl("group:ops", "cluster", "*", "all"),
    ]
    alice = {"alice", "*"}
    assert decide(acls, alice, "topic", "orders.eu", "produce")
    assert decide(acls, alice, "topic", "orders.eu", "describe")  # produce implies describe
    assert not decide(acls, alice, "topic", "orders.eu", "consume")
    assert not decide(acls, alice, "topic", "orders.secret", "produce")
    assert not decide(acls, alice, "topic", "orders", "produce")  # the prefix is "orders.", literally
    assert decide(acls, {"bob", "*"}, "topic", "public", "consume")
    assert decide(acls, {"carol", "*", "group:ops"}, "cluster", "*", "admin")
    assert not decide(acls, {"carol", "*", "group:ops"}, "topic", "public", "produce")
