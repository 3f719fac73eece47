import Testing
@testable import KernFS
@testable import LibFS
@testable import ShaleFormat
@testable import ShaleMedia

/// fsck's checker and repair on real volumes: a tree built through LibFS's log and the
/// digest, then one thing broken at a time; the checker must name exactly that problem, and
/// repair must fix what it claims with every file's data intact.
struct CheckerTests {
    typealias NVM = SimulatedPersistentMemory

    /// A volume holding:
    ///   /docs/readme.txt (+ hard link /docs/readme-link), /docs/big.bin (5 extents: a tree),
    ///   /other.txt, /empty/, and with `hashed`, /many/ with 300 files (an extendible hash).
    final class Fixture {
        let world: DigestTests.World
        var root: UInt64 { world.superblock.rootInode }
        var docs: UInt64 = 0, readme: UInt64 = 0, big: UInt64 = 0, other: UInt64 = 0, empty: UInt64 = 0, many: UInt64 = 0
        var nvm: NVM { world.nvm }
        var seed: UInt32 { world.superblock.volumeID.checksumSeed }
        var layout: NVMLayout { world.superblock.layout }
        var nvmData: DeviceDescriptor { world.superblock.device(.nvm)! }

        init(hashed: Bool = false) throws {
            world = try DigestTests.World()
            docs = try world.create("docs", in: root, directory: true)
            readme = try world.create("readme.txt", in: docs)
            try world.write(readme, Array("Shale keeps every acknowledged write.\n".utf8), at: 0)
            try world.log.append(.link(LinkArguments(parent: docs, inode: readme, time: world.tick(), name: Array("readme-link".utf8))))
            big = try world.create("big.bin", in: docs)
            for index in 0 ..< 5 {
                try world.write(big, [UInt8](repeating: UInt8(0x40 + index), count: 4096), at: UInt64(index) * 2 * 4096)
            }
            other = try world.create("other.txt", in: root)
            try world.write(other, Array("other".utf8), at: 0)
            empty = try world.create("empty", in: root, directory: true)
            if hashed {
                many = try world.create("many", in: root, directory: true)
                for index in 0 ..< 300 { try world.create("file-\(index)", in: many) }
            }
            try digestAll()
        }

        func digestAll() throws {
            while true {
                let report = try world.digestAll()
                #expect(report.refused.isEmpty, "\(report.refused)")
                if report.end != nil { break }
            }
        }

        func volume(repair: Bool = false) throws -> Volume<NVM> {
            try Volume(nvm: nvm, nvmName: "sim", lowerDevices: [], repair: repair)
        }

        func check() throws -> CheckReport {
            Checker(volume: try volume()).check()
        }

        func repair(limit: Int? = nil) throws -> FsckOutcome {
            try Checker(volume: try volume(repair: true)).repair(progress: nil, transactionLimitBytes: limit)
        }

        func slotOffset(_ number: UInt64) -> Int {
            let location = layout.inodeLocation(number)
            return Int(nvm.loadWord(at: Int(location.mapEntryOffset)) + location.offsetInChunk)
        }

        func inode(_ number: UInt64) throws -> Inode {
            try #require(try Inode.decode(nvm.view(at: slotOffset(number), count: Inode.encodedBytes), seed: seed, expectedNumber: number))
        }

        /// Rewrites an inode in place, sealed (a logic error, not bit rot).
        func rewrite(_ number: UInt64, _ change: (inout Inode) -> Void) throws {
            var inode = try inode(number)
            change(&inode)
            nvm.storePersist(inode.encode(seed: seed), at: slotOffset(number))
        }

        func flip(at offset: Int) {
            nvm.storePersist([nvm.load(at: offset, count: 1)[0] ^ 0x5A], at: offset)
        }

        /// The NVM data-area block of `inode`'s logical block `logical`.
        func block(of number: UInt64, logical: UInt64 = 0) throws -> UInt64 {
            let transaction = MetadataTransaction(journal: world.digester.journal)
            let map = try ExtentMap<NVM>(inode: try inode(number), transaction: transaction, nvmData: nvmData, seed: seed)
            let extent = try #require(try map.lookup(logical))
            return extent.physicalBlock + (logical - extent.logicalBlock)
        }

        func blockOffset(_ block: UInt64) -> Int { Int(nvmData.dataOffset + block * 4096) }

        /// Changes NVM bitmap block 0 and seals it again.
        func editBitmap(_ change: (inout AllocatorBitmapBlock) -> Void) throws {
            let offset = Int(nvmData.bitmapOffset)
            var bitmap = try AllocatorBitmapBlock.decode(nvm.view(at: offset, count: 4096), seed: seed, expectedTier: .nvm, expectedFirstBlock: 0)
            change(&bitmap)
            nvm.storePersist(bitmap.encode(seed: seed), at: offset)
        }

        func isUsed(_ block: UInt64) throws -> Bool {
            try Self.isUsed(block, nvm: nvm, fixture: self)
        }

        static func isUsed(_ block: UInt64, nvm: NVM, fixture: Fixture) throws -> Bool {
            let bitmap = try AllocatorBitmapBlock.decode(nvm.view(at: Int(fixture.nvmData.bitmapOffset), count: 4096), seed: fixture.seed,
                                                         expectedTier: .nvm, expectedFirstBlock: 0)
            return bitmap.isUsed(Int(block))
        }

        /// Changes a directory through the directory store, committed (as a buggy writer would).
        func editDirectory(_ directory: UInt64, _ change: (DirectoryStore<NVM>, inout InodeBlockMap<NVM>) throws -> Void) throws {
            let transaction = MetadataTransaction(journal: world.digester.journal)
            let allocator = try BlockAllocator(nvm: nvm, device: nvmData, volumeSeed: seed)
            var inode = try inode(directory)
            var map = try InodeBlockMap(inode: inode, transaction: transaction, allocator: allocator, seed: seed)
            let store = DirectoryStore(directory: directory, hashKey: world.superblock.directoryHashKey, volumeSeed: seed,
                                       transaction: transaction)
            try change(store, &map)
            try map.finish(into: &inode)
            transaction.write(inode.encode(seed: seed), at: UInt64(slotOffset(directory)))
            try transaction.commit()
        }

        func insert(_ name: String, inode target: UInt64, type: UInt8, into directory: UInt64) throws {
            try editDirectory(directory) { store, map in try store.insert((name: Array(name.utf8), inode: target, type: type), into: &map) }
        }

        /// Offset of directory block `logical` on NVM.
        func directoryBlockOffset(_ directory: UInt64, logical: UInt64 = 0) throws -> Int {
            blockOffset(try block(of: directory, logical: logical))
        }
    }

    // MARK: - A clean volume

    @Test func aCleanVolumeReportsNothingAndCountsExactly() throws {
        let fixture = try Fixture(hashed: true)
        let report = try fixture.check()
        #expect(report.problems.isEmpty, "\(report.problems)")
        #expect(report.notices.isEmpty, "\(report.notices)")
        #expect(report.ownershipComplete && report.namespaceComplete)
        let counts = report.counts
        #expect(counts.inodes == 307, "root, docs, readme, big, other, empty, many and 300 files")
        #expect(counts.directories == 4)
        #expect(counts.regularFiles == 303)
        #expect(counts.otherFiles == 0)
        #expect(counts.inodeChunks == 1)
        #expect(counts.logsInUse == 1, "the world's log is attached, everything digested")
        #expect(counts.undigestedRecords == 0)
        // Owned blocks are exactly the marked ones, and what the allocator says is used.
        let owned = try #require(counts.blocksOwned[.nvm])
        #expect(counts.blocksMarkedUsed[.nvm] == owned)
        let allocator = try BlockAllocator(nvm: fixture.nvm, device: fixture.nvmData, volumeSeed: fixture.seed)
        #expect(fixture.nvmData.dataBlocks - allocator.freeBlocks == owned)
        // The inode chunk (4 MiB), the root's block, docs, readme, 5 of big + its tree node,
        // other, empty, many's blocks.
        let chunkBlocks = fixture.layout.inodeChunkBytes / 4096
        let manyBlocks = try fixture.inode(fixture.many).allocatedBlocks
        #expect(owned == chunkBlocks + 1 + 1 + 1 + 6 + 1 + 1 + manyBlocks)
        #expect(manyBlocks > 3, "many is a hashed directory")
    }

    @Test func undigestedRecordsAreInformationNotProblems() throws {
        let fixture = try Fixture()
        let file = try fixture.world.create("pending.txt", in: fixture.root)
        try fixture.world.write(file, Array("later".utf8), at: 0)
        let report = try fixture.check()
        #expect(report.problems.isEmpty, "\(report.problems)")
        #expect(report.notices == [.undigested(region: fixture.world.grant.region, records: 2, bytes: fixture.world.log.usedBytes)])
        #expect(report.undigestedRecords == 2)
    }

    // MARK: - One thing broken at a time

    @Test func aFlippedByteInAnInodeIsThatInodeDamaged() throws {
        let fixture = try Fixture()
        fixture.flip(at: fixture.slotOffset(fixture.readme) + 40)
        let report = try fixture.check()
        #expect(report.problems.count == 1, "\(report.problems)")
        guard case let .inodeDamaged(inode, detail) = report.problems.first else { Issue.record("\(report.problems)"); return }
        #expect(inode == fixture.readme)
        #expect(detail.contains("checksum mismatch"))
        #expect(!report.ownershipComplete)
        #expect(report.namespaceComplete, "its entries call it a regular file: it names nothing")
        // Its block is marked used but unaccounted for: not called leaked.
        #expect(report.notices == [.unattributedBlocks(tier: .nvm, count: 1)])
    }

    /// An unreadable directory inode hides its entries: the file it names (also named
    /// elsewhere) seems to have fewer links than it has, which must not be called wrong.
    @Test func linkCountsAreNotCalledTooHighWhileADirectoryIsUnreadable() throws {
        let fixture = try Fixture()
        try fixture.editDirectory(fixture.root) { store, map in
            try store.insert((name: Array("readme-too".utf8), inode: fixture.readme, type: 8), into: &map)
        }
        try fixture.rewrite(fixture.readme) { $0.linkCount = 3 }
        #expect(try fixture.check().problems.isEmpty)
        fixture.flip(at: fixture.slotOffset(fixture.docs) + 50)
        let report = try fixture.check()
        #expect(report.problems.count == 2, "\(report.problems)")
        guard case .inodeDamaged(fixture.docs, _) = report.problems.first else { Issue.record("\(report.problems)"); return }
        #expect(report.problems.last == .orphan(inode: fixture.big, linkCount: 1, isDirectory: false))
        // Raised, it would be certain: 1 link is too few for the entry seen.
        try fixture.rewrite(fixture.readme) { $0.linkCount = 0 }
        #expect(try fixture.check().problems.contains(.linkCountWrong(inode: fixture.readme, stored: 0, actual: 1)))
    }

    /// A damaged inode its entries call a regular file names nothing: link counts elsewhere
    /// are still exact, too high included.
    @Test func aDamagedFileLeavesLinkCountsExact() throws {
        let fixture = try Fixture()
        fixture.flip(at: fixture.slotOffset(fixture.big) + 50)
        try fixture.rewrite(fixture.other) { $0.linkCount = 4 }
        let report = try fixture.check()
        #expect(report.problems.count == 2, "\(report.problems)")
        #expect(report.problems.last == .linkCountWrong(inode: fixture.other, stored: 4, actual: 1))
        #expect(report.namespaceComplete)
    }

    @Test func aFlippedByteInADirectoryBlockIsThatDirectoryDamagedAndItsFilesOrphans() throws {
        let fixture = try Fixture()
        fixture.flip(at: try fixture.directoryBlockOffset(fixture.docs) + 100)
        let report = try fixture.check()
        #expect(report.problems.count == 3, "\(report.problems)")
        guard case let .directoryDamaged(directory, detail) = report.problems.first else { Issue.record("\(report.problems)"); return }
        #expect(directory == fixture.docs)
        #expect(detail.contains("checksum mismatch"), "\(detail)")
        #expect(Array(report.problems.dropFirst()) == [.orphan(inode: fixture.readme, linkCount: 2, isDirectory: false),
                                                       .orphan(inode: fixture.big, linkCount: 1, isDirectory: false)])
        #expect(!report.namespaceComplete && report.ownershipComplete)
    }

    @Test func aFlippedByteInALogRecordIsDamageAtThatRecord() throws {
        let fixture = try Fixture()
        let log = fixture.world.log
        _ = try fixture.world.create("one", in: fixture.root)
        let second = log.head
        _ = try fixture.world.create("two", in: fixture.root)
        _ = try fixture.world.create("three", in: fixture.root)
        let sequence = log.nextSequence - 2
        let region = fixture.world.grant.region
        fixture.flip(at: Int(fixture.layout.logRegionOffset(region) + second) + 32 + 54)  // inside the name
        let report = try fixture.check()
        #expect(report.problems == [.logDamaged(region: region, offset: second, kind: .bodyChecksum, lostSequences: sequence ... sequence)])
        #expect(report.notices == [.undigested(region: region, records: 2, bytes: log.usedBytes)])
    }

    @Test func aTornLastRecordIsACleanEnd() throws {
        let fixture = try Fixture()
        let log = fixture.world.log
        _ = try fixture.world.create("one", in: fixture.root)
        let last = log.head
        _ = try fixture.world.create("two", in: fixture.root)
        let region = fixture.world.grant.region
        fixture.flip(at: Int(fixture.layout.logRegionOffset(region) + last) + 32 + 54)
        let report = try fixture.check()
        #expect(report.problems.isEmpty, "\(report.problems)")
        #expect(report.notices == [.undigested(region: region, records: 1, bytes: last - log.tail),
                                   .tornTail(region: region, offset: last, sequence: log.nextSequence - 1)])
    }

    /// One copy torn while the other is current is what a crash during an update leaves: a
    /// notice (recovery rewrites it). Both copies damaged is a problem.
    @Test func aTornLogDescriptorCopyIsANoticeAndTwoAreProblems() throws {
        let fixture = try Fixture()
        let region = fixture.world.grant.region
        let current = try #require(LogTable(nvm: fixture.nvm, superblock: fixture.world.superblock).read(region).copy)
        let stale = 1 - current
        fixture.flip(at: Int(fixture.layout.logDescriptorOffset(region: region, copy: stale)) + 9)
        let report = try fixture.check()
        #expect(report.problems.isEmpty, "\(report.problems)")
        let torn = report.notices.compactMap { notice -> (Int, Int, String)? in
            if case let .logDescriptorCopyTorn(region, copy, detail) = notice { return (region, copy, detail) } else { return nil }
        }
        #expect(torn.count == 1 && torn[0].0 == region && torn[0].1 == stale && torn[0].2.contains("checksum"), "\(report.notices)")

        fixture.flip(at: Int(fixture.layout.logDescriptorOffset(region: region, copy: current)) + 9)
        let both = try fixture.check()
        #expect(both.problems.count == 2, "\(both.problems)")
        guard case let .logDescriptorDamaged(damagedRegion, _, detail) = both.problems.first else { Issue.record("\(both.problems)"); return }
        #expect(damagedRegion == region && detail.contains("checksum"))
    }

    /// Recovery rewrites a copy a crash tore (from the current one), with a free region's
    /// epoch moved past any the torn update could have claimed; the region is usable again.
    @Test func recoveryRewritesATornDescriptorCopy() throws {
        let fixture = try Fixture()
        let table = LogTable(nvm: fixture.nvm, superblock: fixture.world.superblock)
        // A free region never used: write it twice so both copies hold a state.
        let region = (0 ..< table.regionCount).first { table.read($0).descriptor == nil && $0 != fixture.world.grant.region }!
        let grant = try table.attach(ownerPID: 1, ownerUID: 0, nowSeconds: 0)
        #expect(grant.region == region)
        try table.release(region)
        let before = try #require(table.read(region).descriptor)
        let stale = 1 - table.read(region).copy!
        fixture.flip(at: Int(fixture.layout.logDescriptorOffset(region: region, copy: stale)) + 9)
        #expect(table.read(region).damage.count == 1)
        #expect(table.repairInterruptedUpdates().contains(region))
        let after = table.read(region)
        #expect(after.damage.isEmpty)
        #expect(after.descriptor?.state == .free && after.descriptor?.epoch == before.epoch + 1)
        let again = try table.attach(ownerPID: 2, ownerUID: 0, nowSeconds: 0)
        #expect(again.region == region && again.epoch == before.epoch + 2)
    }

    @Test func aClearedBitmapBitIsAnOwnedBlockMarkedFree() throws {
        let fixture = try Fixture()
        let block = try fixture.block(of: fixture.big, logical: 2)
        try fixture.editBitmap { $0.setUsed(Int(block), false) }
        let report = try fixture.check()
        #expect(report.problems == [.blockFreeButOwned(tier: .nvm, blocks: block ..< block + 1, owner: .data(inode: fixture.big, logicalBlock: 2))])
    }

    @Test func aSetBitmapBitIsALeakedBlock() throws {
        let fixture = try Fixture()
        let free = fixture.nvmData.dataBlocks - 10
        try fixture.editBitmap { $0.setUsed(Int(free), true); $0.setUsed(Int(free) + 1, true) }
        let report = try fixture.check()
        #expect(report.problems == [.blockLeaked(tier: .nvm, blocks: free ..< free + 2)])
    }

    @Test func aFlippedBitmapByteIsADamagedBitmapBlock() throws {
        let fixture = try Fixture()
        fixture.flip(at: Int(fixture.nvmData.bitmapOffset) + 64)
        let report = try fixture.check()
        #expect(report.problems.count == 1)
        guard case let .bitmapDamaged(tier, index, detail) = report.problems.first else { Issue.record("\(report.problems)"); return }
        #expect(tier == .nvm && index == 0 && detail.contains("checksum mismatch"))
    }

    @Test func aWrongStatedFreeCountIsReportedWithBothCounts() throws {
        let fixture = try Fixture()
        let offset = Int(fixture.nvmData.bitmapOffset)
        var bytes = fixture.nvm.load(at: offset, count: 4096)
        let stated = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 12, as: UInt32.self) }
        bytes.withUnsafeMutableBytes { buffer in
            buffer.storeBytes(of: stated + 3, toByteOffset: 12, as: UInt32.self)
            StructureChecksum.seal(buffer, crcOffset: 4, seed: fixture.seed)
        }
        fixture.nvm.storePersist(bytes, at: offset)
        let report = try fixture.check()
        #expect(report.problems == [.bitmapFreeCountWrong(tier: .nvm, bitmapBlock: 0, stated: stated + 3, actual: stated)])
    }

    @Test func aWrongLinkCountIsReportedWithTheRightOne() throws {
        let fixture = try Fixture()
        try fixture.rewrite(fixture.readme) { $0.linkCount = 5 }
        try fixture.rewrite(fixture.docs) { $0.linkCount = 3 }
        let report = try fixture.check()
        #expect(report.problems == [.linkCountWrong(inode: fixture.docs, stored: 3, actual: 2),
                                    .linkCountWrong(inode: fixture.readme, stored: 5, actual: 2)])
    }

    @Test func aDuplicatedExtentIsABlockOwnedTwiceAndTheOldBlockLeaked() throws {
        let fixture = try Fixture()
        let shared = try fixture.block(of: fixture.readme)
        let old = try fixture.block(of: fixture.other)
        try fixture.rewrite(fixture.other) { $0.mapping = .extents([Extent(logicalBlock: 0, physicalBlock: shared, blockCount: 1, tier: .nvm)]) }
        let report = try fixture.check()
        let twice = CheckProblem.blockOwnedTwice(tier: .nvm, blocks: shared ..< shared + 1, first: .data(inode: fixture.readme, logicalBlock: 0),
                                                 second: .data(inode: fixture.other, logicalBlock: 0))
        let leaked = CheckProblem.blockLeaked(tier: .nvm, blocks: old ..< old + 1)
        #expect(report.problems == (shared < old ? [twice, leaked] : [leaked, twice]))
    }

    @Test func anExtentOverlappingAnInodeChunkIsOwnedTwice() throws {
        let fixture = try Fixture()
        let old = try fixture.block(of: fixture.other)
        try fixture.rewrite(fixture.other) { $0.mapping = .extents([Extent(logicalBlock: 7, physicalBlock: 3, blockCount: 1, tier: .nvm)]) }
        let report = try fixture.check()
        #expect(report.problems == [.blockOwnedTwice(tier: .nvm, blocks: 3 ..< 4, first: .inodeChunk(0), second: .data(inode: fixture.other, logicalBlock: 7)),
                                    .blockLeaked(tier: .nvm, blocks: old ..< old + 1)])
    }

    @Test func anExtentBeyondItsTierIsADamagedMap() throws {
        let fixture = try Fixture()
        let beyond = fixture.nvmData.dataBlocks
        try fixture.rewrite(fixture.other) {
            $0.mapping = .extents([Extent(logicalBlock: 0, physicalBlock: beyond, blockCount: 1, tier: .nvm)])
        }
        let report = try fixture.check()
        #expect(report.problems.count == 1, "\(report.problems)")
        guard case let .extentMapDamaged(inode, detail) = report.problems.first else { Issue.record("\(report.problems)"); return }
        #expect(inode == fixture.other && detail.contains("beyond the tier"))
        // other's real block is now nobody's that can be proven: not called leaked.
        #expect(report.notices == [.unattributedBlocks(tier: .nvm, count: 1)])
    }

    @Test func extentsBeyondEndOfFileAreNotProblems() throws {
        // fallocate with KEEP_SIZE leaves blocks past the size: legitimate.
        let fixture = try Fixture()
        try fixture.rewrite(fixture.big) { $0.size = 10 }
        #expect(try fixture.check().problems.isEmpty)
    }

    @Test func wrongAllocatedBlocksAndDirectorySizeAreReported() throws {
        let fixture = try Fixture()
        try fixture.rewrite(fixture.big) { $0.allocatedBlocks = 2 }
        try fixture.rewrite(fixture.docs) { $0.size = 12_288 }
        let report = try fixture.check()
        #expect(report.problems == [.directorySizeWrong(inode: fixture.docs, stored: 12_288, actual: 4096),
                                    .allocatedBlocksWrong(inode: fixture.big, stored: 2, actual: 6)])
    }

    @Test func entriesPointingAtFreeOrImpossibleInodesAreDangling() throws {
        let fixture = try Fixture()
        let beyond = fixture.layout.inodeCapacity + 1
        try fixture.insert("ghost", inode: 5000, type: 8, into: fixture.docs)
        try fixture.insert("far", inode: beyond, type: 8, into: fixture.docs)
        let report = try fixture.check()
        #expect(Set(report.problems.map(\.description)) == Set([
            CheckProblem.danglingEntry(directory: fixture.docs, name: Array("ghost".utf8), inode: 5000, reason: .free).description,
            CheckProblem.danglingEntry(directory: fixture.docs, name: Array("far".utf8), inode: beyond, reason: .outsideTable).description,
        ]))
        #expect(report.problems.count == 2)
    }

    @Test func anEntryOfTheWrongTypeIsReportedAndStillCounted() throws {
        let fixture = try Fixture()
        try fixture.insert("typo", inode: fixture.readme, type: 4, into: fixture.root)
        let report = try fixture.check()
        #expect(report.problems == [.entryTypeWrong(directory: fixture.root, name: Array("typo".utf8), inode: fixture.readme, stored: 4, actual: 8),
                                    .linkCountWrong(inode: fixture.readme, stored: 2, actual: 3)])
    }

    @Test func aSecondEntryForADirectoryIsReported() throws {
        let fixture = try Fixture()
        try fixture.insert("again", inode: fixture.empty, type: 4, into: fixture.docs)
        try fixture.insert("loop", inode: fixture.root, type: 4, into: fixture.docs)
        let report = try fixture.check()
        #expect(Set(report.problems.map(\.description)) == Set([
            CheckProblem.directoryLinkedAgain(directory: fixture.docs, name: Array("again".utf8), inode: fixture.empty, parent: fixture.root).description,
            CheckProblem.directoryLinkedAgain(directory: fixture.docs, name: Array("loop".utf8), inode: fixture.root, parent: fixture.root).description,
        ]))
        #expect(report.problems.count == 2)
    }

    @Test func aWrongParentHintIsReported() throws {
        let fixture = try Fixture()
        try fixture.rewrite(fixture.docs) { $0.parentHint = fixture.empty }
        #expect(try fixture.check().problems == [.parentHintWrong(directory: fixture.docs, stored: fixture.empty, parent: fixture.root)])
    }

    @Test func aWrongHashedDirectoryEntryCountIsReported() throws {
        let fixture = try Fixture(hashed: true)
        let offset = try fixture.directoryBlockOffset(fixture.many)
        let root = try DirectoryBlock.decode(fixture.nvm.view(at: offset, count: 4096), seed: fixture.seed,
                                             expectedDirectory: fixture.many, expectedLogicalBlock: 0)
        guard case let .indexRoot(depth, count, buckets) = root.content else { Issue.record("not hashed"); return }
        #expect(count == 300)
        let wrong = DirectoryBlock(directory: fixture.many, logicalBlock: 0, content: .indexRoot(globalDepth: depth, entryCount: 301, bucketCount: buckets))
        fixture.nvm.storePersist(wrong.encode(seed: fixture.seed), at: offset)
        #expect(try fixture.check().problems == [.entryCountWrong(directory: fixture.many, stated: 301, actual: 300)])
    }

    @Test func unreachableInodesAreOrphans() throws {
        let fixture = try Fixture()
        // An unlinked file whose process died before releasing it, and a lost directory
        // holding a file (reported once, as the directory).
        let transaction = MetadataTransaction(journal: fixture.world.digester.journal)
        let numbers = try fixture.world.inodes.allocate(3, in: transaction)
        let time = Timestamp(seconds: 5)
        try fixture.world.inodes.write(Inode(number: numbers[0], mode: 0o100644, linkCount: 0, time: time), in: transaction)
        try transaction.commit()
        let lostDirectory = try fixture.world.create("lost", in: fixture.docs, directory: true)
        try fixture.world.create("inside", in: lostDirectory)
        try fixture.digestAll()
        try fixture.editDirectory(fixture.docs) { store, map in try store.remove(Array("lost".utf8), from: &map) }
        try fixture.rewrite(fixture.docs) { $0.linkCount = 2 }
        let report = try fixture.check()
        #expect(report.problems == [.orphan(inode: numbers[0], linkCount: 0, isDirectory: false),
                                    .orphan(inode: lostDirectory, linkCount: 2, isDirectory: true)])
    }

    /// Writes a new inode straight into the table (committed), and names it in the root.
    func place(_ fixture: Fixture, mode: UInt32, size: UInt64, mapping: (BlockAllocator<NVM>, MetadataTransaction<NVM>) throws -> Inode.Mapping,
               allocatedBlocks: UInt64 = 0, name: String?, type: UInt8) throws -> UInt64 {
        let transaction = MetadataTransaction(journal: fixture.world.digester.journal)
        let allocator = try BlockAllocator(nvm: fixture.nvm, device: fixture.nvmData, volumeSeed: fixture.seed)
        let inodes = try InodeTable(nvm: fixture.nvm, superblock: fixture.world.superblock, nvmAllocator: allocator)
        let number = try inodes.allocate(in: transaction)[0]
        try inodes.write(Inode(number: number, mode: mode, linkCount: name == nil ? 0 : 1, size: size, allocatedBlocks: allocatedBlocks,
                               time: Timestamp(seconds: 9), parentHint: fixture.root, mapping: try mapping(allocator, transaction)),
                         in: transaction)
        try transaction.commit()
        if let name { try fixture.insert(name, inode: number, type: type, into: fixture.root) }
        return number
    }

    @Test func aShortSymlinksSizeIsItsTargetsLength() throws {
        let fixture = try Fixture()
        let link = try place(fixture, mode: 0o120777, size: 99, mapping: { _, _ in .inline(Array("docs/x".utf8)) }, name: "link", type: 10)
        let report = try fixture.check()
        #expect(report.problems == [.symlinkSizeWrong(inode: link, stored: 99, actual: 6)])
        #expect(report.counts.otherFiles == 1)
        #expect(try fixture.repair().final.isClean)
        #expect(try fixture.inode(link).size == 6)
    }

    @Test func aFIFOThatMapsBlocksIsReported() throws {
        let fixture = try Fixture()
        let fifo = try place(fixture, mode: 0o010644, size: 0, mapping: { allocator, transaction in
            let block = try allocator.allocate(1, in: transaction)[0].lowerBound
            return .extents([Extent(logicalBlock: 0, physicalBlock: block, blockCount: 1, tier: .nvm)])
        }, allocatedBlocks: 1, name: "fifo", type: 1)
        #expect(try fixture.check().problems == [.specialFileHasBlocks(inode: fifo, blocks: 1)])
    }

    @Test func onALiveVolumeAnUnlinkedOpenFileIsANote() throws {
        let fixture = try Fixture()
        let open = try place(fixture, mode: 0o100644, size: 0, mapping: { _, _ in .extents([]) }, name: nil, type: 8)
        #expect(try fixture.check().problems == [.orphan(inode: open, linkCount: 0, isDirectory: false)])
        let live = Checker(volume: try fixture.volume(), live: true).check()
        #expect(live.problems.isEmpty)
        #expect(live.notices == [.openUnlinked(inode: open)])
    }

    @Test func anInvalidInodeMapEntryIsReported() throws {
        let fixture = try Fixture()
        fixture.nvm.storeWord(3, at: Int(fixture.layout.inodeMapOffset + 8))
        fixture.nvm.persist(offset: Int(fixture.layout.inodeMapOffset + 8), count: 8)
        #expect(try fixture.check().problems == [.inodeMapEntryInvalid(chunk: 1, offset: 3)])
    }

    @Test func aDamagedSuperblockCopyIsAProblemReadOnlyAndRepairedAtOpenForWriting() throws {
        let fixture = try Fixture()
        fixture.flip(at: 4096 + 300)
        let report = try fixture.check()
        #expect(report.problems.count == 1)
        guard case let .superblockCopy(copy, problem) = report.problems.first else { Issue.record("\(report.problems)"); return }
        #expect(copy == "B" && problem.contains("is damaged"))
        let repaired = Checker(volume: try fixture.volume(repair: true)).check()
        #expect(repaired.problems.isEmpty)
        #expect(repaired.notices.count == 1)
        #expect(try fixture.check().problems.isEmpty)
    }

    /// A committed journal transaction a crash left unapplied: a read-only check sees the
    /// shared area as recovery will leave it.
    @Test func aPendingJournalTransactionIsCheckedAsIfApplied() throws {
        let fixture = try Fixture()
        var changed = try fixture.inode(fixture.readme)
        changed.linkCount = 7
        let journal = MetadataJournal(nvm: fixture.nvm, superblock: fixture.world.superblock)
        let sequence = journal.appliedSequence + 1
        let encoded = JournalTransactionHeader.encode(writes: [JournalWrite(offset: UInt64(fixture.slotOffset(fixture.readme)),
                                                                            bytes: changed.encode(seed: fixture.seed))],
                                                      sequence: sequence, seed: fixture.seed)
        let area = Int(fixture.layout.journalOffset) + JournalControl.transactionAreaOffset
        fixture.nvm.storePersist(encoded.body, at: area + JournalTransactionHeader.encodedBytes)
        fixture.nvm.storePersist(encoded.header, at: area)
        let readOnly = try fixture.check()
        #expect(readOnly.notices == [.journalPending(sequence: sequence, writes: 1)])
        #expect(readOnly.problems == [.linkCountWrong(inode: fixture.readme, stored: 7, actual: 2)])
        #expect(try fixture.inode(fixture.readme).linkCount == 2, "nothing written")
        // Repairing through a read-only open would overwrite the transaction: refused.
        let refused = try Checker(volume: try fixture.volume()).repair()
        #expect(refused.refusal?.contains("opened read-only") == true)
        #expect(try fixture.inode(fixture.readme).linkCount == 2, "nothing written")
        let opened = Checker(volume: try fixture.volume(repair: true)).check()
        #expect(opened.notices == [.journalReplayed(sequence: sequence, writes: 1)])
        #expect(opened.problems == readOnly.problems)
    }

    @Test func theCheckWritesNothing() throws {
        let fixture = try Fixture()
        try fixture.rewrite(fixture.readme) { $0.linkCount = 9 }
        try fixture.editBitmap { $0.setUsed(Int(fixture.nvmData.dataBlocks - 1), true) }
        let before = fixture.nvm.load(at: 0, count: fixture.nvm.byteCount)
        _ = try fixture.check()
        #expect(fixture.nvm.load(at: 0, count: fixture.nvm.byteCount) == before)
    }

    @Test func progressCoversEveryPhase() throws {
        let fixture = try Fixture()
        var seen: [CheckProgress] = []
        _ = Checker(volume: try fixture.volume()).check { seen.append($0) }
        for phase in [CheckProgress.Phase.logs, .inodes, .directories, .bitmaps] {
            let last = try #require(seen.last { $0.phase == phase })
            #expect(last.done == last.total && last.total > 0, "\(phase)")
        }
        #expect(seen.last { $0.phase == .inodes }?.total == UInt64(fixture.layout.inodesPerChunk))
    }
}

/// `fsck --repair`: fixes what it claims, loses no file, is crash-safe, refuses what it must.
struct CheckRepairTests {
    typealias Fixture = CheckerTests.Fixture
    typealias NVM = SimulatedPersistentMemory

    /// A file with data whose entry is gone and whose link count is 0: what a process that
    /// unlinked an open file and then died leaves behind (once orphan handling lands).
    func leaveAnOrphan(_ fixture: Fixture) throws -> (inode: UInt64, block: UInt64) {
        let gone = try fixture.world.create("gone.bin", in: fixture.root)
        try fixture.world.write(gone, [UInt8](repeating: 7, count: 9000), at: 0)
        try fixture.digestAll()
        try fixture.editDirectory(fixture.root) { store, map in try store.remove(Array("gone.bin".utf8), from: &map) }
        try fixture.rewrite(gone) { $0.linkCount = 0 }
        return (gone, try fixture.block(of: gone))
    }

    /// Several things broken at once, all of them repairable.
    func breakRepairably(_ fixture: Fixture) throws -> (leaked: UInt64, unmarked: UInt64) {
        try fixture.rewrite(fixture.readme) { $0.linkCount = 5 }
        try fixture.rewrite(fixture.docs) { $0.linkCount = 4; $0.parentHint = fixture.empty }
        try fixture.rewrite(fixture.big) { $0.allocatedBlocks = 1 }
        let leaked = fixture.nvmData.dataBlocks - 3
        let unmarked = try fixture.block(of: fixture.big, logical: 4)
        try fixture.editBitmap { $0.setUsed(Int(leaked), true); $0.setUsed(Int(unmarked), false) }
        try fixture.insert("ghost", inode: 5000, type: 8, into: fixture.docs)
        try fixture.insert("far", inode: fixture.layout.inodeCapacity + 9, type: 8, into: fixture.docs)
        try fixture.insert("again", inode: fixture.empty, type: 4, into: fixture.docs)
        try fixture.insert("loop", inode: fixture.root, type: 4, into: fixture.docs)
        return (leaked, unmarked)
    }

    @Test func repairFixesWhatItClaimsAndKeepsEveryFile() throws {
        let fixture = try Fixture(hashed: true)
        let orphan = try leaveAnOrphan(fixture)
        let tree = try fixture.world.tree()
        let bigBytes = try fixture.world.file(fixture.big)
        let (leaked, unmarked) = try breakRepairably(fixture)
        // And a stated free count that disagrees with the bits, sealed.
        let offset = Int(fixture.nvmData.bitmapOffset)
        var bytes = fixture.nvm.load(at: offset, count: 4096)
        bytes.withUnsafeMutableBytes { buffer in
            buffer.storeBytes(of: buffer.loadUnaligned(fromByteOffset: 12, as: UInt32.self) &+ 1, toByteOffset: 12, as: UInt32.self)
            StructureChecksum.seal(buffer, crcOffset: 4, seed: fixture.seed)
        }
        fixture.nvm.storePersist(bytes, at: offset)

        let outcome = try fixture.repair()
        let found = outcome.initial.problems
        #expect(found.count == 12, "\(found.map(\.description).joined(separator: "\n"))")
        #expect(found.allSatisfy { $0.isRepairable })
        #expect(outcome.refusal == nil)
        #expect(outcome.final.isClean, "\(outcome.final.problems)")
        #expect(outcome.skipped.isEmpty, "\(outcome.skipped)")
        // Every problem found has its repair; the orphan's blocks came free in round two.
        for problem in found {
            #expect(outcome.repairs.contains { $0.problem == problem }, "no repair for \(problem)")
        }
        #expect(outcome.repairs.contains { if case .blockLeaked(_, let blocks) = $0.problem { blocks.contains(orphan.block) } else { false } })
        #expect(outcome.rounds == 2)
        #expect(try fixture.check().problems.isEmpty)
        // Nothing acknowledged was lost.
        #expect(try fixture.world.tree() == tree)
        #expect(try fixture.world.file(fixture.big) == bigBytes)
        #expect(try !fixture.isUsed(leaked))
        #expect(try fixture.isUsed(unmarked))
        #expect(try !fixture.isUsed(orphan.block))
        #expect(try fixture.inode(fixture.docs).linkCount == 2)
        #expect(try fixture.inode(fixture.docs).parentHint == fixture.root)
        #expect(try fixture.inode(fixture.readme).linkCount == 2)
        #expect(try fixture.inode(fixture.big).allocatedBlocks == 6)
        let allocator = try BlockAllocator(nvm: fixture.nvm, device: fixture.nvmData, volumeSeed: fixture.seed)
        #expect(fixture.nvmData.dataBlocks - allocator.freeBlocks == outcome.final.counts.blocksOwned[.nvm])
    }

    @Test func repairSetsEntryTypesAndHashedCounts() throws {
        let fixture = try Fixture(hashed: true)
        try fixture.insert("typo", inode: fixture.readme, type: 4, into: fixture.root)
        let offset = try fixture.directoryBlockOffset(fixture.many)
        let root = try DirectoryBlock.decode(fixture.nvm.view(at: offset, count: 4096), seed: fixture.seed,
                                             expectedDirectory: fixture.many, expectedLogicalBlock: 0)
        guard case let .indexRoot(depth, _, buckets) = root.content else { Issue.record("not hashed"); return }
        fixture.nvm.storePersist(DirectoryBlock(directory: fixture.many, logicalBlock: 0,
                                                content: .indexRoot(globalDepth: depth, entryCount: 7, bucketCount: buckets)).encode(seed: fixture.seed),
                                 at: offset)
        let outcome = try fixture.repair()
        #expect(outcome.initial.problems.count == 3, "\(outcome.initial.problems)")
        #expect(outcome.final.isClean, "\(outcome.final.problems)")
        let tree = try fixture.world.tree()
        #expect(tree.contains { $0.hasPrefix("/typo mode=100644 links=3") }, "the entry is kept as the file it names")
        #expect(tree.filter { $0.hasPrefix("/many/") }.count == 300)
    }

    @Test func aDamagedBitmapBlockIsRebuiltFromTheOwners() throws {
        let fixture = try Fixture()
        let owned = try #require(try fixture.check().counts.blocksOwned[.nvm])
        fixture.flip(at: Int(fixture.nvmData.bitmapOffset) + 200)
        let outcome = try fixture.repair()
        #expect(outcome.final.isClean, "\(outcome.final.problems)")
        #expect(outcome.repairs.map(\.done) == ["rebuilt from the owners of its blocks"])
        let allocator = try BlockAllocator(nvm: fixture.nvm, device: fixture.nvmData, volumeSeed: fixture.seed)
        #expect(fixture.nvmData.dataBlocks - allocator.freeBlocks == owned)
    }

    @Test func repairLeavesWhatItCannotFixAndSaysWhy() throws {
        let fixture = try Fixture()
        let orphan = try leaveAnOrphan(fixture)
        fixture.flip(at: fixture.slotOffset(fixture.other) + 20)   // unreadable: its blocks are unknown
        try fixture.rewrite(fixture.readme) { $0.linkCount = 1 }   // raised: always safe
        try fixture.editBitmap { $0.setUsed(Int(fixture.nvmData.dataBlocks - 2), true) }
        let outcome = try fixture.repair()
        #expect(outcome.repairs.map(\.problem) == [.linkCountWrong(inode: fixture.readme, stored: 1, actual: 2)])
        #expect(outcome.final.problems.count == 2, "\(outcome.final.problems)")
        guard case .inodeDamaged(fixture.other, _) = outcome.final.problems.first else { Issue.record("\(outcome.final.problems)"); return }
        #expect(outcome.final.problems.last == .orphan(inode: orphan.inode, linkCount: 0, isDirectory: false))
        #expect(Set(outcome.skipped.map(\.reason)) == ["the inode's contents are unknown; fsck does not guess them",
                                                       "not freed while some directory or inode is unreadable (it may be referenced there)"])
        // Neither the orphan's blocks nor the unattributed one were freed.
        #expect(try fixture.isUsed(orphan.block))
        #expect(try fixture.isUsed(fixture.nvmData.dataBlocks - 2))
        #expect(outcome.final.notices.contains(.unattributedBlocks(tier: .nvm, count: 2)))
    }

    @Test func anOrphanThatStillHasLinksIsKept() throws {
        let fixture = try Fixture()
        let orphan = try leaveAnOrphan(fixture)
        try fixture.rewrite(orphan.inode) { $0.linkCount = 1 }
        let outcome = try fixture.repair()
        #expect(outcome.repairs.isEmpty)
        #expect(outcome.final.problems == [.orphan(inode: orphan.inode, linkCount: 1, isDirectory: false)])
        #expect(outcome.skipped.first?.reason.contains("lost+found") == true)
        #expect(try fixture.world.file(orphan.inode) == [UInt8](repeating: 7, count: 9000))
    }

    @Test func repairRefusesWhileLogsHoldUndigestedRecords() throws {
        let fixture = try Fixture()
        try fixture.rewrite(fixture.readme) { $0.linkCount = 4 }
        try fixture.world.create("pending", in: fixture.root)
        let before = fixture.nvm.load(at: 0, count: fixture.nvm.byteCount)
        let outcome = try fixture.repair()
        #expect(outcome.refusal?.contains("shale digest") == true)
        #expect(outcome.repairs.isEmpty)
        #expect(outcome.final.problems == [.linkCountWrong(inode: fixture.readme, stored: 4, actual: 2)])
        #expect(fixture.nvm.load(at: 0, count: fixture.nvm.byteCount) == before)
        // Once digested, the same repair goes through.
        try fixture.digestAll()
        #expect(try fixture.repair().final.isClean)
    }

    @Test func aLargeRepairIsSplitIntoTransactionsThatFitTheJournal() throws {
        let fixture = try Fixture(hashed: true)
        let listing = try fixture.world.tree().filter { $0.hasPrefix("/many/") }
        #expect(listing.count == 300)
        let first = fixture.many + 1
        for number in first ..< first + 300 { try fixture.rewrite(number) { $0.linkCount = 3 } }
        let outcome = try fixture.repair(limit: 1024)
        #expect(outcome.initial.problems.count == 300)
        #expect(outcome.final.isClean)
        #expect(outcome.transactions >= 10, "\(outcome.transactions)")
    }

    /// A crash at any point of a repair (lines kept, dropped or torn) leaves a volume whose
    /// files are all intact, whose problems are among those found before (plus blocks a freed
    /// orphan left), and which a second repair makes clean.
    @Test func aCrashAnywhereInARepairLosesNothingAndRepairsAgain() throws {
        let fixture = try Fixture()
        let orphan = try leaveAnOrphan(fixture)
        let tree = try fixture.world.tree()
        _ = try breakRepairably(fixture)
        let initial = try fixture.check().problems
        let nvm = fixture.nvm
        let before = nvm.trace.events.count
        let outcome = try fixture.repair()
        #expect(outcome.final.isClean)
        let events = nvm.trace.events
        let model = nvm.trace.replay(initialImage: nvm.initialImage, eventCount: before)
        var generator = SplitMix64(seed: 11)
        var checked = 0
        for eventCount in before ... events.count {
            if eventCount > before { model.apply(events[eventCount - 1]) }
            let atFence = eventCount == before || events[eventCount - 1] == .fence
            guard atFence || generator.next() % 16 == 0 else { continue }
            let fates: [LineFate] = atFence ? [.drop, .keep, .tear(wordMask: UInt8(truncatingIfNeeded: generator.next()))] : [.keep]
            for fate in fates {
                let crashed = NVM(image: model.crashImage { _ in fate }, recordsTrace: false)
                let volume = try Volume(nvm: crashed, nvmName: "crashed", lowerDevices: [], repair: true)
                let report = Checker(volume: volume).check()
                for problem in report.problems {
                    let known = initial.contains(problem) || { if case .blockLeaked = problem { true } else { false } }()
                    #expect(known, "crash at event \(eventCount) with \(fate): new problem \(problem)")
                }
                let again = try DigestTests.World(nvm: crashed, superblock: volume.superblock)
                for file in [fixture.readme, fixture.big, fixture.other] {
                    #expect(try again.file(file) == fixture.world.file(file), "crash at event \(eventCount) with \(fate)")
                }
                let second = try Checker(volume: volume).repair()
                #expect(second.final.isClean, "crash at event \(eventCount) with \(fate): \(second.final.problems)")
                #expect(try again.tree() == tree, "crash at event \(eventCount) with \(fate)")
                #expect(try !CheckerTests.Fixture.isUsed(orphan.block, nvm: crashed, fixture: fixture))
                checked += 1
            }
        }
        #expect(checked > 40, "every fence of the repair, three fates each")
    }
}
