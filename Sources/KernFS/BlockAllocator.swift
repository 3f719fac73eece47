// Per-tier block allocation over the allocator bitmaps (docs/format.md "Allocator
// bitmaps"). Every change goes through a MetadataTransaction, so an allocation becomes real
// at that transaction's commit point and vanishes with it after a crash. A DRAM summary (free
// blocks per bitmap block) steers the search; the bits themselves are always read back
// through the transaction, so a stale summary costs time, never correctness.

import ShaleFormat
import ShaleMedia

public enum AllocationError: Error, Equatable, CustomStringConvertible {
    case noSpace(tier: Tier, wantedBlocks: UInt64, freeBlocks: UInt64)
    case damaged(String)

    public var description: String {
        switch self {
        case let .noSpace(tier, wanted, free): "no space on the \(tier) tier: \(wanted) blocks wanted, \(free) free"
        case let .damaged(text): text
        }
    }
}

public final class BlockAllocator<NVM: PersistentMemory>: @unchecked Sendable {
    public let device: DeviceDescriptor
    private let nvm: NVM
    private let seed: UInt32
    private static var bitsPerBlock: UInt64 { UInt64(AllocatorBitmapBlock.blocksPerBitmapBlock) }
    /// Free blocks per bitmap block, as last seen.
    private var freeSummary: [UInt64]
    /// Where the next search starts (next fit: consecutive allocations stay together).
    private var cursor: UInt64 = 0
    /// Blocks freed by the transaction in progress: not handed out again until it commits
    /// (`transactionEnded`), because until then the committed state still uses them, and a
    /// caller may write data into a new block directly, outside the journal.
    private var freedInTransaction: Set<UInt64> = []

    public init(nvm: NVM, device: DeviceDescriptor, volumeSeed: UInt32) throws(AllocationError) {
        self.nvm = nvm
        self.device = device
        seed = volumeSeed
        freeSummary = []
        try reload()
    }

    /// Transactions this allocator has changed, which tell it when they end.
    private var watched: Set<ObjectIdentifier> = []
    /// Bitmap blocks the transaction in progress changed, decoded: kept here and written
    /// into the transaction once, when it commits, instead of decoded, counted, encoded
    /// and written on every allocation.
    private var dirtyBitmaps: [UInt64: AllocatorBitmapBlock] = [:]

    /// The bitmap block `index` as `transaction` sees it.
    private func bitmap(_ index: UInt64, _ transaction: MetadataTransaction<NVM>) throws(AllocationError) -> AllocatorBitmapBlock {
        if let dirty = dirtyBitmaps[index] { return dirty }
        return try decode(transaction.read(bitmapOffset(index), count: Format.blockBytes), index: index)
    }

    /// Records a changed bitmap block; the first change in a transaction reserves the
    /// journal room its write will take.
    private func store(_ index: UInt64, _ bitmap: AllocatorBitmapBlock, freeCount: Int? = nil, _ transaction: MetadataTransaction<NVM>) {
        if dirtyBitmaps.updateValue(bitmap, forKey: index) == nil {
            let first = dirtyBitmaps.count == 1
            transaction.deferWrites(reservingJournalBytes: JournalWrite.headerBytes + Format.blockBytes, first ? { [self] () throws(JournalError) in
                // Sorted: a deterministic journal, for the crash harness.
                for (changed, block) in dirtyBitmaps.sorted(by: { $0.key < $1.key }) {
                    transaction.writeChanged(block.encode(seed: seed), at: bitmapOffset(changed))
                }
                dirtyBitmaps.removeAll()
            } : nil)
        }
        freeSummary[Int(index)] = UInt64(freeCount ?? bitmap.freeCount)
    }
    /// Set when an aborted transaction's changes could not be undone (NVM damage).
    private var poisoned: String?

    /// Ties this allocator's DRAM state to `transaction`: freed blocks become reusable when it
    /// commits; an abort re-reads the summary from NVM, undoing its allocations and frees.
    private func watch(_ transaction: MetadataTransaction<NVM>) {
        let id = ObjectIdentifier(transaction)
        guard watched.insert(id).inserted else { return }
        transaction.onEnd { [self] committed in
            watched.remove(id)
            dirtyBitmaps.removeAll()
            if committed {
                freedInTransaction.removeAll()
            } else {
                do { try reload() } catch { poisoned = "\(error)" }
            }
        }
    }

    /// Re-reads the summary from NVM (after an aborted transaction).
    public func reload() throws(AllocationError) {
        freedInTransaction.removeAll()
        poisoned = nil
        var summary: [UInt64] = []
        for index in 0 ..< device.bitmapBlocks {
            let bitmap = try decode(nvm.view(at: Int(bitmapOffset(index)), count: Format.blockBytes), index: index)
            summary.append(UInt64(bitmap.freeCount))
        }
        freeSummary = summary
    }

    public var freeBlocks: UInt64 { freeSummary.reduce(0, +) }

    /// Allocates `count` blocks, contiguous where possible, in at most `count` runs; returns
    /// the runs (data-area block numbers of the tier). All or nothing.
    ///
    /// `packed` (metadata: directory blocks, extent-tree nodes) takes the lowest free blocks
    /// instead of continuing from the cursor. Such blocks are small, long-lived and rewritten
    /// often (a tree is rewritten into new nodes, the old ones freed); placed next-fit they
    /// end up sprinkled over the whole tier, and no contiguous run is left for an inode
    /// chunk. Packed at the low end they leave the rest in long runs.
    public func allocate(_ count: UInt64, in transaction: MetadataTransaction<NVM>,
                         contiguous: Bool = false, packed: Bool = false) throws(AllocationError) -> [Range<UInt64>] {
        let runs = try allocateRuns(count, in: transaction, contiguous: contiguous, packed: packed)
        if device.tier == .nvm {
            // A block starts a new life: whatever verified in its old one says nothing now.
            for run in runs {
                let start = nvmOffset(ofBlock: run.lowerBound)
                transaction.journal.verifiedBlocks.invalidate(start ..< start + UInt64(run.count) * UInt64(Format.blockBytes))
            }
        }
        return runs
    }

    private func allocateRuns(_ count: UInt64, in transaction: MetadataTransaction<NVM>,
                              contiguous: Bool, packed: Bool) throws(AllocationError) -> [Range<UInt64>] {
        precondition(count > 0)
        if let poisoned { throw .damaged(poisoned) }
        watch(transaction)
        guard count <= freeBlocks else { throw .noSpace(tier: device.tier, wantedBlocks: count, freeBlocks: freeBlocks) }
        if contiguous { return [try allocateRun(count, in: transaction)] }
        var runs: [Range<UInt64>] = []
        var remaining = count
        var visited = 0
        let savedCursor = cursor
        if packed { cursor = 0 }
        defer { if packed { cursor = savedCursor } }
        var index = cursor / Self.bitsPerBlock
        var bitmaps: [UInt64: AllocatorBitmapBlock] = [:]
        // Take free blocks as they come, preferring to continue the last run.
        while remaining > 0 && visited <= Int(device.bitmapBlocks) {
            if freeSummary[Int(index)] > 0 {
                var bitmap: AllocatorBitmapBlock
                if let seen = bitmaps[index] {
                    bitmap = seen
                } else {
                    bitmap = try self.bitmap(index, transaction)
                }
                var bit = index == cursor / Self.bitsPerBlock ? Int(cursor % Self.bitsPerBlock) : 0
                let base = index * Self.bitsPerBlock
                func available(_ bit: Int) -> Bool {
                    !bitmap.isUsed(bit) && (freedInTransaction.isEmpty || !freedInTransaction.contains(base + UInt64(bit)))
                }
                while bit < Int(bitmap.blockCount) && remaining > 0 {
                    guard available(bit) else { bit += 1; continue }
                    var end = bit
                    while end < Int(bitmap.blockCount), available(end), UInt64(end - bit) < remaining { end += 1 }
                    let length = UInt64(end - bit)
                    for used in bit ..< end { bitmap.setUsed(used, true) }
                    let first = index * Self.bitsPerBlock + UInt64(bit)
                    if let last = runs.last, last.upperBound == first {
                        runs[runs.count - 1] = last.lowerBound ..< first + length
                    } else {
                        runs.append(first ..< first + length)
                    }
                    remaining -= length
                    bit = end
                }
                bitmaps[index] = bitmap
            }
            if remaining > 0 {
                index = (index + 1) % device.bitmapBlocks
                if index == 0 { cursor = 0 }
                visited += 1
            }
        }
        guard remaining == 0 else {
            throw .noSpace(tier: device.tier, wantedBlocks: count, freeBlocks: freeBlocks)
        }
        for changed in bitmaps.keys.sorted() {
            let bitmap = bitmaps[changed]!
            store(changed, bitmap, freeCount: Int(freeSummary[Int(changed)]) - allocatedIn(changed, runs), transaction)
        }
        cursor = runs.last!.upperBound % device.dataBlocks
        return runs
    }

    /// One run of `count` free blocks, found across bitmap-block boundaries (next fit; a run
    /// never wraps past the last block).
    private func allocateRun(_ count: UInt64, in transaction: MetadataTransaction<NVM>) throws(AllocationError) -> Range<UInt64> {
        var bitmaps: [UInt64: AllocatorBitmapBlock] = [:]
        func bitmap(_ index: UInt64) throws(AllocationError) -> AllocatorBitmapBlock {
            if let seen = bitmaps[index] { return seen }
            let decoded = try self.bitmap(index, transaction)
            bitmaps[index] = decoded
            return decoded
        }
        var block = cursor < device.dataBlocks ? cursor : 0
        var runStart: UInt64 = block
        var runLength: UInt64 = 0
        var scanned: UInt64 = 0
        while scanned < device.dataBlocks + count {
            let index = block / Self.bitsPerBlock
            let base = index * Self.bitsPerBlock
            if freeSummary[Int(index)] == 0 {
                // A full bitmap block breaks any run: skip it whole.
                let next = min(base + Self.bitsPerBlock, device.dataBlocks)
                scanned += next - block
                block = next == device.dataBlocks ? 0 : next
                runLength = 0
                continue
            }
            let bits = try bitmap(index)
            let bit = Int(block - base)
            if !bits.isUsed(bit) && (freedInTransaction.isEmpty || !freedInTransaction.contains(block)) {
                if runLength == 0 { runStart = block }
                runLength += 1
                if runLength == count { break }
            } else {
                runLength = 0
            }
            scanned += 1
            block += 1
            if block == device.dataBlocks {
                block = 0
                runLength = 0
            }
        }
        guard runLength == count else { throw .noSpace(tier: device.tier, wantedBlocks: count, freeBlocks: 0) }
        let run = runStart ..< runStart + count
        var index = run.lowerBound / Self.bitsPerBlock
        while index * Self.bitsPerBlock < run.upperBound {
            var bits = try bitmap(index)
            let base = index * Self.bitsPerBlock
            for target in max(run.lowerBound, base) ..< min(run.upperBound, base + UInt64(bits.blockCount)) {
                bits.setUsed(Int(target - base), true)
            }
            store(index, bits, transaction)
            index += 1
        }
        cursor = run.upperBound % device.dataBlocks
        return run
    }

    /// Frees `blocks` (data-area block numbers of the tier), all of which must be in use.
    public func free(_ blocks: Range<UInt64>, in transaction: MetadataTransaction<NVM>) throws(AllocationError) {
        guard blocks.upperBound <= device.dataBlocks else {
            throw .damaged("\(device.tier) blocks \(blocks) lie beyond the tier's \(device.dataBlocks) blocks")
        }
        if let poisoned { throw .damaged(poisoned) }
        watch(transaction)
        var block = blocks.lowerBound
        while block < blocks.upperBound {
            let index = block / Self.bitsPerBlock
            var bitmap = try self.bitmap(index, transaction)
            let end = min(blocks.upperBound, (index + 1) * Self.bitsPerBlock)
            for target in block ..< end {
                let bit = Int(target - index * Self.bitsPerBlock)
                guard bitmap.isUsed(bit) else {
                    throw .damaged("\(device.tier) block \(target) freed twice (the allocator bitmap says it is free)")
                }
                bitmap.setUsed(bit, false)
                freedInTransaction.insert(target)
            }
            store(index, bitmap, freeCount: Int(freeSummary[Int(index)]) + Int(end - block), transaction)
            block = end
        }
    }

    /// Blocks of `runs` inside bitmap block `index`.
    private func allocatedIn(_ index: UInt64, _ runs: [Range<UInt64>]) -> Int {
        let range = index * Self.bitsPerBlock ..< (index + 1) * Self.bitsPerBlock
        return runs.reduce(0) { $0 + $1.clamped(to: range).count }
    }

    /// NVM byte offset of data-area block `block` (NVM tier only).
    public func nvmOffset(ofBlock block: UInt64) -> UInt64 {
        precondition(device.tier == .nvm && block < device.dataBlocks)
        return device.dataOffset + block * UInt64(Format.blockBytes)
    }

    private func bitmapOffset(_ index: UInt64) -> UInt64 {
        device.bitmapOffset + index * UInt64(Format.blockBytes)
    }

    private func decode(_ bytes: [UInt8], index: UInt64) throws(AllocationError) -> AllocatorBitmapBlock {
        let result: Result<AllocatorBitmapBlock, AllocationError> = bytes.withUnsafeBytes { buffer in
            do throws(AllocationError) { return .success(try decode(buffer, index: index)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    private func decode(_ buffer: UnsafeRawBufferPointer, index: UInt64) throws(AllocationError) -> AllocatorBitmapBlock {
        let first = index * Self.bitsPerBlock
        do {
            return try AllocatorBitmapBlock.decode(buffer, seed: seed, expectedTier: device.tier, expectedFirstBlock: first,
                                                   expectedBlockCount: AllocatorBitmapBlock.blockCount(firstBlock: first, tierDataBlocks: device.dataBlocks))
        } catch {
            throw .damaged("\(error)")
        }
    }
}
