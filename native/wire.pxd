# Byte-level helpers shared by the native modules: big-endian integers and Kafka's zig-zag varints.
# Every reader takes an explicit end pointer and reports overrun instead of reading past it.
# cython: language_level=3

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "crc32c.h" nogil:
    void tl_crc32c_setup()
    uint32_t tl_crc32c(uint32_t crc, const unsigned char* p, size_t n)
    uint32_t tl_crc32c_sw_only(uint32_t crc, const unsigned char* p, size_t n)
    int tl_crc32c_hardware()

# RecordBatch v2 header layout (byte offsets).
cdef enum:
    OFF_BASE_OFFSET = 0
    OFF_BATCH_LENGTH = 8
    OFF_LEADER_EPOCH = 12
    OFF_MAGIC = 16
    OFF_CRC = 17
    OFF_ATTRIBUTES = 21
    OFF_LAST_OFFSET_DELTA = 23
    OFF_BASE_TIMESTAMP = 27
    OFF_MAX_TIMESTAMP = 35
    OFF_PRODUCER_ID = 43
    OFF_PRODUCER_EPOCH = 51
    OFF_BASE_SEQUENCE = 53
    OFF_RECORD_COUNT = 57
    HEADER_SIZE = 61
    LOG_OVERHEAD = 12          # base offset + batch length: the bytes not counted by batch length
    CRC_START = 21             # the CRC covers attributes .. end of batch

cdef extern from *:
    """
    #include <string.h>
    static inline uint64_t tl_ld64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return __builtin_bswap64(v); }
    static inline uint32_t tl_ld32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return __builtin_bswap32(v); }
    static inline uint16_t tl_ld16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return __builtin_bswap16(v); }
    static inline void tl_st64(unsigned char *p, uint64_t v) { v = __builtin_bswap64(v); memcpy(p, &v, 8); }
    static inline void tl_st32(unsigned char *p, uint32_t v) { v = __builtin_bswap32(v); memcpy(p, &v, 4); }
    static inline void tl_st16(unsigned char *p, uint16_t v) { v = __builtin_bswap16(v); memcpy(p, &v, 2); }
    """
    uint64_t tl_ld64(const unsigned char* p) nogil
    uint32_t tl_ld32(const unsigned char* p) nogil
    uint16_t tl_ld16(const unsigned char* p) nogil
    void tl_st64(unsigned char* p, uint64_t v) nogil
    void tl_st32(unsigned char* p, uint32_t v) nogil
    void tl_st16(unsigned char* p, uint16_t v) nogil


cdef inline int varint_size(int64_t v) noexcept nogil:
    """Bytes taken by v as a zig-zag varint."""
    cdef uint64_t z = <uint64_t>((v << 1) ^ (v >> 63))
    cdef int n = 1
    while z >= 0x80:
        z >>= 7
        n += 1
    return n


cdef inline unsigned char* put_varint(unsigned char* p, int64_t v) noexcept nogil:
    cdef uint64_t z = <uint64_t>((v << 1) ^ (v >> 63))
    while z >= 0x80:
        p[0] = <unsigned char>((z & 0x7F) | 0x80)
        p += 1
        z >>= 7
    p[0] = <unsigned char>z
    return p + 1


cdef inline const unsigned char* get_varint(const unsigned char* p, const unsigned char* end,
                                            int64_t* out, int max_bytes) noexcept nogil:
    """Decode a zig-zag varint of at most max_bytes (5 for varint, 10 for varlong); NULL if malformed."""
    cdef uint64_t z = 0
    cdef int shift = 0
    cdef int i = 0
    cdef uint64_t b
    while i < max_bytes:
        if p >= end:
            return NULL
        b = p[0]
        p += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            out[0] = <int64_t>(z >> 1) ^ -(<int64_t>(z & 1))
            return p
        shift += 7
        i += 1
    return NULL
