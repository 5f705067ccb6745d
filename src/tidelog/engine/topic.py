"""A topic: its metadata (name, id, config) and its partitions' logs.

Thread-safe for reads; created, opened and deleted by the engine under its lock. What is on disk for
a topic, and the rules for creating and deleting it, are in topic_meta.py and catalog.py.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from ..codec.partitioner import Partitioner
from ..config import TopicConfig
from ..errors import InvalidPartitionError, InvalidTopicError
from ..partition.partition_log import PartitionLog
from ..storage.fs import FileSystem
from ..storage.map_cache import MapCache
from .topic_meta import TopicMeta, partition_dir

log = logging.getLogger("tidelog.recovery")

# fullmatch, not match with "$": "$" also matches before a trailing newline ("a\n" would pass).
_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def validate_topic_name(name: object) -> str:
    """Kafka's rule: 1-249 of [A-Za-z0-9._-], not "." or "..". So a name is always a safe file name."""
    if not isinstance(name, str):
        raise InvalidTopicError(f"topic name must be a string, not {type(name).__name__}")
    if not _NAME.fullmatch(name) or name in (".", ".."):
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise InvalidTopicError(
            f"invalid topic name {shown!r}: use 1-249 characters from letters, digits, '.', '_' and '-' "
            f"(not '.' or '..')"
        )
    return name


class Topic:
    def __init__(self, meta: TopicMeta, partitions: list[PartitionLog]) -> None:
        self.partitioner = Partitioner()
        self.meta = meta
        self.name = meta.name
        self.config: TopicConfig = meta.config
        self.partitions = partitions
        self.created_ms = meta.created_ms

    def partition(self, index: object) -> PartitionLog:
        if isinstance(index, bool) or not isinstance(index, int):
            raise InvalidPartitionError(f"partition must be an integer, not {type(index).__name__}")
        if not 0 <= index < len(self.partitions):
            raise InvalidPartitionError(
                f"topic {self.name!r} has partitions 0 to {len(self.partitions) - 1}; there is no partition {index}",
                topic=self.name,
                partition=index,
            )
        return self.partitions[index]

    @classmethod
    def open(
        cls,
        fs: FileSystem,
        data_dir: str,
        meta: TopicMeta,
        fsync: str,
        clock: Callable[[], int],
        clean: bool,
        maps: MapCache,
        producer_id_expiration_ms: int,
    ) -> Topic:
        """Open the partitions of a topic the catalog checked (every directory exists and is marked)."""
        logs: list[PartitionLog] = []
        try:
            for p in range(meta.partitions):
                started = time.monotonic()
                logs.append(
                    PartitionLog(
                        fs,
                        partition_dir(data_dir, meta.name, p),
                        meta.config,
                        fsync,
                        clock,
                        clean,
                        maps=maps,
                        producer_id_expiration_ms=producer_id_expiration_ms,
                    )
                )
                _log_recovery(meta.name, p, logs[-1], time.monotonic() - started)
        except BaseException:
            cls(meta, logs).close()  # the partitions opened so far close as after a clean stop
            raise
        return cls(meta, logs)

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
    log.log(
        level,
        "partition recovered" if repaired else "partition opened",
        extra={
            "event": "partition_recovery",
            "topic": topic,
            "partition": partition,
            "result": report.stop_reason,
            "segments": report.segments,
            "scanned_bytes": report.scanned_bytes,
            "truncated_at": report.truncated_at,
            "rebuilt_indexes": report.rebuilt_indexes,
            "log_end": plog.offsets.log_end,
            "duration_ms": round(seconds * 1000, 3),
        },
    )
