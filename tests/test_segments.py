"""Segments: rolling by size and time, retention, and indexes that agree with the log."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tidelog import Engine
from tidelog.storage import retention

SMALL = dict(segment_bytes=8192, index_interval_bytes=256, max_index_bytes=4096)


def log_files(data_dir, topic="t", partition=0, suffix=".log"):
    d = os.path.join(data_dir, f"{topic}-{partition}")
    return sorted(f for f in os.listdir(d) if f.endswith(suffix))


def read_all(engine, topic="t", partition=0):
    offset = engine.list_offsets(topic, partition).log_start
    out = []
    while True:
        r = engine.fetch(topic, partition, offset, max_bytes=5000)
        if not r:
            return out
        out += r.records()
        offset = r.next_offset


def fill(engine, clock, batches=60, per_batch=10, step_ms=1):
    for i in range(batches):
        engine.produce("t", [b"%05d-" % i + b"x" * 60] * per_batch)
        clock.advance(step_ms)


def test_segments_roll_at_segment_bytes_and_are_named_by_base_offset(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", **SMALL)
        fill(eng, clock)
        files = log_files(data_dir)
        assert len(files) > 3
        bases = [int(f[:20]) for f in files]
        segs = eng._topics["t"].partitions[0].segments()
        assert [s.base_offset for s in segs] == bases
        for seg, nxt in zip(segs, segs[1:]):
            assert seg.next_offset == nxt.base_offset
            assert seg.size <= SMALL["segment_bytes"]
            assert os.path.getsize(seg.log_path) == seg.size  # sealed segments are trimmed
        assert [r.offset for r in read_all(eng)] == list(range(600))


def test_segment_ms_rolls_by_record_time(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", segment_ms=1000)
        eng.produce("t", [b"a"])
        clock.advance(500)
        eng.produce("t", [b"b"])
        assert len(log_files(data_dir)) == 1
        clock.advance(600)
        eng.produce("t", [b"c"])
        assert [int(f[:20]) for f in log_files(data_dir)] == [0, 2]


def test_retention_bytes_deletes_oldest_sealed_segments_never_the_active(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", retention_bytes=20_000, **SMALL)
        fill(eng, clock, batches=100)
        eng.enforce_retention()
        desc = eng.describe("t").partitions[0]
        assert desc.size_bytes >= 20_000 - SMALL["segment_bytes"]
        assert desc.size_bytes < 20_000 + SMALL["segment_bytes"]
        assert desc.log_start > 0
        recs = read_all(eng)
        assert recs[0].offset == desc.log_start and recs[-1].offset == desc.log_end - 1


def test_retention_ms_deletes_segments_whose_newest_record_is_older(data_dir, clock):
    with Engine.open(data_dir, clock=clock, retention_check_interval_ms=10**9) as eng:
        eng.create_topic("t", retention_ms=10_000, **SMALL)
        fill(eng, clock, batches=50, step_ms=1)
        clock.advance(5_000)
        assert eng.enforce_retention() == 0
        before = len(log_files(data_dir))
        clock.advance(6_000)
        deleted = eng.enforce_retention()
        assert deleted == before - 1  # everything but the active segment
        assert len(log_files(data_dir)) == 1
        desc = eng.describe("t").partitions[0]
        assert desc.log_start == eng._topics["t"].partitions[0].segments()[0].base_offset


def test_retention_policy_is_oldest_first_and_stops_at_the_first_keeper():
    sealed = [(100, 1_000), (100, 9_000), (100, 2_000)]
    assert retention.segments_to_delete(sealed, 400, 10_000, 5_000, -1) == 1
    assert retention.segments_to_delete(sealed, 400, 10_000, -1, 250) == 1
    assert retention.segments_to_delete(sealed, 400, 10_000, -1, 100) == 3
    assert retention.segments_to_delete(sealed, 400, 10_000, -1, -1) == 0
    assert retention.segments_to_delete([], 400, 10_000, 0, 0) == 0


def test_rebuilt_indexes_equal_the_ones_written_while_appending(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", **SMALL)
        for i in range(40):
            eng.produce("t", [b"y" * (10 + 37 * (i % 7))] * (1 + i % 5), timestamps=None)
            clock.advance(-3 if i % 4 == 0 else 7)
        plog = eng._topics["t"].partitions[0]
        for seg in plog.segments():
            idx, tidx = seg.index.view().copy(), seg.time_index.view().copy()
            if seg.sealed:
                continue  # the active one is rebuilt below, sealed ones the same way
            seg.rebuild_indexes(seg.size)
            assert np.array_equal(seg.index.view(), idx)
            assert np.array_equal(seg.time_index.view(), tidx)


def test_fetch_and_time_lookup_work_across_segment_boundaries(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", **SMALL)
        start = clock.now
        fill(eng, clock, batches=80, per_batch=5, step_ms=10)
        assert [r.offset for r in read_all(eng)] == list(range(400))
        for i in (0, 1, 17, 40, 79):
            assert eng.list_offsets("t", 0, start + 10 * i) == 5 * i
        for offset in (0, 123, 399):
            assert next(iter(eng.fetch("t", 0, offset))).offset == offset


def test_reopen_after_clean_close_keeps_segments_and_indexes(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", **SMALL)
        fill(eng, clock)
        before = [
            (s.base_offset, s.size, s.index.entries, s.time_index.entries)
            for s in eng._topics["t"].partitions[0].segments()
        ]
    with Engine.open(data_dir, clock=clock) as eng:
        after = [
            (s.base_offset, s.size, s.index.entries, s.time_index.entries)
            for s in eng._topics["t"].partitions[0].segments()
        ]
        assert after[:-1] == before[:-1]
        assert after[-1][:3] == before[-1][:3]
        assert eng._topics["t"].partitions[0].recovery.scanned_bytes == 0
        eng.produce("t", [b"more"])
        assert read_all(eng)[-1].value == b"more"


def test_many_batches_in_one_append_larger_than_a_segment_are_split_across_segments(data_dir, clock):
    import tidelog

    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", **SMALL)
        batches = b"".join(tidelog.build_batch([b"%03d" % i + b"z" * 500] * 3, timestamp=clock.now) for i in range(20))
        assert len(batches) > SMALL["segment_bytes"]
        res = eng.append("t", 0, batches)
        assert (res.base_offset, res.last_offset) == (0, 59)
        assert len(log_files(data_dir)) > 1
        assert [r.offset for r in read_all(eng)] == list(range(60))


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_each_fsync_policy_stores_and_serves_records(data_dir, clock, fsync):
    with Engine.open(data_dir, clock=clock, fsync=fsync, fsync_interval_ms=5) as eng:
        eng.create_topic("t", **SMALL)
        fill(eng, clock, batches=20)
        offsets = eng.list_offsets("t", 0)
        assert offsets.high_watermark == 200
        if fsync == "always":
            assert offsets.flushed == 200
        eng.flush()
        assert eng.list_offsets("t", 0).flushed == 200
