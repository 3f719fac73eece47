// A file's extent map (docs/format.md "Extents", "Extent tree"): which blocks of which tier
// hold each logical block of the file. Up to three extents live in the inode; more go to an
// extent tree of ExtentNode blocks on NVM.
//
// The map is loaded whole into DRAM, changed there, and stored back through the caller's
// MetadataTransaction: inline when it fits, otherwise as a freshly written tree (the old
// tree's nodes are freed in the same transaction). Rewriting the tree costs O(extents) per
// store; digest stores a file's map once per batch, and extents of consecutive writes merge,
// so maps stay short in practice. (An in-place B+tree update is the upgrade path when large
// fragmented files make this show up in profiles.)

import ShaleFormat
import ShaleMedia

public enum ExtentMapError: Error, Equatable, CustomStringConvertible {
    case damaged(String)
    case noSpace(String)

    public var description: String {
        switch self {
        case let .damaged(text): text
        case let .noSpace(text): text
        }
    }
}

/// Blocks a change to the map stopped referencing: the caller frees them.
public struct FreedBlocks: Equatable, Sendable {
    public var tier: Tier
    public var blocks: Range<UInt64>
}

public struct ExtentMap<NVM: PersistentMemory> {
    /// Sorted by logical block, disjoint.
    public private(set) var extents: [Extent]
    public let inode: UInt64
    /// NVM data-area blocks of the tree as loaded (freed when the map is stored again).
    private var treeBlocks: [UInt64]
    /// Tree depth bound: a deeper tree is damage (or a cycle).
    static var depthMax: Int { 6 }

    /// Loads the map of `inode` through `transaction`.
    /// `tiers` are the volume's devices (the NVM first); extents are checked against them.
    public init(inode: Inode, transaction: MetadataTransaction<NVM>, nvmData: DeviceDescriptor, seed: UInt32,
                tiers givenTiers: [DeviceDescriptor] = []) throws(ExtentMapError) {
        let tiers = givenTiers.isEmpty ? [nvmData] : givenTiers
        self.inode = inode.number
        treeBlocks = []
        switch inode.mapping {
        case let .extents(inline):
            extents = inline
        case .inline:
            // Inline bytes are not blocks: the caller moves them into a block first.
            throw .damaged("inode \(inode.number) keeps its data inline; it has no extent map")
        case let .tree(root, depth, count):
            var loaded: [Extent] = []
            var nodes: [UInt64] = []
            try Self.load(block: root, level: Int(depth), inode: inode.number, transaction: transaction, nvmData: nvmData,
                          seed: seed, into: &loaded, nodes: &nodes)
            guard UInt64(loaded.count) == count else {
                throw .damaged("inode \(inode.number): extent tree holds \(loaded.count) extents, the inode says \(count)")
            }
            extents = loaded
            treeBlocks = nodes
        }
        for (a, b) in zip(extents, extents.dropFirst()) where a.logicalEnd > b.logicalBlock {
            throw .damaged("inode \(inode.number): extents overlap at logical block \(b.logicalBlock)")
        }
        // Every extent must lie on its tier: a wild one would otherwise be freed or read.
        for extent in extents {
            guard let tier = tiers.first(where: { $0.tier == extent.tier }) else {
                throw .damaged("inode \(inode.number): an extent on the \(extent.tier) tier, which this volume does not have")
            }
            guard extent.physicalBlock <= tier.dataBlocks, UInt64(extent.blockCount) <= tier.dataBlocks - extent.physicalBlock else {
                throw .damaged("inode \(inode.number): extent at \(extent.tier) block \(extent.physicalBlock)+\(extent.blockCount) lies beyond the tier")
            }
        }
    }

    private static func load(block: UInt64, level: Int, inode: UInt64, transaction: MetadataTransaction<NVM>, nvmData: DeviceDescriptor,
                             seed: UInt32, into extents: inout [Extent], nodes: inout [UInt64]) throws(ExtentMapError) {
        guard level <= depthMax, block < nvmData.dataBlocks, nodes.count < 1 << 24 else {
            throw .damaged("inode \(inode): extent tree node \(block) at depth \(level) is out of range")
        }
        nodes.append(block)
        let bytes = transaction.read(nvmData.dataOffset + block * UInt64(Format.blockBytes), count: Format.blockBytes)
        let decoded: Result<ExtentNode, ExtentMapError> = bytes.withUnsafeBytes { buffer in
            do throws(FormatError) {
                return .success(try ExtentNode.decode(buffer, seed: seed, expectedInode: inode))
            } catch {
                return .failure(.damaged("\(error)"))
            }
        }
        let node = try decoded.get()
        switch node.entries {
        case let .leaf(leafExtents):
            guard level == 0 else { throw .damaged("inode \(inode): leaf at depth \(level)") }
            extents += leafExtents
        case let .inner(nodeLevel, children):
            guard Int(nodeLevel) == level, level > 0 else { throw .damaged("inode \(inode): inner node level \(nodeLevel) at depth \(level)") }
            for child in children {
                let before = extents.count
                try load(block: child.block, level: level - 1, inode: inode, transaction: transaction, nvmData: nvmData,
                         seed: seed, into: &extents, nodes: &nodes)
                if extents.count > before, extents[before].logicalBlock < child.firstLogicalBlock {
                    throw .damaged("inode \(inode): extent tree child at \(child.block) starts before its key")
                }
            }
        }
    }

    /// NVM data-area blocks of the extent tree's nodes, as loaded or last stored (fsck).
    public var nodeBlocks: [UInt64] { treeBlocks }

    /// Blocks the file holds, data and extent-tree nodes (st_blocks / 8), as last stored or loaded.
    public var blockCount: UInt64 {
        extents.reduce(UInt64(0)) { $0 + UInt64($1.blockCount) } + UInt64(treeBlocks.count)
    }

    /// The extent holding `logical`, or nil for a hole.
    public func lookup(_ logical: UInt64) -> Extent? {
        var low = 0, high = extents.count
        while low < high {
            let middle = (low + high) / 2
            if extents[middle].logicalEnd <= logical { low = middle + 1 } else { high = middle }
        }
        guard low < extents.count, extents[low].logicalBlock <= logical else { return nil }
        return extents[low]
    }

    /// The parts of `range` (logical blocks) that no extent maps, in order.
    public func holes(in range: Range<UInt64>) -> [Range<UInt64>] {
        var holes: [Range<UInt64>] = []
        var low = 0, high = extents.count
        while low < high {
            let middle = (low + high) / 2
            if extents[middle].logicalEnd <= range.lowerBound { low = middle + 1 } else { high = middle }
        }
        var position = range.lowerBound
        var index = low
        while position < range.upperBound {
            guard index < extents.count, extents[index].logicalBlock < range.upperBound else {
                holes.append(position ..< range.upperBound)
                break
            }
            if extents[index].logicalBlock > position { holes.append(position ..< extents[index].logicalBlock) }
            position = max(position, extents[index].logicalEnd)
            index += 1
        }
        return holes
    }

    /// The extents that map any block of `range`, whole.
    public func extents(overlapping range: Range<UInt64>) -> [Extent] {
        extents.filter { $0.logicalBlock < range.upperBound && $0.logicalEnd > range.lowerBound }
    }

    /// Marks the NVM blocks of `range` unwritten (they read as zeros: fallocate, zero range)
    /// or written again (a write filled them), splitting extents at the range's edges and
    /// merging neighbours that become alike. Holes, other tiers and compressed extents are
    /// left as they are; no block changes hands.
    public mutating func setUnwritten(_ range: Range<UInt64>, _ unwritten: Bool) {
        guard !range.isEmpty else { return }
        var result: [Extent] = []
        result.reserveCapacity(extents.count + 2)
        for extent in extents {
            guard extent.tier == .nvm, !extent.flags.contains(.compressed),
                  extent.logicalBlock < range.upperBound, extent.logicalEnd > range.lowerBound,
                  extent.flags.contains(.unwritten) != unwritten else {
                result.append(extent)
                continue
            }
            let start = extent.logicalBlock, end = extent.logicalEnd
            let cutStart = max(start, range.lowerBound), cutEnd = min(end, range.upperBound)
            func part(_ from: UInt64, _ to: UInt64, changed: Bool) -> Extent {
                var piece = extent
                piece.logicalBlock = from
                piece.physicalBlock = extent.physicalBlock + (from - start)
                piece.blockCount = UInt32(to - from)
                piece.flags.remove(.checksummed)
                piece.checksum = 0
                if changed {
                    if unwritten { piece.flags.insert(.unwritten) } else { piece.flags.remove(.unwritten) }
                }
                return piece
            }
            if start < cutStart { result.append(part(start, cutStart, changed: false)) }
            result.append(part(cutStart, cutEnd, changed: true))
            if cutEnd < end { result.append(part(cutEnd, end, changed: false)) }
        }
        var merged: [Extent] = []
        merged.reserveCapacity(result.count)
        for extent in result {
            if let last = merged.last, Self.merges(last, extent) {
                merged[merged.count - 1].blockCount += extent.blockCount
            } else {
                merged.append(extent)
            }
        }
        extents = merged
    }

    /// Whether `b` continues `a` (logically and physically, same tier and flags) so that the
    /// two may be one extent.
    private static func merges(_ a: Extent, _ b: Extent) -> Bool {
        a.tier == b.tier && a.flags == b.flags && a.flags.isDisjoint(with: [.compressed, .checksummed])
            && a.logicalEnd == b.logicalBlock && a.physicalBlock + UInt64(a.blockCount) == b.physicalBlock
            && UInt64(a.blockCount) + UInt64(b.blockCount) <= UInt64(UInt32.max)
    }

    /// Removes `range` (logical blocks) from the map; returns the physical blocks no longer
    /// referenced.
    @discardableResult
    public mutating func unmap(_ range: Range<UInt64>) -> [FreedBlocks] {
        guard !range.isEmpty else { return [] }
        var kept: [Extent] = []
        var freed: [FreedBlocks] = []
        for extent in extents {
            let start = extent.logicalBlock, end = extent.logicalEnd
            guard start < range.upperBound, end > range.lowerBound else { kept.append(extent); continue }
            let cutStart = max(start, range.lowerBound), cutEnd = min(end, range.upperBound)
            // A compressed extent can only go whole; cutting it is the tiering layer's job
            // (decompress first). A split checksummed extent no longer has its checksum.
            precondition(!extent.flags.contains(.compressed) || (cutStart == start && cutEnd == end),
                         "a compressed extent is never split")
            if start < cutStart {
                var left = extent
                left.blockCount = UInt32(cutStart - start)
                left.flags.remove(.checksummed)
                left.checksum = 0
                kept.append(left)
            }
            freed.append(FreedBlocks(tier: extent.tier, blocks: extent.physicalBlock + (cutStart - start) ..< extent.physicalBlock + (cutEnd - start)))
            if cutEnd < end {
                var right = extent
                right.logicalBlock = cutEnd
                right.physicalBlock = extent.physicalBlock + (cutEnd - start)
                right.blockCount = UInt32(end - cutEnd)
                right.flags.remove(.checksummed)
                right.checksum = 0
                kept.append(right)
            }
        }
        extents = kept
        return freed
    }

    /// Maps `extent`'s logical blocks to its physical blocks, replacing whatever they mapped
    /// to; returns the physical blocks no longer referenced. Neighbours that continue each
    /// other on the same tier merge.
    @discardableResult
    public mutating func map(_ extent: Extent) -> [FreedBlocks] {
        let freed = unmap(extent.logicalBlock ..< extent.logicalEnd)
        var index = 0
        while index < extents.count, extents[index].logicalBlock < extent.logicalBlock { index += 1 }
        extents.insert(extent, at: index)
        // Merge with the following, then the preceding extent.
        if index + 1 < extents.count, Self.merges(extents[index], extents[index + 1]) {
            extents[index].blockCount += extents[index + 1].blockCount
            extents.remove(at: index + 1)
        }
        if index > 0, Self.merges(extents[index - 1], extents[index]) {
            extents[index - 1].blockCount += extents[index].blockCount
            extents.remove(at: index)
        }
        return freed
    }

    /// Stores the map into `inode` (inline when it fits, else a new tree written through the
    /// transaction, the old tree's nodes freed).
    public mutating func store(into inode: inout Inode, transaction: MetadataTransaction<NVM>,
                               allocator: BlockAllocator<NVM>, seed: UInt32) throws(ExtentMapError) {
        precondition(inode.number == self.inode)
        // The old tree's nodes are freed only after the new tree is written: a failure half
        // way (no space for a node) leaves the inode's old mapping intact and referenced.
        let oldNodes = treeBlocks
        treeBlocks = []
        func freeOldNodes() throws(ExtentMapError) {
            do {
                for block in oldNodes { try allocator.free(block ..< block + 1, in: transaction) }
            } catch {
                throw .damaged("\(error)")
            }
        }
        if extents.count <= Inode.inlineExtentCapacity {
            try freeOldNodes()
            inode.mapping = .extents(extents)
            return
        }
        // Leaves, then inner levels until one node remains: the root.
        var level: UInt16 = 0
        var children: [ExtentNode.Child] = []
        for start in stride(from: 0, to: extents.count, by: ExtentNode.leafCapacity) {
            let leaf = Array(extents[start ..< min(start + ExtentNode.leafCapacity, extents.count)])
            let block = try writeNode(ExtentNode(inode: inode.number, entries: .leaf(leaf)), transaction: transaction, allocator: allocator, seed: seed)
            children.append(ExtentNode.Child(firstLogicalBlock: leaf[0].logicalBlock, block: block))
        }
        while children.count > 1 {
            level += 1
            var parents: [ExtentNode.Child] = []
            for start in stride(from: 0, to: children.count, by: ExtentNode.innerCapacity) {
                let group = Array(children[start ..< min(start + ExtentNode.innerCapacity, children.count)])
                let block = try writeNode(ExtentNode(inode: inode.number, entries: .inner(level: level, group)),
                                          transaction: transaction, allocator: allocator, seed: seed)
                parents.append(ExtentNode.Child(firstLogicalBlock: group[0].firstLogicalBlock, block: block))
            }
            children = parents
        }
        try freeOldNodes()
        inode.mapping = .tree(rootBlock: children[0].block, depth: level, extentCount: UInt64(extents.count))
    }

    private mutating func writeNode(_ node: ExtentNode, transaction: MetadataTransaction<NVM>, allocator: BlockAllocator<NVM>,
                                    seed: UInt32) throws(ExtentMapError) -> UInt64 {
        let block: UInt64
        do {
            block = try allocator.allocate(1, in: transaction, packed: true)[0].lowerBound
        } catch {
            throw .noSpace("no NVM block for inode \(node.inode)'s extent tree: \(error)")
        }
        transaction.write(node.encode(seed: seed), at: allocator.nvmOffset(ofBlock: block))
        treeBlocks.append(block)
        return block
    }
}
