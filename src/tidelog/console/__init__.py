"""The web console: topics, partitions, messages, groups, queues and traffic in a browser, served by
`tidelog serve --console-port` on a port of its own. It reads through tidelog's own client, like the CLI,
so it sees the whole cluster from any broker (data.py); pages and actions are in server.py.

On a broker with users, the console asks the browser for a user and its secret (HTTP Basic) and reads
the broker as that user, with the user's token: the broker authenticates it and its ACLs decide what the
pages show and which actions work, exactly as for the CLI. Each user looking has a Session of its own.
With TLS, the console serves HTTPS with the broker's certificate and checks the broker's against
`tls_ca_file`.
"""

from __future__ import annotations

import collections
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import AuthenticationError

MAX_SESSIONS = 16
"""Users looking at once, at most: past it the least recently seen one's clients are closed."""


@dataclass(frozen=True)
class ConsoleSecurity:
    """cert_file/key_file: the console's own HTTPS; ca_file: what the broker's certificate chains to;
    server_name: the name in it, when not the address dialled; users: the broker checks tokens."""

    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    server_name: str = ""
    users: bool = False
    token: str = ""
    """Without users: the one token every page reads with (the CLI's --token-file), if any."""


class Session:
    """One user's console: its clients (with its token), what it sees, what it may do."""

    def __init__(self, broker: str, metrics_url: str | None, security: ConsoleSecurity, token: str | None) -> None:
        from ..client import Admin, ClientSecurity
        from .data import ConsoleData
        from .server import Actions

        self.broker = broker
        self.client_security = None
        if security.ca_file or token:
            self.client_security = ClientSecurity(
                ca_file=security.ca_file or None, server_name=security.server_name or None, token=token
            )
        self.admin = Admin(broker, timeout_s=10, security=self.client_security)
        context = None
        if metrics_url is not None and metrics_url.startswith("https:"):
            context = ssl.create_default_context(cafile=security.ca_file or None)
            context.check_hostname = False  # this broker's own endpoint on loopback; the chain is checked
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.data = ConsoleData(self.admin, metrics_url, headers=headers, ssl_context=context)
        self._producer: Any = None
        self._lock = threading.Lock()
        self.actions = Actions(self.admin, self.produce, self.close)

    def produce(self, topic: str, partition: int | None, key: bytes | None, value: bytes) -> Any:
        from ..client import Producer

        with self._lock:
            if self._producer is None:
                self._producer = Producer(self.broker, linger_ms=0, security=self.client_security)
        return self._producer.send(topic, value, key=key, partition=partition).result(timeout=30)

    def consumer_for(self, topic: str, partition: int, offset: int, credit: int) -> Any:
        from ..client.consumer import PartitionConsumer

        return PartitionConsumer(
            self.broker, topic, partition, offset, credit_bytes=credit, max_message_bytes=credit, failover_s=5.0,
            security=self.client_security,
        )  # fmt: skip

    def close(self) -> None:
        self.data.close()
        if self._producer is not None:
            self._producer.close()
        self.admin.close()


class Sessions:
    """The session of whoever asks: without users, one for everybody; with, one per token (the broker
    decides whether the token is any good, at the session's first call)."""

    def __init__(self, make: Callable[[str | None], Session], users: bool) -> None:
        self._make, self.users = make, users
        self._sessions: collections.OrderedDict[str | None, Session] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str | None) -> Session:
        if self.users and not token:
            raise AuthenticationError("this broker requires a user: give its name and secret")
        key = token if self.users else None
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = self._make(key)
                while len(self._sessions) > MAX_SESSIONS:
                    self._sessions.popitem(last=False)[1].close()
            self._sessions.move_to_end(key)
            return session

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), collections.OrderedDict()
        for session in sessions:
            session.close()


def start_console(
    broker: str,
    metrics_url: str | None,
    host: str,
    port: int,
    settings: dict[str, Any],
    *,
    write: bool = False,
    security: ConsoleSecurity | None = None,
):
    """Serve the console for the broker at `broker` (host:port) on host:port (0: any free port); returns
    the running ConsoleServer (its `port`, and `stop()`)."""
    from .server import ConsoleServer

    security = security or ConsoleSecurity()
    sessions = Sessions(
        lambda token: Session(broker, metrics_url, security, token or security.token or None), security.users
    )
    context = None
    if security.cert_file:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(security.cert_file, security.key_file)
    console = ConsoleServer(sessions, settings, write=write)
    console.start(host, port, context)
    return console
