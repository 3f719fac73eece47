// Digest: applying the committed records of a client's operation log to the shared area
// (docs/architecture.md "Digest"). The first slice handles the namespace and data operations
// a file system cannot do without — create, mkdir, mknod, link, unlink, rmdir, write,
// truncate, setattr. Records of the other types (symlink, rename, fallocate, xattrs) are
// refused and reported, never applied in part; LibFS does not log them yet.
//
// Never trusting the log: each record is copied out of the client-writable region and its
// body checksum verified on the copy; `LogOperation.decode` validates its encoding; then the
// record is checked against the shared area (inodes exist with the right types, names refer
// to the inodes the record says, directories are empty before rmdir) before anything of it
// is written. A refused record is reported and skipped.
//
// Durability: one MetadataTransaction per batch holds every metadata change and the new
// digest cursor; its commit is the batch's durability point. File data goes to NVM blocks
// before that commit: into blocks the file already maps (idempotent: digesting again after a
// crash rewrites the same bytes from the same log) or into new blocks nothing refers to until
// the commit. Blocks freed by the batch are freed last, so that no block freed in a batch is
// reused by the same uncommitted batch.

import LibFS
import ShaleFormat
import ShaleMedia

public enum DigestError: Error, CustomStringConvertible {
    case notAttached(region: Int)
    case noSpace(String)
    case damaged(String)
    case journal(JournalError)

    public var description: String {
        switch self {
        case let .notAttached(region): "log region \(region) has no owner to digest"
        case let .noSpace(text): "digest stopped, the shared area is full: \(text)"
        case let .damaged(text): "digest stopped on damage in the shared area: \(text)"
        case let .journal(error): "digest: \(error)"
        }
    }
}

public struct DigestReport: Sendable {
    public var applied = 0
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
    public let journal: MetadataJournal<NVM>
    public let allocator: BlockAllocator<NVM>
    public let inodes: InodeTable<NVM>
    public let logTable: LogTable<NVM>
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
    /// searches past damage (the log's owner is gone); a live log ends at its first gap.
    public func digest(region: Int, recovery: Bool, maxRecords: Int = 4096) throws(DigestError) -> DigestReport {
        guard let descriptor = logTable.read(region).descriptor, descriptor.state != .free else {
            throw .notAttached(region: region)
        }
        let layout = superblock.layout
        let recordSeed = LogRecordHeader.recordSeed(volumeSeed: seed, region: UInt32(region), epoch: descriptor.epoch)
        let regionView = nvm.view(at: Int(layout.logRegionOffset(region)), count: Int(layout.logRegionBytes))
        var scanner = LogScanner(region: regionView, epoch: UInt32(truncatingIfNeeded: descriptor.epoch), seed: recordSeed,
                                 startOffset: descriptor.digestedOffset, startSequence: descriptor.digestedSequence,
                                 searchPastDamage: recovery)
        let transaction = MetadataTransaction(journal: journal)
        var batch = Batch(transaction: transaction)
        var report = DigestReport()
        // Leave room in the journal for the last record's changes and the cursor.
        let budget = journal.capacityBytes / 2
        while report.applied + report.refused.count < maxRecords, transaction.journalBytes < budget,
              let record = scanner.next() {
            // Copy out, then verify the copy: the client may be writing its region right now.
            let payload = Array(regionView[Int(record.payloadOffset) ..< Int(record.payloadOffset) + Int(record.header.payloadBytes)])
            let data = Array(regionView[Int(record.dataOffset) ..< Int(record.dataOffset) + Int(record.header.dataBytes)])
            let verified = payload.withUnsafeBytes { p in
                data.withUnsafeBytes { d in LogRecordHeader.bodyChecksum(payload: p, data: d, seed: recordSeed) }
            } == record.header.bodyCRC
            guard verified else {
                report.refused.append((record.header.sequence, "record changed while it was digested"))
                continue
            }
            let operation: LogOperation
            do {
                operation = try payload.withUnsafeBytes { (buffer: UnsafeRawBufferPointer) throws(FormatError) -> LogOperation in
                    try LogOperation.decode(type: record.header.type, payload: buffer, dataBytes: record.header.dataBytes)
                }
            } catch {
                report.refused.append((record.header.sequence, "\(error)"))
                continue
            }
            do {
                do {
                    try apply(operation, data: data, batch: &batch)
                } catch let error as InodeError {
                    // A number outside the table is the record's fault, not the shared area's.
                    if case .outOfRange = error { throw Refusal("\(error)") }
                    throw error
                }
                report.applied += 1
            } catch let refusal as Refusal {
                report.refused.append((record.header.sequence, refusal.reason))
            } catch let error as DigestError {
                transaction.abort()
                try? allocator.reload()
                try? inodes.reload()
                throw error
            } catch {
                transaction.abort()
                try? allocator.reload()
                try? inodes.reload()
                throw .damaged("\(error)")
            }
        }
        report.damage = scanner.damage
        report.end = scanner.end
        report.cursorOffset = scanner.offset
        report.cursorSequence = scanner.nextSequence
        do {
            for freed in batch.freed { try allocator.free(freed, in: transaction) }
            try logTable.advanceDigestCursor(region, offset: scanner.offset + UInt64(LogRecordHeader.encodedBytes) > layout.logRegionBytes ? 0 : scanner.offset,
                                             sequence: scanner.nextSequence, in: transaction)
        } catch {
            transaction.abort()
            try? allocator.reload()
            try? inodes.reload()
            throw .damaged("\(error)")
        }
        // Durability point of the batch: the journal's commit fence.
        do {
            try transaction.commit()
        } catch {
            try? allocator.reload()
            try? inodes.reload()
            throw .journal(error)
        }
        return report
    }

    // MARK: - Applying one operation

    struct Batch {
        let transaction: MetadataTransaction<NVM>
        /// Blocks the batch stopped referencing; freed just before the commit.
        var freed: [Range<UInt64>] = []
    }

    private func apply(_ operation: LogOperation, data: [UInt8], batch: inout Batch) throws {
        let transaction = batch.transaction
        switch operation {
        case let .create(arguments), let .mkdir(arguments), let .mknod(arguments):
            var parent = try directory(arguments.parent, in: transaction)
            guard try inodes.canCreate(arguments.inode, in: transaction) else {
                throw Refusal("inode \(arguments.inode) is already in use, or was never handed out")
            }
            let isDirectory = arguments.mode & Inode.typeMask == Inode.typeDirectory
            let store = DirectoryStore(directory: parent.number, hashKey: superblock.directoryHashKey, volumeSeed: seed, transaction: transaction)
            var parentMap = try InodeBlockMap(inode: parent, transaction: transaction, allocator: allocator, seed: seed)
            guard try store.lookup(arguments.name, in: parentMap) == nil else { throw Refusal("the name exists already") }
            var inode = Inode(number: arguments.inode, mode: arguments.mode, uid: arguments.uid, gid: arguments.gid,
                              linkCount: isDirectory ? 2 : 1, time: arguments.time, rdev: arguments.rdev, parentHint: parent.number)
            if isDirectory {
                var map = try InodeBlockMap(inode: inode, transaction: transaction, allocator: allocator, seed: seed)
                try DirectoryStore<NVM>.initialize(directory: inode.number, volumeSeed: seed, map: &map, transaction: transaction)
                try map.finish(into: &inode, seed: seed)
                parent.linkCount += 1
            }
            try store.insert((name: arguments.name, inode: inode.number, type: Self.directoryType(arguments.mode)), into: &parentMap)
            try parentMap.finish(into: &parent, seed: seed)
            parent.mtime = arguments.time
            parent.ctime = arguments.time
            try inodes.write(inode, in: transaction)
            try inodes.write(parent, in: transaction)

        case let .link(arguments):
            var parent = try directory(arguments.parent, in: transaction)
            guard var inode = try inodes.read(arguments.inode, in: transaction) else { throw Refusal("inode \(arguments.inode) does not exist") }
            guard !inode.isDirectory else { throw Refusal("a directory cannot be hard-linked") }
            guard inode.linkCount < UInt32.max else { throw Refusal("too many links") }
            let store = DirectoryStore(directory: parent.number, hashKey: superblock.directoryHashKey, volumeSeed: seed, transaction: transaction)
            var parentMap = try InodeBlockMap(inode: parent, transaction: transaction, allocator: allocator, seed: seed)
            guard try store.lookup(arguments.name, in: parentMap) == nil else { throw Refusal("the name exists already") }
            try store.insert((name: arguments.name, inode: inode.number, type: Self.directoryType(inode.mode)), into: &parentMap)
            try parentMap.finish(into: &parent, seed: seed)
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
            let store = DirectoryStore(directory: parent.number, hashKey: superblock.directoryHashKey, volumeSeed: seed, transaction: transaction)
            var parentMap = try InodeBlockMap(inode: parent, transaction: transaction, allocator: allocator, seed: seed)
            guard let entry = try store.lookup(arguments.name, in: parentMap) else { throw Refusal("the name does not exist") }
            guard entry.inode == arguments.inode else { throw Refusal("the name refers to inode \(entry.inode), not \(arguments.inode)") }
            guard var inode = try inodes.read(entry.inode, in: transaction) else { throw Refusal("the name's inode \(entry.inode) is free") }
            guard inode.isDirectory == removingDirectory else {
                throw Refusal(removingDirectory ? "not a directory" : "is a directory")
            }
            if removingDirectory {
                let map = try InodeBlockMap(inode: inode, transaction: transaction, allocator: allocator, seed: seed)
                guard try DirectoryStore(directory: inode.number, hashKey: superblock.directoryHashKey, volumeSeed: seed,
                                         transaction: transaction).count(map) == 0 else { throw Refusal("the directory is not empty") }
            }
            try store.remove(arguments.name, from: &parentMap)
            try parentMap.finish(into: &parent, seed: seed)
            parent.mtime = arguments.time
            parent.ctime = arguments.time
            if removingDirectory {
                parent.linkCount -= 1
                try release(inode, batch: &batch)
            } else if inode.linkCount <= 1 {
                try release(inode, batch: &batch)
            } else {
                inode.linkCount -= 1
                inode.ctime = arguments.time
                try inodes.write(inode, in: transaction)
            }
            try inodes.write(parent, in: transaction)

        case let .write(arguments):
            var inode = try regularFile(arguments.inode, in: transaction)
            let bytes = arguments.inline.isEmpty ? data : arguments.inline
            try writeData(bytes, at: arguments.offset, into: &inode, batch: &batch)
            inode.size = max(inode.size, arguments.offset + UInt64(arguments.length))
            inode.mtime = arguments.time
            inode.ctime = arguments.time
            try inodes.write(inode, in: transaction)

        case let .truncate(arguments):
            var inode = try regularFile(arguments.inode, in: transaction)
            if arguments.size < inode.size {
                var map = try ExtentMap<NVM>(inode: inode, transaction: transaction, nvmData: allocator.device, seed: seed)
                let keepBlocks = (arguments.size + Self.blockBytes - 1) / Self.blockBytes
                batch.freed += map.unmap(keepBlocks ..< UInt64.max / Self.blockBytes).filter { $0.tier == .nvm }.map(\.blocks)
                // The rest of the last kept block reads as zeros from now on.
                let tail = Int(arguments.size % Self.blockBytes)
                if tail != 0, let extent = map.lookup(keepBlocks - 1) {
                    let block = extent.physicalBlock + (keepBlocks - 1 - extent.logicalBlock)
                    let offset = allocator.nvmOffset(ofBlock: block) + UInt64(tail)
                    nvm.fill(0, at: Int(offset), count: Format.blockBytes - tail)
                    nvm.flush(offset: Int(offset), count: Format.blockBytes - tail)
                }
                try map.store(into: &inode, transaction: transaction, allocator: allocator, seed: seed)
                inode.allocatedBlocks = map.blockCount
            }
            inode.size = arguments.size
            inode.mtime = arguments.time
            inode.ctime = arguments.time
            try inodes.write(inode, in: transaction)

        case let .setattr(arguments):
            guard var inode = try inodes.read(arguments.inode, in: transaction) else { throw Refusal("inode \(arguments.inode) does not exist") }
            if arguments.valid.contains(.mode) { inode.mode = inode.mode & Inode.typeMask | arguments.mode }
            if arguments.valid.contains(.uid) { inode.uid = arguments.uid }
            if arguments.valid.contains(.gid) { inode.gid = arguments.gid }
            if arguments.valid.contains(.atime) { inode.atime = arguments.atime }
            if arguments.valid.contains(.mtime) { inode.mtime = arguments.mtime }
            inode.ctime = arguments.ctime
            try inodes.write(inode, in: transaction)

        case .symlink, .rename, .fallocate, .setxattr, .removexattr:
            throw Refusal("\(operation.recordType) records are not digested yet")
        }
    }

    /// Writes file data block by block: into blocks the file maps (in place), or into new
    /// NVM blocks mapped by the transaction. Either way the data is flushed now and fenced
    /// by the commit.
    private func writeData(_ bytes: [UInt8], at offset: UInt64, into inode: inout Inode, batch: inout Batch) throws {
        guard !bytes.isEmpty else { return }
        var map = try ExtentMap<NVM>(inode: inode, transaction: batch.transaction, nvmData: allocator.device, seed: seed)
        let first = offset / Self.blockBytes
        let last = (offset + UInt64(bytes.count) - 1) / Self.blockBytes
        // Blocks the write needs that the file has no NVM block for: holes, unwritten
        // extents, data on other tiers. They get new NVM blocks in one allocation (as few
        // runs as the allocator can), which also keeps the file's extents few.
        var missing: [UInt64] = []
        for logical in first ... last {
            if let extent = map.lookup(logical), extent.tier == .nvm, !extent.flags.contains(.unwritten) { continue }
            missing.append(logical)
        }
        if !missing.isEmpty {
            let runs: [Range<UInt64>]
            do {
                runs = try allocator.allocate(UInt64(missing.count), in: batch.transaction)
            } catch {
                throw DigestError.noSpace("\(error)")
            }
            var fresh = runs.lazy.flatMap { $0 }.makeIterator()
            for logical in missing {
                let block = fresh.next()!
                batch.freed += map.map(Extent(logicalBlock: logical, physicalBlock: block, blockCount: 1, tier: .nvm))
                    .filter { $0.tier == .nvm }.map(\.blocks)
                // A new block: whatever this write does not cover reads as zeros.
                nvm.fill(0, at: Int(allocator.nvmOffset(ofBlock: block)), count: Format.blockBytes)
            }
        }
        var done = 0
        while done < bytes.count {
            let position = offset + UInt64(done)
            let logical = position / Self.blockBytes
            let within = Int(position % Self.blockBytes)
            let take = min(bytes.count - done, Format.blockBytes - within)
            let extent = map.lookup(logical)!
            let blockOffset = Int(allocator.nvmOffset(ofBlock: extent.physicalBlock + (logical - extent.logicalBlock)))
            bytes[done ..< done + take].withUnsafeBytes { nvm.store($0, at: blockOffset + within) }
            nvm.flush(offset: blockOffset, count: Format.blockBytes)
            done += take
        }
        try map.store(into: &inode, transaction: batch.transaction, allocator: allocator, seed: seed)
        inode.allocatedBlocks = map.blockCount
    }

    /// Frees an inode and, at the end of the batch, its blocks.
    private func release(_ inode: Inode, batch: inout Batch) throws {
        let map = try ExtentMap<NVM>(inode: inode, transaction: batch.transaction, nvmData: allocator.device, seed: seed)
        batch.freed += map.extents.filter { $0.tier == .nvm }.map { $0.physicalBlock ..< $0.physicalBlock + UInt64($0.blockCount) }
        if case let .tree(root, _, _) = inode.mapping {
            // The tree's own nodes: everything the map loaded.
            var empty = map
            empty.unmap(0 ..< UInt64.max / Self.blockBytes)
            var scratch = inode
            try empty.store(into: &scratch, transaction: batch.transaction, allocator: allocator, seed: seed)
            _ = root
        }
        try inodes.free(inode.number, in: batch.transaction)
    }

    private func directory(_ number: UInt64, in transaction: MetadataTransaction<NVM>) throws -> Inode {
        guard let inode = try inodes.read(number, in: transaction) else { throw Refusal("directory \(number) does not exist") }
        guard inode.isDirectory else { throw Refusal("inode \(number) is not a directory") }
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
