// A metadata transaction: the shared-area changes of one KernFS operation or digest batch,
// gathered in DRAM, read back by the code that made them, and committed atomically through
// the metadata journal. Nothing reaches NVM before `commit`.
//
// Changes are kept per 4096-byte block: the block's new image and the span of it that
// changed, so that an inode update journals 256 bytes, not a block.

import ShaleFormat
import ShaleMedia

public final class MetadataTransaction<NVM: PersistentMemory> {
    public let nvm: NVM
    public let journal: MetadataJournal<NVM>
    private static var blockBytes: UInt64 { UInt64(Format.blockBytes) }

    private struct DirtyBlock {
        var image: [UInt8]
        var low: Int
        var high: Int
    }

    private var blocks: [UInt64: DirtyBlock] = [:]
    /// Blocks in the order they were first changed, so that commits are deterministic.
    private var order: [UInt64] = []

    public init(journal: MetadataJournal<NVM>) {
        self.journal = journal
        nvm = journal.nvm
    }

    public var isEmpty: Bool { blocks.isEmpty }

    /// Bytes the transaction will take in the journal.
    public var journalBytes: Int {
        blocks.values.reduce(0) { $0 + JournalWrite.headerBytes + ($1.high - $1.low + 7) / 8 * 8 }
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

    /// The 8-byte little-endian word at `offset` (aligned), with this transaction's changes.
    public func readWord(_ offset: UInt64) -> UInt64 {
        let bytes = read(offset, count: 8)
        return bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
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
            var dirty = blocks[block] ?? {
                order.append(block)
                let blockCount = min(Format.blockBytes, nvm.byteCount - Int(block))
                return DirtyBlock(image: nvm.load(at: Int(block), count: blockCount), low: within, high: within + take)
            }()
            dirty.image.replaceSubrange(within ..< within + take, with: bytes[done ..< done + take])
            dirty.low = min(dirty.low, within)
            dirty.high = max(dirty.high, within + take)
            blocks[block] = dirty
            done += take
        }
    }

    public func writeWord(_ value: UInt64, at offset: UInt64) {
        write(withUnsafeBytes(of: value.littleEndian) { Array($0) }, at: offset)
    }

    /// The journal writes this transaction amounts to: the changed span of each block.
    public var journalWrites: [JournalWrite] {
        order.map { block in
            let dirty = blocks[block]!
            return JournalWrite(offset: block + UInt64(dirty.low), bytes: Array(dirty.image[dirty.low ..< dirty.high]))
        }
    }

    /// Commit point of the transaction: the journal's commit fence. On return every change is
    /// durable in place; the transaction is empty again.
    public func commit() throws(JournalError) {
        try journal.commit(journalWrites)
        blocks.removeAll()
        order.removeAll()
    }

    /// Forgets every change.
    public func abort() {
        blocks.removeAll()
        order.removeAll()
    }
}
