// What a crash test compares: the tree a file system shows through LibFS, without what
// legitimately differs between runs (times, inode numbers, block counts). Hard links are
// kept as the set of paths naming each inode, so the snapshot does not depend on numbers.

import LibFS
import ShaleFormat
import SystemPackage

public struct TreeSnapshot: Equatable, Hashable, Sendable, CustomStringConvertible {
    public struct Entry: Equatable, Hashable, Sendable {
        public var path: String
        /// "dir", "file", "symlink", or the octal type bits of anything else.
        public var type: String
        public var permissions: UInt32
        public var linkCount: UInt32
        public var size: UInt64
        /// A regular file's bytes, a symlink's target.
        public var contents: [UInt8]
        public var xattrs: [String: [UInt8]]
        /// Every path naming this entry's inode (itself included), sorted.
        public var names: [String]
    }

    public var entries: [Entry]

    /// Walks `fs` from the root. Errors are part of the picture: a tree that cannot be read
    /// is a tree that does not match.
    public init<Kernel: FileSystemKernel>(of fs: FileSystem<Kernel>) throws(Errno) {
        var found: [(entry: Entry, inode: UInt64)] = []
        var directories = ["/"]
        while let directory = directories.popLast() {
            for item in try fs.listDirectory(Path(directory)).sorted(by: { $0.name.lexicographicallyPrecedes($1.name) }) {
                let name = item.nameString
                guard name != ".", name != ".." else { continue }
                let path = directory == "/" ? "/" + name : directory + "/" + name
                let status = try fs.lstat(Path(path))
                let typeBits = status.mode & Inode.typeMask
                var entry = Entry(path: path, type: "", permissions: status.mode & 0o7777, linkCount: status.linkCount,
                                  size: status.size, contents: [], xattrs: [:], names: [])
                switch typeBits {
                case Inode.typeDirectory:
                    entry.type = "dir"
                    entry.size = 0
                    directories.append(path)
                case Inode.typeRegular:
                    entry.type = "file"
                    let handle = try fs.open(Path(path))
                    defer { try? fs.close(handle) }
                    entry.contents = try fs.pread(handle, count: Int(status.size), at: 0)
                case Inode.typeSymlink:
                    entry.type = "symlink"
                    entry.contents = try fs.readlink(Path(path))
                default:
                    entry.type = String(typeBits, radix: 8)
                }
                if typeBits != Inode.typeSymlink {
                    for attribute in try fs.listxattr(Path(path)) {
                        entry.xattrs[attribute] = try fs.getxattr(Path(path), name: attribute)
                    }
                }
                found.append((entry, status.inode))
            }
        }
        var names: [UInt64: [String]] = [:]
        for item in found { names[item.inode, default: []].append(item.entry.path) }
        entries = found.map { item in
            var entry = item.entry
            entry.names = names[item.inode]!.sorted()
            return entry
        }.sorted { $0.path < $1.path }
    }

    /// One line per entry, for reports.
    public var description: String {
        guard !entries.isEmpty else { return "    (empty)" }
        return entries.map { entry in
            var line = "    \(entry.path) \(entry.type) \(String(entry.permissions, radix: 8)) links=\(entry.linkCount)"
            if entry.type == "file" { line += " size=\(entry.size) crc=\(String(CRC32C.checksum(entry.contents), radix: 16))" }
            if entry.type == "symlink" { line += " -> \(String(decoding: entry.contents, as: UTF8.self))" }
            if entry.names.count > 1 { line += " names=\(entry.names.joined(separator: ","))" }
            for (name, value) in entry.xattrs.sorted(by: { $0.key < $1.key }) { line += " \(name)=\(String(decoding: value, as: UTF8.self))" }
            return line
        }.joined(separator: "\n")
    }
}
