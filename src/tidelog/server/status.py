"""Ending an RPC with a tidelog error: the status from the wire contract (wire/statuses.py), logged.

Every RPC ended here is logged once (event "rpc_error": method, code, message, peer): at INFO for
what the client did wrong or may retry, at ERROR for failures of the broker itself. The method name
comes from `MethodNames`, a server interceptor that stores it in a context variable for the RPC's
task (the aio servicer context does not expose it).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc

from .. import errors
from ..wire.statuses import details, status_of, trailing_metadata

log = logging.getLogger("tidelog.server")
_method: contextvars.ContextVar[str] = contextvars.ContextVar("tidelog_rpc_method", default="?")
_BROKER_FAULTS = (grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNKNOWN)


class MethodNames(grpc.aio.ServerInterceptor):
    """Remembers the method of the RPC being handled (one context-variable set per call)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        _method.set(handler_call_details.method)
        return await continuation(handler_call_details)


async def abort(context: grpc.aio.ServicerContext, exc: errors.TidelogError) -> NoReturn:
    """End the RPC with the status for exc (raises, as grpc.aio's abort does)."""
    code = status_of(exc)
    log.log(
        logging.ERROR if code in _BROKER_FAULTS else logging.INFO,
        "request failed",
        extra={
            "event": "rpc_error",
            "method": _method.get(),
            "code": code.name,
            "error_code": exc.code,
            "error": exc.message,
            "peer": context.peer(),
        },
    )
    context.set_trailing_metadata(trailing_metadata(exc))
    await context.abort(code, details(exc))
    # grpc.aio's abort always raises (AbortError); grpc is untyped, so mypy cannot know it does.
    raise AssertionError("context.abort returned")
