// One method per FUSE low-level operation, and the operations table libfuse calls.
//
// Each method takes the request's arguments as Swift values and returns the `Reply` (or
// throws the errno) that `FUSEServer.answer` sends. The table's entries are non-capturing
// closures (C function pointers) that only unpack arguments and call `answer`.
//
// Not offered (the kernel falls back or answers ENOSYS): ioctl, poll, locks (the kernel
// keeps POSIX and flock locks locally), bmap, retrieve_reply, write_buf.

import CFuse
import KernFS
import LibFS
import ShaleFormat
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

extension FUSEServer {
    // MARK: - Names

    func lookup(_ parent: UInt64, _ name: [UInt8], as caller: Credentials) throws(Errno) -> Reply {
        .entry(try fileSystem.lookup(in: parent, name: name, as: caller))
    }

    func getattr(_ inode: UInt64) throws(Errno) -> Reply {
        .attributes(try fileSystem.getattr(inode: inode))
    }

    func setattr(_ inode: UInt64, _ changes: AttributeChanges, handle: FileHandle?, as caller: Credentials) throws(Errno) -> Reply {
        .attributes(try fileSystem.setattr(inode: inode, changes, handle: handle, as: caller))
    }

    func readlink(_ inode: UInt64) throws(Errno) -> Reply {
        .link(try fileSystem.readlink(inode: inode))
    }

    func mknod(_ parent: UInt64, _ name: [UInt8], mode: UInt32, device: UInt64, as caller: Credentials) throws(Errno) -> Reply {
        .entry(try fileSystem.mknod(in: parent, name: name, mode: mode, device: device, as: caller))
    }

    func mkdir(_ parent: UInt64, _ name: [UInt8], mode: UInt32, as caller: Credentials) throws(Errno) -> Reply {
        .entry(try fileSystem.mkdir(in: parent, name: name, mode: mode, as: caller))
    }

    func unlink(_ parent: UInt64, _ name: [UInt8], as caller: Credentials) throws(Errno) -> Reply {
        try fileSystem.unlink(in: parent, name: name, as: caller)
        return .ok
    }

    func rmdir(_ parent: UInt64, _ name: [UInt8], as caller: Credentials) throws(Errno) -> Reply {
        try fileSystem.rmdir(in: parent, name: name, as: caller)
        return .ok
    }

    func symlink(_ target: [UInt8], _ parent: UInt64, _ name: [UInt8], as caller: Credentials) throws(Errno) -> Reply {
        .entry(try fileSystem.symlink(target, in: parent, name: name, as: caller))
    }

    func rename(_ parent: UInt64, _ name: [UInt8], _ newParent: UInt64, _ newName: [UInt8], flags: UInt32,
                as caller: Credentials) throws(Errno) -> Reply {
        try fileSystem.rename(in: parent, name: name, to: newParent, name: newName, flags: RenameFlags(rawValue: flags), as: caller)
        return .ok
    }

    func link(_ inode: UInt64, _ newParent: UInt64, _ newName: [UInt8], as caller: Credentials) throws(Errno) -> Reply {
        .entry(try fileSystem.link(inode: inode, in: newParent, name: newName, as: caller))
    }

    // MARK: - Files

    func open(_ inode: UInt64, _ info: UnsafeMutablePointer<fuse_file_info>, as caller: Credentials) throws(Errno) -> Reply {
        // execve opens with __FMODE_EXEC (0x20). Without default_permissions the kernel only
        // checks that some execute bit is set: whether this caller may execute is Shale's to say.
        if info.pointee.flags & Self.openForExec != 0 { try fileSystem.access(inode: inode, 1 /* X_OK */, as: caller) }
        return .opened(try fileSystem.open(inode: inode, OpenFlags(rawValue: info.pointee.flags & ~Self.openForExec), as: caller), info)
    }

    /// __FMODE_EXEC, the flag the kernel's open request carries for execve.
    static var openForExec: Int32 { 0x20 }

    func create(_ parent: UInt64, _ name: [UInt8], mode: UInt32, _ info: UnsafeMutablePointer<fuse_file_info>,
                as caller: Credentials) throws(Errno) -> Reply {
        let (handle, status) = try fileSystem.create(in: parent, name: name, OpenFlags(rawValue: info.pointee.flags), mode: mode,
                                                     as: caller)
        return .created(status, handle, info)
    }

    func read(_ handle: FileHandle, size: Int, offset: Int64) throws(Errno) -> Reply {
        guard offset >= 0 else { throw .invalidArgument }
        var bytes = [UInt8](repeating: 0, count: size)
        let result: Result<Int, Errno> = bytes.withUnsafeMutableBytes { buffer in
            do throws(Errno) {
                return .success(try fileSystem.pread(handle, into: buffer, at: UInt64(offset)))
            } catch {
                return .failure(error)
            }
        }
        bytes.removeLast(size - (try result.get()))
        return .bytes(bytes)
    }

    func write(_ handle: FileHandle, _ bytes: UnsafeRawBufferPointer, offset: Int64, as caller: Credentials) throws(Errno) -> Reply {
        guard offset >= 0 else { throw .invalidArgument }
        return .written(try fileSystem.pwrite(handle, bytes, at: UInt64(offset), as: caller))
    }

    /// Every answered write is durable already: flush and fsync only check the handle.
    /// fsync, fdatasync, fsyncdir and the flush at close have nothing to do: every write
    /// was durable when it was answered. The answer is ENOSYS, which the kernel's FUSE client
    /// takes as exactly that: it returns success to the caller, now and for every later
    /// call, without asking again (no_fsync, no_flush, no_fsyncdir), so an application's
    /// fsync costs no round trip. The kernel first writes back any dirty pages of a shared
    /// mapping (WRITE requests, each durable when answered), so fsync keeps its meaning for
    /// mmap too. The handle is still checked, for the one request that is sent.
    func fsync(_ handle: FileHandle) throws(Errno) -> Reply {
        try fileSystem.fsync(handle)
        throw .noFunction
    }

    func release(_ handle: FileHandle) throws(Errno) -> Reply {
        try fileSystem.close(handle)
        return .ok
    }

    func fallocate(_ handle: FileHandle, mode: Int32, offset: Int64, length: Int64) throws(Errno) -> Reply {
        guard offset >= 0, length >= 0 else { throw .invalidArgument }
        try fileSystem.fallocate(handle, mode: FallocateMode(rawValue: UInt32(bitPattern: mode)), offset: UInt64(offset),
                                 length: UInt64(length))
        return .ok
    }

    /// copy_file_range: up to one LibFS record's worth, read and written inside the daemon
    /// (one write record, so the copied range lands whole or not at all); a short count is
    /// fine (the caller loops, as for any copy_file_range).
    func copyFileRange(from source: FileHandle, at sourceOffset: Int64, to target: FileHandle, at targetOffset: Int64,
                       length: Int, flags: Int32, as caller: Credentials) throws(Errno) -> Reply {
        guard flags == 0, sourceOffset >= 0, targetOffset >= 0 else { throw .invalidArgument }
        let count = min(length, fileSystem.writeBytesMax)
        guard count > 0 else { return .written(0) }
        guard case let .bytes(bytes) = try read(source, size: count, offset: sourceOffset) else { throw .ioError }
        guard !bytes.isEmpty else { return .written(0) }
        let result: Result<Int, Errno> = bytes.withUnsafeBytes { buffer in
            do throws(Errno) {
                return .success(try fileSystem.pwrite(target, buffer, at: UInt64(targetOffset), as: caller))
            } catch {
                return .failure(error)
            }
        }
        return .written(try result.get())
    }

    /// Only SEEK_DATA and SEEK_HOLE reach the file system; the kernel does the others.
    func lseek(_ handle: FileHandle, offset: Int64, whence: Int32) throws(Errno) -> Reply {
        let origin: SeekOrigin
        switch whence {
        case 3: origin = .data  // SEEK_DATA (GNU)
        case 4: origin = .hole  // SEEK_HOLE
        default: throw .invalidArgument
        }
        return .offset(try fileSystem.lseek(handle, offset: offset, from: origin))
    }

    // MARK: - Directories

    func opendir(_ inode: UInt64, _ info: UnsafeMutablePointer<fuse_file_info>, as caller: Credentials) throws(Errno) -> Reply {
        .opened(try fileSystem.open(inode: inode, OpenFlags(rawValue: info.pointee.flags).union(.directory), as: caller), info)
    }

    /// Entries after cookie `offset`, as many as fit in `size` bytes; each entry's offset is
    /// its cookie (where the next call resumes).
    func readdir(_ handle: FileHandle, size: Int, offset: Int64, request: fuse_req_t) throws(Errno) -> Reply {
        guard offset >= 0 else { throw .invalidArgument }
        // An entry takes at least 32 bytes (24 of header, the name padded to 8).
        let entries = try fileSystem.readDirectory(handle, after: UInt64(offset), limit: max(1, size / 32))
        var buffer = [UInt8](repeating: 0, count: size)
        var used = 0
        buffer.withUnsafeMutableBytes { raw in
            let base = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
            for entry in entries {
                var attributes = Glibc.stat()
                attributes.st_ino = UInt(entry.inode)
                attributes.st_mode = UInt32(entry.type) << 12
                let needed = (entry.name + [0]).withUnsafeBytes { name in
                    fuse_add_direntry(request, base + used, size - used, name.baseAddress!.assumingMemoryBound(to: CChar.self),
                                      &attributes, off_t(entry.cookie))
                }
                guard needed <= size - used else { break }
                used += needed
            }
        }
        return .bytes(Array(buffer[0 ..< used]))
    }

    /// readdir with each entry's attributes (`ls -l`, `find`): the kernel instantiates the
    /// entries, so each counts one lookup of its inode (counted once the reply is taken), but
    /// "." and ".." (no node id, not counted, as the protocol says). An entry whose inode went
    /// between the listing and its getattr (a concurrent unlink) is left out.
    func readdirplus(_ handle: FileHandle, size: Int, offset: Int64, request: fuse_req_t) throws(Errno) -> Reply {
        guard offset >= 0 else { throw .invalidArgument }
        // An entry takes at least 152 bytes (128 of fuse_entry_out, 24 of header, the name padded to 8).
        let entries = try fileSystem.readDirectory(handle, after: UInt64(offset), limit: max(1, size / 152))
        var buffer = [UInt8](repeating: 0, count: size)
        var used = 0
        var lookups: [UInt64] = []
        buffer.withUnsafeMutableBytes { raw in
            let base = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
            for entry in entries {
                let isDot = entry.name == [0x2E] || entry.name == [0x2E, 0x2E]
                var parameters = fuse_entry_param()
                if isDot {
                    parameters.attr.st_ino = UInt(entry.inode)
                    parameters.attr.st_mode = UInt32(entry.type) << 12
                } else {
                    guard let status = try? fileSystem.getattr(inode: entry.inode) else { continue }
                    parameters = entryParameters(status)
                }
                let needed = (entry.name + [0]).withUnsafeBytes { name in
                    fuse_add_direntry_plus(request, base + used, size - used, name.baseAddress!.assumingMemoryBound(to: CChar.self),
                                           &parameters, off_t(entry.cookie))
                }
                guard needed <= size - used else { break }
                used += needed
                if !isDot { lookups.append(entry.inode) }
            }
        }
        return .directoryPlus(Array(buffer[0 ..< used]), lookups: lookups)
    }

    // MARK: - The file system

    func statfs() throws(Errno) -> Reply {
        .statistics(try fileSystem.statfs())
    }

    func access(_ inode: UInt64, mask: Int32, as caller: Credentials) throws(Errno) -> Reply {
        try fileSystem.access(inode: inode, UInt32(bitPattern: mask), as: caller)
        return .ok
    }

    // MARK: - Extended attributes

    func setxattr(_ inode: UInt64, _ name: [UInt8], _ value: [UInt8], flags: Int32, as caller: Credentials) throws(Errno) -> Reply {
        try fileSystem.setxattr(inode: inode, name: name, value: value, flags: XattrFlags(rawValue: UInt32(bitPattern: flags)),
                                as: caller)
        return .ok
    }

    /// size 0 asks for the value's size; a value larger than `size` is ERANGE.
    func getxattr(_ inode: UInt64, _ name: [UInt8], size: Int, as caller: Credentials) throws(Errno) -> Reply {
        let value = try fileSystem.getxattr(inode: inode, name: name, as: caller)
        if size == 0 { return .attributeSize(value.count) }
        guard value.count <= size else { throw .outOfRange }
        return .bytes(value)
    }

    /// The names, each followed by a NUL; size 0 asks for the list's size.
    func listxattr(_ inode: UInt64, size: Int, as caller: Credentials) throws(Errno) -> Reply {
        let list = try fileSystem.listxattr(inode: inode, as: caller).reduce(into: [UInt8]()) { $0 += $1; $0.append(0) }
        if size == 0 { return .attributeSize(list.count) }
        guard list.count <= size else { throw .outOfRange }
        return .bytes(list)
    }

    func removexattr(_ inode: UInt64, _ name: [UInt8], as caller: Credentials) throws(Errno) -> Reply {
        try fileSystem.removexattr(inode: inode, name: name, as: caller)
        return .ok
    }

    // MARK: - The table

    /// The operations table (libfuse copies it). Each entry unpacks its arguments and answers.
    static func operations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, connection in
            guard let userdata, let connection else { return }
            let server = Unmanaged<FUSEServer>.fromOpaque(userdata).takeUnretainedValue()
            server.initialize(connection)
        }
        ops.destroy = { _ in }
        ops.lookup = { req, parent, name in
            FUSEServer.answer(req) { server, caller throws(Errno) in try server.lookup(parent, try FUSEServer.bytes(name), as: caller) }
        }
        ops.forget = { req, inode, count in
            FUSEServer.answer(req) { server, _ in
                server.forget(inode, count)
                return .none
            }
        }
        ops.forget_multi = { req, count, forgets in
            FUSEServer.answer(req) { server, _ in
                for index in 0 ..< count { server.forget(forgets![index].ino, forgets![index].nlookup) }
                return .none
            }
        }
        ops.getattr = { req, inode, _ in
            FUSEServer.answer(req) { server, _ throws(Errno) in try server.getattr(inode) }
        }
        ops.setattr = { req, inode, attributes, toSet, info in
            FUSEServer.answer(req) { server, caller throws(Errno) in
                guard let attributes else { throw .invalidArgument }
                let handle = toSet & FUSE_SET_ATTR_SIZE != 0 && info != nil ? try FUSEServer.handle(info) : nil
                return try server.setattr(inode, FUSEServer.changes(attributes.pointee, toSet), handle: handle, as: caller)
            }
        }
        ops.readlink = { req, inode in
            FUSEServer.answer(req) { server, _ throws(Errno) in try server.readlink(inode) }
        }
        ops.mknod = { req, parent, name, mode, device in
            FUSEServer.answer(req) { server, caller throws(Errno) in
                try server.mknod(parent, try FUSEServer.bytes(name), mode: mode, device: UInt64(device), as: caller)
            }
        }
        ops.mkdir = { req, parent, name, mode in
            FUSEServer.answer(req) { server, caller throws(Errno) in try server.mkdir(parent, try FUSEServer.bytes(name), mode: mode, as: caller) }
        }
        ops.unlink = { req, parent, name in
            FUSEServer.answer(req) { server, caller throws(Errno) in try server.unlink(parent, try FUSEServer.bytes(name), as: caller) }
        }
        ops.rmdir = { req, parent, name in
            FUSEServer.answer(req) { server, caller throws(Errno) in try server.rmdir(parent, try FUSEServer.bytes(name), as: caller) }
        }
        ops.symlink = { req, target, parent, name in
            FUSEServer.answer(req) { server, caller throws(Errno) in
                try server.symlink(try FUSEServer.bytes(target), parent, try FUSEServer.bytes(name), as: caller)
            }
        }
        ops.rename = { req, parent, name, newParent, newName, flags in
            FUSEServer.answer(req) { server, caller throws(Errno) in
                try server.rename(parent, try FUSEServer.bytes(name), newParent, try FUSEServer.bytes(newName), flags: flags, as: caller)
            }
        }
        ops.link = { req, inode, newParent, newName in
            FUSEServer.answer(req) { server, caller throws(Errno) in try server.link(inode, newParent, try FUSEServer.bytes(newName), as: caller) }
        }
        ops.open = { req, inode, info in
            FUSEServer.answer(req) { server, caller throws(Errno) in
                guard let info else { throw .invalidArgument }
                return try server.open(inode, info, as: caller)
            }
        }
        ops.read = { req, _, size, offset, info in
            FUSEServer.answer(req) { server, _ throws(Errno) in try server.read(try FUSEServer.handle(info), size: size, offset: Int64(offset)) }
        }
        ops.write = { req, _, bytes, size, offset, info in
            FUSEServer.answer(req) { server, caller throws(Errno) in
                try server.write(try FUSEServer.handle(info), UnsafeRawBufferPointer(start: bytes, count: size), offset: Int64(offset),
                                 as: caller)
            }
        }
        ops.flush = { req, _, info in
            FUSEServer.answer(req) { server, _ throws(Errno) in try server.fsync(try FUSEServer.handle(info)) }
        }
        ops.release = { req, _, info in
            FUSEServer.answer(req) { server, _ throws(Errno) in try server.release(try FUSEServer.handle(info)) }
        }
        ops.fsync = { req, _, _, info in
            FUSEServer.answer(req) { server, _ throws(Errno) in try server.fsync(try FUSEServer.handle(info)) }
        }
        ops.opendir = { req, inode, info in
            FUSEServer.answer(req) { server, caller throws(Errno) in
                guard let info else { throw .invalidArgument }
                return try server.opendir(inode, info, as: caller)
            }
        }
        ops.readdir = { req, _, size, offset, info in
            FUSEServer.answer(req) { server, _ throws(Errno) in
                try server.readdir(try FUSEServer.handle(info), size: size, offset: Int64(offset), request: req!)
            }
        }
        ops.readdirplus = { req, _, size, offset, info in
            FUSEServer.answer(req) { server, _ throws(Errno) in
                try server.readdirplus(try FUSEServer.handle(info), size: size, offset: Int64(offset), request: req!)
            }
        }
        ops.releasedir = { req, _, info in
            FUSEServer.answer(req) { server, _ throws(Errno) in try server.release(try FUSEServer.handle(info)) }
        }
        ops.fsyncdir = { req, _, _, info in
            FUSEServer.answer(req) { server, _ throws(Errno) in try server.fsync(try FUSEServer.handle(info)) }
        }
        ops.statfs = { req, _ in
            FUSEServer.answer(req) { server, _ throws(Errno) in try server.statfs() }
        }
        ops.setxattr = { req, inode, name, value, size, flags in
            FUSEServer.answer(req) { server, caller throws(Errno) in
                let bytes = size == 0 ? [] : Array(UnsafeRawBufferPointer(start: value, count: size))
                return try server.setxattr(inode, try FUSEServer.bytes(name), bytes, flags: flags, as: caller)
            }
        }
        ops.getxattr = { req, inode, name, size in
            FUSEServer.answer(req) { server, caller throws(Errno) in try server.getxattr(inode, try FUSEServer.bytes(name), size: size, as: caller) }
        }
        ops.listxattr = { req, inode, size in
            FUSEServer.answer(req) { server, caller throws(Errno) in try server.listxattr(inode, size: size, as: caller) }
        }
        ops.removexattr = { req, inode, name in
            FUSEServer.answer(req) { server, caller throws(Errno) in try server.removexattr(inode, try FUSEServer.bytes(name), as: caller) }
        }
        ops.access = { req, inode, mask in
            FUSEServer.answer(req) { server, caller throws(Errno) in try server.access(inode, mask: mask, as: caller) }
        }
        ops.create = { req, parent, name, mode, info in
            FUSEServer.answer(req) { server, caller throws(Errno) in
                guard let info else { throw .invalidArgument }
                return try server.create(parent, try FUSEServer.bytes(name), mode: mode, info, as: caller)
            }
        }
        ops.fallocate = { req, _, mode, offset, length, info in
            FUSEServer.answer(req) { server, _ throws(Errno) in
                try server.fallocate(try FUSEServer.handle(info), mode: mode, offset: Int64(offset), length: Int64(length))
            }
        }
        ops.copy_file_range = { req, _, sourceOffset, source, _, targetOffset, target, length, flags in
            FUSEServer.answer(req) { server, caller throws(Errno) in
                try server.copyFileRange(from: try FUSEServer.handle(source), at: Int64(sourceOffset), to: try FUSEServer.handle(target),
                                         at: Int64(targetOffset), length: length, flags: flags, as: caller)
            }
        }
        ops.lseek = { req, _, offset, whence, info in
            FUSEServer.answer(req) { server, _ throws(Errno) in try server.lseek(try FUSEServer.handle(info), offset: Int64(offset), whence: whence) }
        }
        return ops
    }

    /// FUSE_INIT: what Shale asks of the kernel. Writeback caching stays off (the kernel would
    /// answer writes before Shale saw them, breaking "answered means durable"); atomic O_TRUNC
    /// (libfuse's default) so that open truncates in one request; writes no larger than one
    /// LibFS record, so the kernel never sees a short write. Set-id bits: the reply also
    /// carries HANDLE_KILLPRIV_V2, which this libfuse cannot say (InitReply.swift), so the
    /// kernel leaves dropping them on write, truncate and chown to LibFS and stops asking for
    /// security.capability before every write. A kernel without it drops them itself, with a
    /// GETATTR and a SETATTR of the mode sent as the writer (`FileSystem.setattr` accepts
    /// that from a caller who may write the file).
    func initialize(_ connection: UnsafeMutablePointer<fuse_conn_info>) {
        connection.pointee.want &= ~UInt32(FUSE_CAP_WRITEBACK_CACHE)
        if connection.pointee.capable & UInt32(FUSE_CAP_ATOMIC_O_TRUNC) != 0 {
            connection.pointee.want |= UInt32(FUSE_CAP_ATOMIC_O_TRUNC)
        }
        connection.pointee.max_write = min(connection.pointee.max_write, UInt32(fileSystem.writeBytesMax))
    }
}
