// Digest: applying the committed records of a client's operation log to the shared area
// (docs/architecture.md "Digest"). Every record type is applied, with Linux's semantics:
// create, mkdir, mknod, symlink, link, unlink, rmdir, rename (renameat2: plain, noReplace,
// exchange), write, truncate, fallocate (allocate, keep size, punch hole, zero range),
// setattr, setxattr and removexattr.
//
// Never trusting the log: each record is copied out of the client-writable region and its
// body checksum verified on the copy; `LogOperation.decode` validates its encoding; then the
// record is checked against the shared area (inodes exist with the right types, names refer
// to the inodes the record says, directories are empty before rmdir or being renamed over, a
// directory is not moved below itself, xattr flags agree with what exists) before anything of
// it is written: a transaction has no savepoints, so a refusal after a write would commit
// half a record. A refused record is reported and skipped.
//
// Durability: one MetadataTransaction per batch holds every metadata change and the new
// digest cursor; its commit is the batch's durability point. File data goes to NVM blocks
// before that commit: into blocks the file already maps (idempotent: digesting again after a
// crash rewrites the same bytes from the same log) or into new blocks nothing refers to until
// the commit (new data, long symlink targets, extended-attribute sets, which are copy-on-
// write). Blocks freed by the batch are freed last, so that no block freed in a batch is
// reused by the same uncommitted batch.
//
// Orphans: an inode whose last name goes (unlink, rmdir, rename over it) while a client has
// it open (`isOpen`), or during recovery (later records may still write it), stays allocated
// with linkCount 0; `releaseOrphan` frees it at its last close and `freeOrphans` sweeps them
// (recovery runs it after every log is digested).

import LibFS
import ShaleFormat
import ShaleMedia

public enum DigestError: Error, CustomStringConvertible {
    case notAttached(region: Int)
    case noSpace(String)
    case damaged(String)
    case journal(JournalError)
    /// A reader asked for something the inode does not have (the target of a regular file).
    case invalidRequest(String)

    public var description: String {
        switch self {
        case let .notAttached(region): "log region \(region) has no owner to digest"
        case let .noSpace(text): "digest stopped, the shared area is full: \(text)"
        case let .damaged(text): "digest stopped on damage in the shared area: \(text)"
        case let .journal(error): "digest: \(error)"
        case let .invalidRequest(text): text
        }
    }
}

public struct DigestReport: Sendable {
    public var applied = 0
    /// Of those, records coalescing skipped (their inode lived and died in the batch).
    public var coalesced = 0
    public var refused: [(sequence: UInt64, reason: String)] = []
    public var damage: [LogDamage] = []
    public var end: LogEnd?
    public var cursorOffset: UInt64 = 0
    public var cursorSequence: UInt64 = 0
}

/// Why one record is not applied (reported, then skipped).
struct Refusal: Error {
    var reason: String
    init(_ reason: String) { self.reason = reason }
}

public final class Digester<NVM: PersistentMemory>: @unchecked Sendable {
    public let nvm: NVM
    public let superblock: Superblock
    /// The window arena, kept between digests (its pages stay mapped).
    private var arena = BodyArena()
    private func takeArena() -> BodyArena {
        defer { arena = BodyArena() }
        return arena
    }
    public let journal: MetadataJournal<NVM>
    public let allocator: BlockAllocator<NVM>
    public let inodes: InodeTable<NVM>
    public let logTable: LogTable<NVM>
    /// Whether a client holds inode `number` open. An inode whose last link goes while open
    /// becomes an orphan (linkCount 0, kept with its blocks) instead of being freed; nil:
    /// nothing is open.
    public var isOpen: (@Sendable (UInt64) -> Bool)?
    private let seed: UInt32
    private static var blockBytes: UInt64 { UInt64(Format.blockBytes) }

    public init(nvm: NVM, superblock: Superblock, allocator: BlockAllocator<NVM>, inodes: InodeTable<NVM>) {
        self.nvm = nvm
        self.superblock = superblock
        journal = MetadataJournal(nvm: nvm, superblock: superblock)
        self.allocator = allocator
        self.inodes = inodes
        logTable = LogTable(nvm: nvm, superblock: superblock)
        seed = superblock.volumeID.checksumSeed
    }

    /// Digests up to `maxRecords` records of `region` from its digest cursor. `recovery`
    /// searches past damage (the log's owner is gone) and keeps inodes that lose their last
    /// link as orphans (later records of the log may still use them; `recoverAllLogs` frees
    /// them at the end); a live log ends at its first gap.
    // Specialised for the production NVM (and its callees in this module with it): called
    // through LibFS's generic kernel protocol, it would otherwise run unspecialised, paying a
    // runtime generic-metadata lookup at every use of a generic type.
    @_specialize(where NVM == MappedPersistentMemory)
    public func digest(region: Int, recovery: Bool, maxRecords: Int = 4096) throws(DigestError) -> DigestReport {
        guard let descriptor = logTable.read(region).descriptor, descriptor.state != .free else {
            throw .notAttached(region: region)
        }
        let layout = superblock.layout
        let recordSeed = LogRecordHeader.recordSeed(volumeSeed: seed, region: UInt32(region), epoch: descriptor.epoch)
        let regionView = nvm.view(at: Int(layout.logRegionOffset(region)), count: Int(layout.logRegionBytes))
        var scanner = LogScanner(region: regionView, epoch: UInt32(truncatingIfNeeded: descriptor.epoch), seed: recordSeed,
                                 startOffset: descriptor.digestedOffset, startSequence: descriptor.digestedSequence,
                                 searchPastDamage: recovery, copiesBodies: true, bodies: takeArena())
        // 1. The window: up to `maxRecords` records, each copied out of the client-writable
        //    region by the scanner and verified on the copy (the client may be writing its
        //    region right now: what is applied is what was checked), then decoded. A record
        //    that does not decode is refused here.
        var window: [WindowRecord] = []
        // The window's copies are bounded too (a batch of 1 MiB writes stops at 16 MiB).
        while window.count < maxRecords, scanner.bodies.byteCount < BodyArena.keptBytesMax, let record = scanner.next() {
            let body = record.body!
            var entry = WindowRecord(sequence: record.header.sequence, cursorOffset: scanner.offset, cursorSequence: scanner.nextSequence,
                                     operation: nil, body: body, refusal: nil)
            let decoded = scanner.bodies.withBody(body) { payload, _ in
                Result { () throws(FormatError) in
                    try LogOperation.decode(type: record.header.type, payload: payload, dataBytes: record.header.dataBytes)
                }
            }
            switch decoded {
            case let .success(operation): entry.operation = operation
            case let .failure(error): entry.refusal = "\(error)"
            }
            window.append(entry)
        }
        var report = DigestReport()
        report.damage = scanner.damage
        let bodies = scanner.bodies
        defer { arena = bodies }
        // 2. Apply. A batch that fills its share of the journal stops early; if it stopped
        //    inside a group coalescing skipped, it is rolled back and applied again over the
        //    records that fit, so every group is applied whole or skipped whole.
        var count = window.count
        while true {
            let skipped = recovery ? [:] : Self.coalescible(window[0 ..< count], isOpen: isOpen)
            let transaction = MetadataTransaction(journal: journal)
            var batch = Batch(transaction: transaction, keepsOrphans: recovery)
            // Leave room in the journal for the last record's changes and the cursor.
            let budget = journal.capacityBytes / 2
            var applied = 0, refused: [(sequence: UInt64, reason: String)] = [], released: [UInt64] = []
            var index = 0
            // A run of writes keeps its file's map unstored: its changes count too.
            while index < count, transaction.journalBytes + (batch.writing?.map.pendingJournalBytes ?? 0) < budget {
                let entry = window[index]
                index += 1
                if let reason = entry.refusal {
                    refused.append((entry.sequence, reason))
                    continue
                }
                let operation = entry.operation!
                if case let .write(first) = operation, batch.writing?.inode.number != first.inode, skipped[index - 1] == nil {
                    // A run of writes to one file starts: tell it what is coming.
                    var ranges: [Range<UInt64>] = []
                    var next = index - 1
                    while next < count, ranges.count < 4096, let upcoming = window[next].operation,
                          case let .write(write) = upcoming, write.inode == first.inode, skipped[next] == nil {
                        let (end, overflow) = write.offset.addingReportingOverflow(UInt64(write.length))
                        if !overflow { ranges.append(write.offset ..< end) }
                        next += 1
                    }
                    batch.lookahead = ranges
                }
                do {
                    do {
                        if let group = skipped[index - 1] {
                            // Coalesced: a file created and removed in this window costs
                            // nothing but its parents' times.
                            try touchParents(of: operation, batch: &batch)
                            if group.isCreate { released.append(group.inode) }
                        } else {
                            try bodies.withBody(entry.body) { _, data in try apply(operation, data: data, batch: &batch) }
                        }
                    } catch let error as InodeError {
                        // A number outside the table is the record's fault, not the shared area's.
                        if case .outOfRange = error { throw Refusal("\(error)") }
                        throw error
                    }
                    applied += 1
                } catch let refusal as Refusal {
                    refused.append((entry.sequence, refusal.reason))
                } catch {
                    rollBack(transaction)
                    throw Self.classify(error)
                }
            }
            if index < count {
                let straddles = Set(skipped.filter { $0.key < index }.map(\.value.inode))
                    .intersection(skipped.filter { $0.key >= index }.map(\.value.inode))
                if !straddles.isEmpty {
                    rollBack(transaction)
                    count = index
                    continue
                }
            }
            do {
                try finishWrites(&batch)
            } catch {
                rollBack(transaction)
                throw Self.classify(error)
            }
            report.applied = applied
            report.coalesced = skipped.keys.filter { $0 < index }.count
            report.refused = refused
            if index == window.count {
                report.end = scanner.end
                report.cursorOffset = scanner.offset
                report.cursorSequence = scanner.nextSequence
            } else {
                // Stopped early: the cursor is just after the last record taken.
                report.cursorOffset = window[index - 1].cursorOffset
                report.cursorSequence = window[index - 1].cursorSequence
            }
            if window.isEmpty {
                report.cursorOffset = scanner.offset
                report.cursorSequence = scanner.nextSequence
            }
            let cursorOffset = report.cursorOffset, cursorSequence = report.cursorSequence
            // Durability point of the batch: the journal's commit fence.
            let cursorAt = cursorOffset + UInt64(LogRecordHeader.encodedBytes) > layout.logRegionBytes ? 0 : cursorOffset
            try commit(batch, last: {
                if PlantedBug.active == .cursorBeforeApply {
                    // Planted: the cursor durable at once, before the changes it covers commit.
                    try logTable.advanceDigestCursor(region, offset: cursorAt, sequence: cursorSequence)
                } else {
                    try logTable.advanceDigestCursor(region, offset: cursorAt, sequence: cursorSequence, in: transaction)
                }
            }, fenced: PlantedBug.active != .earlyReclaim)
            // Numbers of coalesced creates were never written: free for anyone again.
            inodes.release(released)
            return report
        }
    }

    /// The records of one inode in a digest window, for coalescing.
    struct Life {
        var records: [Int] = []
        var links: Int64 = 0
        var eligible = true
        var ended = false
        var create = 0
    }

    /// One record of a digest window, copied out of the log.
    struct WindowRecord {
        var sequence: UInt64
        /// The digest cursor just after this record.
        var cursorOffset: UInt64
        var cursorSequence: UInt64
        var operation: LogOperation?
        /// The record's verified copy (its data: a write's bulk bytes).
        var body: BodyCopy
        var refusal: String?
    }

    /// A record coalescing skips: it belongs to the life of `inode`, created and removed in
    /// the window.
    struct SkippedRecord {
        var inode: UInt64
        var isCreate: Bool
    }

    /// The records of inodes created and removed within `window` (by index): creates,
    /// their data and attribute changes, links and the unlinks that end them. An inode
    /// qualifies only when every record naming it is of those kinds (no rename moves or
    /// replaces it, nothing is created inside it), its links reach zero at its last record,
    /// and it is not open (an open orphan must live on).
    static func coalescible(_ window: ArraySlice<WindowRecord>, isOpen: (@Sendable (UInt64) -> Bool)?) -> [Int: SkippedRecord] {
        var lives: [UInt64: Life] = [:]
        func disqualify(_ number: UInt64) { lives[number]?.eligible = false }
        for index in window.indices {
            guard let operation = window[index].operation else { continue }
            switch operation {
            case let .create(a), let .mkdir(a), let .mknod(a):
                disqualify(a.parent)
                if lives[a.inode] == nil {
                    var life = Life()
                    life.links = a.mode & Inode.typeMask == Inode.typeDirectory ? 2 : 1
                    life.records = [index]
                    life.create = index
                    lives[a.inode] = life
                } else {
                    disqualify(a.inode)
                }
            case let .symlink(a):
                disqualify(a.parent)
                if lives[a.inode] == nil {
                    var life = Life()
                    life.links = 1
                    life.records = [index]
                    life.create = index
                    lives[a.inode] = life
                } else {
                    disqualify(a.inode)
                }
            case let .link(a):
                disqualify(a.parent)
                if lives[a.inode]?.ended == true { disqualify(a.inode) }
                lives[a.inode]?.links += 1
                lives[a.inode]?.records.append(index)
            case let .unlink(a), let .rmdir(a):
                disqualify(a.parent)
                if lives[a.inode]?.ended == true { disqualify(a.inode) }
                if case .rmdir = operation { lives[a.inode]?.links = 0 } else { lives[a.inode]?.links -= 1 }
                lives[a.inode]?.records.append(index)
                if lives[a.inode]?.links == 0 { lives[a.inode]?.ended = true }
            case let .rename(a):
                disqualify(a.oldParent)
                disqualify(a.newParent)
                disqualify(a.source)
                disqualify(a.replaced)
            case let .write(a):
                if lives[a.inode]?.ended == true { disqualify(a.inode) }
                lives[a.inode]?.records.append(index)
            case let .truncate(a):
                if lives[a.inode]?.ended == true { disqualify(a.inode) }
                lives[a.inode]?.records.append(index)
            case let .fallocate(a):
                if lives[a.inode]?.ended == true { disqualify(a.inode) }
                lives[a.inode]?.records.append(index)
            case let .setattr(a):
                if lives[a.inode]?.ended == true { disqualify(a.inode) }
                lives[a.inode]?.records.append(index)
            case let .setxattr(a):
                if lives[a.inode]?.ended == true { disqualify(a.inode) }
                lives[a.inode]?.records.append(index)
            case let .removexattr(a):
                if lives[a.inode]?.ended == true { disqualify(a.inode) }
                lives[a.inode]?.records.append(index)
            }
        }
        var skipped: [Int: SkippedRecord] = [:]
        for (number, life) in lives where life.eligible && life.ended && isOpen?(number) != true {
            for index in life.records { skipped[index] = SkippedRecord(inode: number, isCreate: index == life.create) }
        }
        return skipped
    }

    /// What a coalesced record still does: the directories it named get its time as their
    /// mtime and ctime (as applying it and its partners would have left them).
    private func touchParents(of operation: LogOperation, batch: inout Batch) throws {
        let parent: UInt64, time: Timestamp
        switch operation {
        case let .create(a), let .mkdir(a), let .mknod(a): (parent, time) = (a.parent, a.time)
        case let .symlink(a): (parent, time) = (a.parent, a.time)
        case let .link(a): (parent, time) = (a.parent, a.time)
        case let .unlink(a), let .rmdir(a): (parent, time) = (a.parent, a.time)
        default: return
        }
        var directory = try liveDirectory(parent, in: batch.transaction)
        directory.mtime = time
        directory.ctime = time
        try inodes.write(directory, in: batch.transaction)
    }

    // MARK: - Orphans

    /// Frees orphan `number` (an allocated inode with no links left, kept while it was open)
    /// with its blocks, in a transaction of its own; call it at the inode's last close.
    /// Returns false, changing nothing, when the inode is free, out of range or still has a
    /// link. Must not run concurrently with a digest.
    @discardableResult
    public func releaseOrphan(_ number: UInt64) throws(DigestError) -> Bool {
        var batch = Batch(transaction: MetadataTransaction(journal: journal), keepsOrphans: false)
        do {
            guard let inode = try inodes.read(number, in: batch.transaction), inode.linkCount == 0 else {
                batch.transaction.abort()
                return false
            }
            try release(inode, batch: &batch)
        } catch {
            rollBack(batch.transaction)
            if let inodeError = error as? InodeError, case .outOfRange = inodeError { return false }
            throw Self.classify(error)
        }
        try commit(batch)
        return true
    }

    /// Frees every orphan (allocated inode with linkCount 0) that `isOpen` does not claim,
    /// with its blocks; returns how many. Recovery runs this after digesting every log, when
    /// nothing can be open, so that no orphan outlives a crash. Inode slots that do not
    /// decode are skipped (fsck reports them). Must not run concurrently with a digest.
    @discardableResult
    public func freeOrphans() throws(DigestError) -> Int {
        let candidates: [UInt64]
        do {
            candidates = try inodes.committedInodes { $0.linkCount == 0 }
        } catch {
            throw .damaged("\(error)")
        }
        var freed = 0
        var batch = Batch(transaction: MetadataTransaction(journal: journal), keepsOrphans: false)
        let budget = journal.capacityBytes / 2
        for number in candidates where isOpen?(number) != true {
            do {
                guard let inode = try inodes.read(number, in: batch.transaction), inode.linkCount == 0 else { continue }
                try release(inode, batch: &batch)
            } catch {
                rollBack(batch.transaction)
                throw Self.classify(error)
            }
            freed += 1
            if batch.transaction.journalBytes >= budget {
                try commit(batch)
                batch = Batch(transaction: MetadataTransaction(journal: journal), keepsOrphans: false)
            }
        }
        if batch.transaction.isEmpty && batch.freed.isEmpty {
            batch.transaction.abort()
        } else {
            try commit(batch)
        }
        return freed
    }

    // MARK: - Readers for the layers above

    /// The target of symbolic link `inode` (read through `transaction`, or a fresh one used
    /// read-only and dropped).
    public func symlinkTarget(of inode: Inode, in transaction: MetadataTransaction<NVM>? = nil) throws(DigestError) -> [UInt8] {
        try reading(transaction) { transaction in
            guard inode.mode & Inode.typeMask == Inode.typeSymlink else {
                throw DigestError.invalidRequest("inode \(inode.number) is not a symbolic link")
            }
            guard inode.size >= 1, inode.size <= UInt64(SymlinkArguments.targetBytesMax) else {
                throw DigestError.damaged("symbolic link \(inode.number) has a target of \(inode.size) bytes")
            }
            if case let .inline(bytes) = inode.mapping {
                guard bytes.count == Int(inode.size) else {
                    throw DigestError.damaged("symbolic link \(inode.number): \(bytes.count) inline bytes, size \(inode.size)")
                }
                return bytes
            }
            let map = try ExtentMap<NVM>(inode: inode, transaction: transaction, nvmData: allocator.device, seed: seed)
            guard let extent = try map.lookup(0), extent.tier == .nvm, !extent.flags.contains(.unwritten) else {
                throw DigestError.damaged("symbolic link \(inode.number) has no NVM block for its target")
            }
            return transaction.read(allocator.nvmOffset(ofBlock: extent.physicalBlock), count: Int(inode.size))
        }
    }

    /// Every extended attribute of `inode`, sorted by name.
    public func extendedAttributes(of inode: Inode, in transaction: MetadataTransaction<NVM>? = nil) throws(DigestError)
        -> [(name: [UInt8], value: [UInt8])] {
        try reading(transaction) { transaction in
            try readAttributes(of: inode, transaction).map { (name: $0.name, value: $0.value) }
        }
    }

    /// The value of extended attribute `name` of `inode`, or nil when it has none of that name.
    public func extendedAttribute(_ name: [UInt8], of inode: Inode, in transaction: MetadataTransaction<NVM>? = nil) throws(DigestError) -> [UInt8]? {
        try reading(transaction) { transaction in
            try readAttributes(of: inode, transaction).first { $0.name == name }?.value
        }
    }

    /// Every NVM data-area block holding `inode`'s extended attributes, head first (for fsck
    /// and accounting); empty when it has none.
    public func xattrBlocks(of inode: Inode, in transaction: MetadataTransaction<NVM>? = nil) throws(DigestError) -> [UInt64] {
        try reading(transaction) { transaction in try attributeBlocks(of: inode, transaction) }
    }

    private func reading<T>(_ given: MetadataTransaction<NVM>?, _ body: (MetadataTransaction<NVM>) throws -> T) throws(DigestError) -> T {
        let transaction = given ?? MetadataTransaction(journal: journal)
        defer { if given == nil { transaction.abort() } }
        do {
            return try body(transaction)
        } catch {
            throw Self.classify(error)
        }
    }

    // MARK: - Batches

    struct Batch {
        let transaction: MetadataTransaction<NVM>
        /// Inodes that lose their last link are kept as orphans (recovery), not freed.
        let keepsOrphans: Bool
        /// Blocks the batch stopped referencing; freed just before the commit.
        var freed: [Range<UInt64>] = []
        /// Coalescing: a run of writes to one file keeps its inode and extent map here and
        /// stores them once, when the run ends (another record, or the end of the batch),
        /// instead of once per record.
        var writing: (inode: Inode, map: ExtentMap<NVM>)?
        /// The byte ranges of the run's writes (set when a run starts): the blocks they
        /// need are allocated together, in one allocator call, into `reserve`.
        var lookahead: [Range<UInt64>] = []
        var reserve: [UInt64] = []
        var reserveNext = 0
    }

    /// Ends a run of writes: the file's map and inode go into the transaction.
    private func finishWrites(_ batch: inout Batch) throws {
        guard case (var inode, let map)? = batch.writing else { return }
        batch.writing = nil
        // Blocks reserved for the run and not used (a write that overwrote after all).
        var unused = batch.reserve[batch.reserveNext...].sorted()[...]
        batch.reserve = []
        batch.reserveNext = 0
        while let first = unused.first {
            var end = first + 1
            unused = unused.dropFirst()
            while unused.first == end { end += 1; unused = unused.dropFirst() }
            try allocator.free(first ..< end, in: batch.transaction)
        }
        try storeMap(map, into: &inode, batch.transaction)
        try inodes.write(inode, in: batch.transaction)
    }

    /// Frees what the batch stopped referencing, runs `last` (the digest cursor), commits.
    private func commit(_ batch: Batch, last: () throws -> Void = {}, fenced: Bool = true) throws(DigestError) {
        do {
            for freed in batch.freed { try allocator.free(freed, in: batch.transaction) }
            try last()
        } catch {
            rollBack(batch.transaction)
            throw .damaged("\(error)")
        }
        // Durability point: the file data the batch copied into blocks (stored and flushed,
        // not yet fenced) is durable before the journal's commit record can be. The journal
        // checksums only its own writes: without this fence a crash could keep a commit
        // that maps new blocks, and advances the cursor past their records, while their
        // contents were lost (found by `shale crashtest`, Fixtures/crashtest/log-wrap.txt).
        // (Kept under the planted early-reclaim too, which defers only the journal's fences.)
        if PlantedBug.active != .digestDataUnordered { nvm.fence() }
        do {
            try batch.transaction.commit(fenced: fenced)
        } catch {
            try? allocator.reload()
            try? inodes.reload()
            throw .journal(error)
        }
    }

    private func rollBack(_ transaction: MetadataTransaction<NVM>) {
        transaction.abort()
        try? allocator.reload()
        try? inodes.reload()
    }

    /// The digest error for what a lower layer threw: running out of space is `noSpace`,
    /// anything else is damage.
    static func classify(_ error: any Error) -> DigestError {
        switch error {
        case let error as DigestError: return error
        case let error as JournalError: return .journal(error)
        case let error as AllocationError: if case .noSpace = error { return .noSpace("\(error)") }
        case let error as DirectoryError: if case .noSpace = error { return .noSpace("\(error)") }
        case let error as ExtentMapError: if case .noSpace = error { return .noSpace("\(error)") }
        case let error as InodeError: if case .noSpace = error { return .noSpace("\(error)") }
        default: break
        }
        return .damaged("\(error)")
    }

    // MARK: - Applying one operation

    private func apply(_ operation: LogOperation, data: UnsafeRawBufferPointer, batch: inout Batch) throws {
        let transaction = batch.transaction
        // Every other record reads the shared area through the transaction: it must see the
        // writes before it.
        if case .write = operation {} else { try finishWrites(&batch) }
        switch operation {
        case let .create(arguments), let .mkdir(arguments), let .mknod(arguments):
            var parent = try liveDirectory(arguments.parent, in: transaction)
            guard try inodes.canCreate(arguments.inode, in: transaction) else {
                throw Refusal("inode \(arguments.inode) is already in use, or was never handed out")
            }
            let isDirectory = arguments.mode & Inode.typeMask == Inode.typeDirectory
            guard !isDirectory || parent.linkCount < UInt32.max else { throw Refusal("too many links to directory \(parent.number)") }
            let store = directoryStore(parent.number, transaction)
            var parentMap = try InodeBlockMap(inode: parent, transaction: transaction, allocator: allocator, seed: seed)
            guard try store.lookup(arguments.name, in: parentMap) == nil else { throw Refusal("the name exists already") }
            var inode = Inode(number: arguments.inode, mode: arguments.mode, uid: arguments.uid, gid: arguments.gid,
                              linkCount: isDirectory ? 2 : 1, time: arguments.time, rdev: arguments.rdev, parentHint: parent.number)
            if isDirectory {
                var map = try InodeBlockMap(inode: inode, transaction: transaction, allocator: allocator, seed: seed)
                try DirectoryStore<NVM>.initialize(directory: inode.number, volumeSeed: seed, map: &map, transaction: transaction)
                try map.finish(into: &inode)
                parent.linkCount += 1
            }
            try store.insert((name: arguments.name, inode: inode.number, type: Self.directoryType(arguments.mode)), into: &parentMap)
            try finish(&parentMap, into: &parent, transaction)
            parent.mtime = arguments.time
            parent.ctime = arguments.time
            try inodes.write(inode, in: transaction)
            try inodes.write(parent, in: transaction)

        case let .symlink(arguments):
            try symlink(arguments, batch: &batch)

        case let .link(arguments):
            var parent = try liveDirectory(arguments.parent, in: transaction)
            var inode = try existing(arguments.inode, in: transaction)
            guard !inode.isDirectory else { throw Refusal("a directory cannot be hard-linked") }
            guard inode.linkCount > 0 else { throw Refusal("inode \(inode.number) has no links left: it was removed") }
            guard inode.linkCount < UInt32.max else { throw Refusal("too many links") }
            let store = directoryStore(parent.number, transaction)
            var parentMap = try InodeBlockMap(inode: parent, transaction: transaction, allocator: allocator, seed: seed)
            guard try store.lookup(arguments.name, in: parentMap) == nil else { throw Refusal("the name exists already") }
            try store.insert((name: arguments.name, inode: inode.number, type: Self.directoryType(inode.mode)), into: &parentMap)
            try finish(&parentMap, into: &parent, transaction)
            inode.linkCount += 1
            inode.ctime = arguments.time
            parent.mtime = arguments.time
            parent.ctime = arguments.time
            try inodes.write(inode, in: transaction)
            try inodes.write(parent, in: transaction)

        case let .unlink(arguments), let .rmdir(arguments):
            let removingDirectory: Bool
            if case .rmdir = operation { removingDirectory = true } else { removingDirectory = false }
            var parent = try directory(arguments.parent, in: transaction)
            let store = directoryStore(parent.number, transaction)
            var parentMap = try InodeBlockMap(inode: parent, transaction: transaction, allocator: allocator, seed: seed)
            guard let entry = try store.lookup(arguments.name, in: parentMap) else { throw Refusal("the name does not exist") }
            guard entry.inode == arguments.inode else { throw Refusal("the name refers to inode \(entry.inode), not \(arguments.inode)") }
            guard var inode = try inodes.read(entry.inode, in: transaction) else { throw Refusal("the name's inode \(entry.inode) is free") }
            guard inode.isDirectory == removingDirectory else {
                throw Refusal(removingDirectory ? "not a directory" : "is a directory")
            }
            if removingDirectory { try requireEmpty(inode, transaction) }
            try store.remove(arguments.name, from: &parentMap)
            try finish(&parentMap, into: &parent, transaction)
            parent.mtime = arguments.time
            parent.ctime = arguments.time
            if removingDirectory {
                parent.linkCount = parent.linkCount > 0 ? parent.linkCount - 1 : 0  // the child's '..'
                try lastLinkGone(inode, time: arguments.time, batch: &batch)
            } else if inode.linkCount <= 1 {
                try lastLinkGone(inode, time: arguments.time, batch: &batch)
            } else {
                inode.linkCount -= 1
                inode.ctime = arguments.time
                try inodes.write(inode, in: transaction)
            }
            try inodes.write(parent, in: transaction)

        case let .rename(arguments):
            try rename(arguments, batch: &batch)

        case let .write(arguments):
            if batch.writing?.inode.number != arguments.inode {
                try finishWrites(&batch)
                let inode = try regularFile(arguments.inode, in: transaction)
                let map = try ExtentMap<NVM>(inode: inode, transaction: transaction, nvmData: allocator.device, seed: seed)
                // One allocation for the whole run: the blocks its writes need that the
                // file has no NVM block for.
                var planned = Set<UInt64>()
                for range in batch.lookahead where !range.isEmpty && planned.count < 65536 {
                    for logical in range.lowerBound / Self.blockBytes ... (range.upperBound - 1) / Self.blockBytes
                        where planned.count < 65536 {
                        if let extent = try map.lookup(logical), extent.tier == .nvm, !extent.flags.contains(.compressed) { continue }
                        planned.insert(logical)
                    }
                }
                batch.lookahead = []
                if planned.count > 1 {
                    do {
                        let runs = try allocateRuns(UInt64(planned.count), transaction)
                        // The run's new blocks are about to be filled: map their pages in one
                        // call rather than fault them one store at a time (emulated NVM's
                        // 4 KiB pages; a no-op on media with nothing to map).
                        for run in runs where !run.isEmpty {
                            let start = Int(allocator.nvmOffset(ofBlock: run.lowerBound))
                            nvm.prefault(offset: start, count: run.count * Int(Self.blockBytes))
                        }
                        batch.reserve = runs.flatMap { Array($0) }
                    } catch let error as DigestError {
                        // Not room for the whole run: its writes allocate one by one.
                        guard case .noSpace = error else { throw error }
                    }
                }
                batch.writing = (inode, map)
            }
            var (inode, map) = batch.writing!
            batch.writing = nil
            if arguments.inline.isEmpty {
                try writeData(data, at: arguments.offset, map: &map, batch: &batch)
            } else {
                try arguments.inline.withUnsafeBytes { inline in try writeData(inline, at: arguments.offset, map: &map, batch: &batch) }
            }
            inode.size = max(inode.size, arguments.offset + UInt64(arguments.length))
            inode.mtime = arguments.time
            inode.ctime = arguments.time
            batch.writing = (inode, map)

        case let .truncate(arguments):
            var inode = try regularFile(arguments.inode, in: transaction)
            if arguments.size < inode.size {
                let map = try ExtentMap<NVM>(inode: inode, transaction: transaction, nvmData: allocator.device, seed: seed)
                let keepBlocks = (arguments.size + Self.blockBytes - 1) / Self.blockBytes
                let tail = Int(arguments.size % Self.blockBytes)
                // Checks first: the cut must not split a compressed extent, and the kept
                // partial block is zeroed in place, so it must be on NVM.
                if let cut = try map.lookup(keepBlocks), cut.flags.contains(.compressed), cut.logicalBlock < keepBlocks {
                    throw Refusal("truncating inside a compressed extent is not supported yet")
                }
                let tailExtent = tail == 0 ? nil : try map.lookup(keepBlocks - 1)
                if let tailExtent, tailExtent.tier != .nvm || tailExtent.flags.contains(.compressed) {
                    throw Refusal("the file's last kept block is on the \(tailExtent.tier) tier: truncating inside it is not supported yet")
                }
                batch.freed += try map.unmap(keepBlocks ..< UInt64.max / Self.blockBytes).filter { $0.tier == .nvm }.map(\.blocks)
                // The rest of the last kept block reads as zeros from now on.
                if let tailExtent, !tailExtent.flags.contains(.unwritten) {
                    let block = tailExtent.physicalBlock + (keepBlocks - 1 - tailExtent.logicalBlock)
                    zeroInPlace(block: block, within: tail ..< Format.blockBytes)
                }
                try storeMap(map, into: &inode, transaction)
            }
            inode.size = arguments.size
            inode.mtime = arguments.time
            inode.ctime = arguments.time
            try inodes.write(inode, in: transaction)

        case let .fallocate(arguments):
            try fallocate(arguments, batch: &batch)

        case let .setattr(arguments):
            var inode = try existing(arguments.inode, in: transaction)
            if arguments.valid.contains(.mode) { inode.mode = inode.mode & Inode.typeMask | arguments.mode }
            if arguments.valid.contains(.uid) { inode.uid = arguments.uid }
            if arguments.valid.contains(.gid) { inode.gid = arguments.gid }
            if arguments.valid.contains(.atime) { inode.atime = arguments.atime }
            if arguments.valid.contains(.mtime) { inode.mtime = arguments.mtime }
            inode.ctime = arguments.ctime
            try inodes.write(inode, in: transaction)

        case let .setxattr(arguments):
            var inode = try existing(arguments.inode, in: transaction)
            try checkAttributeName(arguments.name, of: inode)
            guard arguments.value.count <= ExtendedAttribute.valueBytesMax else { throw Refusal("the value is too large") }
            var attributes = try readAttributes(of: inode, transaction)
            let index = attributes.firstIndex { $0.name == arguments.name }
            if arguments.flags.contains(.create), index != nil { throw Refusal("the attribute exists (create)") }
            if arguments.flags.contains(.replace), index == nil { throw Refusal("no such attribute (replace)") }
            let attribute = ExtendedAttribute(name: arguments.name, value: arguments.value)
            if let index {
                attributes[index] = attribute
            } else {
                let at = attributes.firstIndex { arguments.name.lexicographicallyPrecedes($0.name) } ?? attributes.count
                attributes.insert(attribute, at: at)
            }
            guard XattrSet.encodedBytes(attributes) <= XattrBlock.setBytesMax else {
                throw Refusal("the inode's extended attributes would take more than \(XattrBlock.setBytesMax) bytes")
            }
            try replaceAttributes(of: &inode, with: attributes, batch: &batch)
            inode.ctime = arguments.time
            try inodes.write(inode, in: transaction)

        case let .removexattr(arguments):
            var inode = try existing(arguments.inode, in: transaction)
            try checkAttributeName(arguments.name, of: inode)
            var attributes = try readAttributes(of: inode, transaction)
            guard let index = attributes.firstIndex(where: { $0.name == arguments.name }) else { throw Refusal("no such attribute") }
            attributes.remove(at: index)
            try replaceAttributes(of: &inode, with: attributes, batch: &batch)
            inode.ctime = arguments.time
            try inodes.write(inode, in: transaction)
        }
    }

    // MARK: symlink

    private func symlink(_ arguments: SymlinkArguments, batch: inout Batch) throws {
        let transaction = batch.transaction
        var parent = try liveDirectory(arguments.parent, in: transaction)
        guard try inodes.canCreate(arguments.inode, in: transaction) else {
            throw Refusal("inode \(arguments.inode) is already in use, or was never handed out")
        }
        let target = arguments.target
        guard !target.isEmpty, target.count <= SymlinkArguments.targetBytesMax, !target.contains(0) else {
            throw Refusal("a symbolic link's target is 1 … \(SymlinkArguments.targetBytesMax) bytes without NUL")
        }
        let store = directoryStore(parent.number, transaction)
        var parentMap = try InodeBlockMap(inode: parent, transaction: transaction, allocator: allocator, seed: seed)
        guard try store.lookup(arguments.name, in: parentMap) == nil else { throw Refusal("the name exists already") }
        var inode = Inode(number: arguments.inode, mode: Inode.typeSymlink | 0o777, uid: arguments.uid, gid: arguments.gid,
                          linkCount: 1, size: UInt64(target.count), time: arguments.time, parentHint: parent.number)
        if target.count <= Inode.inlineDataCapacity {
            inode.mapping = .inline(target)
        } else {
            // A new block nothing refers to until the commit: filled and flushed now.
            let block = try allocateBlocks(1, batch.transaction)[0]
            let offset = Int(allocator.nvmOffset(ofBlock: block))
            nvm.fill(0, at: offset, count: Format.blockBytes)
            nvm.store(target, at: offset)
            nvm.flush(offset: offset, count: Format.blockBytes)
            inode.mapping = .extents([Extent(logicalBlock: 0, physicalBlock: block, blockCount: 1, tier: .nvm)])
            inode.allocatedBlocks = 1
        }
        try store.insert((name: arguments.name, inode: inode.number, type: Self.directoryType(inode.mode)), into: &parentMap)
        try finish(&parentMap, into: &parent, transaction)
        parent.mtime = arguments.time
        parent.ctime = arguments.time
        try inodes.write(inode, in: transaction)
        try inodes.write(parent, in: transaction)
    }

    // MARK: rename

    /// renameat2: moves `oldName` to `newName` (replacing what is there, unless noReplace),
    /// or with exchange swaps the two. Every check comes before the first write.
    private func rename(_ arguments: RenameArguments, batch: inout Batch) throws {
        let transaction = batch.transaction
        let exchange = arguments.flags.contains(.exchange)
        let sameParent = arguments.oldParent == arguments.newParent
        var oldParent = try liveDirectory(arguments.oldParent, in: transaction)
        var newParent = sameParent ? oldParent : try liveDirectory(arguments.newParent, in: transaction)
        let oldStore = directoryStore(oldParent.number, transaction)
        let newStore = directoryStore(newParent.number, transaction)
        var oldMap = try InodeBlockMap(inode: oldParent, transaction: transaction, allocator: allocator, seed: seed)
        var newMap = sameParent ? oldMap : try InodeBlockMap(inode: newParent, transaction: transaction, allocator: allocator, seed: seed)

        guard let sourceEntry = try oldStore.lookup(arguments.oldName, in: oldMap) else { throw Refusal("the old name does not exist") }
        guard sourceEntry.inode == arguments.source else {
            throw Refusal("the old name refers to inode \(sourceEntry.inode), not \(arguments.source)")
        }
        var source = try existing(sourceEntry.inode, in: transaction)
        let targetEntry = try newStore.lookup(arguments.newName, in: newMap)
        if arguments.flags.contains(.noReplace), targetEntry != nil { throw Refusal("the new name exists (noReplace)") }
        if exchange, targetEntry == nil { throw Refusal("the new name does not exist: nothing to exchange with") }
        guard (targetEntry?.inode ?? 0) == arguments.replaced else {
            throw Refusal(targetEntry.map { "the new name refers to inode \($0.inode), not \(arguments.replaced)" }
                ?? "the new name does not exist, the record says it refers to inode \(arguments.replaced)")
        }
        var target: Inode? = nil
        if let targetEntry { target = try existing(targetEntry.inode, in: transaction) }
        if let target, !exchange {
            if source.isDirectory && !target.isDirectory { throw Refusal("the new name is not a directory") }
            if !source.isDirectory && target.isDirectory { throw Refusal("the new name is a directory") }
            if target.isDirectory { try requireEmpty(target, transaction) }
        }
        // A directory that changes parent may not land in its own subtree.
        if !sameParent {
            if source.isDirectory { try requireOutside(source.number, start: newParent.number, transaction) }
            if exchange, let target, target.isDirectory { try requireOutside(target.number, start: oldParent.number, transaction) }
        }
        // Link counts of the parents: a directory's '..' links its parent.
        var oldDelta: Int64 = 0, newDelta: Int64 = 0
        if !sameParent && source.isDirectory { oldDelta -= 1; newDelta += 1 }
        if let target, target.isDirectory {
            if exchange {
                if !sameParent { newDelta -= 1; oldDelta += 1 }
            } else {
                newDelta -= 1  // the replaced directory goes
            }
        }
        if sameParent { oldDelta += newDelta; newDelta = 0 }
        for (parent, delta) in [(oldParent, oldDelta), (newParent, newDelta)] where Int64(parent.linkCount) + delta > Int64(UInt32.max) {
            throw Refusal("too many links to directory \(parent.number)")
        }

        // Writes.
        if exchange, let target {
            try oldStore.replace(arguments.oldName, inode: target.number, type: Self.directoryType(target.mode), in: oldMap)
            try newStore.replace(arguments.newName, inode: source.number, type: Self.directoryType(source.mode), in: sameParent ? oldMap : newMap)
        } else if target != nil {
            try newStore.replace(arguments.newName, inode: source.number, type: Self.directoryType(source.mode), in: sameParent ? oldMap : newMap)
            try oldStore.remove(arguments.oldName, from: &oldMap)
        } else {
            let entry = (name: arguments.newName, inode: source.number, type: Self.directoryType(source.mode))
            if sameParent { try oldStore.insert(entry, into: &oldMap) } else { try newStore.insert(entry, into: &newMap) }
            try oldStore.remove(arguments.oldName, from: &oldMap)
        }
        try finish(&oldMap, into: &oldParent, transaction)
        oldParent.linkCount = UInt32(max(0, Int64(oldParent.linkCount) + oldDelta))
        oldParent.mtime = arguments.time
        oldParent.ctime = arguments.time
        if !sameParent {
            try finish(&newMap, into: &newParent, transaction)
            newParent.linkCount = UInt32(max(0, Int64(newParent.linkCount) + newDelta))
            newParent.mtime = arguments.time
            newParent.ctime = arguments.time
            try inodes.write(newParent, in: transaction)
        }
        try inodes.write(oldParent, in: transaction)
        // parentHint: a directory's parent (kept exact); for other files, the directory of
        // the name last given.
        source.ctime = arguments.time
        source.parentHint = arguments.newParent
        try inodes.write(source, in: transaction)
        if var target {
            if exchange {
                target.ctime = arguments.time
                target.parentHint = arguments.oldParent
                try inodes.write(target, in: transaction)
            } else if target.isDirectory || target.linkCount <= 1 {
                try lastLinkGone(target, time: arguments.time, batch: &batch)
            } else {
                target.linkCount -= 1
                target.ctime = arguments.time
                try inodes.write(target, in: transaction)
            }
        }
    }

    /// Refuses unless `directory` is neither `start` nor above it: walks `start`'s parents
    /// (directories' parentHint) up to the root.
    private func requireOutside(_ directory: UInt64, start: UInt64, _ transaction: MetadataTransaction<NVM>) throws {
        var current = start
        var seen: Set<UInt64> = []
        while current != superblock.rootInode {
            if current == directory { throw Refusal("a directory cannot move into its own subtree") }
            guard seen.insert(current).inserted else { throw Refusal("the parents of directory \(start) form a loop") }
            guard let inode = try inodes.read(current, in: transaction), inode.isDirectory, inode.parentHint != 0 else {
                throw Refusal("the parents of directory \(start) do not lead to the root (at \(current))")
            }
            current = inode.parentHint
        }
    }

    private func requireEmpty(_ directory: Inode, _ transaction: MetadataTransaction<NVM>) throws {
        let map = try InodeBlockMap(inode: directory, transaction: transaction, allocator: allocator, seed: seed)
        guard try directoryStore(directory.number, transaction).count(map) == 0 else {
            throw Refusal("directory \(directory.number) is not empty")
        }
    }

    // MARK: fallocate

    /// fallocate on a regular file. Allocation (mode 0, keepSize) gives every hole the range
    /// touches an unwritten NVM block (reads as zeros); punchHole unmaps the blocks wholly
    /// inside the range and zeroes the rest of the range in place; zeroRange zeroes the
    /// partial blocks in place and marks the others unwritten, allocating holes too (as ext4
    /// and XFS). Size grows to the range's end unless keepSize; mtime and ctime are set, as
    /// Linux's file_modified does.
    private func fallocate(_ arguments: FallocateArguments, batch: inout Batch) throws {
        let transaction = batch.transaction
        var inode = try regularFile(arguments.inode, in: transaction)
        let punch = arguments.mode.contains(.punchHole), zero = arguments.mode.contains(.zeroRange)
        let keepSize = arguments.mode.contains(.keepSize)
        guard arguments.mode.isSubset(of: .known), !(punch && zero), !punch || keepSize else {
            throw Refusal("fallocate mode \(arguments.mode.rawValue) is not one Linux accepts")
        }
        let (end, overflow) = arguments.offset.addingReportingOverflow(arguments.length)
        guard arguments.length > 0, !overflow, end <= LogOperation.fileBytesMax else { throw Refusal("the range is empty or too large") }
        let map = try ExtentMap<NVM>(inode: inode, transaction: transaction, nvmData: allocator.device, seed: seed)
        let touched = arguments.offset / Self.blockBytes ..< (end + Self.blockBytes - 1) / Self.blockBytes
        let whole = (arguments.offset + Self.blockBytes - 1) / Self.blockBytes ..< max(end / Self.blockBytes, (arguments.offset + Self.blockBytes - 1) / Self.blockBytes)
        if punch || zero {
            // Zeroing and unmapping happen in place, on NVM: data on other tiers waits for tiering.
            if let other = try map.extents(overlapping: touched).first(where: { $0.tier != .nvm || $0.flags.contains(.compressed) }) {
                throw Refusal("the range holds data on the \(other.tier) tier\(other.flags.contains(.compressed) ? ", compressed" : ""): not supported yet")
            }
        }
        let holes = punch ? [] : try map.holes(in: touched)
        let needed = holes.reduce(UInt64(0)) { $0 + UInt64($1.count) }
        guard needed <= allocator.freeBlocks else {
            throw Refusal("no space: \(needed) blocks to allocate, \(allocator.freeBlocks) free")
        }

        // Writes. The partial blocks at the ends of the range, where mapped and written.
        if punch || zero {
            for logical in [touched.lowerBound, touched.upperBound - 1] where !whole.contains(logical) {
                guard let extent = try map.lookup(logical), !extent.flags.contains(.unwritten) else { continue }
                let blockStart = logical * Self.blockBytes
                let from = Int(max(arguments.offset, blockStart) - blockStart)
                let to = Int(min(end, blockStart + Self.blockBytes) - blockStart)
                zeroInPlace(block: extent.physicalBlock + (logical - extent.logicalBlock), within: from ..< to)
                if touched.count == 1 { break }
            }
        }
        if punch {
            batch.freed += try map.unmap(whole).filter { $0.tier == .nvm }.map(\.blocks)
        }
        if zero {
            try map.setUnwritten(whole, true)
        }
        if needed > 0 {
            var runs = try allocateRuns(needed, transaction)[...]
            for hole in holes {
                var logical = hole.lowerBound
                while logical < hole.upperBound {
                    let run = runs.first!
                    let take = min(hole.upperBound - logical, UInt64(run.count), UInt64(UInt32.max))
                    try map.map(Extent(logicalBlock: logical, physicalBlock: run.lowerBound, blockCount: UInt32(take), tier: .nvm, flags: .unwritten))
                    logical += take
                    if take == UInt64(run.count) { runs.removeFirst() } else { runs[runs.startIndex] = run.lowerBound + take ..< run.upperBound }
                }
            }
        }
        try storeMap(map, into: &inode, transaction)
        if !keepSize { inode.size = max(inode.size, end) }
        inode.mtime = arguments.time
        inode.ctime = arguments.time
        try inodes.write(inode, in: transaction)
    }

    // MARK: Data

    /// Writes file data block by block: into blocks the file maps (in place), or into new
    /// NVM blocks mapped by the transaction. Either way the data is flushed now and fenced
    /// by the commit.
    private func writeData(_ bytes: UnsafeRawBufferPointer, at offset: UInt64, map: inout ExtentMap<NVM>, batch: inout Batch) throws {
        guard !bytes.isEmpty else { return }
        let first = offset / Self.blockBytes
        let last = (offset + UInt64(bytes.count) - 1) / Self.blockBytes
        // Blocks the write needs that the file has no NVM block for: holes, data on other
        // tiers. They get new NVM blocks in one allocation (as few runs as the allocator
        // can), which also keeps the file's extents few. Unwritten NVM blocks (fallocate)
        // are used where they are: zeroed, written, then marked written.
        var missing: [UInt64] = []
        var unwritten: [UInt64] = []
        for logical in first ... last {
            if let extent = try map.lookup(logical), extent.tier == .nvm, !extent.flags.contains(.compressed) {
                if extent.flags.contains(.unwritten) { unwritten.append(logical) }
                continue
            }
            missing.append(logical)
        }
        if !missing.isEmpty {
            let reserved = min(missing.count, batch.reserve.count - batch.reserveNext)
            var blocks = Array(batch.reserve[batch.reserveNext ..< batch.reserveNext + reserved])
            batch.reserveNext += reserved
            if blocks.count < missing.count {
                blocks += try allocateBlocks(UInt64(missing.count - blocks.count), batch.transaction)
            }
            var fresh = blocks.makeIterator()
            for logical in missing {
                let block = fresh.next()!
                batch.freed += try map.map(Extent(logicalBlock: logical, physicalBlock: block, blockCount: 1, tier: .nvm))
                    .filter { $0.tier == .nvm }.map(\.blocks)
                // A new block: what this write does not cover reads as zeros.
                zeroUncovered(block: block, logical: logical, writtenFrom: offset, count: bytes.count)
            }
        }
        for logical in unwritten {
            // Until the commit the block still reads as zeros (unwritten), whatever it holds.
            let extent = try map.lookup(logical)!
            zeroUncovered(block: extent.physicalBlock + (logical - extent.logicalBlock), logical: logical, writtenFrom: offset, count: bytes.count)
            try map.setUnwritten(logical ..< logical + 1, false)
        }
        var done = 0
        while done < bytes.count {
            let position = offset + UInt64(done)
            let logical = position / Self.blockBytes
            let within = Int(position % Self.blockBytes)
            let take = min(bytes.count - done, Format.blockBytes - within)
            let extent = try map.lookup(logical)!
            let blockOffset = Int(allocator.nvmOffset(ofBlock: extent.physicalBlock + (logical - extent.logicalBlock)))
            // Stored and flushed (non-temporal stores for whole blocks); fenced by the commit.
            nvm.storeFlush(UnsafeRawBufferPointer(rebasing: bytes[done ..< done + take]), at: blockOffset + within)
            done += take
        }
    }

    /// Zeroes, flushed, the parts of NVM block `block` (logical block `logical` of a file) that
    /// a write of `count` bytes at byte `offset` leaves: nothing for a block it covers whole.
    private func zeroUncovered(block: UInt64, logical: UInt64, writtenFrom offset: UInt64, count: Int) {
        let start = logical * Self.blockBytes
        let from = Int(max(offset, start) - start)
        let to = Int(min(offset + UInt64(count), start + Self.blockBytes) - start)
        let base = Int(allocator.nvmOffset(ofBlock: block))
        if from > 0 { nvm.fillFlush(0, at: base, count: from) }
        if to < Format.blockBytes { nvm.fillFlush(0, at: base + to, count: Format.blockBytes - to) }
    }

    /// Zeroes bytes `within` of NVM data block `block` in place, flushed (fenced by the commit).
    private func zeroInPlace(block: UInt64, within: Range<Int>) {
        guard !within.isEmpty else { return }
        let offset = Int(allocator.nvmOffset(ofBlock: block)) + within.lowerBound
        nvm.fillFlush(0, at: offset, count: within.count)
    }

    /// `count` NVM blocks, in as few runs as the allocator finds.
    private func allocateRuns(_ count: UInt64, _ transaction: MetadataTransaction<NVM>) throws -> [Range<UInt64>] {
        do {
            return try allocator.allocate(count, in: transaction)
        } catch {
            if case .damaged = error { throw error }
            throw DigestError.noSpace("\(error)")
        }
    }

    private func allocateBlocks(_ count: UInt64, _ transaction: MetadataTransaction<NVM>) throws -> [UInt64] {
        try allocateRuns(count, transaction).flatMap { Array($0) }
    }

    // MARK: Extended attributes

    /// Namespaces Linux knows; a name is one of them followed by at least one byte.
    private static var attributeNamespaces: [[UInt8]] { ["user.", "trusted.", "security.", "system."].map { Array($0.utf8) } }

    private func checkAttributeName(_ name: [UInt8], of inode: Inode) throws {
        if let problem = ExtendedAttribute.nameProblem(name) { throw Refusal(problem) }
        guard let namespace = Self.attributeNamespaces.first(where: { name.count > $0.count && name.starts(with: $0) }) else {
            throw Refusal("the name is in none of the namespaces user., trusted., security., system.")
        }
        let type = inode.mode & Inode.typeMask
        if namespace == Self.attributeNamespaces[0], type != Inode.typeRegular, type != Inode.typeDirectory {
            throw Refusal("user. attributes belong to regular files and directories only")
        }
    }

    private func readXattrBlock(of number: UInt64, block: UInt64, index: Int, _ transaction: MetadataTransaction<NVM>) throws -> XattrBlock {
        guard block < allocator.device.dataBlocks else {
            throw DigestError.damaged("inode \(number): extended attribute block \(block) lies beyond the NVM data area")
        }
        let bytes = transaction.read(allocator.nvmOffset(ofBlock: block), count: XattrBlock.encodedBytes)
        let decoded = bytes.withUnsafeBytes { buffer in
            Result { () throws(FormatError) in
                try XattrBlock.decode(buffer, seed: seed, expectedInode: number, expectedBlock: block, expectedIndex: index)
            }
        }
        switch decoded {
        case let .success(block): return block
        case let .failure(error): throw DigestError.damaged("\(error)")
        }
    }

    private func attributeBlocks(of inode: Inode, _ transaction: MetadataTransaction<NVM>) throws -> [UInt64] {
        guard inode.xattrBlock != 0 else { return [] }
        return try readXattrBlock(of: inode.number, block: inode.xattrBlock, index: 0, transaction).table
    }

    private func readAttributes(of inode: Inode, _ transaction: MetadataTransaction<NVM>) throws -> [ExtendedAttribute] {
        guard inode.xattrBlock != 0 else { return [] }
        let head = try readXattrBlock(of: inode.number, block: inode.xattrBlock, index: 0, transaction)
        var blocks = [head]
        for (index, block) in head.table.enumerated().dropFirst() {
            blocks.append(try readXattrBlock(of: inode.number, block: block, index: index, transaction))
        }
        let decoded = Result { () throws(FormatError) in try XattrSet.decode(blocks) }
        switch decoded {
        case let .success(attributes): return attributes
        case let .failure(error): throw DigestError.damaged("\(error)")
        }
    }

    /// Copy-on-write: the new set goes to new blocks, filled and flushed now (nothing refers
    /// to them until the commit); the inode names them; the old blocks are freed with the batch.
    private func replaceAttributes(of inode: inout Inode, with attributes: [ExtendedAttribute], batch: inout Batch) throws {
        let old = try attributeBlocks(of: inode, batch.transaction)
        var new: [UInt64] = []
        if !attributes.isEmpty {
            let count = XattrBlock.blocksNeeded(setBytes: XattrSet.encodedBytes(attributes))
            new = try allocateBlocks(UInt64(count), batch.transaction)
            for (block, bytes) in zip(new, XattrSet.encode(attributes, inode: inode.number, blocks: new, seed: seed)) {
                let offset = Int(allocator.nvmOffset(ofBlock: block))
                nvm.store(bytes, at: offset)
                nvm.flush(offset: offset, count: bytes.count)
            }
        }
        inode.xattrBlock = new.first ?? 0
        inode.allocatedBlocks = inode.allocatedBlocks - min(inode.allocatedBlocks, UInt64(old.count)) + UInt64(new.count)
        batch.freed += old.map { $0 ..< $0 + 1 }
    }

    // MARK: Inodes

    /// `inode` lost its last link: it stays as an orphan (linkCount 0, blocks kept) while a
    /// client holds it open or while recovering, otherwise it is freed.
    private func lastLinkGone(_ inode: Inode, time: Timestamp, batch: inout Batch) throws {
        if batch.keepsOrphans || isOpen?(inode.number) == true {
            var orphan = inode
            orphan.linkCount = 0
            orphan.ctime = time
            try inodes.write(orphan, in: batch.transaction)
        } else {
            try release(inode, batch: &batch)
        }
    }

    /// Frees an inode and, at the end of the batch, its blocks: data, extent-tree nodes and
    /// extended attributes.
    private func release(_ inode: Inode, batch: inout Batch) throws {
        if case .inline = inode.mapping {} else {
            let map = try ExtentMap<NVM>(inode: inode, transaction: batch.transaction, nvmData: allocator.device, seed: seed)
            batch.freed += try map.unmap(0 ..< UInt64.max / Self.blockBytes).filter { $0.tier == .nvm }.map(\.blocks)
            // Storing the empty map frees the tree's own nodes, if it has any.
            var scratch = inode
            try map.store(into: &scratch, allocator: allocator)
        }
        batch.freed += try attributeBlocks(of: inode, batch.transaction).map { $0 ..< $0 + 1 }
        try inodes.free(inode.number, in: batch.transaction)
    }

    /// Stores a file's map; its block count (data and tree blocks plus its xattr blocks)
    /// changes by what the map gained or lost.
    private func storeMap(_ map: ExtentMap<NVM>, into inode: inout Inode, _ transaction: MetadataTransaction<NVM>) throws {
        try map.store(into: &inode, allocator: allocator)
        inode.allocatedBlocks = UInt64(max(0, Int64(inode.allocatedBlocks) + map.takeBlockDelta()))
    }

    /// Finishes a directory's block map into its inode (size and blocks change by what it
    /// gained or lost).
    private func finish(_ map: inout InodeBlockMap<NVM>, into inode: inout Inode, _ transaction: MetadataTransaction<NVM>) throws {
        try map.finish(into: &inode)
    }

    private func directoryStore(_ directory: UInt64, _ transaction: MetadataTransaction<NVM>) -> DirectoryStore<NVM> {
        DirectoryStore(directory: directory, hashKey: superblock.directoryHashKey, volumeSeed: seed, transaction: transaction)
    }

    private func existing(_ number: UInt64, in transaction: MetadataTransaction<NVM>) throws -> Inode {
        guard let inode = try inodes.read(number, in: transaction) else { throw Refusal("inode \(number) does not exist") }
        return inode
    }

    private func directory(_ number: UInt64, in transaction: MetadataTransaction<NVM>) throws -> Inode {
        guard let inode = try inodes.read(number, in: transaction) else { throw Refusal("directory \(number) does not exist") }
        guard inode.isDirectory else { throw Refusal("inode \(number) is not a directory") }
        return inode
    }

    /// A directory that may gain names: not removed (an orphan directory takes no new names).
    private func liveDirectory(_ number: UInt64, in transaction: MetadataTransaction<NVM>) throws -> Inode {
        let inode = try directory(number, in: transaction)
        guard inode.linkCount > 0 else { throw Refusal("directory \(number) was removed") }
        return inode
    }

    private func regularFile(_ number: UInt64, in transaction: MetadataTransaction<NVM>) throws -> Inode {
        guard let inode = try inodes.read(number, in: transaction) else { throw Refusal("inode \(number) does not exist") }
        guard inode.mode & Inode.typeMask == Inode.typeRegular else { throw Refusal("inode \(number) is not a regular file") }
        return inode
    }

    /// d_type of a mode.
    static func directoryType(_ mode: UInt32) -> UInt8 {
        switch mode & Inode.typeMask {
        case 0o010000: 1   // FIFO
        case 0o020000: 2   // character device
        case Inode.typeDirectory: 4
        case 0o060000: 6   // block device
        case Inode.typeRegular: 8
        case Inode.typeSymlink: 10
        case 0o140000: 12  // socket
        default: 0
        }
    }
}
