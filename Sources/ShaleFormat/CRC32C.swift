// CRC32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78): the checksum of every
// on-media structure that can be torn or corrupted. The SSE4.2 crc32 instruction is used
// when the CPU has it (CCRC32C), otherwise a slicing-by-8 table in Swift; both give the same
// answers (Tests/ShaleFormatTests/CRC32CTests.swift checks known answers on both paths).

import CCRC32C

public enum CRC32C {
    /// True when the hardware instruction is in use.
    public static let usesHardware: Bool = shale_crc32c_hw_available() != 0

    /// The CRC32C of `bytes`.
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        update(0, bytes)
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }

    /// Extends `crc` (a finished CRC32C of earlier bytes, 0 for none) over `bytes`, so that
    /// update(checksum(a), b) == checksum(a + b).
    @inlinable
    public static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        if usesHardware {
            return ~shale_crc32c_hw_update(~crc, base, bytes.count)
        }
        return ~softwareUpdate(~crc, bytes)
    }

    /// True when long buffers are folded with carry-less multiplication (AVX-512 VPCLMULQDQ).
    public static var foldsWithCarrylessMultiply: Bool { usesHardware && shale_crc32c_hw_folds() != 0 }

    /// The crc32-instruction path without folding, for tests on CPUs that fold.
    public static func laneChecksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard usesHardware, let base = bytes.baseAddress, bytes.count > 0 else { return checksum(bytes) }
        return ~shale_crc32c_hw_update_lanes(0xFFFF_FFFF, base, bytes.count)
    }

    /// The portable path, also exercised directly by tests on machines with SSE4.2.
    public static func softwareChecksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        ~softwareUpdate(0xFFFF_FFFF, bytes)
    }

    @usableFromInline
    static func softwareUpdate(_ register: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc = register
        var index = 0
        let count = bytes.count
        let tables = slicingTables
        while count - index >= 8 {
            let low = crc ^ (UInt32(bytes[index]) | UInt32(bytes[index + 1]) << 8
                | UInt32(bytes[index + 2]) << 16 | UInt32(bytes[index + 3]) << 24)
            crc = tables[7 * 256 + Int(low & 0xFF)] ^ tables[6 * 256 + Int((low >> 8) & 0xFF)]
                ^ tables[5 * 256 + Int((low >> 16) & 0xFF)] ^ tables[4 * 256 + Int(low >> 24)]
                ^ tables[3 * 256 + Int(bytes[index + 4])] ^ tables[2 * 256 + Int(bytes[index + 5])]
                ^ tables[1 * 256 + Int(bytes[index + 6])] ^ tables[Int(bytes[index + 7])]
            index += 8
        }
        while index < count {
            crc = tables[Int((crc ^ UInt32(bytes[index])) & 0xFF)] ^ (crc >> 8)
            index += 1
        }
        return crc
    }

    /// Eight 256-entry tables: table k advances a byte through k further zero bytes.
    static let slicingTables: [UInt32] = {
        var tables = [UInt32](repeating: 0, count: 8 * 256)
        for byte in 0 ..< 256 {
            var crc = UInt32(byte)
            for _ in 0 ..< 8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
            tables[byte] = crc
        }
        for byte in 0 ..< 256 {
            var crc = tables[byte]
            for slice in 1 ..< 8 {
                crc = tables[Int(crc & 0xFF)] ^ (crc >> 8)
                tables[slice * 256 + byte] = crc
            }
        }
        return tables
    }()
}
