import Testing
@testable import ShaleFormat

/// Encodes `entries` as consecutive device-table slots (nil: unused) and reads them back.
private func roundTrip(_ entries: [DeviceDescriptor?]) throws -> (bytes: [UInt8], decoded: [DeviceDescriptor?]) {
    var bytes = [UInt8](repeating: 0, count: entries.count * DeviceDescriptor.encodedBytes)
    bytes.withUnsafeMutableBytes { buffer in
        var writer = FieldWriter(buffer)
        for entry in entries {
            if let entry { entry.encode(into: &writer) } else { writer.skip(DeviceDescriptor.encodedBytes) }
        }
    }
    let decoded = try decodeSlots(bytes)
    return (bytes, decoded)
}

private func decodeSlots(_ bytes: [UInt8]) throws -> [DeviceDescriptor?] {
    try bytes.withUnsafeBytes { buffer in
        var reader = FieldReader(buffer)
        var slots: [DeviceDescriptor?] = []
        while reader.offset < buffer.count { slots.append(try DeviceDescriptor.decode(from: &reader)) }
        return slots
    }
}

struct DeviceDescriptorTests {
    static let ssd: DeviceDescriptor = {
        var entry = DeviceDescriptor(tier: .ssd, byteCount: 500_107_862_016, segmentBytes: 4 << 20, dataOffset: 4 << 20,
                                     dataBlocks: 122_095_000, bitmapOffset: 2_121_728, bitmapBlocks: 3786,
                                     pathHint: "/dev/disk/by-id/nvme-Samsung_SSD_980")
        entry.flags = 0x5A
        return entry
    }()

    @Test func roundTripAndUnusedSlotsAreNil() throws {
        let (bytes, decoded) = try roundTrip([nil, Self.ssd, nil])
        #expect(bytes.count == 3 * 256)
        #expect(DeviceDescriptor.encodedBytes == 256)
        #expect(decoded == [nil, Self.ssd, nil])
        #expect(bytes[0 ..< 256].allSatisfy { $0 == 0 })
    }

    @Test func fieldOffsetsMatchTheSpec() throws {
        let bytes = try roundTrip([Self.ssd]).bytes
        #expect(bytes[0] == Tier.ssd.rawValue)
        #expect(bytes[1] == 0x5A)
        #expect(bytes.le(UInt16.self, at: 2) == 0)
        #expect(bytes.le(UInt32.self, at: 4) == 4096)
        #expect(bytes.le(UInt64.self, at: 8) == 500_107_862_016)
        #expect(bytes.le(UInt64.self, at: 16) == 4 << 20)
        #expect(bytes.le(UInt64.self, at: 24) == 4 << 20)
        #expect(bytes.le(UInt64.self, at: 32) == 122_095_000)
        #expect(bytes.le(UInt64.self, at: 40) == 2_121_728)
        #expect(bytes.le(UInt64.self, at: 48) == 3786)
        #expect(bytes[56 ..< 64].allSatisfy { $0 == 0 })
        let hint = Array("/dev/disk/by-id/nvme-Samsung_SSD_980".utf8)
        #expect(Array(bytes[64 ..< 64 + hint.count]) == hint)
        #expect(bytes[(64 + hint.count) ..< 256].allSatisfy { $0 == 0 })
        #expect(DeviceDescriptor.pathHintBytes == 192)
    }

    @Test func unknownTierIsRefused() throws {
        var bytes = try roundTrip([Self.ssd]).bytes
        bytes[0] = 4
        #expect(formatError { try decodeSlots(bytes) } == .invalidField(structure: "device table", field: "tier", reason: "unknown tier 4"))
    }

    @Test func blockSizeOtherThan4096IsRefused() throws {
        var entry = Self.ssd
        entry.blockBytes = 512
        #expect(formatError { try roundTrip([entry]) }?.field == "block size")
    }

    @Test func dataAreaMustFitTheDevice() throws {
        var entry = Self.ssd
        entry.dataBlocks = (entry.byteCount - entry.dataOffset) / 4096 + 1
        #expect(formatError { try roundTrip([entry]) }?.field == "data area")
        entry.dataOffset = entry.byteCount + 4096
        entry.dataBlocks = 0
        #expect(formatError { try roundTrip([entry]) }?.field == "data area")
    }

    /// Block count × 4096 must not wrap around 2^64 into something that seems to fit.
    @Test func dataBlockCountThatOverflowsIsRefused() throws {
        var entry = Self.ssd
        entry.dataBlocks = (1 << 52) + 1
        #expect(formatError { try roundTrip([entry]) }?.field == "data area")
    }

    /// Block 0 of an SSD or HDD is its device header; data never starts before block 1.
    @Test func lowerTierDataMustNotOverlapItsHeader() throws {
        var entry = Self.ssd
        entry.dataOffset = 0
        #expect(formatError { try roundTrip([entry]) }?.field == "data area")
        entry.dataOffset = 2048
        #expect(formatError { try roundTrip([entry]) }?.field == "data area")
    }

    @Test func pathHintThatIsNotUTF8IsRefused() throws {
        var bytes = try roundTrip([Self.ssd]).bytes
        bytes[64] = 0xFF
        #expect(formatError { try decodeSlots(bytes) }?.field == "path hint")
    }
}
