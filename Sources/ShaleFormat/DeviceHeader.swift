// The header at the start of every SSD and HDD device (docs/format.md "Device header"):
// block 0, 4096 bytes. It carries the volume ID of the superblock that owns the device, so a
// wrong or swapped device is refused with a clear message, never used.

public struct DeviceHeader: Equatable, Sendable {
    public static let encodedBytes = Format.blockBytes
    public static let magic: [UInt8] = Array("SHALE".utf8) + [0] + Array("DV".utf8)
    static let crcOffset = 12

    public var formatVersion: UInt32 = Format.version
    public var volumeID: VolumeID
    public var tier: Tier
    /// The device's slot in the superblock's device table.
    public var slot: UInt8
    public var byteCount: UInt64
    public var segmentBytes: UInt64
    public var dataOffset: UInt64

    public init(volumeID: VolumeID, tier: Tier, slot: UInt8, byteCount: UInt64, segmentBytes: UInt64, dataOffset: UInt64) {
        self.volumeID = volumeID
        self.tier = tier
        self.slot = slot
        self.byteCount = byteCount
        self.segmentBytes = segmentBytes
        self.dataOffset = dataOffset
    }

    public func encode() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.encodedBytes)
        bytes.withUnsafeMutableBytes { buffer in
            var writer = FieldWriter(buffer)
            writer.put(bytes: Self.magic)
            writer.put(formatVersion)
            writer.put(UInt32(0))
            writer.put(bytes: volumeID.bytes)
            writer.put(tier.rawValue)
            writer.put(slot)
            writer.put(UInt16(0))
            writer.put(UInt32(Format.blockBytes))
            writer.put(byteCount)
            writer.put(segmentBytes)
            writer.put(dataOffset)
            StructureChecksum.seal(buffer, crcOffset: Self.crcOffset)
        }
        return bytes
    }

    public static func decode(_ buffer: UnsafeRawBufferPointer) throws(FormatError) -> DeviceHeader {
        let name = "device header"
        var reader = try openVersionedHeader(buffer, bytes: encodedBytes, magic: Self.magic, structure: name)
        let volumeID = VolumeID(bytes: reader.bytes(16))
        let rawTier: UInt8 = reader.get()
        guard let tier = Tier(rawValue: rawTier), tier != .nvm else {
            throw .invalidField(structure: name, field: "tier", reason: "\(rawTier)")
        }
        let slot: UInt8 = reader.get()
        reader.skip(2)
        let blockBytes: UInt32 = reader.get()
        guard blockBytes == UInt32(Format.blockBytes) else {
            throw .invalidField(structure: name, field: "block size", reason: "\(blockBytes)")
        }
        return DeviceHeader(volumeID: volumeID, tier: tier, slot: slot, byteCount: reader.get(),
                            segmentBytes: reader.get(), dataOffset: reader.get())
    }
}
