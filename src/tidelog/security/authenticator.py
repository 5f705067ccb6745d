"""Who is calling: a token checked against the users file, or the client certificate under mutual TLS.

A token is `name:secret`, sent as `authorization: Bearer name:secret`. Checking one derives the
secret's SCRAM StoredKey (PBKDF2, a few milliseconds, in a worker thread); a token that passed is
remembered, by a SHA-256 of it, until the users file changes, so a client pays that once, not per call.
Under mutual TLS a call without a token is its certificate's common name (gRPC checked the chain).

Every refusal says only "authentication failed" (or that credentials are missing): nothing tells an
unknown user from a wrong secret. Each is logged with the peer and the reason. A peer that fails
`max_failures` times within WINDOW_S has every token not verified before refused without a check until
the window has passed: that bounds both guessing and the PBKDF2 work an attacker can make the broker do,
while the peer's clients already in (their tokens remembered) go on working.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import AuthenticationError
from . import json_file
from .users import NAME, User, UsersFile, split_token

log = logging.getLogger("tidelog.security")

MAX_FAILURES = 10
WINDOW_S = 10.0
REMEMBERED = 10_000
"""Verified tokens remembered at most (then the oldest go): memory stays bounded whatever clients do."""
MAX_HEADER_CHARS = 2048
FAILED = "authentication failed"


class Authenticator:
    """users: the users file ("" for none: tokens are refused), or the users a cluster's etcd holds
    (a json_file.Pushed); mutual: client certificates identify callers. `on_failure(principal, reason)`
    counts refusals (metrics)."""

    def __init__(
        self,
        users: str | json_file.Pushed[dict[str, User]],
        mutual: bool,
        on_failure: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_failures: int = MAX_FAILURES,
    ) -> None:
        self.mutual = mutual
        self.max_failures = max_failures
        self._file: json_file.Watched[dict[str, User]] | json_file.Pushed[dict[str, User]] | None = None
        if isinstance(users, json_file.Pushed):
            self._file = users
        elif users:
            self._file = json_file.Watched(users, UsersFile(users).load, "users file", clock=clock)
        if self._file is not None:
            self._file.on_change = self._forget
        self._verified: collections.OrderedDict[bytes, str] = collections.OrderedDict()
        self._failures: dict[str, collections.deque[float]] = {}
        self._on_failure = on_failure
        self._clock = clock

    @property
    def _users(self) -> dict[str, User]:
        """The users as the file says now (re-read when it changes)."""
        return self._file.current() if self._file is not None else {}

    @property
    def users(self) -> int:
        return len(self._users)

    def known_users(self) -> dict[str, User]:
        """The users as the file says now (the Kafka listener's SCRAM exchanges check against them)."""
        return self._users

    def _forget(self, users: dict[str, User]) -> None:
        self._verified.clear()  # a removed or rotated user's token stops working now

    def groups_of(self, principal: str) -> tuple[str, ...]:
        """The groups of a user in the users file (a certificate's name without an entry has none)."""
        user = self._users.get(principal)
        return user.groups if user is not None else ()

    def reload(self) -> None:
        """Read the users file again now (SIGHUP)."""
        if self._file is not None:
            self._file.reload()

    async def principal(self, metadata: Iterable[tuple[str, str | bytes]], auth_context: dict, peer: str) -> str:
        """The caller's principal, or AuthenticationError; a secret not seen yet is checked in a worker thread."""
        found = self._identify(metadata, auth_context, peer)
        if isinstance(found, str):
            return found
        return self._settle(found, await asyncio.get_running_loop().run_in_executor(None, found.check))

    def principal_blocking(self, metadata: Iterable[tuple[str, str | bytes]], auth_context: dict, peer: str) -> str:
        """The same, on the calling thread (the metrics endpoint's request threads)."""
        found = self._identify(metadata, auth_context, peer)
        return found if isinstance(found, str) else self._settle(found, found.check())

    def _identify(self, metadata: Iterable[tuple[str, str | bytes]], auth_context: dict, peer: str) -> str | _Check:
        """A principal at once (a certificate, or a token verified before), or the check still to make."""
        host = peer_host(peer)
        now = self._clock()
        header = _authorization(metadata)
        if header is None:
            name = _certificate_name(auth_context) if self.mutual else None
            if name is not None:
                return name
            raise self._refuse(
                host,
                "?",
                "no credentials",
                now,
                message="this broker requires authentication: give a token (user:secret)"
                + (" or a client certificate" if self.mutual else "")
                + " (CLI: --token-file or $TIDELOG_TOKEN)",
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        parts = split_token(token) if scheme.lower() == "bearer" and len(header) <= MAX_HEADER_CHARS else None
        if parts is None:
            raise self._refuse(host, "?", "malformed token", now)
        name, secret = parts
        key = hashlib.sha256(token.encode()).digest()
        users = self._users  # first: a reload of the file forgets the verified tokens
        if self._verified.get(key) == name and name in users:
            self._verified.move_to_end(key)
            return name  # checked before: a peer that is being refused keeps its clients already in
        if self._limited(host, now):
            raise self._refuse(host, name, "too many failures from this peer", now, count=False)
        user = users.get(name)
        if user is None:
            raise self._refuse(host, name, "unknown user", now)
        return _Check(user, secret, key, host, now)

    def _settle(self, check: _Check, matched: bool) -> str:
        if not matched:
            raise self._refuse(check.host, check.user.name, "wrong secret", check.at)
        if self._users.get(check.user.name) is check.user:  # not rotated or removed while it was being checked
            self._verified[check.key] = check.user.name
            while len(self._verified) > REMEMBERED:
                self._verified.popitem(last=False)
        return check.user.name

    def _limited(self, host: str, now: float) -> bool:
        times = self._failures.get(host)
        if not times:
            return False
        while times and now - times[0] > WINDOW_S:
            times.popleft()
        if not times:
            del self._failures[host]
            return False
        return len(times) >= self.max_failures

    def _refuse(
        self, host: str, name: str, reason: str, now: float, *, count: bool = True, message: str = FAILED
    ) -> AuthenticationError:
        if count:
            times = self._failures.setdefault(host, collections.deque())
            times.append(now)
            if len(times) == self.max_failures:
                log.warning(
                    "%d authentication failures from %s within %g s: refusing it until they age out",
                    self.max_failures,
                    host,
                    WINDOW_S,
                    extra={"event": "auth_rate_limited", "peer": host},
                )
            if len(self._failures) > REMEMBERED:  # a flood of peers: forget the quietest
                self._failures.pop(next(iter(self._failures)))
        log.warning(
            "authentication failed",
            extra={"event": "auth_failed", "peer": host, "principal": name, "reason": reason},
        )
        if self._on_failure is not None:
            self._on_failure(name if name in self._users else "?", reason)
        return AuthenticationError(message)


@dataclass(frozen=True)
class _Check:
    """A token of a known user whose secret is still to be derived and compared (PBKDF2: milliseconds)."""

    user: User
    secret: str
    key: bytes
    host: str
    at: float

    def check(self) -> bool:
        return self.user.matches(self.secret)


def peer_host(peer: str) -> str:
    """The address of a gRPC peer string ("ipv4:1.2.3.4:5678", "ipv6:[::1]:5678") without its port."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1 : rest.find("]")]
    return rest.rpartition(":")[0] or peer


def _authorization(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def _certificate_name(auth_context: dict) -> str | None:
    """The common name of a client certificate gRPC verified, when it is a valid principal name."""
    names = auth_context.get("x509_common_name") or []
    if len(names) != 1:
        return None
    name = names[0].decode("utf-8", "replace") if isinstance(names[0], bytes) else str(names[0])
    return name if NAME.match(name) else None


def peer_certificate_name(peercert: dict | None) -> str | None:
    """The same for a certificate Python's ssl verified (the Kafka listener's): its one common name."""
    names = [value for rdn in (peercert or {}).get("subject", ()) for key, value in rdn if key == "commonName"]
    return names[0] if len(names) == 1 and NAME.match(names[0]) else None
