import Testing
@testable import ShaleFormat

/// A volume as mkfs would make it: 64 MiB of NVM with 8 logs of 1 MiB, a 1 GiB SSD and a
/// 4 GiB HDD.
enum SuperblockFixture {
    static let nvmBytes: UInt64 = 64 << 20
    static let lowerTiers = [
        NVMLayout.LowerTier(tier: .ssd, byteCount: 1 << 30, segmentBytes: 2 << 20, pathHint: "/srv/shale/ssd.img"),
        NVMLayout.LowerTier(tier: .hdd, byteCount: 4 << 30, segmentBytes: 8 << 20, pathHint: "/srv/shale/hdd.img"),
    ]

    static func make(nvmBytes: UInt64 = nvmBytes, lowerTiers: [NVMLayout.LowerTier] = lowerTiers) throws -> Superblock {
        let planned = try NVMLayout.plan(nvmBytes: nvmBytes, nvmPathHint: "/dev/shm/shale-1b4e28ba.nvm",
                                         logRegionCount: 8, logRegionBytes: 1 << 20, lowerTiers: lowerTiers)
        var superblock = Superblock(volumeID: Fixture.volume, generation: 0x0102_0304_0506_0708,
                                    createdSeconds: 1_764_072_961, rootInode: 1, label: "scratch volume", directoryHashKey: Fixture.hashKey,
                                    layout: planned.layout, devices: planned.devices)
        superblock.flags = .inUse
        return superblock
    }
}

func decodeSuperblock(_ bytes: [UInt8], nvmBytes: UInt64 = SuperblockFixture.nvmBytes) throws -> Superblock {
    try bytes.withUnsafeBytes { try Superblock.decode($0, nvmBytes: nvmBytes) }
}

/// One way a sealed superblock can say something absurd.
struct AbsurdSuperblock: Sendable, CustomTestStringConvertible {
    let name: String
    /// The field the error must name (nil: any).
    let field: String?
    let edit: @Sendable (inout Superblock) -> Void
    var testDescription: String { name }

    static let all: [AbsurdSuperblock] = [
        .init(name: "log area beyond the NVM region", field: "regions") { $0.layout.logAreaOffset = SuperblockFixture.nvmBytes },
        .init(name: "log table offset near 2^64", field: nil) { $0.layout.logTableOffset = UInt64.max & ~4095 },
        .init(name: "inode map offset near 2^64", field: nil) { $0.layout.inodeMapOffset = UInt64.max & ~4095 },
        .init(name: "log area offset near 2^64", field: nil) { $0.layout.logAreaOffset = UInt64.max & ~4095 },
        .init(name: "log table over superblock B", field: "regions") { $0.layout.logTableOffset = 4096 },
        .init(name: "log table overlapping the inode map", field: "regions") { $0.layout.inodeMapOffset = $0.layout.logTableOffset },
        .init(name: "inode map overlapping the log area", field: "regions") {
            $0.layout.inodeMapEntries = ($0.layout.logAreaOffset - $0.layout.inodeMapOffset) / 8 + 1
        },
        .init(name: "zero log regions", field: "log region count") { $0.layout.logRegionCount = 0 },
        .init(name: "4097 log regions", field: "log region count") { $0.layout.logRegionCount = 4097 },
        .init(name: "log region below 64 KiB", field: "log region size") { $0.layout.logRegionBytes = 32 << 10 },
        .init(name: "log region not whole blocks", field: "log region size") { $0.layout.logRegionBytes += 8 },
        .init(name: "log region larger than the NVM", field: "log region size") { $0.layout.logRegionBytes = 1 << 62 },
        .init(name: "4096 logs of 1 MiB in 64 MiB", field: "regions") { $0.layout.logRegionCount = 4096 },
        .init(name: "log area offset not block-aligned", field: "log area") { $0.layout.logAreaOffset += 8 },
        .init(name: "inode map offset not block-aligned", field: "inode map") { $0.layout.inodeMapOffset += 8 },
        .init(name: "inode size 128", field: "inode size") { $0.layout.inodeBytes = 128 },
        .init(name: "zero inodes per chunk", field: "inodes per chunk") { $0.layout.inodesPerChunk = 0 },
        .init(name: "inode chunk not whole blocks", field: "inodes per chunk") { $0.layout.inodesPerChunk = 17 },
        .init(name: "empty inode map", field: "inode map") { $0.layout.inodeMapEntries = 0 },
        .init(name: "NVM bitmap over the superblocks", field: "nvm bitmap") { $0.devices[0]!.bitmapOffset = 0 },
        .init(name: "NVM bitmap inside the log area", field: "nvm bitmap") { $0.devices[0]!.bitmapOffset = $0.layout.logAreaOffset },
        .init(name: "SSD bitmap over the log table", field: "ssd bitmap") { $0.devices[1]!.bitmapOffset = $0.layout.logTableOffset },
        .init(name: "SSD bitmap over the inode map", field: "ssd bitmap") { $0.devices[1]!.bitmapOffset = $0.layout.inodeMapOffset },
        .init(name: "SSD bitmap not block-aligned", field: "ssd bitmap") { $0.devices[1]!.bitmapOffset += 8 },
        .init(name: "HDD bitmap over the SSD bitmap", field: "hdd bitmap") { $0.devices[2]!.bitmapOffset = $0.devices[1]!.bitmapOffset },
        .init(name: "SSD bitmap length wrapping past 2^64", field: "ssd bitmap") { $0.devices[1]!.bitmapBlocks += 1 << 52 },
        .init(name: "SSD bitmap too short for its tier", field: "ssd bitmap") { $0.devices[1]!.bitmapBlocks -= 1 },
        .init(name: "NVM data area over the log area", field: "NVM data area") {
            $0.devices[0]!.dataOffset = $0.layout.logAreaEnd - 4096
        },
        .init(name: "NVM data beyond the region", field: "data area") { $0.devices[0]!.dataBlocks += 100 },
        .init(name: "SSD data beyond the device", field: "data area") { $0.devices[1]!.dataBlocks += 1 << 20 },
        .init(name: "SSD data over its device header", field: "data area") { $0.devices[1]!.dataOffset = 0 },
        .init(name: "device block size 512", field: "block size") { $0.devices[1]!.blockBytes = 512 },
        .init(name: "root inode 0", field: "root inode") { $0.rootInode = 0 },
        .init(name: "root inode beyond the inode capacity", field: "root inode") { $0.rootInode = 1 << 32 },
        .init(name: "empty slot 0", field: "device table") { $0.devices[0] = nil },
        .init(name: "SSD in slot 0", field: "device table") { $0.devices.swapAt(0, 1) },
        .init(name: "two SSDs", field: "device table") { $0.devices[2]!.tier = .ssd },
    ]
}

struct SuperblockTests {
    @Test func roundTripKeepsEveryField() throws {
        let superblock = try SuperblockFixture.make()
        let bytes = superblock.encode()
        #expect(bytes.count == Superblock.encodedBytes)
        #expect(Superblock.encodedBytes == 4096)
        let decoded = try decodeSuperblock(bytes)
        #expect(decoded == superblock)
        #expect(decoded.flags == .inUse)
        #expect(decoded.devices.count == Format.deviceSlots)
        #expect(decoded.device(.ssd)?.pathHint == "/srv/shale/ssd.img")
        #expect(decoded.device(.hdd)?.byteCount == 4 << 30)
        #expect(decoded.device(.nvm)?.byteCount == SuperblockFixture.nvmBytes)
    }

    @Test func twoCopiesSitInTheFirstTwoBlocks() {
        #expect(Superblock.copyOffsets == [0, 4096])
        #expect(Superblock.magic == [0x53, 0x48, 0x41, 0x4C, 0x45, 0x00, 0x53, 0x42])  // "SHALE\0SB"
    }

    /// The offsets docs/format.md states, read from the raw bytes.
    @Test func fieldOffsetsMatchTheSpec() throws {
        let superblock = try SuperblockFixture.make()
        let bytes = superblock.encode()
        #expect(Array(bytes[0 ..< 8]) == Superblock.magic)
        #expect(bytes.le(UInt32.self, at: 8) == 2)
        var zeroed = bytes
        zeroed.setLE(UInt32(0), at: 12)
        #expect(bytes.le(UInt32.self, at: 12) == CRC32C.checksum(zeroed))
        #expect(Array(bytes[16 ..< 32]) == Fixture.volume.bytes)
        #expect(bytes.le(UInt64.self, at: 32) == 0x0102_0304_0506_0708)
        #expect(bytes.le(UInt64.self, at: 40) == 1_764_072_961)
        #expect(bytes.le(UInt32.self, at: 48) == 4096)
        #expect(bytes.le(UInt32.self, at: 52) == Superblock.Flags.inUse.rawValue)
        #expect(bytes.le(UInt32.self, at: 56) == 3)
        #expect(bytes.le(UInt64.self, at: 64) == 1)
        let layout = superblock.layout
        #expect(bytes.le(UInt64.self, at: 72) == layout.logTableOffset)
        #expect(bytes.le(UInt32.self, at: 80) == layout.logRegionCount)
        #expect(bytes.le(UInt32.self, at: 84) == layout.inodesPerChunk)
        #expect(bytes.le(UInt64.self, at: 88) == layout.logAreaOffset)
        #expect(bytes.le(UInt64.self, at: 96) == layout.logRegionBytes)
        #expect(bytes.le(UInt64.self, at: 104) == layout.inodeMapOffset)
        #expect(bytes.le(UInt64.self, at: 112) == layout.inodeMapEntries)
        #expect(bytes.le(UInt32.self, at: 120) == 256)
        #expect(Array(bytes[128 ..< 142]) == Array("scratch volume".utf8))
        #expect(bytes[142 ..< 192].allSatisfy { $0 == 0 })
        #expect(bytes.le(UInt64.self, at: 192) == Fixture.hashKey.k0)
        #expect(bytes.le(UInt64.self, at: 200) == Fixture.hashKey.k1)
        #expect(bytes.le(UInt64.self, at: 208) == superblock.layout.journalOffset)
        #expect(bytes.le(UInt64.self, at: 216) == superblock.layout.journalBytes)
        #expect(superblock.layout.journalBytes >= NVMLayout.journalBytesMin)
        #expect(bytes[224 ..< 512].allSatisfy { $0 == 0 })
        // Device table: slot i at 512 + 256 i.
        #expect(bytes[512] == Tier.nvm.rawValue)
        #expect(bytes[512 + 256] == Tier.ssd.rawValue)
        #expect(bytes[512 + 512] == Tier.hdd.rawValue)
        #expect(bytes.le(UInt64.self, at: 512 + 256 + 8) == 1 << 30)
        #expect(bytes[(512 + 3 * 256) ..< 4096].allSatisfy { $0 == 0 })
    }

    @Test func everySingleByteFlipIsRefused() throws {
        let bytes = try SuperblockFixture.make().encode()
        let missed = offsetsWhereDamageIsMissed(in: bytes, expected: { offset in
            switch offset {
            // A flipped version byte is damage, not a newer format: the checksum says so.
            case 0 ..< 8: .badMagic
            default: .checksumMismatch
            }
        }) { _ = try decodeSuperblock($0) }
        #expect(missed.isEmpty, "undetected or misreported flips at \(missed.prefix(8))")
    }

    @Test func anotherFormatVersionIsRefusedAsSuch() throws {
        var bytes = try SuperblockFixture.make().encode()
        bytes.setLE(UInt32(3), at: 8)
        let error = formatError { try decodeSuperblock(bytes.resealed(crcOffset: 12)) }
        #expect(error == .unsupportedVersion(structure: "superblock", found: 3, supported: 2))
    }

    @Test func anotherFileSystemIsBadMagic() {
        var bytes = [UInt8](repeating: 0, count: 4096)
        bytes[0x438] = 0x53
        bytes[0x439] = 0xEF  // an ext4 superblock's magic, in case anyone asks
        #expect(formatError { try decodeSuperblock(bytes) }?.kind == .badMagic)
    }

    @Test func truncatedBufferIsRefused() throws {
        let bytes = try SuperblockFixture.make().encode()
        #expect(formatError { try decodeSuperblock(Array(bytes[0 ..< 4095])) }
            == .truncated(structure: "superblock", needed: 4096, available: 4095))
        #expect(formatError { try decodeSuperblock([]) }?.kind == .truncated)
    }

    /// The superblock carries the volume ID, so its checksum is not seeded: the same bytes
    /// verify whatever volume the reader expected, and the reader compares the ID.
    @Test func superblockIsNotSeeded() throws {
        var superblock = try SuperblockFixture.make()
        superblock.volumeID = Fixture.otherVolume
        let decoded = try decodeSuperblock(superblock.encode())
        #expect(decoded.volumeID == Fixture.otherVolume)
    }

    @Test(arguments: AbsurdSuperblock.all)
    func absurdValuesAreRefusedEvenWhenSealed(absurd: AbsurdSuperblock) throws {
        var superblock = try SuperblockFixture.make()
        absurd.edit(&superblock)
        let error = formatError { try decodeSuperblock(superblock.encode()) }
        #expect(error?.kind == .invalidField, "\(String(describing: error))")
        if let field = absurd.field, let error {
            #expect(error.field?.contains(field) == true, "\(error)")
        }
    }

    @Test func unknownTierInTheDeviceTableIsRefused() throws {
        var bytes = try SuperblockFixture.make().encode()
        bytes[512 + 256] = 9
        let error = formatError { try decodeSuperblock(bytes.resealed(crcOffset: 12)) }
        #expect(error == .invalidField(structure: "device table", field: "tier", reason: "unknown tier 9"))
    }

    @Test func blockSizeOtherThan4096IsRefused() throws {
        var bytes = try SuperblockFixture.make().encode()
        bytes.setLE(UInt32(8192), at: 48)
        #expect(formatError { try decodeSuperblock(bytes.resealed(crcOffset: 12)) }?.field == "block size")
    }

    @Test func deviceCountMustMatchTheTable() throws {
        var bytes = try SuperblockFixture.make().encode()
        bytes.setLE(UInt32(2), at: 56)
        #expect(formatError { try decodeSuperblock(bytes.resealed(crcOffset: 12)) }?.field == "device count")
    }

    @Test func labelThatIsNotUTF8IsRefused() throws {
        var bytes = try SuperblockFixture.make().encode()
        bytes[128] = 0xC3
        bytes[129] = 0x28
        #expect(formatError { try decodeSuperblock(bytes.resealed(crcOffset: 12)) }?.field == "label")
    }

    /// A superblock read from a region of another size describes some other region.
    @Test func nvmSizeMustMatchTheRegionItWasReadFrom() throws {
        let bytes = try SuperblockFixture.make().encode()
        let error = formatError { try decodeSuperblock(bytes, nvmBytes: SuperblockFixture.nvmBytes * 2) }
        #expect(error?.field == "device table")
        #expect(error?.description.contains("\(SuperblockFixture.nvmBytes * 2)") == true)
    }

    /// Inode capacity is map entries × inodes per chunk; a sealed superblock whose product
    /// does not fit in 64 bits is refused, not trapped on.
    @Test func inodeCapacityThatOverflowsIsRefused() throws {
        let nvmBytes: UInt64 = 1 << 50
        let block: UInt64 = 4096
        let mapOffset: UInt64 = 3 * block
        let mapEntries: UInt64 = 1 << 33
        let bitmapOffset = mapOffset + mapEntries * 8
        let logAreaOffset = bitmapOffset + block
        let layout = NVMLayout(logTableOffset: 2 * block, logRegionCount: 1, logAreaOffset: logAreaOffset,
                               logRegionBytes: 1 << 20, inodeMapOffset: mapOffset, inodeMapEntries: mapEntries,
                               inodesPerChunk: 1 << 31)
        let nvm = DeviceDescriptor(tier: .nvm, byteCount: nvmBytes, segmentBytes: 0, dataOffset: layout.logAreaEnd,
                                   dataBlocks: 1000, bitmapOffset: bitmapOffset, bitmapBlocks: 1, pathHint: "")
        let superblock = Superblock(volumeID: Fixture.volume, generation: 1, createdSeconds: 0, rootInode: 1,
                                    label: "", directoryHashKey: Fixture.hashKey, layout: layout, devices: [nvm])
        let error = formatError { try decodeSuperblock(superblock.encode(), nvmBytes: nvmBytes) }
        #expect(error?.kind == .invalidField)
    }

    /// Labels and path hints are cut to their fields by the writer; what it stores must
    /// still read back, or the volume would be unmountable for a long non-ASCII path.
    @Test func longNonASCIILabelAndPathHintStillDecode() throws {
        var superblock = try SuperblockFixture.make()
        superblock.label = "x" + String(repeating: "é", count: 40)
        superblock.devices[1]!.pathHint = "/srv/" + String(repeating: "données/", count: 30)
        let decoded = try decodeSuperblock(superblock.encode())
        #expect(superblock.label.hasPrefix(decoded.label))
        #expect(decoded.label.utf8.count >= 63)
        #expect(superblock.devices[1]!.pathHint.hasPrefix(decoded.devices[1]!.pathHint))
        #expect(decoded.devices[1]!.pathHint.utf8.count >= 191)
    }
}
