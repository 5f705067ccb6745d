"""How a client reaches a secured broker: TLS (the CA to trust, a client certificate, a server-name
override) and the token that says who it is.

    security = ClientSecurity(ca_file="ca.pem", token="alice:...")
    Producer("broker:50051", security=security)

A token is sent as gRPC call credentials (`authorization: Bearer user:secret`). Without TLS it is sent
only to a loopback address (gRPC's local credentials): a secret never crosses a network in the clear.
`ClientSecurity.from_env()` reads the CLI's environment variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import grpc

from ..config import is_loopback
from ..errors import InvalidConfigError

ENVIRONMENT = {
    "TIDELOG_CA_FILE": "ca_file",
    "TIDELOG_CLIENT_CERT": "cert_file",
    "TIDELOG_CLIENT_KEY": "key_file",
    "TIDELOG_SERVER_NAME": "server_name",
    "TIDELOG_TOKEN": "token",
}


@dataclass(frozen=True)
class ClientSecurity:
    """tls: connect with TLS (implied by any file); ca_file: PEM CAs that sign the broker's certificate
    (default: the system's roots); cert_file/key_file: this client's certificate (mutual TLS);
    server_name: the name the broker's certificate must carry, when it differs from the address
    dialled; token: `user:secret`, from `tidelog users add`."""

    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise InvalidConfigError("a client certificate needs both cert_file and key_file")
        if self.token is not None and (not self.token or ":" not in self.token or not self.token.isprintable()):
            raise InvalidConfigError("a token is user:secret, as `tidelog users add` printed it")
        if self.ca_file or self.cert_file or self.server_name:
            object.__setattr__(self, "tls", True)

    @classmethod
    def from_env(cls, **given: str | None) -> ClientSecurity | None:
        """The settings given (None: not given), else $TIDELOG_CA_FILE, $TIDELOG_CLIENT_CERT,
        $TIDELOG_CLIENT_KEY, $TIDELOG_SERVER_NAME, $TIDELOG_TOKEN and $TIDELOG_TLS (1); None when nothing
        is set (a plain connection)."""
        values = {field: given.get(field) or os.environ.get(env) or None for env, field in ENVIRONMENT.items()}
        tls = bool(given.get("tls")) or os.environ.get("TIDELOG_TLS", "") in ("1", "true", "yes")
        if not tls and not any(values.values()):
            return None
        return cls(tls=tls, **values)

    def channel_credentials(self, target: str) -> grpc.ChannelCredentials | None:
        """What the channel to `target` is made with (None: a plain channel)."""
        call = grpc.access_token_call_credentials(self.token) if self.token else None
        if self.tls:
            channel = grpc.ssl_channel_credentials(_read(self.ca_file), _read(self.key_file), _read(self.cert_file))
        elif call is not None:
            host = target.rpartition(":")[0] or target
            if not is_loopback(host):
                raise InvalidConfigError(
                    f"a token is never sent in the clear to {target}: connect with TLS (a CA file), or to a "
                    "loopback address"
                )
            channel = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        else:
            return None
        return grpc.composite_channel_credentials(channel, call) if call is not None else channel

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InvalidConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
