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

#endif
