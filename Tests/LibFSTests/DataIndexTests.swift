import Testing
@testable import LibFS
@testable import ShaleMedia

/// The pending data index (chunked) against the plain sorted-array index it replaced, kept
/// here as the reference: random writes, appends, zeroed ranges, truncates to "the end" and
/// prunes, enough of them to split, merge and regroup chunks.
struct DataIndexTests {
    /// The previous implementation: one sorted array, every piece it overlaps replaced.
    struct Reference {
        var pieces: [DataPiece] = []

        mutating func insert(_ piece: DataPiece) {
            guard piece.start < piece.end else { return }
            let first = pieces.firstIndex { $0.end > piece.start } ?? pieces.count
            var last = first
            var replacement: [DataPiece] = []
            if first < pieces.count, pieces[first].start < piece.start,
               let left = pieces[first].clipped(to: pieces[first].start ..< piece.start) {
                replacement.append(left)
            }
            while last < pieces.count, pieces[last].start < piece.end { last += 1 }
            replacement.append(piece)
            if last > first, pieces[last - 1].end > piece.end, let right = pieces[last - 1].clipped(to: piece.end ..< pieces[last - 1].end) {
                replacement.append(right)
            }
            pieces.replaceSubrange(first ..< last, with: replacement)
        }

        func pieces(in range: Range<UInt64>) -> [DataPiece] {
            pieces.compactMap { $0.start < range.upperBound ? $0.clipped(to: range) : nil }
        }

        mutating func prune(before sequence: UInt64) { pieces.removeAll { $0.sequence < sequence } }
    }

    @Test(arguments: [1, 2, 3, 4])
    func matchesTheReference(seed: UInt64) {
        var generator = SplitMix64(seed: seed)
        var index = DataIndex()
        var reference = Reference()
        let space: UInt64 = 4096 * 600
        var sequence: UInt64 = 1
        var appendAt: UInt64 = 0
        for step in 0 ..< 6000 {
            let kind = generator.next() % 100
            let piece: DataPiece
            switch kind {
            case 0 ..< 50:
                // A block-aligned 4 KiB write somewhere.
                let block = generator.next() % (space / 4096)
                piece = DataPiece(start: block * 4096, end: block * 4096 + 4096, source: sequence * 8192, sequence: sequence)
            case 50 ..< 75:
                // An unaligned write of 1 byte to 40 KiB.
                let start = generator.next() % space
                let length = 1 + generator.next() % (40 * 1024)
                piece = DataPiece(start: start, end: start + length, source: sequence * 8192, sequence: sequence)
            case 75 ..< 92:
                // Appends.
                let length = 1 + generator.next() % 512
                piece = DataPiece(start: appendAt, end: appendAt + length, source: sequence * 8192, sequence: sequence)
                appendAt = (appendAt + length) % space
            case 92 ..< 98:
                // A zeroed range (punch hole).
                let start = generator.next() % space
                piece = DataPiece(start: start, end: start + 1 + generator.next() % (256 * 1024), source: DataPiece.zeros, sequence: sequence)
            default:
                // A truncate: zeros from somewhere to the end of everything.
                piece = DataPiece(start: generator.next() % space, end: UInt64.max, source: DataPiece.zeros, sequence: sequence)
            }
            index.insert(piece)
            reference.insert(piece)
            sequence += 1
            if generator.next() % 200 == 0 {
                // A digest: everything before a recent sequence goes.
                let before = sequence - generator.next() % min(sequence, 3000)
                index.prune(before: before)
                reference.prune(before: before)
            }
            #expect(index.pieces == reference.pieces, "step \(step)")
            #expect(index.isEmpty == reference.pieces.isEmpty)
            let start = generator.next() % space
            let range = start ..< start + 1 + generator.next() % (64 * 1024)
            #expect(index.pieces(in: range) == reference.pieces(in: range), "step \(step), range \(range)")
            if index.pieces != reference.pieces { return }
        }
    }

    /// Pruning leaves a block leaf's digested slots in place (the digest thread writes no
    /// line a writer is about to write) but nothing reads them: pieces skip them, a span
    /// laid over them evicts only live blocks, and the leaf goes once its newest slot is
    /// digested.
    @Test func digestedBlocksAreInvisibleAndGo() {
        func block(_ number: UInt64, _ sequence: UInt64) -> DataPiece {
            DataPiece(start: number * 4096, end: number * 4096 + 4096, source: 1_000_000 + sequence * 8192, sequence: sequence)
        }
        var index = DataIndex()
        index.insert(block(0, 1))
        index.insert(block(1, 2))
        index.insert(block(5, 3))
        index.prune(before: 3)
        #expect(index.pieces == [block(5, 3)])
        #expect(index.pieces(in: 0 ..< 8192).isEmpty)
        #expect(!index.isEmpty)
        // A new write over a stale slot is live.
        index.insert(block(0, 4))
        #expect(index.pieces == [block(0, 4), block(5, 3)])
        // A span over blocks 0 and 1 evicts both: what sticks out of the live block 0 stays,
        // nothing of the stale block 1 comes back (the shared area has it).
        let span = DataPiece(start: 100, end: 8000, source: 2_000_000, sequence: 5)
        index.insert(span)
        #expect(index.pieces == [DataPiece(start: 0, end: 100, source: block(0, 4).source, sequence: 4), span, block(5, 3)])
        index.prune(before: 6)
        #expect(index.isEmpty)
        #expect(index.pieces.isEmpty)
    }
}
