import Testing
@testable import ShaleFormat

private func encodeExtent(_ extent: Extent) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: Extent.encodedBytes)
    bytes.withUnsafeMutableBytes { buffer in
        var writer = FieldWriter(buffer)
        extent.encode(into: &writer)
        #expect(writer.offset == Extent.encodedBytes)
    }
    return bytes
}

private func decodeExtent(_ bytes: [UInt8]) throws -> Extent {
    try bytes.withUnsafeBytes { buffer in
        var reader = FieldReader(buffer)
        return try Extent.decode(from: &reader, structure: "test")
    }
}

private func decodeNode(_ bytes: [UInt8], seed: UInt32 = Fixture.seed, inode: UInt64 = ExtentNodeTests.inode) throws -> ExtentNode {
    try bytes.withUnsafeBytes { try ExtentNode.decode($0, seed: seed, expectedInode: inode) }
}

struct ExtentTests {
    static let extent = Extent(logicalBlock: 0x000F_FFFF_FFFF_FFFF - 7, physicalBlock: 0x0000_0ABC_DEF0_1234,
                               blockCount: 7, tier: .hdd, flags: [.compressed, .checksummed],
                               checksum: 0xFEED_FACE, storedBytes: 12_345)

    @Test func roundTrip() throws {
        let bytes = encodeExtent(Self.extent)
        #expect(bytes.count == 32)
        #expect(try decodeExtent(bytes) == Self.extent)
        #expect(Self.extent.logicalEnd == 0x000F_FFFF_FFFF_FFFF)
    }

    @Test func fieldOffsetsMatchTheSpec() {
        let bytes = encodeExtent(Self.extent)
        #expect(bytes.le(UInt64.self, at: 0) == 0x000F_FFFF_FFFF_FFFF - 7)
        #expect(bytes.le(UInt64.self, at: 8) == 0x0000_0ABC_DEF0_1234)
        #expect(bytes.le(UInt32.self, at: 16) == 7)
        #expect(bytes[20] == Tier.hdd.rawValue)
        #expect(bytes[21] == Extent.Flags([.compressed, .checksummed]).rawValue)
        #expect(bytes.le(UInt16.self, at: 22) == 0)
        #expect(bytes.le(UInt32.self, at: 24) == 0xFEED_FACE)
        #expect(bytes.le(UInt32.self, at: 28) == 12_345)
    }

    @Test func flagBitsAreStable() {
        #expect(Extent.Flags.unwritten.rawValue == 1)
        #expect(Extent.Flags.compressed.rawValue == 2)
        #expect(Extent.Flags.checksummed.rawValue == 4)
    }

    /// One extent covers up to 2^32 - 1 blocks, anywhere in a 64-bit block space.
    @Test func largestExtentRoundTrips() throws {
        let extent = Extent(logicalBlock: UInt64.max - UInt64(UInt32.max), physicalBlock: 0, blockCount: UInt32.max, tier: .ssd)
        #expect(try decodeExtent(encodeExtent(extent)) == extent)
    }

    @Test func blockRangeThatWrapsPast2To64IsRefused() {
        var extent = Self.extent
        extent.logicalBlock = UInt64.max - 3
        #expect(formatError { try decodeExtent(encodeExtent(extent)) }?.field == "extent")
        extent = Self.extent
        extent.physicalBlock = UInt64.max
        #expect(formatError { try decodeExtent(encodeExtent(extent)) }?.field == "extent")
    }

    @Test func zeroBlocksUnknownTierAndUnknownFlagsAreRefused() {
        var bytes = encodeExtent(Self.extent)
        bytes.setLE(UInt32(0), at: 16)
        #expect(formatError { try decodeExtent(bytes) }?.field == "extent")
        bytes = encodeExtent(Self.extent)
        bytes[20] = 0
        #expect(formatError { try decodeExtent(bytes) }
            == .invalidField(structure: "test", field: "extent tier", reason: "unknown tier 0"))
        bytes = encodeExtent(Self.extent)
        bytes[21] = 0x08
        #expect(formatError { try decodeExtent(bytes) }?.field == "extent flags")
    }
}

struct ExtentNodeTests {
    static let inode: UInt64 = 123_456_789

    static func leaf(_ count: Int) -> ExtentNode {
        let extents = (0 ..< count).map { index in
            Extent(logicalBlock: UInt64(index) * 1000, physicalBlock: UInt64(index) * 7 + 3, blockCount: 999,
                   tier: Tier.allCases[index % 3], flags: index % 5 == 0 ? [.unwritten] : [])
        }
        return ExtentNode(inode: inode, entries: .leaf(extents))
    }

    static func inner(_ count: Int, level: UInt16 = 2) -> ExtentNode {
        let children = (0 ..< count).map { ExtentNode.Child(firstLogicalBlock: UInt64($0) << 20, block: UInt64($0) + 4242) }
        return ExtentNode(inode: inode, entries: .inner(level: level, children))
    }

    @Test func capacities() {
        #expect(ExtentNode.leafCapacity == 127)
        #expect(ExtentNode.innerCapacity == 254)
        #expect(ExtentNode.encodedBytes == 4096)
    }

    @Test(arguments: [0, 1, 127])
    func leafRoundTrip(count: Int) throws {
        let node = Self.leaf(count)
        let bytes = node.encode(seed: Fixture.seed)
        #expect(bytes.count == 4096)
        #expect(try decodeNode(bytes) == node)
    }

    @Test(arguments: [1, 254])
    func innerRoundTrip(count: Int) throws {
        let node = Self.inner(count, level: 3)
        #expect(try decodeNode(node.encode(seed: Fixture.seed)) == node)
    }

    @Test func fieldOffsetsMatchTheSpec() {
        let leaf = Self.leaf(2).encode(seed: Fixture.seed)
        #expect(Array(leaf[0 ..< 4]) == Array("SEXT".utf8))
        var zeroed = leaf
        zeroed.setLE(UInt32(0), at: 4)
        #expect(leaf.le(UInt32.self, at: 4) == zeroed.withUnsafeBytes { CRC32C.update(Fixture.seed, $0) })
        #expect(leaf.le(UInt64.self, at: 8) == Self.inode)
        #expect(leaf.le(UInt16.self, at: 16) == 0)
        #expect(leaf.le(UInt16.self, at: 18) == 2)
        #expect(leaf[20 ..< 32].allSatisfy { $0 == 0 })
        #expect(leaf.le(UInt64.self, at: 32 + 32) == 1000)  // second extent's logical block
        let inner = Self.inner(2, level: 5).encode(seed: Fixture.seed)
        #expect(inner.le(UInt16.self, at: 16) == 5)
        #expect(inner.le(UInt16.self, at: 18) == 2)
        #expect(inner.le(UInt64.self, at: 32 + 16) == 1 << 20)
        #expect(inner.le(UInt64.self, at: 32 + 24) == 4243)
    }

    @Test func everySingleByteFlipIsRefused() {
        let missed = offsetsWhereDamageIsMissed(in: Self.leaf(40).encode(seed: Fixture.seed),
                                                expected: { $0 < 4 ? .badMagic : .checksumMismatch }) { _ = try decodeNode($0) }
        #expect(missed.isEmpty, "undetected or misreported flips at \(missed.prefix(8))")
    }

    @Test func aNodeOfAnotherVolumeDoesNotVerify() {
        #expect(formatError { try decodeNode(Self.leaf(3).encode(seed: Fixture.otherSeed)) }?.kind == .checksumMismatch)
    }

    /// A node found under another inode's tree is misdirected.
    @Test func nodeOfAnotherInodeIsRefused() {
        #expect(formatError { try decodeNode(Self.leaf(3).encode(seed: Fixture.seed), inode: Self.inode + 1) }?.field == "inode")
    }

    @Test func truncatedBufferIsRefused() {
        #expect(formatError { try decodeNode(Array(Self.leaf(1).encode(seed: Fixture.seed)[0 ..< 4000])) }?.kind == .truncated)
    }

    @Test func overlappingOrUnsortedLeafExtentsAreRefused() {
        let overlapping = ExtentNode(inode: Self.inode, entries: .leaf([
            Extent(logicalBlock: 0, physicalBlock: 0, blockCount: 8, tier: .nvm),
            Extent(logicalBlock: 7, physicalBlock: 50, blockCount: 8, tier: .nvm),
        ]))
        #expect(formatError { try decodeNode(overlapping.encode(seed: Fixture.seed)) }?.field == "extents")
    }

    @Test func unsortedOrRepeatedChildrenAreRefused() {
        for keys: [UInt64] in [[0, 100, 100], [0, 200, 100]] {
            let node = ExtentNode(inode: Self.inode, entries: .inner(level: 1, keys.map { ExtentNode.Child(firstLogicalBlock: $0, block: 9) }))
            #expect(formatError { try decodeNode(node.encode(seed: Fixture.seed)) }?.field == "children")
        }
    }

    @Test func countBeyondCapacityIsRefused() {
        var leaf = Self.leaf(1).encode(seed: Fixture.seed)
        leaf.setLE(UInt16(128), at: 18)
        #expect(formatError { try decodeNode(leaf.resealed(crcOffset: 4, seed: Fixture.seed)) }?.field == "count")
        var inner = Self.inner(1).encode(seed: Fixture.seed)
        inner.setLE(UInt16(255), at: 18)
        #expect(formatError { try decodeNode(inner.resealed(crcOffset: 4, seed: Fixture.seed)) }?.field == "count")
    }

    @Test func anotherStructureIsBadMagic() {
        let directory = DirectoryBlock(directory: Self.inode, logicalBlock: 0,
                                       content: .indexRoot(globalDepth: 1, entryCount: 0, bucketCount: 2))
        #expect(formatError { try decodeNode(directory.encode(seed: Fixture.seed)) }?.kind == .badMagic)
    }
}
