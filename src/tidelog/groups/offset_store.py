"""Committed offsets, durable through the engine (an internal topic, latest per key on load).

Every commit appends records to the internal topic `__consumer_offsets`: key = [group, topic,
partition] and value = {"offset", "metadata", "commit_ms"} as JSON, or a null value (a tombstone)
when the group's offsets are deleted. On open the topic is replayed in order and the latest record
per key wins, so a commit is exactly as durable as any produce under the engine's fsync policy, and
survives a broker restart or SIGKILL.

Compaction keeps the topic from growing forever: once it holds many more records than live keys,
the live state is written again as a snapshot at the end, made durable (fsync), and then the whole
segments before the snapshot are deleted; a replay of what is left still ends with the latest value
of every key. Thread-safe.
"""

from __future__ import annotations

import json
import threading
from typing import Iterable, NamedTuple

from ..broker.engine import Engine

OFFSETS_TOPIC = "__consumer_offsets"
COMPACT_MIN_RECORDS = 10_000  # compact when superseded records pass this and 4x the live keys
SEGMENT_BYTES = 8 << 20
TopicPartition = tuple[str, int]


class CommittedOffset(NamedTuple):
    offset: int
    metadata: str
    commit_ms: int


class OffsetStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.RLock()  # commit() compacts while holding it
        self._offsets: dict[str, dict[TopicPartition, CommittedOffset]] = {}
        if OFFSETS_TOPIC not in engine.list_topics(include_internal=True):
            engine.create_topic(OFFSETS_TOPIC, 1, retention_ms=-1, retention_bytes=-1, segment_bytes=SEGMENT_BYTES)
        self._load()
        self.compact_min_records = COMPACT_MIN_RECORDS
        self._snapshot_at = 0  # where the last snapshot starts: records before it are superseded

    def _load(self) -> None:
        offset = self.engine.list_offsets(OFFSETS_TOPIC, 0).log_start
        while True:
            result = self.engine.fetch(OFFSETS_TOPIC, 0, offset, max_bytes=8 << 20)
            if not result:
                return
            for rec in result:
                self._apply(json.loads(rec.key), None if rec.value is None else json.loads(rec.value))
            offset = result.next_offset

    def _apply(self, key: list, value: dict | None) -> None:
        group, topic, partition = key
        if value is None:
            self._offsets.get(group, {}).pop((topic, partition), None)
            if not self._offsets.get(group):
                self._offsets.pop(group, None)
        else:
            self._offsets.setdefault(group, {})[(topic, partition)] = CommittedOffset(
                value["offset"], value.get("metadata", ""), value.get("commit_ms", 0))

    def commit(self, group: str, offsets: dict[TopicPartition, int], metadata: str = "") -> None:
        """Store offsets (the next offset to consume, per partition); returns once acknowledged."""
        if not offsets:
            return
        now = self.engine.clock()
        keys = [[group, t, p] for (t, p) in sorted(offsets)]
        values = [{"offset": offsets[(k[1], k[2])], "metadata": metadata, "commit_ms": now} for k in keys]
        with self._lock:
            self.engine.produce(OFFSETS_TOPIC, [json.dumps(v).encode() for v in values],
                                keys=[json.dumps(k).encode() for k in keys], partition=0)
            for k, v in zip(keys, values):
                self._apply(k, v)
            self._maybe_compact()

    def _live(self) -> int:
        return sum(len(v) for v in self._offsets.values())

    def _maybe_compact(self) -> None:
        o = self.engine.list_offsets(OFFSETS_TOPIC, 0)
        written_since = o.log_end - max(o.log_start, self._snapshot_at)
        if written_since - self._live() > max(self.compact_min_records, 4 * self._live()):
            self.compact()

    def compact(self) -> int:
        """Rewrite the live offsets at the end, fsync, delete the segments before; returns segments deleted."""
        with self._lock:
            snapshot_start = self._snapshot_at = self.engine.list_offsets(OFFSETS_TOPIC, 0).log_end
            items = [([g, t, p], {"offset": c.offset, "metadata": c.metadata, "commit_ms": c.commit_ms})
                     for g, tps in sorted(self._offsets.items()) for (t, p), c in sorted(tps.items())]
            for i in range(0, len(items), 10_000):
                chunk = items[i:i + 10_000]
                self.engine.produce(OFFSETS_TOPIC, [json.dumps(v).encode() for _, v in chunk],
                                    keys=[json.dumps(k).encode() for k, _ in chunk], partition=0)
            self.engine.flush()  # the snapshot is durable before anything it replaces goes
            return self.engine.delete_records(OFFSETS_TOPIC, 0, snapshot_start)

    def fetch(self, group: str, partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, CommittedOffset]:
        with self._lock:
            known = dict(self._offsets.get(group, {}))
        if partitions is None:
            return known
        return {tp: known[tp] for tp in partitions if tp in known}

    def delete(self, group: str, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Forget a group's committed offsets (all, or those of the given partitions)."""
        with self._lock:
            tps = sorted(self._offsets.get(group, {}) if partitions is None else partitions)
            if not tps:
                return
            keys = [[group, t, p] for t, p in tps]
            self.engine.produce(OFFSETS_TOPIC, [None] * len(keys), keys=[json.dumps(k).encode() for k in keys],
                                partition=0)
            for k in keys:
                self._apply(k, None)

    def groups(self) -> list[str]:
        with self._lock:
            return sorted(self._offsets)
