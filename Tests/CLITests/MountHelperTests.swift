// `mount -t fuse.shale` and fstab: mount(8) runs /sbin/mount.fuse.shale (a link to the
// shale binary) with its own argument conventions. These tests put the link in place for the
// built binary (moving an installed one aside and back), then mount through mount(8) itself:
// by type on the command line, and from an fstab line (`mount -T FILE MOUNTPOINT`).

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension MountSuites {
    @Suite struct MountHelperTests {}
}

extension MountSuites.MountHelperTests {
    /// /sbin/mount.fuse.shale pointing at the built binary for the test's duration.
    private final class HelperLink {
        static let path = "/sbin/mount.fuse.shale"
        private let aside = "/sbin/mount.fuse.shale.shale-test-\(getpid())"
        private var movedAside = false

        init() throws {
            if FileManager.default.fileExists(atPath: Self.path) || (try? FileManager.default.destinationOfSymbolicLink(atPath: Self.path)) != nil {
                guard rename(Self.path, aside) == 0 else { throw MountFixture.Failure("cannot move \(Self.path) aside") }
                movedAside = true
            }
            guard symlink(ShaleCommand.binary, Self.path) == 0 else { throw MountFixture.Failure("cannot link \(Self.path)") }
        }

        deinit {
            unlink(Self.path)
            if movedAside { rename(aside, Self.path) }
        }
    }

    @Test func mountByTypeAndFromAnFstabLineServeTheVolume() throws {
        let fixture = try MountFixture()
        let link = try HelperLink()
        defer { withExtendedLifetime(link) {} }
        let volume = fixture.scratch.directory
        let point = fixture.newMountPoint()

        // By type, with mount(8)-only options among FUSE's: they are dropped, not errors.
        let byType = try shell("mount -t fuse.shale -o noauto,nofail,x-test=1,allow_other,fsname=\(fixture.fsname) "
            + "\(quoted(volume)) \(quoted(point))")
        #expect(byType.status == 0, "\(byType.all)")
        #expect(fixture.isMounted(point), "mount -t fuse.shale returned once the mount was ready")
        #expect(mounts().contains { $0.point == point && $0.source == fixture.fsname })
        try writeFile(point + "/by-type", bytes("mounted by mount(8)"))
        #expect(try shell("umount \(quoted(point))").status == 0)
        #expect(fixture.waitUntilVolumeIsFree(), "the daemon closed the volume after umount")

        // From fstab (a file of our own, read with -T): `mount MOUNTPOINT` alone.
        let fstab = fixture.scratch.path("fstab")
        try writeFile(fstab, bytes("# test fstab\n\(volume) \(point) fuse.shale defaults,noauto,fsname=\(fixture.fsname) 0 0\n"))
        let fromFstab = try shell("mount -T \(quoted(fstab)) \(quoted(point))")
        #expect(fromFstab.status == 0, "\(fromFstab.all)")
        #expect(try readFile(point + "/by-type") == bytes("mounted by mount(8)"))
        #expect(try shell("umount \(quoted(point))").status == 0)
        #expect(fixture.waitUntilVolumeIsFree())
        fixture.expectFsckClean()
    }

    @Test func theHelperRefusesWhatItCannotDoWithReasons() throws {
        let fixture = try MountFixture()
        let link = try HelperLink()
        defer { withExtendedLifetime(link) {} }
        let point = fixture.newMountPoint()
        let wrongType = try shell("\(HelperLink.path) \(quoted(fixture.scratch.directory)) \(quoted(point)) -t fuse.other")
        #expect(wrongType.status != 0 && wrongType.stderr.contains("cannot mount type fuse.other"), "\(wrongType.all)")
        let missing = try shell("\(HelperLink.path) \(quoted(fixture.scratch.directory))")
        #expect(missing.status != 0 && missing.stderr.contains("usage:"), "\(missing.all)")
        // -f ("fake"): nothing is mounted, success.
        let fake = try shell("\(HelperLink.path) \(quoted(fixture.scratch.directory)) \(quoted(point)) -f -o allow_other")
        #expect(fake.status == 0, "\(fake.all)")
        #expect(!fixture.isMounted(point))
        // A volume that is not there: the daemon's reason reaches mount(8)'s caller.
        let absent = try shell("mount -t fuse.shale /nonexistent/volume \(quoted(point))")
        #expect(absent.status != 0 && absent.all.contains("does not exist"), "\(absent.all)")
    }
}
