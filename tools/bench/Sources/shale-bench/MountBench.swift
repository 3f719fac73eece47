// The mount benchmarks of issue 4: ordinary system calls on directories that are mount
// points (or plain directories), side by side in one process, interleaved round by round
// with the order rotating, so drift falls on every side alike.
//
//   shale-bench mount-ops --side NAME=DIR[,fsync] ... [--rounds N] [--ops N] [--files N] [--mib N]
//
// tools/bench/run sets up the sides: Shale's mount (durable on return), libfuse's
// passthrough_ll example over tmpfs (not durable) and over ext4 on a RAM-backed loop device
// with fsync after each write (durable). A side marked `fsync` calls fsync after every write
// and before closing a created file.
//
// Measured per side and round: 4 KiB pwrite latency at random offsets of a 64 MiB file
// written in full first (median, p99); 1 MiB sequential write and read bandwidth of a new
// `--mib` file (read after reopening); creates per second (open(O_CREAT) + close of empty
// files, in a new directory per round); stat per second (stat of those files).

import Glibc
import ShaleMedia

struct MountSide {
    var name: String
    var directory: String
    var fsyncs: Bool
}

func mountSides() -> [MountSide] {
    var sides: [MountSide] = []
    var index = 1
    let arguments = CommandLine.arguments
    while index < arguments.count {
        if arguments[index] == "--side", index + 1 < arguments.count {
            let spec = arguments[index + 1]
            guard let equals = spec.firstIndex(of: "=") else { fail("--side NAME=DIR[,fsync], not \(spec)") }
            var rest = String(spec[spec.index(after: equals)...])
            var fsyncs = false
            if rest.hasSuffix(",fsync") {
                fsyncs = true
                rest.removeLast(",fsync".count)
            }
            sides.append(MountSide(name: String(spec[..<equals]), directory: rest, fsyncs: fsyncs))
            index += 2
        } else {
            index += 1
        }
    }
    guard !sides.isEmpty else { fail("mount-ops needs at least one --side NAME=DIR[,fsync]") }
    return sides
}

/// Runs `body(side, round)` for every side in each round, the order rotating; `body` returns
/// a rate (per second). Prints each side's median over rounds and the per-round values.
func runRateSides(_ label: String, _ unit: String, _ sides: [MountSide], rounds: Int,
                  _ body: (MountSide, Int) -> Double) -> [String: Double] {
    var values: [[Double]] = Array(repeating: [], count: sides.count)
    for round in 0 ..< rounds {
        for step in 0 ..< sides.count {
            let which = (step + round) % sides.count
            values[which].append(body(sides[which], round))
        }
    }
    var result: [String: Double] = [:]
    for (which, side) in sides.enumerated() {
        result[side.name] = median(values[which])
        print("mount.\(label).\(side.name).\(unit) \(fixed(median(values[which]), 1))")
        print("mount.\(label).\(side.name).rounds \(values[which].map { fixed($0, 0) }.joined(separator: " "))")
    }
    return result
}

func mountOpsBenchmark() {
    let sides = mountSides()
    let rounds = Int(argument("--rounds", "5"))!
    let operations = Int(argument("--ops", "4096"))!
    let files = Int(argument("--files", "2000"))!
    let mebibytes = Int(argument("--mib", "256"))!
    let fileBytes = 64 << 20, blockBytes = 4096
    let source = AlignedBuffer(byteCount: 1 << 20)
    var generator = SplitMix64(seed: 11)
    generator.fill(source.bytes)
    let block = UnsafeRawBufferPointer(source.slice(0, blockBytes))
    let offsets = (0 ..< operations).map { _ in Int(generator.next() % UInt64(fileBytes / blockBytes)) * blockBytes }

    // 1. 4 KiB writes: the file written in full first, so every side overwrites.
    var descriptors: [Int32] = []
    for side in sides {
        let fd = openHostFile(side.directory + "/w4k", O_CREAT | O_RDWR | O_TRUNC)
        for offset in stride(from: 0, to: fileBytes, by: source.count) { writeAll(fd, UnsafeRawBufferPointer(source.bytes), at: offset) }
        checkPOSIX(Int(fsync(fd)), "fsync")
        descriptors.append(fd)
    }
    let latencySides = sides.enumerated().map { which, side in
        LatencySide(name: side.name, prepare: { _ in }, operation: { index in
            writeAll(descriptors[which], block, at: offsets[index])
            if side.fsyncs { checkPOSIX(Int(fsync(descriptors[which])), "fsync") }
        })
    }
    let writes = runLatencySides("mount.write4k", latencySides, rounds: rounds, operations: operations)
    for fd in descriptors { close(fd) }
    for side in sides { unlink(side.directory + "/w4k") }
    if let shale = writes["shale"] {
        for side in sides where side.name != "shale" {
            print("mount.write4k.ratio_\(side.name) \(ratioText(shale.median, writes[side.name]!.median))")
        }
    }

    // 2. 1 MiB sequential writes, then reads of the same file after reopening it.
    let writeRates = runRateSides("seqwrite1m", "mib_per_s", sides, rounds: rounds) { side, round in
        let path = side.directory + "/seq-\(round)"
        let fd = openHostFile(path, O_CREAT | O_WRONLY | O_TRUNC)
        let start = nowNanoseconds()
        for index in 0 ..< mebibytes {
            writeAll(fd, UnsafeRawBufferPointer(source.bytes), at: index << 20)
            if side.fsyncs { checkPOSIX(Int(fsync(fd)), "fsync") }
        }
        let elapsed = Double(nowNanoseconds() - start) / 1e9
        close(fd)
        return Double(mebibytes) / elapsed
    }
    let reader = AlignedBuffer(byteCount: 1 << 20)
    let readRates = runRateSides("seqread1m", "mib_per_s", sides, rounds: rounds) { side, round in
        let path = side.directory + "/seq-\(round)"
        let fd = openHostFile(path, O_RDONLY)
        let start = nowNanoseconds()
        var offset = 0
        while true {
            let got = pread(fd, reader.bytes.baseAddress, reader.count, off_t(offset))
            checkPOSIX(got, "pread")
            if got == 0 { break }
            offset += got
        }
        let elapsed = Double(nowNanoseconds() - start) / 1e9
        close(fd)
        unlink(path)
        if offset != mebibytes << 20 { fail("read \(offset) bytes of \(mebibytes) MiB") }
        return Double(mebibytes) / elapsed
    }

    // 3. Creates, then 4. stats of the files made.
    let createRates = runRateSides("create", "per_s", sides, rounds: rounds) { side, round in
        let directory = side.directory + "/c-\(round)"
        checkPOSIX(Int(mkdir(directory, 0o755)), "mkdir \(directory)")
        let start = nowNanoseconds()
        for index in 0 ..< files {
            let fd = Glibc.open(directory + "/f\(index)", O_CREAT | O_WRONLY | O_EXCL, 0o644)
            checkPOSIX(Int(fd), "create")
            if side.fsyncs { checkPOSIX(Int(fsync(fd)), "fsync") }
            close(fd)
        }
        if side.fsyncs {
            let fd = Glibc.open(directory, O_RDONLY | O_DIRECTORY)
            checkPOSIX(Int(fsync(fd)), "fsync dir")
            close(fd)
        }
        return Double(files) / (Double(nowNanoseconds() - start) / 1e9)
    }
    let statRates = runRateSides("stat", "per_s", sides, rounds: rounds) { side, round in
        let directory = side.directory + "/c-\(round)"
        var info = stat()
        let start = nowNanoseconds()
        for index in 0 ..< files { checkPOSIX(Int(stat(directory + "/f\(index)", &info)), "stat") }
        return Double(files) / (Double(nowNanoseconds() - start) / 1e9)
    }
    for side in sides {
        for round in 0 ..< rounds {
            let directory = side.directory + "/c-\(round)"
            for index in 0 ..< files { unlink(directory + "/f\(index)") }
            rmdir(directory)
        }
    }
    if let shale = writeRates["shale"] {
        for side in sides where side.name != "shale" {
            print("mount.seqwrite1m.ratio_\(side.name) \(ratioText(shale, writeRates[side.name]!))")
            print("mount.seqread1m.ratio_\(side.name) \(ratioText(readRates["shale"]!, readRates[side.name]!))")
            print("mount.create.ratio_\(side.name) \(ratioText(createRates["shale"]!, createRates[side.name]!))")
            print("mount.stat.ratio_\(side.name) \(ratioText(statRates["shale"]!, statRates[side.name]!))")
        }
    }
}
