"""Producer: batches records client-side and streams them to the broker with acks.

`send()` adds a record to its partition's open batch and returns a Future of RecordMetadata
(partition, offset). A batch goes out when it reaches batch_bytes or has waited linger_ms; it is
encoded once (RecordBatch v2, optionally lz4) by the same codec the engine uses, and the broker
appends it verbatim. Keys pick partitions exactly as the engine does (Kafka's murmur2); keyless
records stick to one partition until its batch is sent.

Delivery: one bidirectional stream with many requests in flight, acked in order. The producer is
idempotent: every batch carries a producer id and per-partition sequence numbers, so when the
stream breaks, the unacknowledged requests are resent in their original order and the broker drops
any it had already appended. Records of a partition are therefore never reordered or duplicated.
Retries stop after delivery_timeout_s, failing the futures with the last error.

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
from typing import NamedTuple

import grpc

from ..broker.partitioner import key_partition
from ..codec import batch as batch_codec
from ..codec import protowire
from ..errors import (BrokerUnavailableError, EngineClosedError, InvalidRequestError, RequestTimeoutError,
                      TidelogError)
from .errors import error_from_message, error_from_rpc
from ..v1 import tidelog_pb2 as pb
from .admin import Admin
from .channel import DEFAULT_TARGET, aio_channel

PRODUCE = "/tidelog.v1.Producer/Produce"
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

    def finish(self, base_offset: int = -1, error: BaseException | None = None) -> None:
        self.base_offset, self.error = base_offset, error
        self._done.set()
        for fn, future in self._callbacks:
            try:
                fn(future)
            except Exception:  # a user's callback must not break delivery of the others
                pass


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
        return RecordMetadata(self._batch.topic, self._batch.partition, self._batch.base_offset + self._index)

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
        self.created = time.monotonic()


class _Request(NamedTuple):
    sequence: int
    topic: str
    partition: int
    raw: bytes
    result: _BatchResult
    count: int
    buffered: int


class Producer:
    def __init__(self, target: str = DEFAULT_TARGET, *, linger_ms: float = 5, batch_bytes: int = 1 << 20,
                 compression: str = "none", max_in_flight_bytes: int = 64 << 20, buffer_bytes: int = 64 << 20,
                 max_block_s: float = 60.0, delivery_timeout_s: float = 120.0, idempotent: bool = True) -> None:
        if batch_bytes < 1 or linger_ms < 0:
            raise InvalidRequestError("batch_bytes must be positive and linger_ms not negative")
        batch_codec.compression.codec_id(compression)  # fail early on an unknown codec
        self.target = target
        self.linger_s = linger_ms / 1000
        self.batch_bytes = batch_bytes
        self.compression = compression
        self.max_in_flight_bytes = max_in_flight_bytes
        self.buffer_bytes = buffer_bytes
        """Records queued or in flight, in bytes; send() blocks (up to max_block_s) past it."""
        self.max_block_s = max_block_s
        self._buffered = 0
        self.delivery_timeout_s = delivery_timeout_s
        self.producer_id = secrets.randbits(62) if idempotent else -1
        self.reconnects = 0
        """Times the stream broke and was opened again (requests in flight were resent)."""
        self._admin = Admin(target)
        self._partitions: dict[str, int] = {}
        self._sticky: dict[str, int] = {}
        self._sequences: dict[tuple[str, int], int] = {}
        self._open: dict[tuple[str, int], _OpenBatch] = {}
        self._full: list[tuple[str, int, _OpenBatch]] = []  # closed at batch_bytes, waiting to be sent
        self._epoch = 0
        self._lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._wake: asyncio.Event | None = None
        self._idle = threading.Condition(self._lock)
        self._unfinished = 0
        self._thread = threading.Thread(target=self._run, name="tidelog-producer", daemon=True)
        started = threading.Event()
        self._thread.start()
        self._loop.call_soon_threadsafe(started.set)
        started.wait()

    # -- the caller's side -------------------------------------------------------------------------
    def send(self, topic: str, value, key=None, *, partition: int | None = None, headers=None,
             timestamp_ms: int | None = None) -> RecordFuture:
        """Queue one record; the future resolves to RecordMetadata(topic, partition, offset)."""
        if self._closed:
            raise EngineClosedError("the producer is closed")
        if partition is None:
            partition = self._choose_partition(topic, key)
        size = (len(value) if value is not None else 0) + (len(key) if key is not None else 0) + 16
        with self._lock:
            if self._buffered + size > self.buffer_bytes and self._buffered:
                self._kick_soon()
                if not self._idle.wait_for(lambda: self._buffered + size <= self.buffer_bytes or not self._buffered,
                                           timeout=self.max_block_s):
                    raise RequestTimeoutError(f"send blocked {self.max_block_s}s: {self._buffered} bytes are "
                                              f"waiting for the broker (buffer_bytes={self.buffer_bytes})")
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
        count = self._partitions.get(topic)
        if count is None:
            count = self._partitions[topic] = self._admin.partitions(topic)
        if key is not None:
            return key_partition(bytes(key), count)
        sticky = self._sticky.get(topic)
        if sticky is None:
            sticky = self._sticky[topic] = random.randrange(count)
        return sticky

    def flush(self, timeout_s: float | None = None) -> None:
        """Send everything queued and wait until every record sent so far is acknowledged (or failed)."""
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
            self._admin.close()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the network side (the producer's thread) ------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._wake = asyncio.Event()
        self._flush_now = False
        try:
            self._loop.run_until_complete(self._sender())
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

    def _take_ready(self, everything: bool) -> list[tuple[str, int, _OpenBatch]]:
        now = time.monotonic()
        with self._lock:
            ready, self._full = self._full, []
            lingered = [(t, p, b) for (t, p), b in self._open.items() if everything or now - b.created >= self.linger_s]
            for t, p, _ in lingered:
                del self._open[(t, p)]
                self._rotate_sticky(t, p)
        return ready + lingered

    def _rotate_sticky(self, topic: str, partition: int) -> None:
        if self._sticky.get(topic) == partition and self._partitions.get(topic, 1) > 1:
            self._sticky[topic] = (partition + 1) % self._partitions[topic]  # the next keyless batch goes elsewhere

    def _encode(self, topic: str, partition: int, batch: _OpenBatch, sequence: int) -> _Request:
        seq_key = (topic, partition)
        base_seq = self._sequences.get(seq_key, 0)
        self._sequences[seq_key] = (base_seq + len(batch.values)) & 0x7FFFFFFF
        raw = batch_codec.build_batch(
            batch.values, batch.keys if any(k is not None for k in batch.keys) else None,
            batch.headers if any(batch.headers) else None, batch.timestamps, timestamp=0,
            compression_name=self.compression, producer_id=self.producer_id,
            producer_epoch=self._epoch if self.producer_id >= 0 else -1,
            base_sequence=base_seq if self.producer_id >= 0 else -1)
        return _Request(sequence, topic, partition, protowire.encode_produce_request(sequence, topic, partition, raw),
                        batch.result, len(batch.values), batch.size)

    async def _sender(self) -> None:
        sequence = 0
        in_flight: dict[int, _Request] = {}
        backlog: list[_Request] = []  # encoded, not yet written on the current stream
        deadline_broken: float | None = None
        while True:
            channel = aio_channel(self.target)
            call = channel.stream_stream(PRODUCE, request_serializer=None,
                                         response_deserializer=pb.ProduceResponse.FromString)()
            backlog = sorted(in_flight.values(), key=lambda r: r.sequence) + backlog
            in_flight_bytes = 0
            reader = asyncio.ensure_future(self._read_acks(call, in_flight))
            try:
                while True:
                    if reader.done():
                        reader.result()  # raises the stream's error
                        break
                    if not backlog:
                        with self._lock:
                            lingering = min((b.created for b in self._open.values()), default=None)
                            if self._full:
                                lingering = 0.0
                        timeout = None if lingering is None else max(lingering + self.linger_s - time.monotonic(), 0)
                        if self._closed or self._flush_now:
                            # poll: the wake-up that asked for this may have been used up by a stream
                            # that failed since (a reconnect), and closing waits for the last acks
                            timeout = 0.05 if timeout is None else min(timeout, 0.05)
                        woken = asyncio.ensure_future(self._wake.wait())
                        await asyncio.wait({woken, reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                        woken.cancel()
                        self._wake.clear()
                        everything, self._flush_now = self._flush_now or self._closed, False
                        for topic, partition, batch in self._take_ready(everything):
                            try:
                                backlog.append(self._encode(topic, partition, batch, sequence))
                            except TidelogError as exc:
                                self._fail(batch.result, len(batch.values), exc, batch.size)
                                continue
                            sequence += 1
                        if self._closed and not backlog and not in_flight and not self._open and not self._full:
                            await call.done_writing()
                            await asyncio.wait({reader}, timeout=5)  # the broker ends the stream
                            return
                    while backlog:
                        request = backlog[0]
                        in_flight_bytes = sum(len(r.raw) for r in in_flight.values())
                        if in_flight and in_flight_bytes + len(request.raw) > self.max_in_flight_bytes:
                            await asyncio.wait({reader}, timeout=0.05)  # wait for acks to make room
                            if reader.done():
                                break
                            continue
                        in_flight[request.sequence] = request
                        backlog.pop(0)
                        await call.write(request.raw)
                    deadline_broken = None
            except Exception as exc:  # any failure of the stream: reconnect and resend, until the deadline
                if isinstance(exc, TidelogError):
                    err = exc
                elif isinstance(exc, grpc.RpcError):
                    err = error_from_rpc(exc, self.target)
                else:
                    log.warning("produce stream to %s failed: %r; reconnecting", self.target, exc)
                    err = BrokerUnavailableError(f"the produce stream to {self.target} failed: {exc!r}")
                self.reconnects += 1
                now = time.monotonic()
                deadline_broken = deadline_broken or now + self.delivery_timeout_s
                if now >= deadline_broken:
                    for request in list(in_flight.values()) + backlog:
                        self._fail(request.result, request.count, err, request.buffered)
                    in_flight.clear()
                    backlog = []
                    deadline_broken = None
                await asyncio.sleep(min(0.05 * (1 + random.random()), 1.0))
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                await channel.close()

    async def _read_acks(self, call, in_flight: dict[int, _Request]) -> None:
        async for response in call:
            for result in response.results:
                request = in_flight.get(result.sequence)
                if request is None:
                    continue
                if result.HasField("error"):
                    err = error_from_message(result.error)
                    if err.retriable:
                        raise err  # reconnect and resend from this request on, in order
                    del in_flight[result.sequence]
                    self._fail(request.result, request.count, err, request.buffered)
                    self._new_epoch()
                else:
                    del in_flight[result.sequence]
                    self._succeed(request, result.base_offset)
        raise BrokerUnavailableError(f"the broker at {self.target} closed the produce stream")

    def _new_epoch(self) -> None:
        """After a batch failed for good its sequence numbers are a gap the broker would refuse
        forever: start a new epoch, whose sequences start again at 0 (Kafka bumps the epoch too)."""
        if self.producer_id >= 0:
            self._epoch = (self._epoch + 1) & 0x7FFF
            self._sequences.clear()

    def _succeed(self, request: _Request, base_offset: int) -> None:
        request.result.finish(base_offset=base_offset)
        self._finished(request.count, request.buffered)

    def _fail(self, result: _BatchResult, count: int, err: TidelogError, buffered: int) -> None:
        if not result._done.is_set():
            result.finish(error=err)
        self._finished(count, buffered)

    def _finished(self, n: int, buffered: int) -> None:
        with self._lock:
            self._unfinished -= n
            self._buffered -= buffered
            self._idle.notify_all()
