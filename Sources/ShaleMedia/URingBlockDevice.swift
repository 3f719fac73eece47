// URingBlockDevice: the SSD and HDD tiers on a real regular file or block device.
//
// Where it sits: layer 1 (media), under everything that lays out data on the block tiers.
// Offers: `BlockDevice` — batched reads and writes, aligned to `alignmentBytes` (4096), all
// requests of a batch submitted together through io_uring and resumed until complete, and
// `flush()`. With O_DIRECT where the file system accepts it (the page cache neither hides nor
// doubles the cost of I/O), buffered I/O where it refuses; `ioMode` says which.
// Needs from below: liburing (CURing) and a kernel with io_uring enabled; for O_DIRECT,
// buffer addresses, lengths and offsets aligned to the logical block size, which 4096 is a
// multiple of on every device Shale supports (so no BLKSSZGET ioctl is needed).
// Durability point: `flush()` (fdatasync through io_uring). A completed write — even an
// O_DIRECT one, which may sit in the device's volatile write cache — is durable only once a
// later `flush()` has returned.
//
// Requests of one batch run concurrently in the kernel: the outcome of two overlapping
// requests in the same batch is undefined. Order them with two `perform` calls.

import CURing
import Glibc
import Synchronization
import SystemPackage

// @unchecked Sendable: `fd`, `path`, `byteCount`, `ioMode` and `ringEntries` never change
// after init; the only mutable state is the pool of idle rings, guarded by a Mutex; a Ring
// taken from the pool belongs to exactly one thread until it is put back, so no lock is held
// across I/O and no ring is ever used by two threads at once.
public final class URingBlockDevice: BlockDevice, @unchecked Sendable {
    /// The file or device path, used in every error message.
    public let path: String
    public let byteCount: UInt64
    public var alignmentBytes: Int { URingBlockDevice.alignmentBytes }
    public let ioMode: BlockIOMode
    /// Submission queue entries per ring: the most requests in flight per `perform` call.
    public let ringEntries: Int

    /// A multiple of any logical block size (512 or 4096), so O_DIRECT never sees a
    /// misaligned request that `validate` let through.
    public static let alignmentBytes = 4096
    public static let defaultRingEntries = 128
    /// Idle rings kept for reuse; more may exist while more threads perform I/O at once.
    static let maxIdleRings = 4
    /// Not importable from Glibc (hidden behind _GNU_SOURCE); the value on x86_64 and aarch64.
    static let oDirect: Int32 = 0o40000
    /// Largest single submission: io_uring's length field is 32 bits and Linux caps one
    /// transfer at 2 GiB - 4 KiB; larger requests go in pieces through the resume path.
    static let maxBytesPerSubmission = 1 << 30

    private let fd: Int32
    private let idleRings: Mutex<[Ring]>

    // MARK: Opening

    /// Creates a sparse regular file of `byteCount` bytes (rounded down to a multiple of
    /// 4096) and opens it. With `exclusive`, an existing file is an EEXIST error; without, an
    /// existing file is resized. The file's size and name are durable on return.
    public static func create(path: String, byteCount: UInt64, exclusive: Bool = true,
                              ringEntries: Int = defaultRingEntries, direct: Bool = true) throws(MediaError) -> URingBlockDevice {
        let usableBytes = byteCount - byteCount % UInt64(alignmentBytes)
        let operation = "creating block device file \(path) (\(byteCount) bytes)"
        guard usableBytes > 0, usableBytes <= UInt64(Int64.max) else {
            throw MediaError(.invalidArgument, operation,
                             detail: "size must be at least \(alignmentBytes) bytes and fit in off_t")
        }
        try checkRingEntries(ringEntries, operation)
        // O_DIRECT is switched on after creation (fcntl F_SETFL): an open with
        // O_CREAT|O_EXCL|O_DIRECT on a file system without direct I/O creates the file and
        // then fails with EINVAL, so a buffered retry would meet EEXIST.
        var flags = O_RDWR | O_CREAT | O_CLOEXEC
        if exclusive { flags |= O_EXCL }
        let fd = try openRetryingEINTR(path, flags, 0o600, operation)
        do throws(MediaError) {
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw MediaError.current(operation, detail: "fstat") }
            guard info.st_mode & S_IFMT == S_IFREG else {
                throw MediaError(.invalidArgument, operation,
                                 detail: "exists and is not a regular file; use open(path:) for a block device")
            }
            guard ftruncate(fd, off_t(usableBytes)) == 0 else {
                throw MediaError.current(operation, detail: "ftruncate to \(usableBytes) bytes")
            }
            // A device file that vanishes or shrinks after a crash would lose every block
            // written to it later: make the size and the directory entry durable now.
            guard fsyncRetryingEINTR(fd) == 0 else { throw MediaError.current(operation, detail: "fsync") }
            try syncParentDirectory(of: path, operation)
            return try finishOpening(fd: fd, path: path, byteCount: usableBytes,
                                     ringEntries: ringEntries, direct: direct, operation)
        } catch {
            close(fd)
            throw error
        }
    }

    /// Opens an existing regular file (size from fstat) or block device (size from
    /// lseek to the end), using the whole of it rounded down to a multiple of 4096.
    /// With `direct: false` the device uses buffered I/O (and fdatasync at flush) even where
    /// O_DIRECT would work.
    public static func open(path: String, ringEntries: Int = defaultRingEntries, direct: Bool = true) throws(MediaError) -> URingBlockDevice {
        let operation = "opening block device \(path)"
        try checkRingEntries(ringEntries, operation)
        // A block device is opened exclusively (O_EXCL): one that is mounted, or claimed by
        // another exclusive opener, is EBUSY instead of silently shared.
        var before = stat()
        let isBlock = stat(path, &before) == 0 && before.st_mode & S_IFMT == S_IFBLK
        let fd = try openRetryingEINTR(path, O_RDWR | O_CLOEXEC | (isBlock ? O_EXCL : 0), 0, operation)
        do throws(MediaError) {
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw MediaError.current(operation, detail: "fstat") }
            let rawBytes: UInt64
            switch info.st_mode & S_IFMT {
            case S_IFREG:
                rawBytes = UInt64(info.st_size)
            case S_IFBLK:
                // st_size is 0 for a block device; its end is its size.
                let end = lseek(fd, 0, SEEK_END)
                guard end >= 0 else { throw MediaError.current(operation, detail: "lseek to the end") }
                rawBytes = UInt64(end)
            default:
                throw MediaError(.invalidArgument, operation, detail: "not a regular file or a block device")
            }
            let usableBytes = rawBytes - rawBytes % UInt64(alignmentBytes)
            guard usableBytes > 0 else {
                throw MediaError(.invalidArgument, operation,
                                 detail: "\(rawBytes) bytes is less than one \(alignmentBytes)-byte block")
            }
            return try finishOpening(fd: fd, path: path, byteCount: usableBytes,
                                     ringEntries: ringEntries, direct: direct, operation)
        } catch {
            close(fd)
            throw error
        }
    }

    /// Switches to O_DIRECT if the file system accepts it and sets up the first ring, so that
    /// a kernel without io_uring is reported at open rather than at the first I/O.
    private static func finishOpening(fd: Int32, path: String, byteCount: UInt64, ringEntries: Int, direct: Bool,
                                      _ operation: String) throws(MediaError) -> URingBlockDevice {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0 else { throw MediaError.current(operation, detail: "fcntl F_GETFL") }
        let mode: BlockIOMode
        if !direct {
            mode = .buffered
        } else if fcntl(fd, F_SETFL, flags | oDirect) == 0 {
            mode = .direct
        } else if Glibc.errno == EINVAL {
            // The file system has no direct I/O (some FUSE and network file systems).
            mode = .buffered
        } else {
            throw MediaError.current(operation, detail: "fcntl F_SETFL O_DIRECT")
        }
        let ring = try Ring(entries: ringEntries, path: path)
        return URingBlockDevice(fd: fd, path: path, byteCount: byteCount, ioMode: mode,
                                ringEntries: ringEntries, firstRing: ring)
    }

    private init(fd: Int32, path: String, byteCount: UInt64, ioMode: BlockIOMode, ringEntries: Int, firstRing: Ring) {
        self.fd = fd
        self.path = path
        self.byteCount = byteCount
        self.ioMode = ioMode
        self.ringEntries = ringEntries
        self.idleRings = Mutex([firstRing])
    }

    deinit {
        // No I/O can be in flight: perform and flush reap every completion before returning.
        // Exit the rings first, then close the file they referred to.
        idleRings.withLock { $0.removeAll() }
        close(fd)
    }

    // MARK: I/O

    public func perform(_ requests: [BlockRequest]) throws(MediaError) {
        for request in requests {
            try validate(request, deviceName: path)
        }
        guard !requests.isEmpty else { return }
        let ring = try takeRing()
        defer { putBack(ring) }
        var completedCount = 0
        try ring.stream(count: requests.count, queueDepth: ringEntries, fd: fd, next: { requests[$0] },
                        completed: { _ in completedCount += 1 })
        // Completions were matched to requests by user_data: a mix-up would show here.
        assert(completedCount == requests.count, "io_uring completions do not add up to the requests")
    }

    /// Keeps up to `queueDepth` requests in flight until `count` have been carried out (see
    /// `BlockDevice.stream`). Each request is validated as it is produced; an invalid one
    /// stops the stream with EINVAL after those already started complete.
    public func stream(count: Int, queueDepth: Int, next: (Int) -> BlockRequest,
                       completed: (Int) -> Void) throws(MediaError) {
        guard count > 0 else { return }
        let ring = try takeRing()
        defer { putBack(ring) }
        try ring.stream(count: count, queueDepth: queueDepth, fd: fd, next: { (index: Int) throws(MediaError) -> BlockRequest in
            let request = next(index)
            try self.validate(request, deviceName: self.path)
            return request
        }, completed: completed)
    }

    public func flush() throws(MediaError) {
        let ring = try takeRing()
        defer { putBack(ring) }
        try ring.fdatasync(fd: fd)
    }

    private func takeRing() throws(MediaError) -> Ring {
        if let ring = idleRings.withLock({ $0.popLast() }) { return ring }
        // Every idle ring is in use by another thread: make one more rather than wait.
        return try Ring(entries: ringEntries, path: path)
    }

    private func putBack(_ ring: Ring) {
        guard !ring.isBroken else { return }  // dropped, so its deinit exits it
        idleRings.withLock { rings in
            if rings.count < URingBlockDevice.maxIdleRings { rings.append(ring) }
        }
    }

    // MARK: System-call helpers

    private static func checkRingEntries(_ entries: Int, _ operation: String) throws(MediaError) {
        guard (1 ... 4096).contains(entries) else {
            throw MediaError(.invalidArgument, operation, detail: "ring entries must be in 1...4096, not \(entries)")
        }
    }

    private static func openRetryingEINTR(_ path: String, _ flags: Int32, _ mode: mode_t,
                                          _ operation: String) throws(MediaError) -> Int32 {
        while true {
            let fd = Glibc.open(path, flags, mode)
            if fd >= 0 { return fd }
            if Glibc.errno != EINTR { throw MediaError.current(operation) }
        }
    }

    private static func fsyncRetryingEINTR(_ fd: Int32) -> Int32 {
        while true {
            let rc = fsync(fd)
            if rc == 0 || Glibc.errno != EINTR { return rc }
        }
    }

    private static func syncParentDirectory(of path: String, _ operation: String) throws(MediaError) {
        let directory: String
        if let slash = path.lastIndex(of: "/") {
            directory = slash == path.startIndex ? "/" : String(path[..<slash])
        } else {
            directory = "."
        }
        let dirFD = try openRetryingEINTR(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, operation)
        defer { close(dirFD) }
        guard fsyncRetryingEINTR(dirFD) == 0 else {
            throw MediaError.current(operation, detail: "fsync of directory \(directory)")
        }
    }
}

// MARK: - Ring

/// One io_uring, used by one thread at a time (handed over through the device's pool).
/// The `io_uring` struct lives in its own heap allocation so that its address never changes
/// and it is never copied, which liburing requires.
// @unchecked Sendable: only so that it can pass through the pool's Mutex; the pool gives a
// ring to a single owner at a time.
final class Ring: @unchecked Sendable {
    private let ring: UnsafeMutablePointer<io_uring>
    private let entries: Int
    private let path: String
    /// Set when the ring can no longer be trusted (io_uring_enter failed for a reason other
    /// than EINTR/EAGAIN/EBUSY); the device then discards it instead of reusing it.
    private(set) var isBroken = false

    init(entries: Int, path: String) throws(MediaError) {
        ring = UnsafeMutablePointer<io_uring>.allocate(capacity: 1)
        ring.initialize(to: io_uring())
        let rc = io_uring_queue_init(UInt32(entries), ring, 0)
        guard rc == 0 else {
            ring.deallocate()
            throw MediaError(Errno(rawValue: -rc), "setting up an io_uring of \(entries) entries for \(path)")
        }
        self.entries = entries
        self.path = path
    }

    deinit {
        io_uring_queue_exit(ring)
        ring.deallocate()
    }

    /// Carries out every request: keeps up to `entries` submissions in flight (ring-sized
    /// waves, refilled as completions arrive), resumes short transfers, and on the first
    /// failure stops submitting, waits for everything in flight, then throws.
    /// Carries out `count` requests keeping up to `queueDepth` in flight: `next(i)` is asked
    /// for request i when there is room, `completed(i)` is told when request i has been
    /// carried out entirely (short transfers are resumed, EINTR/EAGAIN retried). After the
    /// first error no new request is started; those in flight are waited for, then it throws.
    func stream(count: Int, queueDepth: Int, fd: Int32, next: (Int) throws(MediaError) -> BlockRequest,
                completed: (Int) -> Void) throws(MediaError) {
        let depth = max(1, min(queueDepth, entries))
        // One ticket per in-flight request; user_data is the ticket. Plain buffers, allocated
        // once per call: no copy-on-write checks on the per-request path.
        let tickets = UnsafeMutableBufferPointer<Ticket>.allocate(capacity: depth)
        tickets.initialize(repeating: Ticket())
        let freeTickets = TicketStack(capacity: depth)
        let resubmit = TicketStack(capacity: depth)  // tickets whose remainder must be submitted again
        defer {
            tickets.deallocate()
            freeTickets.deallocate()
            resubmit.deallocate()
        }
        for ticket in (0 ..< depth).reversed() { freeTickets.push(ticket) }
        var started = 0
        var inFlight = 0
        var firstError: MediaError?

        while inFlight > 0 || firstError == nil && (started < count || !resubmit.isEmpty) {
            // Fill the submission queue: remainders first, then new requests.
            while firstError == nil, inFlight < depth {
                let ticket: Int
                if let again = resubmit.popLast() {
                    ticket = again
                } else if started < count, let fresh = freeTickets.popLast() {
                    do {
                        tickets[fresh] = Ticket(index: started, request: try next(started), done: 0)
                    } catch {
                        firstError = error
                        freeTickets.push(fresh)
                        break
                    }
                    started += 1
                    ticket = fresh
                } else {
                    break
                }
                guard let sqe = io_uring_get_sqe(ring) else {
                    resubmit.push(ticket)  // the queue is full: next round
                    break
                }
                let state = tickets[ticket]
                let remaining = state.request.buffer.count - state.done
                let chunk = UInt32(min(remaining, URingBlockDevice.maxBytesPerSubmission))
                let address = state.request.buffer.baseAddress.map { $0 + state.done }
                let offset = state.request.offset + UInt64(state.done)
                switch state.request.operation {
                case .read: io_uring_prep_read(sqe, fd, address, chunk, offset)
                case .write: io_uring_prep_write(sqe, fd, address, chunk, offset)
                }
                io_uring_sqe_set_data64(sqe, UInt64(ticket))
                inFlight += 1
                // Submitted at once, not gathered into one io_uring_enter per round: the device
                // starts on each request as soon as it exists. On this machine's virtio disk,
                // gathering cost ~20 % of fio's 4 KiB random-write IOPS and up to a third of its
                // 1 MiB bandwidth (docs/benchmarks.md); a submission costs ~0.3 µs.
                if let error = submitAndWait(inFlight: &inFlight, waitFor: 0) {
                    if firstError == nil { firstError = error }
                    if isBroken { break }
                }
            }
            if isBroken { break }

            if let error = submitAndWait(inFlight: &inFlight, waitFor: 1) {
                if firstError == nil { firstError = error }
                if isBroken { break }
            }

            // Reap every completion that is ready.
            var cqe: UnsafeMutablePointer<io_uring_cqe>?
            while io_uring_peek_cqe(ring, &cqe) == 0, let completion = cqe {
                let data = io_uring_cqe_get_data64(completion)
                let result = completion.pointee.res
                io_uring_cqe_seen(ring, completion)
                inFlight -= 1
                let ticket = Int(data)
                let state = tickets[ticket]
                if result == -EINTR || result == -EAGAIN {
                    resubmit.push(ticket)  // transient: submit the same remainder again
                } else if result < 0 {
                    if firstError == nil {
                        firstError = MediaError(Errno(rawValue: -result), describe(state.request, doneBytes: state.done))
                    }
                    freeTickets.push(ticket)
                } else if result == 0 {
                    // No progress on a non-empty remainder: the file shrank under us (read at
                    // end of file) or the device refuses; retrying would loop forever.
                    if firstError == nil {
                        firstError = MediaError(.ioError, describe(state.request, doneBytes: state.done),
                                                detail: "the transfer made no progress (file shorter than the device?)")
                    }
                    freeTickets.push(ticket)
                } else {
                    tickets[ticket].done += Int(result)
                    if tickets[ticket].done < state.request.buffer.count {
                        resubmit.push(ticket)  // short: resume
                    } else {
                        freeTickets.push(ticket)
                        completed(state.index)
                    }
                }
            }
        }
        if let firstError { throw firstError }
    }

    /// A fixed-capacity stack of ticket numbers.
    private struct TicketStack {
        let slots: UnsafeMutableBufferPointer<Int>
        let countPointer: UnsafeMutablePointer<Int>
        init(capacity: Int) {
            slots = .allocate(capacity: capacity)
            countPointer = .allocate(capacity: 1)
            countPointer.initialize(to: 0)
        }
        var isEmpty: Bool { countPointer.pointee == 0 }
        func push(_ ticket: Int) {
            slots[countPointer.pointee] = ticket
            countPointer.pointee += 1
        }
        func popLast() -> Int? {
            guard countPointer.pointee > 0 else { return nil }
            countPointer.pointee -= 1
            return slots[countPointer.pointee]
        }
        func deallocate() {
            slots.deallocate()
            countPointer.deallocate()
        }
    }

    private struct Ticket {
        var index = 0
        var request = BlockRequest(.read, offset: 0, buffer: UnsafeMutableRawBufferPointer(start: nil, count: 0))
        var done = 0
    }

    /// fdatasync through the ring, so that it waits like any other I/O.
    func fdatasync(fd: Int32) throws(MediaError) {
        let operation = "flushing \(path) (fdatasync)"
        while true {
            guard let sqe = io_uring_get_sqe(ring) else {
                // Unreachable: the ring is idle between calls.
                throw MediaError(.resourceBusy, operation, detail: "no free submission entry")
            }
            io_uring_prep_fsync(sqe, fd, UInt32(IORING_FSYNC_DATASYNC))
            io_uring_sqe_set_data64(sqe, 0)
            var inFlight = 1
            var result: Int32 = 0
            var reaped = false
            while !reaped {
                if let error = submitAndWait(inFlight: &inFlight) {
                    throw MediaError(error.errno, operation, detail: error.operation)
                }
                var cqe: UnsafeMutablePointer<io_uring_cqe>?
                if io_uring_peek_cqe(ring, &cqe) == 0, let completion = cqe {
                    result = completion.pointee.res
                    io_uring_cqe_seen(ring, completion)
                    reaped = true
                }
            }
            if result == -EINTR || result == -EAGAIN { continue }
            if result < 0 { throw MediaError(Errno(rawValue: -result), operation) }
            return
        }
    }

    /// Submits what is queued and waits for at least one completion. EINTR, EAGAIN and EBUSY
    /// are transient: the unsubmitted entries stay in the submission queue and the caller
    /// reaps what has completed, then comes back. Any other failure marks the ring broken,
    /// after waiting for the requests the kernel already accepted (their buffers belong to
    /// the caller, who must not see them written after we return).
    private func submitAndWait(inFlight: inout Int, waitFor: UInt32 = 1) -> MediaError? {
        guard inFlight > 0 else { return nil }
        let rc = io_uring_submit_and_wait(ring, waitFor)
        if rc >= 0 || rc == -EINTR { return nil }
        if rc == -EAGAIN || rc == -EBUSY {
            // The kernel is short of resources or has completions to hand back: if none are
            // ready, give the in-flight requests a moment before trying again.
            if io_uring_cq_ready(ring) == 0 { sched_yield() }
            return nil
        }
        isBroken = true
        let error = MediaError(Errno(rawValue: -rc), "submitting I/O to \(path) (io_uring_enter)")
        // Entries still in the SQ were never seen by the kernel; the rest must complete.
        var accepted = inFlight - Int(io_uring_sq_ready(ring))
        while accepted > 0 {
            var cqe: UnsafeMutablePointer<io_uring_cqe>?
            let waitRC = io_uring_wait_cqe(ring, &cqe)
            if waitRC == -EINTR || waitRC == -EAGAIN || waitRC == -EBUSY { continue }
            // The kernel still owns buffers of requests it accepted; returning now would let
            // it write into memory the caller is about to reuse. Nothing safe remains.
            guard waitRC == 0, let completion = cqe else {
                fatalError("io_uring lost track of \(accepted) in-flight requests on \(path) (\(Errno(rawValue: -waitRC)))")
            }
            io_uring_cqe_seen(ring, completion)
            accepted -= 1
            inFlight -= 1
        }
        return error
    }

    private func describe(_ request: BlockRequest, doneBytes: Int) -> String {
        var text = "\(request.operation) of \(request.buffer.count) bytes at offset \(request.offset) of \(path)"
        if doneBytes > 0 { text += " (after \(doneBytes) bytes)" }
        return text
    }
}
