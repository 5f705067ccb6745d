"""THE record batch framing: build batches, validate them, and view them without copying.

Batches are Kafka's RecordBatch v2, byte for byte (see docs/FORMAT.md). The heavy lifting is native
(`tidelog._native.record_batch`); this module chooses codecs, splits oversize input, and turns the
native ValueErrors into tidelog errors. The engine, the server and the client all frame through here,
so there is one implementation to keep right.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

import numpy as np

from .._native import record_batch as _rb
from ..errors import CorruptBatchError, InvalidRequestError, RecordTooLargeError
from . import compression

if TYPE_CHECKING:
    from collections.abc import Sized

    from typing_extensions import Buffer

    class SizedBuffer(Buffer, Sized, Protocol):
        """bytes, bytearray, memoryview, mmap: a buffer whose len() is its size in bytes."""


_T = TypeVar("_T")

HEADER_SIZE = _rb.HEADER_SIZE_
LAST_OFFSET_DELTA_AT = _rb.OFF_LAST_OFFSET_DELTA_  # int32: last offset - base offset
MAX_TIMESTAMP_AT = _rb.OFF_MAX_TIMESTAMP_  # int64
LOG_OVERHEAD = _rb.LOG_OVERHEAD_
RECORD_DTYPE = _rb.RECORD_DTYPE
Record = _rb.Record

_BASE_OFFSET = struct.Struct(">q")
PARTITION_LEADER_EPOCH_AT = 12  # int32, after base offset and batch length: outside the CRC, as they are
_OFFSET_LENGTH_EPOCH = struct.Struct(">qii")
_INT32 = struct.Struct(">i")

# The broker remembers this many batches per idempotent producer and partition (partition/producer_state.py)
# and recognizes a resend of any of them; an idempotent producer keeps at most this many requests of a
# partition in flight (client/producer.py), so every resend is one the broker remembers. Kafka: 5.
BATCHES_REMEMBERED = 5


class BatchInfo(NamedTuple):
    """Where a validated batch sits in its buffer and what the log needs to know about it."""

    pos: int
    size: int
    # The record count: the field shadows tuple.count on purpose (Kafka's name, read by the log and by
    # callers of validate()), and a NamedTuple field may not override a method as far as mypy knows.
    count: int  # type: ignore[assignment]
    first_timestamp: int
    max_timestamp: int
    attributes: int
    producer_id: int = -1
    producer_epoch: int = -1
    base_sequence: int = -1


def build_batches(
    values: Sequence,
    keys: Sequence | None = None,
    headers: Sequence | None = None,
    timestamps: Sequence[int] | None = None,
    *,
    timestamp: int,
    compression_name: str = "none",
    max_batch_bytes: int = 8 << 20,
) -> list[bytes]:
    """Encode records into as few batches as fit max_batch_bytes (base offset 0; the log assigns it).

    A single record that cannot fit raises RecordTooLargeError; bad arguments raise
    InvalidRequestError.
    """
    codec = compression.codec_id(compression_name)
    try:
        batch = _encode(values, keys, headers, timestamps, timestamp, codec)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequestError(str(exc)) from None
    if len(batch) <= max_batch_bytes:
        return [batch]
    n = len(values)
    if n == 1:
        raise RecordTooLargeError(
            f"record of {len(batch) - HEADER_SIZE} bytes (in a {len(batch)}-byte batch) is over "
            f"max_batch_bytes={max_batch_bytes}",
            size=len(batch),
            limit=max_batch_bytes,
        )
    half = n // 2

    def part(seq: Sequence[_T] | None, lo: int, hi: int) -> Sequence[_T] | None:
        return None if seq is None else seq[lo:hi]

    out: list[bytes] = []
    for lo, hi in ((0, half), (half, n)):
        out += build_batches(
            values[lo:hi],
            part(keys, lo, hi),
            part(headers, lo, hi),
            part(timestamps, lo, hi),
            timestamp=timestamp,
            compression_name=compression_name,
            max_batch_bytes=max_batch_bytes,
        )
    return out


def _encode(
    values: Sequence,
    keys: Sequence | None,
    headers: Sequence | None,
    timestamps: Sequence[int] | None,
    timestamp: int,
    codec: int,
    producer: tuple[int, int, int] = (-1, -1, -1),
) -> bytes:
    if codec == compression.NONE:
        return _rb.encode_batch(values, keys, headers, timestamps, timestamp, 0, *producer)
    payload, count, first_ts, max_ts = _rb.encode_records(values, keys, headers, timestamps, timestamp)
    return _rb.frame_batch(compression.compress(codec, payload), count, first_ts, max_ts, codec, *producer)


def build_batch(
    values: Sequence,
    keys: Sequence | None = None,
    headers: Sequence | None = None,
    timestamps: Sequence[int] | None = None,
    *,
    timestamp: int,
    compression_name: str = "none",
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    """Exactly one batch holding all the records, whatever its size.

    An idempotent producer sets producer_id (>= 0), producer_epoch and base_sequence (the sequence
    number of the first record, counted per partition), so the broker can drop a retried duplicate.
    """
    codec = compression.codec_id(compression_name)
    try:
        return _encode(
            values, keys, headers, timestamps, timestamp, codec, (producer_id, producer_epoch, base_sequence)
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequestError(str(exc)) from None


def _decompress_for_validation(codec: int, payload: Buffer) -> bytes:
    return compression.decompress(codec, payload)


class _Compressed(Exception):
    """Raised through the validator by `validate_uncompressed` at the first compressed batch."""


def _refuse_compressed(codec: int, payload: Buffer) -> bytes:
    raise _Compressed


def validate_uncompressed(data: Buffer, max_batch_bytes: int = 0) -> list[BatchInfo] | None:
    """validate(), or None when a batch is compressed (its check would decompress it: not cheap)."""
    try:
        return validate(data, max_batch_bytes, _refuse_compressed)
    except _Compressed:
        return None


def validate(
    data: Buffer,
    max_batch_bytes: int = 0,
    decompress: Callable[[int, Buffer], bytes] = _decompress_for_validation,
) -> list[BatchInfo]:
    """Check one or more concatenated batches as the log will store them; CorruptBatchError if not."""
    try:
        infos = _rb.validate_batches(data, decompress, max_batch_bytes)
    except OverflowError as exc:
        raise RecordTooLargeError(str(exc), limit=max_batch_bytes) from None
    except ValueError as exc:
        raise CorruptBatchError(str(exc)) from None
    except (TypeError, BufferError) as exc:
        raise InvalidRequestError(f"batch data must be contiguous bytes-like: {exc}") from None
    return [BatchInfo(*i) for i in infos]


def base_offset_header(base_offset: int) -> bytes:
    """The first 8 bytes of a batch carrying base_offset (outside the CRC, so patching is safe)."""
    return _BASE_OFFSET.pack(base_offset)


def stamped_header(base_offset: int, size: int, leader_epoch: int) -> bytes:
    """The first 16 bytes of a batch of `size` bytes carrying base_offset and the partition leader
    epoch of the leader that appends it (all three fields are outside the CRC)."""
    return _OFFSET_LENGTH_EPOCH.pack(base_offset, size - LOG_OVERHEAD, leader_epoch)


def base_offset_of(buf: Buffer, pos: int = 0) -> int:
    return int(_BASE_OFFSET.unpack_from(buf, pos)[0])


def leader_epoch_of(buf: Buffer, pos: int = 0) -> int:
    """The partition leader epoch stamped in the batch at pos (-1: appended without one)."""
    return int(_INT32.unpack_from(buf, pos + PARTITION_LEADER_EPOCH_AT)[0])


class BatchView:
    """Zero-copy view of one batch in a buffer (a segment's mmap, a fetch result, a received message).

    Header fields are read on construction; records are decoded on demand. For compressed batches
    (gzip, snappy, lz4, zstd) the records section is decompressed once, on first use.
    """

    __slots__ = (
        "buffer",
        "pos",
        "size",
        "base_offset",
        "last_offset",
        "count",
        "first_timestamp",
        "max_timestamp",
        "attributes",
        "crc",
        "_records_buf",
        "_records_start",
        "_records_end",
    )

    def __init__(self, buffer: Buffer, pos: int = 0) -> None:
        try:
            (
                base_offset,
                length,
                _epoch,
                magic,
                crc,
                attributes,
                last_delta,
                first_ts,
                max_ts,
                _pid,
                _pepoch,
                _seq,
                count,
            ) = _rb.read_header(buffer, pos)
        except ValueError as exc:
            raise CorruptBatchError(str(exc)) from None
        if magic != _rb.MAGIC:
            raise CorruptBatchError(f"batch at byte {pos}: magic {magic} is not 2")
        self.buffer = buffer
        self.pos = pos
        self.size = length + LOG_OVERHEAD
        self.base_offset = base_offset
        self.last_offset = base_offset + last_delta
        self.count = count
        self.first_timestamp = first_ts
        self.max_timestamp = max_ts
        self.attributes = attributes
        self.crc = crc
        self._records_buf: Buffer | None = None
        self._records_start = 0
        self._records_end = 0

    @property
    def codec(self) -> str:
        return compression.CODEC_NAMES.get(self.attributes & _rb.CODEC_MASK, "unknown")

    @property
    def log_append_time(self) -> bool:
        """In a LogAppendTime batch every record's timestamp is the batch's max timestamp."""
        return bool(self.attributes & _rb.TIMESTAMP_TYPE_MASK)

    @property
    def raw(self) -> memoryview:
        """The batch's bytes, exactly as stored."""
        return memoryview(self.buffer)[self.pos : self.pos + self.size]

    @property
    def next_offset(self) -> int:
        return self.last_offset + 1

    def crc_ok(self) -> bool:
        stored, computed = _rb.crc_of_batch(self.buffer, self.pos, self.size)
        return stored == computed

    def _section(self) -> tuple[Buffer, int, int]:
        """(buffer, start, end) of the uncompressed records section."""
        if self._records_buf is None:
            codec = self.attributes & _rb.CODEC_MASK
            if codec == compression.NONE:
                self._records_buf = self.buffer
                self._records_start = self.pos + HEADER_SIZE
                self._records_end = self.pos + self.size
            else:
                raw = memoryview(self.buffer)[self.pos + HEADER_SIZE : self.pos + self.size]
                try:
                    section = compression.decompress(codec, raw)
                except ValueError as exc:
                    raise CorruptBatchError(f"batch at offset {self.base_offset}: {exc}") from None
                self._records_buf = section
                self._records_start = 0
                self._records_end = len(section)
        return self._records_buf, self._records_start, self._records_end

    def table(self) -> np.ndarray:
        """One RECORD_DTYPE row per record (offsets, timestamps, key/value positions in `records_buffer`)."""
        buf, start, end = self._section()
        try:
            return _rb.decode_table(
                buf,
                start,
                end,
                self.count,
                self.base_offset,
                self.first_timestamp,
                self.log_append_time,
                self.max_timestamp,
            )
        except ValueError as exc:
            raise CorruptBatchError(f"batch at offset {self.base_offset}: {exc}") from None

    @property
    def records_buffer(self) -> Buffer:
        """The buffer `table()` positions point into (the segment itself unless compressed)."""
        return self._section()[0]

    def records(self, min_offset: int = 0, copy: bool = True, max_offset: int = 1 << 62) -> list:
        """Record objects with min_offset <= offset < max_offset; copy=False gives memoryview slices."""
        buf, start, end = self._section()
        try:
            return _rb.records(
                buf,
                buf,
                start,
                end,
                self.count,
                self.base_offset,
                self.first_timestamp,
                min_offset,
                copy,
                max_offset,
                self.log_append_time,
                self.max_timestamp,
            )
        except ValueError as exc:
            raise CorruptBatchError(f"batch at offset {self.base_offset}: {exc}") from None

    def __iter__(self) -> Iterator:
        return iter(self.records())

    def __repr__(self) -> str:
        return (
            f"BatchView(offsets={self.base_offset}..{self.last_offset}, count={self.count}, "
            f"size={self.size}, codec={self.codec}, max_timestamp={self.max_timestamp})"
        )


def iter_batches(buffer: SizedBuffer, start: int = 0, end: int | None = None) -> Iterator[BatchView]:
    """Views of the consecutive batches in buffer[start:end] (which must hold whole batches)."""
    end = len(buffer) if end is None else end
    pos = start
    while pos < end:
        view = BatchView(buffer, pos)
        if view.size < HEADER_SIZE or pos + view.size > end:
            raise CorruptBatchError(f"batch at byte {pos} runs past the end of the data")
        yield view
        pos += view.size
