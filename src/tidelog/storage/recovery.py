"""Open a partition directory's segments and bring them to a consistent state.

After a clean stop the indexes are trusted and each segment is only scanned past its last index entry,
so opening is quick whatever the log's size. After an unclean stop, everything past the recovery
point (the last position known fsynced, kept in the `recovery-point` file) is re-validated batch by
batch: CRC-32C, offset continuity and lengths. The log is cut at the first invalid batch (a torn or
corrupt tail), later segments are deleted (nothing after a torn batch may become visible), and the
indexes of every scanned segment are rebuilt. Indexes that are missing or fail a structural check are
rebuilt in either case.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import NamedTuple

from .._native import batch_scan, checksum
from ..config import TopicConfig
from .fs import FileSystem
from .segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, Segment

log = logging.getLogger("tidelog.recovery")

RECOVERY_POINT_FILE = "recovery-point"
_CHECKPOINT = struct.Struct(">4sHqq")  # magic, version, segment base offset, position; then CRC-32C
_MAGIC = b"TLRP"


class RecoveryReport(NamedTuple):
    """What opening a partition found and did."""

    segments: int
    scanned_bytes: int
    truncated_at: int
    """Byte position in the segment where an invalid tail was cut, or -1."""
    deleted_segments: int
    rebuilt_indexes: int
    stop_reason: str


def read_checkpoint(fs: FileSystem, directory: str) -> tuple[int, int] | None:
    """(segment base offset, position) up to which the log is known durable, or None."""
    path = os.path.join(directory, RECOVERY_POINT_FILE)
    if not fs.exists(path):
        return None
    data = fs.read_file(path)
    if len(data) != _CHECKPOINT.size + 4:
        return None
    body, crc = data[:-4], struct.unpack(">I", data[-4:])[0]
    if checksum.crc32c(body) != crc:
        return None
    magic, version, base, pos = _CHECKPOINT.unpack(body)
    if magic != _MAGIC or version != 1 or base < 0 or pos < 0:
        return None
    return base, pos


def write_checkpoint(fs: FileSystem, directory: str, base: int, pos: int, durable: bool = False) -> None:
    """Record that the log is durable up to (segment base, position).

    Written only after the data it covers was fsynced; it need not be fsynced itself, because a lost
    or torn checkpoint only makes the next recovery scan more.
    """
    body = _CHECKPOINT.pack(_MAGIC, 1, base, pos)
    fs.write_file_atomic(os.path.join(directory, RECOVERY_POINT_FILE),
                         body + struct.pack(">I", checksum.crc32c(body)), durable=durable)


def list_segment_bases(fs: FileSystem, directory: str) -> list[int]:
    """Base offsets of the .log files in a partition directory; strays (temp files, orphan indexes) go."""
    names = fs.listdir(directory)
    bases = set()
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext == LOG_SUFFIX and stem.isdigit() and len(stem) == 20:
            bases.add(int(stem))
    for name in names:
        stem, ext = os.path.splitext(name)
        if name.endswith(".tmp") or (ext in (INDEX_SUFFIX, TIME_INDEX_SUFFIX) and stem.isdigit()
                                     and int(stem) not in bases):
            fs.remove(os.path.join(directory, name))
    return sorted(bases)


def open_segments(fs: FileSystem, directory: str, config: TopicConfig, clean: bool) -> tuple[list[Segment], RecoveryReport]:
    """Load every segment of a partition, recovering as needed; the last one is left active."""
    bases = list_segment_bases(fs, directory)
    if not bases:
        return [Segment.create(fs, directory, 0, config)], RecoveryReport(1, 0, -1, 0, 0, "new")
    checkpoint = None if clean else read_checkpoint(fs, directory)
    if not clean and (checkpoint is None or checkpoint[0] not in bases):
        checkpoint = (bases[-1], 0)  # sealed segments were fsynced when they were sealed
    segments: list[Segment] = []
    scanned = rebuilt = 0
    truncated = -1
    reason = "clean" if clean else "recovered"
    for i, base in enumerate(bases):
        seg = Segment.load(fs, directory, base, config)
        expected = segments[-1].next_offset if segments else base
        if base != expected:
            log.error("a segment does not continue the log; it and all later segments are removed",
                      extra={"event": "segment_gap", "directory": directory, "base_offset": base,
                             "expected_base_offset": expected, "removed_segments": len(bases) - i})
            seg.close()
            _delete_from(fs, directory, bases[i:])
            return _finish(segments, scanned, truncated, len(bases) - i, rebuilt, "offset gap")
        if checkpoint is not None and base >= checkpoint[0]:
            start = checkpoint[1] if base == checkpoint[0] else 0
            result = seg.recover(min(start, seg.file_size))
            scanned += result.end_pos - start
            rebuilt += 1
            if result.reason not in (batch_scan.END, batch_scan.ZERO):
                reason = batch_scan.STOP_NAMES[result.reason]
                log.warning("invalid batch: the log is cut there and later segments removed", extra={
                    "event": "log_truncated", "directory": directory, "reason": reason, "base_offset": base,
                    "position": result.end_pos, "removed_segments": len(bases) - i - 1})
                truncated = result.end_pos
                segments.append(seg)
                _delete_from(fs, directory, bases[i + 1:])
                return _finish(segments, scanned, truncated, len(bases) - i - 1, rebuilt, reason)
        else:
            if not (seg.index.is_consistent(seg.file_size)
                    and seg.time_index.is_consistent(1 << 31) and not seg.indexes_missing):
                log.warning("rebuilding damaged or missing indexes", extra={
                    "event": "indexes_rebuilt", "directory": directory, "base_offset": base})
                seg.rebuild_indexes()
                rebuilt += 1
            else:
                seg.restore()
        segments.append(seg)
    return _finish(segments, scanned, truncated, 0, rebuilt, reason)


def _delete_from(fs: FileSystem, directory: str, bases: list[int]) -> None:
    for base in bases:
        stem = os.path.join(directory, f"{base:020d}")
        for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            fs.remove(stem + suffix)
    if bases:
        fs.fsync_dir(directory)


def _finish(segments: list[Segment], scanned: int, truncated: int, deleted: int, rebuilt: int,
            reason: str) -> tuple[list[Segment], RecoveryReport]:
    for seg in segments[:-1]:
        if seg.file_size == seg.size and seg.index.sealed and seg.time_index.sealed:
            seg.mark_sealed()
        else:
            seg.seal()  # found untrimmed (a crash while rolling) or with rebuilt indexes
    segments[-1].activate()
    return segments, RecoveryReport(len(segments), scanned, truncated, deleted, rebuilt, reason)
