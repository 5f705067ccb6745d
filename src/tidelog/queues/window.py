"""The in-flight window of one partition of one queue: which records are available, locked by a
consumer, acknowledged or archived, and how often each was delivered. A pure state machine on the
caller's clock (milliseconds): no I/O, no threads (the queue manager holds the lock around it).

    start         every offset below it is complete (acknowledged, archived, or never a record)
    end           the next offset to read from the log; offsets in [start, end) were read
    entries       offset -> Entry for records in the window not yet complete (and completed ones the
                  start has not yet passed), in increasing offset order

Each record, once read, is AVAILABLE (maybe not before a time: a delayed record or a release with a
delay), ACQUIRED by one consumer until its lock ends, then ACKED, or AVAILABLE again (released, or
its lock expired), or ARCHIVED (rejected, or released once too often: the dead-letter path). Each
acquisition counts one delivery. A consumer answers for a delivery with its (offset, delivery count):
an answer for an earlier delivery of a record that was since handed out again is refused, so a
worker whose lock expired cannot complete a record another worker now holds.

Every change is also returned as a `Change`, which the queue store persists (queues/records.py);
`restore` rebuilds a window from those changes after a restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

AVAILABLE, ACQUIRED, ACKED, ARCHIVED = "available", "acquired", "acked", "archived"
STATES = (AVAILABLE, ACQUIRED, ACKED, ARCHIVED)
COMPLETE = (ACKED, ARCHIVED)
NEVER = 1 << 62  # ms: later than any lock


@dataclass(slots=True)
class Entry:
    state: str
    deliveries: int = 0  # acquisitions so far
    not_before_ms: int = 0  # AVAILABLE: not handed out before this time (0: at once)
    owner: str = ""  # ACQUIRED: the consumer holding the lock
    lock_until_ms: int = 0  # ACQUIRED: when the lock ends
    reason: str = ""  # the last release or rejection reason (for a dead letter's headers)
    group: int | None = None  # fifo: the record's key (hashed); None: no order to keep


class Change(NamedTuple):
    """One record's new state, as persisted."""

    offset: int
    state: str
    deliveries: int
    not_before_ms: int
    owner: str
    lock_until_ms: int


class Delivery(NamedTuple):
    """A record handed to a consumer: what it answers with."""

    offset: int
    deliveries: int
    lock_until_ms: int


class Refused(NamedTuple):
    offset: int
    why: str


class PartitionWindow:
    def __init__(self, start: int = 0, max_in_flight: int = 1000, fifo: bool = False) -> None:
        self.start = self.end = start
        self.max_in_flight = max_in_flight
        self.fifo = fifo  # per key, one record at a time, in offset order (SQS FIFO's message groups)
        self.entries: dict[int, Entry] = {}
        self.changes: list[Change] = []  # since the last take_changes()
        self.archived: list[tuple[int, Entry]] = []  # to dead-letter, since the last take_archived()
        self.skipped = 0  # records the log dropped (retention) before the queue completed them
        # No lock ends before this (a lower bound: an extension only moves a lock later), so `expire`
        # scans the window only when one may have ended, not on every receive
        self.next_lock_end = NEVER

    # -- reading the log ------------------------------------------------------------------------------
    def room(self) -> int:
        """How many offsets past `end` may be read now: the window holds at most max_in_flight offsets
        from `start` (a record not yet complete at `start` holds the rest back)."""
        return max(0, self.start + self.max_in_flight - self.end)

    def add(self, records: Iterable[tuple[int, int, int | None]], next_offset: int) -> None:
        """Records read from the log at `end`: (offset, not_before_ms, group) each; `next_offset` is where
        the read stopped. An offset with a restored entry keeps its state (and learns its group)."""
        top = next(reversed(self.entries), -1)  # the entries are in offset order: sorted again only
        unsorted = False  # when a new one lands before a restored one
        for offset, not_before, group in records:
            if offset < self.end:
                continue
            e = self.entries.get(offset)
            if e is None:
                self.entries[offset] = Entry(AVAILABLE, not_before_ms=not_before, group=group)
                if offset < top:
                    unsorted = True
                else:
                    top = offset
            else:
                e.group = group
        self.end = max(self.end, next_offset)
        if unsorted:
            self._sort()
        self._advance()

    def log_starts_at(self, log_start: int) -> None:
        """Retention removed the records below `log_start`: the window cannot deliver them (counted in
        `skipped`: those read and not complete, and every offset not read yet)."""
        if log_start <= self.start:
            return
        below = self._below(log_start)
        self.skipped += sum(1 for o in below if self.entries[o].state not in COMPLETE and o < self.end)
        self.skipped += max(0, log_start - self.end)
        for o in below:
            del self.entries[o]
        self.start = log_start
        self.end = max(self.end, log_start)

    # -- consumers ------------------------------------------------------------------------------------
    def acquire(self, consumer: str, n: int, now_ms: int, lock_ms: int) -> list[Delivery]:
        """Up to n available records, in offset order, locked for `consumer` until now + lock_ms. In fifo
        mode a record waits while an earlier one of its group is held or not yet complete."""
        out: list[Delivery] = []
        waiting: set[int] = set()  # fifo: groups with a record held or ahead in line
        if self.fifo:
            waiting = {e.group for e in self.entries.values() if e.state == ACQUIRED and e.group is not None}
        for offset, e in self.entries.items():
            if len(out) >= n or offset >= self.end:
                break
            if self.fifo and e.group is not None and e.state == AVAILABLE:
                if e.group in waiting:
                    continue
                waiting.add(e.group)
            if e.state == AVAILABLE and e.not_before_ms <= now_ms:
                e.state, e.owner, e.lock_until_ms, e.not_before_ms = ACQUIRED, consumer, now_ms + lock_ms, 0
                self.next_lock_end = min(self.next_lock_end, e.lock_until_ms)
                e.deliveries += 1
                self._changed(offset, e)
                out.append(Delivery(offset, e.deliveries, e.lock_until_ms))
        return out

    def ack(self, consumer: str, offset: int, deliveries: int) -> Refused | None:
        """Complete a delivery. Also after its lock expired, as long as nobody holds the record since."""
        e, why = self._answerable(consumer, offset, deliveries, late_ok=True)
        if e is None:
            return Refused(offset, why)
        e.state, e.owner, e.lock_until_ms, e.not_before_ms = ACKED, "", 0, 0
        self._changed(offset, e)
        self._advance()
        return None

    def release(
        self, consumer: str, offset: int, deliveries: int, now_ms: int, delay_ms: int, max_deliveries: int, reason: str
    ) -> Refused | None:
        """Make a delivery available again (not before now + delay_ms); archived instead once it was
        delivered max_deliveries times."""
        e, why = self._answerable(consumer, offset, deliveries, late_ok=False)
        if e is None:
            return Refused(offset, why)
        self._make_available(offset, e, now_ms + max(0, delay_ms), max_deliveries, reason)
        return None

    def reject(self, consumer: str, offset: int, deliveries: int, reason: str) -> Refused | None:
        """Archive a delivery at once (the dead-letter path)."""
        e, why = self._answerable(consumer, offset, deliveries, late_ok=True)
        if e is None:
            return Refused(offset, why)
        e.reason = reason
        self._archive(offset, e)
        return None

    def extend(self, consumer: str, offset: int, deliveries: int, now_ms: int, lock_ms: int) -> Refused | None:
        """Hold a delivery's lock until now + lock_ms (a long job)."""
        e, why = self._answerable(consumer, offset, deliveries, late_ok=False)
        if e is None:
            return Refused(offset, why)
        e.lock_until_ms = now_ms + lock_ms
        self.next_lock_end = min(self.next_lock_end, e.lock_until_ms)  # (a shorter lock than before)
        self._changed(offset, e)
        return None

    def expire(self, now_ms: int, max_deliveries: int) -> int:
        """Release every lock that ended by now; returns how many."""
        if now_ms < self.next_lock_end:
            return 0
        ended = [(o, e) for o, e in self.entries.items() if e.state == ACQUIRED and e.lock_until_ms <= now_ms]
        for offset, e in ended:
            self._make_available(offset, e, 0, max_deliveries, "lock expired")
        self._find_next_lock_end()
        return len(ended)

    def _find_next_lock_end(self) -> None:
        locks = [e.lock_until_ms for e in self.entries.values() if e.state == ACQUIRED]
        self.next_lock_end = min(locks, default=NEVER)

    def drop_consumer(self, consumer: str, max_deliveries: int) -> int:
        """A consumer that left cleanly: what it holds is available again at once."""
        held = [(o, e) for o, e in self.entries.items() if e.state == ACQUIRED and e.owner == consumer]
        for offset, e in held:
            self._make_available(offset, e, 0, max_deliveries, "consumer left")
        return len(held)

    # -- what the store and describe need -------------------------------------------------------------
    def take_changes(self) -> list[Change]:
        out, self.changes = self.changes, []
        return out

    def take_archived(self) -> list[tuple[int, Entry]]:
        out, self.archived = self.archived, []
        return out

    def counts(self, now_ms: int) -> dict[str, int]:
        c = {"available": 0, "delayed": 0, "in_flight": 0, "acked": 0, "archived": 0}
        for offset, e in self.entries.items():
            if e.state == AVAILABLE and offset < self.end:
                c["delayed" if e.not_before_ms > now_ms else "available"] += 1
            elif e.state == ACQUIRED:
                c["in_flight"] += 1
            elif e.state in COMPLETE:
                c["acked" if e.state == ACKED else "archived"] += 1
        return c

    def snapshot(self) -> list[Change]:
        """The whole window as changes (a restore of these gives the same window)."""
        return [_change(o, e) for o, e in self.entries.items() if e.state != AVAILABLE or e.deliveries]

    def restore(self, start: int, changes: Iterable[Change]) -> None:
        """Apply persisted changes (in the order they were written) on top of this window."""
        if start > self.start:
            for o in self._below(start):
                del self.entries[o]
            self.start = start
        self.end = self.start  # the log is read again from the start; restored entries keep their state
        for c in changes:
            if c.offset >= self.start:
                self.entries[c.offset] = Entry(c.state, c.deliveries, c.not_before_ms, c.owner, c.lock_until_ms)
        self._sort()
        self._find_next_lock_end()

    # -- inside -----------------------------------------------------------------------------------------
    def _answerable(self, consumer: str, offset: int, deliveries: int, late_ok: bool) -> tuple[Entry | None, str]:
        e = self.entries.get(offset)
        if e is None and offset < self.start:
            return None, "already complete (acknowledged or archived)"
        if e is None:
            return None, "never delivered"
        if e.state in COMPLETE:
            return None, f"already {e.state}"
        if e.deliveries != deliveries:
            return None, f"delivered again since (delivery {e.deliveries}, not {deliveries})"
        if e.state == ACQUIRED and e.owner != consumer:
            return None, "locked by another consumer"
        if e.state == AVAILABLE and not late_ok:
            return None, "its lock expired"
        return e, ""

    def _make_available(self, offset: int, e: Entry, not_before: int, max_deliveries: int, reason: str) -> None:
        e.reason = reason
        if e.deliveries >= max_deliveries:
            self._archive(offset, e)
            return
        e.state, e.owner, e.lock_until_ms, e.not_before_ms = AVAILABLE, "", 0, not_before
        self._changed(offset, e)

    def _archive(self, offset: int, e: Entry) -> None:
        """Archived in memory now; the dead letter is written by the manager before the change is persisted
        (take_archived first, then take_changes): a crash between leaves the record to archive again."""
        e.state, e.owner, e.lock_until_ms, e.not_before_ms = ARCHIVED, "", 0, 0
        self.archived.append((offset, e))
        self._changed(offset, e)
        self._advance()

    def _changed(self, offset: int, e: Entry) -> None:
        self.changes.append(_change(offset, e))

    def _advance(self) -> None:
        """Move `start` past every complete record at the front of the window."""
        done = []
        for offset, e in self.entries.items():
            if offset >= self.end or e.state not in COMPLETE:
                self.start = max(self.start, offset if offset < self.end else self.end)
                break
            done.append(offset)
        else:
            self.start = max(self.start, self.end)
        for o in done:
            del self.entries[o]

    def _below(self, offset: int) -> list[int]:
        return [o for o in self.entries if o < offset]

    def _sort(self) -> None:
        if any(a > b for a, b in _pairs(self.entries)):
            self.entries = dict(sorted(self.entries.items()))


def _change(offset: int, e: Entry) -> Change:
    return Change(offset, e.state, e.deliveries, e.not_before_ms, e.owner, e.lock_until_ms)


def _pairs(d: dict[int, Entry]) -> Iterator[tuple[int, int]]:
    keys = iter(d)
    prev = next(keys, None)
    for k in keys:
        yield prev, k  # type: ignore[misc]
        prev = k
