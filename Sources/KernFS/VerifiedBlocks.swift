// Which NVM blocks of the shared area have passed their checksum since they last changed, so
// that a reader may skip verifying them again (a buffer cache's "verified" bit, without the
// buffer: NVM is read in place). One bit per 4096-byte block of the region.
//
// Where it sits: KernFS, owned by the volume's MetadataJournal, which clears the bits of every
// block a committed transaction writes while it applies it (EmbeddedKernel excludes its
// readers then). Readers set a bit after a block verified. A bit is only ever a shortcut: a
// clear bit means "verify", never "damaged".
//
// Concurrency: readers set bits concurrently (atomic OR); clears happen only while the
// transaction is applied, with every reader excluded, so no reader can verify old bytes and
// mark them after the change.

import Synchronization

public final class VerifiedBlocks: @unchecked Sendable {
    private let words: UnsafeMutablePointer<Atomic<UInt64>>
    private let wordCount: Int
    public let blockCount: Int
    private static var blockBytes: UInt64 { 4096 }

    public init(regionBytes: Int) {
        blockCount = regionBytes / 4096
        wordCount = (blockCount + 63) / 64
        words = .allocate(capacity: max(wordCount, 1))
        for index in 0 ..< max(wordCount, 1) { (words + index).initialize(to: Atomic(0)) }
    }

    deinit {
        words.deinitialize(count: max(wordCount, 1))
        words.deallocate()
    }

    /// Whether the block at byte `offset` of the region verified since it last changed.
    public func isVerified(blockAt offset: UInt64) -> Bool {
        let block = Int(offset / Self.blockBytes)
        guard block < blockCount else { return false }
        return words[block >> 6].load(ordering: .relaxed) & (1 << UInt64(block & 63)) != 0
    }

    public func markVerified(blockAt offset: UInt64) {
        let block = Int(offset / Self.blockBytes)
        guard block < blockCount else { return }
        _ = words[block >> 6].bitwiseOr(1 << UInt64(block & 63), ordering: .relaxed)
    }

    /// Forgets the blocks that bytes `range` of the region lie in (they changed).
    public func invalidate(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        var block = Int(range.lowerBound / Self.blockBytes)
        let last = min(Int((range.upperBound - 1) / Self.blockBytes), blockCount - 1)
        while block <= last {
            _ = words[block >> 6].bitwiseAnd(~(1 << UInt64(block & 63)), ordering: .relaxed)
            block += 1
        }
    }

    /// Forgets every block (a repair or a replay that changed the region behind the journal's back).
    public func invalidateAll() {
        for index in 0 ..< wordCount { words[index].store(0, ordering: .relaxed) }
    }
}
