"""The asyncio form of QueueConsumer: the same consumer, its calls run in a worker thread so the event
loop never blocks on the broker (or, embedded, on the engine).

    async with AsyncQueueConsumer("localhost:50051", queue="jobs-workers", topics=["jobs"]) as q:
        async for msg in q:
            await handle(msg.value)
            await msg.ack()
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any

from ..values import AnswerRefused
from .queue_consumer import Message, QueueConsumer


class AsyncMessage:
    """A record held by the consumer: `await` one of ack(), release(), reject()."""

    __slots__ = ("message",)

    def __init__(self, message: Message) -> None:
        self.message = message

    def __getattr__(self, name: str) -> Any:  # topic, partition, offset, delivery_count, key, value, ...
        return getattr(self.message, name)

    async def ack(self) -> bool:
        return await asyncio.to_thread(self.message.ack)

    async def release(self, delay_ms: int = 0, reason: str = "") -> bool:
        return await asyncio.to_thread(self.message.release, delay_ms, reason)

    async def reject(self, reason: str = "") -> bool:
        return await asyncio.to_thread(self.message.reject, reason)

    async def extend(self, lock_ms: int = 0) -> bool:
        return await asyncio.to_thread(self.message.extend, lock_ms)

    def __repr__(self) -> str:
        return repr(self.message)


class AsyncQueueConsumer:
    def __init__(self, broker: Any = "localhost:50051", queue: str = "", topics=(), **options: Any) -> None:
        """The arguments of QueueConsumer. Connecting (declaring the queue) happens on `async with` or
        start()."""
        self._args, self._options = (broker, queue, topics), options
        self.consumer: QueueConsumer | None = None
        self._buffer: deque[AsyncMessage] = deque()

    async def start(self) -> AsyncQueueConsumer:
        if self.consumer is None:
            self.consumer = await asyncio.to_thread(QueueConsumer, *self._args, **self._options)
        return self

    async def receive(
        self, max_messages: int = 1, wait_ms: int | None = None, ack: Iterable[AsyncMessage] = ()
    ) -> list[AsyncMessage]:
        consumer = await self._started()
        got = await asyncio.to_thread(consumer.receive, max_messages, wait_ms, [m.message for m in ack])
        return [AsyncMessage(m) for m in got]

    async def __aiter__(self) -> AsyncIterator[AsyncMessage]:
        consumer = await self._started()
        while not consumer.closed:
            if not self._buffer:
                self._buffer.extend(await self.receive(consumer.prefetch))
                continue
            yield self._buffer.popleft()

    async def ack(self, messages: Iterable[AsyncMessage]) -> list[AnswerRefused]:
        consumer = await self._started()
        return await asyncio.to_thread(consumer.ack, [m.message for m in messages])

    async def release(
        self, messages: Iterable[AsyncMessage], delay_ms: int = 0, reason: str = ""
    ) -> list[AnswerRefused]:
        consumer = await self._started()
        return await asyncio.to_thread(consumer.release, [m.message for m in messages], delay_ms, reason)

    async def reject(self, messages: Iterable[AsyncMessage], reason: str = "") -> list[AnswerRefused]:
        consumer = await self._started()
        return await asyncio.to_thread(consumer.reject, [m.message for m in messages], reason)

    async def close(self) -> None:
        if self.consumer is not None:
            await asyncio.to_thread(self.consumer.close)

    async def _started(self) -> QueueConsumer:
        await self.start()
        assert self.consumer is not None
        return self.consumer

    async def __aenter__(self) -> AsyncQueueConsumer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
