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
                guard let extent = map.lookup(logical), !extent.flags.contains(.unwritten) else { continue }
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
