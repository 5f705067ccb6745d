/* CRC-32C (Castagnoli), the checksum of Kafka's RecordBatch v2.
 *
 * Uses the SSE4.2 crc32 instruction when the CPU has it (picked once, at first call) and a
 * slicing-by-8 table otherwise. Pure function over a buffer: no I/O, no Python, safe without the GIL.
 */
#ifndef TIDELOG_CRC32C_H
#define TIDELOG_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define TL_CRC32C_POLY 0x82F63B78u /* reflected Castagnoli polynomial */

static uint32_t tl_crc32c_table[8][256];
static int tl_crc32c_mode = -1; /* -1 unknown, 0 table, 1 hardware */

static void tl_crc32c_init_table(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ TL_CRC32C_POLY : c >> 1;
        tl_crc32c_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = tl_crc32c_table[0][n];
        for (int t = 1; t < 8; t++) {
            c = tl_crc32c_table[0][c & 0xff] ^ (c >> 8);
            tl_crc32c_table[t][n] = c;
        }
    }
}

static uint32_t tl_crc32c_sw(uint32_t crc, const unsigned char *p, size_t n) {
    crc = ~crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc; /* little-endian hosts only; the build targets them */
        crc = tl_crc32c_table[7][w & 0xff] ^ tl_crc32c_table[6][(w >> 8) & 0xff] ^
              tl_crc32c_table[5][(w >> 16) & 0xff] ^ tl_crc32c_table[4][(w >> 24) & 0xff] ^
              tl_crc32c_table[3][(w >> 32) & 0xff] ^ tl_crc32c_table[2][(w >> 40) & 0xff] ^
              tl_crc32c_table[1][(w >> 48) & 0xff] ^ tl_crc32c_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = tl_crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define TL_CRC32C_HAVE_HW 1

/* Three independent lanes hide the instruction's 3-cycle latency; lanes are joined by shifting the
 * earlier lanes' CRC over the later bytes with the table-free "multiply by x^n" trick done in
 * software on 64-bit words (the lane length is fixed, so the shift operators are precomputed). */
#define TL_LANE 4096

static uint32_t tl_shift_op[2][32]; /* GF(2) matrices' columns for shifting by TL_LANE and 2*TL_LANE bytes */

static uint32_t tl_gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    while (vec) {
        if (vec & 1) sum ^= *mat;
        vec >>= 1;
        mat++;
    }
    return sum;
}

static void tl_gf2_square(uint32_t *square, const uint32_t *mat) {
    for (int n = 0; n < 32; n++) square[n] = tl_gf2_times(mat, mat[n]);
}

/* Operator that appends `len` zero bytes to a (non-inverted) CRC register. */
static void tl_zeros_op(uint32_t *even, size_t len) {
    uint32_t odd[32];
    odd[0] = TL_CRC32C_POLY;
    uint32_t row = 1;
    for (int n = 1; n < 32; n++) {
        odd[n] = row;
        row <<= 1;
    }
    tl_gf2_square(even, odd); /* 2 zero bits */
    tl_gf2_square(odd, even); /* 4 zero bits */
    do {                      /* each square doubles: start at one zero byte */
        tl_gf2_square(even, odd);
        len >>= 1;
        if (len == 0) return;
        tl_gf2_square(odd, even);
        len >>= 1;
        if (len == 0) {
            memcpy(even, odd, sizeof(odd));
            return;
        }
    } while (1);
}

static void tl_crc32c_init_shift(void) {
    tl_zeros_op(tl_shift_op[0], TL_LANE);
    tl_zeros_op(tl_shift_op[1], 2 * TL_LANE);
}

__attribute__((target("sse4.2"))) static uint32_t tl_crc32c_hw(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c0 = (uint32_t)~crc;
    while (n >= 3 * TL_LANE) {
        uint64_t c1 = 0, c2 = 0;
        const unsigned char *end = p + TL_LANE;
        while (p < end) {
            uint64_t a, b, c;
            memcpy(&a, p, 8);
            memcpy(&b, p + TL_LANE, 8);
            memcpy(&c, p + 2 * TL_LANE, 8);
            c0 = _mm_crc32_u64(c0, a);
            c1 = _mm_crc32_u64(c1, b);
            c2 = _mm_crc32_u64(c2, c);
            p += 8;
        }
        c0 = tl_gf2_times(tl_shift_op[1], (uint32_t)c0) ^ tl_gf2_times(tl_shift_op[0], (uint32_t)c1) ^ c2;
        p += 2 * TL_LANE;
        n -= 3 * TL_LANE;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c0 = _mm_crc32_u64(c0, w);
        p += 8;
        n -= 8;
    }
    uint32_t c = (uint32_t)c0;
    while (n--) c = _mm_crc32_u8(c, *p++);
    return ~c;
}
#else
#define TL_CRC32C_HAVE_HW 0
#endif

static void tl_crc32c_setup(void) {
    tl_crc32c_init_table();
#if TL_CRC32C_HAVE_HW
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        tl_crc32c_init_shift();
        tl_crc32c_mode = 1;
        return;
    }
#endif
    tl_crc32c_mode = 0;
}

/* Call tl_crc32c_setup() once (module init) before using this from several threads. */
static inline uint32_t tl_crc32c(uint32_t crc, const unsigned char *p, size_t n) {
#if TL_CRC32C_HAVE_HW
    if (tl_crc32c_mode == 1) return tl_crc32c_hw(crc, p, n);
#endif
    return tl_crc32c_sw(crc, p, n);
}

static inline uint32_t tl_crc32c_sw_only(uint32_t crc, const unsigned char *p, size_t n) { return tl_crc32c_sw(crc, p, n); }

static inline int tl_crc32c_hardware(void) { return tl_crc32c_mode == 1; }

#endif
