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
// `sampledFates` random subsets; plus `tornFates` states with one random line torn. Random
// choices come from the workload's seed and the fence's ordinal, so a (fence, fate) pair
// names one state and `--fence F --fate K` replays it. Block devices are not in this model
// yet (the tiers are not either).

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
    /// Only this fence and fate (a replay), when set.
    public var onlyFence: Int?
    public var onlyFate: Int?
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
    /// Events of the recorded run applied when it crashed.
    public var eventCount: Int
    public var callsReturned: Int
    public var reason: String
    public var allowed: [TreeSnapshot]
    public var found: TreeSnapshot?

    public var description: String {
        var lines = ["crash before fence \(fence) (event \(eventCount)), fate \(fate): \(fateDescription)",
                     "\(callsReturned) call(s) had returned; \(reason)"]
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
    public var states = 0
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
        let started = monotonicSeconds()
        var result = WorkloadResult(workload: workload)
        defer { result.seconds = monotonicSeconds() - started }
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
        let model = CacheLineModel(image: base)
        var trees: Set<TreeSnapshot> = []
        var fence = 0
        for (index, event) in trace.events.enumerated() {
            if event == .fence {
                if options.onlyFence == nil || options.onlyFence == fence {
                    let callsReturned = returned.filter { $0 <= index }.count
                    let first = min(callsReturned + oracleShift, oracle.count - 1)
                    let allowed = Array(oracle[first ... min(first + 1, oracle.count - 1)])
                    for (fateIndex, fate) in fates(pending: model.pendingLines, fence: fence, options: options).enumerated() {
                        if let only = options.onlyFate, only != fateIndex { continue }
                        guard result.states < options.maxStates else {
                            result.budgetExhausted = true
                            break
                        }
                        result.states += 1
                        let image = model.crashImage(fate: fate.choose)
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
                        }
                    }
                }
                fence += 1
            }
            model.apply(event)
        }
        result.fences = fence
        result.distinctTrees = trees.count
        return result
    }

    // MARK: - The three runs

    /// The volume after the setup calls, everything digested and the file system closed.
    static func startingImage(_ workload: Workload, options: CrashTestOptions) throws -> [UInt8] {
        let nvm = SimulatedPersistentMemory(byteCount: options.nvmBytes, recordsTrace: false)
        var format = FormatOptions()
        format.logRegionCount = 2
        format.logRegionBytes = options.logBytes
        format.nowSeconds = 1_700_000_000
        // Fixed identities: the same workload gives the same images, run after run.
        format.volumeID = VolumeID(bytes: Array(0x51 ..< 0x61))
        format.directoryHashKey = DirectoryHashKey(k0: 0x5348_414C_4521, k1: 0x4352_4153_4854)
        let superblock = try Formatter.format(nvm: nvm, nvmPathHint: "crashtest.nvm", lowerDevices: [], options: format)
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

    /// The tree after 0, 1, … n calls, and what each call answered.
    static func oracleTrees(_ workload: Workload, base: [UInt8]) throws -> ([TreeSnapshot], [Errno?]) {
        let fs = try open(SimulatedPersistentMemory(image: base, recordsTrace: false))
        var trees = [try TreeSnapshot(of: fs)]
        var errors: [Errno?] = []
        for operation in workload.operations {
            do throws(Errno) {
                try operation.apply(to: fs)
                errors.append(nil)
            } catch {
                errors.append(error)
            }
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
            do throws(Errno) {
                try operation.apply(to: fs)
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
    static func fates(pending: [Int], fence: Int, options: CrashTestOptions) -> [Fate] {
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
