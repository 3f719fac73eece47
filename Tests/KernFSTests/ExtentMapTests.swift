import Testing
@testable import KernFS
@testable import ShaleFormat
@testable import ShaleMedia

struct ExtentMapTests {
    typealias NVM = SimulatedPersistentMemory

    static func setUp() throws -> (NVM, Superblock, BlockAllocator<NVM>, MetadataTransaction<NVM>) {
        let (nvm, superblock) = try MetadataJournalTests.volume()
        let allocator = try BlockAllocator(nvm: nvm, device: superblock.device(.nvm)!, volumeSeed: superblock.volumeID.checksumSeed)
        return (nvm, superblock, allocator, MetadataTransaction(journal: MetadataJournal(nvm: nvm, superblock: superblock)))
    }

    static func file(_ number: UInt64 = 77) -> Inode {
        Inode(number: number, mode: Inode.typeRegular | 0o644, linkCount: 1, time: Timestamp(seconds: 1))
    }

    /// Random maps and unmaps against a model of logical → physical blocks: lookups agree, and
    /// every physical block stops being referenced exactly when the model says.
    @Test func mapAndUnmapAgreeWithAModel() throws {
        let (_, superblock, _, transaction) = try Self.setUp()
        var map = try ExtentMap<NVM>(inode: Self.file(), transaction: transaction, nvmData: superblock.device(.nvm)!,
                                     seed: superblock.volumeID.checksumSeed)
        var model: [UInt64: UInt64] = [:]
        var generator = SplitMix64(seed: 12)
        var nextPhysical: UInt64 = 1000
        for _ in 0 ..< 2000 {
            let start = generator.next() % 500, length = 1 + generator.next() % 20
            var freedPhysical: [UInt64] = []
            if generator.next() % 3 == 0 {
                let freed = map.unmap(start ..< start + length)
                freedPhysical = freed.flatMap { Array($0.blocks) }
                let expected = (start ..< start + length).compactMap { model.removeValue(forKey: $0) }
                #expect(freedPhysical.sorted() == expected.sorted())
            } else {
                let physical = nextPhysical
                nextPhysical += length + generator.next() % 2  // sometimes contiguous with the last
                let freed = map.map(Extent(logicalBlock: start, physicalBlock: physical, blockCount: UInt32(length), tier: .nvm))
                freedPhysical = freed.flatMap { Array($0.blocks) }
                let expected = (start ..< start + length).compactMap { model[$0] }
                #expect(freedPhysical.sorted() == expected.sorted())
                for offset in 0 ..< length { model[start + offset] = physical + offset }
            }
        }
        for logical in 0 ..< 530 as Range<UInt64> {
            let found = map.lookup(logical).map { $0.physicalBlock + (logical - $0.logicalBlock) }
            #expect(found == model[logical], "logical block \(logical)")
        }
        for (a, b) in zip(map.extents, map.extents.dropFirst()) {
            #expect(a.logicalEnd <= b.logicalBlock)
        }
    }

    /// Holes and unwritten marks agree with a model of logical → (physical, unwritten): marking
    /// never moves a block, and neighbours that become alike merge again.
    @Test func holesAndUnwrittenMarksAgreeWithAModel() throws {
        let (_, superblock, _, transaction) = try Self.setUp()
        var map = try ExtentMap<NVM>(inode: Self.file(), transaction: transaction, nvmData: superblock.device(.nvm)!,
                                     seed: superblock.volumeID.checksumSeed)
        var model: [UInt64: (physical: UInt64, unwritten: Bool)] = [:]
        var generator = SplitMix64(seed: 21)
        var nextPhysical: UInt64 = 1000
        for _ in 0 ..< 1500 {
            let start = generator.next() % 400, length = 1 + generator.next() % 30
            let range = start ..< start + length
            switch generator.next() % 4 {
            case 0:
                map.unmap(range)
                for logical in range { model[logical] = nil }
            case 1:
                map.map(Extent(logicalBlock: start, physicalBlock: nextPhysical, blockCount: UInt32(length), tier: .nvm))
                for offset in 0 ..< length { model[start + offset] = (nextPhysical + offset, false) }
                nextPhysical += length
            default:
                let unwritten = generator.next() % 2 == 0
                map.setUnwritten(range, unwritten)
                for logical in range where model[logical] != nil { model[logical]!.unwritten = unwritten }
            }
            let window = 0 ..< UInt64(440)
            let holes = map.holes(in: window).flatMap { Array($0) }
            #expect(holes == window.filter { model[$0] == nil })
        }
        for logical in 0 ..< 440 as Range<UInt64> {
            let extent = map.lookup(logical)
            #expect(extent.map { $0.physicalBlock + (logical - $0.logicalBlock) } == model[logical]?.physical)
            #expect(extent.map { $0.flags.contains(.unwritten) } == model[logical]?.unwritten)
        }
        for (a, b) in zip(map.extents, map.extents.dropFirst()) {
            #expect(a.logicalEnd <= b.logicalBlock)
            let alike = a.flags == b.flags && a.logicalEnd == b.logicalBlock && a.physicalBlock + UInt64(a.blockCount) == b.physicalBlock
            #expect(!alike, "neighbours that continue each other are merged")
        }
        #expect(map.holes(in: 5 ..< 5) == [])
        #expect(map.holes(in: 10_000 ..< 10_010) == [10_000 ..< 10_010])
    }

    @Test func consecutiveBlocksMergeIntoOneExtent() throws {
        let (_, superblock, _, transaction) = try Self.setUp()
        var map = try ExtentMap<NVM>(inode: Self.file(), transaction: transaction, nvmData: superblock.device(.nvm)!, seed: 1)
        for block in 0 ..< 100 as Range<UInt64> {
            map.map(Extent(logicalBlock: block, physicalBlock: 5000 + block, blockCount: 1, tier: .nvm))
        }
        #expect(map.extents == [Extent(logicalBlock: 0, physicalBlock: 5000, blockCount: 100, tier: .nvm)])
    }

    /// Few extents stay in the inode; many go to a tree that reads back identically and whose
    /// old nodes are freed when it is rewritten. (The physical blocks are made up, inside the
    /// tier, and never allocated: only the map is under test.)
    @Test func storedMapsReadBackInlineOrAsATree() throws {
        let (_, superblock, allocator, transaction) = try Self.setUp()
        let seed = superblock.volumeID.checksumSeed
        let nvmData = superblock.device(.nvm)!
        var inode = Self.file()
        var map = try ExtentMap<NVM>(inode: inode, transaction: transaction, nvmData: nvmData, seed: seed)
        for index in 0 ..< 3 as Range<UInt64> {
            map.map(Extent(logicalBlock: index * 10, physicalBlock: 100 + index, blockCount: 1, tier: .nvm))
        }
        try map.store(into: &inode, transaction: transaction, allocator: allocator, seed: seed)
        guard case .extents = inode.mapping else { Issue.record("three extents belong in the inode"); return }

        let freeBefore = allocator.freeBlocks
        for index in 3 ..< 5_000 as Range<UInt64> {  // not contiguous: every one is its own extent
            map.map(Extent(logicalBlock: index * 10, physicalBlock: 100 + index, blockCount: 1, tier: .nvm))
        }
        try map.store(into: &inode, transaction: transaction, allocator: allocator, seed: seed)
        guard case let .tree(_, depth, count) = inode.mapping else { Issue.record("5,000 extents need a tree"); return }
        #expect(depth == 1 && count == 5_000)
        let nodes = freeBefore - allocator.freeBlocks
        #expect(nodes == UInt64((5_000 + ExtentNode.leafCapacity - 1) / ExtentNode.leafCapacity) + 1)
        try transaction.commit()

        let reloaded = try ExtentMap<NVM>(inode: inode, transaction: transaction, nvmData: nvmData, seed: seed)
        #expect(reloaded.extents.count == map.extents.count && reloaded.extents == map.extents)
        // Rewriting frees the old nodes and takes as many new ones.
        var again = reloaded
        again.unmap(0 ..< 1_000_000)
        #expect(again.extents.isEmpty)
        try again.store(into: &inode, transaction: transaction, allocator: allocator, seed: seed)
        #expect(allocator.freeBlocks == freeBefore)
        #expect(inode.mapping == .extents([]))
    }

    @Test func anExtentBeyondItsTierIsDamage() throws {
        let (_, superblock, _, transaction) = try Self.setUp()
        let nvmData = superblock.device(.nvm)!
        var inode = Self.file()
        inode.mapping = .extents([Extent(logicalBlock: 0, physicalBlock: nvmData.dataBlocks - 1, blockCount: 2, tier: .nvm)])
        #expect(throws: ExtentMapError.self) {
            _ = try ExtentMap<NVM>(inode: inode, transaction: transaction, nvmData: nvmData, seed: 1)
        }
        inode.mapping = .extents([Extent(logicalBlock: 0, physicalBlock: 0, blockCount: 1, tier: .hdd)])
        #expect(throws: ExtentMapError.self, "a tier the volume does not have") {
            _ = try ExtentMap<NVM>(inode: inode, transaction: transaction, nvmData: nvmData, seed: 1)
        }
    }

    @Test func aDamagedTreeNodeIsReported() throws {
        let (nvm, superblock, allocator, transaction) = try Self.setUp()
        let seed = superblock.volumeID.checksumSeed
        let nvmData = superblock.device(.nvm)!
        var inode = Self.file()
        var map = try ExtentMap<NVM>(inode: inode, transaction: transaction, nvmData: nvmData, seed: seed)
        for index in 0 ..< 500 as Range<UInt64> {
            map.map(Extent(logicalBlock: index * 4, physicalBlock: 9000 + index * 4, blockCount: 1, tier: .nvm))
        }
        try map.store(into: &inode, transaction: transaction, allocator: allocator, seed: seed)
        try transaction.commit()
        guard case let .tree(root, _, _) = inode.mapping else { Issue.record("expected a tree"); return }
        let offset = Int(nvmData.dataOffset + root * 4096) + 100
        nvm.storePersist([nvm.load(at: offset, count: 1)[0] ^ 0x40], at: offset)
        #expect(throws: ExtentMapError.self) {
            _ = try ExtentMap<NVM>(inode: inode, transaction: transaction, nvmData: nvmData, seed: seed)
        }
        // A node that belongs to another inode is refused too.
        var other = Self.file(78)
        other.mapping = inode.mapping
        #expect(throws: ExtentMapError.self) {
            _ = try ExtentMap<NVM>(inode: other, transaction: transaction, nvmData: nvmData, seed: seed)
        }
    }
}
