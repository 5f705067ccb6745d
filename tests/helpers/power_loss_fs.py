"""A file system that can lose power: it remembers every change not yet fsynced, so that the data
directory can be imaged as a disk would hold it after a power cut, and it injects one fault on demand.

Model (stricter than ext4's data=ordered): a write or a resize survives a power cut only if its file
was fsynced afterwards; a file created since the last fsync of its directory disappears; a
non-durable atomic replace or in-place rewrite (the recovery point) is undone. Deletions are taken as durable at once.
Unsynced changes are dropped per file, all or nothing, which also covers the kernel writing back one
file (an index) before another (its log).

Faults, chosen by (kind, k), the k-th write or fsync counting from zero:
    fail    the write fails with EIO and changes nothing
    enospc  half the write lands, then it fails with ENOSPC (the disk filled up)
    tear    half the write lands, then the power goes
    cut     the power goes just before the write
    fsync   the k-th fsync of a segment log fails with EIO
After the power goes, the operation that saw it raises PowerCut and every later file operation is a
no-op, so the engine can be closed without touching the disk image.
"""

from __future__ import annotations

import errno
import os
import random
import shutil

from tidelog.errors import DiskFullError, StorageError
from tidelog.storage.fs import FileSystem


class PowerCut(BaseException):
    """The power went: not an error the engine may catch and carry on from."""


class PowerLossFS(FileSystem):
    def __init__(self, fault: tuple[str, int] | None = None) -> None:
        self.fault = fault
        self.writes = 0
        self.log_fsyncs = 0
        self.dead = False
        self._paths: dict[int, str] = {}
        self._undo: dict[str, list[tuple]] = {}
        self._unlinked_dirs: dict[str, set[str]] = {}

    # -- bookkeeping -------------------------------------------------------------------------------
    def _power_off(self) -> PowerCut:
        self.dead = True
        return PowerCut(f"power cut at write {self.writes - 1}")

    def _journal(self, path: str, entry: tuple) -> None:
        self._undo.setdefault(path, []).append(entry)

    # -- file operations ---------------------------------------------------------------------------
    def open(self, path, create=False, read_only=False):
        if self.dead:
            raise PowerCut("the power is off")
        existed = os.path.exists(path)
        fd = super().open(path, create, read_only)
        self._paths[fd] = path
        if create and not existed:
            self._unlinked_dirs.setdefault(os.path.dirname(path), set()).add(path)
        return fd

    def pwritev(self, fd, buffers, offset, path=""):
        if self.dead:
            return sum(memoryview(b).nbytes for b in buffers)
        path = path or self._paths.get(fd, "")
        k = self.writes
        self.writes += 1
        kind = self.fault[0] if self.fault and self.fault[1] == k else None
        data = b"".join(bytes(memoryview(b).cast("B")) for b in buffers)
        if kind == "cut":
            raise self._power_off()
        if kind == "fail":
            raise StorageError(f"writing {path} failed: Input/output error", path=path, errno=errno.EIO)
        old_size = os.fstat(fd).st_size
        self._journal(path, ("write", offset, os.pread(fd, len(data), offset), old_size))
        if kind in ("enospc", "tear"):
            super().pwritev(fd, [data[: len(data) // 2]], offset, path)
            if kind == "tear":
                raise self._power_off()
            raise DiskFullError(f"no space left on device while writing {path}", path=path)
        return super().pwritev(fd, [data], offset, path)

    def truncate(self, fd, size, path=""):
        if self.dead:
            return
        path = path or self._paths.get(fd, "")
        old_size = os.fstat(fd).st_size
        tail = os.pread(fd, old_size - size, size) if size < old_size else b""
        self._journal(path, ("resize", old_size, size, tail))
        super().truncate(fd, size, path)

    def fsync(self, fd, path=""):
        if self.dead:
            return
        path = path or self._paths.get(fd, "")
        if path.endswith(".log"):
            k = self.log_fsyncs
            self.log_fsyncs += 1
            if self.fault == ("fsync", k):
                raise StorageError(f"syncing {path} failed: Input/output error", path=path, errno=errno.EIO)
        super().fsync(fd, path)
        self._undo.pop(path, None)

    def write_file_atomic(self, path, data, durable=True):
        if self.dead:
            return
        if not durable and path not in self._undo:
            old = open(path, "rb").read() if os.path.exists(path) else None
            self._journal(path, ("replace", old))
        super().write_file_atomic(path, data, durable)
        if durable:
            self._undo.pop(path, None)

    def write_in_place(self, path, data, durable=False):
        if self.dead:
            return
        if not durable and path not in self._undo:
            old = open(path, "rb").read() if os.path.exists(path) else None
            self._journal(path, ("replace", old))
        super().write_in_place(path, data, durable)
        if durable:
            self._undo.pop(path, None)

    def rename(self, src, dst):
        if self.dead:
            return
        super().rename(src, dst)  # taken as durable at once, like deletions

    def replace(self, src, dst):
        if self.dead:
            return
        super().replace(src, dst)
        self._undo.pop(dst, None)
        if src in self._undo:
            self._undo[dst] = self._undo.pop(src)

    def fsync_dir(self, path):
        if self.dead:
            return
        super().fsync_dir(path)
        self._unlinked_dirs.pop(path, None)

    def remove(self, path):
        if self.dead:
            return
        super().remove(path)
        self._undo.pop(path, None)

    def rmtree(self, path):
        if self.dead:
            return
        super().rmtree(path)

    def close(self, fd):
        self._paths.pop(fd, None)
        super().close(fd)

    # -- the disk after the power cut -----------------------------------------------------------------
    def image(self, src: str, dst: str, rng: random.Random | None = None) -> str:
        """Copy src to dst as the disk holds it after a power cut now. With rng, each file keeps or
        drops its unsynced changes at random; without, every unsynced change is dropped."""
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
        for path, entries in self._undo.items():
            target = os.path.join(dst, os.path.relpath(path, src))
            if not os.path.exists(target) and entries[0][0] != "replace":
                continue
            if rng is not None and rng.random() < 0.5:
                continue
            for entry in reversed(entries):
                _undo(target, entry)
        for directory, paths in self._unlinked_dirs.items():
            for path in paths:
                target = os.path.join(dst, os.path.relpath(path, src))
                if os.path.exists(target) and (rng is None or rng.random() < 0.5):
                    os.remove(target)
        return dst


def _undo(target: str, entry: tuple) -> None:
    if entry[0] == "replace":
        if entry[1] is None:
            if os.path.exists(target):
                os.remove(target)
        else:
            with open(target, "wb") as f:
                f.write(entry[1])
        return
    with open(target, "r+b") as f:
        if entry[0] == "write":
            _, offset, old, old_size = entry
            f.seek(offset)
            f.write(old)
            f.truncate(old_size)
        else:
            _, old_size, new_size, tail = entry
            f.truncate(old_size)
            if tail:
                f.seek(new_size)
                f.write(tail)
