import Foundation
import Testing
@testable import KernFS
@testable import LibFS
@testable import ShaleFormat
@testable import ShaleMedia

/// `shale digest` on a real volume whose log a process filled and then left (as a crash
/// would): the records reach the shared area, and the log region is freed.
@Suite(.serialized)
struct DigestCommandTests {
    /// Appends operations to a fresh log of the volume in `scratch`, as a LibFS process would,
    /// and "dies" (drops everything without digesting).
    func leaveALog(in scratch: Scratch, _ build: (OperationLog<MappedPersistentMemory>, InodeTable<MappedPersistentMemory>,
                                               MetadataTransaction<MappedPersistentMemory>) throws -> Void) throws {
        let nvm = try MappedPersistentMemory.open(path: scratch.nvm)
        let volume = try Volume(nvm: nvm, nvmName: scratch.nvm, lowerDevices: [], repair: false)
        let superblock = volume.superblock
        let grant = try LogTable(nvm: nvm, superblock: superblock).attach(ownerPID: 4242, ownerUID: 0, nowSeconds: 0)
        let allocator = try BlockAllocator(nvm: nvm, device: superblock.device(.nvm)!, volumeSeed: superblock.volumeID.checksumSeed)
        let inodes = try InodeTable(nvm: nvm, superblock: superblock, nvmAllocator: allocator)
        let transaction = MetadataTransaction(journal: MetadataJournal(nvm: nvm, superblock: superblock))
        try build(OperationLog(nvm: nvm, grant: grant), inodes, transaction)
    }

    var smallMkfsNoLowerTiers: (Scratch) -> [String] {
        { ["mkfs", $0.directory, "--nvm", $0.nvm, "--nvm-size", "64M", "--no-ssd", "--no-hdd", "--log-regions", "4", "--log-size", "1M"] }
    }

    @Test func digestAppliesALeftoverLogAndFreesItsRegion() throws {
        let scratch = Scratch()
        #expect(try ShaleCommand.run(smallMkfsNoLowerTiers(scratch)).status == 0)
        try leaveALog(in: scratch) { log, inodes, transaction in
            let file = try inodes.allocate(in: transaction)[0]
            let time = Timestamp(seconds: 1_764_000_000)
            try log.append(.create(CreateArguments(parent: 1, inode: file, mode: 0o100644, uid: 0, gid: 0, rdev: 0, time: time,
                                                   name: Array("hello.txt".utf8))))
            try log.append(.write(WriteArguments(inode: file, offset: 0, length: 6, time: time, inline: Array("world\n".utf8))))
        }
        let before = try ShaleCommand.run(["status", scratch.directory])
        #expect(before.stdout.contains("1 attached"), "\(before.stdout)")
        let digest = try ShaleCommand.run(["digest", scratch.directory])
        #expect(digest.status == 0, "\(digest.all)")
        #expect(digest.stdout.contains("log 0 (pid 4242, epoch 1): 2 records applied"), "\(digest.stdout)")
        let status = try ShaleCommand.run(["status", scratch.directory])
        #expect(status.stdout.contains("2 in use"), "the root and hello.txt: \(status.stdout)")
        #expect(status.stdout.contains("0 attached, 0 awaiting digest"))
        #expect(status.stdout.contains("transactions applied"))
        let again = try ShaleCommand.run(["digest", scratch.directory])
        #expect(again.status == 0 && again.stdout.contains("Nothing to digest"), "\(again.all)")
    }

    @Test func refusedRecordsAreReportedAndExitOne() throws {
        let scratch = Scratch()
        #expect(try ShaleCommand.run(smallMkfsNoLowerTiers(scratch)).status == 0)
        try leaveALog(in: scratch) { log, _, _ in
            try log.append(.unlink(RemoveArguments(parent: 1, inode: 99, time: Timestamp(seconds: 1), name: Array("ghost".utf8))))
        }
        let digest = try ShaleCommand.run(["digest", scratch.directory])
        #expect(digest.status == 1)
        #expect(digest.stdout.contains("1 refused"), "\(digest.all)")
        #expect(digest.stdout.contains("refused record 1: the name does not exist"))
    }
}
