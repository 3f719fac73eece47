import Foundation
import Testing

/// `shale crashtest` end to end: a workload file from Fixtures/crashtest runs, crashes at
/// every fence and passes with a summary; bad input is a clear error; a replay runs one state.
struct CrashtestCommandTests {
    static let fixtures = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/crashtest")

    @Test func aWorkloadFilePassesWithASummary() throws {
        let file = Self.fixtures.appendingPathComponent("rename-over-written-file.txt").path
        let result = try ShaleCommand.run(["crashtest", "--workload", file, "--max-states", "60", "--verbose"])
        #expect(result.status == 0, "\(result.all)")
        #expect(result.stdout.contains("ok   \(file): "), "\(result.stdout)")
        let summary = try #require(result.stdout.split(separator: "\n").last.map(String.init))
        #expect(summary.hasPrefix("crashtest: 1 workloads, ") && summary.hasSuffix(": 1 passed, 0 failed"), "\(summary)")
        #expect(!summary.contains(" 0 crash states"), "\(summary)")
    }

    @Test func aReplayChecksOneState() throws {
        let result = try ShaleCommand.run(["crashtest", "--seq", "1", "--only", "seq1-15", "--fence", "0", "--fate", "0"])
        #expect(result.status == 0, "\(result.all)")
        #expect(result.stdout.contains("crashtest: 1 workloads, 1 crash states"), "\(result.stdout)")
        // A crash during that state's recovery: the state, then the one of its recovery.
        let during = try ShaleCommand.run(["crashtest", "--seq", "1", "--only", "seq1-15", "--fence", "0", "--fate", "0",
                                           "--recovery-fence", "0", "--recovery-fate", "0"])
        #expect(during.status == 0, "\(during.all)")
        #expect(during.stdout.contains("crashtest: 1 workloads, 2 crash states"), "\(during.stdout)")
        #expect(during.stdout.contains("(1 of them during recovery)"), "\(during.stdout)")
    }

    @Test func crashesDuringMkfsPass() throws {
        let result = try ShaleCommand.run(["crashtest", "--mkfs", "--verbose"])
        #expect(result.status == 0, "\(result.all)")
        #expect(result.stdout.contains("ok   mkfs: "), "\(result.stdout)")
        #expect(!result.stdout.contains(" 0 crash states"), "\(result.stdout)")
        #expect(result.stdout.hasSuffix(": 1 passed, 0 failed\n"), "\(result.stdout)")
    }

    @Test func badInputIsAClearError() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("shale-crashtest-\(getpid()).txt")
        try "setup mkdir /A\nwrite /A 0\n".write(to: scratch, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: scratch) }
        for (arguments, message) in [(["crashtest", "--workload", scratch.path], "line 2: write takes 3–4 arguments"),
                                     (["crashtest", "--workload", "/nonexistent/w.txt"], "cannot read /nonexistent/w.txt"),
                                     (["crashtest", "--seq", "4"], "--seq is 1, 2 or 3"),
                                     (["crashtest", "--fate", "1"], "--fate needs --fence"),
                                     (["crashtest", "--fence", "1", "--recovery-fence", "0"], "--recovery-fence needs --fence and --fate"),
                                     (["crashtest", "--mkfs", "--seq", "1"], "give one of --seq, --workload, --random and --mkfs"),
                                     (["crashtest", "--mkfs", "--only", "x"], "--mkfs takes no workloads"),
                                     (["crashtest", "--mkfs", "--recovery-crashes", "2"], "--recovery-crashes does not apply to --mkfs"),
                                     (["crashtest", "--seq", "1", "--recovery-crashes=-1"], "--recovery-crashes is 0 or more"),
                                     (["crashtest", "--only", "seq9-9"], "no generated workload is named seq9-9")] {
            let result = try ShaleCommand.run(arguments)
            #expect(result.status != 0)
            #expect(result.stderr.contains(message), "\(arguments): \(result.all)")
        }
    }
}

/// Proof that the harness is not blind: each planted bug (debug builds, PlantedBugs.swift)
/// makes `shale crashtest` fail on a workload that exercises it, with a reproducer.
struct PlantedBugTests {
    static let logWrap = CrashtestCommandTests.fixtures.appendingPathComponent("log-wrap.txt").path

    /// Each bug with workloads that exercise it: the name a report prints and the command's
    /// arguments for them (--fail-fast: the first failing state is proof enough).
    static let cases: [(String, String, [String])] = [
        ("missing-fence", "seq1-1", ["--seq", "1", "--only", "seq1-1"]),
        ("commit-before-payload", "seq1-3", ["--seq", "1", "--only", "seq1-3"]),
        ("cursor-before-apply", "seq1-1", ["--seq", "1", "--only", "seq1-1"]),
        ("early-reclaim", logWrap, ["--workload", logWrap, "--recovery-crashes", "0"]),
        ("torn-superblock", "mkfs", ["--mkfs"]),
        ("digest-data-unordered", "seq1-3", ["--seq", "1", "--only", "seq1-3"]),
    ]

    @Test(arguments: cases)
    func everyPlantedBugIsCaught(bug: String, workload: String, arguments: [String]) throws {
        let result = try ShaleCommand.run(["crashtest"] + arguments + ["--fail-fast", "--plant", bug])
        #expect(result.status == 1, "\(bug) was not caught: \(result.all)")
        #expect(result.stdout.contains("planted bug \(bug) is active"), "\(result.stdout)")
        #expect(result.stdout.contains("FAIL \(workload)"), "\(result.stdout)")
        let source = arguments[0] == "--seq" ? "--seq 1 --only \(workload)" : arguments[0] == "--mkfs" ? "--mkfs" : "--workload \(workload)"
        #expect(result.stdout.contains("replay: shale crashtest \(source) --seed 1 --fence "), "\(result.stdout)")
        #expect(result.stdout.contains("--plant \(bug)"), "\(result.stdout)")
        #expect(result.stdout.hasSuffix("0 passed, 1 failed\n"), "\(result.stdout)")
    }

    @Test func everyPlantedBugHasACase() throws {
        // The cases above, by bug: a bug added to PlantedBugs.swift without one fails here.
        let tested = Set(Self.cases.map(\.0))
        let help = try #require(try? ShaleCommand.run(["crashtest", "--help"]).stdout)
        // --plant's help lists them: "… (debug builds only): a, b, c. The harness must fail."
        let flat = help.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ")
        let list = try #require(flat.components(separatedBy: "debug builds only): ").last?.components(separatedBy: ". The harness").first)
        #expect(Set(list.components(separatedBy: ", ")) == tested, "\(list)")
    }

    @Test func anUnknownBugIsAClearError() throws {
        let result = try ShaleCommand.run(["crashtest", "--plant", "gremlins"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("unknown bug gremlins: one of missing-fence"), "\(result.all)")
    }
}
