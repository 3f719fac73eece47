// Small host-file operations the layers above need beside the devices themselves: the
// volume manifest (read, and written atomically and durably), what a path is, free space,
// and the machine's memory. Kept here so that no layer above the media calls the system's
// file API directly.

import Glibc
import SystemPackage

public enum HostFiles {
    public enum Kind: Sendable, Equatable {
        case missing
        case regular(byteCount: UInt64)
        case blockDevice
        /// A character device, such as a device-DAX NVM region (/dev/dax0.0).
        case characterDevice
        case directory
        case other
    }

    public static func kind(of path: String) -> Kind {
        var info = stat()
        guard stat(path, &info) == 0 else { return .missing }
        switch info.st_mode & S_IFMT {
        case S_IFREG: return .regular(byteCount: UInt64(info.st_size))
        case S_IFBLK: return .blockDevice
        case S_IFCHR: return .characterDevice
        case S_IFDIR: return .directory
        default: return .other
        }
    }

    /// Reads a whole small file (at most `limitBytes`).
    public static func read(_ path: String, limitBytes: Int = 1 << 20) throws(MediaError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw MediaError.current("opening \(path)") }
        defer { close(fd) }
        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while contents.count <= limitBytes {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw MediaError.current("reading \(path)")
            }
            if count == 0 { return contents }
            contents += chunk[0 ..< count]
        }
        throw MediaError(.fileTooLarge, "reading \(path)", detail: "larger than \(limitBytes) bytes")
    }

    /// The first `count` bytes of a file or device (fewer if it is shorter).
    public static func readHead(_ path: String, count: Int) throws(MediaError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw MediaError.current("opening \(path)") }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let got = head.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + filled, count - filled, off_t(filled)) }
            if got < 0 {
                if errno == EINTR { continue }
                throw MediaError.current("reading the start of \(path)")
            }
            if got == 0 { break }
            filled += got
        }
        return Array(head[0 ..< filled])
    }

    /// Replaces `path` with `contents` so that a crash leaves the old or the new file whole:
    /// write a temporary file, fsync it, rename it over, fsync the directory.
    public static func writeAtomically(_ path: String, contents: [UInt8]) throws(MediaError) {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw MediaError.current("creating \(temporary)") }
        var written = 0
        while written < contents.count {
            let count = contents.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, $0.count - written) }
            if count < 0 {
                if errno == EINTR { continue }
                let error = MediaError.current("writing \(temporary)")
                close(fd)
                unlink(temporary)
                throw error
            }
            written += count
        }
        guard fsync(fd) == 0 else {
            let error = MediaError.current("syncing \(temporary)")
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let error = MediaError.current("renaming \(temporary) to \(path)")
            unlink(temporary)
            throw error
        }
        let directory = parentDirectory(of: path)
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            defer { close(directoryFD) }
            guard fsync(directoryFD) == 0 else { throw MediaError.current("syncing directory \(directory)") }
        }
    }

    /// Copies the file `source` to `destination`, replacing it so that a crash leaves the old
    /// or the new file whole (a temporary file, fsync, rename, directory fsync). Holes of the
    /// source, and 1 MiB steps holding only zeros, stay holes in the copy. With `reserve`,
    /// the copy's whole size is allocated first (posix_fallocate), so a destination without
    /// room fails here with ENOSPC, not later. `progress` is told bytes done and total.
    /// Returns the bytes of data written.
    @discardableResult
    public static func copyAtomically(_ source: String, to destination: String, reserve: Bool = false,
                                      progress: ((UInt64, UInt64) -> Void)? = nil) throws(MediaError) -> UInt64 {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw MediaError.current("opening \(source)") }
        defer { close(input) }
        var info = stat()
        guard fstat(input, &info) == 0 else { throw MediaError.current("examining \(source)") }
        let total = Int(info.st_size)
        let temporary = destination + ".tmp-\(getpid())"
        let output = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard output >= 0 else { throw MediaError.current("creating \(temporary)") }
        var keep = false
        defer {
            close(output)
            if !keep { unlink(temporary) }
        }
        if reserve, total > 0 {
            let result = posix_fallocate(output, 0, total)
            guard result == 0 else {
                errno = result
                throw MediaError.current("reserving \(total) bytes for \(temporary)")
            }
        } else {
            guard ftruncate(output, total) == 0 else { throw MediaError.current("sizing \(temporary)") }
        }
        let stepBytes = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: stepBytes, alignment: 4096)
        defer { buffer.deallocate() }
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: stepBytes, alignment: 4096)
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        defer { zeros.deallocate() }
        var written: UInt64 = 0
        var offset = 0
        while offset < total {
            // Skip the source's holes (SEEK_DATA: ENXIO past the last data).
            let data = lseek(input, offset, 3 /* SEEK_DATA, a GNU extension Glibc does not export */)
            if data < 0 {
                guard errno == ENXIO else { throw MediaError.current("seeking data in \(source)") }
                break
            }
            offset = data / stepBytes * stepBytes
            let count = min(stepBytes, total - offset)
            var filled = 0
            while filled < count {
                let got = pread(input, buffer.baseAddress! + filled, count - filled, offset + filled)
                if got < 0 {
                    if errno == EINTR { continue }
                    throw MediaError.current("reading \(source)")
                }
                guard got > 0 else { throw MediaError(.ioError, "reading \(source)", detail: "the file ended early") }
                filled += got
            }
            let allZero = memcmp(buffer.baseAddress!, zeros.baseAddress!, count) == 0
            if !allZero {
                var put = 0
                while put < count {
                    let done = pwrite(output, buffer.baseAddress! + put, count - put, offset + put)
                    if done < 0 {
                        if errno == EINTR { continue }
                        throw MediaError.current("writing \(temporary)")
                    }
                    put += done
                }
                written += UInt64(count)
            }
            offset += count
            progress?(UInt64(offset), UInt64(total))
        }
        guard fsync(output) == 0 else { throw MediaError.current("syncing \(temporary)") }
        try renameDurably(temporary, to: destination)
        keep = true
        return written
    }

    /// Renames `from` over `to` and makes the rename durable (fsync of the directory).
    public static func renameDurably(_ from: String, to: String) throws(MediaError) {
        guard rename(from, to) == 0 else { throw MediaError.current("renaming \(from) to \(to)") }
        let directory = parentDirectory(of: to)
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryFD >= 0 else { throw MediaError.current("opening directory \(directory)") }
        defer { close(directoryFD) }
        guard fsync(directoryFD) == 0 else { throw MediaError.current("syncing directory \(directory)") }
    }

    public static var processID: Int32 { getpid() }

    public static func remove(_ path: String) throws(MediaError) {
        guard unlink(path) == 0 || errno == ENOENT else { throw MediaError.current("removing \(path)") }
    }

    public static func makeDirectory(_ path: String) throws(MediaError) {
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else { throw MediaError.current("creating directory \(path)") }
    }

    /// Bytes available to an unprivileged writer on the file system holding `path`.
    public static func availableBytes(at path: String) -> UInt64? {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return nil }
        return UInt64(info.f_bavail) * UInt64(info.f_frsize)
    }

    public static var physicalMemoryBytes: UInt64 {
        UInt64(max(0, sysconf(Int32(_SC_PHYS_PAGES)))) * UInt64(max(0, sysconf(Int32(_SC_PAGESIZE))))
    }

    /// An absolute form of `path` (relative to the working directory), without resolving links.
    public static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        let cwd = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return cwd == "/" ? "/" + path : cwd + "/" + path
    }

    public static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// When the file at `path` was last modified (seconds since the epoch).
    public static func modificationSeconds(of path: String) -> Int64? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Int64(info.st_mtim.tv_sec)
    }

    /// A time for messages: "2026-12-02 16:40:05 UTC".
    public static func describeTime(_ seconds: Int64) -> String {
        var time = time_t(seconds)
        var parts = tm()
        guard gmtime_r(&time, &parts) != nil else { return "\(seconds)" }
        var buffer = [CChar](repeating: 0, count: 64)
        let count = strftime(&buffer, buffer.count, "%Y-%m-%d %H:%M:%S UTC", &parts)
        return String(decoding: buffer[0 ..< count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static var userID: UInt32 { getuid() }
    public static var groupID: UInt32 { getgid() }
    public static var nowSeconds: Int64 { Int64(time(nil)) }
}
