"""Queues on the log (queues/manager.py) over a real engine on an injected clock: locks and their
expiry, delays, delivery counts, dead letters at the limit, redrive, and durability across reopen."""

from __future__ import annotations

import pytest

from tidelog import Engine
from tidelog import headers as hdr
from tidelog.errors import InvalidRequestError, QueueConfigMismatchError, UnknownQueueError, UnknownTopicError
from tidelog.queues.manager import Answer, QueueManager
from tidelog.queues.records import QUEUE_STATE_TOPIC


@pytest.fixture
def engine(data_dir, clock):
    eng = Engine.open(data_dir, clock=clock)
    eng.create_topic("jobs", 2)
    yield eng
    eng.close()


def answers(msgs):
    return [Answer(m.topic, m.partition, m.offset, m.delivery_count) for m in msgs]


def values(msgs):
    return sorted(bytes(m.value) for m in msgs)


def produce(engine, n, partition=0, prefix="j", **kw):
    engine.produce("jobs", [f"{prefix}{i}".encode() for i in range(n)], partition=partition, **kw)


def test_each_record_goes_to_one_consumer_at_a_time_and_an_ack_completes_it(engine, clock):
    q = QueueManager(engine)
    q.declare("workers", ["jobs"], lock_ms=1000)
    produce(engine, 3, 0)
    produce(engine, 3, 1, prefix="k")
    a = q.receive("workers", "a", 4)
    b = q.receive("workers", "b", 4)
    assert len(a) == 4 and len(b) == 2
    assert not set(values(a)) & set(values(b))
    assert all(m.delivery_count == 1 and m.lock_until_ms == clock.now + 1000 for m in a + b)
    assert q.receive("workers", "c", 10) == []  # everything is locked
    assert q.ack("workers", "a", answers(a)) == []
    clock.advance(1000)  # b's locks end: its records are handed out again, a's are done
    again = q.receive("workers", "c", 10)
    assert values(again) == values(b) and all(m.delivery_count == 2 for m in again)
    d = q.describe("workers")
    assert d.totals["acked"] == 4 and d.totals["expired"] == 2 and d.totals["delivered"] == 8
    assert sum(p.in_flight for p in d.partitions) == 2


def test_a_stale_answer_is_refused_and_cannot_complete_anothers_delivery(engine, clock):
    q = QueueManager(engine)
    q.declare("workers", ["jobs"], lock_ms=100)
    produce(engine, 1)
    (first,) = q.receive("workers", "a", 1)
    clock.advance(100)
    (second,) = q.receive("workers", "b", 1)
    assert second.offset == first.offset and second.delivery_count == 2
    (refused,) = q.ack("workers", "a", answers([first]))
    assert "delivered again" in refused.why
    assert "another consumer" in q.release("workers", "a", answers([second]))[0].why
    assert q.ack("workers", "b", answers([second])) == []
    assert "already complete" in q.ack("workers", "b", answers([second]))[0].why


def test_a_late_ack_after_the_lock_ended_counts_while_nobody_holds_the_record(engine, clock):
    q = QueueManager(engine)
    q.declare("workers", ["jobs"], lock_ms=100)
    produce(engine, 1)
    msgs = q.receive("workers", "a", 1)
    clock.advance(500)
    q.tick()
    assert q.ack("workers", "a", answers(msgs)) == []
    assert q.receive("workers", "b", 1) == []


def test_release_with_a_delay_and_delayed_records_wait_their_time(engine, clock):
    q = QueueManager(engine)
    q.declare("workers", ["jobs"])
    later = clock.now + 5000
    engine.produce("jobs", [b"later", b"now"], headers=[[(hdr.NOT_BEFORE, str(later).encode())], []], partition=0)
    (now,) = q.receive("workers", "a", 10)
    assert now.value == b"now"
    assert q.release("workers", "a", answers([now]), delay_ms=2000) == []
    assert q.receive("workers", "a", 10) == []
    assert q.describe("workers").partitions[0].delayed == 2
    clock.advance(2000)
    (again,) = q.receive("workers", "a", 10)
    assert again.value == b"now" and again.delivery_count == 2
    clock.advance(3000)
    (late,) = q.receive("workers", "a", 10)
    assert late.value == b"later" and late.delivery_count == 1


def test_a_record_released_too_often_or_rejected_goes_to_the_dead_letter_topic(engine, clock):
    q = QueueManager(engine)
    q.declare("workers", ["jobs"], max_deliveries=3, dead_letter_topic="jobs.dlq")
    engine.produce("jobs", [b"poison", b"bad"], keys=[b"k1", b"k2"], headers=[[("trace", b"t1")], []], partition=1)
    for attempt in range(1, 4):
        msgs = q.receive("workers", "a", 10)
        assert [(m.value, m.delivery_count) for m in msgs if m.value == b"poison"] == [(b"poison", attempt)]
        bad = [m for m in msgs if m.value == b"bad"]
        if bad:
            q.reject("workers", "a", answers(bad), reason="cannot parse")
        q.release("workers", "a", answers([m for m in msgs if m.value == b"poison"]), reason=f"try {attempt}")
    assert q.receive("workers", "a", 10) == []  # both gone: dead-lettered, not lost
    dead = engine.fetch("jobs.dlq", 0, 0).records()
    by_value = {bytes(r.value): dict(r.headers) for r in dead}
    assert set(by_value) == {b"poison", b"bad"}
    poison = by_value[b"poison"]
    assert poison[hdr.DLQ_TOPIC] == b"jobs" and poison[hdr.DLQ_PARTITION] == b"1" and poison[hdr.DLQ_OFFSET] == b"0"
    assert poison[hdr.DLQ_DELIVERIES] == b"3" and poison[hdr.DLQ_REASON] == b"try 3" and poison["trace"] == b"t1"
    assert by_value[b"bad"][hdr.DLQ_REASON] == b"cannot parse" and by_value[b"bad"][hdr.DLQ_DELIVERIES] == b"1"
    assert [r.key for r in dead if r.value == b"poison"] == [b"k1"]
    d = q.describe("workers")
    assert d.totals["dead_lettered"] == 2 and d.partitions[1].start == 2  # complete: the start moved past them


def test_an_expired_lock_at_the_limit_is_dead_lettered_and_without_a_topic_archived(engine, clock):
    q = QueueManager(engine)
    q.declare("dlq", ["jobs"], lock_ms=100, max_deliveries=2, dead_letter_topic="jobs.dlq")
    q.declare("plain", ["jobs"], lock_ms=100, max_deliveries=1)
    produce(engine, 1)
    for _ in range(2):
        assert len(q.receive("dlq", "a", 1)) == 1
        clock.advance(100)
    assert len(q.receive("plain", "a", 1)) == 1
    clock.advance(100)
    q.tick()
    assert [bytes(r.value) for r in engine.fetch("jobs.dlq", 0, 0).records()] == [b"j0"]
    assert q.describe("plain").totals["archived"] == 1 and q.receive("plain", "b", 1) == []


def test_redrive_moves_each_dead_letter_back_once(engine, clock):
    q = QueueManager(engine)
    q.declare("workers", ["jobs"], dead_letter_topic="jobs.dlq")
    produce(engine, 3)
    q.reject("workers", "a", answers(q.receive("workers", "a", 3)), reason="bug")
    assert q.redrive("jobs.dlq", "jobs") == 3
    assert q.redrive("jobs.dlq", "jobs") == 0  # moved once
    again = q.receive("workers", "a", 10)
    assert values(again) == [b"j0", b"j1", b"j2"] and all(m.delivery_count == 1 for m in again)
    assert all(not any(k.startswith("tidelog-dlq") for k, _ in m.headers) for m in again)
    reopened = QueueManager(engine)
    assert reopened.redrive("jobs.dlq", "jobs") == 0  # the progress is durable


def test_queue_state_survives_a_reopen_acks_counts_and_locks(data_dir, clock):
    eng = Engine.open(data_dir, clock=clock)
    eng.create_topic("jobs", 1)
    q = QueueManager(eng)
    q.declare("workers", ["jobs"], lock_ms=1000)
    produce(eng, 4)
    msgs = q.receive("workers", "a", 4)
    q.ack("workers", "a", answers(msgs[:2]))
    q.release("workers", "a", answers(msgs[2:3]))
    eng.close()
    eng = Engine.open(data_dir, clock=clock)
    q = QueueManager(eng)
    assert q.ack("workers", "a", answers(msgs[:1]))[0].why.startswith("already complete")  # acked before
    got = q.receive("workers", "b", 10)
    assert [(m.offset, m.delivery_count) for m in got] == [(2, 2)]  # the count did not go back; 3 is locked
    assert q.ack("workers", "a", answers(msgs[3:4])) == []  # its lock survived the restart
    clock.advance(1000)
    assert [(m.offset, m.delivery_count) for m in q.receive("workers", "c", 10)] == [(2, 3)]
    eng.close()


def test_many_changes_compact_the_state_topic_and_replay_the_same(data_dir, clock):
    eng = Engine.open(data_dir, clock=clock)
    eng.create_topic("jobs", 1)
    eng.create_topic(QUEUE_STATE_TOPIC, 1, segment_bytes=16 * 1024, retention_ms=-1, internal=True)  # small segments
    q = QueueManager(eng)
    q.topic.compact_min_records = 50
    q.declare("workers", ["jobs"], lock_ms=1000)
    produce(eng, 400)
    for _ in range(300):
        q.ack("workers", "a", answers(q.receive("workers", "a", 1)))
    held = q.receive("workers", "a", 3)
    q.compact()
    assert eng.list_offsets(QUEUE_STATE_TOPIC, 0).log_start > 0  # old segments went
    eng.close()
    eng = Engine.open(data_dir, clock=clock)
    q = QueueManager(eng)
    d = q.describe("workers")
    assert d.partitions[0].start == 300 and d.partitions[0].in_flight == 3
    assert q.ack("workers", "a", answers(held)) == []
    eng.close()


def test_a_partition_window_holds_at_most_max_in_flight_offsets(engine, clock):
    q = QueueManager(engine)
    q.declare("workers", ["jobs"], max_in_flight=5)
    produce(engine, 20)
    first = q.receive("workers", "a", 20)
    assert [m.offset for m in first] == [0, 1, 2, 3, 4]
    q.ack("workers", "a", answers(first[1:]))  # offset 0 outstanding: the window cannot move
    assert q.receive("workers", "a", 20) == []
    q.ack("workers", "a", answers(first[:1]))
    assert [m.offset for m in q.receive("workers", "a", 20)] == [5, 6, 7, 8, 9]


def test_declaring_checks_its_input_and_the_queue_settings(engine):
    q = QueueManager(engine)
    with pytest.raises(UnknownTopicError):
        q.declare("w", ["nope"])
    with pytest.raises(InvalidRequestError, match="internal"):
        q.declare("w", ["__consumer_offsets"])
    with pytest.raises(InvalidRequestError, match="queue name"):
        q.declare("__w", ["jobs"])
    q.declare("w", ["jobs"], lock_ms=500)
    assert q.declare("w", ["jobs"]).lock_ms == 500  # unset: the queue's own
    with pytest.raises(QueueConfigMismatchError, match="lock_ms=500, not 700"):
        q.declare("w", ["jobs"], lock_ms=700)
    with pytest.raises(UnknownQueueError):
        q.receive("other", "a")
    with pytest.raises(InvalidRequestError):
        q.receive("w", "a", 0)
    q.delete("w")
    with pytest.raises(UnknownQueueError):
        q.receive("w", "a")
    assert q.declare("w", ["jobs"], lock_ms=700).lock_ms == 700  # anew


def test_the_state_topic_exists_only_once_a_queue_does(engine):
    q = QueueManager(engine)  # every broker makes one: a broker without queues pays no topic for it
    assert QUEUE_STATE_TOPIC not in engine.list_topics(include_internal=True) and q.queues() == []
    q.declare("w", ["jobs"])
    assert QUEUE_STATE_TOPIC in engine.list_topics(include_internal=True)


def test_a_new_queue_starts_at_the_earliest_record_or_only_new_ones(engine):
    produce(engine, 2)
    q = QueueManager(engine)
    q.declare("all", ["jobs"])
    q.declare("new", ["jobs"], start="latest")
    produce(engine, 1, prefix="n")
    assert values(q.receive("all", "a", 10)) == [b"j0", b"j1", b"n0"]
    assert values(q.receive("new", "a", 10)) == [b"n0"]
    q.reset("new", "earliest")
    assert values(q.receive("new", "a", 10)) == [b"j0", b"j1", b"n0"]


def test_a_malformed_state_record_is_skipped_on_load_and_reported_by_check(data_dir, clock):
    from tidelog.examine import check

    eng = Engine.open(data_dir, clock=clock)
    eng.create_topic("jobs", 1)
    q = QueueManager(eng)
    q.declare("workers", ["jobs"])
    produce(eng, 3)
    q.ack("workers", "a", answers(q.receive("workers", "a", 2)))
    # as only a bug or a hand-made write could make it
    bad = eng.produce(QUEUE_STATE_TOPIC, [b"{}"], keys=[b'["workers", "jobs"]'], partition=0, internal=True)
    eng.close()
    eng = Engine.open(data_dir, clock=clock)
    q = QueueManager(eng)
    assert q.malformed == 1
    assert [m.offset for m in q.receive("workers", "b", 10)] == [2]  # the rest of the state is kept
    eng.close()
    (result,) = [r for r in check(data_dir) if r.topic == QUEUE_STATE_TOPIC]
    assert any(f"record at offset {bad[0].base_offset} is not queue state" in p for p in result.problems)


def test_a_topic_created_again_is_read_from_its_beginning(engine, clock):
    q = QueueManager(engine)
    q.declare("workers", ["jobs"])
    produce(engine, 5)
    q.ack("workers", "a", answers(q.receive("workers", "a", 5)))
    engine.delete_topic("jobs")
    engine.create_topic("jobs", 2)
    produce(engine, 2, prefix="new")
    assert values(q.receive("workers", "a", 10)) == [b"new0", b"new1"]  # not held back at offset 5


def test_a_fifo_queue_hands_out_one_record_per_key_at_a_time_in_order(engine, clock):
    q = QueueManager(engine)
    q.declare("orders", ["jobs"], fifo=True, lock_ms=100)
    engine.produce(
        "jobs", [b"a1", b"b1", b"a2", b"b2", b"x", b"a3"], keys=[b"a", b"b", b"a", b"b", None, b"a"], partition=0
    )
    first = q.receive("orders", "w1", 10)
    assert values(first) == [b"a1", b"b1", b"x"]  # a2, b2, a3 wait for the ones of their key
    assert q.receive("orders", "w2", 10) == []
    q.ack("orders", "w1", answers([m for m in first if m.value == b"a1"]))
    (a2,) = q.receive("orders", "w2", 10)
    assert a2.value == b"a2"
    q.release("orders", "w2", answers([a2]))  # released: a2 again before a3
    (again,) = q.receive("orders", "w2", 10)
    assert again.value == b"a2" and again.delivery_count == 2
    clock.advance(100)  # every lock ends: a2 and b1 come back, before a3 and b2
    assert values(q.receive("orders", "w3", 10)) == [b"a2", b"b1", b"x"]
    with pytest.raises(QueueConfigMismatchError, match="fifo"):
        q.declare("plain", ["jobs"]) and q.declare("plain", ["jobs"], fifo=True)
    assert q.describe("orders").config.fifo
