// Log record framing (docs/format.md "Log records"): how one operation sits in a process's
// log region, and how a reader finds where the committed log ends.
//
// A record is a 32-byte header, its payload (the operation's arguments: inode numbers,
// offsets, names, small data) and optionally bulk data placed at the next 64-byte (cache
// line) boundary of the region. Records start at 8-byte boundaries.
//
// Commit point: the fence after the header, payload and data have been stored and flushed.
// A record is committed iff its header checksum verifies, it carries the region's epoch and
// the next expected sequence number, it fits in the region, and its body checksum (payload
// then data) verifies. Both checksums are seeded with the region's record seed. A torn
// record fails one of these, so it can never read as committed.

public enum LogRecordType: UInt16, Sendable, CaseIterable {
    /// No operation: the rest of the region is unused, the next record is at offset 0.
    case wrap = 1
    case create = 16
    case mkdir = 17
    case mknod = 18
    case symlink = 19
    case link = 20
    case unlink = 21
    case rmdir = 22
    case rename = 23
    case write = 24
    case truncate = 25
    case fallocate = 26
    case setattr = 27
    case setxattr = 28
    case removexattr = 29
}

public struct LogRecordHeader: Equatable, Sendable {
    public static let encodedBytes = 32
    /// Bulk data starts on a cache line: the writer streams header and payload as whole
    /// lines, zero-padded up to the data (docs/format.md "Whole cache lines"), so this is at
    /// least the line size. (Version 1 used 4096: twice the log per 4 KiB write.)
    public static let dataAlignment: UInt64 = 64
    public static let recordAlignment: UInt64 = 8

    public var sequence: UInt64
    /// The low 32 bits of the region's epoch when the record was written.
    public var epoch: UInt32
    public var type: LogRecordType
    public var flags: UInt16
    public var payloadBytes: UInt32
    public var dataBytes: UInt32
    /// CRC32C (seeded) of the payload followed by the data.
    public var bodyCRC: UInt32

    public init(sequence: UInt64, epoch: UInt32, type: LogRecordType, flags: UInt16 = 0,
                payloadBytes: UInt32, dataBytes: UInt32, bodyCRC: UInt32) {
        self.sequence = sequence
        self.epoch = epoch
        self.type = type
        self.flags = flags
        self.payloadBytes = payloadBytes
        self.dataBytes = dataBytes
        self.bodyCRC = bodyCRC
    }

    /// Where the parts of a record that starts at `offset` lie (region-relative), and
    /// where the next record starts. Cannot overflow for any offset inside a region: the
    /// sizes are 32-bit.
    public static func extent(at offset: UInt64, payloadBytes: UInt32, dataBytes: UInt32)
        -> (payloadOffset: UInt64, dataOffset: UInt64, end: UInt64) {
        let payloadOffset = offset + UInt64(encodedBytes)
        let payloadEnd = payloadOffset + UInt64(payloadBytes)
        if dataBytes == 0 {
            return (payloadOffset, payloadEnd, align(payloadEnd, recordAlignment))
        }
        let dataOffset = align(payloadEnd, dataAlignment)
        return (payloadOffset, dataOffset, align(dataOffset + UInt64(dataBytes), recordAlignment))
    }

    /// The checksum seed of every record of one log region in one epoch: the volume's seed
    /// continued over the region's index and its full 64-bit epoch. A record copied into
    /// another region, or left by an earlier owner of this one, never verifies.
    public static func recordSeed(volumeSeed: UInt32, region: UInt32, epoch: UInt64) -> UInt32 {
        var bytes = [UInt8](repeating: 0, count: 12)
        bytes.withUnsafeMutableBytes { buffer in
            buffer.storeBytes(of: region.littleEndian, toByteOffset: 0, as: UInt32.self)
            buffer.storeBytes(of: epoch.littleEndian, toByteOffset: 4, as: UInt64.self)
        }
        return bytes.withUnsafeBytes { CRC32C.update(volumeSeed, $0) }
    }

    /// The body checksum of a payload and its data.
    public static func bodyChecksum(payload: UnsafeRawBufferPointer, data: UnsafeRawBufferPointer, seed: UInt32) -> UInt32 {
        CRC32C.update(CRC32C.update(seed, payload), data)
    }

    /// Writes the sealed header into 32 bytes.
    public func encode(into buffer: UnsafeMutableRawBufferPointer, seed: UInt32) {
        precondition(buffer.count >= Self.encodedBytes)
        let header = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< Self.encodedBytes])
        var writer = FieldWriter(header)
        writer.put(UInt32(0))
        writer.put(bodyCRC)
        writer.put(sequence)
        writer.put(epoch)
        writer.put(type.rawValue)
        writer.put(flags)
        writer.put(payloadBytes)
        writer.put(dataBytes)
        let crc = CRC32C.update(seed, UnsafeRawBufferPointer(rebasing: header[4...]))
        header.storeBytes(of: crc.littleEndian, toByteOffset: 0, as: UInt32.self)
    }

    public func encode(seed: UInt32) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.encodedBytes)
        bytes.withUnsafeMutableBytes { encode(into: $0, seed: seed) }
        return bytes
    }

    /// Decodes a header whose checksum verifies; nil when it does not (a torn, stale or
    /// never-written header: all look alike) or names an unknown type.
    public static func decode(_ buffer: UnsafeRawBufferPointer, seed: UInt32) -> LogRecordHeader? {
        guard buffer.count >= encodedBytes else { return nil }
        let header = UnsafeRawBufferPointer(rebasing: buffer[0 ..< encodedBytes])
        var reader = FieldReader(header)
        let stored: UInt32 = reader.get()
        guard stored == CRC32C.update(seed, UnsafeRawBufferPointer(rebasing: header[4...])) else { return nil }
        let bodyCRC: UInt32 = reader.get()
        let sequence: UInt64 = reader.get()
        let epoch: UInt32 = reader.get()
        guard let type = LogRecordType(rawValue: reader.get()) else { return nil }
        let decoded = LogRecordHeader(sequence: sequence, epoch: epoch, type: type, flags: reader.get(),
                                      payloadBytes: reader.get(), dataBytes: reader.get(), bodyCRC: bodyCRC)
        // No flags are defined in v1, and a wrap record carries nothing.
        guard decoded.flags == 0, type != .wrap || (decoded.payloadBytes == 0 && decoded.dataBytes == 0) else { return nil }
        return decoded
    }
}

@inline(__always)
func align(_ value: UInt64, _ alignment: UInt64) -> UInt64 {
    (value + alignment - 1) / alignment * alignment
}

/// One committed record found by a scan.
public struct ScannedRecord: Equatable, Sendable {
    public var header: LogRecordHeader
    /// Region-relative offsets.
    public var offset: UInt64
    public var payloadOffset: UInt64
    public var dataOffset: UInt64
    public var end: UInt64
    /// With a scanner that `copiesBodies`: where its `bodies` hold the payload and the data
    /// as copied out of the region, the copies the body checksum was verified on (the region
    /// itself may change after).
    public var body: BodyCopy? = nil
}

/// Where a copied record body lies in a `BodyArena`.
public struct BodyCopy: Equatable, Sendable {
    public var chunk: Int
    public var payload: Range<Int>
    public var data: Range<Int>
}

/// Record bodies copied out of a log region, in chunks of at least 1 MiB (a record never
/// straddles two): one allocation per megabyte of records, not one per record. `reset`
/// keeps the chunks (up to `keptBytesMax`) for the next scan, so a digest does not fault in
/// fresh pages for every window.
public struct BodyArena: Sendable {
    public private(set) var chunks: [[UInt8]] = []
    private var current = 0
    /// Bytes copied in since the last reset.
    public private(set) var byteCount = 0
    private static var chunkBytes: Int { 1 << 20 }
    public static var keptBytesMax: Int { 16 << 20 }

    public init() {}

    /// Empties the arena, keeping up to `keptBytesMax` of its chunks' memory.
    public mutating func reset() {
        var kept = 0
        chunks = chunks.filter { chunk in
            defer { kept += chunk.capacity }
            return kept < Self.keptBytesMax
        }
        for index in chunks.indices { chunks[index].removeAll(keepingCapacity: true) }
        current = 0
        byteCount = 0
    }

    /// Copies `payload` and `data` in; returns where they are.
    mutating func append(payload: UnsafeRawBufferPointer, data: UnsafeRawBufferPointer) -> BodyCopy {
        let bytes = payload.count + data.count
        while current < chunks.count, chunks[current].count + bytes > chunks[current].capacity { current += 1 }
        if current == chunks.count {
            var fresh: [UInt8] = []
            fresh.reserveCapacity(max(Self.chunkBytes, bytes))
            chunks.append(fresh)
        }
        let start = chunks[current].count
        chunks[current].append(contentsOf: payload)
        chunks[current].append(contentsOf: data)
        byteCount += bytes
        return BodyCopy(chunk: current, payload: start ..< start + payload.count, data: start + payload.count ..< start + bytes)
    }

    /// Forgets the last copy (a body that did not verify).
    mutating func dropLast(_ copy: BodyCopy) {
        byteCount -= copy.data.upperBound - copy.payload.lowerBound
        chunks[copy.chunk].removeSubrange(copy.payload.lowerBound...)
    }

    /// Calls `body` with the copied payload and data of `copy`.
    public func withBody<Value>(_ copy: BodyCopy, _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Value) rethrows -> Value {
        try chunks[copy.chunk].withUnsafeBytes { chunk in
            try body(UnsafeRawBufferPointer(rebasing: chunk[copy.payload]), UnsafeRawBufferPointer(rebasing: chunk[copy.data]))
        }
    }
}

/// Damage found inside the committed part of a log (not at its tail): reported, counted and
/// skipped; the records after it are still applied.
public struct LogDamage: Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Equatable, Sendable {
        /// The header verified, the body checksum did not.
        case bodyChecksum
        /// No valid header where one had to be; valid records follow.
        case header
    }
    public var kind: Kind
    public var offset: UInt64
    /// Sequence numbers lost (from, through).
    public var lostSequences: ClosedRange<UInt64>

    public var description: String {
        let what = kind == .bodyChecksum ? "body checksum mismatch" : "unreadable header"
        return "log damage at offset \(offset): \(what); records \(lostSequences.lowerBound)...\(lostSequences.upperBound) lost"
    }
}

/// Why a scan stopped. A torn tail is a clean end: the writer had not returned.
public enum LogEnd: Equatable, Sendable {
    /// Nothing (or only stale or never-written bytes) at the next position.
    case cleanEnd(offset: UInt64)
    /// A record whose header made it but whose body did not: the write in flight at a crash.
    case tornTail(offset: UInt64, sequence: UInt64)
}

/// Walks the committed records of one log region in order (docs/format.md "Finding the end
/// of a log"). Never trusts the bytes: every offset and length is checked against the region.
public struct LogScanner {
    public let region: UnsafeRawBufferPointer
    public let epoch: UInt32
    public let seed: UInt32
    public private(set) var offset: UInt64
    public private(set) var nextSequence: UInt64
    public private(set) var damage: [LogDamage] = []
    public private(set) var end: LogEnd?
    /// Valid headers of this epoch by sequence, built at the first damage (recovery only).
    private var resumeIndex: [(sequence: UInt64, offset: UInt64)]?

    /// When a position holds no valid record, whether to search the region for a later one
    /// (recovery: tells damage inside the log from its end) or stop (digest of a live log,
    /// whose tail is simply not written yet: the search would cost a pass over the region).
    public let searchPastDamage: Bool
    /// Whether each record's payload and data are copied out of the region (into `bodies`)
    /// and the body checksum verified on the copies, which the record then names (the
    /// digest: a client may write its region while it is read, so what is applied must be
    /// what was checked; one read of the record's bytes, not one to check and one to copy).
    public let copiesBodies: Bool
    public private(set) var bodies: BodyArena

    /// `seed` is the region's record seed (`LogRecordHeader.recordSeed`).
    /// `bodies`: an arena to copy into (emptied first), so that a caller scanning again and
    /// again reuses its memory; take it back from `bodies` after the scan.
    public init(region: UnsafeRawBufferPointer, epoch: UInt32, seed: UInt32, startOffset: UInt64, startSequence: UInt64,
                searchPastDamage: Bool = true, copiesBodies: Bool = false, bodies: BodyArena = BodyArena()) {
        self.bodies = bodies
        self.bodies.reset()
        self.region = region
        self.epoch = epoch
        self.seed = seed
        self.searchPastDamage = searchPastDamage
        self.copiesBodies = copiesBodies
        offset = startOffset
        nextSequence = startSequence
    }

    /// The next committed record, or nil at the end (then `end` says which kind).
    /// Wrap records are followed silently.
    public mutating func next() -> ScannedRecord? {
        var wrapsFollowed = 0
        while end == nil {
            if offset + UInt64(LogRecordHeader.encodedBytes) > UInt64(region.count) {
                // Less than a header left before the end of the region: the writer wrapped.
                offset = 0
                wrapsFollowed += 1
                if wrapsFollowed > 1 { end = .cleanEnd(offset: 0); return nil }
                continue
            }
            guard var record = candidate(at: offset, sequence: nextSequence) else {
                if let (resumeOffset, resumeSequence) = findResumePoint(after: offset) {
                    damage.append(LogDamage(kind: .header, offset: offset,
                                            lostSequences: nextSequence ... resumeSequence - 1))
                    offset = resumeOffset
                    nextSequence = resumeSequence
                    continue
                }
                end = .cleanEnd(offset: offset)
                return nil
            }
            if !bodyVerifies(&record) {
                if candidate(at: successor(of: record.end), sequence: nextSequence + 1) != nil
                    || findResumePoint(after: offset) != nil {
                    damage.append(LogDamage(kind: .bodyChecksum, offset: offset, lostSequences: nextSequence ... nextSequence))
                    advance(past: record)
                    continue
                }
                end = .tornTail(offset: offset, sequence: nextSequence)
                return nil
            }
            advance(past: record)
            if record.header.type == .wrap {
                offset = 0
                wrapsFollowed += 1
                if wrapsFollowed > 1 { end = .cleanEnd(offset: 0); return nil }
                continue
            }
            return record
        }
        return nil
    }

    private mutating func advance(past record: ScannedRecord) {
        offset = record.end
        nextSequence += 1
    }

    /// A record with a verifying header, the expected epoch and sequence, inside the region.
    private func candidate(at offset: UInt64, sequence: UInt64) -> ScannedRecord? {
        guard offset % LogRecordHeader.recordAlignment == 0,
              offset + UInt64(LogRecordHeader.encodedBytes) <= UInt64(region.count) else { return nil }
        // Cheap filter before the checksum: sequence and epoch fields.
        let rawSequence = UInt64(littleEndian: region.loadUnaligned(fromByteOffset: Int(offset) + 8, as: UInt64.self))
        let rawEpoch = UInt32(littleEndian: region.loadUnaligned(fromByteOffset: Int(offset) + 16, as: UInt32.self))
        // Sequence UInt64.max is never valid: nothing may follow it.
        guard rawSequence == sequence, rawEpoch == epoch, sequence < UInt64.max else { return nil }
        let start = Int(offset)
        guard let header = LogRecordHeader.decode(UnsafeRawBufferPointer(rebasing: region[start...]), seed: seed) else {
            return nil
        }
        let parts = LogRecordHeader.extent(at: offset, payloadBytes: header.payloadBytes, dataBytes: header.dataBytes)
        guard parts.dataOffset + UInt64(header.dataBytes) <= UInt64(region.count) else { return nil }
        return ScannedRecord(header: header, offset: offset, payloadOffset: parts.payloadOffset,
                             dataOffset: parts.dataOffset, end: parts.end)
    }

    private mutating func bodyVerifies(_ record: inout ScannedRecord) -> Bool {
        let payload = UnsafeRawBufferPointer(rebasing: region[Int(record.payloadOffset) ..< Int(record.payloadOffset) + Int(record.header.payloadBytes)])
        let data = UnsafeRawBufferPointer(rebasing: region[Int(record.dataOffset) ..< Int(record.dataOffset) + Int(record.header.dataBytes)])
        guard copiesBodies else {
            return LogRecordHeader.bodyChecksum(payload: payload, data: data, seed: seed) == record.header.bodyCRC
        }
        let copy = bodies.append(payload: payload, data: data)
        let verifies = bodies.withBody(copy) { p, d in LogRecordHeader.bodyChecksum(payload: p, data: d, seed: seed) } == record.header.bodyCRC
        if verifies {
            record.body = copy
        } else {
            bodies.dropLast(copy)
        }
        return verifies
    }

    /// After an unreadable position: the valid header of this epoch with the smallest
    /// sequence number above the expected one, anywhere in the region. If there is one, the
    /// unreadable bytes were damage inside the log, not its tail. The region is indexed once,
    /// at the first damage (one pass at 8-byte steps), so a log full of gaps costs one pass,
    /// not one per gap.
    private mutating func findResumePoint(after damagedOffset: UInt64) -> (UInt64, UInt64)? {
        guard searchPastDamage else { return nil }
        if resumeIndex == nil { resumeIndex = buildResumeIndex() }
        let index = resumeIndex!
        // First entry with a sequence above the expected one.
        var low = 0, high = index.count
        while low < high {
            let middle = (low + high) / 2
            if index[middle].sequence <= nextSequence { low = middle + 1 } else { high = middle }
        }
        while low < index.count {
            if index[low].offset != damagedOffset { return (index[low].offset, index[low].sequence) }
            low += 1
        }
        return nil
    }

    private func buildResumeIndex() -> [(sequence: UInt64, offset: UInt64)] {
        var found: [(sequence: UInt64, offset: UInt64)] = []
        guard region.count >= LogRecordHeader.encodedBytes else { return found }
        let last = region.count - LogRecordHeader.encodedBytes
        for position in stride(from: 0, through: last, by: Int(LogRecordHeader.recordAlignment)) {
            let rawEpoch = UInt32(littleEndian: region.loadUnaligned(fromByteOffset: position + 16, as: UInt32.self))
            guard rawEpoch == epoch else { continue }
            let rawSequence = UInt64(littleEndian: region.loadUnaligned(fromByteOffset: position + 8, as: UInt64.self))
            guard candidate(at: UInt64(position), sequence: rawSequence) != nil else { continue }
            found.append((rawSequence, UInt64(position)))
        }
        found.sort { ($0.sequence, $0.offset) < ($1.sequence, $1.offset) }
        return found
    }

    /// Where the record after one ending at `end` starts: the next record never begins with
    /// fewer than a header's bytes left before the end of the region.
    private func successor(of end: UInt64) -> UInt64 {
        end + UInt64(LogRecordHeader.encodedBytes) > UInt64(region.count) ? 0 : end
    }
}
