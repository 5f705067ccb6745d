"""Corruption on disk: flipped bits, truncations and holes in logs, indexes and the offset store.

What can be rebuilt (indexes) is rebuilt; a torn tail past the last fsync is cut; invalid data that
was durable (a sealed segment, or the active one before its recovery point) is refused on open or on
read with CorruptLogError naming `tidelog check --repair`, which then cuts the log on request.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys

import pytest

from tidelog import Engine
from tidelog.errors import CorruptLogError
from tidelog.examine import check, dump_batches
from tidelog.groups.offset_store import OFFSETS_TOPIC, OffsetStore
from tidelog.repair import repair
from tidelog.storage.recovery import RECOVERY_POINT_FILE

BATCHES = 40  # per partition: five records of ~105 bytes each, so ~560-byte batches in 8 KiB segments


def value(p: int, i: int, j: int) -> bytes:
    return b"p%d-b%03d-r%d-" % (p, i, j) + b"x" * 96


@pytest.fixture
def built(data_dir, clock):
    """Two partitions of three or more segments each, closed cleanly."""
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", 2, segment_bytes=8192, index_interval_bytes=256)
        for i in range(BATCHES):
            for p in (0, 1):
                eng.produce("t", [value(p, i, j) for j in range(5)], partition=p)
            clock.advance(1)
    return data_dir


def seg_path(data_dir, partition, n, suffix=".log", topic="t"):
    d = os.path.join(data_dir, f"{topic}-{partition}")
    return os.path.join(d, sorted(f for f in os.listdir(d) if f.endswith(".log"))[n][:-4] + suffix)


def flip(path, pos):
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([b ^ 0x10]))


def values(eng, partition, topic="t"):
    out, offset = [], eng.list_offsets(topic, partition).log_start
    while True:
        r = eng.fetch(topic, partition, offset, max_bytes=1 << 20)
        if not r:
            return out
        out += [(rec.offset, rec.value) for rec in r]
        offset = r.next_offset


def expected_values(p, upto=None):
    out = [(5 * i + j, value(p, i, j)) for i in range(BATCHES) for j in range(5)]
    return out if upto is None else out[:upto]


def digest(directory):
    h = {}
    for root, _, files in os.walk(directory):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                h[os.path.relpath(os.path.join(root, f), directory)] = hashlib.sha256(fh.read()).hexdigest()
    return h


def tidelog(*args):
    return subprocess.run([sys.executable, "-m", "tidelog", *args], capture_output=True, text=True, timeout=60)


def test_a_flipped_bit_inside_a_sealed_segment_is_refused_when_read_and_the_rest_is_served(built, clock):
    flip(seg_path(built, 1, 0), 300)  # inside the first batch: not looked at by a clean open
    with Engine.open(built, clock=clock) as eng:
        with pytest.raises(CorruptLogError) as err:
            eng.fetch("t", 1, 0)
        assert "CRC" in err.value.message and "tidelog check --repair" in err.value.message
        later = eng.list_offsets("t", 1).log_end - 5
        assert [r.value for r in eng.fetch("t", 1, later)] == [value(1, BATCHES - 1, j) for j in range(5)]
        assert values(eng, 0) == expected_values(0)


def test_invalid_data_at_the_end_of_a_sealed_segment_refuses_to_open_and_changes_nothing(built, clock):
    path = seg_path(built, 1, 0)
    flip(path, os.path.getsize(path) - 20)  # the last batch: validated on every open
    before = digest(os.path.join(built, "t-1"))
    with pytest.raises(CorruptLogError) as err:
        Engine.open(built, clock=clock)
    assert "t-1" in err.value.message and "--repair" in err.value.message
    assert digest(os.path.join(built, "t-1")) == before
    out = tidelog(
        "serve", "--data-dir", built, "--port", "0", "--metrics-port", "-1"
    )  # no fixed port: 9464 may be taken
    errors = [line for line in out.stderr.splitlines() if "is corrupt" in line]  # the rest: INFO log lines
    assert out.returncode == 1 and len(errors) == 1 and "t-1 is corrupt" in errors[0], out.stderr


def test_check_repair_cuts_the_log_at_the_damage_and_the_broker_opens_again(built, clock):
    path = seg_path(built, 1, 0)
    flip(path, os.path.getsize(path) - 20)
    out = tidelog("check", "--repair", "--data-dir", built)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "repaired t[1]: log cut at offset" in out.stderr and "later segment(s)" in out.stderr
    [cut] = [int(line.split("offset ")[1].split()[0]) for line in out.stderr.splitlines() if "cut at" in line]
    assert 0 < cut < 5 * BATCHES and cut % 5 == 0
    with Engine.open(built, clock=clock) as eng:
        assert values(eng, 1) == expected_values(1, cut)
        assert values(eng, 0) == expected_values(0)
        eng.produce("t", [b"after repair"], partition=1)
        assert [r.value for r in eng.fetch("t", 1, cut)] == [b"after repair"]
    assert all(not r.problems for r in check(built))


def test_repair_refuses_while_a_broker_has_the_directory_open(built, clock):
    with Engine.open(built, clock=clock):
        out = tidelog("check", "--repair", "--data-dir", built)
    assert out.returncode == 1 and "in use by another process" in out.stderr


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_shortened_or_missing_middle_segment_is_refused_not_papered_over(built, clock, damage):
    path = seg_path(built, 0, 1)
    if damage == "truncate":
        os.truncate(path, os.path.getsize(path) // 2)
    else:
        for suffix in (".log", ".index", ".timeindex"):
            os.remove(path[:-4] + suffix)
    with pytest.raises(CorruptLogError):
        Engine.open(built, clock=clock)
    assert repair(built)
    with Engine.open(built, clock=clock) as eng:
        kept = values(eng, 0)
        assert kept == expected_values(0, len(kept)) and 0 < len(kept) < 5 * BATCHES


def test_a_wrong_index_entry_costs_a_scan_not_a_wrong_answer(built, clock, caplog):
    index = seg_path(built, 0, 0, ".index")
    with open(index, "rb") as f:
        original = f.read()
    with open(index, "r+b") as f:
        f.seek(12)
        f.write(b"\x00\x00\x00\x07")  # entry 1 still sorts, but no batch starts at byte 7
    with caplog.at_level(logging.WARNING, "tidelog.storage"), Engine.open(built, clock=clock) as eng:
        for offset in range(60):
            got = next(r.value for r in eng.fetch("t", 0, offset) if r.offset == offset)
            assert got == expected_values(0)[offset][1], offset
        assert values(eng, 0) == expected_values(0)
    assert "do not match the log" in caplog.text
    with Engine.open(built, clock=clock) as eng:  # the damaged index was dropped, so this open rebuilt it
        assert values(eng, 0) == expected_values(0)
    with open(index, "rb") as f:
        assert f.read() == original


def test_a_wrong_index_entry_keeps_its_segment_readable_after_the_map_cache_unmaps_it(built, clock):
    """Before: finding the wrong entry removed the segment's index files, and once the map cache had
    unmapped the segment, every later read of it failed with StorageError (mapping the removed
    index again) until a restart."""
    with open(seg_path(built, 0, 0, ".index"), "r+b") as f:
        f.seek(12)
        f.write(b"\x00\x00\x00\x07")  # entry 1 still sorts, but no batch starts at byte 7
    with Engine.open(built, clock=clock, max_mapped_segments=1) as eng:
        second = 100  # in segment 1: reading it makes the cache unmap segment 0
        for offset in [*range(60), second, *range(60), second]:
            got = next(r.value for r in eng.fetch("t", 0, offset) if r.offset == offset)
            assert got == expected_values(0)[offset][1], offset
        assert values(eng, 0) == expected_values(0)


@pytest.mark.parametrize("suffix", [".index", ".timeindex"])
def test_truncated_or_garbled_index_files_are_rebuilt_identically(built, clock, suffix):
    paths = [seg_path(built, 0, n, suffix) for n in range(2)]
    originals = []
    for path in paths:
        with open(path, "rb") as f:
            originals.append(f.read())
    os.truncate(paths[0], len(originals[0]) - 3)
    with open(paths[1], "r+b") as f:
        f.seek(12)
        f.write(b"\xff" * 8)  # a negative position or a falling timestamp in the second entry
    with Engine.open(built, clock=clock) as eng:
        assert values(eng, 0) == expected_values(0)
        ts = next(iter(eng.fetch("t", 0, 100))).timestamp
        assert eng.list_offsets("t", 0, at=ts) == 100 - 100 % 5
    for path, original in zip(paths, originals):
        with open(path, "rb") as f:
            assert f.read() == original


def test_an_unclean_stop_with_damage_before_the_recovery_point_is_refused(tmp_path, clock):
    live = str(tmp_path / "live")
    eng = Engine.open(live, clock=clock, fsync="always")
    eng.create_topic("t", segment_bytes=1 << 20)
    for i in range(20):
        eng.produce("t", [value(0, i, j) for j in range(5)])
    snap = str(tmp_path / "snap")
    shutil.copytree(live, snap)  # what the files hold if the process died right now
    eng.close()
    log = seg_path(snap, 0, 0)
    with open(log, "r+b") as f:
        f.seek(8)
        size = int.from_bytes(f.read(4), "big") + 12
    # zero the first batch's header: a lost page in the durable part, not a torn write
    with open(log, "r+b") as f:
        f.write(b"\x00" * 61)
    assert os.path.exists(os.path.join(snap, "t-0", RECOVERY_POINT_FILE))
    with pytest.raises(CorruptLogError) as err:
        Engine.open(snap, clock=clock)
    assert "before the recovery point" in err.value.message and size > 61


def test_a_torn_offset_store_tail_keeps_the_earlier_commits(tmp_path, clock):
    live = str(tmp_path / "live")
    eng = Engine.open(live, clock=clock)
    store = OffsetStore(eng)
    for n in range(1, 6):
        store.commit("g", {("t", 0): 10 * n})
    snap = str(tmp_path / "snap")
    shutil.copytree(live, snap)  # the process dies here, before any fsync
    eng.close()
    directory = os.path.join(snap, f"{OFFSETS_TOPIC}-0")
    if os.path.exists(os.path.join(directory, RECOVERY_POINT_FILE)):
        os.remove(os.path.join(directory, RECOVERY_POINT_FILE))
    *_, last = dump_batches(directory)
    flip(seg_path(snap, 0, 0, topic=OFFSETS_TOPIC), last.pos + last.size - 3)
    with Engine.open(snap, clock=clock) as eng2:
        assert eng2.list_offsets(OFFSETS_TOPIC, 0).log_end == 4
        assert OffsetStore(eng2).fetch("g")[("t", 0)].offset == 40


def test_a_flipped_bit_in_a_cleanly_closed_offset_store_is_refused_then_repaired(tmp_path, clock):
    d = str(tmp_path / "d")
    with Engine.open(d, clock=clock) as eng:
        store = OffsetStore(eng)
        for n in range(1, 4):
            store.commit("g", {("t", 0): n})
    log = seg_path(d, 0, 0, topic=OFFSETS_TOPIC)
    flip(log, os.path.getsize(log) - 5)
    with pytest.raises(CorruptLogError) as err:
        Engine.open(d, clock=clock)
    assert OFFSETS_TOPIC in err.value.message
    assert repair(d)
    with Engine.open(d, clock=clock) as eng:
        assert OffsetStore(eng).fetch("g")[("t", 0)].offset == 2


def test_the_server_answers_a_read_of_corrupt_data_with_data_loss_and_keeps_serving(built):
    import grpc

    from tests.server_process import ServerProcess
    from tidelog.client import Consumer
    from tidelog.v1 import tidelog_pb2 as pb

    flip(seg_path(built, 1, 0), 300)
    srv = ServerProcess(built).start()
    try:
        with grpc.insecure_channel(srv.target) as channel:
            fetch = channel.unary_unary(
                "/tidelog.v1.Consumer/FetchRecords",
                request_serializer=pb.FetchRequest.SerializeToString,
                response_deserializer=pb.FetchRecordsResponse.FromString,
            )
            with pytest.raises(grpc.RpcError) as err:
                fetch(pb.FetchRequest(topic="t", partition=1, offset=0), timeout=10)
            assert err.value.code() == grpc.StatusCode.DATA_LOSS and "--repair" in err.value.details()
            assert dict(err.value.trailing_metadata())["tidelog-error-code"] == "1002"
            ok = fetch(pb.FetchRequest(topic="t", partition=0, offset=0), timeout=10)
            assert ok.records[0].value == value(0, 0, 0)
        with Consumer(srv.target, "t", partition=1, offset=0) as consumer:
            with pytest.raises(CorruptLogError):
                consumer.poll(timeout_s=10)
    finally:
        assert srv.stop() == 0, srv.log()


def test_a_time_index_entry_off_by_one_bit_is_found_by_check_and_rebuilt_by_repair(built):
    path = seg_path(built, 0, 0, ".timeindex")
    with open(path, "rb") as f:
        original = f.read()
    last = len(original) - 12
    with open(path, "r+b") as f:  # the last entry 1 ms later than the log says: still in order
        f.seek(last)
        f.write((int.from_bytes(original[last : last + 8], "big") + 1).to_bytes(8, "big"))
    [problems] = [r.problems for r in check(built) if r.partition == 0]
    assert problems == ["segment 00000000000000000000: time index entries do not match the log's timestamps"]
    assert repair(built) == ["t[0]: indexes of segment 00000000000000000000 rebuilt"]
    with open(path, "rb") as f:
        assert f.read() == original


def test_a_refused_clean_open_stays_clean_so_retrying_never_cuts_durable_data(data_dir, clock):
    from tidelog.storage import recovery
    from tidelog.storage.fs import FileSystem

    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t")
        for i in range(20):
            eng.produce("t", [b"v%03d" % i * 10], partition=0)
    directory = os.path.join(data_dir, "t-0")
    # an older recovery point, as a power cut may leave
    recovery.write_checkpoint(FileSystem(), directory, recovery.Checkpoint(0, 0, 0))
    log = seg_path(data_dir, 0, 0)
    flip(log, os.path.getsize(log) // 2)
    for _ in range(2):  # the second open must refuse too, not take the unclean path and cut the log
        with pytest.raises(CorruptLogError):
            Engine.open(data_dir, clock=clock)
        assert os.path.exists(os.path.join(data_dir, ".clean_shutdown"))
    assert repair(data_dir)
    with Engine.open(data_dir, clock=clock) as eng:
        assert 0 < eng.list_offsets("t", 0).log_end < 20


def test_a_refused_clean_open_on_a_full_disk_stays_clean_too(data_dir, clock):
    # Before: putting the marker back needed a new file; on a full disk that failed, the
    # DiskFullError replaced the refusal, and the next open took the unclean path, which trusts an
    # older recovery point and cut the durable (damaged) records as a torn tail.
    from tidelog.errors import DiskFullError
    from tidelog.storage import recovery
    from tidelog.storage.fs import FileSystem

    class FullDisk(FileSystem):
        def write_file_atomic(self, path, data, durable=True):
            raise DiskFullError(f"no space left on device while writing {path}", path=path)

    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t")
        for i in range(20):
            eng.produce("t", [b"v%03d" % i * 10], partition=0)
    directory = os.path.join(data_dir, "t-0")
    recovery.write_checkpoint(FileSystem(), directory, recovery.Checkpoint(0, 0, 0))  # an older one
    log = seg_path(data_dir, 0, 0)
    flip(log, os.path.getsize(log) // 2)
    before = digest(directory)
    for fs in (FullDisk(), FullDisk(), FileSystem()):
        with pytest.raises(CorruptLogError):
            Engine.open(data_dir, clock=clock, fs=fs)
        assert os.path.exists(os.path.join(data_dir, ".clean_shutdown"))
    assert digest(directory) == before


def test_a_zeroed_block_inside_the_last_segment_is_refused_found_by_check_and_cut_by_repair(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t")
        for i in range(20):
            eng.produce("t", [b"v%03d" % i * 10], partition=0)
    log = seg_path(data_dir, 0, 0)
    with open(log, "r+b") as f:  # a lost block of zeros in the middle of fsynced data
        f.seek(os.path.getsize(log) // 2)
        f.write(b"\0" * 200)
    with pytest.raises(CorruptLogError, match="zero-filled"):
        Engine.open(data_dir, clock=clock)
    [found] = check(data_dir)
    assert found.cut is not None and "zero-filled" in found.problems[0]
    assert repair(data_dir)
    with Engine.open(data_dir, clock=clock) as eng:
        assert [r.value for r in eng.fetch("t", 0, 0)][:1] == [b"v000" * 10]


def test_a_time_lookup_past_what_is_visible_is_not_taken_for_a_damaged_index(tmp_path):
    """Under fsync="always" a batch is indexed before it is published: its entry is not damage."""
    from tidelog.codec import batch as batch_codec
    from tidelog.config import TopicConfig
    from tidelog.partition.partition_log import PartitionLog
    from tidelog.storage.fs import FileSystem

    plog = PartitionLog(
        FileSystem(),
        str(tmp_path / "t-0"),
        TopicConfig(index_interval_bytes=1),
        "always",
        lambda: 0,
        clean=False,
        create=True,
    )
    try:
        for ts, sync in ((100, True), (250, False), (300, False)):  # the last two: written, not yet fsynced
            data = batch_codec.build_batch([b"x"], timestamp=ts)
            plog.append([(data, batch_codec.validate(data))], sync=sync)
        assert plog.info().high_watermark == 1
        assert plog.offset_for_time(280) is None
        assert not plog.segments()[-1].index_damaged
        assert sorted(os.listdir(plog.directory))[:1] == ["00000000000000000000.index"]
    finally:
        plog.close()


def snapshot_dir(src, dst):
    """A copy of a live data directory, as a SIGKILL would leave it (page cache included)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def test_damage_to_acknowledged_records_in_the_last_segment_is_refused_not_cut(tmp_path, clock):
    # Before: under fsync="always" the recovery point was written at most once a second, so records
    # fsynced and acknowledged after it were taken for a torn tail when damaged, and cut (lost).
    live = str(tmp_path / "live")
    eng = Engine.open(live, clock=clock, fsync="always")
    eng.create_topic("t", 1)
    for i in range(50):
        eng.produce("t", [b"acked %03d " % i + b"x" * 100])  # each returns after its fsync
    size = eng.describe("t").partitions[0].size_bytes
    crashed = snapshot_dir(live, str(tmp_path / "crashed"))
    eng.close()
    flip(seg_path(crashed, 0, 0), size * 3 // 4)  # inside an acknowledged batch, well before the end
    with Engine.open(crashed, clock=clock) as eng:  # durable data is not re-validated at open ...
        assert eng.list_offsets("t", 0).log_end == 50  # ... and nothing was cut
        damaged = served = 0
        for offset in range(50):
            try:
                got = [r.value for r in eng.fetch("t", 0, offset) if r.offset == offset]
                assert got == [b"acked %03d " % offset + b"x" * 100]
                served += 1
            except CorruptLogError as exc:  # the damaged batch is refused when read, naming the repair
                assert "tidelog check --repair" in str(exc)
                damaged += 1
        assert damaged == 1 and served == 49
    assert any("CRC" in p for r in check(crashed) for p in r.problems)


@pytest.mark.parametrize("lost", ["first", "last", "first and last", "all"])
def test_a_missing_first_or_last_segment_file_is_refused_and_repair_accepts_the_loss(built, clock, lost):
    # Before: a lost first .log opened as if retention had moved the log start; a lost last .log
    # opened with a shorter log (acknowledged records gone), both silently.
    directory = os.path.join(built, "t-0")
    bases = sorted(f for f in os.listdir(directory) if f.endswith(".log"))
    gone = {"first": bases[:1], "last": bases[-1:], "first and last": [bases[0], bases[-1]], "all": bases}[lost]
    for name in gone:
        for suffix in (".log", ".index", ".timeindex"):
            os.remove(os.path.join(directory, name[:-4] + suffix))
    before = digest(built)
    with pytest.raises(CorruptLogError, match="incomplete") as err:
        Engine.open(built, clock=clock)
    assert "missing" in str(err.value)
    assert digest(built) == before
    found = {tuple(r.problems) for r in check(built) if r.partition == 0}
    assert any("missing" in p for problems in found for p in problems)
    assert any("accepted as lost" in a for a in repair(built))
    with Engine.open(built, clock=clock) as eng:
        kept = values(eng, 0)
        assert set(kept) <= set(expected_values(0))
        assert values(eng, 1) == expected_values(1)
    assert not any(r.problems for r in check(built))


def test_segments_left_below_the_log_start_by_an_interrupted_retention_are_removed(data_dir, clock):
    from tidelog.storage import recovery
    from tidelog.storage.fs import FileSystem

    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", 1, segment_bytes=4096)
        for i in range(40):
            eng.produce("t", [b"r%03d" % i * 50])
        first_two = eng._topics["t"].partitions[0].segments()[:3]
        new_start = first_two[2].base_offset
    directory = os.path.join(data_dir, "t-0")
    point = recovery.read_checkpoint(FileSystem(), directory)
    # a retention that made the new log start durable, then stopped before deleting the files
    recovery.write_checkpoint(FileSystem(), directory, point._replace(log_start=new_start), durable=True)
    with Engine.open(data_dir, clock=clock) as eng:
        assert eng.list_offsets("t", 0).log_start == new_start
        assert values(eng, 0)[0][1] == b"r%03d" % new_start * 50
    assert min(int(f[:20]) for f in os.listdir(directory) if f.endswith(".log")) == new_start


def test_a_log_shorter_than_its_recovery_point_is_refused(data_dir, clock):
    with Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", 1)
        for i in range(30):
            eng.produce("t", [b"r%03d" % i * 50])
    log = seg_path(data_dir, 0, 0)
    os.truncate(log, os.path.getsize(log) - 200)  # cut at no particular boundary: durable data is gone
    with pytest.raises(CorruptLogError, match="recovery point"):
        Engine.open(data_dir, clock=clock)
    assert repair(data_dir)
    with Engine.open(data_dir, clock=clock) as eng:
        assert 0 < eng.list_offsets("t", 0).log_end < 30
