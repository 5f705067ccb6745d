"""Recovery after an unclean stop: torn tails, flipped bits, missing or damaged indexes.

An unclean stop is taken as a snapshot of the data directory while the engine still has it open
(what the files hold if the process dies right then); the snapshot is opened as a crashed log.
"""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest

from tidelog import Engine
from tidelog.storage.recovery import RECOVERY_POINT_FILE

SMALL = dict(segment_bytes=8192, index_interval_bytes=128, max_index_bytes=4096)
PREALLOC = 16384  # small segments: snapshots copy the preallocated (sparse) files in full


def snapshot(src: str, dst: str) -> str:
    shutil.copytree(src, dst)
    return dst


def records(engine, topic="t", partition=0):
    offset = engine.list_offsets(topic, partition).log_start
    out = []
    while True:
        r = engine.fetch(topic, partition, offset, max_bytes=1 << 20)
        if not r:
            return [(x.offset, x.key, x.value, x.headers) for x in out]
        out += r.records()
        offset = r.next_offset


def active_log(directory, topic="t", partition=0):
    d = os.path.join(directory, f"{topic}-{partition}")
    return os.path.join(d, sorted(f for f in os.listdir(d) if f.endswith(".log"))[-1])


@pytest.fixture
def crashed(tmp_path, clock):
    """A crashed data directory holding 12 small batches (offsets 0..35) in one segment."""
    live = str(tmp_path / "live")
    eng = Engine.open(live, clock=clock)
    eng.create_topic("t", segment_bytes=PREALLOC)
    for i in range(12):
        eng.produce(
            "t", [b"r%02d-%d" % (i, j) for j in range(3)], keys=[b"k%d" % i] * 3, headers=[[("h", b"%d" % i)]] * 3
        )
    expected = records(eng)
    batches = [(b.pos, b.size, b.base_offset) for b in eng.fetch("t", 0, 0).batches()]
    snap = snapshot(live, str(tmp_path / "snap"))
    eng.close()
    checkpoint = os.path.join(snap, "t-0", RECOVERY_POINT_FILE)
    if os.path.exists(checkpoint):
        os.remove(checkpoint)  # validate the whole active segment, as after a crash before any fsync
    return snap, expected, batches


def reopen_copy(snap, dst, clock, mutate):
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(snap, dst)
    mutate(active_log(dst))
    return Engine.open(dst, clock=clock)


def test_unclean_reopen_keeps_every_written_record(crashed, tmp_path, clock):
    snap, expected, _ = crashed
    with reopen_copy(snap, str(tmp_path / "x"), clock, lambda path: None) as eng:
        assert not eng.clean_start
        assert records(eng) == expected
        assert eng.produce("t", [b"next"])[0].base_offset == 36


def test_truncating_the_tail_at_every_byte_keeps_exactly_the_whole_batches(crashed, tmp_path, clock):
    snap, expected, batches = crashed
    tail_start = batches[-3][0]
    end = batches[-1][0] + batches[-1][1]
    for cut in range(tail_start, end + 1):

        def truncate(path):
            with open(path, "r+b") as f:
                f.truncate(cut)

        whole = [b for b in batches if b[0] + b[1] <= cut]
        keep = whole[-1][2] + 3 if whole else 0
        with reopen_copy(snap, str(tmp_path / "cut"), clock, truncate) as eng:
            assert records(eng) == expected[:keep], f"cut at byte {cut}"
            assert eng.list_offsets("t", 0).log_end == keep
            assert eng.produce("t", [b"after"])[0].base_offset == keep
        with Engine.open(str(tmp_path / "cut"), clock=clock) as eng:
            assert eng.clean_start
            assert records(eng)[-1][2] == b"after"


def test_a_flipped_bit_in_the_last_batch_cuts_the_log_before_it(crashed, tmp_path, clock):
    snap, expected, batches = crashed
    pos, size, base = batches[-1]
    for i in range(size):

        def flip(path, at=pos + i):
            with open(path, "r+b") as f:
                f.seek(at)
                byte = f.read(1)[0]
                f.seek(at)
                f.write(bytes([byte ^ 0x10]))

        with reopen_copy(snap, str(tmp_path / "flip"), clock, flip) as eng:
            got = records(eng)
            if 12 <= i < 16:  # partition leader epoch: outside the CRC and unused; the data is intact
                assert got == expected, f"byte {i}"
            else:
                assert got == expected[:base], f"flipped byte {i} of the last batch"


def test_garbage_after_the_last_batch_is_cut(crashed, tmp_path, clock):
    snap, expected, batches = crashed
    end = batches[-1][0] + batches[-1][1]

    def scribble(path):
        with open(path, "r+b") as f:
            f.seek(end)
            f.write(os.urandom(300))

    with reopen_copy(snap, str(tmp_path / "g"), clock, scribble) as eng:
        assert records(eng) == expected
        assert eng.produce("t", [b"x"])[0].base_offset == 36
    with Engine.open(str(tmp_path / "g"), clock=clock) as eng:
        assert records(eng)[-1][2] == b"x"


def build_segments(path, clock, n=60):
    with Engine.open(path, clock=clock) as eng:
        eng.create_topic("t", **SMALL)
        for i in range(n):
            eng.produce("t", [b"%03d" % i + b"v" * 80] * 4)
            clock.advance(5)
        return records(eng), [
            (s.base_offset, s.index.view().copy(), s.time_index.view().copy())
            for s in eng._topics["t"].partitions[0].segments()
        ]


def test_missing_indexes_are_rebuilt_identically(data_dir, clock):
    expected, indexes = build_segments(data_dir, clock)
    part = os.path.join(data_dir, "t-0")
    for name in os.listdir(part):
        if name.endswith(".index") or name.endswith(".timeindex"):
            os.remove(os.path.join(part, name))
    with Engine.open(data_dir, clock=clock) as eng:
        assert records(eng) == expected
        segs = eng._topics["t"].partitions[0].segments()
        for seg, (base, idx, tidx) in zip(segs, indexes):
            assert seg.base_offset == base
            assert np.array_equal(seg.index.view(), idx)
            assert np.array_equal(seg.time_index.view(), tidx)
        assert eng.list_offsets("t", 0, clock.now - 5 * 30) == 4 * 30


def test_a_damaged_index_is_detected_and_rebuilt(data_dir, clock):
    expected, indexes = build_segments(data_dir, clock)
    part = os.path.join(data_dir, "t-0")
    first_index = os.path.join(part, f"{0:020d}.index")
    with open(first_index, "r+b") as f:
        f.seek(8)
        f.write(b"\xff" * 16)
    with Engine.open(data_dir, clock=clock) as eng:
        assert records(eng) == expected
        seg = eng._topics["t"].partitions[0].segments()[0]
        assert np.array_equal(seg.index.view(), indexes[0][1])


def test_recovery_validates_only_what_follows_the_recovery_point(tmp_path, clock):
    live = str(tmp_path / "live")
    eng = Engine.open(live, clock=clock, fsync="never")
    eng.create_topic("t", segment_bytes=1 << 20)
    for i in range(200):
        eng.produce("t", [b"x" * 200] * 5)
    eng.flush()  # fsync and move the recovery point to here
    flushed_bytes = eng.describe("t").partitions[0].size_bytes
    for i in range(10):
        eng.produce("t", [b"y" * 200] * 5)
    total = eng.describe("t").partitions[0].size_bytes
    snap = snapshot(live, str(tmp_path / "snap"))
    eng.close()
    with Engine.open(snap, clock=clock) as crashed:
        report = crashed._topics["t"].partitions[0].recovery
        assert report.scanned_bytes == total - flushed_bytes
        assert crashed.list_offsets("t", 0).log_end == 1050


def test_a_segment_left_untrimmed_by_a_crash_while_rolling_is_trimmed(data_dir, clock):
    expected, _ = build_segments(data_dir, clock)
    os.remove(os.path.join(data_dir, ".clean_shutdown"))
    first = os.path.join(data_dir, "t-0", f"{0:020d}.log")
    size = os.path.getsize(first)
    with open(first, "r+b") as f:
        f.truncate(SMALL["segment_bytes"])  # preallocated, as it was before the seal trimmed it
    with Engine.open(data_dir, clock=clock) as eng:
        assert records(eng) == expected
    assert os.path.getsize(first) == size


def test_directories_that_are_not_tidelog_partitions_are_left_alone(data_dir, clock, caplog):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t")
    for name in ("photos-2024", "backup-1", "t-7", "ghost-0"):
        os.makedirs(os.path.join(data_dir, name))
        with open(os.path.join(data_dir, name, "keep.txt"), "w") as f:
            f.write(name)
    with caplog.at_level(logging.WARNING, "tidelog.engine"), Engine.open(data_dir, clock=clock) as eng:
        assert eng.list_topics() == ["t"]
    for name in ("photos-2024", "backup-1", "t-7", "ghost-0"):
        with open(os.path.join(data_dir, name, "keep.txt")) as f:
            assert f.read() == name
    assert caplog.text.count("not a tidelog partition") == 4
