// The crash explorer: runs a workload through the production LibFS and KernFS on simulated
// NVM that records every store, flush and fence, then materialises the crash states the
// hardware allows and checks each against the durability contract (docs/consistency.md).
//
// Where it sits: above KernFS, LibFS and the media layer's simulated NVM
// (SimulatedPersistentMemory, CacheLineModel); used by `shale crashtest` and its tests.
//
// The contract as checked: a crash at any moment leaves, after recovery, the tree of some
// prefix of the calls, containing every call that returned; the call in flight is applied
// whole or not at all. So at a crash with r calls returned the recovered tree must equal
// the oracle's tree after r calls, or after r + 1 (when a call was in flight), and the
// recovered volume must pass fsck.
//
// The oracle: the same workload run on the same starting image without a crash, its tree
// taken after each call. It shares the production code's semantics (POSIX behaviour is the
// differential tests' job, against the kernel's tmpfs); what the explorer checks is that a
// crash and recovery never produce anything but those trees.
//
// Fault model (what a crash may do): at each fence, the crash happens just before it, with
// every cache line written since its last fence pending; each pending line is kept (its
// newest contents reached the media), dropped (none did), or torn (each aligned 8-byte
// word independently old or new). Crash states per fence: all kept; all dropped; every
// keep/drop subset when at most `exhaustiveLines` lines are pending, otherwise
// `sampledFates` random subsets and three in store order (only the most recently stored
// line kept; the newer half kept; all but the oldest kept: the crashes that find a commit
// record persisted before what it commits, which a random subset of many lines rarely
// is); plus `tornFates` states with one random line torn. Random
// choices come from the workload's seed and the fence's ordinal, so a (fence, fate) pair
// names one state and `--fence F --fate K` replays it. Block devices are not in this model
// yet (the tiers are not either).
//
// Crashes during recovery: for `recoveryCrashStates` of the crash states (every line kept,
// at the first fence after the last call returned — a log full of records to digest — and
// at fences spread before it), the recovery itself runs on recording NVM and is crashed at
// each of its fences in the same ways. Recovering again must give exactly the tree the
// uninterrupted recovery gave (recovery is idempotent: it only digests committed records,
// and a digest is redone from its durable cursor), and fsck must find the volume clean.
// `--fence F --fate K --recovery-fence G --recovery-fate H` replays one such state.
//
// Crashes during mkfs (`runMkfs`): formatting runs on recording NVM that starts as zeros,
// and is crashed at each of its fences. Its commit point is the first superblock copy made
// durable: a crashed mkfs must read as "not a Shale file system" (nothing committed) or open
// as the whole empty file system, fsck clean; never as damage ("both superblock copies
// damaged") or anything in between.

import KernFS
import LibFS
import ShaleFormat
import ShaleMedia
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

public struct CrashTestOptions: Sendable {
    /// Seeds the random fate choices.
    public var seed: UInt64 = 1
    /// Every keep/drop subset of the pending lines when at most this many are pending.
    public var exhaustiveLines = 5
    /// Otherwise this many random subsets.
    public var sampledFates = 8
    /// And this many states with one pending line torn.
    public var tornFates = 2
    /// Crash states per workload at most (then the explorer stops and says so).
    public var maxStates = 5000
    /// Stop a workload at its first violation.
    public var failFast = false
    /// Only this fence and fate (a replay), when set.
    public var onlyFence: Int?
    public var onlyFate: Int?
    /// Crash states whose recovery is crashed in turn (0: none; none either in a replay of
    /// one state, unless onlyRecoveryFence names a state of its recovery).
    public var recoveryCrashStates = 1
    /// Only this fence and fate of the recovery of the state named by onlyFence/onlyFate.
    public var onlyRecoveryFence: Int?
    public var onlyRecoveryFate: Int?
    /// The simulated NVM: small, so that each crash state is cheap to recover.
    public var nvmBytes = 8 << 20
    public var logBytes: UInt64 = 128 << 10

    public init() {}
}

/// One crash state whose recovery broke the contract.
public struct CrashViolation: Sendable, CustomStringConvertible {
    public var fence: Int
    public var fate: Int
    public var fateDescription: String
    /// A crash during the recovery of that state: the recovery's fence and fate.
    public var recoveryFence: Int?
    public var recoveryFate: Int?
    public var recoveryFateDescription = ""
    /// Events of the recorded run applied when it crashed.
    public var eventCount: Int
    public var callsReturned: Int
    public var reason: String
    public var allowed: [TreeSnapshot]
    public var found: TreeSnapshot?

    public var description: String {
        var lines = ["crash before fence \(fence) (event \(eventCount)), fate \(fate): \(fateDescription)"]
        if let recoveryFence, let recoveryFate {
            lines.append("then a crash during its recovery, before the recovery's fence \(recoveryFence), fate \(recoveryFate): \(recoveryFateDescription)")
        }
        lines.append("\(callsReturned) call(s) had returned; \(reason)")
        for (index, tree) in allowed.enumerated() {
            lines.append("  allowed tree \(index + 1) (after \(callsReturned + index) call(s)):")
            lines.append(tree.description)
        }
        if let found {
            lines.append("  recovered tree:")
            lines.append(found.description)
        }
        return lines.joined(separator: "\n")
    }
}

public struct WorkloadResult: Sendable {
    public var workload: Workload
    public var fences = 0
    /// Crash states checked, those during recovery included.
    public var states = 0
    /// Of them, crashes during a recovery.
    public var recoveryStates = 0
    /// Distinct trees recovery produced.
    public var distinctTrees = 0
    public var violations: [CrashViolation] = []
    /// The state budget ran out before every fence was explored.
    public var budgetExhausted = false
    public var seconds = 0.0
    /// The workload itself could not run (a setup call failed, the oracle disagreed with
    /// the recorded run): not a crash result.
    public var invalid: String?

    public var passed: Bool { violations.isEmpty && invalid == nil }
}

public enum CrashExplorer {
    typealias SimulatedFS = FileSystem<EmbeddedKernel<SimulatedPersistentMemory>>
    static let root = Credentials(uid: 0, gid: 0, umask: 0o022)

    /// `oracleShift` (tests only: proof that the comparison is not vacuous) judges every
    /// state against the trees that many calls later.
    public static func run(_ workload: Workload, options: CrashTestOptions = CrashTestOptions(), oracleShift: Int = 0) -> WorkloadResult {
        timed { explore(workload, options: options, oracleShift: oracleShift) }
    }

    /// `body`'s result with the seconds it took.
    static func timed(_ body: () -> WorkloadResult) -> WorkloadResult {
        let started = monotonicSeconds()
        var result = body()
        result.seconds = monotonicSeconds() - started
        return result
    }

    static func explore(_ workload: Workload, options: CrashTestOptions, oracleShift: Int) -> WorkloadResult {
        var result = WorkloadResult(workload: workload)
        let base: [UInt8]
        let oracle: [TreeSnapshot]
        let oracleErrors: [Errno?]
        let recorded: SimulatedPersistentMemory
        let recordedErrors: [Errno?]
        do {
            base = try startingImage(workload, options: options)
            (oracle, oracleErrors) = try oracleTrees(workload, base: base)
            (recorded, recordedErrors) = try recordedRun(workload, base: base)
        } catch {
            result.invalid = "\(error)"
            return result
        }
        guard oracleErrors == recordedErrors else {
            result.invalid = "the recorded run's results \(recordedErrors) differ from the oracle's \(oracleErrors)"
            return result
        }
        let trace = recorded.trace
        let returned = trace.marks.filter { $0.label.hasPrefix("returned") }.map(\.eventCount)
        guard returned.count == oracle.count - 1 else {
            result.invalid = "the recorded run made \(returned.count) calls, the oracle \(oracle.count - 1)"
            return result
        }
        var trees: Set<TreeSnapshot> = []
        let recoveryCrashFences = recoveryCrashFences(trace, returned: returned, options: options)
        result.fences = forEachCrashState(of: trace, from: base, onlyFence: options.onlyFence, onlyFate: options.onlyFate,
                                          seedFence: { $0 }, options: options, result: &result) { state, result in
            let (fence, fateIndex, fate, index, image) = (state.fence, state.fateIndex, state.fate, state.eventIndex, state.image)
            let callsReturned = returned.filter { $0 <= index }.count
            let first = min(callsReturned + oracleShift, oracle.count - 1)
            let allowed = Array(oracle[first ... min(first + 1, oracle.count - 1)])
            let outcome = recover(image)
            if let tree = outcome.tree { trees.insert(tree) }
            var reason = outcome.failure
            if reason == nil, let tree = outcome.tree, !allowed.contains(tree) {
                reason = "the recovered tree is none of the allowed ones"
            }
            if let reason {
                result.violations.append(CrashViolation(fence: fence, fate: fateIndex, fateDescription: fate.description,
                                                        eventCount: index, callsReturned: callsReturned, reason: reason,
                                                        allowed: allowed, found: outcome.tree))
            } else if let tree = outcome.tree,
                      options.onlyRecoveryFence != nil
                          || (options.onlyFence == nil && fateIndex == 0 && recoveryCrashFences.contains(fence)) {
                let primary = CrashViolation(fence: fence, fate: fateIndex, fateDescription: fate.description,
                                             eventCount: index, callsReturned: callsReturned, reason: "",
                                             allowed: [tree], found: nil)
                crashRecovery(of: image, expected: tree, primary: primary, options: options, result: &result)
            }
        }
        result.distinctTrees = trees.count
        return result
    }

    /// One crash state a trace walk materialised.
    struct CrashState {
        var fence: Int
        var fateIndex: Int
        var fate: Fate
        /// Events of the trace applied when it crashed.
        var eventIndex: Int
        var image: [UInt8]
    }

    /// Walks `trace` (applied to `initial`) and calls `body` with each crash state before each
    /// fence: the fates of `fates`, drawn with `seedFence(fence)`, filtered by `onlyFence` and
    /// `onlyFate`, counted in `result.states`, within `maxStates` and `failFast`. Returns the
    /// number of fences.
    static func forEachCrashState(of trace: PersistenceTrace, from initial: [UInt8], onlyFence: Int?, onlyFate: Int?,
                                  seedFence: (Int) -> Int, options: CrashTestOptions, result: inout WorkloadResult,
                                  _ body: (CrashState, inout WorkloadResult) -> Void) -> Int {
        let model = CacheLineModel(image: initial)
        var fence = 0
        for (index, event) in trace.events.enumerated() {
            if event == .fence {
                if onlyFence == nil || onlyFence == fence {
                    let fates = fates(pending: model.pendingLines, byLastStore: model.pendingLinesByLastStore,
                                      fence: seedFence(fence), options: options)
                    for (fateIndex, fate) in fates.enumerated() {
                        if let onlyFate, onlyFate != fateIndex { continue }
                        if options.failFast, !result.violations.isEmpty { break }
                        guard result.states < options.maxStates else {
                            result.budgetExhausted = true
                            break
                        }
                        result.states += 1
                        body(CrashState(fence: fence, fateIndex: fateIndex, fate: fate, eventIndex: index,
                                        image: model.crashImage(fate: fate.choose)), &result)
                    }
                }
                fence += 1
            }
            model.apply(event)
        }
        return fence
    }

    /// The fences whose every-line-kept state has its recovery crashed: the first fence
    /// after the last call returned (recovery then digests every record), and up to
    /// `recoveryCrashStates` - 1 more spread evenly before it.
    static func recoveryCrashFences(_ trace: PersistenceTrace, returned: [Int], options: CrashTestOptions) -> Set<Int> {
        guard options.recoveryCrashStates > 0 else { return [] }
        let fenceEvents = trace.events.indices.filter { trace.events[$0] == .fence }
        guard !fenceEvents.isEmpty else { return [] }
        let lastReturned = returned.last ?? 0
        let last = fenceEvents.firstIndex { $0 >= lastReturned } ?? fenceEvents.count - 1
        var chosen: Set<Int> = [last]
        let more = options.recoveryCrashStates - 1
        if more > 0 {
            for step in 1 ... more { chosen.insert(last * step / (more + 1)) }
        }
        return chosen
    }

    /// Crashes the recovery of `image` at each of its fences; each state, recovered again,
    /// must give `expected` (the uninterrupted recovery's tree) and a clean fsck.
    static func crashRecovery(of image: [UInt8], expected: TreeSnapshot, primary: CrashViolation, options: CrashTestOptions,
                              result: inout WorkloadResult) {
        let nvm = SimulatedPersistentMemory(image: image, recordsTrace: true)
        do {
            let fs = try open(nvm)
            _ = try TreeSnapshot(of: fs)
            try fs.close()
        } catch {
            var violation = primary
            violation.reason = "the recorded recovery failed: \(error)"
            result.violations.append(violation)
            return
        }
        // Fates of recovery fences draw from their own stream (fence numbers past any
        // workload's).
        _ = forEachCrashState(of: nvm.trace, from: image, onlyFence: options.onlyRecoveryFence, onlyFate: options.onlyRecoveryFate,
                              seedFence: { (1 << 40) + (primary.fence << 20) + $0 }, options: options, result: &result) { state, result in
            let (fence, fateIndex, fate, index) = (state.fence, state.fateIndex, state.fate, state.eventIndex)
            result.recoveryStates += 1
            let outcome = recover(state.image)
            var reason = outcome.failure
            if reason == nil, outcome.tree != expected {
            reason = "recovering again gave another tree than the uninterrupted recovery"
            }
            if let reason {
            var violation = primary
            violation.recoveryFence = fence
            violation.recoveryFate = fateIndex
            violation.recoveryFateDescription = fate.description
            violation.reason = reason + " (event \(index) of the recovery)"
            violation.found = outcome.tree
            result.violations.append(violation)
            }
        }
    }

    // MARK: - Crashes during mkfs

    /// The name `runMkfs` reports under.
    public static let mkfsWorkloadName = "mkfs"

    /// Crashes mkfs at each of its fences (see the file's opening comment).
    public static func runMkfs(options: CrashTestOptions = CrashTestOptions()) -> WorkloadResult {
        timed { exploreMkfs(options: options) }
    }

    static func exploreMkfs(options: CrashTestOptions) -> WorkloadResult {
        var result = WorkloadResult(workload: Workload(name: mkfsWorkloadName, setup: [], operations: []))
        let zeros = [UInt8](repeating: 0, count: options.nvmBytes)
        let nvm = SimulatedPersistentMemory(image: zeros, recordsTrace: true)
        let formatted: TreeSnapshot
        do {
            _ = try Formatter.format(nvm: nvm, nvmPathHint: "crashtest.nvm", lowerDevices: [], options: formatOptions(options))
            let fs = try open(SimulatedPersistentMemory(image: nvm.durableImage, recordsTrace: false))
            formatted = try TreeSnapshot(of: fs)
            try fs.close()
        } catch {
            result.invalid = "mkfs without a crash failed: \(error)"
            return result
        }
        var trees: Set<TreeSnapshot> = []
        result.fences = forEachCrashState(of: nvm.trace, from: zeros, onlyFence: options.onlyFence, onlyFate: options.onlyFate,
                                          seedFence: { $0 }, options: options, result: &result) { state, result in
            let (fence, fateIndex, fate, index, image) = (state.fence, state.fateIndex, state.fate, state.eventIndex, state.image)
            var reason: String?
            var found: TreeSnapshot?
            do {
            _ = try Volume(nvm: SimulatedPersistentMemory(image: image, recordsTrace: false), nvmName: "crashtest.nvm",
                           lowerDevices: [], repair: false)
            let outcome = recover(image)
            found = outcome.tree
            reason = outcome.failure
            if reason == nil, outcome.tree != formatted { reason = "it opens, but not as the empty file system mkfs makes" }
            if let tree = outcome.tree { trees.insert(tree) }
            } catch VolumeError.notShale {
            // Nothing committed: allowed.
            } catch {
            reason = "it reads neither as unformatted nor as a file system: \(error)"
            }
            if let reason {
            result.violations.append(CrashViolation(fence: fence, fate: fateIndex, fateDescription: fate.description,
                                                    eventCount: index, callsReturned: 0, reason: "a crash during mkfs: " + reason,
                                                    allowed: [formatted], found: found))
            }
        }
        result.distinctTrees = trees.count
        return result
    }

    // MARK: - The three runs

    /// The volume the explorer formats: small, with fixed identities, so that the same
    /// workload gives the same images, run after run.
    static func formatOptions(_ options: CrashTestOptions) -> FormatOptions {
        var format = FormatOptions()
        format.logRegionCount = 2
        format.logRegionBytes = options.logBytes
        format.nowSeconds = 1_700_000_000
        format.volumeID = VolumeID(bytes: Array(0x51 ..< 0x61))
        format.directoryHashKey = DirectoryHashKey(k0: 0x5348_414C_4521, k1: 0x4352_4153_4854)
        return format
    }

    /// The volume after the setup calls, everything digested and the file system closed.
    static func startingImage(_ workload: Workload, options: CrashTestOptions) throws -> [UInt8] {
        let nvm = SimulatedPersistentMemory(byteCount: options.nvmBytes, recordsTrace: false)
        let superblock = try Formatter.format(nvm: nvm, nvmPathHint: "crashtest.nvm", lowerDevices: [], options: formatOptions(options))
        let fs = try SimulatedFS(kernel: try EmbeddedKernel(nvm: nvm, superblock: superblock), credentials: root, background: false)
        for (index, operation) in workload.setup.enumerated() {
            do throws(Errno) { try operation.apply(to: fs) } catch {
                throw WorkloadError(description: "setup line \(index + 1) (\(operation.text)) failed: \(error)")
            }
        }
        try fs.digest()
        try fs.close()
        return nvm.durableImage
    }

    static func open(_ nvm: SimulatedPersistentMemory) throws -> SimulatedFS {
        let volume = try Volume(nvm: nvm, nvmName: "crashtest.nvm", lowerDevices: [], repair: true)
        return try SimulatedFS(kernel: try EmbeddedKernel(nvm: nvm, superblock: volume.superblock), credentials: root, background: false)
    }

    /// The tree after 0, 1, … n calls (an operation may be several calls: a long write),
    /// and what each operation answered.
    static func oracleTrees(_ workload: Workload, base: [UInt8]) throws -> ([TreeSnapshot], [Errno?]) {
        let fs = try open(SimulatedPersistentMemory(image: base, recordsTrace: false))
        var trees = [try TreeSnapshot(of: fs)]
        var errors: [Errno?] = []
        var snapshotFailure: (any Error)?
        for operation in workload.operations {
            do throws(Errno) {
                try operation.apply(to: fs) {
                    do { trees.append(try TreeSnapshot(of: fs)) } catch { snapshotFailure = error }
                }
                errors.append(nil)
            } catch {
                errors.append(error)
            }
            if let snapshotFailure { throw snapshotFailure }
            trees.append(try TreeSnapshot(of: fs))
        }
        fs.abandon()
        return (trees, errors)
    }

    /// The recorded run: every call marked when it returns, then a clean close.
    static func recordedRun(_ workload: Workload, base: [UInt8]) throws -> (SimulatedPersistentMemory, [Errno?]) {
        let nvm = SimulatedPersistentMemory(image: base, recordsTrace: true)
        let fs = try open(nvm)
        var errors: [Errno?] = []
        for (index, operation) in workload.operations.enumerated() {
            var call = 0
            do throws(Errno) {
                try operation.apply(to: fs) {
                    nvm.mark("returned \(index).\(call)")
                    call += 1
                }
                errors.append(nil)
            } catch {
                errors.append(error)
            }
            nvm.mark("returned \(index)")
        }
        try fs.close()
        return (nvm, errors)
    }

    // MARK: - One crash state

    struct Outcome {
        var tree: TreeSnapshot?
        var failure: String?
    }

    /// Recovery (the production open: every committed record digested), the tree, a clean
    /// close, then fsck of what recovery left.
    static func recover(_ image: [UInt8]) -> Outcome {
        let nvm = SimulatedPersistentMemory(image: image, recordsTrace: false)
        let tree: TreeSnapshot
        do {
            let fs = try open(nvm)
            do {
                tree = try TreeSnapshot(of: fs)
            } catch {
                fs.abandon()
                return Outcome(tree: nil, failure: "reading the recovered tree failed: \(error)")
            }
            try fs.close()
        } catch {
            return Outcome(tree: nil, failure: "recovery failed: \(error)")
        }
        do {
            let volume = try Volume(nvm: nvm, nvmName: "crashtest.nvm", lowerDevices: [], repair: false)
            let report = Checker(volume: volume).check()
            if !report.isClean {
                return Outcome(tree: tree, failure: "fsck after recovery: " + report.problems.map { "\($0)" }.joined(separator: "; "))
            }
        } catch {
            return Outcome(tree: tree, failure: "reopening for fsck failed: \(error)")
        }
        return Outcome(tree: tree, failure: nil)
    }

    // MARK: - Fates

    struct Fate {
        var description: String
        var choose: (Int) -> LineFate
    }

    /// The crash states at one fence, in a fixed order (the replay names them by index).
    static func fates(pending: [Int], byLastStore: [Int], fence: Int, options: CrashTestOptions) -> [Fate] {
        var result = [Fate(description: "every pending line kept (\(pending.count))", choose: { _ in .keep })]
        guard !pending.isEmpty else { return result }
        result.append(Fate(description: "every pending line dropped (\(pending.count))", choose: { _ in .drop }))
        func subset(_ kept: Set<Int>) -> Fate {
            Fate(description: "lines kept: \(kept.sorted().map(String.init).joined(separator: ",")); the other \(pending.count - kept.count) dropped",
                 choose: { kept.contains($0) ? .keep : .drop })
        }
        var generator = SplitMix64(seed: options.seed &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(fence))
        if pending.count <= options.exhaustiveLines {
            for mask in 1 ..< (1 << pending.count) - 1 {
                result.append(subset(Set(pending.indices.filter { mask & (1 << $0) != 0 }.map { pending[$0] })))
            }
        } else {
            for _ in 0 ..< options.sampledFates {
                result.append(subset(Set(pending.filter { _ in generator.next() & 1 == 1 })))
            }
            let count = byLastStore.count
            for (kept, what) in [(1, "the most recently stored line"), (count / 2, "the newer half, by last store"),
                                 (count - 1, "all but the least recently stored line")] {
                let newest = Set(byLastStore.suffix(kept))
                result.append(Fate(description: "\(what) kept: \(newest.sorted().map(String.init).joined(separator: ",")); the other \(count - kept) dropped",
                                   choose: { newest.contains($0) ? .keep : .drop }))
            }
        }
        for _ in 0 ..< options.tornFates {
            let torn = pending[Int(generator.next() % UInt64(pending.count))]
            let mask = UInt8(truncatingIfNeeded: 1 + generator.next() % 254)
            let kept = Set(pending.filter { $0 != torn && generator.next() & 1 == 1 })
            result.append(Fate(description: "line \(torn) torn (words \(String(mask, radix: 2))); kept: \(kept.sorted().map(String.init).joined(separator: ","))",
                               choose: { $0 == torn ? .tear(wordMask: mask) : kept.contains($0) ? .keep : .drop }))
        }
        return result
    }
}

/// Seconds of CLOCK_MONOTONIC (timing reports).
public func monotonicSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}
