import Testing
@testable import KernFS
@testable import LibFS
@testable import ShaleFormat
@testable import ShaleMedia

/// Digest, end to end on simulated NVM: a client logs operations through LibFS's
/// OperationLog, KernFS digests them into the shared area, and the tree is read back from
/// the shared area alone.
struct DigestTests {
    typealias NVM = SimulatedPersistentMemory

    final class World {
        let nvm: NVM
        let superblock: Superblock
        let allocator: BlockAllocator<NVM>
        let inodes: InodeTable<NVM>
        let digester: Digester<NVM>
        let log: OperationLog<NVM>
        let grant: LogGrant
        var time = Timestamp(seconds: 1_764_000_000)

        init(nvm givenNVM: NVM? = nil, superblock givenSuperblock: Superblock? = nil) throws {
            let nvm: NVM, superblock: Superblock
            if let givenNVM, let givenSuperblock {
                (nvm, superblock) = (givenNVM, givenSuperblock)
            } else {
                (nvm, superblock) = try MetadataJournalTests.volume()
            }
            let seed = superblock.volumeID.checksumSeed
            let allocator = try BlockAllocator(nvm: nvm, device: superblock.device(.nvm)!, volumeSeed: seed)
            let inodes = try InodeTable(nvm: nvm, superblock: superblock, nvmAllocator: allocator)
            let table = LogTable(nvm: nvm, superblock: superblock)
            let grant: LogGrant
            if let attached = (0 ..< table.regionCount).first(where: { table.read($0).descriptor?.state == .attached }) {
                let descriptor = table.read(attached).descriptor!
                grant = LogGrant(region: attached, regionOffset: superblock.layout.logRegionOffset(attached),
                                 regionBytes: superblock.layout.logRegionBytes, epoch: descriptor.epoch,
                                 startOffset: descriptor.digestedOffset, startSequence: descriptor.digestedSequence, volumeSeed: seed)
            } else {
                grant = try table.attach(ownerPID: 1, ownerUID: 0, nowSeconds: 0)
            }
            self.nvm = nvm
            self.superblock = superblock
            self.allocator = allocator
            self.inodes = inodes
            self.grant = grant
            digester = Digester(nvm: nvm, superblock: superblock, allocator: allocator, inodes: inodes)
            log = OperationLog(nvm: nvm, grant: grant)
        }

        func newInode() throws -> UInt64 {
            try inodes.allocate(in: MetadataTransaction(journal: digester.journal))[0]
        }

        func tick() -> Timestamp {
            time.seconds += 1
            return time
        }

        @discardableResult
        func create(_ name: String, in parent: UInt64, directory: Bool = false) throws -> UInt64 {
            let inode = try newInode()
            let arguments = CreateArguments(parent: parent, inode: inode, mode: directory ? 0o040755 : 0o100644, uid: 0, gid: 0,
                                            rdev: 0, time: tick(), name: Array(name.utf8))
            try log.append(directory ? .mkdir(arguments) : .create(arguments))
            return inode
        }

        func write(_ inode: UInt64, _ bytes: [UInt8], at offset: UInt64) throws {
            if bytes.count <= WriteArguments.inlineBytesMax {
                try log.append(.write(WriteArguments(inode: inode, offset: offset, length: UInt32(bytes.count), time: tick(), inline: bytes)))
            } else {
                try bytes.withUnsafeBytes { data in
                    _ = try log.append(.write(WriteArguments(inode: inode, offset: offset, length: UInt32(bytes.count), time: tick(), inline: [])), data: data)
                }
            }
        }

        func digestAll(recovery: Bool = false) throws -> DigestReport {
            let report = try digester.digest(region: grant.region, recovery: recovery)
            log.reclaim(upTo: report.cursorOffset, sequence: report.cursorSequence)
            return report
        }

        /// The whole tree as text: path, type, links, size, blocks, mtime, ctime, extended
        /// attributes, and the content checksum or symlink target; read from the shared area
        /// through a fresh transaction.
        func tree() throws -> [String] {
            let transaction = MetadataTransaction(journal: digester.journal)
            var lines: [String] = []
            func walk(_ number: UInt64, _ path: String) throws {
                let inode = try #require(try inodes.read(number, in: transaction))
                var line = "\(path) mode=\(String(inode.mode, radix: 8)) links=\(inode.linkCount) size=\(inode.size)"
                line += " blocks=\(inode.allocatedBlocks) m=\(inode.mtime.seconds) c=\(inode.ctime.seconds)"
                let attributes = try digester.extendedAttributes(of: inode, in: transaction)
                if !attributes.isEmpty {
                    line += " xattrs=" + attributes.map { "\(String(decoding: $0.name, as: UTF8.self)):\($0.value.count):\(CRC32C.checksum($0.value))" }
                        .joined(separator: ",")
                }
                if inode.isDirectory {
                    lines.append(line)
                    let map = try InodeBlockMap(inode: inode, transaction: transaction, allocator: allocator, seed: superblock.volumeID.checksumSeed)
                    let store = DirectoryStore(directory: number, hashKey: superblock.directoryHashKey,
                                               volumeSeed: superblock.volumeID.checksumSeed, transaction: transaction)
                    let entries = try store.list(map, after: 0, limit: 1_000_000).entries.sorted { $0.name.lexicographicallyPrecedes($1.name) }
                    for entry in entries {
                        #expect(entry.type == Digester<NVM>.directoryType(try #require(try inodes.read(entry.inode, in: transaction)).mode))
                        try walk(entry.inode, path + "/" + String(decoding: entry.name, as: UTF8.self))
                    }
                } else if inode.mode & Inode.typeMask == Inode.typeSymlink {
                    line += " -> \(String(decoding: try digester.symlinkTarget(of: inode, in: transaction), as: UTF8.self))"
                    lines.append(line)
                } else {
                    line += " crc=\(CRC32C.checksum(try contents(inode, transaction)))"
                    lines.append(line)
                }
            }
            try walk(superblock.rootInode, "")
            return lines
        }

        /// A file's bytes: holes and unwritten extents read as zeros.
        func contents(_ inode: Inode, _ transaction: MetadataTransaction<NVM>) throws -> [UInt8] {
            let map = try ExtentMap<NVM>(inode: inode, transaction: transaction, nvmData: allocator.device,
                                         seed: superblock.volumeID.checksumSeed)
            var bytes = [UInt8](repeating: 0, count: Int(inode.size))
            for logical in 0 ..< (inode.size + 4095) / 4096 {
                guard let extent = try map.lookup(logical), !extent.flags.contains(.unwritten) else { continue }
                let block = extent.physicalBlock + (logical - extent.logicalBlock)
                let count = min(4096, Int(inode.size - logical * 4096))
                bytes.replaceSubrange(Int(logical * 4096) ..< Int(logical * 4096) + count,
                                      with: nvm.load(at: Int(allocator.nvmOffset(ofBlock: block)), count: count))
            }
            return bytes
        }

        func file(_ number: UInt64) throws -> [UInt8] {
            let transaction = MetadataTransaction(journal: digester.journal)
            return try contents(try #require(try inodes.read(number, in: transaction)), transaction)
        }

        // MARK: More operations, as LibFS will log them

        @discardableResult
        func symlink(_ name: String, in parent: UInt64, to target: [UInt8]) throws -> UInt64 {
            let inode = try newInode()
            try log.append(.symlink(SymlinkArguments(parent: parent, inode: inode, uid: 0, gid: 0, time: tick(), name: Array(name.utf8),
                                                     target: target)))
            return inode
        }

        func link(_ inode: UInt64, as name: String, in parent: UInt64) throws {
            try log.append(.link(LinkArguments(parent: parent, inode: inode, time: tick(), name: Array(name.utf8))))
        }

        func unlink(_ name: String, in parent: UInt64, inode: UInt64, directory: Bool = false) throws {
            let arguments = RemoveArguments(parent: parent, inode: inode, time: tick(), name: Array(name.utf8))
            try log.append(directory ? .rmdir(arguments) : .unlink(arguments))
        }

        @discardableResult
        func rename(_ oldParent: UInt64, _ oldName: String, to newParent: UInt64, _ newName: String, flags: RenameFlags = [],
                    source: UInt64, replaced: UInt64 = 0) throws -> Timestamp {
            let time = tick()
            try log.append(.rename(RenameArguments(oldParent: oldParent, oldName: Array(oldName.utf8), newParent: newParent,
                                                   newName: Array(newName.utf8), flags: flags, source: source, replaced: replaced, time: time)))
            return time
        }

        @discardableResult
        func fallocate(_ inode: UInt64, _ mode: FallocateMode, offset: UInt64, length: UInt64) throws -> Timestamp {
            let time = tick()
            try log.append(.fallocate(FallocateArguments(inode: inode, mode: mode, offset: offset, length: length, time: time)))
            return time
        }

        func truncate(_ inode: UInt64, to size: UInt64) throws {
            try log.append(.truncate(TruncateArguments(inode: inode, size: size, time: tick())))
        }

        @discardableResult
        func setxattr(_ inode: UInt64, _ name: String, _ value: [UInt8], flags: XattrFlags = []) throws -> Timestamp {
            let time = tick()
            try log.append(.setxattr(SetxattrArguments(inode: inode, flags: flags, name: Array(name.utf8), value: value, time: time)))
            return time
        }

        func removexattr(_ inode: UInt64, _ name: String) throws {
            try log.append(.removexattr(RemoveXattrArguments(inode: inode, name: Array(name.utf8), time: tick())))
        }

        /// The committed inode (nil when free).
        func inode(_ number: UInt64) throws -> Inode? {
            try inodes.read(number, in: MetadataTransaction(journal: digester.journal))
        }

        /// The committed entry `name` of `directory`.
        func entry(_ name: String, in directory: UInt64) throws -> DirectoryEntry? {
            let transaction = MetadataTransaction(journal: digester.journal)
            let parent = try #require(try inodes.read(directory, in: transaction))
            let map = try InodeBlockMap(inode: parent, transaction: transaction, allocator: allocator, seed: superblock.volumeID.checksumSeed)
            return try DirectoryStore(directory: directory, hashKey: superblock.directoryHashKey, volumeSeed: superblock.volumeID.checksumSeed,
                                      transaction: transaction).lookup(Array(name.utf8), in: map)
        }

        /// Free NVM blocks and used inodes as the shared area says (read afresh from NVM).
        func usage() throws -> (freeBlocks: UInt64, inodes: Int) {
            let fresh = try BlockAllocator(nvm: nvm, device: superblock.device(.nvm)!, volumeSeed: superblock.volumeID.checksumSeed)
            return (fresh.freeBlocks, try inodes.committedInodes { _ in true }.count)
        }

        /// Digests everything logged so far, expecting no refusal.
        func digestCleanly(sourceLocation: SourceLocation = #_sourceLocation) throws {
            let report = try digestAll()
            #expect(report.refused.isEmpty, "\(report.refused)", sourceLocation: sourceLocation)
        }
    }

    @Test func namespaceAndDataOperationsReachTheSharedArea() throws {
        let world = try World()
        let root = world.superblock.rootInode
        let src = try world.create("src", in: root, directory: true)
        let main = try world.create("main.c", in: src)
        try world.write(main, Array("int main() { return 0; }\n".utf8), at: 0)
        let big = try world.create("big.bin", in: root)
        var generator = SplitMix64(seed: 3)
        let payload = generator.bytes(20_000)
        try world.write(big, payload, at: 5000)                      // unaligned, spans blocks, leaves a hole
        try world.write(big, Array("patch".utf8), at: 6000)           // overwrite inside
        let doomed = try world.create("doomed", in: root)
        try world.log.append(.link(LinkArguments(parent: src, inode: main, time: world.tick(), name: Array("main-link.c".utf8))))
        try world.log.append(.unlink(RemoveArguments(parent: root, inode: doomed, time: world.tick(), name: Array("doomed".utf8))))
        try world.log.append(.truncate(TruncateArguments(inode: big, size: 9000, time: world.tick())))
        try world.log.append(.setattr(SetattrArguments(inode: main, valid: [.mode], mode: 0o600, uid: 0, gid: 0,
                                                       atime: Timestamp(seconds: 0), mtime: Timestamp(seconds: 0), ctime: world.tick())))
        let empty = try world.create("empty", in: root, directory: true)
        try world.log.append(.rmdir(RemoveArguments(parent: root, inode: empty, time: world.tick(), name: Array("empty".utf8))))

        let report = try world.digestAll()
        #expect(report.refused.isEmpty, "\(report.refused)")
        #expect(report.applied == 13)
        #expect(world.log.usedBytes == 0, "the log space is reclaimed")
        let tree = try world.tree()
        #expect(tree.count == 5, "\(tree)")
        #expect(tree[0].hasPrefix(" mode=40755 links=3"), "root: itself, '.', and src's '..'")
        #expect(tree.contains { $0.hasPrefix("/src mode=40755 links=2") })
        #expect(tree.contains { $0.hasPrefix("/src/main.c mode=100600 links=2 size=25") })
        #expect(!tree.contains { $0.contains("doomed") || $0.contains("empty") })
        var expected = [UInt8](repeating: 0, count: 9000)
        expected.replaceSubrange(5000 ..< 9000, with: payload[0 ..< 4000])
        expected.replaceSubrange(6000 ..< 6005, with: Array("patch".utf8))
        #expect(try world.file(big) == expected)
        #expect(try world.file(main) == Array("int main() { return 0; }\n".utf8))
        let space = try Volume(nvm: world.nvm, nvmName: "sim", lowerDevices: [], repair: false).spaceReport()
        #expect(space.problems.isEmpty && space.inodesUsed == 4, "\(space.problems) \(space.inodesUsed)")
    }

    @Test func recordsThatDoNotFitTheSharedAreaAreRefusedAndSkipped() throws {
        let world = try World()
        let root = world.superblock.rootInode
        let a = try world.create("a", in: root)
        try world.log.append(.unlink(RemoveArguments(parent: root, inode: a, time: world.tick(), name: Array("nope".utf8))))
        try world.log.append(.unlink(RemoveArguments(parent: root, inode: a + 1, time: world.tick(), name: Array("a".utf8))))
        try world.log.append(.create(CreateArguments(parent: a, inode: try world.newInode(), mode: 0o100644, uid: 0, gid: 0, rdev: 0,
                                                     time: world.tick(), name: Array("x".utf8))))
        try world.log.append(.create(CreateArguments(parent: root, inode: a, mode: 0o100644, uid: 0, gid: 0, rdev: 0,
                                                     time: world.tick(), name: Array("b".utf8))))
        try world.log.append(.rmdir(RemoveArguments(parent: root, inode: a, time: world.tick(), name: Array("a".utf8))))
        try world.log.append(.rename(RenameArguments(oldParent: root, oldName: Array("a".utf8), newParent: root, newName: Array("c".utf8),
                                                     flags: [], source: a + 7, replaced: 0, time: world.tick())))
        try world.log.append(.write(WriteArguments(inode: root, offset: 0, length: 1, time: world.tick(), inline: [1])))
        let report = try world.digestAll()
        #expect(report.applied == 1)
        let reasons = report.refused.map(\.reason)
        #expect(reasons.count == 7, "\(reasons)")
        #expect(reasons[0] == "the name does not exist")
        #expect(reasons[1].contains("refers to inode"))
        #expect(reasons[2].contains("is not a directory"))
        #expect(reasons[3].contains("already in use"))
        #expect(reasons[4] == "not a directory")
        #expect(reasons[5].contains("refers to inode"))
        #expect(reasons[6].contains("not a regular file"))
        #expect(try world.tree().count == 2, "only the root and a")
        #expect(world.log.usedBytes == 0, "refused records are consumed too")
    }

    /// Idempotence: a crash at any event of a digest (lines kept, dropped or torn), then
    /// recovery (journal replay, then every log digested and orphans freed), gives exactly the
    /// tree and the space usage a digest without a crash gives. The workload has every kind of
    /// record: namespace changes, symlinks short and long, every rename flavour, data into
    /// holes and into fallocated blocks, every fallocate mode, extended attributes up to 64 KiB,
    /// and a file written after its unlink (an orphan while recovering).
    @Test func aCrashAnywhereInADigestIsRepairedByDigestingAgain() throws {
        let world = try World()
        let root = world.superblock.rootInode
        let dir = try world.create("d", in: root, directory: true)
        var files: [UInt64] = []
        for index in 0 ..< 6 {
            let file = try world.create("f\(index)", in: dir)
            try world.write(file, [UInt8](repeating: UInt8(index + 1), count: 3000 + index * 1500), at: UInt64(index * 100))
            files.append(file)
        }
        try world.unlink("f0", in: dir, inode: files[0])
        try world.symlink("short", in: root, to: Array("d/f1".utf8))
        let long = try world.symlink("long", in: dir, to: (0 ..< 300).map { UInt8(ascii: "a") + UInt8($0 % 26) })
        try world.rename(dir, "f2", to: root, "moved", source: files[2])
        try world.rename(dir, "f3", to: dir, "f4", source: files[3], replaced: files[4])
        let e = try world.create("e", in: root, directory: true)
        let sub = try world.create("sub", in: e, directory: true)
        try world.create("inner", in: sub)
        try world.rename(e, "sub", to: dir, "sub", source: sub)
        try world.rename(root, "moved", to: dir, "sub", flags: .exchange, source: files[2], replaced: sub)
        try world.rename(dir, "f5", to: dir, "f5b", flags: .noReplace, source: files[5])
        try world.fallocate(files[1], [], offset: 0, length: 5 * 4096 + 7)
        try world.write(files[1], [UInt8](repeating: 0xEE, count: 5000), at: 2 * 4096 + 10)
        try world.fallocate(files[3], .keepSize, offset: 8192, length: 3 * 4096)
        try world.fallocate(files[5], [.punchHole, .keepSize], offset: 1000, length: 5000)
        try world.fallocate(files[2], .zeroRange, offset: 500, length: 9000)
        var generator = SplitMix64(seed: 8)
        try world.setxattr(dir, "user.small", [1, 2, 3])
        try world.setxattr(files[1], "user.big", generator.bytes(65536))
        try world.setxattr(files[1], "trusted.t", [9])
        try world.setxattr(dir, "user.small", [4], flags: .replace)
        try world.removexattr(files[1], "trusted.t")
        try world.setxattr(long, "security.s", Array("label".utf8))
        let temp = try world.create("temp", in: root)
        try world.write(temp, [UInt8](repeating: 7, count: 9000), at: 0)
        try world.unlink("temp", in: root, inode: temp)
        try world.write(temp, [UInt8](repeating: 8, count: 5000), at: 20_000)  // refused live; an orphan's in recovery

        let before = world.nvm.trace.events.count
        let report = try world.digestAll()
        #expect(report.end != nil, "one batch")
        #expect(report.refused.count == 1, "\(report.refused)")
        let expected = try world.tree()
        let expectedUsage = try world.usage()
        #expect(expected.contains { $0.hasPrefix("/d/sub mode=100644") } && expected.contains { $0.hasPrefix("/e mode=40755 links=2") })
        let events = world.nvm.trace.events
        let model = world.nvm.trace.replay(initialImage: world.nvm.initialImage, eventCount: before)
        var checked = 0
        for eventCount in before ... events.count {
            if eventCount > before { model.apply(events[eventCount - 1]) }
            // Every fence boundary, and a sample of the points between them.
            let atFence = eventCount == before || events[eventCount - 1] == .fence
            guard atFence || generator.next() % 8 == 0 else { continue }
            for fate in [LineFate.drop, .keep, .tear(wordMask: UInt8(truncatingIfNeeded: generator.next()))] {
                let image = model.crashImage { _ in fate }
                let crashed = NVM(image: image, recordsTrace: false)
                let volume = try Volume(nvm: crashed, nvmName: "crashed", lowerDevices: [], repair: true)
                let again = try World(nvm: crashed, superblock: volume.superblock)
                // The log's owner died with the crash: recovery digests its region directly.
                _ = try again.digester.recoverAllLogs()
                #expect(try again.tree() == expected, "crash at event \(eventCount) with \(fate)")
                let usage = try again.usage()
                #expect(usage == expectedUsage, "crash at event \(eventCount) with \(fate)")
                checked += 1
            }
        }
        #expect(checked > 20)
    }

    /// The same for a file whose map is a tree changed in place: leaves gain extents and
    /// split, the root grows, a truncate empties leaves and frees them. Every crash image,
    /// recovered by digesting again, holds the same file and the same free space.
    @Test func aCrashWhileAnExtentTreeChangesIsRepairedByDigestingAgain() throws {
        let world = try DigestTests.World()
        let root = world.superblock.rootInode
        let file = try world.create("scattered", in: root)
        // 300 writes two blocks apart: 300 extents, a tree of a root and three leaves.
        for slot in 0 ..< 300 as Range<UInt64> {
            try world.write(file, [UInt8](repeating: UInt8(truncatingIfNeeded: slot), count: 10), at: slot * 2 * 4096 + 7)
        }
        try world.digestCleanly()
        guard case .tree = try #require(try world.inode(file)).mapping else { Issue.record("expected a tree"); return }
        // The digest under test: the odd blocks in between (leaves overflow and split), then a
        // cut that empties the last leaves, then more writes past it.
        for slot in 0 ..< 250 as Range<UInt64> {
            try world.write(file, [0xA0 | UInt8(slot % 16)], at: (slot * 2 + 1) * 4096)
        }
        try world.truncate(file, to: 200 * 4096 + 100)
        for slot in 300 ..< 340 as Range<UInt64> {
            try world.write(file, [UInt8(slot % 200)], at: slot * 3 * 4096)
        }
        let before = world.nvm.trace.events.count
        let report = try world.digestAll()
        #expect(report.end != nil && report.refused.isEmpty, "one batch, nothing refused: \(report.refused)")
        guard case let .tree(_, depth, count) = try #require(try world.inode(file)).mapping else { Issue.record("expected a tree"); return }
        #expect(depth == 1 && count > 127, "depth \(depth), \(count) extents")
        let expected = try world.tree()
        let expectedUsage = try world.usage()
        let events = world.nvm.trace.events
        let model = world.nvm.trace.replay(initialImage: world.nvm.initialImage, eventCount: before)
        var generator = SplitMix64(seed: 77)
        var checked = 0
        for eventCount in before ... events.count {
            if eventCount > before { model.apply(events[eventCount - 1]) }
            let atFence = eventCount == before || events[eventCount - 1] == .fence
            guard atFence || generator.next() % 64 == 0 else { continue }
            for fate in [LineFate.drop, .keep, .tear(wordMask: UInt8(truncatingIfNeeded: generator.next()))] {
                let crashed = NVM(image: model.crashImage { _ in fate }, recordsTrace: false)
                let volume = try Volume(nvm: crashed, nvmName: "crashed", lowerDevices: [], repair: true)
                let again = try DigestTests.World(nvm: crashed, superblock: volume.superblock)
                _ = try again.digester.recoverAllLogs()
                #expect(try again.tree() == expected, "crash at event \(eventCount) with \(fate)")
                #expect(try again.usage() == expectedUsage, "crash at event \(eventCount) with \(fate)")
                checked += 1
            }
        }
        #expect(checked > 10)
    }
}

struct DigestHostileRecordTests {
    /// A create naming an inode number KernFS never handed out (outside every allocated
    /// chunk, or past the table) is refused; the log goes on.
    @Test func createsOfNumbersNeverHandedOutAreRefused() throws {
        let world = try DigestTests.World()
        let root = world.superblock.rootInode
        for number in [UInt64(1) << 20, world.superblock.layout.inodeCapacity + 5] {
            try world.log.append(.create(CreateArguments(parent: root, inode: number, mode: 0o100644, uid: 0, gid: 0, rdev: 0,
                                                         time: world.tick(), name: Array("x\(number)".utf8))))
        }
        try world.create("fine", in: root)
        let report = try world.digestAll()
        #expect(report.applied == 1)
        #expect(report.refused.count == 2, "\(report.refused)")
        #expect(try world.tree().count == 2)
    }
}

/// Test data without zero bytes, so that zeroing any of it shows.
private func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var generator = SplitMix64(seed: seed)
    return generator.bytes(count).map { $0 | 1 }
}

private func reasons(_ report: DigestReport) -> [String] { report.refused.map(\.reason) }

struct DigestSymlinkTests {
    typealias World = DigestTests.World

    /// Targets of up to 96 bytes live in the inode; longer ones (up to 4095) in one block,
    /// mapped as logical block 0 and freed with the link.
    @Test func shortTargetsLiveInTheInodeLongOnesInABlock() throws {
        let world = try World()
        let root = world.superblock.rootInode
        let baseline = try world.usage()
        let targets: [[UInt8]] = [Array("a/b".utf8), [UInt8](repeating: 0x41, count: 96), [UInt8](repeating: 0x42, count: 97),
                                  (0 ..< 4095).map { UInt8(1 + $0 % 255) }]
        var numbers: [UInt64] = []
        for (index, target) in targets.enumerated() { numbers.append(try world.symlink("link\(index)", in: root, to: target)) }
        try world.digestCleanly()
        for (index, (number, target)) in zip(numbers, targets).enumerated() {
            let inode = try #require(try world.inode(number))
            #expect(inode.mode == 0o120777 && inode.linkCount == 1 && inode.size == UInt64(target.count) && inode.parentHint == root)
            if target.count <= Inode.inlineDataCapacity {
                #expect(inode.mapping == .inline(target))
                #expect(inode.allocatedBlocks == 0)
            } else {
                guard case let .extents(extents) = inode.mapping else {
                    Issue.record("a long target is in a block, not \(inode.mapping)")
                    continue
                }
                #expect(extents.count == 1 && extents[0].logicalBlock == 0 && extents[0].blockCount == 1 && extents[0].flags.isEmpty)
                #expect(inode.allocatedBlocks == 1)
            }
            #expect(try world.digester.symlinkTarget(of: inode) == target)
            #expect(try world.entry("link\(index)", in: root)?.type == 10)
        }
        #expect(try world.usage().freeBlocks == baseline.freeBlocks - 2, "the two long targets take a block each")
        #expect(try world.usage().inodes == baseline.inodes + 4)

        let file = try world.create("file", in: root)
        try world.digestCleanly()
        let fileInode = try #require(try world.inode(file))
        let result = Result { () throws(DigestError) in try world.digester.symlinkTarget(of: fileInode) }
        if case .failure(.invalidRequest) = result {} else { Issue.record("the target of a regular file: \(result)") }

        for (index, number) in numbers.enumerated() { try world.unlink("link\(index)", in: root, inode: number) }
        try world.digestCleanly()
        #expect(try world.usage() == (baseline.freeBlocks, baseline.inodes + 1), "the links and their blocks are freed")
    }

    @Test func badSymlinksAreRefused() throws {
        let world = try World()
        let root = world.superblock.rootInode
        try world.symlink("x", in: root, to: Array("t".utf8))
        try world.symlink("x", in: root, to: Array("u".utf8))
        try world.symlink("y", in: root, to: [])
        try world.symlink("z", in: root, to: [0x61, 0, 0x62])
        try world.symlink("w", in: root, to: [UInt8](repeating: 0x61, count: 4096))
        let report = try world.digestAll()
        #expect(report.applied == 1)
        let found = reasons(report)
        #expect(found.count == 4, "\(found)")
        #expect(found.first == "the name exists already")
        #expect(found.dropFirst().allSatisfy { $0.contains("target") }, "\(found)")
        #expect(try world.tree().count == 2)
    }
}

struct DigestRenameTests {
    typealias World = DigestTests.World

    @Test func plainRenamesWithinAndAcrossDirectories() throws {
        let world = try World()
        let root = world.superblock.rootInode
        let a = try world.create("a", in: root)
        let p = try world.create("p", in: root, directory: true)
        let q = try world.create("q", in: root, directory: true)
        let f = try world.create("f", in: p)
        try world.write(f, Array("hello".utf8), at: 0)
        try world.digestCleanly()
        let within = try world.rename(root, "a", to: root, "b", source: a)
        let across = try world.rename(p, "f", to: q, "g", source: f)
        try world.digestCleanly()
        #expect(try world.entry("a", in: root) == nil)
        #expect(try world.entry("b", in: root).map { ($0.inode, $0.type) } ?? (0, 0) == (a, 8))
        #expect(try world.entry("f", in: p) == nil)
        #expect(try world.entry("g", in: q)?.inode == f)
        let rootInode = try #require(try world.inode(root))
        #expect(rootInode.mtime == within && rootInode.ctime == within && rootInode.linkCount == 4)
        for directory in [p, q] {
            let inode = try #require(try world.inode(directory))
            #expect(inode.mtime == across && inode.ctime == across && inode.linkCount == 2)
        }
        let moved = try #require(try world.inode(f))
        #expect(moved.ctime == across && moved.parentHint == q && moved.linkCount == 1)
        #expect(try #require(try world.inode(a)).ctime == within)
        #expect(try world.file(f) == Array("hello".utf8))
    }

    /// The replaced file loses a link: freed with its blocks at its last, kept otherwise.
    @Test func renamingOverAFileDropsOneLinkOfIt() throws {
        let world = try World()
        let root = world.superblock.rootInode
        let x = try world.create("x", in: root)
        try world.write(x, pattern(8000, seed: 1), at: 0)
        let y = try world.create("y", in: root)
        try world.write(y, Array("why".utf8), at: 0)
        let z = try world.create("z", in: root)
        try world.link(z, as: "z2", in: root)
        try world.digestCleanly()
        let before = try world.usage()
        try world.rename(root, "y", to: root, "x", source: y, replaced: x)
        let second = try world.rename(root, "x", to: root, "z", source: y, replaced: z)
        try world.digestCleanly()
        #expect(try world.inode(x) == nil)
        #expect(try world.usage() == (before.freeBlocks + 2, before.inodes - 1), "x and its two blocks are freed")
        #expect(try world.entry("z", in: root)?.inode == y)
        #expect(try world.entry("x", in: root) == nil && world.entry("y", in: root) == nil)
        let kept = try #require(try world.inode(z))
        #expect(kept.linkCount == 1 && kept.ctime == second)
        #expect(try world.entry("z2", in: root)?.inode == z)
        #expect(try world.file(y) == Array("why".utf8))
    }

    /// `..` is not stored: a directory's parent is its parentHint and counts a link for it.
    @Test func directoryMovesKeepLinkCountsAndParents() throws {
        let world = try World()
        let root = world.superblock.rootInode
        let p1 = try world.create("p1", in: root, directory: true)
        let p2 = try world.create("p2", in: root, directory: true)
        let c = try world.create("c", in: p1, directory: true)
        try world.create("inside", in: c)
        let e = try world.create("e", in: root, directory: true)
        try world.digestCleanly()
        let rootLinks = try #require(try world.inode(root)).linkCount
        #expect(rootLinks == 5)
        try world.rename(p1, "c", to: p2, "c", source: c)
        try world.digestCleanly()
        #expect(try world.inode(p1)?.linkCount == 2)
        #expect(try world.inode(p2)?.linkCount == 3)
        #expect(try world.inode(c)?.parentHint == p2)
        let before = try world.usage()
        // Over an empty directory, which goes.
        try world.rename(p2, "c", to: root, "e", source: c, replaced: e)
        try world.digestCleanly()
        #expect(try world.inode(e) == nil)
        #expect(try world.usage() == (before.freeBlocks + 1, before.inodes - 1), "e and its block are freed")
        #expect(try world.inode(p2)?.linkCount == 2)
        #expect(try world.inode(root)?.linkCount == rootLinks, "c's '..' came, e's went")
        #expect(try world.inode(c)?.parentHint == root)
        #expect(try world.entry("e", in: root).map { ($0.inode, $0.type) } ?? (0, 0) == (c, 4))
        #expect(try world.entry("inside", in: c) != nil)
    }

    @Test func exchangeSwapsTheNamesTypesAndParents() throws {
        let world = try World()
        let root = world.superblock.rootInode
        let f = try world.create("f", in: root)
        let p = try world.create("p", in: root, directory: true)
        let q = try world.create("q", in: p, directory: true)
        try world.create("inside", in: q)
        try world.digestCleanly()
        let rootLinks = try #require(try world.inode(root)).linkCount
        let time = try world.rename(root, "f", to: p, "q", flags: .exchange, source: f, replaced: q)
        try world.digestCleanly()
        #expect(try world.entry("f", in: root).map { ($0.inode, $0.type) } ?? (0, 0) == (q, 4))
        #expect(try world.entry("q", in: p).map { ($0.inode, $0.type) } ?? (0, 0) == (f, 8))
        #expect(try world.inode(root)?.linkCount == rootLinks + 1, "q's '..' is the root now")
        #expect(try world.inode(p)?.linkCount == 2)
        let movedDirectory = try #require(try world.inode(q)), movedFile = try #require(try world.inode(f))
        #expect(movedDirectory.parentHint == root && movedFile.parentHint == p)
        #expect(movedDirectory.ctime == time && movedFile.ctime == time)
        #expect(try world.inode(root)?.mtime == time && world.inode(p)?.mtime == time)
        #expect(try world.entry("inside", in: q) != nil)
        // Within one directory: the two entries swap, the link count stays.
        let g = try world.create("g", in: root)
        try world.rename(root, "f", to: root, "g", flags: .exchange, source: q, replaced: g)
        try world.digestCleanly()
        #expect(try world.entry("f", in: root).map { ($0.inode, $0.type) } ?? (0, 0) == (g, 8))
        #expect(try world.entry("g", in: root).map { ($0.inode, $0.type) } ?? (0, 0) == (q, 4))
        #expect(try world.inode(root)?.linkCount == rootLinks + 1)
        // noReplace onto a free name is a plain rename.
        try world.rename(root, "g", to: root, "h", flags: .noReplace, source: q)
        try world.digestCleanly()
        #expect(try world.entry("h", in: root)?.inode == q && world.entry("g", in: root) == nil)
    }

    /// Each record the shared area contradicts is refused whole: nothing of it is applied.
    @Test func contradictedRenamesAreRefusedWhole() throws {
        let world = try World()
        let root = world.superblock.rootInode
        let a = try world.create("a", in: root, directory: true)
        let b = try world.create("b", in: a, directory: true)
        let c = try world.create("c", in: b, directory: true)
        let full = try world.create("full", in: root, directory: true)
        try world.create("x", in: full)
        let empty = try world.create("empty", in: root, directory: true)
        let file = try world.create("file", in: root)
        let other = try world.create("other", in: root)
        try world.digestCleanly()
        let before = try world.tree(), beforeUsage = try world.usage()
        let expected: [(String, () throws -> Void)] = [
            ("a directory cannot move into its own subtree", { try world.rename(root, "a", to: b, "a2", source: a) }),
            ("a directory cannot move into its own subtree", { try world.rename(root, "a", to: c, "a2", source: a) }),
            ("directory \(full) is not empty", { try world.rename(root, "empty", to: root, "full", source: empty, replaced: full) }),
            ("the new name is not a directory", { try world.rename(root, "empty", to: root, "file", source: empty, replaced: file) }),
            ("the new name is a directory", { try world.rename(root, "file", to: root, "empty", source: file, replaced: empty) }),
            ("the new name exists (noReplace)", { try world.rename(root, "file", to: root, "other", flags: .noReplace, source: file) }),
            ("the new name does not exist: nothing to exchange with",
             { try world.rename(root, "file", to: root, "missing", flags: .exchange, source: file, replaced: other) }),
            ("the old name refers to inode \(file), not \(other)", { try world.rename(root, "file", to: root, "new", source: other) }),
            ("the new name refers to inode \(other), not 0", { try world.rename(root, "file", to: root, "other", source: file) }),
            ("the new name does not exist, the record says it refers to inode \(other)",
             { try world.rename(root, "file", to: root, "new", source: file, replaced: other) }),
            ("the old name does not exist", { try world.rename(root, "nope", to: root, "new", source: file) }),
            // Exchanging moves `a` below itself (into b, c's old parent).
            ("a directory cannot move into its own subtree",
             { try world.rename(b, "c", to: root, "a", flags: .exchange, source: c, replaced: a) }),
        ]
        for (_, log) in expected { try log() }
        let report = try world.digestAll()
        #expect(report.applied == 0)
        #expect(reasons(report) == expected.map(\.0))
        #expect(try world.tree() == before)
        #expect(try world.usage() == beforeUsage)

        // Two names of one inode: POSIX makes the rename a no-op, so LibFS does not log it and
        // the record format refuses one that says so; nothing changes.
        try world.link(file, as: "hard", in: root)
        try world.digestCleanly()
        let linked = try world.tree()
        try world.rename(root, "file", to: root, "hard", source: file, replaced: file)
        let noOp = try world.digestAll()
        #expect(noOp.applied == 0 && reasons(noOp).count == 1 && reasons(noOp)[0].contains("another name of the source inode"))
        #expect(try world.tree() == linked)
    }
}

struct DigestFallocateTests {
    typealias World = DigestTests.World
    typealias NVM = DigestTests.NVM

    static func map(_ world: World, _ number: UInt64) throws -> ExtentMap<NVM> {
        try ExtentMap(inode: try #require(try world.inode(number)), transaction: MetadataTransaction(journal: world.digester.journal),
                      nvmData: world.allocator.device, seed: world.superblock.volumeID.checksumSeed)
    }

    @Test func allocationGivesHolesUnwrittenBlocksThatReadAsZeros() throws {
        let world = try World()
        let f = try world.create("f", in: world.superblock.rootInode)
        try world.write(f, [UInt8](repeating: 0x61, count: 100), at: 0)
        try world.digestCleanly()
        let before = try world.usage()
        let time = try world.fallocate(f, [], offset: 0, length: 5 * 4096 + 10)
        try world.digestCleanly()
        var inode = try #require(try world.inode(f))
        #expect(inode.size == 5 * 4096 + 10 && inode.allocatedBlocks == 6 && inode.mtime == time && inode.ctime == time)
        #expect(try world.usage().freeBlocks == before.freeBlocks - 5)
        var map = try Self.map(world, f)
        #expect(try map.allExtents().filter { $0.flags.contains(.unwritten) }.reduce(0) { $0 + $1.blockCount } == 5)
        #expect(try map.lookup(0)?.flags.isEmpty == true)
        // Stale bytes in a preallocated block never show.
        let block3 = try #require(try map.lookup(3)).physicalBlock + 3 - (try map.lookup(3)!.logicalBlock)
        world.nvm.store([UInt8](repeating: 0x5A, count: 4096), at: Int(world.allocator.nvmOffset(ofBlock: block3)))
        var expected = [UInt8](repeating: 0x61, count: 100) + [UInt8](repeating: 0, count: 5 * 4096 + 10 - 100)
        #expect(try world.file(f) == expected)
        // A write into preallocated space uses its block: the rest of the block reads zeros.
        try world.write(f, [UInt8](repeating: 0xEE, count: 10), at: 3 * 4096 + 5)
        try world.digestCleanly()
        expected.replaceSubrange(3 * 4096 + 5 ..< 3 * 4096 + 15, with: [UInt8](repeating: 0xEE, count: 10))
        #expect(try world.file(f) == expected)
        map = try Self.map(world, f)
        #expect(try map.lookup(3).map { $0.physicalBlock + 3 - $0.logicalBlock } == block3)
        #expect(try map.lookup(3)?.flags.isEmpty == true && map.lookup(2)?.flags == .unwritten && map.lookup(4)?.flags == .unwritten)
        // Four extents now: the map needs a tree node, and nothing else was allocated.
        #expect(try map.allExtents().count == 4 && Self.dataBlocks(map) == 6)
        #expect(try world.inode(f)?.allocatedBlocks == 7)
        #expect(try world.usage().freeBlocks == before.freeBlocks - 6)
        // keepSize: blocks past the end, the size stays.
        try world.fallocate(f, .keepSize, offset: 10 * 4096, length: 8192)
        try world.digestCleanly()
        inode = try #require(try world.inode(f))
        let preallocated = try Self.map(world, f)
        #expect(try inode.size == 5 * 4096 + 10 && Self.dataBlocks(preallocated) == 8 && inode.allocatedBlocks == 9)
        #expect(try world.usage().freeBlocks == before.freeBlocks - 8)
        // An allocated range allocates nothing more; the times still move (file_modified).
        let again = try world.fallocate(f, [], offset: 0, length: 4096)
        try world.digestCleanly()
        #expect(try world.usage().freeBlocks == before.freeBlocks - 8)
        #expect(try world.inode(f)?.mtime == again)
        #expect(try world.file(f) == expected)
    }

    /// Data blocks of a map (without its tree nodes).
    static func dataBlocks(_ map: ExtentMap<NVM>) throws -> UInt64 {
        try map.allExtents().reduce(0) { $0 + UInt64($1.blockCount) }
    }

    @Test func punchingAHoleFreesWholeBlocksAndZeroesTheEdges() throws {
        let world = try World()
        let f = try world.create("f", in: world.superblock.rootInode)
        let data = pattern(6 * 4096, seed: 4)
        try world.write(f, data, at: 0)
        try world.digestCleanly()
        let before = try world.usage()
        let time = try world.fallocate(f, [.punchHole, .keepSize], offset: 4096 + 100, length: 3 * 4096)
        try world.digestCleanly()
        #expect(try world.usage().freeBlocks == before.freeBlocks + 2, "blocks 2 and 3 lay wholly inside")
        let inode = try #require(try world.inode(f))
        #expect(inode.size == 6 * 4096 && inode.allocatedBlocks == 4 && inode.mtime == time && inode.ctime == time)
        var expected = data
        expected.replaceSubrange(4196 ..< 4196 + 3 * 4096, with: [UInt8](repeating: 0, count: 3 * 4096))
        #expect(try world.file(f) == expected)
        let map = try Self.map(world, f)
        #expect(try map.lookup(2) == nil && map.lookup(3) == nil && map.lookup(1) != nil && map.lookup(4) != nil)
        // Linux refuses a punch without keepSize; so does the record format.
        try world.fallocate(f, .punchHole, offset: 0, length: 4096)
        let refused = try world.digestAll()
        #expect(refused.applied == 0 && refused.refused.count == 1)
        #expect(try world.file(f) == expected)
        // Past the end: preallocated blocks go, the size stays.
        try world.fallocate(f, .keepSize, offset: 8 * 4096, length: 4096)
        try world.digestCleanly()
        #expect(try world.usage().freeBlocks == before.freeBlocks + 1)
        try world.fallocate(f, [.punchHole, .keepSize], offset: 7 * 4096, length: 3 * 4096)
        try world.digestCleanly()
        #expect(try world.usage().freeBlocks == before.freeBlocks + 2)
        #expect(try world.inode(f)?.size == 6 * 4096)
        #expect(try world.file(f) == expected)
    }

    @Test func zeroingARangeKeepsItsBlocks() throws {
        let world = try World()
        let f = try world.create("f", in: world.superblock.rootInode)
        let data = pattern(4 * 4096, seed: 5)
        try world.write(f, data, at: 0)
        try world.digestCleanly()
        let before = try world.usage()
        try world.fallocate(f, .zeroRange, offset: 2048, length: 3 * 4096)
        try world.digestCleanly()
        #expect(try world.usage().freeBlocks == before.freeBlocks)
        #expect(try world.inode(f)?.size == 4 * 4096)
        var expected = data
        expected.replaceSubrange(2048 ..< 2048 + 3 * 4096, with: [UInt8](repeating: 0, count: 3 * 4096))
        #expect(try world.file(f) == expected)
        let map = try Self.map(world, f)
        #expect(try map.lookup(1)?.flags == .unwritten && map.lookup(2)?.flags == .unwritten)
        #expect(try map.lookup(0)?.flags.isEmpty == true && map.lookup(3)?.flags.isEmpty == true)
        // Past the end it grows the file (not with keepSize); new blocks are unwritten.
        try world.fallocate(f, .zeroRange, offset: 4 * 4096 + 10, length: 100)
        try world.digestCleanly()
        #expect(try world.inode(f)?.size == 4 * 4096 + 110)
        let grown = try Self.map(world, f)
        #expect(try Self.dataBlocks(grown) == 5 && grown.lookup(4)?.flags == .unwritten)
        try world.fallocate(f, [.zeroRange, .keepSize], offset: 40_000, length: 5000)
        try world.digestCleanly()
        #expect(try world.inode(f)?.size == 4 * 4096 + 110)
        #expect(try Self.dataBlocks(Self.map(world, f)) == 7)
        #expect(try world.file(f) == expected + [UInt8](repeating: 0, count: 110))
        // Five extents (written, unwritten 1-2, written, unwritten 4, unwritten 9-10 apart): one tree node.
        #expect(try world.inode(f)?.allocatedBlocks == 8)
        #expect(try world.usage().freeBlocks == before.freeBlocks - 4)
    }

    @Test func fallocateTakesRegularFilesAndTheSpaceThereIs() throws {
        let world = try World()
        let root = world.superblock.rootInode
        let d = try world.create("d", in: root, directory: true)
        let s = try world.symlink("s", in: root, to: Array("d".utf8))
        let f = try world.create("f", in: root)
        try world.digestCleanly()
        let before = try world.tree(), beforeUsage = try world.usage()
        try world.fallocate(d, [], offset: 0, length: 4096)
        try world.fallocate(s, [], offset: 0, length: 4096)
        try world.fallocate(f, [], offset: 0, length: 1 << 40)
        try world.fallocate(f, [], offset: 0, length: 0)
        try world.fallocate(f, [], offset: UInt64.max - 10, length: 100)
        let report = try world.digestAll()
        #expect(report.applied == 0)
        let found = reasons(report)
        #expect(found.count == 5)
        #expect(found.prefix(2).allSatisfy { $0.hasSuffix("is not a regular file") }, "\(found)")
        #expect(found[2].hasPrefix("no space"), "\(found)")
        #expect(try world.tree() == before)
        #expect(try world.usage() == beforeUsage)
    }
}

struct DigestXattrTests {
    typealias World = DigestTests.World

    @Test func setReplaceCreateAndRemove() throws {
        let world = try World()
        let f = try world.create("f", in: world.superblock.rootInode)
        try world.digestCleanly()
        let baseline = try world.usage()
        try world.setxattr(f, "user.a", [1])
        try world.setxattr(f, "user.b", [2, 2])
        try world.setxattr(f, "user.a", Array("one".utf8), flags: .replace)
        try world.setxattr(f, "user.a", [9], flags: .create)
        try world.setxattr(f, "user.c", [9], flags: .replace)
        try world.setxattr(f, "user.empty", [])
        try world.removexattr(f, "user.b")
        let lastApplied = world.time
        try world.removexattr(f, "user.b")
        try world.setxattr(f, "nonsense.x", [1])
        try world.setxattr(f, "user.", [1])
        let report = try world.digestAll()
        #expect(report.applied == 5)
        let found = reasons(report)
        #expect(found.count == 5)
        #expect(found.prefix(3) == ["the attribute exists (create)", "no such attribute (replace)", "no such attribute"])
        #expect(found.suffix(2).allSatisfy { $0.contains("namespaces") }, "\(found)")
        let inode = try #require(try world.inode(f))
        let attributes = try world.digester.extendedAttributes(of: inode)
        #expect(attributes.map(\.name) == [Array("user.a".utf8), Array("user.empty".utf8)])
        #expect(attributes.map(\.value) == [Array("one".utf8), []])
        #expect(try world.digester.extendedAttribute(Array("user.a".utf8), of: inode) == Array("one".utf8))
        #expect(try world.digester.extendedAttribute(Array("user.b".utf8), of: inode) == nil)
        #expect(inode.ctime == lastApplied)
        #expect(try world.digester.xattrBlocks(of: inode) == [inode.xattrBlock] && inode.xattrBlock != 0)
        #expect(inode.allocatedBlocks == 1, "st_blocks counts the attribute block")
        #expect(try world.usage().freeBlocks == baseline.freeBlocks - 1, "every change wrote a new set and freed the old one")
        try world.removexattr(f, "user.a")
        try world.removexattr(f, "user.empty")
        try world.digestCleanly()
        let cleared = try #require(try world.inode(f))
        #expect(cleared.xattrBlock == 0 && cleared.allocatedBlocks == 0)
        #expect(try world.digester.extendedAttributes(of: cleared).isEmpty)
        #expect(try world.usage() == baseline)
    }

    /// user. attributes only on regular files and directories (EPERM on others, as Linux);
    /// the other namespaces anywhere.
    @Test func namespacesFollowLinux() throws {
        let world = try World()
        let root = world.superblock.rootInode
        let s = try world.symlink("s", in: root, to: Array("nowhere".utf8))
        let d = try world.create("d", in: root, directory: true)
        try world.setxattr(s, "user.x", [1])
        try world.setxattr(s, "trusted.x", [2])
        try world.setxattr(s, "security.selinux", Array("label".utf8))
        try world.setxattr(d, "user.x", [3])
        try world.setxattr(d, "system.x", [4])
        let report = try world.digestAll()
        #expect(report.applied == 6)
        #expect(reasons(report) == ["user. attributes belong to regular files and directories only"])
        #expect(try world.digester.extendedAttributes(of: try #require(try world.inode(s))).map(\.name)
            == [Array("security.selinux".utf8), Array("trusted.x".utf8)])
        #expect(try world.digester.extendedAttributes(of: try #require(try world.inode(d))).count == 2)
    }

    /// Values of Linux's largest size work; an inode holds at most XattrBlock.setBytesMax
    /// bytes of attributes (three such values), and every block is freed with the inode.
    @Test func valuesOf64KiBAndTheLimitPerInode() throws {
        let world = try World()
        let root = world.superblock.rootInode
        let d = try world.create("d", in: root, directory: true)
        try world.digestCleanly()
        let baseline = try world.usage()
        let values = (0 ..< 4).map { pattern(65536, seed: UInt64(10 + $0)) }
        try world.setxattr(d, "user.big", values[3])
        let f = try world.create("f", in: d)
        for index in 0 ..< 4 { try world.setxattr(f, "user.big\(index)", values[index]) }
        let report = try world.digestAll()
        #expect(report.applied == 5)
        #expect(reasons(report).count == 1 && reasons(report)[0].contains("more than \(XattrBlock.setBytesMax) bytes"))
        let file = try #require(try world.inode(f))
        let attributes = try world.digester.extendedAttributes(of: file)
        #expect(attributes.map(\.name) == (0 ..< 3).map { Array("user.big\($0)".utf8) })
        #expect(attributes.map(\.value) == Array(values[0 ..< 3]))
        let fileBlocks = XattrBlock.blocksNeeded(setBytes: 3 * (8 + 9 + 65536))
        #expect(fileBlocks == 49)
        #expect(try world.digester.xattrBlocks(of: file).count == fileBlocks && file.allocatedBlocks == UInt64(fileBlocks))
        let directory = try #require(try world.inode(d))
        #expect(try world.digester.extendedAttribute(Array("user.big".utf8), of: directory) == values[3])
        #expect(directory.allocatedBlocks == 1 + 17, "a directory's block and its attributes' (kept when the directory grows)")
        #expect(try world.usage().freeBlocks == baseline.freeBlocks - UInt64(fileBlocks) - 17)
        try world.unlink("f", in: d, inode: f)
        try world.setxattr(d, "user.big", [1], flags: .replace)
        try world.digestCleanly()
        #expect(try world.usage() == (baseline.freeBlocks - 1, baseline.inodes), "the file's attribute blocks and the old set are freed")
        #expect(try world.inode(d)?.allocatedBlocks == 2)
    }
}

extension DigestXattrTests {
    /// A damaged set is damage of the shared area: readers say so, a digest that needs the
    /// set stops without committing anything (the record stays in the log), nothing traps.
    @Test func aDamagedSetIsReportedNeverATrap() throws {
        let world = try World()
        let f = try world.create("f", in: world.superblock.rootInode)
        try world.setxattr(f, "user.a", [1])
        try world.digestCleanly()
        let inode = try #require(try world.inode(f))
        let offset = Int(world.allocator.nvmOffset(ofBlock: inode.xattrBlock)) + 600
        world.nvm.store([world.nvm.load(at: offset, count: 1)[0] ^ 0xFF], at: offset)
        let read = Result { () throws(DigestError) in try world.digester.extendedAttributes(of: inode) }
        if case .failure(.damaged) = read {} else { Issue.record("a damaged set read as \(read)") }
        try world.setxattr(f, "user.b", [2])
        let cursor = world.digester.logTable.read(world.grant.region).descriptor?.digestedSequence
        let digest = Result { () throws(DigestError) in try world.digester.digest(region: world.grant.region, recovery: false) }
        if case .failure(.damaged) = digest {} else { Issue.record("a digest over a damaged set: \(digest)") }
        #expect(try world.inode(f) == inode, "nothing of the batch is committed")
        #expect(world.digester.logTable.read(world.grant.region).descriptor?.digestedSequence == cursor, "the cursor stays")
    }
}

struct DigestOrphanTests {
    typealias World = DigestTests.World

    /// An open file unlinked is an orphan: no name, linkCount 0, still written to; freed by
    /// releaseOrphan at its last close.
    @Test func anUnlinkedOpenFileLivesUntilReleased() throws {
        let world = try World()
        let root = world.superblock.rootInode
        let baseline = try world.usage()
        let f = try world.create("f", in: root)
        try world.write(f, pattern(3 * 4096, seed: 6), at: 0)
        try world.digestCleanly()
        world.digester.isOpen = { [f] in $0 == f }
        try world.unlink("f", in: root, inode: f)
        try world.write(f, pattern(5000, seed: 7), at: 3 * 4096)
        try world.truncate(f, to: 10_000)
        try world.fallocate(f, [], offset: 0, length: 20_000)
        try world.log.append(.setattr(SetattrArguments(inode: f, valid: [.mode], mode: 0o600, ctime: world.tick())))
        try world.setxattr(f, "user.x", [1])
        try world.link(f, as: "back", in: root)
        let report = try world.digestAll()
        #expect(report.applied == 6)
        #expect(reasons(report) == ["inode \(f) has no links left: it was removed"])
        let orphan = try #require(try world.inode(f))
        #expect(orphan.linkCount == 0 && orphan.size == 20_000 && orphan.mode == 0o100600 && orphan.allocatedBlocks == 6)
        #expect(try world.entry("f", in: root) == nil && world.entry("back", in: root) == nil)
        #expect(try world.usage().inodes == baseline.inodes + 1)
        #expect(try world.digester.releaseOrphan(root) == false, "it has links")
        #expect(try world.digester.releaseOrphan(f + 100) == false, "free")
        #expect(try world.digester.releaseOrphan(UInt64(1) << 40) == false, "beyond the table")
        #expect(try world.digester.releaseOrphan(f) == true)
        #expect(try world.inode(f) == nil)
        #expect(try world.usage() == baseline, "its data, attribute block and inode are freed")
        #expect(try world.digester.releaseOrphan(f) == false)
    }

    /// rmdir of an open directory and a rename over an open file leave orphans too;
    /// freeOrphans frees the ones nobody holds open.
    @Test func removedDirectoriesAndReplacedFilesBecomeOrphans() throws {
        let world = try World()
        let root = world.superblock.rootInode
        let baseline = try world.usage()
        let d = try world.create("d", in: root, directory: true)
        let t = try world.create("t", in: root)
        try world.write(t, pattern(5000, seed: 8), at: 0)
        let s = try world.create("s", in: root)
        try world.digestCleanly()
        world.digester.isOpen = { [d, t] in $0 == d || $0 == t }
        try world.unlink("d", in: root, inode: d, directory: true)
        try world.rename(root, "s", to: root, "t", source: s, replaced: t)
        try world.create("x", in: d)
        let report = try world.digestAll()
        #expect(report.applied == 2)
        #expect(reasons(report) == ["directory \(d) was removed"])
        #expect(try world.inode(d)?.linkCount == 0 && world.inode(t)?.linkCount == 0)
        #expect(try world.inode(root)?.linkCount == 2)
        #expect(try world.digester.freeOrphans() == 0, "both are open")
        world.digester.isOpen = { [d] in $0 == d }
        #expect(try world.digester.freeOrphans() == 1)
        #expect(try world.inode(t) == nil && world.inode(d) != nil)
        world.digester.isOpen = nil
        #expect(try world.digester.freeOrphans() == 1)
        #expect(try world.inode(d) == nil)
        #expect(try world.usage() == (baseline.freeBlocks, baseline.inodes + 1), "only s is left")
    }

    /// After a crash nothing is open: recovery digests every log (keeping orphans while it
    /// does, so that records after an unlink still apply) and then frees them all.
    @Test func recoveryFreesEveryOrphan() throws {
        let world = try World()
        let root = world.superblock.rootInode
        let baseline = try world.usage()
        let h = try world.create("h", in: root)
        try world.write(h, pattern(6000, seed: 9), at: 0)
        world.digester.isOpen = { [h] in $0 == h }
        try world.unlink("h", in: root, inode: h)
        try world.digestCleanly()
        #expect(try world.inode(h)?.linkCount == 0, "an orphan of the live system")
        // More records, then the process and the daemon die.
        let f = try world.create("f", in: root)
        try world.write(f, pattern(10_000, seed: 10), at: 0)
        try world.unlink("f", in: root, inode: f)
        try world.write(f, pattern(5000, seed: 11), at: 20_000)
        try world.setxattr(f, "user.late", [1])
        let volume = try Volume(nvm: world.nvm, nvmName: "sim", lowerDevices: [], repair: true)
        let again = try World(nvm: world.nvm, superblock: volume.superblock)
        let results = try again.digester.recoverAllLogs()
        #expect(results.count == 1 && results[0].applied == 5 && results[0].refused.isEmpty, "\(results.map(\.refused))")
        #expect(try again.inode(f) == nil && again.inode(h) == nil)
        #expect(try again.usage() == baseline)
        #expect(again.digester.logTable.read(again.grant.region).descriptor?.state == .free)
    }
}
