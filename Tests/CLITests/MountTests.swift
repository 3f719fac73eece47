// `shale mount` end to end: the real daemon (the built binary, as a subprocess) serves a real
// volume through /dev/fuse, and this process uses the mount point with ordinary system calls
// and shell tools, unmounts, mounts again, and checks the volume with `shale fsck`.
// The fixture (MountFixture.swift) says how mounts are kept safe.

import CLinux
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Tests

extension MountSuites {
    @Suite struct MountTests {}
}

extension MountSuites.MountTests {
    @Test(.timeLimit(.minutes(5)))
    func ordinaryCallsAndShellToolsWorkThroughTheMountAndSurviveRemounting() throws {
        let fixture = try MountFixture()
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point)
        let large = pattern(3 << 20)

        // Files: create, write, read back, stat.
        try writeFile(point + "/a", bytes("hello"))
        #expect(try readFile(point + "/a") == bytes("hello"))
        let a = try status(point + "/a")
        #expect(a.st_size == 5 && a.st_mode == S_IFREG | 0o644 && a.st_nlink == 1)
        // Directories, rename, links.
        try check(Int(mkdir(point + "/d", 0o755)), "mkdir")
        #expect(try status(point + "/d").st_mode == S_IFDIR | 0o755)
        #expect(try status(point).st_nlink == 3)
        try check(Int(rename(point + "/a", point + "/d/b")), "rename")
        #expect(errnoOf { _ = try status(point + "/a") } == ENOENT)
        #expect(try readFile(point + "/d/b") == bytes("hello"))
        try check(Int(symlink("d/b", point + "/s")), "symlink")
        var target = [CChar](repeating: 0, count: 64)
        let length = readlink(point + "/s", &target, target.count)
        #expect(length == 3 && String(decoding: target[0 ..< 3].map { UInt8(bitPattern: $0) }, as: UTF8.self) == "d/b")
        #expect(try readFile(point + "/s") == bytes("hello"))
        #expect(try status(point + "/s", follow: false).st_mode & S_IFMT == S_IFLNK)
        try check(Int(link(point + "/d/b", point + "/h")), "link")
        #expect(try status(point + "/h").st_nlink == 2 && status(point + "/h").st_ino == status(point + "/d/b").st_ino)
        try check(Int(unlink(point + "/h")), "unlink")
        #expect(try status(point + "/d/b").st_nlink == 1)
        #expect(try names(in: point) == ["d", "s"] && names(in: point + "/d") == ["b"])

        // Errors come back as the errnos Linux gives.
        #expect(errnoOf { try check(Int(rmdir(point + "/d")), "rmdir") } == ENOTEMPTY)
        #expect(errnoOf { try check(Int(unlink(point + "/d")), "unlink") } == EISDIR)
        #expect(errnoOf { try check(Int(mkdir(point + "/d", 0o755)), "mkdir") } == EEXIST)
        #expect(errnoOf { _ = try readFile(point + "/missing") } == ENOENT)
        #expect(errnoOf { try writeFile(point + "/d/b", [1], flags: O_WRONLY | O_CREAT | O_EXCL) } == EEXIST)

        // Extended attributes, with the size-0 probe and ERANGE.
        let file = point + "/d/b"
        try check(Int(setxattr(file, "user.color", "blue", 4, 0)), "setxattr")
        #expect(getxattr(file, "user.color", nil, 0) == 4)
        var value = [UInt8](repeating: 0, count: 16)
        #expect(getxattr(file, "user.color", &value, value.count) == 4 && Array(value[0 ..< 4]) == bytes("blue"))
        #expect(getxattr(file, "user.color", &value, 2) == -1 && errno == ERANGE)
        var list = [CChar](repeating: 0, count: 64)
        let listed = listxattr(file, &list, list.count)
        #expect(listxattr(file, nil, 0) == listed && listed == 11)
        #expect(errnoOf { try check(Int(setxattr(file, "user.color", "red", 3, Int32(XATTR_CREATE))), "setxattr") } == EEXIST)
        try check(Int(removexattr(file, "user.color")), "removexattr")
        #expect(getxattr(file, "user.color", &value, value.count) == -1 && errno == ENODATA)

        // Truncate, chmod, times.
        try check(Int(truncate(file, 2)), "truncate")
        #expect(try readFile(file) == bytes("he"))
        try check(Int(truncate(file, 8192)), "truncate")
        #expect(try readFile(file) == bytes("he") + [UInt8](repeating: 0, count: 8190))
        try check(Int(chmod(file, 0o600)), "chmod")
        #expect(try status(file).st_mode == S_IFREG | 0o600)
        var times = [timespec(tv_sec: 1_000_000_000, tv_nsec: 123), timespec(tv_sec: 1_500_000_000, tv_nsec: 456)]
        try check(Int(utimensat(AT_FDCWD, file, &times, 0)), "utimensat")
        let stamped = try status(file)
        #expect(stamped.st_mtim.tv_sec == 1_500_000_000 && stamped.st_mtim.tv_nsec == 456 && stamped.st_atim.tv_sec == 1_000_000_000)

        // A large file in many FUSE writes; O_APPEND; a file open after its name is gone.
        try writeFile(point + "/large", large)
        #expect(try readFile(point + "/large") == large)
        try writeFile(point + "/log", bytes("one\n"))
        try writeFile(point + "/log", bytes("two\n"), flags: O_WRONLY | O_APPEND)
        #expect(try readFile(point + "/log") == bytes("one\ntwo\n"))
        let fd = open(point + "/gone", O_RDWR | O_CREAT, 0o644)
        try check(Int(fd), "open")
        try check(Int(unlink(point + "/gone")), "unlink")
        #expect(pwrite(fd, "still here", 10, 0) == 10)
        var back = [UInt8](repeating: 0, count: 10)
        #expect(pread(fd, &back, 10, 0) == 10 && back == bytes("still here"))
        var opened = stat()
        #expect(fstat(fd, &opened) == 0 && opened.st_nlink == 0)
        close(fd)

        // Sparse files: SEEK_DATA and SEEK_HOLE reach the file system.
        let sparse = open(point + "/sparse", O_RDWR | O_CREAT, 0o644)
        try check(Int(sparse), "open")
        #expect(pwrite(sparse, "x", 1, 1 << 20) == 1)
        #expect(lseek(sparse, 0, 3 /* SEEK_DATA */) == 1 << 20)
        #expect(lseek(sparse, 0, 4 /* SEEK_HOLE */) == 0)
        close(sparse)
        let allocated = try shell("fallocate -l 8192 '\(point)/sparse' && fallocate -p -o 1048576 -l 1 '\(point)/sparse'")
        #expect(allocated.status == 0, "\(allocated.all)")
        #expect(try status(point + "/sparse").st_size == (1 << 20) + 1)
        #expect(try readFile(point + "/sparse") == [UInt8](repeating: 0, count: (1 << 20) + 1), "the hole punched over the x")

        // statfs: real totals.
        var totals = statfs()
        try check(Int(statfs(point, &totals)), "statfs")
        #expect(totals.f_bsize == 4096 && totals.f_blocks > 0 && totals.f_bfree <= totals.f_blocks && totals.f_files > 0)

        // Shell tools.
        let tools = try shell("""
            set -e
            cd '\(point)'
            cp large large.copy && cmp large large.copy  # cp copies with copy_file_range
            mkdir -p t/u/v && echo deep > t/u/v/w && mv t t2 && cat t2/u/v/w
            ls -R t2 | grep -c . >/dev/null
            rm -rf t2 large.copy
            echo tail >> log && tail -n 1 log
            ls
            """)
        #expect(tools.status == 0, "\(tools.all)")
        #expect(tools.stdout == "deep\ntail\nd\nlarge\nlog\ns\nsparse\n", "\(tools.all)")

        // fusermount3 -u: the daemon finishes, digests, closes and exits 0.
        let unmounted = try shell("fusermount3 -u '\(point)'")
        #expect(unmounted.status == 0, "\(unmounted.all)")
        #expect(fixture.waitForExit(daemon) == 0, "\(fixture.log(of: daemon))")
        #expect(fixture.log(of: daemon).contains("digested and closed"), "\(fixture.log(of: daemon))")
        #expect(!fixture.isMounted(point))

        // Mounted again: everything is there. SIGTERM unmounts too.
        let again = try fixture.mountInForeground(on: point)
        #expect(try readFile(point + "/d/b") == bytes("he") + [UInt8](repeating: 0, count: 8190))
        #expect(try status(point + "/d/b").st_mode == S_IFREG | 0o600)
        #expect(try readFile(point + "/large") == large)
        let viaSymlink = try readFile(point + "/s")
        #expect(try viaSymlink == readFile(point + "/d/b"))
        #expect(try readFile(point + "/log") == bytes("one\ntwo\ntail\n"))
        #expect(try names(in: point) == ["d", "large", "log", "s", "sparse"])
        kill(again.processIdentifier, SIGTERM)
        #expect(fixture.waitForExit(again) == 0, "\(fixture.log(of: again))")
        #expect(!fixture.isMounted(point))

        let fsck = try ShaleCommand.run(["fsck", fixture.scratch.directory])
        #expect(fsck.status == 0 && fsck.stdout.contains("clean"), "\(fsck.all)")
        #expect(!fixture.didTimeOut)
    }

    @Test(.timeLimit(.minutes(3)))
    func concurrentWritersAndAnUnprivilegedCallerAreServedWithTheirOwnCredentials() throws {
        let fixture = try MountFixture()
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point, ["-o", "allow_other"])
        let sources = fixture.scratch.directory

        // Four writers at once through the multi-threaded loop, and two appenders.
        let parallel = try shell("""
            set -e
            cd '\(point)'
            for i in 1 2 3 4; do head -c 3000000 /dev/urandom > '\(sources)'/src$i; done
            for i in 1 2 3 4; do cp '\(sources)'/src$i c$i & done
            for i in 1 2 3 4 5 6 7 8 9 10; do echo a$i >> shared & echo b$i >> shared & done
            wait
            for i in 1 2 3 4; do cmp '\(sources)'/src$i c$i; done
            wc -l < shared
            """)
        #expect(parallel.status == 0, "\(parallel.all)")
        #expect(parallel.stdout == "20\n", "every append kept: \(parallel.all)")

        // An unprivileged caller: its own uid and gid decide (allow_other lets it in).
        try writeFile(point + "/secret", bytes("root only"), mode: 0o600)
        try check(Int(chmod(point + "/secret", 0o600)), "chmod")
        try check(Int(mkdir(point + "/pub", 0o777)), "mkdir")
        try check(Int(chmod(point + "/pub", 0o1777)), "chmod")
        try writeFile(point + "/pub/rootfile", bytes("root's"))
        let user = try shell("""
            cd '\(point)'
            setpriv --reuid=1000 --regid=1000 --clear-groups sh -c '
                cat secret >/dev/null 2>&1 && echo read-secret || echo no-secret
                echo mine > pub/mine && stat -c %u:%g:%a pub/mine
                touch denied 2>/dev/null && echo created-in-root || echo no-create
                rm -f pub/rootfile 2>/dev/null && echo removed-rootfile || echo sticky'
            """)
        let lines = user.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 4, "\(user.all)")
        if lines.count == 4 {
            #expect(lines[0] == "no-secret" && lines[1].hasPrefix("1000:1000:") && lines[2] == "no-create" && lines[3] == "sticky",
                    "\(user.all)")
        }
        #expect(try status(point + "/pub/mine").st_uid == 1000)

        kill(daemon.processIdentifier, SIGTERM)
        #expect(fixture.waitForExit(daemon) == 0, "\(fixture.log(of: daemon))")
        let fsck = try ShaleCommand.run(["fsck", fixture.scratch.directory])
        #expect(fsck.status == 0 && fsck.stdout.contains("clean"), "\(fsck.all)")
    }

    @Test(.timeLimit(.minutes(3)))
    func badMountPointsABusyVolumeAndBadOptionsAreClearErrors() throws {
        let fixture = try MountFixture()
        let volume = fixture.scratch.directory
        let missing = try ShaleCommand.run(["mount", volume, "/tmp/shale-no-such-dir-\(fixture.id)"])
        #expect(missing.status == 1 && missing.stderr.contains("does not exist"), "\(missing.all)")
        let file = fixture.scratch.path("shale.volume")
        let notDirectory = try ShaleCommand.run(["mount", volume, file])
        #expect(notDirectory.status == 1 && notDirectory.stderr.contains("is not a directory"), "\(notDirectory.all)")

        // In the background: the command returns once the mount is ready.
        let point = fixture.newMountPoint()
        let background = try ShaleCommand.run(["mount", volume, point, "-o", "fsname=\(fixture.fsname)"])
        #expect(background.status == 0, "\(background.all)")
        #expect(fixture.isMounted(point), "the mount is ready when the command returns")
        try writeFile(point + "/x", bytes("background"))

        let twice = try ShaleCommand.run(["mount", volume, point])
        #expect(twice.status == 1 && twice.stderr.contains("already a mount point"), "\(twice.all)")
        let elsewhere = try ShaleCommand.run(["mount", volume, fixture.newMountPoint(), "-f"])
        #expect(elsewhere.status == 1 && elsewhere.stderr.contains("in use"), "\(elsewhere.all)")
        // The same in the background: the daemon's error reaches the user, the command fails.
        let elsewhereInBackground = try ShaleCommand.run(["mount", volume, fixture.newMountPoint()])
        #expect(elsewhereInBackground.status == 1 && elsewhereInBackground.stderr.contains("in use"), "\(elsewhereInBackground.all)")

        #expect(try shell("umount '\(point)'").status == 0)
        #expect(fixture.waitUntilVolumeIsFree(), "the background daemon let go of the volume")

        let badOption = try ShaleCommand.run(["mount", volume, point, "-f", "-o", "no_such_option"])
        #expect(badOption.status == 1 && badOption.stderr.contains("no_such_option"), "\(badOption.all)")
        #expect(!fixture.isMounted(point))

        // The volume is usable afterwards, and holds what the background mount answered.
        let daemon = try fixture.mountInForeground(on: point)
        #expect(try readFile(point + "/x") == bytes("background"))
        kill(daemon.processIdentifier, SIGINT)
        #expect(fixture.waitForExit(daemon) == 0, "\(fixture.log(of: daemon))")
        let fsck = try ShaleCommand.run(["fsck", volume])
        #expect(fsck.status == 0, "\(fsck.all)")
    }

    @Test(.timeLimit(.minutes(3)))
    func aKilledDaemonLosesNoAnsweredWriteAndItsDeadMountIsDetachedAtTheNextMount() throws {
        let fixture = try MountFixture()
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point)
        let data = pattern(200_000, seed: 7)
        try check(Int(mkdir(point + "/kept", 0o700)), "mkdir")
        try writeFile(point + "/kept/data", data)
        try check(Int(rename(point + "/kept/data", point + "/kept/renamed")), "rename")
        kill(daemon.processIdentifier, SIGKILL)
        #expect(fixture.waitForExit(daemon) != nil)
        #expect(errnoOf { _ = try status(point) } == ENOTCONN, "a dead mount until someone detaches it")

        let again = try fixture.mountInForeground(on: point)
        let log = fixture.log(of: again)
        #expect(log.contains("detached a dead mount"), "\(log)")
        #expect(log.contains("recovered log"), "\(log)")
        #expect(try readFile(point + "/kept/renamed") == data)
        #expect(try status(point + "/kept").st_mode == S_IFDIR | 0o700)
        #expect(try shell("fusermount3 -u '\(point)'").status == 0)
        #expect(fixture.waitForExit(again) == 0, "\(fixture.log(of: again))")
        let fsck = try ShaleCommand.run(["fsck", fixture.scratch.directory])
        #expect(fsck.status == 0 && fsck.stdout.contains("clean"), "\(fsck.all)")
    }
}
