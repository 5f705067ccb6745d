"""One segment: a .log file of record batches and its .index and .timeindex, named by base offset.

The .log is preallocated to `segment_bytes` (a sparse file) and mapped read-only once, so readers get
zero-copy views and the map never grows. Appends use pwrite: measured faster here than copying into
the map, and a full disk then fails the write with ENOSPC instead of killing the process with SIGBUS.
Every read is bounded by `size`, the end of the last whole batch, so nothing past it (unwritten zeros
or a torn write) is ever visible. Sealing trims the files to their contents and fsyncs them; every
access stays below the trimmed length, so shrinking the file under the map is safe.

A sealed segment holds no file descriptor: its maps need none, and it is never written again. It maps
its files when first read, and the engine's MapCache unmaps the segments used longest ago, so a long
history costs neither descriptors nor an unbounded number of maps. Scans of a file found on disk stop
at its last data block (`FileSystem.data_end`): reading the unwritten, sparse part of a preallocated
file through a map can fault in a page, which a full file system answers with SIGBUS.

Not thread-safe: the partition log serialises appends, sealing and truncation under its lock. Views
handed out stay valid after the segment is sealed, deleted, unmapped or closed (the map lives until
they go). The one exception is `flush`, which group commit and the interval flusher run outside the
partition lock: the .log descriptor is closed only under `_fd_lock`, which a flush holds while it
fsyncs, so a roll sealing the segment meanwhile never closes (and the process never reuses) the
descriptor being fsynced.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from typing import NamedTuple

import numpy as np

from .._native import batch_scan
from ..codec.batch import HEADER_SIZE, LAST_OFFSET_DELTA_AT, MAX_TIMESTAMP_AT
from ..config import TopicConfig
from ..errors import CorruptLogError, StorageError
from .fs import FileSystem
from .map_cache import UNBOUNDED, MapCache
from .offset_index import OffsetIndex
from .time_index import TimeIndex

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
MAX_RELATIVE_OFFSET = (1 << 31) - 1

_INT64 = struct.Struct(">q")  # big-endian, as every header field
_INT32 = struct.Struct(">i")

log = logging.getLogger("tidelog.storage")


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


class AppendedBatch(NamedTuple):
    """A batch in an append call: position relative to the append's start, and its log metadata."""

    rel_pos: int
    size: int
    base_offset: int
    last_offset: int
    max_timestamp: int


class ScanResult(NamedTuple):
    """Outcome of walking a segment's batches: where valid data ends and why the walk stopped."""

    end_pos: int
    next_offset: int
    max_timestamp: int
    reason: int
    batches: int


class Segment:
    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        base_offset: int,
        config: TopicConfig,
        create: bool,
        maps: MapCache | None = None,
    ) -> None:
        self.fs = fs
        self._maps = maps if maps is not None else UNBOUNDED
        self.directory = directory
        self.base_offset = base_offset
        self.config = config
        stem = os.path.join(directory, segment_name(base_offset))
        self.log_path = stem + LOG_SUFFIX
        self._fd = fs.open(self.log_path, create=create)  # -1 once sealed (released)
        self._fd_lock = threading.Lock()  # held to fsync or close _fd (see the module doc)
        index_path, time_path = stem + INDEX_SUFFIX, stem + TIME_INDEX_SUFFIX
        self.indexes_missing = not create and not (fs.exists(index_path) and fs.exists(time_path))
        try:
            self.index = OffsetIndex(fs, index_path, config.max_index_bytes, create or not fs.exists(index_path))
            try:
                self.time_index = TimeIndex(fs, time_path, config.max_index_bytes, create or not fs.exists(time_path))
            except BaseException:
                self.index.close()
                raise
        except BaseException:  # e.g. out of descriptors: let go of what was opened
            fs.close(self._fd)
            raise
        self.size = 0
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.first_batch_timestamp = -1
        self.sealed = False
        self.deleted = False
        self._closed = False
        self._last_bucket = -1
        self._map: memoryview | bytes | None = None
        self._map_len = 0
        self._readable_end = 0
        """Bytes of the file that may be read through the map: written data, never the sparse rest."""
        # (start, end, offset at end): bytes in [start, end) passed a CRC-32C and continuity check in
        # this process (appended from validated batches, or read and checked once), so reads inside
        # skip the check. One range, moved to where readers are, so a consumer tailing the log pays
        # once; a tuple, replaced whole, so that lock-free readers never see half an update.
        self._verified = (0, 0, base_offset)
        self.index_damaged = False

    # -- opening -------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, fs: FileSystem, directory: str, base_offset: int, config: TopicConfig, maps: MapCache | None = None
    ) -> Segment:
        seg = cls(fs, directory, base_offset, config, create=True, maps=maps)
        try:
            seg._map_file(config.segment_bytes)
            fs.fsync_dir(directory)  # the new files' names must survive a crash with the data in them
        except BaseException:
            seg.close()
            raise
        return seg

    @classmethod
    def load(
        cls, fs: FileSystem, directory: str, base_offset: int, config: TopicConfig, maps: MapCache | None = None
    ) -> Segment:
        """Open existing files; the caller then calls `recover` or `restore` to find the contents."""
        seg = cls(fs, directory, base_offset, config, create=False, maps=maps)
        try:
            size = max(fs.size(seg._fd), 0)
            seg._map_file(size)
            seg._readable_end = fs.data_end(seg._fd, size)
        except BaseException:
            seg.close()
            raise
        return seg

    def _map_file(self, length: int) -> None:
        if self.fs.size(self._fd) < length:
            self.fs.truncate(self._fd, length, self.log_path)
        self._map = self.fs.map_read(self._fd, length)
        self._map_len = length

    @property
    def file_size(self) -> int:
        return self._map_len

    def restore(self) -> ScanResult:
        """Find the end of a segment whose indexes are trusted: validate only past the last index entry.

        If the last entry does not point at a batch holding its offset, the index is not trusted after
        all: both indexes are rebuilt from a validating scan of the whole segment. The caller decides
        what an invalid batch means (a cut tail or a refusal).
        """
        rel, start = self.index.last()
        if self.index.entries and not self._entry_ok(rel, start, self._scan_end()):
            log.warning("%s: the offset index does not match the log; rebuilding it", self.log_path)
            return self.rebuild_indexes(verify=True)
        self._last_bucket = start // self.config.index_interval_bytes if self.index.entries else -1
        ts, _ = self.time_index.last()
        self.max_timestamp = ts
        result = self.scan(
            start, verify=True, expected_offset=self.base_offset + rel if self.index.entries else self.base_offset
        )
        self._set_end(result)
        self._load_first_timestamp()
        if result.reason in (batch_scan.END, batch_scan.ZERO):
            self._verified = (start, result.end_pos, result.next_offset)
        return result

    def zeros_after(self, pos: int) -> bool:
        """Whether every byte of the file from pos on is zero (unused preallocation, not lost data).
        Read with pread, never through the map (see the module doc)."""
        if pos >= self._map_len:
            return True
        return self.fs.zeros_between(self._fd, pos, self._map_len, self.log_path)

    def _scan_end(self) -> int:
        """How far a scan may read through the map: the written part of the file."""
        return min(self._map_len, max(self._readable_end, self.size))

    def recover(self, start_pos: int) -> ScanResult:
        """Validate batches from start_pos (CRC, offset continuity) and rebuild both indexes up to the
        last valid one; the caller decides whether what follows is a torn tail to `cut` or corruption
        to refuse. Bytes before start_pos are trusted (they were fsynced)."""
        head = self.scan(0, verify=False, expected_offset=self.base_offset, stop=start_pos) if start_pos else None
        if head is not None and head.end_pos != start_pos:
            start_pos = head.end_pos  # the trusted part did not end on a batch boundary: validate from there
        tail = self.scan(start_pos, verify=True, expected_offset=head.next_offset if head else self.base_offset)
        self.rebuild_indexes(tail.end_pos)
        if start_pos == 0:
            self._verified = (0, tail.end_pos, self.next_offset)
        return tail

    def cut(self, end_pos: int) -> None:
        """Drop everything after end_pos (a batch boundary found by `recover`): the torn tail."""
        if end_pos < self._map_len:
            self._zero_tail(end_pos)

    def truncate(self, end_pos: int, next_offset: int, readers_end: int = 0) -> None:
        """Drop the batches from end_pos (a batch boundary, where offset next_offset starts) on, and
        their index entries: a replica whose log diverged from its leader's. The segment must be active.

        Bytes below readers_end may be read meanwhile through maps taken before: they are overwritten
        with zeros, not cut off (a map read past the end of its file faults: SIGBUS).
        """
        assert not self.sealed, "truncate an active segment"
        self.rebuild_indexes(end_pos)
        self.size, self.next_offset = end_pos, next_offset
        if end_pos < HEADER_SIZE:
            self.first_batch_timestamp = -1
        lo, hi, _ = self._verified
        if hi > end_pos:
            self._verified = (lo, end_pos, next_offset) if lo <= end_pos else (0, 0, self.base_offset)
        keep = min(max(readers_end, end_pos), self._readable_end, self._map_len)
        zeros = bytes(min(keep - end_pos, 1 << 20)) if keep > end_pos else b""
        for pos in range(end_pos, keep, len(zeros) or 1):
            self.fs.pwrite(self._fd, zeros[: keep - pos], pos, self.log_path)
        self._zero_tail(max(keep, end_pos))

    def _zero_tail(self, end_pos: int) -> None:
        # Cut everything after the last valid batch, then re-extend: the preallocated space reads as
        # zeros again, so no later scan can mistake old bytes for data. No view reaches past end_pos.
        length = self._map_len
        self._readable_end = min(self._readable_end, end_pos)
        self.fs.truncate(self._fd, end_pos, self.log_path)
        if not self.sealed:
            self.fs.truncate(self._fd, length, self.log_path)
        self.fs.fsync(self._fd, self.log_path)

    def _load_first_timestamp(self) -> None:
        if self.size >= HEADER_SIZE:
            self.first_batch_timestamp = int(_INT64.unpack_from(self.buffer, MAX_TIMESTAMP_AT)[0])

    def _set_end(self, result: ScanResult) -> None:
        self.size = result.end_pos
        if result.batches or result.end_pos:
            self.next_offset = result.next_offset
        self.max_timestamp = max(self.max_timestamp, result.max_timestamp)

    # -- scanning ------------------------------------------------------------------------------------
    def scan(
        self, start: int, verify: bool, expected_offset: int, stop: int | None = None, on_batches=None
    ) -> ScanResult:
        """Walk batches from start to the first invalid one (or `stop`), in chunks of headers.

        on_batches(rows) receives each chunk's rows (the batch_scan.COL_* columns).
        """
        limit = self._scan_end()
        end = limit if stop is None else min(stop, limit)
        buf = self.buffer
        rows_out = np.empty((65536, batch_scan.N_COLS), dtype=np.int64)
        pos, next_offset, max_ts, total = start, expected_offset, -1, 0
        last_offset = -1
        while True:
            n, pos, reason, nxt = batch_scan.scan_batches(buf, pos, end, verify, next_offset, rows_out)
            if n:
                chunk = rows_out[:n]
                max_ts = max(max_ts, int(chunk[:, batch_scan.COL_MAX_TIMESTAMP].max()))
                last_offset = int(chunk[-1, batch_scan.COL_LAST_OFFSET])
                total += n
                if on_batches is not None:
                    on_batches(chunk)
            if expected_offset >= 0:
                next_offset = nxt
            if reason != batch_scan.FULL:
                break
        if expected_offset < 0:
            next_offset = last_offset + 1 if total else self.next_offset
        return ScanResult(pos, next_offset, max_ts, reason, total)

    def rebuild_indexes(self, end_pos: int | None = None, verify: bool = False) -> ScanResult:
        """Recreate .index and .timeindex from the log (headers only, unless verify: then CRCs and
        offset continuity too, and the scan stops at the first invalid batch)."""
        self.index.truncate_entries(0)
        self.time_index.truncate_entries(0)
        self._last_bucket = -1
        self.max_timestamp = -1
        result = self.scan(
            0,
            verify=verify,
            expected_offset=self.base_offset if verify else -1,
            stop=end_pos,
            on_batches=self._index_rows,
        )
        if verify:
            self._verified = (0, result.end_pos, result.next_offset)
        self._set_end(result)
        self._load_first_timestamp()
        return result

    def _index_rows(self, rows: np.ndarray) -> None:
        """Vectorised twin of the rule in `append`: index the first batch starting in each interval."""
        pos = rows[:, batch_scan.COL_POS]
        buckets = pos // self.config.index_interval_bytes
        prev = np.concatenate(([self._last_bucket], buckets[:-1]))
        mask = buckets > prev
        running = np.maximum.accumulate(np.maximum(rows[:, batch_scan.COL_MAX_TIMESTAMP], self.max_timestamp))
        rel = rows[:, batch_scan.COL_BASE_OFFSET] - self.base_offset
        picked_run = running[mask]
        prev_ts = np.concatenate(([self.time_index.last()[0]], picked_run[:-1]))
        tmask = picked_run > prev_ts
        self._ensure_index_room(int(mask.sum()))
        self.index.append_entries(OffsetIndex.rows(rel[mask], pos[mask]))
        self.time_index.append_entries(TimeIndex.rows(picked_run[tmask], rel[mask][tmask]))
        if mask.any():
            self._last_bucket = int(buckets[mask][-1])
        self.max_timestamp = int(running[-1])

    def _ensure_index_room(self, n: int) -> None:
        # A rebuilt index needs as many entries as the log has windows; if max_index_bytes shrank
        # since the segment was written, grow the file rather than lose entries.
        for idx in (self.index, self.time_index):
            if idx.sealed or idx.entries + n > idx.capacity:
                idx.grow(idx.entries + n)

    # -- appending -----------------------------------------------------------------------------------
    def room_for(self, nbytes: int, nbatches: int, last_offset: int) -> bool:
        """Whether an append of this size fits without rolling."""
        return (
            self.size + nbytes <= self._map_len
            and not self.sealed
            and last_offset - self.base_offset <= MAX_RELATIVE_OFFSET
            and not self.index.is_full(nbatches)
            and not self.time_index.is_full(nbatches + 1)
        )

    def append(self, buffers: list, batches: list[AppendedBatch], nbytes: int) -> None:
        """Write buffers (whole batches, offsets already assigned) at the end and index them.

        Nothing is counted until every write succeeded: a failed write (e.g. a full disk) leaves the
        segment exactly as it was, and the next append overwrites the partial bytes.
        """
        assert not self.sealed, "append to a sealed segment"
        start = self.size
        interval = self.config.index_interval_bytes
        idx_rows, time_rows = [], []
        bucket, max_ts, last_time = self._last_bucket, self.max_timestamp, self.time_index.last()[0]
        for b in batches:
            pos = start + b.rel_pos
            if b.max_timestamp > max_ts:
                max_ts = b.max_timestamp
            if pos // interval > bucket:
                bucket = pos // interval
                rel = b.base_offset - self.base_offset
                idx_rows.append((rel, pos))
                if max_ts > last_time:
                    time_rows.append((max_ts, rel))
                    last_time = max_ts
        self.fs.pwritev(self._fd, buffers, start, self.log_path)
        self._readable_end = max(self._readable_end, start + nbytes)
        if idx_rows:
            self.index.append_entries(np.array(idx_rows, dtype=OffsetIndex.dtype))
        if time_rows:
            self.time_index.append_entries(np.array(time_rows, dtype=TimeIndex.dtype))
        if self.size == 0:
            self.first_batch_timestamp = batches[0].max_timestamp
        lo, hi, _ = self._verified  # one read: a concurrent verify() may replace the tuple
        if hi == start:  # validated before the write: no need to check it when read
            self._verified = (lo, start + nbytes, batches[-1].last_offset + 1)
        self.size = start + nbytes
        self.next_offset = batches[-1].last_offset + 1
        self.max_timestamp = max_ts
        self._last_bucket = bucket

    # -- reading -------------------------------------------------------------------------------------
    @property
    def buffer(self):
        """The mapped file for native scans; read only below `size` (or a position known valid).

        A reader takes it once and reads through its own reference: the map stays valid for as long as
        the reference lives, even if the segment is unmapped, deleted or closed meanwhile.
        """
        m = self._map
        if m is None:
            if self._fd >= 0 or self.deleted or self._closed or not self.size:
                return b""
            m = self._map_released()
        if self._fd < 0:
            self._maps.touch(self)
        return m

    def _map_released(self):
        """Map a sealed segment again (its descriptor was released; one is opened just to map)."""
        try:
            fd = self.fs.open(self.log_path, read_only=True)
        except StorageError:
            if self.deleted or self._closed:  # deleted (retention) while a reader came to it
                return b""
            raise
        try:
            m = self.fs.map_read(fd, self.size)
        finally:
            self.fs.close(fd)
        self._map, self._map_len = m, self.size
        return m

    def drop_maps(self) -> None:
        """Unmap a sealed segment and its indexes (MapCache); the next read maps them again. Under
        _fd_lock: a segment made active again meanwhile (a failed roll) keeps its maps."""
        with self._fd_lock:
            if self._fd < 0:
                self._map = None
                self.index.drop_map()
                self.time_index.drop_map()

    def view(self, start: int, end: int, buf=None) -> memoryview:
        """Zero-copy view of log bytes [start, end), end <= size (of `buf`, a buffer taken earlier)."""
        buf = self.buffer if buf is None else buf
        if not len(buf):
            return memoryview(b"")
        return memoryview(buf)[start:end]

    def position_of(self, offset: int, end: int, buf=None) -> tuple[int, int]:
        """(position, base offset) of the batch holding offset, searching below end; (-1, -1) if none.
        buf: the buffer the caller took (see `buffer`)."""
        buf = self.buffer if buf is None else buf
        pos, base, _ = batch_scan.find_batch(buf, self._index_start(offset - self.base_offset, end, buf), end, offset)
        return pos, base

    def _index_start(self, rel_offset: int, end: int, buf) -> int:
        """Where to start searching for rel_offset: the closest index entry that checks out.

        An entry is trusted only if the batch header at its position holds its offset, so a damaged
        index costs a longer scan, never a wrong answer. Finding one makes the index files go: the
        next open rebuilds them.
        """
        entries = self.index.view()
        i = int(np.searchsorted(entries["rel"], rel_offset, side="right")) - 1 if len(entries) else -1
        while i >= 0:
            rel, pos = int(entries["rel"][i]), int(entries["pos"][i])
            if rel <= rel_offset and self._entry_ok(rel, pos, end, buf):
                return pos
            if 0 <= pos and pos + HEADER_SIZE > end and pos < self.size:
                pass  # a batch written but not published yet (under fsync="always"): not damage
            else:
                self._index_is_damaged()
            i -= 1
        return 0

    def _entry_ok(self, rel: int, pos: int, end: int, buf=None) -> bool:
        buf = self.buffer if buf is None else buf
        if pos < 0 or pos + HEADER_SIZE > min(end, len(buf)):
            return False
        base = _INT64.unpack_from(buf, pos)[0]
        last = base + _INT32.unpack_from(buf, pos + LAST_OFFSET_DELTA_AT)[0]
        return base <= self.base_offset + rel <= last

    def _index_is_damaged(self) -> None:
        if self.index_damaged:
            return
        self.index_damaged = True
        log.warning(
            "%s: the offset index has entries that do not match the log; searching without "
            "them, and the index files are removed so that the next open rebuilds them",
            self.log_path,
        )
        for path in (self.index.path, self.time_index.path):
            try:
                self.fs.remove(path)
            except StorageError:
                pass  # the next `tidelog check` reports the index again

    def verify(self, start: int, stop: int, buf=None) -> tuple[int, int]:
        """Check the CRC-32C and offset continuity of the batches in [start, stop) before they are
        served, unless inside the one verified range. Returns (end, next offset) of the valid batches:
        (stop, -1) when all are valid, else where the first invalid one starts, so that what precedes
        damage is still served; CorruptLogError (naming the place and the repair) when the first
        batch itself is invalid."""
        lo, hi, hi_offset = self._verified
        if lo <= start and stop <= hi:
            return stop, -1
        buf = self.buffer if buf is None else buf
        extends = lo <= start <= hi
        pos = hi if extends else start
        expected = hi_offset if extends else int(_INT64.unpack_from(buf, pos)[0])
        rows = np.empty((256, batch_scan.N_COLS), dtype=np.int64)
        while True:
            _, pos, reason, expected = batch_scan.scan_batches(buf, pos, stop, True, expected, rows)
            if reason != batch_scan.FULL:
                break
        if pos > hi or not extends:  # keep the range readers are moving along (and appends extend)
            self._verified = (lo if extends else start, pos, expected)
        if reason != batch_scan.END or pos != stop:
            if pos > start:
                return pos, expected
            raise CorruptLogError(
                f"{self.log_path}: {batch_scan.STOP_NAMES[reason]} at byte {pos} (offsets from about "
                f"{expected} on); the log is corrupt here: stop the broker and run `tidelog check --repair "
                f"--data-dir {os.path.dirname(self.directory)}`",
                path=self.log_path,
            )
        return stop, -1

    def position_of_time(self, timestamp: int, end: int, buf) -> int:
        """Position of the first batch whose max timestamp is >= timestamp, or -1 (in `buf`, the
        buffer the caller took)."""
        start = self._index_start(self.time_index.scan_start(timestamp), end, buf)
        pos, _ = batch_scan.find_timestamp(buf, start, end, timestamp)
        return pos

    # -- durability and lifecycle --------------------------------------------------------------------
    def flush(self) -> None:
        """fsync the .log; callable without the partition lock (group commit)."""
        with self._fd_lock:
            if self._fd >= 0:  # a sealed segment was fsynced when it was sealed
                self.fs.fsync(self._fd, self.log_path)

    def _close_fd(self) -> None:
        with self._fd_lock:  # not while a flush is fsyncing it
            if self._fd >= 0:
                self.fs.close(self._fd)
                self._fd = -1

    def seal(self) -> None:
        """Stop growing: record the final time entry, trim every file to its contents, fsync them."""
        if self.sealed:
            return
        ts, rel = self.time_index.last()
        if self.max_timestamp > ts and self.size:
            last_rel = self._last_batch_rel()
            if self.time_index.is_full(1):
                self._ensure_index_room(1)
            self.time_index.append_entries(TimeIndex.rows([self.max_timestamp], [last_rel]))
        self.fs.truncate(self._fd, self.size, self.log_path)
        self.fs.fsync(self._fd, self.log_path)
        self.index.seal()
        self.time_index.seal()
        self.sealed = True
        self._release()

    def _release(self) -> None:
        """A sealed segment is never written again: let go of its descriptors (its maps need none)."""
        self._close_fd()
        self.index.release()
        self.time_index.release()
        self._maps.touch(self)

    def _reopen(self) -> None:
        self._maps.forget(self)
        with self._fd_lock:  # not between an eviction's check and its unmapping (drop_maps)
            if self._fd < 0:
                self._fd = self.fs.open(self.log_path)
                self._map_file(self.size)

    def _last_batch_rel(self) -> int:
        _, pos = self.index.last()
        last_base = self.base_offset
        for base in self._batch_bases_from(pos):
            last_base = base
        return last_base - self.base_offset

    def _batch_bases_from(self, pos: int):
        rows = np.empty((4096, batch_scan.N_COLS), dtype=np.int64)
        buf = self.buffer
        while pos < self.size:
            n, pos, reason, _ = batch_scan.scan_batches(buf, pos, self.size, False, -1, rows)
            yield from rows[:n, batch_scan.COL_BASE_OFFSET].tolist()
            if reason != batch_scan.FULL:
                break

    def activate(self) -> None:
        """Make this (last) segment the one appends go to: extend its files to their preallocation."""
        self._reopen()
        self.sealed = False
        self.index.activate()
        self.time_index.activate()
        length = max(self.config.segment_bytes, self.size)
        if self.fs.size(self._fd) < length:
            self.fs.truncate(self._fd, length, self.log_path)
        if self._map_len < length:
            self._map_file(length)

    @staticmethod
    def remove_files(fs: FileSystem, directory: str, base_offset: int) -> None:
        """Delete a segment's files that may exist (what a failed create left behind)."""
        stem = os.path.join(directory, segment_name(base_offset))
        for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            try:
                fs.remove(stem + suffix)
            except StorageError:
                pass  # best effort: a leftover that breaks continuity makes the next open refuse, and repair removes it

    def mark_sealed(self) -> None:
        """Found trimmed and complete on open: nothing to write."""
        self.sealed = True
        self.index.mark_sealed()
        self.time_index.mark_sealed()
        self._release()

    def close(self, trim: bool = False) -> None:
        """Release files. trim=True (clean shutdown) cuts the preallocated space off the files."""
        self._closed = True
        self._maps.forget(self)
        if trim and not self.sealed and not self.deleted and self._fd >= 0:
            self.fs.truncate(self._fd, self.size, self.log_path)
            self.fs.fsync(self._fd, self.log_path)
        self.index.close(trim=trim and not self.deleted)
        self.time_index.close(trim=trim and not self.deleted)
        self._map = None  # unmapped when the last view of it goes (a reader may still hold one)
        self._close_fd()

    def delete(self) -> None:
        """Remove the files. Views already handed out keep working until released."""
        self.deleted = True
        self._maps.forget(self)
        for path in (self.log_path, self.index.path, self.time_index.path):
            self.fs.remove(path)
        self.index.close()
        self.time_index.close()
        self._map = None  # not released: a concurrent reader may still hold it
        self._close_fd()

    def __repr__(self) -> str:
        return f"Segment(base={self.base_offset}, size={self.size}, next={self.next_offset}, sealed={self.sealed})"
