// What the process's log holds that the shared area does not yet: LibFS's view of its own
// undigested operations, laid over the kernel's reads. Every entry is an absolute state
// (never a delta) stamped with the sequence number of the last record that produced it, so
// that after a digest has durably applied every record before sequence S, the entries older
// than S can be dropped: the shared area now says the same thing (`prune`). Entries at or
// after S stay correct on top of the newer shared area, because the digest applies records
// in log order with the same rules. (A data index's block leaves keep digested slots as
// stale ones instead of clearing them: see `BlockLeaf`.)
//
// - inodes: the whole inode after the process's operations (attributes, size, link count);
// - entries: per directory, names added (inode, type) or removed (inode 0);
// - data: per file, a byte-accurate index of the ranges written (pointing at the bytes in
//   the log, partial blocks included) or made zero (truncate, punch hole).

import ShaleFormat

/// A byte range of a file whose current contents the log determines.
struct DataPiece: Equatable {
    /// NVM byte offset of the piece's first byte, or `zeros`, or `zerosKeepingBlock`.
    static let zeros = UInt64.max
    /// Zeros from `start`, where the block holding `start` is data before it (a shrinking
    /// truncate into a block that held data keeps that block, as the digest and Linux do:
    /// SEEK_HOLE must not find a hole there although the data pieces in it are gone). A
    /// remnant of such a piece starts where a newer piece ends, whose block is data anyway.
    static let zerosKeepingBlock = UInt64.max - 1

    var start: UInt64
    var end: UInt64
    var source: UInt64
    var sequence: UInt64

    var isZeros: Bool { source >= Self.zerosKeepingBlock }

    /// The part of this piece inside `range`.
    func clipped(to range: Range<UInt64>) -> DataPiece? {
        let lower = max(start, range.lowerBound), upper = min(end, range.upperBound)
        guard lower < upper else { return nil }
        return DataPiece(start: lower, end: upper, source: isZeros ? source : source + (lower - start), sequence: sequence)
    }
}

/// One log-written block of a file in a `BlockLeaf`: where its bytes are in NVM (0: none;
/// NVM offset 0 is the superblock, never log data) and the record that wrote them.
struct BlockSlot {
    var source: UInt64 = 0
    var sequence: UInt64 = 0

    /// Written and not yet digested: a slot of a record before `watermark` is stale (the
    /// shared area holds it, and its log space may already be reused).
    @inline(__always)
    func isLive(_ watermark: UInt64) -> Bool { source != 0 && sequence >= watermark }
}

/// `BlockLeaf.blocks` consecutive blocks of a file, inline (1 KiB: what a random write
/// touches is one cache line of it, not a hash table bucket scattered over a megabyte).
///
/// Pruning never writes a leaf that still holds a live slot: it runs on the digest thread,
/// with writers waiting for the lock, and a line it writes must come back to the writer's
/// CPU before the next write into it. Digested slots stay behind as stale ones (see
/// `BlockSlot.isLive`), are overwritten by later writes, and go with their leaf once the
/// leaf's newest slot is digested: pruning reads one line per leaf instead of rewriting 16.
struct BlockLeaf {
    static var blocks: UInt64 { 64 }
    /// First block / `blocks`.
    let number: UInt64
    /// The highest sequence ever put here: below the watermark, every slot is stale.
    private(set) var newest: UInt64 = 0
    private(set) var slots = InlineArray<64, BlockSlot>(repeating: BlockSlot())

    init(number: UInt64) { self.number = number }

    /// A blind store: the slot's old value is not read (a random write's slot line is often
    /// not in the cache, and a load that misses stalls the write; a store does not).
    @inline(__always)
    mutating func put(_ slot: Int, _ value: BlockSlot) {
        slots[slot] = value
        if value.sequence > newest { newest = value.sequence }
    }

    /// Clears a slot; returns it when it was live.
    mutating func remove(_ slot: Int, watermark: UInt64) -> BlockSlot? {
        let value = slots[slot]
        guard value.source != 0 else { return nil }
        slots[slot] = BlockSlot()
        return value.isLive(watermark) ? value : nil
    }

    /// No slot holds a source (live or stale).
    var isEmpty: Bool {
        for slot in 0 ..< Int(Self.blocks) where slots[slot].source != 0 { return false }
        return true
    }
}

/// The pieces of one file the log determines: sorted, non-overlapping, byte-accurate. Two
/// parts that never overlap each other:
/// - the block leaves: pieces that are exactly one aligned block, in leaves of 64
///   consecutive blocks found by leaf number. A random 4 KiB overwrite (the commonest write
///   of a database or an image) is one small-table lookup and one slot store however many
///   writes are pending for the file;
/// - the spans: every other piece (partial blocks, multi-block writes, zeroed ranges), in
///   chunks of a few dozen, so an insert in the middle shifts one chunk, not every piece
///   pending for the file (a 64 MiB log holds thousands of writes to one file).
/// A span laid over block pieces evicts them (their parts outside it become spans).
struct DataIndex {
    /// No chunk is empty; every piece of a chunk ends before the next chunk's first starts.
    private var chunks: [[DataPiece]] = []
    /// The end of each chunk's last piece (searched without touching the chunks).
    private var ends: [UInt64] = []
    /// Leaves holding at least one block piece, in no order; `leafPositions` finds them.
    private var leaves: [BlockLeaf] = []
    private var leafPositions = NumberTable<Int>()
    /// Every record before this is digested: block slots older are stale.
    private var watermark: UInt64 = 0
    /// Pieces per chunk: a chunk that grows past twice this is split in two.
    private static var chunkTarget: Int { 16 }
    private static var blockBytes: UInt64 { UInt64(Format.blockBytes) }

    var isEmpty: Bool { chunks.isEmpty && leaves.isEmpty }

    /// Every piece, in order.
    var pieces: [DataPiece] {
        let spans = Array(chunks.joined())
        guard !leaves.isEmpty else { return spans }
        return Self.merge(spans, blockPieces(in: 0 ..< UInt64.max))
    }

    /// Lays `piece` over whatever it overlaps.
    mutating func insert(_ piece: DataPiece) {
        guard piece.start < piece.end else { return }
        if !piece.isZeros, piece.source != 0, piece.start % Self.blockBytes == 0, piece.end - piece.start == Self.blockBytes,
           !spansOverlap(piece.start ..< piece.end) {
            let (leaf, slot) = (piece.start / Self.blockBytes).quotientAndRemainder(dividingBy: BlockLeaf.blocks)
            let value = BlockSlot(source: piece.source, sequence: piece.sequence)
            if let position = leafPositions[leaf] {
                leaves[position].put(Int(slot), value)
            } else {
                var new = BlockLeaf(number: leaf)
                new.put(Int(slot), value)
                leafPositions[leaf] = leaves.count
                leaves.append(new)
            }
            return
        }
        if !leaves.isEmpty {
            // The block pieces under the span go; what sticks out of it (in its first and
            // last block only) becomes spans, which overlap nothing.
            for evicted in evictBlocks(in: piece.start ..< piece.end) {
                if evicted.start < piece.start, let left = evicted.clipped(to: evicted.start ..< piece.start) { insertSpan(left) }
                if piece.end < evicted.end, let right = evicted.clipped(to: piece.end ..< evicted.end) { insertSpan(right) }
            }
        }
        insertSpan(piece)
    }

    /// The pieces overlapping `range`, clipped to it.
    func pieces(in range: Range<UInt64>) -> [DataPiece] {
        let spans = spanPieces(in: range)
        guard !leaves.isEmpty, range.lowerBound < range.upperBound else { return spans }
        let inBlocks = blockPieces(in: range)
        return spans.isEmpty ? inBlocks : Self.merge(spans, inBlocks)
    }

    /// Drops pieces written by records before `sequence` (digested).
    mutating func prune(before sequence: UInt64) {
        watermark = max(watermark, sequence)
        if !leaves.isEmpty {
            // Reads each leaf's first line only; writes only to drop wholly stale leaves.
            if leaves.contains(where: { $0.newest < watermark }) {
                leaves.removeAll { $0.newest < watermark }
                leafPositions.removeAll(keepingCapacity: true)
                for (position, leaf) in leaves.enumerated() { leafPositions[leaf.number] = position }
            }
        }
        guard !chunks.isEmpty else { return }
        var remaining = 0
        for index in chunks.indices {
            chunks[index].removeAll { $0.sequence < sequence }
            remaining += chunks[index].count
        }
        chunks.removeAll { $0.isEmpty }
        // Pruning leaves small chunks behind: regroup when they are mostly small.
        if chunks.count > 1, remaining < chunks.count * Self.chunkTarget / 4 {
            chunks = Self.cut(Array(chunks.joined()))
        }
        ends = chunks.map { $0[$0.count - 1].end }
    }

    // MARK: Block pieces

    /// Positions of the leaves that may hold blocks of `range` (not empty), by leaf number.
    private func positionsOfLeaves(covering range: Range<UInt64>) -> [Int] {
        let first = range.lowerBound / Self.blockBytes / BlockLeaf.blocks
        let last = (range.upperBound - 1) / Self.blockBytes / BlockLeaf.blocks
        if last - first < UInt64(leaves.count) {
            return (first ... last).compactMap { leafPositions[$0] }
        }
        // A range wider than the leaves (a truncate, a whole-file read): visit the leaves.
        return leaves.indices.filter { leaves[$0].number >= first && leaves[$0].number <= last }
            .sorted { leaves[$0].number < leaves[$1].number }
    }

    /// The block pieces overlapping `range`, clipped to it, in order.
    private func blockPieces(in range: Range<UInt64>) -> [DataPiece] {
        var result: [DataPiece] = []
        for position in positionsOfLeaves(covering: range) {
            let firstBlock = leaves[position].number * BlockLeaf.blocks
            for slot in 0 ..< Int(BlockLeaf.blocks) {
                let value = leaves[position].slots[slot]
                guard value.isLive(watermark) else { continue }
                let start = (firstBlock + UInt64(slot)) * Self.blockBytes
                let piece = DataPiece(start: start, end: start + Self.blockBytes, source: value.source, sequence: value.sequence)
                if let clipped = piece.clipped(to: range) { result.append(clipped) }
            }
        }
        return result
    }

    /// Removes and returns the block pieces overlapping `range`.
    private mutating func evictBlocks(in range: Range<UInt64>) -> [DataPiece] {
        var evicted: [DataPiece] = []
        let numbers = positionsOfLeaves(covering: range).map { leaves[$0].number }
        for number in numbers {
            let position = leafPositions[number]!
            let firstBlock = number * BlockLeaf.blocks
            for slot in 0 ..< Int(BlockLeaf.blocks) {
                let start = (firstBlock + UInt64(slot)) * Self.blockBytes
                guard start < range.upperBound, start + Self.blockBytes > range.lowerBound,
                      let value = leaves[position].remove(slot, watermark: watermark) else { continue }
                evicted.append(DataPiece(start: start, end: start + Self.blockBytes, source: value.source, sequence: value.sequence))
            }
            if leaves[position].isEmpty {
                // Swap-remove: the last leaf takes its place.
                let moved = leaves.removeLast()
                if position < leaves.count {
                    leaves[position] = moved
                    leafPositions[moved.number] = position
                }
                leafPositions[number] = nil
            }
        }
        return evicted
    }

    /// Two sorted, mutually non-overlapping piece lists as one.
    private static func merge(_ a: [DataPiece], _ b: [DataPiece]) -> [DataPiece] {
        var result: [DataPiece] = []
        result.reserveCapacity(a.count + b.count)
        var i = 0, j = 0
        while i < a.count, j < b.count {
            if a[i].start < b[j].start { result.append(a[i]); i += 1 } else { result.append(b[j]); j += 1 }
        }
        result.append(contentsOf: a[i...])
        result.append(contentsOf: b[j...])
        return result
    }

    // MARK: Spans

    /// Index of the first chunk whose last piece ends after `offset`.
    private func chunkEnding(after offset: UInt64) -> Int {
        var low = 0, high = ends.count
        while low < high {
            let middle = (low + high) / 2
            if ends[middle] <= offset { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// True when a span overlaps `range`.
    private func spansOverlap(_ range: Range<UInt64>) -> Bool {
        guard !chunks.isEmpty else { return false }
        let chunk = chunkEnding(after: range.lowerBound)
        guard chunk < chunks.count else { return false }
        let pieces = chunks[chunk]
        return pieces[pieces.firstEnding(after: range.lowerBound)].start < range.upperBound
    }

    private mutating func insertSpan(_ piece: DataPiece) {
        let first = chunkEnding(after: piece.start)
        // Appends (the common case) touch nothing.
        if first == chunks.count {
            if let last = chunks.indices.last, chunks[last].count < Self.chunkTarget {
                chunks[last].append(piece)
                ends[last] = piece.end
            } else {
                chunks.append([piece])
                ends.append(piece.end)
            }
            return
        }
        // The pieces `piece` overlaps are in chunks first ..< last.
        var last = first + 1
        while last < chunks.count, chunks[last][0].start < piece.end { last += 1 }
        if last == first + 1 {
            chunks[first].layOver(piece)
            ends[first] = chunks[first][chunks[first].count - 1].end
            if chunks[first].count > 2 * Self.chunkTarget {
                let upper = Array(chunks[first][Self.chunkTarget...])
                chunks[first].removeSubrange(Self.chunkTarget...)
                chunks.insert(upper, at: first + 1)
                ends.insert(upper[upper.count - 1].end, at: first + 1)
                ends[first] = chunks[first][Self.chunkTarget - 1].end
            }
        } else {
            // Across chunks (a large write, a truncate): merge them, then cut again.
            var merged = Array(chunks[first ..< last].joined())
            merged.layOver(piece)
            let cut = Self.cut(merged)
            chunks.replaceSubrange(first ..< last, with: cut)
            ends.replaceSubrange(first ..< last, with: cut.map { $0[$0.count - 1].end })
        }
    }

    private static func cut(_ pieces: [DataPiece]) -> [[DataPiece]] {
        stride(from: 0, to: pieces.count, by: chunkTarget).map { Array(pieces[$0 ..< min($0 + chunkTarget, pieces.count)]) }
    }

    /// The spans overlapping `range`, clipped to it.
    private func spanPieces(in range: Range<UInt64>) -> [DataPiece] {
        var result: [DataPiece] = []
        var chunk = chunkEnding(after: range.lowerBound)
        guard chunk < chunks.count else { return result }
        var index = chunks[chunk].firstEnding(after: range.lowerBound)
        while chunk < chunks.count {
            let pieces = chunks[chunk]
            while index < pieces.count, pieces[index].start < range.upperBound {
                if let piece = pieces[index].clipped(to: range) { result.append(piece) }
                index += 1
            }
            if index < pieces.count { break }
            chunk += 1
            index = 0
        }
        return result
    }
}

extension [DataPiece] {
    /// Index of the first piece ending after `offset` (the array sorted, non-overlapping).
    fileprivate func firstEnding(after offset: UInt64) -> Int {
        var low = 0, high = count
        while low < high {
            let middle = (low + high) / 2
            if self[middle].end <= offset { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// Lays `piece` over the pieces of a sorted, non-overlapping array, in place: the parts
    /// of overlapped pieces outside it stay.
    fileprivate mutating func layOver(_ piece: DataPiece) {
        let first = firstEnding(after: piece.start)
        var last = first
        while last < count, self[last].start < piece.end { last += 1 }
        let left = first < last && self[first].start < piece.start ? self[first].clipped(to: self[first].start ..< piece.start) : nil
        let right = first < last && self[last - 1].end > piece.end ? self[last - 1].clipped(to: piece.end ..< self[last - 1].end) : nil
        // The common cases without a general replace: a piece in a gap, or over exactly one.
        if first == last {
            insert(piece, at: first)
        } else if last == first + 1, left == nil, right == nil {
            self[first] = piece
        } else {
            replaceSubrange(first ..< last, with: CollectionOfOne(piece))
            if let right { insert(right, at: first + 1) }
            if let left { insert(left, at: first) }
        }
    }
}

/// An inode as the process's operations left it.
struct PendingInode {
    var inode: Inode
    var sequence: UInt64
    /// Extended attributes, when an operation changed them (the full set).
    var xattrs: [(name: [UInt8], value: [UInt8])]?
    /// A symlink's target, when the symlink is not digested yet.
    var target: [UInt8]?
}

/// A name added (`inode != 0`) or removed (`inode == 0`) in a directory.
struct PendingEntry {
    var inode: UInt64
    var type: UInt8
    var sequence: UInt64
}

struct PendingState {
    var inodes = NumberTable<PendingInode>()
    var entries: [UInt64: [[UInt8]: PendingEntry]] = [:]
    var data = NumberTable<DataIndex>()
    /// Blocks that undigested records may still need, by sequence (for ENOSPC before logging).
    private var blockDemands = SequenceQueue<UInt64>()
    var pendingBlocks: UInt64 = 0

    /// What each record touched, in log order: pruning visits only these, so a digest batch
    /// costs what it digested, not what is pending.
    enum Touch {
        case inode(UInt64)
        case entry(UInt64, [UInt8])
        case data(UInt64)
        /// A write: the file's data index and its inode.
        case write(UInt64)
    }
    private var touches = SequenceQueue<Touch>()

    mutating func touched(_ touch: Touch, _ sequence: UInt64) {
        touches.append(touch, sequence: sequence)
    }

    mutating func demand(_ blocks: UInt64, sequence: UInt64) {
        guard blocks > 0 else { return }
        blockDemands.append(blocks, sequence: sequence)
        pendingBlocks += blocks
    }

    /// Forgets everything records before `sequence` produced: the shared area has it.
    mutating func prune(before sequence: UInt64) {
        // A file's data index is pruned whole, so once per call however many of its writes
        // were digested (a batch holds thousands of writes to one file).
        var prunedData: Set<UInt64> = []
        func pruneData(_ number: UInt64) {
            if data[number] != nil, prunedData.insert(number).inserted {
                data[number]!.prune(before: sequence)
                if data[number]!.isEmpty { data[number] = nil }
            }
        }
        // (The queue is moved out while it is drained: the visit edits the other tables.)
        var drained = touches
        touches = SequenceQueue()
        drained.dropFront(before: sequence) { touch in
            switch touch {
            case let .inode(number):
                if let entry = inodes[number], entry.sequence < sequence { inodes[number] = nil }
            case let .entry(directory, name):
                if let entry = entries[directory]?[name], entry.sequence < sequence {
                    entries[directory]![name] = nil
                    if entries[directory]!.isEmpty { entries[directory] = nil }
                }
            case let .data(number):
                pruneData(number)
            case let .write(number):
                if let entry = inodes[number], entry.sequence < sequence { inodes[number] = nil }
                pruneData(number)
            }
        }
        touches = drained
        var demands = blockDemands
        blockDemands = SequenceQueue()
        demands.dropFront(before: sequence) { pendingBlocks -= $0 }
        blockDemands = demands
        // Collections keep their capacity when emptied: a burst of creates leaves hundreds of
        // megabytes of empty tables behind. Once everything is digested, let them go.
        if inodes.isEmpty { inodes = NumberTable() }
        if entries.isEmpty { entries = [:] }
        if data.isEmpty { data = NumberTable() }
    }
}

/// Entries stamped with the sequence of the record that made them, appended in sequence
/// order and dropped from the front as digests pass them. Dropping moves a head index (no
/// shift of the rest per prune); the dead front is reclaimed by moving the live tail in place
/// once it is over half the storage, and the capacity is kept (up to `keptCapacityMax`
/// entries) however the queue drains: writers append on every call, and a reallocated array
/// faults fresh pages in under their appends.
struct SequenceQueue<Element> {
    private var storage: [(sequence: UInt64, element: Element)] = []
    /// The first entry not yet dropped.
    private var head = 0
    /// 64 Ki entries (2 MiB of touches) at most are kept once the queue empties.
    private static var keptCapacityMax: Int { 65_536 }

    var isEmpty: Bool { head == storage.count }
    var count: Int { storage.count - head }

    @inline(__always)
    mutating func append(_ element: Element, sequence: UInt64) {
        storage.append((sequence, element))
    }

    /// Drops the entries before `sequence`, oldest first, handing each to `body`.
    mutating func dropFront(before sequence: UInt64, _ body: (Element) -> Void) {
        while head < storage.count, storage[head].sequence < sequence {
            body(storage[head].element)
            head += 1
        }
        if head == storage.count {
            storage.removeAll(keepingCapacity: storage.capacity <= Self.keptCapacityMax)
            head = 0
        } else if head > 4096, head * 2 > storage.count {
            // The live tail moves to the front in place, then the dead end goes: the
            // capacity stays.
            let live = storage.count - head, dead = head
            storage.withUnsafeMutableBufferPointer { buffer in
                for index in 0 ..< live { buffer.swapAt(index, dead + index) }
            }
            storage.removeLast(dead)
            head = 0
        }
    }
}
