"""TLS and authentication against a real `tidelog serve`: certificates made here (trustme), users added with
`tidelog users`. Every refusal is checked to have done nothing (the topic it tried to create does not exist).
"""

from __future__ import annotations

import base64
import datetime
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import trustme

from tidelog.client import Admin, ClientSecurity, Consumer, Producer
from tidelog.errors import AuthenticationError, BrokerUnavailableError, InvalidConfigError

from .server_process import ServerProcess


def tidelog(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


class Certs:
    """A CA with a server certificate for 127.0.0.1/localhost and a client certificate (CN alice), and
    a second, unrelated CA with its own of each."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.ca, self.other_ca = trustme.CA(), trustme.CA()
        self.ca_file, self.other_ca_file = self._path("ca.pem"), self._path("other-ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.other_ca.cert_pem.write_to_path(self.other_ca_file)
        self.server_cert, self.server_key = self.server(self.ca, "server")
        self.client_cert, self.client_key = self.leaf(self.ca, "alice", "client")
        self.other_client_cert, self.other_client_key = self.leaf(self.other_ca, "alice", "other-client")

    def _path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def server(self, ca: trustme.CA, name: str, **dates) -> tuple[str, str]:
        return self._write(ca.issue_cert("127.0.0.1", "localhost", **dates), name)

    def leaf(self, ca: trustme.CA, common_name: str, name: str) -> tuple[str, str]:
        return self._write(ca.issue_cert(f"{common_name}.clients.test", common_name=common_name), name)

    def _write(self, leaf, name: str) -> tuple[str, str]:
        cert, key = self._path(f"{name}.crt"), self._path(f"{name}.key")
        with open(cert, "wb") as f:
            for blob in leaf.cert_chain_pems:
                f.write(blob.bytes())
        leaf.private_key_pem.write_to_path(key)
        return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return Certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def users(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """A users file with alice and bob; their tokens."""
    path = str(tmp_path_factory.mktemp("users") / "users.json")
    tokens = {}
    for name in ("alice", "bob"):
        done = tidelog("users", "add", name, "--users-file", path)
        assert done.returncode == 0, done.stderr
        tokens[name] = done.stdout.strip()
    return path, tokens


@pytest.fixture(scope="module")
def secured(tmp_path_factory, certs, users):
    """A broker with TLS and tokens. The tests refuse many calls from 127.0.0.1 on purpose: its limit on
    failures per address is raised here, and tested on a broker of its own."""
    root = tmp_path_factory.mktemp("secured")
    (root / "tidelog.toml").write_text("auth_max_failures = 100000\n")
    server = ServerProcess(
        str(root / "data"),
        "--config",
        str(root / "tidelog.toml"),
        "--tls-cert",
        certs.server_cert,
        "--tls-key",
        certs.server_key,
        "--users-file",
        users[0],
    ).start()
    yield server
    server.stop()


def topics(server: ServerProcess, certs: Certs, token: str) -> list[str]:
    with Admin(server.target, security=ClientSecurity(ca_file=certs.ca_file, token=token), timeout_s=10) as admin:
        return admin.list_topics()


def test_a_user_with_its_token_over_tls_produces_and_consumes(secured, certs, users):
    security = ClientSecurity(ca_file=certs.ca_file, token=users[1]["alice"])
    with Admin(secured.target, security=security) as admin:
        admin.create_topic("greetings", 1)
    with Producer(secured.target, security=security, linger_ms=0) as producer:
        producer.send("greetings", b"hello", partition=0).result(10)
    with Consumer(secured.target, "greetings", 0, 0, security=security) as consumer:
        assert [r.value for r in consumer.poll(5)] == [b"hello"]


@pytest.mark.parametrize(
    "security",
    [
        pytest.param(lambda certs, tokens: None, id="plaintext-client"),
        pytest.param(lambda certs, tokens: ClientSecurity(ca_file=certs.other_ca_file, token=tokens["alice"]),
                     id="wrong-ca"),
        pytest.param(lambda certs, tokens: ClientSecurity(ca_file=certs.ca_file, server_name="elsewhere.test",
                                                          token=tokens["alice"]), id="wrong-server-name"),
    ],
)  # fmt: skip
def test_a_client_that_cannot_verify_the_broker_gets_nothing_done(secured, certs, users, security):
    name = f"never-{os.urandom(4).hex()}"
    with Admin(secured.target, security=security(certs, users[1]), timeout_s=5) as admin:
        with pytest.raises(BrokerUnavailableError):
            admin.create_topic(name, 1)
    assert name not in topics(secured, certs, users[1]["alice"])


@pytest.mark.parametrize(
    "token, message",
    [
        (None, "requires authentication"),
        ("alice:not-her-secret", "authentication failed"),
        ("mallory:whatever", "authentication failed"),
        ("alice:" + "x" * 5000, "authentication failed"),
        ("no-colon-at-all", None),  # refused by the client before it is sent
    ],
    ids=["no-token", "wrong-secret", "unknown-user", "huge-secret", "malformed"],
)
def test_a_call_without_valid_credentials_is_unauthenticated_and_does_nothing(secured, certs, users, token, message):
    name = f"never-{os.urandom(4).hex()}"
    if message is None:
        with pytest.raises(InvalidConfigError):
            ClientSecurity(ca_file=certs.ca_file, token=token)
        return
    with Admin(secured.target, security=ClientSecurity(ca_file=certs.ca_file, token=token), timeout_s=5) as admin:
        with pytest.raises(AuthenticationError, match=message):
            admin.create_topic(name, 1)
    assert name not in topics(secured, certs, users[1]["alice"])
    # the refusal says nothing that tells an unknown user from a wrong secret
    assert "mallory" not in (message or "") and "unknown" not in (message or "")


def test_the_data_path_streams_are_refused_too(secured, certs, users):
    """Produce and Subscribe are streams: the check runs before the first request is read."""
    security = ClientSecurity(ca_file=certs.ca_file, token=users[1]["alice"])
    with Admin(secured.target, security=security) as admin:
        admin.create_topic("guarded", 1)
    bad = ClientSecurity(ca_file=certs.ca_file, token="bob:wrong")
    with Producer(secured.target, security=bad, linger_ms=0, delivery_timeout_s=3) as producer:
        with pytest.raises(AuthenticationError):
            producer.send("guarded", b"sneaky", partition=0).result(10)
    with Consumer(secured.target, "guarded", 0, 0, security=security) as consumer:
        assert consumer.poll(1) == []  # nothing was appended
    with pytest.raises(AuthenticationError):
        with Consumer(secured.target, "guarded", 0, 0, security=bad, failover_s=2) as consumer:
            consumer.poll(5)


def test_a_rotated_or_removed_users_token_stops_working_without_a_restart(tmp_path, certs):
    path = str(tmp_path / "users.json")
    old = tidelog("users", "add", "carol", "--users-file", path).stdout.strip()
    server = ServerProcess(
        str(tmp_path / "data"), "--tls-cert", certs.server_cert, "--tls-key", certs.server_key, "--users-file", path
    ).start()
    try:
        assert topics(server, certs, old) == []  # verified once, then remembered by the broker
        rotated = tidelog("users", "rotate", "carol", "--users-file", path)
        assert rotated.returncode == 0, rotated.stderr
        new = rotated.stdout.strip()
        assert new != old
        _until_refused(server, certs, old)
        assert topics(server, certs, new) == []
        assert tidelog("users", "remove", "carol", "--users-file", path).returncode == 0
        _until_refused(server, certs, new)
        listed = tidelog("users", "list", "--users-file", path, "--format", "json")
        assert listed.returncode == 0 and listed.stdout.strip() == "[]"
    finally:
        server.stop()


def _until_refused(server: ServerProcess, certs: Certs, token: str) -> None:
    """The broker looks at the users file at most once a second: within a few, the token is refused."""
    deadline = time.monotonic() + 10
    while True:
        try:
            topics(server, certs, token)
        except AuthenticationError:
            return
        assert time.monotonic() < deadline, "the old token still works 10 s after the users file changed"
        time.sleep(0.2)


def test_an_address_that_keeps_failing_is_refused_but_its_clients_already_in_are_not(tmp_path, certs):
    path = str(tmp_path / "users.json")
    known = tidelog("users", "add", "dave", "--users-file", path).stdout.strip()
    fresh = tidelog("users", "add", "erin", "--users-file", path).stdout.strip()
    (tmp_path / "tidelog.toml").write_text("auth_max_failures = 3\n")
    server = ServerProcess(
        str(tmp_path / "data"),
        "--config",
        str(tmp_path / "tidelog.toml"),
        "--tls-cert",
        certs.server_cert,
        "--tls-key",
        certs.server_key,
        "--users-file",
        path,
    ).start()
    try:
        assert topics(server, certs, known) == []  # verified before the failures
        for _ in range(3):
            with pytest.raises(AuthenticationError):
                topics(server, certs, "dave:guess")
        with pytest.raises(AuthenticationError):  # right, but not checked: the address is being refused
            topics(server, certs, fresh)
        assert topics(server, certs, known) == []
        assert "3 authentication failures from 127.0.0.1" in server.log()
    finally:
        server.stop()


def test_metrics_need_credentials_and_health_does_not(secured, certs, users):
    context = ssl.create_default_context(cafile=certs.ca_file)
    url = f"https://127.0.0.1:{secured.metrics_port}"

    def get(path: str, authorization: str | None = None) -> int:
        request = urllib.request.Request(url + path, headers={"Authorization": authorization} if authorization else {})
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code

    token = users[1]["bob"]
    assert get("/metrics") == 401
    assert get("/metrics", "Bearer bob:wrong") == 401
    assert get("/metrics", f"Bearer {token}") == 200
    assert get("/metrics", "Basic " + base64.b64encode(token.encode()).decode()) == 200  # Prometheus basic_auth
    assert get("/healthz") == 200
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP to the TLS port
        urllib.request.urlopen(f"http://127.0.0.1:{secured.metrics_port}/healthz", timeout=10)
    with urllib.request.urlopen(
        urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {token}"}),
        context=context,
        timeout=10,
    ) as response:
        text = response.read().decode()
    assert 'tidelog_authentication_failures_total{principal="bob",reason="wrong secret"}' in text


def test_mutual_tls_identifies_clients_by_certificate(tmp_path, certs):
    server = ServerProcess(
        str(tmp_path / "data"),
        "--tls-cert",
        certs.server_cert,
        "--tls-key",
        certs.server_key,
        "--tls-client-ca",
        certs.ca_file,
    ).start()
    try:
        good = ClientSecurity(ca_file=certs.ca_file, cert_file=certs.client_cert, key_file=certs.client_key)
        with Admin(server.target, security=good) as admin:
            admin.create_topic("by-certificate", 1)
            assert admin.list_topics() == ["by-certificate"]
        for bad in (
            ClientSecurity(ca_file=certs.ca_file),  # no certificate
            ClientSecurity(ca_file=certs.ca_file, cert_file=certs.other_client_cert, key_file=certs.other_client_key),
        ):
            with Admin(server.target, security=bad, timeout_s=5) as admin:
                with pytest.raises((BrokerUnavailableError, AuthenticationError)):
                    admin.create_topic("never", 1)
        with Admin(server.target, security=good) as admin:
            assert admin.list_topics() == ["by-certificate"]
    finally:
        server.stop()


def test_a_renewed_certificate_is_served_without_dropping_the_listener(tmp_path, certs):
    """The broker starts with a certificate that has expired: clients refuse it. A renewal written over
    the files is served to the next connection (file change); SIGHUP reloads at once."""
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2)
    expired = certs.server(certs.ca, "expired", not_before=past - datetime.timedelta(days=30), not_after=past)
    cert, key = str(tmp_path / "live.crt"), str(tmp_path / "live.key")
    _replace(expired, cert, key)
    server = ServerProcess(str(tmp_path / "data"), "--tls-cert", cert, "--tls-key", key).start()
    try:
        trusting_ca = ClientSecurity(ca_file=certs.ca_file)
        with Admin(server.target, security=trusting_ca, timeout_s=5) as admin:
            with pytest.raises(BrokerUnavailableError):
                admin.list_topics()
        _replace((certs.server_cert, certs.server_key), cert, key)
        server.proc.send_signal(signal.SIGHUP)
        long_lived = Admin(server.target, security=trusting_ca, timeout_s=5)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert long_lived.list_topics() == []
                break
            except BrokerUnavailableError:
                assert time.monotonic() < deadline, "the renewed certificate was not served within 10 s"
                time.sleep(0.2)
        # a certificate of another CA now: new connections fail, the open one keeps working
        _replace(certs.server(certs.other_ca, "rotated"), cert, key)
        server.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        with Admin(server.target, security=trusting_ca, timeout_s=5) as admin:
            with pytest.raises(BrokerUnavailableError):
                admin.list_topics()
        with Admin(server.target, security=ClientSecurity(ca_file=certs.other_ca_file), timeout_s=5) as admin:
            assert admin.list_topics() == []
        assert long_lived.list_topics() == []
        long_lived.close()
        assert server.proc.poll() is None
    finally:
        server.stop()


def _replace(source: tuple[str, str], cert: str, key: str) -> None:
    """Write a certificate and key over the live files, each atomically (a rename)."""
    for src, dst in zip(source, (cert, key)):
        with open(src, "rb") as f:
            data = f.read()
        with open(dst + ".tmp", "wb") as f:
            f.write(data)
        os.replace(dst + ".tmp", dst)


def test_a_broker_refuses_to_listen_beyond_loopback_unprotected(tmp_path, certs, users):
    """The check runs before anything is bound; --insecure (not started here: tests bind loopback only)
    and TLS with authentication are accepted by the same check."""
    for args, missing in (
        ((), "TLS and authentication"),
        (("--tls-cert", certs.server_cert, "--tls-key", certs.server_key), "authentication"),
        (("--users-file", users[0]), "TLS"),
    ):
        done = tidelog("serve", "--data-dir", str(tmp_path / "data"), "--host", "0.0.0.0", "--port", "0", *args)
        assert done.returncode == 1, done.stderr
        assert f"refusing to listen on 0.0.0.0 without {missing}" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "data")
    from tidelog.config import ServerConfig

    ServerConfig(host="0.0.0.0", insecure=True)
    with pytest.raises(InvalidConfigError, match="acls_file needs authentication"):
        ServerConfig(acls_file="a", kafka_port=0, tls_cert_file="c", tls_key_file="k")
    ServerConfig(host="0.0.0.0", tls_cert_file="c", tls_key_file="k", users_file="u")
    with pytest.raises(InvalidConfigError, match="go together"):
        ServerConfig(tls_cert_file="c")


def test_an_open_broker_says_so_when_it_starts(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidelog", "serve", "--data-dir", str(tmp_path / "d"), "--port", "0",
         "--metrics-port", "-1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("tidelog serving address=127.0.0.1:") and line.rstrip().endswith("security=open")
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_kafka_listener_serves_tls(tmp_path, certs):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    server = ServerProcess(
        str(tmp_path / "data"), "--tls-cert", certs.server_cert, "--tls-key", certs.server_key, kafka=True
    ).start()
    try:
        base = {"bootstrap.servers": server.kafka_target, "socket.timeout.ms": 5000}
        secure = AdminClient({**base, "security.protocol": "SSL", "ssl.ca.location": certs.ca_file})
        assert secure.list_topics(timeout=10).brokers
        plain = AdminClient(base)
        with pytest.raises(KafkaException):
            plain.list_topics(timeout=3)
    finally:
        server.stop()


def test_a_users_file_with_a_token_needs_tls_or_loopback():
    security = ClientSecurity(token="alice:secret")
    with pytest.raises(InvalidConfigError, match="never sent in the clear"):
        security.channel_credentials("broker.example:50051")
    assert security.channel_credentials("127.0.0.1:50051") is not None


def test_huge_or_binary_credentials_are_refused_and_the_broker_goes_on(secured, certs, users):
    """Metadata far past any token's size, and a header of binary junk: refused (by gRPC's header limit
    or by the check), never a crash; the broker serves the next call."""
    import grpc

    from tidelog.client.channel import sync_channel
    from tidelog.wire import methods

    method = methods.method("Admin", "ListTopics")
    with sync_channel(secured.target, ClientSecurity(ca_file=certs.ca_file)) as channel:
        stub = channel.unary_unary(method.path, request_serializer=None, response_deserializer=None)
        for metadata in (
            (("authorization", "Bearer alice:" + "x" * 200_000),),
            (("authorization", "Bearer " + "é" * 3000),),
            (("authorization-bin", bytes(range(256)) * 10),),
            tuple((f"x-junk-{i}", "y" * 100) for i in range(300)),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                stub(b"", metadata=metadata, timeout=10)
            assert caught.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                           grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)  # fmt: skip
    assert secured.proc.poll() is None
    assert isinstance(topics(secured, certs, users[1]["alice"]), list)


@pytest.mark.parametrize("tls", [False, True], ids=["sasl-plaintext", "sasl-ssl"])
def test_kafka_clients_authenticate_with_scram_against_the_same_users(tmp_path, certs, users, tls):
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka import Producer as KafkaProducer
    from confluent_kafka.admin import AdminClient, NewTopic

    extra = ("--tls-cert", certs.server_cert, "--tls-key", certs.server_key) if tls else ()
    server = ServerProcess(str(tmp_path / "data"), "--users-file", users[0], *extra, kafka=True).start()
    try:
        name, secret = users[1]["alice"].split(":", 1)
        base = {"bootstrap.servers": server.kafka_target, "socket.timeout.ms": 5000}
        if tls:
            base.update({"ssl.ca.location": certs.ca_file})
        protocol = "SASL_SSL" if tls else "SASL_PLAINTEXT"

        def sasl(mechanism: str, password: str) -> dict:
            return {**base, "security.protocol": protocol, "sasl.mechanism": mechanism, "sasl.username": name,
                    "sasl.password": password}  # fmt: skip

        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            producer = KafkaProducer({**sasl(mechanism, secret), "linger.ms": 0})
            producer.produce("scram-topic", b"hello " + mechanism.encode(), partition=0)
            assert producer.flush(20) == 0
        consumer = KafkaConsumer({**sasl("SCRAM-SHA-256", secret), "group.id": "scram", "enable.auto.commit": False})
        consumer.assign([TopicPartition("scram-topic", 0, 0)])
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 2 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message.value())
        consumer.close()
        assert got == [b"hello SCRAM-SHA-256", b"hello SCRAM-SHA-512"]
        for config in (sasl("SCRAM-SHA-256", secret + "x"), {**base, **({"security.protocol": "SSL"} if tls else {})}):
            refused = AdminClient(config)  # kept: a collected client fails its futures with _DESTROY
            with pytest.raises(KafkaException, match="[Aa]uthentication|transport|[Tt]imed out"):
                refused.create_topics([NewTopic("never", 1, 1)], request_timeout=3)["never"].result(5)
        with Admin(server.target, security=ClientSecurity(ca_file=certs.ca_file if tls else None,
                                                           token=users[1]["alice"])) as admin:  # fmt: skip
            assert "never" not in admin.list_topics()
        with open(server.log_path) as f:
            log = f.read()
        assert "Kafka SASL authentication failed" in log  # the wrong secret
        assert "before SASL authentication" in log  # the client without SASL
    finally:
        server.stop()


def test_a_queue_consumer_id_learned_by_another_user_answers_nothing(secured, certs, users):
    """Consumer ids are chosen by clients: bob using alice's id is a different consumer. His ack, release
    and leave for her delivery change nothing, and her ack of it still counts."""
    from tidelog.client import QueueConsumer

    alice = ClientSecurity(ca_file=certs.ca_file, token=users[1]["alice"])
    bob = ClientSecurity(ca_file=certs.ca_file, token=users[1]["bob"])
    with Admin(secured.target, security=alice) as admin:
        admin.create_topic("jobs", 1)
    with Producer(secured.target, security=alice) as producer:
        producer.send("jobs", b"job", partition=0)
    with QueueConsumer(secured.target, "work", "jobs", consumer_id="worker-1", auto_extend=False,
                       security=alice) as hers:  # fmt: skip
        (message,) = hers.receive(1, wait_ms=10_000)
        with QueueConsumer(secured.target, "work", "jobs", consumer_id="worker-1", auto_extend=False,
                           security=bob) as his:  # fmt: skip
            assert his.receive(1, wait_ms=200) == []  # alice holds the only record
            for answer in (his.ack, his.release, his.reject):
                refused = answer([message])
                assert [r.offset for r in refused] == [message.offset]
                message.refused, message.answered = None, False  # the same object is alice's: hers to answer
        # bob's consumer left on closing: had it been alice's "worker-1", her record would be available
        with Admin(secured.target, security=alice) as admin:
            assert admin.describe_queue("work").partitions[0].in_flight == 1
        assert hers.ack([message]) == []
    with Admin(secured.target, security=alice) as admin:
        state = admin.describe_queue("work").partitions[0]
        assert (state.in_flight, state.start) == (0, 1)
