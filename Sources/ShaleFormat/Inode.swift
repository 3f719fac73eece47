// An inode: 256 bytes in an inode chunk on NVM (docs/format.md "Inodes"). Inode numbers are
// 64-bit; slot `n % inodesPerChunk` of chunk `n / inodesPerChunk`. A slot whose `mode` is 0
// is free. Every inode names its own number and a generation, so a misdirected or stale
// write is detected, and is sealed with a seeded CRC32C.

public struct Timestamp: Equatable, Hashable, Sendable, Comparable {
    public var seconds: Int64
    public var nanoseconds: UInt32

    public init(seconds: Int64, nanoseconds: UInt32 = 0) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    public static func < (a: Timestamp, b: Timestamp) -> Bool {
        (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds)
    }
}

public struct Inode: Equatable, Sendable {
    public static let encodedBytes = 256
    static let crcOffset = 0
    /// Extents held in the inode itself before an extent tree is needed.
    public static let inlineExtentCapacity = 3
    /// Bytes of symlink target or tiny file data held in the inode itself.
    public static let inlineDataCapacity = inlineExtentCapacity * Extent.encodedBytes

    public struct Flags: OptionSet, Sendable, Equatable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// The extent area holds an extent-tree root (block, depth) instead of extents.
        public static let extentTree = Flags(rawValue: 1 << 0)
        /// The extent area holds the file's bytes (short symlink targets).
        public static let inlineData = Flags(rawValue: 1 << 1)
        public static let known: Flags = [.extentTree, .inlineData]
    }

    /// Where a file's blocks are described.
    public enum Mapping: Equatable, Sendable {
        case extents([Extent])
        case tree(rootBlock: UInt64, depth: UInt16, extentCount: UInt64)
        case inline([UInt8])
    }

    public var number: UInt64
    public var generation: UInt32
    /// File type and permission bits, as st_mode. 0 means a free slot.
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var linkCount: UInt32
    public var size: UInt64
    /// Blocks allocated on any tier (st_blocks is this × 8).
    public var allocatedBlocks: UInt64
    public var atime: Timestamp
    public var mtime: Timestamp
    public var ctime: Timestamp
    public var btime: Timestamp
    public var rdev: UInt64
    /// The parent directory when the inode was created (a hint for fsck and recovery).
    public var parentHint: UInt64
    /// NVM data-area block holding extended attributes; 0 for none.
    public var xattrBlock: UInt64
    /// Tier placement policy (0 = inherit; otherwise a Tier raw value to pin to).
    public var tierPolicy: UInt8
    public var mapping: Mapping

    public init(number: UInt64, generation: UInt32 = 1, mode: UInt32, uid: UInt32 = 0, gid: UInt32 = 0,
                linkCount: UInt32, size: UInt64 = 0, allocatedBlocks: UInt64 = 0, time: Timestamp,
                rdev: UInt64 = 0, parentHint: UInt64 = 0, xattrBlock: UInt64 = 0, tierPolicy: UInt8 = 0,
                mapping: Mapping = .extents([])) {
        self.number = number
        self.generation = generation
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.linkCount = linkCount
        self.size = size
        self.allocatedBlocks = allocatedBlocks
        atime = time
        mtime = time
        ctime = time
        btime = time
        self.rdev = rdev
        self.parentHint = parentHint
        self.xattrBlock = xattrBlock
        self.tierPolicy = tierPolicy
        self.mapping = mapping
    }

    public static let typeMask: UInt32 = 0o170000
    public static let typeDirectory: UInt32 = 0o040000
    public static let typeRegular: UInt32 = 0o100000
    public static let typeSymlink: UInt32 = 0o120000

    public var isDirectory: Bool { mode & Self.typeMask == Self.typeDirectory }

    public func encode(seed: UInt32) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.encodedBytes)
        bytes.withUnsafeMutableBytes { encode(into: $0, seed: seed) }
        return bytes
    }

    public func encode(into buffer: UnsafeMutableRawBufferPointer, seed: UInt32) {
        precondition(buffer.count >= Self.encodedBytes)
        let slot = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< Self.encodedBytes])
        slot.initializeMemory(as: UInt8.self, repeating: 0)
        var writer = FieldWriter(slot)
        writer.put(UInt32(0))
        writer.put(mode)
        writer.put(number)
        writer.put(generation)
        var flags: Flags = []
        var extentCount: UInt32 = 0
        switch mapping {
        case let .extents(extents):
            precondition(extents.count <= Self.inlineExtentCapacity)
            extentCount = UInt32(extents.count)
        case .tree: flags.insert(.extentTree)
        case let .inline(bytes):
            precondition(bytes.count <= Self.inlineDataCapacity)
            flags.insert(.inlineData)
            extentCount = UInt32(bytes.count)
        }
        writer.put(flags.rawValue)
        writer.put(uid)
        writer.put(gid)
        writer.put(linkCount)
        writer.put(extentCount)
        writer.put(size)
        writer.put(allocatedBlocks)
        for time in [atime, mtime, ctime, btime] {
            writer.put(time.seconds)
            writer.put(time.nanoseconds)
            writer.put(UInt32(0))
        }
        writer.put(rdev)
        writer.put(parentHint)
        writer.put(xattrBlock)
        assert(writer.offset == 144)
        switch mapping {
        case let .extents(extents):
            for extent in extents { extent.encode(into: &writer) }
        case let .tree(rootBlock, depth, count):
            writer.put(rootBlock)
            writer.put(count)
            writer.put(depth)
        case let .inline(bytes):
            writer.put(bytes: bytes)
        }
        writer.seek(240)
        writer.put(tierPolicy)
        StructureChecksum.seal(slot, crcOffset: Self.crcOffset, seed: seed)
    }

    /// Decodes a slot. A free slot (all zeros) is nil; anything else must verify and name
    /// `expectedNumber`.
    public static func decode(_ buffer: UnsafeRawBufferPointer, seed: UInt32, expectedNumber: UInt64) throws(FormatError) -> Inode? {
        let name = "inode \(expectedNumber)"
        try FormatError.need(name, encodedBytes, buffer)
        let slot = UnsafeRawBufferPointer(rebasing: buffer[0 ..< encodedBytes])
        if slot.allSatisfy({ $0 == 0 }) { return nil }
        try StructureChecksum.verify(slot, crcOffset: crcOffset, seed: seed, structure: name)
        var reader = FieldReader(slot, at: 4)
        let mode: UInt32 = reader.get()
        let number: UInt64 = reader.get()
        guard number == expectedNumber else {
            throw .invalidField(structure: name, field: "number", reason: "slot holds inode \(number)")
        }
        guard mode != 0 else { throw .invalidField(structure: name, field: "mode", reason: "0 in a used slot") }
        let generation: UInt32 = reader.get()
        let flags = Flags(rawValue: reader.get())
        guard flags.isSubset(of: .known), !(flags.contains(.extentTree) && flags.contains(.inlineData)) else {
            throw .invalidField(structure: name, field: "flags", reason: "\(flags.rawValue)")
        }
        var inode = Inode(number: number, generation: generation, mode: mode, linkCount: 0,
                          time: Timestamp(seconds: 0))
        inode.uid = reader.get()
        inode.gid = reader.get()
        inode.linkCount = reader.get()
        let extentCount: UInt32 = reader.get()
        inode.size = reader.get()
        inode.allocatedBlocks = reader.get()
        var times: [Timestamp] = []
        for _ in 0 ..< 4 {
            let seconds: Int64 = reader.get()
            let nanoseconds: UInt32 = reader.get()
            reader.skip(4)
            guard nanoseconds < 1_000_000_000 else {
                throw .invalidField(structure: name, field: "timestamp", reason: "\(nanoseconds) ns")
            }
            times.append(Timestamp(seconds: seconds, nanoseconds: nanoseconds))
        }
        (inode.atime, inode.mtime, inode.ctime, inode.btime) = (times[0], times[1], times[2], times[3])
        inode.rdev = reader.get()
        inode.parentHint = reader.get()
        inode.xattrBlock = reader.get()
        if flags.contains(.extentTree) {
            guard extentCount == 0 else {
                throw .invalidField(structure: name, field: "extent count", reason: "\(extentCount) with an extent tree")
            }
            let root: UInt64 = reader.get()
            let count: UInt64 = reader.get()
            let depth: UInt16 = reader.get()
            inode.mapping = .tree(rootBlock: root, depth: depth, extentCount: count)
        } else if flags.contains(.inlineData) {
            guard extentCount <= UInt32(inlineDataCapacity) else {
                throw .invalidField(structure: name, field: "inline data", reason: "\(extentCount) bytes")
            }
            inode.mapping = .inline(reader.bytes(Int(extentCount)))
        } else {
            guard extentCount <= UInt32(inlineExtentCapacity) else {
                throw .invalidField(structure: name, field: "extent count", reason: "\(extentCount)")
            }
            var extents: [Extent] = []
            for _ in 0 ..< extentCount { extents.append(try Extent.decode(from: &reader, structure: name)) }
            for (a, b) in zip(extents, extents.dropFirst()) where a.logicalEnd > b.logicalBlock {
                throw .invalidField(structure: name, field: "extents", reason: "overlap or out of order")
            }
            inode.mapping = .extents(extents)
        }
        reader.seek(240)
        inode.tierPolicy = reader.get()
        guard inode.tierPolicy == 0 || Tier(rawValue: inode.tierPolicy) != nil else {
            throw .invalidField(structure: name, field: "tier policy", reason: "\(inode.tierPolicy)")
        }
        return inode
    }
}
