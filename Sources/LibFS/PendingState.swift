// What the process's log holds that the shared area does not yet: LibFS's view of its own
// undigested operations, laid over the kernel's reads. Every entry is an absolute state
// (never a delta) stamped with the sequence number of the last record that produced it, so
// that after a digest has durably applied every record before sequence S, the entries older
// than S can be dropped: the shared area now says the same thing (`prune`). Entries at or
// after S stay correct on top of the newer shared area, because the digest applies records
// in log order with the same rules.
//
// - inodes: the whole inode after the process's operations (attributes, size, link count);
// - entries: per directory, names added (inode, type) or removed (inode 0);
// - data: per file, a byte-accurate index of the ranges written (pointing at the bytes in
//   the log, partial blocks included) or made zero (truncate, punch hole).

import ShaleFormat

/// A byte range of a file whose current contents the log determines.
struct DataPiece: Equatable {
    /// NVM byte offset of the piece's first byte, or `zeros`.
    static let zeros = UInt64.max

    var start: UInt64
    var end: UInt64
    var source: UInt64
    var sequence: UInt64

    var isZeros: Bool { source == Self.zeros }

    /// The part of this piece inside `range`.
    func clipped(to range: Range<UInt64>) -> DataPiece? {
        let lower = max(start, range.lowerBound), upper = min(end, range.upperBound)
        guard lower < upper else { return nil }
        return DataPiece(start: lower, end: upper, source: isZeros ? source : source + (lower - start), sequence: sequence)
    }
}

/// Sorted, non-overlapping pieces of one file, kept in chunks of a few dozen: an insert in
/// the middle (a random write) shifts one chunk, not every piece pending for the file (a
/// 64 MiB log holds thousands of 4 KiB writes to one file).
struct DataIndex {
    /// No chunk is empty; every piece of a chunk ends before the next chunk's first starts.
    private var chunks: [[DataPiece]] = []
    /// The end of each chunk's last piece (searched without touching the chunks).
    private var ends: [UInt64] = []
    /// Pieces per chunk: a chunk that grows past twice this is split in two.
    private static var chunkTarget: Int { 16 }

    var isEmpty: Bool { chunks.isEmpty }

    /// Every piece, in order.
    var pieces: [DataPiece] { Array(chunks.joined()) }

    /// Index of the first chunk whose last piece ends after `offset`.
    private func chunkEnding(after offset: UInt64) -> Int {
        var low = 0, high = ends.count
        while low < high {
            let middle = (low + high) / 2
            if ends[middle] <= offset { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// Lays `piece` over whatever it overlaps.
    mutating func insert(_ piece: DataPiece) {
        guard piece.start < piece.end else { return }
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

    /// The pieces overlapping `range`, clipped to it.
    func pieces(in range: Range<UInt64>) -> [DataPiece] {
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

    /// Drops pieces written by records before `sequence` (digested).
    mutating func prune(before sequence: UInt64) {
        var remaining = 0
        for index in chunks.indices {
            chunks[index].removeAll { $0.sequence < sequence }
            remaining += chunks[index].count
        }
        chunks.removeAll { $0.isEmpty }
        // Pruning leaves small chunks behind: regroup when they are mostly small.
        if chunks.count > 1, remaining < chunks.count * Self.chunkTarget / 4 {
            chunks = Self.cut(pieces)
        }
        ends = chunks.map { $0[$0.count - 1].end }
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
    var inodes: [UInt64: PendingInode] = [:]
    var entries: [UInt64: [[UInt8]: PendingEntry]] = [:]
    var data: [UInt64: DataIndex] = [:]
    /// Blocks that undigested records may still need, by sequence (for ENOSPC before logging).
    var blockDemands: [(sequence: UInt64, blocks: UInt64)] = []
    var pendingBlocks: UInt64 = 0

    /// What each record touched, in log order: pruning visits only these, so a digest batch
    /// costs what it digested, not what is pending.
    enum Touch {
        case inode(UInt64)
        case entry(UInt64, [UInt8])
        case data(UInt64)
    }
    private var touches: [(sequence: UInt64, touch: Touch)] = []
    private static var touchesKeptMax: Int { 65_536 }
    private var touchesHead = 0

    mutating func touched(_ touch: Touch, _ sequence: UInt64) {
        touches.append((sequence, touch))
    }

    mutating func demand(_ blocks: UInt64, sequence: UInt64) {
        guard blocks > 0 else { return }
        blockDemands.append((sequence, blocks))
        pendingBlocks += blocks
    }

    /// Forgets everything records before `sequence` produced: the shared area has it.
    mutating func prune(before sequence: UInt64) {
        // A file's data index is pruned whole, so once per call however many of its writes
        // were digested (a batch holds thousands of writes to one file).
        var prunedData: Set<UInt64> = []
        while touchesHead < touches.count, touches[touchesHead].sequence < sequence {
            switch touches[touchesHead].touch {
            case let .inode(number):
                if let entry = inodes[number], entry.sequence < sequence { inodes[number] = nil }
            case let .entry(directory, name):
                if let entry = entries[directory]?[name], entry.sequence < sequence {
                    entries[directory]![name] = nil
                    if entries[directory]!.isEmpty { entries[directory] = nil }
                }
            case let .data(number):
                if data[number] != nil, prunedData.insert(number).inserted {
                    data[number]!.prune(before: sequence)
                    if data[number]!.isEmpty { data[number] = nil }
                }
            }
            touchesHead += 1
        }
        if touchesHead > 4096, touchesHead * 2 > touches.count {
            touches.removeFirst(touchesHead)
            touchesHead = 0
        }
        var dropped = 0
        while dropped < blockDemands.count, blockDemands[dropped].sequence < sequence {
            pendingBlocks -= blockDemands[dropped].blocks
            dropped += 1
        }
        blockDemands.removeFirst(dropped)
        // Collections keep their capacity when emptied: a burst of creates leaves hundreds of
        // megabytes of empty tables behind. Once everything is digested, let them go.
        // The touch list is kept at up to `touchesKeptMax` entries' capacity (2 MiB): writers
        // refilling a released array fault in fresh pages as it grows, a cost on every call.
        if touchesHead == touches.count {
            touches.removeAll(keepingCapacity: touches.capacity <= Self.touchesKeptMax)
            touchesHead = 0
        }
        if inodes.isEmpty { inodes = [:] }
        if entries.isEmpty { entries = [:] }
        if data.isEmpty { data = [:] }
        if blockDemands.isEmpty { blockDemands.removeAll(keepingCapacity: blockDemands.capacity <= Self.touchesKeptMax) }
    }
}
