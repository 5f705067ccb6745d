"""The replication throttle's token bucket and rule, on an injected clock (nothing sleeps)."""

from __future__ import annotations

import pytest

from tidelog.config import ServerConfig
from tidelog.errors import InvalidConfigError
from tidelog.replication.throttle import ReplicationThrottle, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_new_bucket_holds_one_second_and_refills_at_its_rate():
    clock = Clock()
    bucket = TokenBucket(1000, clock)
    assert bucket.available() == 1000 and bucket.delay() == 0
    bucket.take(1000)
    assert bucket.available() == 0 and bucket.delay() == pytest.approx(0.001)
    clock.now += 0.0009995  # a fraction of a token short: still a wait the clock can see
    assert bucket.delay() == 0.001
    clock.now += 0.25
    assert bucket.available() == 250
    clock.now += 10  # never more than one second's worth
    assert bucket.available() == 1000


def test_a_debt_is_paid_before_tokens_are_held_again():
    clock = Clock()
    bucket = TokenBucket(1000, clock)
    bucket.take(3000)  # one batch bigger than the bucket: sent anyway, owed
    assert bucket.available() == -2000
    assert bucket.delay() == pytest.approx(2.001)
    clock.now += 2.0
    assert bucket.available() == 0 and bucket.delay() > 0
    clock.now += 0.5
    assert bucket.available() == 500 and bucket.delay() == 0


def test_over_time_the_bytes_sent_follow_the_rate():
    """A follower that fetches whenever the bucket allows, each fetch at least one 700-byte batch:
    what it gets over 10 s is the rate times 10 s, plus at most one burst and one batch."""
    clock = Clock()
    throttle = ReplicationThrottle(5000, clock)
    sent = 0
    start = clock.now
    while clock.now - start < 10:
        delay = throttle.bucket.delay()
        if delay > 0:
            clock.now += delay
            throttle.waited(delay)
            continue
        budget = throttle.budget(1 << 20)
        got = max(700, budget - budget % 700)  # the log answers whole batches, at least one
        throttle.spent(got)
        sent += got
    assert 5000 * 10 <= sent <= 5000 * 11 + 700
    assert throttle.throttled_bytes == sent and throttle.throttled_seconds > 0


def test_zero_turns_the_bucket_off_and_a_new_rate_applies_at_once():
    clock = Clock()
    bucket = TokenBucket(0, clock)
    bucket.take(10**9)
    assert bucket.delay() == 0  # no limit: never waits
    bucket.set_rate(100)
    assert bucket.available() == 100
    bucket.take(600)
    bucket.set_rate(1000)  # the debt stays, paid at the new rate
    assert bucket.delay() == pytest.approx(0.501)


@pytest.mark.parametrize(
    "replica, isr, fetch_offset, hw, expected",
    [
        (3, (1, 2), 10, 50, True),  # outside the ISR, behind the high watermark: catching up
        (3, (1, 2), 50, 50, False),  # at the high watermark: full speed, so it can rejoin
        (2, (1, 2), 10, 50, False),  # in the ISR: acks=all waits on it, never throttled
    ],
)
def test_only_catching_up_followers_are_throttled(replica, isr, fetch_offset, hw, expected):
    assert ReplicationThrottle(1000, Clock()).applies(replica, isr, fetch_offset, hw) is expected
    assert ReplicationThrottle(0, Clock()).applies(replica, isr, fetch_offset, hw) is False  # off


def test_the_setting_is_validated():
    assert ServerConfig().replication_throttle_bytes_per_s == 0
    with pytest.raises(InvalidConfigError, match="replication_throttle_bytes_per_s must be at least 0"):
        ServerConfig(replication_throttle_bytes_per_s=-1)


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "one of the arguments --rate --clear is required"),
        (["--rate", "-1"], "--rate"),
        (["--rate", "10", "--clear"], "not allowed with argument"),
        (["--rate", "10"], "give --cluster etcd://HOST:PORT"),
        (["--rate", "10", "--cluster", "http://x:1"], "cluster must be etcd://"),
    ],
)
def test_cluster_throttle_bad_usage_exit_2(args, message):
    import os

    from .test_cli import one_error_line, tidelog

    env = {k: v for k, v in os.environ.items() if k != "TIDELOG_CLUSTER"}
    out = tidelog("cluster", "throttle", *args, env=env)
    assert out.returncode == 2, out.stderr
    assert message in one_error_line(out)
