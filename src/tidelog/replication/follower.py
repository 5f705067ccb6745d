"""A follower's copy loop for one partition: check its log against the leader's by leader epoch
(truncating what diverged), then fetch and append what the leader has, forever or until its role ends.

Truncation follows Kafka's KIP-101/279, never the high watermark: the follower asks the leader where
its own newest epoch ends in the leader's log, cuts its log to the smaller of that and where the
epoch ends locally, and asks again until the newest local epoch is one the leader agrees on. Cutting
to the local high watermark instead would drop records the leader acknowledged, or keep ones it never
had (the bug KIP-101 fixed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..errors import FencedLeaderEpochError, NotLeaderError, TidelogError, UnknownLeaderEpochError

log = logging.getLogger("tidelog.replication")

BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0)
STOP_WAIT_S = 2.0


class LeaderLink(Protocol):
    """How a follower reaches its leader (the server's gRPC streams)."""

    async def epoch_end_offset(
        self, topic: str, partition: int, leader_epoch: int, requested_epoch: int
    ) -> tuple[int, int]: ...

    async def fetch(self, topic: str, partition: int, leader_epoch: int, fetch_offset: int) -> tuple[bytes, int, int]:
        """(batches from fetch_offset, the leader's high watermark, its log start)."""
        ...

    async def close(self) -> None: ...


class Follower:
    """Copies one partition from its leader for one leader epoch."""

    def __init__(
        self,
        topic: str,
        partition: int,
        leader_epoch: int,
        plog: Any,
        link: LeaderLink,
        offload: Callable[..., Awaitable[Any]],
        on_lost: Callable[[], None],
    ) -> None:
        self.topic, self.partition, self.leader_epoch = topic, partition, leader_epoch
        self.plog, self.link, self._offload = plog, link, offload
        self._on_lost = on_lost  # the leader disowned this epoch: metadata is stale, read it again
        self.high_watermark = 0
        self.truncated = False
        self._task: asyncio.Task | None = None
        # Checked after every await: asyncio.wait_for can swallow a cancellation that races its result
        # (Python 3.11), and a copy loop that outlived its role must never write to the partition.
        self._stopped = False

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """End the copy loop. Never waits long: the stream is cancelled first (a task blocked reading a
        gRPC stream may not end on its own cancellation until the stream does), and the task is given
        STOP_WAIT_S to finish; the role change that called this must not stall on it."""
        self._stopped = True
        await self.link.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=STOP_WAIT_S)

    async def _run(self) -> None:
        failures = 0
        while not self._stopped:
            try:
                if not self.truncated:
                    await self._truncate()
                    self.truncated = True
                await self._fetch_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except (FencedLeaderEpochError, NotLeaderError, UnknownLeaderEpochError) as exc:
                # the leader is not (or not yet) the one of this epoch: wait for the new metadata
                log.info(
                    "%s-%d: leader refused epoch %d: %s", self.topic, self.partition, self.leader_epoch, exc.message
                )
                self._on_lost()
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1
            except TidelogError as exc:
                log.warning(
                    "%s-%d: replication from the leader failed: %s",
                    self.topic,
                    self.partition,
                    exc.message,
                    extra={"event": "replica_fetch_failed", "topic": self.topic, "partition": self.partition},
                )
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1
            except Exception:
                log.exception("%s-%d: replication failed", self.topic, self.partition)
                await asyncio.sleep(BACKOFF_S[-1])
                failures += 1

    async def _truncate(self) -> None:
        plog = self.plog
        for _ in range(10_000):  # each round drops at least one local epoch
            latest = plog.leader_epochs.latest()
            start, end = plog.offset_range()[:2]
            if latest is None:
                if end > start:  # records with no epoch cannot be matched against the leader's
                    await self._cut(start, "the local log has no leader epochs")
                return
            epoch, _ = latest
            leader_epoch, leader_end = await self.link.epoch_end_offset(
                self.topic, self.partition, self.leader_epoch, epoch
            )
            if leader_epoch < 0:
                await self._cut(start, f"the leader has no epoch at or before {epoch}")
                return
            _, local_end = plog.leader_epochs.end_offset_for(leader_epoch, end)
            target = min(leader_end, local_end, end)
            if target < end:
                await self._cut(target, f"epoch {leader_epoch} ends at {leader_end} on the leader")
            latest = plog.leader_epochs.latest()
            if latest is None or latest[0] <= leader_epoch:
                return

    async def _cut(self, offset: int, why: str) -> None:
        if self._stopped:
            raise asyncio.CancelledError
        end = self.plog.offset_range()[1]
        new_end = await self._offload(self.plog.truncate_to, offset)
        log.warning(
            "%s-%d: log truncated from %d to %d (%s)",
            self.topic,
            self.partition,
            end,
            new_end,
            why,
            extra={
                "event": "replica_truncated",
                "topic": self.topic,
                "partition": self.partition,
                "from_offset": end,
                "to_offset": new_end,
                "leader_epoch": self.leader_epoch,
            },
        )

    async def _fetch_once(self) -> None:
        end = self.plog.offset_range()[1]
        batches, high_watermark, _ = await self.link.fetch(self.topic, self.partition, self.leader_epoch, end)
        if self._stopped:
            return
        if batches:
            end = await self._offload(self.plog.append_replica, batches)
        cap = min(high_watermark, end)
        if cap > self.high_watermark and not self._stopped:
            self.high_watermark = cap
            await self._offload(self.plog.set_replicated_high_watermark, cap)
