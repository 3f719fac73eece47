// The inode table (docs/format.md "Inodes"): inode chunks on NVM found through the inode
// map. Reads and writes go through a MetadataTransaction. Free inode numbers are found once,
// at open, by scanning the allocated chunks, and kept in DRAM; numbers handed out
// (`allocate`) stay reserved until written or released, so that LibFS can name a new inode
// in its log before KernFS has digested its creation.
//
// A new chunk is zero-filled directly on NVM and persisted BEFORE the transaction that
// links it (inode map entry, allocator bits) commits: until then nothing refers to those
// blocks, so a crash leaves them free and unused ("ordered" writes, not journaled).
//
// Inodes a transaction writes or frees are kept decoded in it (`ChangedInodes`, attached to
// the transaction) and encoded into it once, when it commits: a digest batch that creates a
// file and writes it, or adds a thousand names to one directory, decodes and encodes each
// inode once, not once per record. Reads through that transaction see them.

import ShaleFormat
import ShaleMedia

public enum InodeError: Error, Equatable, CustomStringConvertible {
    case outOfRange(UInt64)
    case noSpace(String)
    case damaged(String)

    public var description: String {
        switch self {
        case let .outOfRange(number): "inode \(number) is outside the inode table"
        case let .noSpace(reason): "no free inode: \(reason)"
        case let .damaged(text): text
        }
    }
}

public final class InodeTable<NVM: PersistentMemory>: @unchecked Sendable {
    public let layout: NVMLayout
    private let nvm: NVM
    private let seed: UInt32
    private let allocator: BlockAllocator<NVM>
    /// Candidate free numbers; allocation pops the last (recently freed numbers are reused
    /// first, new chunks fill from their lowest number). A number is really free only while
    /// it is also in `isFree` (lazy deletion: `write` takes a number out of `isFree` only).
    private var freeNumbers: [UInt64] = []
    private var isFree: Set<UInt64> = []
    /// Handed out and not yet written or released. Survives reloads: a reserved number may
    /// sit in a client's log, undigested.
    private var reserved: Set<UInt64> = []
    /// Inode chunks linked in the inode map (statfs counts inodes from it).
    public private(set) var chunkCount: UInt64 = 0
    /// Transactions this table has changed, which tell it when they end.
    private var watched: Set<ObjectIdentifier> = []

    public init(nvm: NVM, superblock: Superblock, nvmAllocator: BlockAllocator<NVM>) throws(InodeError) {
        precondition(nvmAllocator.device.tier == .nvm)
        self.nvm = nvm
        layout = superblock.layout
        seed = superblock.volumeID.checksumSeed
        allocator = nvmAllocator
        try reload()
    }

    /// Rebuilds the free list from NVM (at open, and after an aborted transaction), leaving
    /// reserved numbers out.
    public func reload() throws(InodeError) {
        var free: [UInt64] = []
        var chunks: UInt64 = 0
        let perChunk = UInt64(layout.inodesPerChunk)
        for chunk in 0 ..< layout.inodeMapEntries {
            let offset = nvm.loadWord(at: Int(layout.inodeMapOffset + chunk * 8))
            guard offset != 0 else { continue }
            try checkChunkOffset(offset, chunk: chunk)
            chunks += 1
            for slot in 0 ..< perChunk {
                let number = chunk * perChunk + slot
                guard number != 0, !reserved.contains(number) else { continue }
                let view = nvm.view(at: Int(offset + slot * UInt64(layout.inodeBytes)), count: Int(layout.inodeBytes))
                if view.allSatisfy({ $0 == 0 }) { free.append(number) }
            }
        }
        freeNumbers = free.reversed()
        isFree = Set(free)
        chunkCount = chunks
    }

    /// The numbers of the committed inodes that `predicate` picks, in order. Reads NVM as
    /// the last commit left it (not through a transaction); a slot that does not decode is
    /// skipped (damage is fsck's to report).
    public func committedInodes(where predicate: (Inode) -> Bool) throws(InodeError) -> [UInt64] {
        var picked: [UInt64] = []
        let perChunk = UInt64(layout.inodesPerChunk)
        for chunk in 0 ..< layout.inodeMapEntries {
            let offset = nvm.loadWord(at: Int(layout.inodeMapOffset + chunk * 8))
            guard offset != 0 else { continue }
            try checkChunkOffset(offset, chunk: chunk)
            for slot in 0 ..< perChunk {
                let number = chunk * perChunk + slot
                guard number != 0 else { continue }
                let view = nvm.view(at: Int(offset + slot * UInt64(layout.inodeBytes)), count: Int(layout.inodeBytes))
                if view.load(as: UInt64.self) == 0, view.load(fromByteOffset: 8, as: UInt64.self) == 0 { continue }
                if let inode = try? Inode.decode(view, seed: seed, expectedNumber: number), predicate(inode) { picked.append(number) }
            }
        }
        return picked
    }

    /// Free slots in allocated chunks (more chunks are added on demand).
    public var freeCount: Int { isFree.count }

    /// Hands out `count` free inode numbers, reserved until written or released. Adds a
    /// chunk (in `transaction`) when the allocated ones are full; its numbers become free
    /// for everyone when the transaction commits.
    public func allocate(_ count: Int = 1, in transaction: MetadataTransaction<NVM>) throws(InodeError) -> [UInt64] {
        var numbers: [UInt64] = []
        while numbers.count < count {
            guard let number = popFree() else {
                do {
                    try addChunk(in: transaction)
                } catch {
                    release(numbers)
                    throw error
                }
                continue
            }
            reserved.insert(number)
            numbers.append(number)
        }
        return numbers
    }

    private func popFree() -> UInt64? {
        while let number = freeNumbers.popLast() {
            if isFree.remove(number) != nil { return number }
        }
        return nil
    }

    /// Returns reserved numbers that were never written.
    public func release(_ numbers: [UInt64]) {
        for number in numbers where reserved.remove(number) != nil {
            freeNumbers.append(number)
            isFree.insert(number)
        }
    }

    /// Whether `number` may become a new inode: inside an allocated chunk, and its slot free.
    public func canCreate(_ number: UInt64, in transaction: MetadataTransaction<NVM>) throws(InodeError) -> Bool {
        guard try slotOffset(number, in: transaction) != nil else { return false }
        return try read(number, in: transaction) == nil
    }

    /// The inodes one transaction changed: nil for a freed slot. Encoded at its commit.
    private final class ChangedInodes {
        var inodes: [UInt64: Inode?] = [:]
        var order: [UInt64] = []
    }

    /// The inode, or nil for a free slot (or a chunk not yet allocated).
    public func read(_ number: UInt64, in transaction: MetadataTransaction<NVM>) throws(InodeError) -> Inode? {
        if let changed = transaction.existingAttachment(for: self, as: ChangedInodes.self), let inode = changed.inodes[number] {
            return inode
        }
        guard let slot = try slotOffset(number, in: transaction) else { return nil }
        let bytes = transaction.read(slot, count: Inode.encodedBytes)
        let result: Result<Inode?, InodeError> = bytes.withUnsafeBytes { buffer in
            do throws(FormatError) {
                return .success(try Inode.decode(buffer, seed: seed, expectedNumber: number))
            } catch {
                return .failure(.damaged("\(error)"))
            }
        }
        return try result.get()
    }

    /// Writes (creates or updates) an inode; its number must be allocated or in use. A new
    /// inode's number stops being free or reserved (an abort reloads the free list).
    public func write(_ inode: Inode, in transaction: MetadataTransaction<NVM>) throws(InodeError) {
        guard inode.mode != 0 else { throw .damaged("inode \(inode.number) written with mode 0") }
        guard let slot = try slotOffset(inode.number, in: transaction) else { throw .outOfRange(inode.number) }
        _ = slot
        watch(transaction)
        change(inode.number, to: inode, in: transaction)
        reserved.remove(inode.number)
        isFree.remove(inode.number)
    }

    /// Keeps `inode` (nil: the slot freed) as the transaction's version of `number`; the first
    /// change of a number reserves its journal room, and the first of the transaction sets
    /// up the encoding at commit.
    private func change(_ number: UInt64, to inode: Inode?, in transaction: MetadataTransaction<NVM>) {
        let changed = transaction.attachment(for: self) { ChangedInodes() }
        guard changed.inodes.updateValue(inode, forKey: number) == nil else { return }
        changed.order.append(number)
        let first = changed.order.count == 1
        transaction.deferWrites(reservingJournalBytes: JournalWrite.headerBytes + Int(layout.inodeBytes), !first ? nil : { [self, unowned transaction] in
            for number in changed.order {
                // The slot was found when the inode was changed; chunks are never unlinked.
                guard let slot = try? slotOffset(number, in: transaction) else { preconditionFailure("inode \(number) lost its slot") }
                if let inode = changed.inodes[number]! {
                    transaction.write(inode.encode(seed: seed), at: slot)
                } else {
                    transaction.write([UInt8](repeating: 0, count: Int(layout.inodeBytes)), at: slot)
                }
            }
        })
    }

    /// Frees an inode's slot (its blocks are the caller's to free). The number becomes free
    /// for others when the transaction commits, not before.
    public func free(_ number: UInt64, in transaction: MetadataTransaction<NVM>) throws(InodeError) {
        guard let slot = try slotOffset(number, in: transaction) else { throw .outOfRange(number) }
        _ = slot
        watch(transaction)
        change(number, to: nil, in: transaction)
        reserved.remove(number)
        transaction.onEnd { [self] committed in
            if committed {
                freeNumbers.append(number)
                isFree.insert(number)
            }
        }
    }

    /// An aborted transaction may have created or removed inodes and chunks: re-read the
    /// free list from NVM (reservations stay).
    private func watch(_ transaction: MetadataTransaction<NVM>) {
        let id = ObjectIdentifier(transaction)
        guard watched.insert(id).inserted else { return }
        transaction.onEnd { [self] committed in
            watched.remove(id)
            if !committed { try? reload() }
        }
    }

    // MARK: - Chunks

    private func slotOffset(_ number: UInt64, in transaction: MetadataTransaction<NVM>) throws(InodeError) -> UInt64? {
        guard number != 0, number < layout.inodeCapacity else { throw .outOfRange(number) }
        let location = layout.inodeLocation(number)
        let chunk = transaction.readWord(location.mapEntryOffset)
        guard chunk != 0 else { return nil }
        try checkChunkOffset(chunk, chunk: number / UInt64(layout.inodesPerChunk))
        return chunk + location.offsetInChunk
    }

    private func checkChunkOffset(_ offset: UInt64, chunk: UInt64) throws(InodeError) {
        let data = allocator.device
        let dataEnd = data.dataOffset + data.dataBlocks * UInt64(Format.blockBytes)
        guard offset % UInt64(Format.blockBytes) == 0, offset >= data.dataOffset, offset <= dataEnd,
              layout.inodeChunkBytes <= dataEnd - offset else {
            throw .damaged("inode map entry \(chunk) points outside the NVM data area (\(offset))")
        }
    }

    private func addChunk(in transaction: MetadataTransaction<NVM>) throws(InodeError) {
        guard let chunk = (0 ..< layout.inodeMapEntries).first(where: { transaction.readWord(layout.inodeMapOffset + $0 * 8) == 0 }) else {
            throw .noSpace("all \(layout.inodeCapacity - 1) inode numbers are in use")
        }
        let blocks = layout.inodeChunkBytes / UInt64(Format.blockBytes)
        let runs: [Range<UInt64>]
        do {
            runs = try allocator.allocate(blocks, in: transaction, contiguous: true)
        } catch {
            throw .noSpace("no \(layout.inodeChunkBytes)-byte run of NVM for a new inode chunk (\(error))")
        }
        let offset = allocator.nvmOffset(ofBlock: runs[0].lowerBound)
        // Ordered write: zero the unreferenced chunk and make it durable before the
        // transaction that links it can commit.
        nvm.fill(0, at: Int(offset), count: Int(layout.inodeChunkBytes))
        nvm.persist(offset: Int(offset), count: Int(layout.inodeChunkBytes))
        transaction.writeWord(offset, at: layout.inodeMapOffset + chunk * 8)
        let perChunk = UInt64(layout.inodesPerChunk)
        let numbers = (chunk * perChunk ..< (chunk + 1) * perChunk).filter { $0 != 0 }
        // Usable at once by this transaction's caller; if it aborts, the chunk is not
        // linked, so its numbers (and reservations of them) are dropped by the reload.
        freeNumbers = numbers.reversed() + freeNumbers
        isFree.formUnion(numbers)
        watch(transaction)
        transaction.onEnd { [self] committed in
            if committed { chunkCount += 1 } else { reserved.subtract(numbers) }
        }
    }
}
