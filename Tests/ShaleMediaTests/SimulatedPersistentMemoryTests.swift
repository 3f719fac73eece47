import Testing
@testable import ShaleMedia

/// The simulated NVM region follows the fault model of docs/consistency.md.
struct SimulatedPersistentMemoryTests {
    let line = CacheLineModel.lineBytes

    @Test func fencedStoresSurviveEveryCrash() {
        let region = SimulatedPersistentMemory(byteCount: 4 * line)
        region.storePersist([1, 2, 3, 4, 5, 6, 7, 8], at: 0)
        #expect(region.pendingLines.isEmpty)
        for fate in [LineFate.keep, .drop, .tear(wordMask: 0x55)] {
            #expect(Array(region.crashImage { _ in fate }[0 ..< 8]) == [1, 2, 3, 4, 5, 6, 7, 8])
        }
    }

    @Test func unflushedStoreIsKeptOrDroppedWhole() {
        let region = SimulatedPersistentMemory(byteCount: 4 * line)
        region.store(bytes(9, count: 16), at: line)
        #expect(region.pendingLines == [1])
        #expect(Array(region.crashImage { _ in .keep }[line ..< line + 16]) == bytes(9, count: 16))
        #expect(Array(region.crashImage { _ in .drop }[line ..< line + 16]) == bytes(0, count: 16))
        // What the program reads is the newest contents either way.
        #expect(region.load(at: line, count: 16) == bytes(9, count: 16))
    }

    @Test func flushWithoutFenceIsNotDurable() {
        let region = SimulatedPersistentMemory(byteCount: 2 * line)
        region.store(bytes(7, count: 8), at: 0)
        region.flush(offset: 0, count: 8)
        #expect(region.pendingLines == [0])
        #expect(Array(region.crashImage { _ in .drop }[0 ..< 8]) == bytes(0, count: 8))
        region.fence()
        #expect(region.pendingLines.isEmpty)
        #expect(Array(region.crashImage { _ in .drop }[0 ..< 8]) == bytes(7, count: 8))
    }

    @Test func fenceWithoutFlushIsNotDurable() {
        let region = SimulatedPersistentMemory(byteCount: 2 * line)
        region.store(bytes(7, count: 8), at: 0)
        region.fence()
        #expect(region.pendingLines == [0])
        #expect(Array(region.crashImage { _ in .drop }[0 ..< 8]) == bytes(0, count: 8))
    }

    @Test func storeAfterFlushStaysPendingPastTheFence() {
        let region = SimulatedPersistentMemory(byteCount: line)
        region.store(bytes(1, count: 8), at: 0)
        region.flush(offset: 0, count: 8)
        region.store(bytes(2, count: 8), at: 8)
        region.fence()
        // The flushed word is durable; the later store in the same line is still pending.
        #expect(region.pendingLines == [0])
        let dropped = region.crashImage { _ in .drop }
        #expect(Array(dropped[0 ..< 16]) == bytes(1, count: 8) + bytes(0, count: 8))
        let kept = region.crashImage { _ in .keep }
        #expect(Array(kept[0 ..< 16]) == bytes(1, count: 8) + bytes(2, count: 8))
    }

    @Test func tearingIsPerEightByteWord() {
        let region = SimulatedPersistentMemory(byteCount: line)
        region.store(bytes(0xAB, count: line), at: 0)
        let image = region.crashImage { _ in .tear(wordMask: 0b1000_0101) }
        for word in 0 ..< 8 {
            let expected: UInt8 = [0, 2, 7].contains(word) ? 0xAB : 0
            #expect(image[word * 8 ..< word * 8 + 8].allSatisfy { $0 == expected }, "word \(word)")
        }
    }

    @Test func traceReplaysAnyEarlierCrashPoint() {
        let region = SimulatedPersistentMemory(byteCount: 2 * line)
        region.storePersist(bytes(1, count: 8), at: 0)   // events 0..2
        region.mark("first returned")
        region.store(bytes(2, count: 8), at: line)       // event 3
        region.flush(offset: line, count: 8)             // event 4
        region.fence()                                   // event 5
        #expect(region.trace.events.count == 6)
        #expect(region.trace.fenceBoundaries == [3, 6])
        #expect(region.trace.marks.map(\.eventCount) == [3])

        let beforeAnything = region.crashState(afterEvents: 0).crashImage { _ in .keep }
        #expect(beforeAnything.allSatisfy { $0 == 0 })
        let afterFirst = region.crashState(afterEvents: 3)
        #expect(afterFirst.pendingLines.isEmpty)
        #expect(Array(afterFirst.crashImage { _ in .drop }[0 ..< 8]) == bytes(1, count: 8))
        #expect(afterFirst.crashImage { _ in .drop }[line] == 0)
        let midSecond = region.crashState(afterEvents: 4)
        #expect(midSecond.pendingLines == [1])
        #expect(midSecond.crashImage { _ in .keep }[line] == 2)
        #expect(midSecond.crashImage { _ in .drop }[line] == 0)
        #expect(region.crashState(afterEvents: 6).crashImage { _ in .drop }[line] == 2)
    }

    @Test func recordingRegionForwardsAndRecords() {
        let recorded = RecordingPersistentMemory(SimulatedPersistentMemory(byteCount: line, recordsTrace: false))
        recorded.storeWord(42, at: 8)
        recorded.persist(offset: 8, count: 8)
        #expect(recorded.loadWord(at: 8) == 42)
        #expect(recorded.trace.events == [.store(offset: 8, bytes: [42, 0, 0, 0, 0, 0, 0, 0]),
                                          .flush(offset: 8, count: 8), .fence])
        #expect(recorded.base.pendingLines.isEmpty)
    }

    private func bytes(_ value: UInt8, count: Int) -> [UInt8] { [UInt8](repeating: value, count: count) }
}
