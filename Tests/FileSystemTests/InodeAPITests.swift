// The inode-level entry points a front end (FUSE) uses: each names its parent by inode number
// and runs the same core as the path-based call, with the caller's credentials per call.

import Testing
import KernFS
import LibFS
import ShaleFormat
import ShaleMedia
import SystemPackage

private let root = Credentials(uid: 0, gid: 0, umask: 0)
private let alice = Credentials(uid: 1000, gid: 1000, umask: 0)
private let bob = Credentials(uid: 1001, gid: 1001, umask: 0)



struct InodeAPITests {
    @Test func aTreeBuiltByInodeIsTheTreePathsSee() throws {
        let fs = try simulatedFileSystem(credentials: root)
        let top = fs.rootInode
        #expect(try fs.getattr(inode: top).isDirectory)
        let dir = try fs.mkdir(in: top, name: bytes("d"), mode: 0o755)
        #expect(dir.isDirectory && dir.permissions == 0o755 && dir.linkCount == 2)
        #expect(try fs.getattr(inode: top).linkCount == 3)
        let (handle, file) = try fs.create(in: dir.inode, name: bytes("f"), [.create, .readWrite], mode: 0o640)
        #expect(file.isRegularFile && file.permissions == 0o640 && file.size == 0)
        #expect(try fs.pwrite(handle, bytes("hello"), at: 0) == 5)
        try fs.close(handle)
        #expect(try fs.readFile("/d/f") == bytes("hello"))
        #expect(try fs.lookup(in: dir.inode, name: bytes("f")) == fs.stat("/d/f"))
        #expect(try fs.lookup(in: dir.inode, name: bytes(".")).inode == dir.inode)
        #expect(try fs.lookup(in: dir.inode, name: bytes("..")).inode == top)
        #expect(try fs.lookup(in: top, name: bytes("..")).inode == top)

        let link = try fs.link(inode: file.inode, in: top, name: bytes("g"))
        #expect(link.inode == file.inode && link.linkCount == 2)
        let symlink = try fs.symlink(bytes("d/f"), in: top, name: bytes("s"))
        #expect(symlink.isSymlink && symlink.size == 3)
        #expect(try fs.readlink(inode: symlink.inode) == bytes("d/f"))
        #expect(try fs.readFile("/s") == bytes("hello"))
        let fifo = try fs.mknod(in: dir.inode, name: bytes("p"), mode: 0o010644)
        #expect(fifo.type == 0o010000)

        try fs.rename(in: dir.inode, name: bytes("f"), to: top, name: bytes("h"))
        #expect(errnoOf { _ = try fs.stat("/d/f") } == .noSuchFileOrDirectory)
        #expect(try fs.stat("/h").inode == file.inode)
        try fs.rename(in: top, name: bytes("h"), to: top, name: bytes("g"), flags: .exchange)
        try fs.unlink(in: top, name: bytes("h"))
        #expect(try fs.getattr(inode: file.inode).linkCount == 1)
        try fs.unlink(in: dir.inode, name: bytes("p"))
        try fs.rmdir(in: top, name: bytes("d"))
        #expect(errnoOf { _ = try fs.getattr(inode: dir.inode) } == .noSuchFileOrDirectory || (try? fs.getattr(inode: dir.inode).linkCount) == 0)
        try fs.digest()
        // Gone for good once digested: a stale number is ENOENT, never another file's inode.
        #expect(errnoOf { _ = try fs.getattr(inode: dir.inode) } == .noSuchFileOrDirectory)
        #expect(errnoOf { _ = try fs.lookup(in: dir.inode, name: bytes("f")) } == .noSuchFileOrDirectory)
        #expect(try fs.listDirectory("/").map(\.nameString).sorted() == ["g", "s"])
        #expect(fs.refusedRecords == 0)
    }

    @Test func theInodeCallsGiveThePathCallsErrnos() throws {
        let fs = try simulatedFileSystem(credentials: root)
        let top = fs.rootInode
        try fs.writeFile("/f", [1])
        try fs.mkdir("/d")
        try fs.writeFile("/d/x", [2])
        let f = try fs.stat("/f").inode
        let d = try fs.stat("/d").inode
        #expect(errnoOf { _ = try fs.lookup(in: top, name: bytes("missing")) } == .noSuchFileOrDirectory)
        #expect(errnoOf { _ = try fs.lookup(in: f, name: bytes("x")) } == .notDirectory)
        #expect(errnoOf { _ = try fs.lookup(in: top, name: [UInt8](repeating: 97, count: 256)) } == .fileNameTooLong)
        #expect(errnoOf { _ = try fs.mkdir(in: top, name: bytes("f")) } == .fileExists)
        #expect(errnoOf { _ = try fs.mkdir(in: f, name: bytes("x")) } == .notDirectory)
        #expect(errnoOf { _ = try fs.link(inode: d, in: top, name: bytes("l")) } == .notPermitted)
        #expect(errnoOf { try fs.unlink(in: top, name: bytes("d")) } == .isDirectory)
        #expect(errnoOf { try fs.rmdir(in: top, name: bytes("f")) } == .notDirectory)
        #expect(errnoOf { try fs.rmdir(in: top, name: bytes("d")) } == .directoryNotEmpty)
        #expect(errnoOf { try fs.rename(in: top, name: bytes("d"), to: d, name: bytes("sub")) } == .invalidArgument)
        #expect(errnoOf { try fs.rename(in: top, name: bytes("f"), to: top, name: bytes("d")) } == .isDirectory)
        #expect(errnoOf { try fs.rename(in: top, name: bytes("f"), to: d, name: bytes("x"), flags: .noReplace) } == .fileExists)
        #expect(errnoOf { _ = try fs.create(in: top, name: bytes("f"), [.create, .exclusive, .writeOnly]) } == .fileExists)
        #expect(errnoOf { _ = try fs.open(inode: d, .writeOnly) } == .isDirectory)
        #expect(errnoOf { _ = try fs.readlink(inode: f) } == .invalidArgument)
        #expect(errnoOf { _ = try fs.getxattr(inode: f, name: bytes("user.none")) } == .noAttribute)
        #expect(errnoOf { _ = try fs.getxattr(inode: f, name: bytes("other.x")) } == .notSupported)
        #expect(errnoOf { _ = try fs.setattr(inode: d, AttributeChanges(size: 0)) } == .isDirectory)
        #expect(errnoOf { _ = try fs.symlink([], in: top, name: bytes("s")) } == .noSuchFileOrDirectory)
        #expect(errnoOf { _ = try fs.getattr(inode: 999_999) } == .noSuchFileOrDirectory)
        #expect(fs.refusedRecords == 0)
    }

    @Test func eachCallIsCheckedWithItsOwnCallersCredentials() throws {
        let fs = try simulatedFileSystem(credentials: root)
        let top = fs.rootInode
        let home = try fs.mkdir(in: top, name: bytes("home"), mode: 0o755)
        _ = try fs.setattr(inode: home.inode, AttributeChanges(uid: alice.uid, gid: alice.gid))
        // Alice creates in her directory; the file is hers.
        let (handle, file) = try fs.create(in: home.inode, name: bytes("notes"), [.create, .writeOnly], mode: 0o600, as: alice)
        try fs.close(handle)
        #expect(file.uid == alice.uid && file.gid == alice.gid)
        // Bob may not create there, nor read her file; root may.
        #expect(errnoOf { _ = try fs.mkdir(in: home.inode, name: bytes("b"), as: bob) } == .permissionDenied)
        #expect(errnoOf { _ = try fs.open(inode: file.inode, .readOnly, as: bob) } == .permissionDenied)
        #expect(errnoOf { try fs.access(inode: file.inode, 4, as: bob) } == .permissionDenied)
        try fs.access(inode: file.inode, 4, as: alice)
        try fs.close(try fs.open(inode: file.inode, .readOnly, as: root))
        // chmod and chown: the owner's and root's rules, per caller.
        #expect(errnoOf { _ = try fs.setattr(inode: file.inode, AttributeChanges(mode: 0o644), as: bob) } == .notPermitted)
        #expect(try fs.setattr(inode: file.inode, AttributeChanges(mode: 0o644), as: alice).permissions == 0o644)
        #expect(errnoOf { _ = try fs.setattr(inode: file.inode, AttributeChanges(uid: bob.uid), as: alice) } == .notPermitted)
        // Times: "now" needs write permission, explicit times ownership.
        #expect(errnoOf { _ = try fs.setattr(inode: file.inode, AttributeChanges(mtime: .now), as: bob) } == .permissionDenied)
        let stamp = Timestamp(seconds: 1_000_000, nanoseconds: 5)
        #expect(try fs.setattr(inode: file.inode, AttributeChanges(atime: .set(stamp), mtime: .set(stamp)), as: alice).mtime == stamp)
        // xattrs: user.* needs write permission.
        #expect(errnoOf { try fs.setxattr(inode: file.inode, name: bytes("user.k"), value: [1], as: bob) } == .permissionDenied)
        try fs.setxattr(inode: file.inode, name: bytes("user.k"), value: [1, 2], as: alice)
        #expect(try fs.getxattr(inode: file.inode, name: bytes("user.k"), as: bob) == [1, 2])
        #expect(try fs.listxattr(inode: file.inode) == [bytes("user.k")])
        try fs.removexattr(inode: file.inode, name: bytes("user.k"), as: alice)
        #expect(try fs.listxattr(inode: file.inode).isEmpty)
        // The process's own credentials are untouched by per-call ones.
        #expect(fs.credentials == root)
        #expect(fs.refusedRecords == 0)
    }

    @Test func setattrTruncatesByHandleOrByName() throws {
        let fs = try simulatedFileSystem(credentials: root)
        let (handle, file) = try fs.create(in: fs.rootInode, name: bytes("f"), [.create, .readWrite], mode: 0o644)
        #expect(try fs.pwrite(handle, [UInt8](repeating: 7, count: 10_000), at: 0) == 10_000)
        #expect(try fs.setattr(inode: file.inode, AttributeChanges(size: 100), handle: handle).size == 100)
        #expect(try fs.setattr(inode: file.inode, AttributeChanges(size: 50)).size == 50)
        // Size and mode together: both applied.
        let both = try fs.setattr(inode: file.inode, AttributeChanges(mode: 0o600, size: 8192))
        #expect(both.size == 8192 && both.permissions == 0o600)
        #expect(try fs.pread(handle, count: 100, at: 0) == [UInt8](repeating: 7, count: 50) + [UInt8](repeating: 0, count: 50))
        // A read-only handle may not truncate; a handle of another inode is refused.
        let reader = try fs.open(inode: file.inode, .readOnly)
        #expect(errnoOf { _ = try fs.setattr(inode: file.inode, AttributeChanges(size: 0), handle: reader) } == .invalidArgument)
        #expect(errnoOf { _ = try fs.setattr(inode: fs.rootInode, AttributeChanges(size: 0), handle: handle) } == .badFileDescriptor)
        // A refused setattr logs nothing, not even the parts that passed.
        let before = try fs.getattr(inode: file.inode)
        #expect(errnoOf { _ = try fs.setattr(inode: file.inode, AttributeChanges(mode: 0o777, size: 0), handle: reader) } == .invalidArgument)
        #expect(try fs.getattr(inode: file.inode) == before)
        try fs.close(reader)
        try fs.close(handle)
        let reopened = try reopen(fs)
        #expect(try reopened.getattr(inode: file.inode).size == 8192)
        #expect(reopened.refusedRecords == 0)
    }
}
