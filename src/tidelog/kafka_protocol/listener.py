"""The Kafka-protocol listener: an asyncio TCP server in the broker's process, sharing its engine.

Each connection reads frames ahead of the one being served (up to MAX_QUEUED_REQUESTS and
max_inflight_bytes_per_connection; every frame is held against the broker's shared max_inflight_bytes
budget until answered, as gRPC produce streams are) and serves them one at a time, in order, so responses go back in request order, as Kafka clients require;
Produce requests already read are appended together in one engine call (one fsync under
fsync="always"). A consumer's fetch long-poll holds its own connection only; Kafka clients talk to a
group coordinator on a connection of its own.

What is not the protocol closes the connection, never the broker: a frame over max_message_bytes, an
API or version not served (ApiVersions excepted: it answers with the versions served, KIP-511),
a body that does not decode, a handler's unexpected error (logged). A connection idle for
idle_timeout_s is closed (Kafka: connections.max.idle.ms), and past max_connections new ones are closed
as they arrive. A vanished client is found by the failed write, or by the idle timeout.

Event-loop only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from typing import Any

from ..errors import TidelogError
from ..security.authenticator import peer_certificate_name
from ..security.authorizer import ANONYMOUS, caller
from ..server.budget import ByteBudget
from . import codec, produce
from .apis import FetchParts, KafkaApis
from .errors import ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM
from .framing import INT32, MalformedError, parse_header, peek_header, response_prefix
from .metrics import KafkaMetrics

log = logging.getLogger("tidelog.kafka")

MAX_QUEUED_REQUESTS = 64  # frames read ahead of the one being served, per connection
COALESCE_BYTES = 64 * 1024  # response parts smaller than this are joined before writing; larger go as they are
MAX_PRODUCE_BATCHED = 32  # Produce requests of one connection appended in one engine call


class KafkaListener:
    def __init__(
        self,
        apis: KafkaApis,
        budget: ByteBudget,
        *,
        max_message_bytes: int,
        max_connection_bytes: int,
        max_connections: int,
        idle_timeout_s: float,
        metrics: KafkaMetrics | None = None,
        sasl: Any = None,
    ) -> None:
        """sasl: a security.sasl.SaslServer; then every connection authenticates first (SaslHandshake v1,
        SaslAuthenticate), and anything else before that closes it."""
        self.apis = apis
        self.sasl = sasl
        self._budget = budget
        self.max_message_bytes = max_message_bytes
        self.max_connection_bytes = max_connection_bytes
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self._metrics = metrics
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task] = set()
        self.port: int | None = None
        self._handlers: dict[int, Any] = {
            codec.API_VERSIONS: apis.api_versions,
            codec.METADATA: apis.metadata,
            codec.FIND_COORDINATOR: apis.find_coordinator,
            codec.INIT_PRODUCER_ID: apis.init_producer_id,
            codec.LIST_OFFSETS: apis.list_offsets,
            codec.OFFSET_FOR_LEADER_EPOCH: apis.offset_for_leader_epoch,
            codec.DELETE_RECORDS: apis.delete_records,
            codec.CREATE_TOPICS: apis.create_topics,
            codec.DELETE_TOPICS: apis.delete_topics,
            codec.DESCRIBE_CONFIGS: apis.describe_configs,
            codec.SYNC_GROUP: apis.sync_group,
            codec.HEARTBEAT: apis.heartbeat,
            codec.LEAVE_GROUP: apis.leave_group,
            codec.OFFSET_COMMIT: apis.offset_commit,
            codec.OFFSET_FETCH: apis.offset_fetch,
            codec.DESCRIBE_GROUPS: apis.describe_groups,
            codec.LIST_GROUPS: apis.list_groups,
            codec.DELETE_GROUPS: apis.delete_groups,
            codec.FETCH: apis.fetch,
        }

    async def start(self, host: str, port: int, serving: bool = True, ssl_context: ssl.SSLContext | None = None) -> int:
        """Bind the port (and accept clients unless serving=False: then from serve() on, e.g. once a
        cluster member has joined; until then connections wait in the backlog); returns the port.
        ssl_context: clients connect with TLS (Kafka's SSL listener)."""
        try:
            self._server = await asyncio.start_server(
                self._accept, host, port, reuse_address=True, start_serving=serving, ssl=ssl_context
            )
        except OSError as exc:
            raise OSError(f"cannot listen for Kafka clients on {host}:{port}: {exc.strerror or exc}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def serve(self) -> None:
        if self._server is not None:
            await self._server.start_serving()

    async def stop(self) -> None:
        """Stop accepting, then close every connection (what was acknowledged is in the log; a client
        resends the rest, idempotently when it is an idempotent producer)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.max_connections:
            if self._metrics is not None:
                self._metrics.refused.inc()
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        if self._metrics is not None:
            self._metrics.connections.inc()
        try:
            await _Connection(self, reader, writer).run()
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio would log a cancelled connection callback as an error)
        finally:
            self._connections.discard(task)
            if self._metrics is not None:
                self._metrics.connections.dec()
            writer.close()

    def closed(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.closed.labels(reason).inc()


class _Frame:
    __slots__ = ("data", "api_key", "version", "correlation_id")

    def __init__(self, data: bytes) -> None:
        self.data = data  # held against the shared budget until answered
        self.api_key, self.version, self.correlation_id = peek_header(memoryview(data))


class _Closed(Exception):
    """End the connection, counting why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


class _Connection:
    def __init__(self, listener: KafkaListener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.listener = listener
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.host = str(peer[0]) if isinstance(peer, tuple) else str(peer or "")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else self.host
        self.queue: collections.deque[_Frame] = collections.deque()
        self.queued_bytes = 0
        self.arrived = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.reading_done = False
        self.serving = False  # a request is being served: the connection is not idle
        # SASL when the broker has users; else a client certificate's name (mutual TLS), else anonymous
        self.principal: str | None = None
        if listener.sasl is None:
            self.principal = peer_certificate_name(writer.get_extra_info("peercert")) or ANONYMOUS
            caller.set(self.principal)  # the connection's task: every handler it awaits sees it
        self.exchange: Any = None  # the SASL exchange under way

    async def run(self) -> None:
        reading = asyncio.ensure_future(self._read_ahead())
        try:
            await self._serve()
        except _Closed as exc:
            self.listener.closed(exc.reason)
            log.info(
                "Kafka connection closed: %s",
                exc,
                extra={"event": "kafka_connection_closed", "peer": self.peer, "reason": exc.reason},
            )
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            for frame in self.queue:
                self.listener._budget.release(len(frame.data))
            self.queue.clear()
            self.queued_bytes = 0

    async def _read_ahead(self) -> None:
        loop = asyncio.get_running_loop()
        limit = self.listener.max_message_bytes
        try:
            while True:
                while self.queue and (
                    len(self.queue) >= MAX_QUEUED_REQUESTS or self.queued_bytes >= self.listener.max_connection_bytes
                ):
                    self.room.clear()
                    await self.room.wait()
                idle = loop.call_later(self.listener.idle_timeout_s, self._idle)
                try:
                    head = await self.reader.readexactly(4)
                finally:
                    idle.cancel()
                size = INT32.unpack(head)[0]
                if not 8 <= size <= limit:
                    reason = "oversize" if size > limit else "malformed"
                    self._refuse(reason, f"a frame of {size} bytes (limit {limit})")
                    return
                # the budget first, then the bytes: what waits for the budget waits in the socket
                await self.listener._budget.acquire(size)
                idle = loop.call_later(self.listener.idle_timeout_s, self._idle)
                try:  # a frame begun and never finished is idleness too
                    data = await self.reader.readexactly(size)
                except BaseException:
                    self.listener._budget.release(size)
                    raise
                finally:
                    idle.cancel()
                self.queue.append(_Frame(data))
                self.queued_bytes += size
                self.arrived.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.reading_done = True
            self.arrived.set()

    def _idle(self) -> None:
        if self.serving:  # a long request (a JoinGroup round, a long poll) is not idleness
            asyncio.get_running_loop().call_later(self.listener.idle_timeout_s, self._idle)
            return
        self.listener.closed("idle")
        self.writer.close()

    def _refuse(self, reason: str, detail: str) -> None:
        self.listener.closed(reason)
        log.warning(
            "Kafka connection closed: %s",
            detail,
            extra={"event": "kafka_connection_closed", "peer": self.peer, "reason": reason},
        )
        self.writer.close()

    async def _next(self) -> _Frame | None:
        while not self.queue:
            if self.reading_done:
                return None
            self.arrived.clear()
            await self.arrived.wait()
        frame = self.queue.popleft()
        self.queued_bytes -= len(frame.data)
        self.room.set()
        return frame

    async def _serve(self) -> None:
        while True:
            frame = await self._next()
            if frame is None:
                return
            started = time.perf_counter()
            frames = [frame]
            while (  # Produce requests already read: appended together, answered in order
                frame.api_key == codec.PRODUCE
                and self.queue
                and len(frames) < MAX_PRODUCE_BATCHED
                and self.queue[0].api_key == codec.PRODUCE
            ):
                frames.append(self.queue.popleft())
                self.queued_bytes -= len(frames[-1].data)
                self.room.set()
            api = codec.SERVED.get(frame.api_key)
            name = api.name if api is not None else str(frame.api_key)
            if self.principal is None and frame.api_key not in codec.BEFORE_AUTHENTICATION:
                for f in frames:
                    self.listener._budget.release(len(f.data))
                raise _Closed("unauthenticated", f"{name} before SASL authentication")
            self.serving = True
            try:
                if frame.api_key == codec.PRODUCE:
                    await self._produce(frames)
                else:
                    await self._one(frame)
            except (_Closed, ConnectionError, asyncio.IncompleteReadError):
                raise
            except Exception as exc:  # a handler's bug: this connection ends, the broker goes on
                log.exception(
                    "a Kafka request failed", extra={"event": "kafka_request_failed", "api": name, "peer": self.peer}
                )
                raise _Closed("failed", f"{name} v{frame.version} failed: {exc}") from None
            finally:
                self.serving = False
                for f in frames:
                    self.listener._budget.release(len(f.data))
            metrics = self.listener._metrics
            if metrics is not None:
                metrics.requests.labels(name).observe(time.perf_counter() - started)
            if self.writer.is_closing():
                return

    async def _one(self, frame: _Frame) -> None:
        api = codec.SERVED.get(frame.api_key)
        if api is None:
            raise _Closed("unsupported", f"API key {frame.api_key} is not served")
        if codec.served(frame.api_key, frame.version) is None:
            if frame.api_key != codec.API_VERSIONS:
                raise _Closed("unsupported", f"{api.name} v{frame.version} is not served")
            # KIP-511: a version this broker does not know gets a v0 body with the versions it serves
            body = codec.encode_response(api, 0, {**(await self.listener.apis.api_versions(None, 0)), "error_code": 35})
            await self._write(frame.correlation_id, False, [body], len(body))
            return
        view = memoryview(frame.data)
        try:
            header = parse_header(view, codec.flexible(api, frame.version))
            request = codec.decode_request(api, frame.version, view[header.body_at :])
        except MalformedError as exc:
            raise _Closed("malformed", f"{api.name} v{frame.version}: {exc}") from None
        if frame.api_key == codec.JOIN_GROUP:
            fields = await self.listener.apis.join_group(request, frame.version, header.client_id or "", self.host)
        elif frame.api_key in (codec.SASL_HANDSHAKE, codec.SASL_AUTHENTICATE):
            fields = self._sasl(frame.api_key, request)
        else:
            fields = await self.listener._handlers[frame.api_key](request, frame.version)
        if isinstance(fields, FetchParts):
            parts, size = fields.parts, fields.size
        else:
            body = codec.encode_response(api, frame.version, fields)
            parts, size = [body], len(body)
        await self._write(frame.correlation_id, codec.response_header_flexible(api, frame.version), parts, size)
        if frame.api_key == codec.SASL_AUTHENTICATE and fields["error_code"]:
            raise _Closed("unauthenticated", "SASL authentication failed")

    def _sasl(self, api_key: int, request: Any) -> dict:
        """SaslHandshake picks the mechanism; SaslAuthenticate carries the exchange's messages. A failed
        exchange is answered SASL_AUTHENTICATION_FAILED, and the connection then closed."""
        sasl = self.listener.sasl
        if api_key == codec.SASL_HANDSHAKE:
            offered = list(sasl.mechanisms) if sasl is not None else []
            if self.principal is not None and sasl is not None:
                return {"error_code": ILLEGAL_SASL_STATE, "mechanisms": offered}
            self.exchange = sasl.start(request.mechanism) if sasl is not None else None
            return {"error_code": 0 if self.exchange is not None else UNSUPPORTED_SASL_MECHANISM, "mechanisms": offered}
        failed = {"error_code": SASL_AUTHENTICATION_FAILED, "error_message": "authentication failed", "auth_bytes": b""}
        if self.exchange is None:
            return {**failed, "error_code": ILLEGAL_SASL_STATE, "error_message": "SaslHandshake first"}
        try:
            reply, principal = self.exchange.step(bytes(request.auth_bytes))
        except TidelogError:
            log.warning(
                "Kafka SASL authentication failed",
                extra={"event": "auth_failed", "peer": self.host, "reason": "sasl"},
            )
            if sasl is not None and sasl.on_failure is not None:
                sasl.on_failure("sasl")
            self.exchange = None
            return failed
        if principal is not None:
            self.principal, self.exchange = principal, None
            caller.set(principal)
        return {"error_code": 0, "error_message": None, "auth_bytes": reply, "session_lifetime_ms": 0}

    async def _produce(self, frames: list[_Frame]) -> None:
        api = codec.SERVED[codec.PRODUCE]
        requests = []
        for frame in frames:
            if codec.served(codec.PRODUCE, frame.version) is None:
                raise _Closed("unsupported", f"Produce v{frame.version} is not served")
            view = memoryview(frame.data)
            try:
                header = parse_header(view, codec.flexible(api, frame.version))
                requests.append(produce.parse(view[header.body_at :], frame.version))
            except MalformedError as exc:
                raise _Closed("malformed", f"Produce v{frame.version}: {exc}") from None
        # v0-2 carry old message formats: refused with UNSUPPORTED_VERSION, as Kafka 4.0 does
        current = [(f, r) for f, r in zip(frames, requests) if f.version >= produce.FIRST_VERSION_SERVED]
        outcomes = iter(await self.listener.apis.produce([r for _, r in current]) if current else [])
        for frame, request in zip(frames, requests):
            if frame.version < produce.FIRST_VERSION_SERVED:
                answer = produce.refused(request, 35, "Produce v0-2 (message formats v0/v1) is not served")
            else:
                answer = next(outcomes)
            if request.acks == 0:
                continue  # acks=0: no response at all
            body = produce.encode_response(frame.version, answer)
            await self._write(
                frame.correlation_id, codec.response_header_flexible(api, frame.version), [body], len(body)
            )

    async def _write(self, correlation_id: int, flexible_header: bool, parts: list, size: int) -> None:
        """Write a response: small parts joined, large ones (segment bytes) passed to the transport as
        they are; then wait for the socket to take it (a slow reader holds at most one response)."""
        writer = self.writer
        if writer.is_closing():
            raise ConnectionResetError("the connection is closed")
        pending = bytearray(response_prefix(correlation_id, size, flexible_header))
        for part in parts:
            if len(part) < COALESCE_BYTES:
                pending += part
                continue
            if pending:
                writer.write(pending)
                pending = bytearray()
            writer.write(part)
        if pending:
            writer.write(pending)
        await writer.drain()
