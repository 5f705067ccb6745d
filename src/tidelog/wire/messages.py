"""Decoding protobuf requests so that malformed bytes become InvalidRequestError, not UNKNOWN.

grpcio runs a handler's request_deserializer before the handler and turns its exception into
UNKNOWN ("Unexpected DecodeError", logged with a traceback). Handlers take the raw bytes and decode
them with `decode`: a malformed message is a bad argument like any other.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from ..errors import InvalidRequestError

_M = TypeVar("_M", bound=Message)


def decode(request_type: type[_M], raw: bytes) -> _M:
    """The message in raw; InvalidRequestError when it is not a valid request_type."""
    try:
        return request_type.FromString(raw)
    except DecodeError as exc:
        raise InvalidRequestError(f"malformed request: {exc}") from None
