"""The embedded Engine's public surface: topics, produce, fetch, offsets, and its errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from kafka.partitioner.default import murmur2 as kafka_murmur2

import tidelog
from tidelog import Engine
from tidelog.config import EngineConfig, FsyncPolicy
from tidelog.errors import (
    CorruptBatchError,
    DataDirLockedError,
    EngineClosedError,
    InvalidConfigError,
    InvalidPartitionError,
    InvalidRequestError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    TopicExistsError,
    UnknownTopicError,
)


@pytest.fixture
def engine(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        yield eng


def all_records(engine, topic, partition, offset=0):
    out = []
    while True:
        result = engine.fetch(topic, partition, offset, max_bytes=1 << 16)
        if not result:
            return out
        out += result.records()
        offset = result.next_offset


def test_open_creates_the_data_directory(data_dir):
    assert not os.path.exists(data_dir)
    with Engine.open(data_dir) as eng:
        assert os.path.isdir(data_dir)
        assert eng.list_topics() == []


def test_produce_then_fetch_returns_records_with_offsets_keys_values_headers(engine, clock):
    engine.create_topic("orders", partitions=1)
    res = engine.produce(
        "orders",
        [b"v1", b"v2", None],
        keys=[b"k1", None, b"k3"],
        headers=[[("trace", b"abc"), ("empty", None)], None, []],
    )
    assert res == [tidelog.ProduceResult("orders", 0, 0, 2)]
    recs = list(engine.fetch("orders", 0, 0))
    assert [(r.offset, r.key, r.value) for r in recs] == [(0, b"k1", b"v1"), (1, None, b"v2"), (2, b"k3", None)]
    assert recs[0].headers == (("trace", b"abc"), ("empty", None))
    assert recs[1].headers == ()
    assert {r.timestamp for r in recs} == {clock.now}


def test_explicit_timestamps_are_kept_per_record(engine):
    engine.create_topic("t")
    engine.produce("t", [b"a", b"b", b"c"], timestamps=[5_000, 3_000, 9_000])
    assert [r.timestamp for r in engine.fetch("t", 0, 0)] == [5_000, 3_000, 9_000]


def test_keyed_records_land_on_kafkas_murmur2_partition_and_keep_order(engine):
    engine.create_topic("orders", partitions=4)
    keys = [f"key-{i % 13}".encode() for i in range(200)]
    values = [f"value-{i}".encode() for i in range(200)]
    results = engine.produce("orders", values, keys=keys)
    assert [r.partition for r in results] == sorted({r.partition for r in results})
    for p in range(4):
        got = all_records(engine, "orders", p)
        expected = [(k, v) for k, v in zip(keys, values) if (kafka_murmur2(k) & 0x7FFFFFFF) % 4 == p]
        assert [(r.key, r.value) for r in got] == expected
        assert [r.offset for r in got] == list(range(len(expected)))


def test_keyless_produce_puts_each_call_on_one_partition_and_rotates(engine):
    engine.create_topic("t", partitions=3)
    seen = [engine.produce("t", [b"x", b"y"])[0].partition for _ in range(6)]
    assert sorted(set(seen)) == [0, 1, 2]
    assert all(len(engine.produce("t", [b"a"] * 5)) == 1 for _ in range(3))


def test_explicit_partition_overrides_keys(engine):
    engine.create_topic("t", partitions=4)
    res = engine.produce("t", [b"a", b"b"], keys=[b"k1", b"k2"], partition=2)
    assert res == [tidelog.ProduceResult("t", 2, 0, 1)]


def test_fetch_from_the_middle_of_a_batch_starts_at_the_requested_offset(engine):
    engine.create_topic("t")
    engine.produce("t", [b"%d" % i for i in range(10)])
    result = engine.fetch("t", 0, 4)
    assert [r.offset for r in result] == list(range(4, 10))
    assert result.next_offset == 10


def test_fetch_respects_max_bytes_but_returns_at_least_one_batch(engine):
    engine.create_topic("t")
    for i in range(5):
        engine.produce("t", [b"x" * 1000])
    one = engine.fetch("t", 0, 0, max_bytes=10)
    assert [r.offset for r in one] == [0]
    assert one.next_offset == 1
    two = engine.fetch("t", 0, 0, max_bytes=2 * len(one.data))
    assert [r.offset for r in two] == [0, 1]


def test_fetch_data_is_a_zero_copy_view_of_whole_batches(engine):
    engine.create_topic("t")
    engine.produce("t", [b"abc"] * 3)
    result = engine.fetch("t", 0, 0)
    assert isinstance(result.data, memoryview)
    batches = list(result.batches())
    assert len(batches) == 1 and batches[0].crc_ok() and batches[0].count == 3
    views = result.records(copy=False)
    assert all(isinstance(r.value, memoryview) and bytes(r.value) == b"abc" for r in views)


def test_batch_table_gives_columnar_access_without_record_objects(engine):
    engine.create_topic("t")
    engine.produce("t", [b"a", b"bb", b"ccc"], keys=[b"k", None, b"kk"])
    batch = next(engine.fetch("t", 0, 0).batches())
    table = batch.table()
    assert table["offset"].tolist() == [0, 1, 2]
    assert table["value_len"].tolist() == [1, 2, 3]
    assert table["key_len"].tolist() == [1, -1, 2]
    buf = batch.records_buffer
    assert bytes(buf[table["value_pos"][2] : table["value_pos"][2] + 3]) == b"ccc"


def test_fetch_at_the_high_watermark_is_empty_not_an_error(engine):
    engine.create_topic("t")
    engine.produce("t", [b"a"])
    result = engine.fetch("t", 0, 1)
    assert not result and result.next_offset == 1 and list(result) == []


def test_fetch_out_of_range_names_the_valid_range(engine):
    engine.create_topic("t")
    engine.produce("t", [b"a", b"b"])
    with pytest.raises(OffsetOutOfRangeError, match="valid offsets are 0 to 2") as info:
        engine.fetch("t", 0, 3)
    assert (info.value.log_start, info.value.log_end) == (0, 2)
    with pytest.raises(OffsetOutOfRangeError):
        engine.fetch("t", 0, -1)


def test_list_offsets_earliest_latest_and_by_timestamp(engine):
    engine.create_topic("t")
    engine.produce("t", [b"a", b"b"], timestamps=[1_000, 2_000])
    engine.produce("t", [b"c"], timestamps=[3_000])
    offsets = engine.list_offsets("t", 0)
    assert (offsets.earliest, offsets.latest, offsets.log_end) == (0, 3, 3)
    assert engine.list_offsets("t", 0, "earliest") == 0
    assert engine.list_offsets("t", 0, tidelog.LATEST) == 3
    assert engine.list_offsets("t", 0, 0) == 0
    assert engine.list_offsets("t", 0, 1_500) == 1
    assert engine.list_offsets("t", 0, 2_000) == 1
    assert engine.list_offsets("t", 0, 2_001) == 2
    assert engine.list_offsets("t", 0, 3_001) is None


def test_timestamp_lookup_finds_the_first_record_at_or_after_when_timestamps_go_back(engine):
    engine.create_topic("t")
    engine.produce("t", [b"a", b"b", b"c"], timestamps=[5_000, 1_000, 7_000])
    assert engine.list_offsets("t", 0, 900) == 0
    assert engine.list_offsets("t", 0, 6_000) == 2


def test_append_stores_a_pre_encoded_batch_verbatim_and_assigns_offsets(engine, clock):
    engine.create_topic("t")
    engine.produce("t", [b"first"])
    batch = tidelog.build_batch([b"x", b"y"], keys=[b"1", b"2"], timestamp=clock.now, compression_name="lz4")
    res = engine.append("t", 0, batch)
    assert (res.base_offset, res.last_offset) == (1, 2)
    fetched = engine.fetch("t", 0, 1).data
    assert bytes(fetched[8:]) == batch[8:]
    assert int.from_bytes(fetched[:8], "big") == 1
    assert [(r.offset, r.value) for r in engine.fetch("t", 0, 1)] == [(1, b"x"), (2, b"y")]


def test_lz4_topics_compress_and_decode(engine):
    engine.create_topic("z", compression="lz4")
    values = [b'{"event": "click", "user": %d}' % i for i in range(500)]
    engine.produce("z", values, partition=0)
    result = engine.fetch("z", 0, 0)
    assert [r.value for r in result] == values
    assert next(result.batches()).codec == "lz4"
    assert len(result.data) < sum(map(len, values)) / 2


def test_corrupt_batch_is_rejected_and_appends_nothing(engine, clock):
    engine.create_topic("t")
    batch = bytearray(tidelog.build_batch([b"x"], timestamp=clock.now))
    batch[-1] ^= 0xFF
    with pytest.raises(CorruptBatchError, match="CRC"):
        engine.append("t", 0, bytes(batch))
    with pytest.raises(CorruptBatchError):
        engine.append("t", 0, b"\x00" * 10)
    assert engine.list_offsets("t", 0).log_end == 0


def test_oversize_record_is_rejected_with_record_too_large(engine):
    engine.create_topic("t", max_batch_bytes=1024)
    with pytest.raises(RecordTooLargeError):
        engine.produce("t", [b"x" * 2000])
    assert engine.list_offsets("t", 0).log_end == 0


def test_many_records_over_max_batch_bytes_are_split_into_several_batches(engine):
    engine.create_topic("t", max_batch_bytes=4096)
    values = [b"%04d" % i * 25 for i in range(100)]
    res = engine.produce("t", values)
    assert res[0].count == 100
    assert [r.value for r in all_records(engine, "t", 0)] == values
    assert all(b.size <= 4096 for b in engine.fetch("t", 0, 0, max_bytes=1 << 20).batches())


def test_oversize_pre_encoded_batch_is_rejected(engine, clock):
    engine.create_topic("t", max_batch_bytes=1024)
    with pytest.raises(RecordTooLargeError):
        engine.append("t", 0, tidelog.build_batch([b"x" * 2000], timestamp=clock.now))


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../escape", "a/b", "a\\b", "x" * 250, "spaces are bad", "é", "trailing-newline\n", "a\x00b", "\n"],
)
def test_invalid_topic_names_are_refused_and_create_no_files(engine, data_dir, name):
    before = set(os.listdir(data_dir))
    with pytest.raises(InvalidTopicError):
        engine.create_topic(name)
    assert set(os.listdir(data_dir)) == before
    assert not os.path.exists(os.path.join(os.path.dirname(data_dir), "escape-0"))


def test_unknown_topic_existing_topic_and_bad_partition_errors(engine):
    with pytest.raises(UnknownTopicError):
        engine.produce("nope", [b"x"])
    with pytest.raises(UnknownTopicError):
        engine.fetch("nope", 0, 0)
    engine.create_topic("t", partitions=2)
    with pytest.raises(TopicExistsError):
        engine.create_topic("t")
    with pytest.raises(InvalidPartitionError, match="partitions 0 to 1"):
        engine.fetch("t", 2, 0)
    with pytest.raises(InvalidPartitionError):
        engine.produce("t", [b"x"], partition=-1)


def test_bad_arguments_raise_invalid_request(engine):
    engine.create_topic("t")
    with pytest.raises(InvalidRequestError):
        engine.produce("t", b"not a list")
    with pytest.raises(InvalidRequestError):
        engine.produce("t", ["text is not bytes"])
    with pytest.raises(InvalidRequestError):
        engine.produce("t", [b"a", b"b"], keys=[b"k"])
    with pytest.raises(InvalidRequestError):
        engine.fetch("t", 0, 0, max_bytes=0)
    with pytest.raises(InvalidRequestError):
        engine.create_topic("u", partitions=0)
    with pytest.raises(InvalidConfigError):
        engine.create_topic("u", compression="brotli")
    with pytest.raises(InvalidConfigError):
        engine.create_topic("u", no_such_setting=1)
    assert engine.list_topics() == ["t"]


def test_topics_persist_across_reopen_with_their_config(data_dir):
    with Engine.open(data_dir) as eng:
        eng.create_topic("a", partitions=3, retention_ms=1234, compression="lz4")
        eng.create_topic("b")
        eng.produce("a", [b"x"], partition=2)
    with Engine.open(data_dir) as eng:
        assert eng.clean_start
        assert eng.list_topics() == ["a", "b"]
        desc = eng.describe("a")
        assert len(desc.partitions) == 3 and desc.config.retention_ms == 1234 and desc.config.compression == "lz4"
        assert [r.value for r in eng.fetch("a", 2, 0)] == [b"x"]


def test_delete_topic_removes_its_files_and_name(engine, data_dir):
    engine.create_topic("gone", partitions=2)
    engine.produce("gone", [b"x"])
    engine.delete_topic("gone")
    assert engine.list_topics() == []
    assert not any(name.startswith("gone-") for name in os.listdir(data_dir))
    with pytest.raises(UnknownTopicError):
        engine.describe("gone")
    engine.create_topic("gone")
    assert engine.list_offsets("gone", 0).log_end == 0


def test_describe_reports_offsets_sizes_and_segments(engine):
    engine.create_topic("t", partitions=2)
    engine.produce("t", [b"x" * 100] * 4, partition=1)
    desc = engine.describe("t")
    assert [p.partition for p in desc.partitions] == [0, 1]
    p1 = desc.partitions[1]
    assert (p1.log_start, p1.log_end, p1.high_watermark, p1.segments) == (0, 4, 4, 1)
    assert p1.size_bytes == len(engine.fetch("t", 1, 0).data)
    assert desc.partitions[0].size_bytes == 0


def test_a_second_process_cannot_open_a_locked_data_directory(engine, data_dir):
    code = (
        f"import tidelog\ntry:\n    tidelog.Engine.open({data_dir!r})\n"
        f"except tidelog.DataDirLockedError as e:\n    print('LOCKED', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOCKED" in out.stdout and "in use by another process" in out.stdout, out.stderr


def test_a_second_engine_in_the_same_process_is_refused(engine, data_dir):
    with pytest.raises(DataDirLockedError):
        Engine.open(data_dir)


def test_closed_engine_refuses_work(data_dir):
    eng = Engine.open(data_dir)
    eng.create_topic("t")
    eng.close()
    with pytest.raises(EngineClosedError):
        eng.produce("t", [b"x"])
    with pytest.raises(EngineClosedError):
        eng.create_topic("u")
    eng.close()  # closing twice is harmless


def test_fetch_with_max_wait_wakes_when_data_arrives(engine):
    import threading

    engine.create_topic("t")
    timer = threading.Timer(0.05, lambda: engine.produce("t", [b"late"]))
    timer.start()
    try:
        result = engine.fetch("t", 0, 0, max_wait_ms=10_000)
    finally:
        timer.join()
    assert [r.value for r in result] == [b"late"]


def test_fetch_with_max_wait_times_out_empty(engine):
    engine.create_topic("t")
    assert not engine.fetch("t", 0, 0, max_wait_ms=20)


@pytest.mark.parametrize("given", ["always", FsyncPolicy.ALWAYS])
def test_an_fsync_policy_is_read_once_into_its_enum(given):
    config = EngineConfig(fsync=given)
    assert config.fsync is FsyncPolicy.ALWAYS and config.fsync.syncs_each_append
    assert not EngineConfig().fsync.syncs_each_append and EngineConfig().fsync.flushes_periodically
    for bad in ("Always", "sometimes", 1, None):
        with pytest.raises(InvalidConfigError, match="fsync must be one of always, interval, never"):
            EngineConfig(fsync=bad)
