// Directories (docs/format.md "Directories"). A directory is a file of 4096-byte directory
// blocks. A small directory is one leaf block at logical block 0. A large one is an
// extendible hash: logical block 0 becomes the index root (global depth, counts), the
// bucket pointer table occupies logical blocks from `DirectoryBlock.tableBase` (512 pointers
// per block), and each bucket is a leaf block with its own local depth. Lookup is one hash,
// one table read and one bucket read, whatever the size of the directory; a bucket whose
// entries all share a hash prefix chains overflow blocks. The hash is keyed (SipHash-2-4 with
// a secret per-volume key), so no one can choose names that collide.
//
// Names are 1 to 255 bytes, any byte but '/' and NUL. Entries carry their hash, so splits
// never rehash names.

#if canImport(Glibc)
import Glibc
#endif

public struct DirectoryEntry: Equatable, Sendable {
    public static let fixedBytes = 14
    public static let bytesMax = 272

    public var inode: UInt64
    public var hash: UInt32
    /// The file type as in dirent's d_type (DT_REG = 8, DT_DIR = 4, DT_LNK = 10, ...).
    public var type: UInt8
    public var name: [UInt8]

    public init(inode: UInt64, hash: UInt32, type: UInt8, name: [UInt8]) {
        self.inode = inode
        self.hash = hash
        self.type = type
        self.name = name
    }

    /// Bytes the entry occupies in a block (8-byte aligned).
    public var encodedBytes: Int { Self.encodedBytes(nameBytes: name.count) }

    public static func encodedBytes(nameBytes: Int) -> Int { (fixedBytes + nameBytes + 7) / 8 * 8 }

    /// Nil when `name` is a legal directory-entry name, otherwise why not.
    public static func nameProblem(_ name: [UInt8]) -> String? {
        if name.isEmpty { return "empty name" }
        if name.count > Format.nameBytesMax { return "name of \(name.count) bytes exceeds \(Format.nameBytesMax)" }
        // One plain pass (every entry of every directory block read is checked).
        let forbidden = name.withUnsafeBufferPointer { bytes in
            var index = 0
            while index < bytes.count {
                if bytes[index] == 0 || bytes[index] == UInt8(ascii: "/") { return true }
                index += 1
            }
            return false
        }
        if forbidden { return "name contains NUL or '/'" }
        if name.count <= 2 && name.allSatisfy({ $0 == UInt8(ascii: ".") }) { return "'.' and '..' are not stored" }
        return nil
    }

    /// The hash of a name in a directory: SipHash-2-4 under the volume's directory hash key
    /// with the directory's inode number mixed into it, truncated to 32 bits (DirectoryHash.swift).
    public static func hash(name: [UInt8], directory: UInt64, key: DirectoryHashKey) -> UInt32 {
        hash(fullHash: fullHash(name: name, directory: directory, key: key))
    }

    /// The whole 64-bit SipHash the name hash is folded from. KernFS orders a directory
    /// listing by it (the stored 32-bit hash first, then more of these bits), so that
    /// readdir positions survive 32-bit collisions.
    public static func fullHash(name: [UInt8], directory: UInt64, key: DirectoryHashKey) -> UInt64 {
        name.withUnsafeBytes { SipHash.hash24(k0: key.k0 ^ directory, k1: key.k1, $0) }
    }

    /// The stored 32-bit hash of a full hash: low half XOR high half.
    public static func hash(fullHash full: UInt64) -> UInt32 {
        UInt32(truncatingIfNeeded: full ^ (full >> 32))
    }
}

public struct DirectoryBlock: Equatable, Sendable {
    public static let encodedBytes = Format.blockBytes
    public static let magic: UInt32 = 0x5249_4453  // "SDIR"
    public static let headerBytes = 64
    public static let entryAreaBytes = encodedBytes - headerBytes
    /// First logical block of the bucket pointer table of a hashed directory.
    public static let tableBase: UInt64 = 1 << 40
    public static let pointersPerTableBlock = encodedBytes / 8

    /// What a block holds.
    public enum Content: Equatable, Sendable {
        /// Entries: a small directory's only block, a bucket, or an overflow block.
        case leaf(localDepth: UInt8, hashPrefix: UInt32, overflowNext: UInt64, entries: [DirectoryEntry])
        /// The root of a hashed directory.
        case indexRoot(globalDepth: UInt8, entryCount: UInt64, bucketCount: UInt64)
    }

    public var directory: UInt64
    public var logicalBlock: UInt64
    public var content: Content

    public init(directory: UInt64, logicalBlock: UInt64, content: Content) {
        self.directory = directory
        self.logicalBlock = logicalBlock
        self.content = content
    }

    /// Bytes of entry area a set of entries uses.
    public static func bytesUsed(_ entries: [DirectoryEntry]) -> Int {
        entries.reduce(0) { $0 + $1.encodedBytes }
    }

    public func encode(seed: UInt32) -> [UInt8] {
        sealedBlock(bytes: Self.encodedBytes, magic: Self.magic, seed: seed) { writer in
            writer.put(directory)
            writer.put(logicalBlock)
            switch content {
            case let .leaf(localDepth, hashPrefix, overflowNext, entries):
                precondition(Self.bytesUsed(entries) <= Self.entryAreaBytes, "directory block overfull")
                writer.put(UInt8(0))
                writer.put(localDepth)
                writer.put(UInt16(entries.count))
                writer.put(hashPrefix)
                writer.put(overflowNext)
                writer.seek(Self.headerBytes)
                for entry in entries {
                    let start = writer.offset
                    writer.put(entry.inode)
                    writer.put(entry.hash)
                    writer.put(entry.type)
                    writer.put(UInt8(entry.name.count))
                    writer.put(bytes: entry.name)
                    writer.seek(start + entry.encodedBytes)
                }
            case let .indexRoot(globalDepth, entryCount, bucketCount):
                writer.put(UInt8(1))
                writer.seek(Self.headerBytes)
                writer.put(globalDepth)
                writer.skip(7)
                writer.put(entryCount)
                writer.put(bucketCount)
        }
        }
    }

    // MARK: Reading and appending in place
    //
    // Lookups and inserts touch one entry of a block of up to ~250: these read the verified
    // header and walk the entries where they lie, without decoding the others (`decode` checks
    // every name; these check bounds and inode numbers, and the name of what they return).

    /// Header fields offsets (see `encode`).
    static let kindOffset = 24, localDepthOffset = 25, countOffset = 26, prefixOffset = 28, overflowOffset = 32
    static let globalDepthOffset = headerBytes, rootEntryCountOffset = headerBytes + 8, bucketCountOffset = headerBytes + 16

    /// A verified block's header, read in place.
    public struct Header: Equatable, Sendable {
        public var isIndexRoot: Bool
        /// Leaf: local depth, hash prefix, overflow link and the number of entries.
        public var localDepth: UInt8
        public var hashPrefix: UInt32
        public var overflowNext: UInt64
        public var entryCount: Int
        /// Index root: global depth, entries of the directory, buckets.
        public var globalDepth: UInt8
        public var directoryEntryCount: UInt64
        public var bucketCount: UInt64
    }

    /// Checks magic, checksum, identity and kind (as `decode` does) and reads the header.
    /// `verifyChecksum: false` for bytes known good (a block that verified since it last
    /// changed, or a writer's own image not resealed yet).
    public static func header(_ buffer: UnsafeRawBufferPointer, seed: UInt32, expectedDirectory: UInt64,
                              expectedLogicalBlock: UInt64, verifyChecksum: Bool = true) throws(FormatError) -> Header {
        func name() -> String { "directory \(expectedDirectory) block \(expectedLogicalBlock)" }
        guard buffer.count >= encodedBytes else { throw .truncated(structure: name(), needed: encodedBytes, available: buffer.count) }
        let block = UnsafeRawBufferPointer(rebasing: buffer[0 ..< encodedBytes])
        func word<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T { T(littleEndian: block.loadUnaligned(fromByteOffset: offset, as: T.self)) }
        let found = word(0, UInt32.self)
        guard found == magic else { throw .badMagic(structure: name(), found: withUnsafeBytes(of: found.littleEndian) { Array($0) }) }
        if verifyChecksum {
            let stored = word(4, UInt32.self), computed = StructureChecksum.compute(block, crcOffset: 4, seed: seed)
            guard stored == computed else { throw .checksumMismatch(structure: name(), stored: stored, computed: computed) }
        }
        let directory = word(8, UInt64.self), logical = word(16, UInt64.self)
        guard directory == expectedDirectory, logical == expectedLogicalBlock else {
            throw .invalidField(structure: name(), field: "identity", reason: "holds directory \(directory) block \(logical)")
        }
        switch block[kindOffset] {
        case 0:
            let depth = block[localDepthOffset]
            guard depth <= 32 else { throw .invalidField(structure: name(), field: "local depth", reason: "\(depth)") }
            return Header(isIndexRoot: false, localDepth: depth, hashPrefix: word(prefixOffset, UInt32.self),
                          overflowNext: word(overflowOffset, UInt64.self), entryCount: Int(word(countOffset, UInt16.self)),
                          globalDepth: 0, directoryEntryCount: 0, bucketCount: 0)
        case 1:
            let depth = block[globalDepthOffset]
            guard depth <= 32 else { throw .invalidField(structure: name(), field: "global depth", reason: "\(depth)") }
            return Header(isIndexRoot: true, localDepth: 0, hashPrefix: 0, overflowNext: 0, entryCount: 0, globalDepth: depth,
                          directoryEntryCount: word(rootEntryCountOffset, UInt64.self), bucketCount: word(bucketCountOffset, UInt64.self))
        case let kind:
            throw .invalidField(structure: name(), field: "kind", reason: "\(kind)")
        }
    }

    /// In a verified leaf of `count` entries: the entry of `hash` and `name`, if any, and
    /// where the entry area ends (an append goes there). Throws on an entry that runs past
    /// the block or names inode 0.
    public static func findEntry(in buffer: UnsafeRawBufferPointer, count: Int, hash: UInt32, name: [UInt8],
                                 directory: UInt64, logicalBlock: UInt64) throws(FormatError) -> (entry: DirectoryEntry?, end: Int) {
        func structure() -> String { "directory \(directory) block \(logicalBlock)" }
        var offset = headerBytes
        var found: DirectoryEntry? = nil
        for index in 0 ..< count {
            guard offset + DirectoryEntry.fixedBytes <= encodedBytes else {
                throw .invalidField(structure: structure(), field: "entry \(index)", reason: "beyond the block")
            }
            let length = Int(buffer[offset + 13])
            let size = DirectoryEntry.encodedBytes(nameBytes: length)
            guard offset + size <= encodedBytes else {
                throw .invalidField(structure: structure(), field: "entry \(index)", reason: "name runs past the block")
            }
            let inode = UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            guard inode != 0 else { throw .invalidField(structure: structure(), field: "entry \(index)", reason: "inode 0") }
            if found == nil, length == name.count,
               UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)) == hash {
                let same = name.withUnsafeBytes { wanted in
                    memcmp(wanted.baseAddress!, buffer.baseAddress! + offset + DirectoryEntry.fixedBytes, length) == 0
                }
                if same { found = DirectoryEntry(inode: inode, hash: hash, type: buffer[offset + 12], name: name) }
            }
            offset += size
        }
        return (found, offset)
    }

    /// Appends `entry` to a verified leaf of `count` entries whose entry area ends at `end`
    /// (as `findEntry` said) and counts it. The caller checked that it fits, and reseals the
    /// block (CRC32C at byte 4, `StructureChecksum.seal`) before anyone else reads it.
    /// Returns the byte ranges changed.
    public static func appendEntry(_ entry: DirectoryEntry, to block: UnsafeMutableRawBufferPointer, count: Int, end: Int) -> [Range<Int>] {
        let size = entry.encodedBytes
        precondition(end + size <= encodedBytes && count < Int(UInt16.max))
        block.storeBytes(of: entry.inode.littleEndian, toByteOffset: end, as: UInt64.self)
        block.storeBytes(of: entry.hash.littleEndian, toByteOffset: end + 8, as: UInt32.self)
        block[end + 12] = entry.type
        block[end + 13] = UInt8(entry.name.count)
        entry.name.withUnsafeBytes { name in
            (block.baseAddress! + end + DirectoryEntry.fixedBytes).copyMemory(from: name.baseAddress!, byteCount: name.count)
        }
        // The padding to 8 bytes is zero, as `encode` leaves it.
        for index in end + DirectoryEntry.fixedBytes + entry.name.count ..< end + size { block[index] = 0 }
        block.storeBytes(of: UInt16(count + 1).littleEndian, toByteOffset: countOffset, as: UInt16.self)
        return [countOffset ..< countOffset + 2, end ..< end + size]
    }

    /// Sets a verified index root's entry count (the caller reseals, as for `appendEntry`).
    /// Returns the byte ranges changed.
    public static func setDirectoryEntryCount(_ count: UInt64, in block: UnsafeMutableRawBufferPointer) -> [Range<Int>] {
        block.storeBytes(of: count.littleEndian, toByteOffset: rootEntryCountOffset, as: UInt64.self)
        return [rootEntryCountOffset ..< rootEntryCountOffset + 8]
    }

    public static func decode(_ buffer: UnsafeRawBufferPointer, seed: UInt32, expectedDirectory: UInt64,
                              expectedLogicalBlock: UInt64, verifyChecksum: Bool = true) throws(FormatError) -> DirectoryBlock {
        let name = "directory \(expectedDirectory) block \(expectedLogicalBlock)"
        var reader = try openSealedBlock(buffer, bytes: encodedBytes, magic: Self.magic, seed: seed, structure: name,
                                         verifyChecksum: verifyChecksum)
        let directory: UInt64 = reader.get()
        let logical: UInt64 = reader.get()
        guard directory == expectedDirectory, logical == expectedLogicalBlock else {
            throw .invalidField(structure: name, field: "identity", reason: "holds directory \(directory) block \(logical)")
        }
        let kind: UInt8 = reader.get()
        switch kind {
        case 0:
            let localDepth: UInt8 = reader.get()
            let count = Int(reader.get(UInt16.self))
            let prefix: UInt32 = reader.get()
            let overflowNext: UInt64 = reader.get()
            guard localDepth <= 32 else { throw .invalidField(structure: name, field: "local depth", reason: "\(localDepth)") }
            reader.seek(headerBytes)
            var entries: [DirectoryEntry] = []
            for index in 0 ..< count {
                guard reader.offset + DirectoryEntry.fixedBytes <= encodedBytes else {
                    throw .invalidField(structure: name, field: "entry \(index)", reason: "beyond the block")
                }
                let start = reader.offset
                let inode: UInt64 = reader.get()
                let hash: UInt32 = reader.get()
                let type: UInt8 = reader.get()
                let length = Int(reader.get(UInt8.self))
                guard start + DirectoryEntry.encodedBytes(nameBytes: length) <= encodedBytes else {
                    throw .invalidField(structure: name, field: "entry \(index)", reason: "name runs past the block")
                }
                let entryName = reader.bytes(length)
                if let problem = DirectoryEntry.nameProblem(entryName) {
                    throw .invalidField(structure: name, field: "entry \(index) name", reason: problem)
                }
                guard inode != 0 else { throw .invalidField(structure: name, field: "entry \(index)", reason: "inode 0") }
                entries.append(DirectoryEntry(inode: inode, hash: hash, type: type, name: entryName))
                reader.seek(start + DirectoryEntry.encodedBytes(nameBytes: length))
            }
            return DirectoryBlock(directory: directory, logicalBlock: logical,
                                  content: .leaf(localDepth: localDepth, hashPrefix: prefix, overflowNext: overflowNext, entries: entries))
        case 1:
            reader.seek(headerBytes)
            let globalDepth: UInt8 = reader.get()
            reader.skip(7)
            guard globalDepth <= 32 else { throw .invalidField(structure: name, field: "global depth", reason: "\(globalDepth)") }
            return DirectoryBlock(directory: directory, logicalBlock: logical,
                                  content: .indexRoot(globalDepth: globalDepth, entryCount: reader.get(), bucketCount: reader.get()))
        default:
            throw .invalidField(structure: name, field: "kind", reason: "\(kind)")
        }
    }
}
