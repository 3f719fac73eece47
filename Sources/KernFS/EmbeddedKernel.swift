// EmbeddedKernel: the kernel role inside the application's own process (embedded mode,
// docs/architecture.md "Embedded mode"). It implements LibFS's `FileSystemKernel` over one
// volume: grants log regions, hands out inode numbers, digests, and answers reads of the
// shared area. One lock serialises everything that touches the shared area (digest batches
// and reads), so a reader never sees a half-applied transaction; LibFS never holds it
// across its own work.
//
// Opening (`FileSystem.open(volume:)`) takes the volume's exclusive lock (a second opener
// gets "in use"), recovers (digests every log a crash left, frees orphans) before anything
// is served, then attaches a fresh log region for the new LibFS instance.

import LibFS
import ShaleFormat
import ShaleMedia
import SystemPackage
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

private typealias Inode = ShaleFormat.Inode

/// A reader-writer lock that prefers writers (a commit is never starved by reads).
final class SharedAreaLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_rwlock_t())
        var attributes = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attributes)
        pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        pthread_rwlock_init(lock, &attributes)
        pthread_rwlockattr_destroy(&attributes)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    @inline(__always)
    func reading<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    func writing(_ body: () -> Void) {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        body()
    }
}

public final class EmbeddedKernel<NVM: PersistentMemory>: FileSystemKernel, @unchecked Sendable {
    public let nvm: NVM
    public let superblock: Superblock
    public let allocator: BlockAllocator<NVM>
    public let inodes: InodeTable<NVM>
    public let digester: Digester<NVM>
    public var rootInode: UInt64 { superblock.rootInode }
    /// What recovery found when the kernel opened.
    public let recovered: [RegionRecovery]
    /// Records refused by digests since the kernel opened (region, sequence, reason).
    public private(set) var refusals: [(region: Int, sequence: UInt64, reason: String)] = []
    /// Records coalescing skipped since the kernel opened (inodes created and removed
    /// within one batch).
    public private(set) var coalescedRecords = 0
    /// Keeps the volume (its lock, its mapping) alive while the kernel is.
    private var owner: AnyObject?
    /// Serialises everything that changes the shared area or the kernel's DRAM state
    /// (digest batches, inode numbers, orphans, open counts, statistics).
    private let lock = PthreadMutex()
    /// Readers of the shared area take it shared; a commit's in-place application takes it
    /// exclusively. Readers touch NVM only (never the allocator's or inode table's DRAM
    /// state), and what a batch writes before its commit is either unreferenced (new
    /// blocks) or bytes LibFS's pending state still covers, so reads go on during a digest.
    private let shared = SharedAreaLock()
    private var openCounts: [UInt64: Int] = [:]
    private let seed: UInt32

    /// Opens the kernel over a volume's NVM and recovers every log left behind. The caller
    /// holds the volume exclusively.
    public init(nvm: NVM, superblock: Superblock, owner: AnyObject? = nil) throws(Errno) {
        self.nvm = nvm
        self.superblock = superblock
        self.owner = owner
        seed = superblock.volumeID.checksumSeed
        do {
            allocator = try BlockAllocator(nvm: nvm, device: superblock.device(.nvm)!, volumeSeed: seed)
            inodes = try InodeTable(nvm: nvm, superblock: superblock, nvmAllocator: allocator)
        } catch {
            Self.report("cannot open the shared area: \(error)")
            throw .ioError
        }
        digester = Digester(nvm: nvm, superblock: superblock, allocator: allocator, inodes: inodes)
        // Recovery at open: every committed record of every log, before anything is served.
        do {
            recovered = try digester.recoverAllLogs()
        } catch {
            Self.report("recovery failed: \(error)")
            throw Self.errno(error)
        }
        for result in recovered {
            for refusal in result.refused { refusals.append((result.region, refusal.sequence, refusal.reason)) }
        }
        // Called by the digester with the kernel lock held, like every use of `openCounts`.
        digester.isOpen = { [unowned self] number in openCounts[number] != nil }
        digester.journal.applyExclusively = { [shared] apply in shared.writing(apply) }
    }

    static func report(_ message: String) {
        var line = "shale: " + message + "\n"
        line.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }

    static func errno(_ error: any Error) -> Errno {
        if let digest = error as? DigestError, case .noSpace = digest { return .noSpace }
        return .ioError
    }

    private func readTransaction() -> MetadataTransaction<NVM> { MetadataTransaction(journal: digester.journal) }

    // MARK: - Logs

    public func attachLog(ownerPID: UInt32, ownerUID: UInt32) throws(Errno) -> LogGrant {
        try lock.run { () throws(Errno) -> LogGrant in
            var now = timespec()
            clock_gettime(CLOCK_REALTIME, &now)
            do {
                return try digester.logTable.attach(ownerPID: ownerPID, ownerUID: ownerUID, nowSeconds: Int64(now.tv_sec))
            } catch {
                Self.report("\(error)")
                throw .noSpace
            }
        }
    }

    public func detachLog(region: Int) throws(Errno) {
        try lock.run { () throws(Errno) in
            do {
                try digester.logTable.release(region)
            } catch {
                Self.report("\(error)")
                throw .ioError
            }
        }
    }

    public func shutdown() {
        // The volume's lock goes with its owner (the NVM mapping stays while anything uses it).
        lock.run { owner = nil }
    }

    @_specialize(where NVM == MappedPersistentMemory)
    public func digest(region: Int) throws(Errno) -> DigestCursor {
        try lock.run { () throws(Errno) -> DigestCursor in
            let report: DigestReport
            do {
                report = try digester.digest(region: region, recovery: false)
            } catch {
                Self.report("\(error)")
                throw Self.errno(error)
            }
            coalescedRecords += report.coalesced
            for refusal in report.refused {
                Self.report("log \(region): refused record \(refusal.sequence): \(refusal.reason)")
                refusals.append((region, refusal.sequence, refusal.reason))
            }
            return DigestCursor(offset: report.cursorOffset, sequence: report.cursorSequence, reachedEnd: report.end != nil,
                                refused: report.refused.count)
        }
    }

    // MARK: - Inode numbers

    public func reserveInodeNumbers(_ count: Int) throws(Errno) -> [UInt64] {
        try lock.run { () throws(Errno) -> [UInt64] in
            let transaction = MetadataTransaction(journal: digester.journal)
            do {
                let numbers = try inodes.allocate(count, in: transaction)
                // A new inode chunk commits here (its numbers are free for everyone after).
                if !transaction.isEmpty { try transaction.commit() }
                return numbers
            } catch {
                transaction.abort()
                try? inodes.reload()
                try? allocator.reload()
                throw .noSpace
            }
        }
    }

    public func releaseInodeNumbers(_ numbers: [UInt64]) {
        lock.run { inodes.release(numbers) }
    }

    // MARK: - Reading the shared area

    private func readInode(_ number: UInt64, _ transaction: MetadataTransaction<NVM>) throws(Errno) -> Inode? {
        do {
            return try inodes.read(number, in: transaction)
        } catch {
            if case .outOfRange = error { return nil }
            Self.report("\(error)")
            throw .ioError
        }
    }

    public var sharedGeneration: UInt64 { digester.journal.generation.load(ordering: .acquiring) }

    @_specialize(where NVM == MappedPersistentMemory)
    public func inode(_ number: UInt64) throws(Errno) -> ShaleFormat.Inode? {
        try shared.reading { () throws(Errno) -> ShaleFormat.Inode? in try readInode(number, readTransaction()) }
    }

    private func directoryParts(_ number: UInt64, _ transaction: MetadataTransaction<NVM>) throws(Errno)
        -> (store: DirectoryStore<NVM>, map: InodeBlockMap<NVM>)? {
        guard let inode = try readInode(number, transaction), inode.isDirectory else { return nil }
        do {
            let map = try InodeBlockMap(inode: inode, transaction: transaction, allocator: allocator, seed: seed)
            let store = DirectoryStore(directory: number, hashKey: superblock.directoryHashKey, volumeSeed: seed, transaction: transaction)
            return (store, map)
        } catch {
            Self.report("\(error)")
            throw .ioError
        }
    }

    @_specialize(where NVM == MappedPersistentMemory)
    public func lookup(directory: UInt64, name: [UInt8]) throws(Errno) -> SharedDirectoryEntry? {
        try shared.reading { () throws(Errno) -> SharedDirectoryEntry? in
            guard let (store, map) = try directoryParts(directory, readTransaction()) else { return nil }
            do {
                guard let entry = try store.lookup(name, in: map) else { return nil }
                return SharedDirectoryEntry(name: entry.name, inode: entry.inode, type: entry.type, cookie: 0)
            } catch {
                Self.report("\(error)")
                throw .ioError
            }
        }
    }

    @_specialize(where NVM == MappedPersistentMemory)
    public func list(directory: UInt64, after cookie: UInt64, limit: Int) throws(Errno) -> (entries: [SharedDirectoryEntry], next: UInt64?) {
        try shared.reading { () throws(Errno) -> (entries: [SharedDirectoryEntry], next: UInt64?) in
            guard let (store, map) = try directoryParts(directory, readTransaction()) else { return ([], nil) }
            do {
                let listing = try store.list(map, after: cookie, limit: limit)
                let entries = zip(listing.entries, listing.cookies).map {
                    SharedDirectoryEntry(name: $0.name, inode: $0.inode, type: $0.type, cookie: $1)
                }
                return (entries, listing.next)
            } catch {
                Self.report("\(error)")
                throw .ioError
            }
        }
    }

    private func lookup(_ logical: UInt64, in map: ExtentMap<NVM>) throws(Errno) -> Extent? {
        do {
            return try map.lookup(logical)
        } catch {
            Self.report("\(error)")
            throw .ioError
        }
    }

    private func extentMap(_ inode: Inode, _ transaction: MetadataTransaction<NVM>) throws(Errno) -> ExtentMap<NVM> {
        do {
            return try ExtentMap<NVM>(inode: inode, transaction: transaction, nvmData: allocator.device, seed: seed)
        } catch {
            Self.report("\(error)")
            throw .ioError
        }
    }

    @_specialize(where NVM == MappedPersistentMemory)
    public func read(inode number: UInt64, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) {
        try shared.reading { () throws(Errno) in
            guard let base = buffer.baseAddress, buffer.count > 0 else { return }
            base.initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count)
            let transaction = readTransaction()
            guard let inode = try readInode(number, transaction), offset < inode.size else { return }
            if case let .inline(bytes) = inode.mapping {
                for index in 0 ..< buffer.count where offset + UInt64(index) < UInt64(bytes.count) {
                    buffer[index] = bytes[Int(offset) + index]
                }
                return
            }
            let map = try extentMap(inode, transaction)
            let block = UInt64(Format.blockBytes)
            let end = min(offset + UInt64(buffer.count), inode.size)
            var position = offset
            while position < end {
                let logical = position / block
                let within = position % block
                let take = min(block - within, end - position)
                if let extent = try lookup(logical, in: map), !extent.flags.contains(.unwritten) {
                    guard extent.tier == .nvm else {
                        Self.report("inode \(number): data on the \(extent.tier) tier cannot be read yet")
                        throw .ioError
                    }
                    let physical = extent.physicalBlock + (logical - extent.logicalBlock)
                    let source = nvm.baseAddress + Int(allocator.nvmOffset(ofBlock: physical) + within)
                    (base + Int(position - offset)).copyMemory(from: source, byteCount: Int(take))
                }
                position += take
            }
        }
    }

    @_specialize(where NVM == MappedPersistentMemory)
    public func dataBlocks(inode number: UInt64) throws(Errno) -> [Range<UInt64>] {
        try shared.reading { () throws(Errno) -> [Range<UInt64>] in
            let transaction = readTransaction()
            guard let inode = try readInode(number, transaction) else { return [] }
            if case .inline = inode.mapping { return inode.size > 0 ? [0 ..< 1] : [] }
            var ranges: [Range<UInt64>] = []
            let all: [Extent]
            do { all = try extentMap(inode, transaction).allExtents() } catch { Self.report("\(error)"); throw .ioError }
            for extent in all where !extent.flags.contains(.unwritten) {
                let range = extent.logicalBlock ..< extent.logicalBlock + UInt64(extent.blockCount)
                if let last = ranges.last, last.upperBound == range.lowerBound {
                    ranges[ranges.count - 1] = last.lowerBound ..< range.upperBound
                } else {
                    ranges.append(range)
                }
            }
            return ranges
        }
    }

    @_specialize(where NVM == MappedPersistentMemory)
    public func symlinkTarget(inode number: UInt64) throws(Errno) -> [UInt8] {
        try shared.reading { () throws(Errno) -> [UInt8] in
            let transaction = readTransaction()
            guard let inode = try readInode(number, transaction), inode.mode & Inode.typeMask == Inode.typeSymlink else {
                throw .invalidArgument
            }
            do {
                return try digester.symlinkTarget(of: inode, in: transaction)
            } catch {
                Self.report("\(error)")
                throw .ioError
            }
        }
    }

    @_specialize(where NVM == MappedPersistentMemory)
    public func extendedAttributes(inode number: UInt64) throws(Errno) -> [(name: [UInt8], value: [UInt8])] {
        try shared.reading { () throws(Errno) -> [(name: [UInt8], value: [UInt8])] in
            let transaction = readTransaction()
            guard let inode = try readInode(number, transaction) else { return [] }
            do {
                return try digester.extendedAttributes(of: inode, in: transaction)
            } catch {
                Self.report("\(error)")
                throw .ioError
            }
        }
    }

    // MARK: - Open files and orphans

    public func setOpen(_ number: UInt64, _ open: Bool) {
        lock.run {
            let count = (openCounts[number] ?? 0) + (open ? 1 : -1)
            openCounts[number] = count > 0 ? count : nil
        }
    }

    public func releaseOrphan(_ number: UInt64) throws(Errno) {
        try lock.run { () throws(Errno) in
            do {
                try digester.releaseOrphan(number)
            } catch {
                Self.report("\(error)")
                throw Self.errno(error)
            }
        }
    }

    @_specialize(where NVM == MappedPersistentMemory)
    public func statistics() -> FileSystemStatistics {
        lock.run {
            let perChunk = UInt64(superblock.layout.inodesPerChunk)
            let used = inodes.chunkCount * perChunk - UInt64(inodes.freeCount)
            let total = superblock.layout.inodeCapacity
            return FileSystemStatistics(blockBytes: UInt64(Format.blockBytes), totalBlocks: allocator.device.dataBlocks,
                                        freeBlocks: allocator.freeBlocks, totalInodes: total,
                                        freeInodes: total - min(total, used), nameBytesMax: UInt64(Format.nameBytesMax))
        }
    }
}

/// The file system of one volume in this process, with the kernel role embedded.
public typealias EmbeddedFileSystem = FileSystem<EmbeddedKernel<MappedPersistentMemory>>

extension FileSystem where Kernel == EmbeddedKernel<MappedPersistentMemory> {
    /// Opens the volume at `location` (its directory or manifest) for this process alone:
    /// takes its exclusive lock, recovers, and attaches a log.
    public static func open(volume location: String, credentials: Credentials = .current,
                            background: Bool = true) throws(VolumeError) -> FileSystem {
        let opened = try VolumeFiles.open(location, repair: true)
        guard !opened.inUseElsewhere else { throw .inUse(path: opened.manifestPath) }
        do {
            let kernel = try EmbeddedKernel(nvm: opened.volume.nvm, superblock: opened.volume.superblock, owner: opened)
            return try FileSystem(kernel: kernel, credentials: credentials, background: background)
        } catch {
            throw .media(MediaError(error, "opening \(opened.manifestPath)"))
        }
    }
}
