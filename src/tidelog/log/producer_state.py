"""Idempotent producers: drop a retried batch instead of appending it twice.

A producer that sets a producer id (>= 0) in its batches numbers its records per partition
(base_sequence, as Kafka's idempotent producer does). For each producer the partition remembers the
sequence ranges and offsets of its last few batches: a batch equal to one of them is a retry whose
first attempt was written (its ack was lost), so its original offsets are returned and nothing is
appended; a batch that does not continue the sequence is refused. Producers unknown to the
partition start wherever they say. On open, the state is rebuilt from the tail of the active
segment (the last STATE_WINDOW_BYTES), which covers retries after a broker restart.

Not thread-safe: used under the partition log's lock.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import numpy as np

from .._native import batch_scan
from ..codec.batch import BATCHES_REMEMBERED  # shared with the producer, which caps its requests in flight
from ..errors import DuplicateSequenceError, InvalidProducerEpochError, OutOfOrderSequenceError

STATE_WINDOW_BYTES = 16 << 20
SEQUENCE_MASK = 0x7FFFFFFF  # sequences wrap at 2^31, as Kafka's do


class ProducedBatch(NamedTuple):
    first_sequence: int
    last_sequence: int
    base_offset: int
    last_offset: int


class ProducerState:
    def __init__(self) -> None:
        self._producers: dict[int, tuple[int, deque[ProducedBatch]]] = {}

    def check(self, producer_id: int, epoch: int, first_seq: int, count: int,
              pending: dict[int, int]) -> ProducedBatch | None:
        """None if the batch is new and in order; the original if it is a retry; else raise.

        pending maps producer id → last sequence accepted earlier in the same append call.
        """
        last_seq = (first_seq + count - 1) & SEQUENCE_MASK
        known = self._producers.get(producer_id)
        if known is not None and epoch < known[0]:
            raise InvalidProducerEpochError(
                f"producer {producer_id} epoch {epoch} is older than its current epoch {known[0]}",
                producer_id=producer_id)
        if known is not None and epoch == known[0]:
            for batch in known[1]:
                if batch.first_sequence == first_seq and batch.last_sequence == last_seq:
                    return batch
        expected = pending.get(producer_id)
        if expected is None and known is not None and epoch == known[0] and known[1]:
            expected = known[1][-1].last_sequence
        if expected is not None:
            want = (expected + 1) & SEQUENCE_MASK
            if first_seq != want:
                behind = (want - first_seq) & SEQUENCE_MASK
                if 0 < behind < (1 << 30):
                    raise DuplicateSequenceError(
                        f"producer {producer_id} resent sequence {first_seq}, older than the batches remembered",
                        producer_id=producer_id)
                raise OutOfOrderSequenceError(
                    f"producer {producer_id}: sequence {first_seq} does not follow {expected}",
                    producer_id=producer_id)
        pending[producer_id] = last_seq
        return None

    def record(self, producer_id: int, epoch: int, first_seq: int, count: int,
               base_offset: int, last_offset: int) -> None:
        known = self._producers.get(producer_id)
        if known is None or epoch > known[0]:
            known = (epoch, deque(maxlen=BATCHES_REMEMBERED))
            self._producers[producer_id] = known
        known[1].append(ProducedBatch(first_seq, (first_seq + count - 1) & SEQUENCE_MASK, base_offset, last_offset))

    def load(self, rows: np.ndarray) -> None:
        """Replay scanned batch rows (batch_scan columns) in log order."""
        mask = rows[:, batch_scan.COL_PRODUCER_ID] >= 0
        for row in rows[mask].tolist():
            base, last = row[batch_scan.COL_BASE_OFFSET], row[batch_scan.COL_LAST_OFFSET]
            self.record(row[batch_scan.COL_PRODUCER_ID], row[batch_scan.COL_PRODUCER_EPOCH],
                        row[batch_scan.COL_BASE_SEQUENCE], last - base + 1, base, last)

    def __len__(self) -> int:
        return len(self._producers)
