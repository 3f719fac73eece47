// Set-id bits through the real mount: libfuse asks the kernel for HANDLE_KILLPRIV, so the
// kernel leaves dropping set-uid/set-gid on write and truncate to Shale. An unprivileged
// writer (allow_other, a child under setpriv) drops them; root keeps them, as on Linux.

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
}
