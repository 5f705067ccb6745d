"""Kafka's classic group protocol as tidelog's coordinator runs it: rounds, the leader's assignment handed
to every member, fencing of stale generations and expired members, protocol votes. A manual clock moves
sessions; no test sleeps."""

from __future__ import annotations

import asyncio

import pytest

from tidelog.kafka_protocol import errors as kerr
from tidelog.kafka_protocol.classic_groups import COMPLETING, EMPTY, PREPARING, STABLE, ClassicGroups


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coro):
    return asyncio.run(coro)


async def join(groups: ClassicGroups, member_id: str = "", protocols=(("range", b"m"),), **kw):
    return await groups.join(
        kw.get("group", "g"), member_id, None, kw.get("client", "c"), "127.0.0.1", kw.get("session_ms", 10_000),
        kw.get("rebalance_ms", 10_000), kw.get("protocol_type", "consumer"), list(protocols),
    )  # fmt: skip


async def two_members(groups: ClassicGroups):
    """Two members through a full round: (leader's join, follower's join)."""
    first = await join(groups)  # alone: the round ends at once (no initial delay)
    assert first.error == 0 and first.generation == 1
    sync = asyncio.ensure_future(groups.sync("g", 1, first.member_id, {first.member_id: b"all"}))
    await asyncio.sleep(0)
    assert (await sync).assignment == b"all"
    second_join = asyncio.ensure_future(join(groups))
    await asyncio.sleep(0)
    assert groups.get("g").state == PREPARING
    assert groups.heartbeat("g", 1, first.member_id) == kerr.REBALANCE_IN_PROGRESS
    rejoin = await join(groups, first.member_id)
    second = await second_join
    return rejoin, second


def test_a_round_gives_the_leader_every_member_and_the_followers_its_assignment():
    async def scenario():
        groups = ClassicGroups(initial_rebalance_delay_ms=0, clock=Clock())
        leader, follower = await two_members(groups)
        assert leader.generation == follower.generation == 2
        assert leader.leader == follower.leader == leader.member_id
        assert sorted(m[0] for m in leader.members) == sorted([leader.member_id, follower.member_id])
        assert follower.members == []
        waiting = asyncio.ensure_future(groups.sync("g", 2, follower.member_id, {}))
        await asyncio.sleep(0)
        assert not waiting.done() and groups.get("g").state == COMPLETING
        mine = await groups.sync("g", 2, leader.member_id, {leader.member_id: b"p0", follower.member_id: b"p1"})
        assert (mine.error, mine.assignment) == (0, b"p0")
        assert (await waiting).assignment == b"p1"
        assert groups.get("g").state == STABLE
        assert groups.heartbeat("g", 2, follower.member_id) == 0

    run(scenario())


def test_a_stale_generation_and_an_expired_member_are_fenced():
    async def scenario():
        clock = Clock()
        groups = ClassicGroups(initial_rebalance_delay_ms=0, clock=clock)
        leader, follower = await two_members(groups)
        await asyncio.gather(
            groups.sync("g", 2, leader.member_id, {leader.member_id: b"a", follower.member_id: b"b"}),
            groups.sync("g", 2, follower.member_id, {}),
        )
        assert groups.check_commit("g", 1, leader.member_id) == kerr.ILLEGAL_GENERATION
        assert groups.heartbeat("g", 1, leader.member_id) == kerr.ILLEGAL_GENERATION
        assert groups.check_commit("g", 2, leader.member_id) == 0

        clock.now += 5  # the leader heartbeats, the follower goes silent past its session
        assert groups.heartbeat("g", 2, leader.member_id) == 0
        clock.now += 6
        assert groups.expire() == [follower.member_id]
        assert groups.check_commit("g", 2, follower.member_id) == kerr.UNKNOWN_MEMBER_ID  # a zombie's commit
        assert groups.heartbeat("g", 2, leader.member_id) == kerr.REBALANCE_IN_PROGRESS
        again = await join(groups, leader.member_id)
        assert (again.generation, [m[0] for m in again.members]) == (3, [leader.member_id])

    run(scenario())


def test_an_admin_commit_is_refused_while_the_group_has_members():
    async def scenario():
        groups = ClassicGroups(initial_rebalance_delay_ms=0, clock=Clock())
        assert groups.check_commit("g", -1, "") == 0
        await join(groups)
        assert groups.check_commit("g", -1, "") == kerr.NON_EMPTY_GROUP

    run(scenario())


def test_the_protocol_every_member_supports_wins_the_vote():
    async def scenario():
        groups = ClassicGroups(initial_rebalance_delay_ms=0, clock=Clock())
        first = await join(groups, protocols=(("range", b"1"), ("roundrobin", b"2")))
        assert first.protocol == "range"
        second = asyncio.ensure_future(join(groups, protocols=(("roundrobin", b"3"),)))
        await asyncio.sleep(0)
        rejoined = await join(groups, first.member_id, protocols=(("range", b"1"), ("roundrobin", b"2")))
        assert rejoined.protocol == (await second).protocol == "roundrobin"
        assert dict((m[0], m[2]) for m in rejoined.members)[first.member_id] == b"2", "its roundrobin metadata"
        refused = await join(groups, protocols=(("sticky", b""),))
        assert refused.error == kerr.INCONSISTENT_GROUP_PROTOCOL
        other_type = await join(groups, protocol_type="connect")
        assert other_type.error == kerr.INCONSISTENT_GROUP_PROTOCOL

    run(scenario())


def test_a_leaving_leader_hands_the_group_to_the_other_member():
    async def scenario():
        groups = ClassicGroups(initial_rebalance_delay_ms=0, clock=Clock())
        leader, follower = await two_members(groups)
        assert groups.leave("g", [leader.member_id]) == [0]
        assert groups.heartbeat("g", 2, follower.member_id) == kerr.REBALANCE_IN_PROGRESS
        again = await join(groups, follower.member_id)
        assert (again.leader, again.generation) == (follower.member_id, 3)
        assert groups.leave("g", [follower.member_id, "nobody"]) == [0, kerr.UNKNOWN_MEMBER_ID]
        assert groups.get("g").state == EMPTY

    run(scenario())


def test_members_that_do_not_rejoin_within_the_rebalance_timeout_are_dropped():
    async def scenario():
        groups = ClassicGroups(initial_rebalance_delay_ms=0, clock=Clock())
        first = await join(groups, rebalance_ms=50)
        newcomer = asyncio.ensure_future(join(groups, rebalance_ms=50))
        # the first member never rejoins: the round ends at the rebalance timeout without it
        result = await asyncio.wait_for(newcomer, 5)
        assert result.error == 0 and [m[0] for m in result.members] == [result.member_id]
        assert groups.heartbeat("g", result.generation, first.member_id) == kerr.UNKNOWN_MEMBER_ID

    run(scenario())


@pytest.mark.parametrize("session_ms", [10, 10**9])
def test_a_session_timeout_out_of_bounds_is_refused(session_ms):
    result = run(join(ClassicGroups(initial_rebalance_delay_ms=0, clock=Clock()), session_ms=session_ms))
    assert result.error == kerr.INVALID_SESSION_TIMEOUT
