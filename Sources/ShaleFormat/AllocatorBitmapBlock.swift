// Per-tier allocator state (docs/format.md "Allocator bitmaps"): for each tier, a run of
// 4096-byte bitmap blocks on NVM; block k covers data blocks [k × 32256, (k+1) × 32256) of
// the tier. A set bit is a block in use. Each bitmap block carries its tier, the first block
// it covers, how many bits are meaningful, its count of free blocks and a seeded CRC32C, so
// `shale status` reads free space without walking bits and fsck can check both.

public struct AllocatorBitmapBlock: Equatable, Sendable {
    public static let encodedBytes = Format.blockBytes
    public static let magic: UInt32 = 0x504D_4253  // "SBMP"
    static let headerBytes = 64
    /// Data blocks one bitmap block covers.
    public static let blocksPerBitmapBlock = (encodedBytes - headerBytes) * 8

    public var tier: Tier
    public var firstBlock: UInt64
    /// Meaningful bits (the last bitmap block of a tier covers fewer than the maximum).
    public var blockCount: UInt32
    /// blockCount / 8 rounded up bytes of bits; bit i of byte j is data block firstBlock + 8j + i.
    public var bits: [UInt8]

    public init(tier: Tier, firstBlock: UInt64, blockCount: UInt32) {
        precondition(blockCount > 0 && Int(blockCount) <= Self.blocksPerBitmapBlock)
        self.tier = tier
        self.firstBlock = firstBlock
        self.blockCount = blockCount
        bits = [UInt8](repeating: 0, count: Self.blocksPerBitmapBlock / 8)
    }

    /// Bitmap blocks needed to cover `dataBlocks` blocks.
    public static func blocksNeeded(for dataBlocks: UInt64) -> UInt64 {
        (dataBlocks + UInt64(blocksPerBitmapBlock) - 1) / UInt64(blocksPerBitmapBlock)
    }

    public func isUsed(_ index: Int) -> Bool {
        precondition(index >= 0 && index < Int(blockCount))
        return bits[index / 8] & (1 << (index % 8)) != 0
    }

    public mutating func setUsed(_ index: Int, _ used: Bool) {
        precondition(index >= 0 && index < Int(blockCount))
        if used { bits[index / 8] |= 1 << (index % 8) } else { bits[index / 8] &= ~(1 << (index % 8)) }
    }

    public var usedCount: Int {
        bits.reduce(0) { $0 + $1.nonzeroBitCount }
    }

    public var freeCount: Int { Int(blockCount) - usedCount }

    public func encode(seed: UInt32) -> [UInt8] {
        sealedBlock(bytes: Self.encodedBytes, magic: Self.magic, seed: seed) { writer in
            writer.put(tier.rawValue)
            writer.skip(3)
            writer.put(UInt32(freeCount))
            writer.put(firstBlock)
            writer.put(blockCount)
            writer.seek(Self.headerBytes)
            writer.put(bytes: bits)
        }
    }

    /// The free count a bitmap block states, verified against its bits.
    /// Bits the bitmap block at `firstBlock` of a tier with `dataBlocks` blocks covers.
    public static func blockCount(firstBlock: UInt64, tierDataBlocks dataBlocks: UInt64) -> UInt32 {
        firstBlock >= dataBlocks ? 0 : UInt32(min(UInt64(blocksPerBitmapBlock), dataBlocks - firstBlock))
    }

    /// `expectedBlockCount`, when given, is what the tier's geometry says the block covers
    /// (`blockCount(firstBlock:tierDataBlocks:)`): a block claiming more is refused.
    public static func decode(_ buffer: UnsafeRawBufferPointer, seed: UInt32, expectedTier: Tier,
                              expectedFirstBlock: UInt64, expectedBlockCount: UInt32? = nil) throws(FormatError) -> AllocatorBitmapBlock {
        let name = "\(expectedTier) allocator bitmap block at data block \(expectedFirstBlock)"
        var reader = try openSealedBlock(buffer, bytes: encodedBytes, magic: Self.magic, seed: seed, structure: name)
        let rawTier: UInt8 = reader.get()
        reader.skip(3)
        let statedFree: UInt32 = reader.get()
        let first: UInt64 = reader.get()
        let count: UInt32 = reader.get()
        guard rawTier == expectedTier.rawValue, first == expectedFirstBlock else {
            throw .invalidField(structure: name, field: "identity", reason: "holds tier \(rawTier) from block \(first)")
        }
        guard count > 0, Int(count) <= blocksPerBitmapBlock, expectedBlockCount == nil || count == expectedBlockCount else {
            throw .invalidField(structure: name, field: "block count",
                                reason: "\(count)" + (expectedBlockCount.map { ", the tier's geometry says \($0)" } ?? ""))
        }
        var bitmap = AllocatorBitmapBlock(tier: expectedTier, firstBlock: first, blockCount: count)
        reader.seek(headerBytes)
        bitmap.bits = reader.bytes(blocksPerBitmapBlock / 8)
        // Bits past blockCount must be clear, so counts computed from bits are exact.
        let lastByte = (Int(count) + 7) / 8
        if Int(count) % 8 != 0, bitmap.bits[lastByte - 1] >> (Int(count) % 8) != 0 {
            throw .invalidField(structure: name, field: "bits", reason: "bits set beyond block \(count)")
        }
        guard bitmap.bits[lastByte...].allSatisfy({ $0 == 0 }) else {
            throw .invalidField(structure: name, field: "bits", reason: "bits set beyond block \(count)")
        }
        guard Int(statedFree) == bitmap.freeCount else {
            throw .invalidField(structure: name, field: "free count",
                                reason: "states \(statedFree), bits say \(bitmap.freeCount)")
        }
        return bitmap
    }
}
