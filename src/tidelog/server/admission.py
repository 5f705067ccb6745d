"""Admission of tidelog calls: per-connection limits and the data-path share of the server.

gRPC's own maximum_concurrent_rpcs counts every call of every client alike, so one client holding
enough idle streams would have every other client's calls, administration included, refused. Here
data-path calls (the Producer and Consumer services) are counted twice before they run: per client
connection (max_concurrent_rpcs_per_connection) and for the whole server (max_concurrent_rpcs less
admin_reserved_rpcs, which stay free for Admin, Groups, health and reflection calls). A call past
either limit ends at once with RESOURCE_EXHAUSTED (ResourceLimitError naming the setting). A call's
slot is given back when it ends, however it ends: answered, failed, cancelled, or its client killed
(gRPC cancels the calls of a closed connection).

The connection is gRPC's peer: the client's address and port (`ipv4:10.0.0.7:53122`), shared by all
calls of one channel. Each connection also has its own produce read-ahead budget
(max_inflight_bytes_per_connection), which the Producer service asks for with `connection(peer)`.
A connection's state exists while it has a data-path call open.

A grpc.aio server interceptor sees the method name and metadata but not the peer, which is known
only once the handler runs; so admission wraps the method handlers themselves (`wrap`, called by
the server's generic handler for every call). Event-loop only.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from ..config import ServerConfig
from ..errors import ResourceLimitError
from . import status
from .budget import ByteBudget
from .handler_shape import behavior_of, rebuilt


class Connection:
    """What one client connection holds: its open data-path calls and its produce read-ahead."""

    def __init__(self, peer: str, produce_limit: int) -> None:
        self.peer = peer
        self.calls = 0
        self.produce = ByteBudget(produce_limit)


class Admission:
    def __init__(
        self, config: ServerConfig, data_services: tuple[str, ...], on_refused: Callable[[str, str], None] | None = None
    ) -> None:
        self.config = config
        self.data_calls = 0
        """Data-path calls open on the whole server."""
        self.data_limit = config.data_path_rpcs
        self._data_prefixes = tuple(f"/{service}/" for service in data_services)
        self._connections: dict[str, Connection] = {}
        self._on_refused = on_refused
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def connection(self, peer: str) -> Connection | None:
        """The state of a connection with a data-path call open (None for any other peer)."""
        return self._connections.get(peer)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler, admitted through the limits when it is a data-path method (cached per method)."""
        if not method.startswith(self._data_prefixes):
            return handler
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self._admitted(method, handler))
        return cached[1]

    def _refusal(self, method: str, peer: str) -> ResourceLimitError | None:
        conn = self._connections.get(peer)
        if conn is not None and conn.calls >= self.config.max_concurrent_rpcs_per_connection:
            setting = "max_concurrent_rpcs_per_connection"
            error = ResourceLimitError(
                f"this connection already has {conn.calls} Producer/Consumer calls open "
                f"(max_concurrent_rpcs_per_connection={self.config.max_concurrent_rpcs_per_connection}); "
                "close some, or spread them over more channels"
            )
        elif self.data_calls >= self.data_limit:
            setting = "admin_reserved_rpcs"
            error = ResourceLimitError(
                f"the server already serves {self.data_calls} Producer/Consumer calls, all it takes "
                f"(max_concurrent_rpcs={self.config.max_concurrent_rpcs} less admin_reserved_rpcs="
                f"{self.config.max_concurrent_rpcs - self.data_limit}, kept for administration); retry later"
            )
        else:
            return None
        if self._on_refused is not None:
            self._on_refused(method, setting)
        return error

    def _enter(self, peer: str) -> Connection:
        conn = self._connections.get(peer)
        if conn is None:
            conn = self._connections[peer] = Connection(peer, self.config.max_inflight_bytes_per_connection)
        conn.calls += 1
        self.data_calls += 1
        return conn

    def _leave(self, conn: Connection) -> None:
        self.data_calls -= 1
        conn.calls -= 1
        if conn.calls == 0:
            del self._connections[conn.peer]

    def _admitted(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        behavior = behavior_of(handler)[0]

        if inspect.isasyncgenfunction(behavior):

            async def admitted_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                peer = context.peer()
                refusal = self._refusal(method, peer)
                if refusal is not None:
                    await status.abort(context, refusal)
                conn = self._enter(peer)
                responses = behavior(request, context)
                try:
                    async for response in responses:
                        yield response
                finally:
                    try:
                        await responses.aclose()  # the stream gives back its budgets before its slot
                    finally:
                        self._leave(conn)

            admitted: Callable[[Any, grpc.aio.ServicerContext], Any] = admitted_stream
        else:
            assert inspect.iscoroutinefunction(behavior), f"{method}: tidelog handlers are coroutines"

            async def admitted_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                peer = context.peer()
                refusal = self._refusal(method, peer)
                if refusal is not None:
                    await status.abort(context, refusal)
                conn = self._enter(peer)
                try:
                    return await behavior(request, context)
                finally:
                    self._leave(conn)

            admitted = admitted_call

        return rebuilt(handler, admitted)
