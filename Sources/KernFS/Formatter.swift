// Formatting: writes an empty file system onto an NVM region and its lower-tier devices.
// Generic over the media, so tests and the crash harness format simulated devices with the
// same code.
//
// Order, and why it is crash-safe:
//   1. both old superblock copies are zeroed and persisted first, so a crash part way never
//      leaves an old superblock pointing at new structures;
//   2. the metadata area, the first inode chunk, the root directory and the allocator
//      bitmaps are written and persisted; each lower device gets its header and a flush;
//   3. commit point: superblock copy B, persisted, then copy A, persisted. Until B is
//      durable the region holds no valid superblock and reads as "not a Shale file system".

import ShaleFormat
import ShaleMedia

public struct FormatOptions: Sendable {
    public var label: String = ""
    public var logRegionCount: UInt32 = 16
    public var logRegionBytes: UInt64 = 16 << 20
    public var rootUID: UInt32 = 0
    public var rootGID: UInt32 = 0
    public var rootMode: UInt32 = 0o755
    /// Seconds since the epoch stamped on the superblock and the root directory.
    public var nowSeconds: Int64 = 0
    public var volumeID: VolumeID = .random()
    public var directoryHashKey: DirectoryHashKey = .random()

    public init() {}
}

/// A lower-tier device handed to the formatter.
public struct LowerDevice {
    public var tier: Tier
    public var device: any BlockDevice
    /// Bytes of the device the volume uses (at most the device's size; `--ssd-size` on a
    /// larger block device uses its start).
    public var byteCount: UInt64
    public var segmentBytes: UInt64
    public var pathHint: String

    public init(tier: Tier, device: any BlockDevice, byteCount: UInt64? = nil, segmentBytes: UInt64, pathHint: String) {
        self.tier = tier
        self.device = device
        self.byteCount = min(byteCount ?? device.byteCount, device.byteCount)
        self.segmentBytes = segmentBytes
        self.pathHint = pathHint
    }
}

public enum Formatter {
    /// The inode number of the root directory.
    public static let rootInode: UInt64 = 1

    public static func format<NVM: PersistentMemory>(nvm: NVM, nvmPathHint: String, lowerDevices: [LowerDevice],
                                                     options: FormatOptions) throws(VolumeError) -> Superblock {
        guard options.label.utf8.count <= Superblock.labelBytes else {
            throw .invalidOption("label of \(options.label.utf8.count) bytes is longer than \(Superblock.labelBytes)")
        }
        for tier in Tier.allCases where lowerDevices.filter({ $0.tier == tier }).count > 1 {
            throw .invalidOption("two \(tier) devices given; a volume has at most one per tier")
        }
        if lowerDevices.contains(where: { $0.tier == .nvm }) {
            throw .invalidOption("the NVM region is not a lower-tier device")
        }
        let planned: (layout: NVMLayout, devices: [DeviceDescriptor])
        do {
            planned = try NVMLayout.plan(
                nvmBytes: UInt64(nvm.byteCount), nvmPathHint: nvmPathHint,
                logRegionCount: options.logRegionCount, logRegionBytes: options.logRegionBytes,
                lowerTiers: lowerDevices.map {
                    NVMLayout.LowerTier(tier: $0.tier, byteCount: $0.byteCount,
                                        segmentBytes: $0.segmentBytes, pathHint: $0.pathHint)
                })
        } catch {
            throw .format(error, location: "planning the layout")
        }
        let layout = planned.layout
        let seed = options.volumeID.checksumSeed
        let block = UInt64(Format.blockBytes)

        // 1. No old superblock survives a crash from here on.
        nvm.fill(0, at: 0, count: 2 * Format.blockBytes)
        nvm.persist(offset: 0, count: 2 * Format.blockBytes)

        // 2. Metadata area: log table, inode map and bitmaps start out zero (free).
        let metadataStart = Int(layout.metadataStart)
        nvm.fill(0, at: metadataStart, count: Int(layout.logAreaOffset) - metadataStart)
        nvm.persist(offset: metadataStart, count: Int(layout.logAreaOffset) - metadataStart)

        // The metadata journal starts empty. (It is written before the superblock that names
        // it: nothing can commit through it before mkfs's commit point.)
        MetadataJournal(nvm: nvm, layout: layout, volumeSeed: seed).format()

        // The first inode chunk and the root directory's block take the first NVM data blocks.
        let nvmDevice = planned.devices[0]
        let chunkBlocks = layout.inodeChunkBytes / block
        let chunkOffset = nvmDevice.dataOffset
        let rootDirectoryBlock = chunkBlocks
        nvm.fill(0, at: Int(chunkOffset), count: Int(layout.inodeChunkBytes))
        nvm.persist(offset: Int(chunkOffset), count: Int(layout.inodeChunkBytes))
        nvm.storeWord(chunkOffset, at: Int(layout.inodeMapOffset))
        nvm.persist(offset: Int(layout.inodeMapOffset), count: 8)

        let rootTime = Timestamp(seconds: options.nowSeconds)
        let rootDirectory = DirectoryBlock(directory: rootInode, logicalBlock: 0,
                                           content: .leaf(localDepth: 0, hashPrefix: 0, overflowNext: 0, entries: []))
        let rootDirectoryOffset = Int(nvmDevice.dataOffset + rootDirectoryBlock * block)
        nvm.storePersist(rootDirectory.encode(seed: seed), at: rootDirectoryOffset)
        let root = Inode(number: rootInode, mode: Inode.typeDirectory | (options.rootMode & 0o7777),
                         uid: options.rootUID, gid: options.rootGID, linkCount: 2, size: block,
                         allocatedBlocks: 1, time: rootTime, parentHint: rootInode,
                         mapping: .extents([Extent(logicalBlock: 0, physicalBlock: rootDirectoryBlock,
                                                   blockCount: 1, tier: .nvm)]))
        let rootLocation = layout.inodeLocation(rootInode)
        nvm.storePersist(root.encode(seed: seed), at: Int(chunkOffset + rootLocation.offsetInChunk))

        // Allocator bitmaps: NVM marks the chunk and the root directory block used.
        let usedNVMBlocks = chunkBlocks + 1
        for device in planned.devices {
            writeBitmaps(nvm: nvm, device: device, seed: seed, usedPrefix: device.tier == .nvm ? usedNVMBlocks : 0)
        }

        // Lower devices: header in block 0, then a flush makes it durable.
        let header = AlignedBuffer(byteCount: Format.blockBytes)
        for (slot, descriptor) in planned.devices.enumerated() where descriptor.tier != .nvm {
            let lower = lowerDevices.first { $0.tier == descriptor.tier }!
            let encoded = DeviceHeader(volumeID: options.volumeID, tier: descriptor.tier, slot: UInt8(slot),
                                       byteCount: descriptor.byteCount, segmentBytes: descriptor.segmentBytes,
                                       dataOffset: descriptor.dataOffset).encode()
            header.bytes.copyBytes(from: encoded)
            try VolumeError.wrap { () throws(MediaError) in
                try lower.device.write(header.bytes, at: 0)
                try lower.device.flush()
            }
        }

        // 3. Commit point.
        let superblock = Superblock(volumeID: options.volumeID, generation: 1, createdSeconds: options.nowSeconds,
                                    rootInode: rootInode, label: options.label,
                                    directoryHashKey: options.directoryHashKey, layout: layout,
                                    devices: planned.devices.map { Optional($0) })
        if PlantedBug.active == .tornSuperblock {
            // Planted: both copies stored whole, then one fence.
            for copy in Superblock.copyOffsets.reversed() { superblock.encode().withUnsafeBytes { nvm.storeFlush($0, at: copy) } }
            nvm.fence()
            return superblock
        }
        for copy in Superblock.copyOffsets.reversed() {
            writeSuperblockCopy(superblock, to: nvm, at: copy)
        }
        return superblock
    }

    /// Writes one superblock copy so that a crash part way never leaves a copy with a valid
    /// magic over a torn body: everything after the magic is persisted first, then the magic
    /// as one failure-atomic 8-byte store. (A copy that already held a superblock may tear
    /// into one that fails its checksum; the other copy is then whole.)
    public static func writeSuperblockCopy<NVM: PersistentMemory>(_ superblock: Superblock, to nvm: NVM, at offset: Int) {
        let encoded = superblock.encode()
        let magicBytes = Superblock.magic.count
        nvm.storePersist(Array(encoded[magicBytes...]), at: offset + magicBytes)
        let magic = encoded.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        nvm.storeWord(magic, at: offset)
        nvm.persist(offset: offset, count: magicBytes)
    }

    /// Writes every bitmap block of one tier, with its first `usedPrefix` blocks in use.
    static func writeBitmaps<NVM: PersistentMemory>(nvm: NVM, device: DeviceDescriptor, seed: UInt32, usedPrefix: UInt64) {
        let perBlock = UInt64(AllocatorBitmapBlock.blocksPerBitmapBlock)
        for index in 0 ..< device.bitmapBlocks {
            let first = index * perBlock
            let count = UInt32(min(perBlock, device.dataBlocks - first))
            var bitmap = AllocatorBitmapBlock(tier: device.tier, firstBlock: first, blockCount: count)
            if usedPrefix > first {
                for bit in 0 ..< Int(min(UInt64(count), usedPrefix - first)) { bitmap.setUsed(bit, true) }
            }
            let offset = Int(device.bitmapOffset + index * UInt64(Format.blockBytes))
            nvm.store(bitmap.encode(seed: seed), at: offset)
            nvm.flush(offset: offset, count: Format.blockBytes)
        }
        nvm.fence()
    }
}
