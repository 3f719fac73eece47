// A directory's blocks as its inode's extent map sees them: the `DirectoryBlockMap` that
// DirectoryStore works through, backed by ExtentMap and the NVM block allocator. Directories
// live on NVM (they are metadata). Released blocks are freed, and the map stored back into the
// inode, by `finish`, in the same transaction.

import ShaleFormat
import ShaleMedia

public struct InodeBlockMap<NVM: PersistentMemory>: DirectoryBlockMap {
    public private(set) var extents: ExtentMap<NVM>
    private let allocator: BlockAllocator<NVM>
    private let transaction: MetadataTransaction<NVM>
    private var released: [FreedBlocks] = []
    /// Data blocks added (or removed, negative) since loading or the last `finish`.
    public private(set) var blocksAdded: Int64 = 0

    public init(inode: Inode, transaction: MetadataTransaction<NVM>, allocator: BlockAllocator<NVM>, seed: UInt32) throws(ExtentMapError) {
        precondition(allocator.device.tier == .nvm)
        extents = try ExtentMap(inode: inode, transaction: transaction, nvmData: allocator.device, seed: seed)
        self.allocator = allocator
        self.transaction = transaction
    }

    public func offset(ofLogicalBlock logical: UInt64) throws(DirectoryError) -> UInt64? {
        let found: Extent?
        do { found = try extents.lookup(logical) } catch { throw .damaged("\(error)") }
        guard let extent = found, extent.tier == .nvm else { return nil }
        let block = extent.physicalBlock + (logical - extent.logicalBlock)
        guard block < allocator.device.dataBlocks else { return nil }  // damage: the store's decode reports it
        return allocator.nvmOffset(ofBlock: block)
    }

    public mutating func allocate(logicalBlock logical: UInt64) throws(DirectoryError) -> UInt64 {
        let block: UInt64
        do {
            block = try allocator.allocate(1, in: transaction, packed: true)[0].lowerBound
        } catch {
            if case .damaged(let text) = error { throw .damaged(text) }
            throw .noSpace
        }
        do {
            released += try extents.map(Extent(logicalBlock: logical, physicalBlock: block, blockCount: 1, tier: .nvm))
        } catch {
            throw .damaged("\(error)")
        }
        blocksAdded += 1
        return allocator.nvmOffset(ofBlock: block)
    }

    public mutating func release(logicalBlock logical: UInt64) throws(DirectoryError) {
        let freed: [FreedBlocks]
        do { freed = try extents.unmap(logical ..< logical + 1) } catch { throw .damaged("\(error)") }
        released += freed
        blocksAdded -= Int64(freed.reduce(0) { $0 + $1.blocks.count })
    }

    /// Frees released blocks and stores the map into `inode`, whose block count and size
    /// (blocks × 4096, as directories report it) change by what the map gained or lost, all
    /// in the transaction. `inode` is the inode the map was loaded from (as changed since).
    public mutating func finish(into inode: inout Inode) throws(ExtentMapError) {
        do {
            for freed in released where freed.tier == .nvm { try allocator.free(freed.blocks, in: transaction) }
        } catch {
            throw .damaged("\(error)")
        }
        released = []
        try extents.store(into: &inode, allocator: allocator)
        inode.allocatedBlocks = UInt64(max(0, Int64(inode.allocatedBlocks) + extents.takeBlockDelta()))
        inode.size = UInt64(max(0, Int64(inode.size) + blocksAdded * Int64(Format.blockBytes)))
        blocksAdded = 0
    }
}
