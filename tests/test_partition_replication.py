"""The partition layer's replication primitives: leader epochs (the file and the stamp in each batch),
appends copied from a leader, cutting a diverged log (also across crashes), and the high watermark
capped at what the in-sync replicas have."""

from __future__ import annotations

import os
import shutil
import threading

import numpy as np
import pytest

from tidelog._native import batch_scan
from tidelog.codec import batch as batch_codec
from tidelog.config import TopicConfig
from tidelog.errors import (
    CorruptLogError,
    FencedLeaderEpochError,
    InvalidRequestError,
    OutOfOrderSequenceError,
)
from tidelog.partition.leader_epochs import FILE_NAME, LeaderEpochFile
from tidelog.partition.partition_log import PartitionLog
from tidelog.storage.fs import FileSystem

SMALL = TopicConfig(segment_bytes=4096, index_interval_bytes=256, max_index_bytes=4096)


def open_log(path, fsync="interval", *, clean=False, create=False, config=SMALL, fs=None) -> PartitionLog:
    return PartitionLog(fs or FileSystem(), str(path), config, fsync, lambda: 1000, clean, create=create)


def batch(*values: bytes, pid: int = -1, seq: int = -1) -> bytes:
    return batch_codec.build_batch(list(values), timestamp=1000, producer_id=pid, producer_epoch=0, base_sequence=seq)


def append(plog: PartitionLog, data: bytes, **kw) -> tuple[int, int]:
    return plog.append([(data, batch_codec.validate(data))], **kw)


def read_all(plog: PartitionLog, offset: int | None = None) -> list[tuple[int, bytes]]:
    offset = plog.offsets.log_start if offset is None else offset
    out = []
    while True:
        result = plog.peek(offset, 1 << 20)
        assert result is not None
        if not result.data:
            return out
        for b in batch_codec.iter_batches(result.data):
            out += [(r.offset, r.value) for r in b.records()]
        offset = result.next_offset


def raw(plog: PartitionLog, offset: int = 0) -> bytes:
    """The log's bytes from offset to the high watermark, as a leader would send them."""
    parts = []
    while True:
        result = plog.peek(offset, 1 << 20)
        assert result is not None
        if not result.data:
            return b"".join(parts)
        parts.append(bytes(result.data))
        offset = result.next_offset


def stamped_epochs(data: bytes) -> list[tuple[int, int]]:
    """(base offset, leader epoch) of each batch."""
    return [(b.base_offset, batch_codec.leader_epoch_of(data, b.pos)) for b in batch_codec.iter_batches(data)]


def crc_and_continuity_ok(data: bytes, first_offset: int) -> bool:
    rows = np.empty((1024, batch_scan.N_COLS), dtype=np.int64)
    n, pos, reason, _ = batch_scan.scan_batches(data, 0, len(data), True, first_offset, rows)
    return reason == batch_scan.END and pos == len(data) and n > 0


# -- the leader epoch file ------------------------------------------------------------------------------
def test_epoch_end_offsets_follow_kafka_offsets_for_leader_epoch(tmp_path):
    fs = FileSystem()
    epochs = LeaderEpochFile.load(fs, str(tmp_path))
    assert epochs.latest() is None and epochs.entries() == []
    assert epochs.end_offset_for(3, 50) == (-1, -1)
    assert not os.path.exists(tmp_path / FILE_NAME)  # nothing written until an epoch is assigned
    epochs.assign(1, 0)
    epochs.assign(3, 10)
    epochs.assign(3, 12)  # the newest again: no-op
    epochs.assign(5, 20)
    assert epochs.entries() == [(1, 0), (3, 10), (5, 20)]
    assert epochs.latest() == (5, 20)
    answers = {e: epochs.end_offset_for(e, 50) for e in range(8)}
    assert answers == {0: (-1, -1), 1: (1, 10), 2: (1, 10), 3: (3, 20), 4: (3, 20), 5: (5, 50), 6: (5, 50), 7: (5, 50)}
    with pytest.raises(InvalidRequestError, match="older"):
        epochs.assign(4, 30)
    with pytest.raises(InvalidRequestError, match="before epoch 5"):
        epochs.assign(6, 19)
    epochs.assign(6, 20)  # epoch 5 wrote nothing: 6 takes its place
    assert epochs.entries() == [(1, 0), (3, 10), (6, 20)]
    assert LeaderEpochFile.load(fs, str(tmp_path)).entries() == [(1, 0), (3, 10), (6, 20)]


def test_epoch_truncation_is_durable(tmp_path):
    fs = FileSystem()
    epochs = LeaderEpochFile.load(fs, str(tmp_path))
    for epoch, start in ((1, 0), (2, 10), (4, 25), (7, 40)):
        epochs.assign(epoch, start)
    epochs.truncate_from_end(25)
    assert LeaderEpochFile.load(fs, str(tmp_path)).entries() == [(1, 0), (2, 10)]
    epochs.truncate_from_end(100)  # nothing starts there: nothing changes
    epochs.truncate_from_start(12)
    assert LeaderEpochFile.load(fs, str(tmp_path)).entries() == [(2, 12)]
    epochs.truncate_from_start(5)  # below the first: nothing to collapse
    assert epochs.entries() == [(2, 12)]
    assert epochs.end_offset_for(1, 30) == (-1, -1) and epochs.end_offset_for(2, 30) == (2, 30)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data.replace(b"12", b"13"),  # a flipped digit: the checksum no longer matches
        lambda data: data[: len(data) // 2],  # torn
        lambda data: b"",
    ],
)
def test_a_damaged_epoch_file_is_refused_naming_it_and_the_repair(tmp_path, damage):
    plog = open_log(tmp_path / "t-0", create=True)
    plog.become_leader(12)
    plog.close()
    path = tmp_path / "t-0" / FILE_NAME
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CorruptLogError, match=f"{FILE_NAME}.*damaged.*check --repair"):
        LeaderEpochFile.load(FileSystem(), str(tmp_path / "t-0"))
    with pytest.raises(CorruptLogError, match=FILE_NAME):
        open_log(tmp_path / "t-0", clean=True)


def test_epochs_past_the_log_end_are_dropped_at_open(tmp_path):
    plog = open_log(tmp_path / "t-0", create=True)
    plog.become_leader(1)
    append(plog, batch(b"a", b"b"), leader_epoch=1)
    plog.close()
    epochs = LeaderEpochFile.load(FileSystem(), str(tmp_path / "t-0"))
    epochs.assign(2, 2)
    epochs.assign(3, 7)  # recorded before records a crash then lost
    plog = open_log(tmp_path / "t-0", clean=True)
    try:
        assert plog.leader_epochs.entries() == [(1, 0)]
        assert plog.epoch_end_offset(1) == (1, 2)
    finally:
        plog.close()


# -- stamping and replica appends -------------------------------------------------------------------------
def test_appends_stamp_the_leader_epoch_and_the_crc_still_holds(tmp_path):
    plog = open_log(tmp_path / "t-0", create=True)
    try:
        append(plog, batch(b"before"))
        plog.become_leader(7)
        data = batch(b"a", b"b") + batch(b"c")
        assert plog.append([(data, batch_codec.validate(data))], leader_epoch=7) == (1, 3)
        log_bytes = raw(plog)
        assert stamped_epochs(log_bytes) == [(0, -1), (1, 7), (3, 7)]
        assert crc_and_continuity_ok(log_bytes, 0)
        assert all(b.crc_ok() for b in batch_codec.iter_batches(log_bytes))
        assert read_all(plog) == [(0, b"before"), (1, b"a"), (2, b"b"), (3, b"c")]
        assert plog.leader_epochs.entries() == [(7, 1)]
        with pytest.raises(FencedLeaderEpochError):
            append(plog, batch(b"late"), leader_epoch=6)
        assert plog.log_end == 4
    finally:
        plog.close()
    reopened = open_log(tmp_path / "t-0", clean=False)
    try:
        assert stamped_epochs(raw(reopened)) == [(0, -1), (1, 7), (3, 7)]
        assert reopened.leader_epochs.entries() == [(7, 1)]
    finally:
        reopened.close()


def test_a_replica_keeps_offsets_epochs_and_producer_state_so_a_retry_after_failover_is_a_duplicate(tmp_path):
    leader = open_log(tmp_path / "a-0", create=True)
    follower = open_log(tmp_path / "b-0", create=True)
    try:
        leader.become_leader(1)
        append(leader, batch(b"x0", b"x1"), leader_epoch=1)
        retried = batch(b"p0", b"p1", b"p2", pid=42, seq=0)
        assert append(leader, retried, leader_epoch=1) == (2, 4)
        leader.become_leader(2)
        append(leader, batch(b"x2"), leader_epoch=2)
        copied = raw(leader)
        assert follower.append_replica(copied) == leader.log_end == 6
        assert raw(follower) == copied  # byte for byte, leader epochs included
        assert follower.leader_epochs.entries() == [(1, 0), (2, 5)] == leader.leader_epochs.entries()
        with pytest.raises(InvalidRequestError, match="starts at offset 0.*log ends at 6"):
            follower.append_replica(copied)
        # the leader dies before the producer hears back; it resends to the follower, now leading
        follower.become_leader(3)
        assert append(follower, retried, leader_epoch=3) == (2, 4)
        assert follower.log_end == 6
        with pytest.raises(OutOfOrderSequenceError):
            append(follower, batch(b"p9", pid=42, seq=9), leader_epoch=3)
        assert append(follower, batch(b"p3", pid=42, seq=3), leader_epoch=3) == (6, 6)
    finally:
        leader.close()
        follower.close()


def test_a_replica_does_not_refuse_what_its_leader_accepted(tmp_path):
    """A leader that had forgotten producer 5 (expired) took its sequence 0 again: the replica, which
    would take that batch for a retry, copies it anyway."""
    first = batch(b"p0", pid=5, seq=0)
    again = bytearray(batch(b"p0 again", pid=5, seq=0))
    again[:8] = batch_codec.base_offset_header(1)
    replica = open_log(tmp_path / "b-0", create=True)
    try:
        assert replica.append_replica(first + bytes(again)) == 2
        assert [v for _, v in read_all(replica)] == [b"p0", b"p0 again"]
        replica.become_leader(1)
        append(replica, batch(b"p0 again", pid=5, seq=0), leader_epoch=1)  # its retry: a duplicate
        assert replica.log_end == 2
    finally:
        replica.close()


def test_replica_batches_must_follow_each_other(tmp_path):
    plog = open_log(tmp_path / "t-0", create=True)
    try:
        first = bytearray(batch(b"a"))
        second = bytearray(batch(b"b"))
        second[:8] = batch_codec.base_offset_header(5)
        with pytest.raises(InvalidRequestError, match="starts at offset 5.*one before ends at 1"):
            plog.append_replica(bytes(first + second))
        assert plog.log_end == 0 and read_all(plog) == []
    finally:
        plog.close()


# -- truncation ----------------------------------------------------------------------------------------
def fill(plog: PartitionLog, n: int, epoch: int, first_seq: int = 0) -> None:
    """n batches of 2 records, each from idempotent producer 7, stamped with epoch."""
    for i in range(n):
        seq = first_seq + 2 * i
        append(plog, batch(b"v%05d" % seq + b"x" * 200, b"w%05d" % seq, pid=7, seq=seq), leader_epoch=epoch)


def test_truncate_to_cuts_across_segments_and_the_log_goes_on(tmp_path):
    plog = open_log(tmp_path / "t-0", create=True)
    plog.become_leader(1)
    fill(plog, 30, 1)
    plog.become_leader(2)
    fill(plog, 30, 2, first_seq=60)
    assert plog.log_end == 120 and len(plog.segments()) >= 4
    before = read_all(plog)
    bases = [s.base_offset for s in plog.segments()]
    target = bases[1] + 3  # inside a batch (2 records each, segment bases are even)
    assert target % 2 == 1
    with pytest.raises(InvalidRequestError, match="below the log start"):
        plog.truncate_to(-1)
    assert plog.truncate_to(500) == 120  # at or past the end: nothing to cut
    assert plog.truncate_to(target) == target - 1
    assert plog.log_end == target - 1 and plog.offset_range()[1:3] == (target - 1, target - 1)
    assert read_all(plog) == before[: target - 1]
    assert [s.base_offset for s in plog.segments()] == bases[:2]
    names = os.listdir(tmp_path / "t-0")
    assert not any(n.startswith(f"{b:020d}") for b in bases[2:] for n in names)
    assert plog.leader_epochs.entries() == [(1, 0)]  # epoch 2 started at 60, past the cut
    # producer 7's last kept batch is the one ending at target - 2: its sequence continues from there
    with pytest.raises(OutOfOrderSequenceError):
        append(plog, batch(b"lost", pid=7, seq=target + 1))
    plog.become_leader(3)
    assert plog.leader_epochs.entries() == [(1, 0), (3, target - 1)]
    assert append(plog, batch(b"new0", b"new1", pid=7, seq=target - 1), leader_epoch=3) == (target - 1, target)
    fill(plog, 20, 3, first_seq=target + 1)
    after = read_all(plog)
    assert after[: target - 1] == before[: target - 1] and after[target - 1 : target + 1] == [
        (target - 1, b"new0"),
        (target, b"new1"),
    ]
    assert [o for o, _ in after] == list(range(len(after)))
    crashed = str(tmp_path / "crashed")
    shutil.copytree(tmp_path / "t-0", crashed)  # what a kill -9 leaves (the page cache included)
    plog.close()
    for path, clean in ((tmp_path / "t-0", True), (crashed, False)):
        reopened = open_log(path, clean=clean)
        try:
            assert read_all(reopened) == after
            assert reopened.leader_epochs.entries() == [(1, 0), (3, target - 1)]
            assert crc_and_continuity_ok(raw(reopened), 0)
        finally:
            reopened.close()


def test_truncate_to_a_segment_base_and_to_the_log_start(tmp_path):
    plog = open_log(tmp_path / "t-0", create=True)
    try:
        fill(plog, 40, 1)
        bases = [s.base_offset for s in plog.segments()]
        assert plog.truncate_to(bases[2]) == bases[2]
        assert [s.base_offset for s in plog.segments()] == bases[:3] and plog.segments()[-1].size == 0
        assert plog.truncate_to(0) == 0
        assert read_all(plog) == [] and len(plog.segments()) == 1
        append(plog, batch(b"again"))
        assert read_all(plog) == [(0, b"again")]
    finally:
        plog.close()
    reopened = open_log(tmp_path / "t-0", clean=True)
    try:
        assert read_all(reopened) == [(0, b"again")]
    finally:
        reopened.close()


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_a_reader_holding_a_view_of_cut_records_does_not_crash(tmp_path, fsync):
    plog = open_log(tmp_path / "t-0", fsync, create=True)
    try:
        fill(plog, 30, 1)
        view = plog.peek(20, 1 << 20)
        assert view is not None and len(view.data)
        plog.truncate_to(10)
        # the bytes may read as zeros now, but reading them is safe (no SIGBUS), and new reads stop at the cut
        bytes(view.data)
        assert [o for o, _ in read_all(plog)] == list(range(10))
        with pytest.raises(Exception, match="out of range"):
            plog.peek(20, 100)
    finally:
        plog.close()


class Crash(BaseException):
    """The process dies here: the call it interrupts never happens."""


class CrashingFS(FileSystem):
    """Dies at the countdown-th file system change (after `armed` is set)."""

    def __init__(self) -> None:
        super().__init__()
        self.countdown = -1

    def _step(self) -> None:
        if self.countdown == 0:
            raise Crash()
        if self.countdown > 0:
            self.countdown -= 1

    def write_in_place(self, *args, **kwargs):
        self._step()
        return super().write_in_place(*args, **kwargs)

    def write_file_atomic(self, *args, **kwargs):
        self._step()
        return super().write_file_atomic(*args, **kwargs)

    def remove(self, *args, **kwargs):
        self._step()
        return super().remove(*args, **kwargs)

    def truncate(self, *args, **kwargs):
        self._step()
        return super().truncate(*args, **kwargs)

    def pwrite(self, *args, **kwargs):
        self._step()
        return super().pwrite(*args, **kwargs)

    def pwritev(self, *args, **kwargs):
        self._step()
        return super().pwritev(*args, **kwargs)

    def fsync_dir(self, *args, **kwargs):
        self._step()
        return super().fsync_dir(*args, **kwargs)


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_a_crash_anywhere_in_truncate_to_leaves_a_log_that_opens(tmp_path, fsync):
    """Each file system change of truncate_to in turn is where the process dies; the files it leaves
    open (recovery refuses nothing) to a gapless log from offset 0 that kept at least the records
    below the cut, and whose epochs start below its end."""
    step = 0
    while True:
        fs = CrashingFS()
        live = tmp_path / f"live{step}"
        plog = open_log(live, fsync, create=True, fs=fs)
        plog.become_leader(1)
        fill(plog, 30, 1)
        plog.become_leader(2)
        fill(plog, 30, 2, first_seq=60)
        before = read_all(plog)
        assert len(plog.segments()) >= 4  # so that several segments go
        target = plog.segments()[1].base_offset + 1
        fs.countdown = step
        try:
            cut = plog.truncate_to(target)
            finished = True
        except Crash:
            finished = False
        crashed = str(tmp_path / f"crashed{step}")
        shutil.copytree(live, crashed)
        plog.close_files()
        reopened = open_log(crashed, clean=False)
        try:
            got = read_all(reopened)
            assert got == before[: len(got)] and len(got) >= target - 1, f"crash at change {step}"
            entries = reopened.leader_epochs.entries()
            assert all(start < max(reopened.log_end, 1) for _, start in entries)
            for base, epoch in stamped_epochs(raw(reopened)):  # each record's epoch is the one recorded for it
                assert epoch == max((e for e, start in entries if start <= base), default=-1), f"at change {step}"
            if finished:
                assert got == before[:cut]
        finally:
            reopened.close()
        if finished:
            break
        step += 1
    assert step > 5  # the test went through the steps it means to


# -- the replicated high watermark ---------------------------------------------------------------------
def test_the_cap_bounds_reads_and_raising_it_wakes_waiters(tmp_path):
    plog = open_log(tmp_path / "t-0", create=True)
    woken = []
    plog.add_listener(lambda: woken.append(plog.offsets.high_watermark))
    try:
        append(plog, batch(b"solo"))
        assert plog.offset_range()[2] == 1  # no cap: as a single node
        plog.set_replicated_high_watermark(1)
        for i in range(3):
            append(plog, batch(b"a%d" % i, b"b%d" % i, b"c%d" % i))  # offsets 1-3, 4-6, 7-9
        assert plog.offset_range() == (0, 10, 1, plog.offset_range()[3])
        assert read_all(plog) == [(0, b"solo")]
        assert plog.info().high_watermark == 1
        # past the cap but written: nothing yet (a consumer waits there); past the log end: out of range
        assert plog.peek(2, 100).data.nbytes == 0 and plog.peek(10, 100).data.nbytes == 0
        with pytest.raises(Exception, match="out of range"):
            plog.peek(11, 100)
        plog.set_replicated_high_watermark(5)  # inside the batch 4-6: rounds down to its start
        assert plog.offset_range()[2] == 4
        assert [o for o, _ in read_all(plog)] == [0, 1, 2, 3]
        assert plog.offset_for_time(1000) == 0
        plog.set_replicated_high_watermark(2)  # lower: ignored
        assert plog.replicated_high_watermark == 5 and plog.offset_range()[2] == 4
        got = []
        waiter = threading.Thread(target=lambda: got.append(plog.wait_for_data(6, 10)))
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive()  # 6 is below the log end but beyond the cap
        woken.clear()
        plog.set_replicated_high_watermark(10)
        waiter.join(10)
        assert got == [True] and woken == [10]
        assert [o for o, _ in read_all(plog)] == list(range(10))
        append(plog, batch(b"d"))
        assert plog.offset_range()[2] == 10  # the cap holds new records back too
        plog.set_replicated_high_watermark(None)
        assert plog.offset_range()[2] == 11
    finally:
        plog.close()


def test_the_cap_never_publishes_more_than_the_fsync_policy(tmp_path):
    plog = open_log(tmp_path / "t-0", "always", create=True)
    try:
        plog.set_replicated_high_watermark(100)
        _, last = append(plog, batch(b"a", b"b"), sync=False)
        assert plog.offset_range()[2] == 0  # written, not fsynced: not visible
        plog.sync(last + 1)
        assert plog.offset_range()[2] == 2
    finally:
        plog.close()


def test_the_cap_spans_segments_and_truncation_lowers_it(tmp_path):
    plog = open_log(tmp_path / "t-0", create=True)
    try:
        plog.set_replicated_high_watermark(0)
        fill(plog, 40, 1)
        segments = plog.segments()
        assert len(segments) >= 3
        second = segments[1].base_offset
        plog.set_replicated_high_watermark(second)
        assert plog.offset_range()[2] == second
        assert [o for o, _ in read_all(plog)] == list(range(second))
        plog.set_replicated_high_watermark(second + 5)
        assert plog.offset_range()[2] == second + 4
        # retention may not take what readers cannot see yet
        assert plog.delete_before(10_000) == 1
        assert plog.offsets.log_start == second
        plog.truncate_to(second + 2)
        assert plog.replicated_high_watermark == second + 2 and plog.offset_range()[2] == second + 2
        append(plog, batch(b"more"))
        assert plog.offset_range()[2] == second + 2
        plog.set_replicated_high_watermark(plog.log_end)
        assert read_all(plog)[-1] == (second + 2, b"more")
    finally:
        plog.close()


# -- check and repair --------------------------------------------------------------------------------
def test_check_reports_a_damaged_epoch_file_and_repair_rebuilds_it_from_the_log(tmp_path):
    from tidelog import Engine
    from tidelog.examine import check
    from tidelog.repair import repair

    data_dir = str(tmp_path / "data")
    with Engine.open(data_dir) as eng:
        eng.create_topic("t", 1, segment_bytes=4096)
        eng.produce("t", [b"single node"])
    plog = open_log(os.path.join(data_dir, "t-0"), clean=True)
    plog.become_leader(3)
    fill(plog, 20, 3)
    plog.become_leader(4)  # wrote nothing: not in the log
    plog.become_leader(5)
    fill(plog, 5, 5, first_seq=40)
    end = plog.log_end
    plog.close()
    assert [p.problems for p in check(data_dir)] == [[]]  # the file is the partition's, not a stray
    path = os.path.join(data_dir, "t-0", FILE_NAME)
    with open(path, "r+b") as f:
        f.seek(20)
        f.write(b"#")
    [found] = check(data_dir)
    assert found.epochs_damaged and FILE_NAME in found.problems[0]
    assert any(FILE_NAME in action for action in repair(data_dir))
    assert LeaderEpochFile.load(FileSystem(), os.path.dirname(path)).entries() == [(3, 1), (5, 41)]
    assert [p.problems for p in check(data_dir)] == [[]]
    with Engine.open(data_dir) as eng:
        assert eng.list_offsets("t", 0).log_end == end
