// A FUSE session: libfuse's session over a `FUSEServer`, mounted on a directory and served
// by libfuse's multi-threaded loop until it is unmounted (fusermount3 -u, umount) or told to
// stop (SIGINT, SIGTERM, SIGHUP when the daemon installed libfuse's handlers, or `exit()`).
//
// The loop finishes the requests in flight before it returns: libfuse's workers take
// cancellation only while waiting for a request, and the loop joins them.

import CFuse
import LibFS

#if canImport(Glibc)
import Glibc
#endif

public struct FUSEError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// `struct fuse_session *` is not Sendable; the session is used by one thread at a time.
struct SessionPointer: @unchecked Sendable {
    let pointer: OpaquePointer
}

public final class FUSESession: @unchecked Sendable {
    public let server: FUSEServer
    public let mountPoint: String
    private let session: SessionPointer
    private let userdata: UnsafeMutableRawPointer
    private var mounted = false
    private var destroyed = false

    /// A session for `server` with libfuse's options: `options` are `-o` values ("a,b=c"),
    /// `debug` traces every request on standard error. An option libfuse does not know is an
    /// error (libfuse prints which).
    public init(server: FUSEServer, mountPoint: String, options: [String], debug: Bool) throws(FUSEError) {
        guard server.fileSystem.rootInode == UInt64(FUSE_ROOT_ID) else {
            throw FUSEError("the volume's root is inode \(server.fileSystem.rootInode), not FUSE's root id \(FUSE_ROOT_ID)")
        }
        self.server = server
        self.mountPoint = mountPoint
        var arguments = ["shale"]
        if debug { arguments.append("-d") }
        for option in options { arguments += ["-o", option] }
        // libfuse parses (and may keep) the strings until fuse_opt_free_args.
        var strings: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        var ops = FUSEServer.operations()
        let retained = Unmanaged.passRetained(server).toOpaque()
        let created: OpaquePointer? = strings.withUnsafeMutableBufferPointer { argv in
            var args = fuse_args(argc: Int32(arguments.count), argv: argv.baseAddress, allocated: 0)
            let session = fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, retained)
            fuse_opt_free_args(&args)
            return session
        }
        for string in strings { free(string) }
        guard let created else {
            Unmanaged<FUSEServer>.fromOpaque(retained).release()
            throw FUSEError("libfuse refused the options (see above): \(options.joined(separator: ","))")
        }
        session = SessionPointer(pointer: created)
        userdata = retained
    }

    deinit { destroy() }

    /// Mounts the session on `mountPoint` (as root, directly; otherwise through fusermount3).
    public func mount() throws(FUSEError) {
        guard fuse_session_mount(session.pointer, mountPoint) == 0 else {
            throw FUSEError("cannot mount on \(mountPoint) (libfuse says why above)")
        }
        mounted = true
        // The same /dev/fuse descriptor, read and written through Shale's hooks (INIT flags
        // libfuse cannot set: InitReply.swift). Before the loop reads the INIT request.
        var io = InitReplyFlags.io
        let status = fuse_session_custom_io(session.pointer, &io, fuse_session_fd(session.pointer))
        guard status == 0 else { throw FUSEError("cannot take over the session's I/O: \(String(cString: strerror(-status)))") }
    }

    /// The signals that stop a daemon's loop (libfuse's handlers).
    public static var stopSignals: sigset_t {
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&signals, signal) }
        return signals
    }

    /// Serves requests until the file system is unmounted or the session is told to exit;
    /// then unmounts (when it was not unmounted from outside). Returns libfuse's status: 0,
    /// or the signal that stopped it.
    ///
    /// `handleSignals` (a daemon only: never in a process that has other work, such as a test
    /// runner) installs libfuse's SIGINT/SIGTERM/SIGHUP handlers, then unblocks those signals
    /// on the calling thread for the duration of the loop, which is what wakes it. The caller
    /// blocks them (`stopSignals`) before starting any other thread, so that every other
    /// thread inherits the block and the signals land here (libfuse's workers block all
    /// signals themselves).
    public func run(handleSignals: Bool, maxThreads: UInt32 = 10) -> Int32 {
        var signals = Self.stopSignals
        if handleSignals {
            _ = fuse_set_signal_handlers(session.pointer)
            pthread_sigmask(SIG_UNBLOCK, &signals, nil)
        }
        let config = fuse_loop_cfg_create()
        fuse_loop_cfg_set_clone_fd(config, 0)
        fuse_loop_cfg_set_max_threads(config, maxThreads)
        let status = fuse_session_loop_mt(session.pointer, config)
        fuse_loop_cfg_destroy(config)
        if handleSignals {
            pthread_sigmask(SIG_BLOCK, &signals, nil)
            fuse_remove_signal_handlers(session.pointer)
        }
        unmount()
        return status
    }

    /// Asks the loop to stop (it returns once its workers are done).
    public func exit() { fuse_session_exit(session.pointer) }

    /// Unmounts if still mounted (harmless when fusermount3 -u or umount already did).
    public func unmount() {
        guard mounted else { return }
        fuse_session_unmount(session.pointer)
        mounted = false
    }

    /// Unmounts and frees the session (libfuse calls the server's destroy).
    public func destroy() {
        guard !destroyed else { return }
        destroyed = true
        unmount()
        fuse_session_destroy(session.pointer)
        Unmanaged<FUSEServer>.fromOpaque(userdata).release()
    }
}
