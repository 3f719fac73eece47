// fsync, fdatasync, fsyncdir and close through the real mount: each succeeds, and after the
// first answer (ENOSYS: nothing to do, every write was durable when answered) the kernel
// stops asking, so the daemon's -d trace shows at most one FSYNC, one FLUSH and one FSYNCDIR
// however many calls the application makes; what was written is there after a SIGKILL.

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension MountSuites {
    @Suite struct MountSyncTests {}
}

extension MountSuites.MountSyncTests {
    @Test func syncCallsSucceedAndCostOneRequestEachAtMost() throws {
        let fixture = try MountFixture()
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point, ["-d"])
        for index in 0 ..< 20 {
            let path = point + "/synced-\(index)"
            let fd = open(path, O_CREAT | O_WRONLY, 0o644)
            try check(Int(fd), "open \(path)")
            let bytes = pattern(5000, seed: index)
            #expect(bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == 5000)
            #expect(fsync(fd) == 0, "fsync: \(String(cString: strerror(errno)))")
            #expect(fdatasync(fd) == 0, "fdatasync: \(String(cString: strerror(errno)))")
            #expect(close(fd) == 0, "close: \(String(cString: strerror(errno)))")
        }
        let directory = open(point, O_RDONLY | O_DIRECTORY)
        #expect(fsync(directory) == 0 && fsync(directory) == 0)
        close(directory)
        let trace = fixture.log(of: daemon)
        for opcode in ["FSYNC (", "FLUSH (", "FSYNCDIR ("] {
            let requests = trace.components(separatedBy: "opcode: " + opcode).count - 1
            #expect(requests <= 1, "\(requests) \(opcode) requests")
        }
        // Nothing was lost by not asking: a SIGKILL, and every file is there, whole.
        kill(daemon.processIdentifier, SIGKILL)
        _ = fixture.waitForExit(daemon)
        let again = try fixture.mountInForeground(on: point)
        for index in 0 ..< 20 { #expect(try readFile(point + "/synced-\(index)") == pattern(5000, seed: index)) }
        fixture.unmount(point, daemon: again)
        fixture.expectFsckClean()
    }
}
