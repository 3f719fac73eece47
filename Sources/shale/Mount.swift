// shale mount: serve a volume through FUSE. The daemon opens the volume with KernFS embedded
// (recovering whatever a crash left first), mounts, and serves with libfuse's multi-threaded
// loop; at unmount (fusermount3 -u, umount, SIGINT, SIGTERM) it finishes the requests in
// flight, digests every log record and closes the volume.

import ArgumentParser
import Glibc
import KernFS
import LibFS
import ShaleFUSE

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a file system through FUSE at a mount point.",
        discussion: """
        Opens the volume for this daemon alone (a second mount of it is refused), recovers \
        first if the last run crashed (every committed log record is digested), then mounts \
        it on MOUNTPOINT. Every request the mount answers is already durable: there is no \
        write-back cache and fsync costs nothing.

        Without -f the daemon goes to the background and the command returns once the mount \
        is ready (or fails with the reason). -d traces every FUSE request on standard error \
        and implies -f.

        -o passes mount options to FUSE, comma-separated, and may be repeated: allow_other, \
        default_permissions, ro, fsname=NAME (default: the volume's path), … as in \
        mount.fuse3(8). An option FUSE does not know is an error. Shale's own: \
        attr_timeout=SECONDS and entry_timeout=SECONDS, how long the kernel may trust the \
        attributes and names it was given (default 0: it asks Shale every time; longer \
        saves a round trip per stat and path step, and is safe while this mount is the \
        only way the volume changes).

        Unmount with `fusermount3 -u MOUNTPOINT`, `umount MOUNTPOINT`, or SIGINT/SIGTERM to \
        the daemon: requests in flight finish, every log record is digested and the volume \
        is closed. A mount point left dead by a killed daemon is detached before mounting \
        again.

        NVM emulated in RAM (a file on /dev/shm or another tmpfs) survives a killed daemon \
        but not a reboot: a clean unmount therefore saves it beside the manifest \
        (shale.nvm.saved), and after a reboot the next shale command restores it. Changes \
        made by a mount that did not end cleanly before the reboot are lost, and the restore \
        says so.
        """)

    @OptionGroup var target: VolumeArgument

    @Argument(help: "The directory to mount on.")
    var mountPoint: String

    @Flag(name: .customShort("f"), help: "Stay in the foreground until unmounted.")
    var foreground = false

    @Flag(name: .customShort("d"), help: "Trace every FUSE request on standard error (implies -f).")
    var debug = false

    @Option(name: .customShort("o", allowingJoined: true),
            help: ArgumentHelp("Mount options, comma-separated (allow_other, default_permissions, ro, fsname=NAME, …).",
                               valueName: "options"))
    var options: [String] = []

    func run() throws {
        let prepared: (path: String, detachedStale: Bool)
        do {
            prepared = try MountPoint.prepare(mountPoint)
        } catch {
            throw Output.fail("mount", error.description)
        }
        if prepared.detachedStale {
            Output.error("shale mount: detached a dead mount on \(mountPoint) left by a daemon that stopped")
        }
        let volume = absolute(target.volume)
        let (shaleOptions, passed) = Self.splitOptions(options)
        let timeouts: FUSETimeouts
        do {
            timeouts = try Self.timeouts(shaleOptions)
        } catch {
            throw Output.fail("mount", error.description)
        }
        var fuseOptions = passed
        let given = passed.flatMap { $0.split(separator: ",").map { $0.split(separator: "=").first.map(String.init) ?? "" } }
        if !given.contains("fsname") { fuseOptions.append("fsname=" + Self.escape(volume)) }
        if !given.contains("subtype") { fuseOptions.append("subtype=shale") }

        let stayInForeground = foreground || debug
        // The background daemon is forked before any thread exists (LibFS starts its digest
        // thread at open); the parent waits until the child says the mount is ready.
        let readiness = stayInForeground ? nil : try daemonize()

        // libfuse's signal handlers must run on the loop's thread: block the signals here so
        // that every thread started from now on (the digest thread) inherits the block; the
        // loop unblocks them on this thread once the handlers are in place.
        var signals = FUSESession.stopSignals
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        try target.restoreSavedNVM(for: "mount")
        let fileSystem: EmbeddedFileSystem
        do {
            fileSystem = try FileSystem.open(volume: volume, credentials: Credentials(uid: 0, gid: 0, umask: 0))
            // From here the NVM is newer than any copy saved at an earlier unmount.
            try SavedNVM.markMounted(volume: volume)
        } catch {
            if case .inUse = error {
                throw Output.fail("mount", "\(error) — is it mounted already? (see `mount -t fuse.shale`)")
            }
            throw Output.fail("mount", error.description)
        }
        for region in fileSystem.kernel.recovered {
            Output.error("shale mount: recovered log \(region.region) (pid \(region.ownerPID)): \(region.applied) records applied"
                + (region.refused.isEmpty ? "" : ", \(region.refused.count) refused"))
        }

        let session: FUSESession
        do {
            session = try FUSESession(server: FUSEServer(fileSystem: fileSystem, timeouts: timeouts), mountPoint: prepared.path,
                                      options: fuseOptions,
                                      debug: debug)
            try session.mount()
        } catch {
            try? fileSystem.close()
            saveNVM(volume, verbose: true)
            throw Output.fail("mount", error.description)
        }
        if let readiness {
            readiness.ready()
        } else {
            Output.error("shale mount: \(volume) mounted on \(prepared.path); unmount with fusermount3 -u \(prepared.path)")
        }

        let status = session.run(handleSignals: true)
        session.destroy()
        do {
            try fileSystem.close()
        } catch {
            throw Output.fail("mount", "closing \(volume) after unmounting: \(error)")
        }
        if stayInForeground {
            Output.error("shale mount: \(prepared.path) unmounted" + (status > 0 ? " (signal \(status))" : "")
                + "; \(volume) digested and closed")
        }
        saveNVM(volume, verbose: stayInForeground)
    }

    /// After a clean close: an NVM region emulated in RAM is saved beside the manifest, so a
    /// reboot does not lose it (SavedNVM; the next command to open the volume restores it).
    private func saveNVM(_ volume: String, verbose: Bool) {
        do {
            if let report = try SavedNVM.save(volume: volume), verbose {
                Output.error("shale mount: saved the emulated NVM (\(ByteSize.format(report.nvmBytes)), "
                    + "\(ByteSize.format(report.dataBytes)) of it not zero) to \(report.savedPath)")
            }
        } catch {
            // The volume is closed and consistent; only the copy for after a reboot is missing.
            Output.error("shale mount: could not save the emulated NVM for after a reboot: \(error)")
        }
    }

    private func absolute(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Shale's own mount options (the rest go to libfuse).
    static let shaleOptionKeys: Set<String> = ["attr_timeout", "entry_timeout"]

    struct OptionError: Error, CustomStringConvertible {
        let description: String
    }

    /// Shale's own `-o` options, and the others (comma lists kept whole) for libfuse.
    static func splitOptions(_ lists: [String]) -> (shale: [(key: String, value: String)], passed: [String]) {
        var shale: [(key: String, value: String)] = []
        var passed: [String] = []
        for list in lists {
            var rest: [String] = []
            for option in list.split(separator: ",", omittingEmptySubsequences: true).map(String.init) {
                let parts = option.split(separator: "=", maxSplits: 1).map(String.init)
                if shaleOptionKeys.contains(parts[0]) {
                    shale.append((parts[0], parts.count > 1 ? parts[1] : ""))
                } else {
                    rest.append(option)
                }
            }
            if !rest.isEmpty { passed.append(rest.joined(separator: ",")) }
        }
        return (shale, passed)
    }

    /// attr_timeout=SECONDS and entry_timeout=SECONDS (default 0: docs/architecture.md says why).
    static func timeouts(_ options: [(key: String, value: String)]) throws(OptionError) -> FUSETimeouts {
        var timeouts = FUSETimeouts.none
        for (key, value) in options {
            guard let seconds = Double(value), seconds >= 0, seconds <= 3600 else {
                throw OptionError(description: "-o \(key)=\(value): give seconds, from 0 to 3600")
            }
            if key == "attr_timeout" { timeouts.attributes = seconds } else { timeouts.entries = seconds }
        }
        return timeouts
    }

    /// A value inside a FUSE option list: commas and backslashes escaped.
    static func escape(_ value: String) -> String {
        var result = ""
        for character in value {
            if character == "," || character == "\\" { result.append("\\") }
            result.append(character)
        }
        return result
    }

    /// Forks the daemon. The parent waits on a pipe and exits: 0 once the child reports the
    /// mount ready, 1 if the child ends first (it printed why). The child continues, in a
    /// new session, and gets a `Readiness` to report with.
    private func daemonize() throws -> Readiness {
        var pipeEnds: [Int32] = [0, 0]
        guard pipe(&pipeEnds) == 0 else { throw Output.fail("mount", "pipe: \(String(cString: strerror(errno)))") }
        let child = fork()
        guard child >= 0 else { throw Output.fail("mount", "fork: \(String(cString: strerror(errno)))") }
        if child > 0 {
            close(pipeEnds[1])
            var byte: UInt8 = 0
            let count = read(pipeEnds[0], &byte, 1)
            if count == 1 { Glibc.exit(0) }
            var status: Int32 = 0
            waitpid(child, &status, 0)
            Glibc.exit(1)
        }
        close(pipeEnds[0])
        setsid()
        Self.closeInheritedDescriptors(keeping: pipeEnds[1])
        return Readiness(fd: pipeEnds[1])
    }

    /// A daemon keeps no descriptor of whoever started it (beyond the standard streams until
    /// it is ready): an inherited pipe would keep its reader waiting for the daemon's end.
    private static func closeInheritedDescriptors(keeping kept: Int32) {
        guard let directory = opendir("/proc/self/fd") else { return }
        var open: [Int32] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if let fd = Int32(name) { open.append(fd) }
        }
        let listing = dirfd(directory)
        closedir(directory)
        for fd in open where fd > 2 && fd != kept && fd != listing { close(fd) }
    }
}

/// The daemon's end of the pipe its parent waits on.
struct Readiness {
    let fd: Int32

    /// The mount is ready: the parent may return. The daemon's standard streams go to
    /// /dev/null from here on (nothing holds the terminal).
    func ready() {
        var byte: UInt8 = 1
        _ = write(fd, &byte, 1)
        close(fd)
        let null = open("/dev/null", O_RDWR)
        if null >= 0 {
            for stream: Int32 in [0, 1, 2] { dup2(null, stream) }
            if null > 2 { close(null) }
        }
        _ = chdir("/")
    }
}
