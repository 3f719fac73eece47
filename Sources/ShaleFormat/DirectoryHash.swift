// The name hash of directories (docs/format.md "Directories"): SipHash-2-4 (Aumasson and
// Bernstein, 2012) keyed with the volume's secret 128-bit directory hash key, the key's first
// half mixed with the directory's inode number. A keyed hash, because CRC32C is linear: two
// names of one length that collide collide under every seed, and anyone who may create files
// in a shared directory could push every name into one bucket. Without the key (it lives in
// the superblock, readable only by whoever may read the NVM region) collisions cannot be
// chosen.

public struct DirectoryHashKey: Equatable, Hashable, Sendable {
    public var k0: UInt64
    public var k1: UInt64

    public init(k0: UInt64, k1: UInt64) {
        self.k0 = k0
        self.k1 = k1
    }

    public static func random() -> DirectoryHashKey {
        var generator = SystemRandomNumberGenerator()
        return DirectoryHashKey(k0: generator.next(), k1: generator.next())
    }
}

public enum SipHash {
    /// SipHash-2-4 of `bytes` under the 128-bit key (k0, k1), as in the reference
    /// implementation (key bytes little-endian).
    public static func hash24(k0: UInt64, k1: UInt64, _ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var v0: UInt64 = 0x736F_6D65_7073_6575 ^ k0
        var v1: UInt64 = 0x646F_7261_6E64_6F6D ^ k1
        var v2: UInt64 = 0x6C79_6765_6E65_7261 ^ k0
        var v3: UInt64 = 0x7465_6462_7974_6573 ^ k1

        @inline(__always)
        func round() {
            v0 = v0 &+ v1; v1 = v1.rotatedLeft(13); v1 ^= v0; v0 = v0.rotatedLeft(32)
            v2 = v2 &+ v3; v3 = v3.rotatedLeft(16); v3 ^= v2
            v0 = v0 &+ v3; v3 = v3.rotatedLeft(21); v3 ^= v0
            v2 = v2 &+ v1; v1 = v1.rotatedLeft(17); v1 ^= v2; v2 = v2.rotatedLeft(32)
        }

        let count = bytes.count
        var index = 0
        while count - index >= 8 {
            let m = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self))
            v3 ^= m
            round(); round()
            v0 ^= m
            index += 8
        }
        var last = UInt64(truncatingIfNeeded: count) << 56
        for shift in 0 ..< count - index { last |= UInt64(bytes[index + shift]) << (8 * UInt64(shift)) }
        v3 ^= last
        round(); round()
        v0 ^= last
        v2 ^= 0xFF
        round(); round(); round(); round()
        return v0 ^ v1 ^ v2 ^ v3
    }
}

extension UInt64 {
    @inline(__always)
    func rotatedLeft(_ bits: UInt64) -> UInt64 { (self << bits) | (self >> (64 - bits)) }
}
