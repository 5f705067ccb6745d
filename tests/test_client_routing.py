"""The client's routing: bootstrap lists, Metadata, acks, and following a partition's leader.

Against a real single broker, and a fake "wrong" broker (in this process) that claims to be in a
cluster, leads the partition at first, then answers Produce and Subscribe with NOT_LEADER naming the
real broker: the clients must go there and carry on without losing, repeating or reordering records.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time

import grpc
import pytest

from tidelog.client import Admin, AsyncConsumer, Consumer, GroupConsumer, PartitionConsumer, Producer
from tidelog.client.metadata import Metadata
from tidelog.errors import InvalidConfigError, NotLeaderError, UnknownTopicError
from tidelog.v1 import tidelog_pb2 as pb
from tidelog.wire import framing, methods, statuses

from .server_process import ServerProcess, config_file, refused_address


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("routing")
    srv = ServerProcess(str(directory / "data"), "--config", config_file(directory)).start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture
def topic(server, request):
    name = request.node.name.replace("[", "-").replace("]", "")[:60]
    with Admin(server.target) as a:
        a.create_topic(name, 2)
    return name


class WrongBroker:
    """Claims a cluster of itself (id 1) and the real broker (id 2); leads every partition until it has
    refused something, then points at the real broker. `produce`: "not_leader", "ok" or "silent"."""

    def __init__(self, real: str, produce: str = "not_leader") -> None:
        self.real = real
        self.produce_mode = produce
        self.moved = False
        self.acks: list[int] = []
        self._server = grpc.server(concurrent.futures.ThreadPoolExecutor(8))
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "tidelog.v1.Admin",
                    {
                        "Metadata": grpc.unary_unary_rpc_method_handler(
                            lambda request, context: self._metadata(request, context),  # replaceable
                            request_deserializer=pb.MetadataRequest.FromString,
                            response_serializer=pb.MetadataResponse.SerializeToString,
                        )
                    },
                ),
                grpc.method_handlers_generic_handler(
                    "tidelog.v1.Producer",
                    {
                        "Produce": grpc.stream_stream_rpc_method_handler(
                            self._produce,
                            request_deserializer=None,
                            response_serializer=pb.ProduceResponse.SerializeToString,
                        )
                    },
                ),
                grpc.method_handlers_generic_handler(
                    "tidelog.v1.Consumer",
                    {
                        "Subscribe": grpc.stream_stream_rpc_method_handler(
                            self._subscribe,
                            request_deserializer=pb.SubscribeRequest.FromString,
                            response_serializer=None,
                        )
                    },
                ),
            )
        )
        self.target = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()

    def stop(self) -> None:
        self._server.stop(0)

    def _not_leader(self) -> NotLeaderError:
        self.moved = True
        return NotLeaderError("not the leader (fake)", leader_id=2, leader_address=self.real)

    def _metadata(self, request, context):
        leader = (2, self.real) if self.moved else (1, self.target)
        response = pb.MetadataResponse(
            clustered=True,
            controller_id=1,
            brokers=[
                pb.ClusterBroker(broker_id=1, address=self.target),
                pb.ClusterBroker(broker_id=2, address=self.real),
            ],
        )
        for name in request.topics:
            t = response.topics.add(name=name)
            for p in range(2):
                t.partitions.add(
                    partition=p, leader_id=leader[0], leader_address=leader[1], replicas=[1, 2], isr=[1, 2]
                )
        return response

    def _produce(self, requests, context):
        offsets: dict[tuple[str, int], int] = {}
        for raw in requests:
            view = framing.parse_produce_request(raw)
            self.acks.append(view.acks)
            if self.produce_mode == "silent":
                continue
            result = pb.ProduceResult(sequence=view.sequence, topic=view.topic, partition=view.partition)
            if self.produce_mode == "not_leader":
                result.error.CopyFrom(statuses.error_message(self._not_leader()))
            else:
                base = offsets.get((view.topic, view.partition), 0)
                count = int.from_bytes(bytes(view.batches[57:61]), "big")  # RecordBatch v2 record count
                result.base_offset, result.last_offset = base, base + count - 1
                offsets[(view.topic, view.partition)] = base + count
            yield pb.ProduceResponse(results=[result])

    def _subscribe(self, requests, context):
        """One response (the first batches at the position, as the real broker has them), then NOT_LEADER."""
        start = next(requests).start
        with grpc.insecure_channel(self.real) as channel:
            fetch = channel.unary_unary(
                methods.method("Consumer", "Fetch").path,
                request_serializer=pb.FetchRequest.SerializeToString,
                response_deserializer=pb.FetchResponse.FromString,
            )
            got = fetch(
                pb.FetchRequest(
                    topic=start.topic, partition=start.partition, offset=start.position.offset, max_bytes=1
                ),
                timeout=10,
            )
        yield framing.encode_subscribe_response(got.next_offset, got.high_watermark, got.log_start, got.batches)
        err = self._not_leader()
        context.set_trailing_metadata(statuses.trailing_metadata(err))
        context.abort(statuses.status_of(err), err.message)


@pytest.fixture
def wrong(server):
    brokers = []

    def start(produce: str = "not_leader") -> WrongBroker:
        b = WrongBroker(server.target, produce)
        brokers.append(b)
        return b

    yield start
    for b in brokers:
        b.stop()


def fill(target: str, topic: str, batches: int, per_batch: int = 5) -> list[bytes]:
    """Records in partition 0, in several batches."""
    values = []
    with Producer(target, linger_ms=0) as p:
        for b in range(batches):
            for i in range(per_batch):
                values.append(b"v%03d" % (b * per_batch + i))
                p.send(topic, values[-1], partition=0)
            p.flush()
    return values


def read_all(target: str, topic: str, n: int, **kwargs) -> list[bytes]:
    out = []
    with PartitionConsumer(target, topic, 0, 0, **kwargs) as c:
        deadline = time.monotonic() + 20
        while len(out) < n and time.monotonic() < deadline:
            out += [bytes(r.value) for r in c.poll(0.5)]
    return out


# -- bootstrap lists ---------------------------------------------------------------------------------


def test_a_bootstrap_list_whose_first_broker_is_down_still_works(server, topic):
    with refused_address() as dead:
        targets = f"{dead},{server.target}"
        with Admin(targets) as a:
            assert topic in a.list_topics()
            assert a.list_offsets(topic, 0).log_end == 0
        with Producer(targets) as p:
            futures = [p.send(topic, b"x%d" % i, key=b"k") for i in range(10)]
            futures += [p.send(topic, b"y", partition=0)]
            p.flush()
        assert all(f.exception() is None for f in futures)
        keyed = futures[0].result().partition
        with PartitionConsumer(targets, topic, keyed, 0) as c:
            got = []
            while len(got) < 10:
                got += [bytes(r.value) for r in c.poll(5)]
        assert got[:10] == [b"x%d" % i for i in range(10)]

        async def read_async():
            async with AsyncConsumer(targets, topic, keyed, 0) as c:
                out = []
                async for rec in c:
                    out.append(bytes(rec.value))
                    if len(out) == 10:
                        return out

        assert asyncio.run(asyncio.wait_for(read_async(), 20)) == got[:10]
        member = Consumer(targets, group_id=f"g-{topic}", topics=[topic], auto_commit=False)
        assert isinstance(member, GroupConsumer)
        try:
            seen = []
            deadline = time.monotonic() + 20
            while len(seen) < 11 and time.monotonic() < deadline:
                seen += member.poll(0.5)
            assert sorted(bytes(r.value) for r in seen) == sorted([b"x%d" % i for i in range(10)] + [b"y"])
            member.commit()
        finally:
            member.close()


def test_a_list_of_only_dead_brokers_fails_with_broker_unavailable():
    from tidelog.errors import BrokerUnavailableError

    with refused_address() as a, refused_address() as b:
        with Admin(f"{a},{b}", timeout_s=5) as admin, pytest.raises(BrokerUnavailableError):
            admin.list_topics()


# -- metadata ----------------------------------------------------------------------------------------


def test_metadata_of_a_single_broker_routes_everything_to_the_bootstrap_address(server, topic):
    with Admin(server.target) as a:
        meta = a.metadata([topic])
        assert meta.clustered is False
        assert [t.name for t in meta.topics] == [topic]
        assert [p.partition for p in meta.topics[0].partitions] == [0, 1]
        assert all(p.leader_id is None for p in meta.topics[0].partitions)
        assert topic in [t.name for t in a.metadata().topics]
        with pytest.raises(UnknownTopicError):
            a.metadata(["no-such-topic"])
        desc = a.describe(topic)["partitions"][0]
        assert (desc.leader_id, desc.replicas, desc.isr) == (None, (), ())
    m = Metadata(f" {server.target} ,")
    try:
        assert m.partitions(topic) == 2
        # the broker may advertise 0.0.0.0:port: a single broker is always reached where we found it
        assert m.cached_leader(topic, 1) == (True, server.target)
        assert m.leader("another-topic", 0) == server.target
    finally:
        m.close()


def test_create_topic_takes_a_replication_factor_and_min_insync_replicas(server):
    with Admin(server.target) as a:
        a.create_topic("replicated", 1, replication_factor=1, min_insync_replicas=1)
        assert a.describe("replicated")["config"]["min_insync_replicas"] == "1"


# -- acks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "acks,code",
    [(None, pb.ACKS_DEFAULT), ("all", pb.ACKS_ALL), (-1, pb.ACKS_ALL), (1, pb.ACKS_LEADER), ("leader", pb.ACKS_LEADER)],
)
def test_acks_travel_with_every_request(wrong, acks, code):
    fake = wrong("ok")
    with Producer(fake.target, acks=acks) as p:
        f = p.send("t", b"v", partition=1)
        assert f.result(10).offset == 0
    assert fake.acks == [code]


def test_acks_0_resolves_once_written_without_waiting_for_an_answer(wrong):
    fake = wrong("silent")
    with Producer(fake.target, acks=0, delivery_timeout_s=60) as p:
        futures = [p.send("t", b"v%d" % i, partition=0) for i in range(3)]
        assert [f.result(5).offset for f in futures] == [-1, -1, -1]
        assert p.producer_id == -1  # nothing is resent: no sequences
    assert set(fake.acks) == {pb.ACKS_NONE}


@pytest.mark.parametrize("acks", ["most", 2, True, "2"])
def test_an_unknown_acks_value_is_refused(acks):
    with pytest.raises(InvalidConfigError):
        Producer("localhost:1", acks=acks)


def test_acks_all_and_1_against_a_single_broker(server, topic):
    for acks in ("all", 1, 0):
        with Producer(server.target, acks=acks) as p:
            f = p.send(topic, b"a", partition=1)
            p.flush()
            assert f.exception() is None


# -- following the leader ------------------------------------------------------------------------------


def test_the_producer_follows_not_leader_to_the_named_broker(server, topic, wrong):
    fake = wrong("not_leader")
    with Producer(fake.target, linger_ms=1, batch_bytes=64) as p:
        futures = [p.send(topic, b"r%03d" % i, partition=0) for i in range(40)]
        p.flush(30)
        assert [f.result(0).offset for f in futures] == list(range(40))
        assert p.reconnects >= 1
    assert fake.acks, "the producer never asked the broker it bootstrapped with"
    assert read_all(server.target, topic, 40) == [b"r%03d" % i for i in range(40)]


def test_the_partition_consumer_resumes_at_the_new_leader_without_gaps_or_repeats(server, topic, wrong):
    values = fill(server.target, topic, 6)
    fake = wrong()
    got = read_all(fake.target, topic, len(values))
    assert fake.moved
    assert got == values


def test_the_async_consumer_resumes_at_the_new_leader_without_gaps_or_repeats(server, topic, wrong):
    values = fill(server.target, topic, 6)
    fake = wrong()

    async def read():
        out = []
        async with AsyncConsumer(fake.target, topic, 0, 0) as c:
            async for rec in c:
                out.append(bytes(rec.value))
                if len(out) == len(values):
                    return out

    assert asyncio.run(asyncio.wait_for(read(), 30)) == values
    assert fake.moved


def test_a_metadata_cache_follows_not_leader_and_unreachable_brokers(server):
    fake = WrongBroker(server.target)
    try:
        m = Metadata(fake.target)
        assert m.leader("t", 0) == fake.target and m.clustered
        m.not_leader("t", 0, NotLeaderError("moved", leader_id=2, leader_address="h:1"))
        assert m.cached_leader("t", 0) == (True, "h:1")
        m.unreachable("h:1")
        assert m.cached_leader("t", 0) == (False, None)
        fake.moved = True
        assert m.leader("t", 0) == server.target
        m.not_leader("t", 1, NotLeaderError("no leader named"))
        assert m.cached_leader("t", 1) == (False, None)
        m.close()
    finally:
        fake.stop()


def test_no_leader_right_now_is_retried_until_one_is_elected(server, topic):
    fake = WrongBroker(server.target)
    answer = fake._metadata
    calls = []

    def electing(request, context):  # the first answers name no leader: an election is under way
        calls.append(1)
        response = answer(request, context)
        if len(calls) <= 2:
            for t in response.topics:
                for p in t.partitions:
                    p.leader_id, p.leader_address = -1, ""
        return response

    fake._metadata = electing
    fake.moved = True
    try:
        with Admin(fake.target) as a:
            assert a.list_offsets(topic, 0).log_end == 0  # from the real broker, once it leads
    finally:
        fake.stop()
    assert len(calls) >= 3


def test_the_group_coordinator_is_the_first_reachable_bootstrap_broker(server, topic):
    values = fill(server.target, topic, 2)
    with refused_address() as dead:
        member = GroupConsumer(f"{dead},{server.target}", f"gc-{topic}", [topic], auto_commit=False)
        try:
            seen: list = []
            deadline = time.monotonic() + 20
            while len(seen) < len(values) and time.monotonic() < deadline:
                seen += member.poll(0.5)
            assert [bytes(r.value) for r in seen if r.partition == 0] == values
            member.commit()
        finally:
            member.close()
        with Admin(f"{dead},{server.target}") as a:
            assert a.committed_offsets(f"gc-{topic}")[(topic, 0)] == len(values)


# -- the command line ----------------------------------------------------------------------------------


def test_the_cli_takes_server_lists_replication_settings_and_acks(server):
    from .test_cli import one_error_line, tidelog

    with refused_address() as dead:
        s = f"--server={dead},{server.target}"
        out = tidelog("topics", "create", "cli-r", "--partitions", "2", "--replication-factor", "1", s)
        assert out.returncode == 0, out.stderr
        out = tidelog("topics", "create", "cli-m", "--min-insync-replicas", "1", s)
        assert out.returncode == 0, out.stderr
        out = tidelog("produce", "cli-r", "--acks", "1", "--partition", "1", s, input=b"a\nb\n")
        assert out.returncode == 0, out.stderr
        text = tidelog("topics", "describe", "cli-r", s).stdout.decode()
        assert all(word in text for word in ("leader", "epoch", "replicas", "isr")), text
        desc = json.loads(tidelog("topics", "describe", "cli-r", "--format", "json", s).stdout)
        assert desc["partitions"][1]["log_end"] == 2
        assert {"leader_id", "leader_epoch", "replicas", "isr"} <= set(desc["partitions"][0])
    bad = tidelog("topics", "create", "x", "--replication-factor", "1", "--min-insync-replicas", "2", s)
    assert bad.returncode == 2 and "min-insync-replicas" in one_error_line(bad)
    bad = tidelog("topics", "list", f"--server={server.target},,")
    assert bad.returncode == 2 and "--server" in one_error_line(bad)
    bad = tidelog("produce", "cli-r", "--acks", "2", f"--server={server.target}")
    assert bad.returncode == 2
    bad = tidelog("health", f"--server={server.target},{server.target}")
    assert bad.returncode == 2 and "one broker" in one_error_line(bad)
