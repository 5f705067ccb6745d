"""Overload and slow peers against a real server: it stays responsive and bounded, loses nothing acked.

Behaviour only (no timings, no memory thresholds; benchmarks/overload.py measures RSS): a stalled
subscriber gets no more than its credit, many stalled ones no more than the shared subscribe buffer
(and give it back when killed) while a live consumer is still served, a producer flood past
max_concurrent_rpcs is refused with
RESOURCE_EXHAUSTED while admitted streams finish, hundreds of idle connections cost nothing to the
others, a client killed mid-stream leaves the broker serving with every acked record intact, and
producers ride out a broker restart without losing an acknowledged record.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import tidelog
from tidelog.client import Admin, Consumer, Producer
from tidelog.v1 import tidelog_pb2 as pb
from tidelog.wire import framing

from .server_process import ServerProcess

pytestmark = pytest.mark.slow  # a heavier suite: left out by -m 'not slow'

TS = int(time.time() * 1000)  # now: older records would fall to 7-day retention on the next roll


def _config(tmp_path, **settings) -> str:
    path = tmp_path / "tidelog.toml"
    path.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
    return str(path)


def _healthy(target) -> bool:
    with grpc.insecure_channel(target) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _round_trip(target, topic: str, value: bytes) -> None:
    """A valid produce and a fetch of it: the broker still serves everyone else."""
    with Producer(target, linger_ms=0) as p:
        meta = p.send(topic, value, partition=0).result(30)
    with Consumer(target, topic, 0, meta.offset) as c:
        got = []
        for _ in range(40):
            got += c.poll(0.5)
            if got:
                break
    assert got and got[0].value == value


def _all_values(target, topic, partition) -> list[bytes]:
    with Admin(target) as a:
        end = a.list_offsets(topic, partition).log_end
    out: list[bytes] = []
    with Consumer(target, topic, partition, 0) as c:
        for _ in range(400):
            if len(out) >= end:
                break
            out += [r.value for r in c.poll(0.5)]
    assert len(out) == end
    return out


@pytest.fixture
def server(tmp_path):
    srv = ServerProcess(str(tmp_path / "data"), "--config", _config(tmp_path, max_concurrent_rpcs=12)).start()
    with Admin(srv.target) as a:
        a.create_topic("load", 2)
    yield srv
    assert srv.stop() == 0, srv.log()
    assert "Traceback" not in srv.log(), srv.log()


def test_a_stalled_subscriber_gets_no_more_than_its_credit_and_others_are_served(server):
    batch = tidelog.build_batch([b"s" * 1000] * 16, timestamp=TS)  # ~16 KiB per batch
    with grpc.insecure_channel(server.target) as ch:
        produce = ch.stream_stream(
            "/tidelog.v1.Producer/Produce", request_serializer=None, response_deserializer=pb.ProduceResponse.FromString
        )
        acks = list(
            produce(iter([framing.encode_produce_request(i, "load", 0, batch) for i in range(128)]), timeout=60)
        )  # 2 MiB of backlog
        assert sum(len(r.results) for r in acks) == 128
        credit = 64 * 1024
        granted = threading.Event()
        stop = threading.Event()

        def requests():
            yield pb.SubscribeRequest(
                start=pb.SubscribeStart(topic="load", partition=0, position=pb.Position(offset=0), credit_bytes=credit)
            )
            granted.wait(30)
            yield pb.SubscribeRequest(credit_bytes=1 << 30)
            stop.wait(30)

        subscribe = ch.stream_stream(
            "/tidelog.v1.Consumer/Subscribe",
            request_serializer=pb.SubscribeRequest.SerializeToString,
            response_deserializer=pb.SubscribeResponse.FromString,
        )
        stream = subscribe(requests(), timeout=60)
        received, next_offset = 0, 0
        while received < credit:  # while any credit is left the broker sends (at least one whole batch)
            resp = next(stream)
            received += len(resp.batches)
            next_offset = resp.next_offset
        # 4 batches fit the credit; the 5th went out on the 716 bytes left: credit + one batch at most.
        assert received <= credit + len(batch) and next_offset == 5 * 16
        # The consumer stops granting: the broker must hold the rest back, not queue it for us.
        # Meanwhile other clients are served, and more data arrives behind the stalled reader.
        _round_trip(server.target, "load", b"other client")
        assert _healthy(server.target)
        late = []
        reader = threading.Thread(target=lambda: late.append(next(stream)), daemon=True)
        reader.start()
        reader.join(1.0)  # give an over-eager server the chance to send past the credit
        assert late == [], "the broker sent past the credit the client granted"
        granted.set()
        reader.join(30)
        total, offset = received + len(late[0].batches), late[0].next_offset
        while offset < 128 * 16 + 1:
            resp = next(stream)
            total, offset = total + len(resp.batches), resp.next_offset
        stop.set()
        stream.cancel()
    assert offset == 128 * 16 + 1  # everything, in order, once credit came back


STALLED_SUBSCRIBERS = r"""
import sys, threading, grpc
from tidelog.v1 import tidelog_pb2 as pb
target, count = sys.argv[1], int(sys.argv[2])
def hold():
    yield pb.SubscribeRequest(start=pb.SubscribeStart(topic="load", partition=0, credit_bytes=1 << 40,
                                                      position=pb.Position(offset=0)))
    threading.Event().wait()
streams = []
for _ in range(count):  # one connection each, whose 64 KiB receive window stays shut: nothing is read
    ch = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0),
                                                ("grpc.http2.lookahead_bytes", 65536)])
    stream = ch.stream_stream("/tidelog.v1.Consumer/Subscribe", request_serializer=pb.SubscribeRequest.SerializeToString,
                              response_deserializer=None)(hold())
    next(stream)
    streams.append((ch, stream))
print("stalled", flush=True)
threading.Event().wait()
"""


def _gauge(metrics_port: int, name: str) -> float:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_stalled_subscribers_are_held_to_the_shared_buffer_and_give_it_back_when_killed(tmp_path):
    """Subscribers that grant 1 TiB and never read: together they are sent no more than
    max_subscribe_buffer_bytes plus one small message each; a live consumer still reads everything
    meanwhile (with a credit window larger than the broker's cap); killing them gives it all back."""
    budget, cap, stalled = 256 * 1024, 256 * 1024, 8
    srv = ServerProcess(
        str(tmp_path / "data"),
        "--config",
        _config(tmp_path, max_subscribe_buffer_bytes=budget, max_subscribe_credit_bytes=cap),
    ).start()
    metrics_port = srv.metrics_port
    child = None
    try:
        with Admin(srv.target) as a:
            a.create_topic("load", 1)
        batch = tidelog.build_batch([b"b" * 1000] * 16, timestamp=TS)  # ~16 KiB
        with grpc.insecure_channel(srv.target) as ch:
            produce = ch.stream_stream(
                "/tidelog.v1.Producer/Produce",
                request_serializer=None,
                response_deserializer=pb.ProduceResponse.FromString,
            )
            assert (
                sum(
                    len(r.results)
                    for r in produce(
                        iter([framing.encode_produce_request(i, "load", 0, batch) for i in range(64)]), timeout=60
                    )
                )
                == 64
            )
        child = subprocess.Popen(
            [sys.executable, "-c", STALLED_SUBSCRIBERS, srv.target, str(stalled)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "stalled"
        # Each alone would be sent its whole capped credit (8 x 256 KiB); together they get the budget
        # and then one overdraft message each (64 KiB, rounded up to whole batches).
        bound = budget + stalled * (64 * 1024 + len(batch))
        readings = [_gauge(metrics_port, "tidelog_subscribe_buffer_bytes") for _ in range(20)]
        assert max(readings) <= bound, (readings, bound)
        assert max(readings) >= budget, readings  # the stalled ones did fill it
        with Consumer(srv.target, "load", 0, 0, credit_bytes=8 << 20) as c:
            got = 0
            for _ in range(120):
                got += len(c.poll(0.5))
                if got == 64 * 16:
                    break
        assert got == 64 * 16, "a live consumer was starved by stalled ones"
        child.kill()
        child.wait()
        for _ in range(200):
            if _gauge(metrics_port, "tidelog_subscribe_buffer_bytes") == 0:
                break
            time.sleep(0.05)  # the broker sees the dead connection asynchronously
        else:
            pytest.fail("killed subscribers never gave back what they held")
        _round_trip(srv.target, "load", b"after stalled subscribers")
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        assert srv.stop() == 0, srv.log()
    assert "Traceback" not in srv.log(), srv.log()


def _flood(target, index: int, outcome: dict) -> None:
    batch = tidelog.build_batch([b"f%d" % index] * 50, timestamp=TS)
    try:
        with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            stub = ch.stream_stream(
                "/tidelog.v1.Producer/Produce",
                request_serializer=None,
                response_deserializer=pb.ProduceResponse.FromString,
            )
            results = [
                r
                for resp in stub(
                    iter([framing.encode_produce_request(i, "load", 1, batch) for i in range(40)]), timeout=60
                )
                for r in resp.results
            ]
        outcome[index] = ("acked", [(r.base_offset, r.last_offset) for r in results if not r.HasField("error")])
    except grpc.RpcError as err:
        outcome[index] = (err.code(), err.details())


def test_a_producer_flood_past_max_concurrent_rpcs_is_refused_not_queued(server):
    outcome: dict = {}
    gate = threading.Barrier(40)

    def run(i):
        gate.wait(30)
        _flood(server.target, i, outcome)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(outcome) == 40
    codes = {v[0] for v in outcome.values()}
    assert codes <= {"acked", grpc.StatusCode.RESOURCE_EXHAUSTED}, outcome
    acked = [span for v in outcome.values() if v[0] == "acked" for span in v[1]]
    assert acked, "some producers were admitted"
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, "40 streams against a limit of 12 were all admitted"
    # Every acked range holds that producer's records; nothing else was appended.
    values = _all_values(server.target, "load", 1)
    assert len(values) == 50 * len(acked)
    for idx, (kind, spans) in outcome.items():
        if kind == "acked":
            for first, last in spans:
                assert values[first : last + 1] == [b"f%d" % idx] * 50
    assert _healthy(server.target)
    _round_trip(server.target, "load", b"after the flood")


def test_hundreds_of_idle_connections_leave_the_broker_serving(server):
    channels = [
        grpc.insecure_channel(server.target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(200)
    ]
    try:
        for ch in channels:  # each connects and then sits idle
            assert (
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30).status
                == health_pb2.HealthCheckResponse.SERVING
            )
        _round_trip(server.target, "load", b"among idle connections")
    finally:
        for ch in channels:
            ch.close()
    _round_trip(server.target, "load", b"after idle connections")


VANISHING_CLIENT = r"""
import sys, threading, grpc, tidelog
from tidelog.wire import framing
from tidelog.v1 import tidelog_pb2 as pb
target = sys.argv[1]
ch = grpc.insecure_channel(target)
sub = ch.stream_stream("/tidelog.v1.Consumer/Subscribe", request_serializer=pb.SubscribeRequest.SerializeToString,
                       response_deserializer=pb.SubscribeResponse.FromString)
def hold():
    yield pb.SubscribeRequest(start=pb.SubscribeStart(topic="load", partition=0, credit_bytes=4096,
                                                      position=pb.Position(offset=0)))
    threading.Event().wait()
stream = sub(hold())
threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()
import time
batch = tidelog.build_batch([b"v" * 100] * 10, timestamp=int(time.time() * 1000))
def requests():
    i = 0
    while True:
        yield framing.encode_produce_request(i, "load", 0, batch)
        i += 1
produce = ch.stream_stream("/tidelog.v1.Producer/Produce", request_serializer=None,
                           response_deserializer=pb.ProduceResponse.FromString)
for resp in produce(requests()):
    for r in resp.results:
        print(r.base_offset, r.last_offset, flush=True)
"""


def test_clients_killed_mid_stream_leave_acked_data_intact_and_the_broker_serving(server):
    acked_last = -1
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", VANISHING_CLIENT, server.target], stdout=subprocess.PIPE, text=True
        )
        try:
            for _ in range(50):  # wait for some acks, then kill it mid-stream
                line = child.stdout.readline()
                if not line:
                    break
                acked_last = max(acked_last, int(line.split()[1]))
        finally:
            child.kill()
            child.wait()
        assert acked_last >= 0, "the client got acks before it was killed"
        assert _healthy(server.target)
    values = _all_values(server.target, "load", 0)
    assert len(values) >= acked_last + 1 and set(values) == {b"v" * 100}  # whole batches only
    _round_trip(server.target, "load", b"after vanished clients")


def test_producers_lose_no_acknowledged_record_across_a_broker_restart_under_load(tmp_path):
    srv = ServerProcess(str(tmp_path / "data"), "--fsync", "always").start()
    try:
        with Admin(srv.target) as a:
            a.create_topic("restart", 2)
        futures: dict[int, list] = {0: [], 1: []}
        restarted = threading.Event()

        def produce(part):
            with Producer(srv.target, linger_ms=1, batch_bytes=4096, delivery_timeout_s=60) as p:
                for i in range(2000):
                    futures[part].append(p.send("restart", b"%d-%05d" % (part, i), partition=part))
                    if i % 200 == 0:
                        time.sleep(0.005)
                    if i == 1000:
                        restarted.wait(60)
                p.flush(60)

        threads = [threading.Thread(target=produce, args=(part,)) for part in (0, 1)]
        for t in threads:
            t.start()
        while sum(f.done() for fs in futures.values() for f in fs) < 500:
            time.sleep(0.01)
        assert srv.stop() == 0  # graceful restart while both producers have records in flight
        srv.start()
        restarted.set()
        for t in threads:
            t.join(120)
        for part in (0, 1):
            offsets = [f.result(timeout=60).offset for f in futures[part]]
            assert offsets == list(range(2000))  # each acked once, in order
            assert _all_values(srv.target, "restart", part) == [b"%d-%05d" % (part, i) for i in range(2000)]
    finally:
        srv.stop()
