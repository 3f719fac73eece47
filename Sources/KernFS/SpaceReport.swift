// Space accounting for `shale status`: per-tier free blocks from the allocator bitmaps
// (each bitmap block states its free count and is verified against its bits), inode chunks
// allocated, and the state of each log region.

import ShaleFormat
import ShaleMedia

public struct TierSpace: Sendable {
    public var tier: Tier
    public var dataBlocks: UInt64
    public var freeBlocks: UInt64
    public var byteCount: UInt64
    public var pathHint: String
    public var segmentBytes: UInt64
    /// Saturating: a damaged bitmap never makes this wrap (the damage is reported).
    public var usedBlocks: UInt64 { dataBlocks >= freeBlocks ? dataBlocks - freeBlocks : 0 }
}

public struct SpaceReport: Sendable {
    public var tiers: [TierSpace] = []
    public var inodeChunksAllocated: UInt64 = 0
    public var inodesUsed: UInt64 = 0
    public var logRegions: [LogRegionDescriptor?] = []
    /// Damage found while reading (bitmap blocks, inodes, log descriptors), for the user.
    public var problems: [String] = []

    public var inodesAllocated: UInt64 = 0
    /// The last metadata transaction applied.
    public var journalSequence: UInt64 = 0
}

extension Volume {
    public func spaceReport() -> SpaceReport {
        var report = SpaceReport()
        let layout = superblock.layout
        for descriptor in superblock.devices.compactMap({ $0 }) {
            var free: UInt64 = 0
            for index in 0 ..< descriptor.bitmapBlocks {
                let first = index * UInt64(AllocatorBitmapBlock.blocksPerBitmapBlock)
                let offset = Int(descriptor.bitmapOffset + index * UInt64(Format.blockBytes))
                do {
                    let bitmap = try AllocatorBitmapBlock.decode(
                        nvm.view(at: offset, count: Format.blockBytes), seed: seed, expectedTier: descriptor.tier, expectedFirstBlock: first,
                        expectedBlockCount: AllocatorBitmapBlock.blockCount(firstBlock: first, tierDataBlocks: descriptor.dataBlocks))
                    free += UInt64(bitmap.freeCount)
                } catch {
                    report.problems.append("\(error)")
                }
            }
            report.tiers.append(TierSpace(tier: descriptor.tier, dataBlocks: descriptor.dataBlocks, freeBlocks: free,
                                          byteCount: descriptor.byteCount, pathHint: descriptor.pathHint,
                                          segmentBytes: descriptor.segmentBytes))
        }
        for chunk in 0 ..< layout.inodeMapEntries {
            let chunkOffset = nvm.loadWord(at: Int(layout.inodeMapOffset + chunk * 8))
            guard chunkOffset != 0 else { continue }
            let nvmData = superblock.devices[0]!
            let dataEnd = nvmData.dataOffset + nvmData.dataBlocks * UInt64(Format.blockBytes)
            guard chunkOffset % UInt64(Format.blockBytes) == 0, chunkOffset >= nvmData.dataOffset,
                  chunkOffset <= dataEnd, layout.inodeChunkBytes <= dataEnd - chunkOffset else {
                report.problems.append("inode map entry \(chunk) points outside the NVM data area (\(chunkOffset))")
                continue
            }
            report.inodeChunksAllocated += 1
            for slot in 0 ..< UInt64(layout.inodesPerChunk) {
                let number = chunk * UInt64(layout.inodesPerChunk) + slot
                let view = nvm.view(at: Int(chunkOffset + slot * UInt64(layout.inodeBytes)), count: Inode.encodedBytes)
                // Free slots are all zeros: a cheap test before decoding.
                if view.load(as: UInt64.self) == 0, view.load(fromByteOffset: 8, as: UInt64.self) == 0 { continue }
                do {
                    if try Inode.decode(view, seed: seed, expectedNumber: number) != nil { report.inodesUsed += 1 }
                } catch {
                    report.problems.append("\(error)")
                }
            }
        }
        report.inodesAllocated = report.inodeChunksAllocated * UInt64(layout.inodesPerChunk)
        report.journalSequence = MetadataJournal(nvm: nvm, superblock: superblock).appliedSequence
        let logTable = LogTable(nvm: nvm, superblock: superblock)
        for region in 0 ..< logTable.regionCount {
            let current = logTable.read(region)
            report.logRegions.append(current.descriptor)
            for damage in current.damage {
                report.problems.append("log region \(region): \(damage)")
            }
        }
        return report
    }
}
