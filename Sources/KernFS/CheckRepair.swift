// `shale fsck --repair`: fixes what a check found, where that loses no acknowledged data.
//
// Offers: `Checker.repair(progress:)`, which checks, repairs, checks again (up to three
// rounds: freeing an orphan's inode leaves its blocks to the next round, which finds them
// leaked) and returns an `FsckOutcome`: the first report, every repair made, what was left
// and why, and the final report.
// Needs: a volume opened for writing and held exclusively (the caller's lock: no mount, no
// other shale), whose logs hold no undigested records — repair refuses otherwise, since a
// record may name an inode or block repair would free. Every change goes through a
// MetadataTransaction (crash-safe: a crash leaves each transaction whole or absent); a
// transaction is committed whenever it passes half the journal's capacity.
//
// Policy. Repairs, in this order:
//   1. allocator bitmaps: owned blocks marked used (always); leaked blocks freed, damaged
//      bitmap blocks rebuilt and free counts corrected from the owners of the blocks — only
//      when every inode and extent map was read (otherwise an unreadable inode's blocks would
//      look free);
//   2. inodes: link counts (lowered only when every directory was read; raised always),
//      allocatedBlocks, a directory's size, a short symlink's size, a directory's parentHint;
//   3. orphans with link count 0 (open-but-unlinked files whose process is gone, and empty
//      directories): the inode is freed; its blocks, leaked now, are freed by the next round;
//   4. directory entries: entries naming a free inode or a number outside the table are
//      removed, a second entry for a directory is removed (the first, the shallowest, stays),
//      an entry's type is set to its inode's, a hashed directory's entry count is corrected.
// Never repaired (reported, with the reason): damaged inodes, extent maps and directory
// blocks (their contents are unknown), blocks owned twice (one owner would lose them),
// orphans that still have links (reconnecting them to a lost+found is not implemented),
// damaged log descriptors and records, a damaged journal transaction.

import ShaleFormat
import ShaleMedia

public struct RepairAction: Equatable, Sendable, CustomStringConvertible {
    public var problem: CheckProblem
    /// What was done, as a sentence.
    public var done: String
    public var description: String { "\(problem): \(done)" }
}

public struct RepairSkip: Equatable, Sendable, CustomStringConvertible {
    public var problem: CheckProblem
    public var reason: String
    public var description: String { "\(problem): not repaired: \(reason)" }
}

public struct FsckOutcome: Sendable {
    /// The check before any repair.
    public var initial: CheckReport
    /// Why nothing was repaired (undigested log records), if so.
    public var refusal: String?
    public var repairs: [RepairAction] = []
    /// Problems left by the last round, and why.
    public var skipped: [RepairSkip] = []
    public var rounds = 0
    public var transactions = 0
    /// The check after the repairs: what remains.
    public var final: CheckReport

    /// A check without repairs: `final` is `initial`.
    public init(checked report: CheckReport) {
        initial = report
        final = report
    }
}

public enum RepairError: Error, CustomStringConvertible {
    case journal(JournalError)

    public var description: String {
        switch self {
        case let .journal(error): "repair stopped (every committed repair is durable, nothing half done): \(error)"
        }
    }
}

extension Checker {
    /// Checks and repairs. The caller holds the volume exclusively and opened it for writing.
    public func repair(progress: ((CheckProgress) -> Void)? = nil) throws(RepairError) -> FsckOutcome {
        try repair(progress: progress, transactionLimitBytes: nil)
    }

    /// `transactionLimitBytes`: commit once a transaction passes this (tests force small
    /// transactions with it); by default half the journal's capacity.
    func repair(progress: ((CheckProgress) -> Void)?, transactionLimitBytes: Int?) throws(RepairError) -> FsckOutcome {
        var pass = CheckPass(volume: volume, progress: progress)
        let initial = pass.run()
        var outcome = FsckOutcome(checked: initial)
        guard initial.problems.contains(where: \.isRepairable) else {
            outcome.skipped = initial.problems.map { RepairSkip(problem: $0, reason: Repairer<NVM>.reason(for: $0)) }
            return outcome
        }
        // A journal transaction still to apply would be overwritten by the first repair's:
        // repair needs the volume opened for writing, which applies it.
        if initial.notices.contains(where: { if case .journalPending = $0 { true } else { false } }) {
            outcome.refusal = "the volume was opened read-only and its journal holds a transaction to apply; open it for writing"
            return outcome
        }
        if initial.undigestedRecords > 0 {
            outcome.refusal = "the logs hold \(initial.undigestedRecords) undigested record(s), which may name inodes and blocks "
                + "repair would change; run `shale digest` first, then fsck --repair again"
            return outcome
        }
        var report = initial
        while outcome.rounds < 3, report.problems.contains(where: \.isRepairable) {
            let repairer = Repairer(pass: pass, report: report, limit: transactionLimitBytes)
            try repairer.run()
            outcome.rounds += 1
            outcome.repairs += repairer.actions
            outcome.skipped = repairer.skips
            outcome.transactions += repairer.commits
            pass = CheckPass(volume: volume, progress: progress)
            report = pass.run()
            if repairer.actions.isEmpty { break }
        }
        outcome.final = report
        // What remains is explained by the last round's reasons, or is new.
        let explained = Set(outcome.skipped.map(\.problem.description))
        for problem in report.problems where !explained.contains(problem.description) {
            outcome.skipped.append(RepairSkip(problem: problem, reason: Repairer<NVM>.reason(for: problem)))
        }
        outcome.skipped = outcome.skipped.filter { skip in report.problems.contains(skip.problem) }
        return outcome
    }
}

/// One round of repairs from one check pass.
final class Repairer<NVM: PersistentMemory> {
    let pass: CheckPass<NVM>
    let report: CheckReport
    let transaction: MetadataTransaction<NVM>
    let seed: UInt32
    let limit: Int
    var actions: [RepairAction] = []
    var skips: [RepairSkip] = []
    var commits = 0

    init(pass: CheckPass<NVM>, report: CheckReport, limit: Int?) {
        self.pass = pass
        self.report = report
        transaction = MetadataTransaction(journal: MetadataJournal(nvm: pass.volume.nvm, superblock: pass.superblock))
        seed = pass.seed
        self.limit = limit ?? transaction.journal.capacityBytes / 2
    }

    func did(_ problem: CheckProblem, _ what: String) { actions.append(RepairAction(problem: problem, done: what)) }
    func skip(_ problem: CheckProblem, _ reason: String) { skips.append(RepairSkip(problem: problem, reason: reason)) }

    /// Commits when the transaction passes half the journal (a repair of any size fits).
    func checkpoint() throws(RepairError) {
        if transaction.journalBytes > limit { try commit() }
    }

    func commit() throws(RepairError) {
        guard !transaction.isEmpty else { return }
        do {
            try transaction.commit()
        } catch {
            throw .journal(error)
        }
        commits += 1
    }

    func run() throws(RepairError) {
        try repairBitmaps()
        try repairInodes()
        try freeOrphans()
        try repairDirectories()
        try commit()
        let handled = Set(actions.map(\.problem.description) + skips.map(\.problem.description))
        for problem in report.problems where !handled.contains(problem.description) {
            skip(problem, Self.reason(for: problem))
        }
    }

    /// Why a problem of this kind is left as it is.
    static func reason(for problem: CheckProblem) -> String {
        switch problem {
        case .superblockCopy: "the volume was opened read-only; fsck --repair rewrites it from the good copy"
        case .journalDamaged: "a journal transaction that cannot be applied is never applied"
        case .logDescriptorDamaged: "a damaged descriptor may hide a later owner's epoch, so the region is not reused"
        case .logDamaged: "the lost records cannot be recovered; `shale digest` applies the others and frees the region"
        case .inodeMapEntryInvalid: "the chunk's inodes cannot be found"
        case .inodeDamaged: "the inode's contents are unknown; fsck does not guess them"
        case .extentMapDamaged: "the file's block map cannot be rebuilt"
        case .xattrBlockInvalid: "the extended-attribute pointer is left for the xattr code"
        case .specialFileHasBlocks: "which of its blocks hold anything is unknown; they are left mapped"
        case .blockOwnedTwice: "one owner would lose the block; giving each its own copy is not implemented"
        case .rootInvalid, .directoryDamaged: "rebuilding a directory is not implemented"
        case let .orphan(_, linkCount, _):
            linkCount == 0 ? "not freed while some directory or inode is unreadable (it may be referenced there)"
                : "it still has links; reconnecting orphans (lost+found) is not implemented"
        default: "not repaired this time (see the problems above it)"
        }
    }

    // MARK: 1. Bitmaps

    func repairBitmaps() throws(RepairError) {
        let complete = report.ownershipComplete
        var rewritten: Set<String> = []  // "tier:index"
        for device in pass.tiers {
            let union = pass.unions[device.tier] ?? []
            var unionIndex = 0
            let perBitmap = UInt64(AllocatorBitmapBlock.blocksPerBitmapBlock)
            for index in 0 ..< device.bitmapBlocks {
                let first = index * perBitmap
                let count = AllocatorBitmapBlock.blockCount(firstBlock: first, tierDataBlocks: device.dataBlocks)
                let offset = device.bitmapOffset + index * CheckPass<NVM>.blockBytes
                let (actual, freeCountWrong) = readBitmap(device, index: index)
                var expected = [UInt8](repeating: 0, count: AllocatorBitmapBlock.blocksPerBitmapBlock / 8)
                while unionIndex < union.count && union[unionIndex].upperBound <= first { unionIndex += 1 }
                var scan = unionIndex
                let end = first + UInt64(count)
                while scan < union.count && union[scan].lowerBound < end {
                    CheckPass<NVM>.setBits(&expected, from: Int(max(union[scan].lowerBound, first) - first),
                                           to: Int(min(union[scan].upperBound, end) - first))
                    scan += 1
                }
                var desired: [UInt8]
                if let actual {
                    desired = complete ? expected : zip(actual.bits, expected).map { $0 | $1 }
                    if desired == actual.bits && !freeCountWrong { continue }
                } else {
                    guard complete else { continue }
                    desired = expected
                }
                var bitmap = AllocatorBitmapBlock(tier: device.tier, firstBlock: first, blockCount: count)
                bitmap.bits = desired
                transaction.writeChanged(bitmap.encode(seed: seed), at: offset)
                rewritten.insert("\(device.tier):\(index)")
                try checkpoint()
            }
        }
        try commit()
        for problem in report.problems {
            switch problem {
            case .blockFreeButOwned:
                did(problem, "marked used")
            case .blockLeaked:
                if complete { did(problem, "freed") }
            case let .bitmapDamaged(tier, index, _):
                if rewritten.contains("\(tier):\(index)") {
                    did(problem, "rebuilt from the owners of its blocks")
                } else {
                    skip(problem, "the owners of its blocks are not all known (an inode or extent map is unreadable), so its bits cannot be rebuilt")
                }
            case let .bitmapFreeCountWrong(tier, index, _, _):
                if rewritten.contains("\(tier):\(index)") { did(problem, "free count corrected") }
            default:
                break
            }
        }
    }

    func readBitmap(_ device: DeviceDescriptor, index: UInt64) -> (AllocatorBitmapBlock?, freeCountWrong: Bool) {
        let (bitmap, problem) = CheckPass<NVM>.readBitmap(device, index: index, through: transaction, seed: seed)
        if case .bitmapFreeCountWrong = problem { return (bitmap, true) }
        return (bitmap, false)
    }

    // MARK: Inode slots

    func slotOffset(_ number: UInt64) -> UInt64? {
        guard case let .used(chunk, index, _) = pass.slot(number) else { return nil }
        return pass.chunks[chunk]!.offset + UInt64(index * Inode.encodedBytes)
    }

    func readInode(_ number: UInt64) -> Inode? {
        guard let offset = slotOffset(number) else { return nil }
        let bytes = transaction.read(offset, count: Inode.encodedBytes)
        let decoded = bytes.withUnsafeBytes { buffer in
            Result { () throws(FormatError) in try Inode.decode(buffer, seed: seed, expectedNumber: number) }
        }
        guard case let .success(inode?) = decoded else { return nil }
        return inode
    }

    func writeInode(_ inode: Inode) {
        transaction.writeChanged(inode.encode(seed: seed), at: slotOffset(inode.number)!)
    }

    // MARK: 2. Inodes

    func repairInodes() throws(RepairError) {
        var byInode: [UInt64: [CheckProblem]] = [:]
        var order: [UInt64] = []
        for problem in report.problems {
            let number: UInt64
            switch problem {
            case let .linkCountWrong(inode, _, _), let .allocatedBlocksWrong(inode, _, _), let .directorySizeWrong(inode, _, _),
                 let .symlinkSizeWrong(inode, _, _), let .parentHintWrong(inode, _, _):
                number = inode
            default: continue
            }
            if byInode[number] == nil { order.append(number) }
            byInode[number, default: []].append(problem)
        }
        for number in order {
            guard var inode = readInode(number) else {
                for problem in byInode[number]! { skip(problem, "the inode cannot be read again") }
                continue
            }
            var done: [(CheckProblem, String)] = []
            for problem in byInode[number]! {
                switch problem {
                case let .linkCountWrong(_, stored, actual):
                    inode.linkCount = actual
                    done.append((problem, "link count \(stored) → \(actual)"))
                case let .allocatedBlocksWrong(_, stored, actual):
                    inode.allocatedBlocks = actual
                    done.append((problem, "allocatedBlocks \(stored) → \(actual)"))
                case let .directorySizeWrong(_, stored, actual), let .symlinkSizeWrong(_, stored, actual):
                    inode.size = actual
                    done.append((problem, "size \(stored) → \(actual)"))
                case let .parentHintWrong(_, stored, parent):
                    inode.parentHint = parent
                    done.append((problem, "parentHint \(stored) → \(parent)"))
                default: break
                }
            }
            writeInode(inode)
            for (problem, what) in done { did(problem, what) }
            try checkpoint()
        }
        try commit()
    }

    // MARK: 3. Orphans

    func freeOrphans() throws(RepairError) {
        for problem in report.problems {
            guard case let .orphan(number, linkCount, isDirectory) = problem, linkCount == 0 else { continue }
            guard report.namespaceComplete && report.ownershipComplete else {
                skip(problem, Self.reason(for: problem))
                continue
            }
            if isDirectory {
                guard let (entries, _) = pass.list(number), entries.isEmpty else {
                    skip(problem, "a directory with link count 0 that is not empty is left as it is")
                    continue
                }
            }
            guard let offset = slotOffset(number) else {
                skip(problem, "the inode cannot be read again")
                continue
            }
            transaction.write([UInt8](repeating: 0, count: Inode.encodedBytes), at: offset)
            did(problem, "inode freed (its blocks are freed once nothing refers to them)")
            try checkpoint()
        }
        try commit()
    }

    // MARK: 4. Directory entries

    func repairDirectories() throws(RepairError) {
        var byDirectory: [UInt64: [CheckProblem]] = [:]
        var order: [UInt64] = []
        for problem in report.problems {
            let directory: UInt64
            switch problem {
            case let .danglingEntry(number, _, _, _), let .directoryLinkedAgain(number, _, _, _),
                 let .entryTypeWrong(number, _, _, _, _), let .entryCountWrong(number, _, _):
                directory = number
            default: continue
            }
            if byDirectory[directory] == nil { order.append(directory) }
            byDirectory[directory, default: []].append(problem)
        }
        guard !order.isEmpty else { return }
        let allocator: BlockAllocator<NVM>
        do {
            allocator = try BlockAllocator(nvm: pass.volume.nvm, device: pass.nvmData, volumeSeed: seed)
        } catch {
            for directory in order {
                for problem in byDirectory[directory]! { skip(problem, "the NVM allocator bitmaps are damaged (\(error))") }
            }
            return
        }
        for directory in order {
            let problems = byDirectory[directory]!
            // One transaction per directory: a directory that cannot be repaired is left
            // whole, and takes nothing of the others with it.
            do throws(DirectoryError) {
                try repair(directory, problems, allocator: allocator)
            } catch {
                transaction.abort()
                try? allocator.reload()
                for problem in problems { skip(problem, "\(error)") }
                continue
            }
            try commit()
        }
    }

    private func repair(_ directory: UInt64, _ problems: [CheckProblem], allocator: BlockAllocator<NVM>) throws(DirectoryError) {
        guard var inode = readInode(directory), inode.isDirectory else { throw .damaged("directory \(directory) cannot be read again") }
        var map: InodeBlockMap<NVM>
        do {
            map = try InodeBlockMap(inode: inode, transaction: transaction, allocator: allocator, seed: seed)
        } catch {
            throw .damaged("\(error)")
        }
        let store = DirectoryStore(directory: directory, hashKey: pass.superblock.directoryHashKey, volumeSeed: seed,
                                   transaction: transaction)
        var done: [(CheckProblem, String)] = []
        var countProblem: CheckProblem?
        for problem in problems {
            switch problem {
            case let .danglingEntry(_, name, target, _), let .directoryLinkedAgain(_, name, target, _):
                // Only the entry as it was found: a name that changed since is left alone.
                guard let entry = try store.lookup(name, in: map), entry.inode == target else { continue }
                try store.remove(name, from: &map)
                done.append((problem, "entry removed"))
            case let .entryTypeWrong(_, name, target, stored, actual):
                guard let entry = try store.lookup(name, in: map), entry.inode == target, entry.type == stored else { continue }
                try store.remove(name, from: &map)
                try store.insert((name: name, inode: target, type: actual), into: &map)
                done.append((problem, "entry type \(stored) → \(actual)"))
            case .entryCountWrong:
                countProblem = problem
            default: break
            }
        }
        // A hashed directory's count, after the removals (each of which decremented it).
        let listed = UInt64(try store.list(map, after: 0, limit: 1 << 40).entries.count)
        if try store.count(map) != listed, let offset = try map.offset(ofLogicalBlock: 0) {
            let bytes = transaction.read(offset, count: DirectoryBlock.encodedBytes)
            let decoded = bytes.withUnsafeBytes { buffer in
                Result { () throws(FormatError) in
                    try DirectoryBlock.decode(buffer, seed: seed, expectedDirectory: directory, expectedLogicalBlock: 0)
                }
            }
            guard case let .success(root) = decoded, case let .indexRoot(depth, stated, buckets) = root.content else {
                throw .damaged("directory \(directory) block 0 is not an index root")
            }
            let fixed = DirectoryBlock(directory: directory, logicalBlock: 0,
                                       content: .indexRoot(globalDepth: depth, entryCount: listed, bucketCount: buckets))
            transaction.writeChanged(fixed.encode(seed: seed), at: offset)
            if let countProblem { done.append((countProblem, "entry count \(stated) → \(listed)")) }
        } else if let countProblem {
            done.append((countProblem, "entry count now exact"))
        }
        do {
            try map.finish(into: &inode)
        } catch {
            throw .damaged("\(error)")
        }
        writeInode(inode)
        for (problem, what) in done { did(problem, what) }
    }
}
