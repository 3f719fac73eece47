import Testing
import KernFS
import LibFS
import ShaleFormat
import ShaleMedia
import SystemPackage

/// Whatever the file API does, the shared area it leaves passes every fsck invariant.
struct FsckAfterWorkloadTests {
    static func check(_ nvm: SimulatedPersistentMemory) throws -> CheckReport {
        let volume = try Volume(nvm: nvm, nvmName: "sim.nvm", lowerDevices: [], repair: true)
        return Checker(volume: volume).check()
    }

    @Test func aMixedWorkloadLeavesAVolumeFsckFindsClean() throws {
        let fs = try simulatedFileSystem()
        try fs.mkdir("/src")
        try fs.mkdir("/src/deep")
        for index in 0 ..< 40 {
            try fs.writeFile(Path("/src/f\(index)"), (0 ..< (index * 700)).map { UInt8(truncatingIfNeeded: $0 ^ index) })
        }
        try fs.symlink("f1", at: "/src/short")
        try fs.symlink(Path(String(repeating: "x/", count: 100) + "end"), at: "/src/long")
        try fs.setxattr("/src/f2", name: "user.big", value: [UInt8](repeating: 7, count: 65536))
        try fs.setxattr("/src/f2", name: "user.small", value: [1, 2, 3])
        try fs.setxattr("/src", name: "user.dir", value: [9])
        try fs.rename("/src/f3", "/src/deep/moved")
        try fs.rename("/src/f4", "/src/f5")
        try fs.rename("/src/deep", "/deep", flags: .noReplace)
        try fs.link("/src/f6", "/deep/hard")
        let handle = try fs.open("/src/f7", .readWrite)
        try fs.unlink("/src/f7")
        try fs.pwrite(handle, [1, 2, 3], at: 10_000)
        try fs.fallocate(handle, mode: [.punchHole, .keepSize], offset: 0, length: 8192)
        try fs.digest()
        // Open but unlinked: an orphan the kernel keeps while the handle lives.
        #expect(try fs.fstat(handle).linkCount == 0)
        #expect(try fs.pread(handle, count: 3, at: 10_000) == [1, 2, 3])
        try fs.close(handle)
        try fs.truncate("/src/f8", size: 3)
        try fs.removexattr("/src/f2", name: "user.small")
        #expect(errnoOf { try fs.rmdir("/deep") } == .directoryNotEmpty)
        #expect(fs.refusedRecords == 0)
        try fs.close()
        let report = try Self.check(fs.kernel.nvm)
        #expect(report.problems.isEmpty, "\(report.problems)")
        let again = try reopen(fs)
        #expect(try again.getxattr("/src/f2", name: "user.big").count == 65536)
        #expect(try again.readlink("/src/long").count == 203)
        #expect(try again.readFile("/src/f8").count == 3)
    }
}
