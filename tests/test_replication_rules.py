"""The replication rules on their own, with a hand-driven clock: the leader's high watermark and ISR
changes (replication/leader.py), the controller's clean election and replica placement
(cluster/placement.py). The cluster tests run the same code on real processes."""

from __future__ import annotations

import pytest

from tidelog.cluster.placement import NO_LEADER, PartitionState, assign_replicas, elect_leader
from tidelog.errors import InvalidReplicationFactorError
from tidelog.replication.leader import LeaderState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def leader(isr=(1, 2, 3), clock=None, lag_ms=1000, epoch_start=0) -> LeaderState:
    return LeaderState(1, 5, epoch_start, tuple(isr), (1, 2, 3), lag_ms, clock or Clock())


def test_the_high_watermark_is_the_smallest_log_end_over_the_isr_counting_only_followers_that_fetched():
    state = leader()
    assert state.high_watermark(50) == 0  # no follower fetched in this epoch yet
    state.fetched(2, 40, 50)
    assert state.high_watermark(50) == 0  # follower 3 has not
    state.fetched(3, 30, 50)
    assert state.high_watermark(50) == 30
    state.isr = (1, 2)  # 3 left the ISR (as etcd holds it): it no longer holds the watermark back
    assert state.high_watermark(50) == 40
    state.fetched(4, 10, 50)  # not a replica: ignored
    assert state.high_watermark(50) == 40


def test_a_follower_that_stops_catching_up_leaves_the_isr_after_the_lag_time():
    clock = Clock()
    state = leader(clock=clock)
    state.fetched(2, 50, 50)
    state.fetched(3, 50, 50)
    clock.now += 0.9
    state.fetched(2, 60, 60)  # caught up again
    state.fetched(3, 55, 60)  # fetching, but behind
    assert state.to_shrink() == []
    clock.now += 0.2  # 1.1 s since 3 was last caught up
    assert state.to_shrink() == [3]


def test_a_follower_returns_only_caught_up_to_the_high_watermark_and_the_epoch_start_and_fetching_recently():
    clock = Clock()
    state = leader(isr=(1, 2), clock=clock, epoch_start=40)
    state.fetched(2, 60, 60)
    state.fetched(3, 35, 60)
    assert state.to_expand(60) == []  # behind the high watermark and the epoch start
    state.fetched(3, 60, 60)
    assert state.to_expand(60) == [3]
    clock.now += 5  # it stopped fetching: a dead follower whose last log end looked caught up
    assert state.to_expand(60) == []


def test_replicas_spread_leaders_and_copies_over_the_brokers():
    placement = assign_replicas([3, 1, 2], 6, 3, start=1)
    assert [p[0] for p in placement] == [2, 3, 1, 2, 3, 1]  # preferred leaders round robin
    assert all(sorted(p) == [1, 2, 3] for p in placement)
    with pytest.raises(InvalidReplicationFactorError, match="needs as many live brokers"):
        assign_replicas([1, 2], 1, 3)
    with pytest.raises(InvalidReplicationFactorError):
        assign_replicas([1, 2], 1, 0)


def test_a_new_leader_comes_from_the_isr_only_and_the_epoch_grows():
    state = PartitionState((1, 2, 3), 1, 4, (1, 3), version=9)
    assert elect_leader(state, {1, 2, 3}) is None  # nothing to do
    new = elect_leader(state, {2, 3})
    assert (new.leader, new.leader_epoch, new.isr) == (3, 5, (3,))  # 2 is alive but not in the ISR
    follower_gone = elect_leader(state, {1, 2})
    assert (follower_gone.leader, follower_gone.leader_epoch, follower_gone.isr) == (1, 4, (1,))


def test_with_no_live_isr_member_the_partition_goes_offline_keeping_its_last_isr():
    state = PartitionState((1, 2, 3), 1, 4, (1,), version=9)
    offline = elect_leader(state, {2, 3})
    assert (offline.leader, offline.isr) == (NO_LEADER, (1,))  # 2 and 3 may lack acknowledged records
    assert elect_leader(offline, {2, 3}) is None  # stays offline
    back = elect_leader(offline, {1, 2, 3})
    assert (back.leader, back.isr, back.leader_epoch) == (1, (1,), 5)


def test_a_replica_back_on_another_data_directory_is_out_of_sync_and_never_elected():
    """The ISR records the data directory each member was in sync from: a broker registered now with
    another id (restarted on an emptied disk) neither leads nor stays in the ISR, and when it was the
    last member the partition stays offline instead of being led by a copy that lost records."""
    state = PartitionState((1, 2, 3), 1, 4, ()).with_isr((1, 2, 3), {1: "d1", 2: "d2", 3: "d3"})
    assert state.storage_of(2) == "d2" and state.storage_of(9) == ""
    same = {1: "d1", 2: "d2", 3: "d3"}
    assert elect_leader(state, {1, 2, 3}, same) is None
    # the leader came back on a fresh disk before anyone saw it gone: a new leader from the rest
    new = elect_leader(state, {1, 2, 3}, {**same, 1: "fresh"})
    assert new is not None and new.leader == 2 and new.leader_epoch == 5 and new.isr == (2, 3)
    assert dict(new.storage) == {2: "d2", 3: "d3"}
    # a follower back on a fresh disk leaves the ISR like a dead one
    new = elect_leader(state, {1, 2, 3}, {**same, 3: "fresh"})
    assert new is not None and new.leader == 1 and new.leader_epoch == 4 and new.isr == (1, 2)
    # the last in-sync member back on a fresh disk: offline, its place kept, never elected
    alone = PartitionState((1, 2), NO_LEADER, 6, ()).with_isr((1,), {1: "d1"})
    assert elect_leader(alone, {1, 2}, {1: "fresh", 2: "d2"}) is None
    last = PartitionState((1, 2), 1, 6, ()).with_isr((1,), {1: "d1"})
    offline = elect_leader(last, {1, 2}, {1: "fresh", 2: "d2"})
    assert offline is not None and offline.leader == NO_LEADER and offline.isr == (1,)
    # ids not recorded (state written before they existed), or a broker that does not say: taken at its word
    unrecorded = PartitionState((1, 2, 3), 1, 4, (1, 2, 3))
    assert elect_leader(unrecorded, {1, 2, 3}, {1: "fresh"}) is None
    assert elect_leader(state, {1, 2, 3}, {1: ""}) is None


def test_the_recorded_data_directories_follow_the_isr_and_survive_encoding():
    state = PartitionState((1, 2, 3), 1, 0, ()).with_isr((1, 2, 3), {1: "a", 2: "b", 3: "c"})
    shrunk = state.with_isr((1, 3))
    assert dict(shrunk.storage) == {1: "a", 3: "c"}
    grown = shrunk.with_isr((1, 3, 2), {2: "b2"})  # back in sync, from the directory it fetched into
    assert dict(grown.storage) == {1: "a", 2: "b2", 3: "c"}
    moved = grown.with_leader(3, (3, 2))
    assert moved.leader_epoch == 1 and dict(moved.storage) == {2: "b2", 3: "c"}
    again = PartitionState.decode(moved.encode(), 7)
    assert again == PartitionState(moved.replicas, 3, 1, (3, 2), 7, moved.storage)
    plain = PartitionState((1,), 1, 0, (1,))
    assert b"storage" not in plain.encode() and PartitionState.decode(plain.encode(), 1).storage == ()
    with pytest.raises(ValueError):
        PartitionState.decode(b'{"replicas": [1], "leader": 1, "leader_epoch": 0, "isr": [1], "storage": [1]}', 1)
