"""The Producer under broken streams, refusals and brokers that stop answering.

Against a scripted broker (tests/helpers/scripted_broker.py) that breaks streams at chosen moments:
on every stream each partition's requests arrive in sequence order and none twice, every future
completes exactly once, the count of unfinished records never goes below zero, and flush() returns
only once everything is acknowledged. Against brokers that refuse every write or never answer:
every future fails once its delivery deadline (counted from send()) has passed, and flush() and
close() return. Against a real broker SIGKILLed and restarted: every acknowledged record is in the
log exactly once.

Bounds, not timings: flush/close get a generous timeout (a multiple of the delivery timeout), and the
tests only assert that they returned and what the futures hold.
"""

from __future__ import annotations

import collections
import os
import random
import threading

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tidelog.client import Admin, Consumer, Producer
from tidelog.client.delivery import Delivery, Outgoing
from tidelog.client.producer import _BatchResult
from tidelog.codec import batch as batch_codec
from tidelog.codec.batch import BATCHES_REMEMBERED
from tidelog.errors import (
    BrokerUnavailableError,
    DiskFullError,
    InvalidConfigError,
    OutOfOrderSequenceError,
    RequestTimeoutError,
)
from tidelog.v1 import tidelog_pb2 as pb
from tidelog.wire import framing, statuses

from .helpers.scripted_broker import BREAK_AFTER_ACK, DEAF, DROP, ERROR, LOSE_ACK, SILENT, Plan, ScriptedBroker
from .server_process import ServerProcess, refused_address

TOPIC = "t"
BOUND_S = 60.0  # no flush or close here may take longer than this (each would otherwise hang forever)
SEQUENCE_MASK = 0x7FFFFFFF


class WatchedProducer(Producer):
    """A Producer that remembers the lowest count of unfinished records it ever had."""

    def __init__(self, *args, **kwargs) -> None:
        self.lowest_unfinished = 0
        super().__init__(*args, **kwargs)

    def _finished(self, n: int, buffered: int) -> None:
        super()._finished(n, buffered)
        self.lowest_unfinished = min(self.lowest_unfinished, self._unfinished)


class Sent:
    """Records sent, their futures, and how many times each future completed."""

    def __init__(self) -> None:
        self.records: list[tuple[int, bytes]] = []  # (partition, value)
        self.futures: list = []
        self.completions: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def send(self, producer: Producer, partition: int, value: bytes) -> None:
        i = len(self.futures)
        self.records.append((partition, value))
        future = producer.send(TOPIC, value, partition=partition)
        future.add_done_callback(lambda _, i=i: self._completed(i))
        self.futures.append(future)

    def _completed(self, i: int) -> None:
        with self._lock:
            self.completions[i] += 1

    def values(self, partition: int) -> list[bytes]:
        return [v for p, v in self.records if p == partition]


@pytest.fixture
def broker():
    brokers = []

    def start(script=()):
        b = ScriptedBroker(list(script))
        brokers.append(b)
        return b

    yield start
    for b in brokers:
        b.stop()


def assert_streams_in_order_without_repeats(broker: ScriptedBroker) -> None:
    """On each stream, each partition's requests came in sequence order, contiguous, none twice."""
    for stream in broker.streams():
        per_partition = collections.defaultdict(list)
        for r in stream:
            per_partition[(r.topic, r.partition)].append(r)
        for key, requests in per_partition.items():
            for a, b in zip(requests, requests[1:]):
                assert (b.producer_epoch, b.base_sequence) != (a.producer_epoch, a.base_sequence), (
                    f"stream {a.stream} carried {key} sequence {a.base_sequence} twice: {requests}"
                )
                if a.producer_epoch == b.producer_epoch:
                    assert b.base_sequence == (a.base_sequence + a.count) & SEQUENCE_MASK, (
                        f"stream {a.stream}: {key} sequence {b.base_sequence} after {a.base_sequence}+{a.count}"
                    )


def assert_delivered_exactly_once(
    broker: ScriptedBroker, producer: WatchedProducer, sent: Sent, partitions: int
) -> None:
    producer.flush(timeout_s=BOUND_S)  # raises if it does not return
    assert all(f.done() for f in sent.futures), "flush() returned before every record was acknowledged"
    assert producer.lowest_unfinished >= 0 and producer._unfinished == 0
    assert_streams_in_order_without_repeats(broker)
    for p in range(partitions):
        assert broker.log(TOPIC, p) == sent.values(p)  # each record once, in send order
    offsets = collections.defaultdict(int)
    for (p, value), future in zip(sent.records, sent.futures):
        meta = future.result(0)
        assert (meta.partition, meta.offset) == (p, offsets[p]), value
        offsets[p] += 1
    assert sorted(sent.completions.items()) == [(i, 1) for i in range(len(sent.futures))], (
        "a future completed more than once"
    )


SCRIPTS = {
    "a request lost": [Plan(3, DROP)],
    "an ack lost": [Plan(3, LOSE_ACK)],
    "broken right after an ack": [Plan(2, BREAK_AFTER_ACK)],
    "retriable refusal": [Plan(3, ERROR, DiskFullError("scripted: no space left on device"))],
    "several reconnects in a row": [
        Plan(2, DROP),
        Plan(0, BREAK_AFTER_ACK),
        Plan(0, BREAK_AFTER_ACK),
        Plan(0, DROP),
        Plan(1, LOSE_ACK),
    ],
    "dies right after reconnecting": [
        Plan(4, LOSE_ACK),
        Plan(1, DROP),
        Plan(1, BREAK_AFTER_ACK),
        Plan(0, LOSE_ACK),
        Plan(2, DROP),
    ],
}


@pytest.mark.parametrize("max_in_flight_bytes", [4096, 64 << 20], ids=["window-4KiB", "window-64MiB"])
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_broken_streams_resend_each_request_once_in_order_and_finish_each_future_once(
    broker, name, max_in_flight_bytes
):
    b = broker(SCRIPTS[name])
    p = WatchedProducer(b.target, linger_ms=1, batch_bytes=1024, max_in_flight_bytes=max_in_flight_bytes)
    sent = Sent()
    try:
        for i in range(600):
            sent.send(p, i % 3, b"%s-%04d-" % (name.encode(), i) + b"x" * 150)
        assert_delivered_exactly_once(b, p, sent, 3)
        assert p.reconnects >= len(SCRIPTS[name])
    finally:
        p.close(timeout_s=BOUND_S)


@pytest.mark.parametrize("run", range(3))
def test_a_random_schedule_of_broken_streams_delivers_each_record_once(broker, run):
    seed = int(os.environ.get("PRODUCER_FAULTS_SEED", random.randrange(1 << 32))) + run
    print(f"PRODUCER_FAULTS_SEED={seed - run} (run {run}: seed {seed})")
    rng = random.Random(seed)
    script = [
        Plan(
            rng.randrange(0, 6),
            rng.choice([DROP, LOSE_ACK, BREAK_AFTER_ACK, ERROR]),
            DiskFullError("scripted: no space left on device"),
        )
        for _ in range(rng.randrange(4, 14))
    ]
    b = broker(script)
    partitions = rng.randrange(1, 5)
    p = WatchedProducer(
        b.target,
        linger_ms=rng.choice([0, 1, 5]),
        batch_bytes=rng.choice([300, 1024, 4096]),
        max_in_flight_bytes=rng.choice([2048, 16384, 64 << 20]),
        max_in_flight_requests_per_partition=rng.randrange(1, BATCHES_REMEMBERED + 1),
    )
    sent = Sent()
    try:
        for i in range(rng.randrange(200, 1200)):
            sent.send(p, rng.randrange(partitions), b"%d-%05d-" % (seed, i) + b"y" * rng.randrange(0, 400))
            if rng.random() < 0.01:
                p.flush(timeout_s=BOUND_S)
        assert_delivered_exactly_once(b, p, sent, partitions)
    finally:
        p.close(timeout_s=BOUND_S)


@pytest.mark.parametrize("cap", [1, 2, BATCHES_REMEMBERED])
def test_requests_in_flight_per_partition_stay_within_what_the_broker_remembers(broker, cap):
    b = broker()
    b.ack_delay_s = 0.005  # acks lag: the producer fills its window
    kwargs = {} if cap == BATCHES_REMEMBERED else {"max_in_flight_requests_per_partition": cap}
    p = WatchedProducer(b.target, linger_ms=0, batch_bytes=256, **kwargs)
    sent = Sent()
    try:
        for i in range(400):
            sent.send(p, i % 2, b"%04d" % i + b"z" * 300)  # one record per batch: 200 per partition
        assert_delivered_exactly_once(b, p, sent, 2)
        assert 1 <= max(b.max_outstanding.values()) <= cap
    finally:
        p.close(timeout_s=BOUND_S)


def test_more_in_flight_than_the_broker_remembers_is_refused_for_an_idempotent_producer():
    with refused_address() as nowhere:
        with pytest.raises(InvalidConfigError, match="remembers"):
            Producer(nowhere, max_in_flight_requests_per_partition=BATCHES_REMEMBERED + 1)
        with pytest.raises(InvalidConfigError):
            Producer(nowhere, max_in_flight_requests_per_partition=0)
        Producer(nowhere, idempotent=False, max_in_flight_requests_per_partition=BATCHES_REMEMBERED + 1).close(
            timeout_s=BOUND_S
        )


# -- the bookkeeping alone (client/delivery.py: no I/O, time passed in) ------------------------------


class _Broker:
    """What a stream did, for the model below: the requests written on each, unanswered in order."""

    def __init__(self) -> None:
        self.stream = 0
        self.written: dict[int, list] = collections.defaultdict(list)  # stream -> [(key, epoch, seq, count)]
        self.unanswered: collections.deque = collections.deque()  # (request sequence, key) on this stream


class DeliveryModel(RuleBasedStateMachine):
    """Random adds, writes, acks, refusals, broken streams and clock ticks against Delivery."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.finished: collections.Counter = collections.Counter()
        self.added: list = []
        self.broker = _Broker()
        self.delivery = Delivery(
            producer_id=11,
            compression="none",
            max_in_flight_bytes=600,
            max_in_flight_requests_per_partition=3,
            delivery_timeout_s=5.0,
            on_finish=self._on_finish,
        )

    def _on_finish(self, item, base_offset, error) -> None:  # what the Producer does, counting
        self.finished[id(item)] += 1
        item.result.finish(base_offset, error)

    @rule(partition=st.integers(0, 2), count=st.integers(1, 4))
    def add(self, partition, count):
        values = [b"v%d" % len(self.added)] * count
        item = Outgoing(
            TOPIC,
            partition,
            (values, [None] * count, [None] * count, [0] * count),
            _BatchResult(TOPIC, partition),
            count,
            100 * count,
            self.now + 5.0,
        )
        self.added.append(item)
        self.delivery.add(item)

    @rule()
    def write(self):
        handed = self.delivery.next_request()
        if handed is not None:
            item, request_sequence, request = handed
            view = framing.parse_produce_request(request)
            info = batch_codec.validate(view.batches)[0]
            key = (view.topic, view.partition)
            self.broker.written[self.broker.stream].append((key, info.producer_epoch, info.base_sequence, info.count))
            self.broker.unanswered.append((request_sequence, key))

    @rule(outcome=st.sampled_from(["ok", "retriable", "refused"]))
    def answer(self, outcome):
        if not self.broker.unanswered:
            return
        request_sequence, (topic, partition) = self.broker.unanswered.popleft()
        result = pb.ProduceResult(sequence=request_sequence, topic=topic, partition=partition, base_offset=0)
        if outcome != "ok":
            exc = DiskFullError("model") if outcome == "retriable" else OutOfOrderSequenceError("model")
            result.error.CopyFrom(statuses.error_message(exc))
        if self.delivery.acked([result]) is not None:
            self.lose()

    @rule()
    def lose(self):
        self.delivery.lost(BrokerUnavailableError("model: stream broken"))
        self.broker.stream += 1
        self.broker.unanswered.clear()

    @rule(dt=st.floats(0.0, 3.0))
    def tick(self, dt):
        self.now += dt
        self.delivery.expire(self.now)

    @invariant()
    def each_batch_finishes_at_most_once_and_is_somewhere_until_then(self):
        assert all(n == 1 for n in self.finished.values())
        held = sum(len(line.flying) + len(line.waiting) for line in self.delivery._lines.values())
        assert held + len(self.finished) == len(self.added)
        for item in self.added:
            assert (self.finished[id(item)] == 1) == item.result._done.is_set()

    @invariant()
    def in_flight_stays_within_the_caps(self):
        for line in self.delivery._lines.values():
            assert len(line.flying) <= 3
        assert self.delivery._flying_bytes <= 600 or len(self.delivery._flying) == 1

    @invariant()
    def each_stream_carries_a_partitions_requests_in_order_once(self):
        last: dict = {}
        for key, epoch, seq, count in self.broker.written[self.broker.stream]:
            if key in last:
                prev_epoch, prev_seq, prev_count = last[key]
                assert (epoch, seq) != (prev_epoch, prev_seq)
                assert epoch > prev_epoch or (epoch == prev_epoch and seq == prev_seq + prev_count)
            last[key] = (epoch, seq, count)


TestDeliveryModel = DeliveryModel.TestCase


def test_a_batch_refused_for_the_gap_an_earlier_batch_left_fails_with_that_batchs_error():
    errors = {}
    d = Delivery(
        producer_id=7,
        compression="none",
        max_in_flight_bytes=1 << 20,
        max_in_flight_requests_per_partition=BATCHES_REMEMBERED,
        delivery_timeout_s=1.0,
        on_finish=lambda item, offset, error: errors.__setitem__(item.deadline, error),
    )

    def outgoing(deadline):
        return Outgoing(TOPIC, 0, ([b"x"], [None], [None], [0]), _BatchResult(TOPIC, 0), 1, 17, deadline)

    d.add(outgoing(1.0))
    d.add(outgoing(2.0))
    d.next_request(), d.next_request()  # both written, epoch 0, sequences 0 and 1
    d.expire(1.5)  # the first is given up while in flight: its sequence 0 is now a gap
    assert isinstance(errors[1.0], RequestTimeoutError) and "delivery_timeout_s=1" in str(errors[1.0])
    d.lost(BrokerUnavailableError("stream broken"))
    item, request_sequence, request = d.next_request()  # the second, resent with its numbers
    info = batch_codec.validate(framing.parse_produce_request(request).batches)[0]
    assert (item.deadline, info.producer_epoch, info.base_sequence) == (2.0, 0, 1)
    refusal = pb.ProduceResult(sequence=request_sequence, topic=TOPIC, partition=0)
    refusal.error.CopyFrom(statuses.error_message(OutOfOrderSequenceError("sequence 1 does not follow -1")))
    assert d.acked([refusal]) is None
    assert errors[2.0] is errors[1.0]  # the cause, not the broker's complaint about the gap
    d.add(outgoing(9.0))
    _, _, request = d.next_request()  # a batch encoded after the gap: new epoch, sequences from 0
    info = batch_codec.validate(framing.parse_produce_request(request).batches)[0]
    assert (info.producer_epoch, info.base_sequence) > (0, 1) and info.base_sequence == 0


# -- the delivery deadline ---------------------------------------------------------------------------


def fail_all_within_bound(p: Producer, sent: Sent, timeout_s: float) -> list[BaseException]:
    p.flush(timeout_s=10 * timeout_s)  # raises RequestTimeoutError if it does not return
    assert all(f.done() for f in sent.futures)
    assert sorted(sent.completions.items()) == [(i, 1) for i in range(len(sent.futures))]
    errors = [f.exception(0) for f in sent.futures]
    assert all(e is not None for e in errors)
    return errors


def test_a_broker_refusing_every_write_fails_every_future_after_the_delivery_timeout(broker):
    b = broker()
    b.refusal = DiskFullError("scripted: no space left on device")
    p = WatchedProducer(b.target, linger_ms=1, batch_bytes=1024, delivery_timeout_s=1)
    sent = Sent()
    try:
        for i in range(200):
            sent.send(p, i % 2, b"%04d" % i + b"d" * 100)
        errors = fail_all_within_bound(p, sent, 1)
        assert all(isinstance(e, DiskFullError) for e in errors), {type(e) for e in errors}
        assert p.lowest_unfinished >= 0 and p._unfinished == 0
        assert b.log(TOPIC, 0) == b.log(TOPIC, 1) == []
    finally:
        p.close(timeout_s=10)
    assert not p._thread.is_alive()


def test_after_a_batch_fails_for_good_later_batches_are_accepted_in_a_new_epoch(broker):
    b = broker()
    p = WatchedProducer(b.target, linger_ms=1, batch_bytes=512, delivery_timeout_s=1)
    before, failing, after = Sent(), Sent(), Sent()
    try:
        for i in range(20):
            before.send(p, 0, b"before-%02d" % i)
        p.flush(timeout_s=BOUND_S)
        assert all(f.exception(0) is None for f in before.futures)
        b.refusal = DiskFullError("scripted: no space left on device")  # the disk fills up
        for i in range(20):
            failing.send(p, 0, b"failing-%02d" % i + b"f" * 100)
        assert all(isinstance(e, DiskFullError) for e in fail_all_within_bound(p, failing, 1))
        b.refusal = None  # space freed: the sequence numbers of the failed batches are a gap
        for i in range(20):
            after.send(p, 0, b"after-%02d" % i)
        p.flush(timeout_s=BOUND_S)
        assert [f.exception(0) for f in after.futures] == [None] * 20
        assert b.log(TOPIC, 0) == before.values(0) + after.values(0)
        epochs = [r.producer_epoch for s in b.streams() for r in s]
        assert epochs[-1] > epochs[0]
    finally:
        p.close(timeout_s=10)


@pytest.mark.parametrize("fault", [SILENT, DEAF])
def test_a_broker_that_never_answers_fails_every_future_after_the_delivery_timeout(broker, fault):
    b = broker([Plan(0, fault)] * 50)
    p = WatchedProducer(b.target, linger_ms=1, batch_bytes=64 << 10, delivery_timeout_s=1.5)
    sent = Sent()
    try:
        for i in range(40):  # 2.5 MiB: more than HTTP/2 flow control lets through a stream nobody reads
            sent.send(p, i % 2, b"%04d" % i + b"s" * (64 << 10))
        errors = fail_all_within_bound(p, sent, 1.5)
        assert all(isinstance(e, RequestTimeoutError) and "delivery_timeout_s=1.5" in str(e) for e in errors), {
            repr(e) for e in errors
        }
        assert p.lowest_unfinished >= 0
    finally:
        p.close(timeout_s=15)
    assert not p._thread.is_alive()


def test_an_unreachable_broker_fails_every_future_after_the_delivery_timeout():
    with refused_address() as nowhere:
        p = WatchedProducer(nowhere, linger_ms=1, delivery_timeout_s=1)
        sent = Sent()
        try:
            for i in range(50):
                sent.send(p, i % 3, b"u%d" % i)
            errors = fail_all_within_bound(p, sent, 1)
            assert all(isinstance(e, BrokerUnavailableError) for e in errors), {repr(e) for e in errors}
        finally:
            p.close(timeout_s=10)
    assert not p._thread.is_alive()


def test_a_record_lingering_past_its_deadline_fails_without_a_flush(broker):
    b = broker()
    p = Producer(b.target, linger_ms=600_000, delivery_timeout_s=1)
    try:
        future = p.send(TOPIC, b"lingering", partition=0)
        assert isinstance(future.exception(timeout=10), RequestTimeoutError)
    finally:
        p.close(timeout_s=10)


# -- a real broker, killed and restarted -------------------------------------------------------------


def test_acknowledged_records_survive_broker_kills_exactly_once(tmp_path):
    """SIGKILL the broker three times while a producer sends to two partitions, with the default
    window of 5 requests per partition in flight: after each restart the broker recognises resends of
    whatever it had appended (its producer state is rebuilt from a snapshot and the log after it).
    (That the producer keeps to its window and resends each request once is what the scripted-broker
    tests above check.)"""
    srv = ServerProcess(str(tmp_path / "data"), "--fsync", "always").start()
    acked = threading.Condition()
    n_acked = 0

    def on_done(future) -> None:
        nonlocal n_acked
        if future.exception() is None:
            with acked:
                n_acked += 1
                acked.notify_all()

    try:
        with Admin(srv.target) as a:
            a.create_topic(TOPIC, 2)
        p = WatchedProducer(srv.target, linger_ms=1, batch_bytes=2048, delivery_timeout_s=60)
        sent = Sent()
        stop = threading.Event()

        def produce() -> None:
            for i in range(20_000):
                if stop.is_set():
                    return
                sent.send(p, i % 2, b"%d-%06d" % (i % 2, i))
                sent.futures[-1].add_done_callback(on_done)
                if i % 100 == 99:
                    stop.wait(0.005)  # paced, so the kills land while records are flowing

        sender = threading.Thread(target=produce)
        sender.start()
        for kill in range(3):
            with acked:
                assert acked.wait_for(lambda: n_acked >= 1500 * (kill + 1), timeout=BOUND_S), n_acked
            srv.kill()
            srv.start()
        stop.set()
        sender.join(BOUND_S)
        p.flush(timeout_s=BOUND_S)
        assert all(f.done() for f in sent.futures) and p.lowest_unfinished >= 0
        assert p.reconnects >= 3
        p.close(timeout_s=BOUND_S)
        for part in range(2):
            acknowledged = {
                f.result(0).offset: v
                for (q, v), f in zip(sent.records, sent.futures)
                if q == part and f.exception(0) is None
            }
            with Admin(srv.target) as a:
                end = a.list_offsets(TOPIC, part).log_end
            with Consumer(srv.target, TOPIC, part, 0) as c:
                log = []
                for _ in range(1000):
                    if len(log) >= end:
                        break
                    log += [r.value for r in c.poll(0.5)]
            assert len(log) == end
            assert len(set(log)) == len(log), "a record was appended twice"
            assert all(log[offset] == value for offset, value in acknowledged.items())
            assert len(acknowledged) == len(sent.values(part)), "a record failed though the broker came back"
    finally:
        srv.stop()


def test_batches_refused_because_of_one_gap_start_one_new_epoch_not_one_each():
    """The adversarial loop found it: one batch given up, then every batch behind it refused for the
    gap, each starting a new epoch; the epoch soon wrapped to 0 and the broker refused every batch as
    a zombie's (InvalidProducerEpochError), for good."""
    finished = []
    d = Delivery(
        producer_id=7,
        compression="none",
        max_in_flight_bytes=1 << 20,
        max_in_flight_requests_per_partition=BATCHES_REMEMBERED,
        delivery_timeout_s=1.0,
        on_finish=lambda item, offset, error: finished.append(error),
    )

    def outgoing(deadline):
        return Outgoing(TOPIC, 0, ([b"x"], [None], [None], [0]), _BatchResult(TOPIC, 0), 1, 17, deadline)

    for i in range(5):
        d.add(outgoing(1.0 if i == 0 else 5.0))
    written = [d.next_request() for _ in range(5)]
    d.expire(1.5)  # the first is given up: a gap
    assert d.epoch == 1
    for item, request_sequence, _ in written[1:]:  # each of the others refused because of it
        refusal = pb.ProduceResult(sequence=request_sequence, topic=TOPIC, partition=0)
        refusal.error.CopyFrom(statuses.error_message(OutOfOrderSequenceError("gap")))
        d.acked([refusal])
    assert d.epoch == 1 and len(finished) == 5


def test_when_the_epochs_run_out_a_new_producer_id_starts():
    d = Delivery(
        producer_id=7,
        compression="none",
        max_in_flight_bytes=1 << 20,
        max_in_flight_requests_per_partition=BATCHES_REMEMBERED,
        delivery_timeout_s=1.0,
        on_finish=lambda item, offset, error: None,
    )
    d.epoch = 0x7FFF
    d.new_epoch()
    assert d.epoch == 0 and d.producer_id not in (7, -1) and d.producer_id >= 0


def test_a_stream_broken_inside_grpc_is_reported_without_grpcs_internal_objects():
    # Before: "the produce stream to ... failed: ExecuteBatchError(...SendCloseFromClientOperation...)",
    # which `tidelog produce` printed as its error.
    import asyncio

    from tidelog.client.producer import _Stream

    class ExecuteBatchError(Exception):  # what grpc.aio raises writing to a call that already ended
        pass

    loop = asyncio.new_event_loop()
    try:
        stream = _Stream.__new__(_Stream)
        stream.target = "127.0.0.1:9"
        stream.reader, stream.writer = loop.create_future(), loop.create_future()
        stream.writer.set_exception(ExecuteBatchError("<grpc._cython.cygrpc.SendCloseFromClientOperation object>"))
        err = stream.failure()
    finally:
        loop.close()
    assert isinstance(err, BrokerUnavailableError)
    assert err.message == "the produce stream to 127.0.0.1:9 broke"
