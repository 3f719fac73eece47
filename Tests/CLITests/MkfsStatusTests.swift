import Foundation
import Testing
@testable import ShaleFormat

/// `shale mkfs` and `shale status`, end to end through the built binary.
@Suite(.serialized)
struct MkfsStatusTests {
    @Test func mkfsThenStatusShowsTheVolume() throws {
        let scratch = Scratch()
        let made = try ShaleCommand.run(scratch.smallMkfs + ["--label", "test volume"])
        #expect(made.status == 0, "\(made.all)")
        #expect(made.stdout.contains("Made Shale file system"))
        let status = try ShaleCommand.run(["status", scratch.directory])
        #expect(status.status == 0, "\(status.all)")
        let uuid = try #require(made.stdout.split(separator: "\n").first?.split(separator: " ").last)
        #expect(status.stdout.contains(String(uuid)))
        #expect(status.stdout.contains("test volume"))
        #expect(status.stdout.contains("copies A and B valid, generation 1"))
        #expect(status.stdout.contains("emulated NVM"))
        for tier in ["nvm", "ssd", "hdd"] { #expect(status.stdout.contains("\n  \(tier) "), "tier \(tier)") }
        #expect(status.stdout.contains(scratch.path("ssd.img")))
        #expect(status.stdout.contains("1 in use"), "only the root inode is used")
        #expect(status.stdout.contains("4 × 1 MiB"))
        // The lower tiers are empty, the NVM holds the first inode chunk and the root directory.
        #expect(status.stdout.contains("O_DIRECT"))
        let manifest = try String(contentsOfFile: scratch.path("shale.volume"), encoding: .utf8)
        #expect(manifest.contains("nvm = \(scratch.nvm)"))
        #expect(manifest.contains("ssd = ssd.img"))
    }

    @Test func defaultMkfsPicksSizesForTheMachine() throws {
        let scratch = Scratch()
        let made = try ShaleCommand.run(["mkfs", scratch.directory])
        #expect(made.status == 0, "\(made.all)")
        let manifest = try String(contentsOfFile: scratch.path("shale.volume"), encoding: .utf8)
        let nvmLine = try #require(manifest.split(separator: "\n").first { $0.hasPrefix("nvm = ") })
        let nvmPath = String(nvmLine.dropFirst("nvm = ".count))
        defer { try? FileManager.default.removeItem(atPath: nvmPath) }
        #expect(nvmPath.hasPrefix("/dev/shm/shale-"))
        let nvmBytes = try #require(try FileManager.default.attributesOfItem(atPath: nvmPath)[.size] as? Int)
        #expect(nvmBytes >= 256 << 20 && nvmBytes <= 2 << 30)
        for image in ["ssd.img", "hdd.img"] {
            let bytes = try #require(try FileManager.default.attributesOfItem(atPath: scratch.path(image))[.size] as? Int)
            #expect(bytes >= 1 << 30, "\(image) is \(bytes) bytes")
        }
        let status = try ShaleCommand.run(["status", scratch.directory])
        #expect(status.status == 0, "\(status.all)")
    }

    @Test func mkfsRefusesToOverwriteWithoutForce() throws {
        let scratch = Scratch()
        #expect(try ShaleCommand.run(scratch.smallMkfs).status == 0)
        let first = try ShaleCommand.run(["status", scratch.directory]).stdout
        let again = try ShaleCommand.run(scratch.smallMkfs)
        #expect(again.status != 0)
        #expect(again.stderr.contains("--force"), "\(again.all)")
        #expect(try ShaleCommand.run(["status", scratch.directory]).stdout == first, "the volume is untouched")

        let forced = try ShaleCommand.run(scratch.smallMkfs + ["--force"])
        #expect(forced.status == 0, "\(forced.all)")
        let second = try ShaleCommand.run(["status", scratch.directory])
        #expect(second.status == 0)
        #expect(second.stdout.split(separator: "\n").first != first.split(separator: "\n").first, "a new volume ID")
    }

    @Test func mkfsRefusesANonEmptyForeignFile() throws {
        let scratch = Scratch()
        try FileManager.default.createDirectory(atPath: scratch.directory, withIntermediateDirectories: true)
        let precious = scratch.path("ssd.img")
        try Data("precious data".utf8).write(to: URL(fileURLWithPath: precious))
        let made = try ShaleCommand.run(scratch.smallMkfs)
        #expect(made.status != 0)
        #expect(made.stderr.contains("not empty"), "\(made.all)")
        #expect(try String(contentsOfFile: precious, encoding: .utf8) == "precious data")
    }

    @Test(arguments: [
        (["--nvm-size", "0"], "below the minimum"),
        (["--nvm-size", "12X"], "nvm-size"),
        (["--nvm-size", "-5M"], "nvm-size"),
        (["--nvm-size", "99999999999999999999"], "nvm-size"),
        (["--nvm-size", "100000000"], "multiple of 4096"),
        (["--nvm-size", "16M"], "below the minimum"),
        (["--log-regions", "0"], "1 to 4096"),
        (["--log-size", "4M", "--log-regions", "64"], "too small"),
        (["--ssd-size", "1G", "--ssd-segment", "1G"], "segment"),
        (["--label", String(repeating: "x", count: 65)], "label"),
        (["--nvm-size", "0.1K"], "nvm-size"),
        (["--log-regions", "16", "--log-size", "1048576T"], "too small"),
        (["--log-size", "2000000T"], "absurdly large"),
        (["--log-regions", "4096"], "too small"),
        (["--ssd", "/tmp/a\nb"], "line break"),
    ])
    func mkfsRejectsBadSizesClearly(extra: [String], message: String) throws {
        let scratch = Scratch()
        let base = ["mkfs", scratch.directory, "--nvm", scratch.nvm, "--nvm-size", "64M", "--ssd-size", "64M",
                    "--hdd-size", "64M", "--ssd-segment", "1M", "--hdd-segment", "1M", "--log-size", "1M"]
        let result = try ShaleCommand.run(base + extra)
        #expect(result.status != 0)
        #expect(result.all.contains(message), "\(result.all)")
        // Nothing was made: a bad option never leaves media behind.
        #expect(!FileManager.default.fileExists(atPath: scratch.path("shale.volume")))
        #expect(!FileManager.default.fileExists(atPath: scratch.path("ssd.img")))
        #expect(!FileManager.default.fileExists(atPath: scratch.nvm))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: "/dev/shm").filter { $0.hasPrefix(URL(fileURLWithPath: scratch.nvm).lastPathComponent) }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }

    @Test func aBadOptionWithForceKeepsTheOldVolume() throws {
        let scratch = Scratch()
        #expect(try ShaleCommand.run(scratch.smallMkfs).status == 0)
        let before = try ShaleCommand.run(["status", scratch.directory]).stdout
        let result = try ShaleCommand.run(scratch.smallMkfs + ["--force", "--label", String(repeating: "y", count: 80)])
        #expect(result.status != 0)
        #expect(try ShaleCommand.run(["status", scratch.directory]).stdout == before)
    }

    @Test func statusRepairsOneDamagedSuperblockCopy() throws {
        let scratch = Scratch()
        #expect(try ShaleCommand.run(scratch.smallMkfs).status == 0)
        try corrupt(scratch.nvm, at: 100)  // inside copy A
        let repaired = try ShaleCommand.run(["status", scratch.directory])
        #expect(repaired.status == 0, "\(repaired.all)")
        #expect(repaired.stdout.contains("only copy B valid"))
        #expect(repaired.stdout.contains("superblock copy A is damaged"))
        #expect(repaired.stdout.contains("repaired from copy B"))
        let after = try ShaleCommand.run(["status", scratch.directory])
        #expect(after.stdout.contains("copies A and B valid"))
        #expect(!after.stdout.contains("repaired"))

        try corrupt(scratch.nvm, at: 4096 + 40)  // inside copy B
        let other = try ShaleCommand.run(["status", scratch.directory])
        #expect(other.status == 0)
        #expect(other.stdout.contains("superblock copy B is damaged"))
    }

    @Test func statusFailsClearlyWhenBothCopiesAreDamaged() throws {
        let scratch = Scratch()
        #expect(try ShaleCommand.run(scratch.smallMkfs).status == 0)
        try corrupt(scratch.nvm, at: 200)
        try corrupt(scratch.nvm, at: 4096 + 200)
        let result = try ShaleCommand.run(["status", scratch.directory])
        #expect(result.status == 1)
        #expect(result.stderr.contains("both superblock copies are damaged"), "\(result.all)")
        #expect(result.stderr.contains("checksum mismatch"))
    }

    @Test func statusRefusesANewerFormatVersion() throws {
        let scratch = Scratch()
        #expect(try ShaleCommand.run(scratch.smallMkfs).status == 0)
        for copy in [0, 4096] {
            try patch(scratch.nvm, at: copy) { block in
                block.withUnsafeMutableBytes { bytes in
                    bytes.storeBytes(of: UInt32(3).littleEndian, toByteOffset: 8, as: UInt32.self)
                    StructureChecksum.seal(bytes, crcOffset: 12)
                }
            }
        }
        let result = try ShaleCommand.run(["status", scratch.directory])
        #expect(result.status == 1)
        #expect(result.stderr.contains("format version 3, but this shale reads version 2"), "\(result.all)")
        // Nothing was "repaired" into the older format.
        let head = try Data(contentsOf: URL(fileURLWithPath: scratch.nvm)).prefix(12)
        #expect(head[8] == 3)
    }

    @Test func statusRefusesAForeignNVMRegion() throws {
        let scratch = Scratch()
        #expect(try ShaleCommand.run(scratch.smallMkfs).status == 0)
        try Data(count: 8192).write(to: URL(fileURLWithPath: scratch.nvm))
        let result = try ShaleCommand.run(["status", scratch.directory])
        #expect(result.status == 1)
        #expect(result.stderr.contains("is not a Shale file system"), "\(result.all)")
    }

    @Test func statusRefusesADeviceOfAnotherVolume() throws {
        let one = Scratch(), two = Scratch()
        #expect(try ShaleCommand.run(one.smallMkfs).status == 0)
        #expect(try ShaleCommand.run(two.smallMkfs).status == 0)
        try FileManager.default.removeItem(atPath: one.path("ssd.img"))
        try FileManager.default.copyItem(atPath: two.path("ssd.img"), toPath: one.path("ssd.img"))
        let result = try ShaleCommand.run(["status", one.directory])
        #expect(result.status == 1)
        #expect(result.stderr.contains("belongs to another Shale file system"), "\(result.all)")
    }

    @Test func statusRefusesSwappedTiers() throws {
        let scratch = Scratch()
        #expect(try ShaleCommand.run(scratch.smallMkfs).status == 0)
        let manifestPath = scratch.path("shale.volume")
        var manifest = try String(contentsOfFile: manifestPath, encoding: .utf8)
        manifest = manifest.replacingOccurrences(of: "ssd = ssd.img", with: "ssd = HDD")
            .replacingOccurrences(of: "hdd = hdd.img", with: "hdd = ssd.img")
            .replacingOccurrences(of: "ssd = HDD", with: "ssd = hdd.img")
        try manifest.write(toFile: manifestPath, atomically: true, encoding: .utf8)
        let result = try ShaleCommand.run(["status", scratch.directory])
        #expect(result.status == 1)
        #expect(result.stderr.contains("swapped"), "\(result.all)")
    }

    @Test func statusExplainsAMissingNVMRegion() throws {
        let scratch = Scratch()
        #expect(try ShaleCommand.run(scratch.smallMkfs).status == 0)
        try FileManager.default.removeItem(atPath: scratch.nvm)
        let result = try ShaleCommand.run(["status", scratch.directory])
        #expect(result.status == 1)
        #expect(result.stderr.contains("does not exist"))
        #expect(result.stderr.contains("reboot"), "\(result.all)")
    }

    @Test func statusOfADirectoryWithoutAVolume() throws {
        let scratch = Scratch()
        try FileManager.default.createDirectory(atPath: scratch.directory, withIntermediateDirectories: true)
        let result = try ShaleCommand.run(["status", scratch.directory])
        #expect(result.status == 1)
        #expect(result.stderr.contains("holds no Shale file system"), "\(result.all)")
        let missing = try ShaleCommand.run(["status", scratch.path("nope")])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("does not exist"))
    }

    @Test func statusRejectsAGarbageManifest() throws {
        let scratch = Scratch()
        #expect(try ShaleCommand.run(scratch.smallMkfs).status == 0)
        try "format = 2\nuuid = not-a-uuid\n".write(toFile: scratch.path("shale.volume"), atomically: true, encoding: .utf8)
        let result = try ShaleCommand.run(["status", scratch.directory])
        #expect(result.status == 1)
        #expect(result.stderr.contains("volume manifest: invalid uuid"), "\(result.all)")
    }

    @Test func statusReportsADamagedAllocatorBitmap() throws {
        let scratch = Scratch()
        #expect(try ShaleCommand.run(scratch.smallMkfs).status == 0)
        let superblock = try readSuperblock(scratch.nvm)
        let nvmDevice = try #require(superblock.device(.nvm))
        try corrupt(scratch.nvm, at: Int(nvmDevice.bitmapOffset) + 100)
        let result = try ShaleCommand.run(["status", scratch.directory])
        #expect(result.status == 1)
        #expect(result.stdout.contains("nvm allocator bitmap block at data block 0: checksum mismatch"), "\(result.all)")
    }

    // MARK: - Helpers

    private func corrupt(_ path: String, at offset: Int) throws {
        try patch(path, at: offset - offset % 4096) { block in block[offset % 4096] ^= 0xFF }
    }

    private func patch(_ path: String, at blockOffset: Int, _ change: (inout [UInt8]) -> Void) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(blockOffset))
        var block = [UInt8](try handle.read(upToCount: 4096) ?? Data())
        change(&block)
        try handle.seek(toOffset: UInt64(blockOffset))
        try handle.write(contentsOf: Data(block))
    }

    private func readSuperblock(_ path: String) throws -> Superblock {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try [UInt8](data).withUnsafeBytes { try Superblock.decode(UnsafeRawBufferPointer(rebasing: $0[0 ..< 4096]), nvmBytes: UInt64(data.count)) }
    }
}
