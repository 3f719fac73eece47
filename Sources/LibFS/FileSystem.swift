// `FileSystem`: the POSIX-shaped API an application links (docs/architecture.md "LibFS").
//
// Where it sits: on top of the process's `OperationLog` and a `FileSystemKernel` (the kernel
// role: KernFS in-process today, the daemon later). Offers open/read/write/stat/rename/…
// with the errnos a Linux file system gives and real permission checks.
//
// How a mutating call works, under one lock (`monitor`):
//   1. wait until the log has room for the record (the background digest frees space);
//   2. resolve paths and check everything against the current view (shared area + pending
//      state), so that a record the kernel would refuse is never logged;
//   3. append the record — its fence is the call's COMMIT POINT: from here on a crash keeps
//      the call whole (recovery digests it); before it, the call never happened;
//   4. lay the call's effect over the view (`PendingState`), stamped with its sequence.
// Reads combine the kernel's view of the shared area with the pending state.
//
// The background digest (a thread) starts when the log is half full and runs until it is a
// quarter full; after each batch it prunes the pending state behind the durable digest
// cursor and lets the log reuse that space. Writers wait only when the log has no room.

import ShaleFormat
import ShaleMedia
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

private typealias Inode = ShaleFormat.Inode

final class OpenFile {
    let inode: UInt64
    let flags: OpenFlags
    var offset: UInt64 = 0
    let isDirectory: Bool

    init(inode: UInt64, flags: OpenFlags, isDirectory: Bool) {
        self.inode = inode
        self.flags = flags
        self.isDirectory = isDirectory
    }
}

public final class FileSystem<Kernel: FileSystemKernel>: @unchecked Sendable {
    public typealias NVM = Kernel.NVM

    /// Largest write one call takes (a longer one returns a short count, as POSIX allows);
    /// each call is one record, so it is applied whole or not at all.
    public let writeBytesMax: Int
    /// Largest file size (EFBIG beyond).
    public static var fileBytesMax: UInt64 { 1 << 50 }
    /// Hard links per inode (EMLINK beyond), as ext4.
    public static var linkCountMax: UInt32 { 65000 }
    /// Symlinks followed in one path resolution (ELOOP beyond), as Linux.
    public static var symlinkHopsMax: Int { 40 }
    public static var pathBytesMax: Int { 4096 }
    public static var symlinkTargetBytesMax: Int { 4095 }
    /// Extended attributes of one inode, as their serialized set (docs/format.md).
    public static var xattrBytesMax: Int { XattrBlock.setBytesMax }

    public let kernel: Kernel
    /// The process's credentials: those of every call that names none (`as:`).
    public var credentials: Credentials
    /// The credentials of the call in progress, set under the lock when each call begins
    /// (its `as:` argument, or `credentials`): every permission check uses these. A front end
    /// serving many processes (FUSE) passes each request's caller.
    private var caller: Credentials
    let monitor = Monitor()
    let log: OperationLog<NVM>
    public let grant: LogGrant
    var pending = PendingState()
    /// Reads of the shared area, kept while the kernel's generation stays the same.
    private var sharedCache = SharedAreaCache()
    /// Open handles by number (`fileKey`).
    private var files = NumberTable<OpenFile>()
    private var openCounts: [UInt64: Int] = [:]
    /// Open inodes the kernel was told about (`setOpen`): only those that lost a link while
    /// open, so that opening and closing an ordinary file never waits on the kernel.
    private var announcedOpen: Set<UInt64> = []
    /// Orphans whose last reference went (`releaseHold`) while records about them may still
    /// be undigested: freed once the digest passes `sequence` (`absorb`).
    private var dyingOrphans: [(inode: UInt64, sequence: UInt64)] = []
    private var nextDescriptor: Int32 = 3
    private var spareInodeNumbers: [UInt64] = []
    private var sharedFreeBlocks: UInt64 = 0
    /// Blocks kept back for metadata the estimate does not see (directory growth, tree nodes).
    private var reservedBlocks: UInt64 = 0

    // The background digest.
    private let digestThresholdBytes: UInt64
    private let digestLowWaterBytes: UInt64
    private var digestRequested = false
    private var stopping = false
    private var digesterRunning = false
    private var digestFailure: Errno?
    private var closed = false
    /// Records the kernel refused (none, unless LibFS and KernFS disagree: a bug).
    public private(set) var refusedRecords = 0
    /// Digest batches run (background and foreground), for tests and status.
    public private(set) var digestBatches = 0

    /// Opens the file system over `kernel` with a fresh log region. `background` starts the
    /// digest thread (tests may drive digests by hand).
    public init(kernel: Kernel, credentials: Credentials = .current, background: Bool = true) throws(Errno) {
        self.kernel = kernel
        self.credentials = credentials
        caller = credentials
        grant = try kernel.attachLog(ownerPID: UInt32(getpid()), ownerUID: credentials.uid)
        log = OperationLog(nvm: kernel.nvm, grant: grant)
        writeBytesMax = Int(min(UInt64(1 << 20), grant.regionBytes / 8)) / Format.blockBytes * Format.blockBytes
        digestThresholdBytes = grant.regionBytes / 2
        digestLowWaterBytes = grant.regionBytes / 4
        let statistics = kernel.statistics()
        sharedFreeBlocks = statistics.freeBlocks
        reservedBlocks = min(statistics.totalBlocks / 100 + 16, statistics.totalBlocks / 4)
        if background {
            digesterRunning = true
            startThread { [self] in runDigester() }
        }
    }

    /// Digests everything, stops the background digest and gives the log region back.
    /// Open handles are closed.
    public func close() throws(Errno) {
        try locked { () throws(Errno) in
            guard !closed else { return }
            stopping = true
            monitor.broadcast()
            while digesterRunning { monitor.wait() }
            var open: [UInt64] = []
            files.forEach { _, file in open.append(file.inode) }
            files.removeAll()
            for number in open { try dropOpen(number) }
            // What a front end still holds (the kernel forgets nothing at unmount) goes too;
            // the digest below frees the orphans among it (`absorb`).
            for number in Array(openCounts.keys) {
                openCounts[number] = 1
                try dropOpen(number, deferred: true)
            }
            try digestToEnd()
            freeDyingOrphans()
            try kernel.detachLog(region: grant.region)
            kernel.shutdown()
            kernel.releaseInodeNumbers(spareInodeNumbers)
            spareInodeNumbers.removeAll()
            closed = true
        }
    }

    /// Simulates the death of the process (tests, the crash harness): the background digest
    /// stops, nothing is digested or released, and the instance refuses every call. Its log
    /// stays behind for recovery, exactly as after a crash.
    public func abandon() {
        monitor.lock()
        defer { monitor.unlock() }
        guard !closed else { return }
        stopping = true
        monitor.broadcast()
        while digesterRunning { monitor.wait() }
        closed = true
    }

    // MARK: - Locking and the log

    /// Runs `body` under the lock with `who` (default: `credentials`) as the caller.
    @inline(__always)
    func locked<T>(as who: Credentials? = nil, _ body: () throws(Errno) -> T) throws(Errno) -> T {
        monitor.lock()
        defer { monitor.unlock() }
        guard !closed else { throw .badFileDescriptor }
        caller = who ?? credentials
        return try body()
    }

    /// Waits (releasing the lock) until the log can take a record of `recordBytes`.
    private func awaitLogSpace(_ recordBytes: Int) throws(Errno) {
        // Room for the record and, in the worst case, the padding of a wrap before it, and
        // for one small record more (a write or truncate by an unprivileged caller may log
        // the set-id bits it drops first: `droppingSetID`).
        let needed = 2 * UInt64(recordBytes) + UInt64(LogRecordHeader.encodedBytes) + UInt64(Self.smallRecordBytes)
        // Only a log region far smaller than mkfs makes (the format allows 64 KiB) cannot
        // hold a large record (a 64 KiB xattr value): say so instead of waiting forever.
        guard needed <= log.capacityBytes else { throw .noSpace }
        let me = caller
        while log.freeBytes < needed || undigestedRecords >= Self.undigestedRecordsMax {
            if let failure = digestFailure { throw failure }
            if digesterRunning {
                digestRequested = true
                monitor.broadcast()
                monitor.wait()
                // Other calls ran meanwhile: the file system may have closed, and the caller
                // is this call's again.
                guard !closed else { throw .badFileDescriptor }
                caller = me
            } else {
                try digestBatch()
            }
        }
        if wantsDigest, !digestRequested, digesterRunning {
            digestRequested = true
            monitor.broadcast()
        }
    }

    /// Records logged and not yet digested: the pending state holds DRAM for each (about
    /// 0.75 KiB for a create), so their number is bounded as well as their bytes.
    private var undigestedRecords: UInt64 { log.nextSequence - log.tailSequence }
    /// The background digest starts at this many undigested records (or half the log) ...
    public static var digestThresholdRecords: UInt64 { 32_768 }
    /// ... and a call waits for it past this many (~100 MiB of pending state for creates),
    /// as it waits when the log is full.
    public static var undigestedRecordsMax: UInt64 { 131_072 }

    private var wantsDigest: Bool { log.usedBytes >= digestThresholdBytes || undigestedRecords >= Self.digestThresholdRecords }

    /// Appends `operation` (the commit point of the call) and returns its sequence number.
    private func append(_ operation: LogOperation) throws(Errno) -> UInt64 {
        do {
            return try log.append(operation)
        } catch {
            // awaitLogSpace made room; only a bug gets here.
            throw .ioError
        }
    }

    private static var smallRecordBytes: Int { 1024 }

    // MARK: - Digest

    private func runDigester() {
        monitor.lock()
        // Batches in a row that moved nothing while records were waiting. One can happen when
        // the scan meets a record still being appended; many mean the log cannot be digested
        // (damage in a live log), and writers must get an error rather than wait forever.
        var stalls = 0
        while !stopping {
            guard digestFailure == nil, digestRequested || wantsDigest else {
                monitor.wait()
                continue
            }
            digestRequested = false
            monitor.unlock()
            let result: Result<DigestCursor, Errno>
            do throws(Errno) {
                result = .success(try kernel.digest(region: grant.region))
            } catch {
                result = .failure(error)
            }
            monitor.lock()
            switch result {
            case let .success(cursor):
                let before = log.tailSequence
                absorb(cursor)
                if log.tailSequence == before, log.tailSequence < log.nextSequence {
                    stalls += 1
                    if stalls > 200 {
                        digestFailure = .ioError
                        report("the log cannot be digested past record \(before); calls that need log space fail with EIO")
                    } else {
                        monitor.wait(milliseconds: 1)
                    }
                } else {
                    stalls = 0
                }
                if digestFailure == nil,
                   !cursor.reachedEnd || (log.usedBytes >= digestLowWaterBytes || undigestedRecords >= Self.digestThresholdRecords / 2)
                                            && cursor.sequence < log.nextSequence {
                    digestRequested = true
                }
            case let .failure(error):
                digestFailure = error
            }
            monitor.broadcast()
        }
        digesterRunning = false
        monitor.broadcast()
        monitor.unlock()
    }

    private func report(_ message: String) {
        var line = "shale: " + message + "\n"
        line.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }

    /// The kernel durably applied every record before `cursor`: drop what the pending state
    /// says about them and reuse their log space.
    private func absorb(_ cursor: DigestCursor) {
        digestBatches += 1
        refusedRecords += cursor.refused
        guard cursor.sequence > log.tailSequence else { return }
        pending.prune(before: cursor.sequence)
        log.reclaim(upTo: cursor.offset, sequence: cursor.sequence)
        sharedFreeBlocks = kernel.statistics().freeBlocks
        freeDyingOrphans()
    }

    /// One digest batch, with the lock held.
    private func digestBatch() throws(Errno) {
        let cursor = try kernel.digest(region: grant.region)
        absorb(cursor)
    }

    /// Digests every record logged so far (the lock held, so nothing is appended meanwhile).
    private func digestToEnd() throws(Errno) {
        while log.tailSequence < log.nextSequence {
            let before = log.tailSequence
            let cursor = try kernel.digest(region: grant.region)
            absorb(cursor)
            if cursor.reachedEnd, log.tailSequence == before, cursor.sequence <= before { break }
        }
    }

    /// Digests everything logged so far: afterwards the shared area holds every call that
    /// returned. Not needed for durability (the log is durable); for tools and tests.
    public func digest() throws(Errno) {
        try locked { () throws(Errno) in try digestToEnd() }
    }

    /// Region offset where the next record goes (tests aim damage with it).
    public var logHeadForTesting: UInt64 { monitor.withLock { log.head } }

    /// Bytes of the log in use (undigested records).
    public var logUsedBytes: UInt64 { monitor.withLock { log.usedBytes } }
    public var logCapacityBytes: UInt64 { log.capacityBytes }

    // MARK: - The combined view

    private func inode(_ number: UInt64) throws(Errno) -> Inode? {
        if let entry = pending.inodes[number] { return entry.inode }
        let generation = kernel.sharedGeneration
        sharedCache.validate(generation)
        if let cached = sharedCache.inode(number) { return cached }
        let inode = try kernel.inode(number)
        // Kept only if no commit was applied while the kernel read it.
        if kernel.sharedGeneration == generation { sharedCache.keep(inode: inode, number: number, readUnder: generation) }
        return inode
    }

    private func existingInode(_ number: UInt64) throws(Errno) -> Inode {
        guard let inode = try inode(number) else { throw .ioError }
        return inode
    }

    private func entry(in directory: UInt64, _ name: [UInt8]) throws(Errno) -> (inode: UInt64, type: UInt8)? {
        if let change = pending.entries[directory]?[name] {
            return change.inode == 0 ? nil : (change.inode, change.type)
        }
        let generation = kernel.sharedGeneration
        sharedCache.validate(generation)
        let shared: SharedDirectoryEntry?
        if let cached = sharedCache.entry(directory, name) {
            shared = cached
        } else {
            shared = try kernel.lookup(directory: directory, name: name)
            if kernel.sharedGeneration == generation { sharedCache.keep(entry: shared, directory: directory, name: name, readUnder: generation) }
        }
        guard let shared else { return nil }
        return (shared.inode, shared.type)
    }

    private func setPending(_ inode: Inode, _ sequence: UInt64) {
        pending.touched(.inode(inode.number), sequence)
        if var existing = pending.inodes[inode.number] {
            existing.inode = inode
            existing.sequence = sequence
            pending.inodes[inode.number] = existing
        } else {
            pending.inodes[inode.number] = PendingInode(inode: inode, sequence: sequence)
        }
    }

    private func setEntry(_ directory: UInt64, _ name: [UInt8], inode: UInt64, type: UInt8, _ sequence: UInt64) {
        pending.touched(.entry(directory, name), sequence)
        pending.entries[directory, default: [:]][name] = PendingEntry(inode: inode, type: type, sequence: sequence)
    }

    private func symlinkTarget(_ inode: Inode) throws(Errno) -> [UInt8] {
        if let target = pending.inodes[inode.number]?.target { return target }
        return try kernel.symlinkTarget(inode: inode.number)
    }

    private func xattrs(_ inode: Inode) throws(Errno) -> [(name: [UInt8], value: [UInt8])] {
        if let attributes = pending.inodes[inode.number]?.xattrs { return attributes }
        return try kernel.extendedAttributes(inode: inode.number)
    }

    // MARK: - Paths

    private static var slash: UInt8 { UInt8(ascii: "/") }
    private static var dot: [UInt8] { [UInt8(ascii: ".")] }
    private static var dotDot: [UInt8] { [UInt8(ascii: "."), UInt8(ascii: ".")] }

    private static func components(_ path: [UInt8]) throws(Errno) -> [[UInt8]] {
        guard !path.isEmpty else { throw .noSuchFileOrDirectory }
        guard path.count < pathBytesMax else { throw .fileNameTooLong }
        guard !path.contains(0) else { throw .invalidArgument }
        var result: [[UInt8]] = []
        for part in path.split(separator: slash, omittingEmptySubsequences: true) {
            guard part.count <= Format.nameBytesMax else { throw .fileNameTooLong }
            result.append(Array(part))
        }
        return result
    }

    private func rootDirectory() throws(Errno) -> Inode { try existingInode(kernel.rootInode) }

    /// Walks `names` from `start`; symlinks are followed in the middle always and at the
    /// end when `followFinal`.
    private func walk(_ names: [[UInt8]], from start: Inode, followFinal: Bool) throws(Errno) -> Inode {
        var stack = Array(names.reversed())
        var current = start
        var hops = 0
        // A symlink followed as the last name whose target ends in "/" names a directory.
        var mustBeDirectory = false
        while let name = stack.popLast() {
            let child = try step(from: current, name)
            if child.mode & Inode.typeMask == Inode.typeSymlink, !stack.isEmpty || followFinal {
                hops += 1
                guard hops <= Self.symlinkHopsMax else { throw .tooManySymbolicLinkLevels }
                let target = try symlinkTarget(child)
                guard !target.isEmpty else { throw .noSuchFileOrDirectory }
                if stack.isEmpty, target.last == Self.slash { mustBeDirectory = true }
                if target.first == Self.slash { current = try rootDirectory() }
                for part in target.split(separator: Self.slash, omittingEmptySubsequences: true).reversed() {
                    stack.append(Array(part))
                }
                continue
            }
            current = child
        }
        if mustBeDirectory, !current.isDirectory { throw .notDirectory }
        return current
    }

    /// One name looked up in `directory`, which the caller must be able to search ("." and
    /// ".." included; ".." of the root is the root). Path walks and `lookup(in:name:)` both
    /// take each step here.
    private func step(from directory: Inode, _ name: [UInt8]) throws(Errno) -> Inode {
        guard directory.isDirectory else { throw .notDirectory }
        try require(directory, .execute)
        if name == Self.dot { return directory }
        if name == Self.dotDot {
            return directory.number == kernel.rootInode ? directory : try existingInode(directory.parentHint)
        }
        guard let found = try entry(in: directory.number, name) else { throw .noSuchFileOrDirectory }
        return try existingInode(found.inode)
    }

    /// The inode `path` names.
    private func resolve(_ path: Path, followFinal: Bool = true) throws(Errno) -> Inode {
        let names = try Self.components(path.bytes)
        let trailingSlash = path.bytes.last == Self.slash
        let inode = try walk(names, from: try rootDirectory(), followFinal: followFinal || trailingSlash)
        if trailingSlash, !inode.isDirectory { throw .notDirectory }
        return inode
    }

    /// The directory holding the last name of `path`, and that name ("." for the root).
    private func resolveParent(_ path: Path) throws(Errno) -> (parent: Inode, name: [UInt8], trailingSlash: Bool) {
        var names = try Self.components(path.bytes)
        guard let name = names.popLast() else { return (try rootDirectory(), Self.dot, true) }
        let parent = try walk(names, from: try rootDirectory(), followFinal: true)
        guard parent.isDirectory else { throw .notDirectory }
        try require(parent, .execute)
        return (parent, name, path.bytes.last == Self.slash)
    }

    private static func isDotOrDotDot(_ name: [UInt8]) -> Bool { name == dot || name == dotDot }

    // MARK: - Inodes named by number (front ends)

    /// The inode a front end names by number (FUSE's node ids are inode numbers; 1 is
    /// `rootInode` on a Shale volume): ENOENT once it is gone.
    private func liveInode(_ number: UInt64) throws(Errno) -> Inode {
        guard number != 0, let inode = try inode(number) else { throw .noSuchFileOrDirectory }
        return inode
    }

    /// A directory named by number, as `resolveParent` yields the parent of a path: a
    /// directory the caller may search.
    private func parentDirectory(_ number: UInt64) throws(Errno) -> Inode {
        let parent = try liveInode(number)
        guard parent.isDirectory else { throw .notDirectory }
        try require(parent, .execute)
        return parent
    }

    /// One name as a front end passes it: not empty, no '/' or NUL, at most 255 bytes.
    private static func validName(_ name: [UInt8]) throws(Errno) -> [UInt8] {
        guard !name.isEmpty else { throw .noSuchFileOrDirectory }
        guard name.count <= Format.nameBytesMax else { throw .fileNameTooLong }
        guard !name.contains(0), !name.contains(slash) else { throw .invalidArgument }
        return name
    }

    /// The root directory's inode number (FUSE's node id 1).
    public var rootInode: UInt64 { kernel.rootInode }

    /// lookup: the inode `name` names in directory `parent` (symlinks not followed).
    public func lookup(in parent: UInt64, name: [UInt8], as who: Credentials? = nil) throws(Errno) -> FileStatus {
        try locked(as: who) { () throws(Errno) in
            FileStatus(try step(from: try liveInode(parent), try Self.validName(name)))
        }
    }

    /// getattr: the status of inode `number` (an open file whose names are gone included).
    public func getattr(inode number: UInt64) throws(Errno) -> FileStatus {
        try locked { () throws(Errno) in FileStatus(try liveInode(number)) }
    }

    // MARK: - Permissions

    typealias Access = FileAccess

    private func permits(_ inode: Inode, _ access: FileAccess) -> Bool {
        if caller.isRoot {
            // Root may do anything but execute a file no one may execute.
            return !access.contains(.execute) || inode.isDirectory || inode.mode & 0o111 != 0
        }
        let bits: UInt32
        if inode.uid == caller.uid {
            bits = inode.mode >> 6 & 7
        } else if caller.inGroup(inode.gid) {
            bits = inode.mode >> 3 & 7
        } else {
            bits = inode.mode & 7
        }
        return bits & access.rawValue == access.rawValue
    }

    private func require(_ inode: Inode, _ access: Access) throws(Errno) {
        guard permits(inode, access) else { throw .permissionDenied }
    }

    private func isOwnerOrRoot(_ inode: Inode) -> Bool { caller.isRoot || inode.uid == caller.uid }

    /// May the caller remove or rename `victim` out of `directory`? (write + search, and the
    /// sticky bit's owner rule).
    private func requireRemovable(_ victim: Inode, from directory: Inode) throws(Errno) {
        try require(directory, [.write, .execute])
        if directory.mode & 0o1000 != 0, !caller.isRoot, victim.uid != caller.uid, directory.uid != caller.uid {
            throw .notPermitted
        }
    }

    // MARK: - Space

    private func takeInodeNumber() throws(Errno) -> UInt64 {
        if spareInodeNumbers.isEmpty {
            // A batch, so that creates rarely call the kernel; near a full inode table, one.
            do {
                spareInodeNumbers = try kernel.reserveInodeNumbers(1024).reversed()
            } catch {
                spareInodeNumbers = try kernel.reserveInodeNumbers(1)
            }
        }
        guard let number = spareInodeNumbers.popLast() else { throw .noSpace }
        return number
    }

    /// ENOSPC before logging, never after: the blocks undigested records may need, plus
    /// `blocks`, must fit the shared area's free blocks less a reserve for metadata.
    /// Returns true when it had to digest (the pending tables changed).
    @discardableResult
    private func requireBlocks(_ blocks: UInt64) throws(Errno) -> Bool {
        func fits() -> Bool {
            let demand = pending.pendingBlocks + blocks + reservedBlocks
            return demand <= sharedFreeBlocks
        }
        if fits() { return false }
        // The estimate counts overwrites as new blocks; digesting makes it exact.
        try digestToEnd()
        sharedFreeBlocks = kernel.statistics().freeBlocks
        guard fits() else { throw .noSpace }
        return true
    }

    private static func blockSpan(_ offset: UInt64, _ count: UInt64) -> UInt64 {
        guard count > 0 else { return 0 }
        let block = UInt64(Format.blockBytes)
        return (offset + count - 1) / block - offset / block + 1
    }

    private static func now() -> Timestamp {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Timestamp(seconds: Int64(time.tv_sec), nanoseconds: UInt32(time.tv_nsec))
    }

    private static func directoryType(_ mode: UInt32) -> UInt8 {
        switch mode & Inode.typeMask {
        case 0o010000: 1
        case 0o020000: 2
        case Inode.typeDirectory: 4
        case 0o060000: 6
        case Inode.typeRegular: 8
        case Inode.typeSymlink: 10
        case 0o140000: 12
        default: 0
        }
    }

    // MARK: - Creating

    /// Owner and group of a new inode in `parent` (BSD group semantics under a set-gid
    /// directory, as Linux), and its mode after the umask.
    private func newIdentity(in parent: Inode, mode: UInt32, type: UInt32) -> (mode: UInt32, uid: UInt32, gid: UInt32) {
        var permissions = mode & 0o7777 & ~(type == Inode.typeSymlink ? 0 : caller.umask)
        var gid = caller.gid
        if parent.mode & 0o2000 != 0 {
            gid = parent.gid
            if type == Inode.typeDirectory { permissions |= 0o2000 }
        }
        if type == Inode.typeSymlink { permissions = 0o777 }
        return (type | permissions, caller.uid, gid)
    }

    private func create(in parent: Inode, name: [UInt8], mode: UInt32, type: UInt32, rdev: UInt64 = 0,
                        target: [UInt8]? = nil) throws(Errno) -> Inode {
        try require(parent, [.write, .execute])
        guard try entry(in: parent.number, name) == nil else { throw .fileExists }
        if type == Inode.typeDirectory { guard parent.linkCount < Self.linkCountMax else { throw .tooManyLinks } }
        // A directory block may be needed in the parent; a new directory or a long symlink
        // needs one of its own.
        try requireBlocks(type == Inode.typeDirectory || (target?.count ?? 0) > Inode.inlineDataCapacity ? 2 : 1)
        let number = try takeInodeNumber()
        let identity = newIdentity(in: parent, mode: mode, type: type)
        let time = Self.now()
        let operation: LogOperation
        switch type {
        case Inode.typeDirectory:
            operation = .mkdir(CreateArguments(parent: parent.number, inode: number, mode: identity.mode, uid: identity.uid,
                                               gid: identity.gid, time: time, name: name))
        case Inode.typeRegular:
            operation = .create(CreateArguments(parent: parent.number, inode: number, mode: identity.mode, uid: identity.uid,
                                                gid: identity.gid, time: time, name: name))
        case Inode.typeSymlink:
            operation = .symlink(SymlinkArguments(parent: parent.number, inode: number, uid: identity.uid, gid: identity.gid,
                                                  time: time, name: name, target: target!))
        default:
            operation = .mknod(CreateArguments(parent: parent.number, inode: number, mode: identity.mode, uid: identity.uid,
                                               gid: identity.gid, rdev: rdev, time: time, name: name))
        }
        let sequence = try append(operation)
        let isDirectory = type == Inode.typeDirectory
        var inode = Inode(number: number, mode: identity.mode, uid: identity.uid, gid: identity.gid,
                          linkCount: isDirectory ? 2 : 1, time: time, rdev: rdev, parentHint: parent.number)
        if let target { inode.size = UInt64(target.count) }
        pending.inodes[number] = PendingInode(inode: inode, sequence: sequence, xattrs: nil, target: target)
        pending.touched(.inode(number), sequence)
        var changedParent = parent
        if isDirectory { changedParent.linkCount += 1 }
        changedParent.mtime = time
        changedParent.ctime = time
        setPending(changedParent, sequence)
        setEntry(parent.number, name, inode: number, type: Self.directoryType(identity.mode), sequence)
        pending.demand(isDirectory ? 1 : 0, sequence: sequence)
        return inode
    }

    /// A new non-directory name, as Linux's filename_create checks it: EEXIST when the name
    /// exists (or is "." or ".."), ENOENT when it is missing but written with a trailing slash.
    private func requireCreatable(_ parent: Inode, _ name: [UInt8], trailingSlash: Bool) throws(Errno) {
        guard !Self.isDotOrDotDot(name) else { throw .fileExists }
        guard try entry(in: parent.number, name) == nil else { throw .fileExists }
        guard !trailingSlash else { throw .noSuchFileOrDirectory }
    }

    // Each operation below: a path entry point (resolves, then calls the core), an inode
    // entry point for front ends (names the parent by number, then calls the same core), and
    // the core, which holds every check of the operation.

    public func mkdir(_ path: Path, mode: UInt32 = 0o777) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let (parent, name, _) = try resolveParent(path)
            _ = try mkdirLocked(parent, name, mode: mode)
        }
    }

    /// mkdir of `name` in directory `parent`; returns the new directory's status.
    public func mkdir(in parent: UInt64, name: [UInt8], mode: UInt32 = 0o777, as who: Credentials? = nil) throws(Errno) -> FileStatus {
        try locked(as: who) { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            return FileStatus(try mkdirLocked(try parentDirectory(parent), try Self.validName(name), mode: mode))
        }
    }

    private func mkdirLocked(_ parent: Inode, _ name: [UInt8], mode: UInt32) throws(Errno) -> Inode {
        guard !Self.isDotOrDotDot(name) else { throw .fileExists }
        return try create(in: parent, name: name, mode: mode, type: Inode.typeDirectory)
    }

    /// mknod(2): FIFOs, sockets, regular files, and (root only) device nodes.
    public func mknod(_ path: Path, mode: UInt32, device: UInt64 = 0) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let type = try mknodType(mode)
            let (parent, name, _) = try resolveParent(path)
            _ = try mknodLocked(parent, name, mode: mode, type: type, device: device)
        }
    }

    /// mknod of `name` in directory `parent`; returns the new inode's status.
    public func mknod(in parent: UInt64, name: [UInt8], mode: UInt32, device: UInt64 = 0,
                      as who: Credentials? = nil) throws(Errno) -> FileStatus {
        try locked(as: who) { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let type = try mknodType(mode)
            return FileStatus(try mknodLocked(try parentDirectory(parent), try Self.validName(name), mode: mode, type: type,
                                              device: device))
        }
    }

    /// The file type mknod makes of `mode` (none: a regular file); refused types first, as
    /// Linux checks them before the path.
    private func mknodType(_ mode: UInt32) throws(Errno) -> UInt32 {
        let type = mode & Inode.typeMask == 0 ? Inode.typeRegular : mode & Inode.typeMask
        switch type {
        case Inode.typeRegular, 0o010000, 0o140000: break
        case 0o020000, 0o060000: guard caller.isRoot else { throw .notPermitted }
        case Inode.typeDirectory: throw .notPermitted
        default: throw .invalidArgument
        }
        return type
    }

    private func mknodLocked(_ parent: Inode, _ name: [UInt8], mode: UInt32, type: UInt32, device: UInt64) throws(Errno) -> Inode {
        guard !Self.isDotOrDotDot(name) else { throw .fileExists }
        return try create(in: parent, name: name, mode: mode, type: type, rdev: type == 0o020000 || type == 0o060000 ? device : 0)
    }

    public func symlink(_ target: Path, at path: Path) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes + target.bytes.count)
            try Self.validateSymlinkTarget(target.bytes)
            let (parent, name, trailingSlash) = try resolveParent(path)
            _ = try symlinkLocked(target.bytes, parent, name, trailingSlash: trailingSlash)
        }
    }

    /// symlink: `name` in directory `parent` pointing at `target`; returns its status.
    public func symlink(_ target: [UInt8], in parent: UInt64, name: [UInt8], as who: Credentials? = nil) throws(Errno) -> FileStatus {
        try locked(as: who) { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes + target.count)
            try Self.validateSymlinkTarget(target)
            return FileStatus(try symlinkLocked(target, try parentDirectory(parent), try Self.validName(name), trailingSlash: false))
        }
    }

    private static func validateSymlinkTarget(_ target: [UInt8]) throws(Errno) {
        guard !target.isEmpty else { throw .noSuchFileOrDirectory }
        guard target.count <= Self.symlinkTargetBytesMax else { throw .fileNameTooLong }
        guard !target.contains(0) else { throw .invalidArgument }
    }

    private func symlinkLocked(_ target: [UInt8], _ parent: Inode, _ name: [UInt8], trailingSlash: Bool) throws(Errno) -> Inode {
        try requireCreatable(parent, name, trailingSlash: trailingSlash)
        return try create(in: parent, name: name, mode: 0o777, type: Inode.typeSymlink, target: target)
    }

    public func link(_ existing: Path, _ new: Path) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let inode = try resolve(existing, followFinal: false)
            let (parent, name, trailingSlash) = try resolveParent(new)
            _ = try linkLocked(inode, parent, name, trailingSlash: trailingSlash)
        }
    }

    /// link: a new name `name` in directory `parent` for inode `number`; returns its status.
    public func link(inode number: UInt64, in parent: UInt64, name: [UInt8], as who: Credentials? = nil) throws(Errno) -> FileStatus {
        try locked(as: who) { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let inode = try liveInode(number)
            return FileStatus(try linkLocked(inode, try parentDirectory(parent), try Self.validName(name), trailingSlash: false))
        }
    }

    private func linkLocked(_ existing: Inode, _ parent: Inode, _ name: [UInt8], trailingSlash: Bool) throws(Errno) -> Inode {
        var inode = existing
        // Linux's order: the new name (EEXIST), the parent's permission, then EPERM for a
        // directory.
        try requireCreatable(parent, name, trailingSlash: trailingSlash)
        // fs.protected_hardlinks, as Linux checks it (may_linkat) when the sysctl is on: who
        // neither owns the file nor may read and write it cannot link it, nor any special,
        // set-user-ID or executable set-group-ID file. (Through FUSE the kernel's own check
        // cannot see Shale's permissions, so Shale makes it.)
        if protectedHardlinks, !isOwnerOrRoot(inode) {
            let regular = inode.mode & Inode.typeMask == Inode.typeRegular
            let setID = inode.mode & 0o4000 != 0 || inode.mode & 0o2010 == 0o2010
            guard regular, !setID, permits(inode, [.read, .write]) else { throw .notPermitted }
        }
        try require(parent, [.write, .execute])
        guard !inode.isDirectory else { throw .notPermitted }
        guard inode.linkCount > 0 else { throw .noSuchFileOrDirectory }
        guard inode.linkCount < Self.linkCountMax else { throw .tooManyLinks }
        try requireBlocks(1)
        let time = Self.now()
        let sequence = try append(.link(LinkArguments(parent: parent.number, inode: inode.number, time: time, name: name)))
        inode.linkCount += 1
        inode.ctime = time
        setPending(inode, sequence)
        var changedParent = parent
        changedParent.mtime = time
        changedParent.ctime = time
        setPending(changedParent, sequence)
        setEntry(parent.number, name, inode: inode.number, type: Self.directoryType(inode.mode), sequence)
        return inode
    }

    // MARK: - Removing

    /// Before a record that removes a name of `victim` is logged: if the process has it open,
    /// the kernel must keep it (an orphan) when the digest removes its last link. Told
    /// before the append, since the background digest may apply the record at once.
    private func announceIfOpen(_ victim: Inode) {
        guard openCounts[victim.number] != nil, !announcedOpen.contains(victim.number) else { return }
        announcedOpen.insert(victim.number)
        kernel.setOpen(victim.number, true)
    }

    /// The inode loses one link (a removed name); at none it is gone once nothing has it open.
    private func dropLink(_ victim: Inode, time: Timestamp, sequence: UInt64) {
        var inode = victim
        inode.linkCount = inode.isDirectory ? 0 : inode.linkCount - 1
        inode.ctime = time
        setPending(inode, sequence)
    }

    public func unlink(_ path: Path) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let (parent, name, trailingSlash) = try resolveParent(path)
            try unlinkLocked(parent, name, trailingSlash: trailingSlash)
        }
    }

    /// unlink of `name` in directory `parent`.
    public func unlink(in parent: UInt64, name: [UInt8], as who: Credentials? = nil) throws(Errno) {
        try locked(as: who) { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            try unlinkLocked(try parentDirectory(parent), try Self.validName(name), trailingSlash: false)
        }
    }

    private func unlinkLocked(_ parent: Inode, _ name: [UInt8], trailingSlash: Bool) throws(Errno) {
        guard !Self.isDotOrDotDot(name) else { throw .isDirectory }
        guard let found = try entry(in: parent.number, name) else { throw .noSuchFileOrDirectory }
        let victim = try existingInode(found.inode)
        guard !victim.isDirectory else { throw .isDirectory }
        if trailingSlash { throw .notDirectory }
        try requireRemovable(victim, from: parent)
        let time = Self.now()
        announceIfOpen(victim)
        let sequence = try append(.unlink(RemoveArguments(parent: parent.number, inode: victim.number, time: time, name: name)))
        var changedParent = parent
        changedParent.mtime = time
        changedParent.ctime = time
        setPending(changedParent, sequence)
        setEntry(parent.number, name, inode: 0, type: 0, sequence)
        dropLink(victim, time: time, sequence: sequence)
    }

    public func rmdir(_ path: Path) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let (parent, name, _) = try resolveParent(path)
            try rmdirLocked(parent, name)
        }
    }

    /// rmdir of `name` in directory `parent`.
    public func rmdir(in parent: UInt64, name: [UInt8], as who: Credentials? = nil) throws(Errno) {
        try locked(as: who) { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            try rmdirLocked(try parentDirectory(parent), try Self.validName(name))
        }
    }

    private func rmdirLocked(_ parent: Inode, _ name: [UInt8]) throws(Errno) {
        if name == Self.dot { throw .invalidArgument }
        if name == Self.dotDot { throw .directoryNotEmpty }
        guard let found = try entry(in: parent.number, name) else { throw .noSuchFileOrDirectory }
        let victim = try existingInode(found.inode)
        guard victim.isDirectory else { throw .notDirectory }
        try requireRemovable(victim, from: parent)
        guard try isEmptyDirectory(victim.number) else { throw .directoryNotEmpty }
        let time = Self.now()
        announceIfOpen(victim)
        let sequence = try append(.rmdir(RemoveArguments(parent: parent.number, inode: victim.number, time: time, name: name)))
        var changedParent = parent
        changedParent.linkCount -= 1
        changedParent.mtime = time
        changedParent.ctime = time
        setPending(changedParent, sequence)
        setEntry(parent.number, name, inode: 0, type: 0, sequence)
        dropLink(victim, time: time, sequence: sequence)
    }

    private func isEmptyDirectory(_ number: UInt64) throws(Errno) -> Bool {
        if let changes = pending.entries[number], changes.values.contains(where: { $0.inode != 0 }) { return false }
        return try allSharedEntriesRemoved(number)
    }

    private func allSharedEntriesRemoved(_ number: UInt64) throws(Errno) -> Bool {
        var cookie: UInt64 = 0
        while true {
            let listing = try kernel.list(directory: number, after: cookie, limit: 256)
            for entry in listing.entries where pending.entries[number]?[entry.name] == nil { return false }
            guard let next = listing.next else { return true }
            cookie = next
        }
    }

    // MARK: - Rename

    /// rename(2) and renameat2(2): `flags` may hold RENAME_NOREPLACE or RENAME_EXCHANGE.
    public func rename(_ from: Path, _ to: Path, flags: RenameFlags = []) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            guard flags.isSubset(of: .known), flags != .known else { throw .invalidArgument }
            // The checks in Linux's order (do_renameat2, then vfs_rename), so that a call with
            // several faults fails with the errno Linux gives.
            let (oldParent, oldName, _) = try resolveParent(from)
            let (newParent, newName, _) = try resolveParent(to)
            try renameLocked(oldParent, oldName, newParent, newName, flags: flags,
                             fromSlash: from.bytes.last == Self.slash, toSlash: to.bytes.last == Self.slash)
        }
    }

    /// rename (renameat2 flags) of `name` in directory `parent` to `newName` in `newParent`.
    public func rename(in parent: UInt64, name: [UInt8], to newParent: UInt64, name newName: [UInt8], flags: RenameFlags = [],
                       as who: Credentials? = nil) throws(Errno) {
        try locked(as: who) { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            guard flags.isSubset(of: .known), flags != .known else { throw .invalidArgument }
            let oldParent = try parentDirectory(parent)
            let newParentInode = try parentDirectory(newParent)
            try renameLocked(oldParent, try Self.validName(name), newParentInode, try Self.validName(newName), flags: flags,
                             fromSlash: false, toSlash: false)
        }
    }

    /// `fromSlash`, `toSlash`: the path named the name with a trailing slash.
    private func renameLocked(_ oldParent: Inode, _ oldName: [UInt8], _ newParent: Inode, _ newName: [UInt8], flags: RenameFlags,
                              fromSlash: Bool, toSlash: Bool) throws(Errno) {
        if Self.isDotOrDotDot(oldName) { throw .resourceBusy }
        if Self.isDotOrDotDot(newName) { throw flags.contains(.noReplace) ? .fileExists : .resourceBusy }
        guard let sourceEntry = try entry(in: oldParent.number, oldName) else { throw .noSuchFileOrDirectory }
        let source = try existingInode(sourceEntry.inode)
        let targetEntry = try entry(in: newParent.number, newName)
        let target = try targetEntry.map { (found) throws(Errno) in try existingInode(found.inode) }
        if flags.contains(.noReplace), target != nil { throw .fileExists }
        if flags.contains(.exchange), target == nil { throw .noSuchFileOrDirectory }
        // A trailing slash names a directory.
        if !source.isDirectory {
            if fromSlash { throw .notDirectory }
            if !flags.contains(.exchange), toSlash { throw .notDirectory }
        }
        if flags.contains(.exchange), let target, !target.isDirectory, toSlash { throw .notDirectory }
        if oldParent.number != newParent.number {
            // A directory may not move into itself.
            if source.isDirectory { try requireNotInside(newParent, source.number) }
            // Nor may the target be a directory holding the source.
            if let target, target.isDirectory {
                do throws(Errno) {
                    try requireNotInside(oldParent, target.number)
                } catch {
                    throw flags.contains(.exchange) ? .invalidArgument : .directoryNotEmpty
                }
            }
        }
        // The same inode under both names: nothing to do (POSIX), before any permission.
        if let target, target.number == source.number { return }
        try requireRemovable(source, from: oldParent)
        if let target {
            try requireRemovable(target, from: newParent)
            if !flags.contains(.exchange) {
                if source.isDirectory, !target.isDirectory { throw .notDirectory }
                if !source.isDirectory, target.isDirectory { throw .isDirectory }
            }
        } else {
            try require(newParent, [.write, .execute])
        }
        // Moving a directory rewrites its "..": that needs write permission on it.
        if oldParent.number != newParent.number {
            if source.isDirectory { try require(source, .write) }
            if flags.contains(.exchange), let target, target.isDirectory { try require(target, .write) }
        }
        if let target, target.isDirectory, !flags.contains(.exchange) {
            guard try isEmptyDirectory(target.number) else { throw .directoryNotEmpty }
        }
        if source.isDirectory, target == nil, oldParent.number != newParent.number {
            guard newParent.linkCount < Self.linkCountMax else { throw .tooManyLinks }
        }
        try requireBlocks(1)
        let time = Self.now()
        if let target, !flags.contains(.exchange) { announceIfOpen(target) }
        let sequence = try append(.rename(RenameArguments(
            oldParent: oldParent.number, oldName: oldName, newParent: newParent.number, newName: newName,
            flags: flags, source: source.number, replaced: target?.number ?? 0, time: time)))
        applyRename(oldParent: oldParent, oldName: oldName, newParent: newParent, newName: newName,
                    source: source, target: target, exchange: flags.contains(.exchange), time: time, sequence: sequence)
    }

    private func requireNotInside(_ directory: Inode, _ ancestor: UInt64) throws(Errno) {
        var current = directory
        while true {
            if current.number == ancestor { throw .invalidArgument }
            if current.number == kernel.rootInode { return }
            current = try existingInode(current.parentHint)
        }
    }

    private func applyRename(oldParent: Inode, oldName: [UInt8], newParent: Inode, newName: [UInt8], source: Inode, target: Inode?,
                             exchange: Bool, time: Timestamp, sequence: UInt64) {
        let sameParent = oldParent.number == newParent.number
        var old = oldParent
        var new = sameParent ? oldParent : newParent
        var moved = source
        moved.ctime = time
        if exchange, var other = target {
            other.ctime = time
            setEntry(oldParent.number, oldName, inode: other.number, type: Self.directoryType(other.mode), sequence)
            setEntry(newParent.number, newName, inode: moved.number, type: Self.directoryType(moved.mode), sequence)
            if !sameParent {
                if moved.isDirectory { old.linkCount -= 1; new.linkCount += 1; moved.parentHint = newParent.number }
                if other.isDirectory { new.linkCount -= 1; old.linkCount += 1; other.parentHint = oldParent.number }
            }
            setPending(other, sequence)
        } else {
            setEntry(oldParent.number, oldName, inode: 0, type: 0, sequence)
            setEntry(newParent.number, newName, inode: moved.number, type: Self.directoryType(moved.mode), sequence)
            if moved.isDirectory, !sameParent {
                moved.parentHint = newParent.number
                old.linkCount -= 1
                new.linkCount += 1
            }
            if let target {
                if target.isDirectory { new.linkCount -= 1 }
                dropLink(target, time: time, sequence: sequence)
            }
        }
        setPending(moved, sequence)
        if sameParent {
            var both = old
            both.linkCount = old.linkCount &+ new.linkCount &- oldParent.linkCount
            both.mtime = time
            both.ctime = time
            setPending(both, sequence)
        } else {
            old.mtime = time
            old.ctime = time
            new.mtime = time
            new.ctime = time
            setPending(old, sequence)
            setPending(new, sequence)
        }
    }

    // MARK: - Open and close

    public func open(_ path: Path, _ flags: OpenFlags = .readOnly, mode: UInt32 = 0o666) throws(Errno) -> FileHandle {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            // Linux (since 6.4) refuses O_CREAT with O_DIRECTORY before looking at the path.
            if flags.contains(.create), flags.contains(.directory) { throw .invalidArgument }
            if flags.contains(.create) {
                let (parent, name, trailingSlash) = try resolveParent(path)
                return try openCreatingLocked(parent, name, trailingSlash: trailingSlash, flags, mode: mode)
            }
            let inode = try resolve(path, followFinal: !flags.contains(.noFollow))
            return try openLocked(inode, flags)
        }
    }

    /// open of inode `number` (a front end's open and opendir: no O_CREAT).
    public func open(inode number: UInt64, _ flags: OpenFlags = .readOnly, as who: Credentials? = nil) throws(Errno) -> FileHandle {
        try locked(as: who) { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            if flags.contains(.create), flags.contains(.directory) { throw .invalidArgument }
            return try openLocked(try liveInode(number), flags)
        }
    }

    /// opendir: inode `number` opened for `readDirectory`.
    public func openDirectory(inode number: UInt64, as who: Credentials? = nil) throws(Errno) -> FileHandle {
        try open(inode: number, .directory, as: who)
    }

    /// create (open with O_CREAT) of `name` in directory `parent`: the handle and the status
    /// of the file it opened (an existing one unless `flags` holds O_EXCL).
    public func create(in parent: UInt64, name: [UInt8], _ flags: OpenFlags = [.create, .readWrite], mode: UInt32 = 0o666,
                       as who: Credentials? = nil) throws(Errno) -> (handle: FileHandle, status: FileStatus) {
        try locked(as: who) { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            if flags.contains(.directory) { throw .invalidArgument }
            let handle = try openCreatingLocked(try parentDirectory(parent), try Self.validName(name), trailingSlash: false,
                                                flags.union(.create), mode: mode)
            return (handle, FileStatus(try existingInode(try file(handle).inode)))
        }
    }

    /// O_CREAT: opens `name` in `parent`, creating it when missing.
    private func openCreatingLocked(_ directory: Inode, _ first: [UInt8], trailingSlash slash: Bool, _ flags: OpenFlags,
                                    mode: UInt32) throws(Errno) -> FileHandle {
        var parent = directory, name = first, trailingSlash = slash
        var inode: Inode
        var hops = 0
        while true {
            // O_CREAT on a name with a trailing slash, ".", ".." or the root: EISDIR,
            // whether it exists or not (Linux).
            if trailingSlash || Self.isDotOrDotDot(name) { throw .isDirectory }
            guard let found = try entry(in: parent.number, name) else {
                inode = try create(in: parent, name: name, mode: mode, type: Inode.typeRegular)
                return register(inode, flags: flags)
            }
            guard !flags.contains(.exclusive) else { throw .fileExists }
            inode = try existingInode(found.inode)
            // O_CREAT on an existing directory (or a symlink to one): EISDIR.
            if inode.isDirectory { throw .isDirectory }
            guard inode.mode & Inode.typeMask == Inode.typeSymlink else { break }
            // A symlink: O_CREAT follows it, and creates its target when that is missing
            // (as Linux does for a dangling symlink).
            guard !flags.contains(.noFollow) else { throw .tooManySymbolicLinkLevels }
            hops += 1
            guard hops <= Self.symlinkHopsMax else { throw .tooManySymbolicLinkLevels }
            let target = try symlinkTarget(inode)
            guard !target.isEmpty else { throw .noSuchFileOrDirectory }
            var names = target.split(separator: Self.slash, omittingEmptySubsequences: true).map(Array.init)
            let start = target.first == Self.slash ? try rootDirectory() : parent
            guard let last = names.popLast() else { throw .isDirectory }
            parent = try walk(names, from: start, followFinal: true)
            guard parent.isDirectory else { throw .notDirectory }
            try require(parent, .execute)
            name = last
            trailingSlash = target.last == Self.slash
        }
        return try openLocked(inode, flags)
    }

    /// Opens an existing inode: the type and permission checks, O_TRUNC.
    private func openLocked(_ inode: Inode, _ flags: OpenFlags) throws(Errno) -> FileHandle {
        // O_DIRECTORY's ENOTDIR comes before O_NOFOLLOW's ELOOP (Linux).
        if flags.contains(.directory), !inode.isDirectory { throw .notDirectory }
        if inode.mode & Inode.typeMask == Inode.typeSymlink { throw .tooManySymbolicLinkLevels }
        if inode.isDirectory, flags.writable || flags.contains(.truncate) { throw .isDirectory }
        if flags.readable { try require(inode, .read) }
        if flags.writable || flags.contains(.truncate) { try require(inode, .write) }
        if flags.contains(.truncate), flags.writable, inode.mode & Inode.typeMask == Inode.typeRegular, inode.size > 0 {
            try truncateLocked(inode, to: 0)
        }
        return register(inode, flags: flags)
    }

    /// creat(2).
    public func create(_ path: Path, mode: UInt32 = 0o666) throws(Errno) -> FileHandle {
        try open(path, [.create, .writeOnly, .truncate], mode: mode)
    }

    private func register(_ inode: Inode, flags: OpenFlags) -> FileHandle {
        // Numbers are reused once they wrap (a daemon may open billions of files).
        var number = nextDescriptor
        while files[Self.fileKey(number)] != nil { number = number == .max ? 3 : number + 1 }
        nextDescriptor = number == .max ? 3 : number + 1
        files[Self.fileKey(number)] = OpenFile(inode: inode.number, flags: flags, isDirectory: inode.isDirectory)
        openCounts[inode.number, default: 0] += 1
        return FileHandle(number: number)
    }

    /// A handle number as a table key (any Int32 a front end hands back, negative ones too).
    @inline(__always)
    private static func fileKey(_ number: Int32) -> UInt64 { UInt64(UInt32(bitPattern: number)) }

    private func file(_ handle: FileHandle) throws(Errno) -> OpenFile {
        guard let file = files[Self.fileKey(handle.number)] else { throw .badFileDescriptor }
        return file
    }

    /// Bookkeeping when a handle goes. The last handle of an unlinked file frees it: every
    /// record about it is digested first, while the kernel still counts it open, so that
    /// records logged after its last unlink (writes through the handle) still find it; the
    /// kernel holds it as an orphan until `releaseOrphan`.
    ///
    /// `deferred` (a front end letting go of an inode, many per `rm -rf`): instead of a digest
    /// now, the orphan is freed once the digest passes the records logged so far.
    private func dropOpen(_ number: UInt64, deferred: Bool = false) throws(Errno) {
        let remaining = (openCounts[number] ?? 1) - 1
        openCounts[number] = remaining > 0 ? remaining : nil
        guard remaining == 0 else { return }
        if let inode = try inode(number), inode.linkCount == 0 {
            if deferred, log.tailSequence < log.nextSequence {
                dyingOrphans.append((number, log.nextSequence))
                return
            }
            try digestToEnd()
            if announcedOpen.remove(number) != nil { kernel.setOpen(number, false) }
            try kernel.releaseOrphan(number)
        } else if announcedOpen.remove(number) != nil {
            kernel.setOpen(number, false)
        }
    }

    /// Frees the dying orphans whose every record is digested (`tailSequence` past them).
    /// They were queued in log order, so this visits only those it frees (an `rm -rf` queues
    /// one per file; every digest batch comes here).
    private func freeDyingOrphans() {
        var done = 0
        while done < dyingOrphans.count, dyingOrphans[done].sequence <= log.tailSequence {
            let number = dyingOrphans[done].inode
            done += 1
            // Held or opened again meanwhile: its next release queues it again.
            guard openCounts[number] == nil else { continue }
            if announcedOpen.remove(number) != nil { kernel.setOpen(number, false) }
            do {
                try kernel.releaseOrphan(number)
            } catch {
                // Left for recovery to free (an orphan with no links and no holder).
                report("could not free orphan inode \(number): \(error)")
            }
        }
        if done > 0 { dyingOrphans.removeFirst(done) }
    }

    /// A front end (the FUSE server) holds inode `number` the way an open handle does: while
    /// held, losing its last name leaves it an orphan, still readable, instead of freeing
    /// it (the kernel may still name an inode it looked up: a process's current directory
    /// after rmdir, a file being stat'ed while another process unlinks it).
    public func hold(inode number: UInt64) throws(Errno) {
        try locked { () throws(Errno) in openCounts[number, default: 0] += 1 }
    }

    /// Lets go of a `hold`. An orphan with nothing else holding it is freed after the next
    /// digest that covers the records about it (not at once: see `dropOpen`).
    public func releaseHold(inode number: UInt64) throws(Errno) {
        try locked { () throws(Errno) in try dropOpen(number, deferred: true) }
    }

    /// Inodes held or open (tests).
    public var heldInodeCount: Int { monitor.withLock { openCounts.count } }

    public func close(_ handle: FileHandle) throws(Errno) {
        try locked { () throws(Errno) in
            let file = try file(handle)
            files[Self.fileKey(handle.number)] = nil
            try dropOpen(file.inode)
        }
    }

    // MARK: - Reading

    public func read(_ handle: FileHandle, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        try locked { () throws(Errno) in
            let file = try file(handle)
            let count = try readLocked(file, into: buffer, at: file.offset)
            file.offset += UInt64(count)
            return count
        }
    }

    public func pread(_ handle: FileHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(Errno) -> Int {
        try locked { () throws(Errno) in try readLocked(try file(handle), into: buffer, at: offset) }
    }

    public func read(_ handle: FileHandle, count: Int) throws(Errno) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let result: Result<Int, Errno> = bytes.withUnsafeMutableBytes { buffer in
            do throws(Errno) { return .success(try read(handle, into: buffer)) } catch { return .failure(error) }
        }
        bytes.removeLast(count - (try result.get()))
        return bytes
    }

    public func pread(_ handle: FileHandle, count: Int, at offset: UInt64) throws(Errno) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let result: Result<Int, Errno> = bytes.withUnsafeMutableBytes { buffer in
            do throws(Errno) { return .success(try pread(handle, into: buffer, at: offset)) } catch { return .failure(error) }
        }
        bytes.removeLast(count - (try result.get()))
        return bytes
    }

    private func readLocked(_ file: OpenFile, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(Errno) -> Int {
        guard file.flags.readable else { throw .badFileDescriptor }
        guard !file.isDirectory else { throw .isDirectory }
        let inode = try existingInode(file.inode)
        guard offset < inode.size, buffer.count > 0 else { return 0 }
        let count = Int(min(UInt64(buffer.count), inode.size - offset))
        let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< count])
        try kernel.read(inode: inode.number, at: offset, into: target)
        // Lay the log's bytes over the shared area's.
        if let index = pending.data[inode.number] {
            let base = kernel.nvm.baseAddress
            for piece in index.pieces(in: offset ..< offset + UInt64(count)) {
                let destination = target.baseAddress! + Int(piece.start - offset)
                let length = Int(piece.end - piece.start)
                if piece.isZeros {
                    destination.initializeMemory(as: UInt8.self, repeating: 0, count: length)
                } else {
                    destination.copyMemory(from: base + Int(piece.source), byteCount: length)
                }
            }
        }
        return count
    }

    // MARK: - Writing

    public func write(_ handle: FileHandle, _ bytes: UnsafeRawBufferPointer, as who: Credentials? = nil) throws(Errno) -> Int {
        try locked(as: who) { () throws(Errno) in
            try awaitLogSpace(Self.writeRecordBytes(min(bytes.count, writeBytesMax)))
            let file = try file(handle)
            var offset = file.offset
            if file.flags.contains(.append) { offset = try existingInode(file.inode).size }
            let count = try writeLocked(file, bytes, at: offset)
            file.offset = offset + UInt64(count)
            return count
        }
    }

    /// `who`: the writer, when it is not the process (a front end's caller): an unprivileged
    /// writer drops the file's set-id bits.
    public func pwrite(_ handle: FileHandle, _ bytes: UnsafeRawBufferPointer, at offset: UInt64,
                       as who: Credentials? = nil) throws(Errno) -> Int {
        try locked(as: who) { () throws(Errno) in
            try awaitLogSpace(Self.writeRecordBytes(min(bytes.count, writeBytesMax)))
            let file = try file(handle)
            // pwrite on an O_APPEND file appends, as Linux does.
            let position = file.flags.contains(.append) ? try existingInode(file.inode).size : offset
            return try writeLocked(file, bytes, at: position)
        }
    }

    @discardableResult
    public func write(_ handle: FileHandle, _ bytes: [UInt8]) throws(Errno) -> Int {
        let result: Result<Int, Errno> = bytes.withUnsafeBytes { buffer in
            do throws(Errno) { return .success(try write(handle, buffer)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    @discardableResult
    public func pwrite(_ handle: FileHandle, _ bytes: [UInt8], at offset: UInt64) throws(Errno) -> Int {
        let result: Result<Int, Errno> = bytes.withUnsafeBytes { buffer in
            do throws(Errno) { return .success(try pwrite(handle, buffer, at: offset)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// At least what a write record of `count` bytes takes: header, payload, the padding to
    /// the data's line (or a small record's last line, written whole) and to 8 bytes.
    private static func writeRecordBytes(_ count: Int) -> Int {
        LogRecordHeader.encodedBytes + WriteArguments.fixedBytes + count
            + Int(LogRecordHeader.dataAlignment) + Int(LogRecordHeader.recordAlignment)
    }

    private func writeLocked(_ file: OpenFile, _ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(Errno) -> Int {
        guard file.flags.writable else { throw .badFileDescriptor }
        guard !file.isDirectory else { throw .isDirectory }
        // The hot path of every write: the pending inode is read and edited where it is (one
        // hash lookup, no copy of the inode and its mapping), the shared one fetched only
        // when the log holds none.
        let number = file.inode
        var slot = pending.inodes.index(forKey: number)
        // (Read through an inout access: the getter would copy the entry, arrays and all.)
        let mode = if let slot { Self.peek(&pending.inodes[position: slot]) { $0.inode.mode } } else { try existingInode(number).mode }
        guard mode & Inode.typeMask == Inode.typeRegular else { throw .invalidArgument }
        guard bytes.count > 0 else { return 0 }
        guard offset < Self.fileBytesMax else { throw .fileTooLarge }
        let count = Int(min(UInt64(min(bytes.count, writeBytesMax)), Self.fileBytesMax - offset))
        let chunk = UnsafeRawBufferPointer(rebasing: bytes[0 ..< count])
        let blocks = Self.blockSpan(offset, UInt64(count))
        var changed = try requireBlocks(blocks)
        if mode & 0o6000 != 0 {
            _ = try droppingSetID(try existingInode(number))
            changed = true
        }
        // A digest (to make room) or the set-id record changed the pending table.
        if changed { slot = pending.inodes.index(forKey: number) }
        let shared: Inode? = slot == nil ? try existingInode(number) : nil
        let time = Self.now()
        let end = offset + UInt64(count)
        // The pending state learns of the write before the record is stored (OperationLog's
        // `placed`; the lock keeps it from every other thread until the commit).
        func note(source: UInt64, sequence: UInt64) {
            // One touch covers the data index and the inode (pruning drops both by sequence).
            pending.touched(.write(number), sequence)
            pending.data[number, default: DataIndex()].insert(DataPiece(start: offset, end: end, source: source, sequence: sequence))
            if let slot {
                pending.inodes[position: slot].sequence = sequence
                Self.applyWrite(to: &pending.inodes[position: slot].inode, end: end, time: time, blocks: blocks)
            } else if var inode = shared {
                Self.applyWrite(to: &inode, end: end, time: time, blocks: blocks)
                pending.inodes[number] = PendingInode(inode: inode, sequence: sequence)
            }
            pending.demand(blocks, sequence: sequence)
        }
        do {
            if count <= WriteArguments.inlineBytesMax {
                // Small: the bytes travel inside the payload (one compact record).
                try log.append(.write, payloadBytes: WriteArguments.fixedBytes + count,
                               data: UnsafeRawBufferPointer(start: nil, count: 0)) { buffer in
                    WriteArguments.encodePayload(inode: number, offset: offset, length: UInt32(count), time: time,
                                                 inline: chunk, into: buffer)
                } placed: { place in
                    note(source: grant.regionOffset + place.payloadOffset + UInt64(WriteArguments.fixedBytes), sequence: place.sequence)
                }
            } else {
                // Bulk: line-aligned data after the payload.
                try log.append(.write, payloadBytes: WriteArguments.fixedBytes, data: chunk) { buffer in
                    WriteArguments.encodePayload(inode: number, offset: offset, length: UInt32(count), time: time,
                                                 inline: UnsafeRawBufferPointer(start: nil, count: 0), into: buffer)
                } placed: { place in
                    note(source: grant.regionOffset + place.dataOffset, sequence: place.sequence)
                }
            }
        } catch {
            throw .ioError
        }
        return count
    }

    /// `body` over `value` in place (an inout access reads a dictionary's entry where it is).
    @inline(__always)
    private static func peek<Value, Result>(_ value: inout Value, _ body: (inout Value) -> Result) -> Result {
        body(&value)
    }

    /// What a write record does to its inode (the digest applies the same).
    @inline(__always)
    private static func applyWrite(to inode: inout Inode, end: UInt64, time: Timestamp, blocks: UInt64) {
        inode.size = max(inode.size, end)
        inode.mtime = time
        inode.ctime = time
        inode.allocatedBlocks += blocks
    }

    /// True when `new` is `old`'s permission bits with only set-uid and/or set-gid cleared.
    private static func onlyDropsSetID(from old: UInt32, to new: UInt32) -> Bool {
        let before = old & 0o7777, after = new & 0o7777
        return after != before && after & ~0o6000 == before & ~0o6000 && after & ~before == 0
    }

    /// Linux drops set-uid, and set-gid on a group-executable file, when a regular file is
    /// written or truncated by a caller without CAP_FSETID (here: anyone but root). Under
    /// FUSE's HANDLE_KILLPRIV (libfuse's default) the kernel leaves this to the file system.
    /// The change is its own record, logged before the write's: a crash between them leaves
    /// the bits dropped and the data unwritten, the safe side.
    private func droppingSetID(_ inode: Inode) throws(Errno) -> Inode {
        guard !caller.isRoot, inode.mode & Inode.typeMask == Inode.typeRegular, inode.mode & 0o6000 != 0 else { return inode }
        var mode = inode.mode & 0o7777 & ~0o4000
        if mode & 0o010 != 0 { mode &= ~0o2000 }
        guard mode != inode.mode & 0o7777 else { return inode }
        var plan = AttributePlan()
        plan.valid.insert(.mode)
        plan.mode = mode
        return try apply(plan, to: inode)
    }

    // MARK: - Size and space

    @discardableResult
    private func truncateLocked(_ unchanged: Inode, to size: UInt64) throws(Errno) -> Inode {
        guard size <= Self.fileBytesMax else { throw .fileTooLarge }
        let current = try droppingSetID(unchanged)
        // Shrinking into a block that holds data keeps the block (its tail reads as zeros).
        let block = UInt64(Format.blockBytes)
        let keptBlock = size / block * block ..< size / block * block + block
        var keepsBlock = false
        if size < current.size, size % block != 0 {
            keepsBlock = try dataRanges(current).contains { $0.overlaps(keptBlock) }
        }
        let time = Self.now()
        let sequence = try append(.truncate(TruncateArguments(inode: current.number, size: size, time: time)))
        var inode = current
        if size < inode.size {
            pending.touched(.data(inode.number), sequence)
            pending.data[inode.number, default: DataIndex()].insert(
                DataPiece(start: size, end: UInt64.max, source: keepsBlock ? DataPiece.zerosKeepingBlock : DataPiece.zeros,
                          sequence: sequence))
            inode.allocatedBlocks = min(inode.allocatedBlocks, (size + UInt64(Format.blockBytes) - 1) / UInt64(Format.blockBytes))
        }
        inode.size = size
        inode.mtime = time
        inode.ctime = time
        setPending(inode, sequence)
        return inode
    }

    public func truncate(_ path: Path, size: UInt64) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let inode = try resolve(path)
            try requireTruncatable(inode, through: nil)
            try truncateLocked(inode, to: size)
        }
    }

    public func ftruncate(_ handle: FileHandle, size: UInt64) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let file = try file(handle)
            let inode = try existingInode(file.inode)
            try requireTruncatable(inode, through: file)
            try truncateLocked(inode, to: size)
        }
    }

    /// truncate(2) (by name: `file` nil) and ftruncate(2) (through an open file) checks.
    private func requireTruncatable(_ inode: Inode, through file: OpenFile?) throws(Errno) {
        if let file {
            guard file.flags.writable, !file.isDirectory else { throw .invalidArgument }
            guard inode.mode & Inode.typeMask == Inode.typeRegular else { throw .invalidArgument }
        } else {
            guard !inode.isDirectory else { throw .isDirectory }
            guard inode.mode & Inode.typeMask == Inode.typeRegular else { throw .invalidArgument }
            try require(inode, .write)
        }
    }

    /// fallocate(2): allocate (`[]`, `.keepSize`), punch a hole (`[.punchHole, .keepSize]`)
    /// or zero a range (`.zeroRange`, optionally `.keepSize`).
    public func fallocate(_ handle: FileHandle, mode: FallocateMode = [], offset: UInt64, length: UInt64) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let file = try file(handle)
            // Linux's order: the length, then the mode (punching needs KEEP_SIZE and excludes
            // ZERO_RANGE: EOPNOTSUPP either way), then the handle.
            guard length > 0 else { throw .invalidArgument }
            guard mode.isSubset(of: .known) else { throw .notSupported }
            if mode.contains(.punchHole) {
                guard mode.contains(.keepSize), !mode.contains(.zeroRange) else { throw .notSupported }
            }
            guard file.flags.writable else { throw .badFileDescriptor }
            guard !file.isDirectory else { throw .isDirectory }
            var inode = try existingInode(file.inode)
            guard inode.mode & Inode.typeMask == Inode.typeRegular else { throw .operationNotSupportedByDevice }
            guard offset < Self.fileBytesMax, length <= Self.fileBytesMax - offset else { throw .fileTooLarge }
            let end = offset + length
            let allocating = !mode.contains(.punchHole)
            let blocks = allocating ? Self.blockSpan(offset, length) : 0
            try requireBlocks(blocks)
            let time = Self.now()
            let sequence = try append(.fallocate(FallocateArguments(inode: inode.number, mode: mode, offset: offset, length: length, time: time)))
            if mode.contains(.punchHole) || mode.contains(.zeroRange) {
                let zeroEnd = mode.contains(.keepSize) ? min(end, inode.size) : end
                if offset < zeroEnd {
                    pending.touched(.data(inode.number), sequence)
                    pending.data[inode.number, default: DataIndex()].insert(
                        DataPiece(start: offset, end: zeroEnd, source: DataPiece.zeros, sequence: sequence))
                }
            }
            if !mode.contains(.keepSize) { inode.size = max(inode.size, end) }
            // Modern Linux (file_modified) updates both times for every mode, as the digest does.
            inode.mtime = time
            inode.ctime = time
            if allocating { inode.allocatedBlocks += blocks }
            setPending(inode, sequence)
            pending.demand(blocks, sequence: sequence)
        }
    }

    // MARK: - Seeking

    public func lseek(_ handle: FileHandle, offset: Int64, from origin: SeekOrigin) throws(Errno) -> UInt64 {
        try locked { () throws(Errno) in
            let file = try file(handle)
            let inode = try existingInode(file.inode)
            let position: Int64
            switch origin {
            case .start: position = offset
            case .current: position = Int64(file.offset) &+ offset
            case .end: position = Int64(inode.size) &+ offset
            case .data, .hole:
                guard offset >= 0, UInt64(offset) < inode.size else { throw .noSuchAddressOrDevice }
                let ranges = try dataRanges(inode)
                var found = UInt64(offset)
                if origin == .data {
                    guard let range = ranges.first(where: { $0.upperBound > UInt64(offset) }) else { throw .noSuchAddressOrDevice }
                    found = max(UInt64(offset), range.lowerBound)
                } else {
                    found = inode.size
                    var at = UInt64(offset)
                    for range in ranges where range.upperBound > at {
                        if range.lowerBound > at { break }
                        at = range.upperBound
                    }
                    found = min(at, inode.size)
                }
                position = Int64(found)
            }
            guard position >= 0 else { throw .invalidArgument }
            file.offset = UInt64(position)
            return UInt64(position)
        }
    }

    /// Byte ranges holding data (whole blocks, as a block file system reports them), merged
    /// and clipped to the size.
    private func dataRanges(_ inode: Inode) throws(Errno) -> [Range<UInt64>] {
        let block = UInt64(Format.blockBytes)
        var shared = try kernel.dataBlocks(inode: inode.number).map { $0.lowerBound * block ..< $0.upperBound * block }
        var result: [Range<UInt64>] = []
        if let index = pending.data[inode.number] {
            // Zeroed pieces cut the shared ranges (whole blocks only); written pieces add.
            for piece in index.pieces where piece.isZeros {
                let low = (piece.start + block - 1) / block * block
                let high = piece.end == UInt64.max ? UInt64.max : piece.end / block * block
                guard low < high else { continue }
                shared = shared.flatMap { range -> [Range<UInt64>] in
                    var parts: [Range<UInt64>] = []
                    if range.lowerBound < low { parts.append(range.lowerBound ..< min(range.upperBound, low)) }
                    if range.upperBound > high { parts.append(max(range.lowerBound, high) ..< range.upperBound) }
                    return parts
                }
            }
            result = index.pieces.filter { !$0.isZeros }.map { $0.start / block * block ..< ($0.end + block - 1) / block * block }
            result += index.pieces.filter { $0.source == DataPiece.zerosKeepingBlock && $0.start % block != 0 }
                .map { $0.start / block * block ..< $0.start / block * block + block }
        }
        let all = (shared + result).sorted { $0.lowerBound < $1.lowerBound }
        var merged: [Range<UInt64>] = []
        for range in all {
            let clipped = range.lowerBound ..< min(range.upperBound, inode.size)
            guard !clipped.isEmpty else { continue }
            if let last = merged.last, last.upperBound >= clipped.lowerBound {
                merged[merged.count - 1] = last.lowerBound ..< max(last.upperBound, clipped.upperBound)
            } else {
                merged.append(clipped)
            }
        }
        return merged
    }

    // MARK: - Attributes

    public func stat(_ path: Path) throws(Errno) -> FileStatus {
        try locked { () throws(Errno) in FileStatus(try resolve(path)) }
    }

    public func lstat(_ path: Path) throws(Errno) -> FileStatus {
        try locked { () throws(Errno) in FileStatus(try resolve(path, followFinal: false)) }
    }

    public func fstat(_ handle: FileHandle) throws(Errno) -> FileStatus {
        try locked { () throws(Errno) in FileStatus(try existingInode(try file(handle).inode)) }
    }

    /// access(2) with R_OK = 4, W_OK = 2, X_OK = 1 (0 = exists).
    public func access(_ path: Path, _ mode: UInt32) throws(Errno) {
        try locked { () throws(Errno) in try require(try resolve(path), Access(rawValue: mode & 7)) }
    }

    /// access of inode `number` (mask as access(2)).
    public func access(inode number: UInt64, _ mode: UInt32, as who: Credentials? = nil) throws(Errno) {
        try locked(as: who) { () throws(Errno) in try require(try liveInode(number), Access(rawValue: mode & 7)) }
    }

    /// The fields of one setattr record, each change checked before anything is logged.
    /// `touch`: log the record even when no field changes (chown(2) with -1 and -1 still
    /// changes ctime, as Linux).
    private struct AttributePlan {
        var valid: SetattrMask = []
        var mode: UInt32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        var atime = Timestamp(seconds: 0)
        var mtime = Timestamp(seconds: 0)
        var touch = false

        var isEmpty: Bool { valid.isEmpty && !touch }
    }

    /// Logs `plan` as one setattr record (its commit point) and returns the changed inode.
    @discardableResult
    private func apply(_ plan: AttributePlan, to current: Inode) throws(Errno) -> Inode {
        let time = Self.now()
        let sequence = try append(.setattr(SetattrArguments(inode: current.number, valid: plan.valid, mode: plan.mode, uid: plan.uid,
                                                             gid: plan.gid, atime: plan.atime, mtime: plan.mtime, ctime: time)))
        var inode = current
        if plan.valid.contains(.mode) { inode.mode = inode.mode & Inode.typeMask | plan.mode }
        if plan.valid.contains(.uid) { inode.uid = plan.uid }
        if plan.valid.contains(.gid) { inode.gid = plan.gid }
        if plan.valid.contains(.atime) { inode.atime = plan.atime }
        if plan.valid.contains(.mtime) { inode.mtime = plan.mtime }
        inode.ctime = time
        setPending(inode, sequence)
        return inode
    }

    public func chmod(_ path: Path, mode: UInt32) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let inode = try resolve(path)
            var plan = AttributePlan()
            try planChmod(inode, mode: mode, into: &plan)
            try apply(plan, to: inode)
        }
    }

    public func fchmod(_ handle: FileHandle, mode: UInt32) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let inode = try existingInode(try file(handle).inode)
            var plan = AttributePlan()
            try planChmod(inode, mode: mode, into: &plan)
            try apply(plan, to: inode)
        }
    }

    private func planChmod(_ inode: Inode, mode: UInt32, into plan: inout AttributePlan) throws(Errno) {
        guard isOwnerOrRoot(inode) else { throw .notPermitted }
        var permissions = mode & 0o7777
        // An unprivileged owner outside the file's group cannot make it set-gid (Linux).
        if !caller.isRoot, !inode.isDirectory, !caller.inGroup(inode.gid) { permissions &= ~0o2000 }
        plan.valid.insert(.mode)
        plan.mode = permissions
    }

    /// chown(2); `UInt32.max` leaves an id unchanged. `followSymlinks: false` is lchown.
    public func chown(_ path: Path, uid: UInt32, gid: UInt32, followSymlinks: Bool = true) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let inode = try resolve(path, followFinal: followSymlinks)
            var plan = AttributePlan()
            try planChown(inode, uid: uid, gid: gid, into: &plan)
            try apply(plan, to: inode)
        }
    }

    public func fchown(_ handle: FileHandle, uid: UInt32, gid: UInt32) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let inode = try existingInode(try file(handle).inode)
            var plan = AttributePlan()
            try planChown(inode, uid: uid, gid: gid, into: &plan)
            try apply(plan, to: inode)
        }
    }

    private func planChown(_ inode: Inode, uid: UInt32, gid: UInt32, into plan: inout AttributePlan) throws(Errno) {
        if uid != UInt32.max {
            guard caller.isRoot || caller.uid == inode.uid && uid == inode.uid else { throw .notPermitted }
            plan.valid.insert(.uid)
            plan.uid = uid
        }
        if gid != UInt32.max {
            guard caller.isRoot || caller.uid == inode.uid && (gid == inode.gid || caller.inGroup(gid)) else {
                throw .notPermitted
            }
            plan.valid.insert(.gid)
            plan.gid = gid
        }
        // Changing owners drops set-uid, and set-gid on group-executable files (Linux).
        var mode = inode.mode & 0o7777
        if !inode.isDirectory {
            mode &= ~0o4000
            if mode & 0o010 != 0 { mode &= ~0o2000 }
        }
        if mode != inode.mode & 0o7777 {
            plan.valid.insert(.mode)
            plan.mode = mode
        }
        plan.touch = true
    }

    /// utimensat(2).
    public func utimens(_ path: Path, access: TimeChange, modification: TimeChange, followSymlinks: Bool = true) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let inode = try resolve(path, followFinal: followSymlinks)
            var plan = AttributePlan()
            try planUtimens(inode, access: access, modification: modification, into: &plan)
            if !plan.isEmpty { try apply(plan, to: inode) }
        }
    }

    public func futimens(_ handle: FileHandle, access: TimeChange, modification: TimeChange) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            let inode = try existingInode(try file(handle).inode)
            var plan = AttributePlan()
            try planUtimens(inode, access: access, modification: modification, into: &plan)
            if !plan.isEmpty { try apply(plan, to: inode) }
        }
    }

    private func planUtimens(_ inode: Inode, access: TimeChange, modification: TimeChange, into plan: inout AttributePlan) throws(Errno) {
        if access == .omit, modification == .omit { return }
        let explicit = [access, modification].contains { if case .set = $0 { true } else { false } }
        if explicit {
            guard isOwnerOrRoot(inode) else { throw .notPermitted }
        } else if !isOwnerOrRoot(inode) {
            guard permits(inode, .write) else { throw .permissionDenied }
        }
        let now = Self.now()
        switch access {
        case .now: plan.valid.insert(.atime); plan.atime = now
        case let .set(time): plan.valid.insert(.atime); plan.atime = time
        case .omit: break
        }
        switch modification {
        case .now: plan.valid.insert(.mtime); plan.mtime = now
        case let .set(time): plan.valid.insert(.mtime); plan.mtime = time
        case .omit: break
        }
    }

    /// setattr (FUSE's SETATTR): chown, chmod, utimensat and truncate of inode `number` in
    /// one call, with the same checks as each (a size change through `handle` is ftruncate's).
    /// Every check passes before anything is logged; a size change is its own record, logged
    /// before the one record of the other fields. Returns the new status.
    public func setattr(inode number: UInt64, _ changes: AttributeChanges, handle: FileHandle? = nil,
                        as who: Credentials? = nil) throws(Errno) -> FileStatus {
        try locked(as: who) { () throws(Errno) in
            try awaitLogSpace(2 * Self.smallRecordBytes)
            var inode = try liveInode(number)
            let file = try handle.map { (handle) throws(Errno) in try self.file(handle) }
            if let file, file.inode != inode.number { throw .badFileDescriptor }
            var changes = changes
            // A size change sets mtime and ctime to now by itself (the truncate record), so
            // the "mtime now" the kernel sends with every truncate needs no record of its own:
            // the call stays one record, applied whole or not at all. (Size together with
            // other attributes is still two records: see docs/architecture.md, known issues.)
            if changes.size != nil, changes.mtime == .now { changes.mtime = .omit }
            var plan = AttributePlan()
            if changes.uid != nil || changes.gid != nil {
                try planChown(inode, uid: changes.uid ?? .max, gid: changes.gid ?? .max, into: &plan)
            }
            if let mode = changes.mode {
                if !isOwnerOrRoot(inode), Self.onlyDropsSetID(from: inode.mode, to: mode), permits(inode, .write) {
                    // The kernel dropping set-id bits before a write or truncate by a caller
                    // who may write the file (FUSE without HANDLE_KILLPRIV sends that as a
                    // mode change from the writer). It only takes privilege away, and a write
                    // by the same caller would drop the same bits.
                    plan.valid.insert(.mode)
                    plan.mode = mode & 0o7777
                } else {
                    try planChmod(inode, mode: mode, into: &plan)
                }
            }
            try planUtimens(inode, access: changes.atime, modification: changes.mtime, into: &plan)
            if let size = changes.size {
                try requireTruncatable(inode, through: file)
                inode = try truncateLocked(inode, to: size)
            }
            if !plan.isEmpty { inode = try apply(plan, to: inode) }
            return FileStatus(inode)
        }
    }

    public func readlink(_ path: Path) throws(Errno) -> [UInt8] {
        try locked { () throws(Errno) in try readlinkLocked(try resolve(path, followFinal: false)) }
    }

    /// readlink of inode `number`.
    public func readlink(inode number: UInt64) throws(Errno) -> [UInt8] {
        try locked { () throws(Errno) in try readlinkLocked(try liveInode(number)) }
    }

    private func readlinkLocked(_ inode: Inode) throws(Errno) -> [UInt8] {
        guard inode.mode & Inode.typeMask == Inode.typeSymlink else { throw .invalidArgument }
        return try symlinkTarget(inode)
    }

    public func statfs() throws(Errno) -> FileSystemStatistics {
        try locked { () throws(Errno) in
            var statistics = kernel.statistics()
            statistics.freeBlocks -= min(statistics.freeBlocks, pending.pendingBlocks)
            statistics.freeInodes -= min(statistics.freeInodes, UInt64(spareInodeNumbers.count))
            return statistics
        }
    }

    /// fsync(2): every call that returned is already durable; this only checks the handle.
    public func fsync(_ handle: FileHandle) throws(Errno) {
        try locked { () throws(Errno) in _ = try file(handle) }
    }

    // MARK: - Directories

    /// Up to `limit` entries after `cookie` (0 = from the start), "." and ".." first.
    public func readDirectory(_ handle: FileHandle, after cookie: UInt64 = 0, limit: Int = 1024) throws(Errno) -> [DirectoryEntryInfo] {
        try locked { () throws(Errno) in
            let file = try file(handle)
            guard file.isDirectory else { throw .notDirectory }
            let directory = try existingInode(file.inode)
            // A listing comes from the shared area with its stable cookies: digest this
            // directory's pending changes into it first.
            if pending.entries[directory.number] != nil || pending.inodes[directory.number] != nil { try digestToEnd() }
            var result: [DirectoryEntryInfo] = []
            if cookie == 0 { result.append(DirectoryEntryInfo(name: Self.dot, inode: directory.number, type: 4, cookie: 1)) }
            if cookie <= 1, result.count < limit {
                let parent = directory.number == kernel.rootInode ? directory.number : directory.parentHint
                result.append(DirectoryEntryInfo(name: Self.dotDot, inode: parent, type: 4, cookie: 2))
            }
            guard result.count < limit else { return result }
            let listing = try kernel.list(directory: directory.number, after: cookie <= 2 ? 0 : cookie - 2, limit: limit - result.count)
            for entry in listing.entries {
                result.append(DirectoryEntryInfo(name: entry.name, inode: entry.inode, type: entry.type, cookie: entry.cookie + 2))
            }
            return result
        }
    }

    /// Every name in the directory at `path` ("." and ".." left out).
    public func listDirectory(_ path: Path) throws(Errno) -> [DirectoryEntryInfo] {
        let handle = try open(path, [.directory])
        defer { try? close(handle) }
        var all: [DirectoryEntryInfo] = []
        var cookie: UInt64 = 2
        while true {
            let batch = try readDirectory(handle, after: cookie, limit: 4096)
            guard let last = batch.last else { break }
            all += batch
            cookie = last.cookie
        }
        return all
    }

    // MARK: - Extended attributes

    private static func validateXattrName(_ name: [UInt8]) throws(Errno) {
        guard !name.isEmpty else { throw .outOfRange }
        guard name.count <= SetxattrArguments.nameBytesMax else { throw .outOfRange }
        let namespaces = ["user.", "trusted.", "security.", "system."].map { Array($0.utf8) }
        // A namespace alone ("user.") is EINVAL, as Linux's xattr_resolve_name answers.
        guard !namespaces.contains(name) else { throw .invalidArgument }
        guard namespaces.contains(where: { name.starts(with: $0) && name.count > $0.count }) else { throw .notSupported }
        // POSIX ACLs are not supported: EOPNOTSUPP, as from a Linux file system without ACLs.
        // Kept as opaque bytes, an ACL would decide nothing while tools took it as applied:
        // `cp -a` sets permissions by writing system.posix_acl_access, and its files kept the
        // restrictive mode they were created with.
        let acls = ["system.posix_acl_access", "system.posix_acl_default"].map { Array($0.utf8) }
        guard !acls.contains(name) else { throw .notSupported }
    }

    private func requireXattrAccess(_ inode: Inode, _ name: [UInt8], write: Bool) throws(Errno) {
        if name.starts(with: Array("trusted.".utf8)) {
            guard caller.isRoot else { throw write ? .notPermitted : .noAttribute }
        } else if name.starts(with: Array("user.".utf8)) {
            let type = inode.mode & Inode.typeMask
            guard type == Inode.typeRegular || type == Inode.typeDirectory else { throw write ? .notPermitted : .noAttribute }
            try require(inode, write ? .write : .read)
        } else if write {
            guard isOwnerOrRoot(inode) else { throw .notPermitted }
        }
    }

    public func getxattr(_ path: Path, name: String, followSymlinks: Bool = true) throws(Errno) -> [UInt8] {
        try locked { () throws(Errno) in try getxattrLocked(try resolve(path, followFinal: followSymlinks), Array(name.utf8)) }
    }

    /// getxattr of inode `number`.
    public func getxattr(inode number: UInt64, name: [UInt8], as who: Credentials? = nil) throws(Errno) -> [UInt8] {
        try locked(as: who) { () throws(Errno) in try getxattrLocked(try liveInode(number), name) }
    }

    private func getxattrLocked(_ inode: Inode, _ key: [UInt8]) throws(Errno) -> [UInt8] {
        try Self.validateXattrName(key)
        try requireXattrAccess(inode, key, write: false)
        guard let found = try xattrs(inode).first(where: { $0.name == key }) else { throw .noAttribute }
        return found.value
    }

    public func listxattr(_ path: Path, followSymlinks: Bool = true) throws(Errno) -> [String] {
        try locked { () throws(Errno) in
            try listxattrLocked(try resolve(path, followFinal: followSymlinks)).map { String(decoding: $0, as: UTF8.self) }
        }
    }

    /// listxattr of inode `number`: the names, in the order they were set.
    public func listxattr(inode number: UInt64, as who: Credentials? = nil) throws(Errno) -> [[UInt8]] {
        try locked(as: who) { () throws(Errno) in try listxattrLocked(try liveInode(number)) }
    }

    private func listxattrLocked(_ inode: Inode) throws(Errno) -> [[UInt8]] {
        let trusted = Array("trusted.".utf8)
        return try xattrs(inode).map(\.name).filter { !$0.starts(with: trusted) || caller.isRoot }
    }

    /// setxattr(2); `flags` may hold XATTR_CREATE or XATTR_REPLACE.
    public func setxattr(_ path: Path, name: String, value: [UInt8], flags: XattrFlags = [], followSymlinks: Bool = true) throws(Errno) {
        try locked { () throws(Errno) in
            guard value.count <= SetxattrArguments.valueBytesMax else { throw .argListTooLong }
            try awaitLogSpace(Self.smallRecordBytes + value.count)
            // XATTR_CREATE with XATTR_REPLACE is no error in itself: each is checked (EEXIST or
            // ENODATA), as Linux file systems do.
            guard flags.isSubset(of: .known) else { throw .invalidArgument }
            try setxattrLocked(try resolve(path, followFinal: followSymlinks), Array(name.utf8), value, flags: flags)
        }
    }

    /// setxattr of inode `number`.
    public func setxattr(inode number: UInt64, name: [UInt8], value: [UInt8], flags: XattrFlags = [],
                         as who: Credentials? = nil) throws(Errno) {
        try locked(as: who) { () throws(Errno) in
            guard value.count <= SetxattrArguments.valueBytesMax else { throw .argListTooLong }
            try awaitLogSpace(Self.smallRecordBytes + value.count)
            // XATTR_CREATE with XATTR_REPLACE is no error in itself: each is checked (EEXIST or
            // ENODATA), as Linux file systems do.
            guard flags.isSubset(of: .known) else { throw .invalidArgument }
            try setxattrLocked(try liveInode(number), name, value, flags: flags)
        }
    }

    private func setxattrLocked(_ inode: Inode, _ key: [UInt8], _ value: [UInt8], flags: XattrFlags) throws(Errno) {
        try Self.validateXattrName(key)
        try requireXattrAccess(inode, key, write: true)
        var attributes = try xattrs(inode)
        let existing = attributes.firstIndex { $0.name == key }
        if flags.contains(.create), existing != nil { throw .fileExists }
        if flags.contains(.replace), existing == nil { throw .noAttribute }
        // The same rule as the digest's: the serialized set must fit its blocks.
        func bytes(_ name: [UInt8], _ value: [UInt8]) -> Int { XattrSet.entryHeaderBytes + name.count + value.count }
        let total = attributes.reduce(0) { $0 + bytes($1.name, $1.value) }
            - (existing.map { bytes(attributes[$0].name, attributes[$0].value) } ?? 0) + bytes(key, value)
        guard total <= Self.xattrBytesMax else { throw .noSpace }
        let blocks = UInt64(XattrBlock.blocksNeeded(setBytes: total))
        try requireBlocks(blocks)
        let time = Self.now()
        let sequence = try append(.setxattr(SetxattrArguments(inode: inode.number, flags: flags, name: key, value: value, time: time)))
        if let existing { attributes[existing].value = value } else { attributes.append((key, value)) }
        var changed = inode
        changed.ctime = time
        setPending(changed, sequence)
        pending.inodes[inode.number]!.xattrs = attributes
        pending.demand(blocks, sequence: sequence)
    }

    public func removexattr(_ path: Path, name: String, followSymlinks: Bool = true) throws(Errno) {
        try locked { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            try removexattrLocked(try resolve(path, followFinal: followSymlinks), Array(name.utf8))
        }
    }

    /// removexattr of inode `number`.
    public func removexattr(inode number: UInt64, name: [UInt8], as who: Credentials? = nil) throws(Errno) {
        try locked(as: who) { () throws(Errno) in
            try awaitLogSpace(Self.smallRecordBytes)
            try removexattrLocked(try liveInode(number), name)
        }
    }

    private func removexattrLocked(_ inode: Inode, _ key: [UInt8]) throws(Errno) {
        try Self.validateXattrName(key)
        try requireXattrAccess(inode, key, write: true)
        var attributes = try xattrs(inode)
        guard let existing = attributes.firstIndex(where: { $0.name == key }) else { throw .noAttribute }
        let time = Self.now()
        let sequence = try append(.removexattr(RemoveXattrArguments(inode: inode.number, name: key, time: time)))
        attributes.remove(at: existing)
        var changed = inode
        changed.ctime = time
        setPending(changed, sequence)
        pending.inodes[inode.number]!.xattrs = attributes
    }
}

/// Permission bits a call needs (rwx as in a mode's owner, group or other triple). Outside
/// the generic `FileSystem` on purpose: nested in it, every OptionSet operation ran as
/// unspecialised generic code (a path walk checks it at every step).
struct FileAccess: OptionSet {
    let rawValue: UInt32
    static var read: FileAccess { FileAccess(rawValue: 4) }
    static var write: FileAccess { FileAccess(rawValue: 2) }
    static var execute: FileAccess { FileAccess(rawValue: 1) }
}

/// Linux's fs.protected_hardlinks, read once: on unless the host turned it off (it is on by
/// default on every mainstream distribution).
let protectedHardlinks: Bool = {
    let fd = open("/proc/sys/fs/protected_hardlinks", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return true }
    defer { close(fd) }
    var byte: UInt8 = 0
    return read(fd, &byte, 1) != 1 || byte != UInt8(ascii: "0")
}()
