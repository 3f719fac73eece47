// KernFS's metadata journal (docs/format.md "Metadata journal"): a physical redo journal on
// NVM through which every change to the shared area commits. A transaction is a list of
// (NVM offset, new bytes) writes; once it is committed it is applied in place and retired,
// and after a crash a committed but unretired transaction is applied again (the writes are
// absolute, so applying twice is the same as once).
//
// Journal region (at `NVMLayout.journalOffset`, `journalBytes` long):
//
//   0     control (32 bytes): magic "SJNL", seeded CRC32C of bytes 8–31, journalBytes, 0
//   64    appliedSequence: 8 bytes, one failure-atomic store; the last transaction applied
//   4096  the transaction area: the one transaction in flight, header then entries
//
// Commit rule: a transaction is committed iff its header checksum verifies, its sequence is
// appliedSequence + 1, its body fits in the area and its body checksum verifies. It is
// written (body and header flushed) and made durable by one fence: the commit point.

public struct JournalControl: Equatable, Sendable {
    public static let magic: UInt32 = 0x4C4E_4A53  // "SJNL"
    public static let encodedBytes = 32
    public static let appliedSequenceOffset = 64
    public static let transactionAreaOffset = Format.blockBytes

    public var journalBytes: UInt64

    public init(journalBytes: UInt64) { self.journalBytes = journalBytes }

    public func encode(seed: UInt32) -> [UInt8] {
        sealedBlock(bytes: Self.encodedBytes, magic: Self.magic, seed: seed) { writer in
            writer.put(journalBytes)
        }
    }

    public static func decode(_ buffer: UnsafeRawBufferPointer, seed: UInt32, expectedBytes: UInt64) throws(FormatError) -> JournalControl {
        let name = "metadata journal"
        var reader = try openSealedBlock(buffer, bytes: encodedBytes, magic: magic, seed: seed, structure: name)
        let bytes: UInt64 = reader.get()
        guard bytes == expectedBytes else {
            throw .invalidField(structure: name, field: "size", reason: "says \(bytes), the superblock says \(expectedBytes)")
        }
        return JournalControl(journalBytes: bytes)
    }
}

/// One write of a transaction: new bytes for an NVM range.
public struct JournalWrite: Equatable, Sendable {
    public static let headerBytes = 16
    public var offset: UInt64
    public var bytes: [UInt8]

    public init(offset: UInt64, bytes: [UInt8]) {
        self.offset = offset
        self.bytes = bytes
    }

    /// Bytes the write takes in the journal: a 16-byte header, then the bytes padded to 8.
    public var encodedBytes: Int { Self.headerBytes + (bytes.count + 7) / 8 * 8 }
}

public struct JournalTransactionHeader: Equatable, Sendable {
    public static let magic: UInt32 = 0x4E58_5453  // "STXN"
    public static let encodedBytes = 64

    public var sequence: UInt64
    public var writeCount: UInt32
    public var bodyBytes: UInt64
    public var bodyCRC: UInt32

    public init(sequence: UInt64, writeCount: UInt32, bodyBytes: UInt64, bodyCRC: UInt32) {
        self.sequence = sequence
        self.writeCount = writeCount
        self.bodyBytes = bodyBytes
        self.bodyCRC = bodyCRC
    }

    public func encode(seed: UInt32) -> [UInt8] {
        sealedBlock(bytes: Self.encodedBytes, magic: Self.magic, seed: seed) { writer in
            writer.put(sequence)
            writer.put(writeCount)
            writer.put(UInt32(0))
            writer.put(bodyBytes)
            writer.put(bodyCRC)
        }
    }

    /// Encodes a body (the writes, in order) and returns it with its header.
    public static func encode(writes: [JournalWrite], sequence: UInt64, seed: UInt32) -> (header: [UInt8], body: [UInt8]) {
        var body = [UInt8](repeating: 0, count: writes.reduce(0) { $0 + $1.encodedBytes })
        body.withUnsafeMutableBytes { buffer in
            var writer = FieldWriter(buffer)
            for write in writes {
                writer.put(write.offset)
                writer.put(UInt32(write.bytes.count))
                writer.put(UInt32(0))
                writer.put(bytes: write.bytes)
                writer.seek(writer.offset + (8 - write.bytes.count % 8) % 8)
            }
        }
        let crc = CRC32C.update(seed, body.withUnsafeBytes { UnsafeRawBufferPointer($0) })
        let header = JournalTransactionHeader(sequence: sequence, writeCount: UInt32(writes.count),
                                              bodyBytes: UInt64(body.count), bodyCRC: crc)
        return (header.encode(seed: seed), body)
    }

    /// The committed transaction in `area` (the journal's transaction area), if there is
    /// one with `expectedSequence`; nil when there is none (never written, already retired,
    /// or torn: all mean "nothing to apply"). A transaction that verifies but whose writes
    /// fall outside `allowed` is damage and throws.
    public static func committed(in area: UnsafeRawBufferPointer, seed: UInt32, expectedSequence: UInt64,
                                 allowed: Range<UInt64>, forbidden: [Range<UInt64>]) throws(FormatError) -> [JournalWrite]? {
        guard area.count >= encodedBytes else { return nil }
        let headerBytes = UnsafeRawBufferPointer(rebasing: area[0 ..< encodedBytes])
        guard let reader = try? openSealedBlock(headerBytes, bytes: encodedBytes, magic: magic, seed: seed, structure: "journal transaction")
        else { return nil }
        var fields = reader
        let sequence: UInt64 = fields.get()
        let count: UInt32 = fields.get()
        fields.skip(4)
        let bodyBytes: UInt64 = fields.get()
        let bodyCRC: UInt32 = fields.get()
        guard sequence == expectedSequence, bodyBytes <= UInt64(area.count - encodedBytes) else { return nil }
        let body = UnsafeRawBufferPointer(rebasing: area[encodedBytes ..< encodedBytes + Int(bodyBytes)])
        guard CRC32C.update(seed, body) == bodyCRC else { return nil }
        let name = "journal transaction \(sequence)"
        var writes: [JournalWrite] = []
        var cursor = FieldReader(body)
        for index in 0 ..< Int(count) {
            guard cursor.offset + JournalWrite.headerBytes <= body.count else {
                throw .invalidField(structure: name, field: "write \(index)", reason: "beyond the body")
            }
            let offset: UInt64 = cursor.get()
            let length = Int(cursor.get(UInt32.self))
            cursor.skip(4)
            let padded = (length + 7) / 8 * 8
            guard length > 0, cursor.offset + padded <= body.count else {
                throw .invalidField(structure: name, field: "write \(index)", reason: "\(length) bytes do not fit the body")
            }
            let (end, overflow) = offset.addingReportingOverflow(UInt64(length))
            let range = offset ..< (overflow ? UInt64.max : end)
            guard !overflow, allowed.contains(offset), end <= allowed.upperBound, !forbidden.contains(where: { $0.overlaps(range) }) else {
                throw .invalidField(structure: name, field: "write \(index)", reason: "range \(offset)+\(length) is not shared-area metadata")
            }
            writes.append(JournalWrite(offset: offset, bytes: cursor.bytes(length)))
            cursor.skip(padded - length)
        }
        guard cursor.offset == body.count else {
            throw .invalidField(structure: name, field: "body", reason: "\(body.count - cursor.offset) bytes after the last write")
        }
        return writes
    }
}
