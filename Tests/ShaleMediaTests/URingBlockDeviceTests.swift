import Dispatch
import Glibc
import Synchronization
import SystemPackage
import Testing
@testable import ShaleMedia

/// Tests of the io_uring block device on files under /tmp: ext4 on this machine, so O_DIRECT
/// is real and enforces alignment (tmpfs would accept anything and hide alignment bugs).
struct URingBlockDeviceTests {
    static let blockBytes = 4096

    /// A fresh path under /tmp, removed by the caller's `defer`.
    static func temporaryPath(_ label: String = #function) -> String {
        let name = label.filter { $0.isLetter || $0.isNumber }
        return "/tmp/shale-uring-\(name)-\(getpid())-\(UInt64.random(in: 0 ... .max)).img"
    }

    static func randomBuffer(_ byteCount: Int, seed: UInt64) -> AlignedBuffer {
        let buffer = AlignedBuffer(byteCount: byteCount)
        var random = SplitMix64(seed: seed)
        random.fill(buffer.bytes)
        return buffer
    }

    static func same(_ a: UnsafeMutableRawBufferPointer, _ b: UnsafeMutableRawBufferPointer) -> Bool {
        guard a.count == b.count, let x = a.baseAddress, let y = b.baseAddress else { return a.count == b.count }
        return memcmp(x, y, a.count) == 0
    }

    /// Fills a buffer with a byte that no read of a fresh device returns.
    static func poison(_ buffer: AlignedBuffer) {
        buffer.bytes.initializeMemory(as: UInt8.self, repeating: 0xAB)
    }

    @Test func batchOf64RandomBlocksRoundTripsWithODirect() throws {
        let path = Self.temporaryPath()
        defer { unlink(path) }
        let device = try URingBlockDevice.create(path: path, byteCount: 64 << 20)
        #expect(device.ioMode == .direct)
        #expect(device.byteCount == 64 << 20)
        #expect(device.alignmentBytes == 4096)

        var random = SplitMix64(seed: 64)
        var blockNumbers = Set<UInt64>()
        while blockNumbers.count < 64 {
            blockNumbers.insert(random.next() % (device.byteCount / UInt64(Self.blockBytes)))
        }
        let offsets = blockNumbers.map { $0 * UInt64(Self.blockBytes) }
        let written = Self.randomBuffer(64 * Self.blockBytes, seed: 1)
        let readBack = AlignedBuffer(byteCount: 64 * Self.blockBytes)
        try device.perform(offsets.enumerated().map { index, offset in
            BlockRequest(.write, offset: offset, buffer: written.slice(index * Self.blockBytes, Self.blockBytes))
        })
        try device.perform(offsets.enumerated().map { index, offset in
            BlockRequest(.read, offset: offset, buffer: readBack.slice(index * Self.blockBytes, Self.blockBytes))
        })
        #expect(Self.same(written.bytes, readBack.bytes))

        // A block nobody wrote reads as zeros (sparse file).
        let unwritten = try #require((0 ..< device.byteCount / UInt64(Self.blockBytes)).first { !blockNumbers.contains($0) })
        let zeros = AlignedBuffer(byteCount: Self.blockBytes)
        Self.poison(zeros)
        try device.read(into: zeros.bytes, at: unwritten * UInt64(Self.blockBytes))
        #expect(zeros.bytes.allSatisfy { $0 == 0 })
    }

    @Test func oneMebibyteRequestRoundTrips() throws {
        let path = Self.temporaryPath()
        defer { unlink(path) }
        let device = try URingBlockDevice.create(path: path, byteCount: 8 << 20)
        let written = Self.randomBuffer(1 << 20, seed: 2)
        let readBack = AlignedBuffer(byteCount: 1 << 20)
        try device.write(written.bytes, at: 3 << 20)
        try device.read(into: readBack.bytes, at: 3 << 20)
        #expect(Self.same(written.bytes, readBack.bytes))
    }

    @Test(arguments: [8, URingBlockDevice.defaultRingEntries])
    func batchLargerThanTheRingIsCarriedOutInWaves(ringEntries: Int) throws {
        let path = Self.temporaryPath()
        defer { unlink(path) }
        let device = try URingBlockDevice.create(path: path, byteCount: 4 << 20, ringEntries: ringEntries)
        #expect(device.ringEntries == ringEntries)
        let requestCount = 2 * ringEntries + 44  // two full waves and a partial one
        let written = Self.randomBuffer(requestCount * Self.blockBytes, seed: 3)
        let readBack = AlignedBuffer(byteCount: requestCount * Self.blockBytes)
        // Blocks in reverse order, so that the file offsets differ from the buffer offsets.
        func offset(_ index: Int) -> UInt64 { UInt64((requestCount - 1 - index) * Self.blockBytes) }
        try device.perform((0 ..< requestCount).map {
            BlockRequest(.write, offset: offset($0), buffer: written.slice($0 * Self.blockBytes, Self.blockBytes))
        })
        try device.perform((0 ..< requestCount).map {
            BlockRequest(.read, offset: offset($0), buffer: readBack.slice($0 * Self.blockBytes, Self.blockBytes))
        })
        #expect(Self.same(written.bytes, readBack.bytes))
    }

    @Test func dataIsThereAfterCloseAndReopen() throws {
        let path = Self.temporaryPath()
        defer { unlink(path) }
        let written = Self.randomBuffer(16 * Self.blockBytes, seed: 4)
        do {
            let device = try URingBlockDevice.create(path: path, byteCount: 1 << 20)
            try device.write(written.bytes, at: 128 * 1024)
            try device.flush()
        }  // closed here
        let reopened = try URingBlockDevice.open(path: path)
        #expect(reopened.byteCount == 1 << 20)
        #expect(reopened.ioMode == .direct)
        let readBack = AlignedBuffer(byteCount: written.count)
        try reopened.read(into: readBack.bytes, at: 128 * 1024)
        #expect(Self.same(written.bytes, readBack.bytes))
    }

    @Test func flushSucceedsAfterWritesAndWhenIdle() throws {
        let path = Self.temporaryPath()
        defer { unlink(path) }
        let device = try URingBlockDevice.create(path: path, byteCount: 1 << 20)
        try device.flush()  // nothing written yet
        let written = Self.randomBuffer(Self.blockBytes, seed: 5)
        try device.write(written.bytes, at: 0)
        try device.flush()
        try device.flush()
        let readBack = AlignedBuffer(byteCount: Self.blockBytes)
        try device.read(into: readBack.bytes, at: 0)
        #expect(Self.same(written.bytes, readBack.bytes))
    }

    @Test func openSizesARegularFileRoundedDownToWholeBlocks() throws {
        let path = Self.temporaryPath()
        defer { unlink(path) }
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_EXCL, 0o600)
        try #require(fd >= 0)
        #expect(ftruncate(fd, 3 * 4096 + 1000) == 0)
        close(fd)
        let device = try URingBlockDevice.open(path: path)
        #expect(device.byteCount == 3 * 4096)
        // A file smaller than one block is no device.
        #expect(truncate(path, 1000) == 0)
        let error = #expect(throws: MediaError.self) { try URingBlockDevice.open(path: path) }
        #expect(error?.errno == .invalidArgument)
    }

    /// Every batch is validated whole before any I/O: a valid write ahead of the bad request
    /// must not reach the file.
    @Test(arguments: ["offset", "length", "address"])
    func misalignedRequestIsRejectedBeforeAnyIO(misaligned: String) throws {
        let path = Self.temporaryPath()
        defer { unlink(path) }
        let device = try URingBlockDevice.create(path: path, byteCount: 1 << 20)
        let valid = Self.randomBuffer(Self.blockBytes, seed: 6)
        let backing = AlignedBuffer(byteCount: 3 * Self.blockBytes)
        let bad: BlockRequest
        switch misaligned {
        case "offset": bad = BlockRequest(.write, offset: 8192 + 512, buffer: backing.slice(0, Self.blockBytes))
        case "length": bad = BlockRequest(.write, offset: 8192, buffer: backing.slice(0, Self.blockBytes + 512))
        default: bad = BlockRequest(.write, offset: 8192, buffer: backing.slice(512, Self.blockBytes))
        }
        let error = #expect(throws: MediaError.self) {
            try device.perform([BlockRequest(.write, offset: 0, buffer: valid.bytes), bad])
        }
        #expect(error?.errno == .invalidArgument)
        #expect(error?.description.contains(path) == true)
        let readBack = AlignedBuffer(byteCount: Self.blockBytes)
        Self.poison(readBack)
        try device.read(into: readBack.bytes, at: 0)
        #expect(readBack.bytes.allSatisfy { $0 == 0 }, "the valid write of the rejected batch reached the file")
    }

    @Test func requestsOutsideTheDeviceAreRejectedWithoutWrapping() throws {
        let path = Self.temporaryPath()
        defer { unlink(path) }
        let device = try URingBlockDevice.create(path: path, byteCount: 1 << 20)
        let buffer = AlignedBuffer(byteCount: 2 * Self.blockBytes)
        let end = device.byteCount
        let cases: [BlockRequest] = [
            BlockRequest(.read, offset: end, buffer: buffer.slice(0, Self.blockBytes)),  // just past the end
            BlockRequest(.write, offset: end - 4096, buffer: buffer.bytes),  // straddles the end
            BlockRequest(.write, offset: end + (1 << 30), buffer: buffer.slice(0, Self.blockBytes)),
            // offset + length wraps around to a small number: must not be taken as offset 4096.
            BlockRequest(.write, offset: UInt64.max - 4095, buffer: buffer.bytes),
            BlockRequest(.read, offset: UInt64.max - 4095, buffer: buffer.slice(0, Self.blockBytes)),
        ]
        for request in cases {
            let error = #expect(throws: MediaError.self) { try device.perform([request]) }
            #expect(error?.errno == .invalidArgument, "\(request.operation) at \(request.offset)")
        }
        // The last whole block is inside.
        try device.read(into: buffer.slice(0, Self.blockBytes), at: end - 4096)
    }

    @Test func openingAMissingPathReportsENOENTAndThePath() throws {
        let path = Self.temporaryPath()
        let error = #expect(throws: MediaError.self) { try URingBlockDevice.open(path: path) }
        #expect(error?.errno == .noSuchFileOrDirectory)
        #expect(error?.description.contains(path) == true)
    }

    @Test func exclusiveCreateOfAnExistingFileReportsEEXIST() throws {
        let path = Self.temporaryPath()
        defer { unlink(path) }
        _ = try URingBlockDevice.create(path: path, byteCount: 1 << 20)
        let error = #expect(throws: MediaError.self) {
            try URingBlockDevice.create(path: path, byteCount: 1 << 20, exclusive: true)
        }
        #expect(error?.errno == .fileExists)
        #expect(error?.description.contains(path) == true)
        // Without exclusive, the existing file is resized, rounded down to whole blocks.
        let resized = try URingBlockDevice.create(path: path, byteCount: (2 << 20) + 100, exclusive: false)
        #expect(resized.byteCount == 2 << 20)
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_size == 2 << 20)
    }

    /// A file cut short behind the device's back: the read is short (resumed), then makes no
    /// progress; it must fail with EIO naming the request, not loop.
    @Test func readOfAFileShrunkUnderneathFailsInsteadOfLooping() throws {
        let path = Self.temporaryPath()
        defer { unlink(path) }
        let device = try URingBlockDevice.create(path: path, byteCount: 64 * 1024)
        let written = Self.randomBuffer(64 * 1024, seed: 7)
        try device.write(written.bytes, at: 0)
        #expect(truncate(path, 32 * 1024) == 0)
        let readBack = AlignedBuffer(byteCount: 64 * 1024)
        let error = #expect(throws: MediaError.self) { try device.read(into: readBack.bytes, at: 0) }
        #expect(error?.errno == .ioError)
        #expect(error?.description.contains(path) == true)
        #expect(error?.description.contains("read of 65536 bytes at offset 0") == true)
        // The first half, before the new end of file, was transferred.
        #expect(Self.same(readBack.slice(0, 32 * 1024), written.slice(0, 32 * 1024)))
    }

    @Test func concurrentBatchesFromFourThreadsOnDisjointRanges() throws {
        let path = Self.temporaryPath()
        defer { unlink(path) }
        let device = try URingBlockDevice.create(path: path, byteCount: 16 << 20)
        let threadCount = 4
        let rounds = 8
        let blocksPerBatch = 32
        let rangeBytes = Int(device.byteCount) / threadCount  // 4 MiB each
        let failures = Mutex<[String]>([])
        let group = DispatchGroup()
        for thread in 0 ..< threadCount {
            // A serial queue of its own each: Dispatch gives each one a thread, so the four
            // really run at once even on two cores.
            DispatchQueue(label: "shale.test.io.\(thread)").async(group: group) {
                do {
                    for round in 0 ..< rounds {
                        let seed = UInt64(thread * 1000 + round)
                        let written = Self.randomBuffer(blocksPerBatch * Self.blockBytes, seed: seed)
                        let readBack = AlignedBuffer(byteCount: written.count)
                        let base = UInt64(thread * rangeBytes + round * blocksPerBatch * Self.blockBytes)
                        try device.perform((0 ..< blocksPerBatch).map {
                            BlockRequest(.write, offset: base + UInt64($0 * Self.blockBytes),
                                         buffer: written.slice($0 * Self.blockBytes, Self.blockBytes))
                        })
                        try device.perform((0 ..< blocksPerBatch).map {
                            BlockRequest(.read, offset: base + UInt64($0 * Self.blockBytes),
                                         buffer: readBack.slice($0 * Self.blockBytes, Self.blockBytes))
                        })
                        if !Self.same(written.bytes, readBack.bytes) {
                            failures.withLock { $0.append("thread \(thread) round \(round): data differs") }
                        }
                        if round % 4 == 3 { try device.flush() }
                    }
                } catch {
                    failures.withLock { $0.append("thread \(thread): \(error)") }
                }
            }
        }
        group.wait()
        #expect(failures.withLock { $0 } == [])

        // Everything is still there, read back in one batch from this thread.
        for thread in 0 ..< threadCount {
            for round in 0 ..< rounds {
                let expected = Self.randomBuffer(blocksPerBatch * Self.blockBytes, seed: UInt64(thread * 1000 + round))
                let readBack = AlignedBuffer(byteCount: expected.count)
                try device.read(into: readBack.bytes,
                                at: UInt64(thread * rangeBytes + round * blocksPerBatch * Self.blockBytes))
                #expect(Self.same(expected.bytes, readBack.bytes), "thread \(thread) round \(round)")
            }
        }
    }
}
