// What Shale asks of the kernel at FUSE_INIT beyond what libfuse can say: libfuse 3.14
// (Debian 12's) knows nothing of FUSE_HANDLE_KILLPRIV_V2 (protocol 7.33). Without it the
// kernel, before every write, asks the file system for the file's security.capability
// (a GETXATTR round trip: a third of a 4 KiB write through the mount), because the file
// system cannot promise to drop set-id bits and capabilities itself. Shale does drop them
// itself (LibFS drops set-uid and set-gid on a write or truncate by a caller without
// CAP_FSETID, and on chown; it stores no security.capability the kernel would act on), so
// it makes that promise: the kernel then marks the super block SB_NOSEC and asks once per
// inode, not once per write.
//
// How: the session's /dev/fuse I/O goes through `fuse_session_custom_io` over the same
// descriptor. Reading notes the INIT request (its unique id and the flags the kernel
// offers); the INIT reply, on its way out, gains HANDLE_KILLPRIV_V2 when the kernel offered
// it. Every other request and reply passes through untouched. Layouts are the kernel's own
// (linux/fuse.h).

import CFuse
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

final class InitReplyFlags: Sendable {
    /// The INIT flags Shale adds to libfuse's reply, when the kernel offers them.
    static let added = UInt32(FUSE_HANDLE_KILLPRIV_V2)

    /// The INIT request's unique id while its reply is pending; 0 otherwise.
    private let initUnique = Atomic<UInt64>(0)
    /// What the kernel offered of `added`.
    private let offered = Atomic<UInt32>(0)
    /// Set once the INIT reply went out: later traffic is not looked at.
    private let done = Atomic<Bool>(false)
    /// The flags the INIT reply carried in the end (tests, tracing): 0 before it went out.
    let repliedFlags = Atomic<UInt32>(0)

    /// A request as read from /dev/fuse.
    func noted(request bytes: UnsafeRawPointer, count: Int) {
        guard !done.load(ordering: .acquiring) else { return }
        let headerBytes = MemoryLayout<fuse_in_header>.size
        let flagsOffset = headerBytes + MemoryLayout<fuse_init_in>.offset(of: \.flags)!
        guard count >= flagsOffset + 4 else { return }
        let header = bytes.loadUnaligned(as: fuse_in_header.self)
        guard header.opcode == FUSE_INIT.rawValue else { return }
        let flags = bytes.loadUnaligned(fromByteOffset: flagsOffset, as: UInt32.self)
        offered.store(flags & Self.added, ordering: .relaxed)
        initUnique.store(header.unique, ordering: .releasing)
    }

    /// A reply about to be written to /dev/fuse: the INIT reply gains what was offered.
    func patch(reply iov: UnsafeMutablePointer<iovec>, count: Int32) {
        guard !done.load(ordering: .acquiring) else { return }
        let unique = initUnique.load(ordering: .acquiring)
        guard unique != 0, count >= 2, iov[0].iov_len >= MemoryLayout<fuse_out_header>.size,
              let headerBase = iov[0].iov_base else { return }
        let header = headerBase.loadUnaligned(as: fuse_out_header.self)
        guard header.unique == unique else { return }
        done.store(true, ordering: .releasing)
        let flagsOffset = MemoryLayout<fuse_init_out>.offset(of: \.flags)!
        guard header.error == 0, iov[1].iov_len >= flagsOffset + 4, let body = iov[1].iov_base else { return }
        let flags = body.loadUnaligned(fromByteOffset: flagsOffset, as: UInt32.self) | offered.load(ordering: .relaxed)
        body.storeBytes(of: flags, toByteOffset: flagsOffset, as: UInt32.self)
        repliedFlags.store(flags, ordering: .relaxed)
    }

    /// The session's I/O: libfuse's own read and writev, with the two looks above. libfuse
    /// passes the session's userdata, the retained `FUSEServer`.
    static let io = fuse_custom_io(
        writev: { fd, iov, count, userdata in
            if let userdata, let iov {
                Unmanaged<FUSEServer>.fromOpaque(userdata).takeUnretainedValue().initReply.patch(reply: iov, count: count)
            }
            return Glibc.writev(fd, iov, count)
        },
        read: { fd, buffer, length, userdata in
            let count = Glibc.read(fd, buffer, length)
            // errno is libfuse's to read when the read failed: nothing may run after it.
            if count > 0, let buffer, let userdata {
                Unmanaged<FUSEServer>.fromOpaque(userdata).takeUnretainedValue().initReply.noted(request: buffer, count: count)
            }
            return count
        },
        splice_receive: nil,
        splice_send: nil)
}
