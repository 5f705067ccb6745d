"""The one module that makes file system calls: the seam where tests inject faults.

Storage code receives a `FileSystem` and never calls `os` for file I/O itself, so a subclass can fail
or tear the k-th write, drop unsynced data or fake a full disk. OS errors are turned into tidelog
storage errors here, once: ENOSPC becomes DiskFullError, EMFILE TooManyOpenFilesError, anything else
StorageError, each naming the file. Thread-safe: its only state is FsyncStats, which has its own lock.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import shutil
import threading
import time
from typing import Sequence

from ..errors import DataDirLockedError, DiskFullError, StorageError, TooManyOpenFilesError

IOV_MAX = 1024

FSYNC_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds of the fsync latency buckets (seconds); one more bucket holds everything slower."""


class FsyncStats:
    """How many fsyncs (files and directories) were made and how long they took, as a histogram.

    Counted here, at the one place fsync is called, so monitoring sees what the disk was asked to do.
    Thread-safe: one lock, held only for a few additions (an fsync itself takes far longer).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.sum_s = 0.0
        self.buckets = [0] * (len(FSYNC_BUCKETS_S) + 1)  # per bucket, not cumulative; last: slower than all

    def observe(self, seconds: float) -> None:
        i = 0
        while i < len(FSYNC_BUCKETS_S) and seconds > FSYNC_BUCKETS_S[i]:
            i += 1
        with self._lock:
            self.count += 1
            self.sum_s += seconds
            self.buckets[i] += 1

    def snapshot(self) -> tuple[int, float, list[int]]:
        """(count, total seconds, per-bucket counts), consistent with each other."""
        with self._lock:
            return self.count, self.sum_s, list(self.buckets)


def _fail(exc: OSError, what: str, path: str) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"no space left on device while {what} {path}", path=path)
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return TooManyOpenFilesError(f"too many open files while {what} {path}: raise the open-file limit "
                                     f"(ulimit -n) or use fewer partitions (six descriptors each)", path=path)
    return StorageError(f"{what} {path} failed: {exc.strerror or exc}", path=path, errno=exc.errno or 0)


class FileSystem:
    """Plain POSIX file operations with errors mapped to tidelog's. Subclass to inject faults."""

    fsync_stats: FsyncStats | None = None
    """Set by __init__; a subclass that skips it is simply not counted."""

    def __init__(self) -> None:
        self.fsync_stats = FsyncStats()

    def _fsync(self, fd: int, sync=os.fsync) -> None:
        stats = self.fsync_stats
        if stats is None:
            sync(fd)
            return
        started = time.perf_counter()
        sync(fd)
        stats.observe(time.perf_counter() - started)

    # -- file descriptors ------------------------------------------------------------------------
    def open(self, path: str, create: bool = False) -> int:
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            return os.open(path, flags, 0o644)
        except OSError as exc:
            raise _fail(exc, "opening", path) from exc

    def close(self, fd: int) -> None:
        try:
            os.close(fd)
        except OSError:
            pass  # closing is best effort: the data was already written or fsync reported the failure

    def size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def pwritev(self, fd: int, buffers: Sequence, offset: int, path: str = "") -> int:
        """Write all buffers at offset; partial writes are continued until everything is written."""
        total = 0
        try:
            for start in range(0, len(buffers), IOV_MAX):
                chunk = [memoryview(b).cast("B") for b in buffers[start:start + IOV_MAX]]
                want = sum(len(c) for c in chunk)
                done = os.pwritev(fd, chunk, offset + total)
                while done < want:  # rare: a short write; finish the rest buffer by buffer
                    skip = done
                    rest = []
                    for c in chunk:
                        if skip >= len(c):
                            skip -= len(c)
                            continue
                        rest.append(c[skip:])
                        skip = 0
                    n = os.pwritev(fd, rest, offset + total + done)
                    if n <= 0:
                        raise OSError(errno.EIO, "short write")
                    done += n
                total += want
        except OSError as exc:
            raise _fail(exc, "writing", path) from exc
        return total

    def pwrite(self, fd: int, data, offset: int, path: str = "") -> int:
        return self.pwritev(fd, [data], offset, path)

    def pread(self, fd: int, length: int, offset: int, path: str = "") -> bytes:
        try:
            return os.pread(fd, length, offset)
        except OSError as exc:
            raise _fail(exc, "reading", path) from exc

    def fsync(self, fd: int, path: str = "") -> None:
        """fdatasync: the data and the metadata needed to read it back."""
        try:
            self._fsync(fd, os.fdatasync)
        except OSError as exc:
            raise _fail(exc, "syncing", path) from exc

    def truncate(self, fd: int, size: int, path: str = "") -> None:
        """Set the file's length. Callers guarantee no mapped view reaches past the new length."""
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            raise _fail(exc, "resizing", path) from exc

    def map_read(self, fd: int, length: int) -> mmap.mmap | None:
        """A read-only shared mapping of the first `length` bytes (None for an empty file)."""
        if length <= 0:
            return None
        try:
            return mmap.mmap(fd, length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        except OSError as exc:
            raise _fail(exc, "mapping", f"fd {fd}") from exc

    # -- whole files and directories ---------------------------------------------------------------
    def read_file(self, path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise _fail(exc, "reading", path) from exc

    def write_file_atomic(self, path: str, data: bytes, durable: bool = True) -> None:
        """Replace path with data so that a crash leaves either the old or the new content."""
        tmp = path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if durable:
                    self._fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            if durable:
                self.fsync_dir(os.path.dirname(path) or ".")
        except OSError as exc:
            raise _fail(exc, "writing", path) from exc

    def fsync_dir(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                self._fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _fail(exc, "syncing directory", path) from exc

    def makedirs(self, path: str) -> None:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise _fail(exc, "creating directory", path) from exc

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _fail(exc, "listing", path) from exc

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _fail(exc, "deleting", path) from exc

    def rmtree(self, path: str) -> None:
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _fail(exc, "deleting", path) from exc

    def lock_dir(self, path: str) -> int:
        """Take an exclusive lock on the data directory for this process; DataDirLockedError if held."""
        lock_path = os.path.join(path, ".lock")
        fd = self.open(lock_path, create=True)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DataDirLockedError(
                    f"data directory {path} is in use by another process (pid {holder})", path=path) from None
            raise _fail(exc, "locking", lock_path) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def unlock_dir(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
