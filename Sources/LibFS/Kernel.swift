// The boundary between LibFS and KernFS: everything a `FileSystem` asks of the kernel
// role. LibFS sits below KernFS, so it states what it needs as this protocol and KernFS
// implements it (today in-process, `EmbeddedKernel`; across a process with the daemon in
// issue 6). Every argument and result is a plain value, so each call can become a message.
//
// What the kernel promises:
// - Reads describe the shared area as of the last committed digest. They never include
//   records a digest has not committed; LibFS lays its own undigested operations over them
//   (`PendingState`).
// - `digest` applies a batch of the caller's log and returns the durable digest cursor;
//   every record before it is in the shared area when the call returns.
// - An inode reported open (`setOpen`) is kept, with no links, when a digest removes its
//   last name (an orphan), until `releaseOrphan`.
// - Errors are errnos; damage in the shared area is EIO (and reported by the kernel).
// - `sharedGeneration` changes whenever the shared area changes (every applied commit, by
//   anyone). A read made while it held one value describes the shared area for as long as it
//   keeps that value, so LibFS may cache reads under it (`SharedAreaCache`).

import ShaleFormat
import ShaleMedia
import SystemPackage

/// One entry of a directory in the shared area.
public struct SharedDirectoryEntry: Sendable, Equatable {
    public var name: [UInt8]
    public var inode: UInt64
    /// d_type (DT_REG = 8, DT_DIR = 4, …).
    public var type: UInt8
    /// Resumes a listing just after this entry.
    public var cookie: UInt64

    public init(name: [UInt8], inode: UInt64, type: UInt8, cookie: UInt64) {
        self.name = name
        self.inode = inode
        self.type = type
        self.cookie = cookie
    }
}

/// How far a digest has durably applied a log: every record before (`offset`, `sequence`).
public struct DigestCursor: Sendable, Equatable {
    public var offset: UInt64
    public var sequence: UInt64
    /// The digest reached the last committed record of the log.
    public var reachedEnd: Bool
    /// Records the kernel refused (reported on its side); LibFS never logs one on purpose.
    public var refused: Int

    public init(offset: UInt64, sequence: UInt64, reachedEnd: Bool, refused: Int) {
        self.offset = offset
        self.sequence = sequence
        self.reachedEnd = reachedEnd
        self.refused = refused
    }
}

/// statfs totals.
public struct FileSystemStatistics: Sendable, Equatable {
    public var blockBytes: UInt64
    public var totalBlocks: UInt64
    public var freeBlocks: UInt64
    public var totalInodes: UInt64
    public var freeInodes: UInt64
    public var nameBytesMax: UInt64

    public init(blockBytes: UInt64, totalBlocks: UInt64, freeBlocks: UInt64, totalInodes: UInt64, freeInodes: UInt64,
                nameBytesMax: UInt64) {
        self.blockBytes = blockBytes
        self.totalBlocks = totalBlocks
        self.freeBlocks = freeBlocks
        self.totalInodes = totalInodes
        self.freeInodes = freeInodes
        self.nameBytesMax = nameBytesMax
    }
}

/// What LibFS needs from the kernel role. Implementations are thread-safe.
public protocol FileSystemKernel<NVM>: AnyObject, Sendable {
    associatedtype NVM: PersistentMemory

    /// The NVM region holding the log regions (and, read-only for LibFS, the shared area).
    var nvm: NVM { get }
    var rootInode: UInt64 { get }
    /// Changes whenever the shared area changes (see the header).
    var sharedGeneration: UInt64 { get }

    /// A private log region for one LibFS instance.
    func attachLog(ownerPID: UInt32, ownerUID: UInt32) throws(Errno) -> LogGrant
    /// The owner is done with its region: everything in it has been digested.
    func detachLog(region: Int) throws(Errno)
    /// The client is gone for good (after `detachLog`): an embedded kernel lets go of its
    /// volume (its lock), so that the volume can be opened again at once.
    func shutdown()
    /// Digests one batch of `region` from its digest cursor.
    func digest(region: Int) throws(Errno) -> DigestCursor

    /// Inode numbers reserved for the caller's creates.
    func reserveInodeNumbers(_ count: Int) throws(Errno) -> [UInt64]
    /// Reserved numbers that were never used.
    func releaseInodeNumbers(_ numbers: [UInt64])

    func inode(_ number: UInt64) throws(Errno) -> ShaleFormat.Inode?
    /// The entry `name` of directory `directory`; nil when absent (or the directory is not in
    /// the shared area yet).
    func lookup(directory: UInt64, name: [UInt8]) throws(Errno) -> SharedDirectoryEntry?
    /// Up to `limit` entries after `cookie` (0 = the start); `next` is nil at the end.
    func list(directory: UInt64, after cookie: UInt64, limit: Int) throws(Errno) -> (entries: [SharedDirectoryEntry], next: UInt64?)
    /// Fills `buffer` with the file's bytes at `offset` as the shared area holds them: zeros
    /// for holes and beyond the shared size.
    func read(inode: UInt64, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(Errno)
    /// Logical block ranges holding data (holes excluded), in order.
    func dataBlocks(inode: UInt64) throws(Errno) -> [Range<UInt64>]
    func symlinkTarget(inode: UInt64) throws(Errno) -> [UInt8]
    func extendedAttributes(inode: UInt64) throws(Errno) -> [(name: [UInt8], value: [UInt8])]

    /// Whether LibFS has the inode open (an orphan is kept while it is).
    func setOpen(_ inode: UInt64, _ open: Bool)
    /// Frees an inode whose last link was removed while it was open.
    func releaseOrphan(_ inode: UInt64) throws(Errno)

    func statistics() -> FileSystemStatistics
}
