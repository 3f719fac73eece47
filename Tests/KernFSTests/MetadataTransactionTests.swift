import Testing
@testable import KernFS
@testable import ShaleFormat
@testable import ShaleMedia

struct MetadataTransactionTests {
    @Test func readsSeeTheTransactionsOwnWritesAndNVMSeesNothingUntilCommit() throws {
        let (nvm, superblock) = try MetadataJournalTests.volume()
        let transaction = MetadataTransaction(journal: MetadataJournal(nvm: nvm, superblock: superblock))
        let base = superblock.device(.nvm)!.dataOffset + 100 * 4096
        // A write that crosses a block boundary, and a word inside it.
        transaction.write([UInt8](repeating: 9, count: 300), at: base + 4000)
        transaction.writeWord(0x0102_0304_0506_0708, at: base + 4096 + 8)
        let seen = transaction.read(base + 3990, count: 320)
        #expect(seen[0 ..< 10].allSatisfy { $0 == 0 })
        #expect(seen[10 ..< 114].allSatisfy { $0 == 9 })
        #expect(transaction.readWord(base + 4096 + 8) == 0x0102_0304_0506_0708)
        #expect(nvm.load(at: Int(base + 4000), count: 300).allSatisfy { $0 == 0 }, "nothing in place before commit")
        // Two blocks changed: 96 bytes of the first, 204 of the second.
        #expect(transaction.journalWrites.map(\.bytes.count) == [96, 204])
        try transaction.commit()
        #expect(transaction.isEmpty)
        #expect(nvm.load(at: Int(base + 4000), count: 96).allSatisfy { $0 == 9 })
        #expect(nvm.loadWord(at: Int(base + 4096 + 8)) == 0x0102_0304_0506_0708)
        #expect(nvm.pendingLines.isEmpty)
    }

    @Test func abortForgetsEverything() throws {
        let (nvm, superblock) = try MetadataJournalTests.volume()
        let journal = MetadataJournal(nvm: nvm, superblock: superblock)
        let transaction = MetadataTransaction(journal: journal)
        transaction.write([1, 2, 3], at: superblock.device(.nvm)!.dataOffset)
        transaction.abort()
        try transaction.commit()
        #expect(journal.appliedSequence == 0, "an empty transaction commits nothing")
    }

    /// A re-encoded block journals only the runs that differ (a directory insert: checksum,
    /// count, the new entry), each its own write; runs closer than a write header merge.
    @Test func writeChangedJournalsOnlyTheRunsThatDiffer() throws {
        let (nvm, superblock) = try MetadataJournalTests.volume()
        let transaction = MetadataTransaction(journal: MetadataJournal(nvm: nvm, superblock: superblock))
        let base = superblock.device(.nvm)!.dataOffset + 100 * 4096
        var image = [UInt8](repeating: 7, count: 4096)
        nvm.storePersist(image, at: Int(base))
        image[4] = 1
        image[5] = 2
        image[20] = 3  // 14 equal bytes after the first run: one write is cheaper than two
        for index in 1000 ..< 1010 { image[index] = 4 }
        image[4095] = 5
        transaction.writeChanged(image, at: base)
        #expect(transaction.journalWrites.map { $0.offset - base } == [4, 1000, 4095])
        #expect(transaction.journalWrites.map(\.bytes.count) == [17, 10, 1])
        #expect(transaction.journalBytes == 3 * JournalWrite.headerBytes + 24 + 16 + 8)
        #expect(transaction.read(base, count: 4096) == image)
        transaction.writeChanged(image, at: base)
        #expect(transaction.journalWrites.count == 3, "equal bytes write nothing")
        // A later write close to two spans joins them.
        transaction.write([9, 9], at: base + 1020)
        #expect(transaction.journalWrites.map { $0.offset - base } == [4, 1000, 4095])
        #expect(transaction.journalWrites.map(\.bytes.count) == [17, 22, 1])
        image[1020] = 9
        image[1021] = 9
        try transaction.commit()
        #expect(nvm.load(at: Int(base), count: 4096) == image)
    }
}
