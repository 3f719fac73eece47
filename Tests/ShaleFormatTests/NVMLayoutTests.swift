import Testing
@testable import ShaleFormat

struct NVMLayoutTests {
    struct Geometry: Sendable, CustomTestStringConvertible {
        var nvmBytes: UInt64
        var lowerTiers: [NVMLayout.LowerTier]
        var testDescription: String {
            "\(nvmBytes >> 20) MiB NVM" + lowerTiers.map { " + \($0.byteCount >> 30) GiB \($0.tier)" }.joined()
        }
    }

    static let ssd = NVMLayout.LowerTier(tier: .ssd, byteCount: 16 << 30, segmentBytes: 4 << 20, pathHint: "ssd.img")
    static let hdd = NVMLayout.LowerTier(tier: .hdd, byteCount: 64 << 30, segmentBytes: 16 << 20, pathHint: "hdd.img")
    static let geometries: [Geometry] = [64 << 20, 256 << 20, 4 << 30].flatMap { (nvm: UInt64) in
        [[], [ssd], [ssd, hdd]].map { Geometry(nvmBytes: nvm, lowerTiers: $0) }
    }

    /// mkfs's layout decodes, and its regions follow the documented order without overlap:
    /// superblock A | superblock B | log table | inode map | bitmaps | log area | NVM data.
    @Test(arguments: geometries)
    func plannedLayoutDecodesAndRegionsDoNotOverlap(geometry: Geometry) throws {
        let block: UInt64 = 4096
        let planned = try NVMLayout.plan(nvmBytes: geometry.nvmBytes, nvmPathHint: "/dev/shm/x.nvm", logRegionCount: 16,
                                         logRegionBytes: 2 << 20, lowerTiers: geometry.lowerTiers)
        let layout = planned.layout
        let superblock = Superblock(volumeID: Fixture.volume, generation: 1, createdSeconds: 0, rootInode: 1,
                                    label: "", directoryHashKey: Fixture.hashKey, layout: layout, devices: planned.devices)
        let decoded = try superblock.encode().withUnsafeBytes { try Superblock.decode($0, nvmBytes: geometry.nvmBytes) }
        #expect(decoded.layout == layout)

        let nvm = try #require(planned.devices.first)
        #expect(nvm.tier == .nvm && nvm.byteCount == geometry.nvmBytes && nvm.segmentBytes == 0)
        #expect(planned.devices.map(\.tier) == [.nvm] + geometry.lowerTiers.map(\.tier))

        // Regions in order, as half-open byte ranges.
        var regions: [(name: String, start: UInt64, end: UInt64)] = [
            ("superblocks", 0, 2 * block),
            ("log table", layout.logTableOffset, layout.logTableOffset + UInt64(layout.logRegionCount) * 128),
            ("inode map", layout.inodeMapOffset, layout.inodeMapOffset + layout.inodeMapEntries * 8),
        ]
        // Lower tiers' bitmaps first, then the NVM's.
        for device in planned.devices.dropFirst() + [nvm] {
            regions.append(("\(device.tier) bitmap", device.bitmapOffset, device.bitmapOffset + device.bitmapBlocks * block))
        }
        regions.append(("log area", layout.logAreaOffset, layout.logAreaEnd))
        regions.append(("NVM data", nvm.dataOffset, nvm.dataOffset + nvm.dataBlocks * block))
        for (a, b) in zip(regions, regions.dropFirst()) {
            #expect(a.end <= b.start, "\(a.name) ends at \(a.end), after \(b.name) starts at \(b.start)")
        }
        for region in regions {
            #expect(region.start % block == 0, "\(region.name) at \(region.start)")
            #expect(region.start < region.end, "\(region.name) is empty")
        }
        #expect(regions.last!.end <= geometry.nvmBytes)
        // The NVM data area takes the rest of the region, wasting at most one block.
        #expect(geometry.nvmBytes - regions.last!.end <= block)

        // Bitmaps cover their tiers exactly.
        for device in planned.devices {
            #expect(device.bitmapBlocks == AllocatorBitmapBlock.blocksNeeded(for: device.dataBlocks))
        }
        // Lower tiers: a header block, data from the first segment boundary.
        for (device, lower) in zip(planned.devices.dropFirst(), geometry.lowerTiers) {
            #expect(device.dataOffset == max(block, lower.segmentBytes))
            #expect(device.dataBlocks == (lower.byteCount - device.dataOffset) / block)
            #expect(device.pathHint == lower.pathHint)
        }
        // Room for 2^32 inode numbers without reserving NVM for the inodes themselves.
        #expect(layout.inodeCapacity == 1 << 32)
        #expect(layout.inodesPerChunk == NVMLayout.inodesPerChunkDefault)
        #expect(layout.inodeChunkBytes == 4 << 20)
    }

    @Test func tooSmallAnNVMRegionSaysHowMuchIsNeeded() {
        let nvmBytes: UInt64 = 4 << 20
        let error = formatError {
            try NVMLayout.plan(nvmBytes: nvmBytes, nvmPathHint: "", logRegionCount: 4, logRegionBytes: 1 << 20, lowerTiers: [])
        }
        #expect(error?.field == "NVM size")
        let text = error?.description ?? ""
        #expect(text.contains("\(nvmBytes) bytes is too small"), "\(text)")
        #expect(text.contains("need at least"), "\(text)")
    }

    /// The smallest region plan accepts is exactly the one it names in its error.
    @Test func theSizeTheErrorNamesIsEnough() throws {
        let error = formatError {
            try NVMLayout.plan(nvmBytes: 1 << 20, nvmPathHint: "", logRegionCount: 2, logRegionBytes: 256 << 10, lowerTiers: [])
        }
        let text = error?.description ?? ""
        let needed = try #require(text.split(separator: " ").last.flatMap { UInt64($0) }, "\(text)")
        _ = try NVMLayout.plan(nvmBytes: needed, nvmPathHint: "", logRegionCount: 2, logRegionBytes: 256 << 10, lowerTiers: [])
        #expect(formatError {
            try NVMLayout.plan(nvmBytes: needed - 1, nvmPathHint: "", logRegionCount: 2, logRegionBytes: 256 << 10, lowerTiers: [])
        }?.field == "NVM size")
    }

    @Test func noLogRegionsIsRefused() {
        let error = formatError {
            try NVMLayout.plan(nvmBytes: 64 << 20, nvmPathHint: "", logRegionCount: 0, logRegionBytes: 1 << 20, lowerTiers: [])
        }
        #expect(error?.field == "log region count")
    }

    /// Absurd geometry (as a script might pass to mkfs) is an error, never an overflow trap.
    @Test(arguments: [(UInt64(1) << 62, UInt32(16), UInt64(1) << 20), (UInt64(64) << 20, UInt32(4096), UInt64(1) << 62),
                      (UInt64(64) << 20, UInt32(4097), UInt64(1) << 20), (UInt64.max, UInt32(1), UInt64.max)])
    func absurdGeometryIsRefusedWithoutTrapping(nvmBytes: UInt64, count: UInt32, logBytes: UInt64) {
        #expect(throws: FormatError.self) {
            try NVMLayout.plan(nvmBytes: nvmBytes, nvmPathHint: "", logRegionCount: count, logRegionBytes: logBytes, lowerTiers: [])
        }
        #expect(throws: FormatError.self) {
            try NVMLayout.plan(nvmBytes: 64 << 20, nvmPathHint: "", logRegionCount: 4, logRegionBytes: 1 << 20,
                               lowerTiers: [.init(tier: .ssd, byteCount: .max, segmentBytes: .max, pathHint: "")])
        }
    }

    @Test func logRegionsSmallerThan64KiBAreRefused() {
        let error = formatError {
            try NVMLayout.plan(nvmBytes: 64 << 20, nvmPathHint: "", logRegionCount: 4, logRegionBytes: 32 << 10, lowerTiers: [])
        }
        #expect(error?.field == "log region size")
        #expect(LogRegionDescriptor.regionBytesMin == 64 << 10)
    }

    @Test func lowerTierWithNoRoomAfterItsHeaderIsRefused() {
        let tiny = NVMLayout.LowerTier(tier: .ssd, byteCount: 8 << 20, segmentBytes: 8 << 20, pathHint: "")
        let error = formatError {
            try NVMLayout.plan(nvmBytes: 64 << 20, nvmPathHint: "", logRegionCount: 4, logRegionBytes: 1 << 20, lowerTiers: [tiny])
        }
        #expect(error?.field == "ssd size")
    }

    @Test func descriptorAndRegionOffsets() throws {
        let layout = try NVMLayout.plan(nvmBytes: 256 << 20, nvmPathHint: "", logRegionCount: 100, logRegionBytes: 1 << 20,
                                        lowerTiers: []).layout
        #expect(layout.logTableOffset == 8192)
        #expect(layout.logDescriptorOffset(region: 0, copy: 0) == 8192)
        #expect(layout.logDescriptorOffset(region: 0, copy: 1) == 8192 + 64)
        #expect(layout.logDescriptorOffset(region: 99, copy: 1) == 8192 + 199 * 64)
        #expect(layout.logDescriptorOffset(region: 99, copy: 1) + 64 <= layout.inodeMapOffset)
        #expect(layout.logRegionOffset(0) == layout.logAreaOffset)
        #expect(layout.logRegionOffset(99) == layout.logAreaOffset + 99 * (1 << 20))
        #expect(layout.logRegionOffset(99) + layout.logRegionBytes == layout.logAreaEnd)
    }

    @Test func inodeLocationsUpToTheLastInode() throws {
        let layout = try NVMLayout.plan(nvmBytes: 64 << 20, nvmPathHint: "", logRegionCount: 1, logRegionBytes: 1 << 20,
                                        lowerTiers: []).layout
        let first = layout.inodeLocation(1)
        #expect(first.mapEntryOffset == layout.inodeMapOffset && first.offsetInChunk == 256)
        let secondChunk = layout.inodeLocation(16_384)
        #expect(secondChunk.mapEntryOffset == layout.inodeMapOffset + 8 && secondChunk.offsetInChunk == 0)
        let last = layout.inodeLocation((1 << 32) - 1)
        #expect(last.mapEntryOffset == layout.inodeMapOffset + layout.inodeMapEntries * 8 - 8)
        #expect(last.offsetInChunk == layout.inodeChunkBytes - 256)
    }

    @Test(arguments: [UInt32(1024), 16_384, 65_536])
    func otherChunkSizesStillHold2To32Inodes(inodesPerChunk: UInt32) throws {
        let planned = try NVMLayout.plan(nvmBytes: 256 << 20, nvmPathHint: "", logRegionCount: 4, logRegionBytes: 1 << 20,
                                         lowerTiers: [], inodesPerChunk: inodesPerChunk)
        #expect(planned.layout.inodeCapacity == 1 << 32)
        #expect(planned.layout.inodeChunkBytes % 4096 == 0)
    }
}
