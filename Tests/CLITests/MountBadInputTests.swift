// Bad input to the mount: a mount point that is not a directory, a volume of another format
// version, and a full file system (ENOSPC through the mount: reported, nothing already
// answered damaged, the space usable again once files are deleted, fsck clean).

import CLinux
import Foundation
import ShaleFormat
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension MountSuites {
    @Suite struct MountBadInputTests {}
}

/// Rewrites the block at `offset` of the file at `path`.
private func patchBlock(_ path: String, at offset: Int, _ change: (inout [UInt8]) -> Void) throws {
    let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
    defer { try? handle.close() }
    try handle.seek(toOffset: UInt64(offset))
    var block = [UInt8](try handle.read(upToCount: 4096) ?? Data())
    change(&block)
    try handle.seek(toOffset: UInt64(offset))
    try handle.write(contentsOf: Data(block))
}

/// Sets a superblock copy's format version (bytes 8–11) and reseals its checksum, as a newer
/// shale's volume would look.
private func setVersion(_ version: UInt32, nvm: String, copies: [Int]) throws {
    for copy in copies {
        try patchBlock(nvm, at: Superblock.copyOffsets[copy]) { block in
            block.withUnsafeMutableBytes { bytes in
                bytes.storeBytes(of: version.littleEndian, toByteOffset: 8, as: UInt32.self)
                StructureChecksum.seal(bytes, crcOffset: 12)
            }
        }
    }
}

private func versionField(_ nvm: String, copy: Int) throws -> UInt32 {
    let data = try Data(contentsOf: URL(fileURLWithPath: nvm))
    let offset = Superblock.copyOffsets[copy] + 8
    return data[offset ..< offset + 4].enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * $1.offset) }
}

extension MountSuites.MountBadInputTests {
    @Test(.timeLimit(.minutes(2)))
    func aMountPointThatIsAFileOrADeviceIsAClearError() throws {
        let fixture = try MountFixture()
        let volume = fixture.scratch.directory
        let file = "/tmp/shale-not-a-dir-\(fixture.id)"
        try writeFile(file, bytes("a regular file"))
        defer { unlink(file) }
        let link = file + ".link"
        symlink(file, link)
        defer { unlink(link) }
        let cases: [(point: String, mode: [String])] = [(file, []), (file, ["-f"]), (link, []), ("/dev/null", ["-f"])]
        for (point, mode) in cases {
            let result = try ShaleCommand.run(["mount", volume, point, "-o", "fsname=\(fixture.fsname)"] + mode)
            #expect(result.status == 1 && result.stderr.contains("is not a directory") && result.stderr.contains(point),
                    "\(point) \(mode): \(result.all)")
            #expect(!result.stderr.contains("Fatal error") && !result.stderr.contains("libfuse"), "one sentence: \(result.all)")
            #expect(!fixture.isMounted(point))
        }
        #expect(try readFile(file) == bytes("a regular file"), "the file is left alone")
        #expect(fixture.waitUntilVolumeIsFree(), "no daemon kept the volume")
        // The volume was never opened: it mounts and is clean.
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point)
        #expect(try names(in: point) == [])
        fixture.unmount(point, daemon: daemon)
        fixture.expectFsckClean()
    }

    @Test(.timeLimit(.minutes(2)))
    func aVolumeOfAnotherFormatVersionIsRefusedNamingTheVersion() throws {
        let fixture = try MountFixture()
        let volume = fixture.scratch.directory
        let nvm = fixture.scratch.nvm
        // A file on it first, so that there is something to lose.
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point)
        try writeFile(point + "/kept", bytes("kept across the refusals"))
        fixture.unmount(point, daemon: daemon)

        // Both copies of a newer version (a volume from a newer shale): refused, in the
        // foreground and in the background, and not "repaired" into version 2.
        try setVersion(3, nvm: nvm, copies: [0, 1])
        for mode in [["-f"], []] {
            let result = try ShaleCommand.run(["mount", volume, point, "-o", "fsname=\(fixture.fsname)"] + mode)
            #expect(result.status == 1 && result.stderr.contains("format version 3, but this shale reads version 2"),
                    "\(mode): \(result.all)")
            #expect(!fixture.isMounted(point))
        }
        #expect(try versionField(nvm, copy: 0) == 3 && versionField(nvm, copy: 1) == 3)
        // Only one copy newer (an upgrade in progress): refused too.
        try setVersion(2, nvm: nvm, copies: [0])
        let oneCopy = try ShaleCommand.run(["mount", volume, point, "-f", "-o", "fsname=\(fixture.fsname)"])
        #expect(oneCopy.status == 1 && oneCopy.stderr.contains("format version 3"), "\(oneCopy.all)")
        #expect(try versionField(nvm, copy: 1) == 3)
        // Version 0 and a far one, named as they are.
        try setVersion(0, nvm: nvm, copies: [0, 1])
        let zero = try ShaleCommand.run(["mount", volume, point, "-f"])
        #expect(zero.status == 1 && zero.stderr.contains("format version 0"), "\(zero.all)")
        try setVersion(0xFFFF_FFFF, nvm: nvm, copies: [0, 1])
        let far = try ShaleCommand.run(["mount", volume, point, "-f"])
        #expect(far.status == 1 && far.stderr.contains("format version 4294967295"), "\(far.all)")
        #expect(!fixture.isMounted(point))

        // Back to version 2: it mounts, with the file intact. A version byte flipped without
        // resealing reads as damage to that copy, repaired from the other.
        try setVersion(2, nvm: nvm, copies: [0, 1])
        try patchBlock(nvm, at: Superblock.copyOffsets[0]) { $0[8] ^= 0x02 }
        let again = try fixture.mountInForeground(on: point)
        #expect(try readFile(point + "/kept") == bytes("kept across the refusals"))
        fixture.unmount(point, daemon: again)
        #expect(try versionField(nvm, copy: 0) == 2, "the damaged copy was repaired")
        fixture.expectFsckClean()
    }

    @Test(.timeLimit(.minutes(3)))
    func aFullFileSystemSaysENOSPCKeepsWhatItHasAndWorksAgainAfterDeletes() throws {
        let fixture = try MountFixture()
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point)
        // What is there before it fills.
        try check(Int(mkdir(point + "/kept", 0o755)), "mkdir")
        for index in 0 ..< 20 { try writeFile(point + "/kept/\(index)", pattern(50_000 + index * 1000, seed: index)) }

        // Fill it: 1 MiB writes until ENOSPC, in files of 4 MiB.
        let chunk = pattern(1 << 20, seed: 99)
        var written = 0, fillFiles = 0, failure: Int32 = 0
        fill: while written < 1 << 30 {
            let fd = open(point + "/fill-\(fillFiles)", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            if fd < 0 { failure = errno; break }
            fillFiles += 1
            defer { close(fd) }
            for _ in 0 ..< 4 {
                let count = write(fd, chunk, chunk.count)
                if count < 0 { failure = errno; break fill }
                written += count
                if count < chunk.count { failure = write(fd, chunk, chunk.count) < 0 ? errno : 0; break fill }
            }
        }
        #expect(failure == ENOSPC, "the mount answers ENOSPC when full, not \(errnoName(failure)), after \(written) bytes")
        var totals = statfs()
        try check(Int(statfs(point, &totals)), "statfs")
        #expect(written > 32 << 20 && totals.f_bfree < totals.f_blocks / 20, "\(written) bytes written, \(totals.f_bfree) of \(totals.f_blocks) blocks left")
        // Full: more data is ENOSPC too, never EIO; the daemon is alive.
        let more = open(point + "/more", O_WRONLY | O_CREAT, 0o644)
        if more >= 0 {
            #expect(write(more, chunk, chunk.count) < 0 && errno == ENOSPC, "\(errnoName(errno))")
            close(more)
        } else {
            #expect(errno == ENOSPC, "\(errnoName(errno))")
        }
        #expect(daemon.isRunning)
        // Nothing answered before is damaged.
        for index in 0 ..< 20 {
            #expect(try readFile(point + "/kept/\(index)") == pattern(50_000 + index * 1000, seed: index), "kept/\(index)")
        }
        let firstFill = try readFile(point + "/fill-0")
        #expect(firstFill.count == 4 << 20 && firstFill.prefix(1 << 20).elementsEqual(chunk), "fill-0")

        // Delete the fill files: the space is usable again at once, through the mount.
        for index in 0 ..< fillFiles { #expect(unlink(point + "/fill-\(index)") == 0, "\(errnoName(errno))") }
        unlink(point + "/more")
        let after = pattern(16 << 20, seed: 5)
        try writeFile(point + "/after", after)
        #expect(try readFile(point + "/after") == after)
        let tools = try shell("cd \(quoted(point)) && mkdir again && echo fine > again/file && cat again/file")
        #expect(tools.status == 0 && tools.stdout == "fine\n", "\(tools.all)")

        // Filled again and emptied again, then unmounted: all still consistent.
        let again = try shell("cd \(quoted(point)) && dd if=/dev/zero of=fill bs=1M count=1000 2>&1; rm fill")
        #expect(again.stdout.contains("No space left on device"), "\(again.all)")
        fixture.unmount(point, daemon: daemon)
        fixture.expectFsckClean()
        let remounted = try fixture.mountInForeground(on: point)
        #expect(try readFile(point + "/after") == after)
        for index in 0 ..< 20 {
            #expect(try readFile(point + "/kept/\(index)") == pattern(50_000 + index * 1000, seed: index), "kept/\(index)")
        }
        fixture.unmount(point, daemon: remounted)
        fixture.expectFsckClean()
        #expect(!fixture.didTimeOut)
    }
}
