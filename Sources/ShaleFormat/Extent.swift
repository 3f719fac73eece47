// Extents: one run of a file's blocks on one tier (docs/format.md "Extents"). 32 bytes.
// Files up to 2^64 - 1 bytes: logical block numbers are 64-bit, and one extent covers up to
// 2^32 - 1 blocks (16 TiB). The first three extents of a file sit in its inode; more go to
// an extent tree of ExtentNode blocks on NVM.

public struct Extent: Equatable, Sendable {
    public static let encodedBytes = 32

    public struct Flags: OptionSet, Sendable, Equatable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// Allocated (fallocate) but never written: reads as zeros.
        public static let unwritten = Flags(rawValue: 1 << 0)
        /// Stored compressed with zstd in `storedBytes` bytes.
        public static let compressed = Flags(rawValue: 1 << 1)
        /// `checksum` holds the CRC32C of the stored bytes.
        public static let checksummed = Flags(rawValue: 1 << 2)
        public static let known: Flags = [.unwritten, .compressed, .checksummed]
    }

    /// First block of the file this extent covers (byte offset / 4096).
    public var logicalBlock: UInt64
    /// First block on the tier's data area.
    public var physicalBlock: UInt64
    public var blockCount: UInt32
    public var tier: Tier
    public var flags: Flags
    public var checksum: UInt32
    /// Bytes stored on the tier when compressed; 0 otherwise.
    public var storedBytes: UInt32

    public init(logicalBlock: UInt64, physicalBlock: UInt64, blockCount: UInt32, tier: Tier,
                flags: Flags = [], checksum: UInt32 = 0, storedBytes: UInt32 = 0) {
        self.logicalBlock = logicalBlock
        self.physicalBlock = physicalBlock
        self.blockCount = blockCount
        self.tier = tier
        self.flags = flags
        self.checksum = checksum
        self.storedBytes = storedBytes
    }

    public var logicalEnd: UInt64 { logicalBlock + UInt64(blockCount) }

    public func encode(into writer: inout FieldWriter) {
        writer.put(logicalBlock)
        writer.put(physicalBlock)
        writer.put(blockCount)
        writer.put(tier.rawValue)
        writer.put(flags.rawValue)
        writer.put(UInt16(0))
        writer.put(checksum)
        writer.put(storedBytes)
    }

    public static func decode(from reader: inout FieldReader, structure: String) throws(FormatError) -> Extent {
        let logical: UInt64 = reader.get()
        let physical: UInt64 = reader.get()
        let count: UInt32 = reader.get()
        let rawTier: UInt8 = reader.get()
        let flags = Flags(rawValue: reader.get())
        reader.skip(2)
        let extent = Extent(logicalBlock: logical, physicalBlock: physical, blockCount: count,
                            tier: Tier(rawValue: rawTier) ?? .nvm, flags: flags,
                            checksum: reader.get(), storedBytes: reader.get())
        guard Tier(rawValue: rawTier) != nil else {
            throw .invalidField(structure: structure, field: "extent tier", reason: "unknown tier \(rawTier)")
        }
        guard count > 0 else { throw .invalidField(structure: structure, field: "extent", reason: "zero blocks") }
        guard flags.isSubset(of: .known) else {
            throw .invalidField(structure: structure, field: "extent flags", reason: "unknown bits \(flags.rawValue)")
        }
        let (_, overflowLogical) = logical.addingReportingOverflow(UInt64(count))
        let (_, overflowPhysical) = physical.addingReportingOverflow(UInt64(count))
        guard !overflowLogical, !overflowPhysical else {
            throw .invalidField(structure: structure, field: "extent", reason: "block range overflows")
        }
        return extent
    }
}

/// A block of an inode's extent tree (docs/format.md "Extent tree"): a leaf holds extents
/// sorted by logical block; an inner node holds (first logical block, child block) pairs.
public struct ExtentNode: Equatable, Sendable {
    public static let encodedBytes = Format.blockBytes
    public static let magic: UInt32 = 0x5458_4553  // "SEXT"
    static let headerBytes = 32
    public static let leafCapacity = (encodedBytes - headerBytes) / Extent.encodedBytes
    public static let innerCapacity = (encodedBytes - headerBytes) / 16

    public struct Child: Equatable, Sendable {
        public var firstLogicalBlock: UInt64
        /// NVM data-area block of the child node.
        public var block: UInt64
        public init(firstLogicalBlock: UInt64, block: UInt64) {
            self.firstLogicalBlock = firstLogicalBlock
            self.block = block
        }
    }

    public enum Entries: Equatable, Sendable {
        case leaf([Extent])
        case inner(level: UInt16, [Child])
    }

    /// The inode the node belongs to (a node found under another inode is misdirected).
    public var inode: UInt64
    public var entries: Entries

    public init(inode: UInt64, entries: Entries) {
        self.inode = inode
        self.entries = entries
    }

    public func encode(seed: UInt32) -> [UInt8] {
        sealedBlock(bytes: Self.encodedBytes, magic: Self.magic, seed: seed) { writer in
            writer.put(inode)
            switch entries {
            case let .leaf(extents):
                precondition(extents.count <= Self.leafCapacity)
                writer.put(UInt16(0))
                writer.put(UInt16(extents.count))
                writer.seek(Self.headerBytes)
                for extent in extents { extent.encode(into: &writer) }
            case let .inner(level, children):
                precondition(level > 0 && children.count <= Self.innerCapacity)
                writer.put(level)
                writer.put(UInt16(children.count))
                writer.seek(Self.headerBytes)
                for child in children {
                    writer.put(child.firstLogicalBlock)
                    writer.put(child.block)
                }
        }
        }
    }

    /// `verifyChecksum: false` for bytes known good (a node that verified since it last changed).
    public static func decode(_ buffer: UnsafeRawBufferPointer, seed: UInt32, expectedInode: UInt64,
                              verifyChecksum: Bool = true) throws(FormatError) -> ExtentNode {
        let name = "extent node"
        var reader = try openSealedBlock(buffer, bytes: encodedBytes, magic: Self.magic, seed: seed, structure: name,
                                         verifyChecksum: verifyChecksum)
        let inode: UInt64 = reader.get()
        guard inode == expectedInode else {
            throw .invalidField(structure: name, field: "inode", reason: "belongs to inode \(inode), found under \(expectedInode)")
        }
        let level: UInt16 = reader.get()
        let count = Int(reader.get(UInt16.self))
        reader.seek(headerBytes)
        if level == 0 {
            guard count <= leafCapacity else { throw .invalidField(structure: name, field: "count", reason: "\(count)") }
            var extents: [Extent] = []
            for _ in 0 ..< count { extents.append(try Extent.decode(from: &reader, structure: name)) }
            for (a, b) in zip(extents, extents.dropFirst()) where a.logicalEnd > b.logicalBlock {
                throw .invalidField(structure: name, field: "extents", reason: "overlap or out of order at block \(b.logicalBlock)")
            }
            return ExtentNode(inode: inode, entries: .leaf(extents))
        }
        guard count <= innerCapacity else { throw .invalidField(structure: name, field: "count", reason: "\(count)") }
        var children: [Child] = []
        for _ in 0 ..< count { children.append(Child(firstLogicalBlock: reader.get(), block: reader.get())) }
        for (a, b) in zip(children, children.dropFirst()) where a.firstLogicalBlock >= b.firstLogicalBlock {
            throw .invalidField(structure: name, field: "children", reason: "out of order")
        }
        return ExtentNode(inode: inode, entries: .inner(level: level, children))
    }
}
