// The real NVM region: a file or DAX device mapped with libpmem.
//
// On real persistent memory, and on a DRAM-backed emulation file (tmpfs, /dev/shm), stores
// are made durable with CPU cache flushes (clwb/clflushopt + sfence through pmem_flush and
// pmem_drain) and bulk copies with non-temporal stores (pmem_memcpy_persist): the path real
// NVM needs, so the emulation costs what NVM would. libpmem reports is_pmem = 0 on tmpfs;
// Shale recognises tmpfs itself instead of asking users to set PMEM_IS_PMEM_FORCE. On any
// other file system the mapping is made durable with msync.

import CCRC32C
import CLinux
import CPmem
import Glibc
import Synchronization
import SystemPackage

public final class MappedPersistentMemory: PersistentMemory, @unchecked Sendable {
    public let path: String
    public let byteCount: Int
    public let persistence: PersistenceKind
    private let base: UnsafeMutableRawPointer
    private let usesCPUFlush: Bool
    private let failure = Mutex<MediaError?>(nil)

    /// The first msync that failed (file-system-backed regions only; CPU flushes cannot
    /// fail). Persist calls do not throw, to keep the hot path lean: callers check this at
    /// their commit points, and a region with a failure must be treated as read-only.
    public var persistFailure: MediaError? { failure.withLock { $0 } }

    public var baseAddress: UnsafeRawPointer { UnsafeRawPointer(base) }

    /// Creates (or, unless `exclusive`, resizes) the file at `path` to `byteCount` bytes and
    /// maps it.
    /// With `sparse: false` the file's space is reserved now (posix_fallocate), so a full
    /// tmpfs is a clear ENOSPC here instead of SIGBUS at a later store.
    public static func create(path: String, byteCount: Int, exclusive: Bool = true,
                              sparse: Bool = false) throws(MediaError) -> MappedPersistentMemory {
        guard byteCount > 0 else {
            throw MediaError(.invalidArgument, "creating NVM region \(path)", detail: "size must be positive")
        }
        var flags = Int32(PMEM_FILE_CREATE)
        if exclusive { flags |= Int32(PMEM_FILE_EXCL) }
        if sparse { flags |= Int32(PMEM_FILE_SPARSE) }
        return try MappedPersistentMemory(path: path, requestedBytes: byteCount, flags: flags,
                                          operation: "creating NVM region \(path) (\(byteCount) bytes)")
    }

    /// Maps an existing file or DAX device whole.
    public static func open(path: String) throws(MediaError) -> MappedPersistentMemory {
        try MappedPersistentMemory(path: path, requestedBytes: 0, flags: 0, operation: "mapping NVM region \(path)")
    }

    private init(path: String, requestedBytes: Int, flags: Int32, operation: String) throws(MediaError) {
        var mappedBytes = 0
        var isPmem: Int32 = 0
        guard let address = pmem_map_file(path, requestedBytes, flags, 0o600, &mappedBytes, &isPmem) else {
            throw MediaError.current(operation, detail: pmem_errormsg().map { String(cString: $0) })
        }
        self.path = path
        self.base = address
        self.byteCount = mappedBytes
        if isPmem != 0 {
            persistence = .persistentMemory
        } else if MappedPersistentMemory.isDRAMBacked(path) {
            persistence = .emulatedOnDRAM
        } else {
            persistence = .fileSystemMsync
        }
        usesCPUFlush = persistence != .fileSystemMsync
    }

    deinit {
        pmem_unmap(base, byteCount)
    }

    /// True when `path` lives on tmpfs or ramfs.
    public static func isDRAMBacked(_ path: String) -> Bool {
        var info = statfs()
        guard statfs(path, &info) == 0 else { return false }
        let tmpfsMagic: Int = 0x0102_1994
        let ramfsMagic: Int = 0x8584_58f6
        let type = Int(info.f_type)
        return type == tmpfsMagic || type == ramfsMagic
    }

    @inline(__always)
    public func store(_ source: UnsafeRawBufferPointer, at offset: Int) {
        checkRange(offset, source.count)
        guard let from = source.baseAddress else { return }
        memcpy(base + offset, from, source.count)
    }

    @inline(__always)
    public func storeWord(_ value: UInt64, at offset: Int) {
        precondition(offset % 8 == 0, "storeWord needs an 8-byte aligned offset")
        checkRange(offset, 8)
        base.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self)
    }

    public func fill(_ byte: UInt8, at offset: Int, count: Int) {
        checkRange(offset, count)
        memset(base + offset, Int32(byte), count)
    }

    public func fillFlush(_ byte: UInt8, at offset: Int, count: Int) {
        checkRange(offset, count)
        if usesCPUFlush {
            pmem_memset_nodrain(base + offset, Int32(byte), count)
        } else {
            memset(base + offset, Int32(byte), count)
            msync(offset, count)
        }
    }

    @inline(__always)
    public func flush(offset: Int, count: Int) {
        checkRange(offset, count)
        if usesCPUFlush {
            pmem_flush(base + offset, count)
        } else {
            // msync makes the pages durable before it returns: flush and fence in one.
            msync(offset, count)
        }
    }

    @inline(__always)
    public func fence() {
        if usesCPUFlush { pmem_drain() }
    }

    @inline(__always)
    public func storeFlush(_ source: UnsafeRawBufferPointer, at offset: Int) {
        checkRange(offset, source.count)
        guard let from = source.baseAddress else { return }
        if usesCPUFlush {
            pmem_memcpy_nodrain(base + offset, from, source.count)
        } else {
            memcpy(base + offset, from, source.count)
            msync(offset, source.count)
        }
    }

    public func streamLines(_ source: UnsafeRawBufferPointer, at offset: Int) {
        precondition(offset % 64 == 0 && source.count % 64 == 0, "streamLines needs whole cache lines")
        checkRange(offset, source.count)
        guard let from = source.baseAddress else { return }
        if usesCPUFlush {
            // Non-temporal at any length (libpmem's default keeps stores under 256 bytes in
            // the cache and flushes them, which first reads each line in from memory).
            pmem_memcpy(base + offset, from, source.count, UInt32(PMEM_F_MEM_NONTEMPORAL | PMEM_F_MEM_NODRAIN))
        } else {
            memcpy(base + offset, from, source.count)
            msync(offset, source.count)
        }
    }

    public func storeFlush(_ source: UnsafeRawBufferPointer, at offset: Int, continuingCRC32C crc: UInt32,
                           update: (UInt32, UnsafeRawBufferPointer) -> UInt32) -> UInt32 {
        checkRange(offset, source.count)
        guard usesCPUFlush, Self.foldsWhileCopying, let from = source.baseAddress else {
            storeFlush(source, at: offset)
            return update(crc, source)
        }
        // One pass: non-temporal stores (as pmem_memcpy_nodrain makes for a copy this size)
        // of the vectors the CRC folding loads anyway; a tail under 256 bytes goes the usual way.
        var register = ~crc
        let copied = shale_crc32c_hw_copy_stream(&register, base + offset, from, source.count)
        guard copied < source.count else { return ~register }
        let rest = UnsafeRawBufferPointer(rebasing: source[copied...])
        storeFlush(rest, at: offset + copied)
        return update(copied == 0 ? crc : ~register, rest)
    }

    public func prefault(offset: Int, count: Int) {
        checkRange(offset, count)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page
        let end = (offset + count + page - 1) / page * page
        // MADV_POPULATE_WRITE (Linux 5.14): write-faults the pages in without changing them.
        // An older kernel's EINVAL, or ENOMEM on a full tmpfs, only leaves the faults for later.
        _ = madvise(base + start, min(end, byteCount) - start, 23 /* MADV_POPULATE_WRITE */)
    }

    /// The CPU folds CRC32C (the hardware tables are set up once, here).
    private static let foldsWhileCopying: Bool = shale_crc32c_hw_available() != 0 && shale_crc32c_hw_folds() != 0

    @inline(__always)
    public func storePersist(_ source: UnsafeRawBufferPointer, at offset: Int) {
        checkRange(offset, source.count)
        guard let from = source.baseAddress else { return }
        if usesCPUFlush {
            // Durability point: pmem_memcpy_persist returns after its own fence.
            pmem_memcpy_persist(base + offset, from, source.count)
        } else {
            memcpy(base + offset, from, source.count)
            msync(offset, source.count)
        }
    }

    private func msync(_ offset: Int, _ count: Int) {
        if pmem_msync(base + offset, count) != 0 {
            let error = MediaError.current("msync of \(count) bytes at \(offset) of \(path)")
            failure.withLock { if $0 == nil { $0 = error } }
        }
    }
}
