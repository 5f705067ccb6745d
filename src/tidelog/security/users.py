"""Principals and their secrets: the users file, managed by `tidelog users`.

A user's secret is a token the broker's CLI generates (or a password given on stdin). The file never
holds the secret: per mechanism, SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802 / 7677, what Kafka keeps for
SASL/SCRAM), a random salt, an iteration count and the StoredKey / ServerKey derived from the secret with
PBKDF2 (made by `scramp`). One record serves both listeners: gRPC clients present the secret (over TLS, or
on loopback) and the broker derives StoredKey from it to compare; Kafka clients will prove it with a SCRAM
exchange without sending it. A stolen file costs an attacker PBKDF2's iterations per guess, and a
generated token (256 random bits) cannot be guessed at all.

The file is JSON, written and read as every security file is (json_file.py): whole, 0600, under a lock,
refused with its path when damaged, never rewritten.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import scramp

from ..errors import InvalidRequestError
from . import json_file

FORMAT_VERSION = 1
MECHANISMS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
"""SCRAM mechanism -> the hashlib name of its hash."""
ITERATIONS = 8192
"""PBKDF2 iterations per credential: twice SCRAM's minimum of 4096 (Kafka's default); a check costs the
broker ~5 ms once per client (verified secrets are remembered), a guess costs an attacker as much."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}\Z")
"""User names: no ':' (it separates the name from the secret in a token), no spaces, at most 128 characters."""
MAX_SECRET_CHARS = 1024


@dataclass(frozen=True)
class ScramCredential:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def matches(self, secret: str, hash_name: str) -> bool:
        """Whether `secret` derives this StoredKey (RFC 5802: H(HMAC(PBKDF2(secret), "Client Key")))."""
        salted = hashlib.pbkdf2_hmac(hash_name, secret.encode(), self.salt, self.iterations)
        client_key = hmac.new(salted, b"Client Key", hash_name).digest()
        return hmac.compare_digest(hashlib.new(hash_name, client_key).digest(), self.stored_key)


@dataclass(frozen=True)
class User:
    name: str
    credentials: dict[str, ScramCredential]  # by mechanism
    created_ms: int
    rotated_ms: int
    groups: tuple[str, ...] = ()
    """Groups the user belongs to: ACLs for `group:NAME` apply to it."""

    def matches(self, secret: str) -> bool:
        credential = self.credentials.get("SCRAM-SHA-256")
        return credential is not None and credential.matches(secret, "sha256")


def new_secret() -> str:
    """256 random bits, URL-safe text."""
    return secrets.token_urlsafe(32)


def make_token(name: str, secret: str) -> str:
    """What a client presents: `name:secret`."""
    return f"{name}:{secret}"


def split_token(token: str) -> tuple[str, str] | None:
    """(name, secret) of a well-formed token, else None."""
    name, sep, secret = token.partition(":")
    if not sep or not NAME.match(name) or not secret or len(secret) > MAX_SECRET_CHARS or not secret.isprintable():
        return None
    return name, secret


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidRequestError(
            f"a user name is 1-128 letters, digits, '.', '_', '@' or '-' (starting with a letter or digit), "
            f"not {name!r}"
        )
    return name


def credentials_for(secret: str) -> dict[str, ScramCredential]:
    if not secret or len(secret) > MAX_SECRET_CHARS or not secret.isprintable():
        raise InvalidRequestError(f"a secret is 1-{MAX_SECRET_CHARS} printable characters")
    out = {}
    for mechanism in MECHANISMS:
        salt, stored_key, server_key, iterations = scramp.ScramMechanism(mechanism).make_auth_info(
            secret, iteration_count=ITERATIONS
        )
        out[mechanism] = ScramCredential(salt, iterations, stored_key, server_key)
    return out


class UsersFile:
    """The users file at `path` (it need not exist yet: `add` creates it)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def stamp(self) -> tuple[int, int, int] | None:
        return json_file.stamp(self.path)

    def load(self) -> dict[str, User]:
        """Every user; {} when there is no file. A damaged file raises InvalidConfigError naming it."""
        return json_file.read_document(self.path, "users file", FORMAT_VERSION, _users, {})

    def add(self, name: str, secret: str | None = None, groups: tuple[str, ...] = ()) -> str:
        """A new user; returns its token (the only time the secret is shown)."""
        check_name(name)
        groups = _groups(groups)
        secret = secret or new_secret()
        with self._changing() as users:
            if name in users:
                raise InvalidRequestError(f"user {name!r} exists; `tidelog users rotate {name}` gives it a new secret")
            now = _now_ms()
            users[name] = User(name, credentials_for(secret), now, now, groups)
        return make_token(name, secret)

    def rotate(self, name: str, secret: str | None = None) -> str:
        """A new secret for a user (the old one stops working as soon as brokers see the file); its token."""
        secret = secret or new_secret()
        with self._changing() as users:
            old = self._existing(users, name)
            users[name] = dataclasses.replace(old, credentials=credentials_for(secret), rotated_ms=_now_ms())
        return make_token(name, secret)

    def set_groups(self, name: str, groups: tuple[str, ...]) -> None:
        groups = _groups(groups)
        with self._changing() as users:
            users[name] = dataclasses.replace(self._existing(users, name), groups=groups)

    def remove(self, name: str) -> None:
        with self._changing() as users:
            self._existing(users, name)
            del users[name]

    @staticmethod
    def _existing(users: dict[str, User], name: str) -> User:
        user = users.get(name)
        if user is None:
            raise InvalidRequestError(f"there is no user {name!r}")
        return user

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, User]]:
        """Load under an exclusive lock, let the caller change the users, write them back atomically."""
        with json_file.locked(self.path):
            users = self.load()
            yield users
            doc = {"version": FORMAT_VERSION, "users": {name: _entry(u) for name, u in sorted(users.items())}}
            json_file.write_json_atomically(self.path, doc)


def parse_users(raw: bytes, where: str, otherwise: str) -> dict[str, User]:
    """The users of a document held elsewhere than in a file (a cluster's, in etcd)."""
    return json_file.parse_document(raw, where, FORMAT_VERSION, _users, otherwise)


def _users(doc: dict) -> dict[str, User]:
    return {name: _user(name, entry) for name, entry in doc["users"].items()}


def _groups(groups: tuple[str, ...]) -> tuple[str, ...]:
    for group in groups:
        check_name(group)
    return tuple(sorted(set(groups)))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _entry(user: User) -> dict:
    return {
        "created_ms": user.created_ms,
        "rotated_ms": user.rotated_ms,
        "groups": list(user.groups),
        "scram": {
            mechanism: {
                "salt": _b64(c.salt),
                "iterations": c.iterations,
                "stored_key": _b64(c.stored_key),
                "server_key": _b64(c.server_key),
            }
            for mechanism, c in user.credentials.items()
        },
    }


def _user(name: str, entry: dict) -> User:
    if not NAME.match(name):
        raise ValueError(f"bad user name {name!r}")
    credentials = {}
    for mechanism, c in entry["scram"].items():
        if mechanism not in MECHANISMS:
            raise ValueError(f"user {name!r}: unknown mechanism {mechanism!r}")
        iterations = c["iterations"]
        if not isinstance(iterations, int) or iterations < 4096:
            raise ValueError(f"user {name!r}: {mechanism} iterations must be an integer >= 4096")
        credentials[mechanism] = ScramCredential(
            base64.b64decode(c["salt"], validate=True),
            iterations,
            base64.b64decode(c["stored_key"], validate=True),
            base64.b64decode(c["server_key"], validate=True),
        )
    if "SCRAM-SHA-256" not in credentials:
        raise ValueError(f"user {name!r} has no SCRAM-SHA-256 credential")
    groups = entry.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) and NAME.match(g) for g in groups):
        raise ValueError(f"user {name!r}: groups must be a list of names")
    return User(name, credentials, int(entry["created_ms"]), int(entry["rotated_ms"]), tuple(groups))
