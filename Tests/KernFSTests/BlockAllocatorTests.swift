import Glibc
import Testing
@testable import KernFS
@testable import ShaleFormat
@testable import ShaleMedia

struct BlockAllocatorTests {
    static func setUp() throws -> (SimulatedPersistentMemory, Superblock, BlockAllocator<SimulatedPersistentMemory>, MetadataTransaction<SimulatedPersistentMemory>) {
        let (nvm, superblock) = try MetadataJournalTests.volume()
        let allocator = try BlockAllocator(nvm: nvm, device: superblock.device(.nvm)!, volumeSeed: superblock.volumeID.checksumSeed)
        let transaction = MetadataTransaction(journal: MetadataJournal(nvm: nvm, superblock: superblock))
        return (nvm, superblock, allocator, transaction)
    }

    @Test func allocationsAreDisjointDurableAndFreed() throws {
        let (nvm, superblock, allocator, transaction) = try Self.setUp()
        let initiallyFree = allocator.freeBlocks
        var taken: [Range<UInt64>] = []
        for count in [1, 7, 100, 3] as [UInt64] {
            let runs = try allocator.allocate(count, in: transaction)
            #expect(runs.reduce(0) { $0 + UInt64($1.count) } == count)
            taken += runs
        }
        let all = taken.flatMap { Array($0) }
        #expect(Set(all).count == all.count, "no block handed out twice")
        #expect(allocator.freeBlocks == initiallyFree - 111)
        try transaction.commit()
        // What status reads from NVM agrees.
        let volume = try Volume(nvm: nvm, nvmName: "sim", lowerDevices: [], repair: false)
        let space = try #require(volume.spaceReport().tiers.first { $0.tier == .nvm })
        #expect(space.freeBlocks == initiallyFree - 111)
        for run in taken { try allocator.free(run, in: transaction) }
        try transaction.commit()
        #expect(try BlockAllocator(nvm: nvm, device: superblock.device(.nvm)!, volumeSeed: superblock.volumeID.checksumSeed).freeBlocks == initiallyFree)
    }

    @Test func contiguousRequestsGetOneRun() throws {
        let (_, _, allocator, transaction) = try Self.setUp()
        _ = try allocator.allocate(5, in: transaction)
        let runs = try allocator.allocate(1024, in: transaction, contiguous: true)
        #expect(runs.count == 1 && runs[0].count == 1024)
    }

    @Test func exhaustionIsNoSpaceAndChangesNothing() throws {
        let (_, _, allocator, transaction) = try Self.setUp()
        let free = allocator.freeBlocks
        #expect(throws: AllocationError.noSpace(tier: .nvm, wantedBlocks: free + 1, freeBlocks: free)) {
            try allocator.allocate(free + 1, in: transaction)
        }
        #expect(transaction.isEmpty)
        let everything = try allocator.allocate(free, in: transaction)
        #expect(everything.reduce(0) { $0 + UInt64($1.count) } == free)
        #expect(throws: AllocationError.self) { try allocator.allocate(1, in: transaction) }
    }

    @Test func doubleFreeIsReportedAsDamage() throws {
        let (_, _, allocator, transaction) = try Self.setUp()
        let runs = try allocator.allocate(2, in: transaction)
        try allocator.free(runs[0], in: transaction)
        #expect(throws: AllocationError.self) { try allocator.free(runs[0], in: transaction) }
    }

    @Test func abortedAllocationsAreForgottenAfterReload() throws {
        let (_, _, allocator, transaction) = try Self.setUp()
        let free = allocator.freeBlocks
        let first = try allocator.allocate(10, in: transaction)
        transaction.abort()
        try allocator.reload()
        #expect(allocator.freeBlocks == free)
        let again = try allocator.allocate(10, in: transaction)
        #expect(Set(again.flatMap { Array($0) }).isSubset(of: Set(0 ..< allocator.device.dataBlocks)))
        _ = first
    }
}

struct BlockReuseTests {
    /// A block freed by an open transaction is still used by the committed state: it is not
    /// handed out again until the transaction commits.
    @Test func aBlockFreedByAnOpenTransactionIsNotReusedUntilItCommits() throws {
        let (_, _, allocator, transaction) = try BlockAllocatorTests.setUp()
        let taken = try allocator.allocate(4, in: transaction)[0]
        try transaction.commit()
        try allocator.free(taken, in: transaction)
        let during = try allocator.allocate(4, in: transaction)
        #expect(during.allSatisfy { !$0.overlaps(taken) })
        try transaction.commit()
        // Next fit moves on; the freed run is found again once the search wraps.
        let everything = try allocator.allocate(allocator.freeBlocks, in: transaction)
        #expect(everything.contains { $0.overlaps(taken) })
    }

    @Test func anAbortUndoesAllocationsAndFrees() throws {
        let (_, _, allocator, transaction) = try BlockAllocatorTests.setUp()
        let free = allocator.freeBlocks
        _ = try allocator.allocate(10, in: transaction)
        transaction.abort()
        #expect(allocator.freeBlocks == free)
    }
}

/// On a volume whose NVM spans several bitmap blocks (a real /dev/shm mapping, 256 MiB).
struct ContiguousAcrossBitmapBlocksTests {
    @Test func aRunStraddlingTwoBitmapBlocksIsFound() throws {
        let path = "/dev/shm/shale-alloc-\(getpid())-\(UInt32.random(in: 0 ... .max)).nvm"
        defer { unlink(path) }
        let nvm = try MappedPersistentMemory.create(path: path, byteCount: 256 << 20)
        var options = FormatOptions()
        options.logRegionCount = 2
        options.logRegionBytes = 1 << 20
        let superblock = try Formatter.format(nvm: nvm, nvmPathHint: path, lowerDevices: [], options: options)
        let device = superblock.device(.nvm)!
        #expect(device.bitmapBlocks >= 2)
        let allocator = try BlockAllocator(nvm: nvm, device: device, volumeSeed: superblock.volumeID.checksumSeed)
        let transaction = MetadataTransaction(journal: MetadataJournal(nvm: nvm, superblock: superblock))
        _ = try allocator.allocate(allocator.freeBlocks, in: transaction)
        try transaction.commit()
        // The only free space: 2000 blocks around the first bitmap-block boundary.
        let boundary = UInt64(AllocatorBitmapBlock.blocksPerBitmapBlock)
        let hole = boundary - 1000 ..< boundary + 1000
        try allocator.free(hole, in: transaction)
        try transaction.commit()
        #expect(throws: AllocationError.self) { try allocator.allocate(2001, in: transaction, contiguous: true) }
        let run = try allocator.allocate(2000, in: transaction, contiguous: true)
        #expect(run == [hole])
        try transaction.commit()
        #expect(allocator.freeBlocks == 0)
        // What status reads from NVM agrees: both bitmap blocks were updated.
        let volume = try Volume(nvm: nvm, nvmName: path, lowerDevices: [], repair: false)
        #expect(volume.spaceReport().tiers.first { $0.tier == .nvm }?.freeBlocks == 0)
        #expect(volume.spaceReport().problems.isEmpty)
    }
}
