import Foundation
import Testing
@testable import KernFS
@testable import LibFS
@testable import ShaleFormat
@testable import ShaleMedia

/// `shale fsck` (and the log lines of `shale status`) end to end: real volumes made by
/// `shale mkfs`, filled through a log and `shale digest`, corrupted on disk, checked and
/// repaired by the built binary.
@Suite(.serialized)
struct FsckCommandTests {
    /// A volume with /hello.txt (6 bytes) and /notes/ holding todo.txt, digested.
    final class Volume {
        let scratch = Scratch()
        var hello: UInt64 = 0, notes: UInt64 = 0, todo: UInt64 = 0

        init(lowerTiers: Bool = false) throws {
            let mkfs = lowerTiers ? scratch.smallMkfs
                : ["mkfs", scratch.directory, "--nvm", scratch.nvm, "--nvm-size", "64M", "--no-ssd", "--no-hdd",
                   "--log-regions", "4", "--log-size", "1M"]
            let made = try ShaleCommand.run(mkfs)
            #expect(made.status == 0, "\(made.all)")
        }

        func fill() throws {
            try leaveALog { log, take in
                let time = Timestamp(seconds: 1_764_000_000)
                hello = try take()
                try log.append(.create(CreateArguments(parent: 1, inode: hello, mode: 0o100644, uid: 0, gid: 0, rdev: 0, time: time,
                                                       name: Array("hello.txt".utf8))))
                try log.append(.write(WriteArguments(inode: hello, offset: 0, length: 6, time: time, inline: Array("world\n".utf8))))
                notes = try take()
                try log.append(.mkdir(CreateArguments(parent: 1, inode: notes, mode: 0o040755, uid: 0, gid: 0, rdev: 0, time: time,
                                                      name: Array("notes".utf8))))
                todo = try take()
                try log.append(.create(CreateArguments(parent: notes, inode: todo, mode: 0o100600, uid: 0, gid: 0, rdev: 0, time: time,
                                                       name: Array("todo.txt".utf8))))
            }
            let digest = try ShaleCommand.run(["digest", scratch.directory])
            #expect(digest.status == 0, "\(digest.all)")
        }

        /// Appends records to a fresh log, as a LibFS process would, and "dies".
        func leaveALog(_ build: (OperationLog<MappedPersistentMemory>, () throws -> UInt64) throws -> Void) throws {
            try withVolume { nvm, superblock in
                let grant = try LogTable(nvm: nvm, superblock: superblock).attach(ownerPID: 4242, ownerUID: 0, nowSeconds: 0)
                let allocator = try BlockAllocator(nvm: nvm, device: superblock.device(.nvm)!, volumeSeed: superblock.volumeID.checksumSeed)
                let inodes = try InodeTable(nvm: nvm, superblock: superblock, nvmAllocator: allocator)
                let transaction = MetadataTransaction(journal: MetadataJournal(nvm: nvm, superblock: superblock))
                try build(OperationLog(nvm: nvm, grant: grant)) { try inodes.allocate(in: transaction)[0] }
            }
        }

        func withVolume<T>(_ body: (MappedPersistentMemory, Superblock) throws -> T) throws -> T {
            let nvm = try MappedPersistentMemory.open(path: scratch.nvm)
            let volume = try KernFS.Volume(nvm: nvm, nvmName: scratch.nvm, lowerDevices: [], repair: false)
            return try body(nvm, volume.superblock)
        }

        /// Rewrites an inode in place, sealed.
        func rewrite(_ number: UInt64, _ change: @escaping (inout Inode) -> Void) throws {
            try withVolume { nvm, superblock in
                let offset = Self.slotOffset(number, nvm, superblock)
                let seed = superblock.volumeID.checksumSeed
                var inode = try #require(try Inode.decode(nvm.view(at: offset, count: 256), seed: seed, expectedNumber: number))
                change(&inode)
                nvm.storePersist(inode.encode(seed: seed), at: offset)
            }
        }

        func editBitmap(_ change: @escaping (inout AllocatorBitmapBlock) -> Void) throws {
            try withVolume { nvm, superblock in
                let device = superblock.device(.nvm)!
                let seed = superblock.volumeID.checksumSeed
                var bitmap = try AllocatorBitmapBlock.decode(nvm.view(at: Int(device.bitmapOffset), count: 4096), seed: seed,
                                                             expectedTier: .nvm, expectedFirstBlock: 0)
                change(&bitmap)
                nvm.storePersist(bitmap.encode(seed: seed), at: Int(device.bitmapOffset))
            }
        }

        static func slotOffset(_ number: UInt64, _ nvm: MappedPersistentMemory, _ superblock: Superblock) -> Int {
            let location = superblock.layout.inodeLocation(number)
            return Int(nvm.loadWord(at: Int(location.mapEntryOffset)) + location.offsetInChunk)
        }

        /// Flips one byte of the NVM file through the file system, as bit rot would.
        func flip(at offset: Int) throws {
            let handle = try FileHandle(forUpdating: URL(fileURLWithPath: scratch.nvm))
            defer { try? handle.close() }
            try handle.seek(toOffset: UInt64(offset))
            let byte = try #require(try handle.read(upToCount: 1)).first!
            try handle.seek(toOffset: UInt64(offset))
            try handle.write(contentsOf: Data([byte ^ 0x24]))
        }

        func fsck(_ extra: String...) throws -> ShaleCommand.Result {
            try ShaleCommand.run(["fsck", scratch.directory] + extra)
        }
    }

    @Test func aFreshVolumeIsClean() throws {
        let volume = try Volume(lowerTiers: true)
        let result = try volume.fsck()
        #expect(result.status == 0, "\(result.all)")
        #expect(result.stdout == "clean: 1 inode (1 directory, 0 files), blocks in use: 1025 nvm, 0 ssd, 0 hdd\n", "\(result.stdout)")
        #expect(result.stderr.isEmpty, "no progress when standard error is not a terminal: \(result.stderr)")
    }

    @Test func aFilledVolumeIsCleanAndCounted() throws {
        let volume = try Volume()
        try volume.fill()
        let result = try volume.fsck()
        #expect(result.status == 0, "\(result.all)")
        #expect(result.stdout.hasPrefix("clean: 4 inodes (2 directories, 2 files), blocks in use: 1027 nvm"), "\(result.stdout)")
    }

    @Test func aWrongLinkCountIsFoundThenRepaired() throws {
        let volume = try Volume()
        try volume.fill()
        try volume.rewrite(volume.hello) { $0.linkCount = 5 }
        let found = try volume.fsck()
        #expect(found.status == 1)
        #expect(found.stdout.split(separator: "\n").first == "inode \(volume.hello): link count 5, should be 1", "\(found.stdout)")
        #expect(found.stdout.contains("1 problem (1 repairable with --repair): 4 inodes"))
        let repaired = try volume.fsck("--repair")
        #expect(repaired.status == 0, "\(repaired.all)")
        #expect(repaired.stdout.contains("fixed: inode \(volume.hello): link count 5, should be 1: link count 5 → 1"), "\(repaired.stdout)")
        #expect(repaired.stdout.contains("1 repair in 1 transaction; clean now: 4 inodes"))
        let again = try volume.fsck()
        #expect(again.status == 0 && again.stdout.hasPrefix("clean:"), "\(again.all)")
    }

    @Test func aFlippedByteInAnInodeIsReportedAndLeft() throws {
        let volume = try Volume()
        try volume.fill()
        let offset = try volume.withVolume { nvm, superblock in Volume.slotOffset(volume.todo, nvm, superblock) }
        try volume.flip(at: offset + 33)
        let found = try volume.fsck()
        #expect(found.status == 1)
        #expect(found.stdout.contains("inode \(volume.todo): damaged: checksum mismatch"), "\(found.stdout)")
        #expect(found.stdout.contains("1 problem: "))
        let repaired = try volume.fsck("--repair")
        #expect(repaired.status == 1)
        #expect(repaired.stdout.contains("left: inode \(volume.todo): damaged: checksum mismatch"), "\(repaired.stdout)")
        #expect(repaired.stdout.contains("(the inode's contents are unknown; fsck does not guess them)"))
        #expect(repaired.stdout.contains("0 repairs in 0 transactions; 1 problem remain"))
    }

    @Test func aLeakedAndAnUnmarkedBlockAreFoundThenRepaired() throws {
        let volume = try Volume()
        try volume.fill()
        let (helloBlock, last) = try volume.withVolume { nvm, superblock -> (UInt64, UInt64) in
            let seed = superblock.volumeID.checksumSeed
            let inode = try #require(try Inode.decode(nvm.view(at: Volume.slotOffset(volume.hello, nvm, superblock), count: 256),
                                                      seed: seed, expectedNumber: volume.hello))
            guard case let .extents(extents) = inode.mapping, let first = extents.first else { throw CancellationError() }
            return (first.physicalBlock, superblock.device(.nvm)!.dataBlocks - 1)
        }
        try volume.editBitmap { $0.setUsed(Int(last), true); $0.setUsed(Int(helloBlock), false) }
        let found = try volume.fsck()
        #expect(found.status == 1)
        let lines = found.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains("nvm block \(helloBlock) owned by inode \(volume.hello) (logical block 0), but free in the allocator bitmap"), "\(lines)")
        #expect(lines.contains("nvm block \(last) marked used in the allocator bitmap, owned by nothing (leaked)"))
        let repaired = try volume.fsck("--repair")
        #expect(repaired.status == 0, "\(repaired.all)")
        #expect(repaired.stdout.contains("owned by nothing (leaked): freed"))
        #expect(repaired.stdout.contains("but free in the allocator bitmap: marked used"))
        #expect(try volume.fsck().status == 0)
    }

    @Test func damageInsideALogIsAProblemAndUndigestedRecordsAreNotes() throws {
        let volume = try Volume()
        var second: UInt64 = 0
        try volume.leaveALog { log, take in
            for name in ["a", "b", "c"] {
                if name == "b" { second = log.head }
                try log.append(.create(CreateArguments(parent: 1, inode: try take(), mode: 0o100644, uid: 0, gid: 0, rdev: 0,
                                                       time: Timestamp(seconds: 1), name: Array(name.utf8))))
            }
        }
        let clean = try volume.fsck()
        #expect(clean.status == 0, "\(clean.all)")
        #expect(clean.stdout.contains("note: log region 0: 3 records ("), "\(clean.stdout)")
        #expect(clean.stdout.contains("not yet digested; `shale digest` applies them"))
        #expect(clean.stdout.contains(", 3 log records to digest"))
        let logOffset = try volume.withVolume { _, superblock in Int(superblock.layout.logRegionOffset(0)) }
        try volume.flip(at: logOffset + Int(second) + 32 + 54)
        let found = try volume.fsck()
        #expect(found.status == 1)
        #expect(found.stdout.contains("log region 0: body checksum mismatch at offset \(second); record 2 lost"), "\(found.stdout)")
        #expect(found.stdout.contains("note: log region 0: 2 records ("))
    }

    @Test func repairRefusesUndigestedLogsAndSaysToDigestFirst() throws {
        let volume = try Volume()
        try volume.fill()
        try volume.rewrite(volume.todo) { $0.linkCount = 3 }
        try volume.leaveALog { log, take in
            try log.append(.create(CreateArguments(parent: 1, inode: try take(), mode: 0o100644, uid: 0, gid: 0, rdev: 0,
                                                   time: Timestamp(seconds: 1), name: Array("late".utf8))))
        }
        let refused = try volume.fsck("--repair")
        #expect(refused.status == 1)
        #expect(refused.stdout.contains("not repaired: the logs hold 1 undigested record(s)"), "\(refused.stdout)")
        #expect(refused.stdout.contains("run `shale digest` first"))
        #expect(try ShaleCommand.run(["digest", volume.scratch.directory]).status == 0)
        let repaired = try volume.fsck("--repair")
        #expect(repaired.status == 0, "\(repaired.all)")
    }

    @Test func repairRefusesAVolumeInUseElsewhere() throws {
        let volume = try Volume()
        try volume.fill()
        try volume.rewrite(volume.todo) { $0.linkCount = 3 }
        let lock = try FileLock(path: volume.scratch.nvm, exclusive: true)
        let refused = try volume.fsck("--repair")
        #expect(refused.status == 1)
        #expect(refused.stdout.contains("note: the volume is in use by another shale process"), "\(refused.stdout)")
        #expect(refused.stdout.contains("inode \(volume.todo): link count 3, should be 1"))
        #expect(refused.stdout.contains("not repaired: the volume is in use by another shale process"))
        _ = lock
    }

    @Test func aVolumeThatCannotBeCheckedExitsTwo() throws {
        let volume = try Volume()
        try volume.flip(at: 200)
        try volume.flip(at: 4096 + 200)
        let result = try volume.fsck()
        #expect(result.status == 2)
        #expect(result.stderr.contains("shale fsck: cannot check:"), "\(result.all)")
        #expect(result.stderr.contains("both superblock copies are damaged"))
        let missing = try ShaleCommand.run(["fsck", volume.scratch.path("nothing-here")])
        #expect(missing.status == 2)
        let json = try volume.fsck("--json")
        #expect(json.status == 2)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(object["exitStatus"] as? Int == 2)
    }

    @Test func oneDamagedSuperblockCopyIsAProblemUntilRepair() throws {
        let volume = try Volume()
        try volume.flip(at: 4096 + 300)
        let found = try volume.fsck()
        #expect(found.status == 1)
        #expect(found.stdout.contains("superblock copy B is damaged"), "\(found.stdout)")
        let repaired = try volume.fsck("--repair")
        #expect(repaired.status == 0, "\(repaired.all)")
        #expect(repaired.stdout.contains("note: superblock copy B is damaged"), "\(repaired.stdout)")
        #expect(repaired.stdout.contains("repaired from copy A"))
        #expect(try volume.fsck().stdout.hasPrefix("clean:"))
    }

    @Test func jsonCarriesEachProblemWithItsLocation() throws {
        let volume = try Volume()
        try volume.fill()
        try volume.rewrite(volume.notes) { $0.parentHint = 77 }
        let result = try volume.fsck("--json")
        #expect(result.status == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stdout)")
        #expect(object["clean"] as? Bool == false)
        #expect(object["exitStatus"] as? Int == 1)
        let problems = try #require(object["problems"] as? [[String: Any]])
        #expect(problems.count == 1)
        #expect(problems[0]["code"] as? String == "parent-hint-wrong")
        #expect(problems[0]["repairable"] as? Bool == true)
        let details = try #require(problems[0]["details"] as? [String: Any])
        #expect(details["inode"] as? Int == Int(volume.notes))
        #expect(details["stored"] as? Int == 77)
        #expect(details["parent"] as? Int == 1)
        let counts = try #require(object["counts"] as? [String: Any])
        #expect(counts["inodes"] as? Int == 4)

        let repaired = try volume.fsck("--repair", "--json")
        #expect(repaired.status == 0)
        let after = try #require(try JSONSerialization.jsonObject(with: Data(repaired.stdout.utf8)) as? [String: Any])
        #expect((after["repairs"] as? [[String: Any]])?.first?["done"] as? String == "parentHint 77 → 1")
        #expect((after["remaining"] as? [Any])?.isEmpty == true)
    }

    @Test func quietPrintsOnlyProblems() throws {
        let volume = try Volume()
        try volume.fill()
        let clean = try volume.fsck("--quiet")
        #expect(clean.status == 0 && clean.stdout.isEmpty && clean.stderr.isEmpty, "\(clean.all)")
        try volume.rewrite(volume.hello) { $0.allocatedBlocks = 9 }
        let found = try volume.fsck("-q")
        #expect(found.status == 1)
        #expect(found.stdout == "inode \(volume.hello): allocatedBlocks is 9, its maps hold 1\n", "\(found.stdout)")
        let conflicting = try volume.fsck("--quiet", "--progress")
        #expect(conflicting.status != 0 && conflicting.stderr.contains("--quiet cannot go with --progress"))
    }

    @Test func progressGoesToStandardError() throws {
        let volume = try Volume()
        let result = try volume.fsck("--progress")
        #expect(result.status == 0)
        #expect(result.stderr.contains("shale fsck: checked 16384/16384 inode slots"), "\(result.stderr)")
        #expect(result.stderr.contains("checked 1/1 directories"))
        #expect(result.stderr.contains("checked 1/1 bitmap blocks"))
        #expect(result.stdout.hasPrefix("clean:"))
    }

    // MARK: - shale status: log fill and digest lag

    @Test func statusShowsEachLogsFillAndDigestLag() throws {
        let volume = try Volume()
        let quiet = try ShaleCommand.run(["status", volume.scratch.directory])
        #expect(!quiet.stdout.contains("Logs:"), "no log has an owner: \(quiet.stdout)")
        var used: UInt64 = 0
        try volume.leaveALog { log, take in
            try log.append(.create(CreateArguments(parent: 1, inode: try take(), mode: 0o100644, uid: 0, gid: 0, rdev: 0,
                                                   time: Timestamp(seconds: 1), name: Array("a".utf8))))
            try [UInt8](repeating: 1, count: 100_000).withUnsafeBytes { data in
                _ = try log.append(.write(WriteArguments(inode: 2, offset: 0, length: 100_000, time: Timestamp(seconds: 1), inline: [])), data: data)
            }
            used = log.usedBytes
        }
        let status = try ShaleCommand.run(["status", volume.scratch.directory])
        #expect(status.status == 0, "\(status.all)")
        let lines = status.stdout.split(separator: "\n").map(String.init)
        let header = try #require(lines.firstIndex(of: "Logs:"), "\(status.stdout)")
        #expect(lines[header + 1].split(separator: " ", omittingEmptySubsequences: true) == ["LOG", "STATE", "OWNER", "UNDIGESTED", "FILL"])
        let tenths = (used * 1000 + (1 << 20) / 2) / (1 << 20)
        let row = lines[header + 2]
        #expect(row.split(separator: " ", omittingEmptySubsequences: true).prefix(4) == ["0", "attached", "pid", "4242"], "\(row)")
        #expect(row.contains("  2 records, \(ByteSize.format(used))  "), "\(row)")
        #expect(row.hasSuffix("  \(tenths / 10).\(tenths % 10)%"), "\(row)")
        #expect(tenths > 90 && tenths < 110, "about 10 % of a 1 MiB log")
        // Digested: the region is freed, the section goes.
        #expect(try ShaleCommand.run(["digest", volume.scratch.directory]).status == 0)
        #expect(!(try ShaleCommand.run(["status", volume.scratch.directory])).stdout.contains("Logs:"))
    }
}

/// `shale` formats sizes itself; the test repeats the rule to predict the status line.
enum ByteSize {
    static func format(_ bytes: UInt64) -> String {
        let units: [(String, UInt64)] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        for (name, size) in units where bytes >= size {
            let tenths = bytes / size * 10 + ((bytes % size) * 10 + size / 2) / size
            return tenths % 10 == 0 ? "\(tenths / 10) \(name)" : "\(tenths / 10).\(tenths % 10) \(name)"
        }
        return "\(bytes) B"
    }
}
