import Testing
@testable import CrashTest
import LibFS
import ShaleMedia

/// The crash explorer on the production LibFS and KernFS: the bounded workloads pass, the
/// workload text round-trips, and a broken contract is found (the harness is not blind).
struct CrashExplorerTests {
    /// Fewer states per fence than the command's defaults (a debug build recovers a state in
    /// ~0.2 s): every fence still gets all-kept, all-dropped, a sampled subset, the three in
    /// store order and a tear. `shale crashtest --seq 1` (make crashtest) runs the full set.
    static var quick: CrashTestOptions {
        var options = CrashTestOptions()
        options.exhaustiveLines = 2
        options.sampledFates = 1
        options.tornFates = 1
        return options
    }

    /// The same without crashes during recovery (CrashExplorerRecoveryTests and the seq-2
    /// sample of `make test` have those; here they would add ~60 states per workload).
    static var quickWithoutRecoveryCrashes: CrashTestOptions {
        var options = quick
        options.recoveryCrashStates = 0
        return options
    }

    @Test func workloadTextRoundTrips() throws {
        for workload in BoundedWorkloads.sequences(of: 1) {
            #expect(try Workload(name: workload.name, text: workload.text) == workload)
        }
    }

    @Test func badWorkloadLinesAreRefusedWithTheirLine() {
        for (text, fragment) in [("write /a 0", "line 1"), ("setup mkdir /a\nfly /a", "unknown operation fly"),
                                 ("chmod /a 999", "octal"), ("mkdir relative", "absolute path"), ("setup mkdir /a", "no operations")] {
            do {
                _ = try Workload(name: "bad", text: text)
                Issue.record("accepted: \(text)")
            } catch {
                #expect(error.description.contains(fragment), "\(error.description)")
            }
        }
    }

    @Test(arguments: BoundedWorkloads.sequences(of: 1))
    func everySingleOperationSurvivesEveryCrash(_ workload: Workload) {
        let result = CrashExplorer.run(workload, options: Self.quickWithoutRecoveryCrashes)
        #expect(result.invalid == nil, "\(result.invalid ?? "")")
        #expect(result.fences > 0 && result.states > result.fences / 2, "\(result.fences) fences, \(result.states) states")
        #expect(result.distinctTrees >= 1)
        for violation in result.violations.prefix(3) { Issue.record("\(workload.name):\n\(workload.text)\(violation)") }
        #expect(!result.budgetExhausted)
    }

    /// Crashes that leave nothing of the last call, checked against an oracle that claims
    /// the call returned: the explorer must report violations (so it compares for real).
    @Test func aWrongOracleIsCaught() {
        let workload = Workload(name: "wrong", setup: BoundedWorkloads.setup,
                                operations: [.creat("/A/new"), .write("/A/new", offset: 0, length: 100, seed: 3)])
        var options = Self.quick
        options.onlyFence = nil
        let honest = CrashExplorer.run(workload, options: options)
        #expect(honest.passed)
        // The same states judged with the allowed trees shifted by one call: the crashes
        // before the write returned now "lose" an acknowledged write.
        let result = CrashExplorer.run(workload, options: options, oracleShift: 1)
        #expect(!result.violations.isEmpty)
        #expect(result.violations.allSatisfy { $0.reason.contains("none of the allowed") })
    }

    @Test func aReplayRunsOneState() {
        let workload = BoundedWorkloads.sequences(of: 1)[2]
        let full = CrashExplorer.run(workload, options: Self.quick)
        var options = Self.quick
        options.onlyFence = full.fences - 1
        options.onlyFate = 0
        let replay = CrashExplorer.run(workload, options: options)
        #expect(replay.states == 1)
        #expect(replay.passed)
    }
}

/// Crashes during recovery and during mkfs, and writes longer than one call.
struct CrashExplorerRecoveryTests {
    @Test func theRecoveryOfAStateIsCrashedAtItsFences() {
        let workload = BoundedWorkloads.sequences(of: 1)[2]
        let result = CrashExplorer.run(workload, options: CrashExplorerTests.quick)
        #expect(result.passed, "\(result.violations.prefix(2))")
        #expect(result.recoveryStates > 0 && result.recoveryStates < result.states)
        var none = CrashExplorerTests.quick
        none.recoveryCrashStates = 0
        #expect(CrashExplorer.run(workload, options: none).recoveryStates == 0)
    }

    /// Recovering again must give the uninterrupted recovery's tree: judged against another
    /// tree, every state of the recovery fails (the comparison is not vacuous).
    @Test func aRecoveryThatGivesAnotherTreeIsCaught() throws {
        let workload = Workload(name: "two files", setup: BoundedWorkloads.setup,
                                operations: [.creat("/A/one"), .write("/A/one", offset: 0, length: 100, seed: 3)])
        let base = try CrashExplorer.startingImage(workload, options: CrashExplorerTests.quick)
        let (oracle, _) = try CrashExplorer.oracleTrees(workload, base: base)
        let (recorded, _) = try CrashExplorer.recordedRun(workload, base: base)
        // The image before close: every record in the log, recovery digests them.
        let model = CacheLineModel(image: base)
        let events = recorded.trace.events
        let lastReturned = recorded.trace.marks.last { $0.label.hasPrefix("returned") }!.eventCount
        for event in events[..<lastReturned] { model.apply(event) }
        let image = model.crashImage { _ in .keep }
        var result = WorkloadResult(workload: workload)
        let primary = CrashViolation(fence: 0, fate: 0, fateDescription: "test", eventCount: 0, callsReturned: 2, reason: "",
                                     allowed: [], found: nil)
        CrashExplorer.crashRecovery(of: image, expected: oracle[2], primary: primary, options: CrashExplorerTests.quick, result: &result)
        #expect(result.recoveryStates > 0 && result.violations.isEmpty, "\(result.violations.prefix(2))")
        var wrong = WorkloadResult(workload: workload)
        CrashExplorer.crashRecovery(of: image, expected: oracle[1], primary: primary, options: CrashExplorerTests.quick, result: &wrong)
        #expect(wrong.recoveryStates > 0 && wrong.violations.count == wrong.recoveryStates)
        #expect(wrong.violations.allSatisfy { $0.recoveryFence != nil && $0.reason.contains("another tree") })
    }

    @Test func aCrashedMkfsIsUnformattedOrWhole() {
        let result = CrashExplorer.runMkfs(options: CrashExplorerTests.quick)
        #expect(result.invalid == nil, "\(result.invalid ?? "")")
        #expect(result.passed, "\(result.violations.prefix(2))")
        #expect(result.fences > 1 && result.states > result.fences)
        #expect(result.distinctTrees == 1, "the only file system a crashed mkfs may leave is the empty one")
    }

    /// LibFS takes at most `writeBytesMax` bytes per pwrite (16 KiB with the explorer's log);
    /// a longer write is several calls, each whole after a crash, none torn.
    @Test func aWriteOfSeveralCallsIsWholeCallByCall() throws {
        let workload = try Workload(name: "long write", text: "setup creat /f\nwrite /f 100 40000 9\n")
        let result = CrashExplorer.run(workload, options: CrashExplorerTests.quick)
        #expect(result.passed, "\(result.violations.prefix(2))")
        #expect(result.distinctTrees >= 3, "before, after the first call(s), after the last")
    }
}

/// Random long workloads (`--random`): reproducible, printable, and they pass.
struct RandomWorkloadTests {
    @Test func theSameSeedGivesTheSameWorkloadsAndTheirTextRoundTrips() throws {
        let first = RandomWorkloads.workloads(count: 20, length: 12, seed: 7)
        #expect(first == RandomWorkloads.workloads(count: 20, length: 12, seed: 7))
        #expect(first != RandomWorkloads.workloads(count: 20, length: 12, seed: 8))
        #expect(Set(first.map(\.name)).count == 20 && first.allSatisfy { $0.operations.count == 12 })
        for workload in first { #expect(try Workload(name: workload.name, text: workload.text) == workload) }
        #expect(first.contains { $0.operations.contains(.digest) }, "digests are forced at random points")
        #expect(first.contains { $0.operations.contains { if case let .write(_, _, length, _) = $0 { length > 16_384 } else { false } } },
                "some writes take several calls")
    }

    @Test func aRandomWorkloadSurvivesEveryCrash() {
        let workload = RandomWorkloads.workloads(count: 1, length: 8, seed: 3)[0]
        let result = CrashExplorer.run(workload, options: CrashExplorerTests.quickWithoutRecoveryCrashes)
        #expect(result.invalid == nil, "\(result.invalid ?? "")")
        #expect(result.fences > 0 && !result.budgetExhausted)
        for violation in result.violations.prefix(3) { Issue.record("\(workload.text)\(violation)") }
    }
}

/// Bugs the harness found, kept found.
struct FoundBugTests {
    /// Recovery's orphan sweep aborted a transaction that freed only an empty inode (its
    /// write is deferred to the commit, and `isEmpty` did not count deferred writes): after
    /// any crash following the unlink of an empty file, fsck found the orphan.
    @Test func anEmptyFileUnlinkedBeforeACrashLeavesNoOrphan() throws {
        let workload = try Workload(name: "unlink empty", text: "setup creat /f\nunlink /f\n")
        let result = CrashExplorer.run(workload, options: CrashExplorerTests.quick)
        #expect(result.passed, "\(result.violations.prefix(2))")
    }
}
