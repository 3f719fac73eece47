// The SSD and HDD tiers as seen by every layer above the media: a fixed-size array of bytes
// read and written in aligned batches, made durable by an explicit flush.
//
// Durability points: a write that has completed is NOT durable; it becomes durable when a
// later `flush()` returns. Nothing else promises persistence.

import Glibc

/// What a batched request does.
public enum BlockOperation: Sendable, Equatable {
    case read
    case write
}

/// One request of a batch. `buffer` must stay valid until `perform` returns; its address,
/// its length and `offset` must be multiples of the device's `alignmentBytes`.
public struct BlockRequest {
    public var operation: BlockOperation
    public var offset: UInt64
    public var buffer: UnsafeMutableRawBufferPointer

    public init(_ operation: BlockOperation, offset: UInt64, buffer: UnsafeMutableRawBufferPointer) {
        self.operation = operation
        self.offset = offset
        self.buffer = buffer
    }
}

/// How a device reaches its storage.
public enum BlockIOMode: String, Sendable {
    /// O_DIRECT: the page cache is bypassed, data goes straight to the device queue.
    case direct
    /// The file system refused O_DIRECT (tmpfs on older kernels, some FUSE file systems):
    /// buffered I/O, with `flush()` doing fdatasync.
    case buffered
    /// In memory, with the crash behaviour of docs/consistency.md.
    case simulated
}

public protocol BlockDevice: AnyObject {
    /// Usable bytes, a multiple of `alignmentBytes`.
    var byteCount: UInt64 { get }
    /// Offsets, lengths and buffer addresses of every request must be multiples of this.
    var alignmentBytes: Int { get }
    var ioMode: BlockIOMode { get }
    /// Submits every request together and returns when all have completed. Each request is
    /// carried out entirely (short transfers are resumed) or the call throws; after a throw
    /// the requests may have been carried out in part.
    func perform(_ requests: [BlockRequest]) throws(MediaError)
    /// Carries out `count` requests, keeping up to `queueDepth` in flight: `next(i)` is asked
    /// for request i when there is room, and `completed(i)` says request i is done, so its
    /// buffer may be reused. Requests may complete out of order. After an error no new request
    /// starts; the call returns once those in flight are done, and throws.
    func stream(count: Int, queueDepth: Int, next: (Int) -> BlockRequest, completed: (Int) -> Void) throws(MediaError)
    /// Makes every write that completed before this call durable.
    func flush() throws(MediaError)
}

extension BlockDevice {
    /// One request at a time, in order: for devices without a queue of their own.
    public func stream(count: Int, queueDepth: Int, next: (Int) -> BlockRequest,
                       completed: (Int) -> Void) throws(MediaError) {
        for index in 0 ..< count {
            try perform([next(index)])
            completed(index)
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(MediaError) {
        try perform([BlockRequest(.read, offset: offset, buffer: buffer)])
    }

    public func write(_ buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(MediaError) {
        try perform([BlockRequest(.write, offset: offset, buffer: buffer)])
    }

    /// Rejects a request that the device could not carry out as asked, before any I/O:
    /// misaligned, or outside the device ("absurd offsets" get EINVAL, never a wrapped
    /// offset).
    public func validate(_ request: BlockRequest, deviceName: String) throws(MediaError) {
        let align = UInt64(alignmentBytes)
        let count = UInt64(request.buffer.count)
        let address = UInt64(UInt(bitPattern: request.buffer.baseAddress))
        if request.offset % align != 0 || count % align != 0 || address % align != 0 {
            throw MediaError(.invalidArgument,
                             "\(request.operation) of \(count) bytes at offset \(request.offset) of \(deviceName)",
                             detail: "offset, length and buffer address must be multiples of \(alignmentBytes)")
        }
        if count == 0 {
            throw MediaError(.invalidArgument, "\(request.operation) at offset \(request.offset) of \(deviceName)",
                             detail: "an empty request")
        }
        let (end, overflow) = request.offset.addingReportingOverflow(count)
        if overflow || end > byteCount {
            throw MediaError(.invalidArgument,
                             "\(request.operation) of \(count) bytes at offset \(request.offset) of \(deviceName)",
                             detail: "beyond the end of the device (\(byteCount) bytes)")
        }
    }
}

/// A heap buffer aligned for O_DIRECT, freed when the last reference goes.
public final class AlignedBuffer: @unchecked Sendable {
    public let bytes: UnsafeMutableRawBufferPointer

    /// `byteCount` bytes aligned to `alignment` (a power of two), zero-filled.
    public init(byteCount: Int, alignment: Int = 4096) {
        precondition(alignment > 0 && alignment & (alignment - 1) == 0, "alignment must be a power of two")
        var raw: UnsafeMutableRawPointer?
        let rc = posix_memalign(&raw, alignment, max(byteCount, 1))
        precondition(rc == 0 && raw != nil, "posix_memalign(\(alignment), \(byteCount)) failed: \(rc)")
        memset(raw!, 0, max(byteCount, 1))
        bytes = UnsafeMutableRawBufferPointer(start: raw, count: byteCount)
    }

    deinit { free(bytes.baseAddress) }

    public var count: Int { bytes.count }

    /// A sub-range of the buffer as a request buffer.
    public func slice(_ offset: Int, _ count: Int) -> UnsafeMutableRawBufferPointer {
        precondition(offset >= 0 && count >= 0 && offset + count <= bytes.count)
        return UnsafeMutableRawBufferPointer(rebasing: bytes[offset ..< offset + count])
    }
}
