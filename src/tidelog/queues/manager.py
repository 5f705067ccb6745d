"""Queues on the log: many consumers taking records of the same partitions, each record acknowledged on
its own (what RabbitMQ, SQS and Kafka's share groups offer). One QueueManager per engine; the embedded
QueueConsumer and the gRPC Queue service both call it. Thread-safe (one lock; long polls wait on a
condition outside it).

A queue reads its topics' partitions, each through a PartitionWindow (queues/window.py). `receive`
locks available records for a consumer for `lock_ms` and counts a delivery; `ack` completes a record,
`release` makes it available again (after an optional delay), `reject` dead-letters it, and a lock that
ends releases it. A record delivered `max_deliveries` times and released once more, or rejected, goes to
the dead-letter topic with headers naming where it came from (headers.py), or, without one, is
archived and counted. Records carrying a not-before header are not delivered earlier.

Durability: every change is written to `__queue_state` (queues/records.py) before the call returns, and
a receive's deliveries before the records are handed out, so a crash or restart forgets no
acknowledgement and no delivery count; locks survive a restart too (a consumer's ack after it still
counts). A dead letter is written before the record is marked archived: a crash between writes it
again (at least once). Order is best effort: records are handed out in offset order per partition, but
a released or expired record comes back after later ones were delivered; a fifo queue hands out one record
per key at a time, in offset order.

The window holds at most `max_in_flight` offsets from its start: a record not yet complete at the start
holds back the records `max_in_flight` past it (they are read once the start moves).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import cast

from .. import headers as hdr
from ..codec.batch import Record
from ..engine.engine import Engine, is_internal_topic
from ..engine.state_topic import Append, StateTopic
from ..errors import (
    InvalidRequestError,
    OffsetOutOfRangeError,
    QueueConfigMismatchError,
    TidelogError,
    UnknownQueueError,
    UnknownTopicError,
)
from ..values import Answer, AnswerRefused, QueueConfig, QueueDescription, QueueMessage, QueuePartitionState
from . import records
from .data import LocalData, QueueData
from .records import QUEUE_STATE_TOPIC, QueueRecord, RedriveRecord, WindowRecord
from .window import ACQUIRED, AVAILABLE, Entry, PartitionWindow, Refused

log = logging.getLogger("tidelog.queues")

SEGMENT_BYTES = 8 << 20
READ_BYTES = 1 << 20  # per partition per receive
MAX_RECEIVE = 10_000
QueuePartition = tuple[str, str, int]  # queue, topic, partition


COUNTERS = ("delivered", "acked", "released", "rejected", "expired", "dead_lettered", "archived", "skipped")


class QueueManager:
    def __init__(
        self,
        engine: Engine,
        append: Append | None = None,
        clock_ms: Callable[[], int] | None = None,
        data: QueueData | None = None,
    ) -> None:
        """engine: where `__queue_state` is (written through `append` when given: a cluster's replicated
        write); data: where the queues' topics are (default: the same engine)."""
        self.engine = engine
        self.data: QueueData = data or LocalData(engine)
        self.clock = clock_ms or engine.clock
        self._lock = threading.RLock()
        # Wakes waiting receives: a leaf lock (nothing else is taken while holding it), because the
        # engine calls the data listener under a partition's lock, which receives take after _lock
        self._signal = threading.Condition(threading.Lock())
        self._seq = 0
        self._wakers: set[Callable[[], None]] = set()  # called on every wake (the server's event loop)
        self._queues: dict[str, QueueConfig] = {}
        self._windows: dict[QueuePartition, PartitionWindow] = {}
        self._redrive: dict[tuple[str, str], dict[int, int]] = {}
        self._totals: dict[str, dict[str, int]] = {}
        self._listening: set[tuple[str, int]] = set()
        # Records decoded and not yet complete, and the rest of the last fetch (read ahead): a fetch
        # returns whole batches, and a receive wants only what fits its window
        self._cache: dict[QueuePartition, dict[int, Record]] = {}
        self._turn = 0  # which partition a receive looks at first (round robin)
        self.malformed = 0
        self.topic = StateTopic(engine, QUEUE_STATE_TOPIC, SEGMENT_BYTES, append, lazy=True)
        self._replay()

    # -- queues -------------------------------------------------------------------------------------------
    def declare(
        self,
        queue: str,
        topics: Iterable[str],
        *,
        lock_ms: int = 0,
        max_deliveries: int = 0,
        dead_letter_topic: str | None = None,
        max_in_flight: int = 0,
        start: str = "earliest",
        fifo: bool = False,
    ) -> QueueConfig:
        """The queue's configuration, creating the queue when it does not exist (0 or None: the
        default; else it must match the queue's). A new queue starts at the topics' earliest records
        (or `start="latest"`: only records written from now on)."""
        topics = tuple(dict.fromkeys(topics))
        _check_name(queue)
        if not topics:
            with self._lock:
                if queue in self._queues:  # joining an existing queue: its topics
                    return self._queues[queue]
            raise UnknownQueueError(f"unknown queue {queue!r}: name the topics it reads to create it")
        for t in topics:
            if is_internal_topic(t):
                raise InvalidRequestError(f"{t} is internal: a queue cannot read it")
            if not self.data.has_topic(t):
                raise UnknownTopicError(f"unknown topic {t!r}")
        if start not in ("earliest", "latest"):
            raise InvalidRequestError(f"start is earliest or latest, not {start!r}")
        for name, value in (("lock_ms", lock_ms), ("max_deliveries", max_deliveries), ("max_in_flight", max_in_flight)):
            if not isinstance(value, int) or value < 0:
                raise InvalidRequestError(f"{name} must be a positive number of {name.split('_')[-1]}, got {value!r}")
        with self._lock:
            have = self._queues.get(queue)
            if have is not None:
                _check_same(queue, have, topics, lock_ms, max_deliveries, dead_letter_topic, max_in_flight, fifo)
                return have
            default = QueueConfig(topics)
            config = QueueConfig(
                topics,
                lock_ms or default.lock_ms,
                max_deliveries or default.max_deliveries,
                dead_letter_topic or "",
                max_in_flight or default.max_in_flight,
                self.clock(),
                bool(fifo),
            )
            if config.dead_letter_topic:
                if is_internal_topic(config.dead_letter_topic) or config.dead_letter_topic in topics:
                    raise InvalidRequestError(f"{config.dead_letter_topic} cannot be the queue's dead-letter topic")
                if not self.data.has_topic(config.dead_letter_topic):
                    self.data.create_topic(config.dead_letter_topic, 1)
            keys, values = [records.queue_key(queue)], [records.queue_value(config)]
            for t in topics:
                for p in range(self.data.partitions(t)):
                    o = self.data.offsets(t, p)
                    at = o.log_start if start == "earliest" else o.log_end
                    keys.append(records.window_key(queue, t, p))
                    values.append(records.window_value(at, [], snapshot=True))
                    self._windows[(queue, t, p)] = _window_for(config, at)
                self._cache.pop((queue, t, p), None)
            self.topic.write(keys, values)
            self._queues[queue] = config
            self._totals[queue] = dict.fromkeys(COUNTERS, 0)
            log.info("queue created", extra={"event": "queue_created", "queue": queue, **config.to_json()})
            return config

    def queues(self) -> list[str]:
        with self._lock:
            return sorted(self._queues)

    def config(self, queue: str) -> QueueConfig:
        with self._lock:
            return self._config(queue)

    def delete(self, queue: str) -> None:
        """Forget the queue and its windows (the records stay in their topics)."""
        with self._lock:
            self._config(queue)
            self.topic.write([records.queue_key(queue)], [None])
            self._forget(queue)
            log.info("queue deleted", extra={"event": "queue_deleted", "queue": queue})

    def reset(self, queue: str, to: str | dict[tuple[str, int], int] = "earliest") -> None:
        """Move the queue's start ("earliest", "latest", or an offset per (topic, partition)); every lock,
        delay and delivery count of the windows moved is forgotten."""
        with self._lock:
            config = self._config(queue)
            keys, values = [], []
            for t, p in self._partitions(config):
                o = self.data.offsets(t, p)
                if isinstance(to, dict):
                    if (t, p) not in to:
                        continue
                    at = to[(t, p)]
                    if not o.log_start <= at <= o.log_end:
                        raise InvalidRequestError(f"offset {at} for {t}[{p}] is outside {o.log_start}..{o.log_end}")
                elif to in ("earliest", "latest"):
                    at = o.log_start if to == "earliest" else o.log_end
                else:
                    raise InvalidRequestError(f"reset to earliest, latest or offsets, not {to!r}")
                keys.append(records.window_key(queue, t, p))
                values.append(records.window_value(at, [], snapshot=True))
                self._windows[(queue, t, p)] = _window_for(config, at)
                self._cache.pop((queue, t, p), None)
            self.topic.write(keys, values)
            self._wake_receivers()

    # -- consumers ----------------------------------------------------------------------------------------
    def receive(self, queue: str, consumer: str, max_messages: int = 1, wait_ms: int = 0) -> list[QueueMessage]:
        """Up to max_messages records locked for `consumer`, waiting up to wait_ms for the first one."""
        if not consumer:
            raise InvalidRequestError("a consumer id is needed to receive")
        if not 0 < max_messages <= MAX_RECEIVE:
            raise InvalidRequestError(f"max_messages must be 1..{MAX_RECEIVE}, got {max_messages}")
        deadline = time.monotonic() + max(0, wait_ms) / 1000
        while True:
            with self._signal:
                seen = self._seq
            with self._lock:
                config = self._config(queue)  # deleted meanwhile: UnknownQueueError
                self._listen(config)
                got = self._receive(queue, config, consumer, max_messages)
                if got:
                    return got
                pause = self._next_due_s(queue)
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            with self._signal:
                if self._seq == seen:
                    self._signal.wait(min(left, pause))

    def ack(self, queue: str, consumer: str, answers: Iterable[Answer]) -> list[AnswerRefused]:
        return self._answer(queue, consumer, answers, "acked", lambda w, a: w.ack(consumer, a.offset, a.delivery_count))

    def release(
        self, queue: str, consumer: str, answers: Iterable[Answer], delay_ms: int = 0, reason: str = ""
    ) -> list[AnswerRefused]:
        if delay_ms < 0:
            raise InvalidRequestError(f"delay_ms must be >= 0, got {delay_ms}")
        config, now = self.config(queue), self.clock()
        return self._answer(
            queue,
            consumer,
            answers,
            "released",
            lambda w, a: w.release(
                consumer, a.offset, a.delivery_count, now, delay_ms, config.max_deliveries, reason or "released"
            ),
        )

    def reject(self, queue: str, consumer: str, answers: Iterable[Answer], reason: str = "") -> list[AnswerRefused]:
        return self._answer(
            queue,
            consumer,
            answers,
            "rejected",
            lambda w, a: w.reject(consumer, a.offset, a.delivery_count, reason or "rejected"),
        )

    def extend(self, queue: str, consumer: str, answers: Iterable[Answer], lock_ms: int = 0) -> list[AnswerRefused]:
        config, now = self.config(queue), self.clock()
        if lock_ms < 0:
            raise InvalidRequestError(f"lock_ms must be >= 0, got {lock_ms}")
        ms = lock_ms or config.lock_ms
        return self._answer(
            queue, consumer, answers, "", lambda w, a: w.extend(consumer, a.offset, a.delivery_count, now, ms)
        )

    def leave(self, queue: str, consumer: str) -> int:
        """A consumer that stops: what it holds is available again at once; returns how many."""
        with self._lock:
            config = self._config(queue)
            n = sum(w.drop_consumer(consumer, config.max_deliveries) for w in self._windows_of(queue))
            self._settle(queue, config)
            self._count(queue, "released", n)
            self._wake_receivers()
            return n

    def tick(self) -> int:
        """Release every lock that ended (dead-lettering what was delivered too often); returns how many.
        Also done by every receive and describe; a broker calls it on a timer for the metrics."""
        with self._lock:
            now, n = self.clock(), 0
            for queue, config in list(self._queues.items()):
                expired = sum(w.expire(now, config.max_deliveries) for w in self._windows_of(queue))
                if expired:
                    self._count(queue, "expired", expired)
                    self._settle(queue, config)
                    n += expired
            if n:
                self._wake_receivers()
            return n

    # -- what operators see --------------------------------------------------------------------------------
    def describe(self, queue: str) -> QueueDescription:
        self.tick()
        with self._lock:
            config, now = self._config(queue), self.clock()
            out = []
            for t, p in self._partitions(config):
                w = self._window(queue, t, p, config)
                counts = w.counts(now)
                log_end = self.data.offsets(t, p).log_end
                oldest = None
                if w.start < log_end:
                    ts = self.data.record_timestamp(t, p, w.start)
                    oldest = None if ts is None else max(0, now - ts)
                out.append(
                    QueuePartitionState(
                        t, p, w.start, log_end, counts["in_flight"], counts["available"], counts["delayed"],
                        max(0, log_end - w.end), oldest,
                    )
                )  # fmt: skip
            return QueueDescription(queue, config, out, dict(self._totals[queue]))

    def redrive(self, source: str, target: str, limit: int = 0) -> int:
        """Move dead letters of `source` (from where the last redrive to `target` stopped) back to
        `target`, without their dead-letter and delay headers; returns how many. Moved once each: the
        progress is kept in `__queue_state`."""
        for t in (source, target):
            if not self.data.has_topic(t):
                raise UnknownTopicError(f"unknown topic {t!r}")
            if is_internal_topic(t):
                raise InvalidRequestError(f"{t} is internal")
        moved = 0
        with self._lock:
            progress = self._redrive.setdefault((source, target), {})
            for p in range(self.data.partitions(source)):
                o = self.data.offsets(source, p)
                at = max(progress.get(p, 0), o.log_start)
                while at < o.log_end and not (limit and moved >= limit):
                    recs = self.data.read(source, p, at, READ_BYTES)
                    if limit:
                        recs = recs[: limit - moved]
                    if not recs:
                        break
                    self.data.produce(
                        target,
                        [cast(bytes | None, r.value) for r in recs],
                        [cast(bytes | None, r.key) for r in recs],
                        [hdr.without(r.headers, (*hdr.DLQ_HEADERS, hdr.NOT_BEFORE)) for r in recs],
                    )
                    at = recs[-1].offset + 1
                    moved += len(recs)
                    progress[p] = at
                    self.topic.write([records.redrive_key(source, target)], [records.redrive_value(progress)])
        if moved:
            log.info(
                "dead letters redriven",
                extra={"event": "queue_redrive", "source": source, "target": target, "records": moved},
            )
        return moved

    # -- inside --------------------------------------------------------------------------------------------
    def _receive(self, queue: str, config: QueueConfig, consumer: str, n: int) -> list[QueueMessage]:
        now = self.clock()
        parts = self._partitions(config)
        if not parts:
            return []
        self._turn += 1
        first = self._turn % len(parts)
        chosen: list[tuple[str, int, list, dict[int, Record]]] = []
        left = n
        for i in range(len(parts)):
            t, p = parts[(first + i) % len(parts)]
            w = self._window(queue, t, p, config)
            self._count(queue, "expired", w.expire(now, config.max_deliveries))
            w, fresh = self._read(queue, config, w, t, p)
            got = w.acquire(consumer, left, now, config.lock_ms)
            if got:
                chosen.append((t, p, got, fresh))
                left -= len(got)
            if left <= 0:
                break
        self._settle(queue, config)  # the deliveries are durable before anyone sees them
        out = []
        for t, p, deliveries, fresh in chosen:
            again = [d.offset for d in deliveries if d.offset not in fresh]  # redeliveries: read them again
            by_offset = {**fresh, **self._records(t, p, again)} if again else fresh
            for d in deliveries:
                r = by_offset.get(d.offset)
                if r is None:  # gone (retention) after it was read: complete it, there is nothing to hand out
                    self._window(queue, t, p, config).ack(consumer, d.offset, d.deliveries)
                    self._count(queue, "skipped", 1)
                    continue
                key, value = cast(bytes | None, r.key), cast(bytes | None, r.value)  # fetched as copies
                out.append(
                    QueueMessage(t, p, d.offset, d.deliveries, d.lock_until_ms, r.timestamp, key, value, r.headers)
                )
        self._count(queue, "delivered", len(out))
        if len(out) != sum(len(d) for _, _, d, _ in chosen):
            self._settle(queue, config)
        return out

    def _read(
        self, queue: str, config: QueueConfig, w: PartitionWindow, topic: str, partition: int
    ) -> tuple[PartitionWindow, dict[int, Record]]:
        """Bring the window's unread records in, as far as it has room; returns the window (a new one
        when the log is now shorter than what the queue read: the topic was deleted and created again,
        so the queue starts over at its beginning) and the records read, by offset (handed out at once,
        they are not read twice)."""
        try:
            o = self.data.offsets(topic, partition)
        except TidelogError as exc:
            if not exc.retriable:
                raise
            return w, self._cache.get((queue, topic, partition), {})  # (a leader away: its records wait)
        if w.end > o.log_end:
            log.warning(
                "the log of %s[%d] ends before what queue %s read: the topic was created again; the queue "
                "starts over at its beginning",
                topic, partition, queue,
                extra={"event": "queue_partition_reset", "queue": queue, "topic": topic, "partition": partition,
                       "was": w.end, "log_end": o.log_end},
            )  # fmt: skip
            w = self._windows[(queue, topic, partition)] = _window_for(config, o.log_start)
            self._cache.pop((queue, topic, partition), None)
            self.topic.write([records.window_key(queue, topic, partition)], [records.window_value(w.start, [], True)])
        if w.end < o.log_start:
            w.log_starts_at(o.log_start)
        cache = self._cache.setdefault((queue, topic, partition), {})
        for stale in [k for k in cache if k < w.start]:
            del cache[stale]
        room = w.room()
        if room <= 0 or w.end >= o.high_watermark:  # (records past it are not committed yet)
            return w, cache
        ahead = [r for k, r in cache.items() if k >= w.end]
        if len(ahead) < room:
            at = ahead[-1].offset + 1 if ahead else w.end
            if at < o.high_watermark:
                try:
                    fetched = [r for r in self.data.read(topic, partition, at, READ_BYTES) if r.offset >= at]
                except TidelogError as exc:
                    if not exc.retriable:
                        raise
                    fetched = []
                for r in fetched:
                    cache[r.offset] = r
                ahead += fetched
        recs = ahead[:room]
        if recs:
            fifo = config.fifo
            w.add(
                [(r.offset, hdr.not_before_ms(r.headers), _group(r.key) if fifo else None) for r in recs],
                recs[-1].offset + 1,
            )
        return w, cache

    def _records(self, topic: str, partition: int, offsets: list[int]) -> dict[int, Record]:
        """The records at these offsets (read again from the log: a redelivery needs them too)."""
        want, out = sorted(set(offsets)), {}
        i = 0
        while i < len(want):
            start = want[i]
            try:
                recs = self.data.read(topic, partition, start, READ_BYTES)
            except OffsetOutOfRangeError:  # gone (retention): the caller skips it
                i += 1
                continue
            if not recs:
                break
            last = recs[-1].offset
            for r in recs:
                out[r.offset] = r
            while i < len(want) and want[i] <= last:
                i += 1
        return out

    def _answer(
        self, queue: str, consumer: str, answers: Iterable[Answer], counter: str, apply: Callable
    ) -> list[AnswerRefused]:
        refused: list[AnswerRefused] = []
        with self._lock:
            config = self._config(queue)
            done = 0
            for a in answers:
                w = self._windows.get((queue, a.topic, a.partition))
                r: Refused | None = Refused(a.offset, "not a partition of this queue") if w is None else apply(w, a)
                if r is None:
                    done += 1
                else:
                    refused.append(AnswerRefused(a.topic, a.partition, a.offset, r.why))
            if counter:
                self._count(queue, counter, done)
            self._settle(queue, config)
            self._wake_receivers()
        return refused

    def _settle(self, queue: str, config: QueueConfig) -> None:
        """Write the dead letters, then every window's changes (one append). When a write fails (a full
        disk; in a cluster, an unreachable leader), what it was to write is kept for the next settle:
        a dead letter is written before any state saying so, and no change is forgotten in memory."""
        windows = [(t, p, w) for (q, t, p), w in self._windows.items() if q == queue]
        for t, p, w in windows:
            archived = w.take_archived()
            if archived:
                try:
                    self._dead_letter(queue, config, t, p, archived)
                except BaseException:
                    w.archived[:0] = archived
                    raise
        keys: list[bytes] = []
        values: list[bytes | None] = []
        taken: list[tuple[PartitionWindow, list]] = []
        for t, p, w in windows:
            changes = w.take_changes()
            if changes or w.skipped:
                if w.skipped:
                    self._count(queue, "skipped", w.skipped)
                    w.skipped = 0
                keys.append(records.window_key(queue, t, p))
                values.append(records.window_value(w.start, changes))
                taken.append((w, changes))
        if keys:
            try:
                self.topic.write(keys, values)
            except BaseException:
                for w, changes in taken:
                    w.changes[:0] = changes
                raise
            self._maybe_compact()

    def _dead_letter(
        self, queue: str, config: QueueConfig, topic: str, partition: int, archived: list[tuple[int, Entry]]
    ) -> None:
        if not config.dead_letter_topic:
            self._count(queue, "archived", len(archived))
            for offset, e in archived:
                log.warning(
                    "record archived: no dead-letter topic",
                    extra={"event": "queue_archived", "queue": queue, "topic": topic, "partition": partition,
                           "offset": offset, "delivery_count": e.deliveries, "reason": e.reason},
                )  # fmt: skip
            return
        by_offset = self._records(topic, partition, [o for o, _ in archived])
        values: list[bytes | None] = []
        keys: list[bytes | None] = []
        heads: list[list] = []
        for offset, e in archived:
            r = by_offset.get(offset)
            if r is None:
                continue
            values.append(cast(bytes | None, r.value))  # fetched as copies
            keys.append(cast(bytes | None, r.key))
            heads.append(
                [
                    *hdr.without(r.headers, hdr.DLQ_HEADERS),
                    (hdr.DLQ_QUEUE, queue.encode()),
                    (hdr.DLQ_TOPIC, topic.encode()),
                    (hdr.DLQ_PARTITION, str(partition).encode()),
                    (hdr.DLQ_OFFSET, str(offset).encode()),
                    (hdr.DLQ_DELIVERIES, str(e.deliveries).encode()),
                    (hdr.DLQ_REASON, e.reason.encode()[:1024]),
                ]
            )
            log.warning(
                "record dead-lettered",
                extra={"event": "queue_dead_lettered", "queue": queue, "topic": topic, "partition": partition,
                       "offset": offset, "delivery_count": e.deliveries, "reason": e.reason,
                       "dead_letter_topic": config.dead_letter_topic},
            )  # fmt: skip
        if values:
            if not self.data.has_topic(config.dead_letter_topic):
                self.data.create_topic(config.dead_letter_topic, 1)
            self.data.produce(config.dead_letter_topic, values, keys, heads)
        self._count(queue, "dead_lettered", len(values))

    def _config(self, queue: str) -> QueueConfig:
        config = self._queues.get(queue)
        if config is None:
            raise UnknownQueueError(f"unknown queue {queue!r}")
        return config

    def _partitions(self, config: QueueConfig) -> list[tuple[str, int]]:
        return [(t, p) for t in config.topics if self.data.has_topic(t) for p in range(self.data.partitions(t))]

    def _window(self, queue: str, topic: str, partition: int, config: QueueConfig) -> PartitionWindow:
        w = self._windows.get((queue, topic, partition))
        if w is None:  # a partition added since (it starts at its beginning: all of it is new)
            w = self._windows[(queue, topic, partition)] = _window_for(config, 0)
        return w

    def _windows_of(self, queue: str) -> list[PartitionWindow]:
        return [w for (q, _, _), w in self._windows.items() if q == queue]

    def _forget(self, queue: str) -> None:
        self._queues.pop(queue, None)
        for key in [k for k in self._cache if k[0] == queue]:
            del self._cache[key]
        self._totals.pop(queue, None)
        for key in [k for k in self._windows if k[0] == queue]:
            del self._windows[key]
        self._wake_receivers()

    def _count(self, queue: str, what: str, n: int) -> None:
        if n and queue in self._totals:
            self._totals[queue][what] += n

    def _next_due_s(self, queue: str) -> float:
        """How long a waiting receive may sleep before a lock ends or a delay passes (0.01 to 1 s)."""
        now, due = self.clock(), 1000
        for w in self._windows_of(queue):
            for e in w.entries.values():
                if e.state == ACQUIRED:
                    due = min(due, e.lock_until_ms - now)
                elif e.state == AVAILABLE and e.not_before_ms:
                    due = min(due, e.not_before_ms - now)
        if self.data.poll_s is not None:
            due = min(due, int(self.data.poll_s * 1000))
        return max(10, due) / 1000

    def _listen(self, config: QueueConfig) -> None:
        """New records wake waiting receives."""
        for t, p in self._partitions(config):
            if (t, p) not in self._listening:
                self._listening.add((t, p))
                self.data.add_listener(t, p, self._wake_receivers)

    def close(self) -> None:
        """Stop listening to the topics (a broker that no longer runs the queues: another one does)."""
        with self._lock:
            for t, p in self._listening:
                try:
                    self.data.remove_listener(t, p, self._wake_receivers)
                except TidelogError:  # the topic is gone
                    pass
            self._listening.clear()
        self._wake_receivers()

    def _wake_receivers(self) -> None:
        with self._signal:
            self._seq += 1
            self._signal.notify_all()
            for waker in self._wakers:
                waker()

    def on_wake(self, waker: Callable[[], None]) -> None:
        """Call waker() (quick, non-blocking: it runs under locks) whenever a waiting receive could now
        get records; for receivers that wait elsewhere than in receive() (an event loop)."""
        with self._signal:
            self._wakers.add(waker)

    def off_wake(self, waker: Callable[[], None]) -> None:
        with self._signal:
            self._wakers.discard(waker)

    def next_due_s(self, queue: str) -> float:
        """How long a receiver may wait before a lock ends or a delay passes, at most 1 s."""
        with self._lock:
            return self._next_due_s(queue)

    def _maybe_compact(self) -> None:
        live = len(self._queues) + len(self._windows) + len(self._redrive)
        if self.topic.due(live + sum(len(w.entries) for w in self._windows.values()) // 100):
            self.compact()

    def compact(self) -> int:
        """Write every queue and window whole at the end of `__queue_state`; drop what came before."""
        with self._lock:
            items: list[tuple[bytes, bytes | None]] = [
                (records.queue_key(q), records.queue_value(c)) for q, c in sorted(self._queues.items())
            ]
            items += [
                (records.window_key(q, t, p), records.window_value(w.start, w.snapshot(), snapshot=True))
                for (q, t, p), w in sorted(self._windows.items())
            ]
            items += [
                (records.redrive_key(s, t), records.redrive_value(n)) for (s, t), n in sorted(self._redrive.items())
            ]
            return self.topic.compact(items)

    def _replay(self) -> None:
        pending: dict[QueuePartition, list[WindowRecord]] = {}
        for offset, key, value in self.topic.replay():
            try:
                rec = records.parse(key, value)
            except records.MalformedRecord as exc:
                self.malformed += 1
                log.warning(
                    "skipped a malformed record of %s at offset %d (%s); run `tidelog check`",
                    QUEUE_STATE_TOPIC, offset, exc, extra={"event": "queue_state_malformed", "offset": offset},
                )  # fmt: skip
                continue
            if isinstance(rec, QueueRecord):
                if rec.config is None:
                    self._forget(rec.queue)
                    for k in [k for k in pending if k[0] == rec.queue]:
                        del pending[k]
                else:
                    self._queues[rec.queue] = rec.config
                    self._totals.setdefault(rec.queue, dict.fromkeys(COUNTERS, 0))
            elif isinstance(rec, WindowRecord):
                k = (rec.queue, rec.topic, rec.partition)
                if rec.snapshot:
                    pending[k] = [rec]
                else:
                    pending.setdefault(k, []).append(rec)
            elif isinstance(rec, RedriveRecord):
                self._redrive[(rec.source, rec.target)] = dict(rec.next)
        for (q, t, p), recs in pending.items():
            config = self._queues.get(q)
            if config is None:
                continue
            w = _window_for(config, 0)
            changes = {}
            for r in recs:
                for c in r.changes:
                    changes[c.offset] = c
            w.restore(max(r.start for r in recs), changes.values())
            self._windows[(q, t, p)] = w


def _check_name(queue: object) -> None:
    if not isinstance(queue, str) or not queue or len(queue) > 249 or queue.startswith("__"):
        raise InvalidRequestError(f"a queue name is 1-249 characters, not starting with '__', got {queue!r}")


def _window_for(config: QueueConfig, start: int) -> PartitionWindow:
    return PartitionWindow(start, config.max_in_flight, config.fifo)


def _group(key: object) -> int | None:
    """A fifo record's group: its key (keyless records keep no order)."""
    return None if key is None else hash(bytes(key))  # type: ignore[call-overload]


def _check_same(
    queue, have: QueueConfig, topics, lock_ms, max_deliveries, dead_letter_topic, max_in_flight, fifo=False
) -> None:
    asked = {
        "topics": (topics, have.topics),
        "lock_ms": (lock_ms, have.lock_ms),
        "max_deliveries": (max_deliveries, have.max_deliveries),
        "dead_letter_topic": (dead_letter_topic, have.dead_letter_topic),
        "max_in_flight": (max_in_flight, have.max_in_flight),
        "fifo": (fifo, have.fifo),
    }
    for name, (want, got) in asked.items():
        if want not in (0, None) and want != got:
            raise QueueConfigMismatchError(
                f"queue {queue!r} has {name}={got!r}, not {want!r}: use its settings, or delete it to start anew"
            )
