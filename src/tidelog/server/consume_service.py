"""tidelog.v1.Consumer: long-poll fetch, credit-based streaming subscribe, and a per-record fetch.

Responses carrying batches are framed by hand (wire/framing.py): the segment's bytes are copied
once, out of the map into the response, and never decoded or re-encoded.

A subscription never sends more than the credit the client granted (at least one whole batch once it
has any credit); credit is capped at max_subscribe_credit_bytes, whatever the client grants. What was
sent and not yet credited back is what a consumer that stops reading makes the broker hold (in gRPC's
buffers), so it is counted against one budget for all subscriptions, max_subscribe_buffer_bytes: past
it subscriptions wait for credit to come back. A subscription holding nothing of it may still send one
small message (OVERDRAFT_BYTES, or one batch if larger), so stalled consumers filling the budget slow
live ones down but never stop them. A stream that ends, however it ends, gives back what it held.
Event-loop only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar, cast

import grpc

from ..config import ServerConfig
from ..engine.async_engine import AsyncEngine
from ..engine.results import FetchResult
from ..errors import (
    BrokerUnavailableError,
    EngineClosedError,
    InvalidRequestError,
    OffsetOutOfRangeError,
    TidelogError,
)
from ..replication.manager import ReplicaManager
from ..v1 import tidelog_pb2 as pb
from ..wire import framing, methods
from . import requests, status
from .budget import ByteBudget

IDLE_WAKE_S = 1.0  # a waiting subscription re-checks its stream at least this often
OVERDRAFT_BYTES = 64 * 1024  # what a subscription holding nothing may send while the shared budget is full

_T = TypeVar("_T")


def check_timestamp(timestamp_ms: int) -> None:
    """The engine reads -1 and -2 as latest and earliest: a negative time on the wire must not."""
    if timestamp_ms < 0:
        raise InvalidRequestError(f"timestamp_ms must be >= 0, got {timestamp_ms}")


class ConsumeService:
    def __init__(
        self, engine: AsyncEngine, config: ServerConfig, replicas: Callable[[], ReplicaManager | None] = lambda: None
    ) -> None:
        self.engine = engine
        self.config = config
        self._replicas = replicas  # in a cluster: only the leader serves reads
        self._buffer = ByteBudget(config.max_subscribe_buffer_bytes)

    @property
    def buffered_bytes(self) -> int:
        """Bytes sent to subscribers and not yet credited back, on all subscriptions."""
        return self._buffer.used

    def handler(self) -> grpc.GenericRpcHandler:
        return methods.handlers(
            "Consumer",
            {
                "Fetch": requests.unary(self.fetch, raw_response=True),
                "FetchRecords": requests.unary(self.fetch_records),
                "Subscribe": requests.stream(self.subscribe, raw_response=True),
            },
        )

    def check_leader(self, topic: str, partition: int) -> None:
        """In a cluster, NotLeaderError (naming the leader) unless this broker leads the partition now."""
        replicas = self._replicas()
        if replicas is not None:
            replicas.leading(topic, partition)
        elif self.config.cluster:  # not a member yet: its log may hold records no longer committed
            raise BrokerUnavailableError("the broker is joining its cluster; retry shortly")

    async def resolve(self, topic: str, partition: int, position: pb.Position) -> int:
        """An offset for a Position: an offset (checked against the log's range now, so a seek that
        the client follows by closing its stream still gets its answer), a boundary, or the first
        record at a time."""
        kind = position.WhichOneof("kind")
        if kind == "offset":
            offsets = await self.engine.list_offsets(topic, partition)
            # A new leader's high watermark may lag what its followers last saw: an offset up to its log
            # end is valid there, and read once the high watermark passes it.
            end = offsets.log_end if self._replicas() is not None else offsets.high_watermark
            if not offsets.log_start <= position.offset <= end:
                raise OffsetOutOfRangeError(
                    f"offset {position.offset} is out of range; valid offsets are {offsets.log_start} to "
                    f"{offsets.high_watermark}",
                    log_start=offsets.log_start,
                    log_end=offsets.high_watermark,
                    offset=position.offset,
                )
            return position.offset
        if kind == "timestamp_ms":
            check_timestamp(position.timestamp_ms)
            found = await self.engine.offset_at(topic, partition, position.timestamp_ms)
            return found if found is not None else await self.engine.offset_at(topic, partition, "latest")
        boundary = "latest" if kind == "boundary" and position.boundary == pb.LATEST else "earliest"
        return await self.engine.offset_at(topic, partition, boundary)

    async def _long_poll(self, request: pb.FetchRequest) -> FetchResult:
        """Fetch, waiting up to max_wait_ms for at least min_bytes (or any data when min_bytes is 0)."""
        max_bytes = request.max_bytes or self.config.default_fetch_bytes
        wait_s = min(max(request.max_wait_ms, 0), self.config.max_fetch_wait_ms) / 1000
        deadline = time.monotonic() + wait_s
        want = max(request.min_bytes, 1)
        while True:
            self.check_leader(request.topic, request.partition)
            result = await self.engine.fetch(request.topic, request.partition, request.offset, max_bytes)
            left = deadline - time.monotonic()
            if len(result.data) >= want or left <= 0 or len(result.data) >= max_bytes or self.engine.stopping:
                return result
            await self.engine.wait_for_data(request.topic, request.partition, result.next_offset, left)

    async def fetch(self, request: pb.FetchRequest, context: grpc.aio.ServicerContext) -> bytes:
        try:
            result = await self._long_poll(request)
        except TidelogError as exc:
            await status.abort(context, exc)
        return framing.encode_fetch_response(
            request.topic, request.partition, result.next_offset, result.high_watermark, result.log_start, result.data
        )

    async def fetch_records(
        self, request: pb.FetchRequest, context: grpc.aio.ServicerContext
    ) -> pb.FetchRecordsResponse:
        try:
            result = await self._long_poll(request)
            # Decoding records into messages costs CPU in proportion to records and headers (a batch
            # of tiny headers is millions of objects): the I/O pool does it, not the event loop.
            return await self.engine.offload(_records_response, result)
        except TidelogError as exc:
            await status.abort(context, exc)

    async def subscribe(
        self, raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        request_iterator = requests.decoded(pb.SubscribeRequest, raw_requests)
        try:
            first = await request_iterator.__anext__()
        except StopAsyncIteration:
            return
        except TidelogError as exc:
            await status.abort(context, exc)
        if first.WhichOneof("kind") != "start":
            await status.abort(context, InvalidRequestError("a subscription starts with a SubscribeStart message"))
        start = first.start
        topic, partition = start.topic, start.partition
        sub = _Subscription(min(start.credit_bytes, self.config.max_subscribe_credit_bytes), self._buffer)
        try:
            self.check_leader(topic, partition)
            sub.offset = await self.resolve(topic, partition, start.position)
        except TidelogError as exc:
            await status.abort(context, exc)
        limit = min(
            start.max_message_bytes or self.config.max_subscribe_message_bytes, self.config.max_subscribe_message_bytes
        )
        control = asyncio.create_task(self._control(request_iterator, sub, topic, partition))
        try:
            while not sub.closed:
                if self.engine.stopping:
                    await status.abort(context, EngineClosedError("the broker is shutting down; reconnect later"))
                try:
                    self.check_leader(topic, partition)  # leadership moved: the client follows it
                except TidelogError as exc:
                    await status.abort(context, exc)
                if sub.credit <= 0:
                    await sub.wait(IDLE_WAKE_S)
                    continue
                reserved = self._reserve(sub, limit)
                if reserved == 0:  # the shared budget is full and this stream holds some of it
                    await _first(self._buffer.released(), sub.wait(IDLE_WAKE_S))
                    continue
                try:
                    result = await self._fetch(sub, topic, partition, reserved)
                except TidelogError as exc:
                    await status.abort(context, exc)
                if result is None:
                    continue  # a seek arrived while reading: serve from the new position
                if result.data:
                    sub.credit -= len(result.data)
                    sub.offset = result.next_offset
                    yield framing.encode_subscribe_response(
                        result.next_offset, result.high_watermark, result.log_start, result.data
                    )
                elif sub.changed.is_set():  # credit or a seek came meanwhile: look again first
                    sub.changed.clear()
                else:
                    sub.wake = asyncio.get_running_loop().create_future()
                    try:
                        await self.engine.wait_for_data(topic, partition, sub.offset, IDLE_WAKE_S, wake=sub.wake)
                    finally:
                        sub.wake = None
                    sub.changed.clear()
            if sub.error is not None:
                await status.abort(context, sub.error)
        finally:
            control.cancel()
            sub.give_back(sub.held)

    async def _fetch(self, sub: _Subscription, topic: str, partition: int, reserved: int) -> FetchResult | None:
        """Read up to `reserved` bytes at the subscription's position (at least one whole batch); what was
        read replaces the reservation in the shared budget. None when a seek moved the position meanwhile."""
        generation, sent = sub.generation, 0
        try:
            # At the tail the bytes were just appended and sit in the page cache: read on the loop if the
            # partition is free at once (latency), else in the pool (older data may fault pages in).
            result = await self.engine.fetch(topic, partition, sub.offset, reserved, at_tail=sub.at_tail)
            if generation != sub.generation:
                sub.at_tail = False
                return None
            sent = len(result.data)
            # Read up to the high watermark: what comes next is appended from now on, hot in the page
            # cache, and read on the loop too (no trip to the pool for a subscriber that keeps up).
            sub.at_tail = result.next_offset >= result.high_watermark
            return result
        except BaseException:
            sub.at_tail = False
            raise
        finally:
            self._buffer.settle(reserved, sent)
            sub.held += sent

    def _reserve(self, sub: _Subscription, limit: int) -> int:
        """Bytes of the shared budget reserved for this subscription's next fetch (its max_bytes), or 0
        when it must wait: the budget is full and the subscription already holds some of it."""
        want = max(1, min(sub.credit, limit))
        room = self._buffer.room
        if sub.held == 0:
            want = min(want, max(room, OVERDRAFT_BYTES))  # never starved by streams that stopped reading
        elif room <= 0:
            return 0
        else:
            want = min(want, room)
        self._buffer.take(want)
        return want

    async def _control(
        self, request_iterator: AsyncIterator[pb.SubscribeRequest], sub: _Subscription, topic: str, partition: int
    ) -> None:
        """Apply the client's in-band credit grants and seeks; the stream's end closes the subscription."""
        try:
            async for request in request_iterator:
                kind = request.WhichOneof("kind")
                if kind == "credit_bytes":
                    # Credit coming back acknowledges what was sent: that much leaves the broker's hold.
                    sub.give_back(request.credit_bytes)
                    sub.credit = min(sub.credit + request.credit_bytes, self.config.max_subscribe_credit_bytes)
                elif kind == "seek":
                    sub.offset = await self.resolve(topic, partition, request.seek)
                    sub.generation += 1
                    sub.at_tail = False
                else:
                    raise InvalidRequestError("after SubscribeStart, send only credit_bytes or seek")
                sub.notify()
        except TidelogError as exc:
            sub.error = exc
        except (asyncio.CancelledError, grpc.RpcError):
            pass
        finally:
            sub.closed = True
            sub.notify()


async def _first(a: Awaitable[_T], b: Awaitable[object]) -> _T | None:
    """Wait for whichever of two coroutines finishes first and cancel the other; the first one's result
    (None when it was b)."""
    first, second = asyncio.ensure_future(a), asyncio.ensure_future(b)
    try:
        await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
        return first.result() if first.done() and not first.cancelled() else None
    finally:
        first.cancel()
        second.cancel()


def _records_response(result: FetchResult) -> pb.FetchRecordsResponse:
    response = pb.FetchRecordsResponse(next_offset=result.next_offset, high_watermark=result.high_watermark)
    for rec in result:
        out = response.records.add(offset=rec.offset, timestamp_ms=rec.timestamp)
        # AsyncEngine.fetch copies (copy=True), so keys and values are bytes, never memoryviews of the
        # segment (which protobuf would refuse); Record's type allows both.
        if rec.key is not None:
            out.key = cast(bytes, rec.key)
        if rec.value is not None:
            out.value = cast(bytes, rec.value)
        for key, value in rec.headers:
            header = out.headers.add(key=key)
            if value is not None:
                header.value = value
    return response


class _Subscription:
    """Mutable state of one Subscribe stream (touched only on the event loop)."""

    def __init__(self, credit: int, buffer: ByteBudget) -> None:
        self.credit = credit
        self.held = 0
        """Bytes sent and not yet credited back: this stream's share of the shared buffer budget."""
        self._buffer = buffer
        self.offset = 0
        self.generation = 0
        self.closed = False
        self.error: TidelogError | None = None
        self.changed = asyncio.Event()
        self.at_tail = False  # the last read reached the high watermark: the next records are fresh appends
        self.wake: asyncio.Future | None = None  # set while the stream waits for data at the tail

    def notify(self) -> None:
        """Credit, a seek or the stream's end arrived: the stream looks again (also when at the tail)."""
        self.changed.set()
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(False)

    def give_back(self, n: int) -> None:
        """Return up to n bytes of what this stream holds to the shared budget."""
        n = min(n, self.held)
        self.held -= n
        self._buffer.release(n)

    async def wait(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self.changed.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        self.changed.clear()
