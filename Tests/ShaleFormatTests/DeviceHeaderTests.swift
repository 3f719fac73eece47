import Testing
@testable import ShaleFormat

private func decodeHeader(_ bytes: [UInt8]) throws -> DeviceHeader {
    try bytes.withUnsafeBytes { try DeviceHeader.decode($0) }
}

struct DeviceHeaderTests {
    static let header = DeviceHeader(volumeID: Fixture.volume, tier: .hdd, slot: 2, byteCount: 4_000_787_030_016,
                                     segmentBytes: 16 << 20, dataOffset: 16 << 20)

    @Test func roundTrip() throws {
        let bytes = Self.header.encode()
        #expect(bytes.count == DeviceHeader.encodedBytes)
        #expect(DeviceHeader.encodedBytes == 4096)
        #expect(try decodeHeader(bytes) == Self.header)
    }

    @Test func fieldOffsetsMatchTheSpec() {
        let bytes = Self.header.encode()
        #expect(Array(bytes[0 ..< 8]) == Array("SHALE".utf8) + [0] + Array("DV".utf8))
        #expect(bytes.le(UInt32.self, at: 8) == 2)
        var zeroed = bytes
        zeroed.setLE(UInt32(0), at: 12)
        #expect(bytes.le(UInt32.self, at: 12) == CRC32C.checksum(zeroed))
        #expect(Array(bytes[16 ..< 32]) == Fixture.volume.bytes)
        #expect(bytes[32] == Tier.hdd.rawValue)
        #expect(bytes[33] == 2)
        #expect(bytes.le(UInt16.self, at: 34) == 0)
        #expect(bytes.le(UInt32.self, at: 36) == 4096)
        #expect(bytes.le(UInt64.self, at: 40) == 4_000_787_030_016)
        #expect(bytes.le(UInt64.self, at: 48) == 16 << 20)
        #expect(bytes.le(UInt64.self, at: 56) == 16 << 20)
        #expect(bytes[64...].allSatisfy { $0 == 0 })
    }

    @Test func everySingleByteFlipIsRefused() {
        let missed = offsetsWhereDamageIsMissed(in: Self.header.encode(), expected: { offset in
            switch offset {
            // A flipped version byte is damage, not a newer format: the checksum says so.
            case 0 ..< 8: .badMagic
            default: .checksumMismatch
            }
        }) { _ = try decodeHeader($0) }
        #expect(missed.isEmpty, "undetected or misreported flips at \(missed.prefix(8))")
    }

    @Test func anotherFormatVersionIsRefusedAsSuch() {
        var bytes = Self.header.encode()
        bytes.setLE(UInt32(7), at: 8)
        #expect(formatError { try decodeHeader(bytes.resealed(crcOffset: 12)) }
            == .unsupportedVersion(structure: "device header", found: 7, supported: 2))
    }

    /// A device header names the volume that owns the device; a device swapped in from
    /// another volume decodes (its checksum is not seeded) and the volume ID tells it apart.
    @Test func swappedDeviceIsToldApartByItsVolumeID() throws {
        var foreign = Self.header
        foreign.volumeID = Fixture.otherVolume
        let decoded = try decodeHeader(foreign.encode())
        #expect(decoded.volumeID == Fixture.otherVolume)
        #expect(decoded.volumeID != Fixture.volume)
    }

    @Test(arguments: [UInt8(0), Tier.nvm.rawValue, 4, 0xFF])
    func tierMustBeALowerTier(raw: UInt8) {
        var bytes = Self.header.encode()
        bytes[32] = raw
        #expect(formatError { try decodeHeader(bytes.resealed(crcOffset: 12)) }
            == .invalidField(structure: "device header", field: "tier", reason: "\(raw)"))
    }

    @Test func blockSizeOtherThan4096IsRefused() {
        var bytes = Self.header.encode()
        bytes.setLE(UInt32(512), at: 36)
        #expect(formatError { try decodeHeader(bytes.resealed(crcOffset: 12)) }?.field == "block size")
    }

    @Test func truncatedBufferIsRefused() {
        #expect(formatError { try decodeHeader(Array(Self.header.encode()[0 ..< 64])) }
            == .truncated(structure: "device header", needed: 4096, available: 64))
    }

    @Test func aSuperblockIsNotADeviceHeader() throws {
        let superblock = try SuperblockFixture.make().encode()
        #expect(formatError { try decodeHeader(superblock) }?.kind == .badMagic)
    }
}
