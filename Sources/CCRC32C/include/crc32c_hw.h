// CCRC32C: the one C source target of Shale. It exists because the SSE4.2 `crc32`
// instruction (and AVX-512 carry-less multiplication, VPCLMULQDQ) is reachable only through
// GNU function attributes (target("sse4.2"), target("vpclmulqdq")) and
// __builtin_cpu_supports, none of which Swift can express. The portable software CRC32C
// lives in Swift (ShaleFormat/CRC32C.swift); this file only offers the hardware path.
#ifndef SHALE_CRC32C_HW_H
#define SHALE_CRC32C_HW_H

#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU executes the SSE4.2 crc32 instruction, else 0.
int shale_crc32c_hw_available(void);

/// Continues a CRC32C (Castagnoli) over `count` bytes. `crc` is the raw register value
/// (callers pre- and post-invert). Must only be called when shale_crc32c_hw_available().
uint32_t shale_crc32c_hw_update(uint32_t crc, const void *bytes, size_t count);

/// 1 when long buffers are folded with AVX-512 VPCLMULQDQ (after shale_crc32c_hw_available()).
int shale_crc32c_hw_folds(void);

/// shale_crc32c_hw_update without folding: the crc32-lane path, for tests on CPUs that fold.
uint32_t shale_crc32c_hw_update_lanes(uint32_t crc, const void *bytes, size_t count);

/// Copies a prefix of `source` (`count` bytes) to `destination` with non-temporal stores
/// while folding it into the CRC register `*crc` (raw register, as above): the bytes are
/// read once for both. Returns the bytes copied, a multiple of 256 (0 when the CPU does not
/// fold, `count` < 512 or `destination` is not 64-byte aligned); the caller copies the rest.
/// The stores are unordered until an sfence (the medium's fence).
size_t shale_crc32c_hw_copy_stream(uint32_t *crc, void *destination, const void *source, size_t count);

#endif
