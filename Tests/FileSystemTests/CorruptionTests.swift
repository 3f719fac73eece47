import Testing
import KernFS
import LibFS
import ShaleFormat
import ShaleMedia
import SystemPackage

/// Damage in the NVM is reported clearly (an errno for the call, a message from the kernel,
/// a problem from fsck) and never crashes the process or spreads.
struct CorruptionTests {
    static func inodeOffset(_ fs: SimulatedFileSystem, _ number: UInt64) -> Int {
        let layout = fs.kernel.superblock.layout
        let perChunk = UInt64(layout.inodesPerChunk)
        let chunk = fs.kernel.nvm.loadWord(at: Int(layout.inodeMapOffset + number / perChunk * 8))
        return Int(chunk + number % perChunk * UInt64(layout.inodeBytes))
    }

    static func flip(_ nvm: SimulatedPersistentMemory, at offset: Int) {
        let byte = nvm.load(at: offset, count: 1)[0]
        nvm.storePersist([byte ^ 0x5A], at: offset)
    }

    static func check(_ nvm: SimulatedPersistentMemory) throws -> CheckReport {
        Checker(volume: try Volume(nvm: nvm, nvmName: "sim.nvm", lowerDevices: [], repair: true)).check()
    }

    @Test func aFlippedInodeIsAnIOErrorForThatFileAndAnFsckProblem() throws {
        let fs = try simulatedFileSystem()
        try fs.writeFile("/good", [1, 2, 3])
        try fs.writeFile("/bad", [4, 5, 6])
        let number = try fs.stat("/bad").inode
        try fs.close()
        Self.flip(fs.kernel.nvm, at: Self.inodeOffset(fs, number) + 100)
        let again = try reopen(fs)
        #expect(errnoOf { _ = try again.stat("/bad") } == .ioError)
        #expect(try again.readFile("/good") == [1, 2, 3])
        try again.close()
        let report = try Self.check(fs.kernel.nvm)
        #expect(report.problems.contains { if case let .inodeDamaged(inode, _) = $0 { inode == number } else { false } },
                "\(report.problems)")
    }

    @Test func aFlippedDirectoryBlockIsAnIOErrorForLookupsInItAndAnFsckProblem() throws {
        let fs = try simulatedFileSystem()
        try fs.mkdir("/dir")
        try fs.writeFile("/dir/a", [1])
        try fs.writeFile("/other", [2])
        try fs.digest()
        let directory = try fs.kernel.inode(try fs.stat("/dir").inode)!
        guard case let .extents(extents) = directory.mapping, let first = extents.first else {
            Issue.record("a small directory maps its block inline")
            return
        }
        try fs.close()
        let offset = fs.kernel.allocator.nvmOffset(ofBlock: first.physicalBlock)
        Self.flip(fs.kernel.nvm, at: Int(offset) + 40)
        let again = try reopen(fs)
        #expect(errnoOf { _ = try again.stat("/dir/a") } == .ioError)
        #expect(try again.readFile("/other") == [2])
        try again.close()
        let report = try Self.check(fs.kernel.nvm)
        #expect(report.problems.contains { if case .directoryDamaged = $0 { true } else { false } }, "\(report.problems)")
    }

    @Test func aFlippedLogRecordIsReportedAtRecoveryAndTheRestIsApplied() throws {
        let fs = try simulatedFileSystem()
        try fs.writeFile("/before", [1])
        let grant = fs.grant
        try fs.writeFile("/damaged", [UInt8](repeating: 7, count: 100))
        let damagedHead = fs.logHeadForTesting
        try fs.writeFile("/after", [3])
        fs.abandon()
        // Flip a byte inside the records written for "/damaged" (its create or its write).
        Self.flip(fs.kernel.nvm, at: Int(grant.regionOffset + damagedHead) - 60)
        let again = try reopen(fs)
        let damage = again.kernel.recovered.flatMap(\.damage)
        #expect(!damage.isEmpty)
        #expect(try again.readFile("/before") == [1])
        #expect(try again.readFile("/after") == [3])
        try again.close()
        #expect(try Self.check(fs.kernel.nvm).problems.isEmpty)
    }
}
