import Testing
@testable import KernFS
@testable import ShaleFormat
@testable import ShaleMedia

struct InodeTableTests {
    static func setUp() throws -> (SimulatedPersistentMemory, Superblock, InodeTable<SimulatedPersistentMemory>, MetadataTransaction<SimulatedPersistentMemory>) {
        let (nvm, superblock) = try MetadataJournalTests.volume()
        let allocator = try BlockAllocator(nvm: nvm, device: superblock.device(.nvm)!, volumeSeed: superblock.volumeID.checksumSeed)
        let table = try InodeTable(nvm: nvm, superblock: superblock, nvmAllocator: allocator)
        return (nvm, superblock, table, MetadataTransaction(journal: MetadataJournal(nvm: nvm, superblock: superblock)))
    }

    @Test func theRootIsThereAndFreshNumbersAreFree() throws {
        let (_, superblock, table, transaction) = try Self.setUp()
        let root = try #require(try table.read(superblock.rootInode, in: transaction))
        #expect(root.isDirectory)
        #expect(table.freeCount == Int(superblock.layout.inodesPerChunk) - 2, "inode 0 is never used, 1 is the root")
        let numbers = try table.allocate(3, in: transaction)
        #expect(numbers == [2, 3, 4])
        #expect(try table.read(2, in: transaction) == nil)
        #expect(throws: InodeError.outOfRange(0)) { try table.read(0, in: transaction) }
    }

    @Test func writtenInodesReadBackAfterCommitAndFreedOnesAreReused() throws {
        let (nvm, superblock, table, transaction) = try Self.setUp()
        let number = try table.allocate(in: transaction)[0]
        let inode = Inode(number: number, mode: Inode.typeRegular | 0o640, uid: 7, gid: 8, linkCount: 1, size: 12345,
                          time: Timestamp(seconds: 99, nanoseconds: 5))
        try table.write(inode, in: transaction)
        try transaction.commit()
        let reopened = try InodeTable(nvm: nvm, superblock: superblock,
                                      nvmAllocator: BlockAllocator(nvm: nvm, device: superblock.device(.nvm)!, volumeSeed: superblock.volumeID.checksumSeed))
        #expect(try reopened.read(number, in: transaction) == inode)
        #expect(!(try reopened.allocate(in: transaction)).contains(number), "an inode in use is never handed out")
        try reopened.free(number, in: transaction)
        try transaction.commit()
        #expect(try reopened.read(number, in: transaction) == nil)
    }

    @Test func aFullChunkGrowsTheTableByAnotherChunk() throws {
        let (nvm, superblock, table, transaction) = try Self.setUp()
        let perChunk = Int(superblock.layout.inodesPerChunk)
        let numbers = try table.allocate(perChunk, in: transaction)
        // 16382 free numbers in the first chunk (0 is never used, 1 is the root), then the
        // second chunk from its lowest number.
        #expect(Array(numbers.suffix(3)) == [UInt64(perChunk) - 1, UInt64(perChunk), UInt64(perChunk) + 1])
        let mapEntry = superblock.layout.inodeMapOffset + 8
        #expect(nvm.loadWord(at: Int(mapEntry)) == 0, "linked only when the transaction commits")
        try transaction.commit()
        #expect(nvm.loadWord(at: Int(mapEntry)) != 0)
        let inode = Inode(number: numbers.last!, mode: Inode.typeDirectory | 0o755, linkCount: 2, time: Timestamp(seconds: 1))
        try table.write(inode, in: transaction)
        try transaction.commit()
        #expect(try table.read(numbers.last!, in: transaction) == inode)
        let volume = try Volume(nvm: nvm, nvmName: "sim", lowerDevices: [], repair: false)
        let report = volume.spaceReport()
        #expect(report.inodeChunksAllocated == 2 && report.inodesUsed == 2 && report.problems.isEmpty, "\(report.problems)")
    }

    @Test func aDamagedInodeIsReportedNotTrusted() throws {
        let (nvm, superblock, table, transaction) = try Self.setUp()
        let location = superblock.layout.inodeLocation(superblock.rootInode)
        let chunk = nvm.loadWord(at: Int(location.mapEntryOffset))
        var bytes = nvm.load(at: Int(chunk + location.offsetInChunk), count: 256)
        bytes[40] ^= 1
        nvm.storePersist(bytes, at: Int(chunk + location.offsetInChunk))
        do {
            _ = try table.read(superblock.rootInode, in: transaction)
            Issue.record("a damaged inode was read")
        } catch {
            #expect(error.description.contains("checksum mismatch"))
        }
    }
}

/// Inode numbers are tied to the transactions that use them (review findings of session 1).
struct InodeNumberLifecycleTests {
    @Test func reservationsSurviveAReloadAndWrittenNumbersAreNeverFree() throws {
        let (_, _, table, transaction) = try InodeTableTests.setUp()
        let first = try table.allocate(in: transaction)[0]
        try table.reload()  // e.g. after an aborted digest: the client may still log `first`
        #expect(!(try table.allocate(5, in: transaction)).contains(first))
        let inode = Inode(number: first, mode: Inode.typeRegular | 0o644, linkCount: 1, time: Timestamp(seconds: 1))
        try table.write(inode, in: transaction)
        table.release([first])  // a late release of a written number changes nothing
        #expect(!(try table.allocate(100, in: transaction)).contains(first))
    }

    @Test func aFreedNumberIsReusedOnlyAfterItsTransactionCommits() throws {
        let (_, _, table, transaction) = try InodeTableTests.setUp()
        let number = try table.allocate(in: transaction)[0]
        try table.write(Inode(number: number, mode: Inode.typeRegular | 0o644, linkCount: 1, time: Timestamp(seconds: 1)), in: transaction)
        try transaction.commit()
        try table.free(number, in: transaction)
        #expect(!(try table.allocate(50, in: transaction)).contains(number), "not while the freeing transaction is open")
        try transaction.commit()
        let after = try table.allocate(in: transaction)
        #expect(after == [number], "recently freed numbers are reused first")
    }

    @Test func anAbortedChunkGivesItsNumbersBack() throws {
        let (nvm, superblock, table, transaction) = try InodeTableTests.setUp()
        let perChunk = Int(superblock.layout.inodesPerChunk)
        let numbers = try table.allocate(perChunk, in: transaction)  // spills into a second chunk
        transaction.abort()
        #expect(nvm.loadWord(at: Int(superblock.layout.inodeMapOffset + 8)) == 0)
        let second = numbers.filter { $0 >= UInt64(perChunk) }
        #expect(!second.isEmpty)
        // The second chunk's numbers are gone with it; the first chunk's stay reserved.
        let fresh = try table.allocate(perChunk, in: transaction)
        #expect(Set(fresh).isDisjoint(with: Set(numbers.filter { $0 < UInt64(perChunk) })))
    }
}
