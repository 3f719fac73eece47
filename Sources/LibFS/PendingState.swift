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

/// Sorted, non-overlapping pieces of one file.
struct DataIndex {
    private(set) var pieces: [DataPiece] = []

    var isEmpty: Bool { pieces.isEmpty }

    /// Index of the first piece ending after `offset`.
    private func firstEnding(after offset: UInt64) -> Int {
        var low = 0, high = pieces.count
        while low < high {
            let middle = (low + high) / 2
            if pieces[middle].end <= offset { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// Lays `piece` over whatever it overlaps.
    mutating func insert(_ piece: DataPiece) {
        guard piece.start < piece.end else { return }
        let first = firstEnding(after: piece.start)
        // Appends (the common case) touch nothing.
        if first == pieces.count {
            pieces.append(piece)
            return
        }
        var last = first
        var replacement: [DataPiece] = []
        if pieces[first].start < piece.start, let left = pieces[first].clipped(to: pieces[first].start ..< piece.start) {
            replacement.append(left)
        }
        while last < pieces.count, pieces[last].start < piece.end { last += 1 }
        replacement.append(piece)
        if last > first, pieces[last - 1].end > piece.end,
           let right = pieces[last - 1].clipped(to: piece.end ..< pieces[last - 1].end) {
            replacement.append(right)
        }
        pieces.replaceSubrange(first ..< last, with: replacement)
    }

    /// The pieces overlapping `range`, clipped to it.
    func pieces(in range: Range<UInt64>) -> [DataPiece] {
        var result: [DataPiece] = []
        var index = firstEnding(after: range.lowerBound)
        while index < pieces.count, pieces[index].start < range.upperBound {
            if let piece = pieces[index].clipped(to: range) { result.append(piece) }
            index += 1
        }
        return result
    }

    /// Drops pieces written by records before `sequence` (digested).
    mutating func prune(before sequence: UInt64) {
        pieces.removeAll { $0.sequence < sequence }
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
    }
}
