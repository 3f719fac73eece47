// Recovery of client logs: a log descriptor copy a crash tore is rewritten from the other;
// every log region whose owner is gone (state attached or detached while nobody holds the
// volume) is digested to its end, damage searched past, and released;
// then every orphan (an inode unlinked while open, or during the recovery digests) is freed,
// since after a crash nothing is open any more. `shale digest` runs this offline; opening a
// volume for service will run it first.

import ShaleFormat
import ShaleMedia

public struct RegionRecovery: Sendable {
    public var region: Int
    public var ownerPID: UInt32
    public var epoch: UInt64
    public var applied = 0
    public var refused: [(sequence: UInt64, reason: String)] = []
    public var damage: [LogDamage] = []
    public var end: LogEnd?
}

extension Digester {
    /// Digests every region with an owner to the end of its log, then frees it; then frees
    /// every orphan (`freeOrphans`). The caller holds the volume exclusively, so every owner
    /// is gone and nothing is open.
    public func recoverAllLogs() throws(DigestError) -> [RegionRecovery] {
        var results: [RegionRecovery] = []
        // A descriptor update a crash tore: the other copy is current; rewrite the torn one.
        logTable.repairInterruptedUpdates()
        for region in 0 ..< logTable.regionCount {
            guard let descriptor = logTable.read(region).descriptor, descriptor.state != .free else { continue }
            var result = RegionRecovery(region: region, ownerPID: descriptor.ownerPID, epoch: descriptor.epoch)
            while true {
                let report = try digest(region: region, recovery: true)
                result.applied += report.applied
                result.refused += report.refused
                result.damage += report.damage
                if let end = report.end {
                    result.end = end
                    break
                }
                // The batch stopped for its size, not at the end of the log: go on.
            }
            do {
                try logTable.release(region)
            } catch {
                throw .damaged("\(error)")
            }
            results.append(result)
        }
        // Orphans are kept while logs are digested (a later record may still write one);
        // with every log digested, none can be used again.
        try freeOrphans()
        return results
    }
}
