import Testing
@testable import KernFS
@testable import ShaleFormat
@testable import ShaleMedia

/// The shared-area pieces together, as digest will use them: a new directory inode whose
/// entries live in blocks found through its extent map, committed and read back.
struct SharedAreaTests {
    typealias NVM = SimulatedPersistentMemory

    @Test func aDirectoryInItsOwnInodeSurvivesCommitAndReload() throws {
        let (nvm, superblock) = try MetadataJournalTests.volume()
        let seed = superblock.volumeID.checksumSeed
        let journal = MetadataJournal(nvm: nvm, superblock: superblock)
        let transaction = MetadataTransaction(journal: journal)
        let allocator = try BlockAllocator(nvm: nvm, device: superblock.device(.nvm)!, volumeSeed: seed)
        let inodes = try InodeTable(nvm: nvm, superblock: superblock, nvmAllocator: allocator)
        let freeBefore = allocator.freeBlocks

        // mkdir: a new inode, an empty directory block, a first batch of entries.
        let number = try inodes.allocate(in: transaction)[0]
        var directory = Inode(number: number, mode: Inode.typeDirectory | 0o755, linkCount: 2, time: Timestamp(seconds: 5),
                              parentHint: superblock.rootInode)
        var map = try InodeBlockMap(inode: directory, transaction: transaction, allocator: allocator, seed: seed)
        try DirectoryStore<NVM>.initialize(directory: number, volumeSeed: seed, map: &map, transaction: transaction)
        let store = DirectoryStore(directory: number, hashKey: superblock.directoryHashKey, volumeSeed: seed, transaction: transaction)
        var names: [[UInt8]] = []
        for index in 0 ..< 3000 {
            let name = Array("file-\(index).txt".utf8)
            try store.insert((name: name, inode: 100_000 + UInt64(index), type: 8), into: &map)
            names.append(name)
            if index % 500 == 499 {
                try map.finish(into: &directory)
                try inodes.write(directory, in: transaction)
                try transaction.commit()
                map = try InodeBlockMap(inode: directory, transaction: transaction, allocator: allocator, seed: seed)
            }
        }
        #expect(directory.allocatedBlocks > 1)

        // Everything is found again from NVM alone: fresh allocator, table and transaction.
        let fresh = MetadataTransaction(journal: journal)
        let reloadedAllocator = try BlockAllocator(nvm: nvm, device: superblock.device(.nvm)!, volumeSeed: seed)
        let reloadedInodes = try InodeTable(nvm: nvm, superblock: superblock, nvmAllocator: reloadedAllocator)
        let stored = try #require(try reloadedInodes.read(number, in: fresh))
        #expect(stored == directory)
        let reloadedMap = try InodeBlockMap(inode: stored, transaction: fresh, allocator: reloadedAllocator, seed: seed)
        let reader = DirectoryStore(directory: number, hashKey: superblock.directoryHashKey, volumeSeed: seed, transaction: fresh)
        for (index, name) in names.enumerated() {
            #expect(try reader.lookup(name, in: reloadedMap)?.inode == 100_000 + UInt64(index))
        }
        #expect(try reader.lookup(Array("missing".utf8), in: reloadedMap) == nil)
        #expect(try reader.count(reloadedMap) == 3000)
        // The blocks in use are exactly the inode chunk's, the directory's and its tree's.
        #expect(reloadedAllocator.freeBlocks < freeBefore)
        let report = try Volume(nvm: nvm, nvmName: "sim", lowerDevices: [], repair: false).spaceReport()
        #expect(report.problems.isEmpty && report.inodesUsed == 2)
    }
}
