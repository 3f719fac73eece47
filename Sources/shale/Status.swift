// shale status: what a file system is, where its devices are, how full each tier is.

import ArgumentParser
import KernFS
import ShaleFormat
import ShaleMedia

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a file system's superblock, devices, free space and logs.",
        discussion: """
        Reads the volume offline. A damaged superblock copy is repaired from the other one \
        and reported; if both copies are damaged, status says so and exits non-zero. \
        Exits 1 when any problem is found.

        For each log with an owner: its undigested records and their bytes (digest lag), \
        and its fill, the share of the log those bytes take (a writer waits for a digest \
        when it reaches 100%).
        """)

    @OptionGroup var target: VolumeArgument

    func run() throws {
        let opened = try target.open(for: "status")
        let superblock = opened.volume.superblock
        let report = opened.volume.spaceReport()
        Output.line("Shale file system \(superblock.volumeID)")
        let state = superblock.flags.contains(.inUse) ? "in use or not closed cleanly (recovery runs at next mount)" : "clean"
        let copies = opened.volume.validCopies.count == 2 ? "copies A and B valid" : "only copy \(opened.volume.validCopies.joined()) valid"
        let lines: [[String]] = [
            ["label:", superblock.label.isEmpty ? "(none)" : superblock.label],
            ["format:", "version \(superblock.formatVersion), \(Format.blockBytes)-byte blocks"],
            ["created:", Output.utc(superblock.createdSeconds)],
            ["state:", state + (opened.inUseElsewhere ? "; held by another shale process, read without repair" : "")],
            ["superblock:", "\(copies), generation \(superblock.generation)"],
            ["manifest:", opened.manifestPath],
        ]
        Output.table(lines).forEach { Output.line($0) }
        for note in opened.volume.notes { Output.line("  repaired:    \(note)") }

        Output.line()
        Output.line("Devices:")
        var rows = [["TIER", "SIZE", "DATA", "USED", "FREE", "USE%", "PATH"]]
        for tier in report.tiers {
            let block = UInt64(Format.blockBytes)
            let percent = tier.dataBlocks == 0 ? 0 : (tier.usedBlocks * 1000 / tier.dataBlocks + 5) / 10
            let path = opened.devicePaths.first { $0.tier == tier.tier }?.path ?? tier.pathHint
            rows.append(["\(tier.tier)", ByteSize.format(tier.byteCount), ByteSize.format(tier.dataBlocks * block),
                         ByteSize.format(tier.usedBlocks * block), ByteSize.format(tier.freeBlocks * block),
                         "\(percent)%", path])
        }
        Output.table(rows).forEach { Output.line($0) }

        var media: [[String]] = []
        for tier in report.tiers {
            if tier.tier == .nvm {
                media.append(["nvm:", opened.volume.nvm.persistence.rawValue])
            } else {
                let mode = opened.ioModes[tier.tier] == .direct ? "O_DIRECT" : "buffered I/O"
                media.append(["\(tier.tier):", "segments of \(ByteSize.format(tier.segmentBytes)), \(mode) through io_uring"])
            }
        }
        Output.table(media).forEach { Output.line($0) }

        let layout = superblock.layout
        let attached = report.logRegions.filter { $0?.state == .attached }.count
        let detached = report.logRegions.filter { $0?.state == .detached }.count
        Output.line()
        Output.line("Metadata:")
        let details: [[String]] = [
            ["logs:", "\(layout.logRegionCount) × \(ByteSize.format(layout.logRegionBytes)), \(attached) attached, \(detached) awaiting digest"],
            ["inodes:", "\(report.inodesUsed) in use, \(report.inodesAllocated) allocated in \(report.inodeChunksAllocated) chunk(s), capacity \(layout.inodeCapacity - 1)"],
            ["journal:", "\(ByteSize.format(layout.journalBytes)), \(report.journalSequence) transactions applied"],
        ]
        Output.table(details).forEach { Output.line($0) }

        // Each log with an owner: how far its digest lags. Offline the logs cannot change, so
        // they are scanned as recovery would (past damage); a live log ends at its first gap.
        let logTable = LogTable(nvm: opened.volume.nvm, superblock: superblock)
        let lags = report.logRegions.enumerated().compactMap { region, descriptor -> LogLag? in
            guard let descriptor, descriptor.state != .free else { return nil }
            return logTable.lag(region: region, descriptor: descriptor, searchPastDamage: !opened.inUseElsewhere)
        }
        if !lags.isEmpty {
            Output.line()
            Output.line("Logs:")
            var logRows = [["LOG", "STATE", "OWNER", "UNDIGESTED", "FILL"]]
            for lag in lags {
                let state = lag.state == .attached ? "attached" : "detached"
                let undigested = lag.records == 0 ? "none"
                    : "\(lag.records) record\(lag.records == 1 ? "" : "s"), \(ByteSize.format(lag.bytes))"
                let tenths = (lag.bytes * 1000 + lag.regionBytes / 2) / lag.regionBytes
                logRows.append(["\(lag.region)", state, "pid \(lag.ownerPID)", undigested, "\(tenths / 10).\(tenths % 10)%"])
            }
            Output.table(logRows).forEach { Output.line($0) }
        }
        if !report.problems.isEmpty {
            Output.line()
            Output.line("Problems (\(report.problems.count)):")
            report.problems.forEach { Output.line("  \($0)") }
            throw ExitCode(1)
        }
    }
}
