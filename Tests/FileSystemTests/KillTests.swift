// Durability under SIGKILL: a child process writes through LibFS onto a real volume (mapped
// NVM in /dev/shm, made by mkfs) and acknowledges each call on a side channel after it
// returns; the parent kills it at a random moment, reopens the volume (recovery) and checks
// that every acknowledged call is there whole, that the call in flight is wholly there or
// wholly absent, and that recovery refused nothing.
//
// The child is this test binary re-executed with SHALE_KILL_CHILD set, running only
// `childWriterRunsUntilKilled` (skipped in a normal run). No extra executable target.
//
// `shale fsck` (the built binary, as a user runs it) checks the volume as the kill left it
// (logs not yet recovered) and again after recovery and a clean close.

import Foundation
import Testing
import KernFS
import LibFS
import ShaleFormat
import ShaleMedia
import SystemPackage

/// The calls the child makes: op `index` is a pure function of (seed, index), each with its
/// own target, so the parent can tell what each one left.
enum KillOp: CustomStringConvertible {
    /// pwrite of `data` to /w/file<file> at `offset` (a region no other op touches).
    case write(file: Int, offset: UInt64, data: [UInt8])
    case mkdir(Path)
    /// link /w/file<file> as `name`.
    case link(file: Int, name: Path)
    case symlink(target: [UInt8], at: Path)
    case setxattr(file: Int, name: String, value: [UInt8])
    /// Moves the directory op `index - 2` made (always in the same round, so acknowledged).
    case rename(from: Path, to: Path)

    static let files = 4

    static func make(seed: UInt64, index: Int, roundStart: Int) -> KillOp {
        var random = SplitMix64.derived(seed: seed, UInt64(index))
        let length = Int(random.next() % 8192)
        // Never a zero byte: an absent write reads as zeros, so it cannot look present.
        let data = random.bytes(length + 1).map { $0 | 1 }
        switch index % 8 {
        case 0 ..< 5:
            return .write(file: index % files, offset: UInt64(index / files) * 8192, data: data)
        case 5: return .mkdir(Path("/m/d\(index)"))
        case 6: return .link(file: index % files, name: Path("/h/l\(index)"))
        default:
            switch (index / 8) % 3 {
            case 0: return .symlink(target: data.prefix(1 + length % 200).map { $0 == UInt8(ascii: "/") ? 0x41 : $0 },
                                    at: Path("/s/l\(index)"))
            case 1: return .setxattr(file: index % files, name: "user.k\(index)", value: Array(data.prefix(length % 300)))
            default:
                guard index - 2 >= roundStart else { return .mkdir(Path("/m/d\(index)")) }
                return .rename(from: Path("/m/d\(index - 2)"), to: Path("/r/d\(index - 2)"))
            }
        }
    }

    var description: String {
        switch self {
        case let .write(file, offset, data): "pwrite(/w/file\(file), \(data.count) bytes, at: \(offset))"
        case let .mkdir(path): "mkdir(\(path))"
        case let .link(file, name): "link(/w/file\(file), \(name))"
        case let .symlink(target, path): "symlink(\(target.count) bytes, at: \(path))"
        case let .setxattr(file, name, value): "setxattr(/w/file\(file), \(name), \(value.count) bytes)"
        case let .rename(from, to): "rename(\(from), \(to))"
        }
    }

    func run(_ fs: EmbeddedFileSystem, handles: [LibFS.FileHandle]) throws {
        switch self {
        case let .write(file, offset, data):
            let done = try fs.pwrite(handles[file], data, at: offset)
            guard done == data.count else { throw Errno.ioError }
        case let .mkdir(path): try fs.mkdir(path)
        case let .link(file, name): try fs.link(Path("/w/file\(file)"), name)
        case let .symlink(target, path): try fs.symlink(Path(bytes: target), at: path)
        case let .setxattr(file, name, value): try fs.setxattr(Path("/w/file\(file)"), name: name, value: value)
        case let .rename(from, to): try fs.rename(from, to)
        }
    }
}

/// What the parent finds of op `index`: applied, absent, or torn (with why).
private enum Found: Equatable {
    case applied, absent
    case torn(String)
}

private func environment(_ name: String) -> String? { ProcessInfo.processInfo.environment[name] }

/// Runs the built `shale` binary (next to the test binary) with `arguments`: its exit status
/// and everything it printed.
func runShale(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let directory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    let candidates = [directory.appendingPathComponent("shale"), directory.deletingLastPathComponent().appendingPathComponent("shale")]
    guard let binary = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
        throw Errno.noSuchFileOrDirectory
    }
    let process = Process()
    process.executableURL = binary
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, text)
}

@Suite(.serialized) struct KillTests {
    /// The child: opens the volume, then makes calls from SHALE_KILL_START on, appending
    /// "<index>\n" to SHALE_KILL_ACKS after each returns, until it is killed.
    @Test(.enabled(if: environment("SHALE_KILL_CHILD") != nil, "runs only as the child of everyAcknowledgedCallSurvivesSIGKILL"))
    func childWriterRunsUntilKilled() throws {
        let volume = environment("SHALE_KILL_CHILD")!
        let seed = UInt64(environment("SHALE_KILL_SEED")!)!
        let start = Int(environment("SHALE_KILL_START")!)!
        let acks = open(environment("SHALE_KILL_ACKS")!, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        precondition(acks >= 0)
        let fs = try EmbeddedFileSystem.open(volume: volume, background: true)
        let handles = try (0 ..< KillOp.files).map { try fs.open(Path("/w/file\($0)"), .readWrite) }
        for index in start ..< start + 1_000_000 {
            try KillOp.make(seed: seed, index: index, roundStart: start).run(fs, handles: handles)
            let line = Array("\(index)\n".utf8)
            precondition(line.withUnsafeBytes { Glibc.write(acks, $0.baseAddress, $0.count) } == line.count)
        }
    }

    @Test func everyAcknowledgedCallSurvivesSIGKILL() throws {
        let seed = randomSeeds(1)[0]
        print("kill test: seed \(seed) (replay with SHALE_TEST_SEED=\(seed))")
        let scratch = "/dev/shm/shale-kill-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        defer { removeTree(scratch) }
        var request = MkfsRequest(directory: scratch + "/volume")
        request.nvmPath = scratch + "/nvm"
        request.nvmBytes = 256 << 20
        request.withoutSSD = true
        request.withoutHDD = true
        request.logRegionCount = 4
        request.logRegionBytes = 1 << 20
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        _ = try VolumeFiles.mkfs(request)
        let volume = scratch + "/volume"
        do {
            let fs = try EmbeddedFileSystem.open(volume: volume, background: false)
            for directory in ["/w", "/m", "/h", "/s", "/r"] { try fs.mkdir(Path(directory)) }
            for file in 0 ..< KillOp.files { try fs.close(try fs.create(Path("/w/file\(file)"), mode: 0o644)) }
            try fs.close()
        }

        var random = SplitMix64(seed: seed)
        var applied: [Bool] = []   // by op index, for every round so far
        var start = 0
        var roundStarts: [Int] = []
        let rounds = 6
        for round in 0 ..< rounds {
            let acksPath = scratch + "/acks-\(round)"
            let child = Process()
            child.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            child.arguments = ["--testing-library", "swift-testing", "--filter", "childWriterRunsUntilKilled"]
            var env = ProcessInfo.processInfo.environment
            env["SHALE_KILL_CHILD"] = volume
            env["SHALE_KILL_SEED"] = "\(seed)"
            env["SHALE_KILL_START"] = "\(start)"
            env["SHALE_KILL_ACKS"] = acksPath
            child.environment = env
            child.standardOutput = Foundation.FileHandle.nullDevice
            let errors = Pipe()
            child.standardError = errors
            try child.run()
            // Kill at a random moment once it is writing.
            let began = Date()
            while (try? String(contentsOfFile: acksPath, encoding: .utf8))?.isEmpty ?? true, child.isRunning,
                  Date().timeIntervalSince(began) < 60 {
                usleep(2000)
            }
            usleep(UInt32(20_000 + random.next() % 600_000))
            kill(child.processIdentifier, SIGKILL)
            child.waitUntilExit()
            let childErrors = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(child.terminationReason == .uncaughtSignal && child.terminationStatus == SIGKILL,
                    "round \(round): the child ended by itself (status \(child.terminationStatus)): \(childErrors.suffix(2000))")

            let fsckAfterKill = try runShale(["fsck", volume])
            #expect(fsckAfterKill.status == 0, "round \(round): shale fsck of the volume as the kill left it:\n\(fsckAfterKill.output)")

            let text = (try? String(contentsOfFile: acksPath, encoding: .utf8)) ?? ""
            let acknowledged = text.split(separator: "\n").compactMap { Int($0) }
            let first = start
            let inFlight = (acknowledged.last ?? first - 1) + 1
            #expect(acknowledged == Array(first ..< inFlight), "round \(round): acknowledgements out of order")
            roundStarts.append(start)

            // Recovery, then every op of every round so far.
            let fs = try EmbeddedFileSystem.open(volume: volume, background: false)
            let refused = fs.kernel.refusals
            #expect(refused.isEmpty, "round \(round), seed \(seed): recovery refused \(refused.map { "\($0.sequence): \($0.reason)" })")
            applied += Array(repeating: false, count: inFlight + 1 - applied.count)
            for index in start ..< inFlight { applied[index] = true }
            // The op in flight: whichever it left, whole.
            let inFlightStart = roundStarts.last!
            switch try inspect(fs, seed: seed, index: inFlight, roundStarts: roundStarts, applied: applied) {
            case .applied: applied[inFlight] = true
            case .absent: applied[inFlight] = false
            case let .torn(why):
                Issue.record("round \(round), seed \(seed): the call in flight, op #\(inFlight) \(KillOp.make(seed: seed, index: inFlight, roundStart: inFlightStart)), is torn: \(why)")
            }
            var lost = 0
            for index in 0 ..< inFlight {
                let roundStart = roundStarts.last { $0 <= index }!
                _ = roundStart
                let found = try inspect(fs, seed: seed, index: index, roundStarts: roundStarts, applied: applied)
                let expected: Found = applied[index] ? .applied : .absent
                if found != expected, lost < 10 {
                    lost += 1
                    Issue.record("round \(round), seed \(seed): op #\(index) \(KillOp.make(seed: seed, index: index, roundStart: roundStart)) should be \(expected), found \(found)")
                }
            }
            print("kill test round \(round): ops \(start) ..< \(inFlight) acknowledged, in flight #\(inFlight) \(applied[inFlight] ? "applied" : "absent"), recovery applied \(fs.kernel.recovered.map(\.applied).reduce(0, +)) records")
            try fs.close()
            _ = consume fs
            let fsck = try runShale(["fsck", volume])
            #expect(fsck.status == 0, "round \(round): shale fsck after recovery and close:\n\(fsck.output)")
            start = inFlight + 1
        }
        let total = start
        #expect(total > rounds * 10, "the child made too few calls to mean anything (\(total) in \(rounds) rounds)")
    }

    private static func exists(_ fs: EmbeddedFileSystem, _ path: Path) -> Bool { (try? fs.lstat(path)) != nil }

    private static func op(_ seed: UInt64, _ index: Int, _ roundStarts: [Int]) -> KillOp {
        KillOp.make(seed: seed, index: index, roundStart: roundStarts.last { $0 <= index }!)
    }

    /// What op `index` left on the volume.
    private func inspect(_ fs: EmbeddedFileSystem, seed: UInt64, index: Int, roundStarts: [Int], applied: [Bool]) throws -> Found {
        switch Self.op(seed, index, roundStarts) {
        case let .write(file, offset, data):
            let handle = try fs.open(Path("/w/file\(file)"))
            var found = try fs.pread(handle, count: data.count, at: offset)
            try fs.close(handle)
            found += [UInt8](repeating: 0, count: data.count - found.count)
            if found == data { return .applied }
            if found.allSatisfy({ $0 == 0 }) { return .absent }
            var same = 0
            for position in 0 ..< data.count where found[position] == data[position] { same += 1 }
            return .torn("\(same) of \(data.count) bytes written")
        case let .mkdir(path):
            // A later rename (op index + 2, applied) moves it to /r.
            var moved = false
            if index + 2 < applied.count, applied[index + 2], case .rename = Self.op(seed, index + 2, roundStarts) { moved = true }
            return Self.exists(fs, moved ? Path("/r/d\(index)") : path) ? .applied : .absent
        case let .link(file, name):
            guard let status = try? fs.lstat(name) else { return .absent }
            let original = try fs.stat(Path("/w/file\(file)"))
            return status.inode == original.inode ? .applied : .torn("names another inode")
        case let .symlink(target, path):
            guard Self.exists(fs, path) else { return .absent }
            let found = try fs.readlink(path)
            return found == target ? .applied : .torn("target \(found.count) bytes, not the \(target.count) written")
        case let .setxattr(file, name, value):
            let names = try fs.listxattr(Path("/w/file\(file)"))
            guard names.contains(name) else { return .absent }
            let found = try fs.getxattr(Path("/w/file\(file)"), name: name)
            return found == value ? .applied : .torn("value differs")
        case let .rename(from, to):
            let old = Self.exists(fs, from), new = Self.exists(fs, to)
            if !old, new { return .applied }
            if old, !new { return .absent }
            return .torn("old name \(old ? "present" : "gone"), new name \(new ? "present" : "gone")")
        }
    }
}
