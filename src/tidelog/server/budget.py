"""Byte budgets shared by streams: produce read-ahead and bytes sent to subscribers, bounded by a setting.

A budget counts bytes held against a limit. Produce streams wait in `acquire` until the bytes fit;
subscriptions reserve what fits with `take` and wait for `released` when nothing does. `release`
never blocks, so a stream's cleanup can give back what it holds even while it is being cancelled.
Event-loop only (no locks: every call runs on the server's loop).
"""

from __future__ import annotations

import asyncio
import collections


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    @property
    def room(self) -> int:
        """Bytes that fit before the limit (negative when over it)."""
        return self.limit - self.used

    async def acquire(self, n: int) -> None:
        """Hold n bytes, waiting while they do not fit. A request larger than the whole budget still
        passes when nothing else is held, so one oversized message cannot wedge its stream."""
        while not (self.used == 0 or self.used + n <= self.limit):
            await self.released()
        self.used += n

    def take(self, n: int) -> None:
        """Hold n bytes now, past the limit if need be (the caller has checked `room`)."""
        self.used += n

    def release(self, n: int) -> None:
        self.settle(n, 0)

    def settle(self, reserved: int, used: int) -> None:
        """Replace a reservation of `reserved` bytes by the `used` bytes it turned into (more or less)."""
        self.used += used - reserved
        assert self.used >= 0, f"released more than was held ({self.used})"
        if used < reserved and self.used < self.limit:
            while self._waiters:  # each waiter rechecks what it needs
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)

    async def released(self) -> None:
        """Return after the next release."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
