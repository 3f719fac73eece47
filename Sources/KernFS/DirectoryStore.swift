// Directory operations over the shared area — KernFS (layer 4), on top of the on-media
// directory of docs/format.md "Directories" (ShaleFormat's DirectoryBlock and DirectoryEntry).
//
// Offers: `DirectoryStore` — lookup, insert, remove, replace (re-point a name in place, for
// rename), list (readdir with resumable cookies) and count of the entries of one directory, and
// `initialize` (mkdir's first block).
// Needs: a `MetadataTransaction` (every block is read and written through it, so an operation
// reads its own writes and nothing reaches NVM before the caller commits), the volume's
// checksum seed and directory hash key (superblock), and a `DirectoryBlockMap` saying where
// each logical block of the directory lives (the inode's extent map; tests use a plain map).
//
// Shape. A small directory is one leaf at logical block 0. When an insert does not fit, the
// directory becomes an extendible hash: block 0 becomes the index root (global depth, exact
// entry count, bucket count), its entries move to bucket 1 (local depth 0), and the insert
// proceeds as in any hashed directory. Bucket-pointer table block k is logical block
// `DirectoryBlock.tableBase` + k; buckets and overflow blocks take logical blocks from 1 up.
//
// Growth. A full bucket of local depth l splits into two of depth l + 1 (the table doubles
// first when l equals the global depth); the insert then retries, so one insert may split
// several times. A bucket does not split, and instead chains an overflow block through
// `overflowNext`, when it is at depth 32, when all its entries and the new one share one hash
// value (no split could separate them), or when splitting would double the table past
// `globalDepthLimit`. That limit exists because a doubling rewrites the whole table in one
// transaction (8 × 2^depth bytes) and a transaction must fit the metadata journal: the
// table may take at most a quarter of it (depth 14 on the smallest journal, 1 MiB; 19 on the
// largest). Since the journal is NVM/64, a directory reaches the limit only when its buckets
// approach the size of the NVM itself. Overflow blocks carry their bucket's depth and prefix,
// so every block of a chain is checked the same way.
// Cost: a lookup reads block 0, one table block and the bucket (+ its overflow chain, empty
// unless one of the cases above): three block reads whatever the size.
//
// Deletion never merges buckets or shrinks the table (as in ext4's htree): buckets may be
// left sparse; an overflow block that empties is unlinked and released. The root's entry
// count stays exact.
//
// Listing order and cookies. Entries are listed in the order of their 62-bit position:
// the stored 32-bit hash, then 30 more bits of the name's 64-bit SipHash (from which the
// 32-bit hash is folded). A position depends on the name alone, never on where the entry
// sits, so splits, conversion and inserts or removals of other names cannot move it. A cookie
// is a position to resume at: 0 starts the listing, and the cookie after an entry is its
// position + 1, so every cookie is at most 2^62 (a positive off_t; the caller may use larger
// values for '.' and '..', which are not stored). An entry present for the whole listing is
// returned exactly once. Why not (hash << 32 | rank in the run of equal hashes): a rank moves
// when another name of the same hash is inserted or removed before it, and 32-bit hashes do
// collide (about once among 100,000 names). The limit of this choice: two names whose 62-bit
// positions are equal (chance about n^2 / 2^63 among n names; the key is secret, so they cannot
// be chosen) share cookies. They are always returned in one call, even beyond `limit`, and
// the cookie after any but the last of them is the group's own position, so a caller that stops
// between them sees the earlier one again rather than losing the later one.
//
// Errors and atomicity. `exists`, `notFound` and `nameInvalid` are thrown before anything is
// written. `noSpace` leaves the directory consistent in the transaction: each step (convert,
// double, split, chain) allocates every block it needs before it writes, so a failure leaves
// the directory as the completed steps made it, without the new entry. `damaged` carries the
// decoder's words; the transaction may then hold partial work and the caller aborts it.

import ShaleFormat
import ShaleMedia

/// Where a directory's logical blocks live: the inode's extent map in KernFS; a plain map
/// over NVM data-area blocks in tests.
public protocol DirectoryBlockMap {
    /// NVM byte offset of logical block `logical`, or nil if the directory has no such block;
    /// `damaged` when the map cannot be read.
    func offset(ofLogicalBlock logical: UInt64) throws(DirectoryError) -> UInt64?
    /// Gives the directory a new block at `logical` and returns its NVM offset. Its old
    /// contents do not matter: the store writes a whole block image before it reads one.
    /// Throws `noSpace` when there is none.
    mutating func allocate(logicalBlock logical: UInt64) throws(DirectoryError) -> UInt64
    /// Releases the block at `logical`; `damaged` when the map cannot be read.
    mutating func release(logicalBlock logical: UInt64) throws(DirectoryError)
}

public enum DirectoryError: Error, Equatable, CustomStringConvertible {
    /// The name is already in the directory (EEXIST).
    case exists
    /// The name is not in the directory (ENOENT).
    case notFound
    /// The name cannot be a directory entry's, and why (EINVAL, or ENAMETOOLONG by length).
    case nameInvalid(String)
    /// No block for the directory to grow into (ENOSPC).
    case noSpace
    /// A block of the directory does not verify, or the blocks disagree; the text says which.
    case damaged(String)

    public var description: String {
        switch self {
        case .exists: "the name exists in the directory"
        case .notFound: "no such name in the directory"
        case let .nameInvalid(reason): "invalid name: \(reason)"
        case .noSpace: "no space for another directory block"
        case let .damaged(reason): "directory damaged: \(reason)"
        }
    }
}

/// One call's worth of a directory listing.
public struct DirectoryListing: Equatable, Sendable {
    public var entries: [DirectoryEntry]
    /// `cookies[i]` resumes the listing just after `entries[i]` (a dirent's d_off).
    public var cookies: [UInt64]
    /// The cookie for the next call; nil once the end of the directory was reached.
    public var next: UInt64?
}

public struct DirectoryStore<NVM: PersistentMemory> {
    /// Cookies are positions (62 bits) + 1: never above this; a cookie at or above it lists
    /// nothing.
    public static var cookieEnd: UInt64 { 1 << 62 }

    public let directory: UInt64
    public let hashKey: DirectoryHashKey
    public let volumeSeed: UInt32
    public let transaction: MetadataTransaction<NVM>
    /// The deepest the pointer table grows (see the header): a doubling must fit the journal.
    let globalDepthLimit: UInt8
    /// The 64-bit hash of a name. Tests substitute weak ones to force collisions; otherwise
    /// the keyed SipHash of docs/format.md.
    let fullHash: ([UInt8]) -> UInt64

    private static var blockBytes: Int { DirectoryBlock.encodedBytes }
    private static var pointersPerBlock: UInt64 { UInt64(DirectoryBlock.pointersPerTableBlock) }

    public init(directory: UInt64, hashKey: DirectoryHashKey, volumeSeed: UInt32, transaction: MetadataTransaction<NVM>) {
        self.init(directory: directory, hashKey: hashKey, volumeSeed: volumeSeed, transaction: transaction,
                  globalDepthLimit: Self.globalDepthLimit(journalCapacityBytes: transaction.journal.capacityBytes),
                  fullHash: nil)
    }

    init(directory: UInt64, hashKey: DirectoryHashKey, volumeSeed: UInt32, transaction: MetadataTransaction<NVM>,
         globalDepthLimit: UInt8, fullHash: (([UInt8]) -> UInt64)?) {
        self.directory = directory
        self.hashKey = hashKey
        self.volumeSeed = volumeSeed
        self.transaction = transaction
        self.globalDepthLimit = min(globalDepthLimit, 32)
        self.fullHash = fullHash ?? { DirectoryEntry.fullHash(name: $0, directory: directory, key: hashKey) }
    }

    /// The deepest table whose doubling (8 × 2^depth bytes of pointers, plus a write header
    /// per table block) takes at most a quarter of a journal transaction.
    static func globalDepthLimit(journalCapacityBytes: Int) -> UInt8 {
        var depth: UInt8 = 0
        while depth < 32 {
            let pointers = UInt64(1) << (depth + 1)
            let bytes = 8 * pointers + UInt64(JournalWrite.headerBytes) * ((pointers + 511) / 512)
            guard bytes <= UInt64(max(journalCapacityBytes, 0) / 4) else { break }
            depth += 1
        }
        return depth
    }

    // MARK: Operations

    /// Writes a new empty directory's block 0 (mkdir). `exists` if the directory has one.
    public static func initialize(directory: UInt64, volumeSeed: UInt32, map: inout some DirectoryBlockMap,
                                  transaction: MetadataTransaction<NVM>) throws(DirectoryError) {
        guard try map.offset(ofLogicalBlock: 0) == nil else { throw .exists }
        let offset = try map.allocate(logicalBlock: 0)
        let block = DirectoryBlock(directory: directory, logicalBlock: 0,
                                   content: .leaf(localDepth: 0, hashPrefix: 0, overflowNext: 0, entries: []))
        transaction.writeChanged(block.encode(seed: volumeSeed), at: offset)
    }

    /// The entry named `name`, or nil. Reads the blocks in place: no entry but the one found
    /// is decoded.
    public func lookup(_ name: [UInt8], in map: some DirectoryBlockMap) throws(DirectoryError) -> DirectoryEntry? {
        try check(name)
        let hash = DirectoryEntry.hash(fullHash: fullHash(name))
        let top = try topInPlace(map)
        guard let root = top.root else {
            return try findInPlace(hash, name, logical: 0, offset: top.offset, count: top.header.entryCount).entry
        }
        var found: DirectoryEntry? = nil
        try visitBucketInPlace(pointerIndex(hash, root), root: root, map) { (logical, offset, header) throws(DirectoryError) -> Bool in
            found = try findInPlace(hash, name, logical: logical, offset: offset, count: header.entryCount).entry
            return found == nil
        }
        return found
    }

    /// Adds an entry; `exists` if the name is there.
    public func insert(_ entry: (name: [UInt8], inode: UInt64, type: UInt8),
                       into map: inout some DirectoryBlockMap) throws(DirectoryError) {
        try check(entry.name)
        precondition(entry.inode != 0, "inode 0 is never a directory entry's")
        let new = DirectoryEntry(inode: entry.inode, hash: DirectoryEntry.hash(fullHash: fullHash(entry.name)),
                                 type: entry.type, name: entry.name)
        // The common case in place: the name is absent and a block of its bucket has room.
        let top = try topInPlace(map)
        if let root = top.root {
            var room: (offset: UInt64, count: Int, end: Int)? = nil
            try visitBucketInPlace(pointerIndex(new.hash, root), root: root, map) { (logical, offset, header) throws(DirectoryError) -> Bool in
                let (entry, end) = try findInPlace(new.hash, new.name, logical: logical, offset: offset, count: header.entryCount)
                if entry != nil { throw .exists }
                if room == nil, end + new.encodedBytes <= DirectoryBlock.encodedBytes { room = (offset, header.entryCount, end) }
                return true
            }
            if let room {
                append(new, at: room)
                transaction.editBlock(at: root.offset, resealing: volumeSeed) { block in
                    DirectoryBlock.setDirectoryEntryCount(root.entryCount + 1, in: block)
                }
                return
            }
        } else {
            let (entry, end) = try findInPlace(new.hash, new.name, logical: 0, offset: top.offset, count: top.header.entryCount)
            if entry != nil { throw .exists }
            if end + new.encodedBytes <= DirectoryBlock.encodedBytes {
                append(new, at: (top.offset, top.header.entryCount, end))
                return
            }
        }
        // Growth (a split, a doubling, an overflow block, small to hashed) works on decoded blocks.
        switch try readTop(map) {
        case let .small(leaf):
            var root = try convert(leaf, map: &map)
            try insertHashed(new, root: &root, map: &map)
        case var .hashed(root):
            try insertHashed(new, root: &root, map: &map)
        }
    }

    /// Removes the entry named `name` and returns it; `notFound` if there is none.
    @discardableResult
    public func remove(_ name: [UInt8], from map: inout some DirectoryBlockMap) throws(DirectoryError) -> DirectoryEntry {
        try check(name)
        let hash = DirectoryEntry.hash(fullHash: fullHash(name))
        switch try readTop(map) {
        case var .small(leaf):
            guard let index = leaf.entries.firstIndex(where: { $0.hash == hash && $0.name == name }) else { throw .notFound }
            let removed = Self.removeEntry(at: index, from: &leaf.entries)
            write(leaf)
            return removed
        case var .hashed(root):
            var chain = try readBucket(pointerIndex(hash, root), root: root, map)
            for link in chain.indices {
                guard let index = chain[link].entries.firstIndex(where: { $0.hash == hash && $0.name == name }) else { continue }
                guard root.entryCount > 0 else { throw .damaged("\(rootName) counts no entries but holds some") }
                let removed = Self.removeEntry(at: index, from: &chain[link].entries)
                if link > 0 && chain[link].entries.isEmpty {
                    // An emptied overflow block leaves its chain.
                    chain[link - 1].overflowNext = chain[link].overflowNext
                    write(chain[link - 1])
                    try map.release(logicalBlock: chain[link].logical)
                } else {
                    write(chain[link])
                }
                root.entryCount -= 1
                write(root)
                return removed
            }
            throw .notFound
        }
    }

    /// Points the entry named `name` at another inode of another type (rename over an
    /// existing name, rename's exchange) and returns the entry as it was; `notFound` if there
    /// is none. The name, so its hash and listing position, stays: one block is rewritten and
    /// nothing is allocated, so this cannot run out of space.
    @discardableResult
    public func replace(_ name: [UInt8], inode: UInt64, type: UInt8, in map: some DirectoryBlockMap) throws(DirectoryError) -> DirectoryEntry {
        try check(name)
        precondition(inode != 0, "inode 0 is never a directory entry's")
        let hash = DirectoryEntry.hash(fullHash: fullHash(name))
        switch try readTop(map) {
        case var .small(leaf):
            guard let index = leaf.entries.firstIndex(where: { $0.hash == hash && $0.name == name }) else { throw .notFound }
            let old = leaf.entries[index]
            leaf.entries[index].inode = inode
            leaf.entries[index].type = type
            write(leaf)
            return old
        case let .hashed(root):
            var chain = try readBucket(pointerIndex(hash, root), root: root, map)
            for link in chain.indices {
                guard let index = chain[link].entries.firstIndex(where: { $0.hash == hash && $0.name == name }) else { continue }
                let old = chain[link].entries[index]
                chain[link].entries[index].inode = inode
                chain[link].entries[index].type = type
                write(chain[link])
                return old
            }
            throw .notFound
        }
    }

    /// Up to `limit` entries (more only to keep entries of one position together, see the
    /// header) from cookie `cookie` on, in position order. Cookie 0 starts the listing.
    public func list(_ map: some DirectoryBlockMap, after cookie: UInt64, limit: Int) throws(DirectoryError) -> DirectoryListing {
        var listing = DirectoryListing(entries: [], cookies: [], next: nil)
        guard cookie < Self.cookieEnd else { return listing }
        let limit = max(limit, 1)
        /// Adds the entries of one bucket (all of it, chain included) at or after the cookie;
        /// true once the listing is full.
        func take(_ entries: [DirectoryEntry]) throws(DirectoryError) -> Bool {
            var candidates: [(position: UInt64, entry: DirectoryEntry)] = []
            for entry in entries {
                let place = try position(of: entry)
                if place >= cookie { candidates.append((place, entry)) }
            }
            candidates.sort { $0.position != $1.position ? $0.position < $1.position : $0.entry.name.lexicographicallyPrecedes($1.entry.name) }
            var start = 0
            while start < candidates.count {
                let position = candidates[start].position
                var end = start + 1
                while end < candidates.count && candidates[end].position == position { end += 1 }
                if !listing.entries.isEmpty && listing.entries.count + (end - start) > limit {
                    listing.next = position
                    return true
                }
                for index in start ..< end {
                    listing.entries.append(candidates[index].entry)
                    // Inside a group of one position, resuming re-lists the group (see header).
                    listing.cookies.append(index == end - 1 ? position + 1 : position)
                }
                if listing.entries.count >= limit {
                    listing.next = position + 1
                    return true
                }
                start = end
            }
            return false
        }
        let startHash = UInt32(truncatingIfNeeded: cookie >> 30)
        switch try readTop(map) {
        case let .small(leaf):
            _ = try take(leaf.entries)
        case let .hashed(root):
            var index = pointerIndex(startHash, root)
            let pointerCount = UInt64(1) << root.globalDepth
            while index < pointerCount {
                let chain = try readBucket(index, root: root, map)
                if try take(chain.flatMap(\.entries)) { break }
                // The next bucket's pointers start where this bucket's end.
                index = (UInt64(chain[0].hashPrefix) + 1) << (root.globalDepth - chain[0].localDepth)
            }
        }
        return listing
    }

    /// Entries in the directory.
    public func count(_ map: some DirectoryBlockMap) throws(DirectoryError) -> UInt64 {
        switch try readTop(map) {
        case let .small(leaf): UInt64(leaf.entries.count)
        case let .hashed(root): root.entryCount
        }
    }

    /// The hashed directory's global depth and bucket count; nil for a small one. For tests
    /// and fsck-style reports.
    func shape(_ map: some DirectoryBlockMap) throws(DirectoryError) -> (globalDepth: UInt8, bucketCount: UInt64)? {
        switch try readTop(map) {
        case .small: nil
        case let .hashed(root): (root.globalDepth, root.bucketCount)
        }
    }

    // MARK: Growth

    /// Small → hashed: bucket 1 (depth 0) takes the leaf's entries, the table's one pointer
    /// names it, block 0 becomes the root. The caller then inserts into the hashed form.
    private func convert(_ leaf: Leaf, map: inout some DirectoryBlockMap) throws(DirectoryError) -> Root {
        let fresh = try allocate([1, DirectoryBlock.tableBase], map: &map)
        let bucket = Leaf(logical: 1, offset: fresh[0], localDepth: 0, hashPrefix: 0, overflowNext: 0, entries: leaf.entries)
        write(bucket)
        transaction.writeWord(bucket.logical, at: fresh[1])
        let root = Root(offset: leaf.offset, globalDepth: 0, entryCount: UInt64(leaf.entries.count), bucketCount: 1)
        write(root)
        return root
    }

    private func insertHashed(_ new: DirectoryEntry, root: inout Root, map: inout some DirectoryBlockMap) throws(DirectoryError) {
        while true {
            let index = pointerIndex(new.hash, root)
            var chain = try readBucket(index, root: root, map)
            if chain.contains(where: { $0.entries.contains { $0.hash == new.hash && $0.name == new.name } }) { throw .exists }
            if let link = chain.firstIndex(where: { $0.hasRoom(for: new) }) {
                chain[link].entries.append(new)
                write(chain[link])
                root.entryCount += 1
                write(root)
                return
            }
            let depth = chain[0].localDepth
            let oneHash = chain.allSatisfy { $0.entries.allSatisfy { $0.hash == new.hash } }
            if depth < 32 && !oneHash && (depth < root.globalDepth || root.globalDepth < globalDepthLimit) {
                if depth == root.globalDepth { try doubleTable(&root, map: &map) }
                try split(chain, root: &root, map: &map)
                continue
            }
            // Chain an overflow block after the last one.
            let logical = try unusedLogicalBlock(after: root, map: map)
            let offset = try allocate([logical], map: &map)[0]
            write(Leaf(logical: logical, offset: offset, localDepth: depth, hashPrefix: chain[0].hashPrefix,
                       overflowNext: 0, entries: [new]))
            chain[chain.count - 1].overflowNext = logical
            write(chain[chain.count - 1])
            root.entryCount += 1
            write(root)
            return
        }
    }

    /// Global depth + 1: every pointer k becomes pointers 2k and 2k + 1.
    private func doubleTable(_ root: inout Root, map: inout some DirectoryBlockMap) throws(DirectoryError) {
        let oldCount = UInt64(1) << root.globalDepth
        let newCount = oldCount * 2
        let oldBlocks = (oldCount + Self.pointersPerBlock - 1) / Self.pointersPerBlock
        let newBlocks = (newCount + Self.pointersPerBlock - 1) / Self.pointersPerBlock
        let added = try allocate((oldBlocks ..< newBlocks).map { DirectoryBlock.tableBase + $0 }, map: &map)
        var pointers: [UInt64] = []
        pointers.reserveCapacity(Int(oldCount))
        for block in 0 ..< oldBlocks {
            let offset = try location(of: DirectoryBlock.tableBase + block, map)
            let count = Int(min(Self.pointersPerBlock, oldCount - block * Self.pointersPerBlock))
            let bytes = transaction.read(offset, count: 8 * count)
            for slot in 0 ..< count {
                let pointer = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 8 * slot, as: UInt64.self)) }
                try checkPointer(pointer, index: block * Self.pointersPerBlock + UInt64(slot))
                pointers.append(pointer)
            }
        }
        for block in 0 ..< newBlocks {
            let offset: UInt64
            if block < oldBlocks {
                offset = try location(of: DirectoryBlock.tableBase + block, map)
            } else {
                offset = added[Int(block - oldBlocks)]
            }
            let first = block * Self.pointersPerBlock
            let count = Int(min(Self.pointersPerBlock, newCount - first))
            var bytes = [UInt8](repeating: 0, count: 8 * count)
            bytes.withUnsafeMutableBytes { buffer in
                for slot in 0 ..< count {
                    let pointer = pointers[Int((first + UInt64(slot)) / 2)]
                    buffer.storeBytes(of: pointer.littleEndian, toByteOffset: 8 * slot, as: UInt64.self)
                }
            }
            transaction.write(bytes, at: offset)
        }
        root.globalDepth += 1
        write(root)
    }

    /// Splits a full bucket (local depth < global depth) on its next hash bit: the entries
    /// whose bit is 0 stay in its blocks, the others move to a new bucket, and the upper half
    /// of its pointers turns to the new bucket.
    private func split(_ chain: [Leaf], root: inout Root, map: inout some DirectoryBlockMap) throws(DirectoryError) {
        let depth = chain[0].localDepth
        let prefix = chain[0].hashPrefix
        let newDepth = depth + 1
        let lowPrefix = prefix << 1
        let highPrefix = prefix << 1 | 1
        let all = chain.flatMap(\.entries)
        let low = Self.pack(all.filter { Self.prefix($0.hash, depth: newDepth) == lowPrefix })
        let high = Self.pack(all.filter { Self.prefix($0.hash, depth: newDepth) == highPrefix })
        // Blocks: the low side keeps the head, then the old overflow blocks; the high side
        // takes a new bucket, then the old overflow blocks left over; fresh ones where those
        // run out (a subset can pack worse than the whole did); unused old ones are released.
        typealias Place = (logical: UInt64, offset: UInt64)
        let spare: [Place] = chain.dropFirst().map { ($0.logical, $0.offset) }
        let lowReused = min(spare.count, low.count - 1)
        let highReused = min(spare.count - lowReused, high.count - 1)
        let lowFresh = low.count - 1 - lowReused
        let highFresh = high.count - highReused
        var freshLogicals: [UInt64] = []
        var candidate = try unusedLogicalBlock(after: root, map: map)
        while freshLogicals.count < lowFresh + highFresh {
            guard candidate < DirectoryBlock.tableBase else { throw .noSpace }
            if try map.offset(ofLogicalBlock: candidate) == nil { freshLogicals.append(candidate) }
            candidate += 1
        }
        let freshOffsets = try allocate(freshLogicals, map: &map)
        let fresh: [Place] = zip(freshLogicals, freshOffsets).map { ($0, $1) }
        let lowPlaces: [Place] = [(chain[0].logical, chain[0].offset)] + spare[0 ..< lowReused] + fresh[0 ..< lowFresh]
        let highPlaces: [Place] = [fresh[lowFresh]] + spare[lowReused ..< lowReused + highReused] + fresh[(lowFresh + 1)...]
        for place in spare[(lowReused + highReused)...] { try map.release(logicalBlock: place.logical) }

        for (side, places, sidePrefix) in [(low, lowPlaces, lowPrefix), (high, highPlaces, highPrefix)] {
            for (index, entries) in side.enumerated() {
                let next = index + 1 < places.count ? places[index + 1].logical : 0
                write(Leaf(logical: places[index].logical, offset: places[index].offset, localDepth: newDepth,
                           hashPrefix: sidePrefix, overflowNext: next, entries: entries))
            }
        }
        // Pointers [highPrefix << (g − newDepth), (highPrefix + 1) << (g − newDepth)) turn to
        // the new bucket, written one table block at a time.
        let shift = root.globalDepth - newDepth
        var index = UInt64(highPrefix) << shift
        let end = (UInt64(highPrefix) + 1) << shift
        let newBucket = highPlaces[0].logical
        while index < end {
            let block = index / Self.pointersPerBlock
            let stop = min(end, (block + 1) * Self.pointersPerBlock)
            let count = Int(stop - index)
            var bytes = [UInt8](repeating: 0, count: 8 * count)
            bytes.withUnsafeMutableBytes { buffer in
                for slot in 0 ..< count { buffer.storeBytes(of: newBucket.littleEndian, toByteOffset: 8 * slot, as: UInt64.self) }
            }
            let offset = try location(of: DirectoryBlock.tableBase + block, map)
            transaction.write(bytes, at: offset + 8 * (index % Self.pointersPerBlock))
            index = stop
        }
        root.bucketCount += 1
        write(root)
    }

    /// Entries packed into as few blocks as greedy filling in order gives (at least one).
    private static func pack(_ entries: [DirectoryEntry]) -> [[DirectoryEntry]] {
        var blocks: [[DirectoryEntry]] = [[]]
        var used = 0
        for entry in entries {
            if used + entry.encodedBytes > DirectoryBlock.entryAreaBytes {
                blocks.append([])
                used = 0
            }
            blocks[blocks.count - 1].append(entry)
            used += entry.encodedBytes
        }
        return blocks
    }

    /// Takes the entry out. The last entry moves into the hole when it has the same size, so
    /// that only the hole and the old tail change (a small journal write), not every entry
    /// after the hole.
    private static func removeEntry(at index: Int, from entries: inout [DirectoryEntry]) -> DirectoryEntry {
        let removed = entries[index]
        if index != entries.count - 1 && entries[entries.count - 1].encodedBytes == removed.encodedBytes {
            entries[index] = entries.removeLast()
        } else {
            entries.remove(at: index)
        }
        return removed
    }

    /// The first logical block from bucketCount + 1 up that the directory does not have. With
    /// no overflow blocks, buckets are exactly 1 … bucketCount, so the first probe succeeds.
    private func unusedLogicalBlock(after root: Root, map: some DirectoryBlockMap) throws(DirectoryError) -> UInt64 {
        var candidate = root.bucketCount + 1
        while candidate < DirectoryBlock.tableBase {
            if try map.offset(ofLogicalBlock: candidate) == nil { return candidate }
            candidate += 1
        }
        throw .noSpace
    }

    /// Allocates every block of `logicals` or none: on a failure the ones already given are
    /// released, so a step that cannot complete writes nothing.
    private func allocate(_ logicals: [UInt64], map: inout some DirectoryBlockMap) throws(DirectoryError) -> [UInt64] {
        var offsets: [UInt64] = []
        for logical in logicals {
            do throws(DirectoryError) {
                guard try map.offset(ofLogicalBlock: logical) == nil else {
                    throw .damaged("directory \(directory) already has logical block \(logical)")
                }
                offsets.append(try map.allocate(logicalBlock: logical))
            } catch {
                for given in logicals.prefix(offsets.count) { try? map.release(logicalBlock: given) }
                throw error
            }
        }
        return offsets
    }

    // MARK: Blocks

    /// A leaf as read: where it is and what it holds.
    private struct Leaf {
        let logical: UInt64
        let offset: UInt64
        var localDepth: UInt8
        var hashPrefix: UInt32
        var overflowNext: UInt64
        var entries: [DirectoryEntry]

        func hasRoom(for entry: DirectoryEntry) -> Bool {
            DirectoryBlock.bytesUsed(entries) + entry.encodedBytes <= DirectoryBlock.entryAreaBytes
        }
    }

    private struct Root {
        let offset: UInt64
        var globalDepth: UInt8
        var entryCount: UInt64
        var bucketCount: UInt64
    }

    private enum Top {
        case small(Leaf)
        case hashed(Root)
    }

    private var rootName: String { "directory \(directory) index root" }

    private func check(_ name: [UInt8]) throws(DirectoryError) {
        if let problem = DirectoryEntry.nameProblem(name) { throw .nameInvalid(problem) }
    }

    /// The top `depth` bits of a hash.
    private static func prefix(_ hash: UInt32, depth: UInt8) -> UInt32 {
        UInt32(truncatingIfNeeded: UInt64(hash) >> (32 - UInt64(depth)))
    }

    private func pointerIndex(_ hash: UInt32, _ root: Root) -> UInt64 {
        UInt64(hash) >> (32 - UInt64(root.globalDepth))
    }

    /// The listing position of an entry (see the header), after checking that its stored
    /// hash is its name's: a wrong one would put it in the wrong bucket and the wrong place.
    private func position(of entry: DirectoryEntry) throws(DirectoryError) -> UInt64 {
        let full = fullHash(entry.name)
        guard DirectoryEntry.hash(fullHash: full) == entry.hash else {
            throw .damaged("directory \(directory): entry \(Self.shown(entry.name)) holds hash \(entry.hash), its name hashes to \(DirectoryEntry.hash(fullHash: full))")
        }
        return UInt64(entry.hash) << 30 | UInt64(UInt32(truncatingIfNeeded: full >> 32) >> 2)
    }

    private static func shown(_ name: [UInt8]) -> String {
        "\"\(String(decoding: name.prefix(64), as: UTF8.self))\(name.count > 64 ? "…" : "")\""
    }

    private func location(of logical: UInt64, _ map: some DirectoryBlockMap) throws(DirectoryError) -> UInt64 {
        guard let offset = try map.offset(ofLogicalBlock: logical) else {
            throw .damaged("directory \(directory) has no logical block \(logical)")
        }
        // The map is trusted, but a wild offset must be an error, not a trap in the reader.
        guard offset % UInt64(Format.blockBytes) == 0,
              offset <= UInt64(transaction.nvm.byteCount) - UInt64(Self.blockBytes) else {
            throw .damaged("directory \(directory) logical block \(logical) maps to NVM offset \(offset)")
        }
        return offset
    }

    private func readBlock(_ logical: UInt64, _ map: some DirectoryBlockMap) throws(DirectoryError) -> (offset: UInt64, block: DirectoryBlock) {
        let offset = try location(of: logical, map)
        let read: (block: DirectoryBlock, trusted: Bool)
        do {
            read = try transaction.withBlock(at: offset) { (bytes, trusted) throws(FormatError) -> (block: DirectoryBlock, trusted: Bool) in
                (try DirectoryBlock.decode(bytes, seed: volumeSeed, expectedDirectory: directory, expectedLogicalBlock: logical,
                                           verifyChecksum: !trusted), trusted)
            }
        } catch {
            throw .damaged(error.description)
        }
        if !read.trusted { transaction.markVerified(blockAt: offset) }
        return (offset, read.block)
    }

    // MARK: Blocks in place (lookups and appends)

    /// The header of the block at `offset`: its checksum checked unless the block is trusted
    /// (this transaction's own image, or verified since it last changed), then marked verified.
    private func headerInPlace(logical: UInt64, offset: UInt64) throws(DirectoryError) -> DirectoryBlock.Header {
        let read: (header: DirectoryBlock.Header, trusted: Bool)
        do {
            read = try transaction.withBlock(at: offset) { (bytes, trusted) throws(FormatError) -> (header: DirectoryBlock.Header, trusted: Bool) in
                (try DirectoryBlock.header(bytes, seed: volumeSeed, expectedDirectory: directory, expectedLogicalBlock: logical,
                                           verifyChecksum: !trusted), trusted)
            }
        } catch {
            throw .damaged(error.description)
        }
        if !read.trusted { transaction.markVerified(blockAt: offset) }
        return read.header
    }

    /// Block 0's header: a small directory's leaf (`root` nil) or the index root.
    private func topInPlace(_ map: some DirectoryBlockMap) throws(DirectoryError) -> (offset: UInt64, header: DirectoryBlock.Header, root: Root?) {
        let offset = try location(of: 0, map)
        let header = try headerInPlace(logical: 0, offset: offset)
        if header.isIndexRoot {
            return (offset, header, Root(offset: offset, globalDepth: header.globalDepth, entryCount: header.directoryEntryCount,
                                         bucketCount: header.bucketCount))
        }
        guard header.localDepth == 0, header.hashPrefix == 0, header.overflowNext == 0 else {
            throw .damaged("directory \(directory) block 0: a small directory's leaf with depth \(header.localDepth), prefix \(header.hashPrefix), overflow \(header.overflowNext)")
        }
        return (offset, header, nil)
    }

    private func findInPlace(_ hash: UInt32, _ name: [UInt8], logical: UInt64, offset: UInt64,
                             count: Int) throws(DirectoryError) -> (entry: DirectoryEntry?, end: Int) {
        do {
            return try transaction.withBytes(offset, count: Self.blockBytes) { (bytes) throws(FormatError) -> (entry: DirectoryEntry?, end: Int) in
                try DirectoryBlock.findEntry(in: bytes, count: count, hash: hash, name: name, directory: directory, logicalBlock: logical)
            }
        } catch {
            throw .damaged(error.description)
        }
    }

    /// Visits the blocks of the bucket of pointer `index`, head first, with the checks of
    /// `readBucket` on each header (leaf, depth and prefix of the pointer, no loop), until
    /// `visit` returns false.
    private func visitBucketInPlace(_ index: UInt64, root: Root, _ map: some DirectoryBlockMap,
                                    _ visit: (UInt64, UInt64, DirectoryBlock.Header) throws(DirectoryError) -> Bool) throws(DirectoryError) {
        let tableOffset = try location(of: DirectoryBlock.tableBase + index / Self.pointersPerBlock, map)
        let first = transaction.readWord(tableOffset + 8 * (index % Self.pointersPerBlock))
        try checkPointer(first, index: index)
        var seen: [UInt64] = []
        var logical = first
        var depth: UInt8? = nil
        repeat {
            guard logical < DirectoryBlock.tableBase, !seen.contains(logical) else {
                throw .damaged("directory \(directory) bucket \(first): overflow link to \(logical)")
            }
            seen.append(logical)
            let offset = try location(of: logical, map)
            let header = try headerInPlace(logical: logical, offset: offset)
            guard !header.isIndexRoot else {
                throw .damaged("directory \(directory) block \(logical): an index root where a bucket belongs")
            }
            guard header.localDepth <= root.globalDepth, header.localDepth == (depth ?? header.localDepth),
                  UInt64(header.hashPrefix) == index >> (UInt64(root.globalDepth) - UInt64(header.localDepth)) else {
                throw .damaged("directory \(directory) block \(logical): depth \(header.localDepth) prefix \(header.hashPrefix) under pointer \(index) of global depth \(root.globalDepth)")
            }
            depth = header.localDepth
            guard try visit(logical, offset, header) else { return }
            logical = header.overflowNext
        } while logical != 0
    }

    /// Appends in place; the checksum is recomputed once, at commit.
    private func append(_ entry: DirectoryEntry, at place: (offset: UInt64, count: Int, end: Int)) {
        transaction.editBlock(at: place.offset, resealing: volumeSeed) { block in
            DirectoryBlock.appendEntry(entry, to: block, count: place.count, end: place.end)
        }
    }

    private func readTop(_ map: some DirectoryBlockMap) throws(DirectoryError) -> Top {
        let (offset, block) = try readBlock(0, map)
        switch block.content {
        case let .leaf(localDepth, hashPrefix, overflowNext, entries):
            guard localDepth == 0, hashPrefix == 0, overflowNext == 0 else {
                throw .damaged("directory \(directory) block 0: a small directory's leaf with depth \(localDepth), prefix \(hashPrefix), overflow \(overflowNext)")
            }
            return .small(Leaf(logical: 0, offset: offset, localDepth: 0, hashPrefix: 0, overflowNext: 0, entries: entries))
        case let .indexRoot(globalDepth, entryCount, bucketCount):
            return .hashed(Root(offset: offset, globalDepth: globalDepth, entryCount: entryCount, bucketCount: bucketCount))
        }
    }

    private func checkPointer(_ pointer: UInt64, index: UInt64) throws(DirectoryError) {
        guard pointer >= 1 && pointer < DirectoryBlock.tableBase else {
            throw .damaged("directory \(directory) bucket pointer \(index) is \(pointer)")
        }
    }

    /// The bucket of pointer `index` and its overflow chain, each block checked: a leaf of
    /// the bucket's depth and prefix (the ones pointer `index` implies), holding only entries
    /// with that prefix, the chain without loops.
    private func readBucket(_ index: UInt64, root: Root, _ map: some DirectoryBlockMap) throws(DirectoryError) -> [Leaf] {
        let tableOffset = try location(of: DirectoryBlock.tableBase + index / Self.pointersPerBlock, map)
        let first = transaction.readWord(tableOffset + 8 * (index % Self.pointersPerBlock))
        try checkPointer(first, index: index)
        var chain: [Leaf] = []
        var logical = first
        repeat {
            guard logical < DirectoryBlock.tableBase, !chain.contains(where: { $0.logical == logical }) else {
                throw .damaged("directory \(directory) bucket \(first): overflow link to \(logical)")
            }
            let (offset, block) = try readBlock(logical, map)
            guard case let .leaf(depth, prefix, next, entries) = block.content else {
                throw .damaged("directory \(directory) block \(logical): an index root where a bucket belongs")
            }
            let expectedDepth = chain.first?.localDepth ?? depth
            guard depth <= root.globalDepth, depth == expectedDepth,
                  UInt64(prefix) == index >> (UInt64(root.globalDepth) - UInt64(depth)) else {
                throw .damaged("directory \(directory) block \(logical): depth \(depth) prefix \(prefix) under pointer \(index) of global depth \(root.globalDepth)")
            }
            if let stray = entries.first(where: { Self.prefix($0.hash, depth: depth) != prefix }) {
                throw .damaged("directory \(directory) block \(logical): entry \(Self.shown(stray.name)) of hash \(stray.hash) outside prefix \(prefix)/\(depth)")
            }
            chain.append(Leaf(logical: logical, offset: offset, localDepth: depth, hashPrefix: prefix, overflowNext: next, entries: entries))
            logical = next
        } while logical != 0
        return chain
    }

    private func write(_ leaf: Leaf) {
        let block = DirectoryBlock(directory: directory, logicalBlock: leaf.logical,
                                   content: .leaf(localDepth: leaf.localDepth, hashPrefix: leaf.hashPrefix,
                                                  overflowNext: leaf.overflowNext, entries: leaf.entries))
        transaction.writeChanged(block.encode(seed: volumeSeed), at: leaf.offset)
    }

    private func write(_ root: Root) {
        let block = DirectoryBlock(directory: directory, logicalBlock: 0,
                                   content: .indexRoot(globalDepth: root.globalDepth, entryCount: root.entryCount,
                                                       bucketCount: root.bucketCount))
        transaction.writeChanged(block.encode(seed: volumeSeed), at: root.offset)
    }
}
