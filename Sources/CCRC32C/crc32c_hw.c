// Hardware CRC32C with the SSE4.2 crc32 instruction (x86_64 only; elsewhere the entry
// points report "unavailable" and Swift's table-driven fallback is used).
//
// On CPUs with AVX-512 and VPCLMULQDQ, buffers of 512 bytes and more are first folded with
// carry-less multiplication (below), about five times faster than three crc32 lanes: a 4 KiB
// log record's checksum is on the path of every durable write.
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
#include <immintrin.h>

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


/* Folding (reflected CRC32C). A 128-bit little-endian register holds the polynomial whose
 * bit k is the coefficient of x^(127-k), as the crc32 instruction reads 16 bytes; its low
 * qword H is the high-degree half. Moving the register d bits forward (acc * x^d) is
 * clmul(H, K1) ^ clmul(L, K2) with K1 = x^(d+63) mod P and K2 = x^(d-1) mod P (a carry-less
 * product of reflected operands reads as the product times x), each shifted into the high
 * half of its qword. Folding keeps the register congruent to the data mod P, so the CRC of
 * the data is the CRC of the final 16 bytes (from a zero register), and an initial register
 * value is XORed into the data's first four bytes. */
static uint32_t xpow_mod(uint64_t n) {
    uint32_t v = 0x80000000u; /* x^0, reflected */
    while (n--) v = (v & 1) ? (v >> 1) ^ POLY : v >> 1;
    return v;
}

static uint64_t fold_constants[5][2]; /* distances 2048, 512, 384, 256, 128 bits */
static int fold_ready;

static void fold_init(void) {
    static const uint64_t distances[5] = {2048, 512, 384, 256, 128};
    for (int n = 0; n < 5; n++) {
        fold_constants[n][0] = (uint64_t)xpow_mod(distances[n] + 63) << 32;
        fold_constants[n][1] = (uint64_t)xpow_mod(distances[n] - 1) << 32;
    }
}

#define FOLD_TARGET __attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2")))

FOLD_TARGET static inline __m128i fold_pair(int n) {
    return _mm_set_epi64x((long long)fold_constants[n][1], (long long)fold_constants[n][0]);
}

FOLD_TARGET static inline __m512i fold512(__m512i x, __m512i k) {
    return _mm512_xor_si512(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11));
}

FOLD_TARGET static inline __m128i fold128(__m128i x, __m128i k) {
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

/* The CRC register after `blocks` (>= 1) 256-byte blocks at p, from register `crc`. With
 * `copy`, each 64-byte vector is also stored to d with a non-temporal store as it is loaded
 * (d 64-byte aligned): the bytes are read once for both. */
FOLD_TARGET static inline __attribute__((always_inline))
uint32_t fold_core(uint32_t crc, unsigned char *d, const unsigned char *p, size_t blocks, int copy) {
    __m512i x0 = _mm512_loadu_si512(p), x1 = _mm512_loadu_si512(p + 64);
    __m512i x2 = _mm512_loadu_si512(p + 128), x3 = _mm512_loadu_si512(p + 192);
    if (copy) {
        _mm512_stream_si512((void *)d, x0);
        _mm512_stream_si512((void *)(d + 64), x1);
        _mm512_stream_si512((void *)(d + 128), x2);
        _mm512_stream_si512((void *)(d + 192), x3);
        d += 256;
    }
    x0 = _mm512_xor_si512(x0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)crc)));
    p += 256;
    __m512i k = _mm512_broadcast_i32x4(fold_pair(0));
    for (size_t b = 1; b < blocks; b++) {
        __m512i y0 = _mm512_loadu_si512(p), y1 = _mm512_loadu_si512(p + 64);
        __m512i y2 = _mm512_loadu_si512(p + 128), y3 = _mm512_loadu_si512(p + 192);
        if (copy) {
            _mm512_stream_si512((void *)d, y0);
            _mm512_stream_si512((void *)(d + 64), y1);
            _mm512_stream_si512((void *)(d + 128), y2);
            _mm512_stream_si512((void *)(d + 192), y3);
            d += 256;
        }
        x0 = _mm512_xor_si512(fold512(x0, k), y0);
        x1 = _mm512_xor_si512(fold512(x1, k), y1);
        x2 = _mm512_xor_si512(fold512(x2, k), y2);
        x3 = _mm512_xor_si512(fold512(x3, k), y3);
        p += 256;
    }
    k = _mm512_broadcast_i32x4(fold_pair(1));
    __m512i x = _mm512_xor_si512(fold512(x0, k), x1);
    x = _mm512_xor_si512(fold512(x, k), x2);
    x = _mm512_xor_si512(fold512(x, k), x3);
    __m128i a = fold128(_mm512_extracti32x4_epi32(x, 0), fold_pair(2));
    a = _mm_xor_si128(a, fold128(_mm512_extracti32x4_epi32(x, 1), fold_pair(3)));
    a = _mm_xor_si128(a, fold128(_mm512_extracti32x4_epi32(x, 2), fold_pair(4)));
    a = _mm_xor_si128(a, _mm512_extracti32x4_epi32(x, 3));
    uint64_t c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(a));
    return (uint32_t)_mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(a, 1));
}

FOLD_TARGET static uint32_t fold_blocks(uint32_t crc, const unsigned char *p, size_t blocks) {
    return fold_core(crc, NULL, p, blocks, 0);
}

FOLD_TARGET static uint32_t fold_blocks_copy(uint32_t crc, unsigned char *d, const unsigned char *p, size_t blocks) {
    return fold_core(crc, d, p, blocks, 1);
}

int shale_crc32c_hw_available(void) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("sse4.2")) return 0;
    if (!__atomic_load_n(&tables_ready, __ATOMIC_ACQUIRE)) {
        /* Called once from Swift's lazy global initialiser, before any update. */
        shift_tables(shift_short, SHORT_LANE);
        shift_tables(shift_long, LONG_LANE);
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("pclmul")) {
            fold_init();
            fold_ready = 1;
        }
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

int shale_crc32c_hw_folds(void) { return fold_ready; }

__attribute__((target("sse4.2")))
static uint32_t update(uint32_t crc, const void *bytes, size_t count, int may_fold) {
    const unsigned char *p = (const unsigned char *)bytes;
    uint64_t c = crc;
    if (may_fold && fold_ready && count >= 512) {
        size_t blocks = count / 256;
        c = fold_blocks((uint32_t)c, p, blocks);
        p += blocks * 256;
        count -= blocks * 256;
    }
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

uint32_t shale_crc32c_hw_update(uint32_t crc, const void *bytes, size_t count) {
    return update(crc, bytes, count, 1);
}

uint32_t shale_crc32c_hw_update_lanes(uint32_t crc, const void *bytes, size_t count) {
    return update(crc, bytes, count, 0);
}

size_t shale_crc32c_hw_copy_stream(uint32_t *crc, void *destination, const void *source, size_t count) {
    if (!fold_ready || count < 512 || ((uintptr_t)destination & 63) != 0) return 0;
    size_t blocks = count / 256;
    *crc = fold_blocks_copy(*crc, (unsigned char *)destination, (const unsigned char *)source, blocks);
    return blocks * 256;
}
#else
size_t shale_crc32c_hw_copy_stream(uint32_t *crc, void *destination, const void *source, size_t count) {
    (void)crc; (void)destination; (void)source; (void)count;
    return 0;
}
int shale_crc32c_hw_folds(void) { return 0; }
uint32_t shale_crc32c_hw_update_lanes(uint32_t crc, const void *bytes, size_t count) {
    (void)bytes; (void)count;
    return crc;
}
int shale_crc32c_hw_available(void) { return 0; }
uint32_t shale_crc32c_hw_update(uint32_t crc, const void *bytes, size_t count) {
    (void)bytes; (void)count;
    return crc;
}
#endif
