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

The recovery point also records the log's extent as the broker last knew it durably: its log start
(written durably before retention deletes a segment) and the last segment written. So a log that
lost its first or last segment file, or the durable tail of its last one, is refused with what is
missing, instead of opening shorter; segments below the recorded log start are what an interrupted
retention left, and are deleted.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable
from typing import NamedTuple

from .._native import batch_scan, checksum
from ..config import TopicConfig
from ..errors import CorruptLogError
from .fs import TMP_PREFIX, FileSystem
from .map_cache import MapCache
from .segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, Segment

log = logging.getLogger("tidelog.recovery")

RECOVERY_POINT_FILE = "recovery-point"
_CHECKPOINT_V1 = struct.Struct(">4sHqq")  # magic, version, segment base offset, position; then CRC-32C
_CHECKPOINT = struct.Struct(">4sHqqq")  # magic, version 2, log start, segment base offset, position; CRC-32C
_MAGIC = b"TLRP"


class Checkpoint(NamedTuple):
    """The durable state of a partition's log: everything before `position` of segment `base` was
    fsynced, and the log starts at `log_start` (-1: not recorded, a file of the first format)."""

    log_start: int
    base: int
    position: int


INTACT, TORN_TAIL, CORRUPT = "intact", "torn tail", "corrupt"


class Verdict(NamedTuple):
    """What the end of a segment's scan means (see `classify`)."""

    kind: str  # INTACT, TORN_TAIL (opening cuts it) or CORRUPT (opening refuses)
    position: int  # where the valid data ends
    what: str = ""  # what was found there, for TORN_TAIL and CORRUPT


def classify(
    reason: int, end_pos: int, *, durable_position: int, whole: bool, last: bool, zeros_follow: Callable[[int], bool]
) -> Verdict:
    """The one rule for what a segment's scan found, used by opening (recovery) and by `tidelog check`
    alike, so the two can never disagree.

    reason, end_pos: where and why the scan of the segment's data stopped. durable_position: the
    recovery point's position when this is its segment, else 0. whole: every byte of the file was
    made durable (a segment sealed before a later one began, or any segment after a clean stop).
    zeros_follow(pos): whether only zeros (unused preallocation) follow pos.

    Data that was durable and is invalid, or missing, is corruption. Past the durable part, an invalid
    batch of the last segment is a torn write, which opening cuts; anywhere else it is corruption.
    """
    stop = batch_scan.STOP_NAMES[reason]
    if end_pos < durable_position:
        return Verdict(
            CORRUPT,
            end_pos,
            f"{stop} {durable_position - end_pos} bytes before the recovery point (durable records are missing)",
        )
    if reason == batch_scan.END or (reason == batch_scan.ZERO and zeros_follow(end_pos)):
        return Verdict(INTACT, end_pos)
    if reason == batch_scan.ZERO:
        stop = "zero-filled block with data after it"
    if whole or not last:
        return Verdict(CORRUPT, end_pos, stop if last else f"{stop} (in the middle of the log)")
    return Verdict(TORN_TAIL, end_pos, stop)


class RecoveryReport(NamedTuple):
    """What opening a partition found and did."""

    segments: int
    scanned_bytes: int
    truncated_at: int
    """Byte position in the last segment where a torn tail was cut, or -1."""
    rebuilt_indexes: int
    stop_reason: str


def read_checkpoint(fs: FileSystem, directory: str) -> Checkpoint | None:
    """The partition's recovery point, or None if it is missing or invalid (torn, damaged)."""
    path = os.path.join(directory, RECOVERY_POINT_FILE)
    if not fs.exists(path):
        return None
    data = fs.read_file(path)
    body, crc = data[:-4], struct.unpack(">I", data[-4:])[0] if len(data) >= 4 else -1
    if checksum.crc32c(body) != crc:
        return None
    if len(body) == _CHECKPOINT.size:
        magic, version, log_start, base, pos = _CHECKPOINT.unpack(body)
        if magic != _MAGIC or version != 2 or min(log_start, base, pos) < 0 or log_start > base:
            return None
        return Checkpoint(log_start, base, pos)
    if len(body) == _CHECKPOINT_V1.size:
        magic, version, base, pos = _CHECKPOINT_V1.unpack(body)
        if magic != _MAGIC or version != 1 or base < 0 or pos < 0:
            return None
        return Checkpoint(-1, base, pos)
    return None


def write_checkpoint(fs: FileSystem, directory: str, point: Checkpoint, durable: bool = False) -> None:
    """Record the durable state of the log (see Checkpoint).

    Written in place (no new file, so it works on a full disk) only after the data it covers was
    fsynced. It need not be fsynced itself after an append: after a process crash the page cache
    still holds it, and after a power cut a lost or torn one makes recovery scan more. It is made
    durable before retention deletes segments (the log start then moves) and at a clean close.
    """
    body = _CHECKPOINT.pack(_MAGIC, 2, *point)
    fs.write_in_place(
        os.path.join(directory, RECOVERY_POINT_FILE), body + struct.pack(">I", checksum.crc32c(body)), durable=durable
    )


def segment_bases(fs: FileSystem, directory: str) -> list[int]:
    """Base offsets of the segments: `.log` files whose stem is 20 digits (read only)."""
    bases = set()
    for name in fs.listdir(directory):
        stem, ext = os.path.splitext(name)
        if ext == LOG_SUFFIX and stem.isdigit() and len(stem) == 20:
            bases.add(int(stem))
    return sorted(bases)


def list_segment_bases(fs: FileSystem, directory: str) -> list[int]:
    """Base offsets of the .log files in a partition directory; strays (temp files, orphan indexes) go."""
    names = fs.listdir(directory)
    bases = set(segment_bases(fs, directory))
    for name in names:
        stem, ext = os.path.splitext(name)
        if (
            name.endswith(".tmp")
            or name.startswith(TMP_PREFIX)
            or (ext in (INDEX_SUFFIX, TIME_INDEX_SUFFIX) and stem.isdigit() and int(stem) not in bases)
        ):
            fs.remove(os.path.join(directory, name))
    return sorted(bases)


def missing_segments(bases: list[int], point: Checkpoint | None) -> str | None:
    """What the recovery point says should be there and is not (the first segment, holding the log
    start, or the last one written), or None. The one rule for opening and for `tidelog check`."""
    if point is None:
        return None
    if not bases:
        return f"every segment file is missing (its recovery point names segment {point.base})"
    if point.log_start >= 0 and bases[0] > point.log_start:
        return (
            f"the log should start at offset {point.log_start}, but its first segment file starts at "
            f"{bases[0]}: the segment(s) before are missing"
        )
    if point.base not in bases:
        return (
            f"segment file {point.base:020d}.log, which holds durable records, is missing (the segments "
            f"found end at {bases[-1]:020d}.log)"
        )
    return None


def _check_extent(fs: FileSystem, directory: str, bases: list[int], point: Checkpoint | None) -> list[int]:
    """Refuse a log that lost segment files the recovery point says exist; delete the segments an
    interrupted retention left below the durable log start. Returns the bases to open."""
    name = os.path.basename(directory)
    if point is None:
        if bases:
            log.warning(
                "partition %s has no valid recovery point: its first and last segments cannot be checked",
                name,
                extra={"event": "recovery_point_missing", "directory": directory},
            )
        return bases
    missing = missing_segments(bases, point)
    if missing is not None:
        _refuse_missing(directory, missing)
    while point.log_start >= 0 and len(bases) > 1 and bases[1] <= point.log_start:
        log.info(
            "removing a segment below the log start (a retention a crash interrupted)",
            extra={"event": "segment_deleted", "log": name, "reason": "retention", "base_offset": bases[0]},
        )
        Segment.remove_files(fs, directory, bases[0])
        bases = bases[1:]
    return bases


def _refuse_missing(directory: str, what: str) -> None:
    raise CorruptLogError(
        f"partition {os.path.basename(directory)} is incomplete: {what}; nothing was changed. If the files "
        f"were moved, move them back; `tidelog check --repair --data-dir {os.path.dirname(directory)}` accepts "
        f"the loss and resets the partition's recovery point",
        path=directory,
    )


def open_segments(
    fs: FileSystem, directory: str, config: TopicConfig, clean: bool, maps: MapCache | None = None, new: bool = False
) -> tuple[list[Segment], RecoveryReport]:
    """Load every segment of a partition, recovering as needed; the last one is left active.
    new: the partition is being created (an empty segment 0 is made).

    Raises CorruptLogError, and removes no record, when data known to be durable is invalid: that is
    corruption, not a torn write, and cutting there would silently drop records that were
    acknowledged; `tidelog check --repair` cuts it on request.
    """
    bases = list_segment_bases(fs, directory)
    if new and not bases:
        return [Segment.create(fs, directory, 0, config, maps)], RecoveryReport(1, 0, -1, 0, "new")
    durable = read_checkpoint(fs, directory)
    bases = _check_extent(fs, directory, bases, durable)
    checkpoint = None if clean or durable is None else (durable.base, durable.position)
    if not clean and checkpoint is None:
        checkpoint = (bases[-1], 0)  # sealed segments were fsynced when they were sealed
    segments: list[Segment] = []
    scanned = rebuilt = 0
    truncated = -1
    reason = "clean" if clean else "recovered"
    try:
        for i, base in enumerate(bases):
            last = i == len(bases) - 1
            seg = Segment.load(fs, directory, base, config, maps)
            segments.append(seg)
            expected = segments[-2].next_offset if len(segments) > 1 else base
            if base != expected:
                _refuse(
                    directory, seg, 0, f"the segment starts at offset {base} but the previous one ends at {expected}"
                )
            scanned_from_point = checkpoint is not None and base >= checkpoint[0]
            if scanned_from_point and checkpoint is not None:  # (the second test is implied by the first)
                start = min(checkpoint[1] if base == checkpoint[0] else 0, seg.file_size)
                result = seg.recover(start)
                scanned += result.end_pos - start
                rebuilt += 1
            else:
                damaged = (
                    seg.indexes_missing
                    or seg.index.torn
                    or seg.time_index.torn
                    or not (seg.index.is_consistent(seg.file_size) and seg.time_index.is_consistent(1 << 31))
                )
                if damaged:
                    log.warning(
                        "rebuilding damaged or missing indexes",
                        extra={"event": "indexes_rebuilt", "directory": directory, "base_offset": base},
                    )
                    result = seg.rebuild_indexes(verify=True)
                    rebuilt += 1
                else:
                    result = seg.restore()
            verdict = classify(
                result.reason,
                result.end_pos,
                durable_position=durable.position if durable is not None and base == durable.base else 0,
                whole=not (last and scanned_from_point),
                last=last,
                zeros_follow=seg.zeros_after,
            )
            if verdict.kind == CORRUPT:
                _refuse(directory, seg, verdict.position, verdict.what)
            if verdict.kind == TORN_TAIL:
                reason, truncated = verdict.what, verdict.position
                log.warning(
                    "torn write past the last fsync: the log is cut there",
                    extra={
                        "event": "log_truncated",
                        "directory": directory,
                        "reason": verdict.what,
                        "base_offset": base,
                        "position": verdict.position,
                    },
                )
            if last and verdict.position < seg.file_size:
                seg.cut(verdict.position)  # a torn tail, or preallocated zeros to keep clear
            if not last:
                _finish_sealed(seg)  # now, not after the loop: a sealed segment lets go of its descriptors
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
        path=seg.log_path,
    )


def _finish_sealed(seg: Segment) -> None:
    if seg.file_size == seg.size and seg.index.sealed and seg.time_index.sealed:
        seg.mark_sealed()
    else:
        seg.seal()  # found untrimmed (a crash while rolling) or with rebuilt indexes


def _finish(
    segments: list[Segment], scanned: int, truncated: int, rebuilt: int, reason: str
) -> tuple[list[Segment], RecoveryReport]:
    segments[-1].activate()
    return segments, RecoveryReport(len(segments), scanned, truncated, rebuilt, reason)
