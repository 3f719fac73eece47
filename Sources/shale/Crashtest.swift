// shale crashtest: the crash-consistency harness (the CrashTest module). Runs workloads
// through the production LibFS and KernFS on simulated NVM that records every store, flush
// and fence; crashes each at every fence in the ways the hardware allows; recovers with the
// production recovery; checks the recovered tree against the durability contract and fsck.

import ArgumentParser
import CrashTest
import Dispatch
import ShaleMedia
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

struct Crashtest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crashtest",
        abstract: "Check the durability contract: crash workloads at every fence, recover, compare.",
        discussion: """
        Each workload runs once on simulated NVM that records every store, flush and fence. \
        Then, before every fence, the crash states the hardware allows are materialised: \
        every cache line written since its last fence kept, dropped, or torn at 8-byte \
        granularity (every keep/drop subset when few lines are pending, a seeded sample \
        otherwise, and a few tears). Each state is recovered with the production code; the \
        tree must equal the tree after the calls that had returned, or after the call in \
        flight too, and fsck must find the volume clean. Recovery is crashed too: for \
        --recovery-crashes states per workload it runs on recording NVM and is crashed at \
        each of its fences; recovering again must give the tree the uninterrupted recovery \
        gave. docs/consistency.md says more.

        Workloads: --seq N generates every sequence of N operations from a fixed set (ACE \
        style); --random N draws N long ones with --seed, digests forced at random points; \
        --workload FILE reads one operation per line (the format is in \
        docs/consistency.md; every report prints its workload in it). A failure prints the \
        workload, the crash state, the allowed and the recovered trees, and the command that \
        replays exactly that state. Exit status 1 when any workload fails.
        """)

    @Option(name: .customLong("workload"), help: ArgumentHelp("A workload file; repeat for several.", valueName: "file"))
    var workloadFiles: [String] = []

    @Option(help: ArgumentHelp("Bounded workloads: every sequence of this many operations (1, 2 or 3).", valueName: "n"))
    var seq: Int?

    @Option(help: ArgumentHelp("Random long workloads: this many, drawn with --seed, with digests forced at random points.", valueName: "n"))
    var random: Int?

    @Option(help: ArgumentHelp("Operations per random workload (a forced digest is one; a long write may be several calls).", valueName: "n"))
    var length: Int?

    @Flag(help: "Crash mkfs instead, at each of its fences: the volume must read as unformatted or as the whole empty file system.")
    var mkfs = false

    @Option(help: "Seeds the sampled crash states (and --sample).")
    var seed: UInt64 = 1

    @Option(name: .customLong("max-states"), help: "Crash states per workload at most.")
    var maxStates: Int = 5000

    @Option(help: "Workloads checked at once (default: one per CPU).")
    var jobs: Int?

    @Option(help: ArgumentHelp("Check only this many of the workloads, chosen with --seed.", valueName: "count"))
    var sample: Int?

    @Option(help: ArgumentHelp("Only the generated workload of this name (as a report prints it).", valueName: "name"))
    var only: String?

    @Option(help: ArgumentHelp("Replay: only the crash before this fence.", valueName: "n"))
    var fence: Int?

    @Option(help: ArgumentHelp("Replay: only this crash state at that fence.", valueName: "n"))
    var fate: Int?

    @Option(name: .customLong("recovery-crashes"),
            help: ArgumentHelp("Crash states per workload whose recovery is crashed in turn, at each of its fences (0: none; default 1).", valueName: "n"))
    var recoveryCrashes: Int?

    @Option(name: .customLong("recovery-fence"), help: ArgumentHelp("Replay: crash the recovery of the --fence/--fate state before this fence of it.", valueName: "n"))
    var recoveryFence: Int?

    @Option(name: .customLong("recovery-fate"), help: ArgumentHelp("Replay: only this crash state at that recovery fence.", valueName: "n"))
    var recoveryFate: Int?

    @Option(help: ArgumentHelp("Run with this known bug planted (debug builds only): \(PlantedBug.allCases.map(\.rawValue).joined(separator: ", ")). The harness must fail.",
                               valueName: "bug"))
    var plant: String?

    @Flag(name: .customLong("fail-fast"), help: "Stop each workload at its first failing crash state.")
    var failFast = false

    @Flag(help: "A line per workload, not only for failures.")
    var verbose = false

    func validate() throws {
        if let seq, !(1 ... 3).contains(seq) { throw ValidationError("--seq is 1, 2 or 3") }
        if [seq != nil, !workloadFiles.isEmpty, random != nil, mkfs].filter({ $0 }).count > 1 {
            throw ValidationError("give one of --seq, --workload, --random and --mkfs")
        }
        if let random, random < 1 { throw ValidationError("--random is at least 1") }
        if let length, length < 1 { throw ValidationError("--length is at least 1") }
        if length != nil, random == nil { throw ValidationError("--length needs --random") }
        if mkfs, only != nil || sample != nil || recoveryFence != nil {
            throw ValidationError("--mkfs takes no workloads (--only, --sample, --recovery-fence)")
        }
        // A crashed mkfs leaves no file system to recover, or an empty one: nothing to crash.
        if mkfs, recoveryCrashes != nil { throw ValidationError("--recovery-crashes does not apply to --mkfs") }
        if fate != nil, fence == nil { throw ValidationError("--fate needs --fence") }
        if recoveryFence != nil, fence == nil || fate == nil { throw ValidationError("--recovery-fence needs --fence and --fate") }
        if recoveryFate != nil, recoveryFence == nil { throw ValidationError("--recovery-fate needs --recovery-fence") }
        if let recoveryCrashes, recoveryCrashes < 0 { throw ValidationError("--recovery-crashes is 0 or more") }
        if let jobs, jobs < 1 { throw ValidationError("--jobs is at least 1") }
        if maxStates < 1 { throw ValidationError("--max-states is at least 1") }
        if let plant {
            guard PlantedBug(rawValue: plant) != nil else {
                throw ValidationError("unknown bug \(plant): one of \(PlantedBug.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard PlantedBug.compiledIn else { throw ValidationError("--plant needs a debug build (swift build): release builds contain no planted bugs") }
        }
    }

    func run() throws {
        if let plant {
            // Before any file-system code reads it (PlantedBug.active is read once).
            setenv("SHALE_PLANTED_BUG", plant, 1)
            guard PlantedBug.active?.rawValue == plant else { throw Output.fail("crashtest", "the planted bug did not take") }
            Output.line("crashtest: planted bug \(plant) is active: failures are expected")
        }
        var workloads: [(workload: Workload, file: String?)] = []
        for file in workloadFiles {
            let text: String
            do { text = String(decoding: try HostFiles.read(file), as: UTF8.self) } catch {
                throw Output.fail("crashtest", "cannot read \(file): \(error)")
            }
            do {
                workloads.append((try Workload(name: file, text: text), file))
            } catch {
                throw Output.fail("crashtest", "\(file): \(error)")
            }
        }
        if mkfs {
            workloads = [(Workload(name: CrashExplorer.mkfsWorkloadName, setup: [], operations: []), nil)]
        } else if let random {
            workloads = RandomWorkloads.workloads(count: random, length: length ?? RandomWorkloads.defaultLength, seed: seed).map { ($0, nil) }
        } else if workloadFiles.isEmpty {
            workloads = BoundedWorkloads.sequences(of: seq ?? 1).map { ($0, nil) }
        }
        if let only {
            workloads = workloads.filter { $0.workload.name == only }
            guard !workloads.isEmpty else { throw Output.fail("crashtest", "no generated workload is named \(only)") }
        }
        if let sample, sample < workloads.count {
            var generator = SplitMix64(seed: seed)
            workloads = Array(workloads.shuffled(using: &generator).prefix(sample))
        }
        var options = CrashTestOptions()
        options.seed = seed
        options.maxStates = maxStates
        options.onlyFence = fence
        options.onlyFate = fate
        options.recoveryCrashStates = recoveryCrashes ?? 1
        options.failFast = failFast
        options.onlyRecoveryFence = recoveryFence
        options.onlyRecoveryFate = recoveryFate

        let explored = options
        let started = monotonicSeconds()
        let results = Mutex([WorkloadResult?](repeating: nil, count: workloads.count))
        let next = Atomic<Int>(0)
        let finished = Atomic<Int>(0)
        let showsProgress = isatty(STDERR_FILENO) == 1
        let workers = min(jobs ?? max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))), max(1, workloads.count))
        let list = workloads.map(\.workload)
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            while true {
                let index = next.add(1, ordering: .relaxed).oldValue
                guard index < list.count else { return }
                let result = mkfs ? CrashExplorer.runMkfs(options: explored) : CrashExplorer.run(list[index], options: explored)
                results.withLock { $0[index] = result }
                let done = finished.add(1, ordering: .relaxed).newValue
                if showsProgress {
                    let failed = results.withLock { $0.compactMap { $0 }.filter { !$0.passed }.count }
                    Output.errorRaw("\rcrashtest: \(done)/\(list.count) workloads, \(failed) failed")
                }
            }
        }
        if showsProgress { Output.errorRaw("\r\u{1B}[K") }

        let all = results.withLock { $0.compactMap { $0 } }
        var passed = 0, failed = 0, states = 0, recoveryStates = 0, fences = 0, trees = 0
        for (index, result) in all.enumerated() {
            states += result.states
            recoveryStates += result.recoveryStates
            fences += result.fences
            trees += result.distinctTrees
            if result.passed {
                passed += 1
                if verbose {
                    Output.line("ok   \(result.workload.name): \(result.states) states at \(result.fences) fences "
                        + "(\(result.recoveryStates) during recovery), "
                        + "\(result.distinctTrees) distinct trees, \(format(result.seconds)) s"
                        + (result.budgetExhausted ? " (stopped at --max-states)" : ""))
                }
                continue
            }
            failed += 1
            Output.line("FAIL \(result.workload.name)")
            if let invalid = result.invalid {
                Output.line("  the workload could not run: \(invalid)")
                continue
            }
            Output.line("  workload:")
            for line in result.workload.text.split(separator: "\n") { Output.line("    \(line)") }
            for violation in result.violations.prefix(3) {
                Output.line(violation.description.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
                Output.line("  replay: " + replayCommand(workloads[index], violation))
            }
            if result.violations.count > 3 { Output.line("  … and \(result.violations.count - 3) more crash states failed") }
        }
        Output.line("crashtest: \(all.count) workloads, \(states) crash states at \(fences) fences "
            + "(\(recoveryStates) of them during recovery), \(trees) distinct recovered trees, "
            + "\(format(monotonicSeconds() - started)) s: \(passed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode(1) }
    }

    private func replayCommand(_ item: (workload: Workload, file: String?), _ violation: CrashViolation) -> String {
        let source = mkfs ? "--mkfs"
            : random.map { "--random \($0) --length \(length ?? RandomWorkloads.defaultLength) --only \(item.workload.name)" }
            ?? item.file.map { "--workload \($0)" } ?? "--seq \(seq ?? 1) --only \(item.workload.name)"
        return "shale crashtest \(source) --seed \(seed) --fence \(violation.fence) --fate \(violation.fate)"
            + (violation.recoveryFence.map { " --recovery-fence \($0)" } ?? "")
            + (violation.recoveryFate.map { " --recovery-fate \($0)" } ?? "")
            + (plant.map { " --plant \($0)" } ?? "")
    }

    private func format(_ seconds: Double) -> String {
        let tenths = Int((seconds * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}
