import Testing
@testable import ShaleFormat

private func decodeHeader(_ bytes: [UInt8], seed: UInt32 = Fixture.seed) -> LogRecordHeader? {
    bytes.withUnsafeBytes { LogRecordHeader.decode($0, seed: seed) }
}

struct LogRecordHeaderTests {
    static let header = LogRecordHeader(sequence: 0x0102_0304_0506_0708, epoch: 0xE90C, type: .write, flags: 0,
                                        payloadBytes: 0x1234, dataBytes: 0x0002_0000, bodyCRC: 0xCAFE_F00D)

    @Test func roundTrip() {
        let bytes = Self.header.encode(seed: Fixture.seed)
        #expect(bytes.count == 32)
        #expect(LogRecordHeader.encodedBytes == 32)
        #expect(decodeHeader(bytes) == Self.header)
    }

    @Test func fieldOffsetsMatchTheSpec() {
        let bytes = Self.header.encode(seed: Fixture.seed)
        #expect(bytes.le(UInt32.self, at: 0) == bytes[4...].withUnsafeBytes { CRC32C.update(Fixture.seed, $0) })
        #expect(bytes.le(UInt32.self, at: 4) == 0xCAFE_F00D)
        #expect(bytes.le(UInt64.self, at: 8) == 0x0102_0304_0506_0708)
        #expect(bytes.le(UInt32.self, at: 16) == 0xE90C)
        #expect(bytes.le(UInt16.self, at: 20) == LogRecordType.write.rawValue)
        #expect(bytes.le(UInt16.self, at: 22) == 0)
        #expect(bytes.le(UInt32.self, at: 24) == 0x1234)
        #expect(bytes.le(UInt32.self, at: 28) == 0x0002_0000)
    }

    /// Type codes are stored in every record; they never change meaning.
    @Test func recordTypeCodesAreStable() {
        let codes: [LogRecordType: UInt16] = [
            .wrap: 1, .create: 16, .mkdir: 17, .mknod: 18, .symlink: 19, .link: 20, .unlink: 21, .rmdir: 22,
            .rename: 23, .write: 24, .truncate: 25, .fallocate: 26, .setattr: 27, .setxattr: 28, .removexattr: 29,
        ]
        #expect(codes.count == LogRecordType.allCases.count)
        for type in LogRecordType.allCases { #expect(codes[type] == type.rawValue, "\(type)") }
    }

    @Test func everySingleByteFlipFailsToDecode() {
        let bytes = Self.header.encode(seed: Fixture.seed)
        for offset in bytes.indices {
            for mask in [UInt8(0x01), 0x80, 0xFF] {
                #expect(decodeHeader(bytes.flipping(offset, mask: mask)) == nil, "offset \(offset) mask \(mask)")
            }
        }
    }

    @Test func aHeaderOfAnotherVolumeDoesNotDecode() {
        #expect(decodeHeader(Self.header.encode(seed: Fixture.otherSeed)) == nil)
    }

    @Test func unknownTypeDoesNotDecodeEvenWhenSealed() {
        var bytes = Self.header.encode(seed: Fixture.seed)
        bytes.setLE(UInt16(2), at: 20)
        let crc = bytes[4...].withUnsafeBytes { CRC32C.update(Fixture.seed, $0) }
        bytes.setLE(crc, at: 0)
        #expect(decodeHeader(bytes) == nil)
    }

    @Test func neverWrittenOrShortHeaderDoesNotDecode() {
        #expect(decodeHeader([UInt8](repeating: 0, count: 32)) == nil)
        #expect(decodeHeader(Array(Self.header.encode(seed: Fixture.seed)[0 ..< 31])) == nil)
    }

    @Test func recordWithoutDataIsHeaderThenPayloadThen8ByteAlignment() {
        let parts = LogRecordHeader.extent(at: 4096 + 40, payloadBytes: 13, dataBytes: 0)
        #expect(parts.payloadOffset == 4096 + 72)
        #expect(parts.dataOffset == 4096 + 85)
        #expect(parts.end == 4096 + 88)
    }

    @Test func bulkDataStartsAtTheNextCacheLine() {
        let parts = LogRecordHeader.extent(at: 8, payloadBytes: 100, dataBytes: 5000)
        #expect(parts.payloadOffset == 40)
        #expect(parts.dataOffset == 192)
        #expect(parts.end == 192 + 5000)
        // A payload that ends on a line boundary needs no padding.
        let exact = LogRecordHeader.extent(at: 0, payloadBytes: 128 - 32, dataBytes: 1)
        #expect(exact.dataOffset == 128)
        #expect(exact.end == 128 + 8)
    }

    @Test func bodyChecksumCoversPayloadThenDataSeeded() {
        let payload: [UInt8] = [1, 2, 3], data: [UInt8] = [4, 5]
        let crc = payload.withUnsafeBytes { p in data.withUnsafeBytes { d in
            LogRecordHeader.bodyChecksum(payload: p, data: d, seed: Fixture.seed)
        } }
        #expect(crc == [UInt8]([1, 2, 3, 4, 5]).withUnsafeBytes { CRC32C.update(Fixture.seed, $0) })
        let other = payload.withUnsafeBytes { p in data.withUnsafeBytes { d in
            LogRecordHeader.bodyChecksum(payload: p, data: d, seed: Fixture.otherSeed)
        } }
        #expect(crc != other)
    }

    @Test func damageDescribesItself() {
        let damage = LogDamage(kind: .header, offset: 4096, lostSequences: 7 ... 9)
        #expect(damage.description == "log damage at offset 4096: unreadable header; records 7...9 lost")
    }
}

/// Headers v1 does not define are not committed records.
struct LogRecordHeaderStrictnessTests {
    @Test func nonzeroFlagsAndWrapRecordsWithAPayloadAreRefused() {
        let flagged = LogRecordHeader(sequence: 5, epoch: 1, type: .create, flags: 1, payloadBytes: 8, dataBytes: 0, bodyCRC: 0)
        #expect(flagged.encode(seed: 9).withUnsafeBytes { LogRecordHeader.decode($0, seed: 9) } == nil)
        let fatWrap = LogRecordHeader(sequence: 5, epoch: 1, type: .wrap, payloadBytes: 8, dataBytes: 0, bodyCRC: 0)
        #expect(fatWrap.encode(seed: 9).withUnsafeBytes { LogRecordHeader.decode($0, seed: 9) } == nil)
        let wrap = LogRecordHeader(sequence: 5, epoch: 1, type: .wrap, payloadBytes: 0, dataBytes: 0, bodyCRC: 0)
        #expect(wrap.encode(seed: 9).withUnsafeBytes { LogRecordHeader.decode($0, seed: 9) } == wrap)
    }

    /// A record claiming the last sequence number can never be followed, so it is never valid
    /// (a scanner advancing past it would overflow).
    @Test func theLastSequenceNumberIsNeverCommitted() {
        var region = [UInt8](repeating: 0, count: 4096)
        let header = LogRecordHeader(sequence: .max, epoch: 1, type: .create, payloadBytes: 0, dataBytes: 0,
                                     bodyCRC: LogRecordHeader.bodyChecksum(payload: UnsafeRawBufferPointer(start: nil, count: 0),
                                                                           data: UnsafeRawBufferPointer(start: nil, count: 0), seed: 9))
        region.replaceSubrange(0 ..< 32, with: header.encode(seed: 9))
        region.withUnsafeBytes { buffer in
            var scanner = LogScanner(region: buffer, epoch: 1, seed: 9, startOffset: 0, startSequence: .max)
            #expect(scanner.next() == nil)
            var gap = LogScanner(region: buffer, epoch: 1, seed: 9, startOffset: 64, startSequence: 3)
            #expect(gap.next() == nil, "no resume at a record of sequence UInt64.max")
            #expect(gap.damage.isEmpty)
        }
    }
}
