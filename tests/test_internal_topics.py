"""Internal topics ("__...") hold the broker's own state: only the broker writes them, and their replay
survives a record that is not what the broker writes."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import pytest

from tidelog import Engine
from tidelog.client import Admin, Consumer, Producer
from tidelog.codec import batch as batch_codec
from tidelog.errors import InvalidTopicError
from tidelog.groups.coordinator import GroupCoordinator
from tidelog.groups.offset_store import OFFSETS_TOPIC, OffsetStore
from tidelog.v1 import tidelog_pb2 as pb
from tidelog.wire import framing
from tidelog.wire.statuses import CODE_KEY

from .server_process import ServerProcess, config_file


@pytest.fixture
def engine(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("orders", 2)
        OffsetStore(eng)  # creates the offsets topic, as the broker does at start
        yield eng


def test_the_engine_refuses_every_client_write_to_an_internal_topic(engine):
    before = engine.list_offsets(OFFSETS_TOPIC, 0).log_end
    batch = batch_codec.build_batch([b"{}"], keys=[b"not json"], timestamp=1)
    with pytest.raises(InvalidTopicError, match="internal"):
        engine.produce(OFFSETS_TOPIC, [b"{}"], keys=[b"not json"], partition=0)
    with pytest.raises(InvalidTopicError, match="internal"):
        engine.append(OFFSETS_TOPIC, 0, batch)
    ok, refused = engine.append_many([("orders", 0, batch), (OFFSETS_TOPIC, 0, batch)])
    assert ok.base_offset == 0 and isinstance(refused, InvalidTopicError)
    with pytest.raises(InvalidTopicError, match="internal"):
        engine.delete_topic(OFFSETS_TOPIC)
    with pytest.raises(InvalidTopicError, match="internal"):
        engine.create_topic("__mine", 1)
    assert engine.list_offsets(OFFSETS_TOPIC, 0).log_end == before
    assert engine.list_topics(include_internal=True) == [OFFSETS_TOPIC, "orders"]


def test_the_broker_writes_its_internal_topics_through_its_own_path(engine):
    engine.create_topic("__broker_state", 1, internal=True)
    result = engine.produce("__broker_state", [b"v"], partition=0, internal=True)
    assert result[0].base_offset == 0
    assert [r.value for r in engine.fetch("__broker_state", 0, 0)] == [b"v"]


def call(channel, method, request, response_type=None):
    stub = channel.unary_unary(
        f"/tidelog.v1.{method}",
        request_serializer=type(request).SerializeToString,
        response_deserializer=response_type.FromString if response_type else None,
    )
    return stub(request, timeout=10)


def refused(channel, method, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(channel, method, request)
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert dict(err.trailing_metadata())[CODE_KEY] == str(InvalidTopicError.code)
    assert "internal" in err.details()
    return err


def wait_for_partitions(consumer, timeout_s: float = 30.0) -> None:
    """Poll until the member holds its partitions (a new group waits group_initial_rebalance_delay_ms)."""
    deadline = time.monotonic() + timeout_s
    while not consumer.assignment():
        assert time.monotonic() < deadline, "the member got no partitions"
        consumer.poll(0.1)


def test_clients_cannot_write_create_delete_or_commit_internal_topics_and_the_broker_still_restarts(tmp_path):
    srv = ServerProcess(str(tmp_path / "data"), "--config", config_file(tmp_path)).start()
    try:
        with Admin(srv.target) as admin:
            admin.create_topic("orders", 2)
        with Producer(srv.target) as p:
            p.send("orders", b"x", partition=0).result(timeout=10)
        c = Consumer(srv.target, group_id="billing", topics=["orders"], auto_commit=False)
        wait_for_partitions(c)
        c.commit({("orders", 0): 1})
        c.close()
        with grpc.insecure_channel(srv.target) as channel:
            refused(
                channel,
                "Producer/ProduceRecords",
                pb.ProduceRecordsRequest(
                    topic=OFFSETS_TOPIC, partition=0, records=[pb.Record(key=b"not json", value=b"{}")]
                ),
            )
            stream = channel.stream_stream(
                "/tidelog.v1.Producer/Produce",
                request_serializer=None,
                response_deserializer=pb.ProduceResponse.FromString,
            )
            batch = batch_codec.build_batch([b"{}"], keys=[b"x"], timestamp=1)
            raw = framing.encode_produce_request(1, OFFSETS_TOPIC, 0, batch)
            results = [r for resp in stream(iter([raw]), timeout=10) for r in resp.results]
            assert len(results) == 1 and results[0].error.code == InvalidTopicError.code
            assert "internal" in results[0].error.message
            refused(channel, "Admin/CreateTopic", pb.CreateTopicRequest(name="__consumer_offsets_2", partitions=1))
            refused(channel, "Admin/DeleteTopic", pb.DeleteTopicRequest(name=OFFSETS_TOPIC))
            refused(
                channel,
                "Groups/CommitOffsets",
                pb.CommitOffsetsRequest(
                    group_id="other", offsets=[pb.PartitionOffset(topic=OFFSETS_TOPIC, partition=0, offset=0)]
                ),
            )
        srv.kill()
        srv.start()  # what a single bad produce used to prevent, on every later start
        with Admin(srv.target) as admin:
            assert admin.committed_offsets("billing") == {("orders", 0): 1}
            assert "other" not in admin.list_groups()
    finally:
        srv.stop()


def test_a_broker_with_a_malformed_offsets_record_starts_keeps_the_rest_and_check_reports_it(tmp_path):
    data = str(tmp_path / "data")
    srv = ServerProcess(data, "--config", config_file(tmp_path)).start()
    try:
        with Admin(srv.target) as admin:
            admin.create_topic("orders", 2)
        with Producer(srv.target) as p:
            for i in range(4):
                p.send("orders", b"x", partition=i % 2).result(timeout=10)
        c = Consumer(srv.target, group_id="billing", topics=["orders"], auto_commit=False)
        wait_for_partitions(c)
        c.commit({("orders", 0): 2, ("orders", 1): 1})
        c.close()
        assert srv.stop() == 0
        with Engine.open(data) as eng:  # a bad record straight into the topic, as only a bug could write it
            bad = eng.produce(OFFSETS_TOPIC, [b"{}"], keys=[b"not json"], partition=0, internal=True)[0].base_offset
        srv.start()
        with Admin(srv.target) as admin:
            assert admin.committed_offsets("billing") == {("orders", 0): 2, ("orders", 1): 1}
        assert f"malformed record of {OFFSETS_TOPIC} at offset {bad}" in srv.log()
        check = subprocess.run(
            [sys.executable, "-m", "tidelog", "check", "--data-dir", data, "--topic", OFFSETS_TOPIC],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 1, check.stdout + check.stderr
        assert f"record at offset {bad} is not group state" in check.stdout
        assert "the key is not JSON" in check.stdout
    finally:
        srv.stop()


def test_check_passes_a_healthy_offsets_topic_with_commits_and_membership(data_dir, clock):
    from tidelog.examine import check

    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("orders", 2)
        eng.produce("orders", [b"x"] * 3, partition=0)
        coord = GroupCoordinator(eng, clock=clock)
        a = coord.heartbeat("g", coord.join("g", ["orders"]).member_id, 1, [])
        coord.commit("g", a.member_id, a.generation, {("orders", 0): 3})
        coord.leave("g", a.member_id)
        coord.delete_group("g")
    results = {r.topic: r for r in check(data_dir)}
    assert results[OFFSETS_TOPIC].records >= 4 and results[OFFSETS_TOPIC].problems == []
