"""Build the engine and the gRPC services from a ServerConfig, run them, and stop them gracefully.

Shutdown (SIGTERM/SIGINT or `stop()`): health turns NOT_SERVING, the server stops accepting calls and
gives in-flight ones up to shutdown_grace_s to finish, waiting subscriptions are released, then the
engine flushes and closes (writing the clean-shutdown marker). One process; blocking work runs in the
AsyncEngine's thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .. import __version__
from ..broker.async_engine import AsyncEngine
from ..broker.engine import Engine
from ..config import ServerConfig
from ..errors import StorageError
from ..v1 import tidelog_pb2 as pb
from ..groups.coordinator import GroupCoordinator
from . import admin_service, consume_service, groups_service, produce_service, status

log = logging.getLogger("tidelog.server")

SERVICE_NAMES = (produce_service.SERVICE, consume_service.SERVICE, admin_service.SERVICE, groups_service.SERVICE)


class Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.engine: Engine | None = None
        self.async_engine: AsyncEngine | None = None
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        self._stopped = asyncio.Event()
        self._groups: groups_service.GroupsService | None = None

    async def start(self) -> int:
        """Open the engine (recovering if needed), bind the port, and start serving; returns the port."""
        loop = asyncio.get_running_loop()
        self.engine = await loop.run_in_executor(None, lambda: Engine.open(self.config.data_dir, self.config.engine))
        self.async_engine = AsyncEngine(self.engine, self.config.io_threads)
        self.coordinator = await loop.run_in_executor(None, GroupCoordinator, self.engine)
        self._groups = groups_service.GroupsService(self.async_engine, self.coordinator)
        limit = self.config.max_message_bytes
        self._server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                     ("grpc.so_reuseport", 0),
                     ("grpc.max_allowed_incoming_connections", self.config.max_connections)],
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs, interceptors=(status.MethodNames(),))
        consume = consume_service.ConsumeService(self.async_engine, self.config)
        self._server.add_generic_rpc_handlers((
            produce_service.ProduceService(self.async_engine, self.config).handler(),
            consume.handler(),
            admin_service.AdminService(self.async_engine, consume).handler(),
            self._groups.handler(),
        ))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (*(pb.DESCRIPTOR.services_by_name[n.split(".")[-1]].full_name for n in SERVICE_NAMES),
             health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server)
        address = f"{self.config.host}:{self.config.port}"
        try:
            port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            port = 0
            detail = str(exc)
        else:
            detail = "the address is in use or not available"
        if port == 0:
            await self._close_engine()
            raise OSError(f"cannot listen on {address}: {detail}")
        self.port = port
        await self._server.start()
        self._groups.start()
        await self._set_serving(health_pb2.HealthCheckResponse.SERVING)
        log.info("server started", extra={
            "event": "server_started", "address": f"{self.config.host}:{port}", "data_dir": self.engine.path,
            "fsync": self.engine.config.fsync, "version": __version__, "clean_start": self.engine.clean_start,
            "recovery_ms": round(self.engine.recovery_seconds * 1000, 3)})
        return port

    async def _set_serving(self, state) -> None:
        for name in ("", *SERVICE_NAMES):
            result = self._health.set(name, state)
            if asyncio.iscoroutine(result):
                await result

    async def stop(self) -> None:
        """Drain and stop; safe to call more than once."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("shutting down: finishing in-flight calls", extra={
            "event": "server_stopping", "grace_s": self.config.shutdown_grace_s})
        await self._set_serving(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._groups is not None:
            self._groups.stop()
        if self._server is not None:
            stopping = asyncio.ensure_future(self._server.stop(self.config.shutdown_grace_s))
            if self.async_engine is not None:
                self.async_engine.wake_all()
            await stopping
        await self._close_engine()
        log.info("server stopped", extra={"event": "server_stopped"})

    async def _close_engine(self) -> None:
        if self.async_engine is not None:
            self.async_engine.close()
        if self.engine is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.engine.close)
            except StorageError:
                log.exception("closing the engine failed; the next start recovers the log",
                              extra={"event": "engine_close_failed"})

    async def wait_closed(self) -> None:
        await self._stopped.wait()
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(config: ServerConfig, ready=None) -> None:
    """Run a server until SIGTERM or SIGINT. `ready(port)` is called once it serves."""
    server = Server(config)
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(server.port)
    await stop.wait()
    await server.stop()
