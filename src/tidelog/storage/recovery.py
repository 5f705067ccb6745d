"""Open a partition directory's segments and bring them to a consistent state.

After a clean stop the indexes are trusted and each segment is only validated past its last index
entry, so opening is quick whatever the log's size. After an unclean stop, everything past the
recovery point (the last position known fsynced, kept in the `recovery-point` file) is re-validated
batch by batch: CRC-32C, offset continuity and lengths. An invalid batch past the recovery point of the
last segment is a torn write: the log is cut there and that segment's indexes are rebuilt. Invalid
data anywhere else (before the recovery point, in a segment sealed before a later one began, a gap
between segments) was durable once, so it is corruption: opening refuses with CorruptLogError and
removes no record, and `tidelog check --repair` cuts the log there on request. Indexes that are missing,
fail a structural check, or whose last entry does not match the log are rebuilt in either case.
Corruption further inside a segment is found when it is read (Segment.verify) or by `tidelog check`.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import NamedTuple

from .._native import batch_scan, checksum
from ..config import TopicConfig
from ..errors import CorruptLogError
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
    """Byte position in the last segment where a torn tail was cut, or -1."""
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
    """Load every segment of a partition, recovering as needed; the last one is left active.

    Raises CorruptLogError, and removes no record, when data known to be durable is invalid: that is
    corruption, not a torn write, and cutting there would silently drop records that were
    acknowledged; `tidelog check --repair` cuts it on request.
    """
    bases = list_segment_bases(fs, directory)
    if not bases:
        return [Segment.create(fs, directory, 0, config)], RecoveryReport(1, 0, -1, 0, "new")
    checkpoint = None if clean else read_checkpoint(fs, directory)
    if not clean and (checkpoint is None or checkpoint[0] not in bases):
        checkpoint = (bases[-1], 0)  # sealed segments were fsynced when they were sealed
    segments: list[Segment] = []
    scanned = rebuilt = 0
    truncated = -1
    reason = "clean" if clean else "recovered"
    try:
        for i, base in enumerate(bases):
            last = i == len(bases) - 1
            seg = Segment.load(fs, directory, base, config)
            segments.append(seg)
            expected = segments[-2].next_offset if len(segments) > 1 else base
            if base != expected:
                _refuse(directory, seg, 0, f"the segment starts at offset {base} but the previous one ends "
                        f"at {expected}")
            if checkpoint is not None and base >= checkpoint[0]:
                start = min(checkpoint[1] if base == checkpoint[0] else 0, seg.file_size)
                result = seg.recover(start)
                scanned += result.end_pos - start
                rebuilt += 1
                stop = batch_scan.STOP_NAMES[result.reason]
                if result.end_pos < start:
                    _refuse(directory, seg, result.end_pos, f"{stop} before the recovery point")
                if not last:
                    # sealed (fsynced) before a later segment began: it must be whole
                    if result.reason not in (batch_scan.END, batch_scan.ZERO) or not seg.zeros_after(result.end_pos):
                        _refuse(directory, seg, result.end_pos, stop)
                else:
                    if result.reason not in (batch_scan.END, batch_scan.ZERO):
                        reason = stop
                        truncated = result.end_pos
                        log.warning("torn write past the last fsync: the log is cut there", extra={
                            "event": "log_truncated", "directory": directory, "reason": stop, "base_offset": base,
                            "position": result.end_pos})
                    seg.cut(result.end_pos)  # also clears whatever a torn write left past zeros
            else:
                damaged = (seg.indexes_missing or seg.index.torn or seg.time_index.torn
                           or not (seg.index.is_consistent(seg.file_size) and seg.time_index.is_consistent(1 << 31)))
                if damaged:
                    log.warning("rebuilding damaged or missing indexes", extra={
                        "event": "indexes_rebuilt", "directory": directory, "base_offset": base})
                    result = seg.rebuild_indexes(verify=True)
                    rebuilt += 1
                else:
                    result = seg.restore()
                if result.reason not in (batch_scan.END, batch_scan.ZERO) or not seg.zeros_after(result.end_pos):
                    _refuse(directory, seg, result.end_pos, batch_scan.STOP_NAMES[result.reason])
                if result.end_pos < seg.file_size and last:
                    seg.cut(result.end_pos)
    except BaseException:
        for seg in segments:
            seg.close()
        raise
    return _finish(segments, scanned, truncated, rebuilt, reason)


def _refuse(directory: str, seg: Segment, pos: int, what: str) -> None:
    raise CorruptLogError(
        f"partition {os.path.basename(directory)} is corrupt: {what} at byte {pos} of {os.path.basename(seg.log_path)}"
        f" (records from offset {seg.base_offset} on may be affected); nothing was cut. Stop the broker "
        f"and run `tidelog check --repair --data-dir {os.path.dirname(directory)}` to cut the log there",
        path=seg.log_path)


def _finish(segments: list[Segment], scanned: int, truncated: int, rebuilt: int, reason: str) -> tuple[list[Segment], RecoveryReport]:
    for seg in segments[:-1]:
        if seg.file_size == seg.size and seg.index.sealed and seg.time_index.sealed:
            seg.mark_sealed()
        else:
            seg.seal()  # found untrimmed (a crash while rolling) or with rebuilt indexes
    segments[-1].activate()
    return segments, RecoveryReport(len(segments), scanned, truncated, rebuilt, reason)
