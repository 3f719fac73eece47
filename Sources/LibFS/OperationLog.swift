// LibFS — layer 3 of Shale: what an application links to use the file system.
//
// Offers (so far): `OperationLog`, the process's private operation log in its NVM log
// region. Every mutating operation is appended as one sealed record (docs/format.md "Log
// records") and is durable when `append` returns.
// Needs: ShaleMedia (`PersistentMemory`) and ShaleFormat (record framing and payloads). The
// region itself is granted by KernFS (`LogGrant`), which also reports how far it has digested
// so that space can be reused; LibFS never writes the log table.
//
// Durability points of an append: bulk data (store + flush, no fence), then header and
// payload (store + flush, no fence), then ONE fence: the commit point. A record whose fence
// did not complete can be torn in any way the hardware allows and still never reads as
// committed: its header and body checksums, sequence number and epoch see to that.
// Wrapping to the start of the region writes a `wrap` record with a fence of its own first
// (rare: once per lap), so that a record at offset 0 is never found without the wrap that
// leads to it.

import ShaleFormat
import ShaleMedia

/// Where an appended record goes: its sequence number and the region offsets of its payload
/// and its bulk data.
public struct LogPlacement {
    public var sequence: UInt64
    public var payloadOffset: UInt64
    public var dataOffset: UInt64
}

/// A log region handed to one LibFS instance by KernFS.
public struct LogGrant: Sendable, Equatable {
    /// Index of the region in the log table.
    public var region: Int
    /// NVM byte offset and size of the region.
    public var regionOffset: UInt64
    public var regionBytes: UInt64
    /// The region's epoch for this owner; records carry its low 32 bits.
    public var epoch: UInt64
    /// Where the first record goes, and its sequence number.
    public var startOffset: UInt64
    public var startSequence: UInt64
    /// The volume's checksum seed (records use the region's record seed derived from it).
    public var volumeSeed: UInt32

    public init(region: Int, regionOffset: UInt64, regionBytes: UInt64, epoch: UInt64, startOffset: UInt64,
                startSequence: UInt64, volumeSeed: UInt32) {
        self.region = region
        self.regionOffset = regionOffset
        self.regionBytes = regionBytes
        self.epoch = epoch
        self.startOffset = startOffset
        self.startSequence = startSequence
        self.volumeSeed = volumeSeed
    }

    public var recordSeed: UInt32 {
        LogRecordHeader.recordSeed(volumeSeed: volumeSeed, region: UInt32(region), epoch: epoch)
    }
}

public enum LogError: Error, Equatable, CustomStringConvertible {
    /// Not enough undigested space: digest, then retry.
    case full(neededBytes: UInt64, freeBytes: UInt64)
    /// The record can never fit in this region.
    case tooLarge(recordBytes: UInt64, regionBytes: UInt64)

    public var description: String {
        switch self {
        case let .full(needed, free): "operation log full: \(needed) bytes needed, \(free) free until the next digest"
        case let .tooLarge(record, region): "a record of \(record) bytes cannot fit in a log region of \(region) bytes"
        }
    }
}

/// One process's operation log. Not thread-safe: the file-system layer above serialises
/// appends (a short critical section: NVM stores only, no block I/O).
public final class OperationLog<NVM: PersistentMemory>: @unchecked Sendable {
    /// Largest payload of one record (a 64 KiB xattr value with its name and fields).
    public static var payloadBytesMax: Int { 80 * 1024 }

    public let grant: LogGrant
    public let nvm: NVM
    private let regionBase: Int
    private let regionBytes: UInt64
    private let seed: UInt32
    private let epochLow: UInt32

    /// Region offset of the next record.
    public private(set) var head: UInt64
    public private(set) var nextSequence: UInt64
    /// Region offset and sequence of the first record not yet digested.
    public private(set) var tail: UInt64
    public private(set) var tailSequence: UInt64
    /// Bytes between tail and head, wrap padding included.
    public private(set) var usedBytes: UInt64 = 0

    /// Header and payload are assembled here, then stored with one copy: at `lineBytes`
    /// past its start when records are streamed (room for the head line's earlier bytes).
    private let scratch: UnsafeMutableRawBufferPointer
    /// Records are written as whole cache lines (`PersistentMemory.streamLines`) when the
    /// region is line-aligned: nothing is read in from memory and nothing left to flush.
    /// A record that starts inside a line rewrites the line's earlier bytes, the previous
    /// record's tail, with the values they already hold (`headLine`); a torn rewrite of equal
    /// bytes leaves them equal, so a committed record is never at risk. The rest of a record's
    /// last line is free space and is written as zeros (the space check counts it).
    private let streams: Bool
    /// The bytes of the line holding `head` that precede it, as NVM holds them (the
    /// previous record's tail; zeros where it left padding).
    private let headLine: UnsafeMutableRawBufferPointer
    private static var lineBytes: Int { 64 }

    public init(nvm: NVM, grant: LogGrant) {
        precondition(grant.regionBytes >= LogRegionDescriptor.regionBytesMin && grant.regionBytes % 8 == 0)
        precondition(grant.regionOffset + grant.regionBytes <= UInt64(nvm.byteCount))
        precondition(grant.startOffset < grant.regionBytes && grant.startOffset % 8 == 0)
        self.nvm = nvm
        self.grant = grant
        regionBase = Int(grant.regionOffset)
        regionBytes = grant.regionBytes
        seed = grant.recordSeed
        epochLow = UInt32(truncatingIfNeeded: grant.epoch)
        let start = grant.startOffset + UInt64(LogRecordHeader.encodedBytes) > grant.regionBytes ? 0 : grant.startOffset
        head = start
        tail = start
        nextSequence = grant.startSequence
        tailSequence = grant.startSequence
        scratch = .allocate(byteCount: Self.lineBytes + LogRecordHeader.encodedBytes + Self.payloadBytesMax + Self.lineBytes,
                            alignment: Self.lineBytes)
        streams = regionBase % Self.lineBytes == 0 && regionBytes % UInt64(Self.lineBytes) == 0
        headLine = .allocate(byteCount: Self.lineBytes, alignment: Self.lineBytes)
        headLine.initializeMemory(as: UInt8.self, repeating: 0)
        let inLine = Int(start) % Self.lineBytes
        if streams, inLine > 0 {
            // Resuming inside a line: its earlier bytes are a record that is already there.
            headLine.copyMemory(from: UnsafeRawBufferPointer(start: nvm.baseAddress + regionBase + Int(start) - inLine, count: inLine))
        }
        // Every append stores into this region: map its pages now, not one fault per page on
        // the first lap (on the emulated NVM's 4 KiB pages a fault costs more than a record).
        nvm.prefault(offset: regionBase, count: Int(regionBytes))
    }

    deinit {
        scratch.deallocate()
        headLine.deallocate()
    }

    public var capacityBytes: UInt64 { regionBytes }
    public var freeBytes: UInt64 { regionBytes - usedBytes }

    /// Appends one record and returns its sequence number once it is durable.
    /// `encodePayload` writes exactly `payloadBytes` bytes into the buffer it is given.
    /// `placed` runs once the record's sequence number and place are fixed (nothing can fail
    /// after that) and before any of its bytes are stored: the caller's in-memory bookkeeping,
    /// done while its cache misses are cheap. After the record's non-temporal stores, every
    /// miss waits for a write-combining buffer until the stores have drained to memory. It
    /// must not touch NVM, and nothing it does may be seen by another thread before `append`
    /// returns (the caller holds its lock).
    @discardableResult
    public func append(_ type: LogRecordType, payloadBytes: Int, data: UnsafeRawBufferPointer,
                       encodePayload: (UnsafeMutableRawBufferPointer) -> Void,
                       placed: (LogPlacement) -> Void = { _ in }) throws(LogError) -> UInt64 {
        precondition(type != .wrap && payloadBytes >= 0 && payloadBytes <= Self.payloadBytesMax)
        precondition(data.count <= Int(UInt32.max))
        let headerBytes = UInt64(LogRecordHeader.encodedBytes)
        var start = head
        var parts = LogRecordHeader.extent(at: start, payloadBytes: UInt32(payloadBytes), dataBytes: UInt32(data.count))
        var padding: UInt64 = 0
        if parts.end > regionBytes {
            // Does not fit before the end of the region: wrap to its start.
            padding = regionBytes - start
            start = 0
            parts = LogRecordHeader.extent(at: 0, payloadBytes: UInt32(payloadBytes), dataBytes: UInt32(data.count))
            guard parts.end <= regionBytes else { throw .tooLarge(recordBytes: parts.end, regionBytes: regionBytes) }
        }
        // Streamed, a small record's last line is written whole: its free rest must be free.
        let written = streams && data.count == 0 ? Self.lineAligned(parts.end) : parts.end
        let needed = padding + (written - start)
        guard needed <= freeBytes else { throw .full(neededBytes: needed, freeBytes: freeBytes) }

        if padding > 0 {
            // `head` is kept where a header fits (see the end of this function), so there is
            // always room for the wrap record.
            assert(padding >= headerBytes)
            if padding >= headerBytes {
                // Durable point: the wrap record, with its own fence (once per lap).
                let wrap = LogRecordHeader(sequence: nextSequence, epoch: epochLow, type: .wrap, payloadBytes: 0, dataBytes: 0,
                                           bodyCRC: LogRecordHeader.bodyChecksum(payload: UnsafeRawBufferPointer(start: nil, count: 0),
                                                                                 data: UnsafeRawBufferPointer(start: nil, count: 0), seed: seed))
                let wrapHeader = UnsafeMutableRawBufferPointer(rebasing: scratch[0 ..< LogRecordHeader.encodedBytes])
                wrap.encode(into: wrapHeader, seed: seed)
                nvm.storePersist(UnsafeRawBufferPointer(wrapHeader), at: regionBase + Int(head))
                nextSequence += 1
            }
            usedBytes += padding
            head = 0
        }

        placed(LogPlacement(sequence: nextSequence, payloadOffset: parts.payloadOffset, dataOffset: parts.dataOffset))

        // The record is assembled at `at` in the scratch buffer: after the head line's
        // earlier bytes when streamed.
        let inLine = streams ? Int(start) % Self.lineBytes : 0
        let at = Self.lineBytes
        let recordBytes = LogRecordHeader.encodedBytes + payloadBytes
        let payload = UnsafeMutableRawBufferPointer(rebasing: scratch[at + LogRecordHeader.encodedBytes ..< at + recordBytes])
        encodePayload(payload)
        // The body checksum (LogRecordHeader.bodyChecksum: payload, then data) continues over
        // the data as it is copied, so the data is read once.
        var bodyCRC = CRC32C.update(seed, UnsafeRawBufferPointer(payload))
        // Durable point 1: the bulk data, flushed but not yet fenced.
        let plantedLateData = PlantedBug.active == .commitBeforePayload && data.count > 0
        if data.count > 0, !plantedLateData {
            bodyCRC = nvm.storeFlush(data, at: regionBase + Int(parts.dataOffset), continuingCRC32C: bodyCRC,
                                     update: CRC32C.update)
        } else if plantedLateData {
            bodyCRC = CRC32C.update(bodyCRC, data)
        }
        // Durable point 2: header and payload, flushed but not yet fenced.
        let header = LogRecordHeader(sequence: nextSequence, epoch: epochLow, type: type,
                                     payloadBytes: UInt32(payloadBytes), dataBytes: UInt32(data.count), bodyCRC: bodyCRC)
        header.encode(into: UnsafeMutableRawBufferPointer(rebasing: scratch[at...]), seed: seed)
        if streams {
            // The head line's earlier bytes, the record, zeros to the end of its last line
            // (for a bulk record, padding before its line-aligned data).
            let lineStart = at - inLine
            let lineEnd = lineStart + Self.lineAligned(inLine + recordBytes)
            scratch.baseAddress!.advanced(by: lineStart).copyMemory(from: headLine.baseAddress!, byteCount: inLine)
            scratch.baseAddress!.advanced(by: at + recordBytes).initializeMemory(as: UInt8.self, repeating: 0,
                                                                                 count: lineEnd - at - recordBytes)
            nvm.streamLines(UnsafeRawBufferPointer(rebasing: scratch[lineStart ..< lineEnd]), at: regionBase + Int(start) - inLine)
            rememberHeadLine(recordEnd: parts.end, lineEnd: lineEnd, data: data)
        } else {
            nvm.storeFlush(UnsafeRawBufferPointer(rebasing: scratch[at ..< at + recordBytes]), at: regionBase + Int(start))
        }
        let sequence = nextSequence
        nextSequence += 1
        usedBytes += parts.end - start
        head = parts.end
        // Fewer than a header's bytes left: the next record starts at 0, as a reader assumes
        // (LogScanner); the rest of the region is padding until the tail passes it.
        if head + headerBytes > regionBytes {
            usedBytes += regionBytes - head
            head = 0
        }
        // Commit point: one fence makes data, payload and header durable together.
        if PlantedBug.active != .missingFence { nvm.fence() }
        if plantedLateData {
            // Planted: the data after the commit, left for a later fence.
            nvm.storeFlush(data, at: regionBase + Int(parts.dataOffset))
        }
        return sequence
    }

    /// Appends one operation, its payload encoded straight into the record (no copy, no
    /// allocation). `data` is a write's bulk data (empty for everything else).
    @discardableResult
    public func append(_ operation: LogOperation, data: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) throws(LogError) -> UInt64 {
        try append(operation.recordType, payloadBytes: operation.encodedPayloadBytes, data: data) { buffer in
            operation.encodePayload(into: buffer)
        }
    }

    /// Appends a record whose payload is a byte array (tests, tools; the hot path encodes in place).
    @discardableResult
    public func append(_ type: LogRecordType, payload: [UInt8], data: [UInt8] = []) throws(LogError) -> UInt64 {
        let result: Result<UInt64, LogError> = data.withUnsafeBytes { dataBytes in
            do throws(LogError) {
                return .success(try append(type, payloadBytes: payload.count, data: dataBytes) { buffer in
                    buffer.copyBytes(from: payload)
                })
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    @inline(__always)
    private static func lineAligned<T: BinaryInteger>(_ value: T) -> T {
        (value + T(lineBytes) - 1) / T(lineBytes) * T(lineBytes)
    }

    /// Keeps the bytes before the next record's start in its line (`end`: the record's end;
    /// `lineEnd`: where its streamed header and payload end in the scratch buffer).
    @inline(__always)
    private func rememberHeadLine(recordEnd end: UInt64, lineEnd: Int, data: UnsafeRawBufferPointer) {
        let inLine = Int(end) % Self.lineBytes
        guard inLine > 0 else { return }
        if data.count == 0 {
            // The record's own last line, as just streamed.
            headLine.copyMemory(from: UnsafeRawBufferPointer(rebasing: scratch[lineEnd - Self.lineBytes ..< lineEnd]))
        } else {
            // The data's last bytes, then the padding to the 8-byte aligned end (never read).
            let dataInLine = data.count % Self.lineBytes
            headLine.initializeMemory(as: UInt8.self, repeating: 0)
            headLine.baseAddress!.copyMemory(from: data.baseAddress! + data.count - dataInLine, byteCount: dataInLine)
        }
    }

    /// KernFS has durably digested every record before (`offset`, `sequence`) (its digest
    /// cursor, as the scanner left it): their space may be reused.
    public func reclaim(upTo offset: UInt64, sequence: UInt64) {
        precondition(sequence >= tailSequence && sequence <= nextSequence, "digest cursor outside the log")
        let newTail = offset + UInt64(LogRecordHeader.encodedBytes) > regionBytes ? 0 : offset
        let freed: UInt64
        if sequence == tailSequence {
            precondition(newTail == tail, "the digest cursor moved without consuming a record")
            freed = 0
        } else if newTail > tail {
            freed = newTail - tail
        } else {
            freed = regionBytes - tail + newTail
        }
        precondition(freed <= usedBytes, "digest cursor beyond the head of the log")
        usedBytes -= freed
        tail = newTail
        tailSequence = sequence
        assert(sequence != nextSequence || (usedBytes == 0 && tail == head), "everything digested, yet space is in use")
    }
}
