"""Consumers of one partition over the streaming Subscribe RPC: a sync iterator and an asyncio one.

The broker pushes whole batches as they arrive, never more bytes than the credit granted; the
consumer grants back what it has handed to the caller, so at most `credit_bytes` wait in memory.
Grants go out in chunks of half the window, and all at once when nothing has arrived for
GRANT_IDLE_S: a broker that caps credit below half the window (max_subscribe_credit_bytes), or whose
subscribe buffer is full, waits for credit that a half-window rule alone would never send.
Records come in offset order, from the starting position (an offset, "earliest", "latest" or a
timestamp), and `seek()` moves the position in-band without a new stream.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator

import grpc

from ..codec.batch import Record, iter_batches
from ..errors import TidelogError
from ..v1 import tidelog_pb2 as pb
from ..wire import framing, methods
from ..wire.statuses import error_from_rpc
from .channel import DEFAULT_TARGET, aio_channel, sync_channel

SUBSCRIBE = methods.method("Consumer", "Subscribe").path
GRANT_IDLE_S = 0.005  # a consumer that has handed out everything and hears nothing this long grants it all back
_END = object()


def position_message(offset: int | str | None = None, timestamp_ms: int | None = None) -> pb.Position:
    pos = pb.Position()
    if timestamp_ms is not None:
        pos.timestamp_ms = timestamp_ms
    elif offset in (None, "earliest"):
        pos.boundary = pb.EARLIEST
    elif offset == "latest":
        pos.boundary = pb.LATEST
    elif isinstance(offset, int) and not isinstance(offset, bool):
        pos.offset = offset
    else:
        raise ValueError(f"offset must be an int, 'earliest' or 'latest', not {offset!r}")
    return pos


def _records(raw: bytes, position: int | None, copy: bool) -> tuple[list[Record], int, int]:
    """Records at or after position from one SubscribeResponse; (records, next offset, high watermark).

    A response that does not hold `position` was sent for a position before a seek: it is dropped.
    """
    msg = framing.parse_subscribe_response(raw)
    out: list[Record] = []
    for i, batch in enumerate(iter_batches(msg.batches)):
        if i == 0 and position is not None and not batch.base_offset <= position < msg.next_offset:
            return [], msg.next_offset, msg.high_watermark
        out += batch.records(position or 0, copy)
    return out, msg.next_offset, msg.high_watermark


class PartitionConsumer:
    """Records of one partition, in order. Iterate it, or call poll(timeout_s).

    for rec in Consumer("localhost:50051", "orders", partition=0, offset=0):
        ...
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        topic: str = "",
        partition: int = 0,
        offset: int | str | None = "earliest",
        *,
        timestamp_ms: int | None = None,
        credit_bytes: int = 8 << 20,
        max_message_bytes: int = 4 << 20,
        copy: bool = True,
        channel=None,
    ) -> None:
        self.target, self.topic, self.partition, self.copy = target, topic, partition, copy
        self.position: int | None = offset if isinstance(offset, int) and not isinstance(offset, bool) else None
        self.high_watermark = -1
        self._own_channel = channel is None  # a group member shares one channel among its partitions
        self._channel = sync_channel(target) if channel is None else channel
        self._requests: queue.Queue = queue.Queue()
        self._responses: queue.Queue = queue.Queue()
        self._pending: list[Record] = []
        self._closed = False
        self._credit_bytes = credit_bytes
        self._to_grant = 0
        self._consumed_at = 0.0  # when the last response was handed to the caller
        self._requests.put(
            pb.SubscribeRequest(
                start=pb.SubscribeStart(
                    topic=topic,
                    partition=partition,
                    position=position_message(offset, timestamp_ms),
                    credit_bytes=credit_bytes,
                    max_message_bytes=max_message_bytes,
                )
            )
        )
        stub = self._channel.stream_stream(
            SUBSCRIBE, request_serializer=pb.SubscribeRequest.SerializeToString, response_deserializer=None
        )
        self._call = stub(iter(self._requests.get, _END))
        self._reader = threading.Thread(target=self._read, name="tidelog-consumer", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for raw in self._call:
                self._responses.put(raw)
        except grpc.RpcError as err:
            if not self._closed:
                self._responses.put(error_from_rpc(err, self.target))
        finally:
            self._responses.put(_END)

    def poll(self, timeout_s: float | None = None) -> list[Record]:
        """The records that arrived (waiting up to timeout_s for some); [] on timeout."""
        if self._pending:
            out, self._pending = self._pending, []
            return out
        try:
            item = self._next_response(timeout_s)
        except queue.Empty:
            return []
        if item is _END:
            self._responses.put(_END)
            raise StopIteration
        if isinstance(item, TidelogError):
            self._responses.put(_END)
            raise item
        records, next_offset, self.high_watermark = _records(item, self.position, self.copy)
        self._grant(len(item))
        if records:
            self.position = records[-1].offset + 1
        return records

    def _next_response(self, timeout_s: float | None):
        """The next response, waiting up to timeout_s (queue.Empty after it). Credit not yet granted is
        granted once nothing has arrived for GRANT_IDLE_S: the broker may be waiting for exactly that."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._to_grant:
            grant_at = self._consumed_at + GRANT_IDLE_S
            wait = grant_at - time.monotonic() if deadline is None else min(grant_at, deadline) - time.monotonic()
            try:
                return self._responses.get(timeout=max(wait, 0))
            except queue.Empty:
                if time.monotonic() >= grant_at:
                    self._requests.put(pb.SubscribeRequest(credit_bytes=self._to_grant))
                    self._to_grant = 0
                else:  # the caller's deadline came first
                    raise
        return self._responses.get(timeout=None if deadline is None else max(deadline - time.monotonic(), 0))

    def _grant(self, consumed: int) -> None:
        """Hand credit back in chunks (half the window): one message per few responses, not per response."""
        self._consumed_at = time.monotonic()
        self._to_grant += consumed
        if self._to_grant >= self._credit_bytes // 2:
            self._requests.put(pb.SubscribeRequest(credit_bytes=self._to_grant))
            self._to_grant = 0

    def __iter__(self) -> Iterator[Record]:
        while True:
            try:
                records = self.poll(None)
            except StopIteration:
                return
            yield from records

    def seek(self, offset: int | str, timestamp_ms: int | None = None) -> None:
        """Continue from another position (records already received for the old one are dropped)."""
        self._pending = []
        self.position = offset if isinstance(offset, int) else None
        self._requests.put(pb.SubscribeRequest(seek=position_message(offset, timestamp_ms)))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._requests.put(_END)
        self._call.cancel()
        if self._own_channel:
            self._channel.close()

    def __enter__(self) -> PartitionConsumer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncConsumer:
    """The asyncio form of Consumer:

    async with AsyncConsumer("localhost:50051", "orders", partition=0, offset=0) as c:
        async for rec in c:
            ...
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        topic: str = "",
        partition: int = 0,
        offset: int | str | None = "earliest",
        *,
        timestamp_ms: int | None = None,
        credit_bytes: int = 8 << 20,
        max_message_bytes: int = 4 << 20,
        copy: bool = True,
    ) -> None:
        self.target, self.topic, self.partition, self.copy = target, topic, partition, copy
        self.position: int | None = offset if isinstance(offset, int) and not isinstance(offset, bool) else None
        self.high_watermark = -1
        self._start = pb.SubscribeRequest(
            start=pb.SubscribeStart(
                topic=topic,
                partition=partition,
                position=position_message(offset, timestamp_ms),
                credit_bytes=credit_bytes,
                max_message_bytes=max_message_bytes,
            )
        )
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.StreamStreamCall | None = None

    async def _open(self) -> grpc.aio.StreamStreamCall:
        """The Subscribe stream, opened on first use (iteration or a seek)."""
        if self._call is None:
            self._channel = aio_channel(self.target)
            stub = self._channel.stream_stream(
                SUBSCRIBE, request_serializer=pb.SubscribeRequest.SerializeToString, response_deserializer=None
            )
            self._call = stub()
            await self._call.write(self._start)
        return self._call

    async def __aiter__(self) -> AsyncIterator[Record]:
        call = await self._open()
        try:
            while True:
                raw = await call.read()
                if raw is grpc.aio.EOF:
                    return
                records, next_offset, self.high_watermark = _records(raw, self.position, self.copy)
                await call.write(pb.SubscribeRequest(credit_bytes=len(raw)))
                for rec in records:
                    self.position = rec.offset + 1
                    yield rec
        except grpc.RpcError as err:
            raise error_from_rpc(err, self.target) from None

    async def seek(self, offset: int | str, timestamp_ms: int | None = None) -> None:
        self.position = offset if isinstance(offset, int) else None
        call = await self._open()  # a seek before the first record opens the stream too
        await call.write(pb.SubscribeRequest(seek=position_message(offset, timestamp_ms)))

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> AsyncConsumer:
        await self._open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
