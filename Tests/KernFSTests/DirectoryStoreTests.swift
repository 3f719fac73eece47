import Testing
@testable import KernFS
@testable import ShaleFormat
@testable import ShaleMedia

/// Hands a directory blocks of the NVM data area from a free list, zero-filled in the
/// transaction (as the inode's extent map will), and counts `offset` calls: the blocks an
/// operation reads.
final class TestBlockMap: DirectoryBlockMap {
    let transaction: MetadataTransaction<SimulatedPersistentMemory>
    private(set) var blocks: [UInt64: UInt64] = [:]
    private var free: [UInt64]
    private(set) var offsetCalls = 0

    init(transaction: MetadataTransaction<SimulatedPersistentMemory>, firstOffset: UInt64, blockCount: Int) {
        self.transaction = transaction
        free = (0 ..< UInt64(blockCount)).reversed().map { firstOffset + $0 * 4096 }
    }

    var freeBlocks: Int { free.count }

    func offset(ofLogicalBlock logical: UInt64) -> UInt64? {
        offsetCalls += 1
        return blocks[logical]
    }

    func allocate(logicalBlock logical: UInt64) throws(DirectoryError) -> UInt64 {
        precondition(blocks[logical] == nil, "logical block \(logical) allocated twice")
        guard let offset = free.popLast() else { throw .noSpace }
        transaction.write([UInt8](repeating: 0, count: 4096), at: offset)
        blocks[logical] = offset
        return offset
    }

    func release(logicalBlock logical: UInt64) {
        if let offset = blocks.removeValue(forKey: logical) { free.append(offset) }
    }
}

/// How names hash in a test: the volume's keyed hash, or weak ones that force the rare paths.
enum Hashing: String, CaseIterable, Sendable, CustomTestStringConvertible {
    /// The volume's keyed SipHash, as in production.
    case keyed
    /// Only 16 distinct 32-bit hashes (differing in their top 4 bits): long runs of one hash
    /// value, so overflow chains, and splits of chained buckets. The listing positions stay
    /// distinct (their low 30 bits still come from SipHash).
    case sixteenValues
    /// The keyed hash, but the pointer table may not grow past depth 2: buckets chain at the
    /// depth limit.
    case shallowTable
    /// Every name has the same 64-bit hash: one bucket, one chain, one listing position.
    case oneValue

    var testDescription: String { rawValue }
}

/// A simulated volume with one directory (inode 77) initialised in it.
struct DirectoryFixture {
    static let directory: UInt64 = 77
    let nvm: SimulatedPersistentMemory
    let superblock: Superblock
    let transaction: MetadataTransaction<SimulatedPersistentMemory>
    let map: TestBlockMap
    var seed: UInt32 { superblock.volumeID.checksumSeed }

    init(nvmBytes: Int = 48 << 20, blockLimit: Int? = nil) throws {
        nvm = SimulatedPersistentMemory(byteCount: nvmBytes, recordsTrace: false)
        var options = FormatOptions()
        options.logRegionCount = 2
        options.logRegionBytes = 1 << 20
        superblock = try Formatter.format(nvm: nvm, nvmPathHint: "sim.nvm", lowerDevices: [], options: options)
        transaction = MetadataTransaction(journal: MetadataJournal(nvm: nvm, superblock: superblock))
        let device = superblock.device(.nvm)!
        let first = device.dataOffset + 5000 * 4096
        let available = Int((device.dataOffset + device.dataBlocks * 4096 - first) / 4096)
        map = TestBlockMap(transaction: transaction, firstOffset: first, blockCount: min(available, blockLimit ?? available))
        var map = map
        try DirectoryStore.initialize(directory: Self.directory, volumeSeed: seed, map: &map, transaction: transaction)
        try transaction.commit()
    }

    /// The store over the fixture's transaction (read-your-writes).
    func store(_ hashing: Hashing = .keyed) -> DirectoryStore<SimulatedPersistentMemory> {
        store(hashing, transaction: transaction)
    }

    /// A store reading through a fresh transaction: what a commit left on NVM.
    func committedStore(_ hashing: Hashing = .keyed) -> DirectoryStore<SimulatedPersistentMemory> {
        store(hashing, transaction: MetadataTransaction(journal: MetadataJournal(nvm: nvm, superblock: superblock)))
    }

    func store(_ hashing: Hashing, transaction: MetadataTransaction<SimulatedPersistentMemory>) -> DirectoryStore<SimulatedPersistentMemory> {
        let directory = Self.directory
        let key = superblock.directoryHashKey
        switch hashing {
        case .keyed:
            return DirectoryStore(directory: directory, hashKey: key, volumeSeed: seed, transaction: transaction)
        case .sixteenValues:
            return DirectoryStore(directory: directory, hashKey: key, volumeSeed: seed, transaction: transaction,
                                  globalDepthLimit: 14, fullHash: { name in
                                      let full = DirectoryEntry.fullHash(name: name, directory: directory, key: key)
                                      let tie = UInt32(truncatingIfNeeded: full >> 32)
                                      let hash = UInt32(truncatingIfNeeded: full & 15) << 28 | 0x0ABC_DEF
                                      return UInt64(tie) << 32 | UInt64(hash ^ tie)
                                  })
        case .shallowTable:
            return DirectoryStore(directory: directory, hashKey: key, volumeSeed: seed, transaction: transaction,
                                  globalDepthLimit: 2, fullHash: nil)
        case .oneValue:
            return DirectoryStore(directory: directory, hashKey: key, volumeSeed: seed, transaction: transaction,
                                  globalDepthLimit: 14, fullHash: { _ in 0xDEAD_BEEF_0BAD_CAFE })
        }
    }
}

struct DirectoryStoreTests {
    typealias Store = DirectoryStore<SimulatedPersistentMemory>
    typealias Model = [[UInt8]: (inode: UInt64, type: UInt8)]

    /// A legal name of `length` bytes (random when nil: short, medium or up to 255), any
    /// byte but NUL and '/'.
    static func randomName(_ random: inout SplitMix64, length: Int? = nil) -> [UInt8] {
        while true {
            let count: Int
            if let length {
                count = length
            } else {
                switch random.next() % 10 {
                case 0 ..< 3: count = 1 + Int(random.next() % 8)
                case 3 ..< 7: count = 9 + Int(random.next() % 56)
                default: count = 65 + Int(random.next() % 191)
                }
            }
            let name = (0 ..< count).map { _ in
                let byte = UInt8(1 + random.next() % 255)
                return byte == UInt8(ascii: "/") ? 0xFF : byte
            }
            if DirectoryEntry.nameProblem(name) == nil { return name }
        }
    }

    /// Everything a listing from cookie 0 returns, page by page; no name may come twice.
    static func listAll(_ store: Store, _ map: some DirectoryBlockMap, limit: Int = 61) throws -> [[UInt8]: DirectoryEntry] {
        var listed: [[UInt8]: DirectoryEntry] = [:]
        var cookie: UInt64 = 0
        var twice = 0
        while true {
            let page = try store.list(map, after: cookie, limit: limit)
            #expect(page.entries.count == page.cookies.count)
            for entry in page.entries where listed.updateValue(entry, forKey: entry.name) != nil { twice += 1 }
            guard let next = page.next else { break }
            #expect(next > cookie, "cookies only move forward")
            cookie = next
        }
        #expect(twice == 0, "\(twice) names listed twice")
        return listed
    }

    /// The directory equals the model: count, listing, and lookups of a sample of present
    /// and absent names.
    static func verify(_ store: Store, _ map: some DirectoryBlockMap, _ model: Model, absent: [[UInt8]],
                       random: inout SplitMix64) throws {
        #expect(try store.count(map) == UInt64(model.count))
        let listed = try listAll(store, map)
        #expect(listed.count == model.count)
        let wrong = model.filter { name, value in listed[name].map { $0.inode != value.inode || $0.type != value.type } ?? true }
        #expect(wrong.isEmpty, "\(wrong.count) model entries missing or different in the listing")
        let names = Array(model.keys)
        for _ in 0 ..< min(200, names.count) {
            let name = names[Int(random.next() % UInt64(names.count))]
            let found = try store.lookup(name, in: map)
            #expect(found?.inode == model[name]!.inode && found?.type == model[name]!.type)
        }
        for name in absent.prefix(100) where model[name] == nil {
            #expect(try store.lookup(name, in: map) == nil)
        }
    }

    /// A seeded random run of inserts, removes, replaces and lookups against a Swift dictionary,
    /// committing every 173 operations and checking what the commit left on NVM through a
    /// fresh transaction; every operation's answer is checked as it happens (read-your-writes).
    @Test(arguments: Hashing.allCases)
    func randomOperationsAgreeWithAModel(hashing: Hashing) throws {
        let fixture = try DirectoryFixture()
        var map = fixture.map
        let store = fixture.store(hashing)
        var random = SplitMix64(seed: 0x5EED_0000 + UInt64(Hashing.allCases.firstIndex(of: hashing)!))
        var model: Model = [:]
        var used: [[UInt8]] = []
        var absent: [[UInt8]] = []
        var mismatches = 0
        let operations = hashing == .oneValue ? 1200 : 5000
        for step in 1 ... operations {
            let roll = random.next() % 100
            let reuse = !used.isEmpty && random.next() % 3 == 0
            let name = reuse ? used[Int(random.next() % UInt64(used.count))] : Self.randomName(&random)
            if !reuse { used.append(name) }
            if roll < 55 {
                let value = (inode: 1 + random.next() % 1_000_000, type: UInt8([4, 8, 10][Int(random.next() % 3)]))
                switch Result(catching: { () throws(DirectoryError) in try store.insert((name, value.inode, value.type), into: &map) }) {
                case .success:
                    if model[name] != nil { mismatches += 1 }
                    model[name] = value
                case .failure(.exists):
                    if model[name] == nil { mismatches += 1 }
                case let .failure(error):
                    throw error
                }
            } else if roll < 85 {
                switch Result(catching: { () throws(DirectoryError) in try store.remove(name, from: &map) }) {
                case let .success(removed):
                    if model[name]?.inode != removed.inode || removed.name != name { mismatches += 1 }
                    model[name] = nil
                    absent.append(name)
                case .failure(.notFound):
                    if model[name] != nil { mismatches += 1 }
                case let .failure(error):
                    throw error
                }
            } else if roll < 92 {
                // Re-point the name (rename over it, exchange): same name, new inode and type.
                let value = (inode: 1 + random.next() % 1_000_000, type: UInt8([4, 8, 10][Int(random.next() % 3)]))
                switch Result(catching: { () throws(DirectoryError) in try store.replace(name, inode: value.inode, type: value.type, in: map) }) {
                case let .success(old):
                    if model[name]?.inode != old.inode || model[name]?.type != old.type || old.name != name { mismatches += 1 }
                    model[name] = value
                case .failure(.notFound):
                    if model[name] != nil { mismatches += 1 }
                case let .failure(error):
                    throw error
                }
            } else {
                let found = try store.lookup(name, in: map)
                if found?.inode != model[name]?.inode { mismatches += 1 }
            }
            if step % 173 == 0 || step == operations {
                try fixture.transaction.commit()
                try Self.verify(fixture.committedStore(hashing), map, model, absent: absent, random: &random)
            }
        }
        #expect(mismatches == 0)
        #expect(model.count > (hashing == .oneValue ? 200 : 500), "the run grew the directory well past one block")
        let shape = try store.shape(map)
        #expect(shape != nil, "the directory became hashed")
        if hashing == .shallowTable { #expect(shape?.globalDepth == 2) }
    }

    /// Names of one byte (every legal byte) and of 255 arbitrary bytes.
    @Test func namesOfOneAnd255ArbitraryBytes() throws {
        let fixture = try DirectoryFixture()
        var map = fixture.map
        let store = fixture.store()
        var random = SplitMix64(seed: 255)
        let single = (UInt8(1) ... 255).filter { $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: ".") }.map { [$0] }
        let long = (0 ..< 300).map { _ in Self.randomName(&random, length: 255) }
        var model: Model = [:]
        for (index, name) in (single + long).enumerated() {
            try store.insert((name, UInt64(1000 + index), 8), into: &map)
            model[name] = (UInt64(1000 + index), 8)
        }
        try fixture.transaction.commit()
        let committed = fixture.committedStore()
        for (name, value) in model { #expect(try committed.lookup(name, in: map)?.inode == value.inode) }
        #expect(throws: DirectoryError.self, "'/' is not a name") { try committed.lookup([UInt8(ascii: "/")], in: map) }
        let listed = try Self.listAll(committed, map)
        #expect(Set(listed.keys) == Set(model.keys))
        #expect(listed.values.allSatisfy { $0.name.count == 1 || $0.name.count == 255 })
        for name in single.enumerated().filter({ $0.offset % 2 == 0 }).map(\.element) + long.prefix(150) {
            try store.remove(name, from: &map)
            model[name] = nil
        }
        try fixture.transaction.commit()
        try Self.verify(fixture.committedStore(), map, model, absent: single + long, random: &random)
    }

    /// Invalid names, existing names and missing names are refused before anything is
    /// written, in the small form and in the hashed one; mkdir's block 0 is written once.
    @Test func existsNotFoundAndInvalidNames() throws {
        let fixture = try DirectoryFixture()
        var map = fixture.map
        let store = fixture.store()
        let invalid: [[UInt8]] = [[], [UInt8](repeating: 0x41, count: 256), [0x41, 0, 0x42], Array("a/b".utf8), Array(".".utf8), Array("..".utf8)]
        var random = SplitMix64(seed: 17)
        for round in 0 ..< 2 {
            if round == 1 {
                // The hashed form.
                for _ in 0 ..< 400 { try store.insert((Self.randomName(&random), 5, 8), into: &map) }
                #expect(try store.shape(map) != nil)
            }
            try store.insert((Array("present".utf8), 9, 8), into: &map)
            let journaled = fixture.transaction.journalBytes
            for name in invalid {
                #expect(throws: DirectoryError.self) { try store.insert((name, 3, 8), into: &map) }
                #expect(throws: DirectoryError.self) { try store.lookup(name, in: map) }
                #expect(throws: DirectoryError.self) { try store.remove(name, from: &map) }
            }
            #expect(throws: DirectoryError.nameInvalid("name of 256 bytes exceeds 255")) {
                try store.insert(([UInt8](repeating: 0x41, count: 256), 3, 8), into: &map)
            }
            #expect(throws: DirectoryError.exists) { try store.insert((Array("present".utf8), 4, 8), into: &map) }
            #expect(throws: DirectoryError.notFound) { try store.remove(Array("absent".utf8), from: &map) }
            #expect(try store.lookup(Array("absent".utf8), in: map) == nil)
            #expect(try store.lookup(Array("present".utf8), in: map)?.inode == 9, "the refused insert changed nothing")
            #expect(fixture.transaction.journalBytes == journaled, "a refused operation writes nothing")
            try store.remove(Array("present".utf8), from: &map)
            try fixture.transaction.commit()
        }
        #expect(throws: DirectoryError.exists) {
            try Store.initialize(directory: DirectoryFixture.directory, volumeSeed: fixture.seed, map: &map, transaction: fixture.transaction)
        }
    }

    /// The table stops doubling where a doubling would take more than a quarter of the
    /// journal: depth 14 with the smallest journal (1 MiB), 19 with the largest (32 MiB).
    @Test func theTableDepthLimitFollowsTheJournal() throws {
        let fixture = try DirectoryFixture()
        #expect(fixture.store().globalDepthLimit == 14)
        let overhead = 4096 + JournalTransactionHeader.encodedBytes
        #expect(Store.globalDepthLimit(journalCapacityBytes: (1 << 20) - overhead) == 14)
        #expect(Store.globalDepthLimit(journalCapacityBytes: (32 << 20) - overhead) == 19)
        #expect(Store.globalDepthLimit(journalCapacityBytes: 0) == 0)
        #expect(Store.globalDepthLimit(journalCapacityBytes: Int.max) == 32)
    }

    /// mkdir's first block, and the root directory mkfs wrote, read as empty directories.
    @Test func newDirectoriesAndTheRootAreEmpty() throws {
        let fixture = try DirectoryFixture()
        let transaction = fixture.transaction
        var map = TestBlockMap(transaction: transaction, firstOffset: fixture.superblock.device(.nvm)!.dataOffset + 9000 * 4096, blockCount: 8)
        try Store.initialize(directory: 500, volumeSeed: fixture.seed, map: &map, transaction: transaction)
        let store = Store(directory: 500, hashKey: fixture.superblock.directoryHashKey, volumeSeed: fixture.seed, transaction: transaction)
        #expect(try store.count(map) == 0)
        #expect(try store.list(map, after: 0, limit: 10) == DirectoryListing(entries: [], cookies: [], next: nil))
        // mkfs put the root directory's block 0 right after the first inode chunk.
        let layout = fixture.superblock.layout
        let rootBlock = fixture.superblock.device(.nvm)!.dataOffset + layout.inodeChunkBytes
        final class OneBlock: DirectoryBlockMap {
            let offset: UInt64
            init(_ offset: UInt64) { self.offset = offset }
            func offset(ofLogicalBlock logical: UInt64) -> UInt64? { logical == 0 ? offset : nil }
            func allocate(logicalBlock logical: UInt64) throws(DirectoryError) -> UInt64 { throw .noSpace }
            func release(logicalBlock logical: UInt64) {}
        }
        let root = Store(directory: Formatter.rootInode, hashKey: fixture.superblock.directoryHashKey, volumeSeed: fixture.seed,
                         transaction: transaction)
        var rootOnly = OneBlock(rootBlock)
        #expect(try root.count(rootOnly) == 0)
        try root.insert((Array("etc".utf8), 2, 4), into: &rootOnly)
        #expect(try root.lookup(Array("etc".utf8), in: rootOnly)?.inode == 2)
        // The wrong directory's block is refused by its identity.
        let stranger = Store(directory: 2, hashKey: fixture.superblock.directoryHashKey, volumeSeed: fixture.seed, transaction: transaction)
        #expect(throws: DirectoryError.self) { try stranger.count(rootOnly) }
    }

    /// 100,000 entries in one directory: every lookup of a present or an absent name reads
    /// three blocks (block 0, one table block, the bucket) and answers right; the listing
    /// returns each entry once.
    @Test func aHundredThousandEntries() throws {
        let fixture = try DirectoryFixture(nvmBytes: 64 << 20)
        var map = fixture.map
        let store = fixture.store()
        var random = SplitMix64(seed: 100_000)
        let count = 100_000
        let names = (0 ..< count).map { Array("entry-\($0)-".utf8) + Self.randomName(&random, length: 1 + Int(random.next() % 12)) }
        for (index, name) in names.enumerated() {
            try store.insert((name, UInt64(index + 2), 8), into: &map)
            if index % 1000 == 999 { try fixture.transaction.commit() }
        }
        try fixture.transaction.commit()
        let committed = fixture.committedStore()
        #expect(try committed.count(map) == UInt64(count))
        let shape = try #require(try committed.shape(map))
        #expect(shape.bucketCount >= UInt64(count * 24 / DirectoryBlock.entryAreaBytes))
        var mostReads = 0
        var wrong = 0
        for (index, name) in names.enumerated() {
            let before = map.offsetCalls
            if try committed.lookup(name, in: map)?.inode != UInt64(index + 2) { wrong += 1 }
            mostReads = max(mostReads, map.offsetCalls - before)
        }
        for index in 0 ..< 10_000 {
            let before = map.offsetCalls
            if try committed.lookup(Array("missing-\(index)".utf8), in: map) != nil { wrong += 1 }
            mostReads = max(mostReads, map.offsetCalls - before)
        }
        #expect(wrong == 0)
        #expect(mostReads == 3, "block reads per lookup at global depth \(shape.globalDepth), \(shape.bucketCount) buckets")
        #expect(try Self.listAll(committed, map, limit: 1000).count == count)
    }

    /// One insert into a big directory journals only what changed: the root's count and
    /// checksum, the bucket's count, checksum and new entry, a couple of hundred bytes.
    @Test func oneInsertIntoABigDirectoryJournalsOnlyItsChanges() throws {
        let fixture = try DirectoryFixture()
        var map = fixture.map
        let store = fixture.store()
        var random = SplitMix64(seed: 0x10_0000)
        for index in 0 ..< 20_000 {
            try store.insert((Array("file-\(index)".utf8), UInt64(index + 2), 8), into: &map)
            if index % 1000 == 999 { try fixture.transaction.commit() }
        }
        try fixture.transaction.commit()
        var plain: [Int] = []
        for index in 0 ..< 200 {
            let buckets = try #require(try store.shape(map)).bucketCount
            try store.insert((Self.randomName(&random, length: 8 + index % 40), 9, 8), into: &map)
            let bytes = fixture.transaction.journalBytes
            if try #require(try store.shape(map)).bucketCount == buckets { plain.append(bytes) }
            try fixture.transaction.commit()
        }
        #expect(plain.count > 150, "most inserts do not split")
        #expect(plain.max()! <= 256, "journal bytes of inserts that did not split: \(plain.min()!) … \(plain.max()!)")
    }

    /// Listing page by page while other names are inserted and removed between calls (and
    /// the caller sometimes keeps only part of a page and resumes at an entry's cookie, as a
    /// full FUSE buffer does): every name present throughout comes exactly once, none twice.
    /// From 2,000 entries, with the keyed hash and with long runs of equal hashes; and from
    /// 12, so that the directory turns hashed and splits while it is being listed.
    @Test(arguments: [(Hashing.keyed, 2000), (.sixteenValues, 2000), (.keyed, 12)])
    func listingWithCookiesWhileOtherNamesComeAndGo(hashing: Hashing, initialCount: Int) throws {
        let fixture = try DirectoryFixture()
        var map = fixture.map
        let store = fixture.store(hashing)
        var random = SplitMix64(seed: 0xC00C1E)
        var stable: Set<[UInt8]> = []
        var volatile: [[UInt8]] = []
        for index in 0 ..< initialCount {
            let name = Self.randomName(&random)
            guard (try? store.insert((name, UInt64(index + 2), 8), into: &map)) != nil else { continue }
            if index % 4 == 0 { volatile.append(name) } else { stable.insert(name) }
        }
        try fixture.transaction.commit()
        var seen: [[UInt8]: Int] = [:]
        var cookie: UInt64 = 0
        var calls = 0
        while true {
            let page = try store.list(map, after: cookie, limit: initialCount > 100 ? 1 + Int(random.next() % 40) : 1)
            calls += 1
            var kept = page.entries.count
            var resume = page.next
            if !page.entries.isEmpty && random.next() % 3 == 0 {
                kept = 1 + Int(random.next() % UInt64(page.entries.count))
                resume = page.cookies[kept - 1]
            }
            for entry in page.entries.prefix(kept) { seen[entry.name, default: 0] += 1 }
            for index in 0 ..< 4 {
                let name = Self.randomName(&random)
                if (try? store.insert((name, UInt64(100_000 + calls * 4 + index), 8), into: &map)) != nil { volatile.append(name) }
            }
            for _ in 0 ..< (initialCount > 100 ? 3 : 1) where !volatile.isEmpty {
                let name = volatile.remove(at: Int(random.next() % UInt64(volatile.count)))
                try store.remove(name, from: &map)
            }
            if calls % 10 == 0 { try fixture.transaction.commit() }
            guard let next = resume else { break }
            cookie = next
        }
        let finalCount = try store.count(map)
        #expect(calls > (initialCount > 100 ? 100 : 3), "\(calls) calls, \(finalCount) entries")
        #expect(try store.shape(map) != nil, "\(calls) calls, \(finalCount) entries")
        #expect(stable.filter { seen[$0] != 1 }.isEmpty, "names present throughout, not listed exactly once")
        #expect(seen.filter { $0.value != 1 }.isEmpty, "names listed twice")
    }

    /// Names of one 62-bit position (here: all of them) share cookies: they come in one call
    /// whatever the limit, and resuming inside the group lists the group again rather than
    /// losing part of it. All in one bucket's overflow chain, whose emptied blocks are released.
    @Test func entriesOfOnePositionAreListedTogether() throws {
        let fixture = try DirectoryFixture()
        var map = fixture.map
        let store = fixture.store(.oneValue)
        var random = SplitMix64(seed: 1)
        var names: Set<[UInt8]> = []
        while names.count < 300 { names.insert(Self.randomName(&random)) }
        for name in names { try store.insert((name, 3, 8), into: &map) }
        #expect(map.blocks.count > 5, "one bucket and its overflow chain")
        #expect(try store.shape(map)?.globalDepth == 0, "one hash value never splits")
        let page = try store.list(map, after: 0, limit: 10)
        #expect(Set(page.entries.map(\.name)) == names)
        let position = page.cookies.last! - 1
        #expect(page.cookies.dropLast().allSatisfy { $0 == position })
        #expect(page.next == position + 1)
        #expect(try store.list(map, after: position + 1, limit: 10).entries.isEmpty)
        #expect(try store.list(map, after: page.cookies[5], limit: 10).entries.count == 300)
        for name in names { try store.remove(name, from: &map) }
        #expect(try store.count(map) == 0)
        #expect(map.blocks.count == 3, "block 0, the bucket and the table block remain")
        try fixture.transaction.commit()
        #expect(try fixture.committedStore(.oneValue).list(map, after: 0, limit: 10).entries.isEmpty)
    }

    /// Out of blocks part way through growth: the insert fails with noSpace, the directory
    /// stays whole (without the name), and no block leaks.
    @Test func runningOutOfBlocksLeavesADirectoryWhole() throws {
        let fixture = try DirectoryFixture(blockLimit: 7)
        var map = fixture.map
        let store = fixture.store()
        var random = SplitMix64(seed: 7)
        var model: Model = [:]
        var refused = 0
        for index in 0 ..< 1000 {
            let name = Self.randomName(&random)
            switch Result(catching: { () throws(DirectoryError) in try store.insert((name, UInt64(index + 2), 8), into: &map) }) {
            case .success:
                model[name] = (UInt64(index + 2), 8)
            case .failure(.noSpace):
                refused += 1
                #expect(try store.lookup(name, in: map) == nil)
            case .failure(.exists):
                break
            case let .failure(error):
                throw error
            }
        }
        #expect(refused > 0)
        #expect(map.blocks.count + map.freeBlocks == 7, "no block leaked")
        try fixture.transaction.commit()
        try Self.verify(fixture.committedStore(), map, model, absent: [], random: &random)
    }

    /// The damage an operation met, or an issue if it met none.
    static func damage(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> String {
        do {
            try body()
            Issue.record("no damage reported", sourceLocation: sourceLocation)
        } catch let DirectoryError.damaged(text) {
            return text
        } catch {
            Issue.record("\(error) instead of damage", sourceLocation: sourceLocation)
        }
        return ""
    }

    /// A flipped byte in a bucket, in block 0, a wild table pointer, an overflow chain that
    /// loops, an entry whose hash is not its name's: each is `damaged` with the reason, never
    /// a trap; other buckets still work.
    @Test func damageIsReportedNeverATrap() throws {
        let fixture = try DirectoryFixture()
        var map = fixture.map
        let store = fixture.store()
        var random = SplitMix64(seed: 0xBAD)
        var names: [[UInt8]] = []
        for index in 0 ..< 600 {
            let name = Self.randomName(&random)
            if (try? store.insert((name, UInt64(index + 2), 8), into: &map)) != nil { names.append(name) }
        }
        try fixture.transaction.commit()
        let depth = try #require(try store.shape(map)).globalDepth
        let nvm = fixture.nvm
        func pointerOffset(_ name: [UInt8]) -> Int {
            let hash = DirectoryEntry.hash(name: name, directory: DirectoryFixture.directory, key: fixture.superblock.directoryHashKey)
            let index = UInt64(hash) >> (32 - UInt64(depth))
            return Int(map.blocks[DirectoryBlock.tableBase + index / 512]! + 8 * (index % 512))
        }
        func bucket(_ name: [UInt8]) -> UInt64 { nvm.loadWord(at: pointerOffset(name)) }
        let victim = names[0]
        let elsewhere = try #require(names.first { bucket($0) != bucket(victim) })
        var newcomer = Self.randomName(&random)
        while bucket(newcomer) != bucket(victim) || names.contains(newcomer) { newcomer = Self.randomName(&random) }

        // A flipped byte in the victim's bucket.
        let bucketOffset = Int(map.blocks[bucket(victim)]!)
        let saved = nvm.load(at: bucketOffset, count: 4096)
        nvm.store([saved[100] ^ 0x20], at: bucketOffset + 100)
        var damaged = fixture.committedStore()
        #expect(Self.damage { _ = try damaged.lookup(victim, in: map) }.contains("checksum mismatch"))
        #expect(Self.damage { try damaged.insert((newcomer, 5, 8), into: &map) }.contains("checksum mismatch"))
        #expect(Self.damage { try damaged.remove(victim, from: &map) }.contains("checksum mismatch"))
        #expect(Self.damage { _ = try damaged.list(map, after: 0, limit: 100_000) }.contains("checksum mismatch"))
        #expect(try damaged.lookup(elsewhere, in: map) != nil, "other buckets still read")
        #expect(try damaged.count(map) == UInt64(names.count))
        nvm.store(saved, at: bucketOffset)

        // A flipped byte in block 0: nothing reads.
        let rootOffset = Int(map.blocks[0]!)
        let savedRoot = nvm.load(at: rootOffset, count: 4096)
        nvm.store([savedRoot[72] ^ 1], at: rootOffset + 72)
        damaged = fixture.committedStore()
        #expect(Self.damage { _ = try damaged.count(map) }.contains("checksum mismatch"))
        #expect(Self.damage { _ = try damaged.lookup(elsewhere, in: map) }.contains("checksum mismatch"))
        nvm.store(savedRoot, at: rootOffset)

        // Wild table pointers: zero, another bucket, a block the directory does not have.
        let pointer = pointerOffset(victim)
        for wild in [0, bucket(elsewhere), 999_999, DirectoryBlock.tableBase] {
            nvm.storeWord(wild, at: pointer)
            #expect(!Self.damage { _ = try fixture.committedStore().lookup(victim, in: map) }.isEmpty, "pointer \(wild)")
        }
        nvm.storeWord(bucket(elsewhere) == 1 ? 2 : 1, at: pointer)
        nvm.storeWord(try #require(map.blocks.first { $0.value == UInt64(bucketOffset) }?.key), at: pointer)

        // An entry whose stored hash is not its name's, in a block that verifies.
        let seed = fixture.seed
        let original = try saved.withUnsafeBytes {
            try DirectoryBlock.decode($0, seed: seed, expectedDirectory: DirectoryFixture.directory, expectedLogicalBlock: bucket(victim))
        }
        guard case let .leaf(localDepth, prefix, next, entries) = original.content else { Issue.record("not a leaf"); return }
        var altered = entries
        altered[0].hash ^= 1
        let forged = DirectoryBlock(directory: DirectoryFixture.directory, logicalBlock: bucket(victim),
                                    content: .leaf(localDepth: localDepth, hashPrefix: prefix, overflowNext: next, entries: altered))
        nvm.store(forged.encode(seed: seed), at: bucketOffset)
        #expect(Self.damage { _ = try fixture.committedStore().list(map, after: 0, limit: 100_000) }.contains("hash"))
        nvm.store(saved, at: bucketOffset)
        #expect(try fixture.committedStore().lookup(victim, in: map) != nil, "restored")

        // An overflow chain that loops back to its head.
        let chained = try DirectoryFixture()
        var chainMap = chained.map
        let oneValue = chained.store(.oneValue)
        for index in 0 ..< 120 { try oneValue.insert((Array("n\(index)".utf8) + Self.randomName(&random, length: 200), 3, 8), into: &chainMap) }
        try chained.transaction.commit()
        let head = chained.nvm.loadWord(at: Int(chainMap.blocks[DirectoryBlock.tableBase]!))
        var last = head
        var lastBlock: DirectoryBlock
        repeat {
            let bytes = chained.nvm.load(at: Int(chainMap.blocks[last]!), count: 4096)
            lastBlock = try bytes.withUnsafeBytes {
                try DirectoryBlock.decode($0, seed: chained.seed, expectedDirectory: DirectoryFixture.directory, expectedLogicalBlock: last)
            }
            guard case let .leaf(_, _, next, _) = lastBlock.content, next != 0 else { break }
            last = next
        } while true
        #expect(last != head)
        guard case let .leaf(depthOfLast, prefixOfLast, _, entriesOfLast) = lastBlock.content else { return }
        lastBlock.content = .leaf(localDepth: depthOfLast, hashPrefix: prefixOfLast, overflowNext: head, entries: entriesOfLast)
        chained.nvm.store(lastBlock.encode(seed: chained.seed), at: Int(chainMap.blocks[last]!))
        #expect(Self.damage { _ = try chained.committedStore(.oneValue).lookup(Array("absent".utf8), in: chainMap) }.contains("overflow link"))
    }
}

/// The verified-block shortcut (VerifiedBlocks): a block's checksum is checked when it is first
/// read after a change, not at every read; and an edit's checksum, left to the commit, is
/// right on NVM afterwards.
struct VerifiedBlocksTests {
    @Test func aVerifiedBlockIsTrustedUntilACommitChangesIt() throws {
        let fixture = try DirectoryFixture()
        var map = fixture.map
        let store = fixture.store()
        for index in 0 ..< 300 { try store.insert((Array("f\(index)".utf8), UInt64(index + 2), 8), into: &map) }
        try fixture.transaction.commit()
        let nvm = fixture.nvm
        let name = Array("f7".utf8)
        // The first lookup verifies the blocks it reads (their bits were cleared when the
        // commit applied them); damage done after that, behind the journal's back, is not
        // seen by this journal's readers until the block changes again ...
        #expect(try store.lookup(name, in: map)?.inode == 9)
        let bucket = try #require(map.blocks.values.first { offset in
            fixture.transaction.journal.verifiedBlocks.isVerified(blockAt: offset) && offset != map.blocks[0]!
                && (try? DirectoryBlock.findEntry(in: nvm.view(at: Int(offset), count: 4096),
                                                  count: Int(nvm.view(at: Int(offset) + 26, count: 2).load(as: UInt16.self)),
                                                  hash: DirectoryEntry.hash(name: name, directory: DirectoryFixture.directory,
                                                                            key: fixture.superblock.directoryHashKey),
                                                  name: name, directory: DirectoryFixture.directory, logicalBlock: 0).entry) != nil
        })
        let flipAt = Int(bucket) + 4000  // beyond the entries: the entries still read
        nvm.store([nvm.load(at: flipAt, count: 1)[0] ^ 0x10], at: flipAt)
        #expect(try store.lookup(name, in: map)?.inode == 9)
        // ... and is found by any reader that opens the volume afresh (a new journal) ...
        #expect(Self.damage { _ = try fixture.committedStore().lookup(name, in: map) }.contains("checksum mismatch"))
        // ... and by this journal's readers once a commit changed the block.
        nvm.store([nvm.load(at: flipAt, count: 1)[0] ^ 0x10], at: flipAt)
        try store.insert((Array("f7-sibling".utf8), 999, 8), into: &map)
        try fixture.transaction.commit()
        let changed = map.blocks.values.filter { !fixture.transaction.journal.verifiedBlocks.isVerified(blockAt: $0) }
        #expect(changed.contains(map.blocks[0]!), "the root changed, so it is checked again")
        for offset in changed {
            let at = Int(offset) + 4090
            nvm.store([nvm.load(at: at, count: 1)[0] ^ 0x01], at: at)
        }
        #expect(Self.damage { _ = try store.lookup(name, in: map) }.contains("checksum mismatch"))
    }

    /// Inserts in place leave the checksum to the commit: every block on NVM decodes (with its
    /// checksum checked) afterwards, and a block the transaction edited reads back inside it.
    @Test func checksumsLeftToTheCommitAreRightOnNVM() throws {
        let fixture = try DirectoryFixture()
        var map = fixture.map
        let store = fixture.store()
        for index in 0 ..< 2000 {
            try store.insert((Array("entry-\(index)".utf8), UInt64(index + 2), 8), into: &map)
            if index % 10 == 0 { #expect(try store.lookup(Array("entry-\(index)".utf8), in: map)?.inode == UInt64(index + 2)) }
            if index % 700 == 699 { try fixture.transaction.commit() }
        }
        try fixture.transaction.commit()
        let seed = fixture.seed
        for (logical, offset) in map.blocks where logical < DirectoryBlock.tableBase {
            _ = try DirectoryBlock.decode(fixture.nvm.view(at: Int(offset), count: 4096), seed: seed,
                                          expectedDirectory: DirectoryFixture.directory, expectedLogicalBlock: logical)
        }
        let fresh = fixture.committedStore()
        #expect(try fresh.count(map) == 2000)
        #expect(try DirectoryStoreTests.listAll(fresh, map).count == 2000)
    }

    /// Allocating a block forgets that it verified in its earlier life.
    @Test func anAllocatedBlockStartsUnverified() throws {
        let (nvm, superblock) = try MetadataJournalTests.volume()
        let allocator = try BlockAllocator(nvm: nvm, device: superblock.device(.nvm)!, volumeSeed: superblock.volumeID.checksumSeed)
        let transaction = MetadataTransaction(journal: MetadataJournal(nvm: nvm, superblock: superblock))
        let block = try allocator.allocate(1, in: transaction, packed: true)[0].lowerBound
        try allocator.free(block ..< block + 1, in: transaction)
        try transaction.commit()
        let offset = allocator.nvmOffset(ofBlock: block)
        transaction.markVerified(blockAt: offset)
        #expect(transaction.journal.verifiedBlocks.isVerified(blockAt: offset))
        let again = try allocator.allocate(1, in: transaction, packed: true)[0].lowerBound
        #expect(again == block)
        #expect(!transaction.journal.verifiedBlocks.isVerified(blockAt: offset))
    }

    static func damage(_ body: () throws -> Void) -> String {
        do {
            try body()
            return ""
        } catch {
            return "\(error)"
        }
    }
}
