// Advisory whole-file locks (flock) that keep two shale processes from owning one volume:
// mkfs, mount and the offline commands take an exclusive lock on the NVM region's file (the
// offline commands may repair); one that finds it held reads without repairing. The lock
// lives as long as the FileLock object.

import Glibc
import SystemPackage

public final class FileLock: @unchecked Sendable {
    public let path: String
    private let descriptor: CInt

    /// Takes the lock without waiting; a held lock is EWOULDBLOCK with words saying so.
    public init(path: String, exclusive: Bool) throws(MediaError) {
        self.path = path
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw MediaError.current("opening \(path) to lock it") }
        if flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 {
            let error = MediaError.current("locking \(path)",
                                           detail: "another shale process (a mount, mkfs or fsck) is using this volume")
            close(fd)
            throw error
        }
        descriptor = fd
    }

    deinit { close(descriptor) }
}
