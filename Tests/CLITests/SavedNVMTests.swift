// Emulated NVM across a reboot (KernFS SavedNVM, through the real `shale` binary and mount):
// a clean unmount saves the RAM-backed NVM region beside the manifest; when the region is
// gone (a reboot empties /dev/shm; the tests delete the file), the next command restores the
// copy, says so, and warns when a mount after the save did not end cleanly.

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension MountSuites {
    @Suite struct SavedNVMTests {}
}

extension MountSuites.SavedNVMTests {
    private func saved(_ fixture: MountFixture) -> String { fixture.scratch.path("shale.nvm.saved") }
    private func marker(_ fixture: MountFixture) -> String { fixture.scratch.path("shale.nvm.mounted") }

    @Test func aCleanUnmountSavesTheNVMAndACommandAfterItsLossRestoresIt() throws {
        let fixture = try MountFixture()
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point)
        #expect(FileManager.default.fileExists(atPath: marker(fixture)), "a mount marks the saved copy as older")
        try writeFile(point + "/kept", pattern(300_000, seed: 7))
        try FileManager.default.createDirectory(atPath: point + "/dir/sub", withIntermediateDirectories: true)
        try writeFile(point + "/dir/sub/small", bytes("small"))
        guard fixture.unmount(point, daemon: daemon) else { return }
        #expect(fixture.log(of: daemon).contains("saved the emulated NVM"), "\(fixture.log(of: daemon))")
        #expect(FileManager.default.fileExists(atPath: saved(fixture)))
        #expect(!FileManager.default.fileExists(atPath: marker(fixture)), "the clean unmount clears the marker")
        // The copy keeps the region's zeros as holes.
        var info = stat()
        #expect(stat(saved(fixture), &info) == 0 && Int(info.st_blocks) * 512 < Int(info.st_size) / 2)

        // "Reboot": the RAM-backed region is gone. fsck restores it first, and finds it clean.
        unlink(fixture.scratch.nvm)
        let fsck = try ShaleCommand.run(["fsck", fixture.scratch.directory])
        #expect(fsck.status == 0 && fsck.stdout.contains("clean"), "\(fsck.all)")
        #expect(fsck.stderr.contains("restored the emulated NVM"), "\(fsck.all)")
        #expect(!fsck.stderr.contains("WARNING"), "\(fsck.all)")
        #expect(FileManager.default.fileExists(atPath: fixture.scratch.nvm))

        let again = try fixture.mountInForeground(on: point)
        #expect(try readFile(point + "/kept") == pattern(300_000, seed: 7))
        #expect(try readFile(point + "/dir/sub/small") == bytes("small"))
        fixture.unmount(point, daemon: again)
    }

    @Test func aRestoreAfterAMountThatDidNotEndCleanlyWarnsThatItsChangesAreLost() throws {
        let fixture = try MountFixture()
        let point = fixture.newMountPoint()
        let first = try fixture.mountInForeground(on: point)
        try writeFile(point + "/before", bytes("saved at the clean unmount"))
        guard fixture.unmount(point, daemon: first) else { return }

        let second = try fixture.mountInForeground(on: point)
        try writeFile(point + "/after", bytes("only in RAM"))
        kill(second.processIdentifier, SIGKILL)
        _ = fixture.waitForExit(second)
        // The daemon died: the NVM still holds "after" (a crash of a process loses nothing)...
        unlink(fixture.scratch.nvm)
        // ...but then the machine "rebooted": the last saved copy is all there is, and the
        // user is told what that costs.
        let third = try fixture.mountInForeground(on: point)
        let log = fixture.log(of: third)
        #expect(log.contains("restored the emulated NVM") && log.contains("did not end cleanly"), "\(log)")
        #expect(try readFile(point + "/before") == bytes("saved at the clean unmount"))
        #expect(errnoOf { _ = try readFile(point + "/after") } == ENOENT)
        fixture.unmount(point, daemon: third)
        fixture.expectFsckClean()
    }

    @Test func aSavedCopyOfAnotherVolumeIsNotRestoredAndMkfsDropsAnOldOne() throws {
        let fixture = try MountFixture()
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point)
        guard fixture.unmount(point, daemon: daemon) else { return }
        #expect(FileManager.default.fileExists(atPath: saved(fixture)))

        // A second volume elsewhere; its saved copy moved into the first one's directory.
        let other = Scratch()
        let made = try ShaleCommand.run(other.smallMkfs)
        #expect(made.status == 0, "\(made.all)")
        let foreignCopy = other.path("foreign.saved")
        #expect(try shell("cp --sparse=always \(quoted(other.nvm)) \(quoted(foreignCopy))").status == 0)
        unlink(saved(fixture))
        #expect(rename(foreignCopy, saved(fixture)) == 0)
        unlink(fixture.scratch.nvm)
        let status = try ShaleCommand.run(["status", fixture.scratch.directory])
        #expect(status.status != 0 && status.stderr.contains("is not a saved NVM region of file system"), "\(status.all)")
        #expect(!FileManager.default.fileExists(atPath: fixture.scratch.nvm), "nothing was restored")

        // mkfs --force makes a new volume in the directory and drops the stale copy.
        let remade = try ShaleCommand.run(fixture.scratch.smallMkfs + ["--force"])
        #expect(remade.status == 0, "\(remade.all)")
        #expect(!FileManager.default.fileExists(atPath: saved(fixture)))
    }
}
