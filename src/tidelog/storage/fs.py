"""The one module that makes file system calls: the seam where tests inject faults.

Storage code receives a `FileSystem` and never calls `os` for file I/O itself, so a subclass can fail
or tear the k-th write, drop unsynced data or fake a full disk. OS errors are turned into tidelog
storage errors here, once: ENOSPC becomes DiskFullError, EMFILE TooManyOpenFilesError, anything else
StorageError, each naming the file. Thread-safe: its only state is FsyncStats, which has its own lock.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import secrets
import shutil
import threading
import time
import weakref
from collections.abc import Sequence

from ..errors import DataDirLockedError, DiskFullError, StorageError, TooManyOpenFilesError

IOV_MAX = 1024
TMP_PREFIX = ".tmp-"
"""Names of the temporary files of atomic replacements (short, so that any final name fits NAME_MAX)."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value

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
        return TooManyOpenFilesError(
            f"too many open files while {what} {path}: raise the open-file limit "
            f"(ulimit -n) or use fewer partitions (three descriptors each)",
            path=path,
        )
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
    def open(self, path: str, create: bool = False, read_only: bool = False) -> int:
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC | (os.O_CREAT if create else 0)
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
                chunk = [memoryview(b).cast("B") for b in buffers[start : start + IOV_MAX]]
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

    def map_read(self, fd: int, length: int) -> memoryview | None:
        """A read-only shared mapping of the first `length` bytes (None for an empty file).

        Unlike `mmap.mmap`, which keeps a duplicate of the descriptor for as long as the map lives,
        this mapping holds no file descriptor: the caller may close `fd` at once, so a sealed segment
        costs a map and no descriptor. The mapping is unmapped when the last view of it is released;
        views handed out keep it alive (the kernel keeps a deleted or truncated file's pages mapped).
        """
        if length <= 0:
            return None
        addr = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == _MAP_FAILED:
            err = ctypes.get_errno()
            raise _fail(OSError(err, os.strerror(err)), "mapping", f"fd {fd}")
        array = (ctypes.c_ubyte * length).from_address(addr)
        weakref.finalize(array, _libc.munmap, addr, length)
        return memoryview(array).cast("B")

    def data_end(self, fd: int, size: int) -> int:
        """Where the file's last data region ends (<= size): past it the file is a hole.

        Reading a hole through a shared map can need a page of memory or disk (tmpfs allocates one
        per fault, and on a full file system the fault kills the process with SIGBUS), so scans
        over a preallocated, sparse file stop here. File systems without SEEK_HOLE report no holes.
        """
        end, pos = 0, 0
        try:
            while pos < size:
                start = os.lseek(fd, pos, os.SEEK_DATA)
                if start >= size:
                    break
                pos = min(os.lseek(fd, start, os.SEEK_HOLE), size)
                end = pos
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data at or after pos
                return end
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                return size
            raise _fail(exc, "seeking in", f"fd {fd}") from exc
        return end

    def zeros_between(self, fd: int, start: int, end: int, path: str = "") -> bool:
        """Whether bytes [start, end) of the file are all zero, read with pread (never through a map,
        see `data_end`), skipping holes."""
        pos = start
        chunk = 1 << 20
        while pos < end:
            try:
                data_at = os.lseek(fd, pos, os.SEEK_DATA)
                hole_at = os.lseek(fd, data_at, os.SEEK_HOLE)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    return True
                if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise _fail(exc, "seeking in", path) from exc
                data_at, hole_at = pos, end
            if data_at >= end:
                return True
            stop = min(hole_at, end)
            while data_at < stop:
                block = self.pread(fd, min(chunk, stop - data_at), data_at, path)
                if not block:  # end of file
                    return True
                if block.count(0) != len(block):
                    return False
                data_at += len(block)
            pos = stop
        return True

    # -- whole files and directories ---------------------------------------------------------------
    def read_file(self, path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise _fail(exc, "reading", path) from exc

    def write_file_atomic(self, path: str, data: bytes, durable: bool = True) -> None:
        """Replace path with data so that a crash leaves either the old or the new content.

        The temporary file has a short name of its own (TMP_PREFIX), so a final name that uses all of
        NAME_MAX still works; strays of a crash are removed by whoever owns the directory.
        """
        directory = os.path.dirname(path) or "."
        tmp = os.path.join(directory, TMP_PREFIX + secrets.token_hex(6))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if durable:
                    self._fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            if durable:
                self.fsync_dir(directory)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise _fail(exc, "writing", path) from exc

    def write_in_place(self, path: str, data: bytes, durable: bool = False) -> None:
        """Overwrite a small file in place (created if missing): no new file and, once the file
        exists, no new block, so it works on a full disk. A crash can leave it torn, so its readers
        check it (a CRC); use it only for files whose loss costs work, not data."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.pwrite(fd, data, 0)
                if os.fstat(fd).st_size != len(data):
                    os.ftruncate(fd, len(data))
                if durable:
                    self._fsync(fd, os.fdatasync)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _fail(exc, "writing", path) from exc

    def rename(self, src: str, dst: str) -> None:
        """Rename atomically (dst must not exist); the caller fsyncs the directories."""
        try:
            if os.path.lexists(dst):
                raise FileExistsError(errno.EEXIST, "exists", dst)
            os.rename(src, dst)
        except OSError as exc:
            raise _fail(exc, "renaming", f"{src} to {dst}") from exc

    def replace(self, src: str, dst: str) -> None:
        """Rename atomically, replacing dst if it exists; the caller fsyncs the directory."""
        try:
            os.replace(src, dst)
        except OSError as exc:
            raise _fail(exc, "renaming", f"{src} to {dst}") from exc

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path) and not os.path.islink(path)

    def name_max(self, path: str) -> int:
        """The longest file name the file system holding path allows."""
        try:
            return os.pathconf(path, "PC_NAME_MAX")
        except (OSError, ValueError):
            return 255

    def rmdir(self, path: str) -> None:
        """Remove an empty directory."""
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _fail(exc, "deleting", path) from exc

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
                    f"data directory {path} is in use by another process (pid {holder})", path=path
                ) from None
            raise _fail(exc, "locking", lock_path) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def unlock_dir(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
