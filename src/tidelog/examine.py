"""Look inside a data directory straight from disk, read-only (the broker may be running): dump batches
and records, and check CRCs, offset continuity and index consistency.

Built on the storage layer's own pieces, so that `tidelog check` and opening the log can never
disagree: segment listing, read-only indexes, and `storage.recovery.classify`, the one rule for what
the end of a segment's data means (intact, a torn tail the next open cuts, or corruption it refuses).

Nothing here writes or takes the lock: files are opened read-only and mapped read-only, and a scan
stops at a file's last data block (reading the sparse, preallocated part of a segment through a map
can kill the process with SIGBUS on a full file system). When a broker holds the directory, the
active segment of each partition is checked only up to its recovery point (the durable end the
broker published): past it, batches are still being written.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from ._native import batch_scan
from .codec.batch import BatchView
from .engine.engine import CLEAN_SHUTDOWN_MARKER
from .engine.topic_meta import (
    CREATING,
    MARKER_FILE,
    TRASH_DIR,
    TopicMeta,
    meta_dir,
    partition_dir,
    read_marker,
    read_topic_meta,
)
from .errors import CorruptBatchError, CorruptLogError, StorageError
from .groups import records as group_records
from .partition import leader_epochs
from .queues import records as queue_records
from .storage import recovery
from .storage.fs import FileSystem
from .storage.offset_index import OffsetIndex
from .storage.recovery import CORRUPT, TORN_TAIL, read_checkpoint
from .storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX
from .storage.time_index import TimeIndex

_FS = FileSystem()


def partition_dirs(data_dir: str, topic: str | None = None) -> list[tuple[str, int, str]]:
    """(topic, partition, directory) of every partition directory, sorted: `<topic>-<n>` directories
    that hold a partition.meta, or that a topic file of the first format (no markers yet) claims.
    Other directories are not tidelog's, whatever their name: never checked, never repaired."""
    first_format = _first_format_topics(data_dir)
    out = []
    for entry in sorted(os.listdir(data_dir)):
        name, sep, index = entry.rpartition("-")
        path = os.path.join(data_dir, entry)
        if not (sep and index.isdigit() and os.path.isdir(path)) or (topic is not None and name != topic):
            continue
        if os.path.exists(os.path.join(path, MARKER_FILE)) or int(index) < first_format.get(name, 0):
            out.append((name, int(index), path))
    return sorted(out, key=lambda t: (t[0], t[1]))


def _first_format_topics(data_dir: str) -> dict[str, int]:
    """Partition counts of the topics whose metadata is of the first format (upgraded at open)."""
    out = {}
    for f in _listdir(meta_dir(data_dir)):
        if f.endswith(".json"):
            try:
                meta = read_topic_meta(_FS, data_dir, os.path.join(meta_dir(data_dir), f))
            except (CorruptLogError, StorageError):
                continue  # reported by check_directory
            if not meta.topic_id:
                out[meta.name] = meta.partitions
    return out


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def segment_bases(directory: str) -> list[int]:
    """Base offsets of the segments, as the broker counts them."""
    return recovery.segment_bases(_FS, directory)


def _map(path: str):
    """(read-only map, bytes that hold data): the map is never read past the file's last data block."""
    fd = _FS.open(path, read_only=True)
    try:
        size = _FS.size(fd)
        return (_FS.map_read(fd, size) or b""), _FS.data_end(fd, size)
    finally:
        _FS.close(fd)


def _no_data_follows(pos: int) -> bool:
    """A live log's last segment: what follows the data is the writer's preallocation."""
    return True


def _zeros_after(path: str, pos: int) -> bool:
    fd = _FS.open(path, read_only=True)
    try:
        return _FS.zeros_between(fd, pos, _FS.size(fd), path)
    finally:
        _FS.close(fd)


def _index(cls, path: str):
    """A read-only index, or None when its file is missing."""
    return cls.read_only(_FS, path) if os.path.exists(path) else None


def broker_running(data_dir: str) -> bool:
    """Whether a process holds the data directory's lock (checked without taking it for long)."""
    path = os.path.join(data_dir, ".lock")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


def _scan(buf, size: int, expected: int, verify: bool, start: int = 0):
    rows, pos, reason, next_offset, all_rows = 0, start, batch_scan.END, expected, []
    out = np.empty((65536, batch_scan.N_COLS), dtype=np.int64)
    while True:
        n, pos, reason, next_offset = batch_scan.scan_batches(buf, pos, size, verify, next_offset, out)
        all_rows.append(out[:n].copy())
        rows += n
        if reason != batch_scan.FULL:
            break
    return np.concatenate(all_rows) if all_rows else out[:0], pos, reason, next_offset


def _time_seek(stem: str, timestamp: int, log_size: int) -> int:
    """Where to start scanning a segment for records at or after `timestamp`, from its indexes (the
    lookup the broker makes). Indexes that do not look sound (this reads a directory that may be
    damaged or still being written) give 0: scan the whole segment."""
    times, offsets = _index(TimeIndex, stem + TIME_INDEX_SUFFIX), _index(OffsetIndex, stem + INDEX_SUFFIX)
    if times is None or offsets is None:
        return 0
    written = times.written()
    if len(written) == 0 or not np.all(np.diff(written["ts"].astype(np.int64)) > 0):
        return 0
    j = int(np.searchsorted(written["ts"], timestamp, side="left"))
    if j == 0:
        return 0
    pos = offsets.floor_position_of(int(written["rel"][j - 1]))
    return pos if pos < log_size else 0


def in_time_range(batch: BatchView, from_time: int | None, to_time: int | None) -> np.ndarray | None:
    """Mask of the batch's records with from_time <= timestamp <= to_time (None: no time filter)."""
    if from_time is None and to_time is None:
        return None
    ts = batch.table()["timestamp"]
    mask = np.ones(len(ts), dtype=bool)
    if from_time is not None:
        mask &= ts >= from_time
    if to_time is not None:
        mask &= ts <= to_time
    return mask


def dump_batches(
    directory: str,
    from_offset: int = 0,
    to_offset: int | None = None,
    from_time: int | None = None,
    to_time: int | None = None,
) -> Iterator[BatchView]:
    """Every whole batch of a partition directory overlapping [from_offset, to_offset] and holding a
    record timestamped within [from_time, to_time] (ms), in offset order.

    from_time seeks with each segment's time index; batches are then skipped by their max timestamp
    and checked record by record (timestamps need not grow with offsets, so to_time cannot stop
    the scan early).
    """
    bases = segment_bases(directory)
    for i, base in enumerate(bases):
        if to_offset is not None and base > to_offset:
            return
        if i + 1 < len(bases) and bases[i + 1] <= from_offset:
            continue  # the whole segment is below the range
        stem = os.path.join(directory, f"{base:020d}")
        buf, size = _map(stem + LOG_SUFFIX)
        start = 0 if from_time is None else _time_seek(stem, from_time, size)
        rows, _, reason, _ = _scan(buf, size, -1, verify=False, start=start)
        if start and reason not in (batch_scan.END, batch_scan.ZERO):
            rows, _, _, _ = _scan(buf, size, -1, verify=False)  # the index pointed astray: read it all
        for row in rows:
            if row[batch_scan.COL_LAST_OFFSET] < from_offset:
                continue
            if to_offset is not None and row[batch_scan.COL_BASE_OFFSET] > to_offset:
                return
            if from_time is not None and row[batch_scan.COL_MAX_TIMESTAMP] < from_time:
                continue
            batch = BatchView(buf, int(row[batch_scan.COL_POS]))
            mask = in_time_range(batch, from_time, to_time)
            if mask is not None:
                offsets = batch.table()["offset"]
                hi = to_offset if to_offset is not None else np.iinfo(np.int64).max
                in_offsets = (offsets >= from_offset) & (offsets <= hi)
                if not np.any(mask & in_offsets):
                    continue
            yield batch


@dataclass
class PartitionCheck:
    topic: str
    partition: int
    segments: int = 0
    batches: int = 0
    records: int = 0
    bytes: int = 0
    start_offset: int = -1
    end_offset: int = -1
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What was not checked, and why (not problems)."""
    extent_lost: bool = False
    """Segment files the recovery point names are missing (repair accepts the loss and resets it)."""
    cut: tuple[int, int, int] | None = None
    """Where the valid log ends early: (segment base offset, byte position, first offset lost)."""
    bad_indexes: list[int] = field(default_factory=list)
    """Base offsets of segments whose indexes are missing or wrong (rebuildable from the log)."""
    epochs_damaged: bool = False
    """The leader epoch file is damaged (rebuildable from the epochs stamped in the log's batches)."""


def check_partition(topic: str, partition: int, directory: str, live: bool = False) -> PartitionCheck:
    """Verify every batch's CRC-32C, offset continuity within and across segments, both indexes, and
    the log's extent against its recovery point. live: a broker has the directory open: its active
    segment is checked up to the recovery point only, and a check during which the broker rolled or
    deleted a segment is taken again (what it saw may be half of a change)."""
    if not live:
        return _check_partition(topic, partition, directory, False)
    for _ in range(LIVE_ATTEMPTS):
        if not os.path.isdir(directory):
            result = PartitionCheck(topic, partition)
            result.notes.append("not checked: its topic was deleted while it was being checked")
            return result
        try:
            before = segment_bases(directory)
            result = _check_partition(topic, partition, directory, True)
            if segment_bases(directory) == before:
                return result
        except (FileNotFoundError, StorageError) as exc:  # deleted (retention, its topic) while being read
            if isinstance(exc, StorageError) and not isinstance(exc.__cause__, FileNotFoundError):
                raise
            continue
    result = PartitionCheck(topic, partition)
    result.notes.append(f"not checked: its segments changed during each of {LIVE_ATTEMPTS} attempts")
    return result


LIVE_ATTEMPTS = 5


def _check_partition(topic: str, partition: int, directory: str, live: bool) -> PartitionCheck:
    result = PartitionCheck(topic, partition)
    expected, previous_end = -1, 0
    bases = segment_bases(directory)
    result.segments = len(bases)
    point = read_checkpoint(_FS, directory)
    # after a clean stop the next open trusts every byte as durable, as here
    clean = not live and os.path.exists(os.path.join(os.path.dirname(directory), CLEAN_SHUTDOWN_MARKER))
    if not live:  # a running broker moves the log start and the last segment under our feet
        _check_extent(result, bases, point)
    for i, base in enumerate(bases):
        name = f"{base:020d}"
        log_path = os.path.join(directory, name + LOG_SUFFIX)
        buf, size = _map(log_path)
        last = i == len(bases) - 1
        if live and last:
            if point is None or point.base != base:
                result.notes.append(
                    f"segment {name}: the active segment of a running broker, not checked "
                    f"(no recovery point for it yet)"
                )
                break
            size = min(size, point.position)
        if expected >= 0 and base != expected:
            result.problems.append(f"segment {name}: starts at offset {base}, the previous one ends at {expected}")
            if result.cut is None:  # keep the previous segment whole, drop this one and the rest
                result.cut = (bases[i - 1], previous_end, expected)
        rows, end, reason, _ = _scan(buf, size, base, verify=True)
        zeros_follow: Callable[[int], bool] = _no_data_follows if live and last else partial(_zeros_after, log_path)
        verdict = recovery.classify(
            reason,
            end,
            durable_position=point.position if point is not None and base == point.base else 0,
            whole=clean or not last,
            last=last,
            zeros_follow=zeros_follow,
        )
        damaged = verdict.kind == CORRUPT
        first_lost = int(rows[-1, batch_scan.COL_LAST_OFFSET]) + 1 if len(rows) else base
        if damaged:
            result.problems.append(f"segment {name}: {verdict.what} at byte {end} of {size}")
            if result.cut is None:
                result.cut = (base, end, first_lost)
        elif verdict.kind == TORN_TAIL:
            result.notes.append(
                f"segment {name}: a torn write ({verdict.what}) at byte {end}, past the last "
                f"fsync: the next open cuts the log there (offset {first_lost} on, never durable)"
            )
        if topic in STATE_RECORDS:
            result.problems += _check_state_records(topic, buf, rows)
        if len(rows):
            if result.start_offset < 0:
                result.start_offset = int(rows[0, batch_scan.COL_BASE_OFFSET])
            expected = int(rows[-1, batch_scan.COL_LAST_OFFSET]) + 1
            result.batches += len(rows)
            result.records += int((rows[:, batch_scan.COL_LAST_OFFSET] - rows[:, batch_scan.COL_BASE_OFFSET] + 1).sum())
            result.bytes += int(rows[:, batch_scan.COL_SIZE].sum())
        else:
            expected = base
        if damaged:
            expected = -1  # where this segment should have ended is unknown: no continuity claim for the next
        previous_end = end
        index_problems = _check_indexes(directory, name, base, rows, end, partial=live and last)
        if index_problems:
            result.problems += index_problems
            result.bad_indexes.append(base)
    _check_leader_epochs(result, directory)
    result.end_offset = expected
    if result.start_offset < 0 and expected >= 0:
        result.start_offset = expected  # an empty log starts where it ends
    return result


def _check_leader_epochs(result: PartitionCheck, directory: str) -> None:
    """The leader epoch file of a replicated partition, if it has one (opening refuses a damaged one)."""
    path = os.path.join(directory, leader_epochs.FILE_NAME)
    try:
        leader_epochs.parse(_FS.read_file(path))
    except ValueError as exc:
        result.problems.append(f"{leader_epochs.FILE_NAME} is damaged ({exc}); repair rebuilds it from the log")
        result.epochs_damaged = True
    except StorageError as exc:
        if not isinstance(exc.__cause__, FileNotFoundError):  # no file: the partition never had a leader epoch
            raise


# The broker's state topics: how each is parsed, and what a record it skips on load loses
STATE_RECORDS = {
    group_records.OFFSETS_TOPIC: (
        group_records.parse,
        group_records.MalformedRecord,
        "group state",
        "commit or membership",
    ),
    queue_records.QUEUE_STATE_TOPIC: (
        queue_records.parse,
        queue_records.MalformedRecord,
        "queue state",
        "queue change",
    ),
}


def _check_state_records(topic: str, buf, rows: np.ndarray) -> list[str]:
    """Records of a state topic that do not parse: the broker skips them on load."""
    parse, malformed, what, meant = STATE_RECORDS[topic]
    problems = []
    for pos in rows[:, batch_scan.COL_POS].tolist():
        try:
            recs = BatchView(buf, int(pos)).records()
        except CorruptBatchError as exc:
            problems.append(f"{exc}")
            continue
        for rec in recs:
            try:
                parse(rec.key, rec.value)
            except malformed as exc:
                problems.append(
                    f"record at offset {rec.offset} is not {what} ({exc}); the broker skips it "
                    f"on load, so the {meant} it meant is lost"
                )
    return problems


def _check_extent(result: PartitionCheck, bases: list[int], point) -> None:
    """The segments the recovery point says exist: the first holds the log start, the last written one
    is there (the rule opening applies)."""
    if point is None:
        if bases:
            result.notes.append("no valid recovery point: the first and last segments cannot be checked")
        return
    missing = recovery.missing_segments(bases, point)
    if missing is not None:
        result.problems.append(missing)
        result.extent_lost = True


def _check_indexes(
    directory: str, name: str, base: int, rows: np.ndarray, log_end: int, partial: bool = False
) -> list[str]:
    """partial: the segment is being written (rows end at the durable point): entries past it are
    not judged."""
    problems = []
    starts = dict(zip(rows[:, batch_scan.COL_POS].tolist(), rows[:, batch_scan.COL_BASE_OFFSET].tolist()))
    for suffix, cls in ((INDEX_SUFFIX, OffsetIndex), (TIME_INDEX_SUFFIX, TimeIndex)):
        index = _index(cls, os.path.join(directory, name + suffix))
        if index is None:
            problems.append(f"segment {name}: {suffix} is missing (rebuilt on the next open)")
            continue
        if suffix == INDEX_SUFFIX:
            valid = index.written()
            for rel, pos in zip(valid["rel"].tolist(), valid["pos"].tolist()):
                if pos >= log_end:
                    break  # preallocated tail of an active segment
                if starts.get(pos) != base + rel:
                    problems.append(f"segment {name}: index entry ({rel}, {pos}) does not point at a batch")
                    break
        else:
            live = index.written()
            if partial and len(live):
                last_base = int(rows[-1, batch_scan.COL_BASE_OFFSET]) if len(rows) else base - 1
                live = live[base + live["rel"].astype(np.int64) <= last_base]
            if len(live) > 1 and not np.all(np.diff(live["ts"].astype(np.int64)) > 0):
                problems.append(f"segment {name}: time index timestamps are not increasing")
            elif len(live) and len(rows):
                # each entry is (newest timestamp so far, the batch it was reached at)
                bases = rows[:, batch_scan.COL_BASE_OFFSET]
                running = np.maximum.accumulate(rows[:, batch_scan.COL_MAX_TIMESTAMP])
                want = base + live["rel"].astype(np.int64)
                at = np.clip(np.searchsorted(bases, want, side="right") - 1, 0, len(bases) - 1)
                if not (np.all(bases[at] == want) and np.all(running[at] == live["ts"].astype(np.int64))):
                    problems.append(f"segment {name}: time index entries do not match the log's timestamps")
    return problems


def check(data_dir: str, topic: str | None = None) -> list[PartitionCheck]:
    live = broker_running(data_dir)
    return [check_partition(t, p, d, live) for t, p, d in partition_dirs(data_dir, topic)]


@dataclass
class DirectoryCheck:
    """What the data directory's metadata says, checked against its partition directories."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    topic_files: list[TopicMeta] = field(default_factory=list)
    """Topic files to write again from the copy in their partition markers (damaged or lost)."""
    markers: list[tuple[TopicMeta, int]] = field(default_factory=list)
    """(topic, partition) whose directory is there, named right, but lost or damaged its marker."""
    recreate: list[tuple[TopicMeta, int]] = field(default_factory=list)
    """(topic, partition) whose directory is missing: recreated empty by repair (its records are lost)."""


def check_directory(data_dir: str) -> DirectoryCheck:
    """Topic files (checksums, fields), partition markers, and that each names the other."""
    out = DirectoryCheck()
    topics: dict[str, TopicMeta] = {}
    damaged: set[str] = set()
    for entry in _listdir(meta_dir(data_dir)):
        if not entry.endswith(".json"):
            continue
        try:
            meta = read_topic_meta(_FS, data_dir, os.path.join(meta_dir(data_dir), entry))
        except CorruptLogError as exc:
            out.problems.append(exc.message.split("; nothing was changed")[0])
            damaged.add(entry[: -len(".json")])
            continue
        if meta.state == CREATING:
            out.notes.append(f"topic {meta.name!r}: its creation was interrupted; the next open rolls it back")
        elif not meta.topic_id:
            out.notes.append(f"topic {meta.name!r}: metadata of the first format; the next open upgrades it")
        topics[meta.name] = meta
    groups: dict[tuple[str, str], dict[int, TopicMeta]] = {}
    for entry in _listdir(data_dir):
        path = os.path.join(data_dir, entry)
        if entry in ("meta", TRASH_DIR) or entry.startswith(".") or not os.path.isdir(path):
            continue
        try:
            marker = read_marker(_FS, path)
        except ValueError as exc:
            name, _, index = entry.rpartition("-")
            owner = topics.get(name)
            out.problems.append(f"{entry}/{MARKER_FILE} is damaged ({exc})")
            if owner is not None and owner.topic_id and index.isdigit() and int(index) < owner.partitions:
                out.markers.append((owner, int(index)))
            continue
        if marker is None:
            name, _, index = entry.rpartition("-")
            owner = topics.get(name)
            if owner is not None and owner.topic_id and index.isdigit() and int(index) < owner.partitions:
                out.problems.append(f"{entry}: partition directory of topic {name!r} without its {MARKER_FILE}")
                out.markers.append((owner, int(index)))
            elif not (owner is not None and not owner.topic_id) and index.isdigit():
                out.notes.append(f"{entry}: not a tidelog partition (no {MARKER_FILE}); left alone")
            continue
        groups.setdefault((marker.meta.name, marker.meta.topic_id), {})[marker.partition] = marker.meta
        if entry != f"{marker.meta.name}-{marker.partition}":
            out.problems.append(
                f"{entry}: holds partition {marker.partition} of topic {marker.meta.name!r} under "
                f"another name (rename it to {marker.meta.name}-{marker.partition}; repair does not)"
            )
    for name, meta in sorted(topics.items()):
        if not meta.topic_id or meta.state == CREATING:
            continue
        for p in range(meta.partitions):
            if os.path.isdir(partition_dir(data_dir, name, p)):
                continue
            if os.path.isdir(os.path.join(data_dir, TRASH_DIR, f"{meta.topic_id}-{p}")):
                out.notes.append(f"topic {name!r}: its deletion was interrupted; the next open finishes it")
                break
            out.problems.append(f"{name}-{p}: the partition directory of topic {name!r} is missing")
            out.recreate.append((meta, p))
    for (name, topic_id), parts in sorted(groups.items()):
        owner = topics.get(name)
        if owner is not None and owner.topic_id == topic_id:
            extra = sorted(p for p in parts if p >= owner.partitions)
            if extra and all(parts[p].partitions > owner.partitions for p in extra):
                out.notes.append(
                    f"topic {name!r}: an increase to partitions {extra} was interrupted before it was committed; "
                    "the next open removes them if they hold no record"
                )
            elif extra:
                out.problems.append(
                    f"topic {name!r}: its metadata says {owner.partitions} partitions, but the "
                    f"directories of partitions {extra} exist (repair does not guess which is right)"
                )
            continue
        if owner is not None and not owner.topic_id and all(p < owner.partitions for p in parts):
            out.notes.append(
                f"topic {name!r}: its upgrade from the first format was interrupted; the next open finishes it"
            )
            continue
        if owner is not None and owner.topic_id:
            out.problems.append(
                f"topic {name!r}: directories {', '.join(f'{name}-{p}' for p in sorted(parts))} belong "
                f"to another incarnation of it (id {topic_id}); move them away (repair does not)"
            )
            continue
        copy = parts[min(parts)]
        out.problems.append(
            f"topic {name!r} (id {topic_id}): its metadata file is "
            f"{'damaged' if name in damaged else 'missing'}; its partition directories keep a copy"
        )
        out.topic_files.append(copy)
        for p in range(copy.partitions):
            if p not in parts:
                out.problems.append(f"{name}-{p}: the partition directory of topic {name!r} is missing")
                out.recreate.append((copy, p))
    return out
