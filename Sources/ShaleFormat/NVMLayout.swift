// Where everything lives in the NVM region (docs/format.md "NVM layout"), computed once by
// mkfs from the volume's geometry and stored in the superblock. Offsets are bytes from the
// start of the region, all multiples of the block size:
//
//   superblock A | superblock B | log table | inode map | metadata journal | allocator bitmaps
//   | log area | data
//
// Inodes live in chunks allocated from the NVM data area on demand and found through the
// inode map (one 8-byte block number per chunk), so the inode table grows with the file
// system up to 2^32 inodes without reserving NVM for them at mkfs.

public struct NVMLayout: Equatable, Sendable {
    public static let inodesPerChunkDefault: UInt32 = 16_384
    /// Inode numbers a volume can ever hold (inode 0 is never used).
    public static let inodeCapacityDefault: UInt64 = 1 << 32

    public var logTableOffset: UInt64
    public var logRegionCount: UInt32
    public var logAreaOffset: UInt64
    public var logRegionBytes: UInt64
    public var inodeMapOffset: UInt64
    public var inodeMapEntries: UInt64
    public var inodesPerChunk: UInt32
    public var inodeBytes: UInt32 = UInt32(Inode.encodedBytes)
    /// KernFS's metadata journal (MetadataJournal.swift): where digest and every other
    /// shared-area change commit before they are applied in place.
    public var journalOffset: UInt64 = 0
    public var journalBytes: UInt64 = 0
    public static let journalBytesMin: UInt64 = 64 * 1024

    /// 1 MiB below 256 MiB of NVM (so that the minimum size mkfs names is exact), then 1/64
    /// of the NVM up to 32 MiB.
    public static func journalBytesDefault(nvmBytes: UInt64) -> UInt64 {
        guard nvmBytes >= 256 << 20 else { return 1 << 20 }
        return min(nvmBytes / 64, 32 << 20) / UInt64(Format.blockBytes) * UInt64(Format.blockBytes)
    }

    public var metadataStart: UInt64 { UInt64(2 * Format.blockBytes) }
    public var logAreaEnd: UInt64 { logAreaOffset + UInt64(logRegionCount) * logRegionBytes }
    /// End of the inode map; the allocator bitmaps lie between it and the log area.
    public var inodeMapEnd: UInt64 { inodeMapOffset + inodeMapEntries * 8 }
    public var inodeCapacity: UInt64 { inodeMapEntries * UInt64(inodesPerChunk) }
    public var inodeChunkBytes: UInt64 { UInt64(inodesPerChunk) * UInt64(inodeBytes) }

    /// NVM offset of the two descriptor copies of log region `index`.
    public func logDescriptorOffset(region index: Int, copy: Int) -> UInt64 {
        precondition(index >= 0 && index < Int(logRegionCount) && (copy == 0 || copy == 1))
        return logTableOffset + UInt64(index * 2 + copy) * UInt64(LogRegionDescriptor.encodedBytes)
    }

    /// NVM offset of log region `index`.
    public func logRegionOffset(_ index: Int) -> UInt64 {
        precondition(index >= 0 && index < Int(logRegionCount))
        return logAreaOffset + UInt64(index) * logRegionBytes
    }

    /// NVM offset of the inode-map entry for `inode`'s chunk, and the inode's byte offset
    /// within that chunk.
    public func inodeLocation(_ inode: UInt64) -> (mapEntryOffset: UInt64, offsetInChunk: UInt64) {
        precondition(inode < inodeCapacity)
        let chunk = inode / UInt64(inodesPerChunk)
        let slot = inode % UInt64(inodesPerChunk)
        return (inodeMapOffset + chunk * 8, slot * UInt64(inodeBytes))
    }

    func encode(into writer: inout FieldWriter) {
        writer.put(logTableOffset)
        writer.put(logRegionCount)
        writer.put(inodesPerChunk)
        writer.put(logAreaOffset)
        writer.put(logRegionBytes)
        writer.put(inodeMapOffset)
        writer.put(inodeMapEntries)
        writer.put(inodeBytes)
        writer.put(UInt32(0))
    }

    static func decode(from reader: inout FieldReader, nvmBytes: UInt64) throws(FormatError) -> NVMLayout {
        var layout = NVMLayout(logTableOffset: reader.get(), logRegionCount: reader.get(), logAreaOffset: 0,
                               logRegionBytes: 0, inodeMapOffset: 0, inodeMapEntries: 0, inodesPerChunk: 0)
        layout.inodesPerChunk = reader.get()
        layout.logAreaOffset = reader.get()
        layout.logRegionBytes = reader.get()
        layout.inodeMapOffset = reader.get()
        layout.inodeMapEntries = reader.get()
        layout.inodeBytes = reader.get()
        reader.skip(4)
        return layout
    }

    /// The journal's fields, stored apart from the others (superblock bytes 208–223).
    func encodeJournal(into writer: inout FieldWriter) {
        writer.put(journalOffset)
        writer.put(journalBytes)
    }

    mutating func decodeJournal(from reader: inout FieldReader) {
        journalOffset = reader.get()
        journalBytes = reader.get()
    }

    /// Every region inside the NVM, in order, block-aligned, without overflow.
    func validate(nvmBytes: UInt64) throws(FormatError) {
        func fail(_ field: String, _ reason: String) -> FormatError {
            .invalidField(structure: "superblock layout", field: field, reason: reason)
        }
        let block = UInt64(Format.blockBytes)
        guard inodeBytes == UInt32(Inode.encodedBytes) else { throw fail("inode size", "\(inodeBytes)") }
        guard inodesPerChunk > 0, (UInt64(inodesPerChunk) * UInt64(inodeBytes)) % block == 0 else {
            throw fail("inodes per chunk", "\(inodesPerChunk)")
        }
        guard logRegionCount >= 1, logRegionCount <= 4096 else { throw fail("log region count", "\(logRegionCount)") }
        guard logRegionBytes >= LogRegionDescriptor.regionBytesMin, logRegionBytes % block == 0,
              logRegionBytes <= nvmBytes else {
            throw fail("log region size", "\(logRegionBytes)")
        }
        guard inodeMapEntries >= 1, inodeMapEntries <= (1 << 40) else { throw fail("inode map", "\(inodeMapEntries) entries") }
        guard !inodeMapEntries.multipliedReportingOverflow(by: UInt64(inodesPerChunk)).overflow else {
            throw fail("inode map", "\(inodeMapEntries) chunks of \(inodesPerChunk) inodes overflow 64 bits")
        }
        // Offsets come from the media: every sum is checked, a wrap is a bad layout.
        let (logTableEnd, tableOverflow) = logTableOffset.addingReportingOverflow(
            UInt64(logRegionCount) * 2 * UInt64(LogRegionDescriptor.encodedBytes))
        let (mapEnd, mapOverflow) = inodeMapOffset.addingReportingOverflow(inodeMapEntries * 8)
        let (logAreaBytes, overflow) = UInt64(logRegionCount).multipliedReportingOverflow(by: logRegionBytes)
        guard !overflow else { throw fail("log area", "overflows") }
        guard !tableOverflow, !mapOverflow else { throw fail("regions", "beyond the \(nvmBytes)-byte NVM region") }
        for (field, offset) in [("log table", logTableOffset), ("inode map", inodeMapOffset), ("log area", logAreaOffset)]
            where offset % block != 0 {
            throw fail(field, "offset \(offset) is not block-aligned")
        }
        guard logTableOffset >= metadataStart, logTableEnd <= inodeMapOffset, mapEnd <= logAreaOffset,
              logAreaOffset <= nvmBytes, logAreaBytes <= nvmBytes - logAreaOffset else {
            throw fail("regions", "out of order or beyond the \(nvmBytes)-byte NVM region")
        }
        guard journalOffset % block == 0, journalBytes % block == 0, journalBytes >= Self.journalBytesMin,
              journalOffset >= mapEnd, journalOffset <= logAreaOffset, journalBytes <= logAreaOffset - journalOffset else {
            throw fail("metadata journal", "\(journalBytes) bytes at \(journalOffset): not between the inode map and the log area")
        }
    }

    /// A lower tier as mkfs sees it before layout.
    public struct LowerTier: Sendable {
        public var tier: Tier
        public var byteCount: UInt64
        public var segmentBytes: UInt64
        public var pathHint: String
        public init(tier: Tier, byteCount: UInt64, segmentBytes: UInt64, pathHint: String) {
            self.tier = tier
            self.byteCount = byteCount
            self.segmentBytes = segmentBytes
            self.pathHint = pathHint
        }
    }

    /// Lays out a new volume. Throws with the numbers when the NVM region is too small.
    public static func plan(nvmBytes: UInt64, nvmPathHint: String, logRegionCount: UInt32, logRegionBytes: UInt64,
                            lowerTiers: [LowerTier], journalBytes: UInt64? = nil,
                            inodesPerChunk: UInt32 = inodesPerChunkDefault) throws(FormatError)
        -> (layout: NVMLayout, devices: [DeviceDescriptor]) {
        let block = UInt64(Format.blockBytes)
        func roundUp(_ value: UInt64) -> UInt64 { (value + block - 1) / block * block }
        // Absurd inputs are refused before any arithmetic can overflow.
        let limit: UInt64 = 1 << 60
        guard logRegionCount > 0, logRegionCount <= 4096 else {
            throw .invalidField(structure: "layout", field: "log region count", reason: "\(logRegionCount); 1 to 4096")
        }
        guard nvmBytes <= limit, logRegionBytes <= limit, inodesPerChunk > 0,
              lowerTiers.allSatisfy({ $0.byteCount <= limit && $0.segmentBytes <= limit }) else {
            throw .invalidField(structure: "layout", field: "geometry", reason: "a size is out of range (above 2^60 bytes)")
        }
        guard logRegionBytes <= nvmBytes / UInt64(logRegionCount) else {
            throw .invalidField(structure: "layout", field: "NVM size",
                                reason: "\(nvmBytes) bytes is too small for \(logRegionCount) logs of \(logRegionBytes) bytes")
        }
        let logTableOffset = 2 * block
        let inodeMapOffset = logTableOffset + roundUp(UInt64(logRegionCount) * 2 * UInt64(LogRegionDescriptor.encodedBytes))
        let inodeMapEntries = inodeCapacityDefault / UInt64(inodesPerChunk)
        var cursor = inodeMapOffset + roundUp(inodeMapEntries * 8)
        let journalOffset = cursor
        let journal = journalBytes ?? journalBytesDefault(nvmBytes: nvmBytes)
        guard journal >= journalBytesMin, journal % block == 0, journal <= limit else {
            throw .invalidField(structure: "layout", field: "metadata journal", reason: "\(journal) bytes")
        }
        cursor += journal

        var devices: [DeviceDescriptor] = []
        for lower in lowerTiers {
            // Lower tiers: block 0 is the device header; data starts at the first segment
            // boundary after it so that segments stay aligned on the device.
            let dataOffset = max(block, lower.segmentBytes)
            guard lower.byteCount > dataOffset + block else {
                throw .invalidField(structure: "layout", field: "\(lower.tier) size",
                                    reason: "\(lower.byteCount) bytes leave no room for data after the header")
            }
            let dataBlocks = (lower.byteCount - dataOffset) / block
            let bitmapBlocks = AllocatorBitmapBlock.blocksNeeded(for: dataBlocks)
            devices.append(DeviceDescriptor(tier: lower.tier, byteCount: lower.byteCount, segmentBytes: lower.segmentBytes,
                                            dataOffset: dataOffset, dataBlocks: dataBlocks,
                                            bitmapOffset: cursor, bitmapBlocks: bitmapBlocks, pathHint: lower.pathHint))
            cursor += bitmapBlocks * block
        }
        // The NVM bitmap covers the NVM data area, whose size depends on the bitmap's own.
        let logAreaBytes = UInt64(logRegionCount) * logRegionBytes
        let chunkBytes = UInt64(inodesPerChunk) * UInt64(Inode.encodedBytes)
        let needed = cursor + block + logAreaBytes + chunkBytes + 16 * block
        guard nvmBytes >= needed else {
            throw .invalidField(structure: "layout", field: "NVM size",
                                reason: "\(nvmBytes) bytes is too small: metadata, \(logRegionCount) logs of \(logRegionBytes) bytes and the first inode chunk need at least \(needed)")
        }
        let remaining = (nvmBytes / block) * block - cursor - logAreaBytes
        var nvmDataBlocks = remaining / block - AllocatorBitmapBlock.blocksNeeded(for: remaining / block)
        let nvmBitmapBlocks = AllocatorBitmapBlock.blocksNeeded(for: nvmDataBlocks)
        let nvmBitmapOffset = cursor
        cursor += nvmBitmapBlocks * block
        let logAreaOffset = cursor
        let dataOffset = logAreaOffset + logAreaBytes
        nvmDataBlocks = min(nvmDataBlocks, (nvmBytes - dataOffset) / block)
        let nvm = DeviceDescriptor(tier: .nvm, byteCount: nvmBytes, segmentBytes: 0, dataOffset: dataOffset,
                                   dataBlocks: nvmDataBlocks, bitmapOffset: nvmBitmapOffset,
                                   bitmapBlocks: nvmBitmapBlocks, pathHint: nvmPathHint)
        var layout = NVMLayout(logTableOffset: logTableOffset, logRegionCount: logRegionCount, logAreaOffset: logAreaOffset,
                               logRegionBytes: logRegionBytes, inodeMapOffset: inodeMapOffset,
                               inodeMapEntries: inodeMapEntries, inodesPerChunk: inodesPerChunk)
        layout.journalOffset = journalOffset
        layout.journalBytes = journal
        try layout.validate(nvmBytes: nvmBytes)
        return (layout, [nvm] + devices)
    }
}
