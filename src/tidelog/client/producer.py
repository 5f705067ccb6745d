"""Producer: batches records client-side and streams them to the broker with acks.

`send()` adds a record to its partition's open batch and returns a Future of RecordMetadata
(partition, offset). A batch goes out when it reaches batch_bytes or has waited linger_ms; it is
encoded once (RecordBatch v2, optionally compressed with gzip, snappy, lz4 or zstd) by the same codec the engine uses, and the broker
appends it verbatim. Keys pick partitions exactly as the engine does (Kafka's murmur2); keyless
records stick to one partition until its batch is sent.

Delivery: one bidirectional stream per broker leading a partition written to (client/metadata.py
says which; a single broker leads all), with many requests in flight, acked in order. A broker that
no longer leads a partition answers NotLeaderError: that stream is given up like a broken one and its
requests go to the leader it names. acks: "all"/-1 (every in-sync replica), 1/"leader", 0/"none" (not
waited for: futures resolve once written, offset -1, and nothing is resent), None (the broker's
default: all in a cluster). The producer is
idempotent: every batch carries a producer id and per-partition sequence numbers, so when the
stream breaks, the unacknowledged requests are resent once each, in their original order, and the
broker drops any it had already appended. Records of a partition are therefore never reordered or
duplicated. Which batch is where, and its one ending, is delivery.py's job. A record's delivery
deadline (delivery_timeout_s) runs from its send(): past it, its batch fails with the last error
it met, wherever it is.

A background thread runs the network side (an asyncio loop with a grpc.aio channel); send() and
flush() may be called from any thread.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

import grpc

from ..codec import batch as batch_codec
from ..codec.batch import BATCHES_REMEMBERED
from ..codec.partitioner import key_partition
from ..errors import (
    AuthenticationError,
    AuthorizationError,
    BrokerUnavailableError,
    EngineClosedError,
    InvalidConfigError,
    InvalidRequestError,
    NotLeaderError,
    RequestTimeoutError,
    TidelogError,
    UnknownTopicError,
)
from ..headers import with_not_before
from ..v1 import tidelog_pb2 as pb
from ..wire import methods
from ..wire.statuses import error_from_rpc
from .channel import DEFAULT_TARGET, aio_channel
from .delivery import Delivery, Outgoing
from .metadata import Metadata
from .security import ClientSecurity

PRODUCE = methods.method("Producer", "Produce").path
ADAPTIVE_IN_FLIGHT = 2
"""With linger_ms=0, a partition's records go at once while fewer than this many of its requests are
in flight, and coalesce into one batch while this many are (one being appended, one queued behind it:
a third would only wait at the broker). Measured (benchmarks/README.md, latency_hops): 1 added a wait
to lone records at 1,000 msgs/s, 5 sent a request per record up to 10,000 msgs/s."""
RETRY_BACKOFF_S = 0.05
RETRY_BACKOFF_MAX_S = 1.0
METADATA_REFRESH_MIN_S = 0.1  # between two lookups of leaders (an election takes a moment)
CLOSE_WAIT_S = 5.0  # for the broker to end the stream after the last ack, on close()
log = logging.getLogger("tidelog.client")


class RecordMetadata(NamedTuple):
    topic: str
    partition: int
    offset: int


class _BatchResult:
    """The outcome of one batch, shared by the futures of all its records (a per-record
    concurrent.futures.Future costs more than sending the record)."""

    __slots__ = ("topic", "partition", "base_offset", "error", "_done", "_callbacks")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition
        self.base_offset = -1
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._callbacks: list = []

    def finish(self, base_offset: int = -1, error: BaseException | None = None) -> bool:
        """Resolve the futures; False (and nothing changes) if they were resolved already."""
        if self._done.is_set():
            return False
        self.base_offset, self.error = base_offset, error
        self._done.set()
        for fn, future in self._callbacks:
            try:
                fn(future)
            except Exception:  # a user's callback must not break delivery of the others
                pass
        return True


class RecordFuture:
    """Future of one record: result() → RecordMetadata(topic, partition, offset), or raises the error."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: _BatchResult, index: int) -> None:
        self._batch, self._index = batch, index

    def done(self) -> bool:
        return self._batch._done.is_set()

    def result(self, timeout: float | None = None) -> RecordMetadata:
        if not self._batch._done.wait(timeout):
            raise RequestTimeoutError(f"no acknowledgement within {timeout}s")
        if self._batch.error is not None:
            raise self._batch.error
        base = self._batch.base_offset
        return RecordMetadata(self._batch.topic, self._batch.partition, base + self._index if base >= 0 else -1)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self._batch._done.wait(timeout):
            raise RequestTimeoutError(f"no acknowledgement within {timeout}s")
        return self._batch.error

    def add_done_callback(self, fn) -> None:
        """fn(future) once the record is acknowledged or failed (at once if it already is)."""
        if self.done():
            fn(self)
        else:
            self._batch._callbacks.append((fn, self))
            if self.done() and (fn, self) in self._batch._callbacks:
                self._batch._callbacks.remove((fn, self))
                fn(self)


class _OpenBatch:
    __slots__ = ("values", "keys", "headers", "timestamps", "result", "size", "created")
    # size counts what send() added to the producer's buffer for these records

    def __init__(self, topic: str, partition: int) -> None:
        self.values: list = []
        self.keys: list = []
        self.headers: list = []
        self.timestamps: list = []
        self.result = _BatchResult(topic, partition)
        self.size = 0
        self.created = time.monotonic()  # when its oldest record was sent: its delivery deadline runs from here


class _Stream:
    """One Produce call. A writer task writes the requests it is handed, in order (a write held by gRPC
    flow control never holds up the producer's loop, so deadlines keep running); a reader task applies
    the acks. Either task ending wakes the loop: a stream whose reader ended is broken."""

    def __init__(self, target: str, on_response, wake, on_written, security: ClientSecurity | None) -> None:
        self.target = target
        self.on_written = on_written
        self.channel = aio_channel(target, security)
        self.call = self.channel.stream_stream(
            PRODUCE, request_serializer=None, response_deserializer=pb.ProduceResponse.FromString
        )()
        self.outbox: asyncio.Queue[tuple[Outgoing, int, bytes] | None] = asyncio.Queue()
        self.writer = asyncio.ensure_future(self._write())
        self.reader = asyncio.ensure_future(self._read(on_response))
        self.writer.add_done_callback(lambda _: wake())
        self.reader.add_done_callback(lambda _: wake())

    async def _write(self) -> None:
        while (entry := await self.outbox.get()) is not None:
            item, sequence, request = entry
            if Delivery.is_flying(item, sequence):  # not given up (its deadline passed) while queued here
                await self.call.write(request)
                self.on_written(item, sequence)
        await self.call.done_writing()

    async def _read(self, on_response) -> None:
        async for response in self.call:
            on_response(response)  # raises a retriable error of a request: give the stream up
        raise BrokerUnavailableError(f"the broker at {self.target} closed the produce stream")

    def failure(self) -> TidelogError | None:
        """Why the stream broke, or None while it works."""
        for task in (self.reader, self.writer):
            if task.done() and not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                if isinstance(exc, TidelogError):
                    return exc
                if isinstance(exc, grpc.RpcError):
                    return error_from_rpc(exc, self.target)
                # grpc.aio's own objects (ExecuteBatchError ... SendCloseFromClientOperation, when the
                # writer half-closes a call that already ended) say nothing to a user: name the broker.
                log.debug("produce stream to %s failed: %r; reconnecting", self.target, exc)
                return BrokerUnavailableError(f"the produce stream to {self.target} broke")
        return None

    async def finish(self, timeout_s: float) -> None:
        """End the stream after the last ack (the broker then ends it too), then close it."""
        self.outbox.put_nowait(None)
        await asyncio.wait({self.reader}, timeout=timeout_s)
        await self.close()

    async def close(self) -> None:
        self.call.cancel()
        for task in (self.writer, self.reader):
            task.cancel()
        await asyncio.gather(self.writer, self.reader, return_exceptions=True)
        await self.channel.close()


class Producer:
    """Sends records to a broker in batches; thread-safe.

    Settings (units last):

    - linger_ms (5), batch_bytes (1 MiB): a partition's batch goes out when it holds batch_bytes or its
      first record has waited linger_ms, and its partition can send it: while the partition has its
      most requests in flight (max_in_flight_requests_per_partition; 2 with linger_ms=0), its batch
      goes on taking records and leaves with the next ack. So linger_ms=0 sends a lone record at once
      and coalesces records that arrive while the broker is busy (adaptive batching, no linger needed).
    - compression ("none", "gzip", "snappy", "lz4" or "zstd"; lz4 is the fastest here, zstd the smallest).
    - max_in_flight_bytes (64 MiB): encoded bytes written and not yet acknowledged, over all partitions.
    - max_in_flight_requests_per_partition (BATCHES_REMEMBERED, 5): requests of one partition written and
      not yet acknowledged. An idempotent producer may not go above BATCHES_REMEMBERED, the number of
      batches the broker remembers per producer and partition, so that a resend after a broken stream is
      always recognized (and answered with its original offsets) rather than refused as a duplicate.
    - buffer_bytes (64 MiB), max_block_s (60): send() blocks while this much is waiting or in flight,
      for up to max_block_s, then raises RequestTimeoutError.
    - delivery_timeout_s (120): the deadline of a record, counted from the send() of the oldest record
      of its batch. While it runs, the producer keeps retrying whatever stands in the way (an unreachable
      broker, a broken stream, retriable refusals such as DiskFullError). Once it has passed, the batch
      fails wherever it is: still in the buffer, waiting to be resent, or written on a live stream
      without an acknowledgement. Its futures then raise the last error the batch met, or a
      RequestTimeoutError naming the timeout if it met none; a batch that was already written when it
      failed may still have been appended. Errors that retrying cannot fix fail a batch at once.
      flush() and close() therefore return within about delivery_timeout_s of the last send().
    - idempotent (True): batches carry a producer id and sequence numbers, so resends are never
      appended twice; with False a resend after a lost acknowledgement may be.
    - metadata_max_age_s (300, Kafka's metadata.max.age.ms): the topics written to are looked up again
      this often, so partitions added by `topics alter` start getting records (keyed records may then
      map to another partition, as in Kafka).
    - security (None): TLS and a token for a secured broker (client/security.py).
    """

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        *,
        acks: int | str | None = None,
        linger_ms: float = 5,
        batch_bytes: int = 1 << 20,
        compression: str = "none",
        max_in_flight_bytes: int = 64 << 20,
        buffer_bytes: int = 64 << 20,
        max_block_s: float = 60.0,
        delivery_timeout_s: float = 120.0,
        idempotent: bool = True,
        max_in_flight_requests_per_partition: int = BATCHES_REMEMBERED,
        metadata_max_age_s: float = 300.0,
        security: ClientSecurity | None = None,
    ) -> None:
        if not metadata_max_age_s > 0:
            raise InvalidConfigError(f"metadata_max_age_s must be positive, not {metadata_max_age_s}")
        if batch_bytes < 1 or linger_ms < 0:
            raise InvalidRequestError("batch_bytes must be positive and linger_ms not negative")
        if not delivery_timeout_s > 0:
            raise InvalidConfigError(f"delivery_timeout_s must be positive, not {delivery_timeout_s}")
        limit = BATCHES_REMEMBERED if idempotent else None
        if max_in_flight_requests_per_partition < 1 or (limit and max_in_flight_requests_per_partition > limit):
            raise InvalidConfigError(
                f"max_in_flight_requests_per_partition must be 1..{limit} for an idempotent producer (the broker "
                f"remembers its last {limit} batches per partition)"
                if limit
                else "max_in_flight_requests_per_partition must be at least 1"
            )
        batch_codec.compression.codec_id(compression)  # fail early on an unknown codec
        self.acks = acks_code(acks)
        if self.acks == pb.ACKS_NONE:
            idempotent = False  # nothing is acknowledged, so nothing is resent: no sequences (as Kafka)
        self.target = target
        self.linger_s = linger_ms / 1000
        self.batch_bytes = batch_bytes
        self.compression = compression
        self.max_in_flight_bytes = max_in_flight_bytes
        self.max_in_flight_requests_per_partition = max_in_flight_requests_per_partition
        self.buffer_bytes = buffer_bytes
        """Records queued or in flight, in bytes; send() blocks (up to max_block_s) past it."""
        self.max_block_s = max_block_s
        self._buffered = 0
        self.delivery_timeout_s = delivery_timeout_s
        producer_id = secrets.randbits(62) if idempotent else -1
        self.reconnects = 0
        """Times the stream broke and was opened again (requests in flight were resent)."""
        self._metadata = Metadata(target, security=security)
        self._refreshing: asyncio.Future | None = None  # a metadata refresh running in a worker thread
        self._refresh_topics: set[str] = set()  # topics whose leaders are wanted
        self._refresh_at = 0.0
        self._refused: dict[str, TidelogError] = {}  # topics whose lookup was refused: their batches fail
        self._partitions: dict[str, int] = {}
        self.metadata_max_age_s = metadata_max_age_s
        """How often the topics written to are looked up again even when nothing failed (Kafka's
        metadata.max.age.ms): how soon partitions added by `topics alter` get records."""
        self._max_age_at = time.monotonic() + metadata_max_age_s
        self._sticky: dict[str, int] = {}
        self._open: dict[tuple[str, int], _OpenBatch] = {}
        self._full: list[tuple[str, int, _OpenBatch]] = []  # closed at batch_bytes, waiting to be sent
        self._lock = threading.Lock()
        self._closed = False
        self._delivery = Delivery(
            producer_id=producer_id,
            compression=compression,
            max_in_flight_bytes=max_in_flight_bytes,
            max_in_flight_requests_per_partition=max_in_flight_requests_per_partition,
            delivery_timeout_s=delivery_timeout_s,
            on_finish=self._complete,
            acks=self.acks,
        )
        self._failures = 0  # streams broken in a row, for the back-off
        self._loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()  # bound to the producer's loop when first awaited there
        self._flush_now = False
        self._idle = threading.Condition(self._lock)
        self._unfinished = 0
        self._thread = threading.Thread(target=self._run, name="tidelog-producer", daemon=True)
        started = threading.Event()
        self._thread.start()
        self._loop.call_soon_threadsafe(started.set)
        started.wait()

    # -- the caller's side -------------------------------------------------------------------------
    def send(
        self,
        topic: str,
        value,
        key=None,
        *,
        partition: int | None = None,
        headers=None,
        timestamp_ms: int | None = None,
        delay_ms: int = 0,
    ) -> RecordFuture:
        """Queue one record; the future resolves to RecordMetadata(topic, partition, offset).

        delay_ms: queue consumers do not receive it before that long from now (a header: plain log
        consumers see it at once)."""
        if self._closed:
            raise EngineClosedError("the producer is closed")
        if delay_ms:
            if delay_ms < 0:
                raise InvalidRequestError(f"delay_ms must be >= 0, got {delay_ms}")
            headers = with_not_before(headers or (), time.time_ns() // 1_000_000 + delay_ms)
        if partition is None:
            partition = self._choose_partition(topic, key)
        size = (len(value) if value is not None else 0) + (len(key) if key is not None else 0) + 16
        with self._lock:
            if self._buffered + size > self.buffer_bytes and self._buffered:
                self._kick_soon()
                if not self._idle.wait_for(
                    lambda: self._buffered + size <= self.buffer_bytes or not self._buffered, timeout=self.max_block_s
                ):
                    raise RequestTimeoutError(
                        f"send blocked {self.max_block_s}s: {self._buffered} bytes are "
                        f"waiting for the broker (buffer_bytes={self.buffer_bytes})"
                    )
            self._buffered += size
            batch = self._open.get((topic, partition))
            if batch is None:
                batch = self._open[(topic, partition)] = _OpenBatch(topic, partition)
            future = RecordFuture(batch.result, len(batch.values))
            batch.values.append(value)
            batch.keys.append(key)
            batch.headers.append(headers)
            batch.timestamps.append(timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000)
            batch.size += size
            self._unfinished += 1
            full = batch.size >= self.batch_bytes
            if full:  # close it: the next record starts a new batch, whenever this one is sent
                del self._open[(topic, partition)]
                self._full.append((topic, partition, batch))
                self._rotate_sticky(topic, partition)
        if full or len(batch.values) == 1:
            self._loop.call_soon_threadsafe(self._kick)
        return future

    def _choose_partition(self, topic: str, key) -> int:
        # the metadata's count, refreshed every metadata_max_age_s: a topic may gain partitions
        count = self._partitions[topic] = self._metadata.partitions(topic)
        if key is not None:
            return key_partition(bytes(key), count)
        sticky = self._sticky.get(topic)
        if sticky is None:
            sticky = self._sticky[topic] = random.randrange(count)
        return sticky

    def flush(self, timeout_s: float | None = None) -> None:
        """Send everything queued and wait until every record sent so far is acknowledged or failed
        (which takes at most about delivery_timeout_s)."""
        self._loop.call_soon_threadsafe(self._kick, True)
        with self._idle:
            if not self._idle.wait_for(lambda: self._unfinished == 0, timeout=timeout_s):
                raise RequestTimeoutError(f"flush did not finish within {timeout_s}s")

    def close(self, timeout_s: float | None = None) -> None:
        """Flush, then stop the network thread."""
        if self._closed:
            return
        try:
            self.flush(timeout_s)
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._kick)
            self._thread.join(timeout=timeout_s)
            self._metadata.close()

    @property
    def producer_id(self) -> int:
        """The id the broker knows this producer by (-1: not idempotent); a new one once the epochs
        of the last ran out."""
        return self._delivery.producer_id

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the network side (the producer's thread) ------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._sender())
        except BaseException as exc:  # a bug: fail what is left rather than leave flush() waiting forever
            log.exception("the producer's network thread failed")
            self._closed = True
            self._abandon(BrokerUnavailableError(f"the producer's network thread failed: {exc!r}"))
        finally:
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    def _kick_soon(self) -> None:
        self._loop.call_soon_threadsafe(self._kick, True)

    def _kick(self, flush: bool = False) -> None:
        if flush:
            self._flush_now = True
        self._wake.set()

    async def _sender(self) -> None:
        """The one loop that moves batches: buffer → delivery → a stream per leader, deadlines, reconnects."""
        delivery = self._delivery
        streams: dict[str, _Stream] = {}
        retry_at: dict[str, float] = {}  # per broker: when to open a stream again after one broke
        try:
            while True:
                self._wake.clear()  # before looking: a wake-up from now on is seen by the next wait
                now = time.monotonic()
                everything, self._flush_now = self._flush_now or self._closed, False
                for item in self._take_ready(everything, now):
                    delivery.add(item)
                delivery.expire(now)
                for topic, refusal in self._refused.items():
                    delivery.refuse({topic}, refusal)
                self._refused.clear()
                broken = False
                for address, stream in list(streams.items()):
                    if (err := stream.failure()) is not None:
                        await stream.close()
                        del streams[address]
                        if isinstance(err, (AuthenticationError, AuthorizationError)):
                            # every broker answers the same to these credentials: retrying cannot help
                            for item in delivery.drop_all() + self._take_ready(True, time.monotonic()):
                                self._complete(item, -1, err)
                            continue
                        delivery.lost(err, address)  # what it held waits again, in order, to be resent
                        self._rerouted(address, err)
                        self.reconnects += 1
                        self._failures += 1
                        retry_at[address] = time.monotonic() + _backoff_s(self._failures)
                        broken = True
                if broken:
                    continue
                if self._closed and delivery.idle and self._buffer_empty():
                    await asyncio.gather(*(stream.finish(CLOSE_WAIT_S) for stream in streams.values()))
                    streams.clear()
                    return

                route = self._router(retry_at, now)
                while (request := delivery.next_request(route)) is not None:
                    address = request[0].address
                    if address not in streams:
                        streams[address] = _Stream(
                            address, self._on_response, self._wake.set, delivery.written, self._metadata.security
                        )
                    streams[address].outbox.put_nowait(request)
                if now >= self._max_age_at:
                    self._refresh_topics.update(self._partitions)
                    self._max_age_at = now + self.metadata_max_age_s
                self._start_refresh()
                waits = [t for t in retry_at.values() if t > now] if delivery.has_waiting else []
                if self._refresh_topics and self._refreshing is None:
                    waits.append(self._refresh_at)
                if self._partitions:
                    waits.append(self._max_age_at)
                await self._sleep(self._next_wake(min(waits, default=None)))
        finally:
            await asyncio.gather(*(stream.close() for stream in streams.values()), return_exceptions=True)
            if self._refreshing is not None:
                self._refreshing.cancel()

    def _router(self, retry_at: dict[str, float], now: float):
        """route(topic, partition) for Delivery: the leader's address, None while it is unknown (a lookup
        is asked for) or its broker is in its reconnect backoff."""

        def route(topic: str, partition: int) -> str | None:
            known, address = self._metadata.cached_leader(topic, partition)
            if not known or address is None:
                self._refresh_topics.add(topic)
                return None
            return address if retry_at.get(address, 0.0) <= now else None

        return route

    def _rerouted(self, address: str, err: TidelogError) -> None:
        """A stream broke: learn where its partitions went (a leader moved, or the broker is gone)."""
        if isinstance(err, NotLeaderError) and self._delivery.refused is not None:
            topic, partition = self._delivery.refused
            self._metadata.not_leader(topic, partition, err)
            self._refresh_topics.add(topic)  # the named leader is used now; the rest is checked soon
        elif isinstance(err, BrokerUnavailableError):
            self._metadata.unreachable(address)
        self._delivery.refused = None

    def _start_refresh(self) -> None:
        """Look up the leaders wanted, in a worker thread (the calls are blocking), one refresh at a time."""
        if not self._refresh_topics or self._refreshing is not None or time.monotonic() < self._refresh_at:
            return
        topics, self._refresh_topics = sorted(self._refresh_topics), set()

        def done(future: asyncio.Future) -> None:
            self._refreshing = None
            exc = None if future.cancelled() else future.exception()
            if isinstance(exc, (AuthenticationError, AuthorizationError)):  # fails their batches (_sender)
                self._refused.update(dict.fromkeys(topics, exc))
            if isinstance(exc, TidelogError) and not isinstance(exc, UnknownTopicError):
                log.debug("metadata refresh for %s failed: %r", topics, exc)
                self._delivery.last_error = exc  # what the waiting batches fail with if it lasts
            self._wake.set()

        self._refresh_at = time.monotonic() + METADATA_REFRESH_MIN_S
        self._refreshing = asyncio.ensure_future(asyncio.to_thread(self._metadata.refresh, topics))
        self._refreshing.add_done_callback(done)

    def _on_response(self, response: pb.ProduceResponse) -> None:
        try:
            err = self._delivery.acked(response.results)
        finally:
            self._wake.set()  # acks make room in flight, and flush/close may be waiting for the last
        if self._delivery.last_error is None:
            self._failures = 0
        if err is not None:
            raise err

    def _next_wake(self, retry_at: float | None) -> float | None:
        """Seconds until something is due: a lingering batch, a deadline, a reconnect (None: nothing)."""
        now = time.monotonic()
        due = [retry_at, self._delivery.next_deadline()]
        backed_up = self._backed_up
        with self._lock:
            if self._full:
                return 0.0
            wait = min(self.linger_s, self.delivery_timeout_s)
            due.extend(b.created + wait for (t, p), b in self._open.items() if not backed_up(t, p))
        times = [t for t in due if t is not None]
        return max(min(times) - now, 0.0) if times else None

    async def _sleep(self, timeout: float | None) -> None:
        """Until woken (send, flush, close, an ack, a stream ending) or timeout seconds."""
        if timeout is not None and timeout <= 0:
            return
        timer = self._loop.call_later(timeout, self._wake.set) if timeout is not None else None
        await self._wake.wait()
        if timer is not None:
            timer.cancel()

    def _backed_up(self, topic: str, partition: int) -> bool:
        """Whether the partition's next batch would only queue behind its requests in flight."""
        return self._delivery.backed_up(topic, partition, ADAPTIVE_IN_FLIGHT if self.linger_s == 0 else None)

    def _take_ready(self, everything: bool, now: float) -> list[Outgoing]:
        wait = min(self.linger_s, self.delivery_timeout_s)
        backed_up = self._backed_up
        with self._lock:
            ready, self._full = self._full, []
            for (topic, partition), batch in list(self._open.items()):
                # A batch past its linger goes when its partition can send it; while the partition's
                # requests are backed up it keeps taking records (an ack wakes the loop to send it).
                if everything or (now - batch.created >= wait and not backed_up(topic, partition)):
                    del self._open[(topic, partition)]
                    self._rotate_sticky(topic, partition)
                    ready.append((topic, partition, batch))
        return [
            Outgoing(
                topic,
                partition,
                (b.values, b.keys, b.headers, b.timestamps),
                b.result,
                len(b.values),
                b.size,
                b.created + self.delivery_timeout_s,
            )
            for topic, partition, b in ready
        ]

    def _buffer_empty(self) -> bool:
        with self._lock:
            return not self._open and not self._full

    def _rotate_sticky(self, topic: str, partition: int) -> None:
        if self._sticky.get(topic) == partition and self._partitions.get(topic, 1) > 1:
            self._sticky[topic] = (partition + 1) % self._partitions[topic]  # the next keyless batch goes elsewhere

    def _abandon(self, err: TidelogError) -> None:
        """Fail every batch not finished yet (the network thread is gone)."""
        for item in self._delivery.drop_all() + self._take_ready(True, time.monotonic()):
            self._complete(item, -1, err)

    def _complete(self, item: Outgoing, base_offset: int, error: TidelogError | None) -> None:
        """The one ending of a batch: its futures resolve and it stops counting as unfinished."""
        if not item.result.finish(base_offset, error):
            log.error("a batch of %s/%d finished twice; the second ending is ignored", item.topic, item.partition)
            return
        self._finished(item.count, item.buffered)

    def _finished(self, n: int, buffered: int) -> None:
        with self._lock:
            self._unfinished -= n
            self._buffered -= buffered
            self._idle.notify_all()


ACKS = {"all": pb.ACKS_ALL, -1: pb.ACKS_ALL, "-1": pb.ACKS_ALL, "leader": pb.ACKS_LEADER, 1: pb.ACKS_LEADER}
ACKS.update({"1": pb.ACKS_LEADER, "none": pb.ACKS_NONE, 0: pb.ACKS_NONE, "0": pb.ACKS_NONE, None: pb.ACKS_DEFAULT})
ACKS["default"] = pb.ACKS_DEFAULT


def acks_code(acks: int | str | None) -> int:
    """Kafka's acks ("all"/-1, 1/"leader", 0/"none"; None: the broker's default) as the Acks enum."""
    if isinstance(acks, bool) or acks not in ACKS:
        raise InvalidConfigError(f'acks must be "all" (-1), 1 ("leader"), 0 ("none") or None, not {acks!r}')
    return ACKS[acks]


def _backoff_s(failures: int) -> float:
    """Pause before reconnecting after `failures` broken streams in a row: 50 ms doubling up to 1 s,
    jittered so that many producers do not come back at once."""
    base = min(RETRY_BACKOFF_S * 2 ** min(failures - 1, 10), RETRY_BACKOFF_MAX_S)
    return base * (0.5 + random.random() / 2)
