"""RabbitMQ as its users run it for throughput, for the suite (`python -m benchmarks`), with pika.

The node is Debian's `rabbitmq-server` (3.10), a private node started by the harness (servers.start_rabbitmq).
Both directions use pika's asynchronous SelectConnection (its own event loop, callbacks), as pika documents
for throughput; its BlockingConnection waits for each publisher confirm before the next publish.

Produce: a durable queue, persistent messages (delivery_mode=2), publisher confirms handled asynchronously,
as RabbitMQ's publisher-confirms guide recommends for throughput: up to WINDOW messages published and not
yet confirmed, each confirm (often `multiple`, covering many) letting the next ones go. RabbitMQ confirms a
persistent message to a durable queue once it is written to disk, so this is also its "durable produce"
figure. Every publish must be confirmed (a nack fails the run).
Consume: `basic_consume` with prefetch PREFETCH and manual acks, `multiple=True` every ACK_EVERY messages
(a quarter of the prefetch, so that deliveries never wait for an ack).
"""

from __future__ import annotations

import collections
import uuid

from .harness.processes import LOOPBACK, Proc
from .harness.rounds import Sample, Stopwatch

WINDOW = 4096  # publishes awaiting their confirm
PREFETCH = 1000
ACK_EVERY = PREFETCH // 4
SETTINGS = (
    "RabbitMQ (Debian rabbitmq-server 3.10) on 127.0.0.1, pika SelectConnection (asynchronous); durable "
    "queue, persistent messages (delivery_mode=2), publisher confirms handled asynchronously with up to "
    f"{WINDOW} unconfirmed publishes (a confirm is sent once the message is on disk); consume: basic_consume, "
    f"prefetch {PREFETCH}, manual ack multiple=True every {ACK_EVERY} messages"
)


def run_channel(server: Proc, on_channel, timeout_s: float) -> None:
    """Open a SelectConnection and a channel, hand `on_channel` the channel and a `finish` that closes the
    connection, and run the I/O loop until it closes (or timeout_s passes: an error)."""
    import pika

    failure: list[str] = []
    finished: list[bool] = []

    def opened(conn) -> None:
        def finish() -> None:
            finished.append(True)
            conn.close()

        conn.channel(on_open_callback=lambda ch: on_channel(ch, finish))

    def failed(conn, exc) -> None:
        failure.append(f"connection failed: {exc}")
        conn.ioloop.stop()

    def closed(conn, reason) -> None:
        if not finished:
            failure.append(f"connection closed early: {reason}")
        conn.ioloop.stop()

    conn = pika.SelectConnection(
        pika.ConnectionParameters(host=LOOPBACK, port=server.port, heartbeat=0),
        on_open_callback=opened,
        on_open_error_callback=failed,
        on_close_callback=closed,
    )

    def too_long() -> None:
        failure.append(f"not done within {timeout_s:.0f} s")
        conn.close()

    conn.ioloop.call_later(timeout_s, too_long)
    conn.ioloop.start()
    if failure:
        raise RuntimeError(f"RabbitMQ: {failure[0]}")


class Confirms:
    """Publisher confirms outstanding on a channel: delivery tags are 1, 2, 3... in publish order; a confirm
    settles one tag, or with `multiple` every tag up to it, and no tag is ever settled twice."""

    def __init__(self) -> None:
        self.pending: collections.deque[int] = collections.deque()  # unsettled tags, oldest first
        self.early: set[int] = set()  # tags settled one by one while an older one was still pending
        self.published = self.acked = self.nacked = 0

    @property
    def in_flight(self) -> int:
        return len(self.pending) - len(self.early)

    def published_one(self) -> None:
        self.published += 1
        self.pending.append(self.published)

    def settle(self, tag: int, multiple: bool, ok: bool) -> None:
        settled = 0
        if multiple:
            while self.pending and self.pending[0] <= tag:
                head = self.pending.popleft()
                if head in self.early:
                    self.early.discard(head)
                else:
                    settled += 1
        elif tag not in self.early and tag in self.pending:
            self.early.add(tag)
            settled = 1
            while self.pending and self.pending[0] in self.early:
                self.early.discard(self.pending.popleft())
        if ok:
            self.acked += settled
        else:
            self.nacked += settled


def publish(server: Proc, values: list[bytes], n: int, cap_s: float, queue: str, delete: bool) -> Sample:
    """n persistent messages into a fresh durable queue, confirms asynchronous; timed from the first publish
    to the last confirm."""
    import pika

    props = pika.BasicProperties(delivery_mode=2)
    npool = len(values)
    confirms = Confirms()
    state = {"stop": n, "clock": None, "sample": None, "finish": None}

    def publish_more(ch) -> None:
        clock = state["clock"]
        while confirms.published < state["stop"] and confirms.in_flight < WINDOW:
            ch.basic_publish("", queue, values[confirms.published % npool], props)
            confirms.published_one()
            if not confirms.published & 63 and clock.expired(confirms.published, n):
                state["stop"] = confirms.published
        if confirms.acked + confirms.nacked == state["stop"] and state["sample"] is None:
            state["sample"] = clock.sample(confirms.acked, confirms.acked * len(values[0]))
            if delete:
                ch.queue_delete(queue, callback=lambda _: state["finish"]())
            else:
                state["finish"]()

    def on_channel(ch, finish) -> None:
        state["finish"] = finish

        def on_confirm(frame) -> None:
            confirms.settle(frame.method.delivery_tag, frame.method.multiple, frame.method.NAME == "Basic.Ack")
            publish_more(ch)

        def start(_frame) -> None:
            state["clock"] = Stopwatch(cap_s)
            publish_more(ch)

        ch.queue_declare(queue, durable=True, callback=lambda _: ch.confirm_delivery(on_confirm, callback=start))

    run_channel(server, on_channel, cap_s + 120)
    if confirms.nacked:
        raise RuntimeError(f"RabbitMQ nacked {confirms.nacked} of {confirms.published} publishes")
    return state["sample"]


def produce(server: Proc, values: list[bytes], n: int, cap_s: float) -> Sample:
    return publish(server, values, n, cap_s, f"bench-{uuid.uuid4().hex[:8]}", delete=True)


def consume(server: Proc, values: list[bytes], n: int, cap_s: float) -> Sample:
    """Fill a fresh durable queue with n messages (confirmed, untimed), then consume them all."""
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    publish(server, values, n, 1e9, queue, delete=False)
    state = {"got": 0, "bytes": 0, "clock": None, "sample": None}

    def on_channel(ch, finish) -> None:
        def on_message(ch, method, _props, body) -> None:
            if state["sample"] is not None:
                return  # capped: the rest goes with the queue
            state["got"] += 1
            state["bytes"] += len(body)
            got = state["got"]
            if got % ACK_EVERY == 0 or got == n:
                ch.basic_ack(method.delivery_tag, multiple=True)
                if got == n or state["clock"].expired(got, n):
                    state["sample"] = state["clock"].sample(got, state["bytes"])
                    ch.queue_delete(queue, callback=lambda _: finish())

        def ready(_frame) -> None:
            state["clock"] = Stopwatch(cap_s)
            ch.basic_consume(queue, on_message)

        ch.basic_qos(prefetch_count=PREFETCH, callback=ready)

    run_channel(server, on_channel, cap_s + 120)
    return state["sample"]
