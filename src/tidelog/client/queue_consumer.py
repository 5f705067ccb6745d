"""A queue consumer: one of any number of workers taking records of the same topics, each record
answered on its own (ack, release, reject), as with RabbitMQ or SQS. The broker's queues (a
QueueManager) hand each record to one consumer at a time under a lock; this client keeps the locks
of the records it holds alive while they are being handled (auto_extend) and gives back what it holds
when it closes.

    with QueueConsumer("localhost:50051", queue="jobs-workers", topics=["jobs"],
                       lock_ms=30_000, max_deliveries=5, dead_letter_topic="jobs.dlq") as q:
        for msg in q:
            handle(msg.value)
            msg.ack()

The first argument is a broker address (gRPC, client/queue_backend.py) or, embedded, the
QueueManager of an engine in this process: the same queues either way. Thread-safe: a consumer may
be answered from worker threads.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..errors import InvalidRequestError
from ..values import Answer, AnswerRefused, QueueConfig, QueueMessage
from .queue_backend import QueueBackend, backend_for
from .security import ClientSecurity


class Message:
    """A record held by this consumer: answer for it once with ack(), release() or reject()."""

    __slots__ = ("_consumer", "_raw", "answered", "refused")

    def __init__(self, consumer: QueueConsumer, raw: QueueMessage) -> None:
        self._consumer, self._raw = consumer, raw
        self.answered = False
        self.refused: str | None = None  # why the broker refused this consumer's answer, if it did

    topic = property(lambda self: self._raw.topic)
    partition = property(lambda self: self._raw.partition)
    offset = property(lambda self: self._raw.offset)
    delivery_count = property(lambda self: self._raw.delivery_count)
    timestamp = property(lambda self: self._raw.timestamp)
    key = property(lambda self: self._raw.key)
    value = property(lambda self: self._raw.value)
    headers = property(lambda self: self._raw.headers)

    def ack(self) -> bool:
        """Done: never delivered to this queue again. False when the broker refused (the lock was lost
        and the record handed to another consumer: this work may be done twice; `refused` says why),
        or when this message was answered already."""
        return self._final("ack")

    def release(self, delay_ms: int = 0, reason: str = "") -> bool:
        """Back to the queue, for any consumer, not before delay_ms (dead-lettered instead once it was
        delivered max_deliveries times)."""
        return self._final("release", delay_ms=delay_ms, reason=reason)

    def reject(self, reason: str = "") -> bool:
        """Give up on it: to the dead-letter topic now (archived, without one)."""
        return self._final("reject", reason=reason)

    def _final(self, kind: str, **options: Any) -> bool:
        if self.answered:
            return False
        return not self._consumer._answer(kind, [self], **options) and self.refused is None

    def extend(self, lock_ms: int = 0) -> bool:
        """Hold the lock lock_ms longer from now (0: the queue's lock_ms)."""
        return not self._consumer.extend([self], lock_ms=lock_ms)

    def answer(self) -> Answer:
        return Answer(self.topic, self.partition, self.offset, self.delivery_count)

    def __repr__(self) -> str:
        return (
            f"Message({self.topic}[{self.partition}]@{self.offset}, delivery {self.delivery_count}, "
            f"value={self.value!r:.60})"
        )


class QueueConsumer:
    def __init__(
        self,
        broker: Any = "localhost:50051",
        queue: str = "",
        topics: Sequence[str] = (),
        *,
        lock_ms: int = 0,
        max_deliveries: int = 0,
        dead_letter_topic: str | None = None,
        max_in_flight: int = 0,
        start: str = "earliest",
        fifo: bool = False,
        prefetch: int = 10,
        wait_ms: int = 1000,
        auto_extend: bool = True,
        consumer_id: str | None = None,
        timeout_s: float = 30.0,
        security: ClientSecurity | None = None,
    ) -> None:
        """lock_ms, max_deliveries, dead_letter_topic, max_in_flight, start, fifo: the queue's settings
        when this consumer creates it (0/None: the defaults, 30 s, 5, none, 1000, earliest, not fifo);
        an existing queue keeps its own, and a different value is refused. fifo: per key, one record
        at a time, in offset order (as SQS FIFO message groups). prefetch: records held ahead of the
        handler while iterating; wait_ms: how long one receive waits for records."""
        if not queue:
            raise InvalidRequestError("a queue name is needed")
        if isinstance(topics, str):
            topics = [topics]
        if prefetch < 1:
            raise InvalidRequestError(f"prefetch must be at least 1, got {prefetch}")
        self.queue = queue
        self.consumer_id = consumer_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(8)}"
        self.prefetch, self.wait_ms = prefetch, wait_ms
        self._backend: QueueBackend = backend_for(broker, timeout_s, security)
        self.config: QueueConfig = self._backend.declare(
            queue, list(topics), lock_ms, max_deliveries, dead_letter_topic, max_in_flight, start, fifo
        )
        self._lock = threading.Lock()
        self._held: dict[tuple[str, int, int], tuple[Message, float]] = {}  # -> (message, local lock start)
        self._buffer: deque[Message] = deque()
        self._closed = threading.Event()
        self._extender: threading.Thread | None = None
        if auto_extend:
            self._extender = threading.Thread(target=self._extend_loop, name="tidelog-queue-extend", daemon=True)
            self._extender.start()

    # -- receiving --------------------------------------------------------------------------------------
    def receive(self, max_messages: int = 1, wait_ms: int | None = None, ack: Iterable[Message] = ()) -> list[Message]:
        """Up to max_messages records, waiting up to wait_ms (default: the consumer's) for the first.

        ack: messages to acknowledge first, in the same call (a worker's loop: `batch = q.receive(100,
        ack=batch)`, one round trip per batch); a refused one has `refused` set."""
        self._check_open()
        done = [m for m in ack if not m.answered]
        raw, refused = self._backend.receive(
            self.queue,
            self.consumer_id,
            max_messages,
            self.wait_ms if wait_ms is None else wait_ms,
            [m.answer() for m in done],
        )
        if done:
            self._mark(done, refused, final=True)
        now = time.monotonic()
        out = [Message(self, r) for r in raw]
        with self._lock:
            for m in out:
                self._held[(m.topic, m.partition, m.offset)] = (m, now)
        return out

    def __iter__(self) -> Iterator[Message]:
        """Records one by one until close() (prefetching up to `prefetch` ahead)."""
        while not self._closed.is_set():
            if not self._buffer:
                try:
                    self._buffer.extend(self.receive(self.prefetch))
                except InvalidRequestError:
                    if self._closed.is_set():
                        return
                    raise
                continue
            yield self._buffer.popleft()

    # -- answering (many at once) -----------------------------------------------------------------------
    def ack(self, messages: Iterable[Message]) -> list[AnswerRefused]:
        return self._answer("ack", messages)

    def release(self, messages: Iterable[Message], delay_ms: int = 0, reason: str = "") -> list[AnswerRefused]:
        return self._answer("release", messages, delay_ms=delay_ms, reason=reason)

    def reject(self, messages: Iterable[Message], reason: str = "") -> list[AnswerRefused]:
        return self._answer("reject", messages, reason=reason)

    def extend(self, messages: Iterable[Message], lock_ms: int = 0) -> list[AnswerRefused]:
        msgs = list(messages)
        refused = self._backend.answer(
            "extend", self.queue, self.consumer_id, [m.answer() for m in msgs], lock_ms=lock_ms
        )
        now = time.monotonic()
        with self._lock:
            for m in msgs:
                key = (m.topic, m.partition, m.offset)
                if key in self._held:
                    self._held[key] = (m, now)
        self._mark(msgs, refused, final=False)
        return refused

    def _answer(self, kind: str, messages: Iterable[Message], **options: Any) -> list[AnswerRefused]:
        msgs = [m for m in messages if not m.answered]
        if not msgs:
            return []
        self._check_open()
        refused = self._backend.answer(kind, self.queue, self.consumer_id, [m.answer() for m in msgs], **options)
        self._mark(msgs, refused, final=True)
        return refused

    def _mark(self, msgs: list[Message], refused: list[AnswerRefused], final: bool) -> None:
        """After an answer: a final one (ack, release, reject) ends the message; a refused extension only
        stops extending it (its lock ended: an ack may still count if nobody took the record since)."""
        why = {(r.topic, r.partition, r.offset): r.why for r in refused}
        with self._lock:
            for m in msgs:
                key = (m.topic, m.partition, m.offset)
                if key in why:
                    m.refused = why[key]
                elif final:
                    m.refused = None
                if final:
                    m.answered = True
                if final or key in why:
                    held = self._held.get(key)
                    if held is not None and held[0] is m:
                        del self._held[key]

    # -- the locks of held records ----------------------------------------------------------------------
    def _extend_loop(self) -> None:
        """Extend every held record's lock once a third of it has passed, while this consumer lives: a
        long job keeps its record; a dead worker's locks end and its records go to others."""
        period = max(0.05, self.config.lock_ms / 3000)
        while not self._closed.wait(period / 2):
            now = time.monotonic()
            with self._lock:
                due = [m for m, since in self._held.values() if now - since >= period]
            if due:
                try:
                    self.extend(due)
                except Exception:  # noqa: BLE001 - the broker is away: the next round tries again
                    pass

    # -- lifecycle ----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop, and give back at once what this consumer holds unanswered (to other consumers)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._extender is not None:
            self._extender.join(timeout=5)
        try:
            self._backend.leave(self.queue, self.consumer_id)
        finally:
            self._backend.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise InvalidRequestError("the queue consumer is closed")

    def __enter__(self) -> QueueConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
