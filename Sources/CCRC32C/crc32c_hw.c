// Hardware CRC32C with the SSE4.2 crc32 instruction (x86_64 only; elsewhere the entry
// points report "unavailable" and Swift's table-driven fallback is used).
//
// The crc32 instruction has a latency of 3 cycles and a throughput of 1 per cycle, so one
// dependent chain runs at a third of the possible speed. Buffers of 768 bytes and more are
// split into three interleaved lanes whose CRCs are combined with the "append n zero bytes"
// operator of CRC32C (the CRC register is linear: crc(A || B) = shift(crc(A), |B|) xor
// crc_from_zero(B)), precomputed as four 256-entry tables per lane length.
#include "crc32c_hw.h"
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>

#define POLY 0x82f63b78u   /* CRC32C, reflected */
#define SHORT_LANE 256u
#define LONG_LANE 8192u

static uint32_t shift_short[4][256];
static uint32_t shift_long[4][256];
static int tables_ready;

/* Multiplies the 32x32 GF(2) matrix `mat` by the vector `vec`. */
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    while (vec) {
        if (vec & 1) sum ^= *mat;
        vec >>= 1;
        mat++;
    }
    return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat) {
    for (int n = 0; n < 32; n++) square[n] = gf2_times(mat, mat[n]);
}

/* The operator that feeds `length` zero bytes through a raw CRC32C register. */
static void zeros_operator(uint32_t *even, size_t length) {
    uint32_t odd[32];
    /* Operator for one zero bit. */
    odd[0] = POLY;
    uint32_t row = 1;
    for (int n = 1; n < 32; n++) {
        odd[n] = row;
        row <<= 1;
    }
    gf2_square(even, odd);   /* two zero bits */
    gf2_square(odd, even);   /* four zero bits */
    /* Each pass squares: 8, 16, ... zero bits; apply per set bit of length (in bytes). */
    uint32_t result[32];
    int have_result = 0;
    do {
        gf2_square(even, odd);
        if (length & 1) {
            if (have_result) {
                uint32_t next[32];
                for (int n = 0; n < 32; n++) next[n] = gf2_times(even, result[n]);
                memcpy(result, next, sizeof result);
            } else {
                memcpy(result, even, sizeof result);
                have_result = 1;
            }
        }
        length >>= 1;
        if (length == 0) break;
        gf2_square(odd, even);
        if (length & 1) {
            if (have_result) {
                uint32_t next[32];
                for (int n = 0; n < 32; n++) next[n] = gf2_times(odd, result[n]);
                memcpy(result, next, sizeof result);
            } else {
                memcpy(result, odd, sizeof result);
                have_result = 1;
            }
        }
        length >>= 1;
    } while (length);
    memcpy(even, result, sizeof result);
}

static void shift_tables(uint32_t table[4][256], size_t length) {
    uint32_t op[32];
    zeros_operator(op, length);
    for (uint32_t n = 0; n < 256; n++) {
        table[0][n] = gf2_times(op, n);
        table[1][n] = gf2_times(op, n << 8);
        table[2][n] = gf2_times(op, n << 16);
        table[3][n] = gf2_times(op, n << 24);
    }
}

static inline uint32_t shift(uint32_t table[4][256], uint32_t crc) {
    return table[0][crc & 0xff] ^ table[1][(crc >> 8) & 0xff] ^ table[2][(crc >> 16) & 0xff] ^ table[3][crc >> 24];
}

int shale_crc32c_hw_available(void) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("sse4.2")) return 0;
    if (!__atomic_load_n(&tables_ready, __ATOMIC_ACQUIRE)) {
        /* Called once from Swift's lazy global initialiser, before any update. */
        shift_tables(shift_short, SHORT_LANE);
        shift_tables(shift_long, LONG_LANE);
        __atomic_store_n(&tables_ready, 1, __ATOMIC_RELEASE);
    }
    return 1;
}

__attribute__((target("sse4.2")))
static uint64_t lanes(uint64_t crc0, const unsigned char **cursor, size_t lane, uint32_t table[4][256]) {
    const unsigned char *p = *cursor;
    uint64_t crc1 = 0, crc2 = 0;
    const unsigned char *end = p + lane;
    while (p < end) {
        uint64_t a, b, c;
        memcpy(&a, p, 8);
        memcpy(&b, p + lane, 8);
        memcpy(&c, p + 2 * lane, 8);
        crc0 = _mm_crc32_u64(crc0, a);
        crc1 = _mm_crc32_u64(crc1, b);
        crc2 = _mm_crc32_u64(crc2, c);
        p += 8;
    }
    crc0 = shift(table, (uint32_t)crc0) ^ crc1;
    crc0 = shift(table, (uint32_t)crc0) ^ crc2;
    *cursor = p + 2 * lane;
    return crc0;
}

__attribute__((target("sse4.2")))
uint32_t shale_crc32c_hw_update(uint32_t crc, const void *bytes, size_t count) {
    const unsigned char *p = (const unsigned char *)bytes;
    uint64_t c = crc;
    while (count > 0 && ((uintptr_t)p & 7) != 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        count--;
    }
    while (count >= 3 * LONG_LANE) {
        c = lanes(c, &p, LONG_LANE, shift_long);
        count -= 3 * LONG_LANE;
    }
    while (count >= 3 * SHORT_LANE) {
        c = lanes(c, &p, SHORT_LANE, shift_short);
        count -= 3 * SHORT_LANE;
    }
    while (count >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = _mm_crc32_u64(c, word);
        p += 8;
        count -= 8;
    }
    while (count > 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        count--;
    }
    return (uint32_t)c;
}
#else
int shale_crc32c_hw_available(void) { return 0; }
uint32_t shale_crc32c_hw_update(uint32_t crc, const void *bytes, size_t count) {
    (void)bytes; (void)count;
    return crc;
}
#endif
