// A file's extent map (docs/format.md "Extents", "Extent tree"): which blocks of which tier
// hold each logical block of the file. Up to three extents live in the inode; more go to a
// B+-tree of ExtentNode blocks on NVM whose root the inode names.
//
// Where it sits: KernFS, over a MetadataTransaction (every read sees the transaction's own
// changes, every write goes into it) and the NVM block allocator (tree nodes).
//
// The tree is read and changed in place, a node at a time: a lookup reads the nodes on one
// path from the root (each verified when first read, then kept decoded in this map); a change
// edits only the leaves whose ranges it touches; `store` writes back the nodes that changed
// (through the transaction, so only their changed bytes are journaled), splits nodes that
// outgrew a block into new ones, removes nodes that emptied, and moves a map of three extents
// or fewer back into the inode. A million-entry directory or a file of a hundred thousand
// extents therefore costs a few node reads per lookup and a few node writes per change, not
// the whole tree.
//
// Invariants of a tree (checked on every node as it is read; a node that breaks one is damage):
// - a node's level is its parent's minus one (leaves are 0); the depth is at most `depthMax`;
// - an inner node's children keys increase strictly; child i covers the logical blocks from
//   its key (for child 0: from the start of its parent's range) up to child i + 1's key (the
//   last: up to the end of the parent's range); the root covers every logical block;
// - every extent of a leaf lies inside the leaf's range and on its tier; extents of a leaf are
//   sorted and do not overlap (ExtentNode.decode).
// Child 0's key may lie below its first extent (nothing is ever moved up); an insert below it
// lowers it on the way down, so every extent stays at or above its leaf's key.

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

/// One file's map, loaded lazily through one transaction. A reference type: it caches the
/// tree nodes it has read and the changes not yet stored; every holder sees the same map.
public final class ExtentMap<NVM: PersistentMemory> {
    public let inode: UInt64
    private let transaction: MetadataTransaction<NVM>
    private let nvmData: DeviceDescriptor
    private let tiers: [DeviceDescriptor]
    private let seed: UInt32

    private enum Shape {
        /// In the inode (≤ 3 extents once stored; more only between changes and `store`).
        case inline([Extent])
        case tree(root: UInt64, depth: Int)
    }

    /// A decoded tree node: extents (leaf) or children (inner).
    private struct Node {
        var level: Int
        var extents: [Extent] = []
        var children: [ExtentNode.Child] = []
        var isEmpty: Bool { level == 0 ? extents.isEmpty : children.isEmpty }
        var entryCount: Int { level == 0 ? extents.count : children.count }
        var capacity: Int { level == 0 ? ExtentNode.leafCapacity : ExtentNode.innerCapacity }
    }

    private var shape: Shape
    /// Extents in the whole map.
    public private(set) var extentCount: UInt64
    private var nodes: [UInt64: Node] = [:]
    private var dirty: Set<UInt64> = []
    /// Nodes written for the first time (no old image to compare with).
    private var fresh: Set<UInt64> = []
    /// Nodes that left the tree; freed by `store`.
    private var removed: [UInt64] = []
    /// Data blocks plus tree nodes gained (or lost, negative) since loading or the last
    /// `takeBlockDelta`: st_blocks bookkeeping without walking the tree.
    public private(set) var blockDelta: Int64 = 0

    /// At most the journal bytes that `store` will add to the transaction for the changes
    /// made since loading or the last store: every changed node written whole, plus the new
    /// nodes splits will take (one per leaf's worth of extents gained). The digest counts it
    /// against a batch's share of the journal while it keeps a file's map unstored.
    public var pendingJournalBytes: Int {
        let perLeaf = ExtentNode.leafCapacity / 2
        switch shape {
        case .inline:
            guard extentCount > UInt64(Inode.inlineExtentCapacity) else { return 0 }
            return (Int(extentCount) / perLeaf + 2) * Self.nodeJournalBytes
        case .tree:
            guard !dirty.isEmpty else { return 0 }
            let grown = max(0, Int(extentCount) - Int(extentCountAtStore))
            // Each split also changes its parent, and the root may split: two more nodes.
            return (dirty.count + 2 * (grown / perLeaf + 1)) * Self.nodeJournalBytes
        }
    }
    private static var nodeJournalBytes: Int { Format.blockBytes + 2 * JournalWrite.headerBytes }
    private var extentCountAtStore: UInt64 = 0

    /// Tree depth bound: a deeper tree is damage.
    static var depthMax: Int { 6 }
    private static var everything: Range<UInt64> { 0 ..< UInt64.max }

    /// The map of `inode`, read through `transaction`. `tiers` are the volume's devices (the
    /// NVM first); extents are checked against them. Inline extents are checked now, tree
    /// nodes when first read.
    public init(inode: Inode, transaction: MetadataTransaction<NVM>, nvmData: DeviceDescriptor, seed: UInt32,
                tiers givenTiers: [DeviceDescriptor] = []) throws(ExtentMapError) {
        self.inode = inode.number
        self.transaction = transaction
        self.nvmData = nvmData
        self.seed = seed
        tiers = givenTiers.isEmpty ? [nvmData] : givenTiers
        switch inode.mapping {
        case let .extents(inline):
            for (a, b) in zip(inline, inline.dropFirst()) where a.logicalEnd > b.logicalBlock {
                throw .damaged("inode \(inode.number): extents overlap at logical block \(b.logicalBlock)")
            }
            shape = .inline(inline)
            extentCount = UInt64(inline.count)
            for extent in inline { try check(extent) }
        case .inline:
            // Inline bytes are not blocks: the caller moves them into a block first.
            throw .damaged("inode \(inode.number) keeps its data inline; it has no extent map")
        case let .tree(root, depth, count):
            guard Int(depth) <= Self.depthMax else {
                throw .damaged("inode \(inode.number): extent tree of depth \(depth)")
            }
            shape = .tree(root: root, depth: Int(depth))
            extentCount = count
            _ = try node(root, level: Int(depth), range: Self.everything)
        }
        extentCountAtStore = extentCount
    }

    // MARK: Reading

    /// The extent holding `logical`, or nil for a hole.
    public func lookup(_ logical: UInt64) throws(ExtentMapError) -> Extent? {
        switch shape {
        case let .inline(extents):
            return Self.find(logical, in: extents)
        case let .tree(root, depth):
            var block = root, level = depth, range = Self.everything
            while true {
                let current = try node(block, level: level, range: range)
                if level == 0 { return Self.find(logical, in: current.extents) }
                let index = Self.child(holding: logical, in: current.children)
                range = Self.range(ofChild: index, in: current.children, within: range)
                block = current.children[index].block
                level -= 1
            }
        }
    }

    /// The extents that map any block of `range`, whole, in order.
    public func extents(overlapping range: Range<UInt64>) throws(ExtentMapError) -> [Extent] {
        guard !range.isEmpty else { return [] }
        var found: [Extent] = []
        try visitLeaves(overlapping: range) { extents in
            for extent in extents where extent.logicalBlock < range.upperBound && extent.logicalEnd > range.lowerBound {
                found.append(extent)
            }
        }
        return found
    }

    /// The parts of `range` (logical blocks) that no extent maps, in order.
    public func holes(in range: Range<UInt64>) throws(ExtentMapError) -> [Range<UInt64>] {
        var holes: [Range<UInt64>] = []
        var position = range.lowerBound
        for extent in try extents(overlapping: range) {
            if extent.logicalBlock > position { holes.append(position ..< extent.logicalBlock) }
            position = max(position, extent.logicalEnd)
        }
        if position < range.upperBound { holes.append(position ..< range.upperBound) }
        return holes
    }

    /// Every extent, in order, reading the whole tree and checking that it holds as many
    /// extents as the inode says (fsck).
    public func allExtents() throws(ExtentMapError) -> [Extent] {
        let all = try extents(overlapping: Self.everything)
        guard UInt64(all.count) == extentCount else {
            throw .damaged("inode \(inode): extent tree holds \(all.count) extents, the inode says \(extentCount)")
        }
        return all
    }

    /// NVM data-area blocks of every node of the tree (fsck).
    public func allNodeBlocks() throws(ExtentMapError) -> [UInt64] {
        guard case let .tree(root, depth) = shape else { return [] }
        var blocks: [UInt64] = []
        func walk(_ block: UInt64, _ level: Int, _ range: Range<UInt64>) throws(ExtentMapError) {
            blocks.append(block)
            let current = try node(block, level: level, range: range)
            guard level > 0 else { return }
            for index in current.children.indices {
                try walk(current.children[index].block, level - 1, Self.range(ofChild: index, in: current.children, within: range))
            }
        }
        try walk(root, depth, Self.everything)
        return blocks
    }

    /// Blocks the file holds, data and tree nodes (st_blocks / 8), reading the whole tree (fsck).
    public func allBlockCount() throws(ExtentMapError) -> UInt64 {
        try allExtents().reduce(UInt64(0)) { $0 + UInt64($1.blockCount) } + UInt64(try allNodeBlocks().count)
    }

    /// `blockDelta`, which starts again from 0.
    public func takeBlockDelta() -> Int64 {
        defer { blockDelta = 0 }
        return blockDelta
    }

    // MARK: Changing

    /// Removes `range` (logical blocks) from the map; returns the physical blocks no longer
    /// referenced.
    @discardableResult
    public func unmap(_ range: Range<UInt64>) throws(ExtentMapError) -> [FreedBlocks] {
        guard !range.isEmpty else { return [] }
        var freed: [FreedBlocks] = []
        try edit(range, lowersKeys: false) { extents, _ in freed += Self.cut(range, from: &extents) }
        blockDelta -= Int64(freed.reduce(0) { $0 + $1.blocks.count })
        return freed
    }

    /// Maps `extent`'s logical blocks to its physical blocks, replacing whatever they mapped
    /// to; returns the physical blocks no longer referenced. Neighbours in one leaf that
    /// continue each other on the same tier merge.
    @discardableResult
    public func map(_ extent: Extent) throws(ExtentMapError) -> [FreedBlocks] {
        let range = extent.logicalBlock ..< extent.logicalEnd
        guard !range.isEmpty else { return [] }
        var freed: [FreedBlocks] = []
        try edit(range, lowersKeys: true) { extents, leafRange in
            freed += Self.cut(range, from: &extents)
            // The part of the extent inside this leaf's range.
            let start = max(range.lowerBound, leafRange.lowerBound), end = min(range.upperBound, leafRange.upperBound)
            var piece = extent
            piece.logicalBlock = start
            piece.physicalBlock = extent.physicalBlock + (start - extent.logicalBlock)
            piece.blockCount = UInt32(end - start)
            if piece != extent {
                piece.flags.remove(.checksummed)
                piece.checksum = 0
            }
            Self.insert(piece, into: &extents)
        }
        blockDelta += Int64(extent.blockCount) - Int64(freed.reduce(0) { $0 + $1.blocks.count })
        return freed
    }

    /// Marks the NVM blocks of `range` unwritten (they read as zeros: fallocate, zero range)
    /// or written again (a write filled them), splitting extents at the range's edges and
    /// merging neighbours that become alike. Holes, other tiers and compressed extents are
    /// left as they are; no block changes hands.
    public func setUnwritten(_ range: Range<UInt64>, _ unwritten: Bool) throws(ExtentMapError) {
        guard !range.isEmpty else { return }
        try edit(range, lowersKeys: false) { extents, _ in Self.mark(range, unwritten, in: &extents) }
    }

    /// Stores the map into `inode`: inline when three extents or fewer remain, otherwise the
    /// tree's changed nodes written in place, full ones split into new nodes, emptied ones
    /// freed. Nothing is freed before everything is written, so a failure (no block for a
    /// node) leaves the inode's old mapping whole; the caller aborts the transaction.
    public func store(into inode: inout Inode, allocator: BlockAllocator<NVM>) throws(ExtentMapError) {
        precondition(inode.number == self.inode)
        if extentCount <= UInt64(Inode.inlineExtentCapacity) {
            let all = try extents(overlapping: Self.everything)
            if case let .tree(root, depth) = shape {
                let blocks = try nodeBlocks(root, depth)
                removed += blocks
                blockDelta -= Int64(blocks.count)
            }
            nodes = [:]
            dirty = []
            fresh = []
            shape = .inline(all)
            extentCountAtStore = extentCount
            try freeRemoved(allocator)
            inode.mapping = .extents(all)
            return
        }
        var root: UInt64, depth: Int
        switch shape {
        case let .inline(extents):
            root = try newNode(Node(level: 0, extents: extents), allocator: allocator)
            depth = 0
        case let .tree(treeRoot, treeDepth):
            root = treeRoot
            depth = treeDepth
        }
        // Write back bottom-up; a root that split gets a new root above it.
        var pieces = try flush(root, level: depth, allocator: allocator)
        while pieces.count > 1 {
            guard depth < Self.depthMax else { throw .damaged("inode \(inode.number): extent tree would exceed depth \(Self.depthMax)") }
            depth += 1
            root = try newNode(Node(level: depth, children: pieces), allocator: allocator)
            pieces = try flush(root, level: depth, allocator: allocator)
        }
        // A root with one child steps down.
        while depth > 0, let top = nodes[root], top.children.count == 1 {
            removed.append(root)
            nodes[root] = nil
            dirty.remove(root)
            blockDelta -= 1
            root = top.children[0].block
            depth -= 1
            _ = try node(root, level: depth, range: Self.everything)
        }
        shape = .tree(root: root, depth: depth)
        extentCountAtStore = extentCount
        try freeRemoved(allocator)
        inode.mapping = .tree(rootBlock: root, depth: UInt16(depth), extentCount: extentCount)
    }

    // MARK: Tree internals

    /// The node at `block`, read and verified on first use: level, range, tiers.
    private func node(_ block: UInt64, level: Int, range: Range<UInt64>) throws(ExtentMapError) -> Node {
        if let cached = nodes[block] { return cached }
        guard level <= Self.depthMax, block < nvmData.dataBlocks else {
            throw .damaged("inode \(inode): extent tree node \(block) at depth \(level) is out of range")
        }
        let offset = nvmData.dataOffset + block * UInt64(Format.blockBytes)
        let decoded: (node: ExtentNode, trusted: Bool)
        do {
            // The checksum is checked unless the node verified since it last changed.
            decoded = try transaction.withBlock(at: offset) { (buffer, trusted) throws(FormatError) -> (node: ExtentNode, trusted: Bool) in
                (try ExtentNode.decode(buffer, seed: seed, expectedInode: inode, verifyChecksum: !trusted), trusted)
            }
        } catch {
            throw .damaged("inode \(inode): extent tree node \(block): \(error)")
        }
        if !decoded.trusted { transaction.markVerified(blockAt: offset) }
        var result = Node(level: level)
        switch decoded.node.entries {
        case let .leaf(extents):
            guard level == 0 else { throw .damaged("inode \(inode): extent tree leaf \(block) at depth \(level)") }
            for extent in extents {
                guard extent.logicalBlock >= range.lowerBound, extent.logicalEnd <= range.upperBound else {
                    throw .damaged("inode \(inode): extent tree leaf \(block) holds logical block \(extent.logicalBlock), outside its key range")
                }
                try check(extent)
            }
            result.extents = extents
        case let .inner(nodeLevel, children):
            guard Int(nodeLevel) == level, level > 0 else {
                throw .damaged("inode \(inode): extent tree node \(block) of level \(nodeLevel) at depth \(level)")
            }
            guard !children.isEmpty, children[0].firstLogicalBlock >= range.lowerBound,
                  children[children.count - 1].firstLogicalBlock < range.upperBound else {
                throw .damaged("inode \(inode): extent tree node \(block) has keys outside its range (or none)")
            }
            result.children = children
        }
        nodes[block] = result
        return result
    }

    /// Every extent must lie on its tier: a wild one would otherwise be freed or read.
    private func check(_ extent: Extent) throws(ExtentMapError) {
        guard let tier = tiers.first(where: { $0.tier == extent.tier }) else {
            throw .damaged("inode \(inode): an extent on the \(extent.tier) tier, which this volume does not have")
        }
        guard extent.physicalBlock <= tier.dataBlocks, UInt64(extent.blockCount) <= tier.dataBlocks - extent.physicalBlock else {
            throw .damaged("inode \(inode): extent at \(extent.tier) block \(extent.physicalBlock)+\(extent.blockCount) lies beyond the tier")
        }
    }

    /// Calls `body` with the extents of each leaf whose range meets `range`, in order.
    private func visitLeaves(overlapping range: Range<UInt64>, _ body: ([Extent]) -> Void) throws(ExtentMapError) {
        switch shape {
        case let .inline(extents):
            body(extents)
        case let .tree(root, depth):
            func visit(_ block: UInt64, _ level: Int, _ nodeRange: Range<UInt64>) throws(ExtentMapError) {
                let current = try node(block, level: level, range: nodeRange)
                if level == 0 { body(current.extents); return }
                for index in current.children.indices {
                    let childRange = Self.range(ofChild: index, in: current.children, within: nodeRange)
                    if childRange.lowerBound >= range.upperBound { break }
                    if childRange.upperBound <= range.lowerBound { continue }
                    try visit(current.children[index].block, level - 1, childRange)
                }
            }
            try visit(root, depth, Self.everything)
        }
    }

    /// Applies `body` to the extents of every leaf whose range meets `range` (with the leaf's
    /// range), marks what changed, and takes emptied nodes out of the tree. `lowersKeys`: the
    /// change inserts, so child 0's key is lowered to where the insert begins.
    private func edit(_ range: Range<UInt64>, lowersKeys: Bool,
                      _ body: (inout [Extent], Range<UInt64>) -> Void) throws(ExtentMapError) {
        switch shape {
        case var .inline(extents):
            let before = extents.count
            body(&extents, Self.everything)
            extentCount = extentCount + UInt64(extents.count) - UInt64(before)
            shape = .inline(extents)
        case let .tree(root, depth):
            try edit(root, level: depth, nodeRange: Self.everything, range, lowersKeys, body)
            if nodes[root]!.isEmpty {
                drop(root)
                shape = .inline([])
            }
        }
    }

    /// An emptied node leaves the tree: its block is freed when the map is stored.
    private func drop(_ block: UInt64) {
        removed.append(block)
        nodes[block] = nil
        dirty.remove(block)
        fresh.remove(block)
        blockDelta -= 1
    }

    private func edit(_ block: UInt64, level: Int, nodeRange: Range<UInt64>, _ range: Range<UInt64>, _ lowersKeys: Bool,
                      _ body: (inout [Extent], Range<UInt64>) -> Void) throws(ExtentMapError) {
        var current = try node(block, level: level, range: nodeRange)
        if level == 0 {
            let before = current.extents
            body(&current.extents, nodeRange)
            guard current.extents != before else { return }
            extentCount = extentCount + UInt64(current.extents.count) - UInt64(before.count)
            nodes[block] = current
            dirty.insert(block)
            return
        }
        var changed = false
        if lowersKeys, range.lowerBound < current.children[0].firstLogicalBlock {
            current.children[0].firstLogicalBlock = max(range.lowerBound, nodeRange.lowerBound)
            changed = true
        }
        // The children to visit, last first, so that removing one keeps the others' indices.
        var touched: [Int] = []
        for index in current.children.indices {
            let childRange = Self.range(ofChild: index, in: current.children, within: nodeRange)
            if childRange.lowerBound >= range.upperBound { break }
            if childRange.upperBound > range.lowerBound { touched.append(index) }
        }
        for index in touched.reversed() {
            let child = current.children[index].block
            let childRange = Self.range(ofChild: index, in: current.children, within: nodeRange)
            try edit(child, level: level - 1, nodeRange: childRange, range, lowersKeys, body)
            if nodes[child]!.isEmpty {
                drop(child)
                current.children.remove(at: index)
                changed = true
            }
        }
        if changed {
            nodes[block] = current
            dirty.insert(block)
        }
    }

    /// Writes back the subtree at `block` (only nodes read into this map can have changed):
    /// children first, then the node itself, split into as many nodes as it needs. Returns
    /// the node(s) it became, for the parent: the first keeps `block` (its key is the
    /// parent's to keep).
    private func flush(_ block: UInt64, level: Int, allocator: BlockAllocator<NVM>) throws(ExtentMapError) -> [ExtentNode.Child] {
        guard var current = nodes[block] else { return [ExtentNode.Child(firstLogicalBlock: 0, block: block)] }
        if level > 0 {
            var index = current.children.count - 1
            var changed = false
            while index >= 0 {
                let child = current.children[index]
                if nodes[child.block] != nil {
                    var pieces = try flush(child.block, level: level - 1, allocator: allocator)
                    if pieces.count > 1 {
                        pieces[0].firstLogicalBlock = child.firstLogicalBlock
                        current.children.replaceSubrange(index ... index, with: pieces)
                        changed = true
                    }
                }
                index -= 1
            }
            if changed {
                nodes[block] = current
                dirty.insert(block)
            }
        }
        var result = [ExtentNode.Child(firstLogicalBlock: 0, block: block)]
        if current.entryCount > current.capacity {
            // Even pieces, each at most a block: a split leaves room on both sides.
            let count = current.entryCount
            let pieces = (count + current.capacity - 1) / current.capacity
            var parts: [Node] = []
            for piece in 0 ..< pieces {
                let range = count * piece / pieces ..< count * (piece + 1) / pieces
                parts.append(level == 0 ? Node(level: 0, extents: Array(current.extents[range]))
                                        : Node(level: level, children: Array(current.children[range])))
            }
            nodes[block] = parts[0]
            dirty.insert(block)
            for part in parts.dropFirst() {
                let first = level == 0 ? part.extents[0].logicalBlock : part.children[0].firstLogicalBlock
                result.append(ExtentNode.Child(firstLogicalBlock: first, block: try newNode(part, allocator: allocator)))
            }
        }
        for child in result where dirty.contains(child.block) { write(child.block) }
        return result
    }

    /// A node in a newly allocated block (packed at the low end of the tier, see the
    /// allocator), to be written by the flush.
    private func newNode(_ node: Node, allocator: BlockAllocator<NVM>) throws(ExtentMapError) -> UInt64 {
        let block: UInt64
        do {
            block = try allocator.allocate(1, in: transaction, packed: true)[0].lowerBound
        } catch {
            throw .noSpace("no NVM block for inode \(inode)'s extent tree: \(error)")
        }
        nodes[block] = node
        dirty.insert(block)
        fresh.insert(block)
        blockDelta += 1
        return block
    }

    private func write(_ block: UInt64) {
        let current = nodes[block]!
        let entries: ExtentNode.Entries = current.level == 0 ? .leaf(current.extents) : .inner(level: UInt16(current.level), current.children)
        let bytes = ExtentNode(inode: inode, entries: entries).encode(seed: seed)
        let offset = nvmData.dataOffset + block * UInt64(Format.blockBytes)
        // A node in place journals only the bytes that changed; a new one is written whole.
        if fresh.contains(block) { transaction.write(bytes, at: offset) } else { transaction.writeChanged(bytes, at: offset) }
        dirty.remove(block)
        fresh.remove(block)
    }

    private func freeRemoved(_ allocator: BlockAllocator<NVM>) throws(ExtentMapError) {
        let blocks = removed
        removed = []
        do {
            for block in blocks { try allocator.free(block ..< block + 1, in: transaction) }
        } catch {
            throw .damaged("\(error)")
        }
    }

    /// Every node block of the subtree at `block`.
    private func nodeBlocks(_ block: UInt64, _ level: Int) throws(ExtentMapError) -> [UInt64] {
        var blocks = [block]
        guard level > 0 else { return blocks }
        // Children of a node read into this map are known; others are read (fsck-grade checks).
        let current = try node(block, level: level, range: Self.everything)
        for child in current.children { blocks += try nodeBlocks(child.block, level - 1) }
        return blocks
    }

    // MARK: Extent arithmetic (one leaf, or the inline map)

    /// The index of the child whose range holds `logical` (child 0's reaches down to its
    /// parent's start, whatever its key).
    private static func child(holding logical: UInt64, in children: [ExtentNode.Child]) -> Int {
        var low = 0, high = children.count
        while low < high {
            let middle = (low + high) / 2
            if children[middle].firstLogicalBlock <= logical { low = middle + 1 } else { high = middle }
        }
        return max(low - 1, 0)
    }

    /// Child `index`'s range inside its parent's `range`.
    private static func range(ofChild index: Int, in children: [ExtentNode.Child], within range: Range<UInt64>) -> Range<UInt64> {
        let low = index == 0 ? range.lowerBound : children[index].firstLogicalBlock
        let high = index + 1 < children.count ? children[index + 1].firstLogicalBlock : range.upperBound
        return low ..< max(low, high)
    }

    private static func find(_ logical: UInt64, in extents: [Extent]) -> Extent? {
        var low = 0, high = extents.count
        while low < high {
            let middle = (low + high) / 2
            if extents[middle].logicalEnd <= logical { low = middle + 1 } else { high = middle }
        }
        guard low < extents.count, extents[low].logicalBlock <= logical else { return nil }
        return extents[low]
    }

    /// Whether `b` continues `a` (logically and physically, same tier and flags) so that the
    /// two may be one extent.
    private static func merges(_ a: Extent, _ b: Extent) -> Bool {
        a.tier == b.tier && a.flags == b.flags && a.flags.isDisjoint(with: [.compressed, .checksummed])
            && a.logicalEnd == b.logicalBlock && a.physicalBlock + UInt64(a.blockCount) == b.physicalBlock
            && UInt64(a.blockCount) + UInt64(b.blockCount) <= UInt64(UInt32.max)
    }

    /// Takes `range` out of sorted, disjoint `extents`; returns the physical blocks it held.
    private static func cut(_ range: Range<UInt64>, from extents: inout [Extent]) -> [FreedBlocks] {
        // The first extent ending after the range begins.
        var low = 0, high = extents.count
        while low < high {
            let middle = (low + high) / 2
            if extents[middle].logicalEnd <= range.lowerBound { low = middle + 1 } else { high = middle }
        }
        var end = low
        while end < extents.count, extents[end].logicalBlock < range.upperBound { end += 1 }
        guard low < end else { return [] }
        var kept: [Extent] = []
        var freed: [FreedBlocks] = []
        for extent in extents[low ..< end] {
            let start = extent.logicalBlock, stop = extent.logicalEnd
            let cutStart = max(start, range.lowerBound), cutEnd = min(stop, range.upperBound)
            // A compressed extent can only go whole; cutting it is the tiering layer's job
            // (decompress first). A split checksummed extent no longer has its checksum.
            precondition(!extent.flags.contains(.compressed) || (cutStart == start && cutEnd == stop),
                         "a compressed extent is never split")
            if start < cutStart {
                var left = extent
                left.blockCount = UInt32(cutStart - start)
                left.flags.remove(.checksummed)
                left.checksum = 0
                kept.append(left)
            }
            freed.append(FreedBlocks(tier: extent.tier, blocks: extent.physicalBlock + (cutStart - start) ..< extent.physicalBlock + (cutEnd - start)))
            if cutEnd < stop {
                var right = extent
                right.logicalBlock = cutEnd
                right.physicalBlock = extent.physicalBlock + (cutEnd - start)
                right.blockCount = UInt32(stop - cutEnd)
                right.flags.remove(.checksummed)
                right.checksum = 0
                kept.append(right)
            }
        }
        extents.replaceSubrange(low ..< end, with: kept)
        return freed
    }

    /// Inserts `extent` (over a range nothing maps) and merges it with its neighbours.
    private static func insert(_ extent: Extent, into extents: inout [Extent]) {
        var index = 0, high = extents.count
        while index < high {
            let middle = (index + high) / 2
            if extents[middle].logicalBlock < extent.logicalBlock { index = middle + 1 } else { high = middle }
        }
        extents.insert(extent, at: index)
        if index + 1 < extents.count, merges(extents[index], extents[index + 1]) {
            extents[index].blockCount += extents[index + 1].blockCount
            extents.remove(at: index + 1)
        }
        if index > 0, merges(extents[index - 1], extents[index]) {
            extents[index - 1].blockCount += extents[index].blockCount
            extents.remove(at: index)
        }
    }

    /// setUnwritten on one leaf's extents.
    private static func mark(_ range: Range<UInt64>, _ unwritten: Bool, in extents: inout [Extent]) {
        var result: [Extent] = []
        result.reserveCapacity(extents.count + 2)
        var changed = false
        for extent in extents {
            guard extent.tier == .nvm, !extent.flags.contains(.compressed),
                  extent.logicalBlock < range.upperBound, extent.logicalEnd > range.lowerBound,
                  extent.flags.contains(.unwritten) != unwritten else {
                result.append(extent)
                continue
            }
            changed = true
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
        guard changed else { return }
        var merged: [Extent] = []
        merged.reserveCapacity(result.count)
        for extent in result {
            if let last = merged.last, merges(last, extent) {
                merged[merged.count - 1].blockCount += extent.blockCount
            } else {
                merged.append(extent)
            }
        }
        extents = merged
    }
}
