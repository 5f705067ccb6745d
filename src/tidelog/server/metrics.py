"""Prometheus metrics and /healthz over HTTP: what operators scrape to see if the broker keeps up.

Three sources, each read the cheapest way:
- RPC metrics (latency, in-flight calls, open streams, connections) come from a gRPC interceptor that
  runs on the event loop; they are prometheus_client objects updated once per call or stream.
- Log and traffic figures (sizes, offsets, records and bytes produced and fetched, fsyncs) are plain
  counters the engine keeps on its own paths; `EngineCollector` reads them at scrape time, so the
  produce and fetch paths never touch prometheus_client.
- Consumer-group figures (lag in records and seconds, members, rebalances) are computed from the
  coordinator at scrape time.

Label cardinality: per-partition series exist for every partition of every topic, internal ones
(`__consumer_offsets`) included, and per-group series for every partition a group has committed; both
are capped at `metrics_max_partitions` (the rest are counted in `tidelog_metrics_omitted_series`).
`method` takes only the names of the RPCs the server registers.

Thread-safety: the interceptor runs on the event loop; scrapes run on the HTTP server's threads and
only read (the engine and coordinator are thread-safe; prometheus_client objects have their own locks).
"""

from __future__ import annotations

import base64
import inspect
import logging
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ..cluster.controller import Controller
from ..cluster.placement import NO_LEADER
from ..cluster.reassignment import target_of
from ..engine.engine import Engine
from ..errors import AuthenticationError, TidelogError
from ..groups.coordinator import GroupCoordinator
from ..queues.manager import QueueManager
from ..replication.manager import ReplicaManager
from ..storage.fs import FSYNC_BUCKETS_S

log = logging.getLogger("tidelog.server")

REQUEST_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STREAM_BUCKETS_S = (0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, 86400.0)
HTTP_MAX_CONCURRENT = 8  # scrapes and probes served at once; more connections are closed at once
HTTP_TIMEOUT_S = 10.0  # a client that sends nothing for this long is dropped


class RpcMetrics(grpc.aio.ServerInterceptor):
    """Times every call, counts calls in flight, open streams and the distinct peers behind them, and
    (`refused`) calls refused by admission limits.

    Unary calls are observed in tidelog_request_duration_seconds; streams (Produce, Subscribe,
    health Watch, reflection) in tidelog_stream_duration_seconds, whose lifetime is their length.
    gRPC offers no hook on connections, so tidelog_connections counts distinct peer addresses with
    a call in flight or a stream open (idle connections are not seen).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests = Histogram(
            "tidelog_request_duration_seconds",
            "Time to serve a unary RPC",
            ["method"],
            buckets=REQUEST_BUCKETS_S,
            registry=registry,
        )
        self._streams = Histogram(
            "tidelog_stream_duration_seconds",
            "Lifetime of a streaming RPC",
            ["method"],
            buckets=STREAM_BUCKETS_S,
            registry=registry,
        )
        self._inflight = Gauge("tidelog_inflight_requests", "Unary RPCs being served", ["method"], registry=registry)
        self._open = Gauge("tidelog_open_streams", "Streaming RPCs open", ["method"], registry=registry)
        self._refused = Counter(
            "tidelog_rpcs_refused",
            "Calls refused at admission, by the setting they "
            "would pass (max_concurrent_rpcs_per_connection, admin_reserved_rpcs)",
            ["method", "setting"],
            registry=registry,
        )
        self._peers: dict[str, int] = {}
        # method -> (the service's handler, its timed wrapper)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        Gauge(
            "tidelog_connections", "Distinct client peers with an RPC in flight or a stream open", registry=registry
        ).set_function(lambda: len(self._peers))

    def refused(self, method: str, setting: str) -> None:
        """Count a call refused by a tidelog limit (server/admission.py)."""
        self._refused.labels(method.lstrip("/"), setting).inc()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED, nothing to label
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            label = method.lstrip("/")
            wrapped = (
                self._wrap_unary(handler, label)
                if not handler.request_streaming and not handler.response_streaming
                else self._wrap_stream(handler, label)
            )
            cached = self._wrapped[method] = (handler, wrapped)
        return cached[1]

    def _enter(self, context: grpc.aio.ServicerContext) -> str:
        peer = context.peer() or ""
        self._peers[peer] = self._peers.get(peer, 0) + 1
        return peer

    def _leave(self, peer: str) -> None:
        left = self._peers[peer] - 1
        if left:
            self._peers[peer] = left
        else:
            del self._peers[peer]

    def _wrap_unary(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        behavior = handler.unary_unary
        if not inspect.iscoroutinefunction(behavior):
            return handler  # a synchronous handler runs in a thread: leave it alone
        duration, inflight = self._requests.labels(method), self._inflight.labels(method)

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            peer = self._enter(context)
            inflight.inc()
            started = time.perf_counter()
            try:
                return await behavior(request, context)
            finally:
                duration.observe(time.perf_counter() - started)
                inflight.dec()
                self._leave(peer)

        return grpc.unary_unary_rpc_method_handler(
            timed, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )

    def _wrap_stream(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.request_streaming and handler.response_streaming:
            behavior, make = handler.stream_stream, grpc.stream_stream_rpc_method_handler
        elif handler.response_streaming:
            behavior, make = handler.unary_stream, grpc.unary_stream_rpc_method_handler
        else:
            behavior, make = handler.stream_unary, grpc.stream_unary_rpc_method_handler
        duration, open_streams = self._streams.labels(method), self._open.labels(method)

        if inspect.isasyncgenfunction(behavior):

            async def timed_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                peer = self._enter(context)
                open_streams.inc()
                started = time.perf_counter()
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:
                    duration.observe(time.perf_counter() - started)
                    open_streams.dec()
                    self._leave(peer)

            timed: Callable[[Any, grpc.aio.ServicerContext], Any] = timed_stream
        elif inspect.iscoroutinefunction(behavior):  # writes with context.write()

            async def timed_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                peer = self._enter(context)
                open_streams.inc()
                started = time.perf_counter()
                try:
                    return await behavior(request, context)
                finally:
                    duration.observe(time.perf_counter() - started)
                    open_streams.dec()
                    self._leave(peer)

            timed = timed_call
        else:
            return handler
        return make(
            timed, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )


class EngineCollector(Collector):
    """Reads the engine and the group coordinator at scrape time (nothing is kept between scrapes)."""

    def __init__(
        self,
        engine: Callable[[], Engine | None],
        coordinator: Callable[[], GroupCoordinator | None],
        ready: Callable[[], bool],
        max_partitions: int,
    ) -> None:
        self._engine = engine
        self._coordinator = coordinator
        self._ready = ready
        self.max_partitions = max_partitions

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "tidelog_ready",
            "1 while the broker serves; 0 while it recovers or shuts down",
            value=1 if self._ready() else 0,
        )
        engine = self._engine()
        if engine is None or engine.closed:
            return
        yield GaugeMetricFamily(
            "tidelog_recovery_seconds",
            "Time the last start took to open and recover the log",
            value=engine.recovery_seconds,
        )
        yield GaugeMetricFamily(
            "tidelog_clean_start",
            "1 if the last start followed a clean shutdown, 0 after a crash",
            value=1 if engine.clean_start else 0,
        )
        omitted = GaugeMetricFamily(
            "tidelog_metrics_omitted_series",
            "Partitions left out of per-partition metrics by metrics_max_partitions",
            labels=["kind"],
        )
        yield from self._partitions(engine, omitted)
        yield from self._fsync(engine)
        coordinator = self._coordinator()
        if coordinator is not None:
            yield from self._groups(coordinator, omitted)
        yield omitted

    def _partitions(self, engine: Engine, omitted: GaugeMetricFamily) -> Iterator[Metric]:
        labels = ["topic", "partition"]
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "produce_records": CounterMetricFamily(
                "tidelog_produce_records", "Records appended to the partition", labels=labels
            ),
            "produce_bytes": CounterMetricFamily(
                "tidelog_produce_bytes", "Bytes of record batches appended to the partition", labels=labels
            ),
            "fetch_records": CounterMetricFamily(
                "tidelog_fetch_records", "Records fetched (that fetches moved readers past)", labels=labels
            ),
            "fetch_bytes": CounterMetricFamily("tidelog_fetch_bytes", "Bytes of record batches fetched", labels=labels),
            "size": GaugeMetricFamily(
                "tidelog_log_size_bytes", "Bytes of the partition's segment files", labels=labels
            ),
            "segments": GaugeMetricFamily("tidelog_log_segments", "Segments of the partition", labels=labels),
            "start": GaugeMetricFamily("tidelog_log_start_offset", "First offset still stored", labels=labels),
            "end": GaugeMetricFamily("tidelog_log_end_offset", "Next offset to be written", labels=labels),
            "hw": GaugeMetricFamily(
                "tidelog_log_high_watermark", "Offsets below it are visible to consumers", labels=labels
            ),
        }
        status = engine.partition_status()
        for s in status[: self.max_partitions]:
            values = [s.topic, str(s.partition)]
            for key, value in (
                ("produce_records", s.stats.appended_records),
                ("produce_bytes", s.stats.appended_bytes),
                ("fetch_records", s.stats.read_records),
                ("fetch_bytes", s.stats.read_bytes),
                ("size", s.info.size_bytes),
                ("segments", s.info.segments),
                ("start", s.info.log_start),
                ("end", s.info.log_end),
                ("hw", s.info.high_watermark),
            ):
                families[key].add_metric(values, value)
        omitted.add_metric(["partition"], max(len(status) - self.max_partitions, 0))
        yield from families.values()

    def _fsync(self, engine: Engine) -> Iterator[Metric]:
        stats = engine.fsync_stats
        if stats is None:
            return
        count, total_s, buckets = stats.snapshot()
        yield CounterMetricFamily(
            "tidelog_fsync", "fsync calls on segment, index, metadata files and directories", value=count
        )
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*map(str, FSYNC_BUCKETS_S), "+Inf"), buckets):
            running += n
            cumulative.append((bound, running))
        yield HistogramMetricFamily(
            "tidelog_fsync_duration_seconds", "Time an fsync took", buckets=cumulative, sum_value=total_s
        )

    def _groups(self, coordinator: GroupCoordinator, omitted: GaugeMetricFamily) -> Iterator[Metric]:
        labels = ["group", "topic", "partition"]
        lag = GaugeMetricFamily(
            "tidelog_consumer_group_lag_records", "High watermark minus the group's committed offset", labels=labels
        )
        lag_s = GaugeMetricFamily(
            "tidelog_consumer_group_lag_seconds", "Age of the first unconsumed record (0 when caught up)", labels=labels
        )
        committed = GaugeMetricFamily(
            "tidelog_consumer_group_committed_offset",
            "The group's committed offset (next record to consume)",
            labels=labels,
        )
        members = GaugeMetricFamily("tidelog_consumer_group_members", "Active members of the group", labels=["group"])
        rebalances = CounterMetricFamily(
            "tidelog_consumer_group_rebalances",
            "Rebalances (new generations) since the broker started",
            labels=["group"],
        )
        series = skipped = 0
        for group_id in coordinator.list_groups():
            try:
                info = coordinator.describe(group_id)
            except TidelogError:  # deleted between the listing and now
                continue
            members.add_metric([group_id], len(info["members"]))
            rebalances.add_metric([group_id], info["rebalances"])
            for p in info["partitions"]:
                if p["committed"] is None:
                    continue  # no commit yet: no lag to speak of
                if series >= self.max_partitions:
                    skipped += 1
                    continue
                series += 1
                values = [group_id, p["topic"], str(p["partition"])]
                committed.add_metric(values, p["committed"])
                lag.add_metric(values, p["lag"])
                if p["time_lag_ms"] is not None:  # None: the record aged out of the log
                    lag_s.add_metric(values, p["time_lag_ms"] / 1000)
        omitted.add_metric(["group_partition"], skipped)
        yield from (lag, lag_s, committed, members, rebalances)


class QueueCollector(Collector):
    """Per queue, at scrape time: records in flight, available, delayed, the oldest unacknowledged
    record's age, and the totals of answers since the broker started (queues/manager.py)."""

    def __init__(self, manager: Callable[[], QueueManager | None]) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        manager = self._manager()
        if manager is None:
            return
        gauges = {
            "in_flight": GaugeMetricFamily("tidelog_queue_in_flight", "Records locked by a consumer", labels=["queue"]),
            "available": GaugeMetricFamily(
                "tidelog_queue_available", "Records read and ready to hand out now", labels=["queue"]
            ),
            "delayed": GaugeMetricFamily(
                "tidelog_queue_delayed", "Records waiting for their not-before time", labels=["queue"]
            ),
            "unread": GaugeMetricFamily(
                "tidelog_queue_unread", "Records past what the queue's windows read so far", labels=["queue"]
            ),
        }
        oldest = GaugeMetricFamily(
            "tidelog_queue_oldest_unacked_seconds",
            "Age of the oldest record not yet acknowledged or dead-lettered (0 when none)",
            labels=["queue"],
        )
        totals = CounterMetricFamily(
            "tidelog_queue_records",
            "Records by what became of them since the broker started: delivered, acked, released, rejected, "
            "expired (lock ended), dead_lettered, archived (given up without a dead-letter topic), skipped "
            "(removed by retention before completed)",
            labels=["queue", "outcome"],
        )
        for name in manager.queues():
            try:
                d = manager.describe(name)
            except TidelogError:  # deleted between the listing and now
                continue
            for field, family in gauges.items():
                family.add_metric([name], sum(getattr(p, field) for p in d.partitions))
            ages = [p.oldest_unacked_ms for p in d.partitions if p.oldest_unacked_ms is not None]
            oldest.add_metric([name], max(ages, default=0) / 1000)
            for outcome, n in sorted(d.totals.items()):
                totals.add_metric([name, outcome], n)
        yield from (*gauges.values(), oldest, totals)


class MetricsHttpServer:
    """GET /metrics (Prometheus text or OpenMetrics) and GET /healthz, on its own threads.

    /healthz answers 200 "ok" while the broker serves and 503 with the reason (recovering, shutting
    down) otherwise. At most HTTP_MAX_CONCURRENT requests are served at once.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Callable[[], str | None],
        ssl_context: ssl.SSLContext | None = None,
        authenticate: Callable[[str | None, dict, str], object] | None = None,
    ) -> None:
        """ssl_context: serve HTTPS (the handshake runs in the request's thread). authenticate(authorization
        header, client certificate names, peer): raises AuthenticationError to refuse /metrics with 401
        (/healthz stays open for probes)."""
        self.host = host
        self._registry = registry
        self._health = health
        self._authenticate = authenticate
        self._slots = threading.BoundedSemaphore(HTTP_MAX_CONCURRENT)
        slots = self._slots

        class _Server(HTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

            def process_request(
                self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
            ) -> None:
                # Bounded like everything else: past the limit the connection is closed unanswered.
                if not slots.acquire(blocking=False):
                    self.shutdown_request(request)
                    return
                threading.Thread(
                    target=self._serve, args=(request, client_address), name="tidelog-metrics-request", daemon=True
                ).start()

            def _serve(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
                try:
                    if ssl_context is not None:
                        assert isinstance(request, socket.socket)
                        request.settimeout(HTTP_TIMEOUT_S)  # a client that never finishes its handshake
                        request = ssl_context.wrap_socket(request, server_side=True)
                    self.finish_request(request, client_address)
                except Exception:
                    self.handle_error(request, client_address)
                finally:
                    self.shutdown_request(request)
                    slots.release()

        self._httpd = _Server((host, port), self._handler_class())  # OSError if the port is taken
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="tidelog-metrics", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and wait for the serving thread (blocking: call it off the event loop)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        registry, health, authenticate = self._registry, self._health, self._authenticate

        class Handler(BaseHTTPRequestHandler):
            timeout = HTTP_TIMEOUT_S

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    if authenticate is not None and not self._authenticated():
                        return
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    self._send(200, content_type, encoder(registry))
                elif path == "/healthz":
                    problem = health()
                    self._send(
                        200 if problem is None else 503, "text/plain; charset=utf-8", (problem or "ok").encode() + b"\n"
                    )
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")

            def _authenticated(self) -> bool:
                """Bearer user:secret or Basic (Prometheus' basic_auth, the same token), or a client certificate."""
                assert authenticate is not None
                names: dict[str, list] = {}
                if isinstance(self.connection, ssl.SSLSocket):
                    subject: Any = (self.connection.getpeercert() or {}).get("subject", ())
                    names["x509_common_name"] = [pair[1] for rdn in subject for pair in rdn if pair[0] == "commonName"]
                try:
                    authenticate(
                        bearer_of(self.headers.get("Authorization")), names, f"ipv4:{self.client_address[0]}:0"
                    )
                except AuthenticationError as exc:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Bearer realm="tidelog", Basic realm="tidelog"')
                    body = f"{exc.message}\n".encode()
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return False
                return True

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics http: " + format, *args)

        return Handler


def bearer_of(header: str | None) -> str | None:
    """An Authorization header as `Bearer user:secret`: Basic credentials (base64 of user:secret) are
    the same token; anything else is passed on as it is, to be refused."""
    if header is None or not header[:6].lower() == "basic ":
        return header
    try:
        return "Bearer " + base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return "Bearer -"  # malformed: refused as such


class ReplicationCollector(Collector):
    """The cluster's health as this broker sees it, at scrape time: what it leads and how far its
    followers lag, its ISR changes, and (on the controller) offline partitions and elections."""

    def __init__(
        self, replicas: Callable[[], ReplicaManager | None], controller: Callable[[], Controller | None]
    ) -> None:
        self._replicas, self._controller = replicas, controller

    def collect(self) -> Iterator[Metric]:
        manager = self._replicas()
        if manager is None:
            return
        led = manager.led()
        # a partition being reassigned counts against its target (Kafka's rule): new replicas still
        # copying do not make it under-replicated
        under = sum(1 for role in led.values() if len(role.state.isr) < len(target_of(role.state)))
        yield GaugeMetricFamily("tidelog_leader_partitions", "Partitions this broker leads now", value=len(led))
        yield GaugeMetricFamily(
            "tidelog_under_replicated_partitions",
            "Partitions led here whose ISR is smaller than their (target) replica list (a copy is missing or behind)",
            value=under,
        )
        yield GaugeMetricFamily(
            "tidelog_reassigning_partitions",
            "Partitions led here with a reassignment in progress (replicas being added or removed)",
            value=sum(1 for role in led.values() if role.state.reassigning),
        )
        below = sum(
            1 for (topic, _), role in led.items() if len(role.state.isr) < manager.min_insync_replicas(topic, role.plog)
        )
        yield GaugeMetricFamily(
            "tidelog_under_min_isr_partitions",
            "Partitions led here with fewer in-sync replicas than min_insync_replicas (acks=all refused)",
            value=below,
        )
        throttle = manager.throttle
        yield GaugeMetricFamily(
            "tidelog_replication_throttle_bytes_per_second",
            "Limit on replication to catching-up followers, bytes per second (0: none)",
            value=throttle.bucket.rate,
        )
        yield CounterMetricFamily(
            "tidelog_replication_throttled_bytes",
            "Bytes sent to catching-up followers under the replication throttle",
            value=throttle.throttled_bytes,
        )
        yield CounterMetricFamily(
            "tidelog_replication_throttled_seconds",
            "Time replica fetches of catching-up followers waited for the replication throttle",
            value=throttle.throttled_seconds,
        )
        yield CounterMetricFamily(
            "tidelog_isr_shrinks", "ISR shrinks by this broker as leader", value=manager.isr_shrinks
        )
        yield CounterMetricFamily(
            "tidelog_isr_expands", "ISR expansions by this broker as leader", value=manager.isr_expands
        )
        lag = GaugeMetricFamily(
            "tidelog_replica_lag_records",
            "Records a follower is behind its leader",
            labels=["topic", "partition", "replica"],
        )
        lag_s = GaugeMetricFamily(
            "tidelog_replica_lag_seconds",
            "Seconds since a follower last caught up",
            labels=["topic", "partition", "replica"],
        )
        for (topic, partition), role in led.items():
            for replica, (records, seconds) in role.leader.lag(role.plog.offset_range()[1]).items():
                labels = [topic, str(partition), str(replica)]
                lag.add_metric(labels, records)
                lag_s.add_metric(labels, seconds)
        yield lag
        yield lag_s
        controller = self._controller()
        if controller is not None and controller.session.is_controller:
            offline = sum(1 for s in manager.snapshot.partitions.values() if s.leader == NO_LEADER)
            yield GaugeMetricFamily(
                "tidelog_offline_partitions",
                "Partitions with no live leader (reported by the controller)",
                value=offline,
            )
        if controller is not None:
            yield CounterMetricFamily(
                "tidelog_leader_elections", "Leaders elected by this broker as controller", value=controller.elections
            )
