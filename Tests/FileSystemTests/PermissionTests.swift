// Permission checks as an unprivileged caller. The differential tests run as root, where the
// kernel skips these checks, so here the expected errno is Linux's, written down.

import Testing
import KernFS
import LibFS
import ShaleFormat
import ShaleMedia
import SystemPackage

private let root = Credentials(uid: 0, gid: 0, umask: 0o022)
private let alice = Credentials(uid: 1000, gid: 1000, umask: 0o022)
private let bob = Credentials(uid: 1001, gid: 1001, umask: 0o022)

/// A file system set up by root, then handed to `user`.
private func fileSystem(as user: Credentials, setup: (SimulatedFileSystem) throws -> Void) throws -> SimulatedFileSystem {
    let fs = try simulatedFileSystem(credentials: root)
    try setup(fs)
    fs.credentials = user
    return fs
}

/// The checks must hold before and after the setup is digested.
private func bothWays(_ body: (Bool) throws -> Void) throws {
    try body(false)
    try body(true)
}

struct PermissionTests {
    /// Linux drops set-uid, and set-gid on group-executable files, when an unprivileged
    /// caller writes or truncates a file; root keeps them. (FUSE leaves this to Shale.)
    @Test func anUnprivilegedWriteOrTruncateDropsSetIDBitsAndRootsDoesNot() throws {
        try bothWays { digested in
            let fs = try fileSystem(as: alice) { fs in
                for name in ["w", "t", "ft", "g", "r"] {
                    try fs.writeFile(Path("/" + name), [1, 2, 3], mode: 0o6777)
                    try fs.chmod(Path("/" + name), mode: name == "g" ? 0o6766 : 0o6777)
                }
                if digested { try fs.digest() }
            }
            let handle = try fs.open("/w", .writeOnly)
            _ = try fs.pwrite(handle, [9], at: 1)
            try fs.close(handle)
            #expect(try fs.stat("/w").mode & 0o7777 == 0o777, "write: set-uid and set-gid (group-executable) dropped")
            try fs.truncate("/t", size: 1)
            #expect(try fs.stat("/t").mode & 0o7777 == 0o777, "truncate")
            let truncating = try fs.open("/ft", .readWrite)
            try fs.ftruncate(truncating, size: 10)
            try fs.close(truncating)
            #expect(try fs.stat("/ft").mode & 0o7777 == 0o777, "ftruncate")
            // Set-gid without group execute is mandatory locking's mark, not a privilege: kept.
            let other = try fs.open("/g", .writeOnly)
            _ = try fs.pwrite(other, [9], at: 0)
            try fs.close(other)
            #expect(try fs.stat("/g").mode & 0o7777 == 0o2766)
            fs.credentials = root
            try fs.writeFile("/r", [5])
            #expect(try fs.stat("/r").mode & 0o7777 == 0o6777, "root keeps them")
            #expect(try fs.readFile("/w") == [1, 9, 3])
        }
    }

    /// FUSE's kernel drops set-id bits before an unprivileged write as a SETATTR of the mode
    /// sent as the writer: accepted from a caller who may write the file when it only clears
    /// set-uid/set-gid; any other mode change by a non-owner is still EPERM.
    @Test func aNonOwnerWhoMayWriteMayOnlyDropSetIDBitsThroughSetattr() throws {
        let fs = try fileSystem(as: alice) { fs in
            try fs.writeFile("/writable", [1], mode: 0o6777)
            try fs.chmod("/writable", mode: 0o6777)
            try fs.writeFile("/readonly", [1], mode: 0o6755)
            try fs.chmod("/readonly", mode: 0o6755)
        }
        let writable = try fs.stat("/writable").inode, readonly = try fs.stat("/readonly").inode
        #expect(errnoOf { _ = try fs.setattr(inode: writable, AttributeChanges(mode: 0o6775)) } == .notPermitted)
        #expect(errnoOf { _ = try fs.setattr(inode: readonly, AttributeChanges(mode: 0o0755)) } == .notPermitted)
        #expect(try fs.setattr(inode: writable, AttributeChanges(mode: 0o2777)).mode & 0o7777 == 0o2777)
        #expect(try fs.setattr(inode: writable, AttributeChanges(mode: 0o0777)).mode & 0o7777 == 0o0777)
        #expect(errnoOf { _ = try fs.setattr(inode: writable, AttributeChanges(mode: 0o4777)) } == .notPermitted, "adding is not dropping")
    }

    @Test func writingA0444FileFailsWithEACCESEvenForItsOwner() throws {
        try bothWays { digested in
            let fs = try fileSystem(as: alice) { fs in
                try fs.writeFile("/f", [1, 2, 3], mode: 0o444)
                try fs.chown("/f", uid: alice.uid, gid: alice.gid)
                if digested { try fs.digest() }
            }
            #expect(errnoOf { _ = try fs.open("/f", .writeOnly) } == .permissionDenied)
            #expect(errnoOf { _ = try fs.open("/f", .readWrite) } == .permissionDenied)
            #expect(errnoOf { _ = try fs.open("/f", [.writeOnly, .truncate]) } == .permissionDenied)
            #expect(errnoOf { try fs.truncate("/f", size: 0) } == .permissionDenied)
            #expect(errnoOf { try fs.access("/f", 2) } == .permissionDenied)
            #expect(try fs.readFile("/f") == [1, 2, 3])
            // Its owner may make it writable again, and then write.
            try fs.chmod("/f", mode: 0o644)
            try fs.writeFile("/f", [9])
            #expect(try fs.readFile("/f") == [9])
            // Root writes regardless of the mode.
            try fs.chmod("/f", mode: 0o444)
            fs.credentials = root
            try fs.writeFile("/f", [7])
            #expect(try fs.readFile("/f") == [7])
        }
    }

    @Test func readingA0200FileFailsWithEACCES() throws {
        let fs = try fileSystem(as: alice) { fs in
            try fs.writeFile("/f", [1], mode: 0o200)
            try fs.chown("/f", uid: alice.uid, gid: alice.gid)
        }
        #expect(errnoOf { _ = try fs.open("/f") } == .permissionDenied)
        let handle = try fs.open("/f", .writeOnly)
        try fs.close(handle)
    }

    @Test func creatingInA0555DirectoryFailsWithEACCES() throws {
        try bothWays { digested in
            let fs = try fileSystem(as: alice) { fs in
                try fs.mkdir("/d", mode: 0o755)
                try fs.writeFile("/d/old", [1])
                try fs.mkdir("/d/sub")
                try fs.chown("/d", uid: alice.uid, gid: alice.gid)
                try fs.chown("/d/old", uid: alice.uid, gid: alice.gid)
                try fs.chmod("/d", mode: 0o555)
                if digested { try fs.digest() }
            }
            #expect(errnoOf { _ = try fs.open("/d/new", [.create, .writeOnly], mode: 0o644) } == .permissionDenied)
            #expect(errnoOf { try fs.mkdir("/d/newdir") } == .permissionDenied)
            #expect(errnoOf { try fs.symlink("x", at: "/d/link") } == .permissionDenied)
            #expect(errnoOf { try fs.link("/d/old", "/d/second") } == .permissionDenied)
            #expect(errnoOf { try fs.unlink("/d/old") } == .permissionDenied)
            #expect(errnoOf { try fs.rmdir("/d/sub") } == .permissionDenied)
            #expect(errnoOf { try fs.rename("/d/old", "/d/renamed") } == .permissionDenied)
            // The file itself stays writable (its own mode says so).
            try fs.writeFile("/d/old", [2])
            #expect(try fs.listDirectory("/d").map(\.nameString).sorted() == ["old", "sub"])
            fs.credentials = root
            try fs.writeFile("/d/new", [3])
        }
    }

    @Test func searchPermissionIsNeededOnEveryDirectoryOfAPath() throws {
        let fs = try fileSystem(as: alice) { fs in
            try fs.mkdir("/private", mode: 0o700)
            try fs.writeFile("/private/f", [1], mode: 0o666)
            try fs.mkdir("/listable", mode: 0o744)
            try fs.writeFile("/listable/f", [1], mode: 0o666)
        }
        #expect(errnoOf { _ = try fs.stat("/private/f") } == .permissionDenied)
        #expect(errnoOf { _ = try fs.open("/private/f") } == .permissionDenied)
        #expect(errnoOf { _ = try fs.stat("/listable/f") } == .permissionDenied)
        #expect(try fs.listDirectory("/listable").map(\.nameString) == ["f"])
        #expect(errnoOf { _ = try fs.listDirectory("/private") } == .permissionDenied)
    }

    @Test func aStickyDirectoryLetsOnlyTheOwnersRemoveAName() throws {
        try bothWays { digested in
            let fs = try fileSystem(as: alice) { fs in
                try fs.mkdir("/tmp", mode: 0o777)
                try fs.chmod("/tmp", mode: 0o1777)
                if digested { try fs.digest() }
            }
            try fs.writeFile("/tmp/alices", [1])
            fs.credentials = bob
            try fs.writeFile("/tmp/bobs", [2])
            try fs.mkdir("/tmp/bobsdir")
            fs.credentials = alice
            #expect(errnoOf { try fs.unlink("/tmp/bobs") } == .notPermitted)
            #expect(errnoOf { try fs.rmdir("/tmp/bobsdir") } == .notPermitted)
            #expect(errnoOf { try fs.rename("/tmp/bobs", "/tmp/mine") } == .notPermitted)
            #expect(errnoOf { try fs.rename("/tmp/alices", "/tmp/bobs") } == .notPermitted)
            if digested { try fs.digest() }
            try fs.rename("/tmp/alices", "/tmp/still-alices")
            try fs.unlink("/tmp/still-alices")
            // The directory's owner (root here) may remove anything in it.
            fs.credentials = root
            try fs.unlink("/tmp/bobs")
            try fs.rmdir("/tmp/bobsdir")
            #expect(try fs.listDirectory("/tmp").isEmpty)
        }
    }

    @Test func chownByANonRootUserFailsWithEPERM() throws {
        let fs = try fileSystem(as: Credentials(uid: 1000, gid: 1000, groups: [2000])) { fs in
            try fs.writeFile("/f", [1])
            try fs.chown("/f", uid: 1000, gid: 1000)
            try fs.writeFile("/other", [1])
        }
        #expect(errnoOf { try fs.chown("/f", uid: 1001, gid: UInt32.max) } == .notPermitted)
        #expect(errnoOf { try fs.chown("/f", uid: UInt32.max, gid: 3000) } == .notPermitted)
        #expect(errnoOf { try fs.chown("/other", uid: UInt32.max, gid: 1000) } == .notPermitted)
        // The owner may give the file to a group of its own, and "change" to the same owner.
        try fs.chown("/f", uid: UInt32.max, gid: 2000)
        try fs.chown("/f", uid: 1000, gid: UInt32.max)
        #expect(try fs.stat("/f").gid == 2000)
        #expect(try fs.stat("/f").uid == 1000)
    }

    @Test func chmodByANonOwnerFailsWithEPERM() throws {
        let fs = try fileSystem(as: alice) { fs in
            try fs.writeFile("/f", [1])
            try fs.chmod("/f", mode: 0o666)
        }
        #expect(errnoOf { try fs.chmod("/f", mode: 0o777) } == .notPermitted)
        #expect(try fs.stat("/f").permissions == 0o666)
    }

    @Test func chmodByAnOwnerOutsideTheGroupDropsSetGID() throws {
        let fs = try fileSystem(as: alice) { fs in
            try fs.writeFile("/f", [1])
            try fs.chown("/f", uid: alice.uid, gid: 5000)
        }
        try fs.chmod("/f", mode: 0o2755)
        #expect(try fs.stat("/f").permissions == 0o755)
    }

    @Test func utimensWithExplicitTimesByANonOwnerFailsWithEPERM() throws {
        let fs = try fileSystem(as: alice) { fs in
            try fs.writeFile("/writable", [1])
            try fs.chmod("/writable", mode: 0o666)
            try fs.writeFile("/readonly", [1], mode: 0o644)
        }
        let time = Timestamp(seconds: 1_000_000)
        #expect(errnoOf { try fs.utimens("/writable", access: .set(time), modification: .set(time)) } == .notPermitted)
        #expect(errnoOf { try fs.utimens("/writable", access: .omit, modification: .set(time)) } == .notPermitted)
        // "Now" needs only write permission; without it, EACCES.
        try fs.utimens("/writable", access: .now, modification: .now)
        #expect(errnoOf { try fs.utimens("/readonly", access: .now, modification: .now) } == .permissionDenied)
        #expect(try fs.stat("/writable").mtime != time)
    }

    @Test func movingADirectoryToAnotherParentNeedsWritePermissionOnIt() throws {
        let fs = try fileSystem(as: alice) { fs in
            try fs.mkdir("/a")
            try fs.mkdir("/b")
            try fs.chmod("/a", mode: 0o777)
            try fs.chmod("/b", mode: 0o777)
            try fs.mkdir("/a/d", mode: 0o555)
            try fs.chown("/a/d", uid: alice.uid, gid: alice.gid)
        }
        // Its ".." changes: Linux asks for write permission on the directory itself.
        #expect(errnoOf { try fs.rename("/a/d", "/b/d") } == .permissionDenied)
        // Renaming within the same parent does not touch "..".
        try fs.rename("/a/d", "/a/e")
    }

    @Test func xattrsFollowTheFilesPermissionsAndTrustedNeedsRoot() throws {
        let fs = try fileSystem(as: alice) { fs in
            try fs.writeFile("/f", [1], mode: 0o644)
            try fs.writeFile("/mine", [1], mode: 0o644)
            try fs.chown("/mine", uid: alice.uid, gid: alice.gid)
        }
        #expect(errnoOf { try fs.setxattr("/f", name: "user.x", value: [1]) } == .permissionDenied)
        #expect(errnoOf { try fs.setxattr("/mine", name: "trusted.x", value: [1]) } == .notPermitted)
        try fs.setxattr("/mine", name: "user.x", value: [1])
        #expect(try fs.getxattr("/mine", name: "user.x") == [1])
        fs.credentials = root
        try fs.setxattr("/mine", name: "trusted.t", value: [2])
        fs.credentials = alice
        #expect(try fs.listxattr("/mine") == ["user.x"])
        #expect(errnoOf { _ = try fs.getxattr("/mine", name: "trusted.t") } == Errno(rawValue: 61))
    }

    @Test func aNewFileGetsTheCallersIdsAndUmask() throws {
        let fs = try fileSystem(as: Credentials(uid: 1000, gid: 1000, umask: 0o027)) { fs in
            try fs.mkdir("/shared", mode: 0o777)
            try fs.chmod("/shared", mode: 0o777)
        }
        try fs.writeFile("/shared/f", [1], mode: 0o666)
        try fs.mkdir("/shared/d", mode: 0o777)
        let file = try fs.stat("/shared/f"), directory = try fs.stat("/shared/d")
        #expect(file.uid == 1000 && file.gid == 1000 && file.permissions == 0o640)
        #expect(directory.permissions == 0o750)
        try fs.digest()
        let again = try reopen(fs)
        #expect(try again.stat("/shared/f").permissions == 0o640)
        #expect(try again.stat("/shared/f").uid == 1000)
    }
}
