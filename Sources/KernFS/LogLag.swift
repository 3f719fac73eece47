// How far a log is behind its digest: the committed records from the digest cursor on, and
// the bytes of the region they hold. `shale status` shows it per log (fill and digest lag);
// fsck counts undigested records with it (they are not damage: `shale digest` applies them).
//
// Read-only: the region is scanned with LogScanner from the descriptor's cursor, never
// trusted, never written. A live log may grow while it is scanned; the answer is then a
// moment of it.

import ShaleFormat
import ShaleMedia

public struct LogLag: Equatable, Sendable {
    public var region: Int
    public var state: LogRegionDescriptor.State
    public var ownerPID: UInt32
    public var epoch: UInt64
    public var regionBytes: UInt64
    /// Committed records not yet digested (wrap records not counted).
    public var records: UInt64 = 0
    /// Bytes of the region from the digest cursor to the end of the valid records, wrap
    /// padding included: the space a digest would give back to the writer.
    public var bytes: UInt64 = 0
    /// Where the scan stopped: a clean end, or a torn tail (a write in flight at a crash).
    public var end: LogEnd?
    /// Damage inside the log (found only when the scan searches past damage).
    public var damage: [LogDamage] = []

    /// Bytes in use as a fraction of the region, 0 … 1.
    public var fill: Double { regionBytes == 0 ? 0 : Double(bytes) / Double(regionBytes) }
}

extension LogTable {
    /// Scans `region` (whose current descriptor is `descriptor`) from its digest cursor.
    /// `searchPastDamage` as for recovery (fsck, offline) or not (a glance at a live log,
    /// which ends at its first gap).
    public func lag(region: Int, descriptor: LogRegionDescriptor, searchPastDamage: Bool) -> LogLag {
        var lag = LogLag(region: region, state: descriptor.state, ownerPID: descriptor.ownerPID, epoch: descriptor.epoch,
                         regionBytes: layout.logRegionBytes)
        guard descriptor.state != .free else { return lag }
        let regionBytes = layout.logRegionBytes
        let header = UInt64(LogRecordHeader.encodedBytes)
        let start = descriptor.digestedOffset + header > regionBytes ? 0 : descriptor.digestedOffset
        let view = nvm.view(at: Int(layout.logRegionOffset(region)), count: Int(regionBytes))
        let seed = LogRecordHeader.recordSeed(volumeSeed: volumeSeed, region: UInt32(region), epoch: descriptor.epoch)
        var scanner = LogScanner(region: view, epoch: UInt32(truncatingIfNeeded: descriptor.epoch), seed: seed,
                                 startOffset: descriptor.digestedOffset, startSequence: descriptor.digestedSequence,
                                 searchPastDamage: searchPastDamage)
        var records: UInt64 = 0
        while scanner.next() != nil { records += 1 }
        lag.records = records
        lag.end = scanner.end
        lag.damage = scanner.damage
        // Damage skipped over still holds space, so the bytes run from the cursor to where the
        // scan stopped, even when every record was damaged.
        let stop = scanner.offset + header > regionBytes ? 0 : scanner.offset
        let moved = records > 0 || !scanner.damage.isEmpty
        if stop > start {
            lag.bytes = stop - start
        } else if stop < start || moved {
            lag.bytes = regionBytes - start + stop
        }
        return lag
    }
}
