// Opening a volume: choose the superblock, repair a damaged copy from the good one, and
// check every lower device against the superblock before anything else reads it.
//
// Superblock choice: each copy either verifies or not. The verifying copy with the higher
// generation wins; a copy that does not verify, or is older, is rewritten from the winner
// (and reported) when the volume is opened for writing. A copy of an unknown format version
// stops the open: an older shale never "repairs" a newer file system.

import ShaleFormat
import ShaleMedia

/// A superblock copy found damaged or stale when the volume was opened.
public struct SuperblockCopyIssue: Equatable, Sendable {
    /// "A" or "B".
    public var copy: String
    /// "is damaged (…)" or "is stale (…)".
    public var problem: String
    /// Rewritten from the other copy (`source`) at open.
    public var repaired: Bool
    public var source: String
}

public final class Volume<NVM: PersistentMemory> {
    public let nvm: NVM
    public let nvmName: String
    public private(set) var superblock: Superblock
    public let lowerDevices: [Tier: any BlockDevice]
    /// What opening found and did, for the user (a repaired copy, for instance).
    public private(set) var notes: [String] = []
    /// Superblock copies that verified when the volume was opened (e.g. ["A", "B"]).
    public private(set) var validCopies: [String] = []
    /// Each superblock copy that was damaged or stale at open, and whether it was rewritten
    /// (the same findings as `notes`, for fsck).
    public private(set) var superblockCopyIssues: [SuperblockCopyIssue] = []
    /// The committed metadata-journal transaction a crash had left, applied at open.
    public private(set) var replayedJournalTransaction: (sequence: UInt64, writes: Int)?

    public var seed: UInt32 { superblock.volumeID.checksumSeed }

    /// Opens a volume. `lowerDevices` are the devices the manifest lists, with the names to
    /// use in messages. With `repair`, a damaged or stale superblock copy is rewritten.
    /// `expectedVolumeID` (from the manifest) is checked before anything is repaired: a
    /// region that belongs to another volume is never written.
    public init(nvm: NVM, nvmName: String, lowerDevices: [(tier: Tier, device: any BlockDevice, name: String)],
                repair: Bool, expectedVolumeID: VolumeID? = nil) throws(VolumeError) {
        self.nvm = nvm
        self.nvmName = nvmName
        let names = ["A", "B"]
        var decoded: [Superblock?] = []
        var failures: [FormatError] = []
        for (index, offset) in Superblock.copyOffsets.enumerated() {
            guard nvm.byteCount >= offset + Superblock.encodedBytes else {
                throw .notShale(path: nvmName, reasons: [.truncated(structure: "NVM region", needed: 2 * Format.blockBytes,
                                                                    available: nvm.byteCount)])
            }
            do {
                decoded.append(try Superblock.decode(nvm.view(at: offset, count: Superblock.encodedBytes),
                                                     nvmBytes: UInt64(nvm.byteCount)))
            } catch {
                if case .unsupportedVersion = error { throw .unsupportedVersion(path: nvmName, error) }
                decoded.append(nil)
                failures.append(error)
                _ = index
            }
        }
        let valid = decoded.enumerated().compactMap { index, copy in copy.map { (index, $0) } }
        guard let winner = valid.max(by: { $0.1.generation < $1.1.generation }) else {
            if failures.allSatisfy({ if case .badMagic = $0 { true } else { false } }) {
                throw .notShale(path: nvmName, reasons: failures)
            }
            throw .bothSuperblocksDamaged(path: nvmName, reasons: failures)
        }
        if let expectedVolumeID, winner.1.volumeID != expectedVolumeID {
            throw .deviceMismatch(path: nvmName, reason: "holds file system \(winner.1.volumeID), but its manifest names \(expectedVolumeID)")
        }
        superblock = winner.1
        validCopies = valid.map { names[$0.0] }
        for (index, copy) in decoded.enumerated() where index != winner.0 {
            let problem: String?
            if copy == nil {
                problem = "is damaged (\(failures.first!.description))"
            } else if copy!.generation != winner.1.generation || copy! != winner.1 {
                problem = "is stale (generation \(copy!.generation), copy \(names[winner.0]) has \(winner.1.generation))"
            } else {
                problem = nil
            }
            guard let problem else { continue }
            superblockCopyIssues.append(SuperblockCopyIssue(copy: names[index], problem: problem, repaired: repair,
                                                            source: names[winner.0]))
            if repair {
                Formatter.writeSuperblockCopy(winner.1, to: nvm, at: Superblock.copyOffsets[index])
                notes.append("superblock copy \(names[index]) \(problem); repaired from copy \(names[winner.0])")
            } else {
                notes.append("superblock copy \(names[index]) \(problem); not repaired (read-only open)")
            }
        }

        // A metadata transaction committed before a crash is applied before anything reads
        // the shared area (recovery, step 1).
        let journal = MetadataJournal(nvm: nvm, superblock: winner.1)
        do {
            if repair {
                if let replayed = try journal.recover() {
                    replayedJournalTransaction = (replayed.sequence, replayed.writes.count)
                    notes.append("applied metadata journal transaction \(replayed.sequence) (\(replayed.writes.count) writes) left by a crash")
                }
            } else {
                try journal.verify()
            }
        } catch {
            throw .journal(error)
        }

        // Every lower device the superblock names must be given, and must be that device.
        var devices: [Tier: any BlockDevice] = [:]
        for (slot, descriptor) in winner.1.devices.enumerated() {
            guard let descriptor, descriptor.tier != .nvm else { continue }
            guard let given = lowerDevices.first(where: { $0.tier == descriptor.tier }) else {
                throw .missingDevice(tier: descriptor.tier,
                                     reason: "the superblock names one (made at \(descriptor.pathHint)) but none was given")
            }
            try Self.check(given.device, name: given.name, against: descriptor, slot: slot, volumeID: winner.1.volumeID)
            devices[descriptor.tier] = given.device
        }
        for given in lowerDevices where winner.1.device(given.tier) == nil {
            throw .deviceMismatch(path: given.name, reason: "the file system has no \(given.tier) tier")
        }
        self.lowerDevices = devices
    }

    static func check(_ device: any BlockDevice, name: String, against descriptor: DeviceDescriptor, slot: Int,
                      volumeID: VolumeID) throws(VolumeError) {
        let buffer = AlignedBuffer(byteCount: Format.blockBytes)
        guard device.byteCount >= UInt64(Format.blockBytes) else {
            throw .deviceMismatch(path: name, reason: "is \(device.byteCount) bytes, too small to hold a device header")
        }
        try VolumeError.wrap { () throws(MediaError) in try device.read(into: buffer.bytes, at: 0) }
        let header: DeviceHeader
        do {
            header = try DeviceHeader.decode(UnsafeRawBufferPointer(buffer.bytes))
        } catch {
            if case .unsupportedVersion = error { throw .unsupportedVersion(path: name, error) }
            throw .deviceMismatch(path: name, reason: "is not a Shale \(descriptor.tier) device (\(error))")
        }
        guard header.volumeID == volumeID else {
            throw .deviceMismatch(path: name, reason: "belongs to another Shale file system (\(header.volumeID), expected \(volumeID))")
        }
        guard header.tier == descriptor.tier, Int(header.slot) == slot else {
            throw .deviceMismatch(path: name, reason: "is this file system's \(header.tier) device, given as its \(descriptor.tier) device (swapped?)")
        }
        guard header.dataOffset == descriptor.dataOffset, header.segmentBytes == descriptor.segmentBytes else {
            throw .deviceMismatch(path: name, reason: "its header disagrees with the superblock about its layout "
                + "(data at \(header.dataOffset), segments of \(header.segmentBytes); expected \(descriptor.dataOffset), \(descriptor.segmentBytes))")
        }
        guard header.byteCount == descriptor.byteCount, device.byteCount >= descriptor.byteCount else {
            throw .deviceMismatch(path: name,
                                  reason: "holds \(device.byteCount) bytes; the file system expects \(descriptor.byteCount) (truncated or resized?)")
        }
    }
}
