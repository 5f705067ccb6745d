"""tidelog.v1.Queue: queues on the log (queues/manager.py) over gRPC. Translation only, plus the one
thing a servicer must do itself: long polls wait on the event loop (woken by the manager), never in a
pool thread, so a thousand waiting consumers hold no threads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from ..engine.async_engine import AsyncEngine
from ..errors import InvalidRequestError, TidelogError
from ..queues.manager import QueueManager
from ..security.authorizer import ANONYMOUS, caller
from ..v1 import tidelog_pb2 as pb
from ..values import Answer, AnswerRefused, QueueConfig, QueueMessage
from ..wire import methods
from ..wire.messages import decode
from ..wire.statuses import error_message
from . import requests, status

KINDS = {pb.ACK: "ack", pb.RELEASE: "release", pb.REJECT: "reject", pb.EXTEND: "extend"}
MAX_RANGE = 100_000  # offsets one answer range may cover
STREAM_BATCH = 500  # records per pushed response, at most
TICK_S = 0.25  # how often ended locks are looked for
QUEUE_THREADS = 4  # the manager serialises its calls: a few threads only keep its lock busy

log = logging.getLogger("tidelog.server")


class QueueService:
    """`manager` is None where queues are not served (a broker of a cluster, for now): every call is
    answered with the error `unavailable()` gives."""

    def __init__(
        self, engine: AsyncEngine, manager: QueueManager | None, unavailable: Callable[[], TidelogError]
    ) -> None:
        self.engine, self.manager, self._unavailable = engine, manager, unavailable
        self._ticker: asyncio.Future[None] | None = None
        # The manager's calls run in threads of their own, not the engine's pool: in a cluster a call
        # holding the manager's lock waits for its write to be replicated, which needs the engine's
        # pool; queue calls queued on that lock must not be the ones holding every pool thread.
        self._pool = ThreadPoolExecutor(QUEUE_THREADS, thread_name_prefix="tidelog-queues")

    async def _offload(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def start(self) -> None:
        """Release ended locks (and dead-letter what they exhaust) even when nobody calls in."""

        async def tick_forever() -> None:
            while True:
                await asyncio.sleep(TICK_S)
                if self.manager is not None:
                    try:
                        await self._offload(self.manager.tick)
                    except TidelogError as exc:  # e.g. the disk is full: the next tick tries again
                        log.warning("releasing ended queue locks failed: %s", exc.message)

        self._ticker = asyncio.ensure_future(tick_forever())

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self._pool.shutdown(wait=False)

    def handler(self) -> grpc.GenericRpcHandler:
        return methods.handlers(
            "Queue",
            {
                "Declare": requests.unary(self.declare),
                "Receive": requests.unary(self.receive),
                "Consume": requests.stream(self.consume),
                "Answer": requests.unary(self.answer),
                "Leave": requests.unary(self.leave),
                "ListQueues": requests.unary(self.list_queues),
                "DescribeQueue": requests.unary(self.describe),
                "DeleteQueue": requests.unary(self.delete),
                "ResetQueue": requests.unary(self.reset),
                "Redrive": requests.unary(self.redrive),
            },
        )

    async def _call(self, context: grpc.aio.ServicerContext, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self._offload(getattr(self._manager(), name), *args, **kwargs)
        except TidelogError as exc:
            await status.abort(context, exc)

    def _manager(self) -> QueueManager:
        if self.manager is None:
            raise self._unavailable()
        return self.manager

    async def declare(self, request: pb.DeclareQueueRequest, context: grpc.aio.ServicerContext) -> pb.QueueSettings:
        config = await self._call(
            context,
            "declare",
            request.queue,
            list(request.topics),
            lock_ms=request.lock_ms,
            max_deliveries=request.max_deliveries,
            dead_letter_topic=request.dead_letter_topic if request.HasField("dead_letter_topic") else None,
            max_in_flight=request.max_in_flight,
            start=request.start or "earliest",
            fifo=request.fifo,
        )
        return settings_message(config)

    async def receive(self, request: pb.ReceiveRequest, context: grpc.aio.ServicerContext) -> pb.ReceiveResponse:
        refused: list[AnswerRefused] = []
        try:
            if request.acks:
                acks = list(expand(request.acks))
                refused = await self._offload(self._manager().ack, request.queue, owned(request.consumer_id), acks)
            got = await self._receive(request.queue, owned(request.consumer_id), request.max_messages, request.wait_ms)
        except TidelogError as exc:
            await status.abort(context, exc)
        return receive_response(got, refused)

    async def _receive(self, queue: str, consumer: str, n: int, wait_ms: int) -> list[QueueMessage]:
        """A long poll: try in the pool at once, then wait here (not in a thread) until the manager says
        something changed, a lock or delay is due, or the time is up."""
        manager = self._manager()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0, wait_ms) / 1000
        woken = asyncio.Event()

        def wake() -> None:
            if not woken.is_set():  # one hop to the loop per wait, not one per change
                loop.call_soon_threadsafe(woken.set)

        def attempt() -> tuple[list[QueueMessage], float]:
            got = manager.receive(queue, consumer, n, 0)
            return got, 0.0 if got else manager.next_due_s(queue)  # in the pool: it takes the lock

        manager.on_wake(wake)
        try:
            while True:
                if self.manager is not manager:  # the queues moved to another broker (a cluster)
                    raise self._unavailable()
                woken.clear()
                got, pause = await self._offload(attempt)
                left = deadline - loop.time()
                if got or left <= 0:
                    return got
                try:
                    await asyncio.wait_for(woken.wait(), min(left, pause))
                except asyncio.TimeoutError:
                    pass
        finally:
            manager.off_wake(wake)

    async def consume(
        self, raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReceiveResponse]:
        """Push records while the consumer has credit; its credit messages arrive beside."""
        try:
            first = decode(pb.ConsumeQueueRequest, await anext(raw_requests))
            if first.WhichOneof("kind") != "start":
                raise InvalidRequestError("a Consume stream starts with `start`")
            start = first.start
            self._manager().config(start.queue)
        except StopAsyncIteration:
            return
        except TidelogError as exc:
            yield pb.ReceiveResponse(error=error_message(exc))
            return
        credit = [start.credit]
        consumer = owned(start.consumer_id)
        more = asyncio.Event()

        async def read_credit() -> None:
            async for raw in raw_requests:
                msg = decode(pb.ConsumeQueueRequest, raw)
                if msg.WhichOneof("kind") == "credit":
                    credit[0] += msg.credit
                    more.set()

        reader = asyncio.ensure_future(read_credit())
        try:
            while not reader.done() or credit[0] > 0:
                if credit[0] <= 0:
                    more.clear()
                    waiter = asyncio.ensure_future(more.wait())
                    await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    continue
                got = await self._receive(start.queue, consumer, min(credit[0], STREAM_BATCH), 1000)
                if got:
                    credit[0] -= len(got)
                    yield receive_response(got)
        except TidelogError as exc:
            yield pb.ReceiveResponse(error=error_message(exc))
        finally:
            reader.cancel()

    async def answer(self, request: pb.AnswerRequest, context: grpc.aio.ServicerContext) -> pb.AnswerResponse:
        kind = KINDS.get(request.kind)
        try:
            if kind is None:
                raise InvalidRequestError(f"unknown answer kind {request.kind}")
            answers = list(expand(request.ranges))
        except TidelogError as exc:
            await status.abort(context, exc)
        options: dict[str, Any] = {}
        if kind == "release":
            options = {"delay_ms": request.delay_ms, "reason": request.reason}
        elif kind == "reject":
            options = {"reason": request.reason}
        elif kind == "extend":
            options = {"lock_ms": request.lock_ms}
        refused = await self._call(context, kind, request.queue, owned(request.consumer_id), answers, **options)
        return pb.AnswerResponse(refused=[refused_message(r) for r in refused])

    async def leave(self, request: pb.LeaveQueueRequest, context: grpc.aio.ServicerContext) -> pb.LeaveQueueResponse:
        released = await self._call(context, "leave", request.queue, owned(request.consumer_id))
        return pb.LeaveQueueResponse(released=released)

    async def list_queues(
        self, request: pb.ListQueuesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListQueuesResponse:
        return pb.ListQueuesResponse(queues=await self._call(context, "queues"))

    async def describe(
        self, request: pb.DescribeQueueRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueueDescription:
        d = await self._call(context, "describe", request.queue)
        return pb.QueueDescription(
            name=d.name,
            settings=settings_message(d.config),
            partitions=[
                pb.QueuePartitionState(
                    topic=p.topic, partition=p.partition, start=p.start, log_end=p.log_end, in_flight=p.in_flight,
                    available=p.available, delayed=p.delayed, unread=p.unread, oldest_unacked_ms=p.oldest_unacked_ms,
                )
                for p in d.partitions
            ],
            totals=d.totals,
        )  # fmt: skip

    async def delete(self, request: pb.DeleteQueueRequest, context: grpc.aio.ServicerContext) -> pb.DeleteQueueResponse:
        await self._call(context, "delete", request.queue)
        return pb.DeleteQueueResponse()

    async def reset(self, request: pb.ResetQueueRequest, context: grpc.aio.ServicerContext) -> pb.ResetQueueResponse:
        to: Any = request.to or {(o.topic, o.partition): o.offset for o in request.offsets}
        await self._call(context, "reset", request.queue, to)
        return pb.ResetQueueResponse()

    async def redrive(self, request: pb.RedriveRequest, context: grpc.aio.ServicerContext) -> pb.RedriveResponse:
        moved = await self._call(context, "redrive", request.source, request.target, request.limit)
        return pb.RedriveResponse(moved=moved)


def owned(consumer_id: str) -> str:
    """A consumer id as the broker keys it. With authentication, the caller's principal comes first: a
    user who learns another's id (they are chosen by clients, and never shown) acts as a different
    consumer, and cannot answer for its deliveries or release them. Without, the id as given."""
    who = caller.get()
    return consumer_id if who == ANONYMOUS or not consumer_id else f"{who}/{consumer_id}"


def expand(ranges: Iterable[pb.AnswerRange]) -> Iterable[Answer]:
    for r in ranges:
        if r.last_offset < r.first_offset or r.last_offset - r.first_offset >= MAX_RANGE:
            raise InvalidRequestError(f"answer range {r.first_offset}..{r.last_offset} is empty or too long")
        for offset in range(r.first_offset, r.last_offset + 1):
            yield Answer(r.topic, r.partition, offset, r.delivery_count)


def settings_message(c: QueueConfig) -> pb.QueueSettings:
    return pb.QueueSettings(
        topics=c.topics,
        lock_ms=c.lock_ms,
        max_deliveries=c.max_deliveries,
        dead_letter_topic=c.dead_letter_topic,
        max_in_flight=c.max_in_flight,
        created_ms=c.created_ms,
        fifo=c.fifo,
    )


def receive_response(got: list[QueueMessage], refused: Iterable[AnswerRefused] = ()) -> pb.ReceiveResponse:
    """Records added in place (`records.add`): building a message per record and handing over a list
    costs 2.4x as much per record (measured: 4.8 against 2.0 us for 1 KiB records)."""
    response = pb.ReceiveResponse(refused=[refused_message(r) for r in refused])
    add = response.records.add
    for m in got:
        r = add(
            topic=m.topic,
            partition=m.partition,
            offset=m.offset,
            delivery_count=m.delivery_count,
            lock_until_ms=m.lock_until_ms,
            timestamp_ms=m.timestamp,
        )
        if m.key is not None:
            r.key = m.key
        if m.value is not None:
            r.value = m.value
        for k, v in m.headers:
            h = r.headers.add(key=k)
            if v is not None:
                h.value = v
    return response


def refused_message(r: AnswerRefused) -> pb.RefusedAnswer:
    return pb.RefusedAnswer(topic=r.topic, partition=r.partition, offset=r.offset, reason=r.why)
