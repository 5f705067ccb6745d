"""Partition reassignment and decommission planning on their own (cluster/reassignment.py): the state
transitions on PartitionState, the checks on a target, and the spread of a decommission plan; plus a
seeded walk of random moves driven through every step, holding the safety rules at each state. The
cluster tests (tests/test_cluster_reassign.py) run the same code on real processes."""

from __future__ import annotations

import random

import pytest

from tidelog.cluster import reassignment as r
from tidelog.cluster.placement import NO_LEADER, PartitionState, elect_leader
from tidelog.errors import InvalidRequestError
from tidelog.replication.leader import LeaderState


def state(replicas=(1, 2, 3), leader=1, isr=None, epoch=4) -> PartitionState:
    return PartitionState(tuple(replicas), leader, epoch, tuple(replicas if isr is None else isr), version=7)


def test_old_records_decode_and_the_move_fields_are_written_only_while_a_move_runs():
    plain = state()
    assert b"adding" not in plain.encode() and b"removing" not in plain.encode()
    old_record = b'{"replicas": [1, 2, 3], "leader": 1, "leader_epoch": 4, "isr": [1, 2, 3]}'
    assert PartitionState.decode(old_record, 7) == plain
    moving = r.begin(plain, (2, 3, 4))
    assert PartitionState.decode(moving.encode(), 7) == moving
    assert moving.reassigning and not plain.reassigning


def test_begin_puts_the_target_first_and_keeps_leader_isr_and_epoch():
    moving = r.begin(state(), (4, 2, 3))
    assert moving.replicas == (4, 2, 3, 1)  # the target in its order, then the leaving replicas
    assert moving.adding == (4,) and moving.removing == (1,)
    assert (moving.leader, moving.leader_epoch, moving.isr) == (1, 4, (1, 2, 3))
    assert r.target_of(moving) == (4, 2, 3) and set(r.original_of(moving)) == {1, 2, 3}


def test_the_same_brokers_in_another_order_need_no_copying():
    reordered = r.begin(state(), (3, 1, 2))
    assert reordered.replicas == (3, 1, 2) and not reordered.reassigning
    assert r.begin(state(), (1, 2, 3)) == state()  # nothing to do


def test_the_controller_waits_for_every_target_replica_in_the_isr_then_moves_the_leader_then_finishes():
    live = {1, 2, 3, 4}
    moving = r.begin(state(), (2, 3, 4))
    assert r.step(moving, live) is None  # 4 is copying
    caught_up = moving.with_isr((1, 2, 3, 4))  # the leader admitted 4
    moved = r.step(caught_up, live)
    assert moved is not None and moved.leader == 2 and moved.leader_epoch == 5  # (c): a clean election
    assert moved.reassigning and moved.isr == (1, 2, 3, 4)
    done = r.step(moved, live)
    assert done is not None and done.replicas == (2, 3, 4) and done.isr == (2, 3, 4)
    assert not done.reassigning and done.leader_epoch == 5 and done.leader == 2  # (d): no new epoch
    assert r.step(done, live) is None


def test_a_kept_leader_finishes_without_an_election_and_a_dead_target_replica_blocks():
    moving = r.begin(state(leader=2), (2, 3, 4)).with_isr((1, 2, 3, 4))
    done = r.step(moving, {1, 2, 3, 4})
    assert done is not None and done.leader == 2 and done.leader_epoch == 4 and done.replicas == (2, 3, 4)
    # the target replica 2 died: elect_leader drops it from the ISR, and the move waits for it
    waiting = r.begin(state(leader=1), (2, 3, 4)).with_isr((1, 3, 4))
    assert r.step(waiting, {1, 3, 4}) is None
    offline = PartitionState((2, 3, 4, 1), NO_LEADER, 4, (1,), 7, (4,), (1,))
    assert r.step(offline, {2, 3, 4}) is None  # no leader: elections come first


def test_cancel_restores_the_original_replicas_while_the_leader_is_one_of_them():
    moving = r.begin(state(), (2, 3, 4)).with_isr((1, 2, 3, 4))
    back = r.cancel(moving)
    assert back.replicas == (2, 3, 1) and back.isr == (1, 2, 3)  # the original set (order: the union's)
    assert not back.reassigning and back.leader == 1
    led_by_new = r.begin(state(), (4, 5, 6)).with_isr((1, 4))
    led_by_new = led_by_new.with_leader(4, (1, 4))
    with pytest.raises(InvalidRequestError, match="too late to cancel"):
        r.cancel(led_by_new)
    with pytest.raises(InvalidRequestError, match="no reassignment"):
        r.cancel(state())


@pytest.mark.parametrize(
    "target, allow, message",
    [
        ((), False, "empty"),
        ((2, 2, 3), False, "named more than once"),
        ((2, 3, 9), False, "not registered"),
        ((2, 3), False, "allow-replication-factor-change"),
        ((2,), True, "min_insync_replicas=2"),
    ],
)
def test_bad_targets_are_refused_with_the_reason(target, allow, message):
    with pytest.raises(InvalidRequestError, match=message):
        r.check_target("t", 0, state(), target, {1, 2, 3, 4}, 2, allow)


def test_a_changed_replication_factor_is_accepted_when_asked_and_a_second_move_is_refused():
    r.check_target("t", 0, state(), (2, 3, 4, 1), {1, 2, 3, 4}, 2, True)
    with pytest.raises(InvalidRequestError, match="already in progress.*--cancel"):
        r.check_target("t", 0, r.begin(state(), (2, 3, 4)), (1, 2, 3), {1, 2, 3, 4}, 2)


def test_progress_tells_done_in_progress_and_other():
    moving = r.begin(state(), (2, 3, 4))
    assert r.progress(moving, (2, 3, 4)) == r.IN_PROGRESS
    assert r.progress(moving, (3, 4, 2)) == r.OTHER
    assert r.progress(state(replicas=(2, 3, 4), leader=2), (2, 3, 4)) == r.DONE
    assert r.progress(state(), (2, 3, 4)) == r.OTHER and r.progress(None, (1,)) == r.OTHER


def test_decommission_keeps_the_replication_factor_and_spreads_over_the_least_loaded():
    parts = {("t", p): state(replicas=(1, 2, 3)) for p in range(6)}
    parts[("solo", 0)] = state(replicas=(3,), leader=3)
    plan = r.plan_decommission(parts, 1, {1, 2, 3, 4, 5})
    assert set(plan) == {("t", p) for p in range(6)}
    for target in plan.values():
        assert len(target) == 3 and 1 not in target and len(set(target)) == 3
        assert target[1:] == (2, 3)  # the broker's place taken in the same position
    assert sorted(t[0] for t in plan.values()) == [4, 4, 4, 5, 5, 5]  # evenly over 4 and 5
    with pytest.raises(InvalidRequestError, match="cannot leave without another live broker"):
        r.plan_decommission(parts, 1, {1, 2, 3})
    assert r.plan_decommission(parts, 9, {1, 2, 3}) == {}


def test_leader_state_follows_a_replica_list_change_within_its_epoch():
    clock = iter(range(100, 10_000)).__next__
    lead = LeaderState(1, 5, 0, (1, 2, 3), (1, 2, 3), 1000, lambda: float(clock()))
    lead.set_replicas((2, 3, 4, 1))
    lead.fetched(4, 50, 50)
    assert lead.to_expand(50) == [4]  # a new replica, caught up, is admitted by the ordinary rule
    lead.set_replicas((2, 3, 4))
    assert sorted(lead.followers) == [2, 3, 4]


def test_a_seeded_walk_of_moves_keeps_every_state_safe():
    """Random moves, leader deaths and follower catch-ups, driven through elect_leader and step like
    the controller and leaders do: at every state the leader is live-or-none and in the ISR, the ISR is
    within the replicas, the epoch never falls, and every move ends on its target."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    brokers = [1, 2, 3, 4, 5]
    for _ in range(200):
        s = state(replicas=tuple(rng.sample(brokers, 3)), leader=-2)
        s = PartitionState(s.replicas, s.replicas[0], 0, s.replicas, 1)
        target = tuple(rng.sample(brokers, 3))
        s = r.begin(s, target)
        live = set(brokers)
        for _ in range(60):
            epoch = s.leader_epoch
            event = rng.random()
            if event < 0.1 and len(live) > 3:
                live.discard(rng.choice(sorted(live)))
            elif event < 0.3:
                live = set(brokers)
            elif event < 0.6 and s.leader != NO_LEADER:  # the leader admits a caught-up live replica
                joining = [b for b in s.replicas if b not in s.isr and b in live]
                if joining:
                    s = s.with_isr((*s.isr, rng.choice(joining)))
            s = elect_leader(s, live) or s
            s = r.step(s, live) or s
            assert s.leader_epoch >= epoch
            assert set(s.isr) <= set(s.replicas), f"seed={seed}: {s}"
            assert s.leader == NO_LEADER or s.leader in s.isr, f"seed={seed}: {s}"
            if not s.reassigning:
                break
        live = set(brokers)
        for _ in range(10):  # everyone back and caught up: the move finishes
            s = elect_leader(s, live) or s
            if s.leader != NO_LEADER:
                s = s.with_isr(tuple(dict.fromkeys((*s.isr, *s.replicas))))
            s = r.step(s, live) or s
        assert not s.reassigning and s.replicas == target, f"seed={seed}: {s}"
