"""How a QueueConsumer reaches its queues: over gRPC (the Queue service of a broker) or, embedded, the
QueueManager of an engine in this process. Both answer the same calls with the same types, so the
consumer is one class. Thread-safe (gRPC channels are; the manager is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..v1 import tidelog_pb2 as pb
from ..values import Answer, AnswerRefused, QueueConfig, QueueMessage
from ..wire import methods
from .metadata import Metadata
from .security import ClientSecurity

KINDS = {"ack": pb.ACK, "release": pb.RELEASE, "reject": pb.REJECT, "extend": pb.EXTEND}


class QueueBackend(Protocol):
    def declare(
        self,
        queue: str,
        topics: list[str],
        lock_ms: int,
        max_deliveries: int,
        dead_letter_topic: str | None,
        max_in_flight: int,
        start: str,
        fifo: bool,
    ) -> QueueConfig: ...

    def receive(
        self, queue: str, consumer: str, max_messages: int, wait_ms: int, acks: list[Answer]
    ) -> tuple[list[QueueMessage], list[AnswerRefused]]: ...

    def answer(
        self, kind: str, queue: str, consumer: str, answers: list[Answer], **options: Any
    ) -> list[AnswerRefused]: ...

    def leave(self, queue: str, consumer: str) -> int: ...

    def close(self) -> None: ...


def backend_for(broker: Any, timeout_s: float, security: ClientSecurity | None = None) -> QueueBackend:
    """A broker address ("host:port") → gRPC (with `security`); a QueueManager (anything with `receive`)
    → embedded."""
    if isinstance(broker, (str, list, tuple)):
        return GrpcQueues(broker, timeout_s, security)
    return EmbeddedQueues(broker)


class EmbeddedQueues:
    def __init__(self, manager: Any) -> None:
        self.manager = manager

    def declare(
        self, queue, topics, lock_ms, max_deliveries, dead_letter_topic, max_in_flight, start, fifo
    ) -> QueueConfig:
        return self.manager.declare(
            queue,
            topics,
            lock_ms=lock_ms,
            max_deliveries=max_deliveries,
            dead_letter_topic=dead_letter_topic,
            max_in_flight=max_in_flight,
            start=start,
            fifo=fifo,
        )

    def receive(
        self, queue: str, consumer: str, max_messages: int, wait_ms: int, acks: list[Answer]
    ) -> tuple[list[QueueMessage], list[AnswerRefused]]:
        refused = self.manager.ack(queue, consumer, acks) if acks else []
        return self.manager.receive(queue, consumer, max_messages, wait_ms), refused

    def answer(
        self, kind: str, queue: str, consumer: str, answers: list[Answer], **options: Any
    ) -> list[AnswerRefused]:
        return getattr(self.manager, kind)(queue, consumer, answers, **options)

    def leave(self, queue: str, consumer: str) -> int:
        return self.manager.leave(queue, consumer)

    def close(self) -> None:
        pass


class GrpcQueues:
    """Over gRPC, to the broker that runs the queues: the one named, or in a cluster the queue
    coordinator (the leader of the queue-state partition), followed when it moves."""

    def __init__(self, target: str | Sequence[str], timeout_s: float, security: ClientSecurity | None = None) -> None:
        self.timeout_s = timeout_s
        self._metadata = Metadata(target, timeout_s=timeout_s, security=security)

        def call(name: str):
            method = methods.method("Queue", name)
            return lambda request, timeout=None: self._metadata.call_coordinator(
                method, request, timeout, within_s=timeout_s, role="queues"
            )

        self._declare, self._receive, self._answer, self._leave = (
            call(n) for n in ("Declare", "Receive", "Answer", "Leave")
        )

    def declare(
        self, queue, topics, lock_ms, max_deliveries, dead_letter_topic, max_in_flight, start, fifo
    ) -> QueueConfig:
        s = self._declare(
            pb.DeclareQueueRequest(
                queue=queue,
                topics=topics,
                lock_ms=lock_ms,
                max_deliveries=max_deliveries,
                dead_letter_topic=dead_letter_topic,
                max_in_flight=max_in_flight,
                start=start,
                fifo=fifo,
            )
        )
        return settings_of(s)

    def receive(
        self, queue: str, consumer: str, max_messages: int, wait_ms: int, acks: list[Answer]
    ) -> tuple[list[QueueMessage], list[AnswerRefused]]:
        request = pb.ReceiveRequest(
            queue=queue, consumer_id=consumer, max_messages=max_messages, wait_ms=wait_ms, acks=ranges(acks)
        )
        response = self._receive(request, timeout=self.timeout_s + wait_ms / 1000)
        refused = [AnswerRefused(r.topic, r.partition, r.offset, r.reason) for r in response.refused]
        return [message_of(r) for r in response.records], refused

    def answer(
        self, kind: str, queue: str, consumer: str, answers: list[Answer], **options: Any
    ) -> list[AnswerRefused]:
        request = pb.AnswerRequest(
            queue=queue, consumer_id=consumer, kind=KINDS[kind], ranges=ranges(answers), **options
        )
        return [AnswerRefused(r.topic, r.partition, r.offset, r.reason) for r in self._answer(request).refused]

    def leave(self, queue: str, consumer: str) -> int:
        return self._leave(pb.LeaveQueueRequest(queue=queue, consumer_id=consumer)).released

    def close(self) -> None:
        self._metadata.close()


def ranges(answers: list[Answer]) -> list[pb.AnswerRange]:
    """Consecutive offsets of one partition with one delivery count become one range."""
    out: list[pb.AnswerRange] = []
    for a in sorted(answers):
        last = out[-1] if out else None
        if (
            last is not None
            and (last.topic, last.partition, last.delivery_count) == (a.topic, a.partition, a.delivery_count)
            and last.last_offset + 1 == a.offset
        ):
            last.last_offset = a.offset
        else:
            out.append(
                pb.AnswerRange(
                    topic=a.topic,
                    partition=a.partition,
                    first_offset=a.offset,
                    last_offset=a.offset,
                    delivery_count=a.delivery_count,
                )
            )
    return out


def settings_of(s: pb.QueueSettings) -> QueueConfig:
    return QueueConfig(
        tuple(s.topics), s.lock_ms, s.max_deliveries, s.dead_letter_topic, s.max_in_flight, s.created_ms, s.fifo
    )


def message_of(r: pb.QueueRecord) -> QueueMessage:
    return QueueMessage(
        r.topic,
        r.partition,
        r.offset,
        r.delivery_count,
        r.lock_until_ms,
        r.timestamp_ms,
        r.key if r.HasField("key") else None,
        r.value if r.HasField("value") else None,
        tuple((h.key, h.value if h.HasField("value") else None) for h in r.headers),
    )
