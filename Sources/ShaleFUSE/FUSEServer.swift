// ShaleFUSE: the FUSE front end (layer 6, docs/architecture.md "Front ends: the FUSE mount").
//
// Where it sits: on top of LibFS — a `FileSystem` whose kernel role is KernFS in this same
// process — and libfuse3's low-level API (CFuse). Offers `FUSEServer` (one method per
// low-level operation) and `FUSESession` (mount, the multi-threaded loop, unmount). The mount
// is a LibFS client like any other: a request is answered only after LibFS returned, so every
// answered request is already durable.
//
// The reply discipline. libfuse turns a request that is never answered into a hang of the
// calling process, and one answered twice into a crash. So no handler calls `fuse_reply_*`:
// each returns a `Reply` (or throws an errno), and `answer` sends exactly one reply for it.
// Handlers use typed throws (`Errno`), so nothing else can escape. A reply the kernel refuses
// (the request was interrupted) undoes what the reply would have handed over: a lookup is not
// counted, a handle is closed.
//
// Node ids are inode numbers (the root is inode 1 on every Shale volume, FUSE's root id), and
// the generation is the inode's birth time in nanoseconds, so a reused inode number is a new
// (ino, generation) pair for the kernel.

import CFuse
import KernFS
import LibFS
import ShaleFormat
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// What one request is answered with. `answer` sends it: exactly one reply per request.
enum Reply {
    /// fuse_reply_err(0): success without data.
    case ok
    /// fuse_reply_entry: counts one lookup of the inode.
    case entry(FileStatus)
    case attributes(FileStatus)
    /// fuse_reply_create: counts one lookup; the handle goes to the kernel.
    case created(FileStatus, FileHandle, UnsafeMutablePointer<fuse_file_info>)
    /// fuse_reply_open: the handle goes to the kernel.
    case opened(FileHandle, UnsafeMutablePointer<fuse_file_info>)
    case bytes([UInt8])
    /// fuse_reply_buf of readdirplus entries: counts one lookup of each of `lookups`.
    case directoryPlus([UInt8], lookups: [UInt64])
    case written(Int)
    case link([UInt8])
    case statistics(FileSystemStatistics)
    /// fuse_reply_xattr: the size a getxattr or listxattr probe (size 0) asked for.
    case attributeSize(Int)
    case offset(UInt64)
    /// forget and batch_forget take no reply.
    case none
}

/// Attribute and entry timeouts given to the kernel (seconds).
public struct FUSETimeouts: Sendable, Equatable {
    public var attributes: Double
    public var entries: Double

    public init(attributes: Double, entries: Double) {
        self.attributes = attributes
        self.entries = entries
    }

    /// 0 and 0: the kernel asks again for every stat and every path step (docs/architecture.md
    /// says why: correctness first).
    public static let none = FUSETimeouts(attributes: 0, entries: 0)
}

public final class FUSEServer: @unchecked Sendable {
    public let fileSystem: EmbeddedFileSystem
    public let timeouts: FUSETimeouts
    /// Lookups the kernel holds per inode (entry and create replies add one each; forget
    /// takes them away). The kernel may still name an inode while it holds one, so the
    /// first lookup of an inode holds it in LibFS (`FileSystem.hold`: an unlinked inode
    /// stays an orphan, readable) and the forget of the last lets go (`releaseHold`).
    private var lookups: [UInt64: UInt64] = [:]
    /// Held across LibFS's hold and releaseHold only (short calls that never wait for a
    /// digest), so that they reach LibFS in the order the counts changed; LibFS never calls
    /// back into the server, so the lock order is always this one, then LibFS's.
    private let lookupLock = PthreadMutex()
    /// The INIT flags added to libfuse's reply (InitReply.swift).
    let initReply = InitReplyFlags()

    /// The flags the kernel was told at FUSE_INIT (0 before the INIT reply went out).
    public var initFlags: UInt32 { initReply.repliedFlags.load(ordering: .relaxed) }

    public init(fileSystem: EmbeddedFileSystem, timeouts: FUSETimeouts = .none) {
        self.fileSystem = fileSystem
        self.timeouts = timeouts
    }

    /// Lookups the kernel holds on `inode` (tests, status).
    public func lookupCount(_ inode: UInt64) -> UInt64 { lookupLock.run { lookups[inode] ?? 0 } }

    /// Inodes the kernel holds at least one lookup of.
    public var heldInodes: Int { lookupLock.run { lookups.count } }

    // MARK: - Answering

    /// Runs `body` for request `req` with its caller's credentials and sends exactly one reply:
    /// what the body returned, or the errno it threw.
    static func answer(_ req: fuse_req_t?, _ body: (FUSEServer, Credentials) throws(Errno) -> Reply) {
        guard let req else { return }
        let server = Unmanaged<FUSEServer>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
        let reply: Reply
        do {
            reply = try body(server, caller(of: req))
        } catch {
            _ = fuse_reply_err(req, error.rawValue)
            return
        }
        server.send(reply, to: req)
    }

    private func send(_ reply: Reply, to req: fuse_req_t) {
        switch reply {
        case .ok:
            _ = fuse_reply_err(req, 0)
        case let .entry(status):
            // Held before the kernel can name it (another request might unlink it at once).
            var entry = entryParameters(status)
            remember(status.inode)
            if fuse_reply_entry(req, &entry) != 0 { forget(status.inode, 1) }
        case let .attributes(status):
            var attributes = Self.stat(status)
            _ = fuse_reply_attr(req, &attributes, timeouts.attributes)
        case let .created(status, handle, info):
            var entry = entryParameters(status)
            info.pointee.fh = Self.fh(handle)
            remember(status.inode)
            if fuse_reply_create(req, &entry, info) != 0 {
                forget(status.inode, 1)
                try? fileSystem.close(handle)
            }
        case let .opened(handle, info):
            info.pointee.fh = Self.fh(handle)
            if fuse_reply_open(req, info) != 0 { try? fileSystem.close(handle) }
        case let .bytes(bytes):
            _ = bytes.withUnsafeBytes { fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
        case let .directoryPlus(bytes, lookups):
            for inode in lookups { remember(inode) }
            let sent = bytes.withUnsafeBytes { fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
            if sent != 0 { for inode in lookups { forget(inode, 1) } }
        case let .written(count):
            _ = fuse_reply_write(req, count)
        case let .link(target):
            _ = (target + [0]).withUnsafeBytes { fuse_reply_readlink(req, $0.baseAddress!.assumingMemoryBound(to: CChar.self)) }
        case let .statistics(statistics):
            var result = statistics.cStatvfs
            _ = fuse_reply_statfs(req, &result)
        case let .attributeSize(size):
            _ = fuse_reply_xattr(req, size)
        case let .offset(offset):
            _ = fuse_reply_lseek(req, off_t(offset))
        case .none:
            fuse_reply_none(req)
        }
    }

    private func remember(_ inode: UInt64) {
        lookupLock.run {
            let before = lookups[inode] ?? 0
            lookups[inode] = before + 1
            // The root is never freed; every other inode is held while the kernel names it.
            if before == 0, inode != UInt64(FUSE_ROOT_ID) { try? fileSystem.hold(inode: inode) }
        }
    }

    func forget(_ inode: UInt64, _ count: UInt64) {
        lookupLock.run {
            guard let before = lookups[inode] else { return }
            let left = before - min(before, count)
            lookups[inode] = left == 0 ? nil : left
            if left == 0, inode != UInt64(FUSE_ROOT_ID) { try? fileSystem.releaseHold(inode: inode) }
        }
    }


    /// The caller of a request: its uid and gid, and (for anyone but root, whose checks do
    /// not look at groups) its supplementary groups. The umask is 0: the kernel has applied
    /// the caller's umask to the mode already (Shale does not ask for FUSE_CAP_DONT_MASK).
    static func caller(of req: fuse_req_t) -> Credentials {
        guard let context = fuse_req_ctx(req)?.pointee else { return Credentials(uid: 0, gid: 0, umask: 0) }
        var groups: [UInt32] = []
        if context.uid != 0 {
            var buffer = [gid_t](repeating: 0, count: 64)
            var count = fuse_req_getgroups(req, Int32(buffer.count), &buffer)
            if count > Int32(buffer.count) {
                buffer = [gid_t](repeating: 0, count: Int(count))
                count = fuse_req_getgroups(req, Int32(buffer.count), &buffer)
            }
            if count > 0 { groups = Array(buffer.prefix(Int(min(count, Int32(buffer.count))))) }
        }
        return Credentials(uid: context.uid, gid: context.gid, groups: groups, umask: 0)
    }

    // MARK: - Conversions

    static func fh(_ handle: FileHandle) -> UInt64 { UInt64(UInt32(bitPattern: handle.number)) }

    static func handle(_ info: UnsafeMutablePointer<fuse_file_info>?) throws(Errno) -> FileHandle {
        guard let info, info.pointee.fh <= UInt64(Int32.max) else { throw .badFileDescriptor }
        return FileHandle(number: Int32(info.pointee.fh))
    }

    static func bytes(_ pointer: UnsafePointer<CChar>?) throws(Errno) -> [UInt8] {
        guard let pointer else { throw .invalidArgument }
        return Array(UnsafeRawBufferPointer(start: pointer, count: strlen(pointer)))
    }

    /// The generation the kernel pairs with the inode number: the birth time in nanoseconds
    /// (unique per life of a number; Shale's on-media generation is not maintained yet).
    static func generation(_ status: FileStatus) -> UInt64 {
        UInt64(bitPattern: status.btime.seconds) &* 1_000_000_000 &+ UInt64(status.btime.nanoseconds)
    }

    static func stat(_ status: FileStatus) -> Glibc.stat { status.cStat }

    func entryParameters(_ status: FileStatus) -> fuse_entry_param {
        var entry = fuse_entry_param()
        entry.ino = status.inode
        entry.generation = Self.generation(status)
        entry.attr = Self.stat(status)
        entry.attr_timeout = timeouts.attributes
        entry.entry_timeout = timeouts.entries
        return entry
    }

    static func time(_ value: Glibc.timespec) -> Timestamp {
        Timestamp(seconds: Int64(value.tv_sec), nanoseconds: UInt32(clamping: value.tv_nsec))
    }

    /// FUSE's SETATTR fields as LibFS's `AttributeChanges`.
    static func changes(_ attributes: Glibc.stat, _ toSet: Int32) -> AttributeChanges {
        func has(_ flag: Int32) -> Bool { toSet & flag != 0 }
        var changes = AttributeChanges()
        if has(FUSE_SET_ATTR_MODE) { changes.mode = attributes.st_mode & 0o7777 }
        if has(FUSE_SET_ATTR_UID) { changes.uid = attributes.st_uid }
        if has(FUSE_SET_ATTR_GID) { changes.gid = attributes.st_gid }
        if has(FUSE_SET_ATTR_SIZE) { changes.size = UInt64(clamping: attributes.st_size) }
        if has(FUSE_SET_ATTR_ATIME_NOW) {
            changes.atime = .now
        } else if has(FUSE_SET_ATTR_ATIME) {
            changes.atime = .set(time(attributes.st_atim))
        }
        if has(FUSE_SET_ATTR_MTIME_NOW) {
            changes.mtime = .now
        } else if has(FUSE_SET_ATTR_MTIME) {
            changes.mtime = .set(time(attributes.st_mtim))
        }
        // truncate(2) comes with "mtime now": `FileSystem.setattr` folds that into the
        // truncate record itself.
        return changes
    }
}
