"""Group state, durable through the engine: committed offsets and group membership, as records of the
internal topic `__consumer_offsets` (format in groups/records.py), latest per key on load.

Every commit appends one record per partition; every change of a group's membership appends one
record holding the whole group (members, what each holds, generation, assignment). On open the
topic is replayed in order and the latest record per key wins, so a commit or a membership change is
exactly as durable as any produce under the engine's fsync policy (`always`: on disk before the call
returns; `interval`: survives a process crash at once, a power cut once the next flush ran), and
survives a broker restart or SIGKILL. Only this store writes the topic (clients are refused): a
record that does not parse anyway is skipped on replay, counted in `malformed`, and logged once
with its offset, never a reason not to start.

Compaction keeps the topic from growing forever: once it holds many more records than live keys,
the live state is written again as a snapshot at the end, made durable (fsync), and then the whole
segments before the snapshot are deleted; a replay of what is left still ends with the latest value
of every key. Thread-safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, cast

from ..codec.batch import iter_batches
from ..engine.engine import Engine
from . import records
from .records import OFFSETS_TOPIC, CommittedOffset, MalformedRecord, MembershipRecord

log = logging.getLogger("tidelog.groups")

COMPACT_MIN_RECORDS = 10_000  # compact when superseded records pass this and 4x the live keys
SEGMENT_BYTES = 8 << 20
MALFORMED_LOGGED = 10  # malformed records logged one by one; the rest are counted in one line
TopicPartition = tuple[str, int]

__all__ = ["OFFSETS_TOPIC", "CommittedOffset", "OffsetStore"]


class OffsetStore:
    def __init__(self, engine: Engine, append: Callable[[list[bytes], list[bytes | None]], None] | None = None) -> None:
        """append: how records reach the topic when it is replicated (a cluster: through its leader, and
        acknowledged by every in-sync replica); by default the local engine's internal path."""
        self.engine = engine
        self._append = append
        self._lock = threading.RLock()  # commit() compacts while holding it
        self._offsets: dict[str, dict[TopicPartition, CommittedOffset]] = {}
        self._memberships: dict[str, dict[str, Any]] = {}
        self.malformed = 0
        """Records of the topic that did not parse on load (skipped; `tidelog check` lists them)."""
        if OFFSETS_TOPIC not in engine.list_topics(include_internal=True):
            engine.create_topic(
                OFFSETS_TOPIC, 1, retention_ms=-1, retention_bytes=-1, segment_bytes=SEGMENT_BYTES, internal=True
            )
        self._load()
        self.compact_min_records = COMPACT_MIN_RECORDS
        self._snapshot_at = 0  # where the last snapshot starts: records before it are superseded

    def _load(self) -> None:
        """Replay the whole log, up to its end: in a cluster a new coordinator may hold records past its
        high watermark that the old one acknowledged (the new leader's log is the partition's)."""
        plog = self.engine.partition_log(OFFSETS_TOPIC, 0)
        offset = plog.offset_range()[0]
        while True:
            data = plog.read_replica(offset, 8 << 20)
            if not data:
                break
            for batch in iter_batches(data):
                for rec in batch.records(min_offset=offset):
                    try:
                        self._apply(records.parse(cast(bytes | None, rec.key), cast(bytes | None, rec.value)))
                    except MalformedRecord as exc:
                        self._skip(rec.offset, str(exc))
                offset = batch.last_offset + 1
        if self.malformed > MALFORMED_LOGGED:
            log.warning(
                "skipped %d malformed records of %s in all; run `tidelog check`",
                self.malformed,
                OFFSETS_TOPIC,
                extra={"event": "group_state_malformed_total", "count": self.malformed},
            )

    def _skip(self, offset: int, reason: str) -> None:
        self.malformed += 1
        if self.malformed <= MALFORMED_LOGGED:
            log.warning(
                "skipped a malformed record of %s at offset %d (%s); the group state it meant is lost, "
                "the rest is kept; run `tidelog check` to list such records",
                OFFSETS_TOPIC,
                offset,
                reason,
                extra={"event": "group_state_malformed", "offset": offset, "reason": reason},
            )

    def _apply(self, record) -> None:
        if isinstance(record, MembershipRecord):
            if record.state is None:
                self._memberships.pop(record.group, None)
            else:
                self._memberships[record.group] = record.state
            return
        group, tp, committed = record
        if committed is None:
            self._offsets.get(group, {}).pop(tp, None)
            if not self._offsets.get(group):
                self._offsets.pop(group, None)
        else:
            self._offsets.setdefault(group, {})[tp] = committed

    def _write(self, keys: list[bytes], values: list[bytes | None]) -> None:
        """Append through the engine's internal path: the one writer of this topic."""
        if self._append is not None:
            self._append(keys, values)
            return
        self.engine.produce(OFFSETS_TOPIC, values, keys=keys, partition=0, internal=True)

    def commit(self, group: str, offsets: dict[TopicPartition, int], metadata: str = "") -> None:
        """Store offsets (the next offset to consume, per partition); returns once acknowledged."""
        if not offsets:
            return
        now = self.engine.clock()
        items = [((t, p), CommittedOffset(offsets[(t, p)], metadata, now)) for (t, p) in sorted(offsets)]
        with self._lock:
            self._write(
                [records.offset_key(group, t, p) for (t, p), _ in items], [records.offset_value(c) for _, c in items]
            )
            for tp, c in items:
                self._apply(records.OffsetRecord(group, tp, c))
            self._maybe_compact()

    def save_membership(self, group: str, state: dict[str, Any] | None) -> None:
        """Store a group's membership (None: it has no members); returns once acknowledged."""
        with self._lock:
            value = None if state is None else records.membership_value(state)
            self._write([records.membership_key(group)], [value])
            self._apply(MembershipRecord(group, state))
            self._maybe_compact()

    def memberships(self) -> dict[str, dict[str, Any]]:
        """The last stored membership of every group that had members."""
        with self._lock:
            return dict(self._memberships)

    def _live(self) -> int:
        return sum(len(v) for v in self._offsets.values()) + len(self._memberships)

    def _maybe_compact(self) -> None:
        o = self.engine.list_offsets(OFFSETS_TOPIC, 0)
        written_since = o.log_end - max(o.log_start, self._snapshot_at)
        if written_since - self._live() > max(self.compact_min_records, 4 * self._live()):
            self.compact()

    def compact(self) -> int:
        """Rewrite the live state at the end, fsync, delete the segments before; returns segments deleted."""
        with self._lock:
            snapshot_start = self._snapshot_at = self.engine.list_offsets(OFFSETS_TOPIC, 0).log_end
            items = [
                (records.offset_key(g, t, p), records.offset_value(c))
                for g, tps in sorted(self._offsets.items())
                for (t, p), c in sorted(tps.items())
            ]
            items += [
                (records.membership_key(g), records.membership_value(s)) for g, s in sorted(self._memberships.items())
            ]
            for i in range(0, len(items), 10_000):
                chunk = items[i : i + 10_000]
                self._write([k for k, _ in chunk], [v for _, v in chunk])
            self.engine.flush()  # the snapshot is durable before anything it replaces goes
            return self.engine.delete_records(OFFSETS_TOPIC, 0, snapshot_start)

    def fetch(
        self, group: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, CommittedOffset]:
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
            self._write([records.offset_key(group, t, p) for t, p in tps], [None] * len(tps))
            for tp in tps:
                self._apply(records.OffsetRecord(group, tp, None))

    def forget_topic(self, topic: str) -> dict[str, list[TopicPartition]]:
        """Delete every group's committed offsets of a topic (one tombstone each, so that the replay
        forgets them too); returns what was deleted, by group."""
        with self._lock:
            doomed = {g: sorted(tp for tp in tps if tp[0] == topic) for g, tps in self._offsets.items()}
            doomed = {g: tps for g, tps in doomed.items() if tps}
            for group, tps in doomed.items():
                self.delete(group, tps)
            return doomed

    def topics(self) -> set[str]:
        """Topics some group has a committed offset for."""
        with self._lock:
            return {t for tps in self._offsets.values() for t, _ in tps}

    def groups(self) -> list[str]:
        with self._lock:
            return sorted(self._offsets)
