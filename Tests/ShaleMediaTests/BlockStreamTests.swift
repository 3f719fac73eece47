import Glibc
import SystemPackage
import Testing
@testable import ShaleMedia

/// `BlockDevice.stream`: a queue kept full, buffers handed back as requests complete.
struct BlockStreamTests {
    /// Writes `count` distinct blocks through a stream of depth 16 that reuses 16 buffer slots
    /// only once `completed` frees them, then reads everything back in one batch.
    func streamRoundTrip(_ device: any BlockDevice, count: Int) throws {
        let depth = 16, blockBytes = 4096
        let slots = AlignedBuffer(byteCount: depth * blockBytes)
        var freeSlots = Array(0 ..< depth)
        var slotOfRequest: [Int: Int] = [:]
        var completedIndices: [Int] = []
        var maxInFlight = 0
        try device.stream(count: count, queueDepth: depth, next: { index in
            let slot = freeSlots.removeLast()
            slotOfRequest[index] = slot
            maxInFlight = max(maxInFlight, slotOfRequest.count)
            let buffer = slots.slice(slot * blockBytes, blockBytes)
            buffer.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: index &* 37 &+ 1))
            // Spread the writes over the device in a scrambled order.
            let block = UInt64((index * 7919) % count)
            return BlockRequest(.write, offset: block * UInt64(blockBytes), buffer: buffer)
        }, completed: { index in
            completedIndices.append(index)
            freeSlots.append(slotOfRequest.removeValue(forKey: index)!)
        })
        #expect(completedIndices.sorted() == Array(0 ..< count), "every request completes exactly once")
        #expect(maxInFlight <= depth)
        #expect(slotOfRequest.isEmpty)

        let readBack = AlignedBuffer(byteCount: count * blockBytes)
        try device.read(into: readBack.bytes, at: 0)
        for index in 0 ..< count {
            let block = (index * 7919) % count
            let expected = UInt8(truncatingIfNeeded: index &* 37 &+ 1)
            let chunk = readBack.bytes[block * blockBytes ..< (block + 1) * blockBytes]
            #expect(chunk.allSatisfy { $0 == expected }, "block \(block) from request \(index)")
        }
    }

    @Test func streamKeepsTheQueueFullAndReusesFreedBuffersOnIoUring() throws {
        let path = "/tmp/shale-stream-\(getpid())-\(UInt32.random(in: 0 ... .max)).img"
        defer { unlink(path) }
        let device = try URingBlockDevice.create(path: path, byteCount: 8 << 20)
        try streamRoundTrip(device, count: 1000)
    }

    @Test func streamWorksOnTheSimulatedDevice() throws {
        try streamRoundTrip(SimulatedBlockDevice(byteCount: 8 << 20), count: 500)
    }

    @Test func invalidRequestStopsTheStreamAfterThoseAlreadyStarted() throws {
        let path = "/tmp/shale-stream-bad-\(getpid())-\(UInt32.random(in: 0 ... .max)).img"
        defer { unlink(path) }
        let device = try URingBlockDevice.create(path: path, byteCount: 1 << 20)
        let buffer = AlignedBuffer(byteCount: 4096)
        var completed = 0
        do {
            try device.stream(count: 100, queueDepth: 4, next: { index in
                // Request 50 lies beyond the end of the device.
                BlockRequest(.write, offset: index == 50 ? 1 << 30 : UInt64(index) * 4096, buffer: buffer.bytes)
            }, completed: { _ in completed += 1 })
            Issue.record("an out-of-range request was accepted")
        } catch {
            #expect(error.errno == .invalidArgument)
            #expect(error.description.contains("beyond the end"))
        }
        #expect(completed == 50, "the requests before the bad one complete, none after it starts")
    }
}

/// Buffered I/O, the fallback where a file system refuses O_DIRECT, works the same way.
struct BufferedBlockDeviceTests {
    @Test func bufferedModeRoundTripsAndFlushes() throws {
        let path = "/tmp/shale-buffered-\(getpid())-\(UInt32.random(in: 0 ... .max)).img"
        defer { unlink(path) }
        do {
            let device = try URingBlockDevice.create(path: path, byteCount: 4 << 20, direct: false)
            #expect(device.ioMode == .buffered)
            let buffer = AlignedBuffer(byteCount: 3 * 4096)
            var random = SplitMix64(seed: 11)
            random.fill(buffer.bytes)
            try device.write(buffer.bytes, at: 8192)
            try device.flush()
        }
        let reopened = try URingBlockDevice.open(path: path, direct: false)
        #expect(reopened.ioMode == .buffered)
        let expected = AlignedBuffer(byteCount: 3 * 4096)
        var random = SplitMix64(seed: 11)
        random.fill(expected.bytes)
        let got = AlignedBuffer(byteCount: 3 * 4096)
        try reopened.read(into: got.bytes, at: 8192)
        #expect(Array(got.bytes) == Array(expected.bytes))
        // The same alignment rules hold in buffered mode.
        #expect(throws: MediaError.self) { try reopened.read(into: got.slice(1, 4096), at: 0) }
    }
}

struct EmptyRequestTests {
    /// Both devices refuse an empty request the same way, before any I/O.
    @Test func emptyRequestsAreInvalidOnEveryDevice() throws {
        let path = "/tmp/shale-empty-\(getpid())-\(UInt32.random(in: 0 ... .max)).img"
        defer { unlink(path) }
        let buffer = AlignedBuffer(byteCount: 4096)
        let empty = buffer.slice(0, 0)
        for device: any BlockDevice in [try URingBlockDevice.create(path: path, byteCount: 1 << 20), SimulatedBlockDevice(byteCount: 1 << 20)] {
            do {
                try device.write(empty, at: 0)
                Issue.record("\(type(of: device)) accepted an empty write")
            } catch {
                #expect(error.errno == .invalidArgument)
                #expect(error.description.contains("empty request"))
            }
        }
    }
}
