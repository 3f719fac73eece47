// shale fsck: check every invariant of a file system offline; with --repair, fix what can be
// fixed without losing acknowledged data. The checking and repairing are KernFS's
// (Checker.swift, CheckRepair.swift); this file opens the volume, prints, and sets the exit
// status.

import ArgumentParser
import Glibc
import KernFS
import ShaleFormat
import ShaleMedia

struct Fsck: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a file system's consistency; repair it with --repair.",
        discussion: """
        Checks a volume offline, prints each problem on its own line with where it is (inode, \
        directory and entry name, tier and block, log region and offset), then a summary line. \
        Checked:
          - superblock copies, and the metadata journal
          - log descriptors (both copies), and log records scanned as recovery scans them
          - every inode: checksum, number, extent map (tiers, bounds, tree), allocatedBlocks
          - the tree from the root: every entry names a live inode of its type, no directory is
            reached twice, parent hints, entry counts, link counts (a file: its entries; a
            directory: 2 + its subdirectories), and inodes nothing reaches (orphans)
          - blocks: none owned twice (inode chunks, files, directories, extent-tree nodes,
            extended attributes); allocator bitmaps verify, state their free counts right and
            mark exactly the owned blocks used

        Damage inside a log is a problem; a record torn by a crash is a clean end (it was never \
        acknowledged); records not yet digested are only noted: `shale digest` applies them. A \
        journal transaction a crash left unapplied is checked as if applied.

        Without --repair nothing is written. --repair opens the volume for writing (which \
        rewrites a damaged superblock copy and applies a journal transaction a crash left), then \
        fixes, each change a journaled transaction (a crash during a repair leaves the volume \
        consistent; run fsck --repair again): link counts, allocatedBlocks, directory sizes and \
        parent hints; leaked blocks freed, owned blocks marked used, damaged bitmap blocks \
        rebuilt; orphans with link count 0 freed; entries naming a free or impossible inode and \
        second entries for a directory removed, wrong entry types corrected. Blocks are freed, \
        and link counts lowered, only when every inode and directory could be read: otherwise an \
        unreadable one might own or name them. Damaged inodes, directories and extent maps, \
        blocks owned twice, damaged log records and orphans that still have links are reported \
        and left alone. The volume is then checked again and what remains is printed.

        --repair refuses a volume in use by another shale process, and one whose logs hold \
        undigested records (they may name inodes and blocks a repair would change): run \
        `shale digest DIR` first.

        Progress goes to standard error when it is a terminal, for large volumes (a million \
        inode slots or more), or with --progress.

        Exit status: 0 consistent (after --repair: nothing remains); 1 problems found (after \
        --repair: some remain); 2 the volume could not be checked (not a Shale volume, both \
        superblock copies damaged, a device missing or foreign).
        """)

    @OptionGroup var target: VolumeArgument

    @Flag(help: "Fix what can be fixed without losing acknowledged data, then check again.")
    var repair = false

    @Flag(name: .shortAndLong, help: "Print only problems and repairs: no progress, notes or summary.")
    var quiet = false

    @Flag(help: "Print one JSON object (problems with their locations, notes, counts, repairs) instead of text.")
    var json = false

    @Flag(help: "Report progress on standard error even when it is not a terminal.")
    var progress = false

    func validate() throws {
        if quiet && progress { throw ValidationError("--quiet cannot go with --progress") }
    }

    func run() throws {
        let opened: OpenedVolume
        do {
            if let restored = try SavedNVM.restoreIfMissing(volume: target.volume) { Output.error("shale fsck: \(restored)") }
            opened = try VolumeFiles.open(target.volume, repair: repair)
        } catch {
            Output.error("shale fsck: cannot check: \(error)")
            if json { Output.line(JSON.object([("error", .string(error.description)), ("exitStatus", .number(2))])) }
            throw ExitCode(2)
        }
        let reporter = ProgressReporter(enabled: !quiet, forced: progress)
        let checker = Checker(volume: opened.volume, live: opened.inUseElsewhere)
        var outcome: FsckOutcome
        var refusal: String?
        if repair && opened.inUseElsewhere {
            let report = checker.check(progress: reporter.report)
            outcome = FsckOutcome(checked: report)
            refusal = "the volume is in use by another shale process (a mount?); stop it, then run fsck --repair again"
        } else if repair {
            do {
                outcome = try checker.repair(progress: reporter.report)
            } catch {
                reporter.finish()
                Output.error("shale fsck: \(error)")
                throw ExitCode(1)
            }
            refusal = outcome.refusal
        } else {
            let report = checker.check(progress: reporter.report)
            outcome = FsckOutcome(checked: report)
        }
        reporter.finish()
        let status: Int32 = outcome.final.isClean ? 0 : 1
        if json {
            printJSON(opened, outcome, refusal: refusal, status: status)
        } else {
            printText(opened, outcome, refusal: refusal)
        }
        if status != 0 { throw ExitCode(status) }
    }

    // MARK: Text

    private func printText(_ opened: OpenedVolume, _ outcome: FsckOutcome, refusal: String?) {
        let initial = outcome.initial, final = outcome.final
        if opened.inUseElsewhere && !quiet {
            Output.line("note: the volume is in use by another shale process; checked read-only while it may change")
        }
        guard repair, refusal == nil else {
            for problem in initial.problems { Output.line(problem.description) }
            if !quiet {
                for notice in initial.notices { Output.line("note: \(notice)") }
            }
            if let refusal { Output.line("not repaired: \(refusal)") }
            if !quiet { Output.line(summary(initial, found: initial.problems.count)) }
            return
        }
        // Each problem once: fixed, or left with the reason.
        var printed = Set<String>()
        for problem in initial.problems {
            printed.insert(problem.description)
            if let action = outcome.repairs.first(where: { $0.problem == problem }) {
                Output.line("fixed: \(problem): \(action.done)")
            } else if let skip = outcome.skipped.first(where: { $0.problem == problem }) {
                Output.line("left: \(problem) (\(skip.reason))")
            } else if final.problems.contains(problem) {
                Output.line("left: \(problem)")
            } else {
                Output.line("fixed: \(problem): by the repairs above")
            }
        }
        for action in outcome.repairs where !printed.contains(action.problem.description) {
            printed.insert(action.problem.description)
            Output.line("fixed: \(action.problem): \(action.done)")
        }
        for problem in final.problems where !printed.contains(problem.description) {
            let reason = outcome.skipped.first { $0.problem == problem }?.reason
            Output.line("left: \(problem)" + (reason.map { " (\($0))" } ?? ""))
        }
        if !quiet {
            for notice in initial.notices { Output.line("note: \(notice)") }
            for notice in final.notices where !initial.notices.contains(notice) { Output.line("note: \(notice)") }
            let repaired = outcome.repairs.count
            let line = summary(final, found: initial.problems.count)
            Output.line(initial.problems.isEmpty ? line
                : "\(repaired) repair\(repaired == 1 ? "" : "s") in \(outcome.transactions) transaction\(outcome.transactions == 1 ? "" : "s"); " + line)
        }
    }

    private func summary(_ report: CheckReport, found: Int) -> String {
        let counts = report.counts
        var text: String
        if report.isClean {
            text = repair && found > 0 ? "clean now" : "clean"
        } else {
            let repairable = report.problems.filter(\.isRepairable).count
            text = "\(report.problems.count) problem\(report.problems.count == 1 ? "" : "s")"
            if !repair && repairable > 0 { text += " (\(repairable) repairable with --repair)" }
            if repair { text += " remain" }
        }
        text += ": \(plural(counts.inodes, "inode")) (\(plural(counts.directories, "directory", "directories")), "
            + plural(counts.regularFiles, "file")
        if counts.otherFiles > 0 { text += ", \(counts.otherFiles) other" }
        text += ")"
        let blocks = Tier.allCases.compactMap { tier in counts.blocksOwned[tier].map { "\($0) \(tier)" } }
        if !blocks.isEmpty { text += ", blocks in use: " + blocks.joined(separator: ", ") }
        if counts.undigestedRecords > 0 { text += ", \(counts.undigestedRecords) log records to digest" }
        return text
    }

    private func plural(_ count: UInt64, _ one: String, _ many: String? = nil) -> String {
        "\(count) " + (count == 1 ? one : many ?? one + "s")
    }

    // MARK: JSON

    private func printJSON(_ opened: OpenedVolume, _ outcome: FsckOutcome, refusal: String?, status: Int32) {
        func problemObject(_ problem: CheckProblem, extra: [(String, JSON)] = []) -> JSON {
            let details = problem.fields.map { field -> (String, JSON) in
                switch field.value {
                case let .number(value): (field.name, .number(value))
                case let .text(value): (field.name, .string(value))
                }
            }
            return .object([("code", .string(problem.code)), ("message", .string(problem.description)),
                            ("repairable", .bool(problem.isRepairable)), ("details", .object(details))] + extra)
        }
        func countsObject(_ counts: CheckCounts) -> JSON {
            func perTier(_ values: [Tier: UInt64]) -> JSON {
                .object(Tier.allCases.compactMap { tier in values[tier].map { ("\(tier)", .number($0)) } })
            }
            return .object([("inodeChunks", .number(counts.inodeChunks)), ("inodes", .number(counts.inodes)),
                            ("directories", .number(counts.directories)), ("regularFiles", .number(counts.regularFiles)),
                            ("otherFiles", .number(counts.otherFiles)), ("blocksOwned", perTier(counts.blocksOwned)),
                            ("blocksMarkedUsed", perTier(counts.blocksMarkedUsed)), ("logsInUse", .number(UInt64(counts.logsInUse))),
                            ("undigestedRecords", .number(counts.undigestedRecords))])
        }
        var fields: [(String, JSON)] = [
            ("volume", .string(opened.manifestPath)),
            ("uuid", .string("\(opened.volume.superblock.volumeID)")),
            ("repair", .bool(repair)),
            ("inUseElsewhere", .bool(opened.inUseElsewhere)),
            ("problems", .array(outcome.initial.problems.map { problemObject($0) })),
            ("notes", .array(outcome.initial.notices.map { .string($0.description) })),
            ("counts", countsObject(outcome.initial.counts)),
        ]
        if repair {
            fields.append(("refusal", refusal.map { .string($0) } ?? .null))
            fields.append(("repairs", .array(outcome.repairs.map { problemObject($0.problem, extra: [("done", .string($0.done))]) })))
            fields.append(("remaining", .array(outcome.final.problems.map { problem in
                problemObject(problem, extra: outcome.skipped.first { $0.problem == problem }.map { [("reason", .string($0.reason))] } ?? [])
            })))
            fields.append(("countsAfter", countsObject(outcome.final.counts)))
        }
        fields.append(("clean", .bool(outcome.final.isClean)))
        fields.append(("exitStatus", .number(UInt64(status))))
        Output.line(JSON.object(fields).text)
    }
}

/// Progress on standard error: a line rewritten in place on a terminal (at most ten times a
/// second), otherwise a line per tenth of each phase, for large volumes or when asked.
final class ProgressReporter {
    private let terminal: Bool
    private let forced: Bool
    private let enabled: Bool
    private var lastTenth: [CheckProgress.Phase: UInt64] = [:]
    private var lastDraw: Int64 = 0
    private var drawn = false
    /// Below this many items a phase is quick: no lines when stderr is not a terminal.
    static let large: [CheckProgress.Phase: UInt64] = [.logs: .max, .inodes: 1_000_000, .directories: 100_000, .bitmaps: 1024]

    init(enabled: Bool, forced: Bool) {
        self.enabled = enabled
        self.forced = forced
        terminal = isatty(2) == 1
    }

    func report(_ progress: CheckProgress) {
        guard enabled, progress.total > 0 else { return }
        let text = "checked \(progress.done)/\(progress.total) \(progress.phase.rawValue)"
        if terminal {
            let now = Self.milliseconds()
            guard now - lastDraw >= 100 || progress.done == progress.total else { return }
            lastDraw = now
            Output.errorRaw("\r\u{1B}[K" + text)
            drawn = true
        } else if forced || progress.total >= Self.large[progress.phase]! {
            let tenth = progress.done * 10 / progress.total
            guard tenth != lastTenth[progress.phase] else { return }
            lastTenth[progress.phase] = tenth
            Output.error("shale fsck: " + text)
        }
    }

    func finish() {
        if drawn { Output.errorRaw("\r\u{1B}[K") }
        drawn = false
    }

    private static func milliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}
