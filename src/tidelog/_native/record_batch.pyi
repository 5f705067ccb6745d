"""Kafka RecordBatch v2: encoding, validation and decoding (native/record_batch.pyx)."""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from typing_extensions import Buffer

HEADER_SIZE_: int
LOG_OVERHEAD_: int
OFF_LAST_OFFSET_DELTA_: int
OFF_MAX_TIMESTAMP_: int
MAGIC: int
CODEC_MASK: int
TIMESTAMP_TYPE_MASK: int
TRANSACTIONAL_MASK: int
CONTROL_MASK: int
NONE: int
LZ4: int
RECORD_DTYPE: np.dtype

class Record:
    """One record: what a fetch yields. Keys and values are bytes, or memoryviews with copy=False."""

    offset: int
    timestamp: int
    key: bytes | memoryview | None
    value: bytes | memoryview | None
    headers: tuple[tuple[str, bytes | None], ...]

    def __init__(
        self,
        offset: int,
        timestamp: int,
        key: bytes | memoryview | None,
        value: bytes | memoryview | None,
        headers: tuple[tuple[str, bytes | None], ...] = (),
    ) -> None: ...

def encode_batch(
    values: Sequence[Buffer | None],
    keys: Sequence[Buffer | None] | None = None,
    headers: Sequence[Sequence[tuple[str, Buffer | None]]] | None = None,
    timestamps: Sequence[int] | None = None,
    timestamp: int = 0,
    attributes: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes: ...
def encode_records(
    values: Sequence[Buffer | None],
    keys: Sequence[Buffer | None] | None = None,
    headers: Sequence[Sequence[tuple[str, Buffer | None]]] | None = None,
    timestamps: Sequence[int] | None = None,
    timestamp: int = 0,
) -> tuple[bytes, int, int, int]:
    """The records section only (for compression): (payload, count, first timestamp, max timestamp)."""

def frame_batch(
    payload: Buffer,
    count: int,
    first_ts: int,
    max_ts: int,
    attributes: int,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes: ...
def read_header(buf: Buffer, pos: int = 0) -> tuple[int, int, int, int, int, int, int, int, int, int, int, int, int]:
    """(base offset, length, leader epoch, magic, crc, attributes, last offset delta, base timestamp,
    max timestamp, producer id, producer epoch, base sequence, record count)."""

def validate_batches(
    buf: Buffer, decompress: Callable[[int, memoryview], bytes] | None = None, max_batch_bytes: int = 0
) -> list[tuple[int, int, int, int, int, int, int, int, int]]:
    """(pos, size, count, first_ts, max_ts, attributes, producer_id, producer_epoch, base_sequence) per batch."""

def decode_table(
    buf: Buffer,
    pos: int,
    end: int,
    count: int,
    base_offset: int,
    base_ts: int,
    log_append_time: bool = False,
    max_ts: int = 0,
) -> np.ndarray: ...
def records(
    source: Any,
    buf: Buffer,
    pos: int,
    end: int,
    count: int,
    base_offset: int,
    base_ts: int,
    min_offset: int = 0,
    copy: bool = True,
    max_offset: int = ...,
    log_append_time: bool = False,
    max_ts: int = 0,
) -> list[Record]: ...
def crc_of_batch(buf: Buffer, pos: int, size: int) -> tuple[int, int]:
    """(the CRC the header states, the CRC of the bytes)."""
