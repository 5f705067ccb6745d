"""The four shapes of a gRPC method handler, so that a wrapper around one can be built like it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc


def behavior_of(handler: grpc.RpcMethodHandler) -> tuple[Callable[..., Any], Callable[..., grpc.RpcMethodHandler]]:
    """(the handler's behavior, the grpc factory that makes a handler of the same shape)."""
    if handler.request_streaming and handler.response_streaming:
        return handler.stream_stream, grpc.stream_stream_rpc_method_handler
    if handler.response_streaming:
        return handler.unary_stream, grpc.unary_stream_rpc_method_handler
    if handler.request_streaming:
        return handler.stream_unary, grpc.stream_unary_rpc_method_handler
    return handler.unary_unary, grpc.unary_unary_rpc_method_handler


def rebuilt(handler: grpc.RpcMethodHandler, behavior: Callable[..., Any]) -> grpc.RpcMethodHandler:
    """A handler of the same shape and (de)serializers running `behavior`."""
    make = behavior_of(handler)[1]
    return make(
        behavior, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )
