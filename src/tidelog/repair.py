"""`tidelog check --repair`: cut a damaged partition log where it stops being valid, broker stopped.

Opening refuses a log whose durable part is invalid (a flipped bit or a hole in a sealed segment),
because cutting it would silently drop acknowledged records. This is the explicit, logged way to
accept that loss: for each partition `inspect.check_partition` finds damaged, the segment holding
the first invalid batch is truncated to the last valid one, every later segment is deleted, and the
recovery point is dropped so that the next open re-validates the new end. Indexes that are missing
or wrong are rebuilt from the log. It takes the data directory's lock, so it cannot
run while a broker has the directory open.
"""

from __future__ import annotations

import json
import os

from .config import TopicConfig
from .inspect import check_partition, partition_dirs, segment_bases
from .storage.fs import FileSystem
from .storage.recovery import RECOVERY_POINT_FILE
from .storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, Segment, segment_name


def repair(data_dir: str, topic: str | None = None, fs: FileSystem | None = None) -> list[str]:
    """Repair every damaged partition (of `topic`, or all); returns one line per action taken."""
    fs = fs or FileSystem()
    lock = fs.lock_dir(data_dir)  # DataDirLockedError while a broker runs on it
    try:
        actions: list[str] = []
        for name, partition, directory in partition_dirs(data_dir, topic):
            actions += _repair_partition(fs, name, partition, directory)
        return actions
    finally:
        fs.unlock_dir(lock)


def _repair_partition(fs: FileSystem, topic: str, partition: int, directory: str) -> list[str]:
    found = check_partition(topic, partition, directory)
    actions = []
    rebuild: set[int] = set()
    if found.cut is not None:
        base, pos, first_lost = found.cut
        later = [b for b in segment_bases(directory) if b > base]
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
        fs.remove(os.path.join(directory, RECOVERY_POINT_FILE))
        actions.append(f"{topic}[{partition}]: log cut at offset {first_lost} (byte {pos} of segment "
                       f"{segment_name(base)}); the records from there on are gone"
                       + (f", with {len(later)} later segment(s)" if later else ""))
    for base in found.bad_indexes:
        if found.cut is None or base < found.cut[0]:
            rebuild.add(base)
            actions.append(f"{topic}[{partition}]: indexes of segment {segment_name(base)} rebuilt")
    if rebuild:
        config = _topic_config(fs, os.path.dirname(directory), topic)
        for base in sorted(rebuild):
            _rebuild_indexes(fs, directory, base, config)
        fs.fsync_dir(directory)
    return actions


def _topic_config(fs: FileSystem, data_dir: str, topic: str) -> TopicConfig:
    meta = json.loads(fs.read_file(os.path.join(data_dir, "meta", "topics", f"{topic}.json")))
    return TopicConfig(**meta["config"])


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
