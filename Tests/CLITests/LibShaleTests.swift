import Foundation
import KernFS
import LibFS
import ShaleFormat
import SystemPackage
import Testing

/// libshale, the C library (include/shale.h): tools/c/shale-example.c compiled with the
/// system's C compiler against the built libLibShale.so, run on a real volume; then the tree
/// it left is read back through LibFS and checked by `shale fsck`.
@Suite(.serialized)
struct LibShaleTests {
    /// The build's bin directory (where the shale binary and libLibShale.so are).
    static let binDirectory = URL(fileURLWithPath: ShaleCommand.binary).deletingLastPathComponent().path
    static let projectRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// Where this process loaded the Swift runtime from (the C program needs it at run time).
    static let swiftRuntimeDirectory: String? = {
        guard let maps = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8) else { return nil }
        for line in maps.split(separator: "\n") where line.hasSuffix("/libswiftCore.so") {
            guard let path = line.split(separator: " ").last else { continue }
            return URL(fileURLWithPath: String(path)).deletingLastPathComponent().path
        }
        return nil
    }()

    /// Compiles the example once per run.
    static let example: String = {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("shale-example-\(getpid())").path
        var arguments = ["-Wall", "-Werror", "-I", projectRoot + "/include", projectRoot + "/tools/c/shale-example.c",
                         "-L", binDirectory, "-lLibShale", "-Wl,-rpath," + binDirectory, "-o", output]
        if let runtime = swiftRuntimeDirectory { arguments.append("-Wl,-rpath," + runtime) }
        let result = try? runProgram("/usr/bin/cc", arguments)
        precondition(result?.status == 0, "compiling tools/c/shale-example.c failed: \(result?.all ?? "cc did not run")")
        return output
    }()

    static func runProgram(_ executable: String, _ arguments: [String]) throws -> ShaleCommand.Result {
        try ShaleCommand.runProgram(executable, arguments)
    }

    @Test func aCProgramWorksThroughTheLibrary() throws {
        let scratch = Scratch()
        #expect(try ShaleCommand.run(scratch.smallMkfs).status == 0)
        let run = try Self.runProgram(Self.example, [scratch.directory])
        #expect(run.status == 0, "\(run.all)")
        #expect(run.stdout.contains("every call did what POSIX says"))

        // What it left, read by LibFS in this process.
        let fs = try EmbeddedFileSystem.open(volume: scratch.directory)
        let hello = try fs.stat("/c/hello.txt")
        #expect(hello.size == 13 && hello.permissions == 0o600 && hello.linkCount == 2)
        let file = try fs.open("/c/hello.txt")
        #expect(try fs.read(file, count: 64) == Array("hello".utf8) + [UInt8](repeating: 0, count: 8))
        try fs.close(file)
        #expect(try fs.stat("/c/hard").inode == hello.inode)
        #expect(hello.uid == 1000 && hello.gid == 1000)
        #expect(hello.mtime == Timestamp(seconds: 1_234_567_890, nanoseconds: 500_000_000))
        let bigStatus = try fs.stat("/c/big")
        #expect(bigStatus.permissions == 0o640 && bigStatus.uid == 2000 && bigStatus.gid == 2000)
        #expect(bigStatus.mtime == Timestamp(seconds: 1_000_000_000))
        #expect(try fs.lstat("/c/link").uid == 3000)
        #expect(try fs.listxattr("/c/hello.txt") == ["user.colour"])
        #expect(try fs.getxattr("/c/hello.txt", name: "user.colour") == Array("blue".utf8))
        #expect(try fs.listDirectory("/c").map(\.nameString).sorted() == ["big", "hard", "hello.txt", "link"])
        #expect(try fs.readlink("/c/link") == Array("hello.txt".utf8))
        let big = try fs.open("/c/big")
        #expect(try fs.fstat(big).size == 2 << 20 + 1)
        let pattern = (0 ..< 1 << 20).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) }
        // The punched hole (the first 4 KiB of the pattern) reads as zeros.
        #expect(try fs.pread(big, count: 1 << 20, at: 65536) == [UInt8](repeating: 0, count: 4096) + pattern[4096...])
        #expect(try fs.pread(big, count: 1, at: 2 << 20) == Array("z".utf8))
        try fs.close(big)
        #expect(throws: Errno.noSuchFileOrDirectory) { try fs.stat("/c/gone") }
        #expect(throws: Errno.noSuchFileOrDirectory) { try fs.stat("/c/gone2") }
        try fs.close()

        let check = try ShaleCommand.run(["fsck", scratch.directory])
        #expect(check.status == 0, "\(check.all)")
    }

    /// A volume another process has open is busy, and a missing one is a clear error: the
    /// program says why (shale_attach_error) and nothing changes.
    @Test func attachingABusyOrMissingVolumeFailsClearly() throws {
        let scratch = Scratch()
        #expect(try ShaleCommand.run(scratch.smallMkfs).status == 0)
        let holder = try EmbeddedFileSystem.open(volume: scratch.directory)
        let busy = try Self.runProgram(Self.example, [scratch.directory])
        #expect(busy.status == 1)
        #expect(busy.stderr.contains("attach \(scratch.directory): Device or resource busy"), "\(busy.all)")
        #expect(busy.stderr.contains("in use"), "\(busy.all)")
        #expect(throws: Errno.noSuchFileOrDirectory) { try holder.stat("/c") }
        try holder.close()

        let missing = try Self.runProgram(Self.example, [scratch.directory + "/nonexistent"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("attach \(scratch.directory)/nonexistent:"), "\(missing.all)")
    }
}
