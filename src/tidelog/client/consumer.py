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

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence

import grpc

from ..codec.batch import Record, iter_batches
from ..errors import BrokerUnavailableError, NotLeaderError, RequestTimeoutError, TidelogError
from ..v1 import tidelog_pb2 as pb
from ..wire import framing, methods
from ..wire.statuses import error_from_rpc
from .channel import DEFAULT_TARGET, aio_channel
from .metadata import Metadata
from .security import ClientSecurity

SUBSCRIBE = methods.method("Consumer", "Subscribe").path
GRANT_IDLE_S = 0.005  # a consumer that has handed out everything and hears nothing this long grants it all back
FAILOVER_PAUSE_S = 0.1  # before looking for a partition's leader again (an election takes a moment)
_END = object()
log = logging.getLogger("tidelog.client")


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

    The partition is read from its leader (target may list several brokers). When the leader moves
    (NotLeaderError) or, in a cluster, cannot be reached, the consumer finds the new one and goes on
    from the next offset it has not returned, for up to failover_s; nothing is skipped or repeated.
    """

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        topic: str = "",
        partition: int = 0,
        offset: int | str | None = "earliest",
        *,
        timestamp_ms: int | None = None,
        credit_bytes: int = 8 << 20,
        max_message_bytes: int = 4 << 20,
        copy: bool = True,
        channel=None,
        metadata: Metadata | None = None,
        failover_s: float = 30.0,
        security: ClientSecurity | None = None,
    ) -> None:
        self.target, self.topic, self.partition, self.copy = target, topic, partition, copy
        self.position: int | None = offset if isinstance(offset, int) and not isinstance(offset, bool) else None
        self.high_watermark = -1
        self.failover_s = failover_s
        self._channel = channel  # given: that broker alone (no failover)
        self._own_metadata = metadata is None and channel is None  # a group member shares its own
        self._metadata = Metadata(target, security=security) if self._own_metadata else metadata
        self._pending: list[Record] = []
        self._closed = False
        self._credit_bytes = credit_bytes
        self._max_message_bytes = max_message_bytes
        self._start_position = position_message(offset, timestamp_ms)  # where to resume before any record
        self._failing_since: float | None = None  # first failover of a run without records
        self._address = ""
        self._open()

    def _open(self) -> None:
        """A Subscribe stream to the leader, from the position; its own queues, so that whatever the old
        stream's reader still puts anywhere is never read."""
        self._requests: queue.Queue = queue.Queue()
        self._responses: queue.Queue = queue.Queue()
        self._to_grant = 0
        self._consumed_at = 0.0  # when the last response was handed to the caller
        position = self._start_position if self.position is None else position_message(self.position)
        self._requests.put(
            pb.SubscribeRequest(
                start=pb.SubscribeStart(
                    topic=self.topic,
                    partition=self.partition,
                    position=position,
                    credit_bytes=self._credit_bytes,
                    max_message_bytes=self._max_message_bytes,
                )
            )
        )
        channel = self._channel
        if channel is None:
            assert self._metadata is not None
            try:
                self._address = self._metadata.leader(self.topic, self.partition)
                channel = self._metadata.channel(self._address)
            except TidelogError as exc:  # raised (or followed) by poll(), as a stream's failure is
                self._address = self._metadata.home
                self._call = None
                self._responses.put(exc)
                self._responses.put(_END)
                return
        stub = channel.stream_stream(
            SUBSCRIBE, request_serializer=pb.SubscribeRequest.SerializeToString, response_deserializer=None
        )
        self._call = stub(iter(self._requests.get, _END))
        reader = threading.Thread(
            target=self._read, args=(self._call, self._responses), name="tidelog-consumer", daemon=True
        )
        reader.start()

    def _read(self, call, responses: queue.Queue) -> None:
        try:
            for raw in call:
                responses.put(raw)
        except grpc.RpcError as err:
            if not self._closed:
                responses.put(error_from_rpc(err, self._address or str(self.target)))
        finally:
            responses.put(_END)

    def _fail_over(self, err: TidelogError) -> None:
        """Reopen at the leader (the one named, else looked up again), from the next offset not returned."""
        assert self._metadata is not None
        if self._call is not None:
            self._requests.put(_END)
            self._call.cancel()
        time.sleep(_redirect(err, self._metadata, self.topic, self.partition, self._address))
        log.info("%s[%d]: %s; reading on from %s", self.topic, self.partition, err.message, self.position)
        self._open()

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
            self._failing_since = _follow(item, self._metadata, self._failing_since, self.failover_s)
            if self._failing_since is not None and not self._closed:
                self._fail_over(item)
                return []
            self._responses.put(_END)
            raise item
        records, next_offset, self.high_watermark = _records(item, self.position, self.copy)
        self._grant(len(item))
        self._failing_since = None
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
        self._start_position = position_message(offset, timestamp_ms)
        self._requests.put(pb.SubscribeRequest(seek=self._start_position))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._requests.put(_END)
        if self._call is not None:
            self._call.cancel()
        if self._own_metadata and self._metadata is not None:
            self._metadata.close()

    def __enter__(self) -> PartitionConsumer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncConsumer:
    """The asyncio form of Consumer (it follows the leader the same way):

    async with AsyncConsumer("localhost:50051", "orders", partition=0, offset=0) as c:
        async for rec in c:
            ...
    """

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        topic: str = "",
        partition: int = 0,
        offset: int | str | None = "earliest",
        *,
        timestamp_ms: int | None = None,
        credit_bytes: int = 8 << 20,
        max_message_bytes: int = 4 << 20,
        copy: bool = True,
        failover_s: float = 30.0,
        security: ClientSecurity | None = None,
    ) -> None:
        self.target, self.topic, self.partition, self.copy = target, topic, partition, copy
        self.position: int | None = offset if isinstance(offset, int) and not isinstance(offset, bool) else None
        self.high_watermark = -1
        self.failover_s = failover_s
        self._start_position = position_message(offset, timestamp_ms)
        self._credit_bytes, self._max_message_bytes = credit_bytes, max_message_bytes
        self._metadata = Metadata(target, security=security)  # blocking lookups, run in a worker thread
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._address = ""
        self._call: grpc.aio.StreamStreamCall | None = None
        self._failing_since: float | None = None

    async def _open(self) -> grpc.aio.StreamStreamCall:
        """The Subscribe stream to the leader, opened on first use (iteration or a seek) and after a failover."""
        if self._call is None:
            self._address = await asyncio.to_thread(self._metadata.leader, self.topic, self.partition)
            channel = self._channels.get(self._address)
            if channel is None:
                channel = self._channels[self._address] = aio_channel(self._address, self._metadata.security)
            stub = channel.stream_stream(
                SUBSCRIBE, request_serializer=pb.SubscribeRequest.SerializeToString, response_deserializer=None
            )
            position = self._start_position if self.position is None else position_message(self.position)
            start = pb.SubscribeStart(
                topic=self.topic,
                partition=self.partition,
                position=position,
                credit_bytes=self._credit_bytes,
                max_message_bytes=self._max_message_bytes,
            )
            self._call = stub()
            await self._call.write(pb.SubscribeRequest(start=start))
        return self._call

    async def __aiter__(self) -> AsyncIterator[Record]:
        while True:
            try:
                call = await self._open()
                while True:
                    raw = await call.read()
                    if raw is grpc.aio.EOF:
                        return
                    records, next_offset, self.high_watermark = _records(raw, self.position, self.copy)
                    self._failing_since = None
                    try:
                        await call.write(pb.SubscribeRequest(credit_bytes=len(raw)))
                        ended = False
                    except (grpc.RpcError, asyncio.InvalidStateError):
                        ended = True  # the call ended meanwhile; a failed write hides its status (INTERNAL)
                    for rec in records:
                        self.position = rec.offset + 1
                        yield rec
                    if ended:
                        raise BrokerUnavailableError(f"the subscribe stream to {self._address} ended")
            except grpc.RpcError as err:
                exc = error_from_rpc(err, self._address or str(self.target))
            except TidelogError as err:
                exc = err
            self._failing_since = _follow(exc, self._metadata, self._failing_since, self.failover_s)
            if self._failing_since is None:
                raise exc from None
            if self._call is not None:
                self._call.cancel()
                self._call = None
            await asyncio.sleep(_redirect(exc, self._metadata, self.topic, self.partition, self._address))

    async def seek(self, offset: int | str, timestamp_ms: int | None = None) -> None:
        self.position = offset if isinstance(offset, int) else None
        self._start_position = position_message(offset, timestamp_ms)
        call = await self._open()  # a seek before the first record opens the stream too
        await call.write(pb.SubscribeRequest(seek=self._start_position))

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        for channel in self._channels.values():
            await channel.close()
        self._metadata.close()

    async def __aenter__(self) -> AsyncConsumer:
        await self._open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


def _follow(err: TidelogError, metadata: Metadata | None, since: float | None, within_s: float) -> float | None:
    """When the current run of failovers started, if err is one to follow the leader after (the leader
    moved, or in a cluster a broker is unreachable) and it started less than within_s ago; else None."""
    if metadata is None:
        return None
    moved = isinstance(err, NotLeaderError) or (
        isinstance(err, BrokerUnavailableError | RequestTimeoutError) and bool(metadata.clustered)
    )
    now = time.monotonic()
    since = now if since is None else since
    return since if moved and now - since < within_s else None


def _redirect(err: TidelogError, metadata: Metadata, topic: str, partition: int, address: str) -> float:
    """Note where the partition went; the pause before reopening (none when the leader was named)."""
    if isinstance(err, NotLeaderError):
        metadata.not_leader(topic, partition, err)
        if err.leader_address and metadata.clustered:
            return 0.0
    else:
        metadata.unreachable(address)
    return FAILOVER_PAUSE_S
