// Inodes the kernel still names after their last name went, through the real mount: a
// process's current directory after rmdir stays a directory with no links (stat shows
// nlink 0, as on Linux) however many digests run meanwhile, because the FUSE server holds
// every inode the kernel looked up (`FileSystem.hold`) until the kernel forgets it; and
// nothing is leaked: after the unmount fsck finds no orphan left behind.

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension MountSuites {
    @Suite struct MountOrphanTests {}
}

extension MountSuites.MountOrphanTests {
    @Test func aRemovedCurrentDirectoryStaysAnOrphanUntilTheKernelLetsGo() throws {
        let fixture = try MountFixture()
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point)
        // In one shell: enter the directory, remove it from outside, make the daemon digest
        // (4 MiB of writes through a 1 MiB log), then stat the current directory.
        let script = """
            mkdir \(quoted(point))/doomed && cd \(quoted(point))/doomed && \
            rmdir \(quoted(point))/doomed && \
            dd if=/dev/zero of=\(quoted(point))/filler bs=64k count=64 status=none && \
            stat -c 'links=%h type=%F' .
            """
        let result = try shell(script)
        #expect(result.status == 0, "\(result.all)")
        #expect(result.stdout.contains("links=0 type=directory"), "\(result.all)")
        #expect(errnoOf { _ = try status(point + "/doomed") } == ENOENT)
        // Many files looked up, removed and forgotten: none stays behind.
        #expect(try shell("mkdir \(quoted(point))/many && cd \(quoted(point))/many && for i in $(seq 1 300); do echo $i > f$i; done && "
            + "ls -l > /dev/null && cd / && rm -rf \(quoted(point))/many && sync && echo 3 > /proc/sys/vm/drop_caches").status == 0)
        fixture.unmount(point, daemon: daemon)
        fixture.expectFsckClean()
        let fsck = try ShaleCommand.run(["fsck", fixture.scratch.directory])
        #expect(!fsck.all.contains("orphan"), "\(fsck.all)")
    }
}
