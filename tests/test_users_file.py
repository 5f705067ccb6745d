"""The users file and the authenticator on their own: what is kept, damage, concurrent writers, hostile
tokens, and the failure window on a fake clock."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import stat

import pytest

from tidelog.errors import AuthenticationError, InvalidConfigError, InvalidRequestError
from tidelog.security.authenticator import Authenticator, peer_host
from tidelog.security.users import UsersFile, split_token

PEER = "ipv4:10.1.2.3:5555"


def test_the_file_keeps_no_secret_and_only_its_owner_reads_it(tmp_path):
    users = UsersFile(str(tmp_path / "users.json"))
    token = users.add("alice")
    name, secret = split_token(token)
    raw = (tmp_path / "users.json").read_text()
    assert name == "alice" and secret not in raw and "alice" in raw
    assert stat.S_IMODE(os.stat(tmp_path / "users.json").st_mode) == 0o600
    user = users.load()["alice"]
    assert user.matches(secret) and not user.matches(secret + "x")
    assert set(user.credentials) == {"SCRAM-SHA-256", "SCRAM-SHA-512"}
    with pytest.raises(InvalidRequestError, match="exists"):
        users.add("alice")
    with pytest.raises(InvalidRequestError, match="no user"):
        users.rotate("bob")


@pytest.mark.parametrize(
    "content", ["", "{", '{"version": 2, "users": {}}', '{"version": 1}', '{"version": 1, "users": {"a": {}}}']
)
def test_a_damaged_file_is_refused_naming_it_and_never_rewritten(tmp_path, content):
    path = tmp_path / "users.json"
    path.write_text(content)
    users = UsersFile(str(path))
    with pytest.raises(InvalidConfigError, match="users.json is damaged"):
        users.load()
    with pytest.raises(InvalidConfigError):
        users.add("bob")
    assert path.read_text() == content


def _add_many(path: str, prefix: str) -> None:
    users = UsersFile(path)
    for i in range(10):
        users.add(f"{prefix}{i}")


def test_two_writers_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "users.json")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(path, prefix)) for prefix in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(UsersFile(path).load()) == sorted([f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)])
    json.loads((tmp_path / "users.json").read_text())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _principal(auth: Authenticator, header: str | None, peer: str = PEER) -> str:
    metadata = [("authorization", header)] if header is not None else []
    return asyncio.run(auth.principal(metadata, {}, peer))


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic YWxpY2U6eA==",
        "Bearer alice",
        "Bearer :secret",
        "Bearer alice:",
        "Bearer alice:\x00\x01",
        "Bearer " + "a" * 200 + ":x",
        "Bearer alice:" + "x" * 100_000,
        "Bearer ../../etc/passwd:x",
        "Bearer álice:x",
    ],
)
def test_hostile_tokens_are_refused_plainly(tmp_path, header):
    users = UsersFile(str(tmp_path / "users.json"))
    users.add("alice")
    auth = Authenticator(users.path, mutual=False)
    with pytest.raises(AuthenticationError) as caught:
        _principal(auth, header)
    assert caught.value.message == "authentication failed"


def test_failures_from_one_address_shut_it_out_until_they_age_out(tmp_path):
    users = UsersFile(str(tmp_path / "users.json"))
    alice, bob = users.add("alice"), users.add("bob")
    clock = Clock()
    counted: list[tuple[str, str]] = []
    auth = Authenticator(users.path, False, lambda *a: counted.append(a), clock=clock, max_failures=3)
    assert _principal(auth, f"Bearer {alice}") == "alice"
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            _principal(auth, "Bearer bob:guess")
    with pytest.raises(AuthenticationError):
        _principal(auth, f"Bearer {bob}")  # right, refused unchecked
    assert _principal(auth, f"Bearer {alice}") == "alice"  # verified before: still in
    assert _principal(auth, f"Bearer {bob}", "ipv4:10.9.9.9:1") == "bob"  # another address is not affected
    clock.now += 10.5
    assert _principal(auth, f"Bearer {bob}") == "bob"
    assert counted[:3] == [("bob", "wrong secret")] * 3
    assert counted[3] == ("bob", "too many failures from this peer")


def test_a_certificate_names_the_caller_only_under_mutual_tls(tmp_path):
    context = {"x509_common_name": [b"alice"]}
    mutual = Authenticator("", mutual=True)
    assert asyncio.run(mutual.principal([], context, PEER)) == "alice"
    with pytest.raises(AuthenticationError):
        asyncio.run(mutual.principal([], {"x509_common_name": [b"not a name"]}, PEER))
    with pytest.raises(AuthenticationError, match="requires authentication"):
        asyncio.run(Authenticator("", mutual=False).principal([], context, PEER))


def test_peer_hosts():
    assert peer_host("ipv4:127.0.0.1:5555") == "127.0.0.1"
    assert peer_host("ipv6:[::1]:5555") == "::1"
    assert peer_host("unix:/tmp/x") == "unix:/tmp/x"
