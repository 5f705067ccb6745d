"""A group member's side of the protocol, independent of transport (embedded or gRPC).

A background thread heartbeats (every session_timeout_ms / 3) and rejoins when told its generation is
stale; the thread only records the grant it received. The caller's thread applies it in poll():
on_revoke(partitions) for what was taken away (commit there to hand over cleanly), then the readers
of those partitions are closed, and the next heartbeat reports them released, which lets the
coordinator give them to their new owner; on_assign(partitions) for what was added, whose readers
start at the group's committed offset, or at auto_offset_reset when there is none.

Delivery is at-least-once: what was consumed after the last commit is redelivered to the next owner.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterator, NamedTuple, Sequence

from ..errors import (BrokerUnavailableError, EngineClosedError, OffsetOutOfRangeError, StaleGenerationError,
                      TidelogError, UnknownMemberError)

log = logging.getLogger("tidelog.groups")

TopicPartition = tuple[str, int]


class MemberState(NamedTuple):
    """What a member is told: its id, the generation, and the partitions it may consume now."""

    member_id: str
    generation: int
    assignment: list[TopicPartition]
    heartbeat_interval_ms: int


class ConsumerRecord(NamedTuple):
    """A record with the topic and partition it came from."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple


class GroupMember:
    """Subclasses provide the transport: _join, _heartbeat, _leave, _commit, _committed, _start, _reader."""

    def __init__(self, group_id: str, topics: Sequence[str], *, auto_commit: bool = True,
                 auto_commit_interval_ms: int = 5000, auto_offset_reset: str = "earliest",
                 session_timeout_ms: int = 10_000, assignor: str = "sticky",
                 on_assign: Callable[[list[TopicPartition]], None] | None = None,
                 on_revoke: Callable[[list[TopicPartition]], None] | None = None, client_id: str = "") -> None:
        if auto_offset_reset not in ("earliest", "latest"):
            raise ValueError("auto_offset_reset must be 'earliest' or 'latest'")
        self.group_id = group_id
        self.topics = list(topics)
        self.auto_commit = auto_commit
        self.auto_commit_interval_s = auto_commit_interval_ms / 1000
        self.auto_offset_reset = auto_offset_reset
        self.session_timeout_ms = session_timeout_ms
        self.assignor = assignor
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.client_id = client_id
        self.member_id: str | None = None
        self.generation = -1
        self._lock = threading.Lock()
        self._granted: list[TopicPartition] = []
        self._readers: dict[TopicPartition, object] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._committed_positions: dict[TopicPartition, int] = {}
        self._last_commit = time.monotonic()
        self._closed = False
        self._stop = threading.Event()
        self._apply_state(self._join(None, []))
        self._heartbeats = threading.Thread(target=self._heartbeat_loop, name="tidelog-heartbeat", daemon=True)
        self._heartbeats.start()

    # -- transport hooks ---------------------------------------------------------------------------
    def _join(self, member_id, owned): raise NotImplementedError
    def _heartbeat(self, member_id, generation, owned): raise NotImplementedError
    def _leave(self, member_id): raise NotImplementedError
    def _commit(self, member_id, generation, offsets): raise NotImplementedError
    def _committed(self, partitions): raise NotImplementedError
    def _start(self, tp, where): raise NotImplementedError
    def _reader(self, tp, offset): raise NotImplementedError

    # -- membership (heartbeat thread) -------------------------------------------------------------
    def _apply_state(self, state) -> None:
        with self._lock:
            self.member_id, self.generation = state.member_id, state.generation
            self._granted = list(state.assignment)
            self._interval_s = state.heartbeat_interval_ms / 1000

    def _owned(self) -> list[TopicPartition]:
        with self._lock:
            return sorted(self._readers)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.heartbeat_now()
            except TidelogError as exc:
                log.warning("group %s: heartbeat failed: %s", self.group_id, exc.message)

    def heartbeat_now(self) -> None:
        """One heartbeat (the thread does this on its own; tests call it to skip the wait)."""
        try:
            state = self._heartbeat(self.member_id, self.generation, self._owned())
        except StaleGenerationError:
            state = self._join(self.member_id, self._owned())
        except UnknownMemberError:
            # Our session expired: everything we held was given away. Rejoin as a new member.
            log.warning("group %s: member %s was removed; rejoining", self.group_id, self.member_id)
            state = self._join(None, [])
        self._apply_state(state)

    # -- consuming (caller's thread) ---------------------------------------------------------------
    def assignment(self) -> list[TopicPartition]:
        return self._owned()

    def _rebalance_readers(self) -> None:
        with self._lock:
            granted = set(self._granted)
        owned = set(self._readers)
        revoked, added = sorted(owned - granted), sorted(granted - owned)
        if revoked:
            if self.auto_commit:
                self._try_commit({tp: self._positions[tp] for tp in revoked if tp in self._positions})
            if self.on_revoke:
                self.on_revoke(revoked)
            for tp in revoked:
                with self._lock:
                    reader = self._readers.pop(tp)
                reader.close()
                self._positions.pop(tp, None)
        if added:
            committed = self._committed(added)
            for tp in added:
                offset = committed.get(tp)
                if offset is None:
                    offset = self._start(tp, self.auto_offset_reset)
                reader = self._reader(tp, offset)
                with self._lock:
                    self._readers[tp] = reader
                self._positions[tp] = offset
                self._committed_positions[tp] = offset
            if self.on_assign:
                self.on_assign(added)

    def poll(self, timeout_s: float = 1.0) -> list[ConsumerRecord]:
        """Records from the partitions currently assigned (each partition in offset order)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._rebalance_readers()
            out = self._poll_readers(0)
            if not out and self._readers:
                out = self._poll_readers(min(max(deadline - time.monotonic(), 0), 0.05))
            if self.auto_commit and time.monotonic() - self._last_commit >= self.auto_commit_interval_s:
                self._try_commit()
            if out or time.monotonic() >= deadline:
                return out
            if not self._readers:
                time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))

    def _poll_readers(self, timeout_s: float) -> list[ConsumerRecord]:
        out: list[ConsumerRecord] = []
        for tp, reader in list(self._readers.items()):
            try:
                records = reader.poll(timeout_s if not out else 0)
            except OffsetOutOfRangeError:
                # The committed position fell out of the log (retention): start over per auto_offset_reset.
                offset = self._start(tp, self.auto_offset_reset)
                reader.close()
                self._readers[tp] = self._reader(tp, offset)
                self._positions[tp] = offset
                continue
            except (BrokerUnavailableError, EngineClosedError) as exc:
                # The broker went away (restart): read on from our position once it is back.
                log.info("group %s: reader of %s[%d] lost the broker (%s); reopening", self.group_id, tp[0],
                         tp[1], exc.message)
                reader.close()
                self._readers[tp] = _Reopening(self, tp)
                continue
            for r in records:
                out.append(ConsumerRecord(tp[0], tp[1], r.offset, r.timestamp, r.key, r.value, r.headers))
            if records:
                self._positions[tp] = records[-1].offset + 1
            timeout_s = 0
        return out

    def __iter__(self) -> Iterator[ConsumerRecord]:
        while not self._closed:
            yield from self.poll(1.0)

    def position(self, tp: TopicPartition) -> int | None:
        return self._positions.get(tp)

    def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Commit the next offset to consume per owned partition (default: everything returned so far
        that is not committed yet)."""
        if offsets is None:
            offsets = {tp: o for tp, o in self._positions.items() if self._committed_positions.get(tp) != o}
        else:
            offsets = dict(offsets)
        if not offsets:
            return
        try:
            self._commit(self.member_id, self.generation, offsets)
        except StaleGenerationError:
            self.heartbeat_now()  # learn the new generation, then commit what we still hold
            owned = set(self._owned())
            offsets = {tp: o for tp, o in offsets.items() if tp in owned}
            if offsets:
                self._commit(self.member_id, self.generation, offsets)
        self._committed_positions.update(offsets)
        self._last_commit = time.monotonic()

    def commit_async(self, offsets: dict[TopicPartition, int] | None = None,
                     callback: Callable[[BaseException | None], None] | None = None) -> threading.Thread:
        """Commit in a background thread; callback(error or None) when done."""
        offsets = dict(self._positions) if offsets is None else dict(offsets)

        def run():
            try:
                self.commit(offsets)
            except BaseException as exc:  # handed to the callback, never lost
                if callback:
                    callback(exc)
                return
            if callback:
                callback(None)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

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
        self._stop.set()
        self._heartbeats.join(timeout=10)
        try:
            if self.auto_commit:
                self._try_commit()
            if self.on_revoke and self._readers:
                self.on_revoke(sorted(self._readers))
            self._leave(self.member_id)
        except (TidelogError, BrokerUnavailableError) as exc:
            log.warning("group %s: leaving failed: %s", self.group_id, exc.message)
        finally:
            for reader in self._readers.values():
                reader.close()
            self._readers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Reopening:
    """Stands in for a partition reader whose broker went away: retries opening it, with backoff."""

    def __init__(self, member: GroupMember, tp: TopicPartition) -> None:
        self.member, self.tp = member, tp
        self.next_try = time.monotonic() + 0.2

    def poll(self, timeout_s: float):
        if time.monotonic() < self.next_try:
            return []
        try:
            reader = self.member._reader(self.tp, self.member._positions[self.tp])
        except TidelogError:
            self.next_try = time.monotonic() + 0.5
            return []
        self.member._readers[self.tp] = reader
        return reader.poll(timeout_s)

    def close(self) -> None:
        pass
