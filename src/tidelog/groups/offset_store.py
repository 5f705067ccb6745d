"""Group state, durable through the engine: committed offsets and group membership, as records of the
internal topic `__consumer_offsets` (format in groups/records.py), latest per key on load.

Every commit appends one record per partition; every change of a group's membership appends one
record holding the whole group (members, what each holds, generation, assignment). On open the
topic is replayed in order and the latest record per key wins, so a commit or a membership change is
exactly as durable as any produce under the engine's fsync policy (`always`: on disk before the call
returns; `interval`: survives a process crash at once, a power cut once the next flush ran), and
survives a broker restart or SIGKILL. Only this store writes the topic (clients are refused): a
record that does not parse anyway is skipped on replay, counted in `malformed`, and logged once
with its offset, never a reason not to start. Compaction by snapshot keeps the topic from growing
forever (engine/state_topic.py). Thread-safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from ..engine.engine import Engine
from ..engine.state_topic import Append, StateTopic
from . import records
from .records import OFFSETS_TOPIC, CommittedOffset, MalformedRecord, MembershipRecord

log = logging.getLogger("tidelog.groups")

SEGMENT_BYTES = 8 << 20
MALFORMED_LOGGED = 10  # malformed records logged one by one; the rest are counted in one line
TopicPartition = tuple[str, int]

__all__ = ["OFFSETS_TOPIC", "CommittedOffset", "OffsetStore"]


class OffsetStore:
    def __init__(self, engine: Engine, append: Append | None = None) -> None:
        """append: how records reach the topic when it is replicated (a cluster: through its leader, and
        acknowledged by every in-sync replica); by default the local engine's internal path."""
        self.engine = engine
        self._lock = threading.RLock()  # commit() compacts while holding it
        self._offsets: dict[str, dict[TopicPartition, CommittedOffset]] = {}
        self._memberships: dict[str, dict[str, Any]] = {}
        self.malformed = 0
        """Records of the topic that did not parse on load (skipped; `tidelog check` lists them)."""
        self.topic = StateTopic(engine, OFFSETS_TOPIC, SEGMENT_BYTES, append)
        for offset, key, value in self.topic.replay():
            try:
                self._apply(records.parse(key, value))
            except MalformedRecord as exc:
                self._skip(offset, str(exc))
        if self.malformed > MALFORMED_LOGGED:
            log.warning(
                "skipped %d malformed records of %s in all; run `tidelog check`",
                self.malformed,
                OFFSETS_TOPIC,
                extra={"event": "group_state_malformed_total", "count": self.malformed},
            )

    @property
    def compact_min_records(self) -> int:
        return self.topic.compact_min_records

    @compact_min_records.setter
    def compact_min_records(self, n: int) -> None:
        self.topic.compact_min_records = n

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
        self.topic.write(keys, values)

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
        if self.topic.due(self._live()):
            self.compact()

    def compact(self) -> int:
        """Rewrite the live state at the end, fsync, delete the segments before; returns segments deleted."""
        with self._lock:
            items: list[tuple[bytes, bytes | None]] = [
                (records.offset_key(g, t, p), records.offset_value(c))
                for g, tps in sorted(self._offsets.items())
                for (t, p), c in sorted(tps.items())
            ]
            items += [
                (records.membership_key(g), records.membership_value(s)) for g, s in sorted(self._memberships.items())
            ]
            return self.topic.compact(items)

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
