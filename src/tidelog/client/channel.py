"""Channels to a broker and the translation of failed calls back into tidelog errors."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import grpc

from ..errors import InvalidRequestError
from ..wire.methods import Method
from ..wire.statuses import error_from_rpc
from .security import ClientSecurity

MAX_MESSAGE_BYTES = 64 << 20
DEFAULT_TARGET = "localhost:50051"

OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 0),
    # A restarted broker is found again within ~2 s (gRPC's default backoff grows to 2 min),
    # and one channel's failed attempts never hold back another channel's first call.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.use_local_subchannel_pool", 1),
]


def parse_targets(targets: str | Sequence[str]) -> list[str]:
    """Bootstrap addresses from "host:port,host:port" (or a list), in order, without repeats."""
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    out = list(dict.fromkeys(t.strip() for t in items if t and t.strip()))
    if not out:
        raise InvalidRequestError(f"no broker address in {targets!r}")
    return out


def sync_channel(target: str, security: ClientSecurity | None = None) -> grpc.Channel:
    credentials = security.channel_credentials(target) if security is not None else None
    if credentials is None:
        return grpc.insecure_channel(target, options=OPTIONS)
    assert security is not None
    return grpc.secure_channel(target, credentials, options=OPTIONS + security.options())


def aio_channel(target: str, security: ClientSecurity | None = None) -> grpc.aio.Channel:
    credentials = security.channel_credentials(target) if security is not None else None
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=OPTIONS)
    assert security is not None
    return grpc.aio.secure_channel(target, credentials, options=OPTIONS + security.options())


def unary(channel, method: Method, target: str, timeout_s: float):
    """A callable making one unary call; a failed call raises the tidelog error the broker raised."""
    stub = channel.unary_unary(
        method.path,
        request_serializer=method.request.SerializeToString,
        response_deserializer=method.response.FromString,
    )

    @functools.wraps(stub)
    def call(request, timeout=None):
        try:
            return stub(request, timeout=timeout if timeout is not None else timeout_s)
        except grpc.RpcError as err:
            raise error_from_rpc(err, target) from None

    return call
