"""Security in a cluster: three brokers on one etcd with TLS between everyone, users and ACLs kept in etcd
(`tidelog users|acls ... --etcd`), and each broker showing the others its own token. Replication and
forwarded calls go through the same checks as clients' calls; a change in etcd applies on every broker;
an ordinary user cannot pose as a follower; a damaged document in etcd opens nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import grpc
import pytest

from tidelog.client import Admin, ClientSecurity, Producer
from tidelog.client.channel import sync_channel
from tidelog.config import ServerConfig
from tidelog.errors import AuthenticationError, InvalidConfigError, TopicAuthorizationError
from tidelog.v1 import tidelog_pb2 as pb
from tidelog.wire import methods

from .helpers.cluster import Cluster, Settings
from .helpers.etcd import EtcdProcess
from .test_security import Certs

TOPIC = "orders"


def tidelog(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "tidelog", *args], capture_output=True, text=True, timeout=60)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


class Running:
    """An etcd started before the cluster (the users and ACLs go in first): Cluster.start leaves it be."""

    def __init__(self, etcd: EtcdProcess) -> None:
        self.etcd = etcd

    @property
    def url(self) -> str:
        return self.etcd.url

    def start(self) -> Running:
        return self

    def stop(self) -> None:
        self.etcd.stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster-security")
    certs = Certs(str(root))
    etcd = Running(EtcdProcess(str(root / "etcd")).start())
    url = etcd.url
    tokens = {
        name: tidelog("users", "add", name, "--etcd", url).stdout.strip() for name in ("broker", "admin", "alice")
    }
    for args in (
        ("--principal", "alice", "--operation", "produce", "--topic", TOPIC),
        ("--principal", "alice", "--operation", "describe", "--cluster"),
    ):
        tidelog("acls", "add", *args, "--etcd", url)
    token_file = root / "broker.token"
    token_file.write_text(tokens["broker"] + "\n")
    cluster = Cluster(
        str(root), 3, Settings(), "--tls-cert", certs.server_cert, "--tls-key", certs.server_key,
        "--tls-ca", certs.ca_file, "--etcd-users", "--etcd-acls", "--superusers", "broker,admin",
        "--broker-token-file", str(token_file), etcd=etcd, kafka=True,
    )  # fmt: skip
    cluster.start()
    cluster.tokens, cluster.certs, cluster.url = tokens, certs, url
    yield cluster
    cluster.stop()


def security(cluster, name: str | None) -> ClientSecurity:
    return ClientSecurity(ca_file=cluster.certs.ca_file, token=cluster.tokens[name] if name else None)


def targets(cluster) -> list[str]:
    return [cluster.brokers[i].target for i in cluster.ids]


def until(predicate, what: str, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            found = predicate()
            if found:
                return found
        except Exception as exc:  # not yet: a leader being elected, a change not yet seen
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout_s} s (last: {last!r})")


def test_replication_runs_over_tls_with_the_brokers_tokens(secured):
    until(lambda: _in_sync(secured), "every replica in sync")
    with Producer(targets(secured)[0], security=security(secured, "alice"), acks="all") as producer:
        for i in range(20):
            producer.send(TOPIC, b"r%d" % i, partition=i % 2)
        producer.flush(30)
    with Admin(targets(secured)[1], security=security(secured, "admin"), timeout_s=15) as admin:
        parts = admin.describe(TOPIC)["partitions"]
        assert sum(p.high_watermark for p in parts) >= 20  # acks=all: every replica in the ISR has them
        assert all(len(p.isr) == 3 for p in parts)  # the followers fetched over TLS with the broker's token


def test_kafka_clients_authenticate_against_the_users_in_etcd(secured):
    """SASL/SCRAM over TLS on each broker's Kafka listener, checked against the users etcd holds, and the
    ACLs from etcd: alice may produce to orders only."""
    from confluent_kafka import KafkaError
    from confluent_kafka import Producer as KafkaProducer

    user, secret = secured.tokens["alice"].split(":", 1)
    outcomes: dict = {}
    producer = KafkaProducer({
        "bootstrap.servers": secured.brokers[2].kafka_target, "security.protocol": "SASL_SSL",
        "ssl.ca.location": secured.certs.ca_file, "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
        "sasl.password": secret, "acks": "all", "linger.ms": 0, "message.timeout.ms": 15000,
    })  # fmt: skip
    until(lambda: _in_sync(secured), "orders in sync")
    for topic in (TOPIC, "payments"):
        producer.produce(topic, b"over kafka", partition=0, on_delivery=lambda e, m: outcomes.setdefault(m.topic(), e))
    assert producer.flush(30) == 0
    assert outcomes[TOPIC] is None
    assert outcomes["payments"] is not None and outcomes["payments"].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def _in_sync(cluster) -> bool:
    with Admin(",".join(targets(cluster)), security=security(cluster, "admin"), timeout_s=10) as admin:
        if TOPIC not in admin.list_topics():
            admin.create_topic(TOPIC, 2, 3)
        parts = admin.metadata([TOPIC]).topics[0].partitions
        return all(p.leader_id is not None and len(p.isr) == 3 for p in parts)


def test_every_broker_refuses_a_client_without_credentials_or_permission(secured):
    for target in targets(secured):
        with Admin(target, security=security(secured, None), timeout_s=10) as anonymous:
            with pytest.raises(AuthenticationError):
                anonymous.list_topics()
        with Admin(target, security=security(secured, "alice"), timeout_s=10) as alice:
            assert isinstance(alice.list_topics(), list)  # describe on the cluster
            with pytest.raises(TopicAuthorizationError, match="alice may not create topic"):
                alice.create_topic("alices", 1, 1)


def test_an_ordinary_user_cannot_pose_as_a_follower(secured):
    """Replicate is for brokers: alice's token is refused PERMISSION_DENIED, no token UNAUTHENTICATED."""
    method = methods.method("Replication", "Replicate")
    request = pb.ReplicaFetchRequest(topic=TOPIC, partition=0, replica_id=99, fetch_offset=0)
    for name, code in (("alice", grpc.StatusCode.PERMISSION_DENIED), (None, grpc.StatusCode.UNAUTHENTICATED)):
        with sync_channel(targets(secured)[0], security(secured, name)) as channel:
            stream = channel.stream_stream(method.path, request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as caught:
                list(stream(iter([request.SerializeToString()]), timeout=10))
            assert caught.value.code() == code


def test_users_and_acls_changed_in_etcd_apply_on_every_broker(secured):
    carol = tidelog("users", "add", "carol", "--etcd", secured.url).stdout.strip()
    tidelog("acls", "add", "--principal", "carol", "--operation", "describe", "--cluster", "--etcd", secured.url)
    as_carol = ClientSecurity(ca_file=secured.certs.ca_file, token=carol)

    def lists(target: str) -> bool:
        with Admin(target, security=as_carol, timeout_s=5) as admin:
            return isinstance(admin.list_topics(), list)

    for target in targets(secured):
        until(lambda: lists(target), f"carol let in by {target}")
    listed = tidelog("users", "list", "--etcd", secured.url, "--format", "json").stdout
    assert '"carol"' in listed and "stored_key" not in listed
    tidelog("acls", "add", "--principal", "carol", "--operation", "describe", "--cluster", "--deny",
            "--etcd", secured.url)  # fmt: skip
    for target in targets(secured):
        until(lambda: _refused(target, as_carol, "PermissionDenied|may not describe"), f"the deny on {target}")
    tidelog("users", "remove", "carol", "--etcd", secured.url)
    for target in targets(secured):
        until(lambda: _refused(target, as_carol, "authentication failed"), f"carol refused by {target}")


def _refused(target: str, as_: ClientSecurity, reason: str) -> bool:
    import re

    with Admin(target, security=as_, timeout_s=5) as admin:
        try:
            admin.list_topics()
        except Exception as exc:
            return re.search(reason, f"{type(exc).__name__}: {exc}") is not None
    return False


def test_a_damaged_users_document_in_etcd_opens_nothing(secured):
    """Brokers keep the users they had (a token that worked still does, a made-up one does not); the CLI
    refuses to change the damaged document, naming it and the repair."""
    from tidelog.cluster import etcd as etcd_client
    from tidelog.cluster.security_docs import USERS, document_key

    key = document_key("tidelog", USERS)

    async def swap(value: bytes | None) -> bytes:
        client = etcd_client.connect(secured.url)
        try:
            old = (await client.get(key)).value
            if value is not None:
                await client.put(key, value)
            return bytes(old)
        finally:
            await client.close()

    good = asyncio.run(swap(b"{not json"))
    try:
        time.sleep(2.5)  # every broker has read the damaged value (they look at least once a second)
        for target in targets(secured):
            with Admin(target, security=security(secured, "alice"), timeout_s=10) as alice:
                assert isinstance(alice.list_topics(), list)
            assert _refused(target, ClientSecurity(ca_file=secured.certs.ca_file, token="mallory:guess"),
                            "authentication failed")  # fmt: skip
        done = tidelog("users", "add", "mallory", "--etcd", secured.url, ok=False)
        assert done.returncode == 1 and "is damaged" in done.stderr and "etcdctl del" in done.stderr
        logs = [secured.brokers[i].log() for i in secured.ids]
        assert all("what was read before stays in force" in log for log in logs)
    finally:
        asyncio.run(swap(good))


def test_cluster_security_settings_that_cannot_work_are_refused(tmp_path):
    base = dict(cluster="etcd://127.0.0.1:2379", broker_id=1, tls_cert_file="c", tls_key_file="k")
    for settings, message in (
        ({"users_file": "u"}, "users and ACLs live in etcd"),
        ({"etcd_users": True}, "broker_token_file"),
        ({"etcd_users": True, "broker_token_file": "t", "tls_cert_file": "", "tls_key_file": ""}, "needs TLS"),
        ({"etcd_acls": True}, "needs authentication"),
    ):
        with pytest.raises(InvalidConfigError, match=message):
            ServerConfig(**{**base, **settings})
    with pytest.raises(InvalidConfigError, match="cluster's settings"):
        ServerConfig(etcd_users=True)
    ServerConfig(**base, etcd_users=True, etcd_acls=True, broker_token_file="t")
    done = tidelog("users", "add", "x", "--etcd", "etcd://127.0.0.1:1", "--users-file", str(tmp_path / "u"), ok=False)
    assert done.returncode == 2 and "not both" in done.stderr
    assert not os.path.exists(tmp_path / "u")


def test_users_added_at_once_through_etcd_are_all_kept(secured):
    """Six `tidelog users add --etcd` race on one document: each compare-and-swap that loses reads again,
    so every user lands, and each printed token works."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tidelog", "users", "add", f"racer{i}", "--etcd", secured.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(6)
    ]
    tokens = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        tokens.append(out.strip())
    listed = tidelog("users", "list", "--etcd", secured.url, "--format", "json").stdout
    assert {f"racer{i}" for i in range(6)} <= {u["name"] for u in __import__("json").loads(listed)}
    tidelog("acls", "add", "--principal", "racer5", "--operation", "describe", "--cluster", "--etcd", secured.url)
    as_last = ClientSecurity(ca_file=secured.certs.ca_file, token=tokens[5])

    def lists() -> bool:
        with Admin(targets(secured)[0], security=as_last, timeout_s=5) as admin:
            return isinstance(admin.list_topics(), list)

    until(lists, "the last racer let in")
