// The file-system checker behind `shale fsck` — KernFS (layer 4), read-only.
//
// Offers: `Checker(volume:).check(progress:)`, which walks a whole volume and returns a
// `CheckReport`: every broken invariant as a typed `CheckProblem` with its precise location
// (inode number, directory and entry name, tier and block range, log region and offset and
// sequence numbers), informational `CheckNotice`s (undigested log records, a journal
// transaction waiting to be applied, a superblock copy repaired at open), and counts (inodes,
// directories, files, blocks owned and marked used). `CheckRepair.swift` fixes what can be
// fixed from such a report.
// Needs: an opened `Volume` (superblock chosen, devices checked, journal control verified);
// nothing else. It writes nothing: every shared-area read goes through a MetadataTransaction
// that is never committed. When the journal holds a committed transaction not yet applied
// (a read-only open after a crash), its writes are put into that transaction first, so the
// check sees the shared area as recovery will leave it.
//
// What is checked, in order (docs/architecture.md "fsck"):
//   1. superblock copies (as `Volume` found them) and the metadata journal;
//   2. the log table (both descriptor copies of every region) and every owned log, scanned
//      from its digest cursor as recovery would: damage inside a log is a problem; a torn tail
//      is a clean end; undigested records are information (`shale digest` applies them);
//   3. the inode table: every inode map entry, every used slot decodes, seals and names its
//      number; every inode's extent map loads (tiers, bounds, tree shape, no overlap), its
//      xattr block is inside the NVM data area, `allocatedBlocks` equals what its maps hold,
//      a directory's size is its blocks × 4096;
//   4. the directory tree from the root: every block decodes, every entry names a used inode
//      of the entry's type, no directory is reached twice, a directory's parentHint is its
//      parent, a hashed directory's entry count is exact; link counts (a file: its entries; a
//      directory: 2 + its subdirectories); inodes the walk never reached are orphans (an open
//      but unlinked file of a live process looks the same; offline, after recovery, it is
//      not legitimate any more);
//   5. block ownership: inode chunks, file and directory blocks, extent-tree nodes and xattr
//      blocks; no block owned twice; each tier's allocator bitmap blocks verify, their stated
//      free counts match their bits, and their bits equal the owned blocks (a set bit nobody
//      owns is leaked; an owned block whose bit is clear could be handed out again).
//
// Damage that hides information is tracked: `ownershipComplete` is false when some inode or
// extent map could not be read (its blocks are unknown, so no block may be called leaked with
// certainty), `namespaceComplete` is false when some directory could not be listed, or an
// inode that may be a directory could not be read (its entries are unknown, so a link count is
// only known to be too low, never too high; a damaged inode an entry names as a file, say, is
// taken for one). Repair takes both into account.

import ShaleFormat
import ShaleMedia

// MARK: - What a check reports

/// Who holds a block.
public enum BlockOwner: Hashable, Sendable, CustomStringConvertible {
    /// The blocks of inode chunk `chunk` (inode map entry `chunk`).
    case inodeChunk(UInt64)
    /// A file's or directory's block at `logicalBlock`.
    case data(inode: UInt64, logicalBlock: UInt64)
    case extentTreeNode(inode: UInt64)
    case xattr(inode: UInt64)

    public var inode: UInt64? {
        switch self {
        case .inodeChunk: nil
        case let .data(inode, _), let .extentTreeNode(inode), let .xattr(inode): inode
        }
    }

    /// The owner of the block `blocks` further into the same run.
    func advanced(by blocks: UInt64) -> BlockOwner {
        if case let .data(inode, logical) = self { return .data(inode: inode, logicalBlock: logical + blocks) }
        return self
    }

    public var description: String {
        switch self {
        case let .inodeChunk(chunk): "inode chunk \(chunk)"
        case let .data(inode, logical): "inode \(inode) (logical block \(logical))"
        case let .extentTreeNode(inode): "an extent-tree node of inode \(inode)"
        case let .xattr(inode): "the extended attributes of inode \(inode)"
        }
    }

    var sortKey: (UInt8, UInt64, UInt64) {
        switch self {
        case let .inodeChunk(chunk): (0, chunk, 0)
        case let .data(inode, logical): (1, inode, logical)
        case let .extentTreeNode(inode): (2, inode, 0)
        case let .xattr(inode): (3, inode, 0)
        }
    }
}

/// Why a directory entry points at nothing.
public enum DanglingReason: Equatable, Sendable {
    /// The slot is free (or its chunk was never allocated).
    case free
    /// The number is beyond the inode table.
    case outsideTable
}

/// One broken invariant, with where it is.
public enum CheckProblem: Equatable, Sendable, CustomStringConvertible {
    // Superblock, journal
    /// A superblock copy damaged or stale, not rewritten (a read-only open).
    case superblockCopy(copy: String, problem: String)
    /// The journal holds a transaction that verifies but cannot be applied.
    case journalDamaged(detail: String)
    // Logs
    case logDescriptorDamaged(region: Int, copy: Int, detail: String)
    /// Records lost inside a log (an unreadable header, or a body whose checksum fails).
    case logDamaged(region: Int, offset: UInt64, kind: LogDamage.Kind, lostSequences: ClosedRange<UInt64>)
    // Inode table
    case inodeMapEntryInvalid(chunk: UInt64, offset: UInt64)
    case inodeDamaged(inode: UInt64, detail: String)
    // Maps
    case extentMapDamaged(inode: UInt64, detail: String)
    case xattrBlockInvalid(inode: UInt64, block: UInt64)
    case allocatedBlocksWrong(inode: UInt64, stored: UInt64, actual: UInt64)
    case directorySizeWrong(inode: UInt64, stored: UInt64, actual: UInt64)
    /// A symbolic link whose size is not the length of its inline target.
    case symlinkSizeWrong(inode: UInt64, stored: UInt64, actual: UInt64)
    /// A device node, FIFO or socket that maps blocks (it holds no data).
    case specialFileHasBlocks(inode: UInt64, blocks: UInt64)
    // Blocks and bitmaps
    case blockOwnedTwice(tier: Tier, blocks: Range<UInt64>, first: BlockOwner, second: BlockOwner)
    /// Marked used in the bitmap, owned by nothing.
    case blockLeaked(tier: Tier, blocks: Range<UInt64>)
    /// Owned, but free in the bitmap: the allocator could hand it out again.
    case blockFreeButOwned(tier: Tier, blocks: Range<UInt64>, owner: BlockOwner)
    case bitmapDamaged(tier: Tier, bitmapBlock: UInt64, detail: String)
    case bitmapFreeCountWrong(tier: Tier, bitmapBlock: UInt64, stated: UInt32, actual: UInt32)
    // Namespace
    case rootInvalid(inode: UInt64, detail: String)
    case directoryDamaged(directory: UInt64, detail: String)
    case danglingEntry(directory: UInt64, name: [UInt8], inode: UInt64, reason: DanglingReason)
    case entryTypeWrong(directory: UInt64, name: [UInt8], inode: UInt64, stored: UInt8, actual: UInt8)
    /// A second entry for a directory already reached through `parent` (a hard link to a
    /// directory, or a cycle).
    case directoryLinkedAgain(directory: UInt64, name: [UInt8], inode: UInt64, parent: UInt64)
    case parentHintWrong(directory: UInt64, stored: UInt64, parent: UInt64)
    case entryCountWrong(directory: UInt64, stated: UInt64, actual: UInt64)
    case linkCountWrong(inode: UInt64, stored: UInt32, actual: UInt32)
    /// A used inode unreachable from the root (for a directory: with everything below it).
    case orphan(inode: UInt64, linkCount: UInt32, isDirectory: Bool)

    /// A short stable name of the kind of problem (for scripts: `--json`).
    public var code: String {
        switch self {
        case .superblockCopy: "superblock-copy"
        case .journalDamaged: "journal-damaged"
        case .logDescriptorDamaged: "log-descriptor-damaged"
        case .logDamaged: "log-damaged"
        case .inodeMapEntryInvalid: "inode-map-entry-invalid"
        case .inodeDamaged: "inode-damaged"
        case .extentMapDamaged: "extent-map-damaged"
        case .xattrBlockInvalid: "xattr-block-invalid"
        case .allocatedBlocksWrong: "allocated-blocks-wrong"
        case .directorySizeWrong: "directory-size-wrong"
        case .symlinkSizeWrong: "symlink-size-wrong"
        case .specialFileHasBlocks: "special-file-has-blocks"
        case .blockOwnedTwice: "block-owned-twice"
        case .blockLeaked: "block-leaked"
        case .blockFreeButOwned: "block-free-but-owned"
        case .bitmapDamaged: "bitmap-damaged"
        case .bitmapFreeCountWrong: "bitmap-free-count-wrong"
        case .rootInvalid: "root-invalid"
        case .directoryDamaged: "directory-damaged"
        case .danglingEntry: "dangling-entry"
        case .entryTypeWrong: "entry-type-wrong"
        case .directoryLinkedAgain: "directory-linked-again"
        case .parentHintWrong: "parent-hint-wrong"
        case .entryCountWrong: "entry-count-wrong"
        case .linkCountWrong: "link-count-wrong"
        case .orphan: "orphan"
        }
    }

    /// Whether `fsck --repair` fixes problems of this kind (some only when the damage around
    /// them leaves it certain that nothing is lost: see CheckRepair.swift).
    public var isRepairable: Bool {
        switch self {
        case .superblockCopy, .allocatedBlocksWrong, .directorySizeWrong, .symlinkSizeWrong, .blockLeaked, .blockFreeButOwned,
             .bitmapDamaged, .bitmapFreeCountWrong, .danglingEntry, .entryTypeWrong, .directoryLinkedAgain,
             .parentHintWrong, .entryCountWrong, .linkCountWrong:
            true
        case let .orphan(_, linkCount, _):
            linkCount == 0
        case .journalDamaged, .logDescriptorDamaged, .logDamaged, .inodeMapEntryInvalid, .inodeDamaged,
             .extentMapDamaged, .xattrBlockInvalid, .specialFileHasBlocks, .blockOwnedTwice, .rootInvalid, .directoryDamaged:
            false
        }
    }

    /// The location and the values, for `--json`.
    public var fields: [(name: String, value: CheckField)] {
        switch self {
        case let .superblockCopy(copy, problem): [("copy", .text(copy)), ("detail", .text(problem))]
        case let .journalDamaged(detail): [("detail", .text(detail))]
        case let .logDescriptorDamaged(region, copy, detail):
            [("region", .number(UInt64(region))), ("copy", .number(UInt64(copy))), ("detail", .text(detail))]
        case let .logDamaged(region, offset, kind, lost):
            [("region", .number(UInt64(region))), ("offset", .number(offset)),
             ("damage", .text(kind == .header ? "header" : "body-checksum")),
             ("firstLostSequence", .number(lost.lowerBound)), ("lastLostSequence", .number(lost.upperBound))]
        case let .inodeMapEntryInvalid(chunk, offset): [("chunk", .number(chunk)), ("offset", .number(offset))]
        case let .inodeDamaged(inode, detail), let .extentMapDamaged(inode, detail), let .rootInvalid(inode, detail):
            [("inode", .number(inode)), ("detail", .text(detail))]
        case let .xattrBlockInvalid(inode, block): [("inode", .number(inode)), ("block", .number(block))]
        case let .allocatedBlocksWrong(inode, stored, actual), let .directorySizeWrong(inode, stored, actual),
             let .symlinkSizeWrong(inode, stored, actual):
            [("inode", .number(inode)), ("stored", .number(stored)), ("actual", .number(actual))]
        case let .specialFileHasBlocks(inode, blocks): [("inode", .number(inode)), ("blocks", .number(blocks))]
        case let .blockOwnedTwice(tier, blocks, first, second):
            [("tier", .text("\(tier)")), ("firstBlock", .number(blocks.lowerBound)), ("blockCount", .number(UInt64(blocks.count))),
             ("owner", .text(first.description)), ("otherOwner", .text(second.description))]
        case let .blockLeaked(tier, blocks):
            [("tier", .text("\(tier)")), ("firstBlock", .number(blocks.lowerBound)), ("blockCount", .number(UInt64(blocks.count)))]
        case let .blockFreeButOwned(tier, blocks, owner):
            [("tier", .text("\(tier)")), ("firstBlock", .number(blocks.lowerBound)), ("blockCount", .number(UInt64(blocks.count))),
             ("owner", .text(owner.description))]
        case let .bitmapDamaged(tier, index, detail):
            [("tier", .text("\(tier)")), ("bitmapBlock", .number(index)), ("detail", .text(detail))]
        case let .bitmapFreeCountWrong(tier, index, stated, actual):
            [("tier", .text("\(tier)")), ("bitmapBlock", .number(index)), ("stated", .number(UInt64(stated))),
             ("actual", .number(UInt64(actual)))]
        case let .directoryDamaged(directory, detail): [("directory", .number(directory)), ("detail", .text(detail))]
        case let .danglingEntry(directory, name, inode, reason):
            [("directory", .number(directory)), ("name", .text(Self.text(name))), ("inode", .number(inode)),
             ("reason", .text(reason == .free ? "free" : "outside-table"))]
        case let .entryTypeWrong(directory, name, inode, stored, actual):
            [("directory", .number(directory)), ("name", .text(Self.text(name))), ("inode", .number(inode)),
             ("stored", .number(UInt64(stored))), ("actual", .number(UInt64(actual)))]
        case let .directoryLinkedAgain(directory, name, inode, parent):
            [("directory", .number(directory)), ("name", .text(Self.text(name))), ("inode", .number(inode)),
             ("parent", .number(parent))]
        case let .parentHintWrong(directory, stored, parent):
            [("inode", .number(directory)), ("stored", .number(stored)), ("parent", .number(parent))]
        case let .entryCountWrong(directory, stated, actual):
            [("directory", .number(directory)), ("stated", .number(stated)), ("actual", .number(actual))]
        case let .linkCountWrong(inode, stored, actual):
            [("inode", .number(inode)), ("stored", .number(UInt64(stored))), ("actual", .number(UInt64(actual)))]
        case let .orphan(inode, linkCount, isDirectory):
            [("inode", .number(inode)), ("linkCount", .number(UInt64(linkCount))), ("directory", .text(isDirectory ? "yes" : "no"))]
        }
    }

    public var description: String {
        switch self {
        case let .superblockCopy(copy, problem):
            return "superblock copy \(copy) \(problem)"
        case let .journalDamaged(detail):
            return "metadata journal: \(detail)"
        case let .logDescriptorDamaged(region, copy, detail):
            return "log region \(region): descriptor copy \(copy): \(detail)"
        case let .logDamaged(region, offset, kind, lost):
            let what = kind == .header ? "unreadable header" : "body checksum mismatch"
            let records = lost.count == 1 ? "record \(lost.lowerBound)" : "records \(lost.lowerBound)-\(lost.upperBound)"
            return "log region \(region): \(what) at offset \(offset); \(records) lost"
        case let .inodeMapEntryInvalid(chunk, offset):
            return "inode map entry \(chunk) points outside the NVM data area (offset \(offset)); its inodes cannot be read"
        case let .inodeDamaged(inode, detail):
            return "inode \(inode): damaged: \(detail)"
        case let .extentMapDamaged(inode, detail):
            return "inode \(inode): extent map damaged: \(detail)"
        case let .xattrBlockInvalid(inode, block):
            return "inode \(inode): extended-attribute block \(block) lies outside the NVM data area"
        case let .allocatedBlocksWrong(inode, stored, actual):
            return "inode \(inode): allocatedBlocks is \(stored), its maps hold \(actual)"
        case let .directorySizeWrong(inode, stored, actual):
            return "directory \(inode): size is \(stored), its blocks make \(actual)"
        case let .symlinkSizeWrong(inode, stored, actual):
            return "symbolic link \(inode): size is \(stored), its target is \(actual) bytes"
        case let .specialFileHasBlocks(inode, blocks):
            return "inode \(inode): a device node, FIFO or socket maps \(blocks) block\(blocks == 1 ? "" : "s")"
        case let .blockOwnedTwice(tier, blocks, first, second):
            return "\(Self.blocks(tier, blocks)) owned twice: by \(first) and by \(second)"
        case let .blockLeaked(tier, blocks):
            return "\(Self.blocks(tier, blocks)) marked used in the allocator bitmap, owned by nothing (leaked)"
        case let .blockFreeButOwned(tier, blocks, owner):
            return "\(Self.blocks(tier, blocks)) owned by \(owner), but free in the allocator bitmap"
        case let .bitmapDamaged(tier, index, detail):
            return "\(tier) allocator bitmap block \(index): damaged: \(detail)"
        case let .bitmapFreeCountWrong(tier, index, stated, actual):
            return "\(tier) allocator bitmap block \(index): states \(stated) free blocks, its bits say \(actual)"
        case let .rootInvalid(inode, detail):
            return "root directory (inode \(inode)): \(detail)"
        case let .directoryDamaged(directory, detail):
            return "directory \(directory): cannot be listed: \(detail)"
        case let .danglingEntry(directory, name, inode, reason):
            let why = reason == .free ? "which is free" : "which is outside the inode table"
            return "directory \(directory) entry \(Self.shown(name)) points at inode \(inode), \(why)"
        case let .entryTypeWrong(directory, name, inode, stored, actual):
            return "directory \(directory) entry \(Self.shown(name)): type \(stored), but inode \(inode) is type \(actual) (\(Self.typeName(actual)))"
        case let .directoryLinkedAgain(directory, name, inode, parent):
            return "directory \(directory) entry \(Self.shown(name)) links directory \(inode) again (it is already in directory \(parent))"
        case let .parentHintWrong(directory, stored, parent):
            return "directory \(directory): parentHint is \(stored), its parent is \(parent)"
        case let .entryCountWrong(directory, stated, actual):
            return "directory \(directory): its index root counts \(stated) entries, it holds \(actual)"
        case let .linkCountWrong(inode, stored, actual):
            return "inode \(inode): link count \(stored), should be \(actual)"
        case let .orphan(inode, linkCount, isDirectory):
            let what = isDirectory ? "directory" : "file"
            return "inode \(inode) (\(what), link count \(linkCount)) is unreachable from the root (orphan)"
        }
    }

    static func blocks(_ tier: Tier, _ range: Range<UInt64>) -> String {
        range.count == 1 ? "\(tier) block \(range.lowerBound)" : "\(tier) blocks \(range.lowerBound)-\(range.upperBound - 1)"
    }

    /// A name as text: printable ASCII and valid UTF-8 as is, other bytes as \xNN.
    static func text(_ name: [UInt8]) -> String {
        let decoded = String(decoding: name, as: UTF8.self)
        if Array(decoded.utf8) == name, !decoded.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            return decoded
        }
        return name.map { byte in
            (0x20 ..< 0x7F).contains(byte) && byte != UInt8(ascii: "\\") ? String(UnicodeScalar(byte)) : "\\x" + String(byte, radix: 16)
        }.joined()
    }

    static func shown(_ name: [UInt8]) -> String { "\"\(text(name))\"" }

    static func typeName(_ type: UInt8) -> String {
        switch type {
        case 1: "FIFO"
        case 2: "character device"
        case 4: "directory"
        case 6: "block device"
        case 8: "regular file"
        case 10: "symbolic link"
        case 12: "socket"
        default: "unknown"
        }
    }
}

public enum CheckField: Equatable, Sendable {
    case number(UInt64)
    case text(String)
}

/// Information: not a broken invariant.
public enum CheckNotice: Equatable, Sendable, CustomStringConvertible {
    /// Opening the volume rewrote a superblock copy from the other.
    case superblockCopyRepaired(copy: String, problem: String, source: String)
    /// Opening the volume applied a committed journal transaction a crash had left.
    case journalReplayed(sequence: UInt64, writes: Int)
    /// A committed journal transaction waits to be applied (read-only check: checked as if
    /// applied; the next open for writing applies it).
    case journalPending(sequence: UInt64, writes: Int)
    /// A log holds committed records not yet digested.
    case undigested(region: Int, records: UInt64, bytes: UInt64)
    /// A log ends in a record a crash tore: it was never acknowledged and is dropped.
    case tornTail(region: Int, offset: UInt64, sequence: UInt64)
    /// One copy of a log descriptor fails its checksum and the other is current: an update a
    /// crash interrupted. The next recovery rewrites it.
    case logDescriptorCopyTorn(region: Int, copy: Int, detail: String)
    /// An unreachable inode with link count 0 on a volume in use: an open file a live process
    /// unlinked (the process releases it on close).
    case openUnlinked(inode: UInt64)
    /// Blocks marked used that no readable inode owns, while some inode or extent map could
    /// not be read: they may be its blocks, so they are not called leaked.
    case unattributedBlocks(tier: Tier, count: UInt64)

    public var description: String {
        switch self {
        case let .superblockCopyRepaired(copy, problem, source):
            "superblock copy \(copy) \(problem); repaired from copy \(source)"
        case let .journalReplayed(sequence, writes):
            "applied metadata journal transaction \(sequence) (\(writes) writes) left by a crash"
        case let .journalPending(sequence, writes):
            "metadata journal transaction \(sequence) (\(writes) writes) is committed but not yet applied; checked as if applied "
                + "(the next open for writing applies it)"
        case let .undigested(region, records, bytes):
            "log region \(region): \(records) record\(records == 1 ? "" : "s") (\(bytes) bytes) not yet digested; `shale digest` applies them"
        case let .tornTail(region, offset, sequence):
            "log region \(region): record \(sequence) at offset \(offset) was torn by a crash (never acknowledged; dropped at digest)"
        case let .logDescriptorCopyTorn(region, copy, detail):
            "log region \(region): descriptor copy \(copy) was torn by a crash during an update (\(detail)); the other copy is current, "
                + "and the next open or `shale digest` rewrites it"
        case let .openUnlinked(inode):
            "inode \(inode) has no links and no name: a file a live process unlinked while it was open"
        case let .unattributedBlocks(tier, count):
            count == 1
                ? "1 \(tier) block marked used is owned by no readable inode; an unreadable inode or extent map (above) may own it, "
                    + "so it is not called leaked"
                : "\(count) \(tier) blocks marked used are owned by no readable inode; an unreadable inode or extent map (above) "
                    + "may own them, so they are not called leaked"
        }
    }
}

public struct CheckCounts: Equatable, Sendable {
    public var inodeChunks: UInt64 = 0
    /// Used inodes that decode.
    public var inodes: UInt64 = 0
    public var directories: UInt64 = 0
    public var regularFiles: UInt64 = 0
    /// Symbolic links, device nodes, FIFOs and sockets.
    public var otherFiles: UInt64 = 0
    /// Distinct blocks something owns, per tier.
    public var blocksOwned: [Tier: UInt64] = [:]
    /// Bits set in the readable allocator bitmap blocks, per tier.
    public var blocksMarkedUsed: [Tier: UInt64] = [:]
    /// Log regions with an owner (attached or detached).
    public var logsInUse = 0
    public var undigestedRecords: UInt64 = 0
}

public struct CheckReport: Sendable {
    public var problems: [CheckProblem] = []
    public var notices: [CheckNotice] = []
    public var counts = CheckCounts()
    /// Every inode and extent map was read: the owned blocks are known exactly.
    public var ownershipComplete = true
    /// Every directory was listed from a valid root: references are known exactly.
    public var namespaceComplete = true

    public var isClean: Bool { problems.isEmpty }
    public var undigestedRecords: UInt64 { counts.undigestedRecords }
}

public struct CheckProgress: Equatable, Sendable {
    public enum Phase: String, Sendable {
        case logs = "log regions"
        case inodes = "inode slots"
        case directories = "directories"
        case bitmaps = "bitmap blocks"
    }
    public var phase: Phase
    public var done: UInt64
    public var total: UInt64
}

// MARK: - The checker

public struct Checker<NVM: PersistentMemory> {
    public let volume: Volume<NVM>
    /// The volume is in use (a mount, another shale): an unreachable inode with link count 0
    /// may be a file a live process unlinked while it was open, and is noted, not a problem.
    public let live: Bool

    public init(volume: Volume<NVM>, live: Bool = false) {
        self.volume = volume
        self.live = live
    }

    /// Checks the whole volume. Never writes; never traps on damage.
    public func check(progress: ((CheckProgress) -> Void)? = nil) -> CheckReport {
        CheckPass(volume: volume, live: live, progress: progress).run()
    }

    /// The NVM data-area blocks holding `inode`'s extended attributes: the head block's
    /// table (docs/format.md "Extended attributes"); nil when the head cannot be read.
    static func xattrBlocks(of inode: Inode, transaction: MetadataTransaction<NVM>, nvmData: DeviceDescriptor,
                            seed: UInt32) -> [UInt64]? {
        guard inode.xattrBlock != 0 else { return [] }
        guard inode.xattrBlock < nvmData.dataBlocks else { return nil }
        let bytes = transaction.read(nvmData.dataOffset + inode.xattrBlock * UInt64(Format.blockBytes), count: XattrBlock.encodedBytes)
        let decoded = bytes.withUnsafeBytes { buffer in
            Result { () throws(FormatError) in
                try XattrBlock.decode(buffer, seed: seed, expectedInode: inode.number, expectedBlock: inode.xattrBlock, expectedIndex: 0)
            }
        }
        guard case let .success(head) = decoded else { return nil }
        return head.table
    }
}

/// One run of owned blocks on one tier.
struct OwnedRun {
    var start: UInt64
    var count: UInt64
    var owner: BlockOwner
    var end: UInt64 { start + count }
}

/// What the inode pass learned about the slots of one inode chunk.
struct ChunkFacts {
    enum State: UInt8 { case free, used, damaged }
    enum Reach: UInt8 { case none, fromRoot, fromOrphan, orphanTop }
    var offset: UInt64
    var state: [State]
    var mode: [UInt32]
    var links: [UInt32]
    /// Entries naming the inode (directories: only the one that makes it their parent).
    var references: [UInt32]
    var reach: [Reach]

    init(offset: UInt64, slots: Int) {
        self.offset = offset
        state = Array(repeating: .free, count: slots)
        mode = Array(repeating: 0, count: slots)
        links = Array(repeating: 0, count: slots)
        references = Array(repeating: 0, count: slots)
        reach = Array(repeating: .none, count: slots)
    }
}

struct DirectoryFacts {
    var parentHint: UInt64
    /// The directory whose entry first reached it (the root: itself).
    var parent: UInt64?
    var subdirectories: UInt32 = 0
}

final class CheckPass<NVM: PersistentMemory> {
    let volume: Volume<NVM>
    let superblock: Superblock
    let layout: NVMLayout
    let seed: UInt32
    let nvmData: DeviceDescriptor
    let tiers: [DeviceDescriptor]
    let transaction: MetadataTransaction<NVM>
    let progress: ((CheckProgress) -> Void)?
    let live: Bool
    var report = CheckReport()

    var chunks: [UInt64: ChunkFacts] = [:]
    /// Chunks whose map entry is invalid: their inodes are unknown, neither free nor used.
    var unknownChunks: Set<UInt64> = []
    var directories: [UInt64: DirectoryFacts] = [:]
    /// Inodes that do not decode, and those of them an entry names with a type other than a
    /// directory's: evidence that they name no other inodes.
    var damagedInodes: Set<UInt64> = []
    var damagedNotDirectories: Set<UInt64> = []
    var runs: [Tier: [OwnedRun]] = [:]
    /// Per tier, the owned blocks as sorted disjoint ranges (after `checkBlocks`).
    var unions: [Tier: [Range<UInt64>]] = [:]
    /// Blocks marked used that nobody owns, per tier (reported only when ownership is known).
    var unattributed: [Tier: UInt64] = [:]

    var perChunk: UInt64 { UInt64(layout.inodesPerChunk) }
    static var blockBytes: UInt64 { UInt64(Format.blockBytes) }

    init(volume: Volume<NVM>, live: Bool = false, progress: ((CheckProgress) -> Void)?) {
        self.volume = volume
        self.live = live
        superblock = volume.superblock
        layout = superblock.layout
        seed = superblock.volumeID.checksumSeed
        tiers = superblock.devices.compactMap { $0 }
        nvmData = superblock.device(.nvm)!
        transaction = MetadataTransaction(journal: MetadataJournal(nvm: volume.nvm, superblock: superblock))
        self.progress = progress
    }

    func run() -> CheckReport {
        defer { transaction.abort() }
        checkSuperblockAndJournal()
        checkLogs()
        checkInodes()
        checkNamespace()
        checkBlocks()
        return report
    }

    func problem(_ problem: CheckProblem) { report.problems.append(problem) }

    /// A decoder's message without the structure's name when the problem already gives it.
    static func detail(_ error: FormatError, of structure: String) -> String {
        let text = error.description
        return text.hasPrefix(structure + ": ") ? String(text.dropFirst(structure.count + 2)) : text
    }

    // MARK: 1. Superblock and journal

    func checkSuperblockAndJournal() {
        for issue in volume.superblockCopyIssues {
            if issue.repaired {
                report.notices.append(.superblockCopyRepaired(copy: issue.copy, problem: issue.problem, source: issue.source))
            } else {
                problem(.superblockCopy(copy: issue.copy, problem: issue.problem))
            }
        }
        if let replayed = volume.replayedJournalTransaction {
            report.notices.append(.journalReplayed(sequence: replayed.sequence, writes: replayed.writes))
        }
        do {
            if let pending = try transaction.journal.pending() {
                for write in pending.writes { transaction.write(write.bytes, at: write.offset) }
                report.notices.append(.journalPending(sequence: pending.sequence, writes: pending.writes.count))
            }
        } catch {
            problem(.journalDamaged(detail: "\(error)"))
        }
    }

    // MARK: 2. Logs

    func checkLogs() {
        let table = LogTable(nvm: volume.nvm, superblock: superblock)
        let count = table.regionCount
        for region in 0 ..< count {
            let copies = (0 ..< 2).map { copy in
                transaction.read(layout.logDescriptorOffset(region: region, copy: copy), count: LogRegionDescriptor.encodedBytes)
            }
            let current = copies[0].withUnsafeBytes { first in
                copies[1].withUnsafeBytes { second in
                    LogRegionDescriptor.current(copies: (first, second), seed: seed, regionBytes: layout.logRegionBytes)
                }
            }
            var damaged: [(copy: Int, error: FormatError)] = []
            for (index, copy) in copies.enumerated() {
                let decoded = copy.withUnsafeBytes { buffer in
                    Result { () throws(FormatError) in try LogRegionDescriptor.decode(buffer, seed: seed, regionBytes: layout.logRegionBytes) }
                }
                if case let .failure(error) = decoded { damaged.append((index, error)) }
            }
            if damaged.count == 1, current.descriptor != nil {
                // One copy torn, the other current: an update a crash interrupted (the
                // protocol's expected damage; recovery rewrites it).
                report.notices.append(.logDescriptorCopyTorn(region: region, copy: damaged[0].copy, detail: "\(damaged[0].error)"))
            } else {
                for item in damaged { problem(.logDescriptorDamaged(region: region, copy: item.copy, detail: "\(item.error)")) }
            }
            if let descriptor = current.descriptor, descriptor.state != .free {
                report.counts.logsInUse += 1
                let lag = table.lag(region: region, descriptor: descriptor, searchPastDamage: true)
                for damage in lag.damage {
                    problem(.logDamaged(region: region, offset: damage.offset, kind: damage.kind, lostSequences: damage.lostSequences))
                }
                if lag.records > 0 {
                    report.notices.append(.undigested(region: region, records: lag.records, bytes: lag.bytes))
                    report.counts.undigestedRecords += lag.records
                }
                if case let .tornTail(offset, sequence) = lag.end {
                    report.notices.append(.tornTail(region: region, offset: offset, sequence: sequence))
                }
            }
            progress?(CheckProgress(phase: .logs, done: UInt64(region + 1), total: UInt64(count)))
        }
    }

    // MARK: 3. Inodes, maps

    func checkInodes() {
        let chunkBytes = layout.inodeChunkBytes
        let dataEnd = nvmData.dataOffset + nvmData.dataBlocks * Self.blockBytes
        var allocated: [(chunk: UInt64, offset: UInt64)] = []
        for chunk in 0 ..< layout.inodeMapEntries {
            let offset = transaction.readWord(layout.inodeMapOffset + chunk * 8)
            guard offset != 0 else { continue }
            guard offset % Self.blockBytes == 0, offset >= nvmData.dataOffset, offset <= dataEnd, chunkBytes <= dataEnd - offset else {
                problem(.inodeMapEntryInvalid(chunk: chunk, offset: offset))
                unknownChunks.insert(chunk)
                inodesUnknown()
                continue
            }
            allocated.append((chunk, offset))
        }
        report.counts.inodeChunks = UInt64(allocated.count)
        let total = UInt64(allocated.count) * perChunk
        var done: UInt64 = 0
        for (chunk, offset) in allocated {
            addRun(.nvm, start: (offset - nvmData.dataOffset) / Self.blockBytes, count: chunkBytes / Self.blockBytes,
                   owner: .inodeChunk(chunk))
            var facts = ChunkFacts(offset: offset, slots: Int(perChunk))
            let bytes = transaction.read(offset, count: Int(chunkBytes))
            for slot in 0 ..< Int(perChunk) {
                let number = chunk * perChunk + UInt64(slot)
                let decoded = bytes.withUnsafeBytes { buffer in
                    let view = UnsafeRawBufferPointer(rebasing: buffer[slot * Inode.encodedBytes ..< (slot + 1) * Inode.encodedBytes])
                    return Result { () throws(FormatError) in try Inode.decode(view, seed: seed, expectedNumber: number) }
                }
                switch decoded {
                case .success(nil):
                    continue
                case let .success(inode?):
                    if number == 0 {
                        problem(.inodeDamaged(inode: 0, detail: "inode number 0 is never used, but its slot holds an inode"))
                        facts.state[slot] = .damaged
                        report.ownershipComplete = false
                        continue
                    }
                    facts.state[slot] = .used
                    facts.mode[slot] = inode.mode
                    facts.links[slot] = inode.linkCount
                    checkInode(inode)
                case let .failure(error):
                    problem(.inodeDamaged(inode: number, detail: Self.detail(error, of: "inode \(number)")))
                    facts.state[slot] = .damaged
                    damagedInodes.insert(number)
                    report.ownershipComplete = false
                }
            }
            chunks[chunk] = facts
            done += perChunk
            progress?(CheckProgress(phase: .inodes, done: done, total: total))
        }
    }

    /// A chunk of inodes cannot be read: they may own blocks, and, being perhaps
    /// directories, name other inodes.
    func inodesUnknown() {
        report.ownershipComplete = false
        report.namespaceComplete = false
    }

    func checkInode(_ inode: Inode) {
        report.counts.inodes += 1
        let type = inode.mode & Inode.typeMask
        switch type {
        case Inode.typeDirectory:
            report.counts.directories += 1
            directories[inode.number] = DirectoryFacts(parentHint: inode.parentHint)
        case Inode.typeRegular: report.counts.regularFiles += 1
        default: report.counts.otherFiles += 1
        }
        var held: UInt64 = 0
        if inode.xattrBlock != 0 {
            // The head block's table names every block of the set (docs/format.md).
            let blocks = Checker<NVM>.xattrBlocks(of: inode, transaction: transaction, nvmData: nvmData, seed: seed) ?? []
            if blocks.isEmpty {
                problem(.xattrBlockInvalid(inode: inode.number, block: inode.xattrBlock))
                report.ownershipComplete = false
            }
            for block in blocks {
                guard block < nvmData.dataBlocks else {
                    problem(.xattrBlockInvalid(inode: inode.number, block: block))
                    continue
                }
                addRun(.nvm, start: block, count: 1, owner: .xattr(inode: inode.number))
                held += 1
            }
        }
        let special = type != Inode.typeRegular && type != Inode.typeDirectory && type != Inode.typeSymlink
        if case let .inline(bytes) = inode.mapping {
            if type == Inode.typeDirectory {
                problem(.extentMapDamaged(inode: inode.number, detail: "a directory keeps inline data"))
                report.ownershipComplete = false
                return
            }
            // A short symlink's target is its inline data, and its size is the target's length.
            // (Extents past the end of a regular file are legitimate: fallocate KEEP_SIZE.)
            if type == Inode.typeSymlink && inode.size != UInt64(bytes.count) {
                problem(.symlinkSizeWrong(inode: inode.number, stored: inode.size, actual: UInt64(bytes.count)))
            }
        } else {
            let extents: [Extent], nodeBlocks: [UInt64]
            do {
                let map = try ExtentMap(inode: inode, transaction: transaction, nvmData: nvmData, seed: seed, tiers: tiers)
                extents = try map.allExtents()
                nodeBlocks = try map.allNodeBlocks()
            } catch {
                problem(.extentMapDamaged(inode: inode.number, detail: "\(error)"))
                report.ownershipComplete = false
                return
            }
            for extent in extents {
                addRun(extent.tier, start: extent.physicalBlock, count: UInt64(extent.blockCount),
                       owner: .data(inode: inode.number, logicalBlock: extent.logicalBlock))
            }
            for node in nodeBlocks {
                addRun(.nvm, start: node, count: 1, owner: .extentTreeNode(inode: inode.number))
            }
            let mapBlocks = extents.reduce(UInt64(0)) { $0 + UInt64($1.blockCount) } + UInt64(nodeBlocks.count)
            held += mapBlocks
            if special && mapBlocks > 0 {
                problem(.specialFileHasBlocks(inode: inode.number, blocks: mapBlocks))
            }
            if type == Inode.typeDirectory {
                let size = extents.reduce(UInt64(0)) { $0 + UInt64($1.blockCount) } * Self.blockBytes
                if inode.size != size { problem(.directorySizeWrong(inode: inode.number, stored: inode.size, actual: size)) }
            }
        }
        if inode.allocatedBlocks != held {
            problem(.allocatedBlocksWrong(inode: inode.number, stored: inode.allocatedBlocks, actual: held))
        }
    }

    func addRun(_ tier: Tier, start: UInt64, count: UInt64, owner: BlockOwner) {
        runs[tier, default: []].append(OwnedRun(start: start, count: count, owner: owner))
    }

    // MARK: 4. Namespace

    enum Slot {
        case outside, unknown, free, damaged
        case used(chunk: UInt64, index: Int, mode: UInt32)
    }

    func slot(_ number: UInt64) -> Slot {
        guard number != 0, number < layout.inodeCapacity else { return .outside }
        let chunk = number / perChunk
        if unknownChunks.contains(chunk) { return .unknown }
        guard let facts = chunks[chunk] else { return .free }
        let index = Int(number % perChunk)
        switch facts.state[index] {
        case .free: return .free
        case .damaged: return .damaged
        case .used: return .used(chunk: chunk, index: index, mode: facts.mode[index])
        }
    }

    /// Reads a used directory inode again and lists it; nil (and a problem) when it cannot be.
    func list(_ directory: UInt64) -> (entries: [DirectoryEntry], stated: UInt64)? {
        guard case let .used(chunk, index, _) = slot(directory) else { return nil }
        let offset = chunks[chunk]!.offset + UInt64(index * Inode.encodedBytes)
        let bytes = transaction.read(offset, count: Inode.encodedBytes)
        let decoded = bytes.withUnsafeBytes { buffer in
            Result { () throws(FormatError) in try Inode.decode(buffer, seed: seed, expectedNumber: directory) }
        }
        guard case let .success(inode?) = decoded else { return nil }
        do throws(DirectoryError) {
            let map = try ReadOnlyDirectoryMap<NVM>(inode: inode, transaction: transaction, nvmData: nvmData, seed: seed)
            let store = DirectoryStore(directory: directory, hashKey: superblock.directoryHashKey, volumeSeed: seed, transaction: transaction)
            let listing = try store.list(map, after: 0, limit: 1 << 40)
            return (listing.entries, try store.count(map))
        } catch {
            let detail: String
            if case let .damaged(reason) = error { detail = reason } else { detail = "\(error)" }
            problem(.directoryDamaged(directory: directory, detail: detail))
            report.namespaceComplete = false
            return nil
        }
    }

    func checkNamespace() {
        let root = superblock.rootInode
        let totalDirectories = UInt64(directories.count)
        var walked: UInt64 = 0
        guard case let .used(rootChunk, rootIndex, rootMode) = slot(root), rootMode & Inode.typeMask == Inode.typeDirectory else {
            let detail: String
            switch slot(root) {
            case .used: detail = "is not a directory"
            case .free: detail = "is free"
            case .damaged: detail = "is damaged"
            default: detail = "cannot be read"
            }
            problem(.rootInvalid(inode: root, detail: detail))
            report.namespaceComplete = false
            return
        }
        chunks[rootChunk]!.reach[rootIndex] = .fromRoot
        directories[root]!.parent = root

        /// Walks the tree under `start` breadth first (so a directory is first reached by its
        /// shallowest entry: a cycle back to an ancestor is the second entry, never the first).
        func walk(from start: UInt64, reach: ChunkFacts.Reach) {
            var queue = [start]
            var next = 0
            while next < queue.count {
                let directory = queue[next]
                next += 1
                walked += 1
                progress?(CheckProgress(phase: .directories, done: walked, total: totalDirectories))
                guard let (entries, stated) = list(directory) else { continue }
                if stated != UInt64(entries.count) {
                    problem(.entryCountWrong(directory: directory, stated: stated, actual: UInt64(entries.count)))
                }
                for entry in entries {
                    switch slot(entry.inode) {
                    case .outside:
                        problem(.danglingEntry(directory: directory, name: entry.name, inode: entry.inode, reason: .outsideTable))
                    case .free:
                        problem(.danglingEntry(directory: directory, name: entry.name, inode: entry.inode, reason: .free))
                    case .damaged:
                        // Already reported. The entry's type says whether it may be a directory.
                        if entry.type != 0 && entry.type != Digester<NVM>.directoryType(Inode.typeDirectory) {
                            damagedNotDirectories.insert(entry.inode)
                        }
                    case .unknown:
                        break
                    case let .used(chunk, index, mode):
                        let type = Digester<NVM>.directoryType(mode)
                        if entry.type != type {
                            problem(.entryTypeWrong(directory: directory, name: entry.name, inode: entry.inode,
                                                    stored: entry.type, actual: type))
                        }
                        if mode & Inode.typeMask == Inode.typeDirectory {
                            let target = entry.inode
                            if let parent = directories[target]!.parent {
                                problem(.directoryLinkedAgain(directory: directory, name: entry.name, inode: target, parent: parent))
                            } else if chunks[chunk]!.reach[index] == .orphanTop {
                                // An orphan walked earlier turns out to live here.
                                adopt(target, into: directory, chunk: chunk, index: index, reach: reach)
                            } else {
                                adopt(target, into: directory, chunk: chunk, index: index, reach: reach)
                                queue.append(target)
                            }
                        } else {
                            chunks[chunk]!.references[index] += 1
                            chunks[chunk]!.reach[index] = reach
                        }
                    }
                }
            }
        }

        walk(from: root, reach: .fromRoot)

        // Orphans: directories the walk never reached head their own walks (ascending numbers;
        // a later one that holds an earlier one adopts it), then other unreached inodes.
        for directory in directories.keys.sorted() {
            let chunk = directory / perChunk, index = Int(directory % perChunk)
            guard chunks[chunk]!.reach[index] == .none else { continue }
            chunks[chunk]!.reach[index] = .orphanTop
            walk(from: directory, reach: .fromOrphan)
        }
        for chunk in chunks.keys.sorted() {
            let facts = chunks[chunk]!
            for index in 0 ..< facts.state.count where facts.state[index] == .used {
                if facts.reach[index] == .none { chunks[chunk]!.reach[index] = .orphanTop }
            }
        }

        // A damaged inode that may be a directory hides entries: references may be missing.
        if !damagedInodes.isSubset(of: damagedNotDirectories) { report.namespaceComplete = false }

        // Parent hints, link counts, orphans, in inode order.
        for chunk in chunks.keys.sorted() {
            let facts = chunks[chunk]!
            for index in 0 ..< facts.state.count where facts.state[index] == .used {
                let number = chunk * perChunk + UInt64(index)
                let isDirectory = facts.mode[index] & Inode.typeMask == Inode.typeDirectory
                if facts.reach[index] == .orphanTop {
                    if live && facts.links[index] == 0 {
                        report.notices.append(.openUnlinked(inode: number))
                    } else {
                        problem(.orphan(inode: number, linkCount: facts.links[index], isDirectory: isDirectory))
                    }
                    continue
                }
                if isDirectory, let directory = directories[number], let parent = directory.parent, directory.parentHint != parent {
                    problem(.parentHintWrong(directory: number, stored: directory.parentHint, parent: parent))
                }
                let actual = isDirectory ? 2 + directories[number]!.subdirectories : facts.references[index]
                // With a directory unreadable, more references may exist than were seen: only a
                // count below those seen is certainly wrong.
                if facts.links[index] != actual && (report.namespaceComplete || facts.links[index] < actual) {
                    problem(.linkCountWrong(inode: number, stored: facts.links[index], actual: actual))
                }
            }
        }
    }

    func adopt(_ directory: UInt64, into parent: UInt64, chunk: UInt64, index: Int, reach: ChunkFacts.Reach) {
        directories[directory]!.parent = parent
        directories[parent]!.subdirectories += 1
        chunks[chunk]!.references[index] += 1
        chunks[chunk]!.reach[index] = reach
    }

    // MARK: 5. Blocks and bitmaps

    func checkBlocks() {
        let totalBitmaps = tiers.reduce(UInt64(0)) { $0 + $1.bitmapBlocks }
        var doneBitmaps: UInt64 = 0
        for device in tiers {
            var owned = runs[device.tier] ?? []
            owned.sort { ($0.start, $0.owner.sortKey.0, $0.owner.sortKey.1, $0.owner.sortKey.2)
                < ($1.start, $1.owner.sortKey.0, $1.owner.sortKey.1, $1.owner.sortKey.2) }
            // Overlaps: each run against the run reaching furthest before it.
            var union: [Range<UInt64>] = []
            var furthest: Int? = nil
            var prefixEnd: [UInt64] = []
            prefixEnd.reserveCapacity(owned.count)
            for (index, run) in owned.enumerated() {
                if let other = furthest, owned[other].end > run.start {
                    let overlap = run.start ..< min(run.end, owned[other].end)
                    problem(.blockOwnedTwice(tier: device.tier, blocks: overlap,
                                             first: owned[other].owner.advanced(by: overlap.lowerBound - owned[other].start),
                                             second: run.owner))
                }
                if furthest == nil || run.end > owned[furthest!].end { furthest = index }
                prefixEnd.append(owned[furthest!].end)
                if let last = union.last, last.upperBound >= run.start {
                    union[union.count - 1] = last.lowerBound ..< max(last.upperBound, run.end)
                } else {
                    union.append(run.start ..< run.end)
                }
            }
            report.counts.blocksOwned[device.tier] = union.reduce(0) { $0 + UInt64($1.count) }
            unions[device.tier] = union

            /// The owner of `block` (owned by someone, per the union): the latest-starting run
            /// at or before it that covers it.
            func owner(of block: UInt64) -> Int? {
                var low = 0, high = owned.count
                while low < high {
                    let middle = (low + high) / 2
                    if owned[middle].start <= block { low = middle + 1 } else { high = middle }
                }
                var index = low - 1
                while index >= 0 && prefixEnd[index] > block {
                    if owned[index].end > block { return index }
                    index -= 1
                }
                return nil
            }

            var leaked: Range<UInt64>? = nil
            var unmarked: (range: Range<UInt64>, run: Int)? = nil
            func flushLeaked() {
                if let range = leaked {
                    // With an inode or extent map unreadable, these may well be its blocks.
                    if report.ownershipComplete {
                        problem(.blockLeaked(tier: device.tier, blocks: range))
                    } else {
                        unattributed[device.tier, default: 0] += UInt64(range.count)
                    }
                }
                leaked = nil
            }
            func flushUnmarked() {
                if let (range, run) = unmarked {
                    problem(.blockFreeButOwned(tier: device.tier, blocks: range,
                                               owner: owned[run].owner.advanced(by: range.lowerBound - owned[run].start)))
                }
                unmarked = nil
            }

            var unionIndex = 0
            var marked: UInt64 = 0
            let perBitmap = UInt64(AllocatorBitmapBlock.blocksPerBitmapBlock)
            for index in 0 ..< device.bitmapBlocks {
                let first = index * perBitmap
                let count = AllocatorBitmapBlock.blockCount(firstBlock: first, tierDataBlocks: device.dataBlocks)
                guard let actual = readBitmap(device, index: index) else {
                    // Unknown bits: no comparison, and runs do not continue across it.
                    flushLeaked()
                    flushUnmarked()
                    doneBitmaps += 1
                    progress?(CheckProgress(phase: .bitmaps, done: doneBitmaps, total: totalBitmaps))
                    continue
                }
                marked += UInt64(actual.usedCount)
                // The bits the owners imply.
                var expected = [UInt8](repeating: 0, count: actual.bits.count)
                while unionIndex < union.count && union[unionIndex].upperBound <= first { unionIndex += 1 }
                var scan = unionIndex
                let end = first + UInt64(count)
                while scan < union.count && union[scan].lowerBound < end {
                    let from = max(union[scan].lowerBound, first) - first
                    let to = min(union[scan].upperBound, end) - first
                    Self.setBits(&expected, from: Int(from), to: Int(to))
                    scan += 1
                }
                for byte in 0 ..< (Int(count) + 7) / 8 where expected[byte] != actual.bits[byte] {
                    for bit in 0 ..< 8 {
                        let position = byte * 8 + bit
                        guard position < Int(count) else { break }
                        let want = expected[byte] & (1 << bit) != 0
                        let have = actual.bits[byte] & (1 << bit) != 0
                        guard want != have else { continue }
                        let block = first + UInt64(position)
                        if have {
                            if let range = leaked, range.upperBound == block {
                                leaked = range.lowerBound ..< block + 1
                            } else {
                                flushLeaked()
                                leaked = block ..< block + 1
                            }
                        } else if let run = owner(of: block) {
                            if let current = unmarked, current.run == run, current.range.upperBound == block {
                                unmarked = (current.range.lowerBound ..< block + 1, run)
                            } else {
                                flushUnmarked()
                                unmarked = (block ..< block + 1, run)
                            }
                        }
                    }
                }
                doneBitmaps += 1
                progress?(CheckProgress(phase: .bitmaps, done: doneBitmaps, total: totalBitmaps))
            }
            flushLeaked()
            flushUnmarked()
            // Runs past the tier's end are the extent map's damage, reported there.
            report.counts.blocksMarkedUsed[device.tier] = marked
        }
        for device in tiers {
            if let count = unattributed[device.tier], count > 0 {
                report.notices.append(.unattributedBlocks(tier: device.tier, count: count))
            }
        }
        // Problems of one kind come out grouped by tier above; order them by location.
        report.problems = Self.ordered(report.problems)
    }

    /// Stable order: everything as found, but block problems sorted by tier and block.
    static func ordered(_ problems: [CheckProblem]) -> [CheckProblem] {
        func blockKey(_ problem: CheckProblem) -> (UInt8, UInt64)? {
            switch problem {
            case let .blockOwnedTwice(tier, blocks, _, _), let .blockLeaked(tier, blocks), let .blockFreeButOwned(tier, blocks, _):
                (tier.rawValue, blocks.lowerBound)
            default: nil
            }
        }
        let others = problems.filter { blockKey($0) == nil }
        let blocks = problems.filter { blockKey($0) != nil }.enumerated().sorted { a, b in
            let ka = blockKey(a.element)!, kb = blockKey(b.element)!
            return (ka.0, ka.1, a.offset) < (kb.0, kb.1, b.offset)
        }.map(\.element)
        return others + blocks
    }

    static func setBits(_ bits: inout [UInt8], from: Int, to: Int) {
        var position = from
        while position < to {
            if position % 8 == 0 && position + 8 <= to {
                bits[position / 8] = 0xFF
                position += 8
            } else {
                bits[position / 8] |= 1 << (position % 8)
                position += 1
            }
        }
    }

    /// A bitmap block's bits, or nil (and a problem) when it cannot be trusted. A wrong free
    /// count is its own problem; the bits are still used.
    func readBitmap(_ device: DeviceDescriptor, index: UInt64) -> AllocatorBitmapBlock? {
        let (bitmap, found) = Self.readBitmap(device, index: index, through: transaction, seed: seed)
        if let found { problem(found) }
        return bitmap
    }

    /// A bitmap block as `transaction` reads it: its bits when they can be trusted, and the
    /// problem with it, if any.
    static func readBitmap(_ device: DeviceDescriptor, index: UInt64, through transaction: MetadataTransaction<NVM>,
                           seed: UInt32) -> (AllocatorBitmapBlock?, CheckProblem?) {
        let first = index * UInt64(AllocatorBitmapBlock.blocksPerBitmapBlock)
        let expectedCount = AllocatorBitmapBlock.blockCount(firstBlock: first, tierDataBlocks: device.dataBlocks)
        let bytes = transaction.read(device.bitmapOffset + index * blockBytes, count: Format.blockBytes)
        let decoded = bytes.withUnsafeBytes { buffer in
            Result { () throws(FormatError) in
                try AllocatorBitmapBlock.decode(buffer, seed: seed, expectedTier: device.tier, expectedFirstBlock: first,
                                                expectedBlockCount: expectedCount)
            }
        }
        switch decoded {
        case let .success(bitmap):
            return (bitmap, nil)
        case let .failure(error):
            if case let .invalidField(_, field, _) = error, field == "free count" {
                // Everything else verified (the free count is checked last): trust the bits.
                var bitmap = AllocatorBitmapBlock(tier: device.tier, firstBlock: first, blockCount: expectedCount)
                let header = Format.blockBytes - AllocatorBitmapBlock.blocksPerBitmapBlock / 8
                bitmap.bits = Array(bytes[header ..< header + bitmap.bits.count])
                let stated = bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 12, as: UInt32.self)) }
                return (bitmap, .bitmapFreeCountWrong(tier: device.tier, bitmapBlock: index, stated: stated,
                                                      actual: UInt32(bitmap.freeCount)))
            }
            return (nil, .bitmapDamaged(tier: device.tier, bitmapBlock: index, detail: "\(error)"))
        }
    }
}

/// A directory's blocks as its extent map says, for listing only.
struct ReadOnlyDirectoryMap<NVM: PersistentMemory>: DirectoryBlockMap {
    let map: ExtentMap<NVM>
    let nvmData: DeviceDescriptor

    init(inode: Inode, transaction: MetadataTransaction<NVM>, nvmData: DeviceDescriptor, seed: UInt32) throws(DirectoryError) {
        do {
            map = try ExtentMap(inode: inode, transaction: transaction, nvmData: nvmData, seed: seed)
        } catch {
            throw .damaged("\(error)")
        }
        self.nvmData = nvmData
    }

    func offset(ofLogicalBlock logical: UInt64) throws(DirectoryError) -> UInt64? {
        let found: Extent?
        do { found = try map.lookup(logical) } catch { throw .damaged("\(error)") }
        guard let extent = found, extent.tier == .nvm else { return nil }
        let block = extent.physicalBlock + (logical - extent.logicalBlock)
        guard block < nvmData.dataBlocks else { return nil }
        return nvmData.dataOffset + block * UInt64(Format.blockBytes)
    }

    mutating func allocate(logicalBlock logical: UInt64) throws(DirectoryError) -> UInt64 {
        throw .damaged("a read-only listing allocates nothing")
    }

    mutating func release(logicalBlock logical: UInt64) {}
}
