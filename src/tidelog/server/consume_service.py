"""tidelog.v1.Consumer: long-poll fetch, credit-based streaming subscribe, and a per-record fetch.

Responses carrying batches are framed by hand (codec.protowire): the segment's bytes are copied
once, out of the map into the response, and never decoded or re-encoded. A subscription never sends
more than the credit the client granted (at least one whole batch once it has any credit), so a
consumer that stops reading costs the broker nothing but the stream.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from ..broker.async_engine import AsyncEngine
from ..codec import protowire
from ..config import ServerConfig
from ..errors import EngineClosedError, InvalidRequestError, OffsetOutOfRangeError, TidelogError
from ..v1 import tidelog_pb2 as pb
from . import requests, status

SERVICE = "tidelog.v1.Consumer"
IDLE_WAKE_S = 1.0  # a waiting subscription re-checks its stream at least this often


def check_timestamp(timestamp_ms: int) -> None:
    """The engine reads -1 and -2 as latest and earliest: a negative time on the wire must not."""
    if timestamp_ms < 0:
        raise InvalidRequestError(f"timestamp_ms must be >= 0, got {timestamp_ms}")


class ConsumeService:
    def __init__(self, engine: AsyncEngine, config: ServerConfig) -> None:
        self.engine = engine
        self.config = config

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Fetch": requests.unary(self.fetch, pb.FetchRequest, None),
            "FetchRecords": requests.unary(self.fetch_records, pb.FetchRequest,
                                           pb.FetchRecordsResponse.SerializeToString),
            "Subscribe": grpc.stream_stream_rpc_method_handler(
                self.subscribe, request_deserializer=None, response_serializer=None),
        })

    async def resolve(self, topic: str, partition: int, position: pb.Position) -> int:
        """An offset for a Position: an offset (checked against the log's range now, so a seek that
        the client follows by closing its stream still gets its answer), a boundary, or the first
        record at a time."""
        engine = self.engine.engine
        kind = position.WhichOneof("kind")
        if kind == "offset":
            # in the pool: the partition lock can be held across a segment roll's fsyncs
            offsets = await self.engine.run(engine.list_offsets, topic, partition)
            if not offsets.log_start <= position.offset <= offsets.high_watermark:
                raise OffsetOutOfRangeError(
                    f"offset {position.offset} is out of range; valid offsets are {offsets.log_start} to "
                    f"{offsets.high_watermark}", log_start=offsets.log_start, log_end=offsets.high_watermark,
                    offset=position.offset)
            return position.offset
        if kind == "timestamp_ms":
            check_timestamp(position.timestamp_ms)
            found = await self.engine.run(engine.list_offsets, topic, partition, position.timestamp_ms)
            return found if found is not None else engine.list_offsets(topic, partition, "latest")
        boundary = "latest" if kind == "boundary" and position.boundary == pb.LATEST else "earliest"
        return await self.engine.run(engine.list_offsets, topic, partition, boundary)

    async def _long_poll(self, request: pb.FetchRequest):
        """Fetch, waiting up to max_wait_ms for at least min_bytes (or any data when min_bytes is 0)."""
        engine = self.engine.engine
        max_bytes = request.max_bytes or self.config.default_fetch_bytes
        wait_s = min(max(request.max_wait_ms, 0), self.config.max_fetch_wait_ms) / 1000
        deadline = time.monotonic() + wait_s
        want = max(request.min_bytes, 1)
        while True:
            result = await self.engine.run(engine.fetch, request.topic, request.partition, request.offset, max_bytes)
            left = deadline - time.monotonic()
            if len(result.data) >= want or left <= 0 or len(result.data) >= max_bytes or self.engine.stopping:
                return result
            await self.engine.wait_for_data(request.topic, request.partition, result.next_offset, left)

    async def fetch(self, request: pb.FetchRequest, context) -> bytes:
        try:
            result = await self._long_poll(request)
        except TidelogError as exc:
            await status.abort(context, exc)
        return protowire.encode_fetch_response(request.topic, request.partition, result.next_offset,
                                               result.high_watermark, result.log_start, result.data)

    async def fetch_records(self, request: pb.FetchRequest, context) -> pb.FetchRecordsResponse:
        try:
            result = await self._long_poll(request)
            # Decoding records into messages costs CPU in proportion to records and headers (a batch
            # of tiny headers is millions of objects): the I/O pool does it, not the event loop.
            return await self.engine.run(_records_response, result)
        except TidelogError as exc:
            await status.abort(context, exc)

    async def subscribe(self, request_iterator, context):
        request_iterator = requests.decoded(pb.SubscribeRequest, request_iterator)
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
        sub = _Subscription(start.credit_bytes)
        try:
            sub.offset = await self.resolve(topic, partition, start.position)
        except TidelogError as exc:
            await status.abort(context, exc)
        limit = min(start.max_message_bytes or self.config.max_subscribe_message_bytes,
                    self.config.max_subscribe_message_bytes)
        control = asyncio.create_task(self._control(request_iterator, sub, topic, partition))
        engine = self.engine.engine
        try:
            while not sub.closed:
                if self.engine.stopping:
                    await status.abort(context, EngineClosedError("the broker is shutting down; reconnect later"))
                if sub.credit <= 0:
                    await sub.wait(IDLE_WAKE_S)
                    continue
                generation = sub.generation
                try:
                    if sub.at_tail:
                        # Woken by an append: the bytes were just written and sit in the page cache,
                        # so reading them cannot block; skip the hop to the I/O pool (latency).
                        result = engine.fetch(topic, partition, sub.offset, max(1, min(sub.credit, limit)))
                    else:
                        result = await self.engine.run(engine.fetch, topic, partition, sub.offset,
                                                       max(1, min(sub.credit, limit)))
                except TidelogError as exc:
                    await status.abort(context, exc)
                sub.at_tail = False
                if generation != sub.generation:
                    continue  # a seek arrived while reading: serve from the new position
                if result.data:
                    sub.credit -= len(result.data)
                    sub.offset = result.next_offset
                    yield protowire.encode_subscribe_response(result.next_offset, result.high_watermark,
                                                              result.log_start, result.data)
                else:
                    waiter = asyncio.ensure_future(
                        self.engine.wait_for_data(topic, partition, sub.offset, IDLE_WAKE_S))
                    changed = asyncio.ensure_future(sub.wait(IDLE_WAKE_S))
                    await asyncio.wait({waiter, changed}, return_when=asyncio.FIRST_COMPLETED)
                    sub.at_tail = waiter.done() and not waiter.cancelled() and waiter.result()
                    waiter.cancel()
                    changed.cancel()
            if sub.error is not None:
                await status.abort(context, sub.error)
        finally:
            control.cancel()

    async def _control(self, request_iterator, sub: "_Subscription", topic: str, partition: int) -> None:
        """Apply the client's in-band credit grants and seeks; the stream's end closes the subscription."""
        try:
            async for request in request_iterator:
                kind = request.WhichOneof("kind")
                if kind == "credit_bytes":
                    sub.credit += request.credit_bytes
                elif kind == "seek":
                    sub.offset = await self.resolve(topic, partition, request.seek)
                    sub.generation += 1
                else:
                    raise InvalidRequestError("after SubscribeStart, send only credit_bytes or seek")
                sub.changed.set()
        except TidelogError as exc:
            sub.error = exc
        except (asyncio.CancelledError, grpc.RpcError):
            pass
        finally:
            sub.closed = True
            sub.changed.set()


def _records_response(result) -> pb.FetchRecordsResponse:
    response = pb.FetchRecordsResponse(next_offset=result.next_offset, high_watermark=result.high_watermark)
    for rec in result:
        out = response.records.add(offset=rec.offset, timestamp_ms=rec.timestamp)
        if rec.key is not None:
            out.key = rec.key
        if rec.value is not None:
            out.value = rec.value
        for key, value in rec.headers:
            header = out.headers.add(key=key)
            if value is not None:
                header.value = value
    return response


class _Subscription:
    """Mutable state of one Subscribe stream (touched only on the event loop)."""

    def __init__(self, credit: int) -> None:
        self.credit = credit
        self.offset = 0
        self.generation = 0
        self.closed = False
        self.error: TidelogError | None = None
        self.changed = asyncio.Event()
        self.at_tail = False  # the last wait ended because new records were appended

    async def wait(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self.changed.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        self.changed.clear()
