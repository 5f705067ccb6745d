"""Every limit is a validated, documented setting, and going past it gets its precise answer.

Real servers with small limits: one for sizes and counts (batch, message, fetch, subscribe message
and credit, topics, partitions, in-flight bytes), others for connections and concurrent RPCs, and one
for the per-connection limits and the admin reserve; the in-flight byte budgets are also driven
directly with a held-back engine.
"""

from __future__ import annotations

import ast
import inspect
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import tidelog
from tidelog import config as config_module
from tidelog.config import EngineConfig, ServerConfig, TopicConfig
from tidelog.errors import InvalidConfigError, RecordTooLargeError, ResourceLimitError
from tidelog.v1 import tidelog_pb2 as pb
from tidelog.wire import framing
from tidelog.wire.statuses import CODE_KEY

from .server_process import ServerProcess

TS = 1_700_000_000_000
LIMITS = {
    ServerConfig: [
        "max_message_bytes",
        "max_inflight_bytes_per_stream",
        "max_inflight_bytes",
        "max_inflight_bytes_per_connection",
        "max_subscribe_message_bytes",
        "max_subscribe_credit_bytes",
        "max_subscribe_buffer_bytes",
        "max_fetch_wait_ms",
        "max_concurrent_rpcs",
        "max_concurrent_rpcs_per_connection",
        "admin_reserved_rpcs",
        "max_connections",
    ],
    EngineConfig: ["max_topics", "max_partitions_per_topic", "max_fetch_bytes"],
    TopicConfig: ["max_batch_bytes"],
}


def _docstrings(cls) -> dict[str, str]:
    """Attribute docstrings (the string right after each field) of a config dataclass."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    out = {}
    for field, doc in zip(body, body[1:]):
        if isinstance(field, ast.AnnAssign) and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant):
            out[field.target.id] = doc.value.value
    return out


@pytest.mark.parametrize("cls,name", [(c, n) for c, names in LIMITS.items() for n in names])
def test_each_limit_is_validated_and_documented_with_its_default(cls, name):
    with pytest.raises(InvalidConfigError, match=name):
        cls(**{name: -1 if name == "admin_reserved_rpcs" else 0})  # no reserve is a valid choice
    with pytest.raises(InvalidConfigError, match=name):
        cls(**{name: "10"})
    doc = _docstrings(cls)[name]
    assert "default" in doc.lower(), f"{cls.__name__}.{name}: say the default in the docstring"
    assert config_module  # the module documents the units-last naming these follow


# -- sizes and counts ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    path = root / "tidelog.toml"
    path.write_text(
        "\n".join(
            [
                "max_message_bytes = 131072",
                "max_inflight_bytes_per_stream = 65536",
                "max_subscribe_message_bytes = 8192",
                "max_subscribe_credit_bytes = 65536",
                "[engine]",
                "max_topics = 3",
                "max_partitions_per_topic = 4",
                "max_fetch_bytes = 16384",
                "[engine.topic_defaults]",
                "max_batch_bytes = 8192",
                "",
            ]
        )
    )
    srv = ServerProcess(str(root / "data"), "--config", str(path)).start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.target) as ch:
        yield ch


def call(channel, method, request, response_type=None):
    stub = channel.unary_unary(
        f"/tidelog.v1.{method}",
        request_serializer=type(request).SerializeToString,
        response_deserializer=response_type.FromString if response_type else None,
    )
    return stub(request, timeout=10)


def refused(channel, method, request, status, error_cls=None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(channel, method, request)
    assert info.value.code() == status, info.value.details()
    if error_cls is not None:
        assert dict(info.value.trailing_metadata())[CODE_KEY] == str(error_cls.code)
    return info.value


def produce(channel, requests: list[bytes]):
    stub = channel.stream_stream(
        "/tidelog.v1.Producer/Produce", request_serializer=None, response_deserializer=pb.ProduceResponse.FromString
    )
    return [r for resp in stub(iter(requests), timeout=30) for r in resp.results]


@pytest.fixture(scope="module")
def topic(channel):
    call(channel, "Admin/CreateTopic", pb.CreateTopicRequest(name="lim", partitions=4))
    return "lim"


def test_max_partitions_per_topic_and_max_topics_are_resource_exhausted(channel, topic):
    err = refused(
        channel,
        "Admin/CreateTopic",
        pb.CreateTopicRequest(name="wide", partitions=5),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        ResourceLimitError,
    )
    assert "max_partitions_per_topic=4" in err.details()
    call(channel, "Admin/CreateTopic", pb.CreateTopicRequest(name="third", partitions=1))  # with __consumer_offsets
    err = refused(
        channel,
        "Admin/CreateTopic",
        pb.CreateTopicRequest(name="fourth", partitions=1),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        ResourceLimitError,
    )
    assert "max_topics=3" in err.details()
    call(channel, "Admin/DeleteTopic", pb.DeleteTopicRequest(name="third"))
    call(channel, "Admin/CreateTopic", pb.CreateTopicRequest(name="fourth", partitions=1))
    call(channel, "Admin/DeleteTopic", pb.DeleteTopicRequest(name="fourth"))


def test_max_batch_bytes_is_record_too_large(channel, topic):
    big = tidelog.build_batch([b"x" * 9000], timestamp=TS)
    result = produce(channel, [framing.encode_produce_request(1, topic, 0, big)])[0]
    assert result.error.code == RecordTooLargeError.code
    assert result.error.grpc_status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "8192" in result.error.message
    refused(
        channel,
        "Producer/ProduceRecords",
        pb.ProduceRecordsRequest(topic=topic, partition=0, records=[pb.Record(value=b"x" * 9000)]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        RecordTooLargeError,
    )


def test_max_message_bytes_is_refused_by_grpc_with_resource_exhausted(channel, topic):
    with pytest.raises(grpc.RpcError) as info:
        produce(channel, [framing.encode_produce_request(1, topic, 0, b"\x00" * 131072)])
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "131072" in info.value.details()


def test_max_fetch_bytes_and_max_subscribe_message_bytes_cut_responses_to_whole_batches(channel, topic):
    batch = tidelog.build_batch([b"r" * 3000], timestamp=TS)  # ~3 KiB each
    results = produce(channel, [framing.encode_produce_request(i, topic, 1, batch) for i in range(12)])
    assert not any(r.HasField("error") for r in results)
    reply = pb.FetchResponse.FromString(
        call(channel, "Consumer/Fetch", pb.FetchRequest(topic=topic, partition=1, offset=0, max_bytes=2**31 - 1))
    )
    assert len(reply.batches) == 5 * len(batch) <= 16384 and reply.next_offset == 5  # 6 would pass 16 KiB
    stub = channel.stream_stream(
        "/tidelog.v1.Consumer/Subscribe",
        request_serializer=pb.SubscribeRequest.SerializeToString,
        response_deserializer=pb.SubscribeResponse.FromString,
    )
    start = pb.SubscribeRequest(
        start=pb.SubscribeStart(
            topic=topic, partition=1, position=pb.Position(offset=0), credit_bytes=1 << 30, max_message_bytes=2**31 - 1
        )
    )
    done = threading.Event()

    def requests():  # the subscription lasts while the request stream is open
        yield start
        done.wait(10)

    responses = stub(requests(), timeout=10)
    sizes = []
    for resp in responses:
        sizes.append(len(resp.batches))
        if resp.next_offset == 12:
            break
    done.set()
    responses.cancel()
    assert sum(sizes) == 12 * len(batch) and max(sizes) == 2 * len(batch) <= 8192


def test_a_huge_credit_grant_is_cut_to_max_subscribe_credit_bytes(channel, topic):
    """A subscriber grants 1 TiB and stops reading: the broker sends it no more than the cap (plus the
    one whole batch a fetch may overshoot by). Then the subscriber seeks to the last batch and grants a
    little more: everything before that batch's response is all the 1 TiB grant got."""
    batch = tidelog.build_batch([b"c" * 3000], timestamp=TS)
    results = produce(channel, [framing.encode_produce_request(i, topic, 3, batch) for i in range(100)])
    assert not any(r.HasField("error") for r in results)
    stub = channel.stream_stream(
        "/tidelog.v1.Consumer/Subscribe",
        request_serializer=pb.SubscribeRequest.SerializeToString,
        response_deserializer=pb.SubscribeResponse.FromString,
    )
    stalled, done = threading.Event(), threading.Event()

    def requests():
        yield pb.SubscribeRequest(
            start=pb.SubscribeStart(topic=topic, partition=3, position=pb.Position(offset=0), credit_bytes=1 << 40)
        )
        stalled.wait(30)
        yield pb.SubscribeRequest(seek=pb.Position(offset=99))
        yield pb.SubscribeRequest(credit_bytes=2 * len(batch))  # past the overshoot: credit turns positive
        done.wait(30)

    responses = stub(requests(), timeout=30)
    stalled.wait(1.0)  # not reading: gives a broker that ignored the cap the time to send far past it
    stalled.set()
    before_seek = 0
    for resp in responses:
        if resp.next_offset == 100:  # the seeked-to last batch
            break
        before_seek += len(resp.batches)
    done.set()
    responses.cancel()
    assert 65536 <= before_seek <= 65536 + len(batch), before_seek


def test_max_inflight_bytes_per_stream_holds_reading_back_without_losing_or_refusing(channel, topic):
    # 40 requests of ~20 KiB on one stream: 2.5 MiB through a 64 KiB read-ahead budget; and one
    # request larger than the whole budget still passes on its own.
    batch = tidelog.build_batch([b"f" * 6000], timestamp=TS)
    requests = [framing.encode_produce_request(i, topic, 2, batch * 3) for i in range(40)]
    requests.append(framing.encode_produce_request(40, topic, 2, batch * 12))  # ~72 KiB > 64 KiB
    results = produce(channel, requests)
    assert [r.sequence for r in results] == list(range(41))
    assert not any(r.HasField("error") for r in results)
    assert results[-1].last_offset == 40 * 3 + 12 - 1


class _Peer:
    """The one thing ProduceService asks of a call's context: which connection it came on."""

    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


def test_max_inflight_bytes_bounds_the_read_ahead_of_all_streams_together_and_streams_give_it_back():
    """Four streams whose appends are held back: together they read no more than the shared budget
    (plus one message each past their last full one), and every byte comes back when they end."""
    import asyncio
    from types import SimpleNamespace

    from tidelog.server.produce_service import ProduceService
    from tidelog.values import ProduceResult

    batch = tidelog.build_batch([b"s" * 4000], timestamp=TS)
    size = len(framing.encode_produce_request(0, "t", 0, batch))
    limit = 10 * size

    async def scenario():
        gate = asyncio.Event()

        async def append_many(requests):
            await gate.wait()  # a slow disk: nothing is acknowledged until the gate opens
            return [ProduceResult(t, p, 0, 0) for t, p, _ in requests]

        service = ProduceService(
            SimpleNamespace(append_many=append_many),
            ServerConfig(max_inflight_bytes=limit, max_inflight_bytes_per_stream=1 << 30),
        )
        pulled = [0] * 4

        async def requests(stream):
            for i in range(50):
                pulled[stream] += 1
                yield framing.encode_produce_request(i, "t", stream, batch)

        async def drain(stream):
            return [
                r
                async for resp in service.produce(requests(stream), _Peer(f"ipv4:127.0.0.1:{stream}"))
                for r in resp.results
            ]

        tasks = [asyncio.create_task(drain(s)) for s in range(4)]
        for _ in range(50):
            await asyncio.sleep(0)  # let every stream read as far as the budget allows
        held = service.inflight_bytes
        read = sum(pulled)
        gate.set()
        results = await asyncio.gather(*tasks)
        return held, read, results, service.inflight_bytes

    held, read, results, after = asyncio.run(scenario())
    assert held <= limit and read <= 10 + 4 * 2, (held, read)
    assert [len(r) for r in results] == [50] * 4 and after == 0


def test_max_inflight_bytes_per_connection_holds_back_one_connection_and_not_another():
    """Three streams of one connection whose appends are held back read no more than the connection's
    budget (plus one message each), while a stream of another connection reads all it sends; every
    byte comes back to both connections and the server when the streams end."""
    import asyncio
    from types import SimpleNamespace

    from tidelog.server.admission import Connection
    from tidelog.server.produce_service import ProduceService
    from tidelog.values import ProduceResult

    batch = tidelog.build_batch([b"c" * 4000], timestamp=TS)
    size = len(framing.encode_produce_request(0, "t", 0, batch))
    crowded, other = Connection("ipv4:127.0.0.1:1", 5 * size), Connection("ipv4:127.0.0.1:2", 5 * size)
    connections = {c.peer: c for c in (crowded, other)}

    async def scenario():
        held_back = asyncio.Event()

        async def append_many(requests):
            if any(p == 0 for _, p, _ in requests):  # partition 0 is the crowded connection's: a slow disk
                await held_back.wait()
            return [ProduceResult(t, p, 0, 0) for t, p, _ in requests]

        service = ProduceService(
            SimpleNamespace(append_many=append_many),
            ServerConfig(max_inflight_bytes_per_stream=1 << 30),
            connections.get,
        )
        pulled = [0] * 4

        async def requests(stream, partition):
            for i in range(30):
                pulled[stream] += 1
                yield framing.encode_produce_request(i, "t", partition, batch)

        async def drain(stream, peer, partition):
            return [r async for resp in service.produce(requests(stream, partition), _Peer(peer)) for r in resp.results]

        crowd = [asyncio.create_task(drain(s, crowded.peer, 0)) for s in range(3)]
        alone = await asyncio.wait_for(drain(3, other.peer, 1), 30)  # not held back by the crowded connection
        for _ in range(50):
            await asyncio.sleep(0)
        held, read = crowded.produce.used, sum(pulled[:3])
        held_back.set()
        results = await asyncio.gather(*crowd)
        return alone, held, read, results, service.inflight_bytes

    alone, held, read, results, after = asyncio.run(scenario())
    assert len(alone) == 30
    assert held <= 5 * size and read <= 5 + 3 * 2, (held, read)
    assert [len(r) for r in results] == [30] * 3
    assert crowded.produce.used == other.produce.used == after == 0


# -- connections and concurrent RPCs ------------------------------------------------------------


def _server_with(tmp_path_factory, name: str, settings: str):
    """A server configured by a TOML snippet; stopped cleanly at the end of the module."""
    root = tmp_path_factory.mktemp(name)
    path = root / "tidelog.toml"
    path.write_text(settings)
    srv = ServerProcess(str(root / "data"), "--config", str(path)).start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    yield from _server_with(tmp_path_factory, "crowded", "max_connections = 3\n")


def _health(channel, timeout=5):
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)


def _separate(target):
    """A channel with its own connection (no subchannel sharing between channels)."""
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def test_max_connections_closes_connections_past_the_limit_and_frees_slots_on_close(crowded):
    channels = [_separate(crowded.target) for _ in range(5)]
    try:
        answered = []
        for ch in channels:
            try:
                _health(ch)
                answered.append(True)
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
                answered.append(False)
        assert answered == [True, True, True, False, False]
        for ch in channels[:3]:
            _health(ch)  # the admitted connections keep working
        channels[0].close()
        late = _separate(crowded.target)  # a fresh channel: no reconnect backoff to wait out
        for _ in range(50):  # the server sees the close asynchronously
            try:
                _health(late, timeout=2)
                break
            except grpc.RpcError:
                late.close()
                late = _separate(crowded.target)
        else:
            pytest.fail("a closed connection never freed its slot")
        late.close()
    finally:
        for ch in channels:
            ch.close()


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    """Its own server: connection slots another test just freed are released asynchronously. No admin
    reserve: this is gRPC's own limit on every call."""
    yield from _server_with(tmp_path_factory, "busy", "max_concurrent_rpcs = 2\nadmin_reserved_rpcs = 0\n")


def test_max_concurrent_rpcs_refuses_the_call_past_the_limit(busy):
    with _separate(busy.target) as ch:
        call(ch, "Admin/CreateTopic", pb.CreateTopicRequest(name="quiet", partitions=1))
        stub = ch.unary_unary(
            "/tidelog.v1.Consumer/Fetch",
            request_serializer=pb.FetchRequest.SerializeToString,
            response_deserializer=None,
        )

        def long_poll():
            return stub.future(pb.FetchRequest(topic="quiet", partition=0, offset=0, max_wait_ms=29_000), timeout=60)

        polls = [long_poll(), long_poll()]
        started = threading.Event()
        deadline = time.monotonic() + 25  # well inside the polls' wait, however loaded the machine is
        while time.monotonic() < deadline:
            for i, poll in enumerate(polls):
                # the server releases a finished call's slot a moment after it answered, so a poll sent
                # right after CreateTopic may itself have been the call past the limit: send it again
                if (
                    poll.done()
                    and poll.exception() is not None
                    and poll.exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                ):
                    polls[i] = long_poll()
            try:
                _health(ch)
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
                if not any(p.done() for p in polls):  # both long polls hold the two slots
                    started.set()
                    break
            time.sleep(0.02)
        assert started.is_set(), (
            f"a third concurrent call was served (polls done: {[p.done() for p in polls]}, "
            f"{[p.exception() for p in polls if p.done()]})"
        )
        assert not any(p.done() for p in polls)  # the two admitted calls are still waiting
        for poll in polls:
            poll.cancel()  # cancelled calls free their slots
        for _ in range(100):
            try:
                assert _health(ch).status == health_pb2.HealthCheckResponse.SERVING
                break
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
                time.sleep(0.05)  # the server notices the cancellations asynchronously
        else:
            pytest.fail("cancelled calls never freed their slots")


def test_running_out_of_file_descriptors_is_a_clear_retriable_error_that_leaves_nothing_behind(tmp_path):
    """A topic with more partitions than the open-file limit allows: TooManyOpenFilesError
    (RESOURCE_EXHAUSTED on the wire), no partition directory left, and the engine still works."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, resource
        from tidelog import Engine
        from tidelog.errors import TooManyOpenFilesError
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        with Engine.open({str(tmp_path / "data")!r}) as eng:
            try:
                eng.create_topic("wide", 40)
            except TooManyOpenFilesError as exc:
                assert "ulimit" in exc.message and exc.retriable, exc.message
            else:
                raise SystemExit("created 40 partitions within 64 descriptors")
            assert not [d for d in os.listdir(eng.path) if d.startswith("wide-")], os.listdir(eng.path)
            eng.create_topic("narrow", 2)
            eng.produce("narrow", [b"ok"], partition=1)
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "OK", out.stdout + out.stderr


# -- per connection, and the admin reserve -------------------------------------------------------

HOLD_SUBSCRIPTIONS = r"""
import sys, threading, grpc
from tidelog.v1 import tidelog_pb2 as pb
target, connections, each = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def hold():
    yield pb.SubscribeRequest(start=pb.SubscribeStart(topic="shared", partition=0, credit_bytes=1 << 20,
                                                      position=pb.Position(offset=0)))
    threading.Event().wait()
held = []
for _ in range(connections):
    ch = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
    for _ in range(each):
        stream = ch.stream_stream("/tidelog.v1.Consumer/Subscribe", request_serializer=pb.SubscribeRequest.SerializeToString,
                                  response_deserializer=None)(hold())
        next(stream)  # admitted: the first record arrived
        held.append((ch, stream))
print("held", flush=True)
threading.Event().wait()
"""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """20 calls at once, 5 of them kept for administration (15 for data), 6 data calls per connection."""
    root = tmp_path_factory.mktemp("guarded")
    path = root / "tidelog.toml"
    path.write_text("max_concurrent_rpcs = 20\nadmin_reserved_rpcs = 5\nmax_concurrent_rpcs_per_connection = 6\n")
    srv = ServerProcess(str(root / "data"), "--config", str(path)).start()
    with _separate(srv.target) as ch:
        call(ch, "Admin/CreateTopic", pb.CreateTopicRequest(name="shared", partitions=1))
        assert not produce(
            ch, [framing.encode_produce_request(0, "shared", 0, tidelog.build_batch([b"first"], timestamp=TS))]
        )[0].HasField("error")
    yield srv
    assert srv.stop() == 0, srv.log()
    assert "Traceback" not in srv.log(), srv.log()


class _Subscriptions:
    """Subscribe streams held open on one channel until closed."""

    def __init__(self, channel) -> None:
        self.stub = channel.stream_stream(
            "/tidelog.v1.Consumer/Subscribe",
            request_serializer=pb.SubscribeRequest.SerializeToString,
            response_deserializer=pb.SubscribeResponse.FromString,
        )
        self.streams: list = []
        self._closed = threading.Event()

    def open(self):
        """A new subscription: its first response when admitted, else the RpcError it ended with."""

        def requests():
            yield pb.SubscribeRequest(
                start=pb.SubscribeStart(
                    topic="shared", partition=0, credit_bytes=1 << 20, position=pb.Position(offset=0)
                )
            )
            self._closed.wait(60)

        stream = self.stub(requests(), timeout=60)
        try:
            first = next(stream)
        except grpc.RpcError as err:
            return err
        self.streams.append(stream)
        return first

    def close(self) -> None:
        self._closed.set()
        for stream in self.streams:
            stream.cancel()


def _assert_limit(err, setting: str) -> None:
    assert isinstance(err, grpc.RpcError), f"admitted past {setting}"
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    assert dict(err.trailing_metadata())[CODE_KEY] == str(ResourceLimitError.code)
    assert setting in err.details(), err.details()


def _others_are_served(target) -> None:
    """A second client's produce, admin call, group call and health check all succeed."""
    with _separate(target) as ch:
        assert not produce(
            ch, [framing.encode_produce_request(1, "shared", 0, tidelog.build_batch([b"other"], timestamp=TS))]
        )[0].HasField("error")
        assert "shared" in pb.ListTopicsResponse.FromString(call(ch, "Admin/ListTopics", pb.ListTopicsRequest())).topics
        call(ch, "Groups/ListGroups", pb.ListGroupsRequest())
        assert _health(ch).status == health_pb2.HealthCheckResponse.SERVING


def test_one_connection_past_its_limit_is_refused_while_other_clients_are_served(guarded):
    with _separate(guarded.target) as greedy:
        subs = _Subscriptions(greedy)
        try:
            assert all(isinstance(subs.open(), pb.SubscribeResponse) for _ in range(6))
            for _ in range(3):
                _assert_limit(subs.open(), "max_concurrent_rpcs_per_connection")
            _others_are_served(guarded.target)
            with _separate(guarded.target) as other:  # another connection has its own count
                others = _Subscriptions(other)
                assert isinstance(others.open(), pb.SubscribeResponse)
                others.close()
            subs.streams.pop().cancel()  # a stream that ends gives its slot back
            for _ in range(100):
                reopened = subs.open()
                if isinstance(reopened, pb.SubscribeResponse):
                    break
                _assert_limit(reopened, "max_concurrent_rpcs_per_connection")
                time.sleep(0.05)  # the server sees the cancellation asynchronously
            else:
                pytest.fail("a cancelled stream never gave its slot back")
        finally:
            subs.close()


def test_data_calls_filling_the_server_leave_administration_working_and_a_killed_client_frees_them(guarded):
    import subprocess
    import sys

    from .test_metrics import scrape

    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_SUBSCRIPTIONS, guarded.target, "3", "5"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "held"  # 15 streams: every data-path slot
        with _separate(guarded.target) as ch:
            subs = _Subscriptions(ch)
            try:
                _assert_limit(subs.open(), "admin_reserved_rpcs")
                with pytest.raises(grpc.RpcError) as info:
                    produce(
                        ch,
                        [
                            framing.encode_produce_request(
                                1, "shared", 0, tidelog.build_batch([b"refused"], timestamp=TS)
                            )
                        ],
                    )
                _assert_limit(info.value, "admin_reserved_rpcs")
                # the reserve: administration, groups and health still answer
                call(ch, "Admin/DescribeTopic", pb.DescribeTopicRequest(name="shared"))
                call(ch, "Groups/ListGroups", pb.ListGroupsRequest())
                assert _health(ch).status == health_pb2.HealthCheckResponse.SERVING
                refused = scrape(guarded.metrics_port)
                assert (
                    refused[
                        (
                            "tidelog_rpcs_refused_total",
                            (("method", "tidelog.v1.Consumer/Subscribe"), ("setting", "admin_reserved_rpcs")),
                        )
                    ]
                    >= 1
                )
                child.kill()  # SIGKILL: its connections drop and the server cancels their calls
                child.wait()
                for _ in range(200):
                    admitted = subs.open()
                    if isinstance(admitted, pb.SubscribeResponse):
                        break
                    _assert_limit(admitted, "admin_reserved_rpcs")
                    time.sleep(0.05)
                else:
                    pytest.fail("the killed client's calls never gave their slots back")
                _others_are_served(guarded.target)
            finally:
                subs.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
