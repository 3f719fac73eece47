// Extended attributes (docs/format.md "Extended attributes"). An inode's attributes are one
// serialized *set* (entries sorted by name, each an 8-byte header, the name, the value),
// spread over 1 … 64 NVM data-area blocks. `Inode.xattrBlock` names the *head* block, whose
// block table lists every block of the set in order (itself first); each block carries the
// set's identity (inode, its own block number, its index, the block count, entry count and
// byte count) and a seeded CRC32C, so a torn, stale or misdirected block never verifies.
//
// A set is never changed in place: a writer encodes the whole new set into fresh blocks,
// persists them, then switches `xattrBlock` in a metadata transaction and frees the old
// blocks (copy-on-write). So a set on media is always whole, and 64 blocks (~251 KiB of
// set bytes) bound what one inode may hold: three values of Linux's largest size fit.

/// One extended attribute: a name (1 … 255 bytes, no NUL, its namespace prefix included)
/// and a value (0 … 65536 bytes).
public struct ExtendedAttribute: Equatable, Sendable {
    public var name: [UInt8]
    public var value: [UInt8]

    public init(name: [UInt8], value: [UInt8]) {
        self.name = name
        self.value = value
    }

    /// Linux's XATTR_NAME_MAX and XATTR_SIZE_MAX.
    public static let nameBytesMax = 255
    public static let valueBytesMax = 65536

    /// Bytes the attribute takes in a serialized set.
    public var encodedBytes: Int { XattrSet.entryHeaderBytes + name.count + value.count }

    /// Nil when `name` may name an attribute, otherwise why not.
    public static func nameProblem(_ name: [UInt8]) -> String? {
        if name.isEmpty { return "empty name" }
        if name.count > nameBytesMax { return "name of \(name.count) bytes exceeds \(nameBytesMax)" }
        if name.contains(0) { return "name contains NUL" }
        return nil
    }
}

/// One block of an inode's extended-attribute set.
public struct XattrBlock: Equatable, Sendable {
    public static let encodedBytes = Format.blockBytes
    public static let magic: UInt32 = 0x5441_5853  // "SXAT"
    static let headerBytes = 64
    /// Blocks one set may take (the head's table has a slot for each).
    public static let blocksMax = 64
    static let tableOffset = headerBytes
    static let headDataOffset = tableOffset + 8 * blocksMax
    /// Set bytes the head holds after its table, and every other block after its header.
    public static let headDataCapacity = encodedBytes - headDataOffset
    public static let dataCapacity = encodedBytes - headerBytes
    /// The largest serialized set: 3520 + 63 × 4032 = 257,536 bytes.
    public static let setBytesMax = headDataCapacity + (blocksMax - 1) * dataCapacity

    /// The inode the set belongs to.
    public var inode: UInt64
    /// This block's own NVM data-area block number (a misdirected write does not verify).
    public var block: UInt64
    /// Position in the set: 0 for the head.
    public var index: UInt16
    /// Blocks in the set (the same in every block of it).
    public var blockCount: UInt16
    /// Attributes in the set.
    public var entryCount: UInt32
    /// Serialized bytes of the whole set.
    public var setBytes: UInt32
    /// The head's block table: the set's `blockCount` blocks in order, the head first. Empty
    /// in every other block.
    public var table: [UInt64]
    /// This block's share of the set's bytes (`share(index:setBytes:)`).
    public var data: [UInt8]

    public init(inode: UInt64, block: UInt64, index: UInt16, blockCount: UInt16, entryCount: UInt32, setBytes: UInt32,
                table: [UInt64], data: [UInt8]) {
        self.inode = inode
        self.block = block
        self.index = index
        self.blockCount = blockCount
        self.entryCount = entryCount
        self.setBytes = setBytes
        self.table = table
        self.data = data
    }

    /// Blocks a set of `setBytes` serialized bytes takes (at least 1).
    public static func blocksNeeded(setBytes: Int) -> Int {
        setBytes <= headDataCapacity ? 1 : 1 + (setBytes - headDataCapacity + dataCapacity - 1) / dataCapacity
    }

    /// The set bytes block `index` holds, for a set of `setBytes` bytes.
    public static func share(index: Int, setBytes: Int) -> Range<Int> {
        let start = index == 0 ? 0 : headDataCapacity + (index - 1) * dataCapacity
        let end = index == 0 ? headDataCapacity : start + dataCapacity
        return min(start, setBytes) ..< min(end, setBytes)
    }

    public func encode(seed: UInt32) -> [UInt8] {
        precondition(Int(blockCount) <= Self.blocksMax && index < blockCount)
        precondition(data.count == Self.share(index: Int(index), setBytes: Int(setBytes)).count)
        precondition(index == 0 ? table.count == Int(blockCount) && table.first == block : table.isEmpty)
        return sealedBlock(bytes: Self.encodedBytes, magic: Self.magic, seed: seed) { writer in
            writer.put(inode)
            writer.put(block)
            writer.put(index)
            writer.put(blockCount)
            writer.put(entryCount)
            writer.put(setBytes)
            writer.seek(Self.tableOffset)
            for entry in table { writer.put(entry) }
            writer.seek(index == 0 ? Self.headDataOffset : Self.headerBytes)
            writer.put(bytes: data)
        }
    }

    /// Decodes the block found at NVM data-area block `expectedBlock` as block
    /// `expectedIndex` of `expectedInode`'s set. Checks everything one block can show; the
    /// set's cross-block rules are `XattrSet.decode`'s.
    public static func decode(_ buffer: UnsafeRawBufferPointer, seed: UInt32, expectedInode: UInt64, expectedBlock: UInt64,
                              expectedIndex: Int) throws(FormatError) -> XattrBlock {
        let name = "extended attribute block \(expectedIndex) of inode \(expectedInode)"
        var reader = try openSealedBlock(buffer, bytes: encodedBytes, magic: Self.magic, seed: seed, structure: name)
        let inode: UInt64 = reader.get()
        let block: UInt64 = reader.get()
        let index: UInt16 = reader.get()
        let blockCount: UInt16 = reader.get()
        let entryCount: UInt32 = reader.get()
        let setBytes: UInt32 = reader.get()
        func invalid(_ field: String, _ reason: String) -> FormatError {
            .invalidField(structure: name, field: field, reason: reason)
        }
        guard inode == expectedInode, block == expectedBlock, Int(index) == expectedIndex else {
            throw invalid("identity", "holds block \(index) of inode \(inode) at block \(block), found at block \(expectedBlock)")
        }
        guard blockCount >= 1, Int(blockCount) <= blocksMax, index < blockCount else {
            throw invalid("block count", "\(blockCount)")
        }
        guard setBytes > UInt32(XattrSet.entryHeaderBytes), Int(setBytes) <= setBytesMax,
              blocksNeeded(setBytes: Int(setBytes)) == Int(blockCount) else {
            throw invalid("set bytes", "\(setBytes) in \(blockCount) blocks")
        }
        // Every entry takes at least its header and a 1-byte name.
        guard entryCount >= 1, UInt64(entryCount) * UInt64(XattrSet.entryHeaderBytes + 1) <= UInt64(setBytes) else {
            throw invalid("entry count", "\(entryCount) in \(setBytes) bytes")
        }
        guard buffer[reader.offset ..< headerBytes].allSatisfy({ $0 == 0 }) else { throw invalid("reserved", "not zero") }
        var table: [UInt64] = []
        let dataOffset: Int
        if index == 0 {
            reader.seek(tableOffset)
            for slot in 0 ..< blocksMax {
                let entry: UInt64 = reader.get()
                if slot < Int(blockCount) {
                    guard entry != 0, !table.contains(entry) else { throw invalid("block table", "slot \(slot) holds \(entry)") }
                    table.append(entry)
                } else if entry != 0 {
                    throw invalid("block table", "slot \(slot) beyond the block count holds \(entry)")
                }
            }
            guard table[0] == block else { throw invalid("block table", "starts with \(table[0]), not the head itself") }
            dataOffset = headDataOffset
        } else {
            dataOffset = headerBytes
        }
        let count = share(index: Int(index), setBytes: Int(setBytes)).count
        guard count > 0 else { throw invalid("index", "block \(index) holds none of the set's \(setBytes) bytes") }
        reader.seek(dataOffset)
        let data = reader.bytes(count)
        guard buffer[dataOffset + count ..< encodedBytes].allSatisfy({ $0 == 0 }) else {
            throw invalid("padding", "bytes after the set's share are not zero")
        }
        return XattrBlock(inode: inode, block: block, index: index, blockCount: blockCount, entryCount: entryCount,
                          setBytes: setBytes, table: table, data: data)
    }
}

/// The serialized set of an inode's extended attributes, over its XattrBlocks.
public enum XattrSet {
    /// nameLength (2), reserved (2), valueLength (4).
    public static let entryHeaderBytes = 8

    /// Serialized bytes of `attributes`.
    public static func encodedBytes(_ attributes: [ExtendedAttribute]) -> Int {
        attributes.reduce(0) { $0 + $1.encodedBytes }
    }

    /// Whether names are strictly increasing (bytewise), as a set stores them.
    public static func isSorted(_ attributes: [ExtendedAttribute]) -> Bool {
        zip(attributes, attributes.dropFirst()).allSatisfy { $0.name.lexicographicallyPrecedes($1.name) }
    }

    /// The blocks of a set, ready to write: `blocks` are the NVM data-area blocks it goes to,
    /// head first, `XattrBlock.blocksNeeded` of them. The attributes must be sorted, valid and
    /// fit (`encodedBytes` ≤ `XattrBlock.setBytesMax`); an empty set has no blocks.
    public static func encode(_ attributes: [ExtendedAttribute], inode: UInt64, blocks: [UInt64], seed: UInt32) -> [[UInt8]] {
        precondition(!attributes.isEmpty && isSorted(attributes))
        var bytes: [UInt8] = []
        bytes.reserveCapacity(encodedBytes(attributes))
        for attribute in attributes {
            precondition(ExtendedAttribute.nameProblem(attribute.name) == nil && attribute.value.count <= ExtendedAttribute.valueBytesMax)
            let header = UInt64(attribute.name.count) | UInt64(attribute.value.count) << 32
            withUnsafeBytes(of: header.littleEndian) { bytes += $0 }
            bytes += attribute.name
            bytes += attribute.value
        }
        precondition(bytes.count <= XattrBlock.setBytesMax && blocks.count == XattrBlock.blocksNeeded(setBytes: bytes.count))
        return blocks.indices.map { index in
            XattrBlock(inode: inode, block: blocks[index], index: UInt16(index), blockCount: UInt16(blocks.count),
                       entryCount: UInt32(attributes.count), setBytes: UInt32(bytes.count), table: index == 0 ? blocks : [],
                       data: Array(bytes[XattrBlock.share(index: index, setBytes: bytes.count)]))
            .encode(seed: seed)
        }
    }

    /// The attributes of a set from its decoded blocks, head first: the blocks must agree on
    /// the set (inode, counts), stand where the head's table says, and their bytes must be
    /// exactly `entryCount` valid entries with strictly increasing names.
    public static func decode(_ blocks: [XattrBlock]) throws(FormatError) -> [ExtendedAttribute] {
        guard let head = blocks.first else { throw .truncated(structure: "extended attributes", needed: 1, available: 0) }
        let name = "extended attributes of inode \(head.inode)"
        func invalid(_ field: String, _ reason: String) -> FormatError {
            .invalidField(structure: name, field: field, reason: reason)
        }
        guard blocks.count == Int(head.blockCount) else { throw invalid("blocks", "\(blocks.count) of \(head.blockCount)") }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(head.setBytes))
        for (index, block) in blocks.enumerated() {
            guard Int(block.index) == index, block.inode == head.inode, block.blockCount == head.blockCount,
                  block.entryCount == head.entryCount, block.setBytes == head.setBytes, block.block == head.table[index] else {
                throw invalid("block \(index)", "does not belong to the set its head describes")
            }
            bytes += block.data
        }
        guard bytes.count == Int(head.setBytes) else { throw invalid("set bytes", "\(bytes.count), the head says \(head.setBytes)") }
        var attributes: [ExtendedAttribute] = []
        var offset = 0
        while offset < bytes.count {
            guard bytes.count - offset >= entryHeaderBytes else { throw invalid("entry", "header cut at byte \(offset)") }
            let nameBytes = Int(bytes[offset]) | Int(bytes[offset + 1]) << 8
            let reserved = Int(bytes[offset + 2]) | Int(bytes[offset + 3]) << 8
            var valueBytes = 0
            for shift in 0 ..< 4 { valueBytes |= Int(bytes[offset + 4 + shift]) << (8 * shift) }
            guard reserved == 0 else { throw invalid("entry", "reserved bytes at \(offset) are not zero") }
            guard valueBytes <= ExtendedAttribute.valueBytesMax else { throw invalid("entry", "value of \(valueBytes) bytes at \(offset)") }
            let start = offset + entryHeaderBytes
            guard nameBytes <= bytes.count - start, valueBytes <= bytes.count - start - nameBytes else {
                throw invalid("entry", "runs past the set at \(offset)")
            }
            let attribute = ExtendedAttribute(name: Array(bytes[start ..< start + nameBytes]),
                                              value: Array(bytes[start + nameBytes ..< start + nameBytes + valueBytes]))
            if let problem = ExtendedAttribute.nameProblem(attribute.name) { throw invalid("entry", "at \(offset): \(problem)") }
            if let last = attributes.last, !last.name.lexicographicallyPrecedes(attribute.name) {
                throw invalid("entry", "names out of order or repeated at \(offset)")
            }
            attributes.append(attribute)
            offset = start + nameBytes + valueBytes
        }
        guard attributes.count == Int(head.entryCount) else {
            throw invalid("entry count", "\(attributes.count) entries, the blocks say \(head.entryCount)")
        }
        return attributes
    }
}
