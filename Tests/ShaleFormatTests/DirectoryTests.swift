import Testing
@testable import ShaleFormat

private func decodeBlock(_ bytes: [UInt8], seed: UInt32 = Fixture.seed, directory: UInt64 = DirectoryTests.directory,
                         logicalBlock: UInt64 = 0) throws -> DirectoryBlock {
    try bytes.withUnsafeBytes {
        try DirectoryBlock.decode($0, seed: seed, expectedDirectory: directory, expectedLogicalBlock: logicalBlock)
    }
}

struct DirectoryTests {
    static let directory: UInt64 = 77

    static func entry(_ name: [UInt8], inode: UInt64 = 1000, type: UInt8 = 8) -> DirectoryEntry {
        DirectoryEntry(inode: inode, hash: DirectoryEntry.hash(name: name, directory: directory, key: Fixture.hashKey),
                       type: type, name: name)
    }

    static func leaf(_ entries: [DirectoryEntry], logicalBlock: UInt64 = 0) -> DirectoryBlock {
        DirectoryBlock(directory: directory, logicalBlock: logicalBlock,
                       content: .leaf(localDepth: 3, hashPrefix: 0b101, overflowNext: 0x0000_0100_0000_0002, entries: entries))
    }

    static let everyLegalByte: [UInt8] = (1 ... 255).map { UInt8($0) }.filter { $0 != UInt8(ascii: "/") }

    @Test func constants() {
        #expect(DirectoryBlock.encodedBytes == 4096)
        #expect(DirectoryBlock.headerBytes == 64)
        #expect(DirectoryBlock.entryAreaBytes == 4032)
        #expect(DirectoryBlock.tableBase == 1 << 40)
        #expect(DirectoryBlock.pointersPerTableBlock == 512)
        #expect(DirectoryEntry.fixedBytes == 14)
        #expect(DirectoryEntry.bytesMax == 272)
    }

    @Test func entriesTakeFixedPartPlusNameRoundedTo8() {
        #expect(DirectoryEntry.encodedBytes(nameBytes: 1) == 16)
        #expect(DirectoryEntry.encodedBytes(nameBytes: 2) == 16)
        #expect(DirectoryEntry.encodedBytes(nameBytes: 3) == 24)
        #expect(DirectoryEntry.encodedBytes(nameBytes: 255) == DirectoryEntry.bytesMax)
    }

    @Test func namesOf1And255BytesAndAnyBytesButSlashAndNULRoundTrip() throws {
        let names: [[UInt8]] = [
            [UInt8(ascii: "a")], [0xFF], Array(Self.everyLegalByte), [UInt8](repeating: 0x7A, count: 255),
            Array("...".utf8), Array(".hidden".utf8), [0xC3, 0x28], Array("naïve résumé 🪨".utf8), [0x5C, 0x0A, 0x09],
        ]
        let entries = names.enumerated().map { Self.entry($1, inode: UInt64($0) + 2, type: UInt8($0 % 16)) }
        #expect(DirectoryBlock.bytesUsed(entries) <= DirectoryBlock.entryAreaBytes)
        let block = Self.leaf(entries)
        let decoded = try decodeBlock(block.encode(seed: Fixture.seed))
        #expect(decoded == block)
        for name in names { #expect(DirectoryEntry.nameProblem(name) == nil, "\(name)") }
    }

    @Test func fieldOffsetsMatchTheSpec() {
        let name = Array("hello".utf8)
        let bytes = Self.leaf([Self.entry(name, inode: 0x0102_0304_0506_0708, type: 4)], logicalBlock: 9).encode(seed: Fixture.seed)
        #expect(Array(bytes[0 ..< 4]) == Array("SDIR".utf8))
        var zeroed = bytes
        zeroed.setLE(UInt32(0), at: 4)
        #expect(bytes.le(UInt32.self, at: 4) == zeroed.withUnsafeBytes { CRC32C.update(Fixture.seed, $0) })
        #expect(bytes.le(UInt64.self, at: 8) == Self.directory)
        #expect(bytes.le(UInt64.self, at: 16) == 9)
        #expect(bytes[24] == 0)  // leaf
        #expect(bytes[25] == 3)  // local depth
        #expect(bytes.le(UInt16.self, at: 26) == 1)
        #expect(bytes.le(UInt32.self, at: 28) == 0b101)
        #expect(bytes.le(UInt64.self, at: 32) == 0x0000_0100_0000_0002)
        #expect(bytes[40 ..< 64].allSatisfy { $0 == 0 })
        #expect(bytes.le(UInt64.self, at: 64) == 0x0102_0304_0506_0708)
        #expect(bytes.le(UInt32.self, at: 72) == DirectoryEntry.hash(name: name, directory: Self.directory, key: Fixture.hashKey))
        #expect(bytes[76] == 4)
        #expect(bytes[77] == 5)
        #expect(Array(bytes[78 ..< 83]) == name)
        #expect(bytes[83...].allSatisfy { $0 == 0 })

        let root = DirectoryBlock(directory: Self.directory, logicalBlock: 0,
                                  content: .indexRoot(globalDepth: 12, entryCount: 0x0000_0001_0000_0000, bucketCount: 4096))
            .encode(seed: Fixture.seed)
        #expect(root[24] == 1)  // index root
        #expect(root[64] == 12)
        #expect(root[65 ..< 72].allSatisfy { $0 == 0 })
        #expect(root.le(UInt64.self, at: 72) == 0x0000_0001_0000_0000)
        #expect(root.le(UInt64.self, at: 80) == 4096)
    }

    @Test func indexRootRoundTrip() throws {
        let root = DirectoryBlock(directory: Self.directory, logicalBlock: 0,
                                  content: .indexRoot(globalDepth: 32, entryCount: 50_000_000, bucketCount: 1 << 20))
        #expect(try decodeBlock(root.encode(seed: Fixture.seed)) == root)
    }

    @Test(arguments: [1, 2, 7, 100, 255])
    func blockFilledToCapacityRoundTrips(nameBytes: Int) throws {
        var generator = SplitMix(seed: UInt64(nameBytes))
        var entries: [DirectoryEntry] = []
        while DirectoryBlock.bytesUsed(entries) + DirectoryEntry.encodedBytes(nameBytes: nameBytes) <= DirectoryBlock.entryAreaBytes {
            let name = (0 ..< nameBytes).map { _ in Self.everyLegalByte[generator.below(Self.everyLegalByte.count)] }
            if DirectoryEntry.nameProblem(name) != nil { continue }  // "." or ".."
            entries.append(Self.entry(name, inode: generator.next() | 1))
        }
        #expect(entries.count == DirectoryBlock.entryAreaBytes / DirectoryEntry.encodedBytes(nameBytes: nameBytes))
        let block = Self.leaf(entries)
        #expect(try decodeBlock(block.encode(seed: Fixture.seed)) == block)
    }

    @Test func blockFilledWithMixedNameLengthsRoundTrips() throws {
        var generator = SplitMix(seed: 5)
        var entries: [DirectoryEntry] = []
        while true {
            let length = 1 + generator.below(255)
            guard DirectoryBlock.bytesUsed(entries) + DirectoryEntry.encodedBytes(nameBytes: length) <= DirectoryBlock.entryAreaBytes else { break }
            let name = (0 ..< length).map { _ in Self.everyLegalByte[generator.below(254)] }
            if DirectoryEntry.nameProblem(name) != nil { continue }  // "." or ".."
            entries.append(Self.entry(name, inode: UInt64(entries.count) + 2))
        }
        #expect(DirectoryBlock.entryAreaBytes - DirectoryBlock.bytesUsed(entries) < DirectoryEntry.bytesMax)
        let block = Self.leaf(entries)
        #expect(try decodeBlock(block.encode(seed: Fixture.seed)) == block)
    }

    @Test func nameProblems() {
        #expect(DirectoryEntry.nameProblem([]) == "empty name")
        #expect(DirectoryEntry.nameProblem([UInt8](repeating: 0x61, count: 256)) == "name of 256 bytes exceeds 255")
        #expect(DirectoryEntry.nameProblem(Array("a/b".utf8)) != nil)
        #expect(DirectoryEntry.nameProblem([UInt8(ascii: "/")]) != nil)
        #expect(DirectoryEntry.nameProblem([0x61, 0, 0x62]) != nil)
        #expect(DirectoryEntry.nameProblem(Array(".".utf8)) != nil)
        #expect(DirectoryEntry.nameProblem(Array("..".utf8)) != nil)
        #expect(DirectoryEntry.nameProblem([UInt8](repeating: 0x61, count: 255)) == nil)
    }

    @Test func everySingleByteFlipIsRefused() {
        let entries = (0 ..< 40).map { Self.entry(Array("file-\($0)".utf8), inode: UInt64($0) + 2) }
        let missed = offsetsWhereDamageIsMissed(in: Self.leaf(entries).encode(seed: Fixture.seed),
                                                expected: { $0 < 4 ? .badMagic : .checksumMismatch }) { _ = try decodeBlock($0) }
        #expect(missed.isEmpty, "undetected or misreported flips at \(missed.prefix(8))")
    }

    @Test func aBlockOfAnotherVolumeDoesNotVerify() {
        let bytes = Self.leaf([Self.entry([0x61])]).encode(seed: Fixture.otherSeed)
        #expect(formatError { try decodeBlock(bytes) }?.kind == .checksumMismatch)
    }

    /// A block read for one directory and logical block must say it is that block.
    @Test func blockOfAnotherDirectoryOrPositionIsRefused() {
        let bytes = Self.leaf([Self.entry([0x61])], logicalBlock: 5).encode(seed: Fixture.seed)
        #expect(formatError { try decodeBlock(bytes, logicalBlock: 5) } == nil)
        #expect(formatError { try decodeBlock(bytes, logicalBlock: 6) }?.field == "identity")
        #expect(formatError { try decodeBlock(bytes, directory: Self.directory + 1, logicalBlock: 5) }?.field == "identity")
    }

    @Test func truncatedBufferIsRefused() {
        #expect(formatError { try decodeBlock(Array(Self.leaf([]).encode(seed: Fixture.seed)[0 ..< 100])) }?.kind == .truncated)
    }

    /// 252 one-byte entries fill the block to its last byte; an entry whose stated name
    /// length runs past the block, or a count claiming more entries than fit, is refused.
    @Test func entryRunningPastTheBlockIsRefused() throws {
        let entries = (0 ..< 252).map { Self.entry([UInt8(0x30 + $0 % 64)], inode: UInt64($0) + 2) }
        let full = Self.leaf(entries).encode(seed: Fixture.seed)
        #expect(try decodeBlock(full) == Self.leaf(entries))
        let lastEntry = 64 + 251 * 16
        #expect(lastEntry + 16 == 4096)

        var longName = full
        longName[lastEntry + 13] = 200
        let error = formatError { try decodeBlock(longName.resealed(crcOffset: 4, seed: Fixture.seed)) }
        #expect(error == .invalidField(structure: "directory 77 block 0", field: "entry 251", reason: "name runs past the block"))

        var tooMany = full
        tooMany.setLE(UInt16(253), at: 26)
        #expect(formatError { try decodeBlock(tooMany.resealed(crcOffset: 4, seed: Fixture.seed)) }?.field == "entry 252")
        tooMany.setLE(UInt16.max, at: 26)
        #expect(formatError { try decodeBlock(tooMany.resealed(crcOffset: 4, seed: Fixture.seed)) }?.field == "entry 252")
    }

    @Test func storedNamesMustBeLegal() {
        let bytes = Self.leaf([Self.entry(Array("ab".utf8))]).encode(seed: Fixture.seed)
        for (second, length) in [(UInt8(ascii: "/"), UInt8(2)), (0, 2), (UInt8(ascii: "."), 2), (UInt8(ascii: "b"), 0)] {
            var bad = bytes
            bad[64 + 14 + 1] = second
            bad[64 + 13] = length
            if second == UInt8(ascii: ".") { bad[64 + 14] = UInt8(ascii: ".") }
            #expect(formatError { try decodeBlock(bad.resealed(crcOffset: 4, seed: Fixture.seed)) }?.field == "entry 0 name")
        }
    }

    @Test func entryForInodeZeroIsRefused() {
        var bytes = Self.leaf([Self.entry(Array("ab".utf8))]).encode(seed: Fixture.seed)
        bytes.setLE(UInt64(0), at: 64)
        #expect(formatError { try decodeBlock(bytes.resealed(crcOffset: 4, seed: Fixture.seed)) }?.field == "entry 0")
    }

    @Test func depthsBeyond32AndUnknownKindsAreRefused() {
        var leaf = Self.leaf([]).encode(seed: Fixture.seed)
        leaf[25] = 33
        #expect(formatError { try decodeBlock(leaf.resealed(crcOffset: 4, seed: Fixture.seed)) }?.field == "local depth")
        var root = DirectoryBlock(directory: Self.directory, logicalBlock: 0,
                                  content: .indexRoot(globalDepth: 33, entryCount: 0, bucketCount: 0)).encode(seed: Fixture.seed)
        #expect(formatError { try decodeBlock(root) }?.field == "global depth")
        root[24] = 2
        #expect(formatError { try decodeBlock(root.resealed(crcOffset: 4, seed: Fixture.seed)) }?.field == "kind")
    }

    // MARK: The name hash

    @Test func hashIsDeterministicKeyedSipHash() {
        let name = Array("Makefile".utf8)
        let hash = DirectoryEntry.hash(name: name, directory: Self.directory, key: Fixture.hashKey)
        #expect(hash == DirectoryEntry.hash(name: name, directory: Self.directory, key: Fixture.hashKey))
        let full = name.withUnsafeBytes { SipHash.hash24(k0: Fixture.hashKey.k0 ^ Self.directory, k1: Fixture.hashKey.k1, $0) }
        #expect(hash == UInt32(truncatingIfNeeded: full ^ (full >> 32)))
    }

    /// Reference vectors of SipHash-2-4 (key 00 01 … 0f; messages 00 01 … of length n), from
    /// the authors' vectors.h.
    @Test func sipHashMatchesTheReferenceVectors() {
        let vectors: [(Int, UInt64)] = [(0, 0x726F_DB47_DD0E_0E31), (1, 0x74F8_39C5_93DC_67FD),
                                        (7, 0xAB02_00F5_8B01_D137), (8, 0x93F5_F579_9A93_2462),
                                        (15, 0xA129_CA61_49BE_45E5), (63, 0x958A_324C_EB06_4572)]
        for (length, expected) in vectors {
            let message = (0 ..< length).map { UInt8($0) }
            let got = message.withUnsafeBytes { SipHash.hash24(k0: Fixture.hashKey.k0, k1: Fixture.hashKey.k1, $0) }
            #expect(got == expected, "length \(length): \(String(got, radix: 16))")
        }
    }

    /// Names of one length that collide under CRC32C (linear) do not collide here.
    @Test func crcCollidingNamesDoNotCollide() {
        // CRC32C is linear: crc(a ^ b ^ c) == crc(a) ^ crc(b) ^ crc(c) for equal lengths, so
        // a ^ b ^ c ^ (a ^ b ^ c) = 0 gives four names whose CRCs XOR to zero; with two equal
        // pairs (x, x ^ d, y, y ^ d) the CRC of x and y differ by the same as x ^ d and y ^ d.
        let x = Array("aaaaaaaa".utf8), y = Array("bbbbbbbb".utf8)
        let d: [UInt8] = [1, 0, 0, 0, 0, 0, 0, 0]
        let xd = zip(x, d).map { $0 ^ $1 }, yd = zip(y, d).map { $0 ^ $1 }
        let crc = { (name: [UInt8]) in CRC32C.checksum(name) }
        #expect(crc(x) ^ crc(xd) == crc(y) ^ crc(yd), "CRC32C is linear: its differences can be chosen")
        let h = { (name: [UInt8]) in DirectoryEntry.hash(name: name, directory: 77, key: Fixture.hashKey) }
        #expect(h(x) ^ h(xd) != h(y) ^ h(yd), "the keyed hash is not")
    }

    /// The same name hashes differently in another directory and on another volume, so a
    /// bad spread in one directory is not repeated in every other.
    @Test func hashDiffersPerDirectoryAndPerVolume() {
        var generator = SplitMix(seed: 8)
        for _ in 0 ..< 500 {
            let name = (0 ..< 1 + generator.below(40)).map { _ in Self.everyLegalByte[generator.below(254)] }
            let here = DirectoryEntry.hash(name: name, directory: 77, key: Fixture.hashKey)
            #expect(here != DirectoryEntry.hash(name: name, directory: 78, key: Fixture.hashKey))
            #expect(here != DirectoryEntry.hash(name: name, directory: 77, key: Fixture.otherHashKey))
        }
    }

    @Test func hashSpreadsNamesOverBuckets() {
        var buckets = [Int](repeating: 0, count: 64)
        for index in 0 ..< 64_000 {
            let hash = DirectoryEntry.hash(name: Array("file\(index).txt".utf8), directory: 77, key: Fixture.hashKey)
            buckets[Int(hash >> 26)] += 1
        }
        #expect(buckets.min()! > 800 && buckets.max()! < 1200, "\(buckets)")
    }
}
