"""Idempotent producers: drop a retried batch instead of appending it twice.

A producer that sets a producer id (>= 0) in its batches numbers its records per partition
(base_sequence, as Kafka's idempotent producer does). For each producer the partition remembers the
sequence ranges and offsets of its last few batches: a batch equal to one of them is a retry whose
first attempt was written (its ack was lost), so its original offsets are returned and nothing is
appended; a batch that does not continue the sequence is refused. Producers unknown to the
partition start wherever they say. The state survives restarts: it is written to a snapshot file
at every segment roll and clean close (partition/producer_snapshot.py) and rebuilt at open from the newest
snapshot and the batches after it. A producer is forgotten once it has not appended for
`producer_id_expiration_ms` (on the engine's clock).

Not thread-safe: used under the partition log's lock.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import numpy as np

from .._native import batch_scan
from ..codec.batch import BATCHES_REMEMBERED  # shared with the producer, which caps its requests in flight
from ..errors import DuplicateSequenceError, InvalidProducerEpochError, OutOfOrderSequenceError

SEQUENCE_MASK = 0x7FFFFFFF  # sequences wrap at 2^31, as Kafka's do


class ProducedBatch(NamedTuple):
    first_sequence: int
    last_sequence: int
    base_offset: int
    last_offset: int


class Producer(NamedTuple):
    """What a partition remembers of one producer."""

    epoch: int
    batches: deque  # of ProducedBatch, oldest first, at most BATCHES_REMEMBERED
    last_seen_ms: list  # [ms]: when it last appended (a one-item list, updated in place)


class ProducerState:
    def __init__(self) -> None:
        self._producers: dict[int, Producer] = {}

    def check(
        self, producer_id: int, epoch: int, first_seq: int, count: int, pending: dict[int, int]
    ) -> ProducedBatch | None:
        """None if the batch is new and in order; the original if it is a retry; else raise.

        pending maps producer id → last sequence accepted earlier in the same append call.
        """
        last_seq = (first_seq + count - 1) & SEQUENCE_MASK
        known = self._producers.get(producer_id)
        if known is not None and epoch < known.epoch:
            raise InvalidProducerEpochError(
                f"producer {producer_id} epoch {epoch} is older than its current epoch {known.epoch}",
                producer_id=producer_id,
            )
        if known is not None and epoch == known.epoch:
            for batch in known.batches:
                if batch.first_sequence == first_seq and batch.last_sequence == last_seq:
                    return batch
        expected = pending.get(producer_id)
        if expected is None and known is not None and epoch == known.epoch and known.batches:
            expected = known.batches[-1].last_sequence
        if expected is not None:
            want = (expected + 1) & SEQUENCE_MASK
            if first_seq != want:
                behind = (want - first_seq) & SEQUENCE_MASK
                if 0 < behind < (1 << 30):
                    raise DuplicateSequenceError(
                        f"producer {producer_id} resent sequence {first_seq}, older than the batches remembered",
                        producer_id=producer_id,
                    )
                raise OutOfOrderSequenceError(
                    f"producer {producer_id}: sequence {first_seq} does not follow {expected}", producer_id=producer_id
                )
        elif (known is None or epoch != known.epoch) and first_seq != 0:
            # a producer (or an epoch) the partition does not know starts at sequence 0: a later one
            # means an earlier batch of it did not land here (refused, or on a leader that is gone), and
            # taking it would make that batch's retry a "duplicate" and lose it
            raise OutOfOrderSequenceError(
                f"producer {producer_id} epoch {epoch}: its first batch here has sequence {first_seq}, not 0",
                producer_id=producer_id,
            )
        pending[producer_id] = last_seq
        return None

    def record(
        self, producer_id: int, epoch: int, first_seq: int, count: int, base_offset: int, last_offset: int, now_ms: int
    ) -> None:
        """Remember a written batch. Another epoch starts the producer afresh: a higher one replaces
        it, and a lower one can only be in the log if the producer had been forgotten (expired) and
        was taken as new, so replaying the log rebuilds what the live state held."""
        known = self._producers.get(producer_id)
        if known is None or epoch != known.epoch:
            known = Producer(epoch, deque(maxlen=BATCHES_REMEMBERED), [now_ms])
            self._producers[producer_id] = known
        known.batches.append(
            ProducedBatch(first_seq, (first_seq + count - 1) & SEQUENCE_MASK, base_offset, last_offset)
        )
        known.last_seen_ms[0] = max(known.last_seen_ms[0], now_ms)

    def replay(self, rows: np.ndarray, now_ms: int, from_offset: int = 0) -> None:
        """Replay scanned batch rows (batch_scan columns) in log order, those at or after from_offset.
        Their append time is not in the log: they count as seen now (remembered a little longer)."""
        mask = (rows[:, batch_scan.COL_PRODUCER_ID] >= 0) & (rows[:, batch_scan.COL_BASE_OFFSET] >= from_offset)
        for row in rows[mask].tolist():
            base, last = row[batch_scan.COL_BASE_OFFSET], row[batch_scan.COL_LAST_OFFSET]
            self.record(
                row[batch_scan.COL_PRODUCER_ID],
                row[batch_scan.COL_PRODUCER_EPOCH],
                row[batch_scan.COL_BASE_SEQUENCE],
                last - base + 1,
                base,
                last,
                now_ms,
            )

    def expire(self, now_ms: int, ttl_ms: int) -> int:
        """Forget producers that have not appended for ttl_ms; returns how many went."""
        gone = [pid for pid, p in self._producers.items() if now_ms - p.last_seen_ms[0] > ttl_ms]
        for pid in gone:
            del self._producers[pid]
        return len(gone)

    def items(self):
        """(producer id, Producer) pairs (for snapshots)."""
        return self._producers.items()

    def restore(self, producer_id: int, epoch: int, last_seen_ms: int, batches: list[ProducedBatch]) -> None:
        self._producers[producer_id] = Producer(epoch, deque(batches, maxlen=BATCHES_REMEMBERED), [last_seen_ms])

    def __len__(self) -> int:
        return len(self._producers)
