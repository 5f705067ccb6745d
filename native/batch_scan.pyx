# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Walk a segment buffer batch by batch: recovery, index rebuilding and fetch bounds.

Pure functions over buffers, run without the GIL. They read batch headers (and, when asked to verify,
the CRC-32C of the whole batch); they never look inside records.
"""

from libc.stdint cimport int16_t, int32_t, int64_t, uint32_t

from wire cimport *

tl_crc32c_setup()

# Why a scan stopped.
cdef enum:
    STOP_END = 0          # reached the end of the range exactly
    STOP_FULL = 1         # the output array is full; call again from stop_pos
    STOP_ZERO = 2         # zero bytes where a header should be: the unwritten, preallocated rest of a segment
    STOP_TRUNCATED = 3    # a header or batch runs past the end of the range (torn write)
    STOP_CORRUPT = 4      # impossible length or magic
    STOP_CRC = 5          # CRC-32C mismatch
    STOP_OFFSET = 6       # base offset is not the expected next offset

END, FULL, ZERO, TRUNCATED, CORRUPT, CRC, OFFSET_GAP = (
    STOP_END, STOP_FULL, STOP_ZERO, STOP_TRUNCATED, STOP_CORRUPT, STOP_CRC, STOP_OFFSET)

STOP_NAMES = {STOP_END: "end", STOP_FULL: "full", STOP_ZERO: "zero-filled", STOP_TRUNCATED: "truncated",
              STOP_CORRUPT: "corrupt header", STOP_CRC: "CRC mismatch", STOP_OFFSET: "offset gap"}

# Columns of the array scan_batches fills.
COL_POS = 0
COL_SIZE = 1
COL_BASE_OFFSET = 2
COL_LAST_OFFSET = 3
COL_MAX_TIMESTAMP = 4
COL_PRODUCER_ID = 5
COL_PRODUCER_EPOCH = 6
COL_BASE_SEQUENCE = 7
N_COLS = 8


cdef bint _all_zero(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] != 0:
            return False
    return True


def scan_batches(const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end, bint verify,
                 int64_t expected_offset, int64_t[:, ::1] out):
    """Walk batches in buf[start:end], writing one row per valid batch into out (N_COLS columns).

    verify checks each batch's CRC-32C; expected_offset >= 0 requires each batch's base offset to
    continue from the previous one. Returns (rows, stop_pos, stop_reason, next_offset).
    """
    if start < 0 or end > buf.shape[0] or start > end:
        raise ValueError("scan range is outside the buffer")
    if out.shape[1] != N_COLS:
        raise ValueError(f"output needs {N_COLS} columns")
    cdef Py_ssize_t pos = start, size, rows = 0, cap = out.shape[0]
    cdef const unsigned char* base = &buf[0] if buf.shape[0] else NULL
    cdef const unsigned char* p
    cdef int32_t length, lod
    cdef int64_t bo
    cdef int reason = STOP_END
    with nogil:
        while True:
            if pos == end:
                reason = STOP_END
                break
            if rows == cap:
                reason = STOP_FULL
                break
            p = base + pos
            if end - pos < HEADER_SIZE:
                reason = STOP_ZERO if _all_zero(p, end - pos) else STOP_TRUNCATED
                break
            length = <int32_t>tl_ld32(p + OFF_BATCH_LENGTH)
            bo = <int64_t>tl_ld64(p + OFF_BASE_OFFSET)
            if length == 0 and bo == 0 and _all_zero(p, HEADER_SIZE):
                reason = STOP_ZERO
                break
            size = <Py_ssize_t>length + LOG_OVERHEAD
            lod = <int32_t>tl_ld32(p + OFF_LAST_OFFSET_DELTA)
            if length < HEADER_SIZE - LOG_OVERHEAD or p[OFF_MAGIC] != 2 or lod < 0 or bo < 0:
                reason = STOP_CORRUPT
                break
            if size > end - pos:
                reason = STOP_TRUNCATED
                break
            if verify and tl_ld32(p + OFF_CRC) != tl_crc32c(0, p + CRC_START, size - CRC_START):
                reason = STOP_CRC
                break
            if expected_offset >= 0 and bo != expected_offset:
                reason = STOP_OFFSET
                break
            out[rows, 0] = pos
            out[rows, 1] = size
            out[rows, 2] = bo
            out[rows, 3] = bo + lod
            out[rows, 4] = <int64_t>tl_ld64(p + OFF_MAX_TIMESTAMP)
            out[rows, 5] = <int64_t>tl_ld64(p + OFF_PRODUCER_ID)
            out[rows, 6] = <int16_t>tl_ld16(p + OFF_PRODUCER_EPOCH)
            out[rows, 7] = <int32_t>tl_ld32(p + OFF_BASE_SEQUENCE)
            rows += 1
            if expected_offset >= 0:
                expected_offset = bo + lod + 1
            pos += size
    return rows, pos, reason, expected_offset


def find_batch(const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end, int64_t target):
    """First batch in buf[start:end] whose last offset is >= target: (pos, base_offset, last_offset).

    Returns (-1, -1, -1) when no batch in the range reaches target. Headers must already be valid.
    """
    if start < 0 or end > buf.shape[0] or start > end:
        raise ValueError("search range is outside the buffer")
    cdef Py_ssize_t pos = start
    cdef const unsigned char* p
    cdef int64_t bo, last
    cdef int32_t length
    cdef bint found = False
    with nogil:
        while end - pos >= HEADER_SIZE:
            p = &buf[0] + pos
            bo = <int64_t>tl_ld64(p + OFF_BASE_OFFSET)
            last = bo + <int32_t>tl_ld32(p + OFF_LAST_OFFSET_DELTA)
            length = <int32_t>tl_ld32(p + OFF_BATCH_LENGTH)
            if last >= target:
                found = True
                break
            if length <= 0:
                break
            pos += <Py_ssize_t>length + LOG_OVERHEAD
    if found:
        return pos, bo, last
    return -1, -1, -1


def find_timestamp(const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end, int64_t ts):
    """First batch in buf[start:end] whose max timestamp is >= ts: (pos, base_offset), or (-1, -1)."""
    if start < 0 or end > buf.shape[0] or start > end:
        raise ValueError("search range is outside the buffer")
    cdef Py_ssize_t pos = start
    cdef const unsigned char* p
    cdef int32_t length
    cdef bint found = False
    with nogil:
        while end - pos >= HEADER_SIZE:
            p = &buf[0] + pos
            length = <int32_t>tl_ld32(p + OFF_BATCH_LENGTH)
            if <int64_t>tl_ld64(p + OFF_MAX_TIMESTAMP) >= ts:
                found = True
                break
            if length <= 0:
                break
            pos += <Py_ssize_t>length + LOG_OVERHEAD
    if found:
        return pos, <int64_t>tl_ld64(&buf[0] + pos + OFF_BASE_OFFSET)
    return -1, -1


def span_batches(const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end, Py_ssize_t max_bytes):
    """Whole batches from start that fit in max_bytes (always at least one): (stop_pos, next_offset).

    next_offset is one past the last offset of the last batch included; (start, -1) if none fits.
    """
    if start < 0 or end > buf.shape[0] or start > end:
        raise ValueError("span range is outside the buffer")
    cdef Py_ssize_t pos = start, size
    cdef const unsigned char* p
    cdef int64_t next_offset = -1
    with nogil:
        while end - pos >= HEADER_SIZE:
            p = &buf[0] + pos
            size = <Py_ssize_t><int32_t>tl_ld32(p + OFF_BATCH_LENGTH) + LOG_OVERHEAD
            if size < HEADER_SIZE or size > end - pos:
                break
            if pos > start and pos + size - start > max_bytes:
                break
            next_offset = <int64_t>tl_ld64(p + OFF_BASE_OFFSET) + <int32_t>tl_ld32(p + OFF_LAST_OFFSET_DELTA) + 1
            pos += size
    return pos, next_offset
