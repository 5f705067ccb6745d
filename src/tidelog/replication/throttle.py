"""Replication throttling: a per-broker limit on the bytes a leader sends to followers that are
catching up (Kafka's leader.replication.throttled.rate), so that a broker back from a long outage,
copying everything it missed, cannot take the disk and network that producers need.

The rule: only fetches from a follower outside the ISR whose fetch offset is below the high
watermark are throttled. Such a follower is catching up; a follower in the ISR is at or past the
high watermark by definition, and acks=all waits on it, so it keeps full speed. A catching-up
follower reaches the high watermark at the throttled rate and is then unthrottled, so it always
catches up and rejoins the ISR (as long as the rate exceeds the produce rate).

One token bucket for all partitions of the broker. A throttled fetch waits (bounded) until the
bucket has tokens, then reads at most what the bucket holds, but always at least one whole batch
(the log never answers less), so progress is always made; the bytes read are taken from the bucket
even when that leaves it in debt, and the debt is paid by the next fetches waiting. A throttled
fetch never fails and never skips the epoch checks: the leader role is checked again after the wait.

Event-loop only (no locks); the clock is injected for the tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_WAIT_S = 1.0
"""Longest wait of one fetch for tokens: a fetch still in debt after it answers with no batches
(the follower asks again at once), well within the follower's read timeout."""

MIN_WAIT_S = 0.001
"""Shortest wait for tokens: a wait the clock cannot tell from none (a fraction of a token) would spin."""


class TokenBucket:
    """`rate` tokens (bytes) per second, holding at most one second's worth; may go into debt."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rate = 0
        self._tokens = 0.0
        self._at = clock()
        self.set_rate(rate)

    @property
    def rate(self) -> int:
        return self._rate

    def set_rate(self, rate: int) -> None:
        """A new rate (0: unlimited), taking effect at once; what is held is capped to the new burst
        (a debt is kept)."""
        self._refill()
        was, self._rate = self._rate, max(int(rate), 0)
        if self._rate == 0:
            self._tokens = 0.0
        elif was == 0:
            self._tokens = float(self._rate)  # a limit set anew starts with a full second's worth
        else:
            self._tokens = min(self._tokens, float(self._rate))

    def _refill(self) -> None:
        now = self._clock()
        if self._rate > 0:
            self._tokens = min(float(self._rate), self._tokens + (now - self._at) * self._rate)
        self._at = now

    def available(self) -> int:
        """Whole tokens held now (0 or less: in debt or empty)."""
        self._refill()
        return int(self._tokens)

    def delay(self) -> float:
        """Seconds until at least one token is held (0: now)."""
        self._refill()
        if self._rate == 0 or self._tokens >= 1:
            return 0.0
        return max((1 - self._tokens) / self._rate, MIN_WAIT_S)

    def take(self, amount: int) -> None:
        """Spend `amount` tokens (the bytes sent), going into debt if the bucket holds fewer."""
        self._refill()
        if self._rate > 0:
            self._tokens -= amount


class ReplicationThrottle:
    """The broker's bucket, the rule that picks throttled fetches, and what it did (for metrics)."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.bucket = TokenBucket(rate, clock)
        self.throttled_bytes = 0  # bytes sent to catching-up followers while a limit was set
        self.throttled_seconds = 0.0  # time throttled fetches waited for tokens
        self.throttled_fetches = 0  # throttled fetches that had to wait

    @property
    def enabled(self) -> bool:
        return self.bucket.rate > 0

    def applies(self, replica: int, isr: tuple[int, ...], fetch_offset: int, high_watermark: int) -> bool:
        """Whether this fetch is throttled: a follower outside the ISR, behind the high watermark."""
        return self.enabled and replica not in isr and fetch_offset < high_watermark

    def budget(self, max_bytes: int) -> int:
        """How much a throttled fetch may read now (the log still answers at least one batch)."""
        return max(1, min(max_bytes, self.bucket.available()))

    def spent(self, amount: int) -> None:
        self.bucket.take(amount)
        self.throttled_bytes += amount

    def waited(self, seconds: float) -> None:
        self.throttled_seconds += seconds
        self.throttled_fetches += 1
