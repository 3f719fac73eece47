// Hardware CRC32C with the SSE4.2 crc32 instruction (x86_64 only; elsewhere the entry
// points report "unavailable" and Swift's table-driven fallback is used).
#include "crc32c_hw.h"
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>

int shale_crc32c_hw_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
}

__attribute__((target("sse4.2")))
uint32_t shale_crc32c_hw_update(uint32_t crc, const void *bytes, size_t count) {
    const unsigned char *p = (const unsigned char *)bytes;
    uint64_t c = crc;
    while (count > 0 && ((uintptr_t)p & 7) != 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        count--;
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
