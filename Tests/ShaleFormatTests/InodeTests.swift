import Testing
@testable import ShaleFormat

private func decodeInode(_ bytes: [UInt8], seed: UInt32 = Fixture.seed, number: UInt64 = InodeTests.number) throws -> Inode? {
    try bytes.withUnsafeBytes { try Inode.decode($0, seed: seed, expectedNumber: number) }
}

struct InodeTests {
    static let number: UInt64 = 0xFFFF_FFFE

    static let file: Inode = {
        var inode = Inode(number: number, generation: 0xA1B2_C3D4, mode: Inode.typeRegular | 0o640, uid: 1000, gid: 100,
                          linkCount: 3, size: 0x0000_0123_4567_89AB, allocatedBlocks: 70_000,
                          time: Timestamp(seconds: 1_764_072_961, nanoseconds: 999_999_999), rdev: 0x0801,
                          parentHint: 17, xattrBlock: 0x0BAD_F00D, tierPolicy: Tier.ssd.rawValue,
                          mapping: .extents([
                              Extent(logicalBlock: 0, physicalBlock: 9_000, blockCount: 16, tier: .nvm),
                              Extent(logicalBlock: 16, physicalBlock: 1 << 40, blockCount: UInt32.max, tier: .ssd,
                                     flags: [.checksummed], checksum: 0x1234_5678),
                              Extent(logicalBlock: 1 << 40, physicalBlock: 5, blockCount: 1, tier: .hdd,
                                     flags: [.compressed, .checksummed], checksum: 0x9ABC_DEF0, storedBytes: 1777),
                          ]))
        inode.atime = Timestamp(seconds: -1, nanoseconds: 1)  // before 1970
        inode.mtime = Timestamp(seconds: 1_764_072_000, nanoseconds: 500_000_000)
        inode.ctime = Timestamp(seconds: Int64.max, nanoseconds: 0)
        return inode
    }()

    @Test func roundTripWithInlineExtents() throws {
        let bytes = Self.file.encode(seed: Fixture.seed)
        #expect(bytes.count == Inode.encodedBytes)
        #expect(Inode.encodedBytes == 256)
        #expect(try decodeInode(bytes) == Self.file)
    }

    @Test(arguments: 0 ... 3)
    func upToThreeExtentsLiveInTheInode(count: Int) throws {
        var inode = Self.file
        guard case let .extents(extents) = Self.file.mapping else { return }
        inode.mapping = .extents(Array(extents.prefix(count)))
        #expect(try decodeInode(inode.encode(seed: Fixture.seed)) == inode)
        #expect(Inode.inlineExtentCapacity == 3)
    }

    @Test func extentTreeRootRoundTrips() throws {
        var inode = Self.file
        inode.mapping = .tree(rootBlock: 0x0000_7777_0000_0001, depth: 3, extentCount: 1_000_000)
        let bytes = inode.encode(seed: Fixture.seed)
        #expect(try decodeInode(bytes) == inode)
        #expect(bytes.le(UInt32.self, at: 20) == Inode.Flags.extentTree.rawValue)
        #expect(bytes.le(UInt64.self, at: 144) == 0x0000_7777_0000_0001)
        #expect(bytes.le(UInt64.self, at: 152) == 1_000_000)
        #expect(bytes.le(UInt16.self, at: 160) == 3)
    }

    @Test(arguments: [0, 1, 60, 96])
    func inlineDataUpTo96Bytes(count: Int) throws {
        var generator = SplitMix(seed: UInt64(count))
        var inode = Self.file
        inode.mode = Inode.typeSymlink | 0o777
        let target = generator.bytes(count)
        inode.mapping = .inline(target)
        let bytes = inode.encode(seed: Fixture.seed)
        #expect(try decodeInode(bytes) == inode)
        #expect(bytes.le(UInt32.self, at: 20) == Inode.Flags.inlineData.rawValue)
        #expect(bytes.le(UInt32.self, at: 36) == UInt32(count))
        #expect(Array(bytes[144 ..< 144 + count]) == target)
        #expect(Inode.inlineDataCapacity == 96)
    }

    @Test func fieldOffsetsMatchTheSpec() {
        let bytes = Self.file.encode(seed: Fixture.seed)
        var zeroed = bytes
        zeroed.setLE(UInt32(0), at: 0)
        #expect(bytes.le(UInt32.self, at: 0) == zeroed.withUnsafeBytes { CRC32C.update(Fixture.seed, $0) })
        #expect(bytes.le(UInt32.self, at: 4) == Inode.typeRegular | 0o640)
        #expect(bytes.le(UInt64.self, at: 8) == Self.number)
        #expect(bytes.le(UInt32.self, at: 16) == 0xA1B2_C3D4)
        #expect(bytes.le(UInt32.self, at: 20) == 0)
        #expect(bytes.le(UInt32.self, at: 24) == 1000)
        #expect(bytes.le(UInt32.self, at: 28) == 100)
        #expect(bytes.le(UInt32.self, at: 32) == 3)
        #expect(bytes.le(UInt32.self, at: 36) == 3)
        #expect(bytes.le(UInt64.self, at: 40) == 0x0000_0123_4567_89AB)
        #expect(bytes.le(UInt64.self, at: 48) == 70_000)
        #expect(bytes.le(UInt64.self, at: 56) == UInt64.max)  // atime -1 s
        #expect(bytes.le(UInt32.self, at: 64) == 1)
        #expect(bytes.le(UInt64.self, at: 72) == 1_764_072_000)
        #expect(bytes.le(UInt32.self, at: 80) == 500_000_000)
        #expect(bytes.le(UInt64.self, at: 88) == UInt64(Int64.max))
        #expect(bytes.le(UInt64.self, at: 104) == 1_764_072_961)
        #expect(bytes.le(UInt32.self, at: 112) == 999_999_999)
        #expect(bytes.le(UInt64.self, at: 120) == 0x0801)
        #expect(bytes.le(UInt64.self, at: 128) == 17)
        #expect(bytes.le(UInt64.self, at: 136) == 0x0BAD_F00D)
        #expect(bytes.le(UInt64.self, at: 144) == 0)  // first extent's logical block
        #expect(bytes.le(UInt64.self, at: 152) == 9_000)
        #expect(bytes.le(UInt64.self, at: 176) == 16)  // second extent
        #expect(bytes[240] == Tier.ssd.rawValue)
        #expect(bytes[241...].allSatisfy { $0 == 0 })
    }

    @Test func freeSlotIsAllZerosAndDecodesAsNil() throws {
        #expect(try decodeInode([UInt8](repeating: 0, count: 256)) == nil)
    }

    @Test func everySingleByteFlipIsAChecksumMismatch() {
        let missed = offsetsWhereDamageIsMissed(in: Self.file.encode(seed: Fixture.seed),
                                                expected: { _ in .checksumMismatch }) { _ = try decodeInode($0) }
        #expect(missed.isEmpty, "undetected flips at \(missed.prefix(8))")
    }

    @Test func anInodeOfAnotherVolumeDoesNotVerify() {
        #expect(formatError { try decodeInode(Self.file.encode(seed: Fixture.otherSeed)) }?.kind == .checksumMismatch)
    }

    /// A slot holding another inode (a misdirected write) is refused.
    @Test func wrongInodeNumberIsRefused() {
        let error = formatError { try decodeInode(Self.file.encode(seed: Fixture.seed), number: Self.number + 1) }
        #expect(error?.field == "number")
    }

    @Test func truncatedBufferIsRefused() {
        #expect(formatError { try decodeInode(Array(Self.file.encode(seed: Fixture.seed)[0 ..< 255])) }?.kind == .truncated)
    }

    @Test func overlappingExtentsAreRefused() {
        var inode = Self.file
        inode.mapping = .extents([Extent(logicalBlock: 0, physicalBlock: 1, blockCount: 10, tier: .nvm),
                                  Extent(logicalBlock: 9, physicalBlock: 100, blockCount: 10, tier: .nvm)])
        #expect(formatError { try decodeInode(inode.encode(seed: Fixture.seed)) }?.field == "extents")
        inode.mapping = .extents([Extent(logicalBlock: 20, physicalBlock: 1, blockCount: 10, tier: .nvm),
                                  Extent(logicalBlock: 0, physicalBlock: 100, blockCount: 10, tier: .nvm)])
        #expect(formatError { try decodeInode(inode.encode(seed: Fixture.seed)) }?.field == "extents")
    }

    @Test func adjacentExtentsAreFine() throws {
        var inode = Self.file
        inode.mapping = .extents([Extent(logicalBlock: 0, physicalBlock: 1, blockCount: 10, tier: .nvm),
                                  Extent(logicalBlock: 10, physicalBlock: 100, blockCount: 10, tier: .nvm)])
        #expect(try decodeInode(inode.encode(seed: Fixture.seed)) == inode)
    }

    @Test(arguments: 0 ..< 4)
    func nanosecondsOfASecondOrMoreAreRefused(which: Int) {
        var inode = Self.file
        let bad = Timestamp(seconds: 5, nanoseconds: 1_000_000_000)
        switch which {
        case 0: inode.atime = bad
        case 1: inode.mtime = bad
        case 2: inode.ctime = bad
        default: inode.btime = bad
        }
        #expect(formatError { try decodeInode(inode.encode(seed: Fixture.seed)) }?.field == "timestamp")
    }

    @Test func usedSlotWithModeZeroIsRefused() {
        var inode = Self.file
        inode.mode = 0
        #expect(formatError { try decodeInode(inode.encode(seed: Fixture.seed)) }?.field == "mode")
    }

    @Test(arguments: [UInt32(1 << 2), 0x8000_0000, 3])
    func unknownOrContradictoryFlagsAreRefused(flags: UInt32) {
        var bytes = Self.file.encode(seed: Fixture.seed)
        bytes.setLE(flags, at: 20)
        #expect(formatError { try decodeInode(bytes.resealed(crcOffset: 0, seed: Fixture.seed)) }?.field == "flags")
    }

    @Test func moreThanThreeInlineExtentsIsRefused() {
        var bytes = Self.file.encode(seed: Fixture.seed)
        bytes.setLE(UInt32(4), at: 36)
        #expect(formatError { try decodeInode(bytes.resealed(crcOffset: 0, seed: Fixture.seed)) }?.field == "extent count")
    }

    @Test func moreThan96InlineBytesIsRefused() {
        var inode = Self.file
        inode.mapping = .inline([1, 2, 3])
        var bytes = inode.encode(seed: Fixture.seed)
        bytes.setLE(UInt32(97), at: 36)
        #expect(formatError { try decodeInode(bytes.resealed(crcOffset: 0, seed: Fixture.seed)) }?.field == "inline data")
    }

    @Test func badExtentInsideTheInodeIsRefused() {
        let cases: [(offset: Int, value: UInt8, field: String)] = [
            (144 + 20, 0, "extent tier"),  // tier 0
            (144 + 20, 9, "extent tier"),
            (144 + 21, 0x80, "extent flags"),
        ]
        for (offset, value, field) in cases {
            var bytes = Self.file.encode(seed: Fixture.seed)
            bytes[offset] = value
            #expect(formatError { try decodeInode(bytes.resealed(crcOffset: 0, seed: Fixture.seed)) }?.field == field)
        }
        var bytes = Self.file.encode(seed: Fixture.seed)
        bytes.setLE(UInt32(0), at: 144 + 16)  // zero blocks
        #expect(formatError { try decodeInode(bytes.resealed(crcOffset: 0, seed: Fixture.seed)) }?.field == "extent")
    }

    @Test func timestampsOrderBySecondsThenNanoseconds() {
        #expect(Timestamp(seconds: 1, nanoseconds: 999_999_999) < Timestamp(seconds: 2))
        #expect(Timestamp(seconds: -1, nanoseconds: 5) < Timestamp(seconds: 0))
        #expect(Timestamp(seconds: 3, nanoseconds: 1) > Timestamp(seconds: 3))
    }

    @Test func typeBits() {
        var inode = Self.file
        #expect(!inode.isDirectory)
        inode.mode = Inode.typeDirectory | 0o755
        #expect(inode.isDirectory)
    }
}
