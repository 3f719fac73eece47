// Every change KernFS makes to the shared area (inodes, directories, extent maps, bitmaps,
// the log table's digest cursors) goes through this physical redo journal, so that a crash
// at any point leaves each transaction applied entirely or not at all (docs/consistency.md).
//
// commit(writes):
//   1. the body (the writes) and the header are stored in the transaction area and
//      flushed;                                        durability point, not yet committed
//   2. one fence                                       COMMIT POINT
//   3. each write is stored in place and flushed; one fence
//   4. appliedSequence = the transaction's sequence, one 8-byte store, persisted: retired
// recover(): a committed transaction with sequence appliedSequence + 1 is applied again
// (steps 3 and 4); the writes are absolute, so applying twice equals applying once.

import ShaleFormat
import ShaleMedia
import Synchronization

public enum JournalError: Error, Equatable, CustomStringConvertible {
    case tooLarge(bytes: Int, capacity: Int)
    case damaged(FormatError)

    public var description: String {
        switch self {
        case let .tooLarge(bytes, capacity): "a metadata transaction of \(bytes) bytes exceeds the journal's \(capacity)"
        case let .damaged(error): "metadata journal: \(error)"
        }
    }
}

public final class MetadataJournal<NVM: PersistentMemory>: @unchecked Sendable {
    public let nvm: NVM
    private let base: Int
    private let journalBytes: UInt64
    private let seed: UInt32
    private let allowed: Range<UInt64>
    private let forbidden: [Range<UInt64>]
    /// Blocks that verified since they last changed; cleared here as transactions apply.
    public let verifiedBlocks: VerifiedBlocks
    /// Bumped each time a transaction is applied in place: a reader that saw the same value
    /// before and after reading the shared area read one consistent state, and may keep what
    /// it read for as long as the value stays the same (LibFS's cache of the shared area).
    public let generation = Atomic<UInt64>(0)

    public convenience init(nvm: NVM, superblock: Superblock) {
        self.init(nvm: nvm, layout: superblock.layout, volumeSeed: superblock.volumeID.checksumSeed)
    }

    public init(nvm: NVM, layout: NVMLayout, volumeSeed: UInt32) {
        self.nvm = nvm
        base = Int(layout.journalOffset)
        journalBytes = layout.journalBytes
        seed = volumeSeed
        allowed = layout.metadataStart ..< UInt64(nvm.byteCount)
        // The journal never writes itself, nor the client-writable log area.
        forbidden = [layout.journalOffset ..< layout.journalOffset + layout.journalBytes,
                     layout.logAreaOffset ..< layout.logAreaEnd]
        verifiedBlocks = VerifiedBlocks(regionBytes: nvm.byteCount)
    }

    /// Bytes of writes (with their 16-byte headers, padded) one transaction may hold.
    public var capacityBytes: Int { Int(journalBytes) - JournalControl.transactionAreaOffset - JournalTransactionHeader.encodedBytes }

    /// The last transaction applied in place.
    public var appliedSequence: UInt64 { nvm.loadWord(at: base + JournalControl.appliedSequenceOffset) }

    /// Writes an empty journal (mkfs).
    public func format() {
        nvm.store(JournalControl(journalBytes: journalBytes).encode(seed: seed), at: base)
        nvm.storeWord(0, at: base + JournalControl.appliedSequenceOffset)
        nvm.persist(offset: base, count: JournalControl.appliedSequenceOffset + 8)
    }

    /// Checks the journal's control block (open).
    public func verify() throws(JournalError) {
        do {
            _ = try JournalControl.decode(nvm.view(at: base, count: JournalControl.encodedBytes), seed: seed, expectedBytes: journalBytes)
        } catch {
            throw .damaged(error)
        }
    }

    /// Commits `writes` as one transaction and applies them; on return they are durable in
    /// place. Later writes to the same bytes win, as if applied in order.
    /// (`fenced: false`: the planted bug early-reclaim, see MetadataTransaction.commit.)
    public func commit(_ writes: [JournalWrite], fenced: Bool = true) throws(JournalError) {
        // Even with nothing to journal, the fence is what makes the caller's ordered writes
        // (stored and flushed before commit) durable.
        guard !writes.isEmpty else {
            if fenced { nvm.fence() }
            return
        }
        // The same rules recovery applies, checked before the commit point: a transaction
        // recovery would call damage is never committed.
        for (index, write) in writes.enumerated() {
            let (end, overflow) = write.offset.addingReportingOverflow(UInt64(write.bytes.count))
            let range = write.offset ..< (overflow ? UInt64.max : end)
            guard !write.bytes.isEmpty, !overflow, allowed.contains(write.offset), end <= allowed.upperBound,
                  !forbidden.contains(where: { $0.overlaps(range) }) else {
                throw .damaged(.invalidField(structure: "metadata transaction", field: "write \(index)",
                                             reason: "range \(write.offset)+\(write.bytes.count) is not shared-area metadata"))
            }
        }
        let sequence = appliedSequence &+ 1
        let encoded = JournalTransactionHeader.encode(writes: writes, sequence: sequence, seed: seed)
        guard encoded.body.count <= capacityBytes else { throw .tooLarge(bytes: encoded.body.count, capacity: capacityBytes) }
        let area = base + JournalControl.transactionAreaOffset
        encoded.body.withUnsafeBytes { nvm.storeFlush($0, at: area + JournalTransactionHeader.encodedBytes) }
        encoded.header.withUnsafeBytes { nvm.storeFlush($0, at: area) }
        // Commit point.
        if fenced { nvm.fence() }
        if let exclusive = applyExclusively {
            exclusive { apply(writes, sequence: sequence, fenced: fenced) }
        } else {
            apply(writes, sequence: sequence, fenced: fenced)
        }
    }

    /// Wraps the in-place application of each committed transaction, the only time shared
    /// metadata changes under a reader's feet (`EmbeddedKernel` excludes its readers then).
    public var applyExclusively: ((() -> Void) -> Void)?

    /// The committed transaction a crash left unapplied, if there is one, without applying it
    /// (a read-only check looks at the shared area as recovery will leave it).
    public func pending() throws(JournalError) -> (sequence: UInt64, writes: [JournalWrite])? {
        try verify()
        let sequence = appliedSequence &+ 1
        let area = nvm.view(at: base + JournalControl.transactionAreaOffset, count: Int(journalBytes) - JournalControl.transactionAreaOffset)
        do {
            guard let writes = try JournalTransactionHeader.committed(in: area, seed: seed, expectedSequence: sequence,
                                                                      allowed: allowed, forbidden: forbidden) else { return nil }
            return (sequence, writes)
        } catch {
            throw .damaged(error)
        }
    }

    /// Applies a committed transaction left by a crash, if there is one. Returns it.
    @discardableResult
    public func recover() throws(JournalError) -> (sequence: UInt64, writes: [JournalWrite])? {
        guard let (sequence, writes) = try pending() else { return nil }
        apply(writes, sequence: sequence)
        return (sequence, writes)
    }

    private func apply(_ writes: [JournalWrite], sequence: UInt64, fenced: Bool = true) {
        for write in writes {
            precondition(allowed.contains(write.offset) && !forbidden.contains { $0.contains(write.offset) },
                         "a journal write outside the shared area")
            write.bytes.withUnsafeBytes { nvm.storeFlush($0, at: Int(write.offset)) }
            verifiedBlocks.invalidate(write.offset ..< write.offset + UInt64(write.bytes.count))
        }
        generation.add(1, ordering: .releasing)
        if fenced { nvm.fence() }
        // Retired: the transaction area may be reused.
        nvm.storeWord(sequence, at: base + JournalControl.appliedSequenceOffset)
        nvm.flush(offset: base + JournalControl.appliedSequenceOffset, count: 8)
        if fenced { nvm.fence() }
    }
}
