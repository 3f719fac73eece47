// shale digest: apply every client log to the shared area now (offline).

import ArgumentParser
import KernFS
import ShaleFormat
import ShaleMedia

struct Digest: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Digest every operation log into the shared area now.",
        discussion: """
        Offline: the volume must not be in use. Every log with records not yet digested (left \
        by a process that stopped or crashed) is applied to the shared area, then its region \
        is freed. A torn record at the end of a log was in flight at a crash and is dropped, \
        as the durability contract allows. Records that cannot be applied, and damage inside \
        a log, are reported; digest then exits 1.
        """)

    @OptionGroup var target: VolumeArgument

    func run() throws {
        let opened = try target.open(for: "digest")
        guard !opened.inUseElsewhere else {
            throw Output.fail("digest", "the volume is in use by another shale process (a mount?); digest needs it to itself")
        }
        for note in opened.volume.notes { Output.line("repaired: \(note)") }
        let nvm = opened.volume.nvm
        let superblock = opened.volume.superblock
        let results: [RegionRecovery]
        do {
            let allocator = try BlockAllocator(nvm: nvm, device: superblock.device(.nvm)!, volumeSeed: superblock.volumeID.checksumSeed)
            let inodes = try InodeTable(nvm: nvm, superblock: superblock, nvmAllocator: allocator)
            results = try Digester(nvm: nvm, superblock: superblock, allocator: allocator, inodes: inodes).recoverAllLogs()
        } catch {
            throw Output.fail("digest", "\(error)")
        }
        if results.isEmpty {
            Output.line("Nothing to digest: every log is empty.")
            return
        }
        var problems = 0
        for result in results {
            var line = "log \(result.region) (pid \(result.ownerPID), epoch \(result.epoch)): \(result.applied) records applied"
            if !result.refused.isEmpty { line += ", \(result.refused.count) refused" }
            if case let .tornTail(_, sequence) = result.end { line += "; record \(sequence) was torn by a crash and dropped" }
            Output.line(line)
            for refusal in result.refused { Output.line("  refused record \(refusal.sequence): \(refusal.reason)") }
            for damage in result.damage { Output.line("  \(damage)") }
            problems += result.refused.count + result.damage.count
        }
        if problems > 0 { throw ExitCode(1) }
    }
}
