"""The QueueConsumer, embedded (over an engine's QueueManager, worker threads) and over gRPC (a real
broker process): each record to one worker at a time, answers by message and in batches, locks kept
alive while a handler runs, held records given back on close, and errors as statuses."""

from __future__ import annotations

import asyncio
import queue as queue_module
import threading
import time
import urllib.request

import grpc
import pytest

from tidelog import Engine
from tidelog.client import Admin, AsyncQueueConsumer, Producer, QueueConsumer
from tidelog.errors import QueueConfigMismatchError, UnknownQueueError, UnknownTopicError
from tidelog.queues.manager import QueueManager
from tidelog.v1 import tidelog_pb2 as pb

from .server_process import ServerProcess


@pytest.fixture
def manager(data_dir):
    eng = Engine.open(data_dir)
    eng.create_topic("jobs", 2)
    yield QueueManager(eng)
    eng.close()


def test_worker_threads_share_the_jobs_each_acknowledged_once(manager):
    manager.engine.produce("jobs", [f"j{i}".encode() for i in range(300)])
    done: list[bytes] = []
    lock = threading.Lock()

    def work(stop: threading.Event) -> None:
        with QueueConsumer(manager, queue="w", topics=["jobs"], prefetch=5, wait_ms=50) as q:
            while not stop.is_set():
                for msg in q.receive(5, wait_ms=50):
                    assert msg.ack()
                    with lock:
                        done.append(bytes(msg.value))

    stop = threading.Event()
    threads = [threading.Thread(target=work, args=(stop,)) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(done) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(10)
    assert sorted(done) == sorted(f"j{i}".encode() for i in range(300))  # each once, none lost


def test_a_long_handler_keeps_its_lock_and_close_gives_back_what_is_held(manager):
    manager.engine.produce("jobs", [b"long", b"other"], partition=0)
    slow = QueueConsumer(manager, queue="w", topics=["jobs"], lock_ms=300, wait_ms=0)
    (msg,) = slow.receive(1)
    time.sleep(1.2)  # four locks long: the extender keeps it
    other = QueueConsumer(manager, queue="w", topics=["jobs"], wait_ms=0)
    assert [bytes(m.value) for m in other.receive(5)] == [b"other"]
    assert msg.ack() and msg.refused is None
    assert slow.receive(1, wait_ms=0) == []  # nothing left
    manager.engine.produce("jobs", [b"third"], partition=0)
    (third,) = slow.receive(1, wait_ms=1000)
    slow.close()  # unanswered: available to others at once, not after its lock
    (again,) = other.receive(1, wait_ms=1000)
    assert again.value == b"third" and again.delivery_count == 2
    other.close()


def test_a_lost_lock_makes_ack_return_false_and_batches_answer_many(manager):
    manager.engine.produce("jobs", [b"a", b"b", b"c"], partition=1)
    q1 = QueueConsumer(manager, queue="w", topics=["jobs"], lock_ms=100, wait_ms=0, auto_extend=False)
    q2 = QueueConsumer(manager, queue="w", topics=["jobs"], wait_ms=0)
    first = q1.receive(3)
    time.sleep(0.2)
    second = q2.receive(3)
    assert [m.offset for m in second] == [0, 1, 2]
    assert not first[0].ack() and "delivered again" in first[0].refused
    assert q2.ack(second) == []
    assert q2.receive(3) == []
    q1.close()
    q2.close()


def test_the_asyncio_form_takes_and_answers_records(manager):
    manager.engine.produce("jobs", [b"x", b"y", b"z"], partition=0)

    async def work():
        got = []
        async with AsyncQueueConsumer(manager, queue="w", topics=["jobs"], wait_ms=100) as q:
            async for msg in q:
                got.append((bytes(msg.value), msg.delivery_count))
                if msg.value == b"y" and msg.delivery_count == 1:
                    assert await msg.release()
                else:
                    assert await msg.ack()
                if len(got) == 4:
                    break
            assert await q.receive(5, wait_ms=0) == []
        return got

    got = asyncio.run(asyncio.wait_for(work(), 30))
    assert sorted(got) == [(b"x", 1), (b"y", 1), (b"y", 2), (b"z", 1)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(str(tmp_path_factory.mktemp("queues") / "data")).start()
    yield srv
    assert srv.stop() == 0, srv.log()


def test_over_grpc_the_same_queue_semantics_and_clear_errors(server):
    with Admin(server.target) as admin:
        admin.create_topic("tasks", 2)
    with Producer(server.target) as p:
        for i in range(6):
            p.send("tasks", f"t{i}".encode(), key=f"k{i}".encode(), headers=[("h", b"v")])
        p.flush()
    with pytest.raises(UnknownTopicError):
        QueueConsumer(server.target, queue="q", topics=["nope"])
    with QueueConsumer(server.target, queue="q", topics=["tasks"], lock_ms=5000, dead_letter_topic="tasks.dlq") as q:
        msgs = q.receive(10, wait_ms=2000)
        while len(msgs) < 6:
            more = q.receive(10, wait_ms=2000)
            assert more, msgs
            msgs += more
        assert sorted(m.value for m in msgs) == [f"t{i}".encode() for i in range(6)]
        assert all(m.headers == (("h", b"v"),) and m.key.startswith(b"k") for m in msgs)
        assert q.ack(msgs[:4]) == []
        assert msgs[4].reject(reason="bad input")
        assert msgs[5].release(delay_ms=60_000)
        with pytest.raises(QueueConfigMismatchError, match="lock_ms=5000"):
            QueueConsumer(server.target, queue="q", topics=["tasks"], lock_ms=1000)
    channel = grpc.insecure_channel(server.target)
    describe = channel.unary_unary(
        "/tidelog.v1.Queue/DescribeQueue",
        request_serializer=pb.DescribeQueueRequest.SerializeToString,
        response_deserializer=pb.QueueDescription.FromString,
    )
    d = describe(pb.DescribeQueueRequest(queue="q"), timeout=10)
    assert d.totals["acked"] == 4 and d.totals["dead_lettered"] == 1
    assert sum(p.delayed for p in d.partitions) == 1 and d.settings.dead_letter_topic == "tasks.dlq"
    with pytest.raises(grpc.RpcError) as err:
        describe(pb.DescribeQueueRequest(queue="missing"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "unknown queue" in err.value.details()
    channel.close()
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    assert 'tidelog_queue_records_total{outcome="acked",queue="q"} 4.0' in scraped, scraped
    assert 'tidelog_queue_delayed{queue="q"} 1.0' in scraped
    with pytest.raises(UnknownQueueError):
        from tidelog.client.queue_backend import GrpcQueues

        GrpcQueues(server.target, 10).receive("missing", "c", 1, 0, [])


def test_the_consume_stream_never_sends_more_than_the_credit(server):
    with Admin(server.target) as admin:
        admin.create_topic("streamed", 1)
    with QueueConsumer(server.target, queue="s", topics=["streamed"]):  # creates the queue
        pass
    with Producer(server.target) as p:
        for i in range(5):
            p.send("streamed", f"r{i}".encode())
        p.flush()
    requests: queue_module.Queue = queue_module.Queue()
    requests.put(pb.ConsumeQueueRequest(start=pb.ConsumeQueueStart(queue="s", consumer_id="c1", credit=3)))

    def feed():
        while (item := requests.get()) is not None:
            yield item

    channel = grpc.insecure_channel(server.target)
    consume = channel.stream_stream(
        "/tidelog.v1.Queue/Consume",
        request_serializer=pb.ConsumeQueueRequest.SerializeToString,
        response_deserializer=pb.ReceiveResponse.FromString,
    )
    responses = consume(feed(), timeout=30)
    got = []
    while len(got) < 3:
        got += next(responses).records
    assert [r.value for r in got] == [b"r0", b"r1", b"r2"]
    time.sleep(1.5)  # two more are available, but no credit is left: they stay in the queue
    with Admin(server.target) as admin:
        (part,) = admin.describe_queue("s").partitions
    assert (part.in_flight, part.available) == (3, 2)
    requests.put(pb.ConsumeQueueRequest(credit=5))
    more = next(responses).records
    assert [r.value for r in more] == [b"r3", b"r4"]
    requests.put(None)
    responses.cancel()
    bad = consume(iter([pb.ConsumeQueueRequest(start=pb.ConsumeQueueStart(queue="nope", consumer_id="c", credit=1))]))
    first = next(bad)
    assert first.error.code == 1010 and "unknown queue" in first.error.message
    channel.close()


def test_an_extension_refused_leaves_the_ack_to_the_broker_and_a_second_answer_is_false(manager):
    manager.engine.produce("jobs", [b"a", b"b"], partition=0)
    q = QueueConsumer(manager, queue="w", topics=["jobs"], lock_ms=100, wait_ms=0, auto_extend=False)
    a, b = q.receive(2)
    time.sleep(0.25)
    manager.tick()  # both locks ended; nobody took them since
    assert not a.extend() and "expired" in a.refused
    assert a.ack() and a.refused is None  # a late ack still counts: nobody holds the record
    assert not a.ack()  # answered already
    other = QueueConsumer(manager, queue="w", topics=["jobs"], wait_ms=0)
    (again,) = other.receive(1)
    assert again.value == b"b" and not b.ack() and "delivered again" in b.refused
    q.close()
    other.close()


def test_a_receive_carries_the_acks_of_the_previous_batch(server):
    with Admin(server.target) as admin:
        admin.create_topic("piggy", 1)
    with Producer(server.target) as p:
        for i in range(30):
            p.send("piggy", f"p{i}".encode())
        p.flush()
    with QueueConsumer(server.target, queue="pg", topics=["piggy"], lock_ms=10_000) as q:
        seen, batch = [], q.receive(10, wait_ms=2000)
        while batch:
            seen += [m.value for m in batch]
            batch = q.receive(10, wait_ms=300, ack=batch)  # acknowledges the batch it hands back
        assert sorted(seen) == sorted(f"p{i}".encode() for i in range(30))
        with Admin(server.target) as admin:
            d = admin.describe_queue("pg")
        assert d.totals["acked"] == 30 and d.partitions[0].start == 30 and d.partitions[0].in_flight == 0
    with QueueConsumer(server.target, queue="pg", topics=["piggy"]) as q:
        stale = q.consumer_id
    with QueueConsumer(server.target, queue="pg", topics=["piggy"], consumer_id=stale) as q:
        from tidelog.client.queue_consumer import Message
        from tidelog.values import QueueMessage

        ghost = Message(q, QueueMessage("piggy", 0, 3, 1, 0, 0, None, b"p3", ()))
        assert q.receive(1, wait_ms=0, ack=[ghost]) == [] and "already complete" in ghost.refused
