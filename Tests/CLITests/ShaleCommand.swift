import Foundation
import Testing

/// Runs the built `shale` binary, as a user would.
struct ShaleCommand {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        var all: String { stdout + stderr }
    }

    /// The `shale` executable next to the test bundle.
    static let binary: String = {
        let bundle = Bundle.main.bundleURL.deletingLastPathComponent()
        let candidates = [bundle.appendingPathComponent("shale").path,
                          URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("shale").path]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }()

    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        try runProgram(binary, arguments, environment: ["COLUMNS": "100"].merging(environment) { $1 })
    }

    /// Any program, with its output and status.
    static func runProgram(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus,
                      stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }
}

/// A scratch volume: a directory under /tmp (ext4 here, so O_DIRECT is real) and an NVM path
/// in /dev/shm, both removed afterwards.
final class Scratch {
    let directory: String
    let nvm: String

    init() {
        let id = "\(getpid())-\(UInt32.random(in: 0 ... .max))"
        directory = "/tmp/shale-cli-\(id)"
        nvm = "/dev/shm/shale-cli-\(id).nvm"
    }

    deinit {
        try? FileManager.default.removeItem(atPath: directory)
        try? FileManager.default.removeItem(atPath: nvm)
    }

    /// A small volume: 64 MiB NVM, 64 MiB SSD, 128 MiB HDD.
    var smallMkfs: [String] { mkfs() }

    /// mkfs with four logs of `logSize`, a 64 MiB SSD and a 128 MiB HDD.
    func mkfs(nvmSize: String = "64M", logSize: String = "1M") -> [String] {
        ["mkfs", directory, "--nvm", nvm, "--nvm-size", nvmSize, "--ssd-size", "64M", "--hdd-size", "128M",
         "--ssd-segment", "1M", "--hdd-segment", "4M", "--log-regions", "4", "--log-size", logSize]
    }

    func path(_ name: String) -> String { directory + "/" + name }
}
