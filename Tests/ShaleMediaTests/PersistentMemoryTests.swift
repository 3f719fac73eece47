import Testing
import Glibc
@testable import ShaleMedia

struct MappedPersistentMemoryTests {
    @Test func storeFlushFenceRoundTripOnDevShm() throws {
        let path = "/dev/shm/shale-test-\(getpid())-\(UInt32.random(in: 0 ... .max)).nvm"
        defer { unlink(path) }
        do {
            let region = try MappedPersistentMemory.create(path: path, byteCount: 1 << 20)
            #expect(region.byteCount == 1 << 20)
            #expect(region.persistence == .emulatedOnDRAM)
            region.storePersist(Array("durable".utf8), at: 4096)
            region.storeWord(0x1122_3344_5566_7788, at: 8192)
            region.persist(offset: 8192, count: 8)
        }
        let reopened = try MappedPersistentMemory.open(path: path)
        #expect(reopened.load(at: 4096, count: 7) == Array("durable".utf8))
        #expect(reopened.loadWord(at: 8192) == 0x1122_3344_5566_7788)
    }

    /// A bitwise CRC32C (finished-value convention), the reference the combined path must match.
    private static func referenceCRC32C(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var register = ~crc
        for byte in bytes {
            register ^= UInt32(byte)
            for _ in 0 ..< 8 { register = register & 1 != 0 ? (register >> 1) ^ 0x82F6_3B78 : register >> 1 }
        }
        return ~register
    }

    /// The copy that checksums as it stores (non-temporal stores folded into CRC32C on CPUs
    /// that can) leaves the same bytes and the same checksum as storeFlush and a separate
    /// checksum, for every length around the 256-byte steps, aligned and unaligned targets,
    /// and a nonzero starting CRC.
    @Test func storeFlushContinuingCRC32CMatchesSeparateStoreAndChecksum() throws {
        let path = "/dev/shm/shale-test-\(getpid())-\(UInt32.random(in: 0 ... .max)).nvm"
        defer { unlink(path) }
        let region = try MappedPersistentMemory.create(path: path, byteCount: 1 << 20)
        var generator = SystemRandomNumberGenerator()
        let source = (0 ..< 70_000).map { _ in UInt8.random(in: 0 ... 255, using: &generator) }
        var target = 0
        for count in [0, 1, 255, 256, 511, 512, 513, 767, 768, 4096, 4096 + 40, 8192 - 1, 65_536 + 300] {
            for misalignment in [0, 8, 1] {
                for seed: UInt32 in [0, 0xDEAD_BEEF] {
                    let offset = target + misalignment
                    let crc = source.withUnsafeBytes { bytes in
                        region.storeFlush(UnsafeRawBufferPointer(rebasing: bytes[100 ..< 100 + count]), at: offset,
                                          continuingCRC32C: seed, update: Self.referenceCRC32C)
                    }
                    region.fence()
                    let expected = source.withUnsafeBytes { Self.referenceCRC32C(seed, UnsafeRawBufferPointer(rebasing: $0[100 ..< 100 + count])) }
                    #expect(crc == expected, "count \(count), misalignment \(misalignment)")
                    let stored = region.load(at: offset, count: count) == Array(source[100 ..< 100 + count])
                    #expect(stored, "the stored bytes differ: count \(count), misalignment \(misalignment)")
                    target = (offset + count + 4095) / 4096 * 4096
                    if target + 70_000 > region.byteCount { target = 0 }
                }
            }
        }
    }
}
