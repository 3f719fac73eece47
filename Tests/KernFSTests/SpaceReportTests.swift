import Testing
@testable import KernFS
@testable import ShaleFormat
@testable import ShaleMedia

/// `shale status` reads bitmaps and the inode map, which a damaged or hostile image can fill
/// with anything: it reports the damage and never traps.
struct SpaceReportTests {
    func formatted() throws -> (SimulatedPersistentMemory, Superblock) {
        let nvm = SimulatedPersistentMemory(byteCount: 48 << 20, recordsTrace: false)
        var options = FormatOptions()
        options.logRegionCount = 2
        options.logRegionBytes = 1 << 20
        let made = try Formatter.format(nvm: nvm, nvmPathHint: "sim.nvm", lowerDevices: [], options: options)
        return (nvm, made)
    }

    @Test(arguments: [UInt64(0xFFFF_FFFF_FFFF_F000), 4096, 3, 1 << 40])
    func aWildInodeMapEntryIsReportedNotFollowed(entry: UInt64) throws {
        let (nvm, made) = try formatted()
        nvm.storeWord(entry, at: Int(made.layout.inodeMapOffset + 8))
        nvm.persist(offset: Int(made.layout.inodeMapOffset + 8), count: 8)
        let volume = try Volume(nvm: nvm, nvmName: "sim.nvm", lowerDevices: [], repair: false)
        let report = volume.spaceReport()
        #expect(report.problems.contains { $0.contains("inode map entry 1 points outside the NVM data area") }, "\(report.problems)")
        #expect(report.inodesUsed == 1)
    }

    @Test func aBitmapBlockClaimingMoreBlocksThanTheTierHasIsReported() throws {
        let (nvm, made) = try formatted()
        let device = made.device(.nvm)!
        // A sealed, self-consistent block that covers more blocks than the tier has.
        let bitmap = AllocatorBitmapBlock(tier: .nvm, firstBlock: 0, blockCount: UInt32(AllocatorBitmapBlock.blocksPerBitmapBlock))
        nvm.storePersist(bitmap.encode(seed: made.volumeID.checksumSeed), at: Int(device.bitmapOffset))
        let volume = try Volume(nvm: nvm, nvmName: "sim.nvm", lowerDevices: [], repair: false)
        let report = volume.spaceReport()
        #expect(report.problems.contains { $0.contains("block count") }, "\(report.problems)")
        let space = try #require(report.tiers.first { $0.tier == .nvm })
        #expect(space.usedBlocks <= space.dataBlocks)
    }
}
