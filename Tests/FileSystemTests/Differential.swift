// The differential harness: one operation sequence run on a real tmpfs directory through the
// Linux kernel and on Shale through LibFS, comparing every call's result (or errno) and the
// trees (names, types, sizes, contents, link counts, permission bits, owners, symlink targets,
// xattrs; never timestamps, st_blocks or inode numbers).
//
// The Linux side works relative to an O_DIRECTORY descriptor of its scratch directory (the
// *at calls), so a path means the same bytes on both sides and path-length limits compare
// exactly. truncate(2) and the xattr calls have no *at form: they take the absolute path
// (cases about path length do not use them). Paths never start with "/" and never climb
// above the scratch root with "..": on Linux that would leave the scratch directory.

import KernFS
import LibFS
import ShaleFormat
import ShaleMedia
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

typealias Bytes = [UInt8]

func bytes(_ string: String) -> Bytes { Array(string.utf8) }

/// Renders a path or name so that any byte shows.
func render(_ value: Bytes) -> String {
    var text = ""
    for byte in value {
        if byte >= 0x20, byte < 0x7F, byte != UInt8(ascii: "\\") {
            text.unicodeScalars.append(Unicode.Scalar(byte))
        } else {
            text += "\\x" + String(byte, radix: 16).leftPadded(2)
        }
    }
    return "\"" + text + "\""
}

extension String {
    func leftPadded(_ width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}

// MARK: - Operations

/// One call, as both sides run it. Handles live in numbered slots.
enum Op: CustomStringConvertible, Sendable {
    case mkdir(Bytes, mode: UInt32)
    case rmdir(Bytes)
    case unlink(Bytes)
    /// Opens into `slot` (a handle already there is closed first, silently, on both sides).
    case open(slot: Int, Bytes, flags: Int32, mode: UInt32)
    case close(slot: Int)
    case pwrite(slot: Int, offset: UInt64, data: Bytes)
    case write(slot: Int, data: Bytes)
    case pread(slot: Int, offset: UInt64, count: Int)
    case read(slot: Int, count: Int)
    case fstat(slot: Int)
    case ftruncate(slot: Int, size: UInt64)
    case truncate(Bytes, size: UInt64)
    case fallocate(slot: Int, mode: UInt32, offset: UInt64, length: UInt64)
    /// whence: 0 SEEK_SET, 1 SEEK_CUR, 2 SEEK_END, 3 SEEK_DATA, 4 SEEK_HOLE.
    case lseek(slot: Int, offset: Int64, whence: Int32)
    case rename(Bytes, Bytes, flags: UInt32)
    case link(Bytes, Bytes)
    case symlink(target: Bytes, at: Bytes)
    case readlink(Bytes)
    case chmod(Bytes, mode: UInt32)
    case chown(Bytes, uid: UInt32, gid: UInt32)
    /// nil: UTIME_NOW for both times; otherwise both set to these seconds.
    case utimens(Bytes, seconds: Int64?)
    case setxattr(Bytes, name: String, value: Bytes, flags: Int32)
    case getxattr(Bytes, name: String)
    case listxattr(Bytes)
    case removexattr(Bytes, name: String)
    case stat(Bytes)
    case lstat(Bytes)
    case listDirectory(Bytes)

    var description: String {
        func flagsText(_ flags: Int32) -> String {
            var parts = [["O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"][Int(flags & 3)]]
            let names: [(Int32, String)] = [(0o100, "O_CREAT"), (0o200, "O_EXCL"), (0o1000, "O_TRUNC"), (0o2000, "O_APPEND"),
                                            (0o200000, "O_DIRECTORY"), (0o400000, "O_NOFOLLOW")]
            for (bit, name) in names where flags & bit != 0 { parts.append(name) }
            return parts.joined(separator: "|")
        }
        func data(_ bytes: Bytes) -> String { "\(bytes.count) bytes" + (bytes.isEmpty ? "" : " (\(String(bytes[0], radix: 16))…)") }
        switch self {
        case let .mkdir(path, mode): return "mkdir(\(render(path)), 0o\(String(mode, radix: 8)))"
        case let .rmdir(path): return "rmdir(\(render(path)))"
        case let .unlink(path): return "unlink(\(render(path)))"
        case let .open(slot, path, flags, mode): return "h\(slot) = open(\(render(path)), \(flagsText(flags)), 0o\(String(mode, radix: 8)))"
        case let .close(slot): return "close(h\(slot))"
        case let .pwrite(slot, offset, bytes): return "pwrite(h\(slot), \(data(bytes)), at: \(offset))"
        case let .write(slot, bytes): return "write(h\(slot), \(data(bytes)))"
        case let .pread(slot, offset, count): return "pread(h\(slot), count: \(count), at: \(offset))"
        case let .read(slot, count): return "read(h\(slot), count: \(count))"
        case let .fstat(slot): return "fstat(h\(slot))"
        case let .ftruncate(slot, size): return "ftruncate(h\(slot), \(size))"
        case let .truncate(path, size): return "truncate(\(render(path)), \(size))"
        case let .fallocate(slot, mode, offset, length): return "fallocate(h\(slot), mode: 0x\(String(mode, radix: 16)), offset: \(offset), length: \(length))"
        case let .lseek(slot, offset, whence):
            return "lseek(h\(slot), \(offset), \(["SEEK_SET", "SEEK_CUR", "SEEK_END", "SEEK_DATA", "SEEK_HOLE"][Int(whence)]))"
        case let .rename(from, to, flags): return "renameat2(\(render(from)), \(render(to)), flags: \(flags))"
        case let .link(from, to): return "link(\(render(from)), \(render(to)))"
        case let .symlink(target, path): return "symlink(\(render(target)), at: \(render(path)))"
        case let .readlink(path): return "readlink(\(render(path)))"
        case let .chmod(path, mode): return "chmod(\(render(path)), 0o\(String(mode, radix: 8)))"
        case let .chown(path, uid, gid): return "chown(\(render(path)), \(Int32(bitPattern: uid)), \(Int32(bitPattern: gid)))"
        case let .utimens(path, seconds): return "utimensat(\(render(path)), \(seconds.map(String.init) ?? "UTIME_NOW"))"
        case let .setxattr(path, name, value, flags): return "setxattr(\(render(path)), \(name), \(data(value)), flags: \(flags))"
        case let .getxattr(path, name): return "getxattr(\(render(path)), \(name))"
        case let .listxattr(path): return "listxattr(\(render(path)))"
        case let .removexattr(path, name): return "removexattr(\(render(path)), \(name))"
        case let .stat(path): return "stat(\(render(path)))"
        case let .lstat(path): return "lstat(\(render(path)))"
        case let .listDirectory(path): return "readdir(\(render(path)))"
        }
    }
}

/// What stat says, less timestamps, st_blocks and inode numbers (and the size of a
/// directory, which each file system reports its own way).
struct StatusSummary: Equatable, CustomStringConvertible {
    var type: UInt32
    var permissions: UInt32
    var linkCount: UInt64
    var uid: UInt32
    var gid: UInt32
    var size: UInt64?

    init(mode: UInt32, linkCount: UInt64, uid: UInt32, gid: UInt32, size: UInt64) {
        type = mode & 0o170000
        permissions = mode & 0o7777
        self.linkCount = linkCount
        self.uid = uid
        self.gid = gid
        self.size = type == 0o040000 ? nil : size
    }

    var typeName: String {
        switch type {
        case 0o040000: "dir"
        case 0o100000: "file"
        case 0o120000: "symlink"
        default: "type 0o\(String(type, radix: 8))"
        }
    }

    var description: String {
        "\(typeName) 0o\(String(permissions, radix: 8)) nlink \(linkCount) uid \(uid) gid \(gid)" + (size.map { " size \($0)" } ?? "")
    }
}

/// The result of one call.
enum Outcome: Equatable, CustomStringConvertible {
    case done
    case number(Int64)
    case bytes(Bytes)
    case names([Bytes])
    case status(StatusSummary)
    case failed(Int32)

    var description: String {
        switch self {
        case .done: return "ok"
        case let .number(value): return "ok \(value)"
        case let .bytes(value):
            let shown = value.prefix(48).map { String($0, radix: 16).leftPadded(2) }.joined()
            return "ok \(value.count) bytes [\(shown)\(value.count > 48 ? "…" : "")] (fnv \(fnv(value)))"
        case let .names(value): return "ok [" + value.map(render).joined(separator: ", ") + "]"
        case let .status(value): return "ok " + value.description
        case let .failed(code): return "errno \(code) (\(errnoName(code)))"
        }
    }
}

func fnv(_ bytes: Bytes) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    return String(hash, radix: 16)
}

func errnoName(_ code: Int32) -> String {
    let names: [Int32: String] = [1: "EPERM", 2: "ENOENT", 9: "EBADF", 13: "EACCES", 16: "EBUSY", 17: "EEXIST", 18: "EXDEV",
                                  20: "ENOTDIR", 21: "EISDIR", 22: "EINVAL", 27: "EFBIG", 28: "ENOSPC", 31: "EMLINK",
                                  36: "ENAMETOOLONG", 39: "ENOTEMPTY", 40: "ELOOP", 61: "ENODATA", 6: "ENXIO", 19: "ENODEV",
                                  95: "EOPNOTSUPP", 34: "ERANGE", 7: "E2BIG"]
    return names[code] ?? "errno \(code)"
}

// MARK: - Trees

/// One node of a tree snapshot.
struct NodeSnapshot: Equatable, CustomStringConvertible {
    var status: StatusSummary
    var content: Bytes?
    var target: Bytes?
    var xattrs: [String: Bytes]

    var description: String {
        var text = status.description
        if let content { text += " content fnv \(fnv(content))" }
        if let target { text += " -> \(render(target))" }
        if !xattrs.isEmpty {
            text += " xattrs {" + xattrs.keys.sorted().map { "\($0)=\(render(xattrs[$0]!))" }.joined(separator: ", ") + "}"
        }
        return text
    }
}

typealias TreeSnapshot = [Bytes: NodeSnapshot]

/// What differs between two trees ("" when equal), Linux's first.
func treeDifferences(linux: TreeSnapshot, shale: TreeSnapshot, limit: Int = 12) -> String {
    var lines: [String] = []
    for path in Set(linux.keys).union(shale.keys).sorted(by: { $0.lexicographicallyPrecedes($1) }) where linux[path] != shale[path] {
        lines.append("  \(render(path)):\n    linux: \(linux[path].map(\.description) ?? "absent")\n    shale: \(shale[path].map(\.description) ?? "absent")")
        if let a = linux[path]?.content, let b = shale[path]?.content, a != b {
            let first = (0 ..< min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
            lines.append("    contents first differ at byte \(first) (sizes \(a.count), \(b.count))")
        }
        if lines.count >= limit { lines.append("  …"); break }
    }
    return lines.joined(separator: "\n")
}

/// A side of the comparison.
protocol DifferentialSide: AnyObject {
    func run(_ op: Op) -> Outcome
    /// The node at `path` (not followed), nil when there is none.
    func node(_ path: Bytes) -> NodeSnapshot?
    /// The names in the directory at `path` ([] = the root).
    func names(in path: Bytes) -> [Bytes]
    /// Every handle goes (a crash, for Linux: closing them).
    func dropHandles()
}

extension DifferentialSide {
    static func join(_ prefix: Bytes, _ name: Bytes) -> Bytes { prefix.isEmpty ? name : prefix + [UInt8(ascii: "/")] + name }

    /// The tree found by listing every directory.
    func walk() -> TreeSnapshot {
        var tree: TreeSnapshot = [:]
        func visit(_ directory: Bytes) {
            for name in names(in: directory) {
                let path = Self.join(directory, name)
                guard let node = node(path) else { continue }
                tree[path] = node
                if node.status.type == 0o040000 { visit(path) }
            }
        }
        visit([])
        return tree
    }

    /// The tree found by looking up each name of `alphabet` in every directory found: no
    /// listing, so (on Shale) nothing is digested to answer it.
    func probe(_ alphabet: [Bytes]) -> TreeSnapshot {
        var tree: TreeSnapshot = [:]
        func visit(_ directory: Bytes) {
            for name in alphabet {
                let path = Self.join(directory, name)
                guard let node = node(path) else { continue }
                tree[path] = node
                if node.status.type == 0o040000 { visit(path) }
            }
        }
        visit([])
        return tree
    }
}

// MARK: - Linux

/// Calls Swift's Glibc module does not export, looked up in the C library.
enum LinuxCalls {
    private static func symbol<T>(_ name: String, as type: T.Type) -> T {
        guard let address = dlsym(nil, name) else {
            fatalError("libc has no \(name)")
        }
        return unsafeBitCast(address, to: type)
    }

    typealias PathCall = @convention(c) (UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafeRawPointer?, Int, Int32) -> Int32
    nonisolated(unsafe) static let fallocate = symbol("fallocate", as: (@convention(c) (Int32, Int32, Int64, Int64) -> Int32).self)
    nonisolated(unsafe) static let renameat2 = symbol("renameat2",
                                                      as: (@convention(c) (Int32, UnsafePointer<CChar>?, Int32, UnsafePointer<CChar>?, UInt32) -> Int32).self)
    nonisolated(unsafe) static let lsetxattr = symbol("lsetxattr", as: PathCall.self)
    nonisolated(unsafe) static let setxattr = symbol("setxattr", as: PathCall.self)
    nonisolated(unsafe) static let getxattr = symbol("getxattr",
                                                     as: (@convention(c) (UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafeMutableRawPointer?, Int) -> Int).self)
    nonisolated(unsafe) static let lgetxattr = symbol("lgetxattr",
                                                      as: (@convention(c) (UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafeMutableRawPointer?, Int) -> Int).self)
    nonisolated(unsafe) static let listxattr = symbol("listxattr",
                                                      as: (@convention(c) (UnsafePointer<CChar>?, UnsafeMutablePointer<CChar>?, Int) -> Int).self)
    nonisolated(unsafe) static let llistxattr = symbol("llistxattr",
                                                       as: (@convention(c) (UnsafePointer<CChar>?, UnsafeMutablePointer<CChar>?, Int) -> Int).self)
    nonisolated(unsafe) static let removexattr = symbol("removexattr",
                                                        as: (@convention(c) (UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> Int32).self)

    static let utimeNow = (1 << 30) - 1
    static let zeroRange: UInt32 = 0x10
    static let punchHole: UInt32 = 0x02
    static let keepSize: UInt32 = 0x01
}

func withCString<T>(_ value: Bytes, _ body: (UnsafePointer<CChar>) -> T) -> T {
    (value + [0]).withUnsafeBufferPointer { buffer in
        buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) { body($0) }
    }
}

/// Removes a directory tree (as rm -rf).
func removeTree(_ path: String) {
    let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    if fd >= 0, let directory = fdopendir(fd) {
        var names: [Bytes] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            if name != bytes("."), name != bytes("..") { names.append(name) }
        }
        closedir(directory)
        for name in names {
            let child = bytes(path) + [UInt8(ascii: "/")] + name
            var status = Glibc.stat()
            let isDirectory = withCString(child) { lstat($0, &status) } == 0 && status.st_mode & S_IFMT == S_IFDIR
            if isDirectory {
                removeTree(String(decoding: child, as: UTF8.self))
                _ = withCString(child) { Glibc.rmdir($0) }
                if errno == ENOTEMPTY {
                    // A name that is not UTF-8: recurse on the bytes through a descriptor.
                    removeTreeBytes(child)
                }
            } else {
                _ = withCString(child) { Glibc.unlink($0) }
            }
        }
    }
    _ = Glibc.rmdir(path)
}

private func removeTreeBytes(_ path: Bytes) {
    // Only reached for names that do not survive a String round trip: walk with *at calls.
    let fd = withCString(path) { Glibc.open($0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
    guard fd >= 0, let directory = fdopendir(fd) else { return }
    var names: [Bytes] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
        if name != bytes("."), name != bytes("..") { names.append(name) }
    }
    closedir(directory)
    for name in names {
        let child = path + [UInt8(ascii: "/")] + name
        var status = Glibc.stat()
        if withCString(child, { lstat($0, &status) }) == 0, status.st_mode & S_IFMT == S_IFDIR {
            removeTreeBytes(child)
            _ = withCString(child) { Glibc.rmdir($0) }
        } else {
            _ = withCString(child) { Glibc.unlink($0) }
        }
    }
}

/// A scratch directory on tmpfs, driven through the Linux kernel.
final class LinuxSide: DifferentialSide {
    let root: String
    let rootFD: Int32
    private var slots: [Int: Int32] = [:]

    init() {
        root = "/dev/shm/shale-differential-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        precondition(Glibc.mkdir(root, 0o755) == 0, "cannot make \(root)")
        rootFD = Glibc.open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        precondition(rootFD >= 0)
    }

    deinit {
        dropHandles()
        Glibc.close(rootFD)
        removeTree(root)
    }

    private func absolute(_ path: Bytes) -> Bytes { bytes(root) + [UInt8(ascii: "/")] + path }

    private func result(_ value: Int32) -> Outcome { value < 0 ? .failed(errno) : .done }
    private func number(_ value: Int) -> Outcome { value < 0 ? .failed(errno) : .number(Int64(value)) }

    /// Whether the handle in `slot` is a directory's.
    func isDirectory(slot: Int) -> Bool {
        var value = Glibc.stat()
        guard let fd = slots[slot], fstat(fd, &value) == 0 else { return false }
        return value.st_mode & S_IFMT == S_IFDIR
    }

    func dropHandles() {
        for (_, fd) in slots { Glibc.close(fd) }
        slots.removeAll()
    }

    private func status(_ value: Glibc.stat) -> StatusSummary {
        StatusSummary(mode: value.st_mode, linkCount: UInt64(value.st_nlink), uid: value.st_uid, gid: value.st_gid,
                      size: UInt64(value.st_size))
    }

    func run(_ op: Op) -> Outcome {
        switch op {
        case let .mkdir(path, mode):
            return result(withCString(path) { mkdirat(rootFD, $0, mode) })
        case let .rmdir(path):
            return result(withCString(path) { unlinkat(rootFD, $0, AT_REMOVEDIR) })
        case let .unlink(path):
            return result(withCString(path) { unlinkat(rootFD, $0, 0) })
        case let .open(slot, path, flags, mode):
            if let old = slots.removeValue(forKey: slot) { Glibc.close(old) }
            let fd = withCString(path) { openat(rootFD, $0, flags | O_CLOEXEC, mode) }
            guard fd >= 0 else { return .failed(errno) }
            slots[slot] = fd
            return .done
        case let .close(slot):
            guard let fd = slots.removeValue(forKey: slot) else { return .failed(EBADF) }
            return result(Glibc.close(fd))
        case let .pwrite(slot, offset, data):
            guard let fd = slots[slot] else { return .failed(EBADF) }
            return number(data.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) })
        case let .write(slot, data):
            guard let fd = slots[slot] else { return .failed(EBADF) }
            return number(data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) })
        case let .pread(slot, offset, count):
            guard let fd = slots[slot] else { return .failed(EBADF) }
            var buffer = Bytes(repeating: 0, count: count)
            let done = buffer.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
            return done < 0 ? .failed(errno) : .bytes(Array(buffer.prefix(done)))
        case let .read(slot, count):
            guard let fd = slots[slot] else { return .failed(EBADF) }
            var buffer = Bytes(repeating: 0, count: count)
            let done = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            return done < 0 ? .failed(errno) : .bytes(Array(buffer.prefix(done)))
        case let .fstat(slot):
            guard let fd = slots[slot] else { return .failed(EBADF) }
            var value = Glibc.stat()
            return fstat(fd, &value) < 0 ? .failed(errno) : .status(status(value))
        case let .ftruncate(slot, size):
            guard let fd = slots[slot] else { return .failed(EBADF) }
            return result(Glibc.ftruncate(fd, off_t(size)))
        case let .truncate(path, size):
            return result(withCString(absolute(path)) { Glibc.truncate($0, off_t(size)) })
        case let .fallocate(slot, mode, offset, length):
            guard let fd = slots[slot] else { return .failed(EBADF) }
            return fallocate(fd, mode: mode, offset: offset, length: length)
        case let .lseek(slot, offset, whence):
            guard let fd = slots[slot] else { return .failed(EBADF) }
            let position = Glibc.lseek(fd, off_t(offset), whence)
            return position < 0 ? .failed(errno) : .number(Int64(position))
        case let .rename(from, to, flags):
            return result(withCString(from) { old in withCString(to) { new in LinuxCalls.renameat2(rootFD, old, rootFD, new, flags) } })
        case let .link(from, to):
            return result(withCString(from) { old in withCString(to) { new in linkat(rootFD, old, rootFD, new, 0) } })
        case let .symlink(target, path):
            return result(withCString(target) { target in withCString(path) { symlinkat(target, rootFD, $0) } })
        case let .readlink(path):
            var buffer = Bytes(repeating: 0, count: 8192)
            let done = withCString(path) { name in
                buffer.withUnsafeMutableBytes { readlinkat(rootFD, name, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) }
            }
            return done < 0 ? .failed(errno) : .bytes(Array(buffer.prefix(done)))
        case let .chmod(path, mode):
            return result(withCString(path) { fchmodat(rootFD, $0, mode, 0) })
        case let .chown(path, uid, gid):
            return result(withCString(path) { fchownat(rootFD, $0, uid, gid, 0) })
        case let .utimens(path, seconds):
            var times = [timespec](repeating: timespec(tv_sec: Int(seconds ?? 0), tv_nsec: seconds == nil ? LinuxCalls.utimeNow : 0),
                                   count: 2)
            return result(withCString(path) { utimensat(rootFD, $0, &times, 0) })
        case let .setxattr(path, name, value, flags):
            return result(withCString(absolute(path)) { file in
                value.withUnsafeBytes { LinuxCalls.setxattr(file, name, $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1), $0.count, flags) }
            })
        case let .getxattr(path, name):
            var buffer = Bytes(repeating: 0, count: 65536)
            let done = withCString(absolute(path)) { file in buffer.withUnsafeMutableBytes { LinuxCalls.getxattr(file, name, $0.baseAddress, $0.count) } }
            return done < 0 ? .failed(errno) : .bytes(Array(buffer.prefix(done)))
        case let .listxattr(path):
            return xattrNames(absolute(path), follow: true).map { .names($0.sorted { $0.lexicographicallyPrecedes($1) }) } ?? .failed(errno)
        case let .removexattr(path, name):
            return result(withCString(absolute(path)) { LinuxCalls.removexattr($0, name) })
        case let .stat(path):
            var value = Glibc.stat()
            return withCString(path) { fstatat(rootFD, $0, &value, 0) } < 0 ? .failed(errno) : .status(status(value))
        case let .lstat(path):
            var value = Glibc.stat()
            return withCString(path) { fstatat(rootFD, $0, &value, AT_SYMLINK_NOFOLLOW) } < 0 ? .failed(errno) : .status(status(value))
        case let .listDirectory(path):
            let fd = withCString(path.isEmpty ? bytes(".") : path) { openat(rootFD, $0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
            guard fd >= 0 else { return .failed(errno) }
            return .names(list(fd).sorted { $0.lexicographicallyPrecedes($1) })
        }
    }

    /// tmpfs has no FALLOC_FL_ZERO_RANGE (EOPNOTSUPP from shmem_fallocate after every generic
    /// check passed): the same effect as a hole punched over the range inside the size plus,
    /// without KEEP_SIZE, the size grown to the end. Reads and SEEK_DATA/SEEK_HOLE see the
    /// same file either way.
    private func fallocate(_ fd: Int32, mode: UInt32, offset: UInt64, length: UInt64) -> Outcome {
        let done = LinuxCalls.fallocate(fd, Int32(bitPattern: mode), Int64(bitPattern: offset), Int64(bitPattern: length))
        if done == 0 { return .done }
        let code = errno
        guard code == EOPNOTSUPP, mode & LinuxCalls.zeroRange != 0, mode & LinuxCalls.punchHole == 0 else { return .failed(code) }
        var value = Glibc.stat()
        guard fstat(fd, &value) == 0 else { return .failed(errno) }
        let size = UInt64(value.st_size)
        let end = offset + length
        if offset < size {
            let punched = LinuxCalls.fallocate(fd, Int32(LinuxCalls.punchHole | LinuxCalls.keepSize), Int64(offset),
                                               Int64(min(end, size) - offset))
            guard punched == 0 else { return .failed(errno) }
        }
        if mode & LinuxCalls.keepSize == 0, end > size {
            guard Glibc.ftruncate(fd, off_t(end)) == 0 else { return .failed(errno) }
        }
        return .done
    }

    private func list(_ fd: Int32) -> [Bytes] {
        guard let directory = fdopendir(fd) else { Glibc.close(fd); return [] }
        var names: [Bytes] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            if name != bytes("."), name != bytes("..") { names.append(name) }
        }
        closedir(directory)
        return names
    }

    private func xattrNames(_ path: Bytes, follow: Bool) -> [Bytes]? {
        var buffer = [CChar](repeating: 0, count: 65536)
        let done = withCString(path) { file in
            buffer.withUnsafeMutableBufferPointer { (follow ? LinuxCalls.listxattr : LinuxCalls.llistxattr)(file, $0.baseAddress, $0.count) }
        }
        guard done >= 0 else { return nil }
        return buffer.prefix(done).map { UInt8(bitPattern: $0) }.split(separator: 0).map(Array.init)
    }

    func names(in path: Bytes) -> [Bytes] {
        let fd = withCString(path.isEmpty ? bytes(".") : path) { openat(rootFD, $0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        return fd < 0 ? [] : list(fd)
    }

    func node(_ path: Bytes) -> NodeSnapshot? {
        var value = Glibc.stat()
        guard withCString(path, { fstatat(rootFD, $0, &value, AT_SYMLINK_NOFOLLOW) }) == 0 else { return nil }
        var node = NodeSnapshot(status: status(value), content: nil, target: nil, xattrs: [:])
        switch value.st_mode & S_IFMT {
        case S_IFREG:
            let fd = withCString(path) { openat(rootFD, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
            var content = Bytes()
            var buffer = Bytes(repeating: 0, count: 1 << 16)
            while fd >= 0 {
                let done = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if done <= 0 { break }
                content += buffer.prefix(done)
            }
            if fd >= 0 { Glibc.close(fd) }
            node.content = content
        case S_IFLNK:
            if case let .bytes(target) = run(.readlink(path)) { node.target = target }
        default: break
        }
        let full = absolute(path)
        for name in xattrNames(full, follow: false) ?? [] {
            var buffer = Bytes(repeating: 0, count: 65536)
            let done = withCString(full) { file in
                withCString(name) { key in buffer.withUnsafeMutableBytes { LinuxCalls.lgetxattr(file, key, $0.baseAddress, $0.count) } }
            }
            if done >= 0 { node.xattrs[String(decoding: name, as: UTF8.self)] = Array(buffer.prefix(done)) }
        }
        return node
    }
}

// MARK: - Shale

/// Shale on simulated NVM, through LibFS.
final class ShaleSide: DifferentialSide {
    var fs: SimulatedFileSystem
    let background: Bool
    private var slots: [Int: LibFS.FileHandle] = [:]

    init(logBytes: UInt64 = 1 << 20, background: Bool = false, nvmBytes: Int = 64 << 20) throws {
        self.background = background
        fs = try simulatedFileSystem(nvmBytes: nvmBytes, logBytes: logBytes, background: background, credentials: .current)
    }

    deinit { try? fs.close() }

    func dropHandles() { slots.removeAll() }

    /// A crash: the file system goes without closing, and a new one recovers from what the NVM
    /// durably held at that instant.
    func crash() throws {
        slots.removeAll()
        fs = try crashAndRecover(fs, background: background)
    }

    private func path(_ value: Bytes) -> Path { Path(bytes: value) }

    private func summary(_ status: FileStatus) -> StatusSummary {
        StatusSummary(mode: status.mode, linkCount: UInt64(status.linkCount), uid: status.uid, gid: status.gid, size: status.size)
    }

    private func attempt(_ body: () throws(Errno) -> Outcome) -> Outcome {
        do throws(Errno) { return try body() } catch { return .failed(error.rawValue) }
    }

    private func handle(_ slot: Int) throws(Errno) -> LibFS.FileHandle {
        guard let handle = slots[slot] else { throw .badFileDescriptor }
        return handle
    }

    private static func origin(_ whence: Int32) -> SeekOrigin? {
        switch whence {
        case 0: .start
        case 1: .current
        case 2: .end
        case 3: .data
        case 4: .hole
        default: nil
        }
    }

    func run(_ op: Op) -> Outcome {
        attempt { () throws(Errno) -> Outcome in
            switch op {
            case let .mkdir(name, mode): try fs.mkdir(path(name), mode: mode)
            case let .rmdir(name): try fs.rmdir(path(name))
            case let .unlink(name): try fs.unlink(path(name))
            case let .open(slot, name, flags, mode):
                if let old = slots.removeValue(forKey: slot) { try? fs.close(old) }
                slots[slot] = try fs.open(path(name), OpenFlags(rawValue: flags), mode: mode)
            case let .close(slot):
                let handle = try handle(slot)
                slots[slot] = nil
                try fs.close(handle)
            case let .pwrite(slot, offset, data): return .number(Int64(try fs.pwrite(try handle(slot), data, at: offset)))
            case let .write(slot, data): return .number(Int64(try fs.write(try handle(slot), data)))
            case let .pread(slot, offset, count): return .bytes(try fs.pread(try handle(slot), count: count, at: offset))
            case let .read(slot, count): return .bytes(try fs.read(try handle(slot), count: count))
            case let .fstat(slot): return .status(summary(try fs.fstat(try handle(slot))))
            case let .ftruncate(slot, size): try fs.ftruncate(try handle(slot), size: size)
            case let .truncate(name, size): try fs.truncate(path(name), size: size)
            case let .fallocate(slot, mode, offset, length):
                try fs.fallocate(try handle(slot), mode: FallocateMode(rawValue: mode), offset: offset, length: length)
            case let .lseek(slot, offset, whence):
                let handle = try handle(slot)
                guard let origin = Self.origin(whence) else { throw .invalidArgument }
                return .number(Int64(try fs.lseek(handle, offset: offset, from: origin)))
            case let .rename(from, to, flags): try fs.rename(path(from), path(to), flags: RenameFlags(rawValue: flags))
            case let .link(from, to): try fs.link(path(from), path(to))
            case let .symlink(target, name): try fs.symlink(path(target), at: path(name))
            case let .readlink(name): return .bytes(try fs.readlink(path(name)))
            case let .chmod(name, mode): try fs.chmod(path(name), mode: mode)
            case let .chown(name, uid, gid): try fs.chown(path(name), uid: uid, gid: gid)
            case let .utimens(name, seconds):
                let change: TimeChange = seconds.map { .set(Timestamp(seconds: $0)) } ?? .now
                try fs.utimens(path(name), access: change, modification: change)
            case let .setxattr(name, key, value, flags):
                try fs.setxattr(path(name), name: key, value: value, flags: XattrFlags(rawValue: UInt32(flags)))
            case let .getxattr(name, key): return .bytes(try fs.getxattr(path(name), name: key))
            case let .listxattr(name): return .names(try fs.listxattr(path(name)).map(bytes).sorted { $0.lexicographicallyPrecedes($1) })
            case let .removexattr(name, key): try fs.removexattr(path(name), name: key)
            case let .stat(name): return .status(summary(try fs.stat(path(name))))
            case let .lstat(name): return .status(summary(try fs.lstat(path(name))))
            case let .listDirectory(name):
                return .names(try fs.listDirectory(path(name.isEmpty ? bytes("/") : name)).map(\.name)
                    .sorted { $0.lexicographicallyPrecedes($1) })
            }
            return .done
        }
    }

    func names(in directory: Bytes) -> [Bytes] {
        (try? fs.listDirectory(path(directory.isEmpty ? bytes("/") : directory)).map(\.name)) ?? []
    }

    func node(_ name: Bytes) -> NodeSnapshot? {
        guard let status = try? fs.lstat(path(name)) else { return nil }
        var node = NodeSnapshot(status: summary(status), content: nil, target: nil, xattrs: [:])
        if status.isRegularFile {
            node.content = (try? fs.readFile(path(name))) ?? bytes("<unreadable>")
        } else if status.isSymlink {
            node.target = (try? fs.readlink(path(name))) ?? bytes("<unreadable>")
        }
        for key in (try? fs.listxattr(path(name), followSymlinks: false)) ?? [] {
            node.xattrs[key] = (try? fs.getxattr(path(name), name: key, followSymlinks: false)) ?? bytes("<unreadable>")
        }
        return node
    }
}

// MARK: - Running a sequence

/// Runs ops on both sides and reports the first difference.
final class Differential {
    let linux = LinuxSide()
    let shale: ShaleSide
    /// Names the random sequences use (for the probe snapshot).
    var alphabet: [Bytes] = []

    init(logBytes: UInt64 = 1 << 20, background: Bool = false) throws {
        shale = try ShaleSide(logBytes: logBytes, background: background)
    }

    /// Both outcomes of `op`; nil when they agree.
    func step(_ op: Op) -> (linux: Outcome, shale: Outcome)? {
        let a = linux.run(op)
        let b = shale.run(op)
        return a == b ? nil : (a, b)
    }

    /// "" when the trees agree (walked by listing, or probed by the alphabet).
    func compareTrees(probing: Bool = false) -> String {
        if probing {
            return treeDifferences(linux: linux.probe(alphabet), shale: shale.probe(alphabet))
        }
        return treeDifferences(linux: linux.walk(), shale: shale.walk())
    }

    /// A crash of Shale (and every Linux handle closed, to stay comparable).
    func crash() throws {
        linux.dropHandles()
        try shale.crash()
    }
}
