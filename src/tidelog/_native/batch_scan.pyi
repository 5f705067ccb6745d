"""Scanning the record batches of a segment buffer without a Python object per batch (native/batch_scan.pyx)."""

import numpy as np
from typing_extensions import Buffer

END: int
FULL: int
ZERO: int
TRUNCATED: int
CORRUPT: int
CRC: int
OFFSET_GAP: int
STOP_NAMES: dict[int, str]

COL_POS: int
COL_SIZE: int
COL_BASE_OFFSET: int
COL_LAST_OFFSET: int
COL_MAX_TIMESTAMP: int
COL_PRODUCER_ID: int
COL_PRODUCER_EPOCH: int
COL_BASE_SEQUENCE: int
N_COLS: int

def scan_batches(
    buf: Buffer, start: int, end: int, verify: bool, expected_offset: int, out: np.ndarray
) -> tuple[int, int, int, int]:
    """Fill `out` (rows × N_COLS int64) with the batches from start: (rows, stop position, stop reason,
    next expected offset)."""

def find_batch(buf: Buffer, start: int, end: int, target: int) -> tuple[int, int, int]:
    """(position, base offset, last offset) of the batch holding offset `target`, or (-1, -1, -1)."""

def find_timestamp(buf: Buffer, start: int, end: int, ts: int) -> tuple[int, int]:
    """(position, base offset) of the first batch whose max timestamp reaches ts, or (-1, -1)."""

def span_batches(buf: Buffer, start: int, end: int, max_bytes: int) -> tuple[int, int]:
    """(end position, next offset) of the whole batches from start within max_bytes (at least one)."""
