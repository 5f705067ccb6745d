"""Kafka's classic consumer-group protocol, as a coordinator: JoinGroup/SyncGroup rounds, heartbeats,
leaves and session expiry. The *client* leader computes the assignment (range, roundrobin,
cooperative-sticky are client-side assignors); the coordinator only runs the rounds and hands each
member what the leader gave it.

A round: a join (new member, a member whose protocols changed, the leader rejoining, a leave, an
expiry) moves the group to PreparingRebalance. Members learn it from their heartbeats
(REBALANCE_IN_PROGRESS) and rejoin; once every member has rejoined, or the longest rebalance timeout of
the members has passed (those that did not rejoin are removed), the generation goes up, a protocol
every member supports is chosen by vote, and each join is answered (the leader gets every member's
metadata). The group is then CompletingRebalance until the leader's SyncGroup brings the assignment,
which answers every waiting SyncGroup: Stable. A group without members waits
`initial_rebalance_delay_ms` before its first round (each member joining meanwhile restarts the
wait, up to 10 times it in all), so members starting together share at once.

Fencing: heartbeats, syncs and commits must name a member of the current generation; a member that
misses heartbeats for its session timeout is removed. Membership lives in memory: after a broker
restart members get UNKNOWN_MEMBER_ID and rejoin (committed offsets are durable in the offset store).
Static membership (group.instance.id) is recorded and reported, not used to skip rebalances.

Event-loop only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from . import consumer_protocol
from . import errors as kerr

EMPTY, PREPARING, COMPLETING, STABLE = "Empty", "PreparingRebalance", "CompletingRebalance", "Stable"
MIN_SESSION_TIMEOUT_MS = 1000
MAX_SESSION_TIMEOUT_MS = 30 * 60 * 1000  # Kafka's group.max.session.timeout.ms
INITIAL_DELAY_MAX_FACTOR = 10
EXPIRY_TICK_S = 0.25
MAX_GROUP_ID_CHARS = 249  # as tidelog's own groups
MEMBER_ID_CLIENT_CHARS = 64  # of the client id, in a member id (a client id may be 32 KiB)
MAX_METADATA_BYTES = 1 << 20  # one member's protocol metadata (its subscription)


@dataclass
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: list[tuple[str, bytes]]
    last_seen: float
    assignment: bytes = b""
    join: asyncio.Future | None = None  # a JoinGroup waiting for the round to end
    sync: asyncio.Future | None = None  # a SyncGroup waiting for the leader's assignment

    def metadata(self, protocol: str | None) -> bytes:
        return next((m for name, m in self.protocols if name == protocol), b"")


@dataclass
class Group:
    group_id: str
    state: str = EMPTY
    generation: int = 0
    protocol_type: str | None = None
    protocol: str | None = None
    leader: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    round_ends: asyncio.TimerHandle | None = None
    initial_wait_until: float = 0.0  # when the initial delay may not be extended past


class JoinResult(NamedTuple):
    error: int
    generation: int = -1
    protocol_type: str | None = None
    protocol: str | None = None
    leader: str = ""
    member_id: str = ""
    members: list[tuple[str, str | None, bytes]] = []  # for the leader: (member id, instance id, metadata)


class SyncResult(NamedTuple):
    error: int
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol: str | None = None


class ClassicGroups:
    def __init__(
        self,
        initial_rebalance_delay_ms: int = 3000,
        busy: Callable[[str], Awaitable[bool]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """busy(group_id): the group has members of tidelog's own protocol (one group, one protocol)."""
        self.initial_delay_s = initial_rebalance_delay_ms / 1000
        self._busy = busy
        self._clock = clock
        self._groups: dict[str, Group] = {}
        self._expiry: asyncio.Task | None = None
        self.rebalances = 0

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def start(self) -> None:
        self._expiry = asyncio.ensure_future(self._expire_forever())

    def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self.drop_all(kerr.COORDINATOR_NOT_AVAILABLE)

    def drop_all(self, error: int = kerr.NOT_COORDINATOR) -> None:
        """Forget every group (the broker stops, or in a cluster the coordination moved to another
        broker): members waiting for a round are answered `error`, and find the coordinator again."""
        groups, self._groups = self._groups, {}
        for group in groups.values():
            if group.round_ends is not None:
                group.round_ends.cancel()
            for m in group.members.values():
                self._answer_join(m, JoinResult(error))
                self._answer_sync(m, SyncResult(error))

    # -- joining ----------------------------------------------------------------------------------
    async def join(
        self,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        client_id: str,
        client_host: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
    ) -> JoinResult:
        if not group_id or len(group_id) > MAX_GROUP_ID_CHARS:
            return JoinResult(kerr.INVALID_GROUP_ID)
        if not MIN_SESSION_TIMEOUT_MS <= session_timeout_ms <= MAX_SESSION_TIMEOUT_MS:
            return JoinResult(kerr.INVALID_SESSION_TIMEOUT)
        if not protocols or not protocol_type:
            return JoinResult(kerr.INCONSISTENT_GROUP_PROTOCOL)
        names = [protocol_type, group_instance_id or "", *(n for n, _ in protocols)]
        if any(len(n) > MAX_GROUP_ID_CHARS for n in names) or any(len(m) > MAX_METADATA_BYTES for _, m in protocols):
            # stored and sent back in JoinGroup and DescribeGroups answers, also of classic versions
            return JoinResult(kerr.INVALID_REQUEST)
        if not self.has_members(group_id) and self._busy is not None and await self._busy(group_id):
            return JoinResult(kerr.INCONSISTENT_GROUP_PROTOCOL)
        if member_id and member_id not in (self._groups.get(group_id) or Group(group_id)).members:
            return JoinResult(kerr.UNKNOWN_MEMBER_ID, member_id=member_id)  # (no group made for it)
        group = self._groups.setdefault(group_id, Group(group_id))
        if group.members and (
            protocol_type != group.protocol_type or not self._common({n for n, _ in protocols}, group, skip=member_id)
        ):
            return JoinResult(kerr.INCONSISTENT_GROUP_PROTOCOL)
        now = self._now()
        rebalance_timeout_ms = rebalance_timeout_ms if rebalance_timeout_ms > 0 else session_timeout_ms
        member = group.members.get(member_id) if member_id else None
        if member_id and member is None:
            return JoinResult(kerr.UNKNOWN_MEMBER_ID, member_id=member_id)
        if member is None:
            member_id = f"{client_id[:MEMBER_ID_CLIENT_CHARS] or 'member'}-{uuid.uuid4()}"
            member = Member(
                member_id, group_instance_id, client_id, client_host, session_timeout_ms, rebalance_timeout_ms,
                list(protocols), now,
            )  # fmt: skip
            group.members[member_id] = member
            if not group.protocol_type:
                group.protocol_type = protocol_type
            changed = True
        else:
            changed = member.protocols != list(protocols) or member_id == group.leader
            member.protocols = list(protocols)
            member.session_timeout_ms, member.rebalance_timeout_ms = session_timeout_ms, rebalance_timeout_ms
            member.last_seen = now
        if group.state in (STABLE, COMPLETING) and not changed:
            return self._joined(group, member)  # a follower rejoining with what it had: nothing moves
        loop = asyncio.get_running_loop()
        self._answer_join(member, JoinResult(kerr.UNKNOWN_MEMBER_ID))  # a join it gave up on, if any
        member.join = loop.create_future()
        future = member.join
        self._prepare(group)
        self._maybe_end_round(group)
        return await future

    def _joined(self, group: Group, member: Member) -> JoinResult:
        members = (
            [(m.member_id, m.group_instance_id, m.metadata(group.protocol)) for m in group.members.values()]
            if member.member_id == group.leader
            else []
        )
        return JoinResult(
            kerr.NONE, group.generation, group.protocol_type, group.protocol, group.leader or "", member.member_id,
            members,
        )  # fmt: skip

    def _prepare(self, group: Group) -> None:
        """Start a round (or extend the initial wait of a group that had no members)."""
        now = self._now()
        if group.state != PREPARING:
            for m in group.members.values():
                self._answer_sync(m, SyncResult(kerr.REBALANCE_IN_PROGRESS))
            initial = group.state == EMPTY
            group.state = PREPARING
            self.rebalances += 1
            if initial and self.initial_delay_s > 0:
                group.initial_wait_until = now + self.initial_delay_s * INITIAL_DELAY_MAX_FACTOR
                self._end_round_in(group, self.initial_delay_s)
            else:
                group.initial_wait_until = 0.0
                self._end_round_in(group, max(m.rebalance_timeout_ms for m in group.members.values()) / 1000)
        elif group.initial_wait_until > now:  # a member joined during the initial wait: wait a little more
            self._end_round_in(group, min(self.initial_delay_s, group.initial_wait_until - now))

    def _end_round_in(self, group: Group, delay_s: float) -> None:
        if group.round_ends is not None:
            group.round_ends.cancel()
        group.round_ends = asyncio.get_running_loop().call_later(delay_s, self._end_round, group)

    def _maybe_end_round(self, group: Group) -> None:
        if group.initial_wait_until > self._now():
            return  # the initial wait runs its course
        if all(m.join is not None for m in group.members.values()):
            self._end_round(group)

    def _end_round(self, group: Group) -> None:
        if group.state != PREPARING:
            return
        if group.round_ends is not None:
            group.round_ends.cancel()
            group.round_ends = None
        group.initial_wait_until = 0.0
        for m in [m for m in group.members.values() if m.join is None]:
            del group.members[m.member_id]  # did not rejoin within the rebalance timeout
        group.generation += 1
        if not group.members:
            group.state, group.protocol, group.leader, group.protocol_type = EMPTY, None, None, None
            return
        group.protocol = self._vote(group)
        if group.leader not in group.members:
            group.leader = next(iter(group.members))
        group.state = COMPLETING
        for m in group.members.values():
            m.assignment = b""
            m.last_seen = self._now()
            self._answer_join(m, self._joined(group, m))

    @staticmethod
    def _common(names: set[str], group: Group, skip: str = "") -> set[str]:
        for m in group.members.values():
            if m.member_id != skip:
                names = names & {n for n, _ in m.protocols}
        return names

    def _vote(self, group: Group) -> str:
        """The protocol every member supports that most members prefer (Kafka's rule)."""
        candidates = self._common({n for n, _ in next(iter(group.members.values())).protocols}, group)
        votes: dict[str, int] = {}
        for m in group.members.values():
            choice = next(n for n, _ in m.protocols if n in candidates)
            votes[choice] = votes.get(choice, 0) + 1
        first = next(iter(group.members.values()))
        return max(votes, key=lambda n: (votes[n], -[p for p, _ in first.protocols].index(n)))

    # -- syncing, heartbeats, leaving -------------------------------------------------------------
    async def sync(self, group_id: str, generation: int, member_id: str, assignments: dict[str, bytes]) -> SyncResult:
        group, member, error = self._check(group_id, generation, member_id)
        if group is None or member is None:
            return SyncResult(error)
        if group.state == PREPARING:
            return SyncResult(kerr.REBALANCE_IN_PROGRESS)
        if group.state == STABLE:
            return SyncResult(kerr.NONE, member.assignment, group.protocol_type, group.protocol)
        member.last_seen = self._now()
        self._answer_sync(member, SyncResult(kerr.REBALANCE_IN_PROGRESS))
        member.sync = asyncio.get_running_loop().create_future()
        future = member.sync
        if member_id == group.leader:
            for m in group.members.values():
                m.assignment = assignments.get(m.member_id, b"")
            group.state = STABLE
            for m in group.members.values():
                self._answer_sync(m, SyncResult(kerr.NONE, m.assignment, group.protocol_type, group.protocol))
        return await future

    def heartbeat(self, group_id: str, generation: int, member_id: str) -> int:
        group, member, error = self._check(group_id, generation, member_id)
        if group is None or member is None:
            return error
        member.last_seen = self._now()
        return kerr.REBALANCE_IN_PROGRESS if group.state == PREPARING else kerr.NONE

    def check_commit(self, group_id: str, generation: int, member_id: str) -> int:
        """Whether an OffsetCommit from this member and generation may go through (error code). A commit
        naming no member (generation -1) is an admin's, allowed only while the group has no members."""
        group = self._groups.get(group_id)
        if generation < 0 and not member_id:
            return kerr.NONE if group is None or not group.members else kerr.NON_EMPTY_GROUP
        group, member, error = self._check(group_id, generation, member_id)
        if group is None or member is None:
            return error
        if group.state == COMPLETING:
            return kerr.REBALANCE_IN_PROGRESS
        member.last_seen = self._now()
        return kerr.NONE

    def leave(self, group_id: str, member_ids: list[str]) -> list[int]:
        group = self._groups.get(group_id)
        codes = []
        for member_id in member_ids:
            member = group.members.get(member_id) if group is not None else None
            if group is None or member is None:
                codes.append(kerr.UNKNOWN_MEMBER_ID)
                continue
            self._remove(group, member)
            codes.append(kerr.NONE)
        return codes

    def _remove(self, group: Group, member: Member) -> None:
        del group.members[member.member_id]
        self._answer_join(member, JoinResult(kerr.UNKNOWN_MEMBER_ID))
        self._answer_sync(member, SyncResult(kerr.UNKNOWN_MEMBER_ID))
        if group.leader == member.member_id:
            group.leader = None
        if not group.members:
            if group.round_ends is not None:
                group.round_ends.cancel()
                group.round_ends = None
            group.state, group.protocol, group.leader, group.protocol_type = EMPTY, None, None, None
            group.generation += 1
            return
        if group.state == PREPARING:
            self._maybe_end_round(group)
        else:
            self._prepare(group)

    def _check(self, group_id: str, generation: int, member_id: str) -> tuple[Group | None, Member | None, int]:
        group = self._groups.get(group_id)
        member = group.members.get(member_id) if group is not None else None
        if group is None or member is None:
            return None, None, kerr.UNKNOWN_MEMBER_ID
        if generation != group.generation:
            return group, None, kerr.ILLEGAL_GENERATION
        return group, member, kerr.NONE

    @staticmethod
    def _answer_join(member: Member, result: JoinResult) -> None:
        if member.join is not None:
            if not member.join.done():
                member.join.set_result(result)
            member.join = None

    @staticmethod
    def _answer_sync(member: Member, result: SyncResult) -> None:
        if member.sync is not None:
            if not member.sync.done():
                member.sync.set_result(result)
            member.sync = None

    def expire(self) -> list[str]:
        """Remove members whose session ran out (not those waiting in a join: the round times them out)."""
        now = self._now()
        gone = []
        for group in list(self._groups.values()):
            for m in list(group.members.values()):
                if m.join is None and now - m.last_seen > m.session_timeout_ms / 1000:
                    gone.append(m.member_id)
                    self._remove(group, m)
        return gone

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_TICK_S)
            self.expire()

    # -- administration ---------------------------------------------------------------------------
    def has_members(self, group_id: str) -> bool:
        group = self._groups.get(group_id)
        return group is not None and bool(group.members)

    def groups(self) -> list[Group]:
        return [g for g in self._groups.values() if g.members]

    def get(self, group_id: str) -> Group | None:
        return self._groups.get(group_id)

    def describe(self, group_id: str) -> dict | None:
        """The group as tidelog's own coordinator describes its groups (`tidelog groups describe`), its
        members' subscriptions and assignments read from the consumer protocol; None without members.
        Called from the engine's threads: reads a copy of the members, never changes anything."""
        group = self._groups.get(group_id)
        members = list(group.members.values()) if group is not None else []
        if group is None or not members:
            return None
        described = []
        for m in sorted(members, key=lambda m: m.member_id):
            topics = (
                consumer_protocol.subscription(m.metadata(group.protocol)) if group.protocol_type == "consumer" else []
            )
            assignment = consumer_protocol.assignment(m.assignment) if group.protocol_type == "consumer" else []
            described.append({"member_id": m.member_id, "client_id": m.client_id, "topics": topics,
                              "assignment": assignment, "target": assignment})  # fmt: skip
        state = {STABLE: "stable", EMPTY: "empty"}.get(group.state, "rebalancing")
        return {"state": state, "generation": group.generation, "assignor": group.protocol or "", "members": described}

    def forget(self, group_id: str) -> None:
        """Drop an empty group (DeleteGroups)."""
        group = self._groups.get(group_id)
        if group is not None and not group.members:
            del self._groups[group_id]
