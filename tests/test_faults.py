"""Storage faults through the file-system seam: full disk, failing fsync, and group commit."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from tidelog import Engine
from tidelog.errors import DiskFullError, StorageError
from tidelog.storage.fs import FileSystem


class FaultyFS(FileSystem):
    """Fails writes or fsyncs on demand; counts fsyncs of segment logs."""

    def __init__(self) -> None:
        super().__init__()
        self.disk_full = False
        self.fail_fsync = False
        self.fsync_delay_s = 0.0
        self.log_fsyncs = 0
        self._lock = threading.Lock()

    def pwritev(self, fd, buffers, offset, path=""):
        if self.disk_full:
            # tear the write: half of it lands, then the disk is full
            data = b"".join(bytes(b) for b in buffers)
            super().pwritev(fd, [data[: len(data) // 2]], offset, path)
            raise DiskFullError(f"no space left on device while writing {path}", path=path)
        return super().pwritev(fd, buffers, offset, path)

    def open(self, path, create=False):
        if self.disk_full and create:
            raise DiskFullError(f"no space left on device while opening {path}", path=path)
        return super().open(path, create)

    def fsync(self, fd, path=""):
        if path.endswith(".log"):
            with self._lock:
                self.log_fsyncs += 1
            if self.fsync_delay_s:
                time.sleep(self.fsync_delay_s)  # a slow disk, so that producers overlap an fsync
            if self.fail_fsync:
                raise StorageError(f"syncing {path} failed: Input/output error", path=path)
        return super().fsync(fd, path)


def values_of(eng, topic="t", partition=0):
    out, offset = [], 0
    while True:
        result = eng.fetch(topic, partition, offset, max_bytes=1 << 24)
        if not result:
            return out
        out += [r.value for r in result]
        offset = result.next_offset


def test_disk_full_fails_the_produce_and_leaves_the_log_consistent(data_dir):
    fs = FaultyFS()
    with Engine.open(data_dir, fs=fs) as eng:
        eng.create_topic("t")
        eng.produce("t", [b"a", b"b"])
        fs.disk_full = True
        with pytest.raises(DiskFullError):
            eng.produce("t", [b"c" * 1000] * 10)
        assert eng.list_offsets("t", 0).log_end == 2
        assert values_of(eng) == [b"a", b"b"]
        fs.disk_full = False  # space freed
        assert eng.produce("t", [b"d"])[0].base_offset == 2
        assert values_of(eng) == [b"a", b"b", b"d"]
    with Engine.open(data_dir) as eng:
        assert values_of(eng) == [b"a", b"b", b"d"]


def test_disk_full_while_rolling_keeps_appending_to_the_old_segment_once_space_returns(data_dir):
    fs = FaultyFS()
    with Engine.open(data_dir, fs=fs) as eng:
        eng.create_topic("t", segment_bytes=4096)
        while len([f for f in os.listdir(os.path.join(data_dir, "t-0")) if f.endswith(".log")]) < 2:
            eng.produce("t", [b"x" * 500])
        written = eng.list_offsets("t", 0).log_end
        fs.disk_full = True
        with pytest.raises(DiskFullError):
            for _ in range(20):  # until a roll needs a new segment file
                eng.produce("t", [b"y" * 500])
        assert values_of(eng)[:written] == [b"x" * 500] * written
        fs.disk_full = False
        before = eng.list_offsets("t", 0).log_end
        for _ in range(10):
            eng.produce("t", [b"z" * 500])
        assert eng.list_offsets("t", 0).log_end == before + 10
        assert values_of(eng)[-10:] == [b"z" * 500] * 10


def test_after_a_failed_fsync_the_partition_refuses_writes_and_the_next_open_recovers(tmp_path):
    data_dir = str(tmp_path / "d")
    fs = FaultyFS()
    eng = Engine.open(data_dir, fs=fs, fsync="always")
    eng.create_topic("t")
    eng.produce("t", [b"durable"])
    fs.fail_fsync = True
    with pytest.raises(StorageError):
        eng.produce("t", [b"not acknowledged"])
    fs.fail_fsync = False
    with pytest.raises(StorageError, match="refuses writes"):
        eng.produce("t", [b"refused"])
    assert values_of(eng) == [b"durable"]  # the unacknowledged record is not visible either
    eng.close()
    assert not os.path.exists(os.path.join(data_dir, ".clean_shutdown"))
    with Engine.open(data_dir) as again:
        assert not again.clean_start
        assert values_of(again)[0] == b"durable"
        again.produce("t", [b"works again"])


def test_concurrent_producers_share_fsyncs_under_always(data_dir):
    fs = FaultyFS()
    with Engine.open(data_dir, fs=fs, fsync="always") as eng:
        eng.create_topic("t")
        fs.fsync_delay_s = 0.005
        fs.log_fsyncs = 0
        produced = []

        def producer(tid):
            for seq in range(25):
                res = eng.produce("t", [b"%d-%d" % (tid, seq)], partition=0)[0]
                # acknowledged under "always" means already fsynced
                assert eng.list_offsets("t", 0).flushed > res.last_offset
                produced.append(res)

        threads = [threading.Thread(target=producer, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(produced) == 200
        # without sharing there would be one fsync per produce
        assert fs.log_fsyncs < 0.75 * len(produced), f"{fs.log_fsyncs} fsyncs for {len(produced)} produces"


def test_a_snapshot_taken_during_disk_full_recovers_to_the_acknowledged_records(tmp_path):
    data_dir = str(tmp_path / "d")
    fs = FaultyFS()
    eng = Engine.open(data_dir, fs=fs)
    eng.create_topic("t", segment_bytes=1 << 16)
    eng.produce("t", [b"a"] * 3)
    fs.disk_full = True
    with pytest.raises(DiskFullError):
        eng.produce("t", [b"b" * 100] * 30)  # half of this batch lands on disk: a torn write
    snap = str(tmp_path / "snap")
    shutil.copytree(data_dir, snap)
    fs.disk_full = False
    eng.close()
    with Engine.open(snap) as crashed:
        assert values_of(crashed) == [b"a"] * 3


def test_a_failed_roll_leaves_no_stale_segment_that_later_costs_data(tmp_path):
    data_dir = str(tmp_path / "d")
    fs = FaultyFS()
    with Engine.open(data_dir, fs=fs, fsync="always") as eng:
        eng.create_topic("t", segment_bytes=4096)
        eng.produce("t", [b"a" * 1000] * 3)  # 3 KB in the first segment
        fs.disk_full = True
        with pytest.raises(DiskFullError):
            eng.produce("t", [b"b" * 1500])  # needs a new segment: creating it fails
        fs.disk_full = False
        eng.produce("t", [b"c" * 100])  # fits the old segment
        for _ in range(10):
            eng.produce("t", [b"d" * 1500])  # rolls at another base offset now
        expected = values_of(eng)
    assert len(expected) == 14
    with Engine.open(data_dir) as again:
        assert values_of(again) == expected


def test_a_flush_racing_a_failed_seal_does_not_vouch_for_the_data(data_dir):
    """Before: a flush (group commit or the interval flusher, outside the partition lock) that ran
    while a roll's seal failed succeeded on the same descriptor (the kernel reports a failed
    writeback once, to the seal) and counted, and under fsync="always" acknowledged, records whose
    durability that failure had put in doubt."""
    entered, release = threading.Event(), threading.Event()

    class GatedFS(FileSystem):
        gated = fail_seal = False

        def fsync(self, fd, path=""):
            if self.gated and path.endswith(".log") and threading.current_thread().name == "flusher":
                self.gated = False
                entered.set()
                release.wait(30)
            elif self.fail_seal and path.endswith(".log"):
                self.fail_seal = False
                raise StorageError(f"syncing {path} failed: Input/output error", path=path)
            return super().fsync(fd, path)

    fs = GatedFS()
    eng = Engine.open(data_dir, fs=fs, fsync="interval", fsync_interval_ms=3_600_000)
    try:
        eng.create_topic("t", 1, segment_bytes=4096)
        plog = eng._topics["t"].partitions[0]
        eng.produce("t", [b"x" * 100])
        fs.gated = True
        outcome: list = []

        def flush():
            try:
                plog.sync()
                outcome.append("synced")
            except StorageError as exc:
                outcome.append(exc)

        flusher = threading.Thread(target=flush, name="flusher")
        flusher.start()
        assert entered.wait(30)  # the flush is under way
        fs.fail_seal = True
        with pytest.raises(StorageError):
            for _ in range(60):  # a roll, whose seal fails
                eng.produce("t", [b"y" * 100])
        release.set()
        flusher.join(timeout=30)
        assert not flusher.is_alive()
        assert isinstance(outcome[0], StorageError), outcome
        assert plog.offsets.flushed == 0
    finally:
        release.set()
        eng.close()  # logs the partition's failure; the next open recovers it


def test_a_sync_after_a_failed_close_does_not_vouch_for_data_written_during_it(tmp_path):
    """Before: sync() on a closed partition returned as if the data were durable, so records written
    while the close's fsync ran, which then failed, were acknowledged (group commit appends first,
    then syncs)."""
    from tidelog.codec import batch as batch_codec
    from tidelog.config import TopicConfig
    from tidelog.partition.partition_log import PartitionLog

    entered, release = threading.Event(), threading.Event()

    class FailingClose(FileSystem):
        armed = False

        def fsync(self, fd, path=""):
            if self.armed and path.endswith(".log"):
                self.armed = False
                entered.set()
                release.wait(30)
                raise StorageError(f"syncing {path} failed: Input/output error", path=path)
            return super().fsync(fd, path)

    fs = FailingClose()
    plog = PartitionLog(fs, str(tmp_path / "t-0"), TopicConfig(), "always", lambda: 0, clean=False, create=True)
    data = batch_codec.build_batch([b"x"], timestamp=0)
    plog.append([(data, batch_codec.validate(data))], sync=False)  # so that the close has to fsync
    fs.armed = True
    closer = threading.Thread(target=lambda: pytest.raises(StorageError, plog.close))
    closer.start()
    assert entered.wait(30)
    _, last = plog.append([(data, batch_codec.validate(data))], sync=False)  # written; to be synced
    release.set()
    closer.join(timeout=30)
    assert not closer.is_alive()
    with pytest.raises(StorageError):
        plog.sync(last + 1)


def test_append_many_answers_per_request_when_a_topic_goes_before_its_fsync(data_dir):
    """A topic deleted between append_many's writes and their shared fsync fails its own requests
    (they were not made durable); the others are acknowledged, and nothing escapes as an exception."""
    from tidelog.codec import batch as batch_codec
    from tidelog.errors import EngineClosedError

    class DeleteDuringFsync(FileSystem):
        engine = None

        def fsync(self, fd, path=""):
            if self.engine is not None and path.endswith(".log") and f"{os.sep}a-0{os.sep}" in path:
                eng, self.engine = self.engine, None
                deleter = threading.Thread(target=eng.delete_topic, args=("b",))
                deleter.start()
                deleter.join(timeout=30)
            return super().fsync(fd, path)

    fs = DeleteDuringFsync()
    with Engine.open(data_dir, fs=fs, fsync="always") as eng:
        eng.create_topic("a", 1)
        eng.create_topic("b", 1)
        data = batch_codec.build_batch([b"x"], timestamp=0)
        fs.engine = eng
        ok, gone = eng.append_many([("a", 0, data), ("b", 0, data)])
        assert ok.base_offset == 0
        assert isinstance(gone, EngineClosedError)


def test_a_retention_whose_unlink_fails_still_moves_the_log_start_and_the_next_open_finishes_it(data_dir, clock):
    """Before: the segments were out of the log but the log start had not moved, so a read below the
    new first segment silently returned its later offsets."""
    from tidelog.errors import OffsetOutOfRangeError, StorageError
    from tidelog.storage.fs import FileSystem

    class UnlinkFails(FileSystem):
        armed = False

        def remove(self, path):
            if self.armed and path.endswith(".log"):
                raise StorageError(f"deleting {path} failed: Input/output error", path=path)
            super().remove(path)

    fs = UnlinkFails()
    with Engine.open(data_dir, clock=clock, fs=fs) as eng:
        eng.create_topic("t", 1, segment_bytes=4096)
        for i in range(12):
            eng.produce("t", [b"r%02d" % i * 1000])
        fs.armed = True
        assert eng.delete_records("t", 0, 6) > 0
        start = eng.list_offsets("t", 0).log_start
        assert start > 0
        with pytest.raises(OffsetOutOfRangeError):
            eng.fetch("t", 0, 0)
        assert [r.value for r in eng.fetch("t", 0, start)][0] == b"r%02d" % start * 1000
        fs.armed = False
    leftovers = sorted(f for f in os.listdir(os.path.join(data_dir, "t-0")) if f.endswith(".log"))
    assert int(leftovers[0][:20]) < start  # the failed unlink left it
    with Engine.open(data_dir, clock=clock) as eng:
        assert eng.list_offsets("t", 0).log_start == start
    assert min(int(f[:20]) for f in os.listdir(os.path.join(data_dir, "t-0")) if f.endswith(".log")) == start
