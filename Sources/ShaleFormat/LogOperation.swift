// Operation payloads (docs/format.md "Operation payloads"): the arguments of every logged
// operation, as LibFS writes them into a record's payload and as KernFS's digest reads them
// back from a client's log, which it does not trust.
//
// Layout of every payload: fixed-size fields first (little-endian, 8-byte fields at 8-aligned
// payload offsets; payloads start 8-aligned in the region), then the byte strings, each
// preceded by its length (u16 for names, symlink targets and xattr names; u32 for xattr values
// and inline write bytes). There is no padding at the end: the record framing aligns the next
// record.
//
// Encoding writes any value whose byte strings fit their length fields and checks nothing
// else (it is on the writer's hot path); `validate(dataBytes:)` states every rule, and
// `decode` applies all of them. So a payload that decodes is one a correct LibFS could have
// written, and it re-encodes to exactly the same bytes (the encoding is canonical: reserved
// bytes and the fields a setattr does not set are zero).

/// `create`, `mkdir` and `mknod`: a new inode named `name` in `parent`. LibFS chooses the
/// inode number from a range KernFS leased to it.
public struct CreateArguments: Equatable, Sendable {
    public var parent: UInt64
    public var inode: UInt64
    /// The full st_mode: type bits (which must agree with the operation) and permission bits.
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    /// The device number of a character or block device; 0 for every other type.
    public var rdev: UInt64
    /// The new inode's atime, mtime, ctime and btime, and the parent's mtime and ctime.
    public var time: Timestamp
    public var name: [UInt8]

    public init(parent: UInt64, inode: UInt64, mode: UInt32, uid: UInt32, gid: UInt32, rdev: UInt64 = 0,
                time: Timestamp, name: [UInt8]) {
        self.parent = parent
        self.inode = inode
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.rdev = rdev
        self.time = time
        self.name = name
    }

    /// parent 8, inode 8, rdev 8, time 16, mode 4, uid 4, gid 4, name length 2.
    static let fixedBytes = 54
}

/// `symlink`: a new symbolic link (mode 0o120777) named `name` in `parent`.
public struct SymlinkArguments: Equatable, Sendable {
    /// Linux's PATH_MAX less the terminating NUL.
    public static let targetBytesMax = 4095

    public var parent: UInt64
    public var inode: UInt64
    public var uid: UInt32
    public var gid: UInt32
    public var time: Timestamp
    public var name: [UInt8]
    /// 1 … 4095 bytes, no NUL.
    public var target: [UInt8]

    public init(parent: UInt64, inode: UInt64, uid: UInt32, gid: UInt32, time: Timestamp, name: [UInt8],
                target: [UInt8]) {
        self.parent = parent
        self.inode = inode
        self.uid = uid
        self.gid = gid
        self.time = time
        self.name = name
        self.target = target
    }

    /// parent 8, inode 8, time 16, uid 4, gid 4, name length 2, target length 2.
    static let fixedBytes = 44
}

/// `link`: a new name for an existing inode (never a directory).
public struct LinkArguments: Equatable, Sendable {
    public var parent: UInt64
    /// The existing inode.
    public var inode: UInt64
    public var time: Timestamp
    public var name: [UInt8]

    public init(parent: UInt64, inode: UInt64, time: Timestamp, name: [UInt8]) {
        self.parent = parent
        self.inode = inode
        self.time = time
        self.name = name
    }

    /// parent 8, inode 8, time 16, name length 2.
    static let fixedBytes = 34
}

/// `unlink` and `rmdir`: removes `name` from `parent`.
public struct RemoveArguments: Equatable, Sendable {
    public var parent: UInt64
    /// The inode the name must refer to when digest applies the record (digest checks it).
    public var inode: UInt64
    public var time: Timestamp
    public var name: [UInt8]

    public init(parent: UInt64, inode: UInt64, time: Timestamp, name: [UInt8]) {
        self.parent = parent
        self.inode = inode
        self.time = time
        self.name = name
    }

    /// Same layout as a link.
    static let fixedBytes = 34
}

/// renameat2 flags, with Linux's values.
public struct RenameFlags: OptionSet, Equatable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// RENAME_NOREPLACE: fail rather than replace an existing name.
    public static let noReplace = RenameFlags(rawValue: 1)
    /// RENAME_EXCHANGE: swap two existing names.
    public static let exchange = RenameFlags(rawValue: 2)
    public static let known: RenameFlags = [.noReplace, .exchange]
}

/// `rename`: moves (or with `.exchange`, swaps) `oldName` in `oldParent` and `newName` in
/// `newParent`.
public struct RenameArguments: Equatable, Sendable {
    public var oldParent: UInt64
    public var oldName: [UInt8]
    public var newParent: UInt64
    public var newName: [UInt8]
    public var flags: RenameFlags
    /// The inode at `oldName` (digest checks it).
    public var source: UInt64
    /// The inode at `newName` before the rename, 0 if none (digest checks it).
    public var replaced: UInt64
    public var time: Timestamp

    public init(oldParent: UInt64, oldName: [UInt8], newParent: UInt64, newName: [UInt8], flags: RenameFlags = [],
                source: UInt64, replaced: UInt64, time: Timestamp) {
        self.oldParent = oldParent
        self.oldName = oldName
        self.newParent = newParent
        self.newName = newName
        self.flags = flags
        self.source = source
        self.replaced = replaced
        self.time = time
    }

    /// oldParent 8, newParent 8, source 8, replaced 8, time 16, flags 4, two name lengths 2 + 2.
    static let fixedBytes = 56
}

/// `write`: `length` bytes at `offset`, either inline in the payload or as the record's bulk
/// data (line-aligned in the log).
public struct WriteArguments: Equatable, Sendable {
    /// The largest write whose bytes may travel inline in the payload.
    public static let inlineBytesMax = 3072

    public var inode: UInt64
    public var offset: UInt64
    public var length: UInt32
    /// The file's mtime and ctime.
    public var time: Timestamp
    /// The bytes written (`count == length`), or empty when they are the record's bulk data.
    public var inline: [UInt8]

    public init(inode: UInt64, offset: UInt64, length: UInt32, time: Timestamp, inline: [UInt8] = []) {
        self.inode = inode
        self.offset = offset
        self.length = length
        self.time = time
        self.inline = inline
    }

    /// inode 8, offset 8, time 16, length 4, inline length 4.
    public static let fixedBytes = 40

    /// Encodes a write's payload straight from the caller's bytes (`inline` empty for a
    /// write whose bytes travel as bulk data): the hot path allocates nothing. Same bytes as
    /// `LogOperation.write(...).encodePayload`.
    public static func encodePayload(inode: UInt64, offset: UInt64, length: UInt32, time: Timestamp,
                                     inline: UnsafeRawBufferPointer, into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count == fixedBytes + inline.count && (inline.isEmpty || inline.count == Int(length)))
        var writer = FieldWriter(buffer)
        writer.put(inode)
        writer.put(offset)
        writer.put(time: time)
        writer.put(length)
        writer.put(UInt32(inline.count))
        if let base = inline.baseAddress, inline.count > 0 {
            (buffer.baseAddress! + fixedBytes).copyMemory(from: base, byteCount: inline.count)
        }
    }
}

/// `truncate`: sets the file's size.
public struct TruncateArguments: Equatable, Sendable {
    public var inode: UInt64
    public var size: UInt64
    public var time: Timestamp

    public init(inode: UInt64, size: UInt64, time: Timestamp) {
        self.inode = inode
        self.size = size
        self.time = time
    }

    /// inode 8, size 8, time 16.
    static let fixedBytes = 32
}

/// fallocate modes, with Linux's values.
public struct FallocateMode: OptionSet, Equatable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// FALLOC_FL_KEEP_SIZE: allocate without changing the size.
    public static let keepSize = FallocateMode(rawValue: 0x01)
    /// FALLOC_FL_PUNCH_HOLE: deallocate (requires keepSize).
    public static let punchHole = FallocateMode(rawValue: 0x02)
    /// FALLOC_FL_ZERO_RANGE: make the range read as zeros.
    public static let zeroRange = FallocateMode(rawValue: 0x10)
    public static let known: FallocateMode = [.keepSize, .punchHole, .zeroRange]
}

/// `fallocate`: allocates, punches or zeroes `length` bytes at `offset`.
public struct FallocateArguments: Equatable, Sendable {
    public var inode: UInt64
    public var mode: FallocateMode
    public var offset: UInt64
    public var length: UInt64
    public var time: Timestamp

    public init(inode: UInt64, mode: FallocateMode = [], offset: UInt64, length: UInt64, time: Timestamp) {
        self.inode = inode
        self.mode = mode
        self.offset = offset
        self.length = length
        self.time = time
    }

    /// inode 8, offset 8, length 8, time 16, mode 4.
    static let fixedBytes = 44
}

/// Which attributes a setattr sets.
public struct SetattrMask: OptionSet, Equatable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let mode = SetattrMask(rawValue: 1)
    public static let uid = SetattrMask(rawValue: 2)
    public static let gid = SetattrMask(rawValue: 4)
    public static let atime = SetattrMask(rawValue: 8)
    public static let mtime = SetattrMask(rawValue: 16)
    public static let known: SetattrMask = [.mode, .uid, .gid, .atime, .mtime]
}

/// `setattr` (chmod, chown, utimensat). A field `valid` does not name must be zero; `ctime`
/// is always set.
public struct SetattrArguments: Equatable, Sendable {
    public var inode: UInt64
    public var valid: SetattrMask
    /// Permission bits only (≤ 0o7777): the file type never changes.
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var atime: Timestamp
    public var mtime: Timestamp
    public var ctime: Timestamp

    public init(inode: UInt64, valid: SetattrMask, mode: UInt32 = 0, uid: UInt32 = 0, gid: UInt32 = 0,
                atime: Timestamp = Timestamp(seconds: 0), mtime: Timestamp = Timestamp(seconds: 0), ctime: Timestamp) {
        self.inode = inode
        self.valid = valid
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.atime = atime
        self.mtime = mtime
        self.ctime = ctime
    }

    /// inode 8, atime 16, mtime 16, ctime 16, valid 4, mode 4, uid 4, gid 4.
    static let fixedBytes = 72
}

/// setxattr flags, with Linux's values.
public struct XattrFlags: OptionSet, Equatable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// XATTR_CREATE: fail if the attribute exists.
    public static let create = XattrFlags(rawValue: 1)
    /// XATTR_REPLACE: fail if it does not.
    public static let replace = XattrFlags(rawValue: 2)
    public static let known: XattrFlags = [.create, .replace]
}

/// `setxattr`: sets extended attribute `name` to `value`.
public struct SetxattrArguments: Equatable, Sendable {
    /// Linux's XATTR_NAME_MAX and XATTR_SIZE_MAX.
    public static let nameBytesMax = 255
    public static let valueBytesMax = 65536

    public var inode: UInt64
    public var flags: XattrFlags
    /// 1 … 255 bytes, no NUL (the namespace prefix, "user." and so on, is part of the name).
    public var name: [UInt8]
    /// 0 … 65536 bytes.
    public var value: [UInt8]
    /// The inode's ctime.
    public var time: Timestamp

    public init(inode: UInt64, flags: XattrFlags = [], name: [UInt8], value: [UInt8], time: Timestamp) {
        self.inode = inode
        self.flags = flags
        self.name = name
        self.value = value
        self.time = time
    }

    /// inode 8, time 16, flags 4, name length 2, value length 4.
    static let fixedBytes = 34
}

/// `removexattr`: removes extended attribute `name`.
public struct RemoveXattrArguments: Equatable, Sendable {
    public var inode: UInt64
    public var name: [UInt8]
    public var time: Timestamp

    public init(inode: UInt64, name: [UInt8], time: Timestamp) {
        self.inode = inode
        self.name = name
        self.time = time
    }

    /// inode 8, time 16, name length 2.
    static let fixedBytes = 26
}

/// One logged operation: the payload of every record type but `wrap`.
public enum LogOperation: Equatable, Sendable {
    case create(CreateArguments)
    case mkdir(CreateArguments)
    case mknod(CreateArguments)
    case symlink(SymlinkArguments)
    case link(LinkArguments)
    case unlink(RemoveArguments)
    case rmdir(RemoveArguments)
    case rename(RenameArguments)
    case write(WriteArguments)
    case truncate(TruncateArguments)
    case fallocate(FallocateArguments)
    case setattr(SetattrArguments)
    case setxattr(SetxattrArguments)
    case removexattr(RemoveXattrArguments)

    /// Linux's largest file size (MAX_LFS_FILESIZE): no operation reaches past it.
    public static let fileBytesMax = UInt64(Int64.max)

    public var recordType: LogRecordType {
        switch self {
        case .create: .create
        case .mkdir: .mkdir
        case .mknod: .mknod
        case .symlink: .symlink
        case .link: .link
        case .unlink: .unlink
        case .rmdir: .rmdir
        case .rename: .rename
        case .write: .write
        case .truncate: .truncate
        case .fallocate: .fallocate
        case .setattr: .setattr
        case .setxattr: .setxattr
        case .removexattr: .removexattr
        }
    }

    // MARK: Encoding

    /// The bytes `encodePayload` writes.
    public var encodedPayloadBytes: Int {
        switch self {
        case let .create(a), let .mkdir(a), let .mknod(a): CreateArguments.fixedBytes + a.name.count
        case let .symlink(a): SymlinkArguments.fixedBytes + a.name.count + a.target.count
        case let .link(a): LinkArguments.fixedBytes + a.name.count
        case let .unlink(a), let .rmdir(a): RemoveArguments.fixedBytes + a.name.count
        case let .rename(a): RenameArguments.fixedBytes + a.oldName.count + a.newName.count
        case let .write(a): WriteArguments.fixedBytes + a.inline.count
        case .truncate: TruncateArguments.fixedBytes
        case .fallocate: FallocateArguments.fixedBytes
        case .setattr: SetattrArguments.fixedBytes
        case let .setxattr(a): SetxattrArguments.fixedBytes + a.name.count + a.value.count
        case let .removexattr(a): RemoveXattrArguments.fixedBytes + a.name.count
        }
    }

    /// Writes the payload at the start of `buffer` (at least `encodedPayloadBytes` long) and
    /// returns the bytes written. Allocates nothing. Requires every name and target to be at
    /// most 65535 bytes (their u16 length fields); checks no other rule: see `validate`.
    @discardableResult
    public func encodePayload(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let total = encodedPayloadBytes
        precondition(buffer.count >= total, "payload buffer of \(buffer.count) bytes, \(total) needed")
        var writer = FieldWriter(UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< total]))
        switch self {
        case let .create(a), let .mkdir(a), let .mknod(a):
            writer.put(a.parent)
            writer.put(a.inode)
            writer.put(a.rdev)
            writer.put(time: a.time)
            writer.put(a.mode)
            writer.put(a.uid)
            writer.put(a.gid)
            writer.put(short: a.name)
        case let .symlink(a):
            writer.put(a.parent)
            writer.put(a.inode)
            writer.put(time: a.time)
            writer.put(a.uid)
            writer.put(a.gid)
            writer.put(short: a.name)
            writer.put(short: a.target)
        case let .link(a):
            writer.put(a.parent)
            writer.put(a.inode)
            writer.put(time: a.time)
            writer.put(short: a.name)
        case let .unlink(a), let .rmdir(a):
            writer.put(a.parent)
            writer.put(a.inode)
            writer.put(time: a.time)
            writer.put(short: a.name)
        case let .rename(a):
            writer.put(a.oldParent)
            writer.put(a.newParent)
            writer.put(a.source)
            writer.put(a.replaced)
            writer.put(time: a.time)
            writer.put(a.flags.rawValue)
            writer.put(short: a.oldName)
            writer.put(short: a.newName)
        case let .write(a):
            writer.put(a.inode)
            writer.put(a.offset)
            writer.put(time: a.time)
            writer.put(a.length)
            writer.put(long: a.inline)
        case let .truncate(a):
            writer.put(a.inode)
            writer.put(a.size)
            writer.put(time: a.time)
        case let .fallocate(a):
            writer.put(a.inode)
            writer.put(a.offset)
            writer.put(a.length)
            writer.put(time: a.time)
            writer.put(a.mode.rawValue)
        case let .setattr(a):
            writer.put(a.inode)
            writer.put(time: a.atime)
            writer.put(time: a.mtime)
            writer.put(time: a.ctime)
            writer.put(a.valid.rawValue)
            writer.put(a.mode)
            writer.put(a.uid)
            writer.put(a.gid)
        case let .setxattr(a):
            writer.put(a.inode)
            writer.put(time: a.time)
            writer.put(a.flags.rawValue)
            writer.put(short: a.name)
            writer.put(long: a.value)
        case let .removexattr(a):
            writer.put(a.inode)
            writer.put(time: a.time)
            writer.put(short: a.name)
        }
        assert(writer.offset == total)
        return total
    }

    /// The payload as a new array.
    public func encodePayload() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: encodedPayloadBytes)
        bytes.withUnsafeMutableBytes { _ = encodePayload(into: $0) }
        return bytes
    }

    // MARK: Decoding

    /// Decodes the payload of a record of `type` whose header announced `dataBytes` of bulk
    /// data, and checks every rule (`validate`). The payload must be exactly one operation's
    /// encoding: a short one is `truncated`, one with bytes after the last field is refused.
    /// A `wrap` record carries no operation. Never traps on any input.
    public static func decode(type: LogRecordType, payload: UnsafeRawBufferPointer,
                              dataBytes: UInt32) throws(FormatError) -> LogOperation {
        var reader = PayloadReader(bytes: payload, type: type)
        let operation: LogOperation
        switch type {
        case .wrap:
            throw Rules(type: type).invalid("type", "a wrap record carries no operation")
        case .create, .mkdir, .mknod:
            let parent: UInt64 = try reader.integer()
            let inode: UInt64 = try reader.integer()
            let rdev: UInt64 = try reader.integer()
            let time = try reader.time("time")
            let mode: UInt32 = try reader.integer()
            let uid: UInt32 = try reader.integer()
            let gid: UInt32 = try reader.integer()
            let name = try reader.short()
            let arguments = CreateArguments(parent: parent, inode: inode, mode: mode, uid: uid, gid: gid, rdev: rdev,
                                            time: time, name: name)
            operation = type == .create ? .create(arguments) : type == .mkdir ? .mkdir(arguments) : .mknod(arguments)
        case .symlink:
            let parent: UInt64 = try reader.integer()
            let inode: UInt64 = try reader.integer()
            let time = try reader.time("time")
            let uid: UInt32 = try reader.integer()
            let gid: UInt32 = try reader.integer()
            let name = try reader.short()
            let target = try reader.short()
            operation = .symlink(SymlinkArguments(parent: parent, inode: inode, uid: uid, gid: gid, time: time,
                                                  name: name, target: target))
        case .link:
            let parent: UInt64 = try reader.integer()
            let inode: UInt64 = try reader.integer()
            let time = try reader.time("time")
            let name = try reader.short()
            operation = .link(LinkArguments(parent: parent, inode: inode, time: time, name: name))
        case .unlink, .rmdir:
            let parent: UInt64 = try reader.integer()
            let inode: UInt64 = try reader.integer()
            let time = try reader.time("time")
            let name = try reader.short()
            let arguments = RemoveArguments(parent: parent, inode: inode, time: time, name: name)
            operation = type == .unlink ? .unlink(arguments) : .rmdir(arguments)
        case .rename:
            let oldParent: UInt64 = try reader.integer()
            let newParent: UInt64 = try reader.integer()
            let source: UInt64 = try reader.integer()
            let replaced: UInt64 = try reader.integer()
            let time = try reader.time("time")
            let flags = RenameFlags(rawValue: try reader.integer())
            let oldName = try reader.short()
            let newName = try reader.short()
            operation = .rename(RenameArguments(oldParent: oldParent, oldName: oldName, newParent: newParent,
                                                newName: newName, flags: flags, source: source, replaced: replaced,
                                                time: time))
        case .write:
            let inode: UInt64 = try reader.integer()
            let offset: UInt64 = try reader.integer()
            let time = try reader.time("time")
            let length: UInt32 = try reader.integer()
            let inline = try reader.long()
            operation = .write(WriteArguments(inode: inode, offset: offset, length: length, time: time, inline: inline))
        case .truncate:
            let inode: UInt64 = try reader.integer()
            let size: UInt64 = try reader.integer()
            let time = try reader.time("time")
            operation = .truncate(TruncateArguments(inode: inode, size: size, time: time))
        case .fallocate:
            let inode: UInt64 = try reader.integer()
            let offset: UInt64 = try reader.integer()
            let length: UInt64 = try reader.integer()
            let time = try reader.time("time")
            let mode = FallocateMode(rawValue: try reader.integer())
            operation = .fallocate(FallocateArguments(inode: inode, mode: mode, offset: offset, length: length, time: time))
        case .setattr:
            let inode: UInt64 = try reader.integer()
            let atime = try reader.time("atime")
            let mtime = try reader.time("mtime")
            let ctime = try reader.time("ctime")
            let valid = SetattrMask(rawValue: try reader.integer())
            let mode: UInt32 = try reader.integer()
            let uid: UInt32 = try reader.integer()
            let gid: UInt32 = try reader.integer()
            operation = .setattr(SetattrArguments(inode: inode, valid: valid, mode: mode, uid: uid, gid: gid,
                                                  atime: atime, mtime: mtime, ctime: ctime))
        case .setxattr:
            let inode: UInt64 = try reader.integer()
            let time = try reader.time("time")
            let flags = XattrFlags(rawValue: try reader.integer())
            let name = try reader.short()
            let value = try reader.long()
            operation = .setxattr(SetxattrArguments(inode: inode, flags: flags, name: name, value: value, time: time))
        case .removexattr:
            let inode: UInt64 = try reader.integer()
            let time = try reader.time("time")
            let name = try reader.short()
            operation = .removexattr(RemoveXattrArguments(inode: inode, name: name, time: time))
        }
        try reader.finish()
        try operation.validate(dataBytes: dataBytes)
        return operation
    }

    // MARK: Rules

    /// Throws `invalidField` unless the operation, logged with `dataBytes` of bulk data, obeys
    /// every rule of docs/format.md "Operation payloads". `decode` calls this; a writer may
    /// call it before logging. Rules that need the file system's state (that a name exists,
    /// that an inode has a type, permissions, that a directory is not moved below itself) are
    /// digest's, not the format's.
    public func validate(dataBytes: UInt32) throws(FormatError) {
        let rules = Rules(type: recordType)
        if case .write = self {} else {
            try rules.require(dataBytes == 0, "dataBytes", "\(dataBytes) bytes of bulk data; only a write carries any")
        }
        switch self {
        case let .create(a), let .mkdir(a), let .mknod(a): try rules.create(a)
        case let .symlink(a):
            try rules.inode(a.parent, "parent")
            try rules.inode(a.inode, "inode")
            try rules.require(a.inode != a.parent, "inode", "the new inode is its own parent")
            try rules.owner(a.uid, "uid")
            try rules.owner(a.gid, "gid")
            try rules.time(a.time, "time")
            try rules.name(a.name, "name")
            try rules.require(!a.target.isEmpty, "target", "empty")
            try rules.require(a.target.count <= SymlinkArguments.targetBytesMax, "target",
                              "\(a.target.count) bytes exceeds \(SymlinkArguments.targetBytesMax)")
            try rules.require(!a.target.contains(0), "target", "contains NUL")
        case let .link(a):
            try rules.inode(a.parent, "parent")
            try rules.inode(a.inode, "inode")
            try rules.require(a.inode != a.parent, "inode", "a directory cannot be linked")
            try rules.time(a.time, "time")
            try rules.name(a.name, "name")
        case let .unlink(a), let .rmdir(a):
            try rules.inode(a.parent, "parent")
            try rules.inode(a.inode, "inode")
            try rules.require(a.inode != a.parent, "inode", "no name in a directory refers to the directory itself")
            try rules.time(a.time, "time")
            try rules.name(a.name, "name")
        case let .rename(a): try rules.rename(a)
        case let .write(a):
            try rules.inode(a.inode, "inode")
            try rules.time(a.time, "time")
            try rules.require(a.length > 0, "length", "a write of 0 bytes changes nothing and is not logged")
            try rules.range(offset: a.offset, length: UInt64(a.length))
            if a.inline.isEmpty {
                try rules.require(dataBytes == a.length, "dataBytes",
                                  "\(dataBytes) bytes of bulk data for a write of \(a.length) without inline bytes")
            } else {
                try rules.require(a.inline.count <= WriteArguments.inlineBytesMax, "inline",
                                  "\(a.inline.count) bytes exceeds \(WriteArguments.inlineBytesMax)")
                try rules.require(a.inline.count == Int(a.length), "inline",
                                  "\(a.inline.count) bytes for a write of \(a.length)")
                try rules.require(dataBytes == 0, "dataBytes", "both inline bytes and \(dataBytes) bytes of bulk data")
            }
        case let .truncate(a):
            try rules.inode(a.inode, "inode")
            try rules.require(a.size <= Self.fileBytesMax, "size", "\(a.size) exceeds the largest file size")
            try rules.time(a.time, "time")
        case let .fallocate(a):
            try rules.inode(a.inode, "inode")
            try rules.require(a.mode.isSubset(of: .known), "mode", "unknown bits \(hex(a.mode.subtracting(.known).rawValue))")
            try rules.require(!a.mode.contains(.punchHole) || a.mode.contains(.keepSize), "mode",
                              "punchHole requires keepSize")
            try rules.require(!a.mode.isSuperset(of: [.punchHole, .zeroRange]), "mode",
                              "punchHole and zeroRange are exclusive")
            try rules.require(a.length > 0, "length", "0")
            try rules.range(offset: a.offset, length: a.length)
            try rules.time(a.time, "time")
        case let .setattr(a): try rules.setattr(a)
        case let .setxattr(a):
            try rules.inode(a.inode, "inode")
            try rules.require(a.flags.isSubset(of: .known), "flags", "unknown bits \(hex(a.flags.subtracting(.known).rawValue))")
            try rules.require(a.flags != .known, "flags", "create and replace are exclusive")
            try rules.xattrName(a.name)
            try rules.require(a.value.count <= SetxattrArguments.valueBytesMax, "value",
                              "\(a.value.count) bytes exceeds \(SetxattrArguments.valueBytesMax)")
            try rules.time(a.time, "time")
        case let .removexattr(a):
            try rules.inode(a.inode, "inode")
            try rules.xattrName(a.name)
            try rules.time(a.time, "time")
        }
    }
}

/// st_mode file types a log record may create, besides `Inode`'s.
private enum FileType {
    static let fifo: UInt32 = 0o010000
    static let characterDevice: UInt32 = 0o020000
    static let blockDevice: UInt32 = 0o060000
    static let regular: UInt32 = Inode.typeRegular
    static let socket: UInt32 = 0o140000
}

extension LogRecordType {
    /// The structure name errors give: "log record create".
    fileprivate var structureName: String { "log record \(self)" }
}

/// The rules of one record type; every failure is `invalidField` of "log record <type>".
private struct Rules {
    let type: LogRecordType

    func invalid(_ field: String, _ reason: String) -> FormatError {
        .invalidField(structure: type.structureName, field: field, reason: reason)
    }

    func require(_ condition: Bool, _ field: String, _ reason: @autoclosure () -> String) throws(FormatError) {
        if !condition { throw invalid(field, reason()) }
    }

    func inode(_ number: UInt64, _ field: String) throws(FormatError) {
        try require(number != 0, field, "inode 0")
    }

    /// (uid_t)-1 is no owner: chown's "leave unchanged", never stored.
    func owner(_ id: UInt32, _ field: String) throws(FormatError) {
        try require(id != UInt32.max, field, "\(id) is not an id")
    }

    func time(_ time: Timestamp, _ field: String) throws(FormatError) {
        try require(time.nanoseconds < 1_000_000_000, field, "\(time.nanoseconds) ns")
    }

    func name(_ name: [UInt8], _ field: String) throws(FormatError) {
        if let problem = DirectoryEntry.nameProblem(name) { throw invalid(field, problem) }
    }

    func xattrName(_ name: [UInt8]) throws(FormatError) {
        try require(!name.isEmpty, "name", "empty name")
        try require(name.count <= SetxattrArguments.nameBytesMax, "name",
                    "name of \(name.count) bytes exceeds \(SetxattrArguments.nameBytesMax)")
        try require(!name.contains(0), "name", "name contains NUL")
    }

    /// `offset` + `length` neither overflows nor passes the largest file size.
    func range(offset: UInt64, length: UInt64) throws(FormatError) {
        let (end, overflow) = offset.addingReportingOverflow(length)
        try require(!overflow && end <= LogOperation.fileBytesMax, "offset",
                    "\(offset) + \(length) passes the largest file size")
    }

    /// create makes regular files, mkdir directories, mknod FIFOs, sockets, devices and (as
    /// Linux allows) regular files.
    func create(_ a: CreateArguments) throws(FormatError) {
        try inode(a.parent, "parent")
        try inode(a.inode, "inode")
        try require(a.inode != a.parent, "inode", "the new inode is its own parent")
        let fileType = a.mode & Inode.typeMask
        try require(a.mode & ~(Inode.typeMask | 0o7777) == 0, "mode", "bits beyond st_mode in \(hex(a.mode))")
        let device = fileType == FileType.characterDevice || fileType == FileType.blockDevice
        let typeAgrees = switch type {
        case .create: fileType == FileType.regular
        case .mkdir: fileType == Inode.typeDirectory
        default: device || fileType == FileType.fifo || fileType == FileType.socket || fileType == FileType.regular
        }
        try require(typeAgrees, "mode", "file type \(String(fileType, radix: 8)) for \(type)")
        try require(device || a.rdev == 0, "rdev", "\(a.rdev) for a file that is not a device")
        try owner(a.uid, "uid")
        try owner(a.gid, "gid")
        try time(a.time, "time")
        try name(a.name, "name")
    }

    func rename(_ a: RenameArguments) throws(FormatError) {
        try require(a.flags.isSubset(of: .known), "flags", "unknown bits \(hex(a.flags.subtracting(.known).rawValue))")
        try require(a.flags != .known, "flags", "noReplace and exchange are exclusive")
        try inode(a.oldParent, "oldParent")
        try inode(a.newParent, "newParent")
        try inode(a.source, "source")
        try name(a.oldName, "oldName")
        try name(a.newName, "newName")
        try require(a.oldParent != a.newParent || a.oldName != a.newName, "newName",
                    "the same name as oldName: nothing to rename")
        try require(a.source != a.oldParent && a.source != a.newParent, "source", "a directory moved into itself")
        if a.replaced != 0 {
            try require(a.replaced != a.source, "replaced",
                        "another name of the source inode: the rename does nothing and is not logged")
            try require(a.replaced != a.oldParent && a.replaced != a.newParent, "replaced",
                        "a parent directory of the names")
        }
        try require(!a.flags.contains(.noReplace) || a.replaced == 0, "replaced",
                    "inode \(a.replaced) with noReplace")
        try require(!a.flags.contains(.exchange) || a.replaced != 0, "replaced", "0 with exchange: nothing to swap with")
        try time(a.time, "time")
    }

    func setattr(_ a: SetattrArguments) throws(FormatError) {
        try inode(a.inode, "inode")
        try require(a.valid.isSubset(of: .known), "valid", "unknown bits \(hex(a.valid.subtracting(.known).rawValue))")
        // A field the mask does not name is zero, so that the encoding is canonical.
        if a.valid.contains(.mode) {
            try require(a.mode <= 0o7777, "mode", "\(String(a.mode, radix: 8)) is more than permission bits")
        } else {
            try require(a.mode == 0, "mode", "\(a.mode) but not set")
        }
        if a.valid.contains(.uid) { try owner(a.uid, "uid") } else { try require(a.uid == 0, "uid", "\(a.uid) but not set") }
        if a.valid.contains(.gid) { try owner(a.gid, "gid") } else { try require(a.gid == 0, "gid", "\(a.gid) but not set") }
        let zero = Timestamp(seconds: 0)
        try require(a.valid.contains(.atime) || a.atime == zero, "atime", "not zero but not set")
        try require(a.valid.contains(.mtime) || a.mtime == zero, "mtime", "not zero but not set")
        try time(a.atime, "atime")
        try time(a.mtime, "mtime")
        try time(a.ctime, "ctime")
    }
}

/// Reads a payload's fields in order; every read is bounds-checked and throws `truncated`
/// rather than trapping.
private struct PayloadReader {
    let bytes: UnsafeRawBufferPointer
    let type: LogRecordType
    var offset = 0

    init(bytes: UnsafeRawBufferPointer, type: LogRecordType) {
        self.bytes = bytes
        self.type = type
    }

    private func need(_ count: Int) throws(FormatError) {
        if count > bytes.count - offset {
            throw .truncated(structure: type.structureName, needed: offset + count, available: bytes.count)
        }
    }

    mutating func integer<T: FixedWidthInteger>(_: T.Type = T.self) throws(FormatError) -> T {
        try need(MemoryLayout<T>.size)
        let value = T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += MemoryLayout<T>.size
        return value
    }

    /// Seconds (i64), nanoseconds (u32), reserved (u32, zero).
    mutating func time(_ field: String) throws(FormatError) -> Timestamp {
        let seconds: Int64 = try integer()
        let nanoseconds: UInt32 = try integer()
        let reserved: UInt32 = try integer()
        guard reserved == 0 else { throw Rules(type: type).invalid(field, "reserved bytes \(hex(reserved)), not 0") }
        return Timestamp(seconds: seconds, nanoseconds: nanoseconds)
    }

    private mutating func raw(_ count: Int) throws(FormatError) -> [UInt8] {
        try need(count)
        let result = Array(UnsafeRawBufferPointer(rebasing: bytes[offset ..< offset + count]))
        offset += count
        return result
    }

    /// A byte string preceded by a u16 length.
    mutating func short() throws(FormatError) -> [UInt8] { try raw(Int(try integer(UInt16.self))) }

    /// A byte string preceded by a u32 length.
    mutating func long() throws(FormatError) -> [UInt8] { try raw(Int(try integer(UInt32.self))) }

    /// Nothing may follow the last field.
    func finish() throws(FormatError) {
        if offset != bytes.count {
            throw Rules(type: type).invalid("payload length", "\(bytes.count - offset) bytes after the last field")
        }
    }
}

extension FieldWriter {
    fileprivate mutating func put(time: Timestamp) {
        put(time.seconds)
        put(time.nanoseconds)
        put(UInt32(0))
    }

    /// A byte string preceded by a u16 length.
    fileprivate mutating func put(short bytes: [UInt8]) {
        precondition(bytes.count <= Int(UInt16.max), "byte string of \(bytes.count) bytes for a u16 length")
        put(UInt16(bytes.count))
        put(raw: bytes)
    }

    /// A byte string preceded by a u32 length.
    fileprivate mutating func put(long bytes: [UInt8]) {
        precondition(bytes.count <= Int(UInt32.max), "byte string of \(bytes.count) bytes for a u32 length")
        put(UInt32(bytes.count))
        put(raw: bytes)
    }

    private mutating func put(raw bytes: [UInt8]) {
        precondition(offset + bytes.count <= buffer.count, "field beyond the structure")
        if !bytes.isEmpty {
            bytes.withUnsafeBytes { source in
                UnsafeMutableRawBufferPointer(rebasing: buffer[offset ..< offset + source.count]).copyMemory(from: source)
            }
        }
        skip(bytes.count)
    }
}
