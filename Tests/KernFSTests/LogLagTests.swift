import Testing
@testable import KernFS
@testable import LibFS
@testable import ShaleFormat
@testable import ShaleMedia

/// The digest lag `shale status` shows agrees with the writer's own accounting
/// (`OperationLog.usedBytes`, records appended and not reclaimed), around the ring and back.
struct LogLagTests {
    @Test func lagMatchesTheWritersUsedBytesAcrossWraps() throws {
        let world = try DigestTests.World()
        let file = try world.create("f", in: world.superblock.rootInode)
        _ = try world.digestAll()
        let table = LogTable(nvm: world.nvm, superblock: world.superblock)
        let region = world.grant.region
        func lag() throws -> LogLag {
            table.lag(region: region, descriptor: try #require(table.read(region).descriptor), searchPastDamage: false)
        }
        #expect(try lag().records == 0 && lag().bytes == 0)
        var pending: UInt64 = 0
        var generator = SplitMix64(seed: 5)
        var wrapped = false
        for round in 0 ..< 12 {
            // About a sixth of the 1 MiB region per round: the log wraps every few rounds.
            for _ in 0 ..< 12 {
                let before = world.log.head
                try world.write(file, generator.bytes(8000 + Int(generator.next() % 9000)), at: generator.next() % 100_000)
                if world.log.head < before { wrapped = true }
                pending += 1
            }
            let measured = try lag()
            #expect(measured.records == pending, "round \(round)")
            #expect(measured.bytes == world.log.usedBytes, "round \(round)")
            #expect(measured.end == .cleanEnd(offset: world.log.head))
            #expect(abs(measured.fill - Double(world.log.usedBytes) / Double(1 << 20)) < 1e-9)
            // Digest part of it (a few records), as a background digest would.
            let report = try world.digester.digest(region: region, recovery: false, maxRecords: 10)
            world.log.reclaim(upTo: report.cursorOffset, sequence: report.cursorSequence)
            pending -= UInt64(report.applied)
            #expect(try lag().records == pending)
            #expect(try lag().bytes == world.log.usedBytes)
        }
        #expect(wrapped, "the test went around the ring")
    }

    @Test func aFreeRegionHasNoLag() throws {
        let (nvm, superblock) = try LogTableTests.volume()
        let table = LogTable(nvm: nvm, superblock: superblock)
        let lag = table.lag(region: 1, descriptor: LogRegionDescriptor(state: .free, version: 0, epoch: 0), searchPastDamage: true)
        #expect(lag.records == 0 && lag.bytes == 0 && lag.end == nil)
    }
}
