// The superblock: the root of a Shale file system, 4096 bytes, kept in two copies at NVM
// offsets 0 and 4096 (docs/format.md "Superblock"). Every write bumps `generation`; a reader
// takes the valid copy with the higher generation and repairs the other.
//
// Commit point of mkfs and of every superblock update: the persist of a copy whose checksum
// verifies. Copies are written one at a time (B, persist, then A, persist), so a crash tears
// at most one.

public struct Superblock: Equatable, Sendable {
    public static let encodedBytes = Format.blockBytes
    public static let magic: [UInt8] = Array("SHALE".utf8) + [0] + Array("SB".utf8)
    /// NVM byte offsets of the two copies.
    public static let copyOffsets = [0, Format.blockBytes]
    static let crcOffset = 12
    static let deviceTableOffset = 512
    public static let labelBytes = 64

    public struct Flags: OptionSet, Sendable, Equatable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// Mounted (or opened) and not yet closed cleanly: recovery runs at the next open.
        public static let inUse = Flags(rawValue: 1 << 0)
        public static let known: Flags = [.inUse]
    }

    public var formatVersion: UInt32 = Format.version
    public var volumeID: VolumeID
    public var generation: UInt64
    public var createdSeconds: Int64
    public var flags: Flags = []
    public var rootInode: UInt64
    public var label: String
    /// The secret key of every directory's name hash (DirectoryHash.swift).
    public var directoryHashKey: DirectoryHashKey
    public var layout: NVMLayout
    /// Slot 0 is the NVM region itself; the others hold lower tiers or are empty (nil).
    public var devices: [DeviceDescriptor?]

    public init(volumeID: VolumeID, generation: UInt64, createdSeconds: Int64, rootInode: UInt64,
                label: String, directoryHashKey: DirectoryHashKey, layout: NVMLayout, devices: [DeviceDescriptor?]) {
        self.volumeID = volumeID
        self.generation = generation
        self.createdSeconds = createdSeconds
        self.rootInode = rootInode
        self.label = label
        self.directoryHashKey = directoryHashKey
        self.layout = layout
        self.devices = devices + [DeviceDescriptor?](repeating: nil, count: max(0, Format.deviceSlots - devices.count))
    }

    /// The device of a tier, if the file system has one.
    public func device(_ tier: Tier) -> DeviceDescriptor? {
        devices.lazy.compactMap { $0 }.first { $0.tier == tier }
    }

    public func encode() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.encodedBytes)
        bytes.withUnsafeMutableBytes { encode(into: $0) }
        return bytes
    }

    public func encode(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.encodedBytes && devices.count == Format.deviceSlots)
        let block = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< Self.encodedBytes])
        block.initializeMemory(as: UInt8.self, repeating: 0)
        var writer = FieldWriter(block)
        writer.put(bytes: Self.magic)
        writer.put(formatVersion)
        writer.put(UInt32(0))  // checksum, sealed below
        writer.put(bytes: volumeID.bytes)
        writer.put(generation)
        writer.put(createdSeconds)
        writer.put(UInt32(Format.blockBytes))
        writer.put(flags.rawValue)
        writer.put(UInt32(devices.compactMap { $0 }.count))
        writer.put(UInt32(0))
        writer.put(rootInode)
        layout.encode(into: &writer)
        writer.put(text: label, width: Self.labelBytes)
        writer.put(directoryHashKey.k0)
        writer.put(directoryHashKey.k1)
        layout.encodeJournal(into: &writer)
        assert(writer.offset <= Self.deviceTableOffset)
        writer.seek(Self.deviceTableOffset)
        for slot in devices {
            if let slot { slot.encode(into: &writer) } else { writer.skip(DeviceDescriptor.encodedBytes) }
        }
        StructureChecksum.seal(block, crcOffset: Self.crcOffset)
    }

    /// Validates everything a reader relies on; `nvmBytes` is the size of the region the
    /// copy was read from, so that no offset can point outside it.
    public static func decode(_ buffer: UnsafeRawBufferPointer, nvmBytes: UInt64) throws(FormatError) -> Superblock {
        let name = "superblock"
        var reader = try openVersionedHeader(buffer, bytes: encodedBytes, magic: Self.magic, structure: name)
        let volumeID = VolumeID(bytes: reader.bytes(16))
        let generation: UInt64 = reader.get()
        let created: Int64 = reader.get()
        let blockBytes: UInt32 = reader.get()
        guard blockBytes == UInt32(Format.blockBytes) else {
            throw .invalidField(structure: name, field: "block size", reason: "\(blockBytes)")
        }
        let flags = Flags(rawValue: reader.get())
        guard flags.isSubset(of: .known) else {
            throw .invalidField(structure: name, field: "flags", reason: "unknown bits \(flags.rawValue)")
        }
        let deviceCount: UInt32 = reader.get()
        reader.skip(4)
        let rootInode: UInt64 = reader.get()
        var layout = try NVMLayout.decode(from: &reader, nvmBytes: nvmBytes)
        guard let label = reader.text(width: labelBytes) else {
            throw .invalidField(structure: name, field: "label", reason: "not UTF-8")
        }
        let hashKey = DirectoryHashKey(k0: reader.get(), k1: reader.get())
        layout.decodeJournal(from: &reader)
        try layout.validate(nvmBytes: nvmBytes)
        reader.seek(deviceTableOffset)
        var devices: [DeviceDescriptor?] = []
        for _ in 0 ..< Format.deviceSlots { devices.append(try DeviceDescriptor.decode(from: &reader)) }
        guard devices.compactMap({ $0 }).count == Int(deviceCount) else {
            throw .invalidField(structure: name, field: "device count",
                                reason: "says \(deviceCount), table holds \(devices.compactMap { $0 }.count)")
        }
        guard let nvm = devices[0], nvm.tier == .nvm, nvm.byteCount == nvmBytes else {
            throw .invalidField(structure: name, field: "device table",
                                reason: "slot 0 must describe this NVM region of \(nvmBytes) bytes")
        }
        for tier in Tier.allCases where devices.compactMap({ $0 }).filter({ $0.tier == tier }).count > 1 {
            throw .invalidField(structure: name, field: "device table", reason: "two \(tier) devices")
        }
        // Bitmaps: whole blocks between the inode map and the log area, one per tier, disjoint
        // from each other and from the metadata journal.
        var bitmaps: [Range<UInt64>] = [layout.journalOffset ..< layout.journalOffset + layout.journalBytes]
        for device in devices.compactMap({ $0 }) {
            let (bytes, overflow) = device.bitmapBlocks.multipliedReportingOverflow(by: UInt64(Format.blockBytes))
            let (end, endOverflow) = device.bitmapOffset.addingReportingOverflow(bytes)
            guard !overflow, !endOverflow, device.bitmapOffset % UInt64(Format.blockBytes) == 0,
                  device.bitmapOffset >= layout.inodeMapEnd, end <= layout.logAreaOffset,
                  device.bitmapBlocks >= AllocatorBitmapBlock.blocksNeeded(for: device.dataBlocks) else {
                throw .invalidField(structure: name, field: "\(device.tier) bitmap",
                                    reason: "\(device.bitmapBlocks) blocks at \(device.bitmapOffset) outside the bitmap area")
            }
            let range = device.bitmapOffset ..< end
            guard !bitmaps.contains(where: { $0.overlaps(range) }) else {
                throw .invalidField(structure: name, field: "\(device.tier) bitmap",
                                    reason: "\(device.bitmapBlocks) blocks at \(device.bitmapOffset) overlap another bitmap or the journal")
            }
            bitmaps.append(range)
        }
        guard nvm.dataOffset >= layout.logAreaEnd else {
            throw .invalidField(structure: name, field: "NVM data area", reason: "overlaps the log area")
        }
        guard rootInode >= 1, rootInode < layout.inodeCapacity else {
            throw .invalidField(structure: name, field: "root inode", reason: "\(rootInode)")
        }
        var superblock = Superblock(volumeID: volumeID, generation: generation, createdSeconds: created,
                                    rootInode: rootInode, label: label, directoryHashKey: hashKey,
                                    layout: layout, devices: devices)
        superblock.flags = flags
        return superblock
    }
}
