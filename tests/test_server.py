"""The gRPC server through the Python client, against a real `tidelog serve` subprocess."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import grpc
import pytest

import tidelog
from tidelog.client import Admin, AsyncConsumer, Consumer, Producer
from tidelog.codec.partitioner import key_partition
from tidelog.errors import (
    BrokerUnavailableError,
    CorruptBatchError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    TopicExistsError,
    UnknownTopicError,
)
from tidelog.v1 import tidelog_pb2 as pb
from tidelog.wire import framing
from tidelog.wire.statuses import CODE_KEY, LOG_END_KEY, LOG_START_KEY

from .server_process import ServerProcess, refused_address


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(str(tmp_path_factory.mktemp("srv") / "data")).start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture
def admin(server):
    with Admin(server.target) as a:
        yield a


_names = iter(range(10**6))


@pytest.fixture
def topic(admin):
    name = f"t{next(_names)}"
    admin.create_topic(name, 3)
    return name


def consume(target, topic, partition, count, offset=0, timeout_s=20.0):
    out = []
    deadline = time.monotonic() + timeout_s
    with Consumer(target, topic, partition, offset) as c:
        while len(out) < count and time.monotonic() < deadline:
            out += c.poll(0.5)
    return out


def test_producer_to_consumer_round_trip_with_keys_headers_and_offsets(server, topic):
    with Producer(server.target, linger_ms=2) as p:
        futures = [
            p.send(topic, b"value-%d" % i, key=b"key-%d" % (i % 5), headers=[("n", b"%d" % i)]) for i in range(200)
        ]
        p.flush()
    metas = [f.result(timeout=10) for f in futures]
    for i, meta in enumerate(metas):
        assert meta.partition == key_partition(b"key-%d" % (i % 5), 3)  # the engine's partitioner
    for part in range(3):
        sent = [(m.offset, i) for i, m in enumerate(metas) if m.partition == part]
        got = consume(server.target, topic, part, len(sent))
        assert [r.offset for r in got] == [o for o, _ in sent] == list(range(len(sent)))
        assert [r.value for r in got] == [b"value-%d" % i for _, i in sent]
        assert all(r.headers == (("n", r.value.split(b"-")[1]),) for r in got)


def test_many_producers_keep_per_partition_order(server, topic):
    def run(pid):
        with Producer(server.target, linger_ms=1, batch_bytes=4096) as p:
            for seq in range(300):
                p.send(topic, b"%d:%d" % (pid, seq), partition=seq % 3)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for part in range(3):
        got = consume(server.target, topic, part, 400)
        assert len(got) == 400
        for pid in range(4):
            seqs = [int(r.value.split(b":")[1]) for r in got if r.value.startswith(b"%d:" % pid)]
            assert seqs == [s for s in range(300) if s % 3 == part]


def test_lz4_producer_batches_are_stored_compressed_and_read_back(server, topic, admin):
    values = [b'{"user": %d, "event": "click"}' % i for i in range(500)]
    with Producer(server.target, compression="lz4", linger_ms=50) as p:
        for v in values:
            p.send(topic, v, partition=1)
    assert [r.value for r in consume(server.target, topic, 1, 500)] == values
    assert admin.describe(topic)["partitions"][1].size_bytes < sum(map(len, values)) / 2


def test_subscribe_receives_records_produced_after_it_started(server, topic):
    with Consumer(server.target, topic, 0, "latest") as c:
        assert c.poll(0.3) == []
        with Producer(server.target) as p:
            p.send(topic, b"late", partition=0)
        got = []
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            got = c.poll(0.5)
    assert [r.value for r in got] == [b"late"]


def test_consumer_seek_moves_the_position_in_band(server, topic):
    with Producer(server.target) as p:
        for i in range(10):
            p.send(topic, b"%d" % i, partition=2)
    with Consumer(server.target, topic, 2, 0) as c:
        first = []
        while len(first) < 10:
            first += c.poll(5)
        c.seek(7)
        again = []
        deadline = time.monotonic() + 10
        while len(again) < 3 and time.monotonic() < deadline:
            again += c.poll(0.5)
    assert [r.offset for r in again] == [7, 8, 9]


def test_async_consumer_streams_records(server, topic):
    with Producer(server.target) as p:
        for i in range(20):
            p.send(topic, b"a%d" % i, partition=0)

    async def read():
        out = []
        async with AsyncConsumer(server.target, topic, 0, 5) as c:
            async for rec in c:
                out.append(rec)
                if len(out) == 15:
                    break
        return out

    got = asyncio.run(asyncio.wait_for(read(), 20))
    assert [r.offset for r in got] == list(range(5, 20))


def _fetch_stub(channel):
    return channel.unary_unary(
        "/tidelog.v1.Consumer/Fetch",
        request_serializer=pb.FetchRequest.SerializeToString,
        response_deserializer=pb.FetchResponse.FromString,
    )


def test_long_poll_fetch_waits_and_wakes_when_data_arrives(server, topic):
    def late_record():
        with Producer(server.target) as p:
            p.send(topic, b"wake", partition=0).result(10)

    timer = threading.Timer(0.3, late_record)
    with grpc.insecure_channel(server.target) as channel:
        timer.start()
        started = time.monotonic()
        reply = _fetch_stub(channel)(
            pb.FetchRequest(topic=topic, partition=0, offset=0, max_wait_ms=20_000), timeout=30
        )
        waited = time.monotonic() - started
        timer.join()
    records = [r for b in tidelog.iter_batches(reply.batches) for r in b.records()]
    assert [r.value for r in records] == [b"wake"] and reply.next_offset == 1
    assert waited < 20  # woken by the record, not by the deadline


def test_long_poll_fetch_times_out_empty(server, topic):
    with grpc.insecure_channel(server.target) as channel:
        reply = _fetch_stub(channel)(pb.FetchRequest(topic=topic, partition=1, offset=0, max_wait_ms=100), timeout=10)
    assert reply.batches == b"" and reply.next_offset == 0 and reply.high_watermark == 0


def test_errors_come_back_as_statuses_and_the_same_exceptions(server, admin, topic):
    with pytest.raises(UnknownTopicError):
        admin.describe("missing")
    with pytest.raises(TopicExistsError):
        admin.create_topic(topic)
    with pytest.raises(InvalidTopicError):
        admin.create_topic("../escape")
    assert not os.path.exists(os.path.join(os.path.dirname(server.data_dir), "escape-0"))
    with grpc.insecure_channel(server.target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            _fetch_stub(channel)(pb.FetchRequest(topic=topic, partition=0, offset=99), timeout=10)
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
    meta = dict(info.value.trailing_metadata())
    assert meta[CODE_KEY] == str(OffsetOutOfRangeError.code)
    assert (meta[LOG_START_KEY], meta[LOG_END_KEY]) == ("0", "0")
    with Consumer(server.target, topic, 0, 50) as c:
        with pytest.raises(OffsetOutOfRangeError) as err:
            c.poll(10)
    assert (err.value.log_start, err.value.log_end) == (0, 0)


def _raw_produce(target, requests):
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(
            "/tidelog.v1.Producer/Produce", request_serializer=None, response_deserializer=pb.ProduceResponse.FromString
        )
        return [r for resp in call(iter(requests), timeout=30) for r in resp.results]


def test_a_malformed_batch_is_rejected_in_stream_and_appends_nothing(server, admin, topic):
    good = tidelog.build_batch([b"ok"], timestamp=1_700_000_000_000)
    bad = bytearray(good)
    bad[-1] ^= 1
    results = _raw_produce(
        server.target,
        [
            framing.encode_produce_request(1, topic, 0, bytes(bad)),
            framing.encode_produce_request(2, topic, 0, good),
            framing.encode_produce_request(3, "missing-topic", 0, good),
            b"\xff\xff\xff",  # not a protobuf message at all
        ],
    )
    assert [r.sequence for r in results[:3]] == [1, 2, 3]
    assert results[0].error.code == CorruptBatchError.code
    assert results[0].error.grpc_status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert not results[1].HasField("error") and results[1].base_offset == 0
    assert results[2].error.code == UnknownTopicError.code
    assert results[3].error.grpc_status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert admin.list_offsets(topic, 0).log_end == 1


def test_a_client_without_tidelog_code_uses_reflection(server, topic):
    grpc_requests = pytest.importorskip("grpc_requests")
    client = grpc_requests.Client.get_by_endpoint(server.target)
    services = set(client.service_names)
    assert {"tidelog.v1.Admin", "tidelog.v1.Producer", "tidelog.v1.Consumer", "grpc.health.v1.Health"} <= services
    assert topic in client.request("tidelog.v1.Admin", "ListTopics", {})["topics"]
    produced = client.request(
        "tidelog.v1.Producer",
        "ProduceRecords",
        {
            "topic": topic,
            "partition": 2,
            "records": [
                {"key": "azE=", "value": "aGVsbG8="},
                {"value": "d29ybGQ=", "headers": [{"key": "h", "value": "eA=="}]},
            ],
        },
    )
    assert produced["results"][0]["partition"] == 2
    fetched = client.request("tidelog.v1.Consumer", "FetchRecords", {"topic": topic, "partition": 2, "offset": 0})
    import base64

    values = [base64.b64decode(r["value"]) for r in fetched["records"]]
    assert values == [b"hello", b"world"]


IDLE_PINGER = """
import sys, time, grpc
from tidelog.v1 import tidelog_pb2 as pb
options = [("grpc.keepalive_time_ms", 1000), ("grpc.keepalive_timeout_ms", 1000),
           ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0)]
with grpc.insecure_channel(sys.argv[1], options=options) as channel:
    topics = channel.unary_unary("/tidelog.v1.Admin/ListTopics",
                                 request_serializer=pb.ListTopicsRequest.SerializeToString,
                                 response_deserializer=pb.ListTopicsResponse.FromString)
    topics(pb.ListTopicsRequest(), timeout=10)
    time.sleep(5)  # idle, five pings
    topics(pb.ListTopicsRequest(), timeout=10)
print("done")
"""


def test_a_client_that_pings_every_second_on_an_idle_connection_is_not_sent_away(server):
    """Replica links, and clients that must notice a dead broker within seconds, ping every second,
    also between calls. With gRPC's server defaults the broker answered GOAWAY too_many_pings after a
    few (gRPC logs it on the client's stderr), dropping the connection: a call started at that moment
    fails."""
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
    out = subprocess.run(
        [sys.executable, "-c", IDLE_PINGER, server.target], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0 and "done" in out.stdout, out.stderr
    assert "too_many_pings" not in out.stderr, out.stderr


def test_unreachable_server_is_a_clear_error():
    with refused_address() as nowhere, Admin(nowhere, timeout_s=2) as a:
        with pytest.raises(BrokerUnavailableError, match="cannot reach the broker"):
            a.list_topics()


def test_sigterm_under_load_loses_no_acknowledged_record(tmp_path):
    srv = ServerProcess(str(tmp_path / "data"), "--fsync", "always").start()
    with Admin(srv.target) as a:
        a.create_topic("load", 2)
    acked: dict[int, bytes] = {}
    stop = threading.Event()

    def produce():
        p = Producer(srv.target, linger_ms=1, delivery_timeout_s=3)
        i = 0
        while not stop.is_set() and i < 50_000:
            fut = p.send("load", b"%d" % i, partition=i % 2)
            fut.add_done_callback(lambda f, i=i: acked.__setitem__(i, f.result()) if not f.exception() else None)
            i += 1
            if i % 500 == 0:
                time.sleep(0.01)
        try:
            p.close(timeout_s=10)
        except Exception:
            pass

    t = threading.Thread(target=produce)
    t.start()
    try:
        deadline = time.monotonic() + 120
        while len(acked) < 2000:  # SIGTERM only once the broker is busy acknowledging
            assert t.is_alive() and time.monotonic() < deadline, f"only {len(acked)} records acknowledged"
            time.sleep(0.01)
        assert srv.stop() == 0, srv.log()
    finally:
        stop.set()
        t.join(60)
        srv.kill()  # (stopped already, unless an assertion above failed)
    closed = [line for line in srv.log().splitlines() if " engine closed " in line]
    assert len(closed) == 1 and "clean=true" in closed[0]
    srv.start()
    try:
        for part in range(2):
            mine = {meta.offset: i for i, meta in list(acked.items()) if meta.partition == part}
            got = {r.offset: r.value for r in consume(srv.target, "load", part, max(mine) + 1)}
            assert all(got.get(off) == b"%d" % i for off, i in mine.items())
    finally:
        assert srv.stop() == 0


def test_an_idle_producer_does_not_hold_a_graceful_stop_for_the_grace_period(tmp_path):
    """A connected Producer keeps its Produce stream open while idle; a SIGTERM must end it at once
    (as waiting subscriptions are), not wait out shutdown_grace_s. With an hour of grace, the stop
    below can only finish within its 60 s bound if the idle stream was ended."""
    config = tmp_path / "tidelog.toml"
    config.write_text("shutdown_grace_s = 3600\n")
    srv = ServerProcess(str(tmp_path / "data"), "--config", str(config)).start()
    try:
        with Admin(srv.target) as a:
            a.create_topic("idle", 1)
        p = Producer(srv.target, linger_ms=1)
        before = p.send("idle", b"acked before the stop", partition=0).result(timeout=30)
        assert srv.stop(timeout_s=60) == 0, srv.log()  # raises TimeoutExpired while the stream holds it
        closed = [line for line in srv.log().splitlines() if " engine closed " in line]
        assert len(closed) == 1 and "clean=true" in closed[0], srv.log()
        srv.start()
        later = p.send("idle", b"sent after the restart", partition=0).result(timeout=60)
        p.close(timeout_s=30)
        assert later.offset == before.offset + 1
        assert [r.value for r in consume(srv.target, "idle", 0, 2)] == [
            b"acked before the stop",
            b"sent after the restart",
        ]
    finally:
        srv.stop()


def test_producer_retries_across_a_broker_crash_without_loss_or_duplicates(tmp_path):
    srv = ServerProcess(str(tmp_path / "data"), "--fsync", "always").start()
    try:
        _produce_across_a_crash(srv)
    finally:
        srv.stop()  # also when an assertion failed: never leave a broker behind


def _produce_across_a_crash(srv):
    with Admin(srv.target) as a:
        a.create_topic("retry", 1)
    futures = []
    with Producer(srv.target, linger_ms=1, batch_bytes=2048, delivery_timeout_s=60) as p:
        for i in range(3000):
            futures.append(p.send("retry", b"%06d" % i, partition=0))
            if i == 1000:
                # the stream is up (a record acknowledged) before the kill: on a loaded machine the producer's
                # thread could otherwise open its first stream only to the restarted broker, with nothing to resend
                futures[500].result(timeout=30)
                srv.kill()  # SIGKILL: acks in flight are lost; the producer must resend
                srv.start()
            if i % 200 == 0:
                time.sleep(0.005)
        p.flush(60)
        assert p.reconnects >= 1
    offsets = [f.result(timeout=60).offset for f in futures]
    assert offsets == list(range(3000))  # acked in order, each record exactly once
    got = consume(srv.target, "retry", 0, 3000)
    assert [r.value for r in got] == [b"%06d" % i for i in range(3000)]
    with Admin(srv.target) as a:
        assert a.list_offsets("retry", 0).log_end == 3000


def test_shutdown_ends_open_subscriptions_with_a_clear_error(tmp_path):
    from tidelog.errors import EngineClosedError

    srv = ServerProcess(str(tmp_path / "data")).start()
    with Admin(srv.target) as a:
        a.create_topic("idle", 1)
    consumer = Consumer(srv.target, "idle", 0, 0)
    assert consumer.poll(0.2) == []
    assert srv.stop() == 0
    with pytest.raises(EngineClosedError, match="shutting down"):
        consumer.poll(30)
    consumer.close()


def test_batches_never_grow_past_batch_bytes_and_a_refused_batch_does_not_poison_the_partition(server, admin):
    admin.create_topic("big", 1, max_batch_bytes=64 * 1024)
    p = Producer(server.target, linger_ms=5, batch_bytes=16 * 1024)
    try:
        p.send("big", b"first", partition=0).result(10)
        held = threading.Event()  # the network thread waits on it: every record below is queued at once
        p._loop.call_soon_threadsafe(held.wait, 60)
        try:
            futures = [p.send("big", b"x" * 1024, partition=0) for _ in range(500)]
        finally:
            held.set()
        p.flush(60)
        assert all(f.exception(0) is None for f in futures)  # 500 KB went out in batches of ~16 KB
        too_big = p.send("big", b"y" * 100_000, partition=0)  # over the topic's max_batch_bytes
        p.flush(60)
        assert too_big.exception(0) is not None
        after = p.send("big", b"z", partition=0)
        assert after.result(30).offset == 501  # the partition still takes this producer's records
    finally:
        p.close()


def test_send_blocks_when_the_buffer_is_full_instead_of_growing_without_bound(server, admin):
    admin.create_topic("buffered", 1)
    with Producer(server.target, linger_ms=5, batch_bytes=64 * 1024, buffer_bytes=256 * 1024) as p:
        futures = []
        for i in range(5000):  # ~5 MB through a 256 KB buffer
            futures.append(p.send("buffered", b"%05d" % i + b"x" * 1019, partition=0))
            assert p._buffered <= p.buffer_bytes + 1100
        p.flush(60)
    assert [f.result(0).offset for f in futures] == list(range(5000))
