import Testing
@testable import KernFS
@testable import ShaleFormat
@testable import ShaleMedia

struct ExtentMapTests {
    typealias NVM = SimulatedPersistentMemory

    static func setUp(nvmBytes: Int = 40 << 20) throws -> (NVM, Superblock, BlockAllocator<NVM>, MetadataTransaction<NVM>) {
        let nvm = SimulatedPersistentMemory(byteCount: nvmBytes)
        var options = FormatOptions()
        options.logRegionCount = 2
        options.logRegionBytes = 1 << 20
        let superblock = try Formatter.format(nvm: nvm, nvmPathHint: "sim.nvm", lowerDevices: [], options: options)
        let allocator = try BlockAllocator(nvm: nvm, device: superblock.device(.nvm)!, volumeSeed: superblock.volumeID.checksumSeed)
        return (nvm, superblock, allocator, MetadataTransaction(journal: MetadataJournal(nvm: nvm, superblock: superblock)))
    }

    static func file(_ number: UInt64 = 77) -> Inode {
        Inode(number: number, mode: Inode.typeRegular | 0o644, linkCount: 1, time: Timestamp(seconds: 1))
    }

    /// A map under test, stored and committed now and then and sometimes read afresh from the
    /// inode, so that edits land on in-memory nodes, on nodes read back, and on the boundary
    /// between inline and tree.
    final class Harness {
        let superblock: Superblock
        let allocator: BlockAllocator<NVM>
        let transaction: MetadataTransaction<NVM>
        var inode = ExtentMapTests.file()
        var map: ExtentMap<NVM>
        let freeAtStart: UInt64
        var seed: UInt32 { superblock.volumeID.checksumSeed }
        var nvmData: DeviceDescriptor { superblock.device(.nvm)! }

        /// A made-up physical block for an extent of `length` blocks, inside the tier (extents
        /// are checked against it), from any number: only the map is under test.
        func physical(_ raw: UInt64, length: UInt64 = 1) -> UInt64 { 1 + raw % (nvmData.dataBlocks - length - 2) }

        init(nvmBytes: Int = 40 << 20) throws {
            (_, superblock, allocator, transaction) = try ExtentMapTests.setUp(nvmBytes: nvmBytes)
            map = try ExtentMap(inode: inode, transaction: transaction, nvmData: superblock.device(.nvm)!,
                                seed: superblock.volumeID.checksumSeed)
            freeAtStart = allocator.freeBlocks
        }

        /// Stores the map, keeps st_blocks by its delta, commits, and (if asked) reads it afresh.
        func store(reload: Bool) throws {
            try map.store(into: &inode, allocator: allocator)
            inode.allocatedBlocks = UInt64(Int64(inode.allocatedBlocks) + map.takeBlockDelta())
            try transaction.commit()
            if reload { map = try ExtentMap(inode: inode, transaction: transaction, nvmData: nvmData, seed: seed) }
        }

        /// The stored map's invariants: extents sorted and disjoint, the tree's nodes are all
        /// the blocks taken from the allocator (the data blocks here are made up, never
        /// allocated), and the block count kept by deltas is what a full walk finds.
        func checkStored() throws {
            let fresh = try ExtentMap<NVM>(inode: inode, transaction: transaction, nvmData: nvmData, seed: seed)
            let extents = try fresh.allExtents()
            for (a, b) in zip(extents, extents.dropFirst()) { #expect(a.logicalEnd <= b.logicalBlock) }
            let nodes = try fresh.allNodeBlocks()
            #expect(freeAtStart - allocator.freeBlocks == UInt64(nodes.count), "tree nodes are exactly the blocks in use")
            #expect(Set(nodes).count == nodes.count)
            #expect(inode.allocatedBlocks == (try fresh.allBlockCount()))
            switch inode.mapping {
            case let .extents(inline): #expect(inline.count <= Inode.inlineExtentCapacity)
            case let .tree(_, _, count): #expect(count > UInt64(Inode.inlineExtentCapacity) && count == UInt64(extents.count))
            case .inline: Issue.record("a file map never holds inline data")
            }
        }
    }

    /// Random maps and unmaps over thousands of extents (a tree of two levels) against a model
    /// of logical → physical blocks: lookups agree, and every physical block stops being
    /// referenced exactly when the model says, through stores, commits and fresh reads.
    @Test func mapAndUnmapAgreeWithAModel() throws {
        let harness = try Harness()
        var model: [UInt64: UInt64] = [:]
        var generator = SplitMix64(seed: 12)
        var nextPhysical: UInt64 = 1000
        var sawDepth = 0
        for step in 0 ..< 12_000 {
            // Mostly short extents spread over 40,000 blocks, so the tree grows; now and then a
            // long unmap, so leaves empty and leave it.
            let start = generator.next() % 40_000
            let length = generator.next() % 50 == 0 ? 1 + generator.next() % 3000 : 1 + generator.next() % 4
            if generator.next() % 4 == 0 {
                let freed = try harness.map.unmap(start ..< start + length)
                let freedPhysical = freed.flatMap { Array($0.blocks) }
                let expected = (start ..< start + length).compactMap { model.removeValue(forKey: $0) }
                #expect(freedPhysical.sorted() == expected.sorted())
            } else {
                let physical = harness.physical(nextPhysical, length: 3000)
                nextPhysical += length + generator.next() % 2  // sometimes contiguous with the last
                let freed = try harness.map.map(Extent(logicalBlock: start, physicalBlock: physical, blockCount: UInt32(length), tier: .nvm))
                let freedPhysical = freed.flatMap { Array($0.blocks) }
                let expected = (start ..< start + length).compactMap { model[$0] }
                #expect(freedPhysical.sorted() == expected.sorted())
                for offset in 0 ..< length { model[start + offset] = physical + offset }
            }
            if step % 100 == 99 {
                try harness.store(reload: step % 300 == 299)
                if case let .tree(_, depth, _) = harness.inode.mapping { sawDepth = max(sawDepth, Int(depth)) }
            }
            if step % 3000 == 2999 {
                try harness.checkStored()
                for _ in 0 ..< 500 {
                    let logical = generator.next() % 43_100
                    let found = try harness.map.lookup(logical).map { $0.physicalBlock + (logical - $0.logicalBlock) }
                    #expect(found == model[logical], "logical block \(logical)")
                }
            }
        }
        try harness.store(reload: true)
        try harness.checkStored()
        #expect(sawDepth >= 1, "the map grew a tree")
        let all = try harness.map.allExtents()
        var mapped: [UInt64: UInt64] = [:]
        for extent in all {
            for offset in 0 ..< UInt64(extent.blockCount) { mapped[extent.logicalBlock + offset] = extent.physicalBlock + offset }
        }
        #expect(mapped == model)
        // Unmapping everything empties the tree and gives every node back.
        try harness.map.unmap(0 ..< UInt64.max / 4096)
        try harness.store(reload: true)
        #expect(harness.inode.mapping == .extents([]))
        #expect(harness.allocator.freeBlocks == harness.freeAtStart)
        #expect(harness.inode.allocatedBlocks == 0)
    }

    /// Tens of thousands of single-block extents (never contiguous) build a tree of depth two;
    /// lookups descend it and every extent reads back.
    @Test func aLargeMapGrowsATreeOfSeveralLevels() throws {
        let harness = try Harness()
        let count: UInt64 = 40_000
        var generator = SplitMix64(seed: 5)
        // Inserted in a shuffled order, so splits happen all over the tree.
        var order = Array(0 ..< count)
        for index in order.indices.reversed() { order.swapAt(index, Int(generator.next() % UInt64(index + 1))) }
        for (step, slot) in order.enumerated() {
            try harness.map.map(Extent(logicalBlock: slot * 2, physicalBlock: harness.physical(slot * 3), blockCount: 1, tier: .nvm))
            if step % 100 == 99 { try harness.store(reload: step % 4000 == 3999) }
        }
        try harness.store(reload: true)
        guard case let .tree(_, depth, extents) = harness.inode.mapping else { Issue.record("expected a tree"); return }
        #expect(depth == 2 && extents == count)
        try harness.checkStored()
        for slot in stride(from: 0, to: count, by: 97) {
            #expect(try harness.map.lookup(slot * 2)?.physicalBlock == harness.physical(slot * 3))
            #expect(try harness.map.lookup(slot * 2 + 1) == nil)
        }
    }

    /// The point of an in-place tree: changing one block of a large map reads a path and
    /// rewrites one leaf, so the transaction journals a few hundred bytes, not the tree.
    @Test func aChangeToALargeMapRewritesOnlyWhatItTouches() throws {
        let harness = try Harness()
        for slot in 0 ..< 20_000 as Range<UInt64> {
            try harness.map.map(Extent(logicalBlock: slot * 2, physicalBlock: harness.physical(slot * 3), blockCount: 1, tier: .nvm))
        }
        try harness.store(reload: true)
        let nodesBefore = try harness.map.allNodeBlocks().count
        #expect(nodesBefore > 100)
        harness.map = try ExtentMap(inode: harness.inode, transaction: harness.transaction, nvmData: harness.nvmData, seed: harness.seed)
        #expect(harness.transaction.isEmpty)
        try harness.map.map(Extent(logicalBlock: 20_001, physicalBlock: 7, blockCount: 1, tier: .nvm))
        try harness.map.store(into: &harness.inode, allocator: harness.allocator)
        // One leaf (the entries after the new one shift) and nothing else: the tree has
        // over a hundred nodes.
        #expect(harness.transaction.journalBytes < 4096 + 256, "journal bytes: \(harness.transaction.journalBytes)")
        #expect(try harness.map.lookup(20_001)?.physicalBlock == 7)
    }

    /// Holes and unwritten marks agree with a model of logical → (physical, unwritten): marking
    /// never moves a block, and neighbours in one leaf that become alike merge again.
    @Test func holesAndUnwrittenMarksAgreeWithAModel() throws {
        let harness = try Harness()
        var model: [UInt64: (physical: UInt64, unwritten: Bool)] = [:]
        var generator = SplitMix64(seed: 21)
        var nextPhysical: UInt64 = 1000
        let window = 0 ..< UInt64(3000)
        for step in 0 ..< 4000 {
            let start = generator.next() % 2900, length = 1 + generator.next() % 12
            let range = start ..< start + length
            switch generator.next() % 4 {
            case 0:
                try harness.map.unmap(range)
                for logical in range { model[logical] = nil }
            case 1:
                let physical = harness.physical(nextPhysical, length: 20)
                try harness.map.map(Extent(logicalBlock: start, physicalBlock: physical, blockCount: UInt32(length), tier: .nvm))
                for offset in 0 ..< length { model[start + offset] = (physical + offset, false) }
                nextPhysical += length + 1
            default:
                let unwritten = generator.next() % 2 == 0
                try harness.map.setUnwritten(range, unwritten)
                for logical in range where model[logical] != nil { model[logical]!.unwritten = unwritten }
            }
            if step % 100 == 99 {
                try harness.store(reload: step % 200 == 199)
                let holes = try harness.map.holes(in: window).flatMap { Array($0) }
                #expect(holes == window.filter { model[$0] == nil })
            }
        }
        try harness.store(reload: true)
        try harness.checkStored()
        for logical in window {
            let extent = try harness.map.lookup(logical)
            #expect(extent.map { $0.physicalBlock + (logical - $0.logicalBlock) } == model[logical]?.physical)
            #expect(extent.map { $0.flags.contains(.unwritten) } == model[logical]?.unwritten)
        }
        #expect(try harness.map.holes(in: 5 ..< 5) == [])
        #expect(try harness.map.holes(in: 10_000 ..< 10_010) == [10_000 ..< 10_010])
    }

    @Test func consecutiveBlocksMergeIntoOneExtent() throws {
        let (_, superblock, _, transaction) = try Self.setUp()
        let map = try ExtentMap<NVM>(inode: Self.file(), transaction: transaction, nvmData: superblock.device(.nvm)!, seed: 1)
        for block in 0 ..< 100 as Range<UInt64> {
            try map.map(Extent(logicalBlock: block, physicalBlock: 5000 + block, blockCount: 1, tier: .nvm))
        }
        #expect(try map.allExtents() == [Extent(logicalBlock: 0, physicalBlock: 5000, blockCount: 100, tier: .nvm)])
    }

    /// Few extents stay in the inode; many go to a tree that reads back identically; emptied,
    /// it gives its nodes back and the map returns to the inode.
    @Test func storedMapsReadBackInlineOrAsATree() throws {
        let harness = try Harness()
        for index in 0 ..< 3 as Range<UInt64> {
            try harness.map.map(Extent(logicalBlock: index * 10, physicalBlock: 100 + index, blockCount: 1, tier: .nvm))
        }
        try harness.store(reload: false)
        guard case .extents = harness.inode.mapping else { Issue.record("three extents belong in the inode"); return }

        for index in 3 ..< 5_000 as Range<UInt64> {  // not contiguous: every one is its own extent
            try harness.map.map(Extent(logicalBlock: index * 10, physicalBlock: 100 + index, blockCount: 1, tier: .nvm))
        }
        let expected = try harness.map.allExtents()
        try harness.store(reload: true)
        guard case let .tree(_, depth, count) = harness.inode.mapping else { Issue.record("5,000 extents need a tree"); return }
        #expect(depth == 1 && count == 5_000)
        let nodes = harness.freeAtStart - harness.allocator.freeBlocks
        #expect(nodes == UInt64((5_000 + ExtentNode.leafCapacity - 1) / ExtentNode.leafCapacity) + 1)
        #expect(try harness.map.allExtents() == expected)
        try harness.checkStored()

        // Down to three extents: back into the inode, every node freed.
        try harness.map.unmap(30 ..< 1_000_000)
        try harness.store(reload: true)
        #expect(harness.inode.mapping == .extents(Array(expected.prefix(3))))
        #expect(harness.allocator.freeBlocks == harness.freeAtStart)
        try harness.checkStored()
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

    /// A damaged root is reported when the map is opened; a damaged leaf when a lookup or a
    /// walk reaches it, while lookups elsewhere still work; a node of another inode is refused.
    @Test func aDamagedTreeNodeIsReported() throws {
        let (nvm, superblock, allocator, transaction) = try Self.setUp()
        let seed = superblock.volumeID.checksumSeed
        let nvmData = superblock.device(.nvm)!
        var inode = Self.file()
        let map = try ExtentMap<NVM>(inode: inode, transaction: transaction, nvmData: nvmData, seed: seed)
        for index in 0 ..< 500 as Range<UInt64> {
            try map.map(Extent(logicalBlock: index * 4, physicalBlock: 100 + index * 4, blockCount: 1, tier: .nvm))
        }
        try map.store(into: &inode, allocator: allocator)
        try transaction.commit()
        guard case let .tree(root, _, _) = inode.mapping else { Issue.record("expected a tree"); return }
        func flip(_ block: UInt64, at byte: Int) {
            let offset = Int(nvmData.dataOffset + block * 4096) + byte
            nvm.storePersist([nvm.load(at: offset, count: 1)[0] ^ 0x40], at: offset)
        }
        // Damage is found where a node is first read after an open (a new journal: nothing is
        // known to have verified yet).
        func opened() -> MetadataTransaction<NVM> { MetadataTransaction(journal: MetadataJournal(nvm: nvm, superblock: superblock)) }
        // The last leaf: lookups in it fail, the first leaf still answers.
        let fresh = try ExtentMap<NVM>(inode: inode, transaction: opened(), nvmData: nvmData, seed: seed)
        let leaves = try fresh.allNodeBlocks().dropFirst()
        flip(leaves.last!, at: 100)
        let damagedLeaf = try ExtentMap<NVM>(inode: inode, transaction: opened(), nvmData: nvmData, seed: seed)
        #expect(try damagedLeaf.lookup(0)?.physicalBlock == 100)
        #expect(throws: ExtentMapError.self) { _ = try damagedLeaf.lookup(499 * 4) }
        #expect(throws: ExtentMapError.self) { _ = try damagedLeaf.allExtents() }
        flip(leaves.last!, at: 100)

        flip(root, at: 100)
        #expect(throws: ExtentMapError.self) {
            _ = try ExtentMap<NVM>(inode: inode, transaction: opened(), nvmData: nvmData, seed: seed)
        }
        flip(root, at: 100)
        // A node that belongs to another inode is refused too.
        var other = Self.file(78)
        other.mapping = inode.mapping
        #expect(throws: ExtentMapError.self) {
            _ = try ExtentMap<NVM>(inode: other, transaction: transaction, nvmData: nvmData, seed: seed)
        }
        // So is a tree whose inode claims more extents than it holds (a walk counts them).
        var miscounted = inode
        miscounted.mapping = .tree(rootBlock: root, depth: 1, extentCount: 501)
        #expect(throws: ExtentMapError.self) {
            _ = try ExtentMap<NVM>(inode: miscounted, transaction: transaction, nvmData: nvmData, seed: seed).allExtents()
        }
    }
}
