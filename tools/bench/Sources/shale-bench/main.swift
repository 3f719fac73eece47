// shale-bench: micro-benchmarks of the media layer against the raw libraries beneath it,
// measured in the same process, on the same mapping or file, interleaved round by round so
// that the noise of this shared machine falls on both sides alike.
//
//   shale-bench persist [--nvm PATH] [--rounds N]
//   shale-bench log [--rounds N]
//   shale-bench block --file PATH [--seconds S] [--rounds N] [--pattern randwrite4k|seqwrite1m]
//   shale-bench fs-… (the file-system benchmarks: FileSystemBench.swift)
//
// Output: one line per measurement, "name value unit", then medians; tools/bench/run turns
// them into the table in docs/benchmarks.md.

import CPmem
import Glibc
import LibFS
import ShaleFormat
import ShaleMedia

func nowNanoseconds() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? .nan : sorted[sorted.count / 2]
}

/// `value` with `digits` decimals, without Foundation.
func fixed(_ value: Double, _ digits: Int) -> String {
    guard value.isFinite else { return "nan" }
    var scale = 1.0
    for _ in 0 ..< digits { scale *= 10 }
    let scaled = Int64((abs(value) * scale).rounded())
    let whole = scaled / Int64(scale), fraction = scaled % Int64(scale)
    var text = (value < 0 ? "-" : "") + String(whole)
    if digits > 0 {
        let digitsText = String(fraction)
        text += "." + String(repeating: "0", count: digits - digitsText.count) + digitsText
    }
    return text
}

func argument(_ name: String, _ fallback: String) -> String {
    let arguments = CommandLine.arguments
    if let index = arguments.firstIndex(of: name), index + 1 < arguments.count { return arguments[index + 1] }
    return fallback
}

func fail(_ message: String) -> Never {
    let text = "shale-bench: \(message)\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    exit(1)
}

// MARK: - Persist cost through PersistentMemory vs raw pmem_memcpy_persist

/// The way upper layers call the region: generic over the protocol, specialised.
@inline(never)
func persistLoop<M: PersistentMemory>(_ region: M, _ source: UnsafeRawBufferPointer, _ offsets: UnsafeBufferPointer<Int>) {
    for offset in offsets { region.storePersist(source, at: offset) }
}

@inline(never)
func rawLoop(_ base: UnsafeMutableRawPointer, _ source: UnsafeRawBufferPointer, _ offsets: UnsafeBufferPointer<Int>) {
    for offset in offsets { pmem_memcpy_persist(base + offset, source.baseAddress!, source.count) }
}

func persistBenchmark() {
    let path = argument("--nvm", "/dev/shm/shale-bench-\(getpid()).nvm")
    let rounds = Int(argument("--rounds", "31"))!
    let regionBytes = 256 << 20
    defer { unlink(path) }
    let region: MappedPersistentMemory
    do {
        region = try MappedPersistentMemory.create(path: path, byteCount: regionBytes, exclusive: false)
    } catch {
        fail("\(error)")
    }
    // A second mapping of the same file for the raw calls: same pages, same flush path.
    var mappedBytes = 0
    var isPmem: Int32 = 0
    guard let raw = pmem_map_file(path, 0, 0, 0, &mappedBytes, &isPmem) else { fail("pmem_map_file failed") }
    defer { pmem_unmap(raw, mappedBytes) }
    print("nvm.persistence \(region.persistence.rawValue)")
    print("nvm.pmem_is_pmem \(isPmem)")

    for size in [64, 4096] {
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
        defer { source.deallocate() }
        for index in 0 ..< size { source[index] = UInt8(truncatingIfNeeded: index &* 31) }
        // Offsets walk the region with a stride so every op touches fresh lines, as a log does.
        let operations = 20_000
        let stride = max(size, 64)
        let offsets = (0 ..< operations).map { ($0 * stride) % (regionBytes - size) }
        var shale: [Double] = [], reference: [Double] = []
        offsets.withUnsafeBufferPointer { offsetBuffer in
            // Warm up both paths (page faults, caches).
            persistLoop(region, UnsafeRawBufferPointer(source), offsetBuffer)
            rawLoop(raw, UnsafeRawBufferPointer(source), offsetBuffer)
            for round in 0 ..< rounds {
                for side in (round % 2 == 0 ? [0, 1] : [1, 0]) {
                    let start = nowNanoseconds()
                    if side == 0 {
                        persistLoop(region, UnsafeRawBufferPointer(source), offsetBuffer)
                    } else {
                        rawLoop(raw, UnsafeRawBufferPointer(source), offsetBuffer)
                    }
                    let perOperation = Double(nowNanoseconds() - start) / Double(operations)
                    if side == 0 { shale.append(perOperation) } else { reference.append(perOperation) }
                }
            }
        }
        let shaleMedian = median(shale), referenceMedian = median(reference)
        print("persist.\(size)B.shale_ns \(fixed(shaleMedian, 1))")
        print("persist.\(size)B.pmem_memcpy_persist_ns \(fixed(referenceMedian, 1))")
        print("persist.\(size)B.ratio \(fixed(shaleMedian / referenceMedian, 3))")
    }
}

// MARK: - Log append latency through OperationLog vs the persist floor

/// Appends `operations` records, reclaiming the whole log (as a digest would) whenever it
/// fills, outside the timed region; returns nanoseconds per append.
@inline(never)
func appendLoop(_ log: OperationLog<MappedPersistentMemory>, payloadBytes: Int, data: UnsafeRawBufferPointer, operations: Int) -> Double {
    var elapsed: UInt64 = 0
    var done = 0
    while done < operations {
        let start = nowNanoseconds()
        var batch = 0
        while done + batch < operations {
            do {
                try log.append(.write, payloadBytes: payloadBytes, data: data) { buffer in
                    buffer.initializeMemory(as: UInt8.self, repeating: 0x5A)
                }
            } catch {
                break
            }
            batch += 1
        }
        elapsed += nowNanoseconds() - start
        done += batch
        log.reclaim(upTo: log.head, sequence: log.nextSequence)
    }
    return Double(elapsed) / Double(operations)
}

func logBenchmark() {
    let path = argument("--nvm", "/dev/shm/shale-bench-log-\(getpid()).nvm")
    let rounds = Int(argument("--rounds", "15"))!
    let regionBytes = 64 << 20
    defer { unlink(path) }
    let region: MappedPersistentMemory
    do {
        region = try MappedPersistentMemory.create(path: path, byteCount: regionBytes + (1 << 20), exclusive: false)
    } catch {
        fail("\(error)")
    }
    let grant = LogGrant(region: 0, regionOffset: 1 << 20, regionBytes: UInt64(regionBytes), epoch: 1,
                         startOffset: 0, startSequence: 1, volumeSeed: 7)
    let log = OperationLog(nvm: region, grant: grant)
    var mappedBytes = 0
    var isPmem: Int32 = 0
    guard let raw = pmem_map_file(path, 0, 0, 0, &mappedBytes, &isPmem) else { fail("pmem_map_file failed") }
    defer { pmem_unmap(raw, mappedBytes) }
    print("crc32c.hardware \(CRC32C.usesHardware)")

    // (label, payload bytes, bulk data bytes, floor bytes)
    let cases = [("append128B", 96, 0, 128), ("write4KiB", 40, 4096, 4096)]
    for (label, payloadBytes, dataBytes, floorBytes) in cases {
        let data = UnsafeMutableRawBufferPointer.allocate(byteCount: max(dataBytes, 1), alignment: 64)
        defer { data.deallocate() }
        data.initializeMemory(as: UInt8.self, repeating: 0xC3)
        let dataView = UnsafeRawBufferPointer(rebasing: data[0 ..< dataBytes])
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: floorBytes, alignment: 64)
        defer { source.deallocate() }
        source.initializeMemory(as: UInt8.self, repeating: 0x11)
        let operations = 20_000
        let stride = max(floorBytes, 64)
        let offsets = (0 ..< operations).map { ($0 * stride) % (regionBytes - floorBytes) + (1 << 20) }
        var shale: [Double] = [], floor: [Double] = []
        offsets.withUnsafeBufferPointer { offsetBuffer in
            _ = appendLoop(log, payloadBytes: payloadBytes, data: dataView, operations: operations)
            rawLoop(raw, UnsafeRawBufferPointer(source), offsetBuffer)
            for round in 0 ..< rounds {
                for side in (round % 2 == 0 ? [0, 1] : [1, 0]) {
                    if side == 0 {
                        shale.append(appendLoop(log, payloadBytes: payloadBytes, data: dataView, operations: operations))
                    } else {
                        let start = nowNanoseconds()
                        rawLoop(raw, UnsafeRawBufferPointer(source), offsetBuffer)
                        floor.append(Double(nowNanoseconds() - start) / Double(operations))
                    }
                }
            }
        }
        print("log.\(label).shale_ns \(fixed(median(shale), 1))")
        print("log.\(label).floor_\(floorBytes)B_ns \(fixed(median(floor), 1))")
        print("log.\(label).ratio \(fixed(median(shale) / median(floor), 3))")
    }
}

// MARK: - Block device throughput

func blockBenchmark() {
    let path = argument("--file", "")
    guard !path.isEmpty else { fail("block needs --file PATH") }
    let seconds = Double(argument("--seconds", "5"))!
    let pattern = argument("--pattern", "randwrite4k")
    let fileBytes: UInt64 = UInt64(argument("--size-mib", "1024"))! << 20
    let device: URingBlockDevice
    do {
        switch HostFiles.kind(of: path) {
        case let .regular(bytes) where bytes >= fileBytes:
            device = try URingBlockDevice.open(path: path)
        default:
            device = try URingBlockDevice.create(path: path, byteCount: fileBytes, exclusive: false)
        }
    } catch {
        fail("\(error)")
    }
    print("block.io_mode \(device.ioMode.rawValue)")
    let (blockBytes, depth) = pattern == "seqwrite1m" ? (1 << 20, Int(argument("--depth", "4"))!) : (4096, Int(argument("--depth", "32"))!)
    let buffer = AlignedBuffer(byteCount: blockBytes * depth)
    for index in 0 ..< buffer.count { buffer.bytes[index] = UInt8(truncatingIfNeeded: index &* 7 &+ 1) }
    let blocks = fileBytes / UInt64(blockBytes)
    var generator = SplitMix64(seed: 42)
    var sequential: UInt64 = 0
    // Like fio: `depth` requests stay in flight all the time. Writes only read their buffer,
    // so request i may use slot i % depth even while an earlier user of that slot is in flight.
    let isSequential = pattern == "seqwrite1m"
    let operationsPerStream = depth * 512
    var operations = 0
    let start = nowNanoseconds()
    let deadline = start + UInt64(seconds * 1e9)
    while nowNanoseconds() < deadline {
        do {
            try device.stream(count: operationsPerStream, queueDepth: depth, next: { index in
                let block: UInt64
                if isSequential {
                    block = sequential % blocks
                    sequential += 1
                } else {
                    block = generator.next() % blocks
                }
                let slot = index % depth
                return BlockRequest(.write, offset: block * UInt64(blockBytes), buffer: buffer.slice(slot * blockBytes, blockBytes))
            }, completed: { _ in })
        } catch {
            fail("\(error)")
        }
        operations += operationsPerStream
    }
    let elapsed = Double(nowNanoseconds() - start) / 1e9
    let bytesPerSecond = Double(operations * blockBytes) / elapsed
    print("block.\(pattern).iops \(fixed(Double(operations) / elapsed, 0))")
    print("block.\(pattern).mib_per_s \(fixed(bytesPerSecond / 1_048_576, 1))")
}

switch CommandLine.arguments.dropFirst().first {
case "persist": persistBenchmark()
case "block": blockBenchmark()
case "log": logBenchmark()
case "fs-write4k": fsWrite4kBenchmark()
case "fs-append128": fsAppend128Benchmark()
case "fs-smallfiles": fsSmallFilesBenchmark()
case "fs-digest": fsDigestBenchmark()
case "fs-memory": fsMemoryBenchmark()
case "mount-ops": mountOpsBenchmark()
default: fail("usage: shale-bench persist [--nvm PATH] [--rounds N] | log [--rounds N] | block --file PATH [--pattern randwrite4k|seqwrite1m] [--seconds S] [--depth N] | fs-write4k|fs-append128|fs-smallfiles --ext4 DIR --tmpfs DIR [--rounds N] [--ops N|--files N] | fs-digest [--rounds N] [--mib N] | fs-memory [--files N] [--data-gib N] | mount-ops --side NAME=DIR[,fsync] ... [--rounds N] [--ops N] [--files N] [--mib N]")
}
