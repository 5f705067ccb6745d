"""Decoding of protobuf requests inside the servicers, so malformed bytes get a precise status.

grpcio runs a handler's request_deserializer before the handler and turns its exception into
UNKNOWN ("Unexpected DecodeError", logged with a traceback). Handlers here take the raw bytes and
decode them themselves: a malformed message becomes InvalidRequestError (INVALID_ARGUMENT with the
tidelog-error-code trailer), like every other bad argument. Runs on the event loop; holds no state.
"""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError

from ..errors import InvalidRequestError
from . import status


def decode(request_type, raw: bytes):
    """The message in raw; InvalidRequestError when it is not a valid request_type."""
    try:
        return request_type.FromString(raw)
    except DecodeError as exc:
        raise InvalidRequestError(f"malformed request: {exc}") from None


def unary(fn, request_type, response_serializer) -> grpc.RpcMethodHandler:
    """A unary handler that decodes request_type itself and answers INVALID_ARGUMENT to garbage."""
    async def handle(raw: bytes, context):
        try:
            request = decode(request_type, raw)
        except InvalidRequestError as exc:
            await status.abort(context, exc)
        return await fn(request, context)

    return grpc.unary_unary_rpc_method_handler(handle, request_deserializer=None,
                                               response_serializer=response_serializer)


async def decoded(request_type, request_iterator):
    """The messages of a request stream; a malformed one raises InvalidRequestError."""
    async for raw in request_iterator:
        yield decode(request_type, raw)
