"""The group coordinator: membership, generations, session timeouts, rebalances, commits and lag.

Assignment is computed here, on the broker (as Kafka's KIP-848 does), by a deterministic assignor,
and re-run whenever members, subscriptions or partition counts change; each change starts a new
generation. A partition is never owned by two members at once: a member is granted a partition of
its target assignment only once no other member holds it, and a member holds a partition from the
moment it is granted until it reports (in a heartbeat) that it stopped consuming it. So the old owner
revokes first; the new owner gets the partition on its next heartbeat after that.

Fencing: heartbeats and commits must name a known member and the group's current generation;
commits only for partitions the member holds (granted, or being revoked and not yet released). A member missing heartbeats for its
session_timeout_ms is removed (on the next `expire()`, which the server runs periodically and every
call runs first), and a zombie's later calls are refused. Sessions run on a monotonic clock, so a
jump of the wall clock never expires a member early. The member side (client/member.py) stops
delivering before its session can run out, so nobody consumes a partition that was given away.

Membership survives a broker restart: every change of a group (members, what each holds, generation,
assignment) is written to `__consumer_offsets` (groups/offset_store.py) *before* a grant that
depends on it is returned, and on start every stored member gets a fresh session from then. So a
member that was consuming when the broker stopped still holds its partitions after the restart,
nobody else is granted them, and it simply goes on heartbeating with its id (no rebalance); a
member that does not come back expires one session timeout after the start and its partitions move.

Members that start together share from the start: when a member joins a group without members,
nobody is granted anything for initial_rebalance_delay_ms (the broker's
group_initial_rebalance_delay_ms, Kafka's group.initial.rebalance.delay.ms), and each member joining
meanwhile restarts that wait, up to INITIAL_DELAY_MAX_FACTOR times the delay in all. Otherwise the
first member would take every partition and the others would wait for it to give them up.

Deleting a topic deletes every group's committed offsets of it (tombstones in `__consumer_offsets`,
so the deletion survives a restart), as Kafka does: a topic created again under the same name starts
each group at its auto_offset_reset, never at an offset of the old log. Offsets of topics that no
longer exist at start (the broker stopped between the two) are deleted then.

Thread-safe (one lock). Time is injected, so tests move a manual clock instead of sleeping.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..engine.engine import Engine, is_internal_topic
from ..errors import (
    GroupNotEmptyError,
    InvalidRequestError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    PartitionNotAssignedError,
    StaleGenerationError,
    TidelogError,
    UnknownGroupError,
    UnknownMemberError,
    UnknownTopicError,
)
from ..values import MemberState, TopicPartition
from .assignor import ASSIGNORS
from .offset_store import OffsetStore

log = logging.getLogger("tidelog.groups")

DEFAULT_SESSION_TIMEOUT_MS = 10_000
MIN_SESSION_TIMEOUT_MS = 100
MAX_SESSION_TIMEOUT_MS = 300_000
INITIAL_DELAY_MAX_FACTOR = 10  # joins keep postponing a new group's first assignment up to this many delays


def monotonic_ms() -> int:
    """The coordinator's default clock: sessions must not expire when the wall clock jumps."""
    return time.monotonic_ns() // 1_000_000


@dataclass
class _Member:
    member_id: str
    client_id: str
    topics: tuple[str, ...]
    session_timeout_ms: int
    last_seen_ms: int
    granted: list[TopicPartition] = field(default_factory=list)
    reported: set[TopicPartition] = field(default_factory=set)
    token_hash: str | None = None  # SHA-256 of its session token (None: restored from an older record)

    def holding(self) -> set[TopicPartition]:
        return set(self.granted) | self.reported

    def shows(self, token: str | None) -> bool:
        """Whether a caller showing `token` is this member (None: a caller in this process, trusted)."""
        if token is None:
            return True
        return self.token_hash is not None and hmac.compare_digest(self.token_hash, _token_hash(token))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class _Group:
    group_id: str
    assignor: str = "sticky"
    generation: int = 0
    members: dict[str, _Member] = field(default_factory=dict)
    target: dict[str, list[TopicPartition]] = field(default_factory=dict)
    partition_counts: dict[str, int] = field(default_factory=dict)
    rebalances: int = 0
    stored: dict | None = None  # what __consumer_offsets holds for the group (None: no members)
    forming_since_ms: int = 0  # when the first member of a group without members joined
    forming_until_ms: int = 0  # nothing is granted before this (clock ms): members starting together share

    def snapshot(self) -> dict | None:
        """The group as its membership record stores it (groups/records.py); None without members."""
        if not self.members:
            return None
        return {
            "generation": self.generation,
            "assignor": self.assignor,
            "rebalances": self.rebalances,
            "partitions": dict(sorted(self.partition_counts.items())),
            "target": {m: [list(tp) for tp in sorted(tps)] for m, tps in sorted(self.target.items())},
            "members": [
                {
                    "member_id": m.member_id,
                    "client_id": m.client_id,
                    "topics": list(m.topics),
                    "session_timeout_ms": m.session_timeout_ms,
                    "granted": [list(tp) for tp in sorted(m.granted)],
                    "reported": [list(tp) for tp in sorted(m.reported)],
                    "token_hash": m.token_hash,
                }
                for m in sorted(self.members.values(), key=lambda m: m.member_id)
            ],
        }

    @classmethod
    def restore(cls, group_id: str, state: dict, now_ms: int) -> _Group:
        """A group from its membership record; every member's session starts afresh at now_ms."""
        group = cls(
            group_id,
            state["assignor"],
            state["generation"],
            rebalances=state["rebalances"],
            partition_counts=dict(state["partitions"]),
            stored=state,
        )
        group.target = {m: [(t, p) for t, p in tps] for m, tps in state["target"].items()}
        for m in state["members"]:
            group.members[m["member_id"]] = _Member(
                m["member_id"],
                m["client_id"],
                tuple(m["topics"]),
                m["session_timeout_ms"],
                now_ms,
                [(t, p) for t, p in m["granted"]],
                {(t, p) for t, p in m["reported"]},
                m.get("token_hash"),
            )
        return group


class Topics(Protocol):
    """What the coordinator asks about the topics groups consume: the engine on a single broker; in a
    cluster, a view of the whole cluster (the coordinator's broker may host none of those topics)."""

    def list_topics(self) -> list[str]: ...
    def partitions(self, name: str) -> int: ...
    def list_offsets(self, topic: str, partition: int, at: Any = None) -> Any: ...
    def record_timestamp(self, topic: str, partition: int, offset: int) -> int | None: ...
    def clock(self) -> int: ...
    def on_topic_deleted(self, listener: Callable[[str], None]) -> None: ...


class GroupCoordinator:
    def __init__(
        self,
        engine: Engine,
        offsets: OffsetStore | None = None,
        clock: Callable[[], int] | None = None,
        *,
        initial_rebalance_delay_ms: int = 0,
        topics: Topics | None = None,
    ) -> None:
        """initial_rebalance_delay_ms: how long a group without members waits before its first
        assignment (the broker passes group_initial_rebalance_delay_ms; embedded, 0: the application
        starts its members itself)."""
        if (
            isinstance(initial_rebalance_delay_ms, bool)
            or not isinstance(initial_rebalance_delay_ms, int)
            or initial_rebalance_delay_ms < 0
        ):
            raise InvalidRequestError(f"initial_rebalance_delay_ms must be >= 0, got {initial_rebalance_delay_ms!r}")
        self.engine: Topics = topics if topics is not None else engine
        self.offsets = offsets or OffsetStore(engine)
        self.clock = clock or monotonic_ms  # sessions only; record timestamps come from engine.clock()
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self.foreign_members: Callable[[str], bool] = lambda group_id: False
        """Whether a group has members of another protocol (the Kafka listener's): they may not mix."""
        self.foreign_describe: Callable[[str], dict | None] = lambda group_id: None
        """The members of a group of another protocol, described as `describe` lists its own (state,
        generation, assignor, members), or None: `tidelog groups describe` shows Kafka groups too."""
        self._lock = threading.RLock()
        self._groups: dict[str, _Group] = {}
        self._ids = itertools.count(1)
        now = self.clock()
        for group_id, state in sorted(self.offsets.memberships().items()):
            group = self._groups[group_id] = _Group.restore(group_id, state, now)
            log.info(
                "group membership restored: every member keeps what it held, with a fresh session",
                extra={
                    "event": "group_restored",
                    "group": group_id,
                    "generation": group.generation,
                    "members": sorted(group.members),
                },
            )
        for topic in sorted(self.offsets.topics() - set(self.engine.list_topics())):
            self._topic_deleted(topic)  # deleted while the broker was stopping, before its offsets were
        self.engine.on_topic_deleted(self._topic_deleted)

    # -- membership ------------------------------------------------------------------------------
    def join(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
        assignor: str = "sticky",
        client_id: str = "",
        member_id: str | None = None,
        owned: Iterable[TopicPartition] = (),
        token: str | None = None,
    ) -> MemberState:
        """Join (or rejoin with member_id) and get the member's current grant. A new member's state
        carries its session token. token: what a caller across the network showed ("" for none); a
        rejoin, heartbeat, commit or leave must show the member's (None: a caller in this process)."""
        _check_group_id(group_id)
        if assignor not in ASSIGNORS:
            raise InvalidRequestError(f"assignor must be one of {', '.join(ASSIGNORS)}, got {assignor!r}")
        if not MIN_SESSION_TIMEOUT_MS <= session_timeout_ms <= MAX_SESSION_TIMEOUT_MS:
            raise InvalidRequestError(
                f"session_timeout_ms must be within {MIN_SESSION_TIMEOUT_MS}.."
                f"{MAX_SESSION_TIMEOUT_MS}, got {session_timeout_ms}"
            )
        topics = tuple(sorted(set(topics)))
        if not topics:
            raise InvalidRequestError("a member subscribes to at least one topic")
        _refuse_internal(topics, "consumed by a group (its offsets could not be committed)")
        for t in topics:
            self.engine.partitions(t)  # UnknownTopicError for a topic that does not exist
        if self.foreign_members(group_id):
            raise InvalidRequestError(
                f"group {group_id!r} has members of Kafka's group protocol (Kafka clients); one group id, one protocol"
            )
        with self._lock:
            self.expire()
            group = self._groups.setdefault(group_id, _Group(group_id, assignor))
            member = group.members.get(member_id) if member_id else None
            if member_id and (member is None or not member.shows(token)):
                raise UnknownMemberError(
                    f"group {group_id!r} has no member {member_id!r}; join as a new member", group=group_id
                )
            now = self.clock()
            new_token = ""
            if member is None:
                self._postpone_first_assignment(group, now)
                member_id = f"{client_id or 'member'}-{next(self._ids)}-{secrets.token_hex(4)}"
                new_token = secrets.token_urlsafe(24)
                member = _Member(member_id, client_id, topics, session_timeout_ms, now)
                member.token_hash = _token_hash(new_token)
                group.members[member_id] = member
                log.info(
                    "member joined",
                    extra={
                        "event": "member_joined",
                        "group": group_id,
                        "member": member_id,
                        "client_id": client_id,
                        "topics": list(topics),
                        "session_timeout_ms": session_timeout_ms,
                    },
                )
                self._rebalance(group, "member_joined")
            else:
                member.last_seen_ms = now
                member.reported = set(owned)
                if member.topics != topics or member.session_timeout_ms != session_timeout_ms:
                    member.topics, member.session_timeout_ms = topics, session_timeout_ms
                    self._rebalance(group, "subscription_changed")
            state = self._grant(group, member)
            self._store(group)  # before the grant leaves: a restarted broker must know who holds what
            return state._replace(session_token=new_token)

    def heartbeat(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        owned: Iterable[TopicPartition],
        token: str | None = None,
    ) -> MemberState:
        """Keep the member alive and report what it consumes; returns its grant for this generation.

        A member whose generation is behind gets StaleGenerationError and rejoins (join with its
        member_id) to learn the new generation and assignment.
        """
        with self._lock:
            self.expire()
            group, member = self._member(group_id, member_id, token)
            member.last_seen_ms = self.clock()
            member.reported = set(owned)
            self._check_partition_counts(group)
            if generation != group.generation:
                self._store(group)
                raise StaleGenerationError(
                    f"generation {generation} is stale; group {group_id!r} is at generation {group.generation}",
                    group=group_id,
                    generation=group.generation,
                )
            state = self._grant(group, member)
            self._store(group)  # before the grant leaves: a restarted broker must know who holds what
            return state

    def leave(self, group_id: str, member_id: str, token: str | None = None) -> None:
        with self._lock:
            group, member = self._member(group_id, member_id, token)
            del group.members[member_id]
            log.info("member left", extra={"event": "member_left", "group": group_id, "member": member_id})
            self._rebalance(group, "member_left")
            self._store(group)

    def expire(self) -> list[str]:
        """Remove members whose session timed out; returns their ids."""
        now = self.clock()
        gone = []
        with self._lock:
            for group in self._groups.values():
                dead = [m for m in group.members.values() if now - m.last_seen_ms > m.session_timeout_ms]
                for m in dead:
                    del group.members[m.member_id]
                    gone.append(m.member_id)
                    log.info(
                        "member expired: no heartbeat within its session timeout",
                        extra={
                            "event": "member_expired",
                            "group": group.group_id,
                            "member": m.member_id,
                            "session_timeout_ms": m.session_timeout_ms,
                            "silent_ms": now - m.last_seen_ms,
                        },
                    )
                if dead:
                    self._rebalance(group, "member_expired")
                    self._store(group)
        return gone

    def _store(self, group: _Group) -> None:
        """Write the group's membership record if it changed (a steady heartbeat changes nothing)."""
        snapshot = group.snapshot()
        if snapshot != group.stored:
            self.offsets.save_membership(group.group_id, snapshot)
            group.stored = snapshot

    def _member(self, group_id: str, member_id: str, token: str | None = None) -> tuple[_Group, _Member]:
        """The member, when the caller shows its token; otherwise the same refusal as for no such member,
        so that a member id read from DescribeGroup tells a caller nothing more."""
        group = self._groups.get(group_id)
        member = group.members.get(member_id) if group is not None else None
        if group is None or member is None or not member.shows(token):
            raise UnknownMemberError(
                f"group {group_id!r} has no member {member_id!r} (it left or its session "
                f"timed out); rejoin as a new member",
                group=group_id,
            )
        return group, member

    def _check_partition_counts(self, group: _Group) -> None:
        counts = self._counts(group)
        if counts != group.partition_counts:
            self._rebalance(group, "partitions_changed")

    def _counts(self, group: _Group) -> dict[str, int]:
        counts = {}
        for t in sorted({t for m in group.members.values() for t in m.topics}):
            try:
                counts[t] = self.engine.partitions(t)
            except UnknownTopicError:
                pass  # deleted: its partitions simply leave the assignment
        return counts

    def _rebalance(self, group: _Group, reason: str) -> None:
        old = group.target
        group.generation += 1
        group.rebalances += 1
        group.partition_counts = self._counts(group)
        subscriptions = {m.member_id: m.topics for m in group.members.values()}
        group.target = ASSIGNORS[group.assignor](subscriptions, group.partition_counts, group.target)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "rebalance",
                extra={
                    "event": "rebalance",
                    "group": group.group_id,
                    "reason": reason,
                    "generation": group.generation,
                    "members": len(group.members),
                    "old_assignment": _show(old),
                    "new_assignment": _show(group.target),
                },
            )

    def _postpone_first_assignment(self, group: _Group, now: int) -> None:
        """A member is joining: if the group has no members (or is still waiting for them), wait
        initial_rebalance_delay_ms from now before granting anything, so that members starting
        together share instead of the first taking everything."""
        delay = self.initial_rebalance_delay_ms
        if not delay:
            return
        if not group.members:
            group.forming_since_ms = now
        elif now >= group.forming_until_ms:
            return
        group.forming_until_ms = min(now + delay, group.forming_since_ms + INITIAL_DELAY_MAX_FACTOR * delay)

    def _grant(self, group: _Group, member: _Member) -> MemberState:
        interval_ms = max(member.session_timeout_ms // 3, 1)
        wait_ms = group.forming_until_ms - self.clock()
        if wait_ms > 0:  # the group is still waiting for the members starting with it
            member.granted = []
            return MemberState(member.member_id, group.generation, [], max(min(interval_ms, wait_ms), 1))
        held_by_others = set()
        for other in group.members.values():
            if other is not member:
                held_by_others |= other.holding()
        member.granted = [tp for tp in group.target.get(member.member_id, []) if tp not in held_by_others]
        return MemberState(member.member_id, group.generation, list(member.granted), interval_ms)

    def _topic_deleted(self, topic: str) -> None:
        """Delete every group's committed offsets of a deleted topic, and take its partitions out of the
        assignments now (a topic created again under the name is a new log: no old offset applies)."""
        with self._lock:
            try:
                forgotten = self.offsets.forget_topic(topic)
                for group in self._groups.values():
                    if any(topic in m.topics for m in group.members.values()):
                        self._check_partition_counts(group)
                        self._store(group)
            except TidelogError as exc:  # the topic is gone anyway; the next start deletes what is left
                log.error(
                    "could not delete the committed offsets of deleted topic %s: %s",
                    topic,
                    exc.message,
                    extra={"event": "topic_offsets_delete_failed", "topic": topic, "error": exc.message},
                )
                return
        if forgotten:
            log.info(
                "committed offsets of a deleted topic deleted",
                extra={"event": "topic_offsets_deleted", "topic": topic, "groups": sorted(forgotten)},
            )

    # -- offsets ---------------------------------------------------------------------------------
    def commit(
        self,
        group_id: str,
        member_id: str | None,
        generation: int,
        offsets: dict[TopicPartition, int],
        metadata: str = "",
        token: str | None = None,
    ) -> None:
        """Commit offsets (next to consume). Members must be current and own the partitions; with no
        member_id, only a group without active members may be committed to (admin tools)."""
        _refuse_internal([t for t, _ in offsets], "committed to")
        with self._lock:
            self.expire()
            group = self._groups.get(group_id)
            if member_id:
                group, member = self._member(group_id, member_id, token)
                if generation != group.generation:
                    raise StaleGenerationError(
                        f"commit from generation {generation}; group {group_id!r} is at {group.generation}",
                        group=group_id,
                        generation=group.generation,
                    )
                # Granted, or still held while being revoked: nobody else consumes those partitions yet.
                foreign = sorted(set(offsets) - member.holding())
                if foreign:
                    raise PartitionNotAssignedError(
                        f"member {member_id} does not own {', '.join(f'{t}[{p}]' for t, p in foreign)}", group=group_id
                    )
            elif group is not None and group.members:
                raise GroupNotEmptyError(f"group {group_id!r} has active members", group=group_id)
            for (topic, partition), offset in offsets.items():
                o = self.engine.list_offsets(topic, partition)
                if not 0 <= offset <= o.high_watermark:  # below log start is allowed (data aged out)
                    raise OffsetOutOfRangeError(
                        f"offset {offset} for {topic}[{partition}] is out of range; valid offsets are "
                        f"{o.log_start} to {o.high_watermark}",
                        log_start=o.log_start,
                        log_end=o.high_watermark,
                    )
            self.offsets.commit(group_id, offsets, metadata)

    def committed(self, group_id: str, partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        return {tp: c.offset for tp, c in self.offsets.fetch(group_id, partitions).items()}

    # -- administration --------------------------------------------------------------------------
    def list_groups(self) -> list[str]:
        with self._lock:
            active = {g for g, grp in self._groups.items() if grp.members}
        return sorted(active | set(self.offsets.groups()))

    def describe(self, group_id: str) -> dict:
        """Members, generation, assignment, and per partition committed/end offsets and lag."""
        with self._lock:
            self.expire()
            group = self._groups.get(group_id)
            committed = self.offsets.fetch(group_id)
            foreign = self.foreign_describe(group_id) if group is None or not group.members else None
            if (group is None or not group.members) and not committed and foreign is None:
                raise UnknownGroupError(f"unknown group {group_id!r}", group=group_id)
            members = (
                []
                if group is None
                else [
                    {
                        "member_id": m.member_id,
                        "client_id": m.client_id,
                        "topics": list(m.topics),
                        "assignment": sorted(m.granted),
                        "target": sorted(group.target.get(m.member_id, [])),
                    }
                    for m in sorted(group.members.values(), key=lambda m: m.member_id)
                ]
            )
            owners = {tp: m["member_id"] for m in members for tp in m["assignment"]}
            topics = set(tp[0] for tp in committed) | (
                {t for m in group.members.values() for t in m.topics} if group else set()
            )
            state = (
                "empty"
                if not members
                else ("stable" if all(m["assignment"] == m["target"] for m in members) else "rebalancing")
            )
            info: dict[str, Any] = {
                "group_id": group_id,
                "state": state,
                "generation": group.generation if group else 0,
                "assignor": group.assignor if group else "",
                "rebalances": group.rebalances if group else 0,
                "members": members,
                "partitions": [],
            }
            if foreign is not None:
                info.update(foreign)
                owners = {tp: m["member_id"] for m in foreign["members"] for tp in m["assignment"]}
                topics |= {t for m in foreign["members"] for t in m["topics"]}
        now = self.engine.clock()  # compared with record timestamps
        for topic in sorted(topics):
            try:
                count = self.engine.partitions(topic)
            except UnknownTopicError:
                continue
            for p in range(count):
                end = self.engine.list_offsets(topic, p).high_watermark
                c = committed.get((topic, p))
                lag = None if c is None else max(end - c.offset, 0)
                info["partitions"].append(
                    {
                        "topic": topic,
                        "partition": p,
                        "committed": None if c is None else c.offset,
                        "end": end,
                        "lag": lag,
                        "time_lag_ms": self._time_lag(topic, p, c, end, now),
                        "owner": owners.get((topic, p)),
                    }
                )
        return info

    def _time_lag(self, topic: str, partition: int, committed, end: int, now: int) -> int | None:
        """How old the oldest unconsumed record is (0 when caught up)."""
        if committed is None:
            return None
        if committed.offset >= end:
            return 0
        try:
            timestamp = self.engine.record_timestamp(topic, partition, committed.offset)
        except UnknownTopicError:
            return None
        return None if timestamp is None else max(now - timestamp, 0)

    def delete_group(self, group_id: str) -> None:
        with self._lock:
            self.expire()
            group = self._groups.get(group_id)
            if group is not None and group.members:
                raise GroupNotEmptyError(
                    f"group {group_id!r} has {len(group.members)} active member(s)", group=group_id
                )
            if group is None and group_id not in self.offsets.groups():
                raise UnknownGroupError(f"unknown group {group_id!r}", group=group_id)
            self._groups.pop(group_id, None)
            self.offsets.delete(group_id)
        log.info("group deleted", extra={"event": "group_deleted", "group": group_id})

    def reset_offsets(
        self,
        group_id: str,
        topic: str,
        to: str | int,
        *,
        partitions: Sequence[int] | None = None,
        timestamp_ms: int | None = None,
    ) -> dict[TopicPartition, int]:
        """Set committed offsets of an inactive group: to "earliest", "latest", an offset (clamped
        into each partition's range, as Kafka's tool does) or "timestamp" (with timestamp_ms >= 0)."""
        _refuse_internal([topic], "committed to")
        if to == "timestamp" and (
            isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int) or timestamp_ms < 0
        ):
            # The engine reads -1 and -2 as "latest" and "earliest": a negative time must not pass as one.
            raise InvalidRequestError(f"timestamp_ms must be a time in ms since the epoch (>= 0), got {timestamp_ms!r}")
        with self._lock:
            self.expire()
            group = self._groups.get(group_id)
            if group is not None and group.members:
                raise GroupNotEmptyError(f"group {group_id!r} has active members; stop them first", group=group_id)
            count = self.engine.partitions(topic)
            chosen = list(range(count)) if partitions is None else list(partitions)
            offsets = {}
            for p in chosen:
                o = self.engine.list_offsets(topic, p)
                if to == "earliest":
                    value = o.log_start
                elif to == "latest":
                    value = o.high_watermark
                elif to == "timestamp":
                    found = self.engine.list_offsets(topic, p, timestamp_ms)
                    value = o.high_watermark if found is None else found
                elif isinstance(to, int) and not isinstance(to, bool):
                    value = min(max(to, o.log_start), o.high_watermark)
                else:
                    raise InvalidRequestError(f"reset to 'earliest', 'latest', 'timestamp' or an offset, not {to!r}")
                offsets[(topic, p)] = value
            self.offsets.commit(group_id, offsets, "reset")
        log.info(
            "committed offsets reset",
            extra={
                "event": "offsets_reset",
                "group": group_id,
                "topic": topic,
                "to": to,
                "offsets": {str(p): o for (_, p), o in offsets.items()},
            },
        )
        return offsets

    def has_members(self, group_id: str) -> bool:
        """Whether the group has members now (of tidelog's own protocol)."""
        with self._lock:
            self.expire()
            group = self._groups.get(group_id)
            return group is not None and bool(group.members)

    def rebalances(self, group_id: str) -> int:
        with self._lock:
            group = self._groups.get(group_id)
            return group.rebalances if group else 0


def _show(assignment: dict[str, list[TopicPartition]]) -> dict[str, list[str]]:
    """An assignment as log lines print it: member → ["topic-partition", ...], sorted."""
    return {m: [f"{t}-{p}" for t, p in sorted(tps)] for m, tps in sorted(assignment.items())}


def _refuse_internal(topics, action: str) -> None:
    internal = [t for t in topics if is_internal_topic(t)]
    if internal:
        raise InvalidTopicError(
            f"topic {internal[0]!r} is internal (its name starts with '__'): it cannot be {action}", topic=internal[0]
        )


def _check_group_id(group_id: object) -> None:
    if not isinstance(group_id, str) or not group_id or len(group_id) > 249:
        raise InvalidRequestError("group_id must be a non-empty string of at most 249 characters")
