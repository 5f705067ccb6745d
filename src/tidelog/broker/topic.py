"""A topic: a name, a config and its partitions' logs; persisted as meta/topics/<name>.json.

Thread-safe for reads; created, opened and deleted by the engine under its lock.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Callable

from ..config import TopicConfig
from ..errors import CorruptLogError, InvalidPartitionError, InvalidTopicError
from ..log.partition_log import PartitionLog
from ..storage.fs import FileSystem
from .partitioner import Partitioner

log = logging.getLogger("tidelog.recovery")

# fullmatch, not match with "$": "$" also matches before a trailing newline ("a\n" would pass).
_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
META_VERSION = 1


def validate_topic_name(name: object) -> str:
    """Kafka's rule: 1-249 of [A-Za-z0-9._-], not "." or "..". So a name is always a safe file name."""
    if not isinstance(name, str):
        raise InvalidTopicError(f"topic name must be a string, not {type(name).__name__}")
    if not _NAME.fullmatch(name) or name in (".", ".."):
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise InvalidTopicError(
            f"invalid topic name {shown!r}: use 1-249 characters from letters, digits, '.', '_' and '-' "
            f"(not '.' or '..')")
    return name


def partition_dir(data_dir: str, topic: str, partition: int) -> str:
    return os.path.join(data_dir, f"{topic}-{partition}")


class Topic:
    def __init__(self, name: str, config: TopicConfig, partitions: list[PartitionLog], created_ms: int) -> None:
        self.partitioner = Partitioner()
        self.name = name
        self.config = config
        self.partitions = partitions
        self.created_ms = created_ms

    def partition(self, index: object) -> PartitionLog:
        if isinstance(index, bool) or not isinstance(index, int):
            raise InvalidPartitionError(f"partition must be an integer, not {type(index).__name__}")
        if not 0 <= index < len(self.partitions):
            raise InvalidPartitionError(
                f"topic {self.name!r} has partitions 0 to {len(self.partitions) - 1}; there is no partition {index}",
                topic=self.name, partition=index)
        return self.partitions[index]

    # -- persistence -------------------------------------------------------------------------------
    @staticmethod
    def meta_path(meta_dir: str, name: str) -> str:
        return os.path.join(meta_dir, name + ".json")

    def write_meta(self, fs: FileSystem, meta_dir: str) -> None:
        doc = {"version": META_VERSION, "name": self.name, "partitions": len(self.partitions),
               "created_ms": self.created_ms, "config": self.config.to_dict()}
        fs.write_file_atomic(self.meta_path(meta_dir, self.name), json.dumps(doc, indent=1).encode())

    @staticmethod
    def read_meta(fs: FileSystem, path: str) -> dict:
        return json.loads(fs.read_file(path))

    @classmethod
    def open(cls, fs: FileSystem, data_dir: str, meta: dict, fsync: str, clock: Callable[[], int],
             clean: bool) -> "Topic":
        if meta.get("version") != META_VERSION:
            raise CorruptLogError(f"topic metadata for {meta.get('name')!r} has version {meta.get('version')!r}; "
                                  f"this tidelog reads version {META_VERSION}")
        config = TopicConfig(**meta["config"])
        name = meta["name"]
        logs: list[PartitionLog] = []
        try:
            for p in range(int(meta["partitions"])):
                started = time.monotonic()
                logs.append(PartitionLog(fs, partition_dir(data_dir, name, p), config, fsync, clock, clean))
                _log_recovery(name, p, logs[-1], time.monotonic() - started)
        except BaseException:
            cls(name, config, logs, 0).close()  # the partitions opened so far close as after a clean stop
            raise
        return cls(name, config, logs, int(meta.get("created_ms", 0)))

    def close(self) -> None:
        errors = []
        for plog in self.partitions:
            try:
                plog.close()
            except Exception as exc:  # close every partition even if one fails; report the first
                errors.append(exc)
        if errors:
            raise errors[0]


def _log_recovery(topic: str, partition: int, plog: PartitionLog, seconds: float) -> None:
    """One line per partition opened: DEBUG when nothing needed repair, so a clean start of many
    partitions stays quiet; INFO after a recovery scan; WARNING when data was cut."""
    report = plog.recovery
    repaired = report.stop_reason not in ("clean", "new") or report.rebuilt_indexes > 0
    cut = report.truncated_at >= 0
    level = logging.WARNING if cut else logging.INFO if repaired else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    log.log(level, "partition recovered" if repaired else "partition opened", extra={
        "event": "partition_recovery", "topic": topic, "partition": partition,
        "result": report.stop_reason, "segments": report.segments, "scanned_bytes": report.scanned_bytes,
        "truncated_at": report.truncated_at,
        "rebuilt_indexes": report.rebuilt_indexes, "log_end": plog.offsets.log_end,
        "duration_ms": round(seconds * 1000, 3)})
