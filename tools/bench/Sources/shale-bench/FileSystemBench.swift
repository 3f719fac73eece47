// The file-system benchmarks of issue 3: Shale's `FileSystem` (LibFS over an embedded
// KernFS, NVM emulated by a /dev/shm file) against the persist floor, ext4 on a RAM-backed
// loop device with fsync, and tmpfs (not durable), all in one process, interleaved round by
// round with the order rotating so that drift falls on every side alike.
//
//   shale-bench fs-write4k   --ext4 DIR --tmpfs DIR [--rounds N] [--ops N]
//   shale-bench fs-append128 --ext4 DIR --tmpfs DIR [--rounds N] [--ops N]
//   shale-bench fs-smallfiles --ext4 DIR --tmpfs DIR [--rounds N] [--files N]
//   shale-bench fs-digest [--rounds N] [--mib N]
//   shale-bench fs-memory [--files N] [--data-gib N]
//
// `--sides shale` (or any comma-separated subset) runs only those sides, for profiling. The
// ext4 and tmpfs directories are made by tools/bench/run (loop device, mount, cleanup).

import CPmem
import Glibc
import KernFS
import LibFS
import ShaleFormat
import ShaleMedia

// MARK: - Shared pieces

/// A fresh Shale volume for one benchmark: NVM in a /dev/shm file, no SSD or HDD tier.
final class BenchVolume {
    let directory: String
    let nvmPath: String
    let fs: EmbeddedFileSystem
    /// How fast the untimed first touch of the NVM file's pages went (MiB/s).
    let firstTouchMiBPerSecond: Double

    init(name: String, nvmBytes: UInt64, logRegionBytes: UInt64, logRegionCount: UInt32 = 4, background: Bool = true) {
        directory = "/tmp/shale-bench-\(name)-\(getpid())"
        nvmPath = "/dev/shm/shale-bench-\(name)-\(getpid()).nvm"
        var request = MkfsRequest(directory: directory)
        request.nvmPath = nvmPath
        request.nvmBytes = nvmBytes
        request.withoutSSD = true
        request.withoutHDD = true
        request.logRegionBytes = logRegionBytes
        request.logRegionCount = logRegionCount
        request.force = true
        do { _ = try VolumeFiles.mkfs(request) } catch { fail("mkfs \(directory): \(error)") }
        firstTouchMiBPerSecond = BenchVolume.touchEveryPage(nvmPath)
        do { fs = try EmbeddedFileSystem.open(volume: directory, background: background) } catch { fail("open \(directory): \(error)") }
    }

    /// Write-faults every page of the file once without changing it, untimed, as FloorMapping
    /// does for the floor: mkfs reserves tmpfs space (posix_fallocate) but the kernel zeroes a
    /// page only at its first touch, and on a fresh VM that touch also faults the host's memory
    /// in (clear_page dominated a profile of the digest, ~14 µs a page). Real NVM never pays
    /// either, and the floor would not either; what is left for Shale is its own mapping's
    /// page-table faults, as in production. Returns the touch's rate in MiB/s.
    static func touchEveryPage(_ path: String) -> Double {
        let fd = open(path, O_RDWR)
        checkPOSIX(Int(fd), "open \(path)")
        defer { close(fd) }
        var info = stat()
        checkPOSIX(Int(fstat(fd, &info)), "fstat \(path)")
        let bytes = Int(info.st_size)
        guard let base = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), base != MAP_FAILED else {
            fail("mmap \(path) failed")
        }
        defer { munmap(base, bytes) }
        let start = nowNanoseconds()
        // MADV_POPULATE_WRITE (Linux 5.14): faults the pages in writable, contents unchanged.
        checkPOSIX(Int(madvise(base, bytes, 23)), "madvise(MADV_POPULATE_WRITE) \(path)")
        return Double(bytes >> 20) / (Double(nowNanoseconds() - start) / 1e9)
    }

    /// Closes the file system (digesting what is left) and removes the volume's files.
    func remove() {
        do { try fs.close() } catch { fail("close: \(error)") }
        unlink(nvmPath)
        unlink(directory + "/" + VolumeManifest.fileName)
        rmdir(directory)
    }
}

/// Unwraps a Shale call; a failure ends the benchmark (a benchmark never hides an error).
@inline(__always)
func check<T, E: Error>(_ what: @autoclosure () -> String, _ body: () throws(E) -> T) -> T {
    do { return try body() } catch { fail("\(what()): \(error)") }
}

/// Unwraps a libc call that returns -1 on failure.
@inline(__always)
func checkPOSIX(_ result: Int, _ what: @autoclosure () -> String) {
    if result < 0 { fail("\(what()): \(String(cString: strerror(errno)))") }
}

/// Per-operation latencies of one timed loop, sorted.
struct LatencySummary {
    var median: Double
    var p99: Double
    var p999: Double
    var max: Double
    var mean: Double

    init(_ samples: UnsafeMutableBufferPointer<UInt64>) {
        var samples = samples
        samples.sort()
        let count = samples.count
        func at(_ fraction: Double) -> Double { Double(samples[min(count - 1, Int(Double(count) * fraction))]) }
        median = at(0.5)
        p99 = at(0.99)
        p999 = at(0.999)
        max = Double(samples[count - 1])
        var total: UInt64 = 0
        for sample in samples { total &+= sample }
        mean = Double(total) / Double(count)
    }
}

/// One side of a latency benchmark: `prepare` runs untimed before each round, `operation(i)`
/// is timed one call at a time.
struct LatencySide {
    var name: String
    var prepare: (_ round: Int) -> Void
    var operation: (_ index: Int) -> Void
}

/// Runs every side `rounds` times, `operations` timed calls each, the order rotating by
/// round; prints per-side medians (over rounds) of the per-round median, p99, p99.9 and
/// mean, and the per-round medians and p99s.
func runLatencySides(_ label: String, _ allSides: [LatencySide], rounds: Int, operations: Int) -> [String: (median: Double, p99: Double)] {
    // `--sides a,b` keeps only those (for profiling one side); the ratios need them all.
    let wanted = argument("--sides", "").split(separator: ",").map(String.init)
    let sides = wanted.isEmpty ? allSides : allSides.filter { wanted.contains($0.name) }
    let samples = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: operations)
    defer { samples.deallocate() }
    var perRound: [[LatencySummary]] = Array(repeating: [], count: sides.count)
    // Warm-up round (page faults, caches, the first digest), not counted.
    for side in sides {
        side.prepare(-1)
        for index in 0 ..< min(operations, 1024) { side.operation(index) }
    }
    for round in 0 ..< rounds {
        for step in 0 ..< sides.count {
            let which = (step + round) % sides.count
            let side = sides[which]
            side.prepare(round)
            for index in 0 ..< operations {
                let start = nowNanoseconds()
                side.operation(index)
                samples[index] = nowNanoseconds() - start
            }
            perRound[which].append(LatencySummary(samples))
        }
    }
    var result: [String: (median: Double, p99: Double)] = [:]
    for (which, side) in sides.enumerated() {
        let summaries = perRound[which]
        let medianValue = median(summaries.map(\.median)), p99Value = median(summaries.map(\.p99))
        result[side.name] = (medianValue, p99Value)
        print("fs.\(label).\(side.name).median_ns \(fixed(medianValue, 1))")
        print("fs.\(label).\(side.name).p99_ns \(fixed(p99Value, 1))")
        print("fs.\(label).\(side.name).p999_ns \(fixed(median(summaries.map(\.p999)), 1))")
        print("fs.\(label).\(side.name).mean_ns \(fixed(median(summaries.map(\.mean)), 1))")
        print("fs.\(label).\(side.name).max_ns \(fixed(summaries.map(\.max).max() ?? .nan, 0))")
        print("fs.\(label).\(side.name).rounds_median_ns \(summaries.map { fixed($0.median, 0) }.joined(separator: " "))")
        print("fs.\(label).\(side.name).rounds_p99_ns \(summaries.map { fixed($0.p99, 0) }.joined(separator: " "))")
    }
    return result
}

/// A /dev/shm file mapped with libpmem, for the persist floor.
final class FloorMapping {
    let path: String
    let base: UnsafeMutableRawPointer
    let bytes: Int

    init(name: String, bytes: Int) {
        path = "/dev/shm/shale-bench-\(name)-\(getpid()).floor"
        var mapped = 0
        var isPmem: Int32 = 0
        guard let base = pmem_map_file(path, bytes, PMEM_FILE_CREATE, 0o600, &mapped, &isPmem) else {
            fail("pmem_map_file \(path) failed")
        }
        self.base = base
        self.bytes = mapped
        // Touch every page once so that no round pays the first-fault cost.
        memset(base, 0, mapped)
    }

    deinit {
        pmem_unmap(base, bytes)
        unlink(path)
    }
}

/// A POSIX file for the ext4 and tmpfs sides.
func openHostFile(_ path: String, _ flags: Int32) -> Int32 {
    let fd = Glibc.open(path, flags, 0o644)
    checkPOSIX(Int(fd), "open \(path)")
    return fd
}

func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int) {
    let written = Glibc.pwrite(fd, buffer.baseAddress, buffer.count, off_t(offset))
    checkPOSIX(written, "pwrite")
    if written != buffer.count { fail("short pwrite: \(written) of \(buffer.count)") }
}

func ratioText(_ a: Double, _ b: Double) -> String { fixed(a / b, 3) }

/// The volume of the latency and small-file benchmarks: 2 GiB of NVM, four log regions of
/// 64 MiB (the largest default), background digest on.
func latencyVolume(_ name: String) -> BenchVolume {
    BenchVolume(name: name, nvmBytes: UInt64(argument("--nvm-mib", "2048"))! << 20,
                logRegionBytes: UInt64(argument("--log-mib", "64"))! << 20)
}

// MARK: - 1. Durable 4 KiB writes at random offsets of a 64 MiB file

func fsWrite4kBenchmark() {
    let rounds = Int(argument("--rounds", "5"))!
    let operations = Int(argument("--ops", "8192"))!
    let ext4 = argument("--ext4", ""), tmpfs = argument("--tmpfs", "")
    guard !ext4.isEmpty, !tmpfs.isEmpty else { fail("fs-write4k needs --ext4 DIR and --tmpfs DIR") }
    // `--file-mib` (default 64): a smaller file shrinks the pending data index (profiling).
    let fileBytes = Int(argument("--file-mib", "64"))! << 20, blockBytes = 4096
    var generator = SplitMix64(seed: 3)
    let offsets = (0 ..< operations).map { _ in Int(generator.next() % UInt64(fileBytes / blockBytes)) * blockBytes }
    let source = AlignedBuffer(byteCount: 1 << 20)
    generator.fill(source.bytes)
    let block = UnsafeRawBufferPointer(source.slice(0, blockBytes))

    // Shale: the file written in full and digested first, so the timed writes overwrite.
    let volume = latencyVolume("w4k")
    let fs = volume.fs
    let handle = check("open /w4k") { try fs.open("/w4k", [.create, .readWrite], mode: 0o644) }
    for offset in stride(from: 0, to: fileBytes, by: source.count) {
        _ = check("prefill") { try fs.pwrite(handle, UnsafeRawBufferPointer(source.bytes), at: UInt64(offset)) }
    }
    check("digest") { try fs.digest() }

    let floor = FloorMapping(name: "w4k", bytes: fileBytes)

    // ext4 and tmpfs: the same file, written in full (and synced) first.
    var hostFiles: [Int32] = []
    for directory in [ext4, tmpfs] {
        let fd = openHostFile(directory + "/w4k", O_CREAT | O_RDWR | O_TRUNC)
        for offset in stride(from: 0, to: fileBytes, by: source.count) { writeAll(fd, UnsafeRawBufferPointer(source.bytes), at: offset) }
        checkPOSIX(Int(fsync(fd)), "fsync")
        hostFiles.append(fd)
    }
    let ext4File = hostFiles[0], tmpfsFile = hostFiles[1]

    let sides = [
        LatencySide(name: "shale", prepare: { _ in }, operation: { index in
            _ = check("pwrite") { try fs.pwrite(handle, block, at: UInt64(offsets[index])) }
        }),
        LatencySide(name: "pmem", prepare: { _ in }, operation: { index in
            pmem_memcpy_persist(floor.base + offsets[index], block.baseAddress!, blockBytes)
        }),
        LatencySide(name: "ext4", prepare: { _ in }, operation: { index in
            writeAll(ext4File, block, at: offsets[index])
            checkPOSIX(Int(fsync(ext4File)), "fsync")
        }),
        LatencySide(name: "tmpfs", prepare: { _ in }, operation: { index in
            writeAll(tmpfsFile, block, at: offsets[index])
        }),
    ]
    let result = runLatencySides("write4k", sides, rounds: rounds, operations: operations)
    if result.count == sides.count, let shale = result["shale"] {
    print("fs.write4k.ratio_pmem \(ratioText(shale.median, result["pmem"]!.median))")
    print("fs.write4k.ratio_ext4 \(ratioText(shale.median, result["ext4"]!.median))")
    print("fs.write4k.ratio_tmpfs \(ratioText(shale.median, result["tmpfs"]!.median))")
    }
    print("fs.write4k.digest_batches \(fs.digestBatches)")
    check("close") { try fs.close(handle) }
    volume.remove()
    for fd in hostFiles { Glibc.close(fd) }
    unlink(ext4 + "/w4k")
    unlink(tmpfs + "/w4k")
}

// MARK: - 2. 128 B appends

func fsAppend128Benchmark() {
    let rounds = Int(argument("--rounds", "5"))!
    let operations = Int(argument("--ops", "8192"))!
    let ext4 = argument("--ext4", ""), tmpfs = argument("--tmpfs", "")
    guard !ext4.isEmpty, !tmpfs.isEmpty else { fail("fs-append128 needs --ext4 DIR and --tmpfs DIR") }
    let recordBytes = 128
    let source = AlignedBuffer(byteCount: recordBytes, alignment: 64)
    var generator = SplitMix64(seed: 5)
    generator.fill(source.bytes)
    let record = UnsafeRawBufferPointer(source.bytes)

    let volume = latencyVolume("a128")
    let fs = volume.fs
    var handle: FileHandle?
    let floor = FloorMapping(name: "a128", bytes: operations * recordBytes)
    var ext4File: Int32 = -1, tmpfsFile: Int32 = -1

    // Each round appends to a fresh file (made untimed), as a log or journal would.
    let sides = [
        LatencySide(name: "shale", prepare: { round in
            if let old = handle { check("close") { try fs.close(old) } }
            handle = check("open") { try fs.open(Path("/append-\(round + 1)"), [.create, .readWrite], mode: 0o644) }
        }, operation: { _ in
            let written = check("write") { try fs.write(handle!, record) }
            if written != recordBytes { fail("short write") }
        }),
        LatencySide(name: "pmem", prepare: { _ in }, operation: { index in
            pmem_memcpy_persist(floor.base + index * recordBytes, record.baseAddress!, recordBytes)
        }),
        LatencySide(name: "ext4", prepare: { round in
            if ext4File >= 0 { Glibc.close(ext4File) }
            ext4File = openHostFile(ext4 + "/append-\(round + 1)", O_CREAT | O_WRONLY | O_TRUNC)
            checkPOSIX(Int(fsync(ext4File)), "fsync")
        }, operation: { _ in
            checkPOSIX(Glibc.write(ext4File, record.baseAddress, recordBytes), "write")
            checkPOSIX(Int(fsync(ext4File)), "fsync")
        }),
        LatencySide(name: "tmpfs", prepare: { round in
            if tmpfsFile >= 0 { Glibc.close(tmpfsFile) }
            tmpfsFile = openHostFile(tmpfs + "/append-\(round + 1)", O_CREAT | O_WRONLY | O_TRUNC)
        }, operation: { _ in
            checkPOSIX(Glibc.write(tmpfsFile, record.baseAddress, recordBytes), "write")
        }),
    ]
    let result = runLatencySides("append128", sides, rounds: rounds, operations: operations)
    if result.count == sides.count, let shale = result["shale"] {
    print("fs.append128.ratio_pmem \(ratioText(shale.median, result["pmem"]!.median))")
    print("fs.append128.ratio_ext4 \(ratioText(shale.median, result["ext4"]!.median))")
    print("fs.append128.ratio_tmpfs \(ratioText(shale.median, result["tmpfs"]!.median))")
    }
    if let handle { check("close") { try fs.close(handle) } }
    volume.remove()
    Glibc.close(ext4File)
    Glibc.close(tmpfsFile)
    for round in 0 ... rounds {
        unlink(ext4 + "/append-\(round)")
        unlink(tmpfs + "/append-\(round)")
    }
}

// MARK: - 3. Small files: create + 4 KiB write + close

func fsSmallFilesBenchmark() {
    let rounds = Int(argument("--rounds", "5"))!
    let files = Int(argument("--files", "5000"))!
    let perDirectory = 1000
    let ext4 = argument("--ext4", ""), tmpfs = argument("--tmpfs", "")
    guard !ext4.isEmpty, !tmpfs.isEmpty else { fail("fs-smallfiles needs --ext4 DIR and --tmpfs DIR") }
    let source = AlignedBuffer(byteCount: 4096)
    var generator = SplitMix64(seed: 7)
    generator.fill(source.bytes)
    let data = UnsafeRawBufferPointer(source.bytes)
    let volume = latencyVolume("small")
    let fs = volume.fs

    /// Names of round `round` (warm-up is round 0): "rR/dDDD/fFFF", directories made untimed.
    func names(_ round: Int) -> [String] {
        (0 ..< files).map { "r\(round)/d\($0 / perDirectory)/f\($0 % perDirectory)" }
    }
    func directories(_ round: Int) -> [String] {
        ["r\(round)"] + (0 ..< (files + perDirectory - 1) / perDirectory).map { "r\(round)/d\($0)" }
    }
    var shalePaths: [Path] = []
    var hostPaths: [[CChar]] = []

    let sideNames = ["shale", "ext4", "tmpfs"]
    var throughput: [[Double]] = Array(repeating: [], count: sideNames.count)
    var latency: [[Double]] = Array(repeating: [], count: sideNames.count)
    let samples = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: files)
    defer { samples.deallocate() }
    let shaleFile: (Int) -> Void = { index in
        let handle = check("create") { try fs.open(shalePaths[index], [.create, .readWrite], mode: 0o644) }
        let written = check("write") { try fs.write(handle, data) }
        if written != data.count { fail("short write") }
        check("close") { try fs.close(handle) }
    }
    let hostFile: (Int, Bool) -> Void = { index, durable in
        let fd = hostPaths[index].withUnsafeBufferPointer { Glibc.open($0.baseAddress!, O_CREAT | O_WRONLY | O_EXCL, 0o644) }
        checkPOSIX(Int(fd), "create")
        let written = Glibc.write(fd, data.baseAddress, data.count)
        if written != data.count { fail("short write") }
        if durable { checkPOSIX(Int(fsync(fd)), "fsync") }
        checkPOSIX(Int(Glibc.close(fd)), "close")
    }
    let wanted = argument("--sides", "").split(separator: ",").map(String.init)
    for round in 0 ... rounds {  // round 0 warms up, not counted
        for step in 0 ..< sideNames.count {
            let which = (step + round) % sideNames.count
            if !wanted.isEmpty, !wanted.contains(sideNames[which]) { continue }
            // Untimed: the paths and the directories of this round.
            let roundNames = names(round)
            switch which {
            case 0:
                for directory in directories(round) {
                    check("mkdir") { try fs.mkdir(Path("/" + directory), mode: 0o755) }
                }
                shalePaths = roundNames.map { Path("/" + $0) }
            default:
                let root = which == 1 ? ext4 : tmpfs
                for directory in directories(round) { checkPOSIX(Int(mkdir(root + "/" + directory, 0o755)), "mkdir") }
                if which == 1 { sync() }
                hostPaths = roundNames.map { Array((root + "/" + $0).utf8CString) }
            }
            let start = nowNanoseconds()
            for index in 0 ..< files {
                let begin = nowNanoseconds()
                switch which {
                case 0: shaleFile(index)
                case 1: hostFile(index, true)
                default: hostFile(index, false)
                }
                samples[index] = nowNanoseconds() - begin
            }
            let elapsed = Double(nowNanoseconds() - start) / 1e9
            guard round > 0 else { continue }
            throughput[which].append(Double(files) / elapsed)
            latency[which].append(LatencySummary(samples).median)
        }
    }
    for (which, name) in sideNames.enumerated() where !throughput[which].isEmpty {
        print("fs.smallfiles.\(name).files_per_s \(fixed(median(throughput[which]), 0))")
        print("fs.smallfiles.\(name).median_ns \(fixed(median(latency[which]), 0))")
        print("fs.smallfiles.\(name).rounds_files_per_s \(throughput[which].map { fixed($0, 0) }.joined(separator: " "))")
    }
    if throughput.allSatisfy({ !$0.isEmpty }) {
        print("fs.smallfiles.ratio_ext4 \(ratioText(median(throughput[0]), median(throughput[1])))")
        print("fs.smallfiles.ratio_tmpfs \(ratioText(median(throughput[0]), median(throughput[2])))")
    }
    print("fs.smallfiles.digest_batches \(fs.digestBatches)")
    volume.remove()
}

// MARK: - 4. Digest throughput

/// Digest of `mib` MiB logged as 4 KiB pwrites (background digest off, so nothing is digested
/// until the timed call), twice per round: into a new file (every block allocated by the
/// digest) and over that file again at shuffled offsets (every block rewritten in place).
/// The floor: pmem_memcpy_persist of the same 4 KiB blocks from one /dev/shm mapping to
/// another, the least any digest must do.
func fsDigestBenchmark() {
    let rounds = Int(argument("--rounds", "3"))!
    let mib = Int(argument("--mib", "256"))!
    let blockBytes = 4096
    let blocks = mib << 20 / blockBytes
    // A 4 KiB write record takes 8 KiB of log (header and payload, then block-aligned data).
    let logBytes = UInt64(2 * mib + 64) << 20
    let volume = BenchVolume(name: "digest", nvmBytes: logBytes + UInt64(2 * mib + 512) << 20, logRegionBytes: logBytes,
                             logRegionCount: 1, background: false)
    let fs = volume.fs
    print("fs.digest.log_region_mib \(logBytes >> 20)")
    print("fs.digest.first_touch_mib_per_s \(fixed(volume.firstTouchMiBPerSecond, 0))")
    let source = AlignedBuffer(byteCount: 1 << 20)
    var generator = SplitMix64(seed: 11)
    generator.fill(source.bytes)
    var shuffled = Array(0 ..< blocks)
    shuffled.shuffle(using: &generator)
    let floorSource = FloorMapping(name: "digest-src", bytes: mib << 20)
    let floorTarget = FloorMapping(name: "digest-dst", bytes: mib << 20)
    memcpy(floorSource.base, source.bytes.baseAddress!, source.count)

    var fresh: [Double] = [], overwrite: [Double] = [], floor: [Double] = []
    var previous: Path?
    func fill(_ handle: FileHandle, _ order: [Int]?) {
        for index in 0 ..< blocks {
            let block = order?[index] ?? index
            let bytes = UnsafeRawBufferPointer(source.slice(block % 256 * blockBytes, blockBytes))
            _ = check("pwrite") { try fs.pwrite(handle, bytes, at: UInt64(block * blockBytes)) }
        }
    }
    func timedDigest() -> Double {
        let used = fs.logUsedBytes
        let start = nowNanoseconds()
        check("digest") { try fs.digest() }
        let seconds = Double(nowNanoseconds() - start) / 1e9
        print("fs.digest.sample log_mib \(fixed(Double(used) / 1_048_576, 1)) seconds \(fixed(seconds, 3))")
        return Double(mib) / seconds
    }
    for round in 0 ..< rounds {
        // Untimed: drop the previous round's file and digest that.
        if let previous { check("unlink") { try fs.unlink(previous) } }
        check("digest") { try fs.digest() }
        let path = Path("/digest-\(round)")
        previous = path
        let handle = check("open") { try fs.open(path, [.create, .readWrite], mode: 0o644) }
        var floorFirst = round % 2 == 1
        for _ in 0 ..< 2 {
            if floorFirst {
                let start = nowNanoseconds()
                for block in 0 ..< blocks {
                    pmem_memcpy_persist(floorTarget.base + shuffled[block] * blockBytes, floorSource.base + block * blockBytes, blockBytes)
                }
                floor.append(Double(mib) / (Double(nowNanoseconds() - start) / 1e9))
            } else {
                fill(handle, nil)
                fresh.append(timedDigest())
                fill(handle, shuffled)
                overwrite.append(timedDigest())
            }
            floorFirst.toggle()
        }
        check("close") { try fs.close(handle) }
    }
    print("fs.digest.fresh_mib_per_s \(fixed(median(fresh), 0))")
    print("fs.digest.overwrite_mib_per_s \(fixed(median(overwrite), 0))")
    print("fs.digest.floor_mib_per_s \(fixed(median(floor), 0))")
    print("fs.digest.rounds_fresh \(fresh.map { fixed($0, 0) }.joined(separator: " "))")
    print("fs.digest.rounds_overwrite \(overwrite.map { fixed($0, 0) }.joined(separator: " "))")
    print("fs.digest.rounds_floor \(floor.map { fixed($0, 0) }.joined(separator: " "))")
    print("fs.digest.batches \(fs.digestBatches)")
    volume.remove()
}

// MARK: - 5. Memory

/// The process's resident memory, in KiB, from /proc/self/status (RssAnon, RssFile, RssShmem).
func residentKiB() -> [String: Int] {
    guard let file = fopen("/proc/self/status", "r") else { return [:] }
    defer { fclose(file) }
    var result: [String: Int] = [:]
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, Int32(line.count), file) != nil {
        let text = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        for key in ["RssAnon:", "RssFile:", "RssShmem:", "VmRSS:", "VmHWM:"] where text.hasPrefix(key) {
            let digits = text.dropFirst(key.count).filter { $0.isNumber }
            result[String(key.dropLast())] = Int(digits) ?? 0
        }
    }
    return result
}

/// glibc's malloc_trim (not in Swift's Glibc module): gives free heap pages back.
@_silgen_name("malloc_trim")
func mallocTrim(_ pad: Int) -> Int32

func fsMemoryBenchmark() {
    let files = Int(argument("--files", "1000000"))!
    let dataGiB = Int(argument("--data-gib", "4"))!
    let perDirectory = 1000
    let before = residentKiB()
    print("fs.memory.before_open_rss_anon_kib \(before["RssAnon"] ?? 0)")
    // Room for the data, one inode (256 B) per file, the directories, logs and journal.
    let nvmBytes = UInt64(dataGiB) << 30 + UInt64(files) * 1024 + (1 << 30)
    let volume = BenchVolume(name: "memory", nvmBytes: nvmBytes, logRegionBytes: 64 << 20)
    let fs = volume.fs
    print("fs.memory.nvm_mib \(nvmBytes >> 20)")
    var peakAnon = 0
    func sample() { peakAnon = max(peakAnon, residentKiB()["RssAnon"] ?? 0) }
    sample()
    let opened = residentKiB()
    print("fs.memory.after_open_rss_anon_kib \(opened["RssAnon"] ?? 0)")

    let start = nowNanoseconds()
    for directory in 0 ..< (files + perDirectory - 1) / perDirectory {
        check("mkdir") { try fs.mkdir(Path("/d\(directory)"), mode: 0o755) }
    }
    for index in 0 ..< files {
        let path = Path("/d\(index / perDirectory)/f\(index % perDirectory)")
        let handle = check("create") { try fs.open(path, [.create, .readWrite], mode: 0o644) }
        check("close") { try fs.close(handle) }
        if index % 10_000 == 9_999 { sample() }
    }
    print("fs.memory.create_seconds \(fixed(Double(nowNanoseconds() - start) / 1e9, 1))")
    print("fs.memory.after_files_rss_anon_kib \(residentKiB()["RssAnon"] ?? 0)")
    // Everything digested: what LibFS still holds is no longer the pending state of the creates.
    check("digest") { try fs.digest() }
    sample()
    print("fs.memory.after_files_digest_rss_anon_kib \(residentKiB()["RssAnon"] ?? 0)")
    let created = nowNanoseconds()
    print("fs.memory.create_and_digest_seconds \(fixed(Double(created - start) / 1e9, 1))")

    // The data: 1 MiB writes into files of 1 GiB.
    let chunk = AlignedBuffer(byteCount: 1 << 20)
    var generator = SplitMix64(seed: 13)
    generator.fill(chunk.bytes)
    for file in 0 ..< dataGiB {
        let handle = check("open") { try fs.open(Path("/data-\(file)"), [.create, .readWrite], mode: 0o644) }
        for index in 0 ..< 1024 {
            _ = check("write") { try fs.pwrite(handle, UnsafeRawBufferPointer(chunk.bytes), at: UInt64(index) << 20) }
            if index % 64 == 63 { sample() }
        }
        check("close") { try fs.close(handle) }
    }
    let written = nowNanoseconds()
    print("fs.memory.write_seconds \(fixed(Double(written - created) / 1e9, 1))")
    check("digest") { try fs.digest() }
    sample()
    let after = residentKiB()
    print("fs.memory.digest_seconds \(fixed(Double(nowNanoseconds() - written) / 1e9, 1))")
    let statistics = check("statfs") { try fs.statfs() }
    print("fs.memory.used_inodes \(statistics.totalInodes - statistics.freeInodes)")
    print("fs.memory.used_mib \(((statistics.totalBlocks - statistics.freeBlocks) * statistics.blockBytes) >> 20)")
    print("fs.memory.after_rss_anon_kib \(after["RssAnon"] ?? 0)")
    print("fs.memory.after_rss_shmem_kib \(after["RssShmem"] ?? 0)")
    print("fs.memory.after_rss_file_kib \(after["RssFile"] ?? 0)")
    print("fs.memory.peak_rss_anon_kib \(peakAnon)")
    // What malloc keeps after the pending state was freed, versus what is still live.
    _ = mallocTrim(0)
    print("fs.memory.after_trim_rss_anon_kib \(residentKiB()["RssAnon"] ?? 0)")
    print("fs.memory.shale_rss_anon_mib \(fixed(Double(max(after["RssAnon"] ?? 0, peakAnon) - (before["RssAnon"] ?? 0)) / 1024, 1))")
    volume.remove()
}
