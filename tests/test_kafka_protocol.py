"""The Kafka listener at the byte level: the hand-written produce and fetch paths against Kafka's own
message specs (kafka-python's codec), and what hostile or broken frames do to a live broker (close that
connection, never the broker), plus exactly-once appends of an idempotent producer's resends."""

from __future__ import annotations

import json
import pathlib
import socket
import struct
import time

import pytest

from tests.server_process import ServerProcess
from tidelog.codec import batch as batch_codec
from tidelog.kafka_protocol import codec, fetch, framing, produce
from tidelog.kafka_protocol import errors as kerr

pytest.importorskip("kafka", reason="kafka-python is a test dependency")
from kafka.protocol.consumer import FetchResponse  # noqa: E402
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse, MetadataRequest  # noqa: E402
from kafka.protocol.producer import InitProducerIdRequest, ProduceRequest, ProduceResponse  # noqa: E402
from kafka.record.default_records import DefaultRecordBatchBuilder  # noqa: E402


def batch(values: list[bytes], producer_id: int = -1, epoch: int = -1, sequence: int = -1) -> bytes:
    builder = DefaultRecordBatchBuilder(2, 0, False, producer_id, epoch, sequence, 1 << 20)
    for i, v in enumerate(values):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=None, value=v, headers=[])
    return bytes(builder.build())


def produce_frame(
    version: int, topic: str, records: bytes, correlation_id: int = 7, acks: int = -1, partition: int = 0
) -> bytes:
    request = codec.build(
        ProduceRequest[version],
        {
            "transactional_id": None,
            "acks": acks,
            "timeout_ms": 5000,
            "topic_data": [{"name": topic, "partition_data": [{"index": partition, "records": records}]}],
        },
    )
    request.with_header(correlation_id=correlation_id, client_id="test")
    return bytes(request.encode(header=True, framed=True))


# -- the hand-written paths against the specs ------------------------------------------------------------
@pytest.mark.parametrize("version", range(3, 13))
def test_a_produce_request_is_walked_to_the_records_bytes_of_each_version(version):
    records = batch([b"a", b"bb"])
    frame = memoryview(produce_frame(version, "orders", records))[4:]
    header = framing.parse_header(frame, codec.flexible(codec.SERVED[codec.PRODUCE], version))
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == (0, version, 7, "test")
    parsed = produce.parse(frame[header.body_at :], version)
    assert (parsed.acks, parsed.timeout_ms, parsed.transactional_id) == (-1, 5000, None)
    ((topic, partition, data),) = parsed.partitions
    assert (topic, partition, bytes(data)) == ("orders", 0, records)


@pytest.mark.parametrize("version", range(4, 13))
def test_a_fetch_response_written_by_hand_reads_back_with_kafkas_spec(version):
    records = batch([b"x", b"y", b"z"])
    parts, size = fetch.response_parts(
        version,
        [
            (
                "orders",
                [fetch.PartitionFetch(0, 0, 3, 0, memoryview(records)), fetch.PartitionFetch(1, 1, -1, -1, b"")],
            ),
            ("empty", [fetch.PartitionFetch(0, 0, 9, 2, b"")]),
        ],
    )
    body = b"".join(bytes(p) for p in parts)
    assert len(body) == size
    assert any(isinstance(p, memoryview) for p in parts), "the records go out as the engine's buffer, not a copy"
    decoded = FetchResponse.decode(body, version=version)
    assert [t.topic for t in decoded.responses] == ["orders", "empty"]
    first, second = decoded.responses[0].partitions
    assert (first.partition_index, first.error_code, first.high_watermark) == (0, 0, 3)
    assert bytes(first.records) == records
    assert (second.partition_index, second.error_code) == (1, 1)
    if version >= 5:
        assert decoded.responses[1].partitions[0].log_start_offset == 2


def test_a_produce_response_reads_back_with_kafkas_spec():
    for version in range(3, 13):
        body = produce.encode_response(version, [produce.Outcome("t", 0, 0, 42), produce.Outcome("t", 1, 3, -1, "no")])
        (topic,) = ProduceResponse.decode(body, version=version).responses
        assert [(p.index, p.error_code, p.base_offset) for p in topic.partition_responses] == [(0, 0, 42), (1, 3, -1)]


@pytest.mark.parametrize(
    "body",
    [
        b"",  # nothing
        b"\x00\x00",  # a cut string length
        b"\xff\xff\x00\x01\x00\x00\x00\x00\x7f\xff\xff\xff",  # a topic array claiming 2^31 items
        b"\x00\x00\xff\xff\xff\xff\xff\xff",  # a varint longer than 5 bytes (read compact)
    ],
)
def test_a_malformed_produce_body_is_refused_as_malformed(body):
    with pytest.raises(framing.MalformedError):
        produce.parse(memoryview(body), 9 if body.startswith(b"\x00\x00\xff") else 3)


def test_tidelog_errors_map_to_the_kafka_codes_clients_act_on():
    from tidelog import errors

    assert kerr.code_of(errors.InvalidPartitionError("no such partition")) == kerr.UNKNOWN_TOPIC_OR_PARTITION
    assert kerr.code_of(errors.DiskFullError("full")) == kerr.KAFKA_STORAGE_ERROR
    assert kerr.code_of(errors.NotCoordinatorError("elsewhere")) == kerr.NOT_COORDINATOR
    assert kerr.code_of(errors.OutOfOrderSequenceError("gap")) == 45
    assert kerr.code_of(errors.EngineClosedError("stopping")) == kerr.BROKER_NOT_AVAILABLE
    assert kerr.code_of(ValueError("a bug")) == kerr.UNKNOWN_SERVER_ERROR


# -- a live broker ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    directory = tmp_path_factory.mktemp("kafka-protocol")
    config = directory / "tidelog.toml"
    # 1 MiB: an oversize frame is easy to send; 1.5 s: an idle connection is closed within the test
    config.write_text("max_message_bytes = 1048576\nkafka_idle_timeout_ms = 1500\n")
    server = ServerProcess(str(directory / "data"), "--config", str(config), kafka=True).start()
    yield server
    server.stop()


def connect(broker: ServerProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def sized(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def read_frame(s: socket.socket) -> bytes | None:
    """A response frame (without its size), or None once the broker closed the connection."""
    try:
        return _read_frame(s)
    except ConnectionResetError:  # closed with our bytes unread
        return None


def _read_frame(s: socket.socket) -> bytes | None:
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (size,) = struct.unpack(">i", head)
    body = b""
    while len(body) < size:
        chunk = s.recv(size - len(body))
        if not chunk:
            return None
        body += chunk
    return body


def call(s: socket.socket, message, version: int, correlation_id: int = 1) -> bytes:
    message = message if hasattr(message, "with_header") else message
    message.with_header(correlation_id=correlation_id, client_id="raw")
    s.sendall(bytes(message.encode(version=version, header=True, framed=True)))
    frame = read_frame(s)
    assert frame is not None, "the broker closed the connection"
    assert struct.unpack_from(">i", frame)[0] == correlation_id
    return frame


def api_versions_answer(broker: ServerProcess) -> bool:
    """Whether a fresh connection is served (the broker survived what came before)."""
    with connect(broker) as s:
        frame = call(s, ApiVersionsRequest[0](), 0)
        return ApiVersionsResponse.decode(frame[4:], version=0).error_code == 0


@pytest.mark.parametrize(
    "raw",
    [
        struct.pack(">i", -5),  # a negative size
        struct.pack(">i", 64 << 20) + b"\x00" * 64,  # over max_message_bytes
        sized(struct.pack(">hhi", 999, 0, 1) + b"\x00\x00"),  # an API that does not exist
        sized(struct.pack(">hhi", 3, 99, 1) + b"\x00\x00"),  # Metadata v99
        sized(struct.pack(">hh", 3, 1)),  # a frame shorter than a request header
        sized(struct.pack(">hhi", 3, 1, 1) + b"\x00\x00\xff"),  # Metadata body of garbage
        sized(struct.pack(">hhi", 0, 3, 1) + b"\x00\x00\xff\xff"),  # Produce cut short
        sized(struct.pack(">hhi", 0, 13, 1) + b"\x00\x00\x00"),  # Produce v13 (topic ids): not served
    ],
    ids=[
        "negative-size",
        "oversize",
        "unknown-api",
        "unknown-version",
        "cut-header",
        "garbage-body",
        "cut-produce",
        "produce-v13",
    ],  # fmt: skip
)
def test_broken_frames_close_their_connection_and_the_broker_serves_on(broker, raw):
    with connect(broker) as s:
        s.sendall(raw)
        assert read_frame(s) is None, "the connection is closed, with no answer"
    assert api_versions_answer(broker)


def test_an_unknown_api_versions_version_gets_the_versions_served(broker):
    """KIP-511: a v0 body with UNSUPPORTED_VERSION and the ranges, so the client can pick one."""
    with connect(broker) as s:
        s.sendall(sized(struct.pack(">hhi", 18, 99, 5) + b"\x00\x04test"))
        frame = read_frame(s)
    assert frame is not None and struct.unpack_from(">i", frame)[0] == 5
    answer = ApiVersionsResponse.decode(frame[4:], version=0)
    assert answer.error_code == 35
    served = {k.api_key: (k.min_version, k.max_version) for k in answer.api_keys}
    assert served[0] == (0, 12) and served[1] == (4, 12) and 24 not in served, "no transactions advertised"


def test_a_client_that_sends_half_a_frame_and_vanishes_costs_nothing(broker):
    with connect(broker) as s:
        s.sendall(struct.pack(">i", 1000) + b"\x00" * 10)
    assert api_versions_answer(broker)


def test_metadata_asks_for_authorized_operations_and_gets_a_real_bitfield(broker):
    with connect(broker) as s:
        request = MetadataRequest[8](
            topics=None, allow_auto_topic_creation=False, include_cluster_authorized_operations=True,
            include_topic_authorized_operations=True,
        )  # fmt: skip
        frame = call(s, request, 8)
    from kafka.protocol.metadata import MetadataResponse

    answer = MetadataResponse.decode(frame[4:], version=8)
    assert answer.authorized_operations and 31 not in answer.authorized_operations


def test_a_resent_idempotent_produce_is_written_once_and_a_gap_is_refused(broker):
    """Exactly once per partition: the same request twice (a lost ack) gets the first offsets back."""
    topic = f"idem-{time.monotonic_ns()}"
    with connect(broker) as s:
        frame = call(
            s, codec.build(MetadataRequest[4], {"topics": [{"name": topic}], "allow_auto_topic_creation": True}), 4
        )
        init = InitProducerIdRequest[1](transactional_id=None, transaction_timeout_ms=60000)
        from kafka.protocol.producer import InitProducerIdResponse

        ids = InitProducerIdResponse.decode(call(s, init, 1)[4:], version=1)
        assert ids.error_code == 0 and ids.producer_id >= 0

        def send(values: list[bytes], sequence: int, correlation_id: int) -> tuple[int, int]:
            records = batch(values, ids.producer_id, ids.producer_epoch, sequence)
            s.sendall(produce_frame(8, topic, records, correlation_id))
            frame = read_frame(s)
            assert frame is not None and struct.unpack_from(">i", frame)[0] == correlation_id
            (answer,) = ProduceResponse.decode(frame[4:], version=8).responses
            (p,) = answer.partition_responses
            return p.error_code, p.base_offset

        assert send([b"a", b"b"], 0, 10) == (0, 0)
        assert send([b"c"], 2, 11) == (0, 2)
        assert send([b"c"], 2, 12) == (0, 2), "the resend is answered with the original offset"
        assert send([b"a", b"b"], 0, 13) == (0, 0)
        assert send([b"e"], 9, 14)[0] == 45, "a gap in the sequence: OUT_OF_ORDER_SEQUENCE_NUMBER"
        assert send([b"d"], 3, 15) == (0, 3)
    del frame
    from tidelog.client import Consumer

    with Consumer(broker.target, topic, partition=0, offset="earliest") as c:
        got: list = []
        deadline = time.monotonic() + 10
        while len(got) < 4 and time.monotonic() < deadline:
            got += c.poll(0.5)
    assert [r.value for r in got] == [b"a", b"b", b"c", b"d"]


def test_acks_zero_gets_no_answer_and_the_next_request_is_answered_in_order(broker):
    topic = f"acks0-{time.monotonic_ns()}"
    with connect(broker) as s:
        call(s, codec.build(MetadataRequest[4], {"topics": [{"name": topic}], "allow_auto_topic_creation": True}), 4)
        s.sendall(produce_frame(8, topic, batch([b"fire", b"forget"]), correlation_id=20, acks=0))
        frame = call(s, ApiVersionsRequest[0](), 0, correlation_id=21)  # the next answer is this request's
        assert struct.unpack_from(">i", frame)[0] == 21
    from tidelog.client import Admin

    with Admin(broker.target) as admin:
        deadline = time.monotonic() + 10
        while admin.list_offsets(topic, 0).high_watermark < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert admin.list_offsets(topic, 0).high_watermark == 2


def test_transactional_producers_are_refused_with_a_reason(broker):
    with connect(broker) as s:
        from kafka.protocol.producer import InitProducerIdResponse

        init = InitProducerIdRequest[1](transactional_id="tx-1", transaction_timeout_ms=60000)
        assert InitProducerIdResponse.decode(call(s, init, 1)[4:], version=1).error_code != 0


def test_writing_to_an_internal_topic_is_refused(broker):
    with connect(broker) as s:
        s.sendall(produce_frame(8, "__consumer_offsets", batch([b"forged"]), correlation_id=30))
        frame = read_frame(s)
    assert frame is not None
    (answer,) = ProduceResponse.decode(frame[4:], version=8).responses
    assert answer.partition_responses[0].error_code == 17  # INVALID_TOPIC_EXCEPTION


# -- golden vectors: request frames captured from real clients (tests/helpers/kafka_capture.py) ------------
GOLDEN = json.loads((pathlib.Path(__file__).parent / "data" / "kafka_requests.json").read_text())


@pytest.mark.parametrize(
    "captured", GOLDEN, ids=[f"{g['client']}-{g['api_key']}v{g['api_version']}-{i}" for i, g in enumerate(GOLDEN)]
)
def test_frames_captured_from_real_clients_decode_and_reencode_byte_for_byte(captured):
    raw = bytes.fromhex(captured["frame"])
    assert struct.unpack_from(">i", raw)[0] == len(raw) - 4
    frame = memoryview(raw)[4:]
    api = codec.served(captured["api_key"], captured["api_version"])
    assert api is not None, "every version these clients chose is one the broker serves"
    header = framing.parse_header(frame, codec.flexible(api, captured["api_version"]))
    body = frame[header.body_at :]
    if api.key == codec.PRODUCE:
        parsed = produce.parse(body, header.api_version)
        for p in parsed.partitions:
            assert p.records is not None
            infos = batch_codec.validate(p.records)  # each codec a client sent decodes in tidelog's reader
            assert sum(i.count for i in infos) >= 1
            assert all(r.value for b in batch_codec.iter_batches(p.records) for r in b.records())
    request = codec.decode_request(api, header.api_version, body)
    request._header = None  # decoded bodies carry none; encoding asks
    assert bytes(request.encode(version=header.api_version)) == bytes(body), "the spec codec reads every field"


@pytest.mark.parametrize("sent", [b"", struct.pack(">i", 100) + b"\x00" * 10], ids=["nothing", "half-a-frame"])
def test_a_connection_idle_or_stalled_mid_frame_is_closed_after_the_idle_timeout(broker, sent):
    with connect(broker) as s:
        s.sendall(sent)
        started = time.monotonic()
        assert read_frame(s) is None
        assert time.monotonic() - started < 8, "closed by the idle timeout (1.5 s), not the test's socket timeout"
    assert api_versions_answer(broker)


def test_connections_past_the_limit_are_closed_and_every_api_is_measured(tmp_path):
    config = tmp_path / "tidelog.toml"
    config.write_text("max_connections = 2\n")
    server = ServerProcess(str(tmp_path / "data"), "--config", str(config), kafka=True).start()
    try:
        with connect(server) as first, connect(server) as second:
            call(first, ApiVersionsRequest[0](), 0)
            call(second, ApiVersionsRequest[0](), 0)
            with connect(server) as third:
                third.sendall(sized(struct.pack(">hhi", 18, 0, 1) + b"\x00\x00"))
                assert read_frame(third) is None, "the third connection is closed at once"
            second.sendall(produce_frame(8, "__consumer_offsets", batch([b"x"]), correlation_id=3))
            assert read_frame(second) is not None
        import urllib.request

        metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    finally:
        server.stop()
    assert "tidelog_kafka_connections_refused_total 1.0" in metrics
    assert 'tidelog_kafka_request_duration_seconds_count{api="ApiVersions"} 2.0' in metrics
    assert 'tidelog_kafka_errors_total{api="Produce",error="17"} 1.0' in metrics
