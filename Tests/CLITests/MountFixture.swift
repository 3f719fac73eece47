// What every suite that mounts a real volume shares: the scratch volume and its daemons
// (`MountFixture`), shell tools under a time limit (`shell`), the mount table, and thin
// wrappers over the system calls the tests make on the mount point.
//
// Safety: every mount point is a fresh directory, every mount's fsname starts with
// "shale-test-<pid>-" (stale ones left by an earlier, crashed run are detached first; a
// running test process's are left alone), and a watchdog kills the daemons and detaches their
// mounts if a test runs too long, so a hung request fails the test (with ENOTCONN) instead of
// blocking the run.
//
// Every suite that mounts is nested in `MountSuites` (an extension in its own file), which is
// serialized: the mount tests run one at a time, beside the other suites.

import CLinux
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

let fsnamePrefix = "shale-test-"

/// Root with /dev/fuse: the mount tests can run.
let canMount = getuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0

/// The parent of every suite that mounts: they need root and /dev/fuse, and run one test at a
/// time (two cores; a mount test's daemon and tools keep both busy).
@Suite(.serialized, .enabled(if: canMount, "needs root and /dev/fuse"))
struct MountSuites {}

/// The mounts this process sees: (mount point, type, source).
func mounts() -> [(point: String, type: String, source: String)] {
    guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
    return text.split(separator: "\n").compactMap { line in
        let fields = line.split(separator: " ").map(String.init)
        guard let dash = fields.firstIndex(of: "-"), dash + 2 < fields.count, fields.count > 4 else { return nil }
        func unescape(_ text: String) -> String {
            text.replacingOccurrences(of: "\\040", with: " ").replacingOccurrences(of: "\\011", with: "\t")
        }
        return (unescape(fields[4]), fields[dash + 1], unescape(fields[dash + 2]))
    }
}

/// Detaches every test mount left by an earlier (crashed) run: those whose fsname names a
/// process that no longer exists. This process's mounts, and those of another test process
/// still running, are left alone.
func detachStaleTestMounts() {
    for mount in mounts() where mount.source.hasPrefix(fsnamePrefix) {
        let owner = mount.source.dropFirst(fsnamePrefix.count).split(separator: "-").first.flatMap { pid_t($0) }
        if let owner, owner == getpid() || kill(owner, 0) == 0 || errno == EPERM { continue }
        _ = umount2(mount.point, Int32(MNT_DETACH))
    }
}

/// Runs a command line with a time limit (`timeout`), for shell tools on the mount.
func shell(_ script: String, seconds: Int = 60) throws -> ShaleCommand.Result {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
    process.arguments = ["-s", "KILL", "\(seconds)", "/bin/sh", "-c", script]
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Both pipes drained at once: a tool that fills one while the other is read would block.
    let errBox = DataBox()
    let errHandle = err.fileHandleForReading
    let reader = Thread { errBox.set(errHandle.readDataToEndOfFile()) }
    reader.start()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let errData = errBox.wait()
    return ShaleCommand.Result(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                               stderr: String(decoding: errData, as: UTF8.self))
}

/// Data handed from a reader thread.
private final class DataBox: @unchecked Sendable {
    private let condition = NSCondition()
    private var data: Data?

    func set(_ value: Data) {
        condition.withLock {
            data = value
            condition.signal()
        }
    }

    func wait() -> Data {
        condition.withLock {
            while data == nil { condition.wait() }
            return data!
        }
    }
}

/// Single-quotes a path for `sh -c`.
func quoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }

/// A scratch volume, mount points for it, and the daemons serving it.
final class MountFixture: @unchecked Sendable {
    let scratch = Scratch()
    let id = "\(getpid())-\(UInt32.random(in: 0 ... .max))"
    var fsname: String { fsnamePrefix + id }
    private(set) var mountPoints: [String] = []
    private var daemons: [Process] = []
    private var logs: [String] = []
    private let lock = NSLock()
    private var watchdogFired = false

    /// A fresh volume (`Scratch.mkfs` with these sizes) and a watchdog.
    init(watchdogSeconds: Double = 240, nvmSize: String = "64M", logSize: String = "1M") throws {
        detachStaleTestMounts()
        let made = try ShaleCommand.run(scratch.mkfs(nvmSize: nvmSize, logSize: logSize))
        guard made.status == 0 else { throw Failure("mkfs failed: \(made.all)") }
        DispatchQueue.global().asyncAfter(deadline: .now() + watchdogSeconds) { [weak self] in self?.fire() }
    }

    deinit { cleanUp() }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    var didTimeOut: Bool { lock.withLock { watchdogFired } }

    /// The watchdog: every daemon killed, every mount detached; requests in flight fail.
    private func fire() {
        lock.withLock { watchdogFired = true }
        cleanUp()
    }

    private func cleanUp() {
        let (daemons, points) = lock.withLock { (self.daemons, mountPoints) }
        for daemon in daemons where daemon.isRunning { kill(daemon.processIdentifier, SIGKILL) }
        for point in points {
            if isMounted(point) { _ = umount2(point, Int32(MNT_DETACH)) }
            rmdir(point)
        }
        for log in lock.withLock({ logs }) { unlink(log) }
    }

    /// A fresh, empty directory to mount on.
    func newMountPoint() -> String {
        let point = "/tmp/shale-mnt-\(id)-\(lock.withLock { mountPoints.count })"
        mkdir(point, 0o755)
        chmod(point, 0o755)
        lock.withLock { mountPoints.append(point) }
        return point
    }

    func isMounted(_ point: String) -> Bool {
        mounts().contains { $0.point == point && $0.type == "fuse.shale" }
    }

    /// Starts `shale mount -f` (plus `arguments`) on `point` and waits until the daemon says
    /// it mounted (a dead mount may sit on `point` until the daemon detaches it, and mount ids
    /// are reused, so the table alone cannot tell). Returns the daemon; its standard error
    /// goes to `log(of:)`.
    @discardableResult
    func mountInForeground(on point: String, _ arguments: [String] = []) throws -> Process {
        let log = "/tmp/shale-mnt-\(id)-\(lock.withLock { logs.count }).log"
        FileManager.default.createFile(atPath: log, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ShaleCommand.binary)
        process.arguments = ["mount", scratch.directory, point, "-f", "-o", "fsname=\(fsname)"] + arguments
        process.standardOutput = FileHandle(forWritingAtPath: log)
        process.standardError = FileHandle(forWritingAtPath: log)
        try process.run()
        lock.withLock {
            daemons.append(process)
            logs.append(log)
        }
        let deadline = Date().addingTimeInterval(30)
        while !(self.log(of: process).contains(" mounted on ") && isMounted(point)) {
            guard process.isRunning else { throw Failure("the daemon exited (\(process.terminationStatus)): \(self.log(of: process))") }
            guard Date() < deadline else { throw Failure("not mounted after 30 s: \(self.log(of: process))") }
            usleep(20_000)
        }
        return process
    }

    func log(of process: Process) -> String {
        guard let index = lock.withLock({ daemons.firstIndex { $0 === process } }) else { return "" }
        return (try? String(contentsOfFile: lock.withLock { logs[index] }, encoding: .utf8)) ?? ""
    }

    /// Waits for the daemon to exit; its status, or nil after `seconds`.
    func waitForExit(_ process: Process, seconds: Double = 30) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning {
            guard Date() < deadline else { return nil }
            usleep(20_000)
        }
        return process.terminationStatus
    }

    /// Waits until no process holds the volume (a background daemon has finished closing).
    func waitUntilVolumeIsFree(seconds: Double = 30) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let status = try? ShaleCommand.run(["status", scratch.directory]), !status.stdout.contains("held by another") {
                return true
            }
            usleep(100_000)
        }
        return false
    }

    /// `fusermount3 -u`, then waits for the daemon: true when it unmounted and exited 0
    /// after digesting and closing the volume. Records an issue saying why otherwise.
    @discardableResult
    func unmount(_ point: String, daemon: Process, sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        let unmounted = (try? shell("fusermount3 -u \(quoted(point))")) ?? ShaleCommand.Result(status: -1, stdout: "", stderr: "")
        let status = waitForExit(daemon)
        let closed = log(of: daemon).contains("digested and closed")
        let ok = unmounted.status == 0 && status == 0 && closed && !isMounted(point)
        #expect(ok, "unmount: \(unmounted.all) daemon exit \(String(describing: status)): \(log(of: daemon))",
                sourceLocation: sourceLocation)
        return ok
    }

    /// `shale fsck` of the volume (offline): true when clean. Records an issue otherwise.
    @discardableResult
    func expectFsckClean(sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        let fsck = try? ShaleCommand.run(["fsck", scratch.directory])
        let ok = fsck.map { $0.status == 0 && $0.stdout.contains("clean") } ?? false
        #expect(ok, "fsck: \(fsck?.all ?? "did not run")", sourceLocation: sourceLocation)
        return ok
    }
}

// MARK: - System calls on the mount

struct SystemCallError: Error, CustomStringConvertible, Equatable {
    let call: String
    let errno: Int32
    var description: String { "\(call): \(String(cString: strerror(errno)))" }
}

func check(_ result: Int, _ call: @autoclosure () -> String) throws {
    if result < 0 { throw SystemCallError(call: call(), errno: errno) }
}

/// The errno `body` failed with (0 for success).
func errnoOf(_ body: () throws -> Void) -> Int32 {
    do { try body(); return 0 } catch let error as SystemCallError { return error.errno } catch { return -1 }
}

func writeFile(_ path: String, _ bytes: [UInt8], flags: Int32 = O_WRONLY | O_CREAT | O_TRUNC, mode: mode_t = 0o644) throws {
    let fd = open(path, flags, mode)
    try check(Int(fd), "open \(path)")
    defer { close(fd) }
    var done = 0
    while done < bytes.count {
        let count = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        try check(count, "write \(path)")
        done += count
    }
}

func readFile(_ path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY)
    try check(Int(fd), "open \(path)")
    defer { close(fd) }
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        try check(count, "read \(path)")
        if count == 0 { return result }
        result += chunk[0 ..< count]
    }
}

func status(_ path: String, follow: Bool = true) throws -> stat {
    var result = stat()
    try check(Int(follow ? stat(path, &result) : lstat(path, &result)), "stat \(path)")
    return result
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

func names(in directory: String) throws -> [String] {
    guard let stream = opendir(directory) else { throw SystemCallError(call: "opendir \(directory)", errno: errno) }
    defer { closedir(stream) }
    var result: [String] = []
    while let entry = readdir(stream) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name != ".", name != ".." { result.append(name) }
    }
    return result.sorted()
}

/// A pattern that differs at every offset, so misplaced bytes show.
func pattern(_ count: Int, seed: Int = 0) -> [UInt8] {
    (0 ..< count).map { UInt8(truncatingIfNeeded: ($0 &* 31 &+ $0 >> 12 &+ seed) % 251) }
}
