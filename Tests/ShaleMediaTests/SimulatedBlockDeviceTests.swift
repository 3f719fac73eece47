import SystemPackage
import Testing
@testable import ShaleMedia

struct SimulatedBlockDeviceTests {
    static let blockBytes = 4096
    static let sectorBytes = 512

    static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var random = SplitMix64(seed: seed)
        return random.bytes(count)
    }

    static func write(_ device: SimulatedBlockDevice, _ bytes: [UInt8], at offset: UInt64) throws(MediaError) {
        let buffer = AlignedBuffer(byteCount: bytes.count)
        buffer.bytes.copyBytes(from: bytes)
        try device.write(buffer.bytes, at: offset)
    }

    static func read(_ device: SimulatedBlockDevice, at offset: UInt64, count: Int) throws(MediaError) -> [UInt8] {
        let buffer = AlignedBuffer(byteCount: count)
        try device.read(into: buffer.bytes, at: offset)
        return Array(buffer.bytes)
    }

    static func block(_ image: [UInt8], _ number: Int) -> [UInt8] {
        Array(image[number * blockBytes ..< (number + 1) * blockBytes])
    }

    static func sector(_ image: [UInt8], at offset: Int, _ number: Int) -> [UInt8] {
        Array(image[offset + number * sectorBytes ..< offset + (number + 1) * sectorBytes])
    }

    @Test func readsReturnWhatWasWrittenAndRequestsAreValidated() throws {
        let device = SimulatedBlockDevice(byteCount: 64 * 1024)
        #expect(device.ioMode == .simulated)
        let data = Self.bytes(2 * Self.blockBytes, seed: 1)
        try Self.write(device, data, at: 8192)
        #expect(try Self.read(device, at: 8192, count: data.count) == data)
        #expect(try Self.read(device, at: 0, count: 4096) == [UInt8](repeating: 0, count: 4096))

        let buffer = AlignedBuffer(byteCount: 2 * Self.blockBytes)
        let invalid = [
            BlockRequest(.read, offset: 512, buffer: buffer.slice(0, 4096)),
            BlockRequest(.read, offset: 0, buffer: buffer.slice(512, 4096)),
            BlockRequest(.write, offset: 64 * 1024 - 4096, buffer: buffer.bytes),
            BlockRequest(.write, offset: UInt64.max - 4095, buffer: buffer.bytes),
        ]
        for request in invalid {
            let error = #expect(throws: MediaError.self) { try device.perform([request]) }
            #expect(error?.errno == .invalidArgument)
        }
        #expect(device.eventCount == 1, "rejected requests must not be traced")
    }

    @Test func flushedWritesSurviveEveryCrash() throws {
        let device = SimulatedBlockDevice(byteCount: 16 * 4096)
        let flushed = Self.bytes(4096, seed: 2)
        try Self.write(device, flushed, at: 0)
        try device.flush()
        let firstCrashPoint = device.eventCount
        try Self.write(device, Self.bytes(4096, seed: 3), at: 4096)
        try Self.write(device, Self.bytes(8192, seed: 4), at: 3 * 4096)
        try device.flush()
        try Self.write(device, Self.bytes(4096, seed: 5), at: 4096)

        var random = SplitMix64(seed: 99)
        let fates: [SectorFate] = [.keep, .drop, .garble]
        for crashPoint in firstCrashPoint ... device.eventCount {
            for fate in fates {
                let image = device.crashImage(afterEvents: crashPoint, fate: fate, seed: 7)
                #expect(Self.block(image, 0) == flushed, "crash after \(crashPoint) events, fate \(fate)")
            }
            for seed in 0 ..< UInt64(5) {
                let image = device.crashImage(afterEvents: crashPoint, seed: seed) { _ in
                    fates[Int(random.next() % 3)]
                }
                #expect(Self.block(image, 0) == flushed, "crash after \(crashPoint) events, random fates")
            }
        }
        // And the second flush made its writes durable for every later crash point.
        let afterSecondFlush = device.crashImageNow(fate: .drop)
        #expect(Self.block(afterSecondFlush, 1) == Self.bytes(4096, seed: 3))
        #expect(Array(afterSecondFlush[3 * 4096 ..< 5 * 4096]) == Self.bytes(8192, seed: 4))
        #expect(afterSecondFlush == device.durableImage)
    }

    @Test func droppedUnflushedWriteVanishesEntirely() throws {
        let device = SimulatedBlockDevice(byteCount: 8 * 4096)
        let old = Self.bytes(4096, seed: 10)
        try Self.write(device, old, at: 4096)
        try device.flush()
        let beforeWrite = device.currentImage
        try Self.write(device, Self.bytes(2 * 4096, seed: 11), at: 4096)
        #expect(device.unflushedWriteCount == 1)
        let image = device.crashImageNow(fate: .drop)
        #expect(image == beforeWrite)
        #expect(Self.block(image, 1) == old)
        #expect(image != device.currentImage)
    }

    @Test func keptUnflushedWriteIsAllThere() throws {
        let device = SimulatedBlockDevice(byteCount: 8 * 4096)
        try Self.write(device, Self.bytes(4096, seed: 12), at: 0)
        try device.flush()
        let new = Self.bytes(3 * 4096, seed: 13)
        try Self.write(device, new, at: 4096)
        let image = device.crashImageNow(fate: .keep)
        #expect(Array(image[4096 ..< 4 * 4096]) == new)
        #expect(image == device.currentImage)
    }

    @Test func perSectorMixHoldsExactlyTheChosenSectors() throws {
        let device = SimulatedBlockDevice(byteCount: 4 * 4096, sectorBytes: Self.sectorBytes)
        let old = Self.bytes(4096, seed: 20)
        let new = Self.bytes(4096, seed: 21)
        try Self.write(device, old, at: 4096)
        try device.flush()
        try Self.write(device, new, at: 4096)

        let sectors = device.unflushedSectors(afterEvents: device.eventCount)
        #expect(sectors.count == 8)
        #expect(sectors.map(\.offset) == (0 ..< 8).map { UInt64(4096 + $0 * Self.sectorBytes) })
        #expect(sectors.allSatisfy { $0.eventIndex == 2 && $0.writeOrdinal == 0 && $0.sectorsInWrite == 8 })

        let kept: Set<Int> = [0, 3, 4, 7]
        let image = device.crashImageNow { kept.contains($0.sectorInWrite) ? .keep : .drop }
        for sector in 0 ..< 8 {
            let expected = kept.contains(sector) ? Self.sector(new, at: 0, sector) : Self.sector(old, at: 0, sector)
            #expect(Self.sector(image, at: 4096, sector) == expected, "sector \(sector)")
        }
        // Nothing outside the write changed.
        #expect(Self.block(image, 0) == [UInt8](repeating: 0, count: 4096))
        #expect(Array(image[8192...]) == [UInt8](repeating: 0, count: 8192))
    }

    @Test func garbledSectorsDifferFromOldAndNewAndAreDeterministicForASeed() throws {
        let device = SimulatedBlockDevice(byteCount: 4 * 4096)
        let old = Self.bytes(8192, seed: 30)
        let new = Self.bytes(8192, seed: 31)
        // Also sectors whose old and new contents are equal: garbled must still differ.
        let same = Self.bytes(4096, seed: 32)
        try Self.write(device, old, at: 0)
        try Self.write(device, same, at: 8192)
        try device.flush()
        try Self.write(device, new, at: 0)
        try Self.write(device, same, at: 8192)

        let image = device.crashImageNow(fate: .garble, seed: 1234)
        for sector in 0 ..< 16 {
            let garbled = Self.sector(image, at: 0, sector)
            #expect(garbled != Self.sector(old, at: 0, sector), "sector \(sector) kept its old contents")
            #expect(garbled != Self.sector(new, at: 0, sector), "sector \(sector) took its new contents")
        }
        for sector in 0 ..< 8 {
            #expect(Self.sector(image, at: 8192, sector) != Self.sector(same, at: 0, sector))
        }
        #expect(device.crashImageNow(fate: .garble, seed: 1234) == image, "same seed, same garbage")
        #expect(device.crashImageNow(fate: .garble, seed: 1235) != image, "another seed, other garbage")
        // A sector's garbage does not depend on the fates of the others.
        let mixed = device.crashImageNow(seed: 1234) { $0.sectorInWrite == 2 && $0.writeOffset == 0 ? .garble : .keep }
        #expect(Self.sector(mixed, at: 0, 2) == Self.sector(image, at: 0, 2))
    }

    @Test func crashAtAnEarlierEventGivesTheEarlierState() throws {
        let device = SimulatedBlockDevice(byteCount: 4 * 4096)
        let initial = device.currentImage
        let x = Self.bytes(4096, seed: 40)
        let y = Self.bytes(4096, seed: 41)
        try Self.write(device, x, at: 0)  // event 0
        try device.flush()  // event 1
        let afterX = device.currentImage
        try Self.write(device, y, at: 0)  // event 2: overwrites x
        try device.flush()  // event 3
        let afterY = device.currentImage
        #expect(device.trace == [.write(offset: 0, bytes: x), .flush, .write(offset: 0, bytes: y), .flush])

        #expect(device.crashImage(afterEvents: 0, fate: .keep) == initial)
        #expect(device.crashImage(afterEvents: 1, fate: .drop) == initial)
        #expect(device.crashImage(afterEvents: 1, fate: .keep) == afterX)
        #expect(device.crashImage(afterEvents: 2, fate: .keep) == afterX)
        #expect(device.crashImage(afterEvents: 3, fate: .drop) == afterX)
        #expect(device.crashImage(afterEvents: 3, fate: .keep) == afterY)
        #expect(device.crashImage(afterEvents: 4, fate: .drop) == afterY)
        #expect(device.unflushedSectors(afterEvents: 4).isEmpty)
    }

    @Test func overlappingUnflushedWritesAreAppliedOldestFirst() throws {
        let device = SimulatedBlockDevice(byteCount: 2 * 4096)
        let p = Self.bytes(4096, seed: 50)
        let q = Self.bytes(4096, seed: 51)
        try Self.write(device, p, at: 4096)
        try Self.write(device, q, at: 4096)
        #expect(Self.block(device.crashImageNow(fate: .keep), 1) == q)
        #expect(Self.block(device.crashImageNow { $0.writeOrdinal == 0 ? .keep : .drop }, 1) == p)
        #expect(Self.block(device.crashImageNow { $0.writeOrdinal == 1 ? .keep : .drop }, 1) == q)
        #expect(Self.block(device.crashImageNow(fate: .drop), 1) == [UInt8](repeating: 0, count: 4096))
    }

    @Test func injectedFaultSurfacesTheChosenErrno() throws {
        let device = SimulatedBlockDevice(byteCount: 4 * 4096, name: "sim0")
        let data = Self.bytes(4096, seed: 60)

        device.failNext(2, with: .ioError, kinds: .writes)
        #expect(try Self.read(device, at: 0, count: 4096) == [UInt8](repeating: 0, count: 4096),
                "a write fault must not fail reads")
        for _ in 0 ..< 2 {
            let error = #expect(throws: MediaError.self) { try Self.write(device, data, at: 4096) }
            #expect(error?.errno == .ioError)
            #expect(error?.description.contains("sim0") == true)
        }
        #expect(device.eventCount == 0, "a failed write is not traced")
        #expect(device.currentImage == [UInt8](repeating: 0, count: 4 * 4096), "a failed write changes nothing")
        #expect(device.pendingFaultCount == 0)
        try Self.write(device, data, at: 4096)  // the third succeeds

        device.failNext(with: .noSpace, kinds: .flushes)
        let flushError = #expect(throws: MediaError.self) { try device.flush() }
        #expect(flushError?.errno == .noSpace)
        #expect(device.unflushedWriteCount == 1, "a failed flush makes nothing durable")
        #expect(device.crashImageNow(fate: .drop) == [UInt8](repeating: 0, count: 4 * 4096))
        try device.flush()
        #expect(Self.block(device.crashImageNow(fate: .drop), 1) == data)

        // In a batch, the requests before the failing one are carried out, the rest are not.
        device.failNext(with: .ioError, kinds: .all)
        let a = AlignedBuffer(byteCount: 4096)
        a.bytes.copyBytes(from: Self.bytes(4096, seed: 61))
        let error = #expect(throws: MediaError.self) {
            try device.perform([BlockRequest(.write, offset: 0, buffer: a.bytes),
                                BlockRequest(.write, offset: 8192, buffer: a.bytes)])
        }
        #expect(error?.errno == .ioError)
        #expect(device.eventCount == 2, "the faulted first request did nothing")
        device.failNext(5, with: .ioError)
        device.clearFaults()
        #expect(device.pendingFaultCount == 0)
        try device.flush()
    }

    @Test func aCrashImageBootsANewDevice() throws {
        let device = SimulatedBlockDevice(byteCount: 2 * 4096, alignmentBytes: 1024, sectorBytes: 512)
        let data = Self.bytes(1024, seed: 70)
        try Self.write(device, data, at: 1024)
        try device.flush()
        let rebooted = SimulatedBlockDevice(byteCount: 2 * 4096, alignmentBytes: 1024,
                                            initialImage: device.crashImageNow(fate: .drop))
        #expect(try Self.read(rebooted, at: 1024, count: 1024) == data)
        #expect(rebooted.eventCount == 0)
        #expect(rebooted.crashImageNow(fate: .drop) == device.durableImage)
    }
}

struct SplitMix64Tests {
    @Test func matchesTheReferenceSequence() {
        // Reference outputs of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        var random = SplitMix64(seed: 0)
        #expect(random.next() == 0xE220_A839_7B1D_CDAF)
        #expect(random.next() == 0x6E78_9E6A_A1B9_65F4)
        #expect(random.next() == 0x06C4_5D18_8009_454F)
    }

    @Test func derivedStreamsAreStableAndDistinct() {
        var a = SplitMix64.derived(seed: 1, 2, 3)
        var b = SplitMix64.derived(seed: 1, 2, 3)
        var c = SplitMix64.derived(seed: 1, 3, 2)
        let first = a.next()
        #expect(first == b.next())
        #expect(first != c.next())
        var bytes = SplitMix64(seed: 5)
        #expect(bytes.bytes(13).count == 13)
    }
}
