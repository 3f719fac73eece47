import Testing
@testable import KernFS
@testable import LibFS
@testable import ShaleFormat
@testable import ShaleMedia

/// The log table on simulated NVM: grants, cursor updates, and torn updates.
struct LogTableTests {
    static func volume(regions: UInt32 = 4) throws -> (SimulatedPersistentMemory, Superblock) {
        let nvm = SimulatedPersistentMemory(byteCount: 48 << 20)
        var options = FormatOptions()
        options.logRegionCount = regions
        options.logRegionBytes = 1 << 20
        let superblock = try Formatter.format(nvm: nvm, nvmPathHint: "sim.nvm", lowerDevices: [], options: options)
        return (nvm, superblock)
    }

    @Test func attachHandsOutFreeRegionsWithFreshEpochs() throws {
        let (nvm, superblock) = try Self.volume()
        let table = LogTable(nvm: nvm, superblock: superblock)
        let grants = try (0 ..< 4).map { _ in try table.attach(ownerPID: 42, ownerUID: 1000, nowSeconds: 7) }
        #expect(grants.map(\.region) == [0, 1, 2, 3])
        #expect(grants.allSatisfy { $0.epoch == 1 && $0.startOffset == 0 && $0.startSequence == 1 })
        #expect(grants[2].regionOffset == superblock.layout.logRegionOffset(2))
        #expect(throws: LogTableError.noFreeRegion(count: 4)) { try table.attach(ownerPID: 1, ownerUID: 0, nowSeconds: 0) }
        let attached = try #require(table.read(1).descriptor)
        #expect(attached.state == .attached && attached.ownerPID == 42 && attached.ownerUID == 1000)

        try table.detach(1)
        #expect(table.read(1).descriptor?.state == .detached)
        #expect(throws: LogTableError.noFreeRegion(count: 4)) { try table.attach(ownerPID: 1, ownerUID: 0, nowSeconds: 0) }
        try table.release(1)
        let again = try table.attach(ownerPID: 43, ownerUID: 0, nowSeconds: 8)
        #expect(again.region == 1 && again.epoch == 2, "a new owner never shares an epoch with the old one")
    }

    @Test func updatesAlternateBetweenTheTwoCopies() throws {
        let (nvm, superblock) = try Self.volume()
        let table = LogTable(nvm: nvm, superblock: superblock)
        let grant = try table.attach(ownerPID: 1, ownerUID: 0, nowSeconds: 0)
        var copies: [Int] = []
        var versions: [UInt64] = []
        for step in 1 ... 4 {
            try table.advanceDigestCursor(grant.region, offset: UInt64(step * 64), sequence: UInt64(step + 1))
            let current = table.read(grant.region)
            copies.append(try #require(current.copy))
            versions.append(try #require(current.descriptor).version)
            #expect(current.descriptor?.digestedOffset == UInt64(step * 64))
        }
        #expect(copies == [0, 1, 0, 1] || copies == [1, 0, 1, 0])
        #expect(versions == versions.sorted() && Set(versions).count == 4)
        #expect(throws: LogTableError.cursorOutOfRange(region: grant.region, offset: 1 << 20)) {
            try table.advanceDigestCursor(grant.region, offset: 1 << 20, sequence: 9)
        }
    }

    /// A crash at any event of a cursor update, with the pending lines kept, dropped or torn,
    /// leaves the region's state either as before or as after: never unreadable.
    @Test func aTornUpdateLeavesTheOldOrTheNewState() throws {
        let (nvm, superblock) = try Self.volume()
        let table = LogTable(nvm: nvm, superblock: superblock)
        let grant = try table.attach(ownerPID: 1, ownerUID: 0, nowSeconds: 0)
        try table.advanceDigestCursor(grant.region, offset: 128, sequence: 3)
        let before = try #require(table.read(grant.region).descriptor)
        let firstEvent = nvm.trace.events.count
        try table.advanceDigestCursor(grant.region, offset: 4096, sequence: 40)
        let after = try #require(table.read(grant.region).descriptor)
        var generator = SplitMix64(seed: 4)
        for eventCount in firstEvent ... nvm.trace.events.count {
            let state = nvm.crashState(afterEvents: eventCount)
            for fate in [LineFate.keep, .drop, .tear(wordMask: UInt8(truncatingIfNeeded: generator.next())),
                         .tear(wordMask: UInt8(truncatingIfNeeded: generator.next()))] {
                let crashed = SimulatedPersistentMemory(image: state.crashImage { _ in fate }, recordsTrace: false)
                let found = LogTable(nvm: crashed, superblock: superblock).read(grant.region).descriptor
                #expect(found == before || found == after, "event \(eventCount), \(fate)")
            }
        }
    }

    /// KernFS grants a region, LibFS appends to it, the records are read back from the
    /// descriptor's cursor, the cursor advances durably and LibFS reuses the space.
    @Test func grantAppendDigestReclaim() throws {
        let (nvm, superblock) = try Self.volume()
        let table = LogTable(nvm: nvm, superblock: superblock)
        let grant = try table.attach(ownerPID: 7, ownerUID: 0, nowSeconds: 0)
        let log = OperationLog(nvm: nvm, grant: grant)
        var written: [[UInt8]] = []
        for index in 0 ..< 100 {
            let payload = [UInt8](repeating: UInt8(index), count: 10 + index)
            try log.append(.create, payload: payload)
            written.append(payload)
        }
        let descriptor = try #require(table.read(grant.region).descriptor)
        let region = nvm.view(at: Int(grant.regionOffset), count: Int(grant.regionBytes))
        var scanner = LogScanner(region: region, epoch: UInt32(truncatingIfNeeded: descriptor.epoch), seed: grant.recordSeed,
                                 startOffset: descriptor.digestedOffset, startSequence: descriptor.digestedSequence,
                                 searchPastDamage: false)
        var read: [[UInt8]] = []
        while let record = scanner.next() {
            read.append(Array(region[Int(record.payloadOffset) ..< Int(record.payloadOffset) + Int(record.header.payloadBytes)]))
        }
        #expect(read == written)
        try table.advanceDigestCursor(grant.region, offset: scanner.offset, sequence: scanner.nextSequence)
        let moved = try #require(table.read(grant.region).descriptor)
        log.reclaim(upTo: moved.digestedOffset, sequence: moved.digestedSequence)
        #expect(log.usedBytes == 0)
    }
}
