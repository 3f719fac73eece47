// The NVM region as seen by every layer above the media: a byte-addressable mapping that
// code reads with plain loads and changes only through `store`, then makes durable with
// `flush` + `fence`.
//
// Durability points: a store is durable only once a `flush` covering it has been followed
// by a `fence` (or `storePersist` has returned). An aligned 8-byte store is never torn; any
// wider store may reach the media in part, 8 bytes at a time, before it is fenced.

/// How a mapping reaches durability, stated honestly to users and in benchmarks.
public enum PersistenceKind: String, Sendable, Equatable {
    /// Real persistent memory (a DAX mapping: `pmem_is_pmem` answered yes). Flushing CPU
    /// caches is enough to survive power loss.
    case persistentMemory = "persistent memory"
    /// A file on a DRAM-backed file system (tmpfs, /dev/shm) emulating NVM. Shale takes the
    /// same CPU cache-flush path as on real NVM, so the costs and ordering are those of NVM;
    /// the data survives the crash of any process but not a reboot or power loss.
    case emulatedOnDRAM = "emulated NVM (DRAM-backed file, survives process crashes, not reboots)"
    /// A file on an ordinary block file system: flushes go through msync.
    case fileSystemMsync = "file on a block device (msync)"
    /// An in-memory simulation used by tests and the crash harness.
    case simulated = "simulated"
}

public protocol PersistentMemory: AnyObject {
    /// Bytes in the region.
    var byteCount: Int { get }
    var persistence: PersistenceKind { get }
    /// The region for loads. Never write through it: every change goes through `store`, so
    /// that recording and simulated regions see it.
    var baseAddress: UnsafeRawPointer { get }

    /// Copies `source` to `offset`. Not durable until flushed and fenced.
    func store(_ source: UnsafeRawBufferPointer, at offset: Int)
    /// One aligned 8-byte store: failure-atomic, never torn. `offset` must be a multiple of 8.
    func storeWord(_ value: UInt64, at offset: Int)
    /// Sets `count` bytes at `offset` to `byte`. Not durable until flushed and fenced.
    func fill(_ byte: UInt8, at offset: Int, count: Int)
    /// Starts writing back the cache lines that cover the range; unordered until `fence`.
    func flush(offset: Int, count: Int)
    /// Waits until every flush issued before it is durable.
    func fence()
    /// store + flush without the fence: durable at the next `fence` (libpmem's
    /// `pmem_memcpy_nodrain`, non-temporal stores for large copies). Several of these and one
    /// fence make one commit.
    func storeFlush(_ source: UnsafeRawBufferPointer, at offset: Int)
    /// store + flush + fence, durable on return (libpmem may use non-temporal stores).
    func storePersist(_ source: UnsafeRawBufferPointer, at offset: Int)
    /// fill + flush without the fence (libpmem's `pmem_memset_nodrain`): durable at the next
    /// `fence`.
    func fillFlush(_ byte: UInt8, at offset: Int, count: Int)
    /// storeFlush that also continues a CRC32C over the bytes: returns `update(crc, source)`.
    /// A medium that can checksum while it copies (a CPU-flushed mapping on a CPU that folds
    /// CRC32C with carry-less multiplication) reads the bytes once for both, which is most of
    /// a 4 KiB log record's cost; any other does storeFlush, then `update`. `crc` and the
    /// result are finished CRC32C values, `update` ShaleFormat's `CRC32C.update` (the media
    /// layer sits below the format and does not define the checksum).
    func storeFlush(_ source: UnsafeRawBufferPointer, at offset: Int, continuingCRC32C crc: UInt32,
                    update: (UInt32, UnsafeRawBufferPointer) -> UInt32) -> UInt32
    /// storeFlush of whole cache lines (`offset` and `count` multiples of 64): a CPU-flushed
    /// mapping writes them with non-temporal stores, which neither read the old line from
    /// memory first (a store to a line not in the cache does) nor leave anything to flush.
    /// Durable at the next `fence`, like storeFlush, which is what other media do.
    func streamLines(_ source: UnsafeRawBufferPointer, at offset: Int)
    /// Maps the range's pages for writing now, so that stores into it take no page faults
    /// later (a process's log region: a 4 KiB write record spans two pages, and two minor
    /// faults cost more than the record). Contents are unchanged; best effort, a no-op
    /// where there is nothing to map.
    func prefault(offset: Int, count: Int)
}

extension PersistentMemory {
    /// Nothing to map (simulated and recording media).
    public func prefault(offset: Int, count: Int) {}

    /// Whole lines stored and flushed: the same durability, without the shortcut.
    public func streamLines(_ source: UnsafeRawBufferPointer, at offset: Int) {
        precondition(offset % 64 == 0 && source.count % 64 == 0, "streamLines needs whole cache lines")
        storeFlush(source, at: offset)
    }

    /// storeFlush, then the checksum (what a medium without a combined path does).
    public func storeFlush(_ source: UnsafeRawBufferPointer, at offset: Int, continuingCRC32C crc: UInt32,
                           update: (UInt32, UnsafeRawBufferPointer) -> UInt32) -> UInt32 {
        storeFlush(source, at: offset)
        return update(crc, source)
    }

    /// fill, then flush (what a region without a combined path does).
    public func fillFlush(_ byte: UInt8, at offset: Int, count: Int) {
        fill(byte, at: offset, count: count)
        flush(offset: offset, count: count)
    }

    /// Flush + fence of one range: durable on return.
    @inlinable
    public func persist(offset: Int, count: Int) {
        flush(offset: offset, count: count)
        fence()
    }

    /// A plain load of an aligned little-endian 8-byte word.
    @inlinable
    public func loadWord(at offset: Int) -> UInt64 {
        precondition(offset >= 0 && offset % 8 == 0 && offset + 8 <= byteCount)
        return UInt64(littleEndian: baseAddress.load(fromByteOffset: offset, as: UInt64.self))
    }

    /// Copies `count` bytes from the region, e.g. to decode a structure.
    public func load(at offset: Int, count: Int) -> [UInt8] {
        checkRange(offset, count)
        return Array(UnsafeRawBufferPointer(start: baseAddress + offset, count: count))
    }

    /// A read-only view of a range, valid while the region is open.
    public func view(at offset: Int, count: Int) -> UnsafeRawBufferPointer {
        checkRange(offset, count)
        return UnsafeRawBufferPointer(start: baseAddress + offset, count: count)
    }

    /// Convenience: a store of a byte array (not durable until flushed and fenced).
    public func store(_ bytes: [UInt8], at offset: Int) {
        bytes.withUnsafeBytes { store($0, at: offset) }
    }

    /// Convenience: store + flush + fence of a byte array.
    public func storePersist(_ bytes: [UInt8], at offset: Int) {
        bytes.withUnsafeBytes { storePersist($0, at: offset) }
    }

    @inlinable
    public func checkRange(_ offset: Int, _ count: Int) {
        precondition(offset >= 0 && count >= 0 && offset <= byteCount &- count,
                     "NVM access [\(offset), +\(count)) outside a region of \(byteCount) bytes")
    }
}
