import Foundation
import Testing

/// `--help` is part of the interface: its text is checked against Fixtures/help/. After an
/// intended change, regenerate with `SHALE_UPDATE_GOLDEN=1 swift test --filter HelpTests`.
struct HelpTests {
    static let fixtures = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/help")

    @Test(arguments: [
        (["--help"], "shale.txt"),
        (["mkfs", "--help"], "shale-mkfs.txt"),
        (["mount", "--help"], "shale-mount.txt"),
        (["status", "--help"], "shale-status.txt"),
        (["digest", "--help"], "shale-digest.txt"),
        (["fsck", "--help"], "shale-fsck.txt"),
        (["crashtest", "--help"], "shale-crashtest.txt"),
    ])
    func helpMatchesGolden(arguments: [String], fixture: String) throws {
        let result = try ShaleCommand.run(arguments)
        #expect(result.status == 0)
        let path = Self.fixtures.appendingPathComponent(fixture)
        if ProcessInfo.processInfo.environment["SHALE_UPDATE_GOLDEN"] == "1" {
            try result.stdout.write(to: path, atomically: true, encoding: .utf8)
        }
        let golden = try String(contentsOf: path, encoding: .utf8)
        #expect(result.stdout == golden, "shale \(arguments.joined(separator: " ")) differs from Fixtures/help/\(fixture)")
    }

    @Test func unknownSubcommandIsAClearError() throws {
        let result = try ShaleCommand.run(["frobnicate"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("Unexpected argument 'frobnicate'") || result.stderr.contains("frobnicate"), "\(result.all)")
    }

    @Test func versionIsPrinted() throws {
        let result = try ShaleCommand.run(["--version"])
        #expect(result.status == 0)
        #expect(result.stdout.hasPrefix("0."))
    }
}
