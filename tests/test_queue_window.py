"""The queue's in-flight window (queues/window.py) against a plain model: every record of the log kept
in one dict forever, the start computed from scratch each time. Random produce, read, acquire, ack,
release (with delays), reject, extend, clock steps and restarts from the persisted changes; after each
step the two must agree on what was handed out, refused and archived, and on the start."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tidelog.queues.window import ACKED, ACQUIRED, ARCHIVED, AVAILABLE, Change, Delivery, PartitionWindow

LOCK_MS = 100
MAX_DELIVERIES = 3
MAX_IN_FLIGHT = 6
CONSUMERS = ("a", "b", "c")


@dataclass
class Rec:
    not_before: int  # from the record's header
    group: int | None = None  # its key, for fifo
    state: str = AVAILABLE
    deliveries: int = 0
    owner: str = ""
    lock_until: int = 0
    released_not_before: int = -1  # -1: the header's time applies


@dataclass
class Model:
    log: list[Rec] = field(default_factory=list)
    read_upto: int = 0  # records below this were read into the window

    def start(self) -> int:
        for offset in range(self.read_upto):
            if self.log[offset].state not in (ACKED, ARCHIVED):
                return offset
        return self.read_upto

    def available_at(self, offset: int, now: int) -> bool:
        r = self.log[offset]
        nb = r.not_before if r.released_not_before < 0 else r.released_not_before
        return r.state == AVAILABLE and nb <= now

    def answer(self, consumer: str, offset: int, deliveries: int, late_ok: bool) -> Rec | None:
        if offset >= len(self.log) or offset < self.start():
            return None
        r = self.log[offset]
        if r.state in (ACKED, ARCHIVED) or r.deliveries != deliveries or r.deliveries == 0:
            return None
        if r.state == ACQUIRED and r.owner != consumer:
            return None
        if r.state == AVAILABLE and not late_ok:
            return None
        return r

    def make_available(self, r: Rec, not_before: int) -> bool:
        """False when archived instead."""
        if r.deliveries >= MAX_DELIVERIES:
            r.state, r.owner = ARCHIVED, ""
            return False
        r.state, r.owner, r.released_not_before = AVAILABLE, "", not_before
        return True


class WindowMachine(RuleBasedStateMachine):
    fifo = False

    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000
        self.model = Model()
        self.window = PartitionWindow(0, MAX_IN_FLIGHT, self.fifo)
        self.persisted: list[Change] = []
        self.handed: list[tuple[str, Delivery]] = []  # every delivery ever made (stale ones too)
        self.archived_model: list[int] = []
        self.archived_window: list[int] = []

    def _persist(self) -> None:
        self.archived_window += [o for o, _ in self.window.take_archived()]
        self.persisted += self.window.take_changes()

    @rule(n=st.integers(1, 4), delay=st.sampled_from([0, 0, 0, 50, 300]), group=st.sampled_from([None, 1, 2]))
    def produce(self, n, delay, group):
        for _ in range(n):
            self.model.log.append(Rec(self.now + delay if delay else 0, group))

    @rule()
    def read(self):
        w = self.window
        upto = min(len(self.model.log), w.end + w.room())
        log = self.model.log
        w.add([(o, log[o].not_before, log[o].group if self.fifo else None) for o in range(w.end, upto)], upto)
        self.model.read_upto = max(self.model.read_upto, upto)

    @rule(consumer=st.sampled_from(CONSUMERS), n=st.integers(1, 4))
    def acquire(self, consumer, n):
        got = self.window.acquire(consumer, n, self.now, LOCK_MS)
        m = self.model
        if self.fifo:  # per group: nothing while one is held; else the first not yet complete, if ready
            waiting = {r.group for r in m.log if r.state == ACQUIRED and r.group is not None}
            want = []
            for o in range(m.read_upto):
                r = m.log[o]
                if r.state != AVAILABLE:
                    continue
                if r.group is not None:
                    if r.group in waiting:
                        continue
                    waiting.add(r.group)
                if m.available_at(o, self.now):
                    want.append(o)
            want = want[:n]
        else:
            want = [o for o in range(m.read_upto) if m.available_at(o, self.now)][:n]
        assert [d.offset for d in got] == want
        for d in got:
            r = m.log[d.offset]
            r.state, r.owner, r.lock_until, r.released_not_before = ACQUIRED, consumer, self.now + LOCK_MS, -1
            r.deliveries += 1
            assert d.deliveries == r.deliveries and d.lock_until_ms == r.lock_until
            self.handed.append((consumer, d))
        self._persist()

    @precondition(lambda self: self.handed)
    @rule(
        pick=st.integers(0, 10**6),
        action=st.sampled_from(["ack", "release", "reject", "extend"]),
        who=st.sampled_from([None, *CONSUMERS]),  # None: the consumer it was handed to
        delay=st.sampled_from([0, 0, 200]),
        lock=st.sampled_from([LOCK_MS, 20, 3 * LOCK_MS]),  # an extension may also shorten the lock
    )
    def answer(self, pick, action, who, delay, lock):
        owner, d = self.handed[pick % len(self.handed)]
        consumer = who or owner
        w, m = self.window, self.model
        if action == "ack":
            refused = w.ack(consumer, d.offset, d.deliveries)
            r = m.answer(consumer, d.offset, d.deliveries, late_ok=True)
            if r is not None:
                r.state, r.owner = ACKED, ""
        elif action == "release":
            refused = w.release(consumer, d.offset, d.deliveries, self.now, delay, MAX_DELIVERIES, "retry")
            r = m.answer(consumer, d.offset, d.deliveries, late_ok=False)
            if r is not None and not m.make_available(r, self.now + delay):
                self.archived_model.append(d.offset)
        elif action == "reject":
            refused = w.reject(consumer, d.offset, d.deliveries, "bad")
            r = m.answer(consumer, d.offset, d.deliveries, late_ok=True)
            if r is not None:
                r.state, r.owner = ARCHIVED, ""
                self.archived_model.append(d.offset)
        else:
            refused = w.extend(consumer, d.offset, d.deliveries, self.now, lock)
            r = m.answer(consumer, d.offset, d.deliveries, late_ok=False)
            if r is not None:
                r.lock_until = self.now + lock
        assert (refused is None) == (r is not None), (action, d, consumer, refused)
        self._persist()

    @rule(ms=st.sampled_from([10, 60, 150, 400]))
    def tick(self, ms):
        self.now += ms
        self.window.expire(self.now, MAX_DELIVERIES)
        for offset, r in enumerate(self.model.log):
            if r.state == ACQUIRED and r.lock_until <= self.now and not self.model.make_available(r, 0):
                self.archived_model.append(offset)
        self._persist()

    @rule()
    def restart(self):
        """A broker restart: the window is rebuilt from what was persisted; the log is read again."""
        self._persist()
        start = self.window.start
        self.window = PartitionWindow(0, MAX_IN_FLIGHT, self.fifo)
        self.window.restore(start, self.persisted)
        self.model.read_upto = start  # unread, except what the persisted changes carry
        # the model keeps every record's state: nothing acknowledged or counted is forgotten

    @invariant()
    def agree(self):
        w, m = self.window, self.model
        assert w.start == m.start(), (w.start, m.start())
        assert sorted(self.archived_window) == sorted(self.archived_model)
        for offset, e in w.entries.items():
            r = m.log[offset]
            assert (e.state, e.deliveries) == (r.state, r.deliveries), (offset, e, r)
        assert len(w.entries) <= MAX_IN_FLIGHT + len(self.handed)
        assert w.end - w.start <= MAX_IN_FLIGHT or w.end == w.start


class FifoWindowMachine(WindowMachine):
    fifo = True


TestWindow = WindowMachine.TestCase
TestWindow.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestFifoWindow = FifoWindowMachine.TestCase
TestFifoWindow.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)


def test_a_shortened_lock_ends_when_it_says():
    """An extension may shorten a lock; expire (which skips its scan until the earliest lock end it
    knows of) must still release it then, and a restored window must know its locks' ends."""
    w = PartitionWindow(0, 10)
    w.add([(0, 0, None), (1, 0, None)], 2)
    first, second = w.acquire("a", 2, 0, 100)
    assert w.extend("a", first.offset, first.deliveries, 10, 20) is None  # ends at 30 now, not 100
    assert w.expire(29, MAX_DELIVERIES) == 0
    assert w.expire(30, MAX_DELIVERIES) == 1
    restored = PartitionWindow(0, 10)
    restored.restore(0, w.take_changes())
    assert restored.expire(99, MAX_DELIVERIES) == 0
    assert restored.expire(100, MAX_DELIVERIES) == 1
