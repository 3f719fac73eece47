import Testing
@testable import CrashTest
import LibFS
import ShaleMedia

/// The crash explorer on the production LibFS and KernFS: the bounded workloads pass, the
/// workload text round-trips, and a broken contract is found (the harness is not blind).
struct CrashExplorerTests {
    /// Fewer states per fence than the command's defaults (a debug build recovers a state in
    /// ~0.2 s): every fence still gets all-kept, all-dropped, a sampled subset and a tear.
    /// `shale crashtest --seq 1` (make crashtest) runs the full set.
    static var quick: CrashTestOptions {
        var options = CrashTestOptions()
        options.exhaustiveLines = 2
        options.sampledFates = 1
        options.tornFates = 1
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
        let result = CrashExplorer.run(workload, options: Self.quick)
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
