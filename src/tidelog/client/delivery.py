"""Where each batch of a Producer is on its way to the broker, and its one ending.

From the moment the network side takes a batch from the producer's buffer until it finishes, the
batch is in exactly one place: *waiting* (on no stream) or *in flight* (handed to the stream of its
partition's leader, not yet acknowledged), in its partition's send order. It leaves that place once, by
finishing once: acknowledged, refused for good, or past its delivery deadline (with acks none: once
written). When a stream breaks, the batches in flight on it go back to the head of their partitions'
waiting lines, in order, to be resent on the next stream to wherever the partition is led then;
nothing else is resent. A partition's batches are in flight on one stream at a time, so a move of its
leader never lets a later batch overtake an earlier one.

Sequence numbers: a batch gets its producer epoch and per-partition sequence numbers when it is first
handed to a stream (encoded), and keeps them, so that the broker recognizes a resend and answers it
with the original offsets instead of appending it again. The broker remembers the last
BATCHES_REMEMBERED batches per producer and partition; at most that many requests of a partition are in
flight, so every resend falls inside what the broker remembers. When a batch that had sequence numbers
fails for good, its numbers are a gap the broker would refuse forever: a new epoch starts, and batches
encoded after that start their sequences again at 0 (Kafka bumps the epoch too). Batches encoded
before the gap keep their numbers; the broker then refuses them as out of order, and they fail with
the error that made the gap.

Deadlines: a batch is given up when its oldest record was sent more than delivery_timeout_s ago,
wherever it is, with the last error it met (or a RequestTimeoutError naming the timeout).

Bookkeeping only, no I/O and no asyncio. Not thread-safe: the producer's network thread owns it.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable

from ..codec import batch as batch_codec
from ..errors import (
    InvalidProducerEpochError,
    NotLeaderError,
    OutOfOrderSequenceError,
    RequestTimeoutError,
    TidelogError,
)
from ..v1.tidelog_pb2 import ACKS_NONE
from ..wire import framing
from ..wire.statuses import error_from_message

SEQUENCE_MASK = 0x7FFFFFFF  # sequences wrap at 2^31, as the broker's do
EPOCH_MASK = 0x7FFF
# How the broker refuses a batch encoded before a gap of its partition (or before the new epoch)
_GAP_REFUSALS = (OutOfOrderSequenceError, InvalidProducerEpochError)


class Outgoing:
    """One batch on its way: the records until it is encoded, then the encoded RecordBatch."""

    __slots__ = (
        "topic",
        "partition",
        "records",
        "raw",
        "epoch",
        "result",
        "count",
        "buffered",
        "deadline",
        "last_error",
        "request_sequence",
        "address",
    )

    def __init__(self, topic: str, partition: int, records, result, count: int, buffered: int, deadline: float) -> None:
        self.topic, self.partition = topic, partition
        self.records = records  # values, keys, headers, timestamps (the producer's open batch)
        self.raw: bytes | None = None  # set when first handed to a stream; never changes after
        self.epoch = -1
        self.result = result  # the producer's _BatchResult, finished by on_finish
        self.count, self.buffered, self.deadline = count, buffered, deadline
        self.last_error: TidelogError | None = None
        self.request_sequence = -1  # of the stream request carrying it, while in flight
        self.address = ""  # of the broker whose stream carries it, while in flight


class _Line:
    """One partition's batches, oldest first: those in flight, then those waiting."""

    __slots__ = ("flying", "waiting", "gap")

    def __init__(self) -> None:
        self.flying: collections.deque[Outgoing] = collections.deque()
        self.waiting: collections.deque[Outgoing] = collections.deque()
        self.gap: tuple[int, TidelogError] | None = None  # (epoch, error) of the last batch given up

    def oldest(self) -> Outgoing | None:
        if self.flying:
            return self.flying[0]
        return self.waiting[0] if self.waiting else None


class Delivery:
    """A producer's batches between its buffer and their ending (see the module docstring)."""

    def __init__(
        self,
        *,
        producer_id: int,
        compression: str,
        max_in_flight_bytes: int,
        max_in_flight_requests_per_partition: int,
        delivery_timeout_s: float,
        on_finish: Callable[[Outgoing, int, TidelogError | None], None],
        acks: int = 0,
    ) -> None:
        self.producer_id = producer_id
        self.acks = acks  # the Acks enum's number, sent with every request
        self.epoch = 0
        self.compression = compression
        self.max_in_flight_bytes = max_in_flight_bytes
        self.max_per_partition = max_in_flight_requests_per_partition
        self.delivery_timeout_s = delivery_timeout_s
        self._on_finish = on_finish
        self.last_error: TidelogError | None = None
        """Why the last stream broke; cleared when a stream acknowledges something."""
        self.refused: tuple[str, int] | None = None
        """The partition of the request whose retriable refusal acked() returned last."""
        self._sequences: dict[tuple[str, int], int] = {}
        self._lines: dict[tuple[str, int], _Line] = {}
        self._flying: dict[int, Outgoing] = {}  # by request sequence: what the current stream holds
        self._flying_bytes = 0
        self._ready: dict[tuple[str, int], None] = {}  # partitions that may hand a batch over, in turn
        self._next_request = 0  # increasing over all streams: an old stream's ack can never match

    # -- in ---------------------------------------------------------------------------------------
    def add(self, item: Outgoing) -> None:
        key = (item.topic, item.partition)
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line()
        line.waiting.append(item)
        self._refresh(key, line)

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing in flight."""
        return not self._flying and not any(line.waiting for line in self._lines.values())

    def backed_up(self, topic: str, partition: int, limit: int | None = None) -> bool:
        """Whether a batch handed over now would wait: the partition has batches waiting, or `limit`
        (default: the most allowed) requests in flight. The producer keeps adding records to its open
        batch meanwhile, so that a busy partition sends fewer, fuller requests (adaptive batching)."""
        line = self._lines.get((topic, partition))
        if line is None:
            return False
        return bool(line.waiting) or len(line.flying) >= (self.max_per_partition if limit is None else limit)

    @property
    def has_waiting(self) -> bool:
        return any(line.waiting for line in self._lines.values())

    # -- onto the stream --------------------------------------------------------------------------
    def next_request(self, route: Callable[[str, int], str | None] | None = None) -> tuple[Outgoing, int, bytes] | None:
        """The next batch to write, now counted in flight, with the request sequence and the ProduceRequest
        to write on the stream to `item.address`; None when every partition is at its limit, the bytes in
        flight are, or nothing waits. route(topic, partition) names the broker a partition's requests go
        to (None: not now); a partition whose requests are in flight to another broker waits until they
        are answered or lost, so that its batches never overtake each other. Write it only while
        `is_flying(item, sequence)`: it may be given up before its turn comes."""
        for key in list(self._ready):
            line = self._lines[key]
            address = route(*key) if route is not None else ""
            if address is None or (line.flying and line.flying[0].address != address):
                continue
            item = line.waiting[0]
            size = len(item.raw) if item.raw is not None else item.buffered
            if self._flying and self._flying_bytes + size > self.max_in_flight_bytes:
                return None  # acks make room
            raw = item.raw
            if raw is None:
                try:
                    raw = self._encode(item)
                except TidelogError as exc:  # the records cannot be framed: nothing was sent
                    line.waiting.popleft()
                    self._refresh(key, line)
                    self._on_finish(item, -1, exc)
                    continue
            line.waiting.popleft()
            line.flying.append(item)
            item.request_sequence = self._next_request
            item.address = address
            self._next_request += 1
            self._flying[item.request_sequence] = item
            self._flying_bytes += len(raw)
            del self._ready[key]
            self._refresh(key, line)  # back at the end of the turn: partitions take turns
            request = framing.encode_produce_request(
                item.request_sequence, item.topic, item.partition, raw, acks=self.acks
            )
            return item, item.request_sequence, request
        return None

    def written(self, item: Outgoing, request_sequence: int) -> None:
        """The request went out. With acks none, that is its ending: offset unknown (-1), as in Kafka."""
        if self.acks == ACKS_NONE and self.is_flying(item, request_sequence):
            self._land(item)
            self._on_finish(item, -1, None)

    @staticmethod
    def is_flying(item: Outgoing, request_sequence: int) -> bool:
        return item.request_sequence == request_sequence

    def _encode(self, item: Outgoing) -> bytes:
        values, keys, headers, timestamps = item.records
        idempotent = self.producer_id >= 0
        key = (item.topic, item.partition)
        base_seq = self._sequences.get(key, 0)
        raw = batch_codec.build_batch(
            values,
            keys if any(k is not None for k in keys) else None,
            headers if any(headers) else None,
            timestamps,
            timestamp=0,
            compression_name=self.compression,
            producer_id=self.producer_id,
            producer_epoch=self.epoch if idempotent else -1,
            base_sequence=base_seq if idempotent else -1,
        )
        self._sequences[key] = (base_seq + item.count) & SEQUENCE_MASK  # only once the batch exists
        item.raw, item.epoch = raw, self.epoch
        item.records = None  # the encoded bytes are all a resend needs
        return raw

    # -- answers ----------------------------------------------------------------------------------
    def acked(self, results) -> TidelogError | None:
        """Apply one ProduceResponse's results. Returns the first retriable error: the stream is then
        given up, and that request and all after it are resent in order on the next one."""
        for result in results:
            item = self._flying.get(result.sequence)
            if item is None:
                if self.acks == ACKS_NONE and result.HasField("error"):
                    err = error_from_message(result.error)
                    if isinstance(err, NotLeaderError):  # finished when written, but the leader moved: follow it
                        self.refused = (result.topic, result.partition)
                        return err
                continue  # given up meanwhile (its deadline passed), or not a request of ours
            if not result.HasField("error"):
                self.last_error = None
                self._land(item)
                self._on_finish(item, result.base_offset, None)
                continue
            err = error_from_message(result.error)
            if err.retriable:
                item.last_error = err
                self.refused = (item.topic, item.partition)
                return err
            self._land(item)
            line = self._lines[(item.topic, item.partition)]
            if isinstance(err, _GAP_REFUSALS) and line.gap is not None and line.gap[0] == item.epoch:
                err = line.gap[1]  # refused only because an earlier batch of it was given up: say why
            self._give_up(item, err)
        return None

    def lost(self, err: TidelogError, address: str | None = None) -> None:
        """A stream broke (the one to `address`; None: all): what it held waits again, at the head of its
        partition's line, in order."""
        self.last_error = err
        for key, line in self._lines.items():
            if line.flying and (address is None or line.flying[0].address == address):
                for item in line.flying:
                    del self._flying[item.request_sequence]
                    assert item.raw is not None  # only an encoded batch is in flight
                    self._flying_bytes -= len(item.raw)
                    item.request_sequence = -1
                line.waiting.extendleft(reversed(line.flying))
                line.flying.clear()
            for item in line.waiting:
                item.last_error = err
            self._refresh(key, line)

    def _land(self, item: Outgoing) -> None:
        """Take an acknowledged or given-up batch out of flight."""
        del self._flying[item.request_sequence]
        item.request_sequence = -1
        assert item.raw is not None  # only an encoded batch is in flight
        self._flying_bytes -= len(item.raw)
        key = (item.topic, item.partition)
        line = self._lines[key]
        if line.flying[0] is item:  # acks come in order: always, unless a deadline took one before
            line.flying.popleft()
        else:
            line.flying.remove(item)
        self._refresh(key, line)

    # -- deadlines --------------------------------------------------------------------------------
    def expire(self, now: float) -> None:
        """Give up every batch past its deadline, wherever it is (its partition's oldest go first)."""
        for key, line in self._lines.items():
            while (item := line.oldest()) is not None and item.deadline <= now:
                if line.flying:
                    self._land(item)
                else:
                    line.waiting.popleft()
                    self._refresh(key, line)
                self._give_up(
                    item,
                    item.last_error
                    or self.last_error
                    or RequestTimeoutError(f"not acknowledged within delivery_timeout_s={self.delivery_timeout_s:g}s"),
                )

    def next_deadline(self) -> float | None:
        deadlines = [item.deadline for line in self._lines.values() if (item := line.oldest()) is not None]
        return min(deadlines, default=None)

    def refuse(self, topics: set[str], err: TidelogError) -> None:
        """These topics are refused to this producer (no permission): their batches not in flight fail now."""
        for key, line in self._lines.items():
            if key[0] in topics and line.waiting:
                while line.waiting:
                    self._give_up(line.waiting.popleft(), err)
                self._refresh(key, line)

    def _give_up(self, item: Outgoing, err: TidelogError) -> None:
        if item.raw is not None and self.producer_id >= 0:
            self._lines[(item.topic, item.partition)].gap = (item.epoch, err)
            if item.epoch == self.epoch:
                # a gap in the current epoch's sequences. A batch of an older epoch leaves none there:
                # bumping for it too would start an epoch per batch refused because of one gap (and
                # soon wrap the epoch, after which the broker refuses every batch as a zombie's).
                self.new_epoch()
        self._on_finish(item, -1, err)

    def new_epoch(self) -> None:
        """The sequence numbers of a batch given up are a gap the broker would refuse forever: start a
        new epoch, whose sequences start again at 0. Batches already encoded keep theirs. When the
        epochs run out (int16), a new producer id starts at epoch 0, as Kafka's producer does."""
        if self.epoch == EPOCH_MASK:
            self.producer_id = secrets.randbits(62)
            self.epoch = 0
        else:
            self.epoch += 1
        self._sequences.clear()

    def drop_all(self) -> list[Outgoing]:
        """Everything still here, taken out (the producer is stopping)."""
        items = [item for line in self._lines.values() for item in (*line.flying, *line.waiting)]
        self._lines.clear()
        self._flying.clear()
        self._flying_bytes = 0
        self._ready.clear()
        return items

    def _refresh(self, key: tuple[str, int], line: _Line) -> None:
        """Keep `key` in the turn exactly while its line has a batch waiting and room in flight."""
        if line.waiting and len(line.flying) < self.max_per_partition:
            self._ready.setdefault(key, None)
        else:
            self._ready.pop(key, None)
