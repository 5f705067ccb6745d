"""A file of fixed-size big-endian entries, read through numpy over a read-only mmap.

The shared body of the offset and time indexes. The file is preallocated to `max_bytes` while its
segment is active (the map then never has to grow) and trimmed to the written entries when the segment
is sealed. Entries are written with pwrite, never through the map, so a full disk is an error and not
a SIGBUS. `entries` counts the valid ones; bytes after them are ignored and overwritten. Once its
segment is sealed the index lets go of its descriptor (`release`); its map is then made when first
read and may be dropped again (`drop_map`, by the engine's MapCache).

Not thread-safe for writers (the partition log's lock serialises them). Readers may call `view()`
concurrently with an append: they see the entries counted when they asked.
"""

from __future__ import annotations

import numpy as np

from ..errors import StorageError
from .fs import FileSystem


class IndexFile:
    dtype: np.dtype  # set by subclasses

    def __init__(self, fs: FileSystem, path: str, max_bytes: int, create: bool) -> None:
        self._fs = fs
        self.path = path
        self._entry = self.dtype.itemsize
        self._fd = fs.open(path, create=create)  # -1 once released
        size = fs.size(self._fd)
        self.entries = 0 if create else size // self._entry
        self.torn = not create and size % self._entry != 0
        """Found with a partial entry at the end: damaged, so the segment's indexes are rebuilt."""
        self._capacity_bytes = max(max_bytes - max_bytes % self._entry, self._entry)
        self._map: memoryview | bytes | None = None
        self._map_len = 0
        self._closed = False
        # A new index is the active segment's and grows; an existing one is opened as it is (sealed
        # until `activate`), so opening a data directory never rewrites files it only reads.
        self.sealed = not create
        try:
            if create:
                self._preallocate()
            else:
                self._remap(size)
        except BaseException:
            self.close()
            raise

    @classmethod
    def read_only(cls, fs: FileSystem, path: str):
        """A copy of an existing index to look at (`tidelog check`, `dump`; the broker may be running):
        read, not mapped, since a broker sealing the segment trims the file, and a map read past the
        new end kills the reader with SIGBUS; nothing is ever written. Every entry the file holds is
        counted, also the zeros of an active segment's preallocation (see `written`). StorageError
        when it cannot be read."""
        index = cls.__new__(cls)
        index._fs, index.path, index._entry = fs, path, cls.dtype.itemsize
        data = fs.read_file(path)
        index.entries, index.torn = len(data) // index._entry, len(data) % index._entry != 0
        index._capacity_bytes = index.entries * index._entry
        index._map, index._map_len = data, len(data)
        index._closed, index.sealed, index._fd = False, True, -1
        return index

    # -- lifecycle ---------------------------------------------------------------------------------
    def _preallocate(self) -> None:
        self._ensure_fd()
        want = max(self._capacity_bytes, self.entries * self._entry)
        if self._fs.size(self._fd) != want:
            self._fs.truncate(self._fd, want, self.path)
        self._remap(want)

    def _remap(self, length: int) -> None:
        # The old map is dropped, not released: a concurrent reader may still be looking through it,
        # and it stays valid for the entries it covers (they are within the file's new length).
        self._map = self._fs.map_read(self._fd, length)
        self._map_len = length if self._map is not None else 0

    @property
    def capacity(self) -> int:
        return self._capacity_bytes // self._entry if not self.sealed else self.entries

    def is_full(self, extra: int = 1) -> bool:
        return self.entries + extra > self.capacity

    def seal(self) -> None:
        """Trim the file to its entries and make them durable (the segment stops growing)."""
        self._ensure_fd()
        self._fs.truncate(self._fd, self.entries * self._entry, self.path)
        self._fs.fsync(self._fd, self.path)
        self.sealed = True
        self._remap(self.entries * self._entry)

    def _ensure_fd(self) -> None:
        if self._fd < 0:
            self._fd = self._fs.open(self.path)

    def release(self) -> None:
        """Close the descriptor of a sealed index: its map needs none, and no write is left to make."""
        assert self.sealed, "only a sealed index lets go of its file"
        if self._fd >= 0:
            self._fs.close(self._fd)
            self._fd = -1

    def drop_map(self) -> None:
        """Unmap a released index; the next read maps it again (views already taken stay valid)."""
        if self._fd < 0:
            self._map = None

    def activate(self) -> None:
        """Extend a trimmed index to its preallocated size so that it can take appends."""
        self.sealed = False
        self._preallocate()

    def grow(self, entries: int) -> None:
        """Make room for at least `entries` entries (rebuilding an index larger than max_bytes)."""
        self._capacity_bytes = max(self._capacity_bytes, entries * self._entry)
        self.sealed = False
        self._preallocate()

    def mark_sealed(self) -> None:
        """The file is already trimmed and durable (found so on open)."""
        self.sealed = True

    def close(self, trim: bool = False) -> None:
        self._closed = True  # a reader still searching it sees no entries (and scans instead)
        if trim and not self.sealed and self._fd >= 0:
            # A clean stop trusts these entries on the next open: make them durable first.
            self._fs.truncate(self._fd, self.entries * self._entry, self.path)
            self._fs.fsync(self._fd, self.path)
        self._map = None  # unmapped when the last view of it goes (a reader may still hold one)
        if self._fd >= 0:
            self._fs.close(self._fd)
            self._fd = -1

    def flush(self) -> None:
        self._ensure_fd()
        self._fs.fsync(self._fd, self.path)

    # -- entries -----------------------------------------------------------------------------------
    def view(self) -> np.ndarray:
        """The valid entries as a structured numpy array (zero-copy over the map)."""
        n = self.entries
        m = self._map
        if m is None and n and self._fd < 0 and not self._closed:
            m = self._map_released()
        if n == 0 or m is None:
            return np.empty(0, dtype=self.dtype)
        return np.frombuffer(m, dtype=self.dtype, count=n)

    def _map_released(self):
        """Map a released index again (read-only; the descriptor is closed once mapped)."""
        try:
            fd = self._fs.open(self.path, read_only=True)
        except StorageError:
            # Deleted (retention) while a reader came to search it, or removed because an entry was
            # found wrong (the next open rebuilds it): search without it, as if it had no entries.
            if self._closed or not self._fs.exists(self.path):
                return None
            raise
        try:
            m = self._fs.map_read(fd, self.entries * self._entry)
        finally:
            self._fs.close(fd)
        self._map = m
        self._map_len = self.entries * self._entry
        return m

    def append_entries(self, rows: np.ndarray) -> None:
        """Write rows (of self.dtype) after the current entries; counted only once written."""
        if len(rows) == 0:
            return
        if self.entries + len(rows) > self.capacity:
            raise AssertionError(f"{self.path}: index full; the segment should have rolled first")
        self._ensure_fd()
        self._fs.pwrite(self._fd, rows.tobytes(), self.entries * self._entry, self.path)
        self.entries += len(rows)

    def truncate_entries(self, n: int) -> None:
        """Forget entries from n on (recovery and truncation)."""
        self.entries = min(self.entries, max(n, 0))
