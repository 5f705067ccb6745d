"""SASL/SCRAM for the Kafka listener (RFC 5802 / 7677, Kafka's SCRAM-SHA-256 and SCRAM-SHA-512): the
exchange runs against the users file's stored credentials with `scramp`'s server, so the broker never
sees a secret. A failure, whatever its cause (unknown user, wrong proof, malformed message), is the
same AuthenticationError.
"""

from __future__ import annotations

from collections.abc import Callable

import scramp

from ..errors import AuthenticationError
from .users import MECHANISMS, User

FAILED = "authentication failed"


class ScramExchange:
    """One client's exchange: client-first -> server-first, then client-final -> server-final."""

    def __init__(self, mechanism: str, users: Callable[[], dict[str, User]]) -> None:
        self.mechanism = mechanism
        self._users = users
        self._server = scramp.ScramMechanism(mechanism).make_server(self._credentials)
        self._step = 0
        self._name = ""  # the user the client-first message names

    def _credentials(self, name: str) -> tuple[bytes, bytes, bytes, int]:
        self._name = name
        user = self._users().get(name)
        credential = user.credentials.get(self.mechanism) if user is not None else None
        if credential is None:
            raise AuthenticationError(FAILED)
        return credential.salt, credential.stored_key, credential.server_key, credential.iterations

    def step(self, data: bytes) -> tuple[bytes, str | None]:
        """The reply to one client message, and the principal once the client has proven its secret."""
        try:
            text = data.decode("utf-8")
            if self._step == 0:
                self._server.set_client_first(text)
                self._step = 1
                return self._server.get_server_first().encode(), None
            if self._step == 1:
                self._server.set_client_final(text)
                self._step = 2
                return self._server.get_server_final().encode(), self._name
        except (scramp.ScramException, UnicodeDecodeError, AuthenticationError, ValueError, KeyError):
            pass
        raise AuthenticationError(FAILED)


class SaslServer:
    """What the Kafka listener offers: the SCRAM mechanisms over the users file's current content."""

    mechanisms = tuple(MECHANISMS)

    def __init__(self, users: Callable[[], dict[str, User]], on_failure: Callable[[str], None] | None = None) -> None:
        self._users = users
        self.on_failure = on_failure
        """on_failure(reason): counts a refused exchange (metrics)."""

    def start(self, mechanism: str) -> ScramExchange | None:
        return ScramExchange(mechanism, self._users) if mechanism in self.mechanisms else None
