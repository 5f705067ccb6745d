"""What the leader of one partition knows about its followers, and the high watermark it derives.

The high watermark is the minimum log end over the ISR as etcd holds it (a follower counts once it
has fetched in the current leader epoch: the log end it reports then is one it has checked against
this leader's log). A follower leaves the ISR when it has not caught up with the leader's log end
within `lag_time_ms`; it returns only when it has caught up to the high watermark and to the start of
this epoch *and* fetched recently: a dead follower whose last log end looked caught up must not be
readmitted (it would stall every acks=all produce until it is dropped again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class FollowerProgress:
    log_end: int = -1  # -1: has not fetched in this epoch
    last_fetch: float = 0.0
    last_caught_up: float = 0.0
    replica_epoch: int = 0  # the broker epoch (registration) it last fetched as: who vouches for its disk


class LeaderState:
    def __init__(
        self,
        broker_id: int,
        epoch: int,
        epoch_start: int,
        isr: tuple[int, ...],
        replicas: tuple[int, ...],
        lag_time_ms: int,
        clock: Callable[[], float],
    ) -> None:
        self.broker_id, self.epoch, self.epoch_start = broker_id, epoch, epoch_start
        self.isr, self.replicas = isr, replicas
        self.lag_s = lag_time_ms / 1000
        self._clock = clock
        now = clock()
        # every follower starts with a full lag window: it has had no chance to fetch from this leader yet
        self.followers = {b: FollowerProgress(last_caught_up=now, last_fetch=now) for b in replicas if b != broker_id}

    def set_replicas(self, replicas: tuple[int, ...]) -> None:
        """The replica list changed within this epoch (a reassignment added or removed brokers): a new
        follower starts with a full lag window like those at the epoch's start; a removed one is forgotten."""
        if replicas == self.replicas:
            return
        now = self._clock()
        for b in replicas:
            if b != self.broker_id and b not in self.followers:
                self.followers[b] = FollowerProgress(last_caught_up=now, last_fetch=now)
        for b in [b for b in self.followers if b not in replicas]:
            del self.followers[b]
        self.replicas = replicas

    def fetched(self, replica: int, log_end: int, leader_log_end: int, replica_epoch: int = 0) -> None:
        progress = self.followers.get(replica)
        if progress is None:
            return
        now = self._clock()
        progress.log_end, progress.last_fetch, progress.replica_epoch = log_end, now, replica_epoch
        if log_end >= leader_log_end:
            progress.last_caught_up = now

    def high_watermark(self, leader_log_end: int) -> int:
        ends = [leader_log_end]
        for b in self.isr:
            if b != self.broker_id:
                progress = self.followers.get(b)
                ends.append(progress.log_end if progress is not None else -1)
        return max(min(ends), 0)

    def to_shrink(self) -> list[int]:
        """ISR followers that fell behind for longer than the lag time."""
        now = self._clock()
        return [
            b
            for b in self.isr
            if b != self.broker_id and b in self.followers and now - self.followers[b].last_caught_up > self.lag_s
        ]

    def to_expand(self, high_watermark: int) -> list[int]:
        now = self._clock()
        return [
            b
            for b, p in self.followers.items()
            if b not in self.isr
            and p.log_end >= 0
            and p.log_end >= high_watermark
            and p.log_end >= self.epoch_start
            and now - p.last_fetch <= self.lag_s
        ]

    def lag(self, leader_log_end: int) -> dict[int, tuple[int, float]]:
        """Per follower: (records behind, seconds since it was last caught up)."""
        now = self._clock()
        return {
            b: (max(0, leader_log_end - max(p.log_end, 0)), max(0.0, now - p.last_caught_up))
            for b, p in self.followers.items()
        }
