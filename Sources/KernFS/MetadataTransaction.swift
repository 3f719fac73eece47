// A metadata transaction: the shared-area changes of one KernFS operation or digest batch,
// gathered in DRAM, read back by the code that made them, and committed atomically through
// the metadata journal. Nothing reaches NVM before `commit`.
//
// Changes are kept per 4096-byte block: the block's new image and the spans of it that
// changed, so that an inode update journals 256 bytes, not a block, and a directory insert
// (checksum at byte 4, count at 26, the new entry further on) journals those three spans, not
// everything between them. `writeChanged` stores only the bytes that differ, for callers that
// re-encode a whole structure to change a few of its fields.

import ShaleFormat
import ShaleMedia

public final class MetadataTransaction<NVM: PersistentMemory> {
    public let nvm: NVM
    public let journal: MetadataJournal<NVM>
    private static var blockBytes: UInt64 { UInt64(Format.blockBytes) }

    private struct DirtyBlock {
        var image: [UInt8]
        /// The seed of the block's checksum (CRC32C at byte 4) when an edit left it to be
        /// recomputed at commit (`editBlock(at:resealing:)`).
        var resealSeed: UInt32? = nil
        /// The changed byte ranges of the block: sorted, disjoint, and more than a journal
        /// write header apart (closer ones are merged: one write is then no dearer than two).
        var spans: [Range<Int>] = []

        /// Journal bytes of this block's writes.
        var journalBytes: Int {
            spans.reduce(0) { $0 + JournalWrite.headerBytes + ($1.count + 7) / 8 * 8 }
        }

        mutating func mark(_ range: Range<Int>) {
            let gap = JournalWrite.headerBytes
            var merged = range
            var kept: [Range<Int>] = []
            kept.reserveCapacity(spans.count + 1)
            for span in spans {
                if span.lowerBound <= merged.upperBound + gap && merged.lowerBound <= span.upperBound + gap {
                    merged = min(span.lowerBound, merged.lowerBound) ..< max(span.upperBound, merged.upperBound)
                } else {
                    kept.append(span)
                }
            }
            let index = kept.firstIndex { $0.lowerBound > merged.lowerBound } ?? kept.count
            kept.insert(merged, at: index)
            spans = kept
        }
    }

    private var blocks: [UInt64: DirtyBlock] = [:]
    /// Blocks in the order they were first changed, so that commits are deterministic.
    private var order: [UInt64] = []

    /// State a layer keeps for the life of this transaction (the inode table's changed
    /// inodes), dropped when it commits or aborts. Only the transaction's owner touches it,
    /// so readers on other threads, with transactions of their own, never see it.
    private var attachments: [ObjectIdentifier: AnyObject] = [:]

    /// The state `owner` attached to this transaction, made by `make` the first time.
    public func attachment<State: AnyObject>(for owner: AnyObject, _ make: () -> State) -> State {
        let key = ObjectIdentifier(owner)
        if let existing = attachments[key] { return existing as! State }
        let state = make()
        attachments[key] = state
        return state
    }

    /// The state `owner` attached to this transaction, if any.
    public func existingAttachment<State: AnyObject>(for owner: AnyObject, as _: State.Type) -> State? {
        guard !attachments.isEmpty, let existing = attachments[ObjectIdentifier(owner)] else { return nil }
        return (existing as! State)
    }

    public init(journal: MetadataJournal<NVM>) {
        self.journal = journal
        nvm = journal.nvm
    }

    /// Nothing written and nothing deferred (a deferred writer, such as the inode table's,
    /// writes only at commit: a transaction that only frees an empty inode holds nothing
    /// else, and must still commit).
    public var isEmpty: Bool { blocks.isEmpty && beforeCommitActions.isEmpty }

    /// Bytes the transaction will take in the journal (kept as writes arrive: the digest
    /// asks after every record), including what deferred writers have reserved.
    public var journalBytes: Int { writtenJournalBytes + reservedJournalBytes }
    private var writtenJournalBytes = 0
    private var reservedJournalBytes = 0
    private var beforeCommitActions: [() throws(JournalError) -> Void] = []

    /// A writer that keeps its changes in DRAM until the commit (the block allocator's
    /// bitmaps) says here how many journal bytes they may take at most, and writes them
    /// from `action`, which runs first thing in `commit`.
    public func deferWrites(reservingJournalBytes bytes: Int, _ action: (() throws(JournalError) -> Void)? = nil) {
        reservedJournalBytes += bytes
        if let action { beforeCommitActions.append(action) }
    }

    /// The bytes at `offset`, with this transaction's changes applied.
    public func read(_ offset: UInt64, count: Int) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let position = offset + UInt64(done)
            let block = position / Self.blockBytes * Self.blockBytes
            let within = Int(position - block)
            let take = min(count - done, Format.blockBytes - within)
            if let dirty = blocks[block] {
                result.replaceSubrange(done ..< done + take, with: dirty.image[within ..< within + take])
            } else {
                let view = nvm.view(at: Int(position), count: take)
                result.withUnsafeMutableBytes { ($0.baseAddress! + done).copyMemory(from: view.baseAddress!, byteCount: take) }
            }
            done += take
        }
        return result
    }

    /// Calls `body` with the `count` bytes at `offset` as this transaction reads them, without
    /// copying: the NVM itself, or the block's image when the transaction changed it. The
    /// range must lie inside one 4096-byte block; the pointer is valid only during `body`,
    /// which must not change the transaction.
    public func withBytes<Value, Failure: Error>(_ offset: UInt64, count: Int,
                                                 _ body: (UnsafeRawBufferPointer) throws(Failure) -> Value) throws(Failure) -> Value {
        let block = offset / Self.blockBytes * Self.blockBytes
        let within = Int(offset - block)
        precondition(within + count <= Format.blockBytes, "a read across a block boundary")
        if let dirty = blocks[block] {
            // `dirty` shares the image's storage: no copy. (Array's closures rethrow untyped.)
            let result: Result<Value, Failure> = dirty.image.withUnsafeBytes { image in
                do throws(Failure) {
                    return .success(try body(UnsafeRawBufferPointer(rebasing: image[within ..< within + count])))
                } catch {
                    return .failure(error)
                }
            }
            return try result.get()
        }
        return try body(nvm.view(at: Int(offset), count: count))
    }

    /// Calls `body` with the 4096-byte block at `offset` (block-aligned) as this transaction
    /// reads it, and whether its checksum may go unchecked: the transaction's own image of it
    /// (built from verified bytes and this transaction's edits, possibly not resealed yet), or
    /// an NVM block that verified since it last changed (`markVerified`).
    public func withBlock<Value, Failure: Error>(at offset: UInt64,
                                                 _ body: (UnsafeRawBufferPointer, _ trusted: Bool) throws(Failure) -> Value) throws(Failure) -> Value {
        precondition(offset % Self.blockBytes == 0, "not a block offset")
        if let dirty = blocks[offset] {
            let result: Result<Value, Failure> = dirty.image.withUnsafeBytes { image in
                do throws(Failure) {
                    return .success(try body(image, true))
                } catch {
                    return .failure(error)
                }
            }
            return try result.get()
        }
        return try body(nvm.view(at: Int(offset), count: Format.blockBytes), journal.verifiedBlocks.isVerified(blockAt: offset))
    }

    /// Records that the NVM block at `offset` passed its checksum (read through `withBlock`,
    /// not trusted): readers may skip it until a commit changes the block.
    public func markVerified(blockAt offset: UInt64) {
        if blocks[offset] == nil { journal.verifiedBlocks.markVerified(blockAt: offset) }
    }

    /// Changes the 4096-byte block at `offset` (block-aligned) in place: `body` edits the
    /// block's image (as this transaction reads it) and returns the byte ranges it changed,
    /// which are journaled. For writers that change a few fields of a block. With `resealing`
    /// (the block's checksum seed), the block's CRC32C at byte 4 is recomputed once, at
    /// commit, however many edits it takes: until then only this transaction reads the image
    /// (`withBlock` says it is trusted). `body` must not throw after changing the image (the
    /// caller then aborts the transaction).
    public func editBlock<Failure: Error>(at offset: UInt64, resealing seed: UInt32? = nil,
                                          _ body: (UnsafeMutableRawBufferPointer) throws(Failure) -> [Range<Int>]) throws(Failure) {
        precondition(offset % Self.blockBytes == 0 && offset + Self.blockBytes <= UInt64(nvm.byteCount), "not a block of the region")
        if blocks[offset] == nil {
            order.append(offset)
            blocks[offset] = DirtyBlock(image: nvm.load(at: Int(offset), count: Format.blockBytes))
        }
        let result: Result<[Range<Int>], Failure> = blocks[offset]!.image.withUnsafeMutableBytes { image in
            do throws(Failure) {
                return .success(try body(image))
            } catch {
                return .failure(error)
            }
        }
        let changed = try result.get()
        writtenJournalBytes -= blocks[offset]!.journalBytes
        for range in changed where !range.isEmpty {
            precondition(range.lowerBound >= 0 && range.upperBound <= Format.blockBytes)
            blocks[offset]!.mark(range)
        }
        if let seed {
            blocks[offset]!.resealSeed = seed
            blocks[offset]!.mark(4 ..< 8)
        }
        writtenJournalBytes += blocks[offset]!.journalBytes
    }

    /// Recomputes the checksums edits left to the commit.
    private func reseal() {
        for offset in order {
            guard let seed = blocks[offset]?.resealSeed else { continue }
            blocks[offset]!.image.withUnsafeMutableBytes { image in
                StructureChecksum.seal(image, crcOffset: 4, seed: seed)
            }
            blocks[offset]!.resealSeed = nil
        }
    }

    /// The 8-byte little-endian word at `offset` (aligned), with this transaction's changes.
    public func readWord(_ offset: UInt64) -> UInt64 {
        withBytes(offset, count: 8) { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    }

    /// Changes `bytes.count` bytes at `offset` (in this transaction only).
    public func write(_ bytes: [UInt8], at offset: UInt64) {
        precondition(offset + UInt64(bytes.count) <= UInt64(nvm.byteCount), "metadata write beyond the NVM region")
        var done = 0
        while done < bytes.count {
            let position = offset + UInt64(done)
            let block = position / Self.blockBytes * Self.blockBytes
            let within = Int(position - block)
            let take = min(bytes.count - done, Format.blockBytes - within)
            if blocks[block] == nil {
                order.append(block)
                let blockCount = min(Format.blockBytes, nvm.byteCount - Int(block))
                blocks[block] = DirtyBlock(image: nvm.load(at: Int(block), count: blockCount))
            }
            // Changed in place through the dictionary (no copy of the image per write).
            blocks[block]!.image.replaceSubrange(within ..< within + take, with: bytes[done ..< done + take])
            writtenJournalBytes -= blocks[block]!.journalBytes
            blocks[block]!.mark(within ..< within + take)
            writtenJournalBytes += blocks[block]!.journalBytes
            done += take
        }
    }

    public func writeWord(_ value: UInt64, at offset: UInt64) {
        write(withUnsafeBytes(of: value.littleEndian) { Array($0) }, at: offset)
    }

    /// Makes the `bytes.count` bytes at `offset` equal `bytes`, writing (and so journaling)
    /// only the runs that differ from what the transaction reads there now. Runs closer than
    /// a journal write header are written as one.
    public func writeChanged(_ bytes: [UInt8], at offset: UInt64) {
        let current = read(offset, count: bytes.count)
        let gap = JournalWrite.headerBytes
        var runs: [Range<Int>] = []
        bytes.withUnsafeBytes { new in
            current.withUnsafeBytes { old in
                var index = 0
                var runStart: Int? = nil
                var lastDifference = 0
                while index < new.count {
                    // Outside a run, equal 8-byte words are skipped whole: most of a
                    // re-encoded block is unchanged.
                    if runStart == nil, index + 8 <= new.count,
                       new.loadUnaligned(fromByteOffset: index, as: UInt64.self) == old.loadUnaligned(fromByteOffset: index, as: UInt64.self) {
                        index += 8
                        continue
                    }
                    if new[index] != old[index] {
                        if runStart == nil { runStart = index }
                        lastDifference = index
                    } else if let start = runStart, index - lastDifference > gap {
                        runs.append(start ..< lastDifference + 1)
                        runStart = nil
                    }
                    index += 1
                }
                if let start = runStart { runs.append(start ..< lastDifference + 1) }
            }
        }
        for run in runs { write(Array(bytes[run]), at: offset + UInt64(run.lowerBound)) }
    }

    /// The journal writes this transaction amounts to: the changed spans of each block.
    public var journalWrites: [JournalWrite] {
        order.flatMap { block in
            let dirty = blocks[block]!
            return dirty.spans.map { JournalWrite(offset: block + UInt64($0.lowerBound), bytes: Array(dirty.image[$0])) }
        }
    }

    /// Commit point of the transaction: the journal's commit fence. On return every change is
    /// durable in place; the transaction is empty again. (`fenced: false` only for the
    /// planted bug early-reclaim: everything stored and flushed, durable at a later fence.)
    public func commit(fenced: Bool = true) throws(JournalError) {
        do {
            let actions = beforeCommitActions
            beforeCommitActions.removeAll()
            for action in actions { try action() }
            reservedJournalBytes = 0
            reseal()
            try journal.commit(journalWrites, fenced: fenced)
        } catch {
            abort()
            throw error
        }
        blocks.removeAll()
        writtenJournalBytes = 0
        reservedJournalBytes = 0
        beforeCommitActions.removeAll()
        order.removeAll()
        attachments.removeAll()
        finish(committed: true)
    }

    /// Forgets every change.
    public func abort() {
        blocks.removeAll()
        writtenJournalBytes = 0
        reservedJournalBytes = 0
        beforeCommitActions.removeAll()
        order.removeAll()
        attachments.removeAll()
        finish(committed: false)
    }

    /// DRAM state that belongs to this transaction (blocks and inode numbers freed by it, a
    /// new inode chunk's numbers) registers here: published when the transaction commits,
    /// undone when it aborts. Until then nobody else may use what the transaction freed.
    public func onEnd(_ action: @escaping (_ committed: Bool) -> Void) {
        endActions.append(action)
    }

    private var endActions: [(Bool) -> Void] = []

    private func finish(committed: Bool) {
        let actions = endActions
        endActions.removeAll()
        for action in actions { action(committed) }
    }
}
