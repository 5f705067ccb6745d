"""The one place every tidelog RPC is authenticated, before its handler reads a request or does anything.

`AuthenticationGate.wrap` puts the check in front of each handler (as admission does its limits); the
caller's principal is then in `principal` (a context variable of the RPC's task) for whatever follows.
Health checks and reflection are not tidelog services and stay open: a probe needs no secret, and they
say nothing about the data.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from ..errors import AuthenticationError
from ..security.authenticator import Authenticator
from . import status
from .handler_shape import behavior_of, rebuilt

ANONYMOUS = "ANONYMOUS"
"""The principal of every call when authentication is off (Kafka's name for it)."""
principal: contextvars.ContextVar[str] = contextvars.ContextVar("tidelog_principal", default=ANONYMOUS)


class AuthenticationGate:
    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler behind the check (cached per method)."""
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self._checked(handler))
        return cached[1]

    async def _enter(self, context: grpc.aio.ServicerContext) -> None:
        try:
            name = await self.authenticator.principal(
                context.invocation_metadata() or (), context.auth_context() or {}, context.peer()
            )
        except AuthenticationError as exc:
            await status.abort(context, exc)
        principal.set(name)

    def _checked(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        behavior = behavior_of(handler)[0]
        if inspect.isasyncgenfunction(behavior):

            async def checked_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await self._enter(context)
                responses = behavior(request, context)
                try:
                    async for response in responses:
                        yield response
                finally:
                    await responses.aclose()  # at once, as admission's budgets expect, not when collected

            checked: Callable[[Any, grpc.aio.ServicerContext], Any] = checked_stream
        else:

            async def checked_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._enter(context)
                return await behavior(request, context)

            checked = checked_call
        return rebuilt(handler, checked)
