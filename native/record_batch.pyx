# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kafka RecordBatch v2 (magic 2): encode, validate and decode, byte for byte.

Pure codec over buffers: no file or socket I/O, no policy. Loops over records run without the GIL and
make no Python object per record, except `records()`, whose whole job is to make one per record.
Malformed input raises ValueError with a message saying what is wrong and where; callers map it to
their own error type.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void* op)
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint32_t
from libc.string cimport memcpy

import numpy as np

from wire cimport *

tl_crc32c_setup()

HEADER_SIZE_ = HEADER_SIZE
LOG_OVERHEAD_ = LOG_OVERHEAD
# Where header fields sit, for Python code that reads one in place (one definition: wire.pxd).
OFF_LAST_OFFSET_DELTA_ = OFF_LAST_OFFSET_DELTA
OFF_MAX_TIMESTAMP_ = OFF_MAX_TIMESTAMP
cdef enum:
    ATTR_CODEC_MASK = 0x07
    ATTR_TIMESTAMP_TYPE = 0x08
    ATTR_TRANSACTIONAL = 0x10
    ATTR_CONTROL = 0x20
    CODEC_NONE = 0
    CODEC_LZ4 = 3
    CODEC_ZSTD = 4

MAGIC = 2
CODEC_MASK = ATTR_CODEC_MASK
TIMESTAMP_TYPE_MASK = ATTR_TIMESTAMP_TYPE
TRANSACTIONAL_MASK = ATTR_TRANSACTIONAL
CONTROL_MASK = ATTR_CONTROL
NONE = CODEC_NONE
LZ4 = CODEC_LZ4
_CODEC_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

# One row per record: where its parts sit in the decoded buffer. Positions are byte offsets into the
# buffer the table was decoded from; a null key or value has length -1.
RECORD_DTYPE = np.dtype([
    ("offset", "<i8"), ("timestamp", "<i8"),
    ("key_pos", "<i8"), ("value_pos", "<i8"), ("headers_pos", "<i8"),
    ("key_len", "<i4"), ("value_len", "<i4"), ("headers_count", "<i4"), ("size", "<i4"),
])

cdef packed struct RecordRow:
    int64_t offset
    int64_t timestamp
    int64_t key_pos
    int64_t value_pos
    int64_t headers_pos
    int32_t key_len
    int32_t value_len
    int32_t headers_count
    int32_t size

cdef struct RecIn:
    const unsigned char* key
    Py_ssize_t klen
    const unsigned char* value
    Py_ssize_t vlen
    const unsigned char* hdr
    Py_ssize_t hlen
    int64_t ts
    Py_ssize_t body


cdef class Record:
    """One record as handed to a reader: offset, timestamp, key, value, headers.

    key and value are bytes (or zero-copy memoryviews when the fetch asked for views), None when null.
    headers is a tuple of (str, bytes | None) pairs.
    """
    cdef readonly int64_t offset
    cdef readonly int64_t timestamp
    cdef readonly object key
    cdef readonly object value
    cdef readonly tuple headers

    def __init__(self, int64_t offset, int64_t timestamp, key, value, headers=()):
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = tuple(headers)

    def __repr__(self):
        return (f"Record(offset={self.offset}, timestamp={self.timestamp}, key={self.key!r}, "
                f"value={self.value!r}, headers={self.headers!r})")

    def __eq__(self, other):
        if not isinstance(other, Record):
            return NotImplemented
        cdef Record o = other
        return (self.offset == o.offset and self.timestamp == o.timestamp and self.key == o.key
                and self.value == o.value and self.headers == o.headers)

    def __hash__(self):
        return hash((self.offset, self.timestamp))

    def __reduce__(self):
        return (Record, (self.offset, self.timestamp, self.key, self.value, self.headers))


cdef bytes _as_bytes(object v, str what):
    if PyBytes_CheckExact(v):
        return <bytes>v
    if isinstance(v, str):
        raise TypeError(f"{what} must be bytes-like or None, not str (encode it first)")
    try:
        return bytes(memoryview(v))
    except TypeError:
        raise TypeError(f"{what} must be bytes-like or None, not {type(v).__name__}") from None


cdef bytes _encode_headers(object hdrs):
    """Headers section of one record: count, then (key, value) pairs, as Kafka writes them."""
    cdef bytearray out = bytearray()
    cdef unsigned char tmp[10]
    cdef unsigned char* e
    items = list(hdrs)
    e = put_varint(tmp, len(items))
    out += tmp[:e - tmp]
    for item in items:
        try:
            k, v = item
        except (TypeError, ValueError):
            raise TypeError("each header must be a (key, value) pair") from None
        kb = k.encode("utf-8") if isinstance(k, str) else _as_bytes(k, "header key")
        e = put_varint(tmp, len(kb))
        out += tmp[:e - tmp]
        out += kb
        if v is None:
            e = put_varint(tmp, -1)
            out += tmp[:e - tmp]
        else:
            vb = _as_bytes(v, "header value")
            e = put_varint(tmp, len(vb))
            out += tmp[:e - tmp]
            out += vb
    return bytes(out)


cdef Py_ssize_t _collect(RecIn* recs, Py_ssize_t n, object values, object keys, object headers,
                         object timestamps, int64_t base_ts, list keep,
                         int64_t* first_ts, int64_t* max_ts) except -1:
    """Gather pointers to every part of every record (GIL held); return the records' total size."""
    cdef Py_ssize_t i, total = 0
    cdef RecIn* r
    cdef object v
    cdef bytes b
    for i in range(n):
        r = &recs[i]
        v = values[i]
        if v is None:
            r.value = NULL
            r.vlen = -1
        else:
            b = _as_bytes(v, "record value")
            if b is not v:
                keep.append(b)
            r.value = <const unsigned char*>PyBytes_AS_STRING(b)
            r.vlen = PyBytes_GET_SIZE(b)
        v = None if keys is None else keys[i]
        if v is None:
            r.key = NULL
            r.klen = -1
        else:
            b = _as_bytes(v, "record key")
            if b is not v:
                keep.append(b)
            r.key = <const unsigned char*>PyBytes_AS_STRING(b)
            r.klen = PyBytes_GET_SIZE(b)
        v = None if headers is None else headers[i]
        if not v:
            r.hdr = NULL
            r.hlen = 1
        else:
            b = _encode_headers(v)
            keep.append(b)
            r.hdr = <const unsigned char*>PyBytes_AS_STRING(b)
            r.hlen = PyBytes_GET_SIZE(b)
        r.ts = base_ts if timestamps is None else <int64_t>timestamps[i]
        if i == 0:
            first_ts[0] = r.ts
            max_ts[0] = r.ts
        elif r.ts > max_ts[0]:
            max_ts[0] = r.ts
    for i in range(n):
        r = &recs[i]
        r.body = (1 + varint_size(r.ts - first_ts[0]) + varint_size(i)
                  + varint_size(r.klen) + (r.klen if r.klen > 0 else 0)
                  + varint_size(r.vlen) + (r.vlen if r.vlen > 0 else 0) + r.hlen)
        total += varint_size(r.body) + r.body
    return total


cdef void _write_records(unsigned char* p, RecIn* recs, Py_ssize_t n, int64_t first_ts) noexcept nogil:
    cdef Py_ssize_t i
    cdef RecIn* r
    for i in range(n):
        r = &recs[i]
        p = put_varint(p, r.body)
        p[0] = 0
        p += 1
        p = put_varint(p, r.ts - first_ts)
        p = put_varint(p, i)
        p = put_varint(p, r.klen)
        if r.klen > 0:
            memcpy(p, r.key, r.klen)
            p += r.klen
        p = put_varint(p, r.vlen)
        if r.vlen > 0:
            memcpy(p, r.value, r.vlen)
            p += r.vlen
        if r.hdr == NULL:
            p[0] = 0
            p += 1
        else:
            memcpy(p, r.hdr, r.hlen)
            p += r.hlen


cdef void _write_header(unsigned char* p, Py_ssize_t total, int attributes, int32_t count,
                        int64_t first_ts, int64_t max_ts, int64_t producer_id, int producer_epoch,
                        int base_sequence) noexcept nogil:
    tl_st64(p + OFF_BASE_OFFSET, 0)
    tl_st32(p + OFF_BATCH_LENGTH, <uint32_t>(total - LOG_OVERHEAD))
    tl_st32(p + OFF_LEADER_EPOCH, <uint32_t>-1)
    p[OFF_MAGIC] = 2
    tl_st16(p + OFF_ATTRIBUTES, <unsigned short>attributes)
    tl_st32(p + OFF_LAST_OFFSET_DELTA, <uint32_t>(count - 1))
    tl_st64(p + OFF_BASE_TIMESTAMP, <uint64_t>first_ts)
    tl_st64(p + OFF_MAX_TIMESTAMP, <uint64_t>max_ts)
    tl_st64(p + OFF_PRODUCER_ID, <uint64_t>producer_id)
    tl_st16(p + OFF_PRODUCER_EPOCH, <unsigned short>producer_epoch)
    tl_st32(p + OFF_BASE_SEQUENCE, <uint32_t>base_sequence)
    tl_st32(p + OFF_RECORD_COUNT, <uint32_t>count)
    tl_st32(p + OFF_CRC, tl_crc32c(0, p + CRC_START, total - CRC_START))


def encode_batch(values, keys=None, headers=None, timestamps=None, int64_t timestamp=0,
                 int attributes=0, int64_t producer_id=-1, int producer_epoch=-1, int base_sequence=-1):
    """Encode records into one uncompressed batch with base offset 0 (the log assigns offsets).

    values: sequence of bytes-like or None; keys, headers, timestamps: None or one per value.
    timestamp is used for every record when timestamps is None.
    """
    cdef Py_ssize_t n = len(values)
    if n == 0:
        raise ValueError("a batch needs at least one record")
    if n > 0x7FFFFFFF:
        raise ValueError("too many records for one batch")
    _check_lengths(n, keys, headers, timestamps)
    cdef RecIn* recs = <RecIn*>PyMem_Malloc(n * sizeof(RecIn))
    if recs == NULL:
        raise MemoryError()
    cdef list keep = []
    cdef int64_t first_ts = 0, max_ts = 0
    cdef Py_ssize_t total
    cdef bytes out
    cdef unsigned char* p
    try:
        total = HEADER_SIZE + _collect(recs, n, values, keys, headers, timestamps, timestamp, keep,
                                       &first_ts, &max_ts)
        if total - LOG_OVERHEAD > 0x7FFFFFFF:
            raise ValueError(f"batch of {total} bytes is larger than the format allows")
        out = PyBytes_FromStringAndSize(NULL, total)
        p = <unsigned char*>PyBytes_AS_STRING(out)
        with nogil:
            _write_records(p + HEADER_SIZE, recs, n, first_ts)
            _write_header(p, total, attributes & ~ATTR_CODEC_MASK, <int32_t>n, first_ts, max_ts,
                          producer_id, producer_epoch, base_sequence)
        return out
    finally:
        PyMem_Free(recs)


def encode_records(values, keys=None, headers=None, timestamps=None, int64_t timestamp=0):
    """Encode only the records section (for compression); returns (payload, count, first_ts, max_ts)."""
    cdef Py_ssize_t n = len(values)
    if n == 0:
        raise ValueError("a batch needs at least one record")
    _check_lengths(n, keys, headers, timestamps)
    cdef RecIn* recs = <RecIn*>PyMem_Malloc(n * sizeof(RecIn))
    if recs == NULL:
        raise MemoryError()
    cdef list keep = []
    cdef int64_t first_ts = 0, max_ts = 0
    cdef Py_ssize_t total
    cdef bytes out
    cdef unsigned char* p
    try:
        total = _collect(recs, n, values, keys, headers, timestamps, timestamp, keep, &first_ts, &max_ts)
        out = PyBytes_FromStringAndSize(NULL, total)
        p = <unsigned char*>PyBytes_AS_STRING(out)
        with nogil:
            _write_records(p, recs, n, first_ts)
        return out, n, first_ts, max_ts
    finally:
        PyMem_Free(recs)


def frame_batch(const unsigned char[::1] payload, int32_t count, int64_t first_ts, int64_t max_ts,
                int attributes, int64_t producer_id=-1, int producer_epoch=-1, int base_sequence=-1):
    """Put a batch header (base offset 0, CRC) in front of an already encoded (e.g. compressed) payload."""
    cdef Py_ssize_t n = payload.shape[0]
    cdef Py_ssize_t total = HEADER_SIZE + n
    if total - LOG_OVERHEAD > 0x7FFFFFFF:
        raise ValueError(f"batch of {total} bytes is larger than the format allows")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    with nogil:
        if n:
            memcpy(p + HEADER_SIZE, &payload[0], n)
        _write_header(p, total, attributes, count, first_ts, max_ts, producer_id, producer_epoch,
                      base_sequence)
    return out


cdef int _check_lengths(Py_ssize_t n, keys, headers, timestamps) except -1:
    if keys is not None and len(keys) != n:
        raise ValueError(f"got {len(keys)} keys for {n} values")
    if headers is not None and len(headers) != n:
        raise ValueError(f"got {len(headers)} header lists for {n} values")
    if timestamps is not None and len(timestamps) != n:
        raise ValueError(f"got {len(timestamps)} timestamps for {n} values")
    return 0


# --- validation -------------------------------------------------------------------------------

# The smallest record: length, attributes, timestamp delta, offset delta, key length, value
# length and header count, one byte each.
cdef enum:
    MIN_RECORD_SIZE = 7


cdef enum RecErr:
    REC_OK = 0
    REC_TRUNCATED = 1
    REC_BAD_VARINT = 2
    REC_BAD_LENGTH = 3
    REC_OFFSET_DELTA = 4
    REC_TRAILING = 5
    REC_BAD_HEADER = 6
    REC_TIMESTAMP = 7

_REC_MESSAGES = {
    REC_TRUNCATED: "a record runs past the end of its batch",
    REC_BAD_VARINT: "a record has a malformed varint",
    REC_BAD_LENGTH: "a record's key, value or header length is invalid",
    REC_OFFSET_DELTA: "record offset deltas are not 0, 1, 2, ...",
    REC_TRAILING: "a record's fields do not fill its declared length, or bytes follow the last record",
    REC_BAD_HEADER: "a record header is malformed",
    REC_TIMESTAMP: "the batch's max timestamp does not match its records",
}


cdef int _walk_records(const unsigned char* p, const unsigned char* end, int32_t count,
                       int64_t base_ts, int64_t* max_ts, RecordRow* rows,
                       const unsigned char* origin, int64_t base_offset, Py_ssize_t* err_index) noexcept nogil:
    """Walk count records in [p, end); check every length; optionally fill rows. Returns a RecErr."""
    cdef int32_t i
    cdef int64_t length, attrs_ts, delta, klen, vlen, hcount, hk, hv, j
    cdef const unsigned char* rec_end
    cdef int64_t mx = -0x7FFFFFFFFFFFFFFF - 1
    for i in range(count):
        err_index[0] = i
        p = get_varint(p, end, &length, 5)
        if p == NULL:
            return REC_BAD_VARINT
        if length < 6 or length > end - p:
            return REC_TRUNCATED if length >= 6 else REC_BAD_LENGTH
        rec_end = p + length
        if rows != NULL:
            rows[i].size = <int32_t>length
        p += 1  # attributes (unused in v2)
        p = get_varint(p, rec_end, &attrs_ts, 10)
        if p == NULL:
            return REC_BAD_VARINT
        p = get_varint(p, rec_end, &delta, 5)
        if p == NULL:
            return REC_BAD_VARINT
        if delta != i:
            return REC_OFFSET_DELTA
        if base_ts + attrs_ts > mx:
            mx = base_ts + attrs_ts
        p = get_varint(p, rec_end, &klen, 5)
        if p == NULL:
            return REC_BAD_VARINT
        if klen < -1 or klen > rec_end - p:
            return REC_BAD_LENGTH
        if rows != NULL:
            rows[i].offset = base_offset + i
            rows[i].timestamp = base_ts + attrs_ts
            rows[i].key_pos = p - origin
            rows[i].key_len = <int32_t>klen
        if klen > 0:
            p += klen
        p = get_varint(p, rec_end, &vlen, 5)
        if p == NULL:
            return REC_BAD_VARINT
        if vlen < -1 or vlen > rec_end - p:
            return REC_BAD_LENGTH
        if rows != NULL:
            rows[i].value_pos = p - origin
            rows[i].value_len = <int32_t>vlen
        if vlen > 0:
            p += vlen
        p = get_varint(p, rec_end, &hcount, 5)
        if p == NULL:
            return REC_BAD_VARINT
        if hcount < 0 or hcount > rec_end - p:
            return REC_BAD_HEADER
        if rows != NULL:
            rows[i].headers_pos = p - origin
            rows[i].headers_count = <int32_t>hcount
        for j in range(hcount):
            p = get_varint(p, rec_end, &hk, 5)
            if p == NULL or hk < 0 or hk > rec_end - p:
                return REC_BAD_HEADER
            p += hk
            p = get_varint(p, rec_end, &hv, 5)
            if p == NULL or hv < -1 or hv > rec_end - p:
                return REC_BAD_HEADER
            if hv > 0:
                p += hv
        if p != rec_end:
            return REC_TRAILING
    if p != end:
        err_index[0] = count
        return REC_TRAILING
    max_ts[0] = mx
    return REC_OK


cdef str _codec_name(int codec):
    return _CODEC_NAMES.get(codec, f"codec {codec}")


def read_header(const unsigned char[::1] buf, Py_ssize_t pos=0):
    """The header fields of the batch at pos, as a tuple in format order (no checks beyond bounds)."""
    if pos < 0 or buf.shape[0] - pos < HEADER_SIZE:
        raise ValueError(f"need {HEADER_SIZE} bytes for a batch header at position {pos}")
    cdef const unsigned char* p = &buf[pos]
    return (<int64_t>tl_ld64(p + OFF_BASE_OFFSET), <int32_t>tl_ld32(p + OFF_BATCH_LENGTH),
            <int32_t>tl_ld32(p + OFF_LEADER_EPOCH), <int>p[OFF_MAGIC], <uint32_t>tl_ld32(p + OFF_CRC),
            <int16_t>tl_ld16(p + OFF_ATTRIBUTES), <int32_t>tl_ld32(p + OFF_LAST_OFFSET_DELTA),
            <int64_t>tl_ld64(p + OFF_BASE_TIMESTAMP), <int64_t>tl_ld64(p + OFF_MAX_TIMESTAMP),
            <int64_t>tl_ld64(p + OFF_PRODUCER_ID), <int16_t>tl_ld16(p + OFF_PRODUCER_EPOCH),
            <int32_t>tl_ld32(p + OFF_BASE_SEQUENCE), <int32_t>tl_ld32(p + OFF_RECORD_COUNT))


def validate_batches(const unsigned char[::1] buf, decompress=None, Py_ssize_t max_batch_bytes=0):
    """Check every batch in buf as the log would before appending it.

    Sizes, magic, CRC-32C, codec, record count, offset deltas and every record's lengths. Compressed
    batches are checked inside too when `decompress(codec, payload_view) -> bytes` is given.
    Returns a list of (pos, size, count, first_ts, max_ts, attributes, producer_id, producer_epoch,
    base_sequence), one per batch.
    """
    cdef Py_ssize_t n = buf.shape[0]
    cdef Py_ssize_t pos = 0, size, bi = 0, err_index = 0
    cdef const unsigned char* base
    cdef const unsigned char* p
    cdef int32_t length, count, lod
    cdef int16_t attrs
    cdef int codec, rc
    cdef uint32_t stored, actual
    cdef int64_t first_ts, max_ts, rec_max = 0
    cdef const unsigned char[::1] inner
    out = []
    if n == 0:
        raise ValueError("no batch: the data is empty")
    base = &buf[0]
    while pos < n:
        p = base + pos
        if n - pos < HEADER_SIZE:
            raise ValueError(f"batch {bi} at byte {pos}: {n - pos} bytes left, a batch header needs {HEADER_SIZE}")
        length = <int32_t>tl_ld32(p + OFF_BATCH_LENGTH)
        size = <Py_ssize_t>length + LOG_OVERHEAD
        if length < HEADER_SIZE - LOG_OVERHEAD:
            raise ValueError(f"batch {bi} at byte {pos}: batch length {length} is below the minimum {HEADER_SIZE - LOG_OVERHEAD}")
        if size > n - pos:
            raise ValueError(f"batch {bi} at byte {pos}: batch length says {size} bytes but only {n - pos} remain")
        if max_batch_bytes > 0 and size > max_batch_bytes:
            raise OverflowError(f"batch {bi} is {size} bytes, over the limit of {max_batch_bytes}")
        if p[OFF_MAGIC] != 2:
            raise ValueError(f"batch {bi} at byte {pos}: magic {p[OFF_MAGIC]} is not 2 (only RecordBatch v2 is supported)")
        stored = tl_ld32(p + OFF_CRC)
        if size >= 65536:
            with nogil:
                actual = tl_crc32c(0, p + CRC_START, size - CRC_START)
        else:
            actual = tl_crc32c(0, p + CRC_START, size - CRC_START)
        if stored != actual:
            raise ValueError(f"batch {bi} at byte {pos}: CRC-32C mismatch (stored {stored:#010x}, computed {actual:#010x})")
        attrs = <int16_t>tl_ld16(p + OFF_ATTRIBUTES)
        codec = attrs & ATTR_CODEC_MASK
        if attrs & (ATTR_CONTROL | ATTR_TRANSACTIONAL):
            raise ValueError(f"batch {bi}: transactional and control batches are not supported")
        if codec > CODEC_ZSTD:
            # gzip, snappy, lz4 and zstd sections are decompressed (and so checked) by the caller's decompress
            raise ValueError(f"batch {bi}: compression {_codec_name(codec)} is unknown (Kafka's codecs are 0-4)")
        count = <int32_t>tl_ld32(p + OFF_RECORD_COUNT)
        lod = <int32_t>tl_ld32(p + OFF_LAST_OFFSET_DELTA)
        if count < 1:
            raise ValueError(f"batch {bi}: record count {count} must be at least 1")
        if lod != count - 1:
            raise ValueError(f"batch {bi}: last offset delta {lod} does not match record count {count}")
        first_ts = <int64_t>tl_ld64(p + OFF_BASE_TIMESTAMP)
        max_ts = <int64_t>tl_ld64(p + OFF_MAX_TIMESTAMP)
        rc = REC_OK
        if codec == CODEC_NONE:
            with nogil:
                rc = _walk_records(p + HEADER_SIZE, p + size, count, first_ts, &rec_max, NULL, p, 0, &err_index)
        elif decompress is not None:
            inner = decompress(codec, buf[pos + HEADER_SIZE:pos + size])
            if inner.shape[0] == 0:
                err_index = 0
                rc = REC_TRUNCATED
            else:
                with nogil:
                    rc = _walk_records(&inner[0], &inner[0] + inner.shape[0], count, first_ts, &rec_max,
                                       NULL, &inner[0], 0, &err_index)
        else:
            rec_max = max_ts
        if rc == REC_OK and rec_max != max_ts and not (attrs & ATTR_TIMESTAMP_TYPE):
            # LogAppendTime batches carry the append time in max timestamp, whatever the records say
            rc = REC_TIMESTAMP
        if rc != REC_OK:
            raise ValueError(f"batch {bi} at byte {pos}, record {err_index}: {_REC_MESSAGES[rc]}")
        out.append((pos, size, count, first_ts, max_ts, attrs, <int64_t>tl_ld64(p + OFF_PRODUCER_ID),
                    <int16_t>tl_ld16(p + OFF_PRODUCER_EPOCH), <int32_t>tl_ld32(p + OFF_BASE_SEQUENCE)))
        pos += size
        bi += 1
    return out


def decode_table(const unsigned char[::1] buf, Py_ssize_t pos, Py_ssize_t end, int32_t count,
                 int64_t base_offset, int64_t base_ts, bint log_append_time=False, int64_t max_ts=0):
    """Locate every record of an uncompressed records section buf[pos:end] → RECORD_DTYPE array.

    Positions in the table are relative to buf, so key i is buf[key_pos : key_pos + key_len].
    log_append_time: a LogAppendTime batch, whose max_ts is every record's timestamp (as in Kafka).
    """
    if pos < 0 or end > buf.shape[0] or pos > end or count < 0:
        raise ValueError("record section bounds are outside the buffer")
    if count > (end - pos) // MIN_RECORD_SIZE:
        # Checked before allocating: a lying header must not make us allocate a row per claimed record.
        raise ValueError(f"record count {count} cannot fit in a {end - pos}-byte records section")
    table = np.empty(count, dtype=RECORD_DTYPE)
    if count == 0:
        return table
    cdef RecordRow[::1] rows = table
    cdef int64_t mx = 0
    cdef Py_ssize_t err_index = 0
    cdef int rc
    with nogil:
        rc = _walk_records(&buf[0] + pos, &buf[0] + end, count, base_ts, &mx, &rows[0], &buf[0],
                           base_offset, &err_index)
    if rc != REC_OK:
        raise ValueError(f"record {err_index}: {_REC_MESSAGES[rc]}")
    if log_append_time:
        table["timestamp"] = max_ts
    return table


cdef tuple _headers(const unsigned char* p, int32_t count):
    """Decode a headers section already bounds-checked by _walk_records."""
    cdef int64_t hk, hv
    cdef list out = []
    cdef int32_t j
    for j in range(count):
        p = get_varint(p, p + 5, &hk, 5)
        key = (<const char*>p)[:hk].decode("utf-8", "replace")
        p += hk
        p = get_varint(p, p + 5, &hv, 5)
        if hv < 0:
            out.append((key, None))
        else:
            out.append((key, PyBytes_FromStringAndSize(<const char*>p, hv)))
            p += hv
    return tuple(out)


def records(object source, const unsigned char[::1] buf, Py_ssize_t pos, Py_ssize_t end, int32_t count,
            int64_t base_offset, int64_t base_ts, int64_t min_offset=0, bint copy=True,
            int64_t max_offset=0x7FFFFFFFFFFFFFFF, bint log_append_time=False, int64_t max_ts=0):
    """Record objects for the records of buf[pos:end] with min_offset <= offset < max_offset.

    copy=True gives bytes keys and values; copy=False gives memoryview slices of `source` (which must
    expose the same bytes as buf), so nothing is copied.
    """
    table = decode_table(buf, pos, end, count, base_offset, base_ts, log_append_time, max_ts)
    cdef RecordRow[::1] rows = table
    cdef list out = []
    cdef Py_ssize_t i
    cdef Record r
    cdef const unsigned char* origin = &buf[0] if buf.shape[0] else NULL
    cdef object view = None if copy else memoryview(source)
    for i in range(count):
        if rows[i].offset < min_offset or rows[i].offset >= max_offset:
            continue
        r = Record.__new__(Record)
        r.offset = rows[i].offset
        r.timestamp = rows[i].timestamp
        if rows[i].key_len < 0:
            r.key = None
        elif copy:
            r.key = PyBytes_FromStringAndSize(<const char*>origin + rows[i].key_pos, rows[i].key_len)
        else:
            r.key = view[rows[i].key_pos:rows[i].key_pos + rows[i].key_len]
        if rows[i].value_len < 0:
            r.value = None
        elif copy:
            r.value = PyBytes_FromStringAndSize(<const char*>origin + rows[i].value_pos, rows[i].value_len)
        else:
            r.value = view[rows[i].value_pos:rows[i].value_pos + rows[i].value_len]
        if rows[i].headers_count == 0:
            r.headers = ()
        else:
            r.headers = _headers(origin + rows[i].headers_pos, rows[i].headers_count)
        # These records hold only bytes, memoryviews, None and tuples of (str, bytes): they cannot
        # form a cycle, so the cyclic GC need not track them (it halved read speed when it did).
        PyObject_GC_UnTrack(<void*>r)
        out.append(r)
    return out


def crc_of_batch(const unsigned char[::1] buf, Py_ssize_t pos, Py_ssize_t size):
    """(stored, computed) CRC-32C of the batch at pos; for tools that report rather than reject."""
    if pos < 0 or size < HEADER_SIZE or pos + size > buf.shape[0]:
        raise ValueError("batch bounds are outside the buffer")
    cdef const unsigned char* p = &buf[pos]
    cdef uint32_t actual
    with nogil:
        actual = tl_crc32c(0, p + CRC_START, size - CRC_START)
    return tl_ld32(p + OFF_CRC), actual
