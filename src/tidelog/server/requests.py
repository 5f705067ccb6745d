"""Handlers that decode their own requests, so malformed bytes get a precise status.

Each builder takes the method's `wire.methods.Method` (request and response types from the .proto) and
returns its grpc handler; `wire.methods.handlers` puts a service's table together. Runs on the event
loop; holds no state.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from ..errors import InvalidRequestError
from ..wire.messages import decode
from ..wire.methods import Method
from . import status

_M = TypeVar("_M", bound=Message)

UnaryFn = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
"""A unary method: (the decoded request, its context) → the response, a message or framed bytes."""
StreamFn = Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext], AsyncIterator[Any]]
"""A bidirectional-stream method: (the raw requests, the context) → the responses."""
Builder = Callable[[Method], grpc.RpcMethodHandler]


def unary(fn: UnaryFn, *, raw_response: bool = False) -> Builder:
    """A unary handler that decodes the request itself and answers INVALID_ARGUMENT to garbage.
    With raw_response, fn returns the response already framed (wire/framing.py)."""

    def build(method: Method) -> grpc.RpcMethodHandler:
        async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                request = decode(method.request, raw)
            except InvalidRequestError as exc:
                await status.abort(context, exc)
            return await fn(request, context)

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=None,
            response_serializer=None if raw_response else method.response.SerializeToString,
        )

    return build


def stream(fn: StreamFn, *, raw_response: bool = False) -> Builder:
    """A bidirectional-stream handler that receives the requests as bytes (fn decodes them, with
    `decoded`, or frames them by hand) and sends responses serialized, or already framed."""

    def build(method: Method) -> grpc.RpcMethodHandler:
        return grpc.stream_stream_rpc_method_handler(
            fn,
            request_deserializer=None,
            response_serializer=None if raw_response else method.response.SerializeToString,
        )

    return build


async def decoded(request_type: type[_M], request_iterator: AsyncIterable[bytes]) -> AsyncIterator[_M]:
    """The messages of a request stream; a malformed one raises InvalidRequestError."""
    async for raw in request_iterator:
        yield decode(request_type, raw)
