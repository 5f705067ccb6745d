"""What a broker shows another broker of its cluster when it connects to it (replication, forwarded
calls): TLS, checking the other's certificate against `tls_ca_file` (or the system's roots), and its own
token from `broker_token_file` as a call credential. None of it in a cluster without TLS.

The files are read once, at start: a broker restarted picks up a new token or CA.
"""

from __future__ import annotations

import grpc

from ..errors import InvalidConfigError
from .users import split_token


def peer_credentials(ca_file: str, token_file: str) -> grpc.ChannelCredentials:
    """The credentials of this broker's channels to the others (TLS; a token when token_file is given)."""
    channel = grpc.ssl_channel_credentials(_read(ca_file, "tls_ca_file") if ca_file else None)
    if not token_file:
        return channel
    token = _read(token_file, "broker_token_file").decode("utf-8", "replace").strip()
    if split_token(token) is None:
        raise InvalidConfigError(f"broker_token_file {token_file} does not hold a token (user:secret)")
    return grpc.composite_channel_credentials(channel, grpc.access_token_call_credentials(token))


def _read(path: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InvalidConfigError(f"cannot read {setting} {path}: {exc.strerror or exc}") from None
