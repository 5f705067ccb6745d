"""The one bridge between the synchronous Engine and asyncio (the server and async embedders).

Every engine call that may block (fsync, file I/O, page faults on a cold map, waiting) runs in a
bounded thread pool, never on the event loop. Waiting for new data does not hold a thread: the
partition log calls a listener when its high watermark moves, and the listener wakes the waiting
coroutines through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from .engine import Engine

T = TypeVar("T")


class AsyncEngine:
    def __init__(self, engine: Engine, io_threads: int = 16) -> None:
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="tidelog-io")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[tuple[str, int], set[asyncio.Future]] = {}
        self._listeners: dict[tuple[str, int], Callable[[], None]] = {}
        self.stopping = False
        """Set at shutdown: waits return at once, so long polls and subscriptions end promptly."""

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking engine call in the pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def wait_for_data(self, topic: str, partition: int, offset: int, timeout_s: float) -> bool:
        """Until the partition's high watermark passes offset (True) or the timeout (False)."""
        self._loop = asyncio.get_running_loop()
        if self.stopping:
            return False
        key = (topic, partition)
        fut = self._loop.create_future()
        self._waiters.setdefault(key, set()).add(fut)
        if key not in self._listeners:
            listener = functools.partial(self._notify, key)
            self.engine.add_listener(topic, partition, listener)
            self._listeners[key] = listener
        try:
            if self.engine.high_watermark(topic, partition) > offset:
                return True
            try:
                await asyncio.wait_for(fut, timeout_s)
            except asyncio.TimeoutError:
                return False
            return self.engine.high_watermark(topic, partition) > offset
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
                self.engine.remove_listener(topic, partition, listener)
            except Exception:  # the topic may be gone; nothing to unregister then
                pass
        self._listeners.clear()
        self._pool.shutdown(wait=True)
