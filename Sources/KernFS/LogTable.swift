// The log table: KernFS's record of which process owns which log region, in which epoch,
// and how far its log has been digested (docs/format.md "Log table"). Only KernFS writes
// it; a LibFS instance receives a `LogGrant` and reads nothing else.
//
// Every update writes the copy that is not current, with `version + 1`, and persists it:
// durability point and commit point of the update in one. A crash during the write tears at
// most that copy, whose checksum then fails, and the other copy, the previous state, stays
// current.

import LibFS
import ShaleFormat
import ShaleMedia

public enum LogTableError: Error, Equatable, CustomStringConvertible {
    case noFreeRegion(count: Int)
    case notAttached(region: Int)
    case cursorOutOfRange(region: Int, offset: UInt64)

    public var description: String {
        switch self {
        case let .noFreeRegion(count): "all \(count) log regions are in use (more attached processes than --log-regions)"
        case let .notAttached(region): "log region \(region) is not attached"
        case let .cursorOutOfRange(region, offset): "digest cursor \(offset) is outside log region \(region)"
        }
    }
}

public final class LogTable<NVM: PersistentMemory>: @unchecked Sendable {
    public let nvm: NVM
    public let layout: NVMLayout
    public let volumeSeed: UInt32

    public init(nvm: NVM, superblock: Superblock) {
        self.nvm = nvm
        layout = superblock.layout
        volumeSeed = superblock.volumeID.checksumSeed
    }

    public var regionCount: Int { Int(layout.logRegionCount) }

    /// The current descriptor of a region (nil: never written, that is free with epoch 0),
    /// which copy holds it, and the damage found in the copies.
    public func read(_ region: Int) -> (descriptor: LogRegionDescriptor?, copy: Int?, damage: [FormatError]) {
        let copies = (nvm.view(at: Int(layout.logDescriptorOffset(region: region, copy: 0)), count: LogRegionDescriptor.encodedBytes),
                      nvm.view(at: Int(layout.logDescriptorOffset(region: region, copy: 1)), count: LogRegionDescriptor.encodedBytes))
        let current = LogRegionDescriptor.current(copies: copies, seed: volumeSeed, regionBytes: layout.logRegionBytes)
        return (current.descriptor, current.copyIndex, current.damaged)
    }

    /// Writes `descriptor` (its version replaced by the current one + 1) into the copy that
    /// is not current, and persists it. Returns what was written.
    @discardableResult
    public func write(_ region: Int, _ descriptor: LogRegionDescriptor) -> LogRegionDescriptor {
        let current = read(region)
        var next = descriptor
        next.version = (current.descriptor?.version ?? 0) &+ 1
        let target = current.copy == 0 ? 1 : 0
        nvm.storePersist(next.encode(seed: volumeSeed), at: Int(layout.logDescriptorOffset(region: region, copy: target)))
        return next
    }

    /// Hands a free region to a new owner: a new epoch (so nothing an earlier owner left can
    /// read as committed), the cursor at the start, state attached.
    public func attach(ownerPID: UInt32, ownerUID: UInt32, nowSeconds: Int64) throws(LogTableError) -> LogGrant {
        for region in 0 ..< regionCount {
            let current = read(region)
            let isFree: Bool
            if let descriptor = current.descriptor {
                // A damaged copy might have held a later epoch: reusing the region could let
                // an earlier owner's records verify under the new one. Left for fsck.
                isFree = descriptor.state == .free && current.damage.isEmpty
            } else {
                // Never written (both copies zero) is free. Both copies damaged: nothing in
                // the region can be trusted to be digested, so it is left for fsck.
                isFree = current.damage.isEmpty
            }
            guard isFree else { continue }
            let epoch = (current.descriptor?.epoch ?? 0) &+ 1
            let written = write(region, LogRegionDescriptor(state: .attached, version: 0, epoch: epoch, digestedOffset: 0,
                                                            digestedSequence: 1, ownerPID: ownerPID, ownerUID: ownerUID,
                                                            attachedSeconds: nowSeconds))
            return LogGrant(region: region, regionOffset: layout.logRegionOffset(region), regionBytes: layout.logRegionBytes,
                            epoch: written.epoch, startOffset: 0, startSequence: 1, volumeSeed: volumeSeed)
        }
        throw .noFreeRegion(count: regionCount)
    }

    /// Durability point of a digest: every record before (`offset`, `sequence`) is applied
    /// to the shared area and durable there; its log space may be reused from now on.
    public func advanceDigestCursor(_ region: Int, offset: UInt64, sequence: UInt64) throws(LogTableError) {
        guard var descriptor = read(region).descriptor, descriptor.state != .free else { throw .notAttached(region: region) }
        guard offset < layout.logRegionBytes, offset % 8 == 0 else { throw .cursorOutOfRange(region: region, offset: offset) }
        precondition(sequence >= descriptor.digestedSequence, "the digest cursor never moves back")
        descriptor.digestedOffset = offset
        descriptor.digestedSequence = sequence
        write(region, descriptor)
    }

    /// The digest cursor update as part of a metadata transaction (digest's batch): the
    /// non-current copy, as the transaction sees the table, gets the new cursor and version
    /// + 1. Durable at the transaction's commit, with the changes of the records it covers.
    public func advanceDigestCursor(_ region: Int, offset: UInt64, sequence: UInt64,
                                    in transaction: MetadataTransaction<NVM>) throws(LogTableError) {
        let copies = (0 ..< 2).map { copy in
            transaction.read(layout.logDescriptorOffset(region: region, copy: copy), count: LogRegionDescriptor.encodedBytes)
        }
        let current = copies[0].withUnsafeBytes { first in
            copies[1].withUnsafeBytes { second in
                LogRegionDescriptor.current(copies: (first, second), seed: volumeSeed, regionBytes: layout.logRegionBytes)
            }
        }
        guard var descriptor = current.descriptor, descriptor.state != .free else { throw .notAttached(region: region) }
        guard offset < layout.logRegionBytes, offset % 8 == 0 else { throw .cursorOutOfRange(region: region, offset: offset) }
        precondition(sequence >= descriptor.digestedSequence, "the digest cursor never moves back")
        descriptor.digestedOffset = offset
        descriptor.digestedSequence = sequence
        descriptor.version &+= 1
        let target = current.copyIndex == 0 ? 1 : 0
        transaction.write(descriptor.encode(seed: volumeSeed), at: layout.logDescriptorOffset(region: region, copy: target))
    }

    /// A copy that fails its checksum while the other verifies is what a crash during an
    /// update leaves: the update wrote the non-current copy and was torn, the other copy is
    /// the state before it (found by `shale crashtest`: a crash inside `attach` left the
    /// region unusable and fsck unclean). Rewrites the torn copy with the current state, so
    /// the table is whole again and the region usable. A free region's epoch moves past any
    /// the torn update could have claimed (an attach takes the current one + 1; a torn copy
    /// is at most one update newer than the other, since updates alternate copies), so no
    /// record written under that epoch could ever verify. Recovery runs this first; returns
    /// the regions rewritten. Both copies damaged is left for fsck.
    @discardableResult
    public func repairInterruptedUpdates() -> [Int] {
        var repaired: [Int] = []
        for region in 0 ..< regionCount {
            let current = read(region)
            guard var descriptor = current.descriptor, !current.damage.isEmpty else { continue }
            if descriptor.state == .free { descriptor.epoch &+= 1 }
            // Durability point: the torn copy (the non-current one) rewritten and persisted.
            write(region, descriptor)
            repaired.append(region)
        }
        return repaired
    }

    /// The owner is gone (closed, or died): its region waits to be digested.
    public func detach(_ region: Int) throws(LogTableError) {
        guard var descriptor = read(region).descriptor, descriptor.state == .attached else { throw .notAttached(region: region) }
        descriptor.state = .detached
        write(region, descriptor)
    }

    /// Everything in the region is digested: it may be handed out again.
    public func release(_ region: Int) throws(LogTableError) {
        guard var descriptor = read(region).descriptor, descriptor.state != .free else { throw .notAttached(region: region) }
        descriptor.state = .free
        descriptor.ownerPID = 0
        descriptor.ownerUID = 0
        write(region, descriptor)
    }
}
