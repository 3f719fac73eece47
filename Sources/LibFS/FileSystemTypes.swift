// The value types of the POSIX-shaped API: paths, open flags, file status, time changes.

import ShaleFormat
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

private typealias Inode = ShaleFormat.Inode

/// A path as bytes: any byte but NUL may appear, '/' separates names. Paths are resolved
/// from the file system's root whether or not they begin with '/'.
public struct Path: Sendable, Hashable, ExpressibleByStringLiteral, CustomStringConvertible {
    public var bytes: [UInt8]

    public init(_ string: String) { bytes = Array(string.utf8) }
    public init(bytes: [UInt8]) { self.bytes = bytes }
    public init(stringLiteral value: String) { self.init(value) }

    public var description: String { String(decoding: bytes, as: UTF8.self) }

    /// `self` + "/" + `name`.
    public func appending(_ name: String) -> Path {
        Path(bytes: bytes + (bytes.last == UInt8(ascii: "/") ? [] : [UInt8(ascii: "/")]) + Array(name.utf8))
    }
}

/// open(2) flags, with Linux's values (so a front end can pass them through).
public struct OpenFlags: OptionSet, Sendable, Hashable {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let readOnly: OpenFlags = []
    public static let writeOnly = OpenFlags(rawValue: 0o1)
    public static let readWrite = OpenFlags(rawValue: 0o2)
    public static let create = OpenFlags(rawValue: 0o100)
    public static let exclusive = OpenFlags(rawValue: 0o200)
    public static let truncate = OpenFlags(rawValue: 0o1000)
    public static let append = OpenFlags(rawValue: 0o2000)
    public static let directory = OpenFlags(rawValue: 0o200000)
    public static let noFollow = OpenFlags(rawValue: 0o400000)

    var accessMode: Int32 { rawValue & 0o3 }
    var readable: Bool { accessMode == 0 || accessMode == 2 }
    var writable: Bool { accessMode == 1 || accessMode == 2 }
}

/// An open file of a `FileSystem` (a descriptor number local to it).
public struct FileHandle: Sendable, Hashable {
    public let number: Int32
    /// A handle a front end kept as a number (FUSE's `fh`).
    public init(number: Int32) { self.number = number }
}

/// What stat(2) says.
public struct FileStatus: Sendable, Equatable {
    public var inode: UInt64
    public var mode: UInt32
    public var linkCount: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var rdev: UInt64
    public var size: UInt64
    /// 512-byte units, as st_blocks.
    public var blocks: UInt64
    public var blockBytes: UInt32
    public var atime: Timestamp
    public var mtime: Timestamp
    public var ctime: Timestamp
    public var btime: Timestamp

    public var type: UInt32 { mode & Inode.typeMask }
    public var permissions: UInt32 { mode & 0o7777 }
    public var isDirectory: Bool { type == Inode.typeDirectory }
    public var isRegularFile: Bool { type == Inode.typeRegular }
    public var isSymlink: Bool { type == Inode.typeSymlink }

    init(_ inode: ShaleFormat.Inode) {
        self.inode = inode.number
        mode = inode.mode
        linkCount = inode.linkCount
        uid = inode.uid
        gid = inode.gid
        rdev = inode.rdev
        size = inode.size
        blocks = inode.allocatedBlocks * UInt64(Format.blockBytes / 512)
        blockBytes = UInt32(Format.blockBytes)
        atime = inode.atime
        mtime = inode.mtime
        ctime = inode.ctime
        btime = inode.btime
    }
}

/// One directory entry as readdir returns it.
public struct DirectoryEntryInfo: Sendable, Equatable {
    public var name: [UInt8]
    public var inode: UInt64
    /// d_type.
    public var type: UInt8
    /// Pass to `readDirectory(_:after:)` to continue after this entry (d_off).
    public var cookie: UInt64

    public var nameString: String { String(decoding: name, as: UTF8.self) }
}

/// A time argument of `utimens`.
public enum TimeChange: Sendable, Equatable {
    case now
    case omit
    case set(Timestamp)
}

/// What one setattr changes (FUSE's SETATTR): nil and `.omit` leave a field alone.
public struct AttributeChanges: Sendable, Equatable {
    /// Permission bits (the file type bits are ignored).
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var size: UInt64?
    public var atime: TimeChange
    public var mtime: TimeChange

    public init(mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil, size: UInt64? = nil,
                atime: TimeChange = .omit, mtime: TimeChange = .omit) {
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.atime = atime
        self.mtime = mtime
    }
}

/// lseek whence.
public enum SeekOrigin: Sendable {
    case start, current, end, data, hole
}

/// Who is calling: permission checks use these, as the kernel would.
public struct Credentials: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public var groups: [UInt32]
    /// Applied to the mode of every new file, as the kernel applies the process umask.
    public var umask: UInt32

    public init(uid: UInt32, gid: UInt32, groups: [UInt32] = [], umask: UInt32 = 0o022) {
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.umask = umask
    }

    /// The calling process's ids, groups and umask.
    public static var current: Credentials {
        var groups = [gid_t](repeating: 0, count: Int(getgroups(0, nil)))
        let count = getgroups(Int32(groups.count), &groups)
        let mask = Glibc.umask(0)
        _ = Glibc.umask(mask)
        return Credentials(uid: getuid(), gid: getgid(), groups: Array(groups.prefix(max(0, Int(count)))), umask: UInt32(mask))
    }

    var isRoot: Bool { uid == 0 }

    func inGroup(_ gid: UInt32) -> Bool { gid == self.gid || groups.contains(gid) }
}

extension Errno {
    /// ENODATA (no such attribute); swift-system names it only on some platforms.
    public static var noAttribute: Errno { Errno(rawValue: 61) }
}

extension FileStatus {
    /// As the C `struct stat` (the mount's replies, libshale): no device number (st_dev is
    /// the caller's to fill), sizes clamped to the C types.
    public var cStat: Glibc.stat {
        func time(_ stamp: Timestamp) -> timespec { timespec(tv_sec: Int(stamp.seconds), tv_nsec: Int(stamp.nanoseconds)) }
        var result = Glibc.stat()
        result.st_ino = UInt(inode)
        result.st_mode = mode
        result.st_nlink = UInt(linkCount)
        result.st_uid = uid
        result.st_gid = gid
        result.st_rdev = UInt(rdev)
        result.st_size = off_t(clamping: size)
        result.st_blocks = blkcnt_t(clamping: blocks)
        result.st_blksize = blksize_t(blockBytes)
        result.st_atim = time(atime)
        result.st_mtim = time(mtime)
        result.st_ctim = time(ctime)
        return result
    }
}

extension FileSystemStatistics {
    /// As the C `struct statvfs` (the mount's statfs replies, libshale's shale_statvfs):
    /// every free block and inode is available to unprivileged callers too (no reserve).
    public var cStatvfs: Glibc.statvfs {
        var result = Glibc.statvfs()
        result.f_bsize = UInt(blockBytes)
        result.f_frsize = UInt(blockBytes)
        result.f_blocks = fsblkcnt_t(totalBlocks)
        result.f_bfree = fsblkcnt_t(freeBlocks)
        result.f_bavail = fsblkcnt_t(freeBlocks)
        result.f_files = fsfilcnt_t(totalInodes)
        result.f_ffree = fsfilcnt_t(freeInodes)
        result.f_favail = fsfilcnt_t(freeInodes)
        result.f_namemax = UInt(nameBytesMax)
        return result
    }
}
