"""Hostile and malformed input: the native decoder and a real server answer garbage with precise errors.

Two parts. The native codec and codec/batch.py are fuzzed directly (hypothesis): any bytes, any
bounds, any lying field raise only ValueError/OverflowError (native) or a TidelogError (codec),
never a crash or another exception. Then a real `tidelog serve` on a loopback port gets random
batches, lying lengths, bad offsets, oversize messages, hostile names, huge headers and malformed
protobuf bytes through raw gRPC stubs: each gets the documented status (and tidelog-error-code
trailer where the server sets one), nothing is appended, no file appears outside the data
directory, and the server keeps serving after every case.
"""

from __future__ import annotations

import os
import struct
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tidelog
from tidelog._native import batch_scan
from tidelog._native import record_batch as rb
from tidelog._native.checksum import crc32c
from tidelog.codec import batch as batch_codec
from tidelog.codec import compression
from tidelog.errors import (
    CorruptBatchError,
    InvalidPartitionError,
    InvalidRequestError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    TidelogError,
    UnknownTopicError,
    UnsupportedCompressionError,
)
from tidelog.v1 import tidelog_pb2 as pb
from tidelog.wire import framing
from tidelog.wire.statuses import CODE_KEY, LOG_END_KEY, LOG_START_KEY

from .server_process import ServerProcess

TS = 1_700_000_000_000
MAX_MESSAGE_BYTES = 256 * 1024  # the test server's max_message_bytes
MAX_BATCH_BYTES = 16 * 1024  # the test topic's max_batch_bytes
SERVER_FAULTS = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}


def recrc(batch: bytes | bytearray) -> bytes:
    """The batch with its CRC-32C recomputed, so a lie further in is what validation must catch."""
    out = bytearray(batch)
    struct.pack_into(">I", out, 17, crc32c(bytes(out[21:])))
    return bytes(out)


def good_batch(values=(b"ok",), **kwargs) -> bytes:
    return tidelog.build_batch(list(values), timestamp=TS, **kwargs)


# ==== the native decoder and codec/batch.py, without a server =====================================


@given(
    data=st.binary(max_size=300),
    pos=st.integers(-5, 400),
    end=st.integers(-5, 400),
    count=st.integers(-3, (1 << 31) - 1),
    base=st.integers(-(2**63), 2**63 - 1),
)
def test_native_decoders_raise_only_value_errors_on_any_bounds_and_bytes(data, pos, end, count, base):
    calls = [
        lambda: rb.read_header(data, pos),
        lambda: rb.decode_table(data, pos, end, count, base, TS),
        lambda: rb.records(data, data, pos, end, count, base, TS, 0, False),
        lambda: rb.crc_of_batch(data, pos, end),
        lambda: rb.validate_batches(data, compression.decompress, max(end, 0)),
        lambda: batch_scan.find_batch(data, pos, end, base),
        lambda: batch_scan.find_timestamp(data, pos, end, base),
        lambda: batch_scan.span_batches(data, pos, end, max(count, 0)),
    ]
    for call in calls:
        try:
            call()
        except (ValueError, OverflowError):
            pass


@given(data=st.binary(max_size=300), count=st.integers(0, (1 << 31) - 1))
def test_a_lying_record_count_never_allocates_for_records_that_cannot_fit(data, count):
    # A record takes at least 7 bytes: a count the section cannot hold is refused before the table
    # (one 40-byte row per record) is allocated, so a hostile header cannot ask for gigabytes.
    try:
        table = rb.decode_table(data, 0, len(data), count, 0, TS)
    except ValueError:
        return
    assert len(table) == count <= len(data) // 7


@st.composite
def lying_batches(draw):
    """A valid batch with one header field or byte changed, CRC recomputed or not."""
    values = draw(st.lists(st.binary(max_size=20), min_size=1, max_size=5))
    batch = bytearray(good_batch(values, compression_name=draw(st.sampled_from(["none", "lz4"]))))
    field = draw(st.sampled_from([(8, ">i"), (57, ">i"), (23, ">i"), (35, ">q"), (21, ">h"), (16, ">b"), None]))
    if field is None:
        pos = draw(st.integers(12, len(batch) - 1))
        batch[pos] ^= draw(st.integers(1, 255))
    else:
        offset, fmt = field
        bits = struct.calcsize(fmt) * 8
        struct.pack_into(fmt, batch, offset, draw(st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)))
    cut = draw(st.integers(0, len(batch)))
    batch = batch[:cut] if draw(st.booleans()) else batch
    return recrc(batch) if draw(st.booleans()) and len(batch) > 21 else bytes(batch)


@given(batch=lying_batches())
def test_lying_batches_raise_only_tidelog_errors_from_the_codec(batch):
    try:
        infos = batch_codec.validate(batch, MAX_BATCH_BYTES)
    except (CorruptBatchError, RecordTooLargeError):
        return
    for info in infos:  # whatever passed validation decodes completely
        view = batch_codec.BatchView(batch, info.pos)
        assert len(view.records()) == view.count == info.count


@given(batch=lying_batches(), pos=st.integers(0, 80))
def test_batch_views_over_lying_bytes_raise_only_corrupt_batch_or_unsupported_codec(batch, pos):
    try:
        for view in batch_codec.iter_batches(batch, min(pos, len(batch))):
            view.table()
            view.records(copy=False)
            view.crc_ok()
    except (CorruptBatchError, UnsupportedCompressionError):
        pass


def test_optional_atheris_fuzzer_runs_when_atheris_is_installed(tmp_path):
    pytest.importorskip("atheris", reason="atheris (optional: pip install atheris) drives tests/fuzz/fuzz_batch.py")
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "fuzz", "fuzz_batch.py")
    done = subprocess.run(
        [sys.executable, script, "-runs=3000", "-seed=1"], cwd=tmp_path, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]


# ==== a real server ==============================================================================


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    config = root / "tidelog.toml"
    config.write_text(f"max_message_bytes = {MAX_MESSAGE_BYTES}\nmax_fetch_wait_ms = 200\n")
    srv = ServerProcess(str(root / "data"), "--config", str(config)).start()
    srv.root = str(root)
    yield srv
    assert srv.stop() == 0, srv.log()
    assert "Traceback" not in srv.log(), srv.log()  # every case was answered, none crashed a handler


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.target) as ch:
        yield ch


@pytest.fixture(scope="module")
def topic(channel):
    """A two-partition topic holding one record in partition 0."""
    call(
        channel,
        "Admin/CreateTopic",
        pb.CreateTopicRequest(name="t", partitions=2, config={"max_batch_bytes": str(MAX_BATCH_BYTES)}),
    )
    acked = produce(channel, [framing.encode_produce_request(1, "t", 0, good_batch())])
    assert not acked[0].HasField("error")
    return "t"


def call(channel, method: str, request, response_type=None):
    """A unary call with raw bytes in (or a message) and the raw reply out; raises grpc.RpcError."""
    raw = request if isinstance(request, bytes) else request.SerializeToString()
    reply = channel.unary_unary(f"/tidelog.v1.{method}", request_serializer=None, response_deserializer=None)(
        raw, timeout=10
    )
    return response_type.FromString(reply) if response_type else reply


def refused(channel, method: str, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(channel, method, request)
    return info.value


def assert_refused(err: grpc.RpcError, status: grpc.StatusCode, error_cls=None) -> dict:
    assert err.code() == status, (err.code(), err.details())
    assert err.details(), "a refusal says why"
    meta = dict(err.trailing_metadata() or ())
    if error_cls is not None:
        assert meta.get(CODE_KEY) == str(error_cls.code), (meta, err.details())
    return meta


def produce(channel, raw_requests: list[bytes]) -> list:
    stub = channel.stream_stream(
        "/tidelog.v1.Producer/Produce", request_serializer=None, response_deserializer=pb.ProduceResponse.FromString
    )
    return [r for resp in stub(iter(raw_requests), timeout=10) for r in resp.results]


def log_ends(channel) -> dict:
    topics = call(channel, "Admin/ListTopics", pb.ListTopicsRequest(), pb.ListTopicsResponse).topics
    out = {}
    for name in topics:
        desc = call(channel, "Admin/DescribeTopic", pb.DescribeTopicRequest(name=name), pb.TopicDescription)
        out.update({(name, p.partition): p.log_end for p in desc.partitions})
    return out


def tree(root: str) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files}


def entries(server) -> set[str]:
    """What a request could create: entries of the test's root, the data dir and the topic metadata
    (files inside a partition directory come and go with background flushes)."""
    data = os.path.join(server.root, "data")
    meta = os.path.join(data, "meta", "topics")
    trash = os.path.join(data, ".trash")
    return (
        {f"root/{n}" for n in os.listdir(server.root)}
        | {f"data/{n}" for n in os.listdir(data)}
        | {f"meta/{n}" for n in os.listdir(meta)}
        | {f"trash/{n}" for n in (os.listdir(trash) if os.path.isdir(trash) else ())}
    ) - {"data/.trash"}


@pytest.fixture
def unharmed(server, channel, topic):
    """Around a test: nothing appended, no file created anywhere, and the server still serves."""
    before, files = log_ends(channel), entries(server)
    yield
    assert log_ends(channel) == before
    assert entries(server) == files
    assert_serving(channel)


def assert_serving(channel) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    reply = call(channel, "Consumer/Fetch", pb.FetchRequest(topic="t", partition=0, offset=0), pb.FetchResponse)
    assert [r.value for b in tidelog.iter_batches(reply.batches) for r in b.records()][:1] == [b"ok"]


def one_result(channel, raw: bytes):
    results = produce(channel, [raw])
    assert len(results) == 1
    return results[0]


def assert_in_stream_error(result, status: grpc.StatusCode, error_cls) -> None:
    assert result.HasField("error"), result
    assert result.error.grpc_status == status.value[0], result.error
    assert result.error.code == error_cls.code and result.error.message, result.error


# -- batches -------------------------------------------------------------------------------------


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_random_bytes_as_batches_are_refused_in_stream(channel, unharmed, data):
    result = one_result(channel, framing.encode_produce_request(7, "t", 0, data))
    assert result.sequence == 7
    assert_in_stream_error(result, grpc.StatusCode.INVALID_ARGUMENT, CorruptBatchError)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=lying_batches())
def test_lying_batches_are_refused_in_stream_and_append_nothing(channel, unharmed, batch):
    try:
        batch_codec.validate(batch, MAX_BATCH_BYTES)
    except TidelogError as exc:
        expected = exc
    else:
        return  # a change that kept the batch valid (e.g. a new timestamp with its CRC) may be appended
    status = (
        grpc.StatusCode.RESOURCE_EXHAUSTED
        if isinstance(expected, RecordTooLargeError)
        else grpc.StatusCode.INVALID_ARGUMENT
    )
    assert_in_stream_error(
        one_result(channel, framing.encode_produce_request(1, "t", 1, batch)), status, type(expected)
    )


def _with(batch: bytes, offset: int, fmt: str, value: int, fix_crc: bool = True) -> bytes:
    out = bytearray(batch)
    struct.pack_into(fmt, out, offset, value)
    return recrc(out) if fix_crc else bytes(out)


GOOD = good_batch([b"a", b"bb", b"ccc"])
LIES = {
    "wrong crc": _with(GOOD, 17, ">I", 0xDEADBEEF, fix_crc=False),
    "batch length over the payload": _with(GOOD, 8, ">i", len(GOOD)),
    "batch length under the payload": _with(GOOD, 8, ">i", len(GOOD) - 20),
    "batch length negative": _with(GOOD, 8, ">i", -1),
    "record count too high": _with(_with(GOOD, 57, ">i", 4), 23, ">i", 3),
    "record count too low": _with(_with(GOOD, 57, ">i", 2), 23, ">i", 1),
    "record count huge": _with(_with(GOOD, 57, ">i", 2**31 - 1), 23, ">i", 2**31 - 2),
    "last offset delta lies": _with(GOOD, 23, ">i", 7),
    "varint overflow in a record length": recrc(GOOD[:61] + b"\xff" * 6 + GOOD[67:]),
    "magic 1": _with(GOOD, 16, ">b", 1),
    "snappy codec": _with(GOOD, 21, ">h", 2),
    "transactional": _with(GOOD, 21, ">h", 0x10),
    "lz4 flag on plain records": _with(GOOD, 21, ">h", 3),
    "trailing garbage": GOOD + b"\x00" * 5,
    "two batches, the second torn": GOOD + GOOD[:40],
    "empty": b"",
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_each_kind_of_lying_batch_is_corrupt_batch_invalid_argument(channel, unharmed, lie):
    result = one_result(channel, framing.encode_produce_request(3, "t", 0, LIES[lie]))
    assert_in_stream_error(result, grpc.StatusCode.INVALID_ARGUMENT, CorruptBatchError)


def test_a_bad_request_in_a_stream_refuses_only_itself(channel, topic):
    before = log_ends(channel)[("t", 1)]
    results = produce(
        channel,
        [
            framing.encode_produce_request(1, "t", 1, LIES["wrong crc"]),
            framing.encode_produce_request(2, "t", 1, good_batch([b"kept"])),
            b"\xff\xff\xff",  # not a ProduceRequest at all
            framing.encode_produce_request(4, "t", 1, b"\x00" * 70),
        ],
    )
    assert [r.HasField("error") for r in results] == [True, False, True, True]
    assert results[1].base_offset == before
    assert results[2].error.code == InvalidRequestError.code
    assert log_ends(channel)[("t", 1)] == before + 1
    assert_serving(channel)


# -- sizes ---------------------------------------------------------------------------------------


def _batch_of_size(size: int) -> bytes:
    value_len = size - len(good_batch([b""]))
    for _ in range(4):  # varint widths move with the value's length
        batch = good_batch([b"v" * value_len])
        value_len += size - len(batch)
    assert len(batch) == size
    return batch


def test_a_batch_of_exactly_max_batch_bytes_is_accepted_and_one_byte_more_is_resource_exhausted(channel, topic):
    before = log_ends(channel)[("t", 1)]
    over = one_result(channel, framing.encode_produce_request(1, "t", 1, _batch_of_size(MAX_BATCH_BYTES + 1)))
    assert_in_stream_error(over, grpc.StatusCode.RESOURCE_EXHAUSTED, RecordTooLargeError)
    assert log_ends(channel)[("t", 1)] == before
    fits = one_result(channel, framing.encode_produce_request(2, "t", 1, _batch_of_size(MAX_BATCH_BYTES)))
    assert not fits.HasField("error") and fits.base_offset == before
    err = refused(
        channel,
        "Producer/ProduceRecords",
        pb.ProduceRecordsRequest(topic="t", partition=1, records=[pb.Record(value=b"x" * MAX_BATCH_BYTES)]),
    )
    assert_refused(err, grpc.StatusCode.RESOURCE_EXHAUSTED, RecordTooLargeError)
    assert log_ends(channel)[("t", 1)] == before + 1


def _request_of_size(size: int) -> bytes:
    batches_len = size - len(framing.encode_produce_request(1, "t", 1, b""))
    for _ in range(4):
        raw = framing.encode_produce_request(1, "t", 1, b"\x00" * batches_len)
        batches_len += size - len(raw)
    assert len(raw) == size
    return raw


def test_a_message_of_max_message_bytes_is_read_and_one_byte_more_is_refused_by_grpc(channel, unharmed):
    # Exactly at the limit the server reads the request (and refuses its zero bytes as a batch).
    result = one_result(channel, _request_of_size(MAX_MESSAGE_BYTES))
    assert_in_stream_error(result, grpc.StatusCode.INVALID_ARGUMENT, CorruptBatchError)
    with pytest.raises(grpc.RpcError) as info:
        produce(channel, [_request_of_size(MAX_MESSAGE_BYTES + 1)])
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # grpc's own limit: no tidelog trailer
    assert str(MAX_MESSAGE_BYTES) in info.value.details()
    err = refused(
        channel, "Admin/DescribeTopic", b"\x0a" + framing._varint(MAX_MESSAGE_BYTES) + b"a" * MAX_MESSAGE_BYTES
    )
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# -- offsets ------------------------------------------------------------------------------------

BAD_OFFSETS = [-1, -2, -(2**63), 2**63 - 1, 2]  # partition 0 holds offsets 0..0: log end is 1


@pytest.mark.parametrize("offset", BAD_OFFSETS)
@pytest.mark.parametrize("method", ["Consumer/Fetch", "Consumer/FetchRecords"])
def test_offsets_outside_the_log_are_out_of_range_with_the_valid_range(channel, unharmed, method, offset):
    err = refused(channel, method, pb.FetchRequest(topic="t", partition=0, offset=offset))
    meta = assert_refused(err, grpc.StatusCode.OUT_OF_RANGE, OffsetOutOfRangeError)
    assert (meta[LOG_START_KEY], meta[LOG_END_KEY]) == ("0", "1")


def _subscribe(channel, requests: list[pb.SubscribeRequest]):
    stub = channel.stream_stream(
        "/tidelog.v1.Consumer/Subscribe", request_serializer=None, response_deserializer=pb.SubscribeResponse.FromString
    )
    raw = [r if isinstance(r, bytes) else r.SerializeToString() for r in requests]
    return list(stub(iter(raw), timeout=10))


def _start(offset=None, **position) -> pb.SubscribeRequest:
    pos = pb.Position(offset=offset) if offset is not None else pb.Position(**position)
    return pb.SubscribeRequest(start=pb.SubscribeStart(topic="t", partition=0, position=pos, credit_bytes=1 << 20))


@pytest.mark.parametrize("offset", BAD_OFFSETS)
def test_subscribing_or_seeking_outside_the_log_is_out_of_range(channel, unharmed, offset):
    for requests in ([_start(offset)], [_start(0), pb.SubscribeRequest(seek=pb.Position(offset=offset))]):
        with pytest.raises(grpc.RpcError) as info:
            _subscribe(channel, requests)
        meta = assert_refused(info.value, grpc.StatusCode.OUT_OF_RANGE, OffsetOutOfRangeError)
        assert (meta[LOG_START_KEY], meta[LOG_END_KEY]) == ("0", "1")


@pytest.mark.parametrize("timestamp", [-1, -2, -(2**63)])
def test_negative_timestamps_are_invalid_not_read_as_latest_or_earliest(channel, unharmed, timestamp):
    err = refused(
        channel,
        "Admin/ListOffsets",
        pb.ListOffsetsRequest(topic="t", partition=0, position=pb.Position(timestamp_ms=timestamp)),
    )
    assert_refused(err, grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError)
    with pytest.raises(grpc.RpcError) as info:
        _subscribe(channel, [_start(timestamp_ms=timestamp)])
    assert_refused(info.value, grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError)


def test_a_huge_timestamp_finds_no_record_and_huge_fetch_sizes_are_capped(channel, unharmed):
    found = call(
        channel,
        "Admin/ListOffsets",
        pb.ListOffsetsRequest(topic="t", partition=0, position=pb.Position(timestamp_ms=2**63 - 1)),
        pb.ListOffsetsResponse,
    )
    assert found.offset == -1
    reply = call(
        channel,
        "Consumer/Fetch",
        pb.FetchRequest(
            topic="t", partition=0, offset=0, max_bytes=2**31 - 1, min_bytes=2**31 - 1, max_wait_ms=2**31 - 1
        ),
        pb.FetchResponse,
    )  # waits max_fetch_wait_ms (200 ms here), not 24 days
    assert reply.next_offset == 1
    err = refused(channel, "Consumer/Fetch", pb.FetchRequest(topic="t", partition=0, offset=0, max_bytes=-1))
    assert_refused(err, grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError)


# -- names --------------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "",
    ".",
    "..",
    "../escape",
    "..\\escape",
    "a/b",
    "/abs",
    "a\\b",
    "a\x00b",
    "abc\n",
    "\n",
    "x" * 250,
    "x" * 100_000,
    "é",
    "日本",
    "\U0001f600",
    "a b",
    "CON:",
    "t\t",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=[repr(n[:12]) for n in HOSTILE_NAMES])
def test_hostile_topic_names_are_invalid_and_create_nothing(channel, unharmed, name):
    err = refused(channel, "Admin/CreateTopic", pb.CreateTopicRequest(name=name, partitions=1))
    assert_refused(err, grpc.StatusCode.INVALID_ARGUMENT, InvalidTopicError)
    for method, request in [
        ("Admin/DescribeTopic", pb.DescribeTopicRequest(name=name)),
        ("Admin/DeleteTopic", pb.DeleteTopicRequest(name=name)),
        ("Consumer/Fetch", pb.FetchRequest(topic=name)),
        ("Admin/ListOffsets", pb.ListOffsetsRequest(topic=name)),
    ]:
        assert_refused(refused(channel, method, request), grpc.StatusCode.NOT_FOUND, UnknownTopicError)
    result = one_result(channel, framing.encode_produce_request(1, name, 0, good_batch()))
    assert_in_stream_error(result, grpc.StatusCode.NOT_FOUND, UnknownTopicError)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=300))
def test_any_topic_name_is_created_as_one_safe_directory_or_refused_creating_nothing(channel, server, name):
    before = entries(server)
    try:
        call(channel, "Admin/CreateTopic", pb.CreateTopicRequest(name=name, partitions=1))
    except grpc.RpcError as err:
        assert_refused(
            err, grpc.StatusCode.ALREADY_EXISTS if name in log_ends_names(channel) else grpc.StatusCode.INVALID_ARGUMENT
        )
        assert entries(server) == before
    else:
        assert entries(server) - before == {f"data/{name}-0", f"meta/{name}.json"}
        assert os.path.isdir(os.path.join(server.data_dir, f"{name}-0"))
        call(channel, "Admin/DeleteTopic", pb.DeleteTopicRequest(name=name))
        deadline = time.monotonic() + 10  # the trash is emptied in the background
        while entries(server) != before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert entries(server) == before


def log_ends_names(channel) -> set[str]:
    return set(call(channel, "Admin/ListTopics", pb.ListTopicsRequest(), pb.ListTopicsResponse).topics)


def test_unknown_partitions_are_not_found_everywhere(channel, unharmed):
    for partition in (-1, 2, 2**31 - 1, -(2**31)):
        result = one_result(channel, framing.encode_produce_request(1, "t", partition, good_batch()))
        assert_in_stream_error(result, grpc.StatusCode.NOT_FOUND, InvalidPartitionError)
        for method, request in [
            ("Consumer/Fetch", pb.FetchRequest(topic="t", partition=partition)),
            ("Admin/ListOffsets", pb.ListOffsetsRequest(topic="t", partition=partition)),
            (
                "Producer/ProduceRecords",
                pb.ProduceRecordsRequest(topic="t", partition=partition, records=[pb.Record(value=b"x")]),
            ),
        ]:
            assert_refused(refused(channel, method, request), grpc.StatusCode.NOT_FOUND, InvalidPartitionError)


def _raw_produce_request(sequence: bytes, partition: bytes, topic: str = "t", batches: bytes = b"") -> bytes:
    """A ProduceRequest whose sequence and partition varints are given as raw bytes (any width)."""
    return b"".join(
        [
            b"\x08",
            sequence,
            b"\x12",
            framing._varint(len(topic)),
            topic.encode(),
            b"\x18",
            partition,
            b"\x22",
            framing._varint(len(batches)),
            batches,
        ]
    )


OVER_64_BITS = b"\xff" * 9 + b"\x7f"  # a ten-byte varint carrying bits past the 64th


@pytest.mark.parametrize("partition", [2**31 + 2**32, 2**32, 2**32 + 1, 2**40, 2**63 - 1, -(2**31) - 1, -(2**63)])
def test_a_partition_outside_int32_is_invalid_in_its_ack_and_the_stream_goes_on(channel, topic, partition):
    """protobuf would cut 2**32 to partition 0: the broker refuses it instead of writing elsewhere."""
    before = log_ends(channel)
    results = produce(
        channel,
        [
            framing.encode_produce_request(11, "t", partition, good_batch([b"lost"])),
            framing.encode_produce_request(12, "t", 1, good_batch([b"kept"])),
        ],
    )
    assert [r.sequence for r in results] == [11, 12]
    assert_in_stream_error(results[0], grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError)
    assert "partition" in results[0].error.message and str(partition) in results[0].error.message
    assert not results[1].HasField("error") and results[1].base_offset == before[("t", 1)]
    assert log_ends(channel) == {**before, ("t", 1): before[("t", 1)] + 1}


def test_varints_past_64_bits_are_invalid_in_their_ack_and_the_stream_goes_on(channel, topic):
    before = log_ends(channel)
    results = produce(
        channel,
        [
            _raw_produce_request(OVER_64_BITS, b"\x00", batches=good_batch([b"lost"])),
            _raw_produce_request(b"\x15", OVER_64_BITS, batches=good_batch([b"lost"])),
            framing.encode_produce_request(22, "t", 1, good_batch([b"kept"])),
        ],
    )
    assert len(results) == 3
    for result in results[:2]:
        assert_in_stream_error(result, grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError)
        assert "64 bits" in result.error.message
    assert results[2].sequence == 22 and not results[2].HasField("error")
    assert log_ends(channel) == {**before, ("t", 1): before[("t", 1)] + 1}


# -- headers -------------------------------------------------------------------------------------


def test_many_headers_round_trip_and_oversize_headers_are_resource_exhausted(channel, topic):
    before = log_ends(channel)[("t", 1)]
    many = [pb.Header(key=f"h{i}", value=b"v") for i in range(2000)]  # ~12 KiB: under max_batch_bytes
    done = call(
        channel,
        "Producer/ProduceRecords",
        pb.ProduceRecordsRequest(topic="t", partition=1, records=[pb.Record(value=b"x", headers=many)]),
        pb.ProduceRecordsResponse,
    )
    assert done.results[0].base_offset == before
    got = call(
        channel,
        "Consumer/FetchRecords",
        pb.FetchRequest(topic="t", partition=1, offset=before),
        pb.FetchRecordsResponse,
    )
    assert [(h.key, h.value) for h in got.records[0].headers] == [(h.key, h.value) for h in many]
    for headers in (
        [pb.Header(key="k" * MAX_BATCH_BYTES)],
        [pb.Header(key="k", value=b"v" * MAX_BATCH_BYTES)],
        [pb.Header(key=f"{i}") for i in range(MAX_BATCH_BYTES // 2)],
    ):
        err = refused(
            channel,
            "Producer/ProduceRecords",
            pb.ProduceRecordsRequest(topic="t", partition=1, records=[pb.Record(value=b"x", headers=headers)]),
        )
        assert_refused(err, grpc.StatusCode.RESOURCE_EXHAUSTED, RecordTooLargeError)
    assert log_ends(channel)[("t", 1)] == before + 1
    assert_serving(channel)


def test_deeply_nested_and_non_utf8_protobuf_is_invalid_argument(channel, unharmed):
    nested = b"\x7b" * 10_000  # 10,000 nested start-group tags of an unknown field
    bad_utf8 = b"\x0a\x02\xff\xfe"  # field 1 (a string) holding bytes that are not UTF-8
    header_bad_utf8 = pb.ProduceRecordsRequest(topic="t").SerializeToString() + b"\x1a\x06\x1a\x04\x0a\x02\xff\xfe"
    for method, raw in [
        ("Admin/CreateTopic", nested),
        ("Admin/DescribeTopic", bad_utf8),
        ("Producer/ProduceRecords", header_bad_utf8),
        ("Consumer/Fetch", nested),
    ]:
        assert_refused(refused(channel, method, raw), grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError)


# -- malformed protobuf through a generic channel -------------------------------------------------

UNARY_METHODS = [
    "Admin/CreateTopic",
    "Admin/DeleteTopic",
    "Admin/ListTopics",
    "Admin/DescribeTopic",
    "Admin/ListOffsets",
    "Consumer/Fetch",
    "Consumer/FetchRecords",
    "Producer/ProduceRecords",
    "Groups/JoinGroup",
    "Groups/Heartbeat",
    "Groups/LeaveGroup",
    "Groups/CommitOffsets",
    "Groups/FetchCommittedOffsets",
    "Groups/ListGroups",
    "Groups/DescribeGroup",
    "Groups/DeleteGroup",
    "Groups/ResetOffsets",
]


@pytest.mark.parametrize("method", UNARY_METHODS)
def test_malformed_protobuf_is_invalid_argument_on_every_method(channel, unharmed, method):
    for raw in (b"\xff\xff\xff", b"\x0a\x05ab", b"\x08" + b"\xff" * 11):  # bad tag, short field, long varint
        assert_refused(refused(channel, method, raw), grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError)


def test_malformed_subscribe_messages_are_invalid_argument(channel, unharmed):
    for requests in ([b"\x0a\x99"], [_start(0), b"\x10"], [pb.SubscribeRequest(credit_bytes=5)]):
        with pytest.raises(grpc.RpcError) as info:
            _subscribe(channel, requests)
        assert_refused(info.value, grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError)


READ_ONLY = [
    "Admin/ListTopics",
    "Admin/DescribeTopic",
    "Admin/ListOffsets",
    "Consumer/Fetch",
    "Consumer/FetchRecords",
    "Groups/FetchCommittedOffsets",
    "Groups/ListGroups",
    "Groups/DescribeGroup",
]


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(READ_ONLY), raw=st.binary(max_size=64))
def test_random_bytes_on_read_only_methods_never_fault_the_server(channel, unharmed, method, raw):
    try:
        call(channel, method, raw)
    except grpc.RpcError as err:
        assert err.code() not in SERVER_FAULTS, (method, raw, err.code(), err.details())
        assert err.details()
