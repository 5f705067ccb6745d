"""Build the engine and the gRPC services from a ServerConfig, run them, and stop them gracefully.

Shutdown (SIGTERM/SIGINT or `stop()`): health turns NOT_SERVING, the server stops accepting calls and
gives in-flight ones up to shutdown_grace_s to finish, waiting subscriptions are released, then the
engine flushes and closes (writing the clean-shutdown marker). One process; blocking work runs in the
AsyncEngine's thread pool, never on the event loop.

Readiness: the metrics endpoint (if on) starts first, so /healthz answers 503 "recovering" while the
engine opens and recovers; the gRPC port is bound only after that (until then gRPC clients and health
checks cannot connect), and health turns SERVING with /healthz 200 once everything is up. On stop
both turn NOT_SERVING / 503 first; the metrics endpoint closes last.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from prometheus_client import CollectorRegistry
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
from .metrics import EngineCollector, MetricsHttpServer, RpcMetrics

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
        self.coordinator: GroupCoordinator | None = None
        self.metrics_port: int | None = None
        """The port /metrics and /healthz are served on once started (None when turned off)."""
        self._metrics_http: MetricsHttpServer | None = None
        self._rpc_metrics: RpcMetrics | None = None
        self._not_ready: str | None = "recovering"  # why /healthz answers 503; None while serving

    async def start(self) -> int:
        """Open the engine (recovering if needed), bind the port, and start serving; returns the port."""
        self._start_metrics()
        try:
            return await self._start()
        except BaseException:
            await self._stop_metrics()
            raise

    async def _start(self) -> int:
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
            interceptors=(status.MethodNames(), *([self._rpc_metrics] if self._rpc_metrics is not None else [])),
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs)
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
        self._not_ready = None
        log.info("server started", extra={
            "event": "server_started", "address": f"{self.config.host}:{port}", "data_dir": self.engine.path,
            "fsync": self.engine.config.fsync, "version": __version__, "clean_start": self.engine.clean_start,
            "recovery_ms": round(self.engine.recovery_seconds * 1000, 3), "metrics_port": self.metrics_port})
        return port

    def _start_metrics(self) -> None:
        """Serve /metrics and /healthz (503 until the broker serves); OSError if the port is taken."""
        if self.config.metrics_port == -1:
            return
        registry = CollectorRegistry()
        self._rpc_metrics = RpcMetrics(registry)
        registry.register(EngineCollector(lambda: self.engine, lambda: self.coordinator,
                                          lambda: self._not_ready is None, self.config.metrics_max_partitions))
        host = self.config.metrics_host or self.config.host
        try:
            self._metrics_http = MetricsHttpServer(host, self.config.metrics_port, registry, lambda: self._not_ready)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{self.config.metrics_port}: {exc.strerror or exc}") from None
        self._metrics_http.start()
        self.metrics_port = self._metrics_http.port
        log.info("metrics on http://%s:%d/metrics (health: /healthz)", host, self.metrics_port,
                 extra={"event": "metrics_started", "address": f"{host}:{self.metrics_port}"})

    async def _stop_metrics(self) -> None:
        if self._metrics_http is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._metrics_http.stop)
            self._metrics_http = None

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
        self._not_ready = "shutting down"
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
        await self._stop_metrics()
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
