import Testing
import KernFS
import LibFS
import ShaleFormat
import ShaleMedia
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

typealias SimulatedFileSystem = FileSystem<EmbeddedKernel<SimulatedPersistentMemory>>

/// A file system on simulated NVM (in memory), with the production LibFS and KernFS.
func simulatedFileSystem(nvmBytes: Int = 64 << 20, logBytes: UInt64 = 1 << 20, background: Bool = false,
                         credentials: Credentials = Credentials(uid: 0, gid: 0, umask: 0o022),
                         recordsTrace: Bool = false) throws -> SimulatedFileSystem {
    // No trace by default: a long test would keep every store it ever made.
    let nvm = SimulatedPersistentMemory(byteCount: nvmBytes, recordsTrace: recordsTrace)
    var options = FormatOptions()
    options.logRegionCount = 4
    options.logRegionBytes = logBytes
    let superblock = try Formatter.format(nvm: nvm, nvmPathHint: "sim.nvm", lowerDevices: [], options: options)
    let kernel = try EmbeddedKernel(nvm: nvm, superblock: superblock)
    return try FileSystem(kernel: kernel, credentials: credentials, background: background)
}

/// Reopens the same simulated NVM as a new process would after `fs` went away (closed or not).
func reopen(_ fs: SimulatedFileSystem, background: Bool = false) throws -> SimulatedFileSystem {
    fs.abandon()
    let nvm = fs.kernel.nvm
    let volume = try Volume(nvm: nvm, nvmName: "sim.nvm", lowerDevices: [], repair: true)
    let kernel = try EmbeddedKernel(nvm: nvm, superblock: volume.superblock)
    return try FileSystem(kernel: kernel, credentials: fs.credentials, background: background)
}

/// A crash of `fs` now: a new file system recovers from what its NVM durably holds at this
/// instant (only flushed and fenced lines), as after a power cut. The old instance then dies
/// (`abandon`: its background digest stops, nothing more is written).
func crashAndRecover(_ fs: SimulatedFileSystem, background: Bool = false) throws -> SimulatedFileSystem {
    let image = fs.kernel.nvm.durableImage
    fs.abandon()
    let nvm = SimulatedPersistentMemory(image: image, recordsTrace: false)
    let volume = try Volume(nvm: nvm, nvmName: "sim.nvm", lowerDevices: [], repair: true)
    let kernel = try EmbeddedKernel(nvm: nvm, superblock: volume.superblock)
    return try FileSystem(kernel: kernel, credentials: fs.credentials, background: background)
}

extension FileSystem {
    func writeFile(_ path: Path, _ bytes: [UInt8], mode: UInt32 = 0o644) throws {
        let handle = try open(path, [.create, .writeOnly, .truncate], mode: mode)
        var done = 0
        while done < bytes.count {
            done += try pwrite(handle, Array(bytes[done...]), at: UInt64(done))
        }
        try close(handle)
    }

    func readFile(_ path: Path) throws -> [UInt8] {
        let handle = try open(path)
        defer { try? close(handle) }
        var result: [UInt8] = []
        while true {
            let chunk = try read(handle, count: 1 << 16)
            if chunk.isEmpty { break }
            result += chunk
        }
        return result
    }
}

/// The errno a call threw (nil for success).
func errnoOf(_ body: () throws -> Void) -> Errno? {
    do { try body(); return nil } catch let error as Errno { return error } catch { return Errno(rawValue: -1) }
}
