// ShaleMedia — layer 1 of Shale, the only code that touches storage.
//
// Offers: `PersistentMemory` (the NVM region: store, flush, fence) and `BlockDevice` (the SSD
// and HDD tiers: batched reads and writes, flush), each with a real implementation (libpmem,
// io_uring) and simulated ones that record every persistence event and can materialise the
// image a crash would leave (docs/consistency.md, "Fault model").
// Needs: libpmem and liburing (through the CPmem and CURing system-library targets) and the
// kernel. Nothing above this layer calls libpmem, liburing, pwrite or fsync directly.

import SystemPackage

/// A failed media operation: the errno the system returned and what was being done.
public struct MediaError: Error, Equatable, CustomStringConvertible {
    /// The system error, e.g. `.noSpace` or `.invalidArgument`.
    public var errno: Errno
    /// What was being done, in words a user understands ("mapping /dev/shm/x (1 GiB)").
    public var operation: String
    /// Extra detail from the library that failed (libpmem's error message), if any.
    public var detail: String?

    public init(_ errno: Errno, _ operation: String, detail: String? = nil) {
        self.errno = errno
        self.operation = operation
        self.detail = detail
    }

    /// The calling thread's current errno, for use right after a failed C call.
    public static func current(_ operation: String, detail: String? = nil) -> MediaError {
        MediaError(Errno(rawValue: SystemPackage.Errno.currentCompat), operation, detail: detail)
    }

    public var description: String {
        var text = "\(operation): \(errno.description) (errno \(errno.rawValue))"
        if let detail, !detail.isEmpty { text += " [\(detail)]" }
        return text
    }
}

#if canImport(Glibc)
import Glibc
#endif

extension Errno {
    /// Glibc's thread-local errno, read without importing Foundation.
    static var currentCompat: CInt { Glibc.errno }
}
