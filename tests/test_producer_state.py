"""Idempotent producers: the broker's per-producer sequence checks."""

from __future__ import annotations

import pytest


def test_idempotent_sequences_wrap_at_two_to_the_31():
    from tidelog.errors import DuplicateSequenceError, OutOfOrderSequenceError
    from tidelog.partition.producer_state import ProducerState

    state = ProducerState()
    top = (1 << 31) - 3
    with pytest.raises(OutOfOrderSequenceError, match="not 0"):
        state.check(7, 0, top, 3, {})  # a producer's first batch here starts at 0
    state.record(7, 0, top - 3, 3, 97, 99, 0)  # (as replayed from the log)
    assert state.check(7, 0, top, 3, {}) is None
    state.record(7, 0, top, 3, 100, 102, 0)
    assert state.check(7, 0, 0, 2, {}) is None  # 2^31-3 .. 2^31-1, then 0 .. 1
    state.record(7, 0, 0, 2, 103, 104, 0)
    assert state.check(7, 0, 0, 2, {}).base_offset == 103  # a retry of the last batch
    with pytest.raises(DuplicateSequenceError):
        state.check(7, 0, top - 10, 1, {})
    with pytest.raises(OutOfOrderSequenceError):
        state.check(7, 0, 5, 1, {})


def test_a_retried_batch_is_not_appended_twice_and_gets_its_original_offsets(data_dir):
    import struct

    import tidelog
    from tidelog._native.checksum import crc32c

    def batch(values, seq):
        raw = bytearray(tidelog.build_batch(values, timestamp=1_700_000_000_000))
        struct.pack_into(">qhi", raw, 43, 42, 0, seq)
        struct.pack_into(">I", raw, 17, crc32c(bytes(raw[21:])))
        return bytes(raw)

    with tidelog.Engine.open(data_dir) as eng:
        eng.create_topic("t")
        first = eng.append("t", 0, batch([b"a", b"b"], 0))
        assert eng.append("t", 0, batch([b"a", b"b"], 0)) == first
        assert eng.append("t", 0, batch([b"c"], 2)).base_offset == 2
    with tidelog.Engine.open(data_dir) as eng:  # the state is rebuilt from the log on open
        assert eng.append("t", 0, batch([b"c"], 2)).base_offset == 2
        assert eng.list_offsets("t", 0).log_end == 3


def idempotent_batch(values, producer_id, seq, epoch=0, timestamp=1_700_000_000_000):
    import struct

    import tidelog
    from tidelog._native.checksum import crc32c

    raw = bytearray(tidelog.build_batch(values, timestamp=timestamp))
    struct.pack_into(">qhi", raw, 43, producer_id, epoch, seq)
    struct.pack_into(">I", raw, 17, crc32c(bytes(raw[21:])))
    return bytes(raw)


def crash_copy(src, dst):
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


@pytest.mark.parametrize("restart", ["clean", "crash"])
@pytest.mark.parametrize("between", ["segment rolls", "17 MiB of other producers"])
def test_a_retry_after_a_restart_is_recognised_however_much_was_written_since(tmp_path, clock, restart, between):
    # Before: the state was rebuilt from the last 16 MiB of the active segment only, so after a roll
    # or 17 MiB from other producers a retried batch was appended again (a record at offsets 0 and 7).
    import tidelog

    live = str(tmp_path / "live")
    eng = tidelog.Engine.open(live, clock=clock, fsync="never")
    eng.create_topic("t", 1, segment_bytes=(4096 if between == "segment rolls" else 64 << 20))
    first = eng.append("t", 0, idempotent_batch([b"a", b"b"], 42, 0))
    filler = b"z" * (3000 if between == "segment rolls" else 1 << 20)
    for i in range(10 if between == "segment rolls" else 17):
        eng.append("t", 0, idempotent_batch([filler], 1000 + i, 0))
    if restart == "crash":
        eng.flush()
        data = crash_copy(live, str(tmp_path / "crashed"))
        eng.close()
    else:
        eng.close()
        data = live
    with tidelog.Engine.open(data, clock=clock) as again:
        end = again.list_offsets("t", 0).log_end
        assert again.append("t", 0, idempotent_batch([b"a", b"b"], 42, 0)) == first
        assert again.list_offsets("t", 0).log_end == end
        assert again.append("t", 0, idempotent_batch([b"c"], 42, 2)).base_offset == end


def test_a_damaged_snapshot_costs_replay_not_state(data_dir, clock):
    import os

    import tidelog

    with tidelog.Engine.open(data_dir, clock=clock) as eng:
        eng.create_topic("t", 1, segment_bytes=4096)
        first = eng.append("t", 0, idempotent_batch([b"a"], 42, 0))
        for i in range(10):
            eng.append("t", 0, idempotent_batch([b"z" * 3000], 1000 + i, 0))
    directory = os.path.join(data_dir, "t-0")
    snapshots = sorted(f for f in os.listdir(directory) if f.endswith(".snapshot"))
    assert len(snapshots) == 2
    for name in snapshots:
        with open(os.path.join(directory, name), "r+b") as f:
            f.seek(20)
            f.write(b"\xff")
    with tidelog.Engine.open(data_dir, clock=clock) as eng:
        assert eng.append("t", 0, idempotent_batch([b"a"], 42, 0)) == first


def test_producers_silent_past_the_expiration_are_forgotten(data_dir, clock):
    import tidelog

    day = 86_400_000
    with tidelog.Engine.open(data_dir, clock=clock, producer_id_expiration_ms=day) as eng:
        eng.create_topic("t", 1, segment_bytes=4096)
        first = eng.append("t", 0, idempotent_batch([b"a"], 42, 0))
        for i in range(200):  # producers that come and go (a new id per client process)
            eng.append("t", 0, idempotent_batch([b"b"], 5000 + i, 0))
        plog = eng._topics["t"].partitions[0]
        assert len(plog._producers) == 201
        clock.advance(day - 1)
        assert eng.append("t", 0, idempotent_batch([b"a"], 42, 0)) == first  # still remembered
        clock.advance(2)
        eng.append("t", 0, idempotent_batch([b"z" * 3000], 1, 0))
        eng.append("t", 0, idempotent_batch([b"z" * 3000], 1, 1))  # rolls: the snapshot expires producers
        assert len(plog._producers) <= 2
    with tidelog.Engine.open(data_dir, clock=clock, producer_id_expiration_ms=day) as eng:
        again = eng.append("t", 0, idempotent_batch([b"a"], 42, 0))  # forgotten: appended as new
        assert again.base_offset > first.base_offset


def test_the_state_rebuilt_from_the_log_answers_as_the_live_one_after_a_forgotten_producer_came_back(tmp_path, clock):
    # Before: a producer forgotten (expired) and back with a lower epoch was taken as new, but replay
    # added its batches to the higher epoch found earlier in the log: after a restart its retry was
    # refused as a zombie's (InvalidProducerEpochError) instead of answered with its offsets.
    import tidelog

    day = 86_400_000
    live = str(tmp_path / "live")
    with tidelog.Engine.open(live, clock=clock, producer_id_expiration_ms=day) as eng:
        eng.create_topic("t", 1, segment_bytes=1 << 16)
        eng.append("t", 0, idempotent_batch([b"a"], 42, 0, epoch=5))
    clock.advance(day + 1)
    eng = tidelog.Engine.open(live, clock=clock, producer_id_expiration_ms=day)  # expires producer 42
    back = eng.append("t", 0, idempotent_batch([b"b"], 42, 0, epoch=3))
    assert eng.append("t", 0, idempotent_batch([b"b"], 42, 0, epoch=3)) == back  # a retry
    eng.flush()
    crashed = crash_copy(live, str(tmp_path / "crashed"))
    eng.close()
    with tidelog.Engine.open(crashed, clock=clock, producer_id_expiration_ms=day) as again:
        assert again.append("t", 0, idempotent_batch([b"b"], 42, 0, epoch=3)) == back
        assert again.append("t", 0, idempotent_batch([b"c"], 42, 1, epoch=3)).base_offset == back.base_offset + 1
