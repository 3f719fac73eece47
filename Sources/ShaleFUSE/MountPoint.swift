// Checking a mount point before mounting, with a sentence for each way it can be wrong, and
// reading the mount table (/proc/self/mountinfo).

#if canImport(Glibc)
import Glibc
#endif

/// One line of /proc/self/mountinfo.
public struct MountEntry: Sendable, Equatable {
    public var mountPoint: String
    public var type: String
    public var source: String
}

public enum MountTable {
    /// The mounts this process sees.
    public static func entries() -> [MountEntry] {
        guard let text = readFile("/proc/self/mountinfo") else { return [] }
        return text.split(separator: "\n").compactMap { line in
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER
            let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            guard fields.count > 5, let dash = fields.firstIndex(of: "-"), dash + 2 < fields.count else { return nil }
            return MountEntry(mountPoint: unescape(fields[4]), type: fields[dash + 1], source: unescape(fields[dash + 2]))
        }
    }

    /// The mount whose mount point is `path` (the last one, which is what the path shows).
    public static func entry(at path: String) -> MountEntry? {
        entries().last { $0.mountPoint == path }
    }

    /// mountinfo writes space, tab, newline and backslash as \ooo.
    static func unescape(_ field: String) -> String {
        var bytes: [UInt8] = []
        let source = Array(field.utf8)
        var index = 0
        while index < source.count {
            if source[index] == UInt8(ascii: "\\"), index + 3 < source.count,
               let value = UInt8(String(decoding: source[index + 1 ... index + 3], as: UTF8.self), radix: 8) {
                bytes.append(value)
                index += 4
            } else {
                bytes.append(source[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            bytes += chunk[0 ..< count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

public enum MountPoint {
    /// The absolute, resolved path of `path` when it can be mounted on; otherwise the reason.
    /// A dead FUSE mount there (its daemon was killed: every access fails with ENOTCONN) is
    /// detached first, and `detachedStale` says so.
    public static func prepare(_ path: String) throws(FUSEError) -> (path: String, detachedStale: Bool) {
        var detached = false
        var status = stat()
        if stat(path, &status) != 0, errno == ENOTCONN {
            guard umount2(path, Int32(MNT_DETACH)) == 0 else {
                throw FUSEError("\(path) is a dead FUSE mount (its daemon is gone) and cannot be detached: \(String(cString: strerror(errno)))")
            }
            detached = true
        }
        guard stat(path, &status) == 0 else {
            let reason = errno
            switch reason {
            case ENOENT: throw FUSEError("the mount point \(path) does not exist")
            case ENOTDIR: throw FUSEError("the mount point \(path) is not a directory")
            default: throw FUSEError("cannot use the mount point \(path): \(String(cString: strerror(reason)))")
            }
        }
        guard status.st_mode & S_IFMT == S_IFDIR else {
            throw FUSEError("the mount point \(path) is not a directory")
        }
        guard let resolved = realpath(path, nil) else {
            throw FUSEError("cannot resolve the mount point \(path): \(String(cString: strerror(errno)))")
        }
        let absolute = String(cString: resolved)
        free(resolved)
        if let existing = MountTable.entry(at: absolute) {
            throw FUSEError("\(absolute) is already a mount point (\(existing.type) from \(existing.source)); unmount it first")
        }
        guard access("/dev/fuse", F_OK) == 0 else {
            throw FUSEError("/dev/fuse is missing: load the fuse module (modprobe fuse), or give a container the device")
        }
        return (absolute, detached)
    }
}
