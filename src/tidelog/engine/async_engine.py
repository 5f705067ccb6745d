"""The engine's one async API (the server and async embedders): `await engine.fetch(...)`.

Every engine call that may block (fsync, file I/O, page faults on a cold map, a partition lock held
across a segment roll's fsyncs) runs in a bounded thread pool, never on the event loop; each is a
named method here, so readers and tools see what the server asks of the engine. Waiting for new data
does not hold a thread: the partition log calls a listener when its high watermark moves, and the
listener wakes the waiting coroutines through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ..config import EngineConfig
from ..errors import OffsetOutOfRangeError, TidelogError
from ..values import PartitionOffsets, ProduceResult, TopicDescription
from .engine import Admit, Engine
from .results import FetchResult

if TYPE_CHECKING:
    from typing_extensions import Buffer

T = TypeVar("T")


class AsyncEngine:
    def __init__(self, engine: Engine, io_threads: int = 16) -> None:
        self._engine = engine
        self._pool = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="tidelog-io")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[tuple[str, int], set[asyncio.Future]] = {}
        self._listeners: dict[tuple[str, int], Callable[[], None]] = {}
        self.stopping = False
        """Set at shutdown: waits return at once, so long polls and subscriptions end promptly."""

    @property
    def config(self) -> EngineConfig:
        return self._engine.config

    def clock(self) -> int:
        """The engine's clock in ms (never blocks)."""
        return self._engine.clock()

    def has_topic(self, name: str) -> bool:
        """Whether the topic exists here (a dict lookup, without the engine's lock: never blocks)."""
        return self._engine.has_topic(name)

    def high_watermark(self, topic: str, partition: int) -> int:
        """Read without the partition lock (never blocks)."""
        return self._engine.high_watermark(topic, partition)

    # -- topics ------------------------------------------------------------------------------------
    async def create_topic(self, name: str, partitions: int = 1, **settings: Any) -> TopicDescription:
        """A topic; settings not given come from the engine's topic defaults."""
        return await self._in_pool(self._engine.create_topic, name, partitions, **settings)

    async def alter_topic(
        self, name: str, partitions: int | None = None, overrides: dict[str, Any] | None = None
    ) -> TopicDescription:
        """More partitions and/or new settings (Engine.alter_topic)."""
        return await self._in_pool(self._engine.alter_topic, name, partitions, overrides)

    async def delete_topic(self, name: str) -> None:
        await self._in_pool(self._engine.delete_topic, name)

    async def list_topics(self) -> list[str]:
        return await self._in_pool(self._engine.list_topics)

    async def describe(self, name: str) -> TopicDescription:
        return await self._in_pool(self._engine.describe, name)

    # -- produce -----------------------------------------------------------------------------------
    async def append_many(
        self, requests: Sequence[tuple[str, int, Buffer]], admit: Admit | None = None
    ) -> list[ProduceResult | TidelogError]:
        return await self._in_pool(self._engine.append_many, requests, admit)

    def try_append(self, topic: str, partition: int, data: Buffer) -> ProduceResult | TidelogError | None:
        """Engine.try_append on the loop (it never blocks): the result, the error that refused the data,
        or None when the append must go to the pool (append_many)."""
        try:
            return self._engine.try_append(topic, partition, data)
        except TidelogError as exc:
            return exc

    async def produce(
        self,
        topic: str,
        values: Sequence,
        keys: Sequence | None = None,
        headers: Sequence | None = None,
        *,
        partition: int | None = None,
        timestamps: Sequence[int] | None = None,
        admit: Admit | None = None,
    ) -> list[ProduceResult]:
        return await self._in_pool(
            self._engine.produce, topic, values, keys, headers, partition=partition, timestamps=timestamps, admit=admit
        )

    # -- fetch and offsets -------------------------------------------------------------------------
    async def fetch(
        self, topic: str, partition: int, offset: int, max_bytes: int, *, at_tail: bool = False
    ) -> FetchResult:
        """Whole batches from `offset`. at_tail: the caller was just woken by an append, so the bytes
        sit in the page cache; the read is tried on the loop (latency) if the partition lock is free
        at once, and goes to the pool otherwise."""
        if at_tail:
            result = self._engine.try_fetch(topic, partition, offset, max_bytes)
            if result is not None:
                return result
        return await self._in_pool(self._engine.fetch, topic, partition, offset, max_bytes)

    async def fetch_many(
        self, wanted: Sequence[tuple[str, int, int, int]], max_bytes: int
    ) -> list[FetchResult | PartitionOffsets | TidelogError]:
        """Several partitions' fetches in one trip to the pool (a Kafka consumer's fetch names every
        partition it reads from this broker): for each (topic, partition, offset, its max bytes), whole
        batches from offset, up to its max and what is left of max_bytes (at least one batch while any is
        left); a partition at its high watermark, or past max_bytes, gets its offsets only; an error of
        one partition is its item."""
        return await self._in_pool(self._fetch_many, wanted, max_bytes)

    def _fetch_many(
        self, wanted: Sequence[tuple[str, int, int, int]], max_bytes: int
    ) -> list[FetchResult | PartitionOffsets | TidelogError]:
        out: list[FetchResult | PartitionOffsets | TidelogError] = []
        left = max_bytes
        for topic, partition, offset, partition_max in wanted:
            try:
                if left <= 0 or offset == self._engine.high_watermark(topic, partition):
                    offsets = self._engine.list_offsets(topic, partition)
                    if not offsets.log_start <= offset <= offsets.high_watermark:
                        raise OffsetOutOfRangeError(
                            f"offset {offset} is out of range: {offsets.log_start} to {offsets.high_watermark}",
                            log_start=offsets.log_start,
                            log_end=offsets.high_watermark,
                        )
                    out.append(offsets)
                    continue
                result = self._engine.fetch(topic, partition, offset, max(min(partition_max, left), 1))
            except TidelogError as exc:
                out.append(exc)
                continue
            left -= len(result.data)
            out.append(result)
        return out

    async def list_offsets(self, topic: str, partition: int) -> PartitionOffsets:
        return await self._in_pool(self._engine.list_offsets, topic, partition)

    @overload
    async def offset_at(self, topic: str, partition: int, at: str) -> int: ...
    @overload
    async def offset_at(self, topic: str, partition: int, at: int) -> int | None: ...
    async def offset_at(self, topic: str, partition: int, at: int | str) -> int | None:
        """The offset for "earliest", "latest" or a timestamp in ms (None: every record is older; never
        for "earliest" or "latest", an offset or an error)."""
        return await self._in_pool(self._engine.list_offsets, topic, partition, at)

    async def record_timestamp(self, topic: str, partition: int, offset: int) -> int | None:
        """The timestamp of the record at offset (None past the high watermark)."""
        return await self._in_pool(self._engine.record_timestamp, topic, partition, offset)

    async def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """Drop whole segments below before_offset (Engine.delete_records); segments deleted."""
        return await self._in_pool(self._engine.delete_records, topic, partition, before_offset)

    async def offload(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work built on the engine outside it (the group coordinator, decoding records)
        in the same bounded pool."""
        return await self._in_pool(fn, *args, **kwargs)

    async def _in_pool(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def wait_for_data(
        self, topic: str, partition: int, offset: int, timeout_s: float, wake: asyncio.Future | None = None
    ) -> bool:
        """Until the partition's high watermark passes offset (True) or the timeout (False). wake: a
        future of the caller's that something else may resolve to end the wait early (one future per
        wait, rather than a second task raced against this one)."""
        self._loop = asyncio.get_running_loop()
        if self.stopping:
            return False
        key = (topic, partition)
        fut = wake if wake is not None else self._loop.create_future()
        self._waiters.setdefault(key, set()).add(fut)
        if key not in self._listeners:
            listener = functools.partial(self._notify, key)
            self._engine.add_listener(topic, partition, listener)
            self._listeners[key] = listener
        try:
            if self._engine.high_watermark(topic, partition) > offset:
                return True
            try:
                await asyncio.wait_for(fut, timeout_s)
            except asyncio.TimeoutError:
                return False
            return self._engine.high_watermark(topic, partition) > offset
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(fut)

    def _notify(self, key: tuple[str, int]) -> None:
        # Called by the partition log under its lock, from any thread: hand over to the loop.
        if self._waiters.get(key) and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake, key)

    def _wake(self, key: tuple[str, int]) -> None:
        for fut in list(self._waiters.get(key, ())):
            if not fut.done():
                fut.set_result(True)

    def wake_all(self) -> None:
        """Release every waiter and make later waits return at once (shutdown)."""
        self.stopping = True
        for key in list(self._waiters):
            self._wake(key)

    def close(self) -> None:
        for (topic, partition), listener in self._listeners.items():
            try:
                self._engine.remove_listener(topic, partition, listener)
            except Exception:  # the topic may be gone; nothing to unregister then
                pass
        self._listeners.clear()
        self._pool.shutdown(wait=True)
