// libshale: the C face of LibFS (include/shale.h), for programs that link Shale instead of
// going through the mount. Sits on top: it offers POSIX-shaped C functions (-1 and errno)
// and needs KernFS's embedded mode to open a volume in-process, and LibFS's FileSystem for
// every call. Each function converts its arguments, makes one FileSystem call and converts
// the result; nothing here changes what a call does or when it is durable (every mutating
// call is durable when FileSystem returns: its commit point is the log append inside it).
//
// The one volume of the process is kept behind a mutex that guards only the reference: a
// call takes the FileSystem out and runs without holding it, so a call waiting for log
// space never blocks another thread's call (FileSystem has its own lock). A call racing
// shale_detach gets EBADF from the closed FileSystem.

import Glibc
import KernFS
import LibFS
import ShaleFormat
import Synchronization
import SystemPackage

/// The attached volume, and why the last attach failed.
private struct Attachment: ~Copyable {
    var fs: EmbeddedFileSystem?
    /// A C string of its own (strdup), freed when the next attach replaces it, so that the
    /// pointer shale_attach_error returned stays valid until then.
    var error: UnsafeMutablePointer<CChar> = strdup("")!

    mutating func setError(_ text: String) {
        free(error)
        error = strdup(text)!
    }
}

private let attachment = Mutex(Attachment())

/// Sets errno and returns -1 (as `T`).
@inline(__always)
private func fail<T: BinaryInteger>(_ errno: Errno) -> T {
    Glibc.errno = errno.rawValue
    return -1
}

/// Runs `body` on the attached file system: its result, or -1 with errno on failure (ENXIO
/// before shale_attach).
private func call<T: BinaryInteger>(_ body: (EmbeddedFileSystem) throws(Errno) -> T) -> T {
    guard let fs = attachment.withLock({ $0.fs }) else { return fail(.noSuchAddressOrDevice) }
    do throws(Errno) { return try body(fs) } catch { return fail(error) }
}

/// A C path argument as a Path (NULL: EFAULT, as the kernel answers).
private func path(_ pointer: UnsafePointer<CChar>?) throws(Errno) -> Path {
    guard let pointer else { throw .badAddress }
    return Path(bytes: Array(UnsafeRawBufferPointer(start: pointer, count: strlen(pointer))))
}

/// Why an attach failed, as errno.
private func errno(for error: VolumeError) -> Errno {
    switch error {
    case .inUse: .resourceBusy
    case let .media(media): media.errno
    case .notShale, .bothSuperblocksDamaged, .format, .journal, .deviceMismatch, .invalidOption, .wouldOverwrite: .invalidArgument
    case .unsupportedVersion: .protocolError
    case .missingDevice: .noSuchFileOrDirectory
    }
}

@_cdecl("shale_attach")
public func shale_attach(_ volume: UnsafePointer<CChar>?) -> Int32 {
    guard let volume else { return fail(.badAddress) }
    let location = String(cString: volume)
    return attachment.withLock { state -> Int32 in
        guard state.fs == nil else {
            state.setError("a volume is attached already: shale_detach it first")
            return fail(.alreadyInProcess)
        }
        do throws(VolumeError) {
            state.fs = try EmbeddedFileSystem.open(volume: location)
            state.setError("")
            return 0
        } catch {
            state.setError("\(location): \(error)")
            return fail(errno(for: error))
        }
    }
}

@_cdecl("shale_detach")
public func shale_detach() -> Int32 {
    guard let fs = attachment.withLock({ state -> EmbeddedFileSystem? in
        defer { state.fs = nil }
        return state.fs
    }) else { return fail(.noSuchAddressOrDevice) }
    do throws(Errno) { try fs.close() } catch { return fail(error) }
    return 0
}

@_cdecl("shale_attach_error")
public func shale_attach_error() -> UnsafePointer<CChar> {
    attachment.withLock { state in UnsafePointer(state.error) }
}

// MARK: - Descriptors

@_cdecl("shale_open")
public func shale_open(_ name: UnsafePointer<CChar>?, _ flags: Int32, _ mode: mode_t) -> Int32 {
    call { fs throws(Errno) in
        let known: Int32 = O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC | O_APPEND | O_DIRECTORY | O_NOFOLLOW
        guard flags & ~known == 0, flags & O_ACCMODE != O_ACCMODE else { throw .invalidArgument }
        let handle = try fs.open(try path(name), OpenFlags(rawValue: flags), mode: UInt32(mode) & 0o7777)
        return handle.number
    }
}

@_cdecl("shale_close")
public func shale_close(_ fd: Int32) -> Int32 {
    call { fs throws(Errno) in try fs.close(FileHandle(number: fd)); return 0 }
}

@_cdecl("shale_read")
public func shale_read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
    call { fs throws(Errno) in
        guard count >= 0 else { throw .invalidArgument }
        guard count > 0 else { return 0 }
        guard let buffer else { throw .badAddress }
        return try fs.read(FileHandle(number: fd), into: UnsafeMutableRawBufferPointer(start: buffer, count: count))
    }
}

/// Writes all of `count` bytes as one or more calls of `piece` (FileSystem writes at most
/// one log record's worth a call; a C program, like one on Linux's regular files, expects
/// the whole write): what was written, or the error when nothing was. Each piece is durable
/// when it returns, so a crash in a long write keeps a prefix of it, as with the mount,
/// where the kernel cuts a long write into requests.
private func writeAll(_ count: Int, _ buffer: UnsafeRawPointer?,
                      _ piece: (UnsafeRawBufferPointer, _ done: Int) throws(Errno) -> Int) throws(Errno) -> Int {
    guard count >= 0 else { throw .invalidArgument }
    guard count > 0 else { return 0 }
    guard let buffer else { throw .badAddress }
    var done = 0
    while done < count {
        do throws(Errno) {
            let wrote = try piece(UnsafeRawBufferPointer(start: buffer + done, count: count - done), done)
            guard wrote > 0 else { break }
            done += wrote
        } catch {
            if done == 0 { throw error }
            break
        }
    }
    return done
}

@_cdecl("shale_write")
public func shale_write(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int) -> Int {
    call { fs throws(Errno) in
        try writeAll(count, buffer) { bytes, _ throws(Errno) in try fs.write(FileHandle(number: fd), bytes) }
    }
}

@_cdecl("shale_pread")
public func shale_pread(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int, _ offset: off_t) -> Int {
    call { fs throws(Errno) in
        guard count >= 0, offset >= 0 else { throw .invalidArgument }
        guard count > 0 else { return 0 }
        guard let buffer else { throw .badAddress }
        return try fs.pread(FileHandle(number: fd), into: UnsafeMutableRawBufferPointer(start: buffer, count: count), at: UInt64(offset))
    }
}

@_cdecl("shale_pwrite")
public func shale_pwrite(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int, _ offset: off_t) -> Int {
    call { fs throws(Errno) in
        guard offset >= 0 else { throw .invalidArgument }
        return try writeAll(count, buffer) { bytes, done throws(Errno) in
            try fs.pwrite(FileHandle(number: fd), bytes, at: UInt64(offset) + UInt64(done))
        }
    }
}

/// SEEK_DATA and SEEK_HOLE (Linux's values; Glibc's module leaves them out).
private let seekData: Int32 = 3, seekHole: Int32 = 4

@_cdecl("shale_lseek")
public func shale_lseek(_ fd: Int32, _ offset: off_t, _ whence: Int32) -> off_t {
    call { fs throws(Errno) in
        let origin: SeekOrigin = switch whence {
        case SEEK_SET: .start
        case SEEK_CUR: .current
        case SEEK_END: .end
        case seekData: .data
        case seekHole: .hole
        default: throw .invalidArgument
        }
        return off_t(try fs.lseek(FileHandle(number: fd), offset: Int64(offset), from: origin))
    }
}

@_cdecl("shale_fsync")
public func shale_fsync(_ fd: Int32) -> Int32 {
    call { fs throws(Errno) in try fs.fsync(FileHandle(number: fd)); return 0 }
}

@_cdecl("shale_ftruncate")
public func shale_ftruncate(_ fd: Int32, _ length: off_t) -> Int32 {
    call { fs throws(Errno) in
        guard length >= 0 else { throw .invalidArgument }
        try fs.ftruncate(FileHandle(number: fd), size: UInt64(length))
        return 0
    }
}

// MARK: - Status

/// A FileStatus into the caller's struct stat.
private func fill(_ status: UnsafeMutablePointer<stat>?, _ file: FileStatus) throws(Errno) {
    guard let status else { throw .badAddress }
    status.pointee = file.cStat
}

@_cdecl("shale_fstat")
public func shale_fstat(_ fd: Int32, _ status: UnsafeMutablePointer<stat>?) -> Int32 {
    call { fs throws(Errno) in try fill(status, try fs.fstat(FileHandle(number: fd))); return 0 }
}

@_cdecl("shale_stat")
public func shale_stat(_ name: UnsafePointer<CChar>?, _ status: UnsafeMutablePointer<stat>?) -> Int32 {
    call { fs throws(Errno) in try fill(status, try fs.stat(try path(name))); return 0 }
}

@_cdecl("shale_lstat")
public func shale_lstat(_ name: UnsafePointer<CChar>?, _ status: UnsafeMutablePointer<stat>?) -> Int32 {
    call { fs throws(Errno) in try fill(status, try fs.lstat(try path(name))); return 0 }
}

// MARK: - Names

@_cdecl("shale_truncate")
public func shale_truncate(_ name: UnsafePointer<CChar>?, _ length: off_t) -> Int32 {
    call { fs throws(Errno) in
        guard length >= 0 else { throw .invalidArgument }
        try fs.truncate(try path(name), size: UInt64(length))
        return 0
    }
}

@_cdecl("shale_mkdir")
public func shale_mkdir(_ name: UnsafePointer<CChar>?, _ mode: mode_t) -> Int32 {
    call { fs throws(Errno) in try fs.mkdir(try path(name), mode: UInt32(mode) & 0o7777); return 0 }
}

@_cdecl("shale_rmdir")
public func shale_rmdir(_ name: UnsafePointer<CChar>?) -> Int32 {
    call { fs throws(Errno) in try fs.rmdir(try path(name)); return 0 }
}

@_cdecl("shale_unlink")
public func shale_unlink(_ name: UnsafePointer<CChar>?) -> Int32 {
    call { fs throws(Errno) in try fs.unlink(try path(name)); return 0 }
}

@_cdecl("shale_rename")
public func shale_rename(_ from: UnsafePointer<CChar>?, _ to: UnsafePointer<CChar>?) -> Int32 {
    call { fs throws(Errno) in try fs.rename(try path(from), try path(to)); return 0 }
}

@_cdecl("shale_link")
public func shale_link(_ existing: UnsafePointer<CChar>?, _ new: UnsafePointer<CChar>?) -> Int32 {
    call { fs throws(Errno) in try fs.link(try path(existing), try path(new)); return 0 }
}

@_cdecl("shale_symlink")
public func shale_symlink(_ target: UnsafePointer<CChar>?, _ name: UnsafePointer<CChar>?) -> Int32 {
    call { fs throws(Errno) in try fs.symlink(try path(target), at: try path(name)); return 0 }
}

@_cdecl("shale_readlink")
public func shale_readlink(_ name: UnsafePointer<CChar>?, _ buffer: UnsafeMutablePointer<CChar>?, _ size: Int) -> Int {
    call { fs throws(Errno) in
        guard size > 0 else { throw .invalidArgument }
        guard let buffer else { throw .badAddress }
        let target = try fs.readlink(try path(name))
        let count = min(target.count, size)
        target.withUnsafeBytes { UnsafeMutableRawPointer(buffer).copyMemory(from: $0.baseAddress!, byteCount: count) }
        return count
    }
}

@_cdecl("shale_chmod")
public func shale_chmod(_ name: UnsafePointer<CChar>?, _ mode: mode_t) -> Int32 {
    call { fs throws(Errno) in try fs.chmod(try path(name), mode: UInt32(mode) & 0o7777); return 0 }
}

@_cdecl("shale_chown")
public func shale_chown(_ name: UnsafePointer<CChar>?, _ uid: uid_t, _ gid: gid_t) -> Int32 {
    call { fs throws(Errno) in try fs.chown(try path(name), uid: uid, gid: gid); return 0 }
}

@_cdecl("shale_lchown")
public func shale_lchown(_ name: UnsafePointer<CChar>?, _ uid: uid_t, _ gid: gid_t) -> Int32 {
    call { fs throws(Errno) in try fs.chown(try path(name), uid: uid, gid: gid, followSymlinks: false); return 0 }
}

@_cdecl("shale_fchmod")
public func shale_fchmod(_ fd: Int32, _ mode: mode_t) -> Int32 {
    call { fs throws(Errno) in try fs.fchmod(FileHandle(number: fd), mode: UInt32(mode) & 0o7777); return 0 }
}

@_cdecl("shale_fchown")
public func shale_fchown(_ fd: Int32, _ uid: uid_t, _ gid: gid_t) -> Int32 {
    call { fs throws(Errno) in try fs.fchown(FileHandle(number: fd), uid: uid, gid: gid); return 0 }
}

@_cdecl("shale_access")
public func shale_access(_ name: UnsafePointer<CChar>?, _ mode: Int32) -> Int32 {
    call { fs throws(Errno) in
        // F_OK (0) or any of R_OK, W_OK, X_OK; other bits are EINVAL, as access(2) answers.
        guard mode & ~7 == 0 else { throw .invalidArgument }
        try fs.access(try path(name), UInt32(mode))
        return 0
    }
}

/// utimensat(2)'s `times`: NULL sets both to now; UTIME_NOW and UTIME_OMIT in tv_nsec; any
/// other tv_nsec outside 0...999,999,999 is EINVAL.
private func timeChanges(_ times: UnsafePointer<timespec>?) throws(Errno) -> (access: TimeChange, modification: TimeChange) {
    guard let times else { return (.now, .now) }
    func change(_ time: timespec) throws(Errno) -> TimeChange {
        switch time.tv_nsec {
        case (1 << 30) - 1: return .now       // UTIME_NOW
        case (1 << 30) - 2: return .omit      // UTIME_OMIT
        case 0 ... 999_999_999: return .set(Timestamp(seconds: Int64(time.tv_sec), nanoseconds: UInt32(time.tv_nsec)))
        default: throw .invalidArgument
        }
    }
    return (try change(times[0]), try change(times[1]))
}

@_cdecl("shale_utimens")
public func shale_utimens(_ name: UnsafePointer<CChar>?, _ times: UnsafePointer<timespec>?, _ flags: Int32) -> Int32 {
    call { fs throws(Errno) in
        guard flags & ~AT_SYMLINK_NOFOLLOW == 0 else { throw .invalidArgument }
        let (access, modification) = try timeChanges(times)
        try fs.utimens(try path(name), access: access, modification: modification,
                       followSymlinks: flags & AT_SYMLINK_NOFOLLOW == 0)
        return 0
    }
}

@_cdecl("shale_futimens")
public func shale_futimens(_ fd: Int32, _ times: UnsafePointer<timespec>?) -> Int32 {
    call { fs throws(Errno) in
        let (access, modification) = try timeChanges(times)
        try fs.futimens(FileHandle(number: fd), access: access, modification: modification)
        return 0
    }
}

@_cdecl("shale_statvfs")
public func shale_statvfs(_ name: UnsafePointer<CChar>?, _ result: UnsafeMutablePointer<statvfs>?) -> Int32 {
    call { fs throws(Errno) in
        guard let result else { throw .badAddress }
        _ = try fs.stat(try path(name))  // the path must exist, as statvfs(3) requires
        result.pointee = try fs.statfs().cStatvfs
        return 0
    }
}

@_cdecl("shale_fstatvfs")
public func shale_fstatvfs(_ fd: Int32, _ result: UnsafeMutablePointer<statvfs>?) -> Int32 {
    call { fs throws(Errno) in
        guard let result else { throw .badAddress }
        _ = try fs.fstat(FileHandle(number: fd))  // EBADF for a descriptor that is not open
        result.pointee = try fs.statfs().cStatvfs
        return 0
    }
}

@_cdecl("shale_fallocate")
public func shale_fallocate(_ fd: Int32, _ mode: Int32, _ offset: off_t, _ length: off_t) -> Int32 {
    call { fs throws(Errno) in
        guard offset >= 0, length > 0 else { throw .invalidArgument }
        try fs.fallocate(FileHandle(number: fd), mode: FallocateMode(rawValue: UInt32(bitPattern: mode)),
                         offset: UInt64(offset), length: UInt64(length))
        return 0
    }
}

// MARK: - Extended attributes

/// A C string argument (NULL: EFAULT).
private func string(_ pointer: UnsafePointer<CChar>?) throws(Errno) -> String {
    guard let pointer else { throw .badAddress }
    return String(cString: pointer)
}

/// Copies `bytes` out as getxattr(2) and listxattr(2) do: size 0 asks for the length;
/// a buffer too small is ERANGE.
private func copyOut(_ bytes: [UInt8], _ buffer: UnsafeMutableRawPointer?, _ size: Int) throws(Errno) -> Int {
    guard size > 0 else { return bytes.count }
    guard bytes.count <= size else { throw .outOfRange }
    guard let buffer else { throw .badAddress }
    bytes.withUnsafeBytes { if let base = $0.baseAddress { buffer.copyMemory(from: base, byteCount: bytes.count) } }
    return bytes.count
}

@_cdecl("shale_getxattr")
public func shale_getxattr(_ name: UnsafePointer<CChar>?, _ attribute: UnsafePointer<CChar>?,
                           _ value: UnsafeMutableRawPointer?, _ size: Int) -> Int {
    call { fs throws(Errno) in
        try copyOut(try fs.getxattr(try path(name), name: try string(attribute)), value, size)
    }
}

@_cdecl("shale_setxattr")
public func shale_setxattr(_ name: UnsafePointer<CChar>?, _ attribute: UnsafePointer<CChar>?,
                           _ value: UnsafeRawPointer?, _ size: Int, _ flags: Int32) -> Int32 {
    call { fs throws(Errno) in
        guard size >= 0, flags & ~3 == 0 else { throw .invalidArgument }
        guard size == 0 || value != nil else { throw .badAddress }
        let bytes = size == 0 ? [] : Array(UnsafeRawBufferPointer(start: value, count: size))
        try fs.setxattr(try path(name), name: try string(attribute), value: bytes, flags: XattrFlags(rawValue: UInt32(flags)))
        return 0
    }
}

@_cdecl("shale_listxattr")
public func shale_listxattr(_ name: UnsafePointer<CChar>?, _ list: UnsafeMutablePointer<CChar>?, _ size: Int) -> Int {
    call { fs throws(Errno) in
        let names: [UInt8] = try fs.listxattr(try path(name)).flatMap { Array($0.utf8) + [0] }
        return try copyOut(names, list.map { UnsafeMutableRawPointer($0) }, size)
    }
}

@_cdecl("shale_removexattr")
public func shale_removexattr(_ name: UnsafePointer<CChar>?, _ attribute: UnsafePointer<CChar>?) -> Int32 {
    call { fs throws(Errno) in try fs.removexattr(try path(name), name: try string(attribute)); return 0 }
}

// MARK: - Directories

/// An open directory stream: the entries as of shale_opendir (later changes are not seen,
/// which POSIX allows for entries added or removed after opendir), and the dirent
/// shale_readdir returns (overwritten by the next call, as readdir's is).
private final class DirectoryStream {
    let entries: [DirectoryEntryInfo]
    var next = 0
    let entry = UnsafeMutablePointer<dirent>.allocate(capacity: 1)

    init(_ entries: [DirectoryEntryInfo]) { self.entries = entries }
    deinit { entry.deallocate() }
}

@_cdecl("shale_opendir")
public func shale_opendir(_ name: UnsafePointer<CChar>?) -> OpaquePointer? {
    guard let fs = attachment.withLock({ $0.fs }) else { Glibc.errno = Errno.noSuchAddressOrDevice.rawValue; return nil }
    do throws(Errno) {
        let stream = DirectoryStream(try fs.listDirectory(try path(name)))
        return OpaquePointer(Unmanaged.passRetained(stream).toOpaque())
    } catch {
        Glibc.errno = error.rawValue
        return nil
    }
}

@_cdecl("shale_readdir")
public func shale_readdir(_ directory: OpaquePointer?) -> UnsafeMutablePointer<dirent>? {
    guard let directory else { Glibc.errno = Errno.badFileDescriptor.rawValue; return nil }
    let stream = Unmanaged<DirectoryStream>.fromOpaque(UnsafeRawPointer(directory)).takeUnretainedValue()
    // The end: NULL with errno unchanged.
    guard stream.next < stream.entries.count else { return nil }
    let info = stream.entries[stream.next]
    stream.next += 1
    var result = dirent()
    result.d_ino = UInt(info.inode)
    result.d_off = Int(truncatingIfNeeded: info.cookie)
    result.d_reclen = UInt16(MemoryLayout<dirent>.size)
    result.d_type = info.type
    withUnsafeMutableBytes(of: &result.d_name) { name in
        // Names are at most 255 bytes (d_name holds 256 with its NUL).
        let count = min(info.name.count, name.count - 1)
        name.copyBytes(from: info.name[..<count])
        name[count] = 0
    }
    stream.entry.pointee = result
    return stream.entry
}

@_cdecl("shale_closedir")
public func shale_closedir(_ directory: OpaquePointer?) -> Int32 {
    guard let directory else { return fail(.badFileDescriptor) }
    Unmanaged<DirectoryStream>.fromOpaque(UnsafeRawPointer(directory)).release()
    return 0
}
