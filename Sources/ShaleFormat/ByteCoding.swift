// Little-endian field coding for fixed-layout structures. Every on-media integer is
// little-endian at the offset docs/format.md gives; writers and readers walk the fields in
// the same order, and each structure's tests check the final offset against its size.

/// Writes fields one after another into a fixed-size buffer.
public struct FieldWriter {
    public let buffer: UnsafeMutableRawBufferPointer
    public private(set) var offset: Int

    public init(_ buffer: UnsafeMutableRawBufferPointer, at offset: Int = 0) {
        self.buffer = buffer
        self.offset = offset
    }

    public mutating func put<T: FixedWidthInteger>(_ value: T) {
        precondition(offset + MemoryLayout<T>.size <= buffer.count, "field beyond the structure")
        buffer.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
        offset += MemoryLayout<T>.size
    }

    public mutating func put(bytes: [UInt8]) {
        precondition(offset + bytes.count <= buffer.count, "field beyond the structure")
        // One copy, not a loop: directory blocks put a name per entry.
        bytes.withUnsafeBytes { source in
            if let base = source.baseAddress { (buffer.baseAddress! + offset).copyMemory(from: base, byteCount: source.count) }
        }
        offset += bytes.count
    }

    /// A fixed-width text field: UTF-8, NUL-padded. A longer text is cut to the field, never
    /// inside a character's UTF-8 sequence, so that what is stored always reads back.
    public mutating func put(text: String, width: Int) {
        var utf8 = Array(text.utf8)
        if utf8.count > width {
            var cut = width
            while cut > 0 && utf8[cut] & 0xC0 == 0x80 { cut -= 1 }  // continuation byte: back off
            utf8.removeSubrange(cut...)
        }
        put(bytes: utf8 + [UInt8](repeating: 0, count: width - utf8.count))
    }

    public mutating func skip(_ count: Int) {
        precondition(offset + count <= buffer.count, "field beyond the structure")
        offset += count
    }

    public mutating func seek(_ newOffset: Int) {
        precondition(newOffset >= 0 && newOffset <= buffer.count)
        offset = newOffset
    }
}

/// Reads fields one after another from a buffer whose size the caller has checked.
public struct FieldReader {
    public let buffer: UnsafeRawBufferPointer
    public private(set) var offset: Int

    public init(_ buffer: UnsafeRawBufferPointer, at offset: Int = 0) {
        self.buffer = buffer
        self.offset = offset
    }

    public mutating func get<T: FixedWidthInteger>(_: T.Type = T.self) -> T {
        precondition(offset + MemoryLayout<T>.size <= buffer.count, "field beyond the structure")
        let value = T(littleEndian: buffer.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += MemoryLayout<T>.size
        return value
    }

    public mutating func bytes(_ count: Int) -> [UInt8] {
        precondition(offset >= 0 && count >= 0 && offset + count <= buffer.count, "field beyond the structure")
        let source = buffer.baseAddress.map { $0 + offset }
        let result = [UInt8](unsafeUninitializedCapacity: count) { target, initialized in
            if let source, count > 0 { UnsafeMutableRawPointer(target.baseAddress!).copyMemory(from: source, byteCount: count) }
            initialized = count
        }
        offset += count
        return result
    }

    /// A fixed-width NUL-padded text field; nil when it is not valid UTF-8.
    public mutating func text(width: Int) -> String? {
        let raw = bytes(width)
        let used = raw.prefix { $0 != 0 }
        return String(validating: used, as: UTF8.self)
    }

    public mutating func skip(_ count: Int) { offset += count }

    public mutating func seek(_ newOffset: Int) { offset = newOffset }
}

/// Checksums of structures that carry their CRC32C inside themselves: the CRC field counts
/// as zero. `seed` ties block-level structures to one volume (docs/format.md, "Checksums").
public enum StructureChecksum {
    public static func compute(_ bytes: UnsafeRawBufferPointer, crcOffset: Int, seed: UInt32 = 0) -> UInt32 {
        precondition(crcOffset + 4 <= bytes.count)
        var crc = CRC32C.update(seed, UnsafeRawBufferPointer(rebasing: bytes[0 ..< crcOffset]))
        crc = withUnsafeBytes(of: UInt32(0)) { CRC32C.update(crc, $0) }
        return CRC32C.update(crc, UnsafeRawBufferPointer(rebasing: bytes[(crcOffset + 4)...]))
    }

    /// Computes and stores the checksum of a freshly encoded structure.
    public static func seal(_ bytes: UnsafeMutableRawBufferPointer, crcOffset: Int, seed: UInt32 = 0) {
        let crc = compute(UnsafeRawBufferPointer(bytes), crcOffset: crcOffset, seed: seed)
        bytes.storeBytes(of: crc.littleEndian, toByteOffset: crcOffset, as: UInt32.self)
    }

    /// Throws `checksumMismatch` unless the stored checksum matches.
    public static func verify(_ bytes: UnsafeRawBufferPointer, crcOffset: Int, seed: UInt32 = 0,
                              structure: String) throws(FormatError) {
        let stored = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: crcOffset, as: UInt32.self))
        let computed = compute(bytes, crcOffset: crcOffset, seed: seed)
        if stored != computed {
            throw .checksumMismatch(structure: structure, stored: stored, computed: computed)
        }
    }
}

extension FormatError {
    static func need(_ structure: String, _ needed: Int, _ buffer: UnsafeRawBufferPointer) throws(FormatError) {
        if buffer.count < needed { throw .truncated(structure: structure, needed: needed, available: buffer.count) }
    }
}

/// Encodes a block-level structure: 4-byte magic, then the fields `body` writes from byte 8
/// on, then the seeded CRC32C at byte 4 over the whole block. The writing side of
/// `openSealedBlock`.
func sealedBlock(bytes: Int, magic: UInt32, seed: UInt32, _ body: (inout FieldWriter) -> Void) -> [UInt8] {
    var block = [UInt8](repeating: 0, count: bytes)
    block.withUnsafeMutableBytes { buffer in
        var writer = FieldWriter(buffer)
        writer.put(magic)
        writer.put(UInt32(0))
        body(&writer)
        StructureChecksum.seal(buffer, crcOffset: 4, seed: seed)
    }
    return block
}

/// The common opening of every block-level structure (bitmap, directory and extent-tree
/// blocks): 4-byte magic at 0, seeded CRC32C at 4. Checks size, magic and checksum, and hands
/// back a reader positioned at byte 8 of the verified block.
func openSealedBlock(_ buffer: UnsafeRawBufferPointer, bytes: Int, magic: UInt32, seed: UInt32,
                     structure: @autoclosure () -> String, verifyChecksum: Bool = true) throws(FormatError) -> FieldReader {
    guard buffer.count >= bytes else { throw .truncated(structure: structure(), needed: bytes, available: buffer.count) }
    let block = UnsafeRawBufferPointer(rebasing: buffer[0 ..< bytes])
    let found = UInt32(littleEndian: block.loadUnaligned(as: UInt32.self))
    guard found == magic else {
        throw .badMagic(structure: structure(), found: withUnsafeBytes(of: found.littleEndian) { Array($0) })
    }
    if verifyChecksum {
        let stored = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        let computed = StructureChecksum.compute(block, crcOffset: 4, seed: seed)
        if stored != computed { throw .checksumMismatch(structure: structure(), stored: stored, computed: computed) }
    }
    return FieldReader(block, at: 8)
}


/// The common opening of the superblock and the device header: 8-byte magic, version at 8,
/// unseeded CRC32C at 12 over the block (frozen across versions, docs/format.md). The checksum
/// is verified before the version, so a flipped version byte is damage, not a newer format.
/// Hands back a reader positioned at byte 16.
func openVersionedHeader(_ buffer: UnsafeRawBufferPointer, bytes: Int, magic: [UInt8],
                         structure: String) throws(FormatError) -> FieldReader {
    try FormatError.need(structure, bytes, buffer)
    let block = UnsafeRawBufferPointer(rebasing: buffer[0 ..< bytes])
    var reader = FieldReader(block)
    let found = reader.bytes(8)
    guard found == magic else { throw .badMagic(structure: structure, found: found) }
    let version: UInt32 = reader.get()
    try StructureChecksum.verify(block, crcOffset: 12, structure: structure)
    guard version == Format.version else {
        throw .unsupportedVersion(structure: structure, found: version, supported: Format.version)
    }
    reader.skip(4)
    return reader
}
