// Set-id bits through the real mount: Shale's INIT reply carries HANDLE_KILLPRIV_V2
// (ShaleFUSE/InitReply.swift), so the kernel leaves dropping set-uid/set-gid on write,
// truncate and chown to Shale, and asks for a file's security.capability once, not before
// every write. An unprivileged writer (allow_other, a child under setpriv) drops them; root
// keeps them on write; chown drops them whoever does it, as on Linux.

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension MountSuites {
    @Suite struct MountSetIDTests {}
}

extension MountSuites.MountSetIDTests {
    @Test func anUnprivilegedWriterDropsSetIDBitsAndRootKeepsThem() throws {
        let fixture = try MountFixture()
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point, ["-o", "allow_other"])
        for name in ["by-user", "truncated-by-user", "by-root"] {
            try writeFile(point + "/" + name, bytes("abc"))
            #expect(chmod(point + "/" + name, 0o6777) == 0)
        }
        let asUser = "setpriv --reuid=1000 --regid=1000 --clear-groups"
        let appended = try shell("\(asUser) sh -c 'printf x >> \(quoted(point + "/by-user"))'")
        #expect(appended.status == 0, "\(appended.all)")
        let truncated = try shell("\(asUser) truncate -s 1 \(quoted(point + "/truncated-by-user"))")
        #expect(truncated.status == 0, "\(truncated.all)")
        try writeFile(point + "/by-root", bytes("root"), flags: O_WRONLY | O_APPEND)
        #expect(try status(point + "/by-user").st_mode & 0o7777 == 0o777)
        #expect(try status(point + "/truncated-by-user").st_mode & 0o7777 == 0o777)
        #expect(try status(point + "/by-root").st_mode & 0o7777 == 0o6777)
        #expect(try readFile(point + "/by-user") == bytes("abcx"))
        fixture.unmount(point, daemon: daemon)
        fixture.expectFsckClean()
    }

    @Test func chownAndTruncatingOpensDropSetIDBits() throws {
        let fixture = try MountFixture()
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point, ["-o", "allow_other"])
        for name in ["chowned", "opened-with-truncate", "group-not-executable"] {
            try writeFile(point + "/" + name, bytes("abc"))
        }
        #expect(chmod(point + "/chowned", 0o6755) == 0)
        #expect(chmod(point + "/opened-with-truncate", 0o6777) == 0)
        #expect(chmod(point + "/group-not-executable", 0o2744) == 0)
        // chown, even by root: set-uid goes, and set-gid on a group-executable file.
        #expect(chown(point + "/chowned", 1000, 1000) == 0)
        #expect(try status(point + "/chowned").st_mode & 0o7777 == 0o755)
        // Set-gid without group execute is mandatory locking's mark, not a privilege: kept.
        #expect(chown(point + "/group-not-executable", 1000, 1000) == 0)
        #expect(try status(point + "/group-not-executable").st_mode & 0o7777 == 0o2744)
        let opened = try shell("setpriv --reuid=1000 --regid=1000 --clear-groups sh -c ': > \(quoted(point + "/opened-with-truncate"))'")
        #expect(opened.status == 0, "\(opened.all)")
        #expect(try status(point + "/opened-with-truncate").st_mode & 0o7777 == 0o777)
        #expect(try status(point + "/opened-with-truncate").st_size == 0)
        fixture.unmount(point, daemon: daemon)
        fixture.expectFsckClean()
    }

    /// The point of HANDLE_KILLPRIV_V2: without it the kernel sends a GETXATTR of
    /// security.capability before every write (a third of a small write's cost).
    @Test func writesAskForCapabilitiesOncePerFileNotOncePerWrite() throws {
        let fixture = try MountFixture()
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point, ["-d"])
        let block = pattern(4096)
        for file in 0 ..< 3 {
            let path = point + "/written-\(file)"
            let fd = open(path, O_CREAT | O_WRONLY, 0o644)
            try check(Int(fd), "open \(path)")
            for index in 0 ..< 40 {
                #expect(block.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(index * 4096)) } == 4096)
            }
            close(fd)
        }
        let trace = fixture.log(of: daemon)
        let writes = trace.components(separatedBy: "opcode: WRITE (").count - 1
        let capabilityQueries = trace.components(separatedBy: "opcode: GETXATTR (").count - 1
        #expect(writes >= 120, "\(writes) WRITE requests")
        #expect(capabilityQueries <= 3, "\(capabilityQueries) GETXATTR requests for 120 writes to 3 files")
        for file in 0 ..< 3 { #expect(try readFile(point + "/written-\(file)") == Array((0 ..< 40).map { _ in block }.joined())) }
        fixture.unmount(point, daemon: daemon)
        fixture.expectFsckClean()
    }
}
