"""An internal topic that holds a store's state as records (`__consumer_offsets`, `__queue_state`): the
broker's own writes only, replayed from the start on open, and compacted by snapshot.

A store appends one record per change; on open it replays every record in offset order. Compaction
keeps the topic from growing forever: once far more records were written since the last snapshot
than the store has live entries, the store writes its whole live state again at the end (a
snapshot), the engine makes it durable (fsync), and then the segments before the snapshot are
deleted. A replay of what is left ends in the same state. A change is as durable as any produce
under the engine's fsync policy. Thread-safe as far as the engine is; the store serialises writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import cast

from ..codec.batch import iter_batches
from .engine import Engine

COMPACT_MIN_RECORDS = 10_000  # compact when superseded records pass this and 4x the live entries
SNAPSHOT_CHUNK = 10_000  # records per append while writing a snapshot

Append = Callable[[Sequence[bytes], Sequence[bytes | None]], None]


class StateTopic:
    def __init__(
        self, engine: Engine, name: str, segment_bytes: int, append: Append | None = None, *, lazy: bool = False
    ) -> None:
        """append: how records reach the topic when it is replicated (a cluster: through its leader, and
        acknowledged by every in-sync replica); by default the local engine's internal path. lazy: the
        topic is created by the first write, not now (a store most brokers never use costs no topic)."""
        self.engine, self.name, self._append = engine, name, append
        self._segment_bytes = segment_bytes
        if not lazy:
            self._create()
        self.compact_min_records = COMPACT_MIN_RECORDS
        self._snapshot_at = 0  # where the last snapshot starts: records before it are superseded

    def exists(self) -> bool:
        return self.engine.has_topic(self.name)

    def _create(self) -> None:
        if not self.exists():
            self.engine.create_topic(
                self.name, 1, retention_ms=-1, retention_bytes=-1, segment_bytes=self._segment_bytes, internal=True
            )

    def replay(self) -> Iterator[tuple[int, bytes | None, bytes | None]]:
        """(offset, key, value) of every record, in order, up to the log's end: in a cluster a new leader
        may hold records past its high watermark that the old one acknowledged (its log is the topic's)."""
        if not self.exists():
            return
        plog = self.engine.partition_log(self.name, 0)
        offset = plog.offset_range()[0]
        while True:
            data = plog.read_replica(offset, 8 << 20)
            if not data:
                return
            for batch in iter_batches(data):
                for rec in batch.records(min_offset=offset):
                    yield rec.offset, cast(bytes | None, rec.key), cast(bytes | None, rec.value)
                offset = batch.last_offset + 1

    def write(self, keys: Sequence[bytes], values: Sequence[bytes | None]) -> None:
        """Append (returns once acknowledged): the one writer of this topic."""
        self._create()
        if self._append is not None:
            self._append(keys, values)
        else:
            self.engine.produce(self.name, list(values), keys=list(keys), partition=0, internal=True)

    def due(self, live: int) -> bool:
        """Whether the records superseded since the last snapshot call for a compaction."""
        if not self.exists():
            return False
        o = self.engine.list_offsets(self.name, 0)
        written_since = o.log_end - max(o.log_start, self._snapshot_at)
        return written_since - live > max(self.compact_min_records, 4 * live)

    def compact(self, live: list[tuple[bytes, bytes | None]]) -> int:
        """Write `live` (the whole state) at the end, fsync, delete the segments before; returns the
        segments deleted. The caller holds its lock, so no change lands between."""
        snapshot_start = self._snapshot_at = self.engine.list_offsets(self.name, 0).log_end
        for i in range(0, len(live), SNAPSHOT_CHUNK):
            chunk = live[i : i + SNAPSHOT_CHUNK]
            self.write([k for k, _ in chunk], [v for _, v in chunk])
        self.engine.flush()  # the snapshot is durable before anything it replaces goes
        return self.engine.delete_records(self.name, 0, snapshot_start)
