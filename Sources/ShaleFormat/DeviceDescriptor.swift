// One entry of the superblock's device table: a tier's device, its geometry, and where its
// allocator bitmap lives on NVM. 256 bytes; docs/format.md "Device table".

public struct DeviceDescriptor: Equatable, Sendable {
    public static let encodedBytes = 256
    public static let pathHintBytes = 192

    public var tier: Tier
    public var flags: UInt8 = 0
    public var blockBytes: UInt32 = UInt32(Format.blockBytes)
    /// Bytes of the whole device.
    public var byteCount: UInt64
    /// Segment size for log-structured placement on SSD/HDD; 0 on NVM.
    public var segmentBytes: UInt64
    /// Byte offset of the first data block on the device.
    public var dataOffset: UInt64
    /// Data blocks on the device, each `blockBytes`.
    public var dataBlocks: UInt64
    /// NVM byte offset of this tier's allocator bitmap, and its length in blocks.
    public var bitmapOffset: UInt64
    public var bitmapBlocks: UInt64
    /// Where the device was when the file system was made (a hint: devices are matched by
    /// the volume ID in their header, not by path).
    public var pathHint: String

    public init(tier: Tier, byteCount: UInt64, segmentBytes: UInt64, dataOffset: UInt64, dataBlocks: UInt64,
                bitmapOffset: UInt64, bitmapBlocks: UInt64, pathHint: String) {
        self.tier = tier
        self.byteCount = byteCount
        self.segmentBytes = segmentBytes
        self.dataOffset = dataOffset
        self.dataBlocks = dataBlocks
        self.bitmapOffset = bitmapOffset
        self.bitmapBlocks = bitmapBlocks
        self.pathHint = pathHint
    }

    /// Writes the entry; an unused slot is all zeros.
    public func encode(into writer: inout FieldWriter) {
        let start = writer.offset
        writer.put(tier.rawValue)
        writer.put(flags)
        writer.put(UInt16(0))
        writer.put(blockBytes)
        writer.put(byteCount)
        writer.put(segmentBytes)
        writer.put(dataOffset)
        writer.put(dataBlocks)
        writer.put(bitmapOffset)
        writer.put(bitmapBlocks)
        writer.skip(8)
        writer.put(text: pathHint, width: Self.pathHintBytes)
        assert(writer.offset - start == Self.encodedBytes)
    }

    /// Reads one slot: nil for an unused slot (tier byte 0).
    public static func decode(from reader: inout FieldReader) throws(FormatError) -> DeviceDescriptor? {
        let start = reader.offset
        let rawTier: UInt8 = reader.get()
        if rawTier == 0 {
            reader.seek(start + encodedBytes)
            return nil
        }
        guard let tier = Tier(rawValue: rawTier) else {
            throw .invalidField(structure: "device table", field: "tier", reason: "unknown tier \(rawTier)")
        }
        let flags: UInt8 = reader.get()
        reader.skip(2)
        let blockBytes: UInt32 = reader.get()
        var entry = DeviceDescriptor(tier: tier, byteCount: reader.get(), segmentBytes: reader.get(),
                                     dataOffset: reader.get(), dataBlocks: reader.get(),
                                     bitmapOffset: reader.get(), bitmapBlocks: reader.get(), pathHint: "")
        reader.skip(8)
        entry.flags = flags
        entry.blockBytes = blockBytes
        guard let hint = reader.text(width: pathHintBytes) else {
            throw .invalidField(structure: "device table", field: "path hint", reason: "not UTF-8")
        }
        entry.pathHint = hint
        guard blockBytes == UInt32(Format.blockBytes) else {
            throw .invalidField(structure: "device table", field: "block size",
                                reason: "\(blockBytes) bytes; format \(Format.version) uses \(Format.blockBytes)")
        }
        // On SSD and HDD, block 0 is the device header: data starts after it.
        if tier != .nvm, entry.dataOffset < UInt64(Format.blockBytes) {
            throw .invalidField(structure: "device table", field: "data area",
                                reason: "data at \(entry.dataOffset) overlaps the \(tier) device header in block 0")
        }
        let (dataBytes, overflow) = entry.dataBlocks.multipliedReportingOverflow(by: UInt64(blockBytes))
        if overflow || entry.dataOffset > entry.byteCount || dataBytes > entry.byteCount - entry.dataOffset {
            throw .invalidField(structure: "device table", field: "data area",
                                reason: "\(entry.dataBlocks) blocks at \(entry.dataOffset) do not fit in \(entry.byteCount) bytes")
        }
        let block = UInt64(Format.blockBytes)
        guard entry.dataOffset % block == 0, entry.segmentBytes % block == 0,
              (tier == .nvm) == (entry.segmentBytes == 0) else {
            throw .invalidField(structure: "device table", field: "geometry",
                                reason: "data at \(entry.dataOffset), segments of \(entry.segmentBytes) bytes: not block-aligned, or a segment size on the wrong tier")
        }
        return entry
    }
}
