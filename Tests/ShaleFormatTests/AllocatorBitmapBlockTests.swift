import Testing
@testable import ShaleFormat

private func decodeBitmap(_ bytes: [UInt8], seed: UInt32 = Fixture.seed, tier: Tier = .ssd,
                          firstBlock: UInt64 = AllocatorBitmapBlockTests.firstBlock) throws -> AllocatorBitmapBlock {
    try bytes.withUnsafeBytes { try AllocatorBitmapBlock.decode($0, seed: seed, expectedTier: tier, expectedFirstBlock: firstBlock) }
}

struct AllocatorBitmapBlockTests {
    static let firstBlock: UInt64 = 3 * 32256

    static func sample(blockCount: UInt32 = 32256, used: [Int] = [0, 1, 7, 8, 1000, 32255]) -> AllocatorBitmapBlock {
        var bitmap = AllocatorBitmapBlock(tier: .ssd, firstBlock: firstBlock, blockCount: blockCount)
        for index in used where index < Int(blockCount) { bitmap.setUsed(index, true) }
        return bitmap
    }

    @Test func coverage() {
        #expect(AllocatorBitmapBlock.blocksPerBitmapBlock == 32256)
        #expect(AllocatorBitmapBlock.encodedBytes == 4096)
    }

    @Test(arguments: [(UInt64(0), UInt64(0)), (1, 1), (32255, 1), (32256, 1), (32257, 2), (64512, 2), (64513, 3),
                      (1 << 32, 133_153)])
    func blocksNeededAtTheBoundaries(dataBlocks: UInt64, bitmapBlocks: UInt64) {
        #expect(AllocatorBitmapBlock.blocksNeeded(for: dataBlocks) == bitmapBlocks)
    }

    @Test func setAndClearBitsAndCount() {
        var bitmap = AllocatorBitmapBlock(tier: .hdd, firstBlock: 0, blockCount: 100)
        #expect(bitmap.usedCount == 0 && bitmap.freeCount == 100)
        bitmap.setUsed(0, true)
        bitmap.setUsed(99, true)
        bitmap.setUsed(42, true)
        bitmap.setUsed(42, true)
        #expect(bitmap.isUsed(0) && bitmap.isUsed(42) && bitmap.isUsed(99) && !bitmap.isUsed(41))
        #expect(bitmap.usedCount == 3 && bitmap.freeCount == 97)
        bitmap.setUsed(42, false)
        bitmap.setUsed(43, false)
        #expect(!bitmap.isUsed(42))
        #expect(bitmap.usedCount == 2 && bitmap.freeCount == 98)
    }

    @Test(arguments: [UInt32(1), 7, 8, 9, 1000, 32255, 32256])
    func roundTrip(blockCount: UInt32) throws {
        let bitmap = Self.sample(blockCount: blockCount)
        let bytes = bitmap.encode(seed: Fixture.seed)
        #expect(bytes.count == 4096)
        let decoded = try decodeBitmap(bytes)
        #expect(decoded == bitmap)
        #expect(decoded.freeCount == bitmap.freeCount)
    }

    /// Bit i of byte j is data block firstBlock + 8j + i.
    @Test func fieldOffsetsMatchTheSpec() {
        let bitmap = Self.sample()
        let bytes = bitmap.encode(seed: Fixture.seed)
        #expect(Array(bytes[0 ..< 4]) == Array("SBMP".utf8))
        var zeroed = bytes
        zeroed.setLE(UInt32(0), at: 4)
        #expect(bytes.le(UInt32.self, at: 4) == zeroed.withUnsafeBytes { CRC32C.update(Fixture.seed, $0) })
        #expect(bytes[8] == Tier.ssd.rawValue)
        #expect(bytes[9 ..< 12].allSatisfy { $0 == 0 })
        #expect(bytes.le(UInt32.self, at: 12) == 32256 - 6)
        #expect(bytes.le(UInt64.self, at: 16) == Self.firstBlock)
        #expect(bytes.le(UInt32.self, at: 24) == 32256)
        #expect(bytes[28 ..< 64].allSatisfy { $0 == 0 })
        #expect(bytes[64] == 0b1000_0011)  // blocks 0, 1, 7
        #expect(bytes[65] == 0b0000_0001)  // block 8
        #expect(bytes[64 + 125] == 0b0000_0001)  // block 1000
        #expect(bytes[4095] == 0b1000_0000)  // block 32255
    }

    @Test func everySingleByteFlipIsRefused() {
        let missed = offsetsWhereDamageIsMissed(in: Self.sample().encode(seed: Fixture.seed),
                                                expected: { $0 < 4 ? .badMagic : .checksumMismatch }) { _ = try decodeBitmap($0) }
        #expect(missed.isEmpty, "undetected or misreported flips at \(missed.prefix(8))")
    }

    @Test func aBitmapOfAnotherVolumeDoesNotVerify() {
        #expect(formatError { try decodeBitmap(Self.sample().encode(seed: Fixture.otherSeed)) }?.kind == .checksumMismatch)
    }

    @Test func bitmapOfAnotherTierOrRangeIsRefused() {
        let bytes = Self.sample().encode(seed: Fixture.seed)
        #expect(formatError { try decodeBitmap(bytes, tier: .hdd) }?.field == "identity")
        #expect(formatError { try decodeBitmap(bytes, firstBlock: Self.firstBlock + 32256) }?.field == "identity")
    }

    @Test func statedFreeCountThatDisagreesWithTheBitsIsRefused() {
        var bytes = Self.sample().encode(seed: Fixture.seed)
        bytes.setLE(UInt32(32256 - 5), at: 12)
        let error = formatError { try decodeBitmap(bytes.resealed(crcOffset: 4, seed: Fixture.seed)) }
        #expect(error?.field == "free count")
        #expect(error?.description.contains("states 32251, bits say 32250") == true)
    }

    @Test(arguments: [(UInt32(1000), 1000), (1000, 1007), (1000, 1008), (1000, 32255), (8, 8), (32255, 32255)])
    func bitsBeyondBlockCountAreRefused(blockCount: UInt32, strayBit: Int) {
        var bytes = Self.sample(blockCount: blockCount, used: [0]).encode(seed: Fixture.seed)
        bytes[64 + strayBit / 8] |= 1 << (strayBit % 8)
        bytes.setLE(blockCount - 1, at: 12)
        #expect(formatError { try decodeBitmap(bytes.resealed(crcOffset: 4, seed: Fixture.seed)) }?.field == "bits")
    }

    @Test(arguments: [UInt32(0), 32257, UInt32.max])
    func blockCountOutOfRangeIsRefused(blockCount: UInt32) {
        var bytes = Self.sample().encode(seed: Fixture.seed)
        bytes.setLE(blockCount, at: 24)
        #expect(formatError { try decodeBitmap(bytes.resealed(crcOffset: 4, seed: Fixture.seed)) }?.field == "block count")
    }

    @Test func truncatedBufferIsRefused() {
        #expect(formatError { try decodeBitmap(Array(Self.sample().encode(seed: Fixture.seed)[0 ..< 64])) }?.kind == .truncated)
    }
}
