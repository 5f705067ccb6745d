"""Byte compatibility with Kafka's RecordBatch v2, checked against kafka-python as an independent
implementation: what tidelog writes, kafka-python reads; what kafka-python writes, tidelog validates,
decodes, stores and serves back unchanged."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder

import tidelog
from tidelog._native.checksum import crc32c
from tidelog.codec.batch import BatchInfo, BatchView, build_batch, iter_batches, validate
from tidelog.errors import CorruptBatchError

KAFKA_NONE = DefaultRecordBatch.CODEC_NONE
KAFKA_LZ4 = DefaultRecordBatch.CODEC_LZ4
CODECS = {"none": KAFKA_NONE, "lz4": KAFKA_LZ4}

# (timestamp, key, value, headers): null keys and values, empty ones, headers with null values,
# and a timestamp below the first one (a negative delta).
SAMPLE = [
    (1_700_000_000_000, b"user-1", b"created" * 20, [("trace", b"abc"), ("empty", b"")]),
    (1_700_000_000_005, None, b"no key" * 30, []),
    (1_699_999_999_990, b"user-2", None, [("tombstone", None)]),
    (1_700_000_000_010, b"", b"", [("", b"x"), ("unicodé-κλειδί", b"\x00\xff")]),
    (1_700_000_000_003, b"user-1", b"updated" * 40, []),
]


def _columns(records):
    ts = [r[0] for r in records]
    keys = [r[1] for r in records]
    values = [r[2] for r in records]
    headers = [list(r[3]) for r in records]
    return values, keys, headers, ts


def _tidelog_batch(records, compression_name="none"):
    values, keys, headers, ts = _columns(records)
    return build_batch(values, keys, headers, ts, timestamp=0, compression_name=compression_name)


def _kafka_batch(records, codec=KAFKA_NONE, **producer):
    builder = MemoryRecordsBuilder(magic=2, compression_type=codec, batch_size=1 << 30, **producer)
    for ts, key, value, headers in records:
        assert builder.append(ts, key, value, list(headers)) is not None
    builder.close()
    return bytes(builder.buffer())


def _expected(records, base_offset=0):
    return [
        (base_offset + i, ts, key, value, tuple(tuple(h) for h in headers))
        for i, (ts, key, value, headers) in enumerate(records)
    ]


def _kafka_decode(batch: DefaultRecordBatch):
    return [(r.offset, r.timestamp, r.key, r.value, tuple(tuple(h) for h in r.headers)) for r in batch]


def _tidelog_decode(view: BatchView, copy=True):
    out = []
    for r in view.records(copy=copy):
        key = None if r.key is None else bytes(r.key)
        value = None if r.value is None else bytes(r.value)
        out.append((r.offset, r.timestamp, key, value, r.headers))
    return out


def _table_decode(view: BatchView):
    """Decode through the columnar table alone: offsets, timestamps and byte positions."""
    buf = bytes(view.records_buffer)
    out = []
    for row in view.table():
        key = None if row["key_len"] < 0 else buf[row["key_pos"] : row["key_pos"] + row["key_len"]]
        value = None if row["value_len"] < 0 else buf[row["value_pos"] : row["value_pos"] + row["value_len"]]
        out.append((int(row["offset"]), int(row["timestamp"]), key, value, int(row["headers_count"])))
    return out


# --- tidelog writes, kafka-python reads -----------------------------------------------------------


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_tidelog_batch_decodes_identically_with_kafka_python(codec):
    raw = _tidelog_batch(SAMPLE, codec)
    kb = DefaultRecordBatch(raw)
    assert kb.validate_crc()
    assert kb.magic == 2
    assert kb.compression_type == CODECS[codec]
    assert kb.size_in_bytes == len(raw)
    assert kb.base_offset == 0
    assert kb.last_offset_delta == len(SAMPLE) - 1
    assert kb.records_count == len(SAMPLE)
    assert kb.first_timestamp == SAMPLE[0][0]
    assert kb.max_timestamp == max(r[0] for r in SAMPLE)
    assert kb.timestamp_type == 0  # CreateTime
    assert not kb.is_transactional and not kb.is_control_batch
    assert (kb.producer_id, kb.producer_epoch, kb.base_sequence) == (-1, -1, -1)
    assert _kafka_decode(kb) == _expected(SAMPLE)


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_tidelog_batches_read_by_kafka_memory_records_one_by_one(codec):
    parts = [SAMPLE[:2], SAMPLE[2:3], SAMPLE[3:]]
    raw, base = b"", 0
    for part in parts:
        raw += struct.pack(">q", base) + _tidelog_batch(part, codec)[8:]  # base offset is outside the CRC
        base += len(part)
    mr = MemoryRecords(raw)
    got, bases = [], []
    while mr.has_next():
        kb = mr.next_batch()
        assert kb.validate_crc()
        assert kb.compression_type == CODECS[codec]
        bases.append(kb.base_offset)
        got += _kafka_decode(kb)
    assert bases == [0, 2, 3]
    assert got == _expected(SAMPLE)
    assert mr.valid_bytes() == len(raw)


def test_uncompressed_tidelog_batch_is_byte_identical_to_kafka_python_except_leader_epoch():
    # kafka-python writes partition leader epoch 0, tidelog (like the Java producer) -1; the field is
    # outside the CRC and assigned by the broker. Everything else, CRC included, is the same bytes.
    ours = _tidelog_batch(SAMPLE, "none")
    theirs = _kafka_batch(SAMPLE, KAFKA_NONE)
    assert len(ours) == len(theirs)
    assert ours[:12] == theirs[:12]
    assert ours[16:] == theirs[16:]
    assert struct.unpack_from(">i", ours, 12)[0] == -1


def test_lz4_tidelog_batch_compresses_the_same_records_section_as_kafka_python():
    ours = BatchView(_tidelog_batch(SAMPLE, "lz4"))
    theirs = DefaultRecordBatch(_kafka_batch(SAMPLE, KAFKA_LZ4))
    assert theirs.compression_type == KAFKA_LZ4 and ours.codec == "lz4"
    plain = _tidelog_batch(SAMPLE, "none")
    assert bytes(ours.records_buffer) == plain[61:]
    theirs._maybe_uncompress()
    assert bytes(theirs._buffer) == plain[61:]


def test_large_lz4_tidelog_batch_spanning_several_lz4_blocks_decodes_with_kafka_python():
    big = [
        (1_000 + i, b"k%d" % i, os.urandom(40_000) if i % 2 else b"z" * 90_000, [("i", b"%d" % i)]) for i in range(6)
    ]
    raw = _tidelog_batch(big, "lz4")
    kb = DefaultRecordBatch(raw)
    assert kb.validate_crc() and kb.compression_type == KAFKA_LZ4
    assert _kafka_decode(kb) == _expected(big)


# hypothesis: arbitrary records -----------------------------------------------------------------

_bytes_or_none = st.one_of(st.none(), st.binary(max_size=40))
_headers = st.lists(st.tuples(st.text(max_size=6), st.one_of(st.none(), st.binary(max_size=12))), max_size=3)
_record = st.tuples(st.integers(min_value=-(1 << 40), max_value=1 << 42), _bytes_or_none, _bytes_or_none, _headers)
_records = st.lists(_record, min_size=1, max_size=12)


@given(records=_records, codec=st.sampled_from(["none", "lz4"]))
def test_any_tidelog_batch_is_read_by_kafka_python_with_the_same_content(records, codec):
    raw = _tidelog_batch(records, codec)
    kb = DefaultRecordBatch(raw)
    assert kb.validate_crc()
    assert kb.compression_type == CODECS[codec]
    assert kb.max_timestamp == max(r[0] for r in records)
    assert _kafka_decode(kb) == _expected(records)


@given(records=_records)
def test_any_uncompressed_tidelog_batch_matches_kafka_python_bytes_under_the_crc(records):
    ours, theirs = _tidelog_batch(records, "none"), _kafka_batch(records, KAFKA_NONE)
    assert ours[:12] == theirs[:12] and ours[16:] == theirs[16:]


# --- kafka-python writes, tidelog reads -----------------------------------------------------------


@pytest.mark.parametrize("codec", [KAFKA_NONE, KAFKA_LZ4])
def test_kafka_python_batch_validates_and_decodes_through_batch_view(codec):
    raw = _kafka_batch(SAMPLE, codec)
    assert raw[21:23] == struct.pack(">h", codec)  # kafka-python really compressed it (or not)
    infos = validate(raw)
    assert infos == [BatchInfo(0, len(raw), len(SAMPLE), SAMPLE[0][0], max(r[0] for r in SAMPLE), codec)]
    view = BatchView(raw)
    assert view.codec == {KAFKA_NONE: "none", KAFKA_LZ4: "lz4"}[codec]
    assert (view.base_offset, view.last_offset, view.count, view.size) == (0, len(SAMPLE) - 1, len(SAMPLE), len(raw))
    assert view.crc_ok()
    assert _tidelog_decode(view) == _expected(SAMPLE)
    assert _tidelog_decode(view, copy=False) == _expected(SAMPLE)
    assert _table_decode(view) == [(o, t, k, v, len(h)) for o, t, k, v, h in _expected(SAMPLE)]


def test_kafka_python_batch_with_a_nonzero_base_offset_decodes_with_those_offsets():
    builder = MemoryRecordsBuilder(magic=2, compression_type=KAFKA_NONE, batch_size=1 << 20, offset=0)
    for ts, key, value, headers in SAMPLE:
        builder.append(ts, key, value, headers)
    builder.close()
    raw = struct.pack(">q", 1234) + bytes(builder.buffer())[8:]
    validate(raw)
    assert _tidelog_decode(BatchView(raw)) == _expected(SAMPLE, base_offset=1234)
    assert [r.offset for r in BatchView(raw).records(min_offset=1236, max_offset=1238)] == [1236, 1237]


def test_kafka_python_default_record_batch_builder_output_is_accepted():
    b = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=KAFKA_NONE,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i, (ts, key, value, headers) in enumerate(SAMPLE):
        assert b.append(i, ts, key, value, headers) is not None
    raw = bytes(b.build())
    assert len(validate(raw)) == 1
    assert _tidelog_decode(BatchView(raw)) == _expected(SAMPLE)


def test_idempotent_kafka_python_batch_keeps_its_producer_fields():
    raw = _kafka_batch(SAMPLE, KAFKA_NONE, producer_id=4242, producer_epoch=3, base_sequence=17)
    validate(raw)
    kb = DefaultRecordBatch(raw)
    assert (kb.producer_id, kb.producer_epoch, kb.base_sequence) == (4242, 3, 17)
    assert _tidelog_decode(BatchView(raw)) == _expected(SAMPLE)


def test_transactional_kafka_python_batch_is_rejected_as_unsupported():
    raw = _kafka_batch(SAMPLE[:1], KAFKA_NONE, transactional=True, producer_id=1, producer_epoch=0, base_sequence=0)
    assert DefaultRecordBatch(raw).is_transactional
    with pytest.raises(CorruptBatchError, match="transactional"):
        validate(raw)


def test_several_kafka_python_batches_concatenated_validate_as_several_batches():
    a, b, c = _kafka_batch(SAMPLE[:2]), _kafka_batch(SAMPLE[2:], KAFKA_LZ4), _kafka_batch(SAMPLE[:1])
    assert b[21:23] == b"\x00\x03"
    raw = a + b + c
    infos = validate(raw)
    assert [(i.pos, i.size, i.count, i.attributes) for i in infos] == [
        (0, len(a), 2, 0),
        (len(a), len(b), 3, KAFKA_LZ4),
        (len(a) + len(b), len(c), 1, 0),
    ]
    views = list(iter_batches(raw))
    assert [v.codec for v in views] == ["none", "lz4", "none"]
    got = [rec for v in views for rec in _tidelog_decode(v)]
    # each kafka-python batch starts at base offset 0
    assert got == _expected(SAMPLE[:2]) + _expected(SAMPLE[2:]) + _expected(SAMPLE[:1])


def test_large_lz4_kafka_python_batch_spanning_several_lz4_blocks_decodes():
    big = [(1_000 + i, None, (b"%06d" % i) * 20_000, []) for i in range(4)]
    raw = _kafka_batch(big, KAFKA_LZ4)
    assert DefaultRecordBatch(raw).compression_type == KAFKA_LZ4
    validate(raw)
    assert _tidelog_decode(BatchView(raw)) == _expected(big)


@given(records=_records, codec=st.sampled_from([KAFKA_NONE, KAFKA_LZ4]))
def test_any_kafka_python_batch_validates_and_decodes_to_the_same_content(records, codec):
    raw = _kafka_batch(records, codec)
    written_codec = DefaultRecordBatch(raw).compression_type  # kafka-python skips useless compression
    infos = validate(raw)
    assert len(infos) == 1 and infos[0].size == len(raw) and infos[0].count == len(records)
    assert infos[0].attributes & 0x07 == written_codec
    assert infos[0].max_timestamp == max(r[0] for r in records)
    view = BatchView(raw)
    assert _tidelog_decode(view) == _expected(records)
    assert _table_decode(view) == [(o, t, k, v, len(h)) for o, t, k, v, h in _expected(records)]


# --- LogAppendTime -----------------------------------------------------------------------------


def _log_append_time_batch(records, append_time, codec="none"):
    """A batch as a broker with message.timestamp.type=LogAppendTime stores it: attribute bit 3 set,
    max timestamp = append time, records untouched, CRC recomputed."""
    raw = bytearray(_tidelog_batch(records, codec))
    struct.pack_into(">h", raw, 21, CODECS[codec] | 0x08)
    struct.pack_into(">q", raw, 35, append_time)
    struct.pack_into(">I", raw, 17, crc32c(bytes(raw[21:])))
    return bytes(raw)


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_log_append_time_batch_records_take_the_batch_max_timestamp_like_kafka(codec):
    raw = _log_append_time_batch(SAMPLE, 1_800_000_000_000, codec)
    kb = DefaultRecordBatch(raw)
    assert kb.validate_crc() and kb.timestamp_type == 1
    kafka_ts = [r.timestamp for r in kb]
    assert kafka_ts == [1_800_000_000_000] * len(SAMPLE)
    assert validate(raw)[0].max_timestamp == 1_800_000_000_000
    view = BatchView(raw)
    assert [r.timestamp for r in view.records()] == kafka_ts
    assert view.table()["timestamp"].tolist() == kafka_ts
    # everything else decodes as usual
    assert [(o, k, v, h) for o, _, k, v, h in _tidelog_decode(view)] == [
        (o, k, v, h) for o, _, k, v, h in _expected(SAMPLE)
    ]


@given(
    records=_records, codec=st.sampled_from(["none", "lz4"]), append_time=st.integers(min_value=0, max_value=1 << 45)
)
def test_any_log_append_time_batch_decodes_like_kafka_python(records, codec, append_time):
    raw = _log_append_time_batch(records, append_time, codec)
    validate(raw)
    assert _tidelog_decode(BatchView(raw)) == _kafka_decode(DefaultRecordBatch(raw))


def test_log_append_time_batch_appended_to_the_engine_is_fetched_with_the_append_time(tmp_path):
    raw = _log_append_time_batch(SAMPLE, 1_800_000_000_000)
    with tidelog.Engine.open(str(tmp_path / "data")) as engine:
        engine.create_topic("lat", partitions=1)
        engine.append("lat", 0, raw)
        fetched = engine.fetch("lat", 0, 0)
        assert bytes(fetched.data) == raw
        assert [r.timestamp for r in fetched.records()] == [1_800_000_000_000] * len(SAMPLE)


@pytest.mark.parametrize("append_time", [-1, -1000])
def test_log_append_time_applies_even_when_the_max_timestamp_is_negative(append_time):
    raw = _log_append_time_batch(SAMPLE, append_time)
    kafka_ts = [r.timestamp for r in DefaultRecordBatch(raw)]
    assert kafka_ts == [append_time] * len(SAMPLE)
    validate(raw)
    assert [r.timestamp for r in BatchView(raw).records()] == kafka_ts


# --- through the engine and onto disk -------------------------------------------------------------


def _split_batches(data: bytes):
    out, pos = [], 0
    while pos < len(data):
        size = struct.unpack_from(">i", data, pos + 8)[0] + 12
        out.append(data[pos : pos + size])
        pos += size
    assert pos == len(data)
    return out


def test_engine_stores_kafka_python_batches_verbatim_except_base_offset_and_disk_log_reads_with_kafka(tmp_path):
    data_dir = tmp_path / "data"
    a = _kafka_batch(SAMPLE, KAFKA_NONE)
    b = _kafka_batch(SAMPLE[:3], KAFKA_LZ4)
    c = _kafka_batch(SAMPLE[3:], KAFKA_NONE, producer_id=9, producer_epoch=1, base_sequence=0)
    assert b[21:23] == b"\x00\x03"
    sent = [a, b, c, a]

    with tidelog.Engine.open(str(data_dir)) as engine:
        engine.create_topic("interop", partitions=1)
        results = [engine.append("interop", 0, a), engine.append("interop", 0, b + c), engine.append("interop", 0, a)]
        assert [(r.base_offset, r.last_offset) for r in results] == [(0, 4), (5, 9), (10, 14)]
        fetched = engine.fetch("interop", 0, 0, max_bytes=1 << 20)
        data = bytes(fetched.data)
        assert fetched.next_offset == 15
        stored = _split_batches(data)
        assert len(stored) == len(sent)
        bases = [0, 5, 8, 10]
        for got, orig, base in zip(stored, sent, bases):
            assert got[:8] == struct.pack(">q", base)
            assert got[8:] == orig[8:]  # length, epoch, CRC and everything under it
        expected = _expected(SAMPLE, 0) + _expected(SAMPLE[:3], 5) + _expected(SAMPLE[3:], 8) + _expected(SAMPLE, 10)
        assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in fetched.records()] == expected
        # a fetch from inside a batch still returns whole batches, records from the offset on
        mid = engine.fetch("interop", 0, 7)
        assert bytes(mid.data).startswith(stored[1][:8])
        assert [r.offset for r in mid.records()] == list(range(7, 15))

    log_path = data_dir / "interop-0" / "00000000000000000000.log"
    disk = log_path.read_bytes()
    assert disk == data  # trimmed on close: no preallocated tail
    mr = MemoryRecords(disk)
    got, kbases = [], []
    while mr.has_next():
        kb = mr.next_batch()
        assert kb.validate_crc()
        kbases.append(kb.base_offset)
        got += _kafka_decode(kb)
    assert kbases == bases
    assert got == expected
    assert mr.valid_bytes() == len(disk)


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_engine_encoded_batches_on_disk_read_with_kafka_python(tmp_path, codec):
    data_dir = tmp_path / "data"
    values, keys, headers, ts = _columns(SAMPLE)
    with tidelog.Engine.open(str(data_dir)) as engine:
        engine.create_topic("produced", partitions=1, config={"compression": codec})
        engine.produce("produced", values, keys, headers, timestamps=ts)
        engine.produce("produced", values[:2], keys[:2], headers[:2], timestamps=ts[:2])
    disk = (data_dir / "produced-0" / "00000000000000000000.log").read_bytes()
    mr = MemoryRecords(disk)
    got = []
    while mr.has_next():
        kb = mr.next_batch()
        assert kb.validate_crc() and kb.compression_type == CODECS[codec]
        got += _kafka_decode(kb)
    assert got == _expected(SAMPLE) + _expected(SAMPLE[:2], base_offset=len(SAMPLE))
    assert mr.valid_bytes() == len(disk)


def _kafka_read_segment(path) -> tuple[list[int], int, int]:
    """(offsets of the records, bytes kafka-python read as batches, file size) of one .log file."""
    disk = path.read_bytes()
    mr = MemoryRecords(disk)
    offsets = []
    while mr.has_next():
        kb = mr.next_batch()
        assert kb.validate_crc(), path
        offsets += [r.offset for r in kb]
    return offsets, mr.valid_bytes(), len(disk)


def test_every_segment_of_a_stopped_broker_reads_to_its_end_with_kafka_python_also_after_a_crash(tmp_path):
    """The README's claim, exactly: sealed segments read to their end at any time; the active one ends
    in a preallocated zero tail while the log is open and after a crash, and a clean stop trims it."""
    from tidelog.client import Admin, Producer

    from .server_process import ServerProcess

    data = tmp_path / "data"
    srv = ServerProcess(str(data), "--fsync", "always").start()
    try:
        with Admin(srv.target) as admin:
            admin.create_topic("segments", 1, segment_bytes=8192)
        with Producer(srv.target, linger_ms=0, batch_bytes=1024) as producer:
            for i in range(200):
                producer.send("segments", b"record %03d " % i + b"x" * 90, partition=0)
        logs = sorted((data / "segments-0").glob("*.log"))
        assert len(logs) > 3
        for sealed in logs[:-1]:  # readable while the broker runs
            offsets, valid, size = _kafka_read_segment(sealed)
            assert offsets and valid == size, sealed
        srv.kill()  # SIGKILL: no clean stop trims the active segment
        active = sorted((data / "segments-0").glob("*.log"))[-1]
        assert active.stat().st_size <= 1 << 20  # preallocated to about segment_bytes: cheap to read here
        with pytest.raises(CorruptRecordError, match="less than the minimum record overhead"):
            _kafka_read_segment(active)  # the zero tail
        srv.start()
    finally:
        assert srv.stop() == 0
    offsets = []
    for path in sorted((data / "segments-0").glob("*.log")):
        got, valid, size = _kafka_read_segment(path)
        assert valid == size, f"{path.name}: kafka-python read {valid} of {size} bytes"
        offsets += got
    assert offsets == list(range(200))
