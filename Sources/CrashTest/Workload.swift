// Crash-test workloads: what the harness runs, in a small text format (one operation per
// line) that `shale crashtest --workload FILE` reads and every reproducer prints.
//
// Where it sits: above LibFS (each operation is one mutating call of its Swift API, made
// through `FileSystem`); used by the explorer (CrashExplorer.swift) and the CLI.
//
//     # comments and blank lines are ignored
//     setup mkdir /A                 # "setup": applied and digested before recording
//     setup write /A/foo 0 8192
//     write /A/foo 100 3000          # pwrite of 3000 pattern bytes at offset 100
//     rename /A/foo /B/foo
//
// Operations: creat PATH | mkdir PATH | write PATH OFFSET LENGTH [SEED] | truncate PATH SIZE
// | fallocate PATH OFFSET LENGTH [keep-size|punch-hole|zero-range] | link OLD NEW |
// unlink PATH | rmdir PATH | rename OLD NEW [noreplace|exchange] | symlink TARGET PATH |
// setxattr PATH NAME VALUE | removexattr PATH NAME | chmod PATH OCTAL | digest.
// Paths and names are single words (no spaces). Write data is a pattern of the seed (default:
// the line number), so a torn or misplaced write shows in the contents.

import LibFS
import ShaleFormat
import SystemPackage

public enum WorkloadOperation: Equatable, Sendable {
    case creat(String)
    case mkdir(String)
    case write(String, offset: UInt64, length: Int, seed: UInt64)
    case truncate(String, size: UInt64)
    case fallocate(String, offset: UInt64, length: UInt64, mode: String)
    case link(String, String)
    case unlink(String)
    case rmdir(String)
    case rename(String, String, flags: String)
    case symlink(target: String, String)
    case setxattr(String, name: String, value: String)
    case removexattr(String, name: String)
    case chmod(String, mode: UInt32)
    /// Not a file-system call: forces a digest of everything logged so far.
    case digest

    /// The line that parses back to this operation.
    public var text: String {
        switch self {
        case let .creat(path): "creat \(path)"
        case let .mkdir(path): "mkdir \(path)"
        case let .write(path, offset, length, seed): "write \(path) \(offset) \(length) \(seed)"
        case let .truncate(path, size): "truncate \(path) \(size)"
        case let .fallocate(path, offset, length, mode): "fallocate \(path) \(offset) \(length)" + (mode.isEmpty ? "" : " \(mode)")
        case let .link(from, to): "link \(from) \(to)"
        case let .unlink(path): "unlink \(path)"
        case let .rmdir(path): "rmdir \(path)"
        case let .rename(from, to, flags): "rename \(from) \(to)" + (flags.isEmpty ? "" : " \(flags)")
        case let .symlink(target, path): "symlink \(target) \(path)"
        case let .setxattr(path, name, value): "setxattr \(path) \(name) \(value)"
        case let .removexattr(path, name): "removexattr \(path) \(name)"
        case let .chmod(path, mode): "chmod \(path) \(String(mode, radix: 8))"
        case .digest: "digest"
        }
    }

    /// The bytes a write stores: a pattern of its seed and their offset in the file.
    static func pattern(seed: UInt64, offset: UInt64, length: Int) -> [UInt8] {
        (0 ..< UInt64(length)).map { UInt8(truncatingIfNeeded: ((offset + $0) &* 31) ^ (seed &* 0x9E37_79B9) ^ (seed >> 3)) }
    }

    /// Applies the operation through LibFS. An errno is a result like any other (the
    /// workload may try what fails): the oracle run gets the same one. Most operations are
    /// one call; a write longer than LibFS takes at once (`writeBytesMax`) is several
    /// pwrite calls, each its own unit of the contract, and `returned` runs after each
    /// but the last (the caller marks the operation's end).
    func apply<Kernel: FileSystemKernel>(to fs: FileSystem<Kernel>, returned: () -> Void = {}) throws(Errno) {
        switch self {
        case let .creat(path):
            try fs.close(try fs.open(Path(path), [.create, .writeOnly], mode: 0o644))
        case let .mkdir(path):
            try fs.mkdir(Path(path), mode: 0o755)
        case let .write(path, offset, length, seed):
            let handle = try fs.open(Path(path), .writeOnly)
            defer { try? fs.close(handle) }
            var done = 0
            let bytes = Self.pattern(seed: seed, offset: offset, length: length)
            while done < bytes.count {
                done += try fs.pwrite(handle, Array(bytes[done...]), at: offset + UInt64(done))
                if done < bytes.count { returned() }
            }
        case let .truncate(path, size):
            try fs.truncate(Path(path), size: size)
        case let .fallocate(path, offset, length, mode):
            let handle = try fs.open(Path(path), .writeOnly)
            defer { try? fs.close(handle) }
            let flags: FallocateMode = switch mode {
            case "keep-size": [.keepSize]
            case "punch-hole": [.punchHole, .keepSize]
            case "zero-range": [.zeroRange]
            default: []
            }
            try fs.fallocate(handle, mode: flags, offset: offset, length: length)
        case let .link(from, to):
            try fs.link(Path(from), Path(to))
        case let .unlink(path):
            try fs.unlink(Path(path))
        case let .rmdir(path):
            try fs.rmdir(Path(path))
        case let .rename(from, to, flags):
            let renameFlags: RenameFlags = switch flags {
            case "noreplace": .noReplace
            case "exchange": .exchange
            default: []
            }
            try fs.rename(Path(from), Path(to), flags: renameFlags)
        case let .symlink(target, path):
            try fs.symlink(Path(target), at: Path(path))
        case let .setxattr(path, name, value):
            try fs.setxattr(Path(path), name: name, value: Array(value.utf8))
        case let .removexattr(path, name):
            try fs.removexattr(Path(path), name: name)
        case let .chmod(path, mode):
            try fs.chmod(Path(path), mode: mode)
        case .digest:
            try fs.digest()
        }
    }
}

public struct WorkloadError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

public struct Workload: Equatable, Sendable, CustomStringConvertible {
    /// A name for reports (the file, or how a generated workload was made).
    public var name: String
    /// Applied and digested before the recorded run: the state every crash starts from.
    public var setup: [WorkloadOperation]
    /// The recorded calls.
    public var operations: [WorkloadOperation]

    public init(name: String, setup: [WorkloadOperation], operations: [WorkloadOperation]) {
        self.name = name
        self.setup = setup
        self.operations = operations
    }

    public var description: String { name }

    /// The file text that parses back to this workload.
    public var text: String {
        (["# \(name)"] + setup.map { "setup " + $0.text } + operations.map(\.text)).joined(separator: "\n") + "\n"
    }

    public init(name: String, text: String) throws(WorkloadError) {
        self.name = name
        setup = []
        operations = []
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            var words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard !words.isEmpty else { continue }
            var isSetup = false
            if words[0] == "setup" {
                isSetup = true
                words.removeFirst()
            }
            let operation = try Self.parse(words, lineNumber: index + 1)
            if isSetup { setup.append(operation) } else { operations.append(operation) }
        }
        guard !operations.isEmpty else { throw WorkloadError(description: "\(name): no operations to record (only setup lines)") }
    }

    private static func parse(_ words: [String], lineNumber: Int) throws(WorkloadError) -> WorkloadOperation {
        func fail(_ why: String) -> WorkloadError { WorkloadError(description: "line \(lineNumber): \(why): \(words.joined(separator: " "))") }
        func number(_ index: Int) throws(WorkloadError) -> UInt64 {
            guard index < words.count, let value = UInt64(words[index]) else { throw fail("word \(index + 1) must be a number") }
            return value
        }
        func path(_ index: Int) throws(WorkloadError) -> String {
            guard index < words.count, words[index].hasPrefix("/") else { throw fail("word \(index + 1) must be an absolute path") }
            return words[index]
        }
        func count(_ expected: ClosedRange<Int>) throws(WorkloadError) {
            guard expected.contains(words.count - 1) else { throw fail("\(words[0]) takes \(expected.lowerBound)–\(expected.upperBound) arguments") }
        }
        switch words[0] {
        case "creat": try count(1 ... 1); return .creat(try path(1))
        case "mkdir": try count(1 ... 1); return .mkdir(try path(1))
        case "write":
            try count(3 ... 4)
            let length = try number(3)
            guard length > 0, length <= 1 << 20 else { throw fail("a write is 1 byte to 1 MiB") }
            return .write(try path(1), offset: try number(2), length: Int(length), seed: words.count > 4 ? try number(4) : UInt64(lineNumber))
        case "truncate": try count(2 ... 2); return .truncate(try path(1), size: try number(2))
        case "fallocate":
            try count(3 ... 4)
            let mode = words.count > 4 ? words[4] : ""
            guard ["", "keep-size", "punch-hole", "zero-range"].contains(mode) else { throw fail("unknown fallocate mode \(mode)") }
            return .fallocate(try path(1), offset: try number(2), length: try number(3), mode: mode)
        case "link": try count(2 ... 2); return .link(try path(1), try path(2))
        case "unlink": try count(1 ... 1); return .unlink(try path(1))
        case "rmdir": try count(1 ... 1); return .rmdir(try path(1))
        case "rename":
            try count(2 ... 3)
            let flags = words.count > 3 ? words[3] : ""
            guard ["", "noreplace", "exchange"].contains(flags) else { throw fail("unknown rename flag \(flags)") }
            return .rename(try path(1), try path(2), flags: flags)
        case "symlink": try count(2 ... 2); return .symlink(target: words[1], try path(2))
        case "setxattr": try count(3 ... 3); return .setxattr(try path(1), name: words[2], value: words[3])
        case "removexattr": try count(2 ... 2); return .removexattr(try path(1), name: words[2])
        case "chmod":
            try count(2 ... 2)
            guard let mode = UInt32(words[2], radix: 8), mode <= 0o7777 else { throw fail("the mode is octal, at most 7777") }
            return .chmod(try path(1), mode: mode)
        case "digest": try count(0 ... 0); return .digest
        default: throw fail("unknown operation \(words[0])")
        }
    }
}
