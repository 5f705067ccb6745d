"""Gives each partition this broker hosts its role from the cluster's state in etcd, and serves the
replication protocol's leader side.

On every new snapshot of the cluster (cluster/metadata.py) the manager creates the local copies of
topics that place a replica here, makes this broker the leader of the partitions etcd says it leads
(stamping the new epoch into the partition's epoch file) and a follower of the rest, and stops a role
whose epoch ended. A leader:

- refuses produce unless it leads now: etcd names it, and its local lease deadline has not passed (a
  deposed leader stops acknowledging before anyone else can be elected);
- refuses acks=all before appending when the ISR is smaller than the topic's min_insync_replicas, and
  answers acks=all only once the high watermark passed the records (and the ISR was still big enough);
- moves the high watermark as followers fetch, and shrinks or expands its ISR in etcd (fenced on the
  partition's mod_revision) by the rules in replication/leader.py.

Waiting producers of an epoch that ended are answered NOT_LEADER: their records may or may not
survive (the idempotent producer makes the retry safe).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..cluster import controller as etcd_writes
from ..cluster.membership import BrokerSession
from ..cluster.metadata import Snapshot
from ..cluster.placement import NO_LEADER, PartitionState, partition_key
from ..cluster.settings import THROTTLE, parse_rate
from ..engine.engine import Engine
from ..errors import (
    FencedLeaderEpochError,
    InvalidPartitionError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderError,
    RequestTimeoutError,
    TidelogError,
    TopicExistsError,
    UnknownLeaderEpochError,
    UnknownTopicError,
)
from .follower import Follower, LeaderLink
from .leader import LeaderState
from .throttle import MAX_WAIT_S, ReplicationThrottle

log = logging.getLogger("tidelog.replication")

ACKS_DEFAULT, ACKS_LEADER, ACKS_ALL, ACKS_NONE = 0, 1, 2, 3


@dataclass
class _Leading:
    state: PartitionState
    leader: LeaderState
    plog: Any
    high_watermark: int
    appended: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: list[tuple[int, asyncio.Future]] = field(default_factory=list)
    isr_write: asyncio.Task | None = None


@dataclass
class _Following:
    state: PartitionState
    follower: Follower


MUTATIONS = ("ack-before-replication", "skip-epoch-truncation")
"""Deliberately broken variants, for the tests that prove the history checker catches them: set by the
TIDELOG_TEST_MUTATION environment variable, never by configuration (tests/test_cluster_mutations.py)."""


@dataclass(frozen=True)
class ReplicationSettings:
    lag_time_ms: int = 10_000
    fetch_max_bytes: int = 1 << 20
    fetch_wait_ms: int = 500
    ack_timeout_ms: int = 10_000
    mutation: str = ""  # one of MUTATIONS: a broken broker, for the checker's own tests
    throttle_bytes_per_s: int = 0  # replication to catching-up followers (0: no limit; throttle.py)


def test_mutation() -> str:
    """The mutation TIDELOG_TEST_MUTATION asks for ("" for none); an unknown name is refused."""
    name = os.environ.get("TIDELOG_TEST_MUTATION", "")
    if name and name not in MUTATIONS:
        raise ValueError(f"TIDELOG_TEST_MUTATION must be one of {', '.join(MUTATIONS)}, got {name!r}")
    if name:
        log.error(
            "THIS BROKER IS BROKEN ON PURPOSE (TIDELOG_TEST_MUTATION=%s): it may lose acknowledged records",
            name,
            extra={"event": "test_mutation", "mutation": name},
        )
    return name


class ReplicaManager:
    """Event-loop only. `offload` runs blocking partition calls in the engine's thread pool."""

    def __init__(
        self,
        engine: Engine,
        offload: Callable[..., Awaitable[Any]],
        session: BrokerSession,
        link: Callable[[str], LeaderLink],
        settings: ReplicationSettings,
        on_stale: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine, self._offload, self.session, self._link = engine, offload, session, link
        self.settings = settings
        self._on_stale = on_stale  # ask for a fresh read of etcd
        self._clock = clock
        self.snapshot = Snapshot()
        self._leading: dict[tuple[str, int], _Leading] = {}
        self._following: dict[tuple[str, int], _Following] = {}
        self._known_topics: set[str] = set()  # topics seen in etcd by this run (deleted locally when they go)
        self._named: set[str] = set()  # topics this run saw name this broker as a replica
        self._hw: dict[tuple[str, int], int] = {}  # the last high watermark known per partition
        self._maintenance: asyncio.Task | None = None
        self.isr_shrinks = self.isr_expands = 0
        self.throttle = ReplicationThrottle(settings.throttle_bytes_per_s, clock)
        # (topic, partition) → (called with the epoch when this broker starts leading it, called when it stops)
        self._leadership: dict[tuple[str, int], tuple[Callable[[int], None], Callable[[], None]]] = {}

    def on_leadership(
        self, topic: str, partition: int, gained: Callable[[int], None], lost: Callable[[], None]
    ) -> None:
        """Be told when this broker starts and stops leading a partition (the group coordinator lives
        with the leader of the group-state partition). Both run on the loop and must not block."""
        self._leadership[(topic, partition)] = (gained, lost)

    @property
    def broker_id(self) -> int:
        return self.session.broker_id

    @property
    def _own_storage(self) -> dict[int, str]:
        return {self.broker_id: self.session.storage_id}

    def start(self) -> None:
        self._maintenance = asyncio.ensure_future(self._maintain())

    async def close(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
        for key in list(self._following):
            await self._stop_following(key)
        for key in list(self._leading):
            self._stop_leading(key, "the broker is stopping")

    # -- acting on the cluster's state ---------------------------------------------------------------
    async def apply(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._apply_throttle(snapshot)
        await self._sync_topics(snapshot)
        hosted = set()
        for (topic, partition), state in snapshot.partitions.items():
            if self.broker_id not in state.replicas or topic not in self.engine.list_topics(include_internal=True):
                continue
            if partition >= self.engine.partitions(topic):
                continue  # added by `topics alter` and not (yet) in the local copy
            key = (topic, partition)
            hosted.add(key)
            if state.leader == self.broker_id and state.stale(self.broker_id, self._own_storage):
                # named leader, but from the data directory this broker had before a restart on an
                # emptied disk: leading now would lose every record it once held. The controller sees
                # the new registration and elects another in-sync replica.
                await self._stop_following(key)
                self._stop_leading(key, "this broker restarted on another data directory")
                log.error(
                    "not leading: this broker was in sync from another data directory",
                    extra={"event": "leadership_refused", "topic": topic, "partition": partition},
                )
            elif state.leader == self.broker_id:
                await self._lead(key, state)
            elif state.leader != NO_LEADER:
                await self._follow(key, state)
            else:
                await self._stop_following(key)
                self._stop_leading(key, "the partition has no leader")
        for key in set(self._leading) - hosted:
            self._stop_leading(key, "this broker no longer hosts the partition")
        for key in set(self._following) - hosted:
            await self._stop_following(key)
        await self._drop_moved_copies(snapshot)

    async def _drop_moved_copies(self, snapshot: Snapshot) -> None:
        """Delete the local copy of a topic that a reassignment moved entirely off this broker (its roles
        have just stopped). Only a topic this run saw name this broker as a replica and that names it in
        no partition now (the snapshot is one etcd revision); the engine only opened and so only deletes
        partition directories whose markers prove them this topic's. A broker that still holds another
        partition of the topic keeps the copy (the engine keeps topics whole). Internal topics are never
        deleted (the engine refuses): their copy stays, unused."""
        named = {t for (t, _), s in snapshot.partitions.items() if self.broker_id in s.replicas}
        local = set(self.engine.list_topics())
        retry = set()
        for name in sorted(self._named - named):
            if name not in snapshot.topics or name.startswith("__") or name not in local:
                continue  # deleted in the cluster (_sync_topics deletes it), internal, or no copy here
            if any(k[0] == name for k in [*self._leading, *self._following]):
                retry.add(name)
                continue
            try:
                await self._offload(self.engine.delete_topic, name)
            except UnknownTopicError:
                continue
            except TidelogError as exc:
                log.warning("cannot delete the copy of %s moved off this broker: %s", name, exc.message)
                retry.add(name)
                continue
            for key in [k for k in self._hw if k[0] == name]:
                del self._hw[key]
            log.warning(
                "topic copy deleted: a reassignment moved its replicas off this broker",
                extra={"event": "replica_topic_moved_off", "topic": name},
            )
        self._named = named | retry

    async def _sync_topics(self, snapshot: Snapshot) -> None:
        local = set(self.engine.list_topics(include_internal=True))
        for name, placement in snapshot.topics.items():
            self._known_topics.add(name)
            mine = any(self.broker_id in s.replicas for (t, _), s in snapshot.partitions.items() if t == name)
            if mine and name not in local:
                try:
                    await self._offload(
                        self.engine.create_topic,
                        name,
                        placement.partitions,
                        internal=name.startswith("__"),
                        **placement.config,
                    )
                except TopicExistsError:
                    pass
                log.info("topic copy created", extra={"event": "replica_topic_created", "topic": name})
            elif mine and not name.startswith("__") and self.engine.partitions(name) < placement.partitions:
                await self._grow_copy(name, placement.partitions)
        for name in sorted(local & self._known_topics - set(snapshot.topics)):
            # seen in etcd by this run and deleted there: the cluster deleted it
            self._known_topics.discard(name)
            for key in [k for k in self._leading if k[0] == name]:
                self._stop_leading(key, "the topic was deleted")
            for key in [k for k in self._following if k[0] == name]:
                await self._stop_following(key)
            try:
                await self._offload(self.engine.delete_topic, name)
            except UnknownTopicError:
                pass
            log.info("topic copy deleted", extra={"event": "replica_topic_deleted", "topic": name})

    def _apply_throttle(self, snapshot: Snapshot) -> None:
        """The replication throttle set in etcd at runtime (`tidelog cluster throttle`), else this
        broker's own setting; applied at once, logged when it changes."""
        stored = parse_rate(snapshot.settings.get(THROTTLE))
        rate = self.settings.throttle_bytes_per_s if stored is None else stored
        if rate != self.throttle.bucket.rate:
            log.warning(
                "replication throttle changed",
                extra={
                    "event": "replication_throttle_changed",
                    "bytes_per_s": rate,
                    "previous": self.throttle.bucket.rate,
                    "source": "broker config" if stored is None else "cluster (etcd)",
                },
            )
            self.throttle.bucket.set_rate(rate)

    async def _grow_copy(self, name: str, partitions: int) -> None:
        """The topic gained partitions (`topics alter`): add them to the local copy, as a create would
        have made them (every broker with a replica of the topic holds all its partitions)."""
        try:
            await self._offload(self.engine.alter_topic, name, partitions)
        except InvalidPartitionError:
            return  # grown meanwhile by an earlier snapshot
        log.info(
            "topic copy grown",
            extra={"event": "replica_topic_grown", "topic": name, "partitions": partitions},
        )

    def min_insync_replicas(self, topic: str, plog: Any) -> int:
        """The topic's min_insync_replicas as etcd has it now (`topics alter` changes it there, and the
        next snapshot applies it without a restart); the local copy's setting when etcd names none."""
        placement = self.snapshot.topics.get(topic)
        value = placement.config.get("min_insync_replicas") if placement is not None else None
        return int(value) if value is not None else plog.config.min_insync_replicas

    async def _lead(self, key: tuple[str, int], state: PartitionState) -> None:
        current = self._leading.get(key)
        if current is not None and current.state.leader_epoch == state.leader_epoch:
            if state.version < current.state.version:
                return  # read before this leader's own ISR change landed
            current.state = state  # the ISR, replicas (a reassignment) or version changed
            current.leader.isr = state.isr
            current.leader.set_replicas(state.replicas)
            await self._advance(key, current)
            return
        await self._stop_following(key)
        if current is not None:
            self._stop_leading(key, "a new epoch began")
        plog = self.engine.partition_log(*key)
        await self._offload(plog.become_leader, state.leader_epoch)
        epoch_start = plog.offset_range()[1]
        hw = max(self._hw.get(key, 0), plog.offset_range()[0])
        await self._offload(plog.set_replicated_high_watermark, min(hw, epoch_start))
        leader = LeaderState(
            self.broker_id,
            state.leader_epoch,
            epoch_start,
            state.isr,
            state.replicas,
            self.settings.lag_time_ms,
            self._clock,
        )
        role = _Leading(state, leader, plog, min(hw, epoch_start))
        self._leading[key] = role
        if key in self._leadership:
            self._leadership[key][0](state.leader_epoch)
        log.warning(
            "became leader",
            extra={
                "event": "became_leader",
                "topic": key[0],
                "partition": key[1],
                "leader_epoch": state.leader_epoch,
                "isr": list(state.isr),
                "log_end": epoch_start,
            },
        )
        await self._advance(key, role)

    async def _follow(self, key: tuple[str, int], state: PartitionState) -> None:
        current = self._following.get(key)
        if (
            current is not None
            and current.state.leader_epoch == state.leader_epoch
            and current.state.leader == state.leader
        ):
            current.state = state
            return
        if key in self._leading:
            self._stop_leading(key, f"broker {state.leader} leads epoch {state.leader_epoch}")
        await self._stop_following(key)
        address = self.snapshot.endpoint(state.leader)
        if not address:
            return  # the leader is not registered: wait for the controller
        plog = self.engine.partition_log(*key)
        hw = max(self._hw.get(key, 0), plog.offset_range()[0])
        await self._offload(plog.set_replicated_high_watermark, min(hw, plog.offset_range()[1]))
        follower = Follower(
            key[0], key[1], state.leader_epoch, plog, self._link(address), self._offload, self._on_stale
        )
        follower.high_watermark = min(hw, plog.offset_range()[1])
        follower.truncated = self.settings.mutation == "skip-epoch-truncation"
        self._following[key] = _Following(state, follower)
        follower.start()

    async def _stop_following(self, key: tuple[str, int]) -> None:
        role = self._following.pop(key, None)
        if role is not None:
            self._hw[key] = max(self._hw.get(key, 0), role.follower.high_watermark)
            await role.follower.stop()

    def _stop_leading(self, key: tuple[str, int], why: str) -> None:
        role = self._leading.pop(key, None)
        if role is None:
            return
        if key in self._leadership:
            self._leadership[key][1]()
        self._hw[key] = max(self._hw.get(key, 0), role.high_watermark)
        if role.isr_write is not None:
            role.isr_write.cancel()
        self._fail_waiters(role, _unknown_outcome(key[0], key[1], f"this broker stopped leading it ({why})"))
        role.appended.set()
        log.warning(
            "stopped leading",
            extra={
                "event": "leadership_ended",
                "topic": key[0],
                "partition": key[1],
                "leader_epoch": role.state.leader_epoch,
                "reason": why,
            },
        )

    async def hand_over(self) -> int:
        """Before a clean stop (Kafka's controlled shutdown): give each partition led here to another live
        in-sync replica, leaving the ISR, so clients move at once instead of after a lease expiry. Each
        change lands only on the state it read (mod_revision). Returns how many partitions moved."""
        if not self.session.alive:
            return 0
        tx = self.session.client.transactions
        moved = 0
        for (topic, partition), role in list(self._leading.items()):
            state = role.state
            storage = self.snapshot.storage()
            others = [
                b
                for b in state.isr
                if b != self.broker_id and b in self.snapshot.brokers and not state.stale(b, storage)
            ]
            if not others:
                continue  # the only in-sync copy: it keeps leading until its lease ends
            new = state.with_leader(others[0], [b for b in state.isr if b != self.broker_id])
            key = partition_key(self.session.cluster, topic, partition)
            try:
                done, _ = await self.session.client.transaction(
                    compare=[tx.mod(key) == state.version], success=[tx.put(key, new.encode())], failure=[]
                )
            except Exception as exc:  # etcd out of reach: the lease expiry moves it instead
                log.warning("%s-%d: cannot hand leadership over: %s", topic, partition, exc)
                continue
            if done:
                moved += 1
                self._stop_leading((topic, partition), f"handed over to broker {new.leader} before stopping")
                log.warning(
                    "leadership handed over",
                    extra={
                        "event": "leader_elected",
                        "kind": "controlled_shutdown",
                        "topic": topic,
                        "partition": partition,
                        "leader": new.leader,
                        "leader_epoch": new.leader_epoch,
                        "isr": list(new.isr),
                    },
                )
        return moved

    # -- produce (the leader) ------------------------------------------------------------------------
    def leader_error(self, topic: str, partition: int) -> NotLeaderError:
        state = self.snapshot.partitions.get((topic, partition))
        leader = state.leader if state is not None else NO_LEADER
        if leader == self.broker_id:
            # etcd may name this broker, but it does not lead now (its session lapsed, or the role is not
            # taken yet): never send a client back here, let it look the leader up elsewhere
            leader = NO_LEADER
        address = self.snapshot.endpoint(leader) if leader != NO_LEADER else ""
        where = f"broker {leader} at {address}" if address else "no broker now (an election is under way)"
        return NotLeaderError(
            f"broker {self.broker_id} does not lead {topic}-{partition}: it is led by {where}",
            leader_id=leader if address else NO_LEADER,
            leader_address=address,
        )

    def leading(self, topic: str, partition: int) -> _Leading:
        """The partition's leader role here, while this broker may act on it."""
        role = self._leading.get((topic, partition))
        if role is None or not self.session.alive:
            if topic not in self.snapshot.topics:
                # Maybe created a moment ago and not read from etcd here yet (clients route by another
                # broker's metadata): retriable, and the state is read again now. A client's metadata
                # lookup tells a topic that does not exist at all (UNKNOWN_TOPIC).
                self._on_stale()
                raise NotLeaderError(
                    f"broker {self.broker_id} does not know topic {topic!r} (yet): ask for metadata again",
                    leader_id=NO_LEADER,
                    leader_address="",
                )
            if not 0 <= partition < self.snapshot.topics[topic].partitions:
                raise InvalidPartitionError(
                    f"topic {topic!r} has {self.snapshot.topics[topic].partitions} partitions, not {partition}",
                    topic=topic,
                )
            raise self.leader_error(topic, partition)
        return role

    def admit(self, topic: str, partition: int, acks: int) -> int:
        """Before appending: the leader epoch to stamp; NotLeader / NotEnoughReplicas refuse."""
        role = self.leading(topic, partition)
        if acks in (ACKS_ALL, ACKS_DEFAULT):
            needed = self.min_insync_replicas(topic, role.plog)
            if len(role.state.isr) < needed:
                raise NotEnoughReplicasError(
                    f"{topic}-{partition} has {len(role.state.isr)} in-sync replicas "
                    f"({', '.join(map(str, role.state.isr))}), below min_insync_replicas={needed}: nothing was written"
                )
        return role.state.leader_epoch

    async def appended(self, topic: str, partition: int) -> None:
        """Records were appended: followers waiting for them are woken, and a lone ISR commits at once."""
        role = self._leading.get((topic, partition))
        if role is not None:
            role.appended.set()
            await self._advance((topic, partition), role)

    async def committed(self, topic: str, partition: int, end: int, epoch: int) -> None:
        """Wait until records below `end` (appended in `epoch`) are on every in-sync replica."""
        role = self._leading.get((topic, partition))
        if self.settings.mutation == "ack-before-replication":
            return
        if role is None or role.state.leader_epoch != epoch:
            raise _unknown_outcome(topic, partition, "its leadership changed before the records were replicated")
        if role.high_watermark < end:
            future: asyncio.Future = asyncio.get_running_loop().create_future()
            role.waiters.append((end, future))
            try:
                await asyncio.wait_for(asyncio.shield(future), self.settings.ack_timeout_ms / 1000)
            except asyncio.TimeoutError:
                raise RequestTimeoutError(
                    f"{topic}-{partition}: the in-sync replicas did not copy the records within "
                    f"{self.settings.ack_timeout_ms} ms; they may or may not be kept: retry (idempotently)"
                ) from None
            finally:
                if not future.done():
                    future.cancel()
        if not self.session.alive or self._leading.get((topic, partition)) is not role:
            # past its lease deadline a leader answers nothing as acknowledged
            raise _unknown_outcome(topic, partition, f"broker {self.broker_id} stopped leading it meanwhile")
        needed = self.min_insync_replicas(topic, role.plog)
        if len(role.state.isr) < needed:
            raise NotEnoughReplicasAfterAppendError(
                f"{topic}-{partition}: the records are committed, but the ISR shrank to {len(role.state.isr)} "
                f"(below min_insync_replicas={needed}) meanwhile"
            )

    def _fail_waiters(self, role: _Leading, error: TidelogError) -> None:
        for _, future in role.waiters:
            if not future.done():
                future.set_exception(error)
        role.waiters.clear()

    async def _advance(self, key: tuple[str, int], role: _Leading) -> None:
        """Move the high watermark to the minimum log end over the ISR, and answer who waited for it."""
        if self._leading.get(key) is not role:
            return
        hw = role.leader.high_watermark(role.plog.offset_range()[1])
        if hw > role.high_watermark:
            role.high_watermark = hw
            await self._offload(role.plog.set_replicated_high_watermark, hw)
        if role.waiters:
            done = [(end, f) for end, f in role.waiters if end <= role.high_watermark]
            role.waiters = [(end, f) for end, f in role.waiters if end > role.high_watermark]
            for _, future in done:
                if not future.done():
                    future.set_result(None)

    # -- replication (the leader's side) ---------------------------------------------------------------
    def _fetch_role(self, topic: str, partition: int, leader_epoch: int) -> _Leading:
        role = self._leading.get((topic, partition))
        if role is None or not self.session.alive:
            raise self.leader_error(topic, partition)
        if leader_epoch < role.state.leader_epoch:
            raise FencedLeaderEpochError(
                f"{topic}-{partition}: epoch {leader_epoch} is over; broker {self.broker_id} leads epoch "
                f"{role.state.leader_epoch}"
            )
        if leader_epoch > role.state.leader_epoch:
            raise UnknownLeaderEpochError(
                f"{topic}-{partition}: broker {self.broker_id} leads epoch {role.state.leader_epoch}, "
                f"not {leader_epoch} (yet)"
            )
        return role

    async def replica_fetch(
        self,
        topic: str,
        partition: int,
        replica: int,
        leader_epoch: int,
        fetch_offset: int,
        max_bytes: int,
        max_wait_ms: int,
        replica_epoch: int = 0,
    ) -> tuple[bytes, int, int]:
        """A follower's fetch: record how far it has copied (and as which registration of its broker),
        and answer the batches after that."""
        role = self._fetch_role(topic, partition, leader_epoch)
        start, end = role.plog.offset_range()[:2]
        if fetch_offset > end:
            raise TidelogError(
                f"{topic}-{partition}: replica {replica} fetches from {fetch_offset}, past the leader's log end {end}"
            )
        role.leader.fetched(replica, fetch_offset, end, replica_epoch)
        await self._advance((topic, partition), role)
        self._maybe_change_isr((topic, partition), role)
        if fetch_offset == end and max_wait_ms > 0:
            role.appended.clear()
            try:
                await asyncio.wait_for(role.appended.wait(), max_wait_ms / 1000)
            except asyncio.TimeoutError:
                pass
            role = self._fetch_role(topic, partition, leader_epoch)
        max_bytes = max_bytes or self.settings.fetch_max_bytes
        throttled = self.throttle.applies(replica, role.state.isr, fetch_offset, role.high_watermark)
        if throttled:
            delay = min(self.throttle.bucket.delay(), MAX_WAIT_S)
            if delay > 0:
                await asyncio.sleep(delay)
                self.throttle.waited(delay)
                role = self._fetch_role(topic, partition, leader_epoch)  # the epoch may have ended meanwhile
                if self.throttle.bucket.delay() > 0:
                    return b"", role.high_watermark, start  # still in debt: ask again
            max_bytes = self.throttle.budget(max_bytes)
        data = await self._offload(role.plog.read_replica, fetch_offset, max_bytes)
        if throttled:
            self.throttle.spent(len(data))
        return data, role.high_watermark, start

    def epoch_end_offset(self, topic: str, partition: int, leader_epoch: int, requested: int) -> tuple[int, int]:
        role = self._fetch_role(topic, partition, leader_epoch)
        return role.plog.epoch_end_offset(requested)

    # -- ISR maintenance -------------------------------------------------------------------------------
    def _maybe_change_isr(self, key: tuple[str, int], role: _Leading) -> None:
        if role.isr_write is not None and not role.isr_write.done():
            return
        shrink = role.leader.to_shrink()
        vouched = self._vouched(role.leader.to_expand(role.high_watermark), role)
        expand = list(vouched)
        if not shrink and not expand:
            return
        isr = [b for b in role.state.isr if b not in shrink] + [b for b in expand if b not in role.state.isr]
        role.isr_write = asyncio.ensure_future(self._write_isr(key, role, isr, shrink, expand, vouched))

    def _vouched(self, caught_up: list[int], role: _Leading) -> dict[int, str]:
        """The caught-up followers this leader can vouch for, with the data directory each copied into:
        the one registered by the broker epoch it fetched as (a follower whose registration the leader
        has not read yet waits for the next check: it may have restarted on another disk since)."""
        vouched = {}
        for b in caught_up:
            info = self.snapshot.brokers.get(b)
            if info is not None and info.epoch == role.leader.followers[b].replica_epoch:
                vouched[b] = info.storage
        return vouched

    async def _write_isr(
        self,
        key: tuple[str, int],
        role: _Leading,
        isr: list[int],
        shrink: list[int],
        expand: list[int],
        storage: dict[int, str],
    ) -> None:
        if not self.session.alive:
            return
        try:
            new = await etcd_writes.write_isr(
                self.session.client, self.session.cluster, key[0], key[1], role.state, isr, storage
            )
        except Exception as exc:
            log.warning("%s-%d: cannot change the ISR in etcd: %s", key[0], key[1], exc)
            return
        if new is None:  # the state moved on (a new leader, the controller's edit): act on the fresh one
            self._on_stale()
            return
        # only now, with etcd agreeing, does the leader count the new ISR (a smaller ISR before etcd
        # has it could commit records that a broker still in etcd's ISR lacks, and then lead). The key
        # is read back: its version (and any edit since) is what later writes are fenced on.
        found = await self.session.client.get(partition_key(self.session.cluster, *key))
        if found is None or self._leading.get(key) is not role:
            return
        now = PartitionState.decode(found.value, found.mod_revision)
        if now.leader_epoch != role.state.leader_epoch:
            self._on_stale()
            return
        role.state = now
        role.leader.isr = now.isr
        role.leader.set_replicas(now.replicas)
        event = "isr_shrunk" if shrink else "isr_expanded"
        if shrink:
            self.isr_shrinks += 1
        if expand:
            self.isr_expands += 1
        log.warning(
            "ISR changed",
            extra={
                "event": event,
                "topic": key[0],
                "partition": key[1],
                "isr": list(now.isr),
                "removed": shrink,
                "added": expand,
                "leader_epoch": now.leader_epoch,
            },
        )
        await self._advance(key, role)
        self._on_stale()

    async def _maintain(self) -> None:
        """Check the ISR of every led partition a few times per lag window (a follower that stopped
        fetching sends nothing that would trigger the check)."""
        period = max(0.05, self.settings.lag_time_ms / 4000)
        while True:
            await asyncio.sleep(period)
            for key, role in list(self._leading.items()):
                try:
                    self._maybe_change_isr(key, role)
                except Exception:
                    log.exception("ISR check failed")

    # -- observing ---------------------------------------------------------------------------------------
    def is_leader(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._leading and self.session.alive

    def led(self) -> dict[tuple[str, int], _Leading]:
        return dict(self._leading)

    def followed(self) -> dict[tuple[str, int], _Following]:
        return dict(self._following)


def _unknown_outcome(topic: str, partition: int, why: str) -> RequestTimeoutError:
    """The answer to a produce appended but not known to be committed: never NOT_LEADER, which says
    nothing was appended. The idempotent producer's retry keeps it exactly once."""
    return RequestTimeoutError(f"{topic}-{partition}: {why}; the records may or may not be kept: retry (idempotently)")
