"""A group member's side of the protocol, independent of transport (embedded or gRPC).

A background thread heartbeats (every session_timeout_ms / 3) and rejoins when told its generation is
stale; the thread only records the grant it received. The caller's thread applies it in poll():
on_revoke(partitions) for what was taken away (commit there to hand over cleanly), then the readers
of those partitions are closed, and the next heartbeat reports them released, which lets the
coordinator give them to their new owner; on_assign(partitions) for what was added, whose readers
start at the group's committed offset, or at auto_offset_reset when there is none.

Ownership is fenced on delivery, not only on commit. poll() hands over a record of a partition only
when all of these hold at that moment:

- the member's *lease* runs: the last successful heartbeat or join was sent less than
  session_timeout_ms * (1 - LEASE_SAFETY) ago, by a monotonic clock. The coordinator cannot expire
  the member before session_timeout_ms after it *received* that request, which is later than it
  was sent, so the lease ends before anybody else can be granted the member's partitions;
- the partition is in the member's current grant, and the member has not learnt that it lost its
  membership.

Records fetched while one of these fails are kept back (at most one fetch per partition) and handed
over once it holds again, or dropped with the partition's reader when the partition is revoked or
lost: nothing is skipped, and the position advances only with what poll() returned. A member that
learns it was removed (UnknownMemberError: its session expired, e.g. after a pause, or the broker no
longer knows it) stops delivering at once, rejoins as a new member owning nothing, and its next
poll() closes every reader and calls on_lost(partitions) (on_revoke when no on_lost is given,
as Kafka does) before it opens anything of the new grant. Those partitions may already be another
member's: committing them is refused.

Each heartbeat reports as owned every partition the member may still deliver: the ones it has
readers for and the ones in its current grant (it may open those at any moment), so the coordinator
never grants a partition that the member could still hand over.

Delivery is at-least-once: what was consumed after the last commit is redelivered to the next owner.
"Consumed" is what the application was given, Kafka's *position*: after the last record poll()
returned, or, when iterating (`for rec in member`), after the last record the loop received. A fetch
brings in more than that; the rest waits in the member (at most max_poll_records are returned at
once), so `commit()` never covers a record the application has not reached.

A member shares its partitions promptly even while the application is busy:

- iterating, it checks before each record whether a rebalance took partitions away, and gives them
  up first (on_revoke, where the README's loop commits what it handled of them) before it goes on
  with the partitions it kept;
- a member whose application does not come back for the next record (poll() or the iterator's next
  step) within max_poll_interval_ms stops delivering and leaves the group from its heartbeat
  thread, as Kafka's does, so that its partitions go to the others without waiting for its session
  to expire. Its next commit() is refused (UnknownMemberError naming the setting: those records are
  redelivered to the new owners), and its next poll() calls on_lost and rejoins as a new member.

A partition whose position is outside its log (its committed offset is past the end of a recreated
or truncated log, or before the start after retention) is reset per auto_offset_reset, with a
WARNING naming group, partition, offset and the log's range; with "none" poll() raises
OffsetOutOfRangeError instead.

Thread-safety: poll(), commit() and close() belong to the caller's thread (one thread per member);
the heartbeat thread shares the grant, the lease and the lost flag with it under `_lock`, and one
exchange with the coordinator at a time runs under `_membership`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol, cast

from ..errors import (
    BrokerUnavailableError,
    EngineClosedError,
    NotLeaderError,
    OffsetOutOfRangeError,
    StaleGenerationError,
    TidelogError,
    UnknownMemberError,
)
from ..values import ConsumerRecord, MemberState, TopicPartition

if TYPE_CHECKING:
    from .._native.record_batch import Record

log = logging.getLogger("tidelog.groups")


class PartitionReader(Protocol):
    """What reads one assigned partition for a member: a PartitionConsumer (gRPC), an embedded
    engine reader, or a _Reopening standing in for one whose broker went away."""

    def poll(self, timeout_s: float) -> list[Record]: ...

    def close(self) -> None: ...


LEASE_SAFETY = 0.1  # the lease ends this fraction of the session timeout early (clock rates, rounding)
OFFSET_RESETS = ("earliest", "latest", "none")
DEFAULT_MAX_POLL_RECORDS = 500  # Kafka's max.poll.records
DEFAULT_MAX_POLL_INTERVAL_MS = 300_000  # Kafka's max.poll.interval.ms


class GroupMember:
    """Subclasses provide the transport: _join, _heartbeat, _leave, _commit, _committed, _start, _reader."""

    def __init__(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        auto_offset_reset: str = "earliest",
        session_timeout_ms: int = 10_000,
        assignor: str = "sticky",
        on_assign: Callable[[list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[list[TopicPartition]], None] | None = None,
        on_lost: Callable[[list[TopicPartition]], None] | None = None,
        client_id: str = "",
        max_poll_records: int = DEFAULT_MAX_POLL_RECORDS,
        max_poll_interval_ms: int = DEFAULT_MAX_POLL_INTERVAL_MS,
    ) -> None:
        if auto_offset_reset not in OFFSET_RESETS:
            raise ValueError(f"auto_offset_reset must be one of {', '.join(OFFSET_RESETS)}, got {auto_offset_reset!r}")
        for name, value in (("max_poll_records", max_poll_records), ("max_poll_interval_ms", max_poll_interval_ms)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.group_id = group_id
        self.topics = list(topics)
        self.auto_commit = auto_commit
        self.auto_commit_interval_s = auto_commit_interval_ms / 1000
        self.auto_offset_reset = auto_offset_reset
        self.session_timeout_ms = session_timeout_ms
        self.assignor = assignor
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.on_lost = on_lost
        self.client_id = client_id
        self.max_poll_records = max_poll_records
        self.max_poll_interval_s = max_poll_interval_ms / 1000
        self.member_id: str | None = None
        self.generation = -1
        self.last_delivery_monotonic: float | None = None
        """When poll() (or the iterator) last handed records over, just after checking its lease (by the
        lease's clock, time.monotonic(), which all processes of a host share; embedded: the coordinator's
        clock / 1000)."""
        self._lock = threading.Lock()
        self._membership = threading.Lock()
        self._granted: list[TopicPartition] = []
        self._granted_set: frozenset[TopicPartition] = frozenset()
        self._lease_until = 0.0
        self._lost = False
        self._left = False  # left the group because the application did not poll in time; rejoins at poll()
        self._last_poll = time.monotonic()  # when the application last asked for records
        self._readers: dict[TopicPartition, PartitionReader] = {}
        # Fetched and not yet handed out: held back (lease, grant), or past max_poll_records. A reader is
        # read again only once its partition has nothing here, so its position is the member's position.
        self._kept: dict[TopicPartition, list[ConsumerRecord]] = {}
        self._ready: collections.deque[ConsumerRecord] = collections.deque()  # the iterator's current poll
        self._positions: dict[TopicPartition, int] = {}  # after the last record handed to the application
        self._committed_positions: dict[TopicPartition, int] = {}
        self._rotation = 0  # which partition a poll cut by max_poll_records starts with
        self._last_commit = time.monotonic()
        self._closed = False
        self._committer: concurrent.futures.ThreadPoolExecutor | None = None  # commit_async's one worker
        self._stop = threading.Event()
        self._apply_state(*self._exchange(self._join, None, []))
        self._heartbeats = threading.Thread(target=self._heartbeat_loop, name="tidelog-heartbeat", daemon=True)
        self._heartbeats.start()

    # -- transport hooks ---------------------------------------------------------------------------
    def _join(self, member_id, owned):
        raise NotImplementedError

    def _heartbeat(self, member_id, generation, owned):
        raise NotImplementedError

    def _leave(self, member_id):
        raise NotImplementedError

    def _commit(self, member_id, generation, offsets):
        raise NotImplementedError

    def _committed(self, partitions):
        raise NotImplementedError

    def _start(self, tp, where):
        raise NotImplementedError

    def _reader(self, tp: TopicPartition, offset: int) -> PartitionReader:
        raise NotImplementedError

    # -- membership (heartbeat thread) -------------------------------------------------------------
    def _now(self) -> float:
        """The lease's clock, in seconds: monotonic, so that a wall-clock jump changes nothing."""
        return time.monotonic()

    def _exchange(self, call, *args) -> tuple[MemberState, float]:
        """One call to the coordinator, and when it was sent: the lease counts from then."""
        sent = self._now()
        return call(*args), sent

    def _apply_state(self, state: MemberState, sent: float) -> None:
        with self._lock:
            self.member_id, self.generation = state.member_id, state.generation
            self._granted = list(state.assignment)
            self._granted_set = frozenset(self._granted)
            self._interval_s = state.heartbeat_interval_ms / 1000
            self._lease_until = sent + self.session_timeout_ms / 1000 * (1 - LEASE_SAFETY)

    def _report(self) -> list[TopicPartition]:
        """What the member may still deliver: its readers and its grant (it may open those any time).
        After a loss the old readers are fenced until poll() closes them: they are not reported."""
        with self._lock:
            return sorted((set() if self._lost else set(self._readers)) | set(self._granted))

    def _lose(self, why: str) -> None:
        """Stop delivering at once: everything the member held may be given away from now on."""
        with self._lock:
            self._lost = True
            self._granted = []
            self._granted_set = frozenset()
            self._lease_until = 0.0
        log.warning(
            "group %s: member %s lost its membership (%s); it stops delivering and rejoins owning nothing",
            self.group_id,
            self.member_id,
            why,
        )

    def _heartbeat_loop(self) -> None:
        """Heartbeat every interval; in between, wake at the application's poll deadline to leave if it
        has not come back by then."""
        next_beat = time.monotonic() + self._interval_s
        while not self._stop.wait(max(min(next_beat - time.monotonic(), -self._poll_overdue_s() + 0.001), 0)):
            if self._poll_overdue_s() > 0:
                self._leave_for_poll_interval()
                continue
            if time.monotonic() < next_beat:
                continue  # woke for a poll deadline the application met
            try:
                self.heartbeat_now()
            except TidelogError as exc:
                log.warning("group %s: heartbeat failed: %s", self.group_id, exc.message)
            next_beat = time.monotonic() + self._interval_s

    def _poll_overdue_s(self) -> float:
        """How far past max_poll_interval_ms the application is (<= 0: within it; never while left)."""
        if self._left:
            return float("-inf")
        return time.monotonic() - self._last_poll - self.max_poll_interval_s

    def _polled(self) -> None:
        """The application came back for records: its poll interval starts again."""
        self._last_poll = time.monotonic()

    def _leave_for_poll_interval(self) -> None:
        """The application is stuck (or slow) past max_poll_interval_ms: stop delivering, then leave, so
        that its partitions go to the others now rather than after a session timeout. As Kafka does."""
        with self._membership:
            overdue = self._poll_overdue_s()
            if overdue <= 0:  # it came back meanwhile
                return
            with self._lock:
                self._lost = True  # fenced before anybody else can be given its partitions
                self._granted = []
                self._granted_set = frozenset()
                self._lease_until = 0.0
                self._left = True  # after _lost: whoever sees it also sees the loss
            log.warning(
                "group %s: member %s left the group: the application did not poll within "
                "max_poll_interval_ms=%d; its partitions go to the other members, its next commit is "
                "refused and its next poll rejoins. Handle records faster, lower max_poll_records or "
                "raise max_poll_interval_ms",
                self.group_id,
                self.member_id,
                int(self.max_poll_interval_s * 1000),
                extra={
                    "event": "poll_interval_exceeded",
                    "group": self.group_id,
                    "member": self.member_id,
                    "max_poll_interval_ms": int(self.max_poll_interval_s * 1000),
                    "silent_ms": int((self.max_poll_interval_s + overdue) * 1000),
                },
            )
            try:
                self._leave(self.member_id)
            except TidelogError as exc:  # e.g. the broker is away: its session expires instead
                log.warning(
                    "group %s: leaving failed (%s); the member's session will expire instead",
                    self.group_id,
                    exc.message,
                )

    def _rejoin_after_leaving(self) -> bool:
        """At the first poll after leaving for the poll interval: on_lost, then join as a new member.
        False while the broker cannot be reached (tried again at the next poll)."""
        if not self._left:
            return True
        self._handle_loss()
        with self._membership:
            try:
                state, sent = self._exchange(self._join, None, [])
            except TidelogError as exc:
                if not exc.retriable:
                    raise
                log.info("group %s: cannot rejoin yet (%s); retrying at the next poll", self.group_id, exc.message)
                return False
            self._left = False
            self._apply_state(state, sent)
        return True

    def heartbeat_now(self) -> None:
        """One heartbeat (the thread does this on its own; tests call it to skip the wait)."""
        with self._membership:
            if self._left:
                return  # it rejoins when the application polls again
            try:
                try:
                    state, sent = self._exchange(self._heartbeat, self.member_id, self.generation, self._report())
                except StaleGenerationError:
                    state, sent = self._exchange(self._join, self.member_id, self._report())
            except UnknownMemberError as exc:
                self._lose(exc.message)
                state, sent = self._exchange(self._join, None, [])
            self._apply_state(state, sent)

    def lease_remaining_s(self) -> float:
        """How long the member may still deliver without another successful heartbeat (0 when it may not)."""
        with self._lock:
            return 0.0 if self._lost else max(self._lease_until - self._now(), 0.0)

    # -- consuming (caller's thread) ---------------------------------------------------------------
    def assignment(self) -> list[TopicPartition]:
        """The partitions this member is consuming now."""
        with self._lock:
            return sorted(self._readers)

    def _may_deliver(self) -> bool:
        with self._lock:
            return not self._lost and self._now() < self._lease_until

    def _may_hand_out(self, tp: TopicPartition) -> float | None:
        """When the iterator may give the application its next record, of partition tp, the lease's clock
        now; None if it may not: the lease must run, tp be granted, and no partition wait to be revoked
        (those are given up first)."""
        with self._lock:
            granted, now = self._granted_set, self._now()
            if not self._lost and now < self._lease_until and tp in granted and self._readers.keys() <= granted:
                return now
            return None

    def _handle_loss(self) -> None:
        """After a lost membership: close every reader (dropping what it fetched), then on_lost."""
        with self._lock:
            if not self._lost:
                return
            self._lost = False
            readers, self._readers = self._readers, {}
        self._close_readers(readers)
        callback = self.on_lost or self.on_revoke
        if readers and callback:
            callback(sorted(readers))

    def _rebalance_readers(self) -> None:
        self._handle_loss()
        with self._lock:
            granted = set(self._granted)
        owned = set(self._readers)
        revoked, added = sorted(owned - granted), sorted(granted - owned)
        if revoked:
            if self.auto_commit:
                self._try_commit({tp: self._positions[tp] for tp in revoked if tp in self._positions})
            if self.on_revoke:
                self.on_revoke(revoked)
            with self._lock:
                readers = {tp: self._readers.pop(tp) for tp in revoked}
            self._close_readers(readers)
        if added:
            self._open_readers(added)

    def _close_readers(self, readers: dict[TopicPartition, PartitionReader]) -> None:
        if self._ready and any((r.topic, r.partition) in readers for r in self._ready):
            self._ready = collections.deque(r for r in self._ready if (r.topic, r.partition) not in readers)
        for tp, reader in readers.items():
            reader.close()
            self._kept.pop(tp, None)
            self._positions.pop(tp, None)
            self._committed_positions.pop(tp, None)

    def _open_readers(self, added: list[TopicPartition]) -> None:
        try:
            committed = self._committed(added)
            starts = {tp: committed[tp] if tp in committed else self._reset_to(tp) for tp in added}
        except TidelogError as exc:
            if not exc.retriable:
                raise
            log.info(
                "group %s: cannot open %d partition(s) yet (%s); retrying at the next poll",
                self.group_id,
                len(added),
                exc.message,
            )
            return
        for tp, offset in starts.items():
            reader = self._reader(tp, offset)
            with self._lock:
                self._readers[tp] = reader
            self._positions[tp] = offset
            self._committed_positions[tp] = offset
        if self.on_assign:
            self.on_assign(added)

    def _reset_to(self, tp: TopicPartition) -> int:
        """Where a partition without a committed offset starts: auto_offset_reset ("none": an error)."""
        if self.auto_offset_reset == "none":
            raise OffsetOutOfRangeError(
                f"group {self.group_id!r} has no committed offset for {tp[0]}[{tp[1]}] and auto_offset_reset is 'none'",
                group=self.group_id,
                topic=tp[0],
                partition=tp[1],
            )
        return self._start(tp, self.auto_offset_reset)

    def _out_of_range(self, tp: TopicPartition, error: OffsetOutOfRangeError) -> int:
        """Where to read on when the position is outside the partition's log (a committed offset past the
        end of a recreated or truncated log, or before a start that retention moved): per
        auto_offset_reset, never silently; "none" raises to the application instead."""
        offset = self._positions[tp]
        what = "committed offset" if self._committed_positions.get(tp) == offset else "position"
        fields = {
            "group": self.group_id,
            "topic": tp[0],
            "partition": tp[1],
            "offset": offset,
            "log_start": error.log_start,
            "log_end": error.log_end,
            "reset": self.auto_offset_reset,
        }
        if self.auto_offset_reset == "none":
            log.warning(
                "group %s: %s %d of %s[%d] is out of range (the log holds %d to %d); auto_offset_reset "
                "is 'none': poll() raises OffsetOutOfRangeError",
                self.group_id,
                what,
                offset,
                tp[0],
                tp[1],
                error.log_start,
                error.log_end,
                extra={"event": "offset_out_of_range", **fields},
            )
            raise OffsetOutOfRangeError(
                f"group {self.group_id!r}: {what} {offset} of {tp[0]}[{tp[1]}] is out of range; the log holds "
                f"{error.log_start} to {error.log_end} and auto_offset_reset is 'none'",
                **fields,
            )
        to = self._start(tp, self.auto_offset_reset)
        log.warning(
            "group %s: %s %d of %s[%d] is out of range (the log holds %d to %d); resetting to the %s "
            "offset %d (auto_offset_reset)",
            self.group_id,
            what,
            offset,
            tp[0],
            tp[1],
            error.log_start,
            error.log_end,
            self.auto_offset_reset,
            to,
            extra={"event": "offset_out_of_range", "to": to, **fields},
        )
        return to

    def poll(self, timeout_s: float = 1.0) -> list[ConsumerRecord]:
        """At most max_poll_records records from the partitions currently assigned (each partition in
        offset order); nothing while the member's lease has run out or its membership is in doubt.
        The position (what commit() commits) moves past every record returned."""
        self._keep_back()  # records an iterator had not handed out yet come first
        records = self._next_records(timeout_s)
        for r in records:
            self._positions[(r.topic, r.partition)] = r.offset + 1
        return records

    def __iter__(self) -> Iterator[ConsumerRecord]:
        """Records one at a time; the position moves past each record as the loop receives it, so a
        commit() in the loop covers exactly what the loop has been given."""
        while not self._closed:
            rec = self._next_record(1.0)
            if rec is not None:
                yield rec

    def _next_record(self, timeout_s: float) -> ConsumerRecord | None:
        """The iterator's next record. Before each one, a pending revocation is carried out (the records
        of the current poll wait in _kept meanwhile), so a busy loop hands partitions over between
        records, not only between polls."""
        self._polled()
        while True:
            if self._ready:
                rec = self._ready[0]
                tp = (rec.topic, rec.partition)
                now = self._may_hand_out(tp)
                if now is not None:
                    self._ready.popleft()
                    self._positions[tp] = rec.offset + 1
                    self.last_delivery_monotonic = now
                    return rec
                self._keep_back()
            records = self._next_records(timeout_s)
            if not records:
                return None
            self._ready.extend(records)

    def _keep_back(self) -> None:
        """Put the iterator's records not handed out yet back in front of their partition's kept ones."""
        if not self._ready:
            return
        by_tp: dict[TopicPartition, list[ConsumerRecord]] = {}
        for r in self._ready:
            by_tp.setdefault((r.topic, r.partition), []).append(r)
        self._ready.clear()
        for tp, records in by_tp.items():
            if tp in self._readers:
                self._kept[tp] = records + self._kept.get(tp, [])

    def _next_records(self, timeout_s: float) -> list[ConsumerRecord]:
        """Records that may be handed over now (at most max_poll_records), without moving the position."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._polled()
            out, waited = [], False
            if self._rejoin_after_leaving():
                self._rebalance_readers()
                if self._readers and self._may_deliver():
                    fetched = self._fetch(0)
                    if not fetched:
                        fetched, waited = self._fetch(min(max(deadline - time.monotonic(), 0), 0.05)), True
                    out = self._deliver(fetched)
                if self.auto_commit and time.monotonic() - self._last_commit >= self.auto_commit_interval_s:
                    self._try_commit()
            if out or time.monotonic() >= deadline:
                self._polled()
                return out
            if not waited:
                time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))

    def _fetch(self, timeout_s: float) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records per partition: the ones kept back first, else what its reader has (one fetch each)."""
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        for tp, reader in list(self._readers.items()):
            if tp in self._kept:
                out[tp] = self._kept.pop(tp)
                continue
            try:
                records = reader.poll(timeout_s if not out else 0)
            except OffsetOutOfRangeError as exc:
                reader.close()
                if self._readers[tp] is not reader:  # a _Reopening had opened a reader already
                    self._readers[tp].close()
                with self._lock:  # until a new position is known, the partition is asked again later
                    self._readers[tp] = _Reopening(self, tp)
                try:
                    offset = self._out_of_range(tp, exc)
                except TidelogError:
                    self._kept.update(out)  # nothing fetched is lost with the error
                    raise
                with self._lock:
                    self._readers[tp] = self._reader(tp, offset)
                self._positions[tp] = offset
                continue
            except (BrokerUnavailableError, EngineClosedError, NotLeaderError) as exc:
                # The broker went away (restart), or the leader moved and the reader gave up following
                # it: read on from the delivered position once it is back.
                log.info(
                    "group %s: reader of %s[%d] lost the broker (%s); reopening",
                    self.group_id,
                    tp[0],
                    tp[1],
                    exc.message,
                )
                reader.close()
                with self._lock:
                    self._readers[tp] = _Reopening(self, tp)
                continue
            if records:
                # A member's readers copy (copy=True, their default): keys and values are bytes.
                out[tp] = [
                    ConsumerRecord(
                        tp[0],
                        tp[1],
                        r.offset,
                        r.timestamp,
                        cast(bytes | None, r.key),
                        cast(bytes | None, r.value),
                        r.headers,
                    )
                    for r in records
                ]
                timeout_s = 0
        return out

    def _deliver(self, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> list[ConsumerRecord]:
        """What may be handed over now, at most max_poll_records (taking partitions in turn from one poll
        to the next); the rest is kept for later (or dropped with its reader)."""
        now = self._now()
        with self._lock:
            allowed = self._granted_set if not self._lost and now < self._lease_until else frozenset()
        out: list[ConsumerRecord] = []
        tps = list(fetched)
        if tps:
            first = self._rotation % len(tps)
            tps = tps[first:] + tps[:first]
            self._rotation += 1
        for tp in tps:
            records = fetched[tp]
            room = self.max_poll_records - len(out)
            if tp in allowed and room > 0:
                out += records[:room]
                records = records[room:]
            if records:
                self._kept[tp] = records
        if out:
            self.last_delivery_monotonic = now
        return out

    def position(self, tp: TopicPartition) -> int | None:
        return self._positions.get(tp)

    def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Commit the next offset to consume per owned partition (default: the position, i.e. everything
        handed to the application so far that is not committed yet)."""
        if offsets is None:
            offsets = {tp: o for tp, o in self._positions.items() if self._committed_positions.get(tp) != o}
        else:
            offsets = dict(offsets)
        if not offsets:
            return
        if self._left:
            raise UnknownMemberError(
                f"group {self.group_id!r}: member {self.member_id} left the group because the application did not "
                f"poll within max_poll_interval_ms={int(self.max_poll_interval_s * 1000)}; its partitions went to "
                f"other members, which get the uncommitted records again. Handle records faster, lower "
                f"max_poll_records or raise max_poll_interval_ms",
                group=self.group_id,
            )
        try:
            self._commit(self.member_id, self.generation, offsets)
        except StaleGenerationError:
            self.heartbeat_now()  # learn the new generation, then commit what we still hold
            owned = set(self.assignment())
            offsets = {tp: o for tp, o in offsets.items() if tp in owned}
            if offsets:
                self._commit(self.member_id, self.generation, offsets)
        self._committed_positions.update(offsets)
        self._last_commit = time.monotonic()

    def commit_async(
        self,
        offsets: dict[TopicPartition, int] | None = None,
        callback: Callable[[BaseException | None], None] | None = None,
    ) -> concurrent.futures.Future:
        """Commit without waiting; callback(error or None) when done, and the returned future says the
        same. One worker thread per member runs the commits in the order they were asked for, so a later
        commit never lands before an earlier one (which would move the committed offset back), and a
        loop of commit_async() calls costs one thread, not one each. close() waits for them."""
        offsets = dict(self._positions) if offsets is None else dict(offsets)
        if self._committer is None:
            self._committer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidelog-commit")

        def run() -> None:
            try:
                self.commit(offsets)
            except BaseException as exc:  # handed to the callback and the future, never lost
                if callback:
                    callback(exc)
                raise
            if callback:
                callback(None)

        return self._committer.submit(run)

    def _try_commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        offsets = dict(self._positions) if offsets is None else offsets
        changed = {tp: o for tp, o in offsets.items() if self._committed_positions.get(tp) != o}
        try:
            self.commit(changed)
        except TidelogError as exc:
            log.warning("group %s: auto-commit failed: %s", self.group_id, exc.message)
        self._last_commit = time.monotonic()

    def close(self) -> None:
        """Commit (when auto_commit), leave the group, release the readers."""
        if self._closed:
            return
        self._closed = True
        if self._committer is not None:
            self._committer.shutdown(wait=True)  # asynchronous commits land before the member leaves
        self._stop.set()
        self._heartbeats.join(timeout=10)
        try:
            with self._lock:
                lost = self._lost
            if lost:
                self._handle_loss()  # on_lost for what it held; nothing of it is committed
            else:
                if self.auto_commit:
                    self._try_commit()
                if self.on_revoke and self._readers:
                    self.on_revoke(sorted(self._readers))
            if not self._left:  # one that left for the poll interval is no member any more
                self._leave(self.member_id)
        except (TidelogError, BrokerUnavailableError) as exc:
            log.warning("group %s: leaving failed: %s", self.group_id, exc.message)
        finally:
            with self._lock:
                readers, self._readers = self._readers, {}
            for reader in readers.values():
                reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Reopening:
    """Stands in for a partition reader whose broker went away: retries opening it, with backoff, at the
    position delivered so far (anything fetched beyond it was never handed over)."""

    def __init__(self, member: GroupMember, tp: TopicPartition) -> None:
        self.member, self.tp = member, tp
        self.next_try = time.monotonic() + 0.2

    def poll(self, timeout_s: float) -> list[Record]:
        if time.monotonic() < self.next_try:
            return []
        try:
            reader = self.member._reader(self.tp, self.member._positions[self.tp])
        except TidelogError:
            self.next_try = time.monotonic() + 0.5
            return []
        with self.member._lock:
            self.member._readers[self.tp] = reader
        return reader.poll(timeout_s)

    def close(self) -> None:
        pass
