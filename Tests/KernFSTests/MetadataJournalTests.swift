import Testing
@testable import KernFS
@testable import ShaleFormat
@testable import ShaleMedia

/// The metadata journal makes a set of shared-area writes atomic across crashes.
struct MetadataJournalTests {
    static func volume() throws -> (SimulatedPersistentMemory, Superblock) {
        let nvm = SimulatedPersistentMemory(byteCount: 40 << 20)
        var options = FormatOptions()
        options.logRegionCount = 2
        options.logRegionBytes = 1 << 20
        return (nvm, try Formatter.format(nvm: nvm, nvmPathHint: "sim.nvm", lowerDevices: [], options: options))
    }

    /// Writes spread over the data area: a whole block, an inode-sized range crossing cache
    /// lines, and an unaligned 3-byte range.
    static func writes(_ superblock: Superblock, fill: UInt8) -> [JournalWrite] {
        let data = superblock.device(.nvm)!.dataOffset + 2000 * 4096
        return [JournalWrite(offset: data, bytes: [UInt8](repeating: fill, count: 4096)),
                JournalWrite(offset: data + 3 * 4096 + 200, bytes: [UInt8](repeating: fill &+ 1, count: 256)),
                JournalWrite(offset: data + 9 * 4096 + 5, bytes: [fill, fill, fill])]
    }

    static func contents(_ nvm: some PersistentMemory, _ writes: [JournalWrite]) -> [[UInt8]] {
        writes.map { nvm.load(at: Int($0.offset), count: $0.bytes.count) }
    }

    @Test func committedWritesAreInPlaceAndRetired() throws {
        let (nvm, superblock) = try Self.volume()
        let journal = MetadataJournal(nvm: nvm, superblock: superblock)
        #expect(journal.appliedSequence == 0)
        let writes = Self.writes(superblock, fill: 0x42)
        try journal.commit(writes)
        #expect(Self.contents(nvm, writes) == writes.map(\.bytes))
        #expect(journal.appliedSequence == 1)
        #expect(nvm.pendingLines.isEmpty)
        #expect(try journal.recover() == nil, "nothing to apply after a clean commit")
    }

    /// A crash at any event of a commit, with pending lines kept, dropped or torn: after
    /// recovery every write of the transaction is there, or none is.
    @Test func aCrashAtAnyEventLeavesAllOrNothing() throws {
        let (nvm, superblock) = try Self.volume()
        let journal = MetadataJournal(nvm: nvm, superblock: superblock)
        try journal.commit(Self.writes(superblock, fill: 0x11))  // an earlier, retired transaction
        let old = Self.writes(superblock, fill: 0x11).map(\.bytes)
        let new = Self.writes(superblock, fill: 0x77)
        let first = nvm.trace.events.count
        try journal.commit(new)
        let events = nvm.trace.events
        var generator = SplitMix64(seed: 6)
        var outcomes: Set<String> = []
        let model = nvm.trace.replay(initialImage: nvm.initialImage, eventCount: first)
        for eventCount in first ... events.count {
            if eventCount > first { model.apply(events[eventCount - 1]) }
            var fates: [LineFate] = [.keep, .drop]
            for _ in 0 ..< 3 { fates.append(.tear(wordMask: UInt8(truncatingIfNeeded: generator.next()))) }
            for fate in fates {
                let crashed = SimulatedPersistentMemory(image: model.crashImage { _ in fate }, recordsTrace: false)
                let recovered = MetadataJournal(nvm: crashed, superblock: superblock)
                try recovered.recover()
                let found = Self.contents(crashed, new)
                if found == new.map(\.bytes) {
                    outcomes.insert("new")
                    #expect(recovered.appliedSequence == 2)
                } else {
                    #expect(found == old, "a mix after a crash at event \(eventCount) with \(fate)")
                    #expect(recovered.appliedSequence == 1)
                    outcomes.insert("old")
                }
            }
        }
        #expect(outcomes == ["old", "new"])
    }

    @Test func aTransactionTooLargeForTheJournalIsRefused() throws {
        let (nvm, superblock) = try Self.volume()
        let journal = MetadataJournal(nvm: nvm, superblock: superblock)
        let big = JournalWrite(offset: superblock.device(.nvm)!.dataOffset, bytes: [UInt8](repeating: 1, count: journal.capacityBytes))
        #expect(throws: JournalError.self) { try journal.commit([big]) }
        #expect(journal.appliedSequence == 0)
    }

    /// A transaction that verifies but would write outside the shared area (the log area, the
    /// journal itself, past the region) is reported as damage, never applied.
    @Test func aJournalWriteOutsideTheSharedAreaIsDamage() throws {
        let (nvm, superblock) = try Self.volume()
        let layout = superblock.layout
        let seed = superblock.volumeID.checksumSeed
        for offset in [layout.logAreaOffset + 64, layout.journalOffset + 8, UInt64(nvm.byteCount) - 2, 100] {
            let encoded = JournalTransactionHeader.encode(writes: [JournalWrite(offset: offset, bytes: [1, 2, 3, 4])], sequence: 1, seed: seed)
            let area = Int(layout.journalOffset) + JournalControl.transactionAreaOffset
            nvm.storePersist(encoded.header + encoded.body, at: area)
            let journal = MetadataJournal(nvm: nvm, superblock: superblock)
            #expect(throws: JournalError.self, "offset \(offset)") { try journal.recover() }
            #expect(journal.appliedSequence == 0)
        }
    }

    /// Opening a volume applies a transaction a crash left committed but not applied.
    @Test func openingAVolumeAppliesALeftoverTransaction() throws {
        let (nvm, superblock) = try Self.volume()
        let writes = Self.writes(superblock, fill: 0x5C)
        let encoded = JournalTransactionHeader.encode(writes: writes, sequence: 1, seed: superblock.volumeID.checksumSeed)
        nvm.storePersist(encoded.header + encoded.body, at: Int(superblock.layout.journalOffset) + JournalControl.transactionAreaOffset)
        let volume = try Volume(nvm: nvm, nvmName: "sim.nvm", lowerDevices: [], repair: true)
        #expect(volume.notes.contains { $0.contains("applied metadata journal transaction 1 (3 writes)") }, "\(volume.notes)")
        #expect(Self.contents(nvm, writes) == writes.map(\.bytes))
    }
}

struct MetadataJournalCommitChecks {
    /// What recovery would call damage is never committed: checked before the commit point.
    @Test func aWriteOutsideTheSharedAreaIsRefusedBeforeCommitting() throws {
        let (nvm, superblock) = try MetadataJournalTests.volume()
        let journal = MetadataJournal(nvm: nvm, superblock: superblock)
        let layout = superblock.layout
        for offset in [UInt64(100), layout.journalOffset - 8, layout.logAreaOffset + 8] {
            #expect(throws: JournalError.self, "offset \(offset)") {
                try journal.commit([JournalWrite(offset: offset, bytes: [UInt8](repeating: 1, count: 16))])
            }
        }
        #expect(journal.appliedSequence == 0)
        #expect(throws: JournalError.self) { try journal.commit([JournalWrite(offset: superblock.device(.nvm)!.dataOffset, bytes: [])]) }
    }
}
