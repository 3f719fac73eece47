import Foundation
import Testing

/// mkfs and status on a real block device (a loop device over a file), as on real hardware.
@Suite(.serialized)
struct BlockDeviceVolumeTests {
    /// A loop device over a fresh sparse file, detached afterwards.
    final class LoopDevice {
        let backing: String
        let device: String

        init(bytes: Int) throws {
            backing = "/tmp/shale-loop-\(getpid())-\(UInt32.random(in: 0 ... .max)).img"
            _ = FileManager.default.createFile(atPath: backing, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: backing))
            try handle.truncate(atOffset: UInt64(bytes))
            try handle.close()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/sbin/losetup")
            process.arguments = ["--find", "--show", backing]
            let out = Pipe()
            process.standardOutput = out
            try process.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            device = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard process.terminationStatus == 0, device.hasPrefix("/dev/loop") else {
                throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "losetup failed: \(device)"])
            }
        }

        deinit {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/sbin/losetup")
            process.arguments = ["-d", device]
            try? process.run()
            process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: backing)
        }
    }

    @Test func mkfsOnABlockDeviceNeedsForceAndThenWorks() throws {
        let loop = try LoopDevice(bytes: 96 << 20)
        let scratch = Scratch()
        let base = ["mkfs", scratch.directory, "--nvm", scratch.nvm, "--nvm-size", "64M", "--ssd", loop.device,
                    "--ssd-segment", "1M", "--no-hdd", "--log-regions", "4", "--log-size", "1M"]
        let refused = try ShaleCommand.run(base)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("is a block device"), "\(refused.all)")

        let made = try ShaleCommand.run(base + ["--force"])
        #expect(made.status == 0, "\(made.all)")
        #expect(made.stdout.contains("ssd  96 MiB"), "the whole device is used by default: \(made.stdout)")
        let status = try ShaleCommand.run(["status", scratch.directory])
        #expect(status.status == 0, "\(status.all)")
        #expect(status.stdout.contains(loop.device))
        #expect(status.stdout.contains("O_DIRECT"))
        #expect(!status.stdout.contains("\n  hdd "), "no HDD tier was asked for")
        let manifest = try String(contentsOfFile: scratch.path("shale.volume"), encoding: .utf8)
        #expect(manifest.contains("ssd = \(loop.device)"))
    }
}
