// Conformance of the mount: one table of named scenarios, each run through ordinary system
// calls (and shell tools, some as an unprivileged user through allow_other) on a fresh volume
// mounted for it, and, where Linux's own answer is the reference, also in a fresh directory on
// tmpfs (/dev/shm). Each scenario writes what it observes (results, errnos, sizes, modes, link
// counts, never inode numbers or clock readings) to a transcript; the two transcripts must be
// equal, and each scenario also checks what it must see outright, on both sides. After each
// scenario the volume is unmounted and `shale fsck` must find it clean.

import CLinux
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension MountSuites {
    @Suite struct MountConformanceTests {}
}

// MARK: - The table

/// One named scenario.
struct ConformanceScenario: Sendable, CustomTestStringConvertible {
    let name: String
    /// Also run on tmpfs, and the transcripts compared.
    var comparedWithTmpfs = true
    /// The volume's NVM size (the large file and the big directory need more than 64 MiB).
    var nvmSize = "64M"
    let body: @Sendable (Place) throws -> Void

    var testDescription: String { name }

    static let all: [ConformanceScenario] = [
        ConformanceScenario(name: "permissions and ownership as root", body: rootPermissions),
        ConformanceScenario(name: "permissions and ownership as an unprivileged user", body: userPermissions),
        ConformanceScenario(name: "hard links and link counts", body: hardLinks),
        ConformanceScenario(name: "symbolic links and ELOOP", body: symbolicLinks),
        ConformanceScenario(name: "rename edge cases and renameat2 flags", body: renameEdges),
        ConformanceScenario(name: "truncate, holes, SEEK_DATA and SEEK_HOLE", body: holes),
        ConformanceScenario(name: "a 256 MiB file", comparedWithTmpfs: false, nvmSize: "400M", body: largeFile),
        ConformanceScenario(name: "100,000 entries in one directory", comparedWithTmpfs: false, nvmSize: "256M", body: manyEntries),
        ConformanceScenario(name: "extended attributes", body: extendedAttributes),
        ConformanceScenario(name: "timestamps and utimensat", body: timestamps),
        ConformanceScenario(name: "open files whose names are gone", body: openUnlinked),
        ConformanceScenario(name: "O_APPEND from two processes", body: appendFromTwoProcesses),
        ConformanceScenario(name: "statfs totals", comparedWithTmpfs: false, body: statfsTotals),
        ConformanceScenario(name: "names of 255 bytes and ENAMETOOLONG at 256", body: nameLengths),
        ConformanceScenario(name: "names with any byte but / and NUL", body: anyByteNames),
        ConformanceScenario(name: "FIFOs and device nodes", body: specialFiles),
    ]
}

extension MountSuites.MountConformanceTests {
    @Test(.timeLimit(.minutes(4)), arguments: ConformanceScenario.all)
    func scenario(_ scenario: ConformanceScenario) throws {
        let started = Date()
        var reference: [String]?
        if scenario.comparedWithTmpfs {
            // A tmpfs of its own, with the flags libfuse gives the mount (nosuid, nodev), named
            // like a test mount of this process so a crashed run's is detached next time.
            let directory = "/tmp/shale-reference-\(getpid())-\(UInt32.random(in: 0 ... .max))"
            try check(Int(mkdir(directory, 0o755)), "mkdir \(directory)")
            defer { rmdir(directory) }
            let mounted = try shell("mount -t tmpfs -o nosuid,nodev,size=512m,mode=0755 \(fsnamePrefix)\(getpid())-reference \(quoted(directory))")
            try #require(mounted.status == 0, "\(mounted.all)")
            defer { umount2(directory, Int32(MNT_DETACH)) }
            let place = Place(root: directory, side: "tmpfs")
            try scenario.body(place)
            reference = place.transcript.lines
        }

        let onTmpfs = Date()
        let fixture = try MountFixture(nvmSize: scenario.nvmSize)
        let point = fixture.newMountPoint()
        var daemon = try fixture.mountInForeground(on: point, ["-o", "allow_other"])
        let place = Place(root: point, side: "the mount", fixture: fixture)
        place.remount = {
            fixture.unmount(point, daemon: daemon)
            daemon = try fixture.mountInForeground(on: point, ["-o", "allow_other"])
        }
        try check(Int(chmod(point, 0o755)), "chmod")
        try scenario.body(place)
        if let reference {
            let found = place.transcript.lines
            let differences = (0 ..< max(found.count, reference.count)).filter { index in
                index >= found.count || index >= reference.count || found[index] != reference[index]
            }
            let shown = differences.prefix(4).map { index in
                "line \(index + 1): mount «\(index < found.count ? found[index] : "—")» tmpfs «\(index < reference.count ? reference[index] : "—")»"
            }
            #expect(differences.isEmpty, "the mount and tmpfs differ in \(differences.count) of \(reference.count) lines: \(shown.joined(separator: " | "))")
        }
        fixture.unmount(point, daemon: daemon)
        fixture.expectFsckClean()
        #expect(!fixture.didTimeOut)
        print("MountConformanceTests: \(scenario.name): tmpfs \(String(format: "%.1f", onTmpfs.timeIntervalSince(started))) s, "
            + "the mount \(String(format: "%.1f", Date().timeIntervalSince(onTmpfs))) s")
    }
}

// MARK: - Where a scenario runs

/// The directory a scenario works in, which file system it is on, and its transcript.
final class Place: @unchecked Sendable {
    let root: String
    let side: String
    let fixture: MountFixture?
    let transcript = Transcript()
    var onShale: Bool { fixture != nil }
    /// On the mount: unmounts (every record digested) and mounts the volume again.
    var remount: (() throws -> Void)?

    init(root: String, side: String, fixture: MountFixture? = nil) {
        self.root = root
        self.side = side
        self.fixture = fixture
    }

    func path(_ name: String) -> String { root + "/" + name }

    /// Records a call's outcome ("ok", or the errno's name) under `label`, and returns it.
    @discardableResult
    func note(_ label: String, _ result: Int) -> Int {
        transcript.add("\(label): \(result < 0 ? errnoName(errno) : "ok")")
        return result
    }

    func note(_ label: String, _ result: Int32) { note(label, Int(result)) }

    /// Records a line (or each line of a tool's output).
    func note(_ text: String) {
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) { transcript.add(String(line)) }
    }

    /// Runs a script in the root (as root), expects it to succeed, and returns its output.
    @discardableResult
    func sh(_ script: String, seconds: Int = 60, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let result = try shell("set -e\ncd \(quoted(root))\n" + script, seconds: seconds)
        #expect(result.status == 0, "on \(side): \(script)\n--- exit \(result.status):\n\(result.all.suffix(3000))",
                sourceLocation: sourceLocation)
        return result.stdout
    }
}

final class Transcript: @unchecked Sendable {
    private(set) var lines: [String] = []
    func add(_ line: String) { lines.append(line) }
}

private let strerrorname = unsafeBitCast(dlsym(nil, "strerrorname_np"),
                                                             to: (@convention(c) (Int32) -> UnsafePointer<CChar>?)?.self)

/// "ENOENT" for ENOENT.
func errnoName(_ code: Int32) -> String {
    if let strerrorname, let name = strerrorname(code) { return String(cString: name) }
    return "errno \(code)"
}

/// Calls Swift's Glibc module does not export.
enum MoreCalls {
    private static func symbol<T>(_ name: String, as type: T.Type) -> T {
        guard let address = dlsym(nil, name) else { fatalError("libc has no \(name)") }
        return unsafeBitCast(address, to: type)
    }

    nonisolated(unsafe) static let renameat2 = symbol(
        "renameat2", as: (@convention(c) (Int32, UnsafePointer<CChar>?, Int32, UnsafePointer<CChar>?, UInt32) -> Int32).self)
    nonisolated(unsafe) static let fallocate = symbol("fallocate", as: (@convention(c) (Int32, Int32, Int64, Int64) -> Int32).self)

    static let renameNoReplace: UInt32 = 1
    static let renameExchange: UInt32 = 2
    static let keepSize: Int32 = 0x01
    static let punchHole: Int32 = 0x02
    static let seekData: Int32 = 3
    static let seekHole: Int32 = 4
    static let utimeNow = (1 << 30) - 1
    static let utimeOmit = (1 << 30) - 2
}

/// Linux's device numbers (sys/sysmacros.h, macros Swift cannot import).
func makeDevice(_ major: UInt32, _ minor: UInt32) -> dev_t {
    dev_t(minor & 0xFF) | dev_t(major & 0xFFF) << 8 | dev_t(minor & ~0xFF) << 12 | dev_t(major & ~0xFFF) << 32
}

func deviceMajor(_ device: dev_t) -> UInt32 { UInt32((device >> 8) & 0xFFF) | UInt32((device >> 32) & ~0xFFF) }

func deviceMinor(_ device: dev_t) -> UInt32 { UInt32(device & 0xFF) | UInt32((device >> 12) & ~0xFF) }

/// A path of raw bytes: `directory` + "/" + `name`, NUL-terminated.
func rawPath(_ directory: String, _ name: [UInt8]) -> [CChar] {
    (Array(directory.utf8) + [UInt8(ascii: "/")] + name + [0]).map { CChar(bitPattern: $0) }
}

/// The names in a directory, as raw bytes, sorted ("." and ".." left out).
func rawNames(in directory: String) throws -> [[UInt8]] {
    guard let stream = opendir(directory) else { throw SystemCallError(call: "opendir \(directory)", errno: errno) }
    defer { closedir(stream) }
    var result: [[UInt8]] = []
    while let entry = readdir(stream) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
        if name != [0x2E], name != [0x2E, 0x2E] { result.append(name) }
    }
    return result.sorted { $0.lexicographicallyPrecedes($1) }
}

/// Mode, links, owner and (but for directories, whose size is each file system's own) size.
private func describe(_ info: stat) -> String {
    let size = info.st_mode & S_IFMT == S_IFDIR ? "" : " size \(info.st_size)"
    return "mode \(String(info.st_mode, radix: 8)) links \(info.st_nlink) owner \(info.st_uid):\(info.st_gid)" + size
}

private func describe(_ path: String, follow: Bool = false) -> String {
    (try? describe(status(path, follow: follow))) ?? errnoName(errno)
}

// MARK: - Scenarios

/// Root's overrides (read and write anything, execute only what someone may), chown and chmod,
/// the set-group-ID directory, the umask the kernel applies, and set-user-ID cleared by chown.
private func rootPermissions(_ p: Place) throws {
    let file = p.path("none")
    try writeFile(file, bytes("x"), mode: 0)
    p.note("created mode 0 — \(describe(file))")
    let fd = open(file, O_RDWR)
    p.note("root opens a mode 0 file read-write", fd)
    if fd >= 0 { p.note("root writes it", write(fd, "yz", 2)); close(fd) }
    p.note("root may not execute a mode 0 file", access(file, X_OK))
    p.note("root may read and write it", access(file, R_OK | W_OK))
    p.note("chmod 0744", chmod(file, 0o744))
    p.note("root may execute it now", access(file, X_OK))
    #expect(access(file, X_OK) == 0 && (try? readFile(file)) == bytes("yz"), "\(p.side)")

    p.note("mkdir 0", mkdir(p.path("shut"), 0))
    p.note("root creates in a mode 0 directory", open(p.path("shut/f"), O_CREAT | O_WRONLY, 0o600).closing())
    p.note("root lists it: \((try? names(in: p.path("shut"))) ?? [])")

    p.note("chown 1000:1001", chown(file, 1000, 1001))
    p.note(describe(file))
    p.note("symlink", symlink("none", p.path("link")))
    p.note("lchown 1002:1003", lchown(p.path("link"), 1002, 1003))
    p.note("link — \(describe(p.path("link"))); target — \(describe(file))")
    #expect(try status(p.path("link"), follow: false).st_uid == 1002 && status(file).st_uid == 1000, "\(p.side)")

    // chown clears set-user-ID and set-group-ID (with group execute) of a file, even for root.
    try writeFile(p.path("suid"), bytes("#!/bin/sh\n"))
    p.note("chmod 6755", chmod(p.path("suid"), 0o6755))
    p.note(describe(p.path("suid")))
    p.note("chown 1000:1000", chown(p.path("suid"), 1000, 1000))
    p.note(describe(p.path("suid")))
    #expect(try status(p.path("suid")).st_mode & 0o7777 == 0o755, "\(p.side): chown clears S_ISUID and S_ISGID")
    // chmod by root keeps what it is given.
    p.note("chmod 4711", chmod(p.path("suid"), 0o4711))
    p.note(describe(p.path("suid")))

    // A set-group-ID directory: new entries take its group; new directories the bit too.
    p.note("mkdir g", mkdir(p.path("g"), 0o775))
    p.note("chown g 0:1001", chown(p.path("g"), 0, 1001))
    p.note("chmod g 2775", chmod(p.path("g"), 0o2775))
    try writeFile(p.path("g/file"), bytes("f"))
    p.note("mkdir g/sub", mkdir(p.path("g/sub"), 0o755))
    p.note("g/file — \(describe(p.path("g/file"))); g/sub — \(describe(p.path("g/sub")))")
    #expect(try status(p.path("g/file")).st_gid == 1001 && status(p.path("g/sub")).st_mode == S_IFDIR | 0o2755, "\(p.side)")

    // The umask (applied by the kernel, in a child so this process's stays as it is).
    p.note(try p.sh("umask 027; touch masked; mkdir maskeddir; stat -c '%a %F' masked maskeddir"))
    // Root writes and truncates a read-only file.
    try writeFile(p.path("ro"), bytes("read only"), mode: 0o444)
    p.note("root truncates a 0444 file", truncate(p.path("ro"), 4))
    p.note("root writes it: \(errnoOf { try writeFile(p.path("ro"), bytes("w"), flags: O_WRONLY | O_APPEND) })")
    p.note("contents \(String(decoding: (try? readFile(p.path("ro"))) ?? [], as: UTF8.self))")
}

extension Int32 {
    /// Closes a descriptor just opened, passing the open's result on.
    func closing() -> Int32 {
        if self >= 0 { close(self) }
        return self
    }
}

/// An unprivileged caller (uid 1000, gid 1000, supplementary group 1001) through allow_other:
/// read, write, execute and search bits for owner, group (primary and supplementary) and
/// others, the sticky bit, chmod/chown/chgrp by a non-owner, times set by a non-owner.
private func userPermissions(_ p: Place) throws {
    try p.sh("""
        echo secret > secret; chmod 600 secret
        echo ro > readonly; chmod 644 readonly
        echo g > groupfile; chown 0:1001 groupfile; chmod 640 groupfile
        echo p > primary; chown 0:1000 primary; chmod 640 primary
        echo o > othersonly; chown 0:1000 othersonly; chmod 604 othersonly
        mkdir pub; chmod 1777 pub; echo r > pub/rootfile; chmod 666 pub/rootfile
        mkdir shut; echo s > shut/f; chmod 644 shut/f; chmod 700 shut
        mkdir noread; echo n > noread/f; chmod 644 noread/f; chmod 711 noread
        mkdir nosearch; echo x > nosearch/f; chmod 644 nosearch/f; chmod 766 nosearch
        mkdir mine; chown 1000:1000 mine
        touch shared; chmod 666 shared; touch -d '2000-01-01' shared
        printf '#!/bin/sh\\necho ran\\n' > tool; chmod 755 tool
        printf '#!/bin/sh\\necho ran\\n' > ownertool; chmod 744 ownertool
        """)
    let out = try p.sh("""
        setpriv --reuid=1000 --regid=1000 --groups=1001 sh -c '
            t() { if "$@" >/dev/null 2>&1; then echo "$*: yes"; else echo "$*: no"; fi; }
            id -u; id -g; id -G
            t cat secret
            t cat readonly
            t sh -c "echo x >> readonly"
            t truncate -s 0 readonly
            t test -r readonly
            t test -w readonly
            t cat groupfile
            t cat primary
            t cat othersonly
            t touch newfile
            t ls shut
            t cat shut/f
            t ls noread
            t cat noread/f
            t ls nosearch
            t cat nosearch/f
            t ./tool
            t ./ownertool
            t sh -c "echo mine > pub/mine"
            stat -c "%u:%g %a" pub/mine
            t rm -f pub/rootfile
            t mv pub/rootfile pub/moved
            t sh -c "echo y > pub/rootfile"
            t mv pub/mine pub/mine2
            t rm pub/mine2
            t chmod 600 readonly
            t chmod 700 mine
            stat -c "%a" mine
            t chown 0 mine
            t chgrp 1001 mine
            t chgrp 1002 mine
            stat -c "%u:%g" mine
            t mkdir mine/sub
            t sh -c "echo a > mine/sub/f"
            t rmdir mine/sub
            t rm -r mine/sub
            t touch -d 2001-01-01 shared
            t touch shared
            t touch -d 2001-01-01 mine
            t ln secret mine/secret-link
            t ln -s secret mine/secret-symlink
            t cat mine/secret-symlink
            t mkdir topdir
            t rm readonly
            t mv secret mine/
            '
        """)
    p.note(out)
    let lines = out.split(separator: "\n")
    #expect(lines.prefix(3) == ["1000", "1000", "1000 1001"], "\(p.side): \(out)")
    #expect(lines.contains("cat secret: no") && lines.contains("cat groupfile: yes") && lines.contains("rm -f pub/rootfile: no")
            && lines.contains("touch shared: yes") && lines.contains("chgrp 1001 mine: yes"), "\(p.side): \(out)")
    p.note(describe(p.path("mine")))
    p.note("pub: \((try? names(in: p.path("pub"))) ?? [])")
    p.note("root: \((try? names(in: p.root)) ?? [])")
}

/// Link counts of files and directories as names come and go, and the errors of link(2).
private func hardLinks(_ p: Place) throws {
    try writeFile(p.path("a"), bytes("one"))
    for name in ["b", "c", "d"] { p.note("link a \(name)", link(p.path("a"), p.path(name))) }
    p.note("a — \(describe(p.path("a")))")
    #expect(try status(p.path("a")).st_nlink == 4 && status(p.path("d")).st_ino == status(p.path("a")).st_ino, "\(p.side)")
    try writeFile(p.path("c"), bytes("two"), flags: O_WRONLY | O_APPEND)
    p.note("a reads \(String(decoding: try readFile(p.path("a")), as: UTF8.self))")
    p.note("unlink b", unlink(p.path("b")))
    p.note("a — \(describe(p.path("a")))")
    p.note("link onto an existing name", link(p.path("a"), p.path("c")))
    p.note("link a missing file", link(p.path("missing"), p.path("e")))
    p.note("mkdir dir", mkdir(p.path("dir"), 0o755))
    p.note("link a directory", link(p.path("dir"), p.path("dir2")))
    p.note("link into a missing directory", link(p.path("a"), p.path("nowhere/a")))
    p.note("link through a file", link(p.path("a"), p.path("a/x")))
    p.note("link into dir", link(p.path("a"), p.path("dir/a")))
    p.note("rename c over d (the same inode)", rename(p.path("c"), p.path("d")))
    p.note("after: \((try? names(in: p.root)) ?? []) a — \(describe(p.path("a")))")

    // Directories: "." and each subdirectory's "..".
    p.note("root — \(describe(p.root))")
    for name in ["dir/s1", "dir/s2", "dir/s3"] { p.note("mkdir \(name)", mkdir(p.path(name), 0o755)) }
    p.note("dir — \(describe(p.path("dir")))")
    #expect(try status(p.path("dir")).st_nlink == 5, "\(p.side)")
    p.note("rename dir/s1 to the root", rename(p.path("dir/s1"), p.path("s1")))
    p.note("dir — \(describe(p.path("dir"))); root — \(describe(p.root))")
    p.note("rmdir dir/s2", rmdir(p.path("dir/s2")))
    p.note("dir — \(describe(p.path("dir")))")
    p.note("rename dir/s3 over s1 (an empty directory)", rename(p.path("dir/s3"), p.path("s1")))
    p.note("dir — \(describe(p.path("dir"))); root — \(describe(p.root)); s1 — \(describe(p.path("s1")))")
    // The last link goes while the file is open: it stays readable, with no links.
    let fd = open(p.path("dir/a"), O_RDONLY)
    for name in ["a", "c", "d", "dir/a"] { p.note("unlink \(name)", unlink(p.path(name))) }
    var info = stat()
    p.note("fstat after the last unlink", fstat(fd, &info))
    p.note("links \(info.st_nlink) size \(info.st_size)")
    #expect(info.st_nlink == 0 && info.st_size == 6, "\(p.side)")
    close(fd)
}

/// readlink, relative and absolute targets, dangling links, loops (ELOOP at 40 links, as
/// Linux counts), O_NOFOLLOW, the longest target (4,095 bytes), a trailing slash.
private func symbolicLinks(_ p: Place) throws {
    try writeFile(p.path("target"), bytes("content"))
    p.note("symlink relative", symlink("target", p.path("rel")))
    p.note("symlink absolute", symlink(p.path("target"), p.path("abs")))
    p.note("symlink dangling", symlink("nowhere", p.path("dangling")))
    p.note("symlink onto an existing name", symlink("x", p.path("target")))
    p.note("symlink with an empty target", symlink("", p.path("empty")))
    p.note("rel reads \(String(decoding: (try? readFile(p.path("rel"))) ?? [], as: UTF8.self))")
    #expect((try? readFile(p.path("abs"))) == bytes("content"), "\(p.side)")
    var buffer = [CChar](repeating: 0, count: 8192)
    let length = readlink(p.path("rel"), &buffer, buffer.count)
    p.note("readlink rel: \(length) \(String(cString: Array(buffer[0 ..< max(0, length)]) + [0]))")
    p.note("readlink with a short buffer: \(readlink(p.path("rel"), &buffer, 3))")
    p.note("readlink of a file", readlink(p.path("target"), &buffer, buffer.count))
    p.note("stat dangling: \(errnoOf { _ = try status(p.path("dangling")) })")
    p.note("lstat dangling — \(describe(p.path("dangling")))")
    p.note("open dangling O_CREAT creates its target", open(p.path("dangling"), O_CREAT | O_WRONLY, 0o644).closing())
    p.note("names: \((try? names(in: p.root)) ?? [])")
    p.note("open O_NOFOLLOW", open(p.path("rel"), O_RDONLY | O_NOFOLLOW).closing())
    p.note("open O_CREAT|O_EXCL on a symlink", open(p.path("rel"), O_CREAT | O_EXCL | O_WRONLY, 0o644).closing())

    // Loops.
    p.note("symlink loop1 -> loop2", symlink("loop2", p.path("loop1")))
    p.note("symlink loop2 -> loop1", symlink("loop1", p.path("loop2")))
    p.note("symlink self -> self", symlink("self", p.path("self")))
    p.note("open loop1", open(p.path("loop1"), O_RDONLY).closing())
    p.note("open self", open(p.path("self"), O_RDONLY).closing())
    p.note("stat loop1/x: \(errnoOf { _ = try status(p.path("loop1/x")) })")
    #expect(open(p.path("loop1"), O_RDONLY).closing() == -1 && errno == ELOOP, "\(p.side)")
    // A chain: c0 -> c1 -> ... -> c40 -> target. 40 links resolve, 41 do not.
    for index in 0 ... 40 {
        symlink(index == 40 ? "target" : "c\(index + 1)", p.path("c\(index)"))
    }
    p.note("open through 40 links", open(p.path("c1"), O_RDONLY).closing())
    p.note("open through 41 links", open(p.path("c0"), O_RDONLY).closing())

    // Directories through links, and a trailing slash.
    p.note("mkdir d", mkdir(p.path("d"), 0o755))
    p.note("symlink to d", symlink("d", p.path("dl")))
    try writeFile(p.path("dl/inside"), bytes("in"))
    p.note("d holds \((try? names(in: p.path("d"))) ?? [])")
    p.note("rmdir through the link with a slash", rmdir(p.path("dl/")))
    p.note("unlink the link", unlink(p.path("dl")))
    p.note("stat rel/: \(errnoOf { _ = try status(p.path("rel/")) })")

    // The longest target Linux allows (4,095 bytes) and one longer.
    let longest = String(repeating: "a/", count: 2047) + "b"
    p.note("symlink with a 4,095-byte target", symlink(longest, p.path("longest")))
    let read = readlink(p.path("longest"), &buffer, buffer.count)
    p.note("it reads back \(read) bytes, the same: \(read == 4095 && String(cString: Array(buffer[0 ..< 4095]) + [0]) == longest)")
    p.note("symlink with a 4,096-byte target", symlink(longest + "c", p.path("toolong")))
    p.note("lstat longest — \(describe(p.path("longest")))")
}

/// rename over a file, over empty and non-empty directories, across types, into its own
/// subtree, onto itself; renameat2 with RENAME_NOREPLACE and RENAME_EXCHANGE.
private func renameEdges(_ p: Place) throws {
    func rename2(_ from: String, _ to: String, _ flags: UInt32) -> Int32 {
        MoreCalls.renameat2(AT_FDCWD, p.path(from), AT_FDCWD, p.path(to), flags)
    }
    func contents(_ name: String) -> String { String(decoding: (try? readFile(p.path(name))) ?? bytes("?"), as: UTF8.self) }
    try writeFile(p.path("f1"), bytes("one"))
    try writeFile(p.path("f2"), bytes("two"))
    for name in ["empty", "full", "full/sub", "full/sub/deeper", "other"] { p.note("mkdir \(name)", mkdir(p.path(name), 0o755)) }
    try writeFile(p.path("full/file"), bytes("in full"))
    let kept = open(p.path("f2"), O_RDONLY)

    p.note("rename f1 over f2", rename(p.path("f1"), p.path("f2")))
    p.note("f2 reads \(contents("f2")); f1: \(errnoOf { _ = try status(p.path("f1")) })")
    var back = [UInt8](repeating: 0, count: 3)
    let got = pread(kept, &back, 3, 0)
    p.note("the replaced file, still open, reads \(String(decoding: back.prefix(max(0, got)), as: UTF8.self))")
    close(kept)
    p.note("rename a missing name", rename(p.path("missing"), p.path("x")))
    p.note("rename f2 onto itself", rename(p.path("f2"), p.path("f2")))
    p.note("rename a file over an empty directory", rename(p.path("f2"), p.path("empty")))
    p.note("rename a directory over a file", rename(p.path("empty"), p.path("f2")))
    p.note("rename a directory over a non-empty one", rename(p.path("other"), p.path("full")))
    p.note("rename a directory into its own subtree", rename(p.path("full"), p.path("full/sub/deeper/full")))
    p.note("rename a directory onto its own child", rename(p.path("full"), p.path("full/sub")))
    p.note("rename a directory over its parent's ancestor", rename(p.path("full/sub/deeper"), p.path("full")))
    p.note("rename a directory over an empty one", rename(p.path("other"), p.path("empty")))
    p.note("names: \((try? names(in: p.root)) ?? [])")
    #expect(rename(p.path("empty"), p.path("full")) == -1 && errno == ENOTEMPTY, "\(p.side)")
    #expect(rename(p.path("full"), p.path("full/sub/x")) == -1 && errno == EINVAL, "\(p.side)")
    p.note("rename with a trailing slash on a file", rename(p.path("f2/"), p.path("f3")))
    p.note("rename . away", rename(p.path("full/."), p.path("dot")))
    p.note("rename into a file's path", rename(p.path("f2"), p.path("f2/x")))
    p.note("rename across directories", rename(p.path("full/file"), p.path("empty/file")))
    p.note("rename a directory across directories", rename(p.path("full/sub"), p.path("empty/sub")))
    p.note("full — \(describe(p.path("full"))); empty — \(describe(p.path("empty")))")

    // RENAME_NOREPLACE.
    try writeFile(p.path("n1"), bytes("n1"))
    try writeFile(p.path("n2"), bytes("n2"))
    p.note("NOREPLACE over a file", rename2("n1", "n2", MoreCalls.renameNoReplace))
    p.note("NOREPLACE to a new name", rename2("n1", "n3", MoreCalls.renameNoReplace))
    p.note("n2 reads \(contents("n2")), n3 reads \(contents("n3"))")
    p.note("NOREPLACE over a directory", rename2("n3", "empty", MoreCalls.renameNoReplace))
    // RENAME_EXCHANGE: two files, a file and a directory, across directories.
    p.note("EXCHANGE two files", rename2("n2", "n3", MoreCalls.renameExchange))
    p.note("n2 reads \(contents("n2")), n3 reads \(contents("n3"))")
    #expect(contents("n2") == "n1" && contents("n3") == "n2", "\(p.side)")
    p.note("EXCHANGE a file and a directory", rename2("n2", "empty", MoreCalls.renameExchange))
    p.note("n2 — \(describe(p.path("n2"))); empty — \(describe(p.path("empty")))")
    p.note("n2 holds \((try? names(in: p.path("n2"))) ?? [])")
    p.note("EXCHANGE across directories", rename2("n2/file", "n3", MoreCalls.renameExchange))
    p.note("n3 reads \(contents("n3")), n2/file reads \(contents("n2/file"))")
    p.note("EXCHANGE with a missing name", rename2("n3", "missing", MoreCalls.renameExchange))
    p.note("EXCHANGE and NOREPLACE together", rename2("n3", "empty", MoreCalls.renameExchange | MoreCalls.renameNoReplace))
    p.note("an unknown flag", rename2("n3", "n4", 1 << 10))
    p.note("EXCHANGE a directory into its own subtree", rename2("n2", "n2/sub", MoreCalls.renameExchange))
    p.note("root — \(describe(p.root)); n2 — \(describe(p.path("n2"))); empty — \(describe(p.path("empty")))")
    p.note("names: \((try? names(in: p.root)) ?? [])")
}

/// truncate down and up, writes past the end, holes read as zeros, SEEK_DATA and SEEK_HOLE
/// (written at 4 KiB boundaries, where every file system's answer is the same), fallocate
/// with KEEP_SIZE and punching a hole.
private func holes(_ p: Place) throws {
    let fd = open(p.path("sparse"), O_RDWR | O_CREAT, 0o644)
    try check(Int(fd), "open")
    defer { close(fd) }
    let block = [UInt8](repeating: 0xAB, count: 4096)
    func seek(_ offset: Int, _ whence: Int32) -> String {
        let result = lseek(fd, off_t(offset), whence)
        return result < 0 ? errnoName(errno) : "\(result)"
    }
    func seeks() -> String {
        let points = [0, 4096, 1 << 20, (1 << 20) + 4096, 3 << 20, (4 << 20) - 1, 4 << 20, 5 << 20]
        return points.map { "\($0): data \(seek($0, MoreCalls.seekData)) hole \(seek($0, MoreCalls.seekHole))" }.joined(separator: ", ")
    }
    func size() -> String { "size \((try? status(p.path("sparse")).st_size) ?? -1)" }
    func sum(_ range: Range<Int>) -> String {
        var buffer = [UInt8](repeating: 0xFF, count: range.count)
        let count = pread(fd, &buffer, range.count, off_t(range.lowerBound))
        return "read \(count) bytes at \(range.lowerBound): \(buffer.prefix(max(0, count)).reduce(0) { $0 &+ Int($1) })"
    }

    p.note("empty: \(seeks())")
    p.note("pwrite at 1 MiB", pwrite(fd, block, 4096, off_t(1 << 20)))
    p.note("pwrite at 3 MiB", pwrite(fd, block + block, 8192, off_t(3 << 20)))
    p.note("\(size()); \(seeks())")
    p.note(sum(0 ..< (1 << 20)))
    p.note(sum((1 << 20) - 100 ..< (1 << 20) + 100))
    let blocks = (try? status(p.path("sparse")).st_blocks) ?? -1
    #expect(blocks >= 8 && blocks * 512 < 1 << 20, "\(p.side): a sparse file holds few blocks (\(blocks))")
    #expect(lseek(fd, 0, MoreCalls.seekData) == 1 << 20 && lseek(fd, off_t(1 << 20), MoreCalls.seekHole) == (1 << 20) + 4096, "\(p.side)")

    p.note("ftruncate to 3 MiB + 4 KiB", ftruncate(fd, off_t((3 << 20) + 4096)))
    p.note("\(size()); \(seeks())")
    p.note("ftruncate to 6 MiB", ftruncate(fd, off_t(6 << 20)))
    p.note("\(size()); \(seeks())")
    p.note(sum((3 << 20) ..< (3 << 20) + 8192))
    p.note("truncate to 1 MiB + 10", truncate(p.path("sparse"), off_t((1 << 20) + 10)))
    p.note("\(size()); \(seeks())")
    p.note(sum((1 << 20) ..< (1 << 20) + 4096))
    p.note("truncate to -1", truncate(p.path("sparse"), -1))
    p.note("extend by a write past the end", pwrite(fd, "end", 3, off_t(2 << 20)))
    p.note("\(size()); \(sum((1 << 20) ..< (2 << 20) + 3))")
    p.note("ftruncate a directory", truncate(p.root, 0))

    // fallocate.
    p.note("fallocate KEEP_SIZE 4 MiB", MoreCalls.fallocate(fd, MoreCalls.keepSize, 0, 4 << 20))
    p.note(size())
    p.note("fallocate 8 KiB at 5 MiB", MoreCalls.fallocate(fd, 0, 5 << 20, 8192))
    p.note(size())
    try writeFile(p.path("punched"), [UInt8](repeating: 7, count: 5 * 4096))
    let punched = open(p.path("punched"), O_RDWR)
    p.note("punch the middle 3 blocks", MoreCalls.fallocate(punched, MoreCalls.punchHole | MoreCalls.keepSize, 4096, 3 * 4096))
    var contents = [UInt8](repeating: 0xFF, count: 5 * 4096)
    p.note("read \(pread(punched, &contents, contents.count, 0))")
    p.note("zeros at 4 KiB ..< 16 KiB: \(contents[4096 ..< 16384].allSatisfy { $0 == 0 }), sevens around: \(contents[0 ..< 4096].allSatisfy { $0 == 7 } && contents[16384...].allSatisfy { $0 == 7 })")
    p.note("data from 4 KiB at \(lseek(punched, 4096, MoreCalls.seekData)), hole from 0 at \(lseek(punched, 0, MoreCalls.seekHole))")
    p.note("punch without KEEP_SIZE", MoreCalls.fallocate(punched, MoreCalls.punchHole, 0, 4096))
    close(punched)
}

/// A 256 MiB file copied in and compared, a write past 4 GiB (sparse), a truncate back, and
/// the space coming back after unlink.
private func largeFile(_ p: Place) throws {
    let source = "/dev/shm/shale-large-\(getpid())-\(UInt32.random(in: 0 ... .max))"
    defer { unlink(source) }
    let out = try p.sh("""
        head -c 268435456 /dev/urandom > \(quoted(source))
        cp \(quoted(source)) big
        cmp \(quoted(source)) big && echo same
        stat -c '%s' big
        sha256sum < big | cut -c1-64; sha256sum < \(quoted(source)) | cut -c1-64
        """, seconds: 180)
    let lines = out.split(separator: "\n")
    #expect(lines.count == 4 && lines[0] == "same" && lines[1] == "268435456" && lines[2] == lines[3], "\(out)")
    let fd = open(p.path("big"), O_RDWR)
    try check(Int(fd), "open big")
    #expect(pwrite(fd, "far", 3, off_t(5) << 30) == 3)
    var info = stat()
    #expect(fstat(fd, &info) == 0 && info.st_size == (5 << 30) + 3)
    var far = [UInt8](repeating: 0, count: 3)
    #expect(pread(fd, &far, 3, off_t(5) << 30) == 3 && far == bytes("far"))
    #expect(lseek(fd, off_t(1) << 30, MoreCalls.seekData) == off_t(5) << 30, "the gap past 256 MiB is a hole")
    #expect(ftruncate(fd, off_t(128) << 20) == 0)
    close(fd)
    let again = try p.sh("cmp -n 134217728 \(quoted(source)) big && stat -c '%s' big")
    #expect(again == "134217728\n", "\(again)")
    #expect(unlink(p.path("big")) == 0)
    // The space is free again: a second 256 MiB file fits.
    let second = try p.sh("cp \(quoted(source)) big2 && cmp \(quoted(source)) big2 && stat -c '%s' big2 && rm big2", seconds: 180)
    #expect(second == "268435456\n", "\(second)")
}

/// 100,000 files in one directory: created, listed (every name once), counted, some statted,
/// renamed and written, then all removed.
private func manyEntries(_ p: Place) throws {
    let directory = p.path("many")
    try check(Int(mkdir(directory, 0o755)), "mkdir")
    let count = 100_000
    var phases: [(String, Date)] = [("start", Date())]
    defer {
        phases.append(("end", Date()))
        let spans = zip(phases, phases.dropFirst()).map { "\($1.0) \(String(format: "%.1f", $1.1.timeIntervalSince($0.1))) s" }
        print("MountConformanceTests: 100,000 entries on \(p.side): \(spans.joined(separator: ", "))")
    }
    var failures = 0
    for index in 0 ..< count {
        let fd = open(directory + "/file-\(index)", O_CREAT | O_EXCL | O_WRONLY, 0o644)
        if fd < 0 { failures += 1 } else { close(fd) }
    }
    #expect(failures == 0, "\(failures) creates failed, the last with \(errnoName(errno))")
    phases.append(("created", Date()))
    let listed = try names(in: directory)
    #expect(listed.count == count, "listed \(listed.count)")
    #expect(Set(listed) == Set((0 ..< count).map { "file-\($0)" }), "every name listed once")
    phases.append(("listed", Date()))
    let counted = try p.sh("ls -f many | wc -l; find many -type f | wc -l")
    phases.append(("ls and find", Date()))
    #expect(counted == "\(count + 2)\n\(count)\n", "\(counted)")
    for index in stride(from: 7, to: count, by: 997) {
        #expect((try? status(directory + "/file-\(index)").st_mode) == S_IFREG | 0o644, "file-\(index)")
    }
    #expect(errnoOf { _ = try status(directory + "/file-\(count)") } == ENOENT)
    #expect(errnoOf { try writeFile(directory + "/file-500", [], flags: O_CREAT | O_EXCL | O_WRONLY) } == EEXIST)
    for index in stride(from: 0, to: count, by: 1000) {
        try writeFile(directory + "/file-\(index)", bytes("\(index)"), flags: O_WRONLY)
        try check(Int(rename(directory + "/file-\(index)", directory + "/renamed-\(index)")), "rename")
    }
    #expect(try readFile(directory + "/renamed-42000") == bytes("42000"))
    #expect(try status(directory).st_nlink == 2)
    phases.append(("statted and renamed", Date()))
    var removed = 0
    for name in try names(in: directory) where unlink(directory + "/" + name) == 0 { removed += 1 }
    phases.append(("removed", Date()))
    #expect(removed == count)
    #expect(try names(in: directory) == [])
    #expect(rmdir(directory) == 0, "\(errnoName(errno))")
}

/// xattrs: set, get, list, remove; XATTR_CREATE and XATTR_REPLACE; the size probe and ERANGE;
/// empty and 64 KiB values; name lengths; namespaces; directories and symbolic links.
private func extendedAttributes(_ p: Place) throws {
    let file = p.path("file")
    try writeFile(file, bytes("x"))
    func get(_ path: String, _ name: String, follow: Bool = true) -> String {
        var value = [UInt8](repeating: 0, count: 70000)
        let count = follow ? getxattr(path, name, &value, value.count) : lgetxattr(path, name, &value, value.count)
        if count < 0 { return errnoName(errno) }
        let bytes = value.prefix(count)
        return count <= 32 ? "\"\(String(decoding: bytes, as: UTF8.self))\"" : "\(count) bytes summing to \(bytes.reduce(0) { $0 &+ Int($1) })"
    }
    func list(_ path: String, follow: Bool = true) -> String {
        let size = follow ? listxattr(path, nil, 0) : llistxattr(path, nil, 0)
        if size < 0 { return errnoName(errno) }
        var buffer = [CChar](repeating: 0, count: max(1, size))
        let got = follow ? listxattr(path, &buffer, buffer.count) : llistxattr(path, &buffer, buffer.count)
        if got < 0 { return errnoName(errno) }
        let names = buffer.prefix(got).split(separator: 0).map { String(cString: Array($0) + [0]) }.sorted()
        return "\(got) bytes: \(names)"
    }
    p.note("list, none: \(list(file))")
    p.note("get missing: \(get(file, "user.missing"))")
    p.note("set user.a", setxattr(file, "user.a", "alpha", 5, 0))
    p.note("set user.empty", setxattr(file, "user.empty", "", 0, 0))
    p.note("get user.a: \(get(file, "user.a")); probe \(getxattr(file, "user.a", nil, 0)); user.empty: \(get(file, "user.empty"))")
    var small = [UInt8](repeating: 0, count: 2)
    p.note("get into 2 bytes", getxattr(file, "user.a", &small, 2))
    p.note("CREATE over an existing one", setxattr(file, "user.a", "b", 1, Int32(XATTR_CREATE)))
    p.note("REPLACE a missing one", setxattr(file, "user.b", "b", 1, Int32(XATTR_REPLACE)))
    p.note("REPLACE an existing one", setxattr(file, "user.a", "beta", 4, Int32(XATTR_REPLACE)))
    p.note("CREATE a new one", setxattr(file, "user.b", "b", 1, Int32(XATTR_CREATE)))
    p.note("both flags", setxattr(file, "user.c", "c", 1, Int32(XATTR_CREATE | XATTR_REPLACE)))
    p.note("user.a: \(get(file, "user.a")); \(list(file))")
    var listSmall = [CChar](repeating: 0, count: 4)
    p.note("list into 4 bytes", listxattr(file, &listSmall, 4))
    let large = pattern(65536, seed: 3)
    p.note("set a 64 KiB value", setxattr(file, "user.large", large, large.count, 0))
    p.note("user.large: \(get(file, "user.large"))")
    p.note("set a value over 64 KiB", setxattr(file, "user.huge", large + [1], large.count + 1, 0))
    p.note("set a 255-byte name", setxattr(file, "user." + String(repeating: "n", count: 250), "v", 1, 0))
    p.note("set a 256-byte name", setxattr(file, "user." + String(repeating: "n", count: 251), "v", 1, 0))
    p.note("set an empty name", setxattr(file, "", "v", 1, 0))
    p.note("set in no namespace", setxattr(file, "plain", "v", 1, 0))
    p.note("set user. alone", setxattr(file, "user.", "v", 1, 0))
    p.note("set trusted.t as root", setxattr(file, "trusted.t", "tv", 2, 0))
    if p.onShale {
        // Shale has no POSIX ACLs: EOPNOTSUPP, so that tools (cp -a) fall back to chmod.
        let acl: [UInt8] = [2, 0, 0, 0, 1, 0, 7, 0, 0xFF, 0xFF, 0xFF, 0xFF, 4, 0, 5, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x20, 0, 5, 0, 0xFF, 0xFF, 0xFF, 0xFF]
        #expect(setxattr(file, "system.posix_acl_access", acl, acl.count, 0) == -1 && errno == EOPNOTSUPP)
        #expect(getxattr(file, "system.posix_acl_access", nil, 0) == -1 && errno == EOPNOTSUPP)
    }
    p.note("trusted.t: \(get(file, "trusted.t"))")
    for index in 0 ..< 50 { setxattr(file, "user.many\(index)", "\(index)", "\(index)".utf8.count, 0) }
    p.note(list(file))
    p.note("user.many49: \(get(file, "user.many49"))")
    p.note("remove user.a", removexattr(file, "user.a"))
    p.note("remove it again", removexattr(file, "user.a"))
    p.note("user.a: \(get(file, "user.a"))")
    #expect(get(file, "user.b") == "\"b\"" && get(file, "user.a") == "ENODATA", "\(p.side)")
    for index in 0 ..< 50 { removexattr(file, "user.many\(index)") }
    p.note(list(file))

    // Directories and symbolic links.
    p.note("mkdir d", mkdir(p.path("d"), 0o755))
    p.note("set on a directory", setxattr(p.path("d"), "user.d", "dir", 3, 0))
    p.note("d: \(get(p.path("d"), "user.d")); \(list(p.path("d")))")
    p.note("symlink", symlink("file", p.path("link")))
    p.note("set user.* on a symlink itself", lsetxattr(p.path("link"), "user.l", "l", 1, 0))
    p.note("set trusted.* on a symlink itself", lsetxattr(p.path("link"), "trusted.l", "l", 1, 0))
    p.note("through the link: \(get(p.path("link"), "user.b")); the link itself: \(list(p.path("link"), follow: false))")
    p.note("trusted.l: \(get(p.path("link"), "trusted.l", follow: false))")
    // Kept across a rename, gone with the file.
    p.note("rename", rename(file, p.path("renamed")))
    p.note("renamed user.b: \(get(p.path("renamed"), "user.b")); user.large: \(get(p.path("renamed"), "user.large"))")
}

/// utimensat with explicit times, UTIME_NOW, UTIME_OMIT, on symbolic links; futimens; what
/// write, truncate, chmod, link, rename, create and remove do to mtime and ctime.
private func timestamps(_ p: Place) throws {
    let file = p.path("file")
    try writeFile(file, bytes("x"))
    func times(_ path: String, follow: Bool = false) -> (atime: timespec, mtime: timespec, ctime: timespec) {
        let info = (try? status(path, follow: follow)) ?? stat()
        return (info.st_atim, info.st_mtim, info.st_ctim)
    }
    func show(_ time: timespec) -> String { "\(time.tv_sec).\(time.tv_nsec)" }
    func later(_ a: timespec, _ b: timespec) -> Bool { (a.tv_sec, a.tv_nsec) > (b.tv_sec, b.tv_nsec) }
    func near(_ time: timespec) -> Bool { abs(time.tv_sec - Int(Date().timeIntervalSince1970)) < 30 }
    func settle() { usleep(20_000) }  // so that "now" moves past the last change on every clock

    var given = [timespec(tv_sec: 1_000_000_000, tv_nsec: 111_111_111), timespec(tv_sec: 1_200_000_000, tv_nsec: 999_999_999)]
    p.note("utimensat explicit", utimensat(AT_FDCWD, file, &given, 0))
    var now = times(file)
    p.note("atime \(show(now.atime)) mtime \(show(now.mtime)); ctime is recent: \(near(now.ctime))")
    var omitAccess = [timespec(tv_sec: 0, tv_nsec: MoreCalls.utimeOmit), timespec(tv_sec: 1_300_000_000, tv_nsec: 5)]
    p.note("UTIME_OMIT atime, explicit mtime", utimensat(AT_FDCWD, file, &omitAccess, 0))
    now = times(file)
    p.note("atime \(show(now.atime)) mtime \(show(now.mtime))")
    settle()
    let before = times(file)
    var nowAccess = [timespec(tv_sec: 0, tv_nsec: MoreCalls.utimeNow), timespec(tv_sec: 0, tv_nsec: MoreCalls.utimeOmit)]
    p.note("UTIME_NOW atime, UTIME_OMIT mtime", utimensat(AT_FDCWD, file, &nowAccess, 0))
    now = times(file)
    p.note("atime now: \(near(now.atime)); mtime kept: \(show(now.mtime)); ctime moved: \(later(now.ctime, before.ctime))")
    var bothNow = [timespec(tv_sec: 0, tv_nsec: MoreCalls.utimeNow), timespec(tv_sec: 0, tv_nsec: MoreCalls.utimeNow)]
    p.note("both UTIME_NOW", utimensat(AT_FDCWD, file, &bothNow, 0))
    now = times(file)
    p.note("atime now: \(near(now.atime)); mtime now: \(near(now.mtime))")
    p.note("utimensat(NULL)", utimensat(AT_FDCWD, file, nil, 0))
    p.note("mtime now: \(near(times(file).mtime))")
    var bothOmit = [timespec(tv_sec: 5, tv_nsec: MoreCalls.utimeOmit), timespec(tv_sec: 5, tv_nsec: MoreCalls.utimeOmit)]
    p.note("utimensat explicit again", utimensat(AT_FDCWD, file, &given, 0))
    p.note("both UTIME_OMIT", utimensat(AT_FDCWD, file, &bothOmit, 0))
    now = times(file)
    p.note("atime \(show(now.atime)) mtime \(show(now.mtime))")
    var invalid = [timespec(tv_sec: 0, tv_nsec: 1_000_000_000), timespec(tv_sec: 0, tv_nsec: 0)]
    p.note("a nanosecond field of 10^9", utimensat(AT_FDCWD, file, &invalid, 0))
    var early = [timespec(tv_sec: -1, tv_nsec: 500), timespec(tv_sec: -86_400 * 365, tv_nsec: 0)]
    p.note("times before 1970", utimensat(AT_FDCWD, file, &early, 0))
    now = times(file)
    p.note("atime \(show(now.atime)) mtime \(show(now.mtime))")
    var far = [timespec(tv_sec: 4_102_444_800, tv_nsec: 1), timespec(tv_sec: 4_102_444_800, tv_nsec: 2)]
    p.note("times in 2100", utimensat(AT_FDCWD, file, &far, 0))
    now = times(file)
    p.note("atime \(show(now.atime)) mtime \(show(now.mtime))")
    #expect(now.mtime.tv_sec == 4_102_444_800 && now.mtime.tv_nsec == 2, "\(p.side)")

    // A symbolic link's own times.
    p.note("symlink", symlink("file", p.path("link")))
    var linkTimes = [timespec(tv_sec: 1_111_111_111, tv_nsec: 1), timespec(tv_sec: 1_222_222_222, tv_nsec: 2)]
    p.note("utimensat AT_SYMLINK_NOFOLLOW", utimensat(AT_FDCWD, p.path("link"), &linkTimes, AT_SYMLINK_NOFOLLOW))
    p.note("link mtime \(show(times(p.path("link")).mtime)); file mtime \(show(times(file).mtime))")
    // futimens on an open file.
    let fd = open(file, O_RDWR)
    var handleTimes = [timespec(tv_sec: 1_400_000_000, tv_nsec: 0), timespec(tv_sec: 1_500_000_000, tv_nsec: 0)]
    p.note("futimens", futimens(fd, &handleTimes))
    p.note("mtime \(show(times(file).mtime))")

    // What changes move mtime and ctime.
    func after(_ label: String, _ path: String, _ change: () -> Int32) {
        settle()
        let old = times(path)
        let result = change()
        settle()
        let new = times(path)
        p.note("\(label): \(result < 0 ? errnoName(errno) : "ok"); mtime moved \(later(new.mtime, old.mtime)), ctime moved \(later(new.ctime, old.ctime))")
    }
    after("write", file) { Int32(write(fd, "yy", 2)) }
    after("ftruncate", file) { ftruncate(fd, 1) }
    after("ftruncate to the same size", file) { ftruncate(fd, 1) }
    after("chmod", file) { chmod(file, 0o600) }
    after("chown", file) { chown(file, 1, 1) }
    after("setxattr", file) { setxattr(file, "user.t", "t", 1, 0) }
    after("link", file) { link(file, p.path("hard")) }
    after("rename (the file)", file) { rename(p.path("hard"), p.path("hard2")) }
    after("unlink a link (the file)", file) { unlink(p.path("hard2")) }
    after("pread", file) { var b = [UInt8](repeating: 0, count: 1); return Int32(pread(fd, &b, 1, 0)) }
    close(fd)
    p.note("mkdir d", mkdir(p.path("d"), 0o755))
    let d = p.path("d")
    after("create in d (d)", d) { open(d + "/f", O_CREAT | O_WRONLY, 0o644).closing() }
    after("rename within d (d)", d) { rename(d + "/f", d + "/g") }
    after("unlink in d (d)", d) { unlink(d + "/g") }
    after("mkdir in d (d)", d) { mkdir(d + "/sub", 0o755) }
    after("rmdir in d (d)", d) { rmdir(d + "/sub") }
    after("symlink in d (d)", d) { symlink("x", d + "/s") }
    after("stat (d)", d) { var info = stat(); return stat(d, &info) }
}

/// Files whose last name is gone while they are open: written, read, truncated, replaced by a
/// rename, a directory removed while open; gone for good once closed.
private func openUnlinked(_ p: Place) throws {
    let fd = open(p.path("gone"), O_RDWR | O_CREAT, 0o644)
    try check(Int(fd), "open")
    p.note("unlink while open", unlink(p.path("gone")))
    let data = pattern(1 << 20, seed: 9)
    p.note("write 1 MiB: \(pwrite(fd, data, data.count, 0))")
    var back = [UInt8](repeating: 0, count: data.count)
    p.note("read it back: \(pread(fd, &back, back.count, 0)), the same: \(back == data)")
    var info = stat()
    p.note("fstat", fstat(fd, &info))
    p.note("links \(info.st_nlink) size \(info.st_size) mode \(String(info.st_mode, radix: 8))")
    p.note("fchmod", fchmod(fd, 0o600))
    p.note("ftruncate", ftruncate(fd, 1000))
    fstat(fd, &info)
    p.note("links \(info.st_nlink) size \(info.st_size) mode \(String(info.st_mode, radix: 8))")
    p.note("the name is free: \(errnoOf { try writeFile(p.path("gone"), bytes("new"), flags: O_CREAT | O_EXCL | O_WRONLY) })")
    p.note("the new file reads \(String(decoding: (try? readFile(p.path("gone"))) ?? [], as: UTF8.self))")
    #expect(pread(fd, &back, 10, 0) == 10 && Array(back.prefix(10)) == Array(data.prefix(10)), "\(p.side): the old file is still open")
    p.note("close", close(fd))

    // Replaced by rename while open: the old contents stay readable through the descriptor.
    try writeFile(p.path("a"), bytes("old contents"))
    try writeFile(p.path("b"), bytes("new"))
    let old = open(p.path("a"), O_RDONLY)
    p.note("rename b over a", rename(p.path("b"), p.path("a")))
    var some = [UInt8](repeating: 0, count: 32)
    let count = pread(old, &some, 32, 0)
    p.note("the replaced file reads \(String(decoding: some.prefix(max(0, count)), as: UTF8.self))")
    fstat(old, &info)
    p.note("links \(info.st_nlink)")
    close(old)

    // Two descriptors of one unlinked file, one of them O_APPEND: both write to it.
    let shared = open(p.path("twice"), O_RDWR | O_CREAT, 0o644)
    let second = open(p.path("twice"), O_RDWR | O_APPEND)
    p.note("unlink twice", unlink(p.path("twice")))
    p.note("write through one: \(write(shared, "12345", 5)); append through the other: \(write(second, "678", 3))")
    var both = [UInt8](repeating: 0, count: 16)
    let read = pread(shared, &both, 16, 0)
    p.note("reads \(String(decoding: both.prefix(max(0, read)), as: UTF8.self))")
    close(second)
    close(shared)

    // A directory removed while open: empty listing, fstat works.
    p.note("mkdir d", mkdir(p.path("d"), 0o755))
    let directory = open(p.path("d"), O_RDONLY | O_DIRECTORY)
    p.note("rmdir while open", rmdir(p.path("d")))
    p.note("fstat the removed directory", fstat(directory, &info))
    p.note("links \(info.st_nlink)")
    p.note("create in it", openat(directory, "x", O_CREAT | O_WRONLY, 0o644).closing())
    close(directory)
    p.note("names: \((try? names(in: p.root)) ?? [])")
}

/// Two processes append fixed-size records to one file through O_APPEND descriptors at once:
/// every record lands whole, none is lost or interleaved, each writer's in its order.
private func appendFromTwoProcesses(_ p: Place) throws {
    let records = 3000
    // Each record is 64 bytes: writer letter, sequence number, padding, newline.
    let writer = """
        perl -e 'use Fcntl; sysopen(my $f, "log", O_WRONLY | O_APPEND | O_CREAT, 0644) or die "open: $!";
            for my $i (1 .. \(records)) { my $r = sprintf("%s %08d %s\\n", $ARGV[0], $i, "." x 52);
                my $n = syswrite($f, $r); die "write: $!" unless defined $n && $n == 64 } close($f) or die'
        """
    let out = try p.sh("""
        : > log
        \(writer) A & a=$!
        \(writer) B & b=$!
        wait $a; wait $b
        stat -c %s log
        grep -c '^A [0-9]\\{8\\} \\.\\{52\\}$' log
        grep -c '^B [0-9]\\{8\\} \\.\\{52\\}$' log
        grep '^A' log | cut -c3-10 | sort -c -n && echo A in order
        grep '^B' log | cut -c3-10 | sort -c -n && echo B in order
        grep '^A' log | cut -c3-10 | uniq | wc -l
        """, seconds: 120)
    p.note(out)
    #expect(out == "\(records * 128)\n\(records)\n\(records)\nA in order\nB in order\n\(records)\n", "\(p.side): \(out)")
}

/// statfs: block size, totals and free counts that move with use, the name limit.
private func statfsTotals(_ p: Place) throws {
    var before = statfs()
    try check(Int(statfs(p.root, &before)), "statfs")
    #expect(before.f_bsize == 4096 && before.f_frsize == 4096 && before.f_namelen == 255)
    // 64 MiB of NVM: what is left for data after the metadata and the logs.
    #expect(before.f_blocks > 8192 && before.f_blocks < 16384, "\(before.f_blocks) blocks")
    #expect(before.f_bfree <= before.f_blocks && before.f_bavail == before.f_bfree && before.f_bfree > before.f_blocks / 2)
    #expect(before.f_files > 1000 && before.f_ffree < before.f_files)
    // 16 MiB written: the log (1 MiB) holds little of it, so most is digested and counted used.
    try writeFile(p.path("data"), pattern(16 << 20, seed: 1))
    var during = statfs()
    try check(Int(statfs(p.root, &during)), "statfs")
    #expect(Int(before.f_bfree) - Int(during.f_bfree) >= 3072, "at least 12 MiB of 16 taken: \(before.f_bfree) → \(during.f_bfree)")
    #expect(during.f_blocks == before.f_blocks)
    // df agrees with statfs.
    let df = try p.sh("df -B 4096 --output=size,avail . | tail -n 1")
    let fields = df.split(separator: " ").compactMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    #expect(fields.count == 2 && fields[0] == UInt64(during.f_blocks), "df: \(df)")
    #expect(unlink(p.path("data")) == 0)
    // Creates use inodes. Once everything is digested (a remount), the inodes are counted and
    // the deleted file's blocks are free again.
    for index in 0 ..< 2000 { try writeFile(p.path("f\(index)"), []) }
    try p.remount?()
    var after = statfs()
    try check(Int(statfs(p.root, &after)), "statfs")
    #expect(after.f_files == before.f_files && after.f_blocks == before.f_blocks)
    #expect(before.f_ffree >= after.f_ffree + 2000, "2,000 inodes taken: \(before.f_ffree) → \(after.f_ffree)")
    #expect(after.f_bfree + 1024 >= before.f_bfree, "the 16 MiB came back: \(before.f_bfree) → \(after.f_bfree)")
    // The volume's own report: `shale status` (read-only while mounted) names the same NVM data blocks.
    if let fixture = p.fixture {
        let report = try ShaleCommand.run(["status", fixture.scratch.directory])
        #expect(report.status == 0, "\(report.all)")
        let nvm = report.stdout.split(separator: "\n").first { $0.hasPrefix("  nvm ") || $0.hasPrefix("nvm ") } ?? ""
        #expect(nvm.contains(" " + ByteSize.format(UInt64(before.f_blocks) * 4096) + " "), "status's NVM data: \(report.stdout)")
        #expect(report.stdout.contains("capacity \(before.f_files - 1)"), "status's inode capacity: \(report.stdout)")
    }
}

/// A name of 255 bytes works for every call that makes or takes a name; 256 is ENAMETOOLONG.
private func nameLengths(_ p: Place) throws {
    let longest = String(repeating: "n", count: 255)
    let tooLong = String(repeating: "n", count: 256)
    let multibyte = String(repeating: "é", count: 127) + "x"  // 255 bytes of UTF-8
    try writeFile(p.path("source"), bytes("s"))
    for (label, name) in [("255", longest), ("255 in UTF-8", multibyte), ("256", tooLong)] {
        p.note("create \(label): \(errnoOf { try writeFile(p.path(name), bytes("x"), flags: O_CREAT | O_EXCL | O_WRONLY) })")
        p.note("stat \(label): \(errnoOf { _ = try status(p.path(name)) })")
        p.note("mkdir \(label)", mkdir(p.path("d" + name.dropFirst()), 0o755))
        p.note("symlink \(label)", symlink("source", p.path("s" + name.dropFirst())))
        p.note("link \(label)", link(p.path("source"), p.path("l" + name.dropFirst())))
        p.note("rename to \(label)", rename(p.path("source"), p.path("r" + name.dropFirst())))
        rename(p.path("r" + name.dropFirst()), p.path("source"))
        p.note("mknod fifo \(label)", mkfifo(p.path("f" + name.dropFirst()), 0o644))
        p.note("unlink \(label)", unlink(p.path(name)))
    }
    p.note("a symlink whose target has a 256-byte component", symlink(tooLong, p.path("dangling")))
    p.note("stat through it: \(errnoOf { _ = try status(p.path("dangling")) })")
    p.note("names: \((try? names(in: p.root).map { "\($0.prefix(2))…\($0.utf8.count)" }) ?? [])")
    #expect(errnoOf { try writeFile(p.path(tooLong), []) } == ENAMETOOLONG && (try? status(p.path("d" + longest.dropFirst()))) != nil,
            "\(p.side)")
    // A path of 4,095 bytes resolves; 4,096 is ENAMETOOLONG (PATH_MAX counts the NUL).
    var path = p.root
    try check(Int(mkdir(p.path("deep"), 0o755)), "mkdir")
    path = p.path("deep")
    while path.utf8.count + 101 < 4096 - 8 {
        path += "/" + String(repeating: "p", count: 100)
        try check(Int(mkdir(path, 0o755)), "mkdir \(path.utf8.count)")
    }
    let room = 4095 - path.utf8.count - 1
    let exact = path + "/" + String(repeating: "q", count: room)
    p.note("a path of \(exact.utf8.count) bytes: \(errnoOf { try writeFile(exact, bytes("deep")) })")
    p.note("one more byte: \(errnoOf { try writeFile(exact + "q", bytes("deep")) })")
    p.note("rm -rf deep: \(try p.sh("rm -rf deep && echo done"))")
}

/// Every byte but "/" and NUL in a name: one name per byte, one name of all of them (in two
/// parts, as a name is at most 255 bytes), bytes that are not UTF-8; created, listed back byte
/// for byte, renamed, removed.
private func anyByteNames(_ p: Place) throws {
    let every = (1 ... 255).map { UInt8($0) }.filter { $0 != 0x2F }
    var made: [[UInt8]] = []
    for byte in every where byte != 0x2E {  // "." alone is the directory itself
        made.append([byte])
    }
    made.append([0x2E, 0x2E, 0x2E])
    made.append(Array(every.prefix(127)))
    made.append(Array(every.dropFirst(127)))
    made.append([0xFF, 0xFE, 0x80, 0xC0, 0x0A, 0x09, 0x20])
    made.append([0x2D, 0x2D, 0x68, 0x65, 0x6C, 0x70])  // "--help"
    var failed: [[UInt8]] = []
    for name in made {
        let fd = open(rawPath(p.root, name), O_CREAT | O_EXCL | O_WRONLY, 0o644)
        if fd < 0 { failed.append(name); continue }
        _ = write(fd, name, name.count)
        close(fd)
    }
    p.note("failed creates: \(failed.count)")
    #expect(failed.isEmpty, "\(p.side): \(failed)")
    let listed = try rawNames(in: p.root)
    let expected = made.sorted { $0.lexicographicallyPrecedes($1) }
    p.note("listed \(listed.count), exactly the names made: \(listed == expected)")
    #expect(listed == expected, "\(p.side): \(listed.count) listed, \(expected.count) made")
    var wrong = 0
    for name in made {
        let fd = open(rawPath(p.root, name), O_RDONLY)
        var buffer = [UInt8](repeating: 0, count: 300)
        let count = fd < 0 ? -1 : read(fd, &buffer, buffer.count)
        if fd >= 0 { close(fd) }
        if count != name.count || Array(buffer.prefix(count)) != name { wrong += 1 }
    }
    p.note("files whose contents are not their name: \(wrong)")
    #expect(wrong == 0)
    // Rename each to its name with "x" in front, and back; then remove them all.
    var renamed = 0
    for name in made where name.count < 255 {
        if rename(rawPath(p.root, name), rawPath(p.root, [0x78] + name)) == 0,
           rename(rawPath(p.root, [0x78] + name), rawPath(p.root, name)) == 0 { renamed += 1 }
    }
    p.note("renamed and back: \(renamed)")
    p.note("ls lists \(try p.sh("ls -A | wc -l").trimmingCharacters(in: .whitespacesAndNewlines)) names")
    var removed = 0
    for name in made where unlink(rawPath(p.root, name)) == 0 { removed += 1 }
    p.note("removed \(removed); left \(try rawNames(in: p.root).count)")
    #expect(removed == made.count)
}

/// FIFOs and device nodes: made with mknod, typed and numbered in stat, a FIFO carrying data
/// between two processes; devices cannot be opened (the mount and tmpfs here are nodev).
private func specialFiles(_ p: Place) throws {
    p.note("mkfifo", mkfifo(p.path("fifo"), 0o640))
    p.note("fifo — \(describe(p.path("fifo")))")
    p.note("mknod a character device 1:3", mknod(p.path("null"), S_IFCHR | 0o666, makeDevice(1, 3)))
    p.note("mknod a block device 7:0", mknod(p.path("loop"), S_IFBLK | 0o600, makeDevice(7, 0)))
    p.note("mknod a socket", mknod(p.path("socket"), S_IFSOCK | 0o755, 0))
    p.note("mknod a regular file", mknod(p.path("regular"), S_IFREG | 0o600, 0))
    for name in ["null", "loop", "socket", "regular"] {
        let info = (try? status(p.path(name), follow: false)) ?? stat()
        p.note("\(name) — \(describe(p.path(name))) rdev \(deviceMajor(info.st_rdev)):\(deviceMinor(info.st_rdev))")
    }
    p.note("open the device", open(p.path("null"), O_WRONLY).closing())
    p.note("mknod over an existing name", mknod(p.path("fifo"), S_IFIFO | 0o600, 0))
    let out = try p.sh("(echo through the fifo > fifo &) ; cat fifo; stat -c '%F %a' fifo null loop socket")
    p.note(out)
    #expect(out.hasPrefix("through the fifo\nfifo 640\n"), "\(p.side): \(out)")
    p.note("rename the fifo", rename(p.path("fifo"), p.path("fifo2")))
    p.note("link the device", link(p.path("null"), p.path("null2")))
    p.note("null — \(describe(p.path("null")))")
    for name in ["fifo2", "null", "null2", "loop", "socket", "regular"] { p.note("unlink \(name)", unlink(p.path(name))) }
}
