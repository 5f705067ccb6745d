"""`tidelog check --repair`: make a damaged data directory open again, broker stopped, saying what
was lost.

Opening refuses damage it cannot prove harmless (a flipped bit or a hole in durable data, a lost
metadata file, a missing segment), because going on would silently drop acknowledged records. This is
the explicit, logged way to accept the loss or restore what can be restored:

- Metadata: a damaged or lost topic file is written again from the copy each partition directory
  keeps in its partition.meta; a lost or damaged marker of a directory that its topic file and its
  name both claim is written again; a missing partition directory is recreated empty (its records are
  lost). Directories that cannot be attributed are reported and left alone.
- Logs: for each partition `inspect.check_partition` finds damaged, the segment holding the first
  invalid batch is truncated to the last valid one and every later segment deleted; indexes that are
  missing or wrong are rebuilt; and the recovery point is written again to describe the log as it now
  is (so missing first or last segments are accepted as lost).
- Leader epochs: a damaged `leader-epochs` file is rebuilt from the epochs stamped in the log's batches.

It takes the data directory's lock, so it cannot run while a broker has the directory open.
"""

from __future__ import annotations

import os

from .codec.batch import leader_epoch_of
from .config import FsyncPolicy, TopicConfig
from .engine.topic_meta import partition_dir, read_marker, read_topic_meta, write_marker, write_topic_meta
from .errors import StorageError
from .examine import check_directory, check_partition, dump_batches, partition_dirs
from .partition import leader_epochs
from .partition.partition_log import PartitionLog
from .storage.fs import FileSystem
from .storage.recovery import Checkpoint, read_checkpoint, segment_bases, write_checkpoint
from .storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, Segment, segment_name


def repair(data_dir: str, topic: str | None = None, fs: FileSystem | None = None) -> list[str]:
    """Repair the directory's metadata, then every damaged partition (of `topic`, or all); returns
    one line per action taken."""
    fs = fs or FileSystem()
    lock = fs.lock_dir(data_dir)  # DataDirLockedError while a broker runs on it
    try:
        actions = _repair_metadata(fs, data_dir, topic)
        for name, partition, directory in partition_dirs(data_dir, topic):
            actions += _repair_partition(fs, data_dir, name, partition, directory)
        return actions
    finally:
        fs.unlock_dir(lock)


def _repair_metadata(fs: FileSystem, data_dir: str, topic: str | None) -> list[str]:
    found = check_directory(data_dir)
    actions = []
    for meta in found.topic_files:
        if topic is None or meta.name == topic:
            write_topic_meta(fs, data_dir, meta.ready())
            actions.append(
                f"{meta.name}: topic metadata restored from the copy in its partition directories "
                f"({meta.partitions} partitions, id {meta.topic_id})"
            )
    for meta, p in found.markers:
        if topic is None or meta.name == topic:
            write_marker(fs, partition_dir(data_dir, meta.name, p), meta, p)
            actions.append(f"{meta.name}[{p}]: partition marker written again from the topic's metadata")
    for meta, p in found.recreate:
        if topic is None or meta.name == topic:
            directory = partition_dir(data_dir, meta.name, p)
            fs.makedirs(directory)
            write_marker(fs, directory, meta, p)
            PartitionLog(fs, directory, meta.config, FsyncPolicy.ALWAYS, lambda: 0, clean=True, create=True).close()
            fs.fsync_dir(data_dir)
            actions.append(f"{meta.name}[{p}]: partition directory recreated empty; the records it held are lost")
    return actions


def _repair_partition(fs: FileSystem, data_dir: str, topic: str, partition: int, directory: str) -> list[str]:
    found = check_partition(topic, partition, directory)
    actions = []
    rebuild: set[int] = set()
    if found.cut is not None:
        base, pos, first_lost = found.cut
        later = [b for b in segment_bases(fs, directory) if b > base]
        stem = os.path.join(directory, segment_name(base))
        fd = fs.open(stem + LOG_SUFFIX)
        try:
            fs.truncate(fd, pos, stem + LOG_SUFFIX)
            fs.fsync(fd, stem + LOG_SUFFIX)
        finally:
            fs.close(fd)
        for b in later:
            _remove(fs, directory, b, (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX))
        rebuild.add(base)
        actions.append(
            f"{topic}[{partition}]: log cut at offset {first_lost} (byte {pos} of segment "
            f"{segment_name(base)}); the records from there on are gone"
            + (f", with {len(later)} later segment(s)" if later else "")
        )
    if found.extent_lost:
        actions.append(
            f"{topic}[{partition}]: missing segment file(s) accepted as lost ("
            + "; ".join(p for p in found.problems if "missing" in p)
            + ")"
        )
    for base in found.bad_indexes:
        if found.cut is None or base < found.cut[0]:
            rebuild.add(base)
            actions.append(f"{topic}[{partition}]: indexes of segment {segment_name(base)} rebuilt")
    if rebuild:
        config = _topic_config(fs, data_dir, topic, directory)
        for base in sorted(rebuild):
            _rebuild_indexes(fs, directory, base, config)
        fs.fsync_dir(directory)
    if found.cut is not None or found.extent_lost:
        note = _reset_recovery_point(fs, directory, _topic_config(fs, data_dir, topic, directory))
        if note:
            actions.append(f"{topic}[{partition}]: {note}")
    if found.epochs_damaged:  # after any cut: the epochs describe the log as it now is
        stamped = [(leader_epoch_of(b.buffer, b.pos), b.base_offset) for b in dump_batches(directory)]
        rebuilt = leader_epochs.rebuild(fs, directory, stamped)
        actions.append(
            f"{topic}[{partition}]: {leader_epochs.FILE_NAME} rebuilt from the log's batches "
            f"({len(rebuilt.entries())} epochs; epochs whose leader wrote nothing are not in the log)"
        )
    return actions


def _reset_recovery_point(fs: FileSystem, directory: str, config: TopicConfig) -> str | None:
    """Describe the log as it now is: it starts at its first segment and is durable to its end. A
    partition that lost every segment restarts empty where its last segment began."""
    bases = segment_bases(fs, directory)
    note = None
    if not bases:
        point = read_checkpoint(fs, directory)
        base = point.base if point is not None else 0
        Segment.create(fs, directory, base, config).close(trim=True)
        bases = [base]
        note = (
            f"every segment file was missing: the partition restarts empty at offset {base} (the offsets "
            f"of the records lost from there on will be given to new records)"
        )
    last = Segment.load(fs, directory, bases[-1], config)
    try:
        end = last.scan(0, verify=True, expected_offset=bases[-1]).end_pos
    finally:
        last.close()
    write_checkpoint(fs, directory, Checkpoint(bases[0], bases[-1], end), durable=True)
    return note


def _topic_config(fs: FileSystem, data_dir: str, topic: str, directory: str) -> TopicConfig:
    try:
        return read_topic_meta(fs, data_dir, os.path.join(data_dir, "meta", "topics", f"{topic}.json")).config
    except StorageError:  # damaged or missing: the partition's own copy says the same
        pass
    try:
        marker = read_marker(fs, directory)
    except ValueError:
        marker = None
    return marker.meta.config if marker is not None else TopicConfig()


def _rebuild_indexes(fs: FileSystem, directory: str, base: int, config: TopicConfig) -> None:
    _remove(fs, directory, base, (INDEX_SUFFIX, TIME_INDEX_SUFFIX))
    seg = Segment.load(fs, directory, base, config)
    try:
        seg.rebuild_indexes(verify=True)
        seg.seal()  # trims and fsyncs the log and both indexes, as a clean close leaves them
    finally:
        seg.close()


def _remove(fs: FileSystem, directory: str, base: int, suffixes: tuple[str, ...]) -> None:
    stem = os.path.join(directory, segment_name(base))
    for suffix in suffixes:
        fs.remove(stem + suffix)
