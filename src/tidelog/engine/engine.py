"""Engine: the embedded broker. Topics, produce, fetch, offsets, flush, close.

The same object serves in-process users and the gRPC server (which only translates). Thread-safe:
a lock guards the topic table; each partition orders its own appends, so appends to different
partitions run in parallel. Opening takes an exclusive lock on the data directory, and a marker file
tells a clean stop from a crash (recovery re-validates only after a crash).

Data directory layout (see docs/FORMAT.md):
    .lock                      held by the process that has the directory open
    .clean_shutdown            present only between a clean close and the next open
    meta/topics/<topic>.json   a topic exists iff this file does (checksummed; see engine/catalog.py)
    meta/storage.json          the directory's identity (engine/storage_identity.py)
    <topic>-<partition>/       partition.meta (the proof it is ours), segments: <base>.log, <base>.index,
                               <base>.timeindex, <base>.snapshot, recovery-point
    .trash/                    partition directories of deleted topics, being removed
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..codec import batch as batch_codec
from ..config import EngineConfig, TopicConfig
from ..errors import (
    CorruptLogError,
    EngineClosedError,
    InvalidPartitionError,
    InvalidRequestError,
    InvalidTopicError,
    ResourceLimitError,
    StorageError,
    TidelogError,
    TopicExistsError,
    UnknownTopicError,
)
from ..partition.partition_log import PartitionLog
from ..storage.fs import FileSystem, FsyncStats
from ..storage.map_cache import MapCache
from ..values import PartitionDescription, PartitionOffsets, PartitionStatus, ProduceResult, TopicDescription
from . import storage_identity
from .catalog import Catalog
from .housekeeper import Housekeeper
from .results import FetchResult
from .topic import Topic, validate_topic_name
from .topic_meta import TopicMeta

if TYPE_CHECKING:
    from typing_extensions import Buffer

log = logging.getLogger("tidelog.engine")

CLEAN_SHUTDOWN_MARKER = ".clean_shutdown"
CLEAN_MARKER_RESERVE = ".clean_shutdown.next"
"""Made at open and renamed to the marker at a clean close: a stop on a full disk needs no new file."""
EARLIEST = -2
LATEST = -1
INLINE_APPEND_BYTES = 64 << 10  # try_append's limit: a copy into the page cache of at most this much


Admit = Callable[[str, int], "int | None"]
"""Asked before appending to (topic, partition): raises to refuse, returns the leader epoch to stamp."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Engine:
    def __init__(self, path: str, config: EngineConfig, fs: FileSystem, clock: Callable[[], int]) -> None:
        """Use Engine.open()."""
        self.path = os.path.abspath(path)
        self.config = config
        self._fs = fs
        self._clock = clock
        self._lock = threading.RLock()
        self._topics: dict[str, Topic] = {}
        self._topic_deleted_listeners: list[Callable[[str], None]] = []
        self._closed = False
        self._maps = MapCache(config.max_mapped_segments)
        self._catalog = Catalog(fs, self.path)
        fs.makedirs(self.path)
        self._lock_fd = fs.lock_dir(self.path)
        try:
            self.clean_start = self._marker_consumed = False
            self.storage_id = storage_identity.load_or_create(fs, self.path)
            self.clean_start = self._consume_clean_marker()
            started = time.monotonic()
            self._load_topics()
            self._reserve_clean_marker()
            self.recovery_seconds = time.monotonic() - started
        except BaseException as exc:
            closed = self._close_topics()
            try:
                if closed and self._marker_consumed and isinstance(exc, CorruptLogError):
                    # A refusal leaves the directory as the clean stop left it: keep it a clean stop, so
                    # that opening again (or `tidelog check --repair`) does not take the unclean path,
                    # which would trust only the recovery points and could cut corrupt data as a torn
                    # tail. The consumed marker is the reserve: renamed back, no new file (a full disk).
                    self._write_clean_marker()
            except StorageError as failed:
                log.error(
                    "could not put the clean-stop marker back (%s): the next open takes the unclean path",
                    failed.message,
                    extra={"event": "clean_marker_failed"},
                )
            finally:
                self._catalog.close()
                fs.unlock_dir(self._lock_fd)
            raise
        self._housekeeper = Housekeeper(
            self._flush_dirty if config.fsync.flushes_periodically else None,
            config.fsync_interval_ms / 1000,
            self.enforce_retention,
            config.retention_check_interval_ms / 1000,
        )
        self._housekeeper.start()
        recovered = [
            plog
            for t in self._topics.values()
            for plog in t.partitions
            if plog.recovery.stop_reason not in ("clean", "new")
        ]
        log.info(
            "engine opened",
            extra={
                "event": "engine_opened",
                "path": self.path,
                "start": "clean" if self.clean_start else "unclean",
                "topics": len(self._topics),
                "partitions": sum(len(t.partitions) for t in self._topics.values()),
                "recovered_partitions": len(recovered),
                "recovery_ms": round(self.recovery_seconds * 1000, 3),
                "fsync": config.fsync,
            },
        )

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        config: EngineConfig | Mapping[str, Any] | None = None,
        *,
        fs: FileSystem | None = None,
        clock: Callable[[], int] | None = None,
        **overrides: Any,
    ) -> Engine:
        """Open (creating if needed) the data directory at path. Settings: EngineConfig fields.

        Raises DataDirLockedError if another process (or another Engine) has it open.
        """
        if config is None:
            config = EngineConfig()
        elif isinstance(config, Mapping):
            config = EngineConfig().with_overrides(config)
        config = config.with_overrides(overrides)
        return cls(os.fspath(path), config, fs or FileSystem(), clock or wall_clock_ms)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- startup -------------------------------------------------------------------------------------
    def _consume_clean_marker(self) -> bool:
        # The marker must be gone from disk before anything is written, or a crash later in this run
        # would be mistaken for a clean stop on the next open.
        marker = os.path.join(self.path, CLEAN_SHUTDOWN_MARKER)
        if not self._fs.exists(marker):
            # a new directory has nothing to recover
            return not self._fs.listdir(os.path.join(self.path, "meta", "topics"))
        # consumed by renaming it to the reserve: a clean close (or a refused open) renames it back,
        # so neither needs a new file, which a full disk would refuse
        self._fs.replace(marker, os.path.join(self.path, CLEAN_MARKER_RESERVE))
        self._fs.fsync_dir(self.path)
        self._marker_consumed = True  # what a refused open puts back (never a marker nobody wrote)
        return True

    def _reserve_clean_marker(self) -> None:
        if self._fs.exists(os.path.join(self.path, CLEAN_MARKER_RESERVE)):
            return  # the consumed marker, or one a crash left
        try:
            self._fs.write_file_atomic(os.path.join(self.path, CLEAN_MARKER_RESERVE), b"clean\n", durable=False)
        except StorageError:
            pass  # e.g. a full disk: close writes the marker the ordinary way, or the next open recovers

    def _write_clean_marker(self) -> None:
        reserve = os.path.join(self.path, CLEAN_MARKER_RESERVE)
        marker = os.path.join(self.path, CLEAN_SHUTDOWN_MARKER)
        if self._fs.exists(reserve):
            self._fs.write_in_place(reserve, b"clean\n", durable=True)
            self._fs.replace(reserve, marker)
            self._fs.fsync_dir(self.path)
        else:
            self._fs.write_file_atomic(marker, b"clean\n")

    def _load_topics(self) -> None:
        for meta in self._catalog.load():
            topic = Topic.open(
                self._fs,
                self.path,
                meta,
                self.config.fsync,
                self._clock,
                self.clean_start,
                self._maps,
                self.config.producer_id_expiration_ms,
            )
            self._topics[topic.name] = topic

    # -- topics --------------------------------------------------------------------------------------
    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        config: TopicConfig | Mapping[str, Any] | None = None,
        *,
        internal: bool = False,
        **overrides: Any,
    ) -> TopicDescription:
        """Create a topic. Settings not given come from the engine's topic_defaults.

        Names starting with "__" are internal; only the broker's own stores create them (internal=True).
        """
        validate_topic_name(name)
        _check_internal(name, internal, "created")
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise InvalidRequestError(f"partitions must be a positive integer, got {partitions!r}")
        if partitions > self.config.max_partitions_per_topic:
            raise ResourceLimitError(
                f"{partitions} partitions is over max_partitions_per_topic={self.config.max_partitions_per_topic}"
            )
        base = config if isinstance(config, TopicConfig) else self.config.topic_defaults.with_overrides(config)
        topic_config = base.with_overrides(overrides)
        with self._lock:
            self._check_open()
            if name in self._topics:
                raise TopicExistsError(f"topic {name!r} already exists", topic=name)
            if len(self._topics) >= self.config.max_topics:
                raise ResourceLimitError(f"the engine already has max_topics={self.config.max_topics} topics")
            self._catalog.check_name_fits(name, partitions)
            meta = TopicMeta.new(name, partitions, topic_config, self._clock())
            self._catalog.begin_create(meta)
            logs = []
            try:
                for p in range(partitions):
                    directory = self._catalog.make_partition_dir(meta, p)
                    logs.append(self._new_partition_log(directory, topic_config))
                meta = self._catalog.commit_create(meta)
            except BaseException:
                for plog in logs:
                    plog.close_files()
                self._catalog.abort_create(meta)
                raise
            topic = Topic(meta, logs)
            self._topics[name] = topic
        log.info("topic created", extra={"event": "topic_created", "topic": name, "partitions": partitions})
        return self.describe(name)

    def alter_topic(
        self, name: str, partitions: int | None = None, overrides: Mapping[str, Any] | None = None
    ) -> TopicDescription:
        """Grow a topic to `partitions` (never shrink: InvalidPartitionError names the current count)
        and/or change its settings (TopicConfig overrides), as one change of its topic file.

        Crash-safe like a create: the new partition directories get their markers (naming the new
        count) first, then the topic file is replaced atomically (the commit point). A crash before it
        leaves marked directories past the topic's count, which the next open removes (they hold no
        record: nothing could write to them before the commit). Keyed records may map to another
        partition afterwards (the partitioner hashes over the new count), as in Kafka.
        """
        _check_internal(name, False, "altered")
        with self._lock:
            self._check_open()
            topic = self._topic(name)
            old = len(topic.partitions)
            if partitions is not None:
                if isinstance(partitions, bool) or not isinstance(partitions, int):
                    raise InvalidRequestError(f"partitions must be an integer, got {partitions!r}")
                if partitions <= old:
                    raise InvalidPartitionError(
                        f"topic {name!r} has {old} partitions; the count can only grow, so {partitions} is refused",
                        topic=name,
                    )
                if partitions > self.config.max_partitions_per_topic:
                    raise ResourceLimitError(
                        f"{partitions} partitions is over max_partitions_per_topic="
                        f"{self.config.max_partitions_per_topic}"
                    )
                self._catalog.check_name_fits(name, partitions)
            count = old if partitions is None else partitions
            config = topic.config.with_overrides(overrides)
            meta = replace(topic.meta, partitions=count, config=config)
            logs = self._catalog.grow(meta, old, self._new_partition_log)
            for plog in topic.partitions:
                plog.config = config
            topic.meta, topic.config = meta, config
            topic.partitions.extend(logs)
        log.info(
            "topic altered",
            extra={"event": "topic_altered", "topic": name, "partitions": count, "previous_partitions": old},
        )
        return self.describe(name)

    def _new_partition_log(self, directory: str, config: TopicConfig) -> PartitionLog:
        return PartitionLog(
            self._fs,
            directory,
            config,
            self.config.fsync,
            self._clock,
            clean=True,
            maps=self._maps,
            create=True,
            producer_id_expiration_ms=self.config.producer_id_expiration_ms,
        )

    def delete_topic(self, name: str) -> None:
        """Delete a topic: its partitions go to the trash at once (a topic of the same name can be
        created right after) and are removed from disk in the background."""
        _check_internal(name, False, "deleted")
        with self._lock:
            self._check_open()
            topic = self._topic(name)
            del self._topics[name]
            for plog in topic.partitions:
                plog.close_files()
            trash = self._catalog.delete(topic.meta)
        log.info("topic deleted", extra={"event": "topic_deleted", "topic": name, "partitions": len(topic.partitions)})
        for listener in list(self._topic_deleted_listeners):
            listener(name)
        self._catalog.trash.empty(trash)

    def on_topic_deleted(self, listener: Callable[[str], None]) -> None:
        """Call listener(topic) after each topic deletion, from the deleting thread, outside the engine's
        lock: state kept about a topic above the engine (committed group offsets) goes with it."""
        with self._lock:
            self._topic_deleted_listeners.append(listener)

    def list_topics(self, include_internal: bool = False) -> list[str]:
        """Topic names, sorted; internal topics (named "__...", e.g. committed offsets) only if asked."""
        with self._lock:
            return sorted(t for t in self._topics if include_internal or not t.startswith("__"))

    def describe(self, name: str) -> TopicDescription:
        topic = self._topic(name)
        parts = [PartitionDescription(i, *plog.info()) for i, plog in enumerate(topic.partitions)]
        return TopicDescription(topic.name, topic.config, parts, topic.created_ms)

    def has_topic(self, name: str) -> bool:
        """Whether the topic exists (internal ones too); without the lock, so it may be a moment late."""
        return name in self._topics

    def partitions(self, name: str) -> int:
        return len(self._topic(name).partitions)

    def partition_log(self, topic: str, partition: int) -> PartitionLog:
        """One partition's log (the replication layer drives it directly)."""
        return self._topic(topic).partition(partition)

    def _topic(self, name: str) -> Topic:
        topic = self._topics.get(name)
        if topic is None:
            self._check_open()
            if not isinstance(name, str):
                validate_topic_name(name)
            raise UnknownTopicError(f"unknown topic {name!r}", topic=name)
        return topic

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("the engine is closed")

    # -- produce -------------------------------------------------------------------------------------
    def produce(
        self,
        topic: str,
        values: Sequence,
        keys: Sequence | None = None,
        headers: Sequence | None = None,
        *,
        partition: int | None = None,
        timestamps: Sequence[int] | None = None,
        timestamp: int | None = None,
        internal: bool = False,
        admit: Admit | None = None,
    ) -> list[ProduceResult]:
        """Append records; returns one ProduceResult per partition written, by partition.

        values: bytes-like (or None) per record; keys, headers ([(str, bytes)] per record) and
        timestamps (ms) are optional and one per value. Keyed records go to Kafka's murmur2 partition,
        keyless ones to one partition per call; `partition` overrides both. Records to one partition
        keep their order and get consecutive offsets. Internal topics ("__...") are written only by the
        broker's own stores (internal=True). `admit` (a cluster's leader check) is asked before each
        partition is written; its error stops the call there.
        """
        _check_internal(topic, internal, "written")
        t = self._topic(topic)
        if isinstance(values, (bytes, bytearray, memoryview, str)) or not isinstance(values, Sequence):
            raise InvalidRequestError("values must be a sequence of records (wrap a single value in a list)")
        if len(values) == 0:
            return []
        n = len(values)
        for what, seq in (("keys", keys), ("headers", headers), ("timestamps", timestamps)):
            if seq is not None and len(seq) != n:
                raise InvalidRequestError(f"got {len(seq)} {what} for {n} values")
        now = self._clock() if timestamp is None else timestamp
        if partition is not None:
            t.partition(partition)  # validates it
            groups: list[tuple[int, np.ndarray | None]] = [(partition, None)]
        else:
            groups = t.partitioner.split(len(t.partitions), keys)
        results = []
        for p, idx in groups:
            if idx is None:
                part_values, part_keys, part_headers, part_ts = values, keys, headers, timestamps
            else:
                pick = idx.tolist()
                part_values = [values[i] for i in pick]
                part_keys = None if keys is None else [keys[i] for i in pick]
                part_headers = None if headers is None else [headers[i] for i in pick]
                part_ts = None if timestamps is None else [timestamps[i] for i in pick]
            batches = batch_codec.build_batches(
                part_values,
                part_keys,
                part_headers,
                part_ts,
                timestamp=now,
                compression_name=t.config.compression,
                max_batch_bytes=t.config.max_batch_bytes,
            )
            chunks = [(b, [_info(b)]) for b in batches]
            epoch = admit(topic, p) if admit is not None else None
            first, last = t.partition(p).append(chunks, leader_epoch=epoch)
            results.append(ProduceResult(topic, p, first, last))
        return results

    def append(self, topic: str, partition: int, data) -> ProduceResult:
        """Append pre-encoded record batches (one or more, concatenated) verbatim after validating them.

        The batches' base offsets are replaced by the ones the log assigns; everything covered by the
        CRC is stored exactly as received. A batch that fails validation appends nothing. Internal
        topics are refused: only the broker writes them.
        """
        _check_internal(topic, False, "written")
        t = self._topic(topic)
        plog = t.partition(partition)
        infos = batch_codec.validate(data, t.config.max_batch_bytes)
        first, last = plog.append([(data, infos)])
        return ProduceResult(topic, partition, first, last)

    def try_append(self, topic: str, partition: int, data: Buffer) -> ProduceResult | None:
        """append(), if it is cheap and cannot block: None, nothing written, when the data is larger
        than INLINE_APPEND_BYTES or compressed, the fsync policy syncs each append, the partition's
        lock is busy or a segment would roll. An event loop appends a lone small batch itself this way,
        sparing the trip to a thread and back (a message's latency); errors raise as append()'s."""
        if len(memoryview(data)) > INLINE_APPEND_BYTES or self.config.fsync.syncs_each_append:
            return None
        _check_internal(topic, False, "written")
        t = self._topic(topic)
        infos = batch_codec.validate_uncompressed(data, t.config.max_batch_bytes)
        if infos is None:
            return None
        appended = t.partition(partition).try_append([(data, infos)])
        return None if appended is None else ProduceResult(topic, partition, *appended)

    def append_many(
        self, requests: Sequence[tuple[str, int, Buffer]], admit: Admit | None = None
    ) -> list[ProduceResult | TidelogError]:
        """Append several pre-encoded requests, in order, sharing fsyncs (one per partition).

        Returns, per request, its ProduceResult or the TidelogError that refused it (a refused
        request appends nothing and does not stop the others). `admit(topic, partition)`, when given,
        is asked first (a cluster's leader check): its error refuses the request, and the leader epoch
        it returns is stamped on the batches.
        """
        results: list[ProduceResult | TidelogError] = []
        written_to: list[PartitionLog | None] = []  # per result: the partition it waits on
        pending: dict[int, tuple[PartitionLog, int]] = {}
        for topic, partition, data in requests:
            try:
                _check_internal(topic, False, "written")
                t = self._topic(topic)
                plog = t.partition(partition)
                infos = batch_codec.validate(data, t.config.max_batch_bytes)
                epoch = admit(topic, partition) if admit is not None else None
                first, last = plog.append([(data, infos)], sync=False, leader_epoch=epoch)
                pending[id(plog)] = (plog, max(last + 1, pending.get(id(plog), (plog, 0))[1]))
                results.append(ProduceResult(topic, partition, first, last))
                written_to.append(plog)
            except TidelogError as exc:
                results.append(exc)
                written_to.append(None)
        if self.config.fsync.syncs_each_append:
            for plog, upto in pending.values():
                try:
                    plog.sync(upto)
                except TidelogError as exc:  # nothing on this partition is acknowledged
                    results = [exc if owner is plog else r for r, owner in zip(results, written_to)]
        return results

    # -- fetch and offsets -----------------------------------------------------------------------------
    def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        max_bytes: int = 1 << 20,
        *,
        copy: bool = True,
        max_wait_ms: int = 0,
    ) -> FetchResult:
        """Whole batches from the one holding `offset`, up to max_bytes (at least one batch).

        Offsets must be within [log start, high watermark]; at the high watermark the result is empty
        (after waiting up to max_wait_ms for data). copy=False makes iterated records' keys and values
        zero-copy memoryviews of the segment.
        """
        plog, max_bytes = self._fetch_args(topic, partition, offset, max_bytes)
        result = plog.read(offset, max_bytes)
        if not result.data and max_wait_ms > 0 and plog.wait_for_data(offset, max_wait_ms / 1000):
            result = plog.read(offset, max_bytes)
        return FetchResult(
            topic, partition, offset, result.next_offset, result.high_watermark, result.log_start, result.data, copy
        )

    def try_fetch(self, topic: str, partition: int, offset: int, max_bytes: int) -> FetchResult | None:
        """fetch() if the partition's lock is free at once, else None: never blocks on a roll's fsyncs
        (an event loop reading what an append just wrote)."""
        plog, max_bytes = self._fetch_args(topic, partition, offset, max_bytes)
        result = plog.read(offset, max_bytes, blocking=False)
        if result is None:
            return None
        return FetchResult(
            topic, partition, offset, result.next_offset, result.high_watermark, result.log_start, result.data
        )

    def _fetch_args(self, topic: str, partition: int, offset: int, max_bytes: int):
        plog = self._topic(topic).partition(partition)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise InvalidRequestError(f"offset must be an integer, not {type(offset).__name__}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise InvalidRequestError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        return plog, min(max_bytes, self.config.max_fetch_bytes)

    def list_offsets(self, topic: str, partition: int, at: int | str | None = None):
        """Offsets of a partition.

        at=None: PartitionOffsets (log_start, log_end, high_watermark, flushed; .earliest, .latest).
        at="earliest"/EARLIEST or "latest"/LATEST: that offset. at=<timestamp ms>: the first offset
        whose record timestamp is >= at, or None when every record is older.
        """
        plog = self._topic(topic).partition(partition)
        o = plog.offsets
        if at is None:
            return PartitionOffsets(*plog.offset_range())
        if at in ("earliest", EARLIEST):
            return o.log_start
        if at in ("latest", LATEST):
            return o.high_watermark
        if isinstance(at, bool) or not isinstance(at, int) or at < 0:
            raise InvalidRequestError(f"at must be 'earliest', 'latest' or a timestamp in ms, got {at!r}")
        return plog.offset_for_time(at)

    def wait_for_data(self, topic: str, partition: int, offset: int, timeout_ms: int) -> bool:
        """Block until the partition has a record at or after offset visible (or timeout)."""
        return self._topic(topic).partition(partition).wait_for_data(offset, timeout_ms / 1000)

    def high_watermark(self, topic: str, partition: int) -> int:
        return self._topic(topic).partition(partition).offsets.high_watermark

    def add_listener(self, topic: str, partition: int, listener) -> None:
        """Call listener() (from the appending thread, under the partition lock: keep it quick)
        whenever the partition's high watermark moves."""
        self._topic(topic).partition(partition).add_listener(listener)

    def remove_listener(self, topic: str, partition: int, listener) -> None:
        self._topic(topic).partition(partition).remove_listener(listener)

    # -- monitoring --------------------------------------------------------------------------------------
    def partition_status(self) -> list[PartitionStatus]:
        """Every partition (internal topics too), by topic and partition: what a metrics scrape reads."""
        with self._lock:
            topics = sorted(self._topics.items())
        return [
            PartitionStatus(name, p, plog.info(), plog.stats())
            for name, t in topics
            for p, plog in enumerate(t.partitions)
        ]

    def record_timestamp(self, topic: str, partition: int, offset: int) -> int | None:
        """Timestamp (ms) of the record at offset, or None if it is not stored and visible.
        Not counted as a fetch: lag monitoring reads through here."""
        return self._topic(topic).partition(partition).timestamp_at(offset)

    @property
    def fsync_stats(self) -> FsyncStats | None:
        """Every fsync this engine's file system made (None if a FileSystem subclass opted out)."""
        return self._fs.fsync_stats

    # -- durability, retention, shutdown --------------------------------------------------------------
    def flush(self) -> None:
        """fsync every partition with unflushed data (whatever the fsync policy)."""
        for plog in self._all_partitions():
            plog.sync()

    def _flush_dirty(self) -> None:
        for plog in self._all_partitions():
            if plog.dirty and not plog.failed:  # a failed partition refuses writes until a restart
                plog.sync()

    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Apply retention to every partition now; returns the number of segments deleted."""
        now = self._clock() if now_ms is None else now_ms
        return sum(plog.apply_retention(now) for plog in self._all_partitions())

    def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """Drop whole segments whose records are all below before_offset; returns segments deleted."""
        return self._topic(topic).partition(partition).delete_before(before_offset)

    def _all_partitions(self):
        with self._lock:
            topics = list(self._topics.values())
        return [plog for t in topics for plog in t.partitions]

    def close(self) -> None:
        """Flush everything, release the files, and mark the stop as clean."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._housekeeper.stop()
        try:
            ok = self._close_topics()
            self._catalog.close()
            if ok:
                self._write_clean_marker()
        finally:
            self._fs.unlock_dir(self._lock_fd)
        log.info(
            "engine closed" if ok else "engine closed with errors; the next open recovers",
            extra={"event": "engine_closed", "path": self.path, "clean": ok},
        )

    def _close_topics(self) -> bool:
        ok = True
        for topic in list(self._topics.values()):
            try:
                topic.close()
            except Exception:  # keep closing the rest; the missing marker makes the next open recover
                log.exception("closing a topic failed", extra={"event": "topic_close_failed", "topic": topic.name})
                ok = False
        return ok

    @property
    def closed(self) -> bool:
        return self._closed

    def clock(self) -> int:
        """The engine's clock, in ms (what records are stamped with)."""
        return self._clock()


def is_internal_topic(name: object) -> bool:
    """Internal topics (named "__...", e.g. committed offsets) hold the broker's own state."""
    return isinstance(name, str) and name.startswith("__")


def _check_internal(topic: object, internal: bool, action: str) -> None:
    # InvalidTopicError, as Kafka answers a produce to an internal topic: the request names a topic
    # that cannot take this operation (a client cannot fix it by retrying or by other arguments).
    if is_internal_topic(topic) and not internal:
        raise InvalidTopicError(
            f"topic {topic!r} is internal (its name starts with '__'): only the broker itself "
            f"writes it, so it cannot be {action} by a client",
            topic=topic,
        )


def _info(batch: bytes) -> batch_codec.BatchInfo:
    """What the log needs to know of a batch the engine just built (no producer id: not idempotent)."""
    view = batch_codec.BatchView(batch)
    return batch_codec.BatchInfo(0, len(batch), view.count, view.first_timestamp, view.max_timestamp, view.attributes)
