"""Running out of things: file descriptors, maps, and disk space (on a real, small tmpfs).

Each case states what an earlier version did wrong.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tidelog import Engine
from tidelog.errors import DiskFullError
from tidelog.examine import check

from .server_process import ServerProcess


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def maps_under(path: str) -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if path in line)


def many_segments(data_dir, clock, partitions=3, segments=100, **settings):
    with Engine.open(data_dir, clock=clock, **settings) as eng:
        eng.create_topic("t", partitions, segment_bytes=4096)
        for _ in range(segments):
            for p in range(partitions):
                eng.produce("t", [b"x" * 3500], partition=p)


def read_everything(eng, partitions=3):
    n = 0
    for p in range(partitions):
        offset = eng.list_offsets("t", p).log_start
        while True:
            r = eng.fetch("t", p, offset)
            if not r:
                break
            n += len(r.records())
            offset = r.next_offset
    return n


def test_sealed_segments_hold_no_file_descriptors(data_dir, clock):
    # Before: six descriptors per segment (three files and a duplicate held by each map): 300 segments
    # held 1,800, and rolls, new connections and restarts failed with too many open files.
    many_segments(data_dir, clock)
    before = open_fds()
    with Engine.open(data_dir, clock=clock) as eng:
        assert sum(p.segments for p in eng.describe("t").partitions) >= 300
        opened = open_fds() - before
        assert read_everything(eng) == 300
        after_reads = open_fds() - before
    assert opened <= 3 * 3 + 4, opened  # three per partition (its active segment) and the engine's own
    assert after_reads == opened


def test_maps_of_sealed_segments_are_bounded_by_max_mapped_segments(data_dir, clock):
    many_segments(data_dir, clock)
    with Engine.open(data_dir, clock=clock, max_mapped_segments=10) as eng:
        assert read_everything(eng) == 300
        assert len(eng._maps) <= 10
        # three files per sealed segment (.log and two indexes) within the cap, plus the active ones
        assert maps_under(data_dir) <= 10 * 3 + 3 * 3
        assert read_everything(eng) == 300  # unmapped segments are mapped again when read


def test_a_restart_with_hundreds_of_segments_needs_few_descriptors(data_dir, clock):
    # Before: a partition of 3,325 files refused to open with TooManyOpenFilesError.
    many_segments(data_dir, clock)
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        from tidelog import Engine
        with Engine.open({data_dir!r}) as eng:
            n = 0
            for p in range(3):
                offset = 0
                while True:
                    r = eng.fetch("t", p, offset)
                    if not r:
                        break
                    n += len(r.records()); offset = r.next_offset
            print(n)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "300"


@pytest.mark.parametrize("fails", ["rolling", "opening", "loading producers"])
def test_a_segment_that_cannot_be_opened_leaks_no_descriptor(data_dir, clock, fails):
    # Before: when a new segment's index could not be opened (too many open files) its .log stayed
    # open, one more descriptor at every failed roll, which made running out of them worse; an open
    # that failed after its partition's segments were loaded kept their descriptors too.
    from tidelog.errors import StorageError, TooManyOpenFilesError
    from tidelog.storage.fs import FileSystem

    class OutOfDescriptors(FileSystem):
        failing = False

        def open(self, path, create=False, read_only=False):
            if self.failing and path.endswith(".index") and (create or fails == "opening"):
                raise TooManyOpenFilesError(f"too many open files while opening {path}", path=path)
            return super().open(path, create, read_only)

        def read_file(self, path):
            if self.failing and path.endswith(".snapshot"):
                raise TooManyOpenFilesError(f"too many open files while reading {path}", path=path)
            return super().read_file(path)

    many_segments(data_dir, clock, partitions=1, segments=3)
    fs = OutOfDescriptors()
    before = open_fds()
    if fails == "rolling":
        with Engine.open(data_dir, clock=clock, fs=fs) as eng:
            opened = open_fds()
            fs.failing = True
            for _ in range(20):
                with pytest.raises(StorageError):
                    eng.produce("t", [b"x" * 3500], partition=0)  # each needs a roll
            assert open_fds() == opened
            fs.failing = False
    else:
        fs.failing = True
        for _ in range(5):
            with pytest.raises(StorageError):
                Engine.open(data_dir, clock=clock, fs=fs)
    assert open_fds() == before


# -- a full file system -------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 24 MiB tmpfs of the test's own: tmpfs gives a page to every read fault on a hole of a shared
    map, so on a full one such a read kills the process with SIGBUS (ext4 hands out the zero page)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    try:
        yield str(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_up(path: str) -> None:
    """Take every free byte of the file system (a file of its own, written until ENOSPC)."""
    fd = os.open(os.path.join(path, "filler"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\xff" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)


def run(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


def test_a_full_file_system_does_not_kill_restart_or_check(small_tmpfs):
    # Before: restart and `tidelog check` died with SIGBUS (exit -7) reading the sparse, preallocated
    # part of a segment through its map once the file system was full.
    data_dir = os.path.join(small_tmpfs, "data")
    with Engine.open(data_dir, fsync="always") as eng:
        eng.create_topic("t", 2, segment_bytes=16 << 20)
        for i in range(20):
            eng.produce("t", [b"record %d " % i + b"x" * 200], partition=i % 2)
        fill_up(small_tmpfs)
        with pytest.raises(DiskFullError):  # the documented error, whether a write or a roll meets it
            for i in range(20_000):
                eng.produce("t", [b"y" * 4000], partition=0)
        acked = eng.list_offsets("t", 0).log_end, eng.list_offsets("t", 1).log_end
    script = (
        "from tidelog import Engine\n"
        f"with Engine.open({data_dir!r}) as e: print(e.list_offsets('t', 0).log_end, "
        "e.list_offsets('t', 1).log_end)"
    )
    os.remove(os.path.join(data_dir, ".clean_shutdown"))  # an unclean restart scans the most
    out = run("-c", script)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert tuple(int(x) for x in out.stdout.split()) == acked
    out = run("-m", "tidelog", "check", "--data-dir", data_dir)
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr[-2000:])


def test_sigterm_on_a_full_disk_still_stops_cleanly(small_tmpfs):
    # Before: the clean-stop marker and the durable recovery point were new files, which a full disk
    # refused, so the next start had to recover.
    data_dir = os.path.join(small_tmpfs, "data")
    server = ServerProcess(data_dir, "--fsync", "always")
    server.root = small_tmpfs
    server.log_path = os.path.join(os.path.dirname(small_tmpfs), "server.log")
    server.start()
    try:
        from tidelog.client import Admin, Producer

        with Admin(server.target) as admin:
            admin.create_topic("t", 1)
        with Producer(server.target, linger_ms=0, delivery_timeout_s=5) as producer:
            for i in range(50):
                producer.send("t", b"v%d" % i)
            producer.flush()
        fill_up(small_tmpfs)
        assert server.stop() == 0
    finally:
        server.kill() if server.proc is not None else None
    assert os.path.exists(os.path.join(data_dir, ".clean_shutdown"))
    with Engine.open(data_dir) as eng:
        assert eng.clean_start and eng.list_offsets("t", 0).log_end == 50


# -- the running broker -------------------------------------------------------------------------------


def test_check_on_a_running_broker_raises_no_false_alarm(data_dir, clock):
    # Before: "time index entries do not match" on the active segment of a broker being written to.
    stop = threading.Event()
    with Engine.open(data_dir, fsync="interval", fsync_interval_ms=5) as eng:
        eng.create_topic("t", 2, segment_bytes=1 << 16, index_interval_bytes=64)

        def produce():
            i = 0
            while not stop.is_set():
                eng.produce("t", [b"r%d" % i * 20] * 3, timestamps=[i, i + 5, i + 1])
                i += 1

        writer = threading.Thread(target=produce)
        writer.start()
        try:
            reports = []
            deadline = time.monotonic() + 4
            while len(reports) < 30 and time.monotonic() < deadline:
                reports.append([p for r in check(data_dir) for p in r.problems])
        finally:
            stop.set()
            writer.join()
    assert reports and all(r == [] for r in reports), [r for r in reports if r][:3]
