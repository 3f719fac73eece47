import Testing
@testable import ShaleFormat

private func decodeBlock(_ bytes: [UInt8], inode: UInt64 = XattrBlockTests.inode, block: UInt64, index: Int,
                         seed: UInt32 = Fixture.seed) throws -> XattrBlock {
    try bytes.withUnsafeBytes { try XattrBlock.decode($0, seed: seed, expectedInode: inode, expectedBlock: block, expectedIndex: index) }
}

struct XattrBlockTests {
    static let inode: UInt64 = 987_654_321

    static func attributes(_ sizes: [Int], seed: UInt64 = 1) -> [ExtendedAttribute] {
        var generator = SplitMix(seed: seed)
        return sizes.enumerated().map { index, size in
            ExtendedAttribute(name: Array("user.attr\(String(repeating: "0", count: 3 - String(index).count))\(index)".utf8),
                              value: generator.bytes(size))
        }
    }

    /// Encodes `attributes` into blocks 100, 207, 301, … and decodes them back.
    static func blockNumbers(_ count: Int) -> [UInt64] { (0 ..< count).map { UInt64(100 + $0 * 107) } }

    static func roundTrip(_ attributes: [ExtendedAttribute]) throws -> [ExtendedAttribute] {
        let count = XattrBlock.blocksNeeded(setBytes: XattrSet.encodedBytes(attributes))
        let numbers = blockNumbers(count)
        let encoded = XattrSet.encode(attributes, inode: inode, blocks: numbers, seed: Fixture.seed)
        #expect(encoded.count == count && encoded.allSatisfy { $0.count == 4096 })
        let blocks = try encoded.indices.map { try decodeBlock(encoded[$0], block: numbers[$0], index: $0) }
        #expect(blocks[0].table == numbers)
        return try XattrSet.decode(blocks)
    }

    @Test func capacities() {
        #expect(XattrBlock.headDataCapacity == 3520)
        #expect(XattrBlock.dataCapacity == 4032)
        #expect(XattrBlock.setBytesMax == 257_536)
        #expect(XattrBlock.blocksNeeded(setBytes: 1) == 1)
        #expect(XattrBlock.blocksNeeded(setBytes: 3520) == 1)
        #expect(XattrBlock.blocksNeeded(setBytes: 3521) == 2)
        #expect(XattrBlock.blocksNeeded(setBytes: 3520 + 4032) == 2)
        #expect(XattrBlock.blocksNeeded(setBytes: XattrBlock.setBytesMax) == 64)
        #expect(ExtendedAttribute.nameBytesMax == SetxattrArguments.nameBytesMax)
        #expect(ExtendedAttribute.valueBytesMax == SetxattrArguments.valueBytesMax)
        // Three of the largest attributes fit one inode; a fourth does not.
        let largest = ExtendedAttribute(name: [UInt8](repeating: 0x61, count: 255), value: [UInt8](repeating: 1, count: 65536))
        #expect(3 * largest.encodedBytes <= XattrBlock.setBytesMax)
        #expect(4 * largest.encodedBytes > XattrBlock.setBytesMax)
    }

    @Test(arguments: [[0], [1, 2, 3], [3400], [3600], [65536], [65536, 0, 65536, 17], [60000, 65536, 65536]])
    func setsRoundTrip(sizes: [Int]) throws {
        let attributes = Self.attributes(sizes)
        #expect(try Self.roundTrip(attributes) == attributes)
    }

    @Test func fieldOffsetsMatchTheSpec() {
        let attributes = [ExtendedAttribute(name: Array("user.a".utf8), value: [9, 8, 7]),
                          ExtendedAttribute(name: Array("user.b".utf8), value: [UInt8](repeating: 5, count: 4000))]
        let numbers: [UInt64] = [42, 77]
        let blocks = XattrSet.encode(attributes, inode: Self.inode, blocks: numbers, seed: Fixture.seed)
        #expect(blocks.count == 2)
        let head = blocks[0]
        #expect(Array(head[0 ..< 4]) == Array("SXAT".utf8))
        var zeroed = head
        zeroed.setLE(UInt32(0), at: 4)
        #expect(head.le(UInt32.self, at: 4) == zeroed.withUnsafeBytes { CRC32C.update(Fixture.seed, $0) })
        #expect(head.le(UInt64.self, at: 8) == Self.inode)
        #expect(head.le(UInt64.self, at: 16) == 42)
        #expect(head.le(UInt16.self, at: 24) == 0)
        #expect(head.le(UInt16.self, at: 26) == 2)
        #expect(head.le(UInt32.self, at: 28) == 2)
        #expect(head.le(UInt32.self, at: 32) == UInt32(8 + 6 + 3 + 8 + 6 + 4000))
        #expect(head[36 ..< 64].allSatisfy { $0 == 0 })
        #expect(head.le(UInt64.self, at: 64) == 42)
        #expect(head.le(UInt64.self, at: 72) == 77)
        #expect(head[80 ..< 576].allSatisfy { $0 == 0 })
        // The first entry at 576: name length, reserved, value length, name, value.
        #expect(head.le(UInt16.self, at: 576) == 6)
        #expect(head.le(UInt16.self, at: 578) == 0)
        #expect(head.le(UInt32.self, at: 580) == 3)
        #expect(Array(head[584 ..< 590]) == Array("user.a".utf8))
        #expect(Array(head[590 ..< 593]) == [9, 8, 7])
        #expect(head.le(UInt16.self, at: 593) == 6)
        #expect(head.le(UInt32.self, at: 597) == 4000)
        let second = blocks[1]
        #expect(second.le(UInt64.self, at: 16) == 77)
        #expect(second.le(UInt16.self, at: 24) == 1)
        #expect(second[64] == 5, "the rest of the set continues at byte 64 of the next block")
        let tail = 4000 - (4096 - (593 + 8 + 6))
        #expect(second[64 ..< 64 + tail].allSatisfy { $0 == 5 })
        #expect(second[64 + tail ..< 4096].allSatisfy { $0 == 0 })
    }

    @Test func everySingleByteFlipIsRefused() {
        let attributes = Self.attributes([20, 300])
        let head = XattrSet.encode(attributes, inode: Self.inode, blocks: [5], seed: Fixture.seed)[0]
        let missed = offsetsWhereDamageIsMissed(in: head, expected: { $0 < 4 ? .badMagic : .checksumMismatch }) {
            _ = try XattrSet.decode([try decodeBlock($0, block: 5, index: 0)])
        }
        #expect(missed.isEmpty, "undetected or misreported flips at \(missed.prefix(8))")
    }

    @Test func blocksOfAnotherVolumeInodeOrPlaceAreRefused() {
        let head = XattrSet.encode(Self.attributes([10]), inode: Self.inode, blocks: [5], seed: Fixture.seed)[0]
        #expect(formatError { try decodeBlock(head, block: 5, index: 0, seed: Fixture.otherSeed) }?.kind == .checksumMismatch)
        #expect(formatError { try decodeBlock(head, inode: Self.inode + 1, block: 5, index: 0) }?.field == "identity")
        #expect(formatError { try decodeBlock(head, block: 6, index: 0) }?.field == "identity", "a misdirected block")
        #expect(formatError { try decodeBlock(head, block: 5, index: 1) }?.field == "identity")
        #expect(formatError { try decodeBlock(Array(head[0 ..< 4095]), block: 5, index: 0) }?.kind == .truncated)
    }

    /// Blocks that each verify but do not make up one set are refused by the set decoder.
    @Test func blocksOfDifferentSetsDoNotMix() throws {
        let one = XattrSet.encode(Self.attributes([5000], seed: 1), inode: Self.inode, blocks: [10, 11], seed: Fixture.seed)
        let two = XattrSet.encode(Self.attributes([5001], seed: 2), inode: Self.inode, blocks: [10, 11], seed: Fixture.seed)
        let mixed = [try decodeBlock(one[0], block: 10, index: 0), try decodeBlock(two[1], block: 11, index: 1)]
        #expect(formatError { try XattrSet.decode(mixed) }?.field == "block 1")
        #expect(formatError { try XattrSet.decode([mixed[0]]) }?.field == "blocks")
    }

    /// Edits that keep the checksum valid but break a rule.
    @Test func invalidFieldsAreRefused() {
        let head = XattrSet.encode([ExtendedAttribute(name: Array("user.x".utf8), value: [1, 2]),
                                    ExtendedAttribute(name: Array("user.y".utf8), value: [3])],
                                   inode: Self.inode, blocks: [5], seed: Fixture.seed)[0]
        func edited(_ edit: (inout [UInt8]) -> Void) -> [UInt8] {
            var bytes = head
            edit(&bytes)
            return bytes.resealed(crcOffset: 4, seed: Fixture.seed)
        }
        func field(_ bytes: [UInt8]) -> String? {
            formatError { try XattrSet.decode([try decodeBlock(bytes, block: 5, index: 0)]) }?.field
        }
        #expect(field(edited { $0.setLE(UInt16(0), at: 26) }) == "block count")
        #expect(field(edited { $0.setLE(UInt16(65), at: 26) }) == "block count")
        #expect(field(edited { $0.setLE(UInt16(2), at: 26) }) == "set bytes", "more blocks than the bytes need")
        #expect(field(edited { $0.setLE(UInt32(0), at: 28) }) == "entry count")
        #expect(field(edited { $0.setLE(UInt32(3), at: 28) }) == "entry count")
        #expect(field(edited { $0.setLE(UInt32(1), at: 40) }) == "reserved")
        #expect(field(edited { $0.setLE(UInt64(9), at: 72) }) == "block table")
        #expect(field(edited { $0.setLE(UInt64(6), at: 64) }) == "block table")
        #expect(field(edited { $0[3000] = 1 }) == "padding")
        // Entries: second name before the first; a NUL in a name; a value running past the set.
        #expect(field(edited { $0[576 + 8 + 5] = UInt8(ascii: "z") }) == "entry")
        #expect(field(edited { $0[576 + 8 + 1] = 0 }) == "entry")
        #expect(field(edited { $0.setLE(UInt32(200), at: 576 + 4) }) == "entry")
        #expect(field(edited { $0.setLE(UInt16(1), at: 576 + 2) }) == "entry")
        #expect(field(edited { $0.setLE(UInt32(70000), at: 576 + 4) }) == "entry")
    }

    @Test func anotherStructureIsBadMagic() {
        let node = ExtentNode(inode: Self.inode, entries: .leaf([]))
        #expect(formatError { try decodeBlock(node.encode(seed: Fixture.seed), block: 5, index: 0) }?.kind == .badMagic)
    }
}
