"""Thread safety: producers and readers at once, on the same and on different partitions."""

from __future__ import annotations

import os
import threading

import pytest

from tidelog import Engine

PER_THREAD = 300


def run_threads(targets):
    errors = []

    def guard(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # surfaced in the main thread below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guard(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("fsync", ["never", "always"])
def test_producers_on_one_partition_keep_each_producers_order_and_lose_nothing(data_dir, fsync):
    with Engine.open(data_dir, fsync=fsync) as eng:
        eng.create_topic("t", segment_bytes=64 * 1024)

        def producer(tid):
            def run():
                for seq in range(PER_THREAD):
                    eng.produce("t", [b"%d:%d" % (tid, seq)] * (1 + seq % 3), partition=0)

            return run

        run_threads([producer(t) for t in range(4)])
        offset, seen = 0, {t: [] for t in range(4)}
        while True:
            r = eng.fetch("t", 0, offset, max_bytes=1 << 20)
            if not r:
                break
            for rec in r:
                assert rec.offset == offset
                tid, seq = map(int, rec.value.split(b":"))
                seen[tid].append(seq)
                offset += 1
        for tid in range(4):
            expected = [s for s in range(PER_THREAD) for _ in range(1 + s % 3)]
            assert seen[tid] == expected


def test_readers_tailing_partitions_never_see_a_partial_batch(data_dir):
    with Engine.open(data_dir, fsync="never") as eng:
        eng.create_topic("t", partitions=4, segment_bytes=32 * 1024)
        done = threading.Event()

        def producer(p):
            def run():
                try:
                    for seq in range(PER_THREAD):
                        eng.produce("t", [b"p%d-%d-" % (p, seq) + b"x" * (seq % 200)] * 5, partition=p)
                finally:
                    done.set()

            return run

        def reader(p):
            def run():
                offset = 0
                while offset < PER_THREAD * 5:
                    r = eng.fetch("t", p, offset, max_bytes=4096, max_wait_ms=200)
                    expect = offset
                    for batch in r.batches():
                        assert batch.crc_ok()
                        assert batch.base_offset <= expect <= batch.last_offset
                        expect = batch.last_offset + 1
                    for rec in r:
                        assert rec.offset == offset
                        seq = offset // 5
                        assert rec.value == b"p%d-%d-" % (p, seq) + b"x" * (seq % 200)
                        offset += 1
                    if not r and done.is_set() and eng.list_offsets("t", p).high_watermark == offset:
                        break
                assert offset == PER_THREAD * 5

            return run

        run_threads([producer(p) for p in range(4)] + [reader(p) for p in range(4)])


def test_topic_admin_while_producing_elsewhere(data_dir):
    with Engine.open(data_dir) as eng:
        eng.create_topic("busy")

        def producer():
            for i in range(PER_THREAD):
                eng.produce("busy", [b"x"])

        def admin():
            for i in range(30):
                eng.create_topic(f"tmp{i}", partitions=2)
                eng.produce(f"tmp{i}", [b"y"])
                eng.delete_topic(f"tmp{i}")

        run_threads([producer, admin])
        assert eng.list_topics() == ["busy"]
        assert eng.list_offsets("busy", 0).log_end == PER_THREAD


def test_readers_racing_retention_and_unmapping_get_records_or_out_of_range_never_errors(data_dir):
    """Readers at random offsets while appends roll segments, retention deletes them and the map
    cache (two segments) unmaps them under the readers' feet."""
    import random

    from tidelog.errors import OffsetOutOfRangeError

    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    stop = threading.Event()
    failures: list[BaseException] = []
    with Engine.open(data_dir, max_mapped_segments=2) as eng:
        eng.create_topic("t", 1, segment_bytes=4096, retention_bytes=6 * 4096)

        def read(k):
            rng = random.Random(seed + k)
            while not stop.is_set():
                o = eng.list_offsets("t", 0)
                offset = rng.randrange(o.log_start, o.high_watermark + 1)
                try:
                    for rec in eng.fetch("t", 0, offset, max_bytes=rng.choice([1, 5000, 1 << 20])):
                        assert rec.value == b"%08d" % rec.offset * 40
                    eng.list_offsets("t", 0, rng.randrange(0, 2000))
                except OffsetOutOfRangeError:
                    pass  # retention moved the log start past it
                except BaseException as exc:  # anything else is a bug
                    failures.append(exc)
                    return

        readers = [threading.Thread(target=read, args=(k,)) for k in range(3)]
        for t in readers:
            t.start()
        try:
            for i in range(3000):
                o = eng.list_offsets("t", 0).log_end
                eng.produce("t", [b"%08d" % o * 40], timestamp=i)
                if failures:
                    break
        finally:
            stop.set()
            for t in readers:
                t.join()
    assert not failures, (seed, failures[0])


def test_a_flush_racing_a_roll_never_fsyncs_a_descriptor_the_seal_closed(data_dir):
    """Before: a flush (the interval flusher, or group commit) took the active segment, let go of the
    lock and fsynced its descriptor; a roll meanwhile sealed that segment and closed the descriptor,
    so the fsync hit a closed descriptor (EBADF: the partition then refused every write until a
    restart) or whatever file had reused its number."""
    from tidelog.storage.fs import FileSystem

    entered, release = threading.Event(), threading.Event()
    fsynced: list[tuple[str, str | None]] = []

    class GatedFS(FileSystem):
        gated = False

        def fsync(self, fd, path=""):
            if self.gated and path.endswith(".log") and threading.current_thread().name == "flusher":
                self.gated = False
                entered.set()
                release.wait(30)
                try:
                    target = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    target = None  # closed
                fsynced.append((path, target))
            return super().fsync(fd, path)

    fs = GatedFS()
    with Engine.open(data_dir, fs=fs, fsync="interval", fsync_interval_ms=3_600_000) as eng:
        eng.create_topic("other", 1)  # its descriptors are freed below, so the flushed one is not reused
        eng.create_topic("t", 1, segment_bytes=4096)
        plog = eng._topics["t"].partitions[0]
        eng.produce("t", [b"x" * 100])
        fs.gated = True
        errors: list[BaseException] = []

        def flush():
            try:
                plog.sync()
            except BaseException as exc:
                errors.append(exc)

        def roll():
            eng.delete_topic("other")
            while len(plog.segments()) < 2:
                eng.produce("t", [b"y" * 100])

        flusher = threading.Thread(target=flush, name="flusher")
        flusher.start()
        assert entered.wait(30)
        roller = threading.Thread(target=roll)
        roller.start()
        roller.join(timeout=0.5)  # without a guard it seals (and closes) while the flush waits
        release.set()
        flusher.join(timeout=30)
        roller.join(timeout=30)
        assert not flusher.is_alive() and not roller.is_alive()
        assert not errors, errors[0]
        path, target = fsynced[0]
        assert target == path  # the fsync went to the segment's own file, still open
        eng.produce("t", [b"z"])  # and the partition still takes writes
