// Shale against Linux (tmpfs): the same calls on both, the same results and the same trees.
// Table-driven edge cases first, then random sequences with digests and crashes at random
// points. Each edge case also checks the tree after a digest and after a crash.
//
// What is not compared, because POSIX leaves it to the file system: timestamps, st_blocks,
// inode numbers, a directory's st_size, lseek on a directory handle, O_RDONLY|O_TRUNC (never
// generated). tmpfs has no FALLOC_FL_ZERO_RANGE: the Linux side does it as a punched hole
// (LinuxSide.fallocate). EMLINK (65,000 links) is not reached here.

import Testing
import KernFS
import LibFS
import ShaleFormat
import ShaleMedia
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// Linux's open(2) flags, as plain numbers for the tables.
private let rdonly: Int32 = 0, wronly: Int32 = 0o1, rdwr: Int32 = 0o2
private let creat: Int32 = 0o100, excl: Int32 = 0o200, trunc: Int32 = 0o1000, append: Int32 = 0o2000
private let directory: Int32 = 0o200000, nofollow: Int32 = 0o400000
private let seekSet: Int32 = 0, seekCur: Int32 = 1, seekEnd: Int32 = 2, seekData: Int32 = 3, seekHole: Int32 = 4
private let keepSize: UInt32 = 0x01, punchHole: UInt32 = 0x02, zeroRange: UInt32 = 0x10
private let noReplace: UInt32 = 1, exchange: UInt32 = 2

private func b(_ string: String) -> Bytes { bytes(string) }

/// A recognisable pattern: `count` bytes depending on `seed`.
func pattern(_ seed: Int, _ count: Int) -> Bytes {
    (0 ..< count).map { UInt8(truncatingIfNeeded: ($0 &* 31) ^ (seed &* 131) ^ ($0 >> 8) &+ seed) | 1 }
}

/// Setup steps: a file with `data` (handle slot 9 is used and closed).
private func file(_ path: String, _ data: Bytes = [], mode: UInt32 = 0o644) -> [Op] {
    var ops: [Op] = [.open(slot: 9, b(path), flags: wronly | creat | trunc, mode: mode)]
    if !data.isEmpty { ops.append(.pwrite(slot: 9, offset: 0, data: data)) }
    ops.append(.close(slot: 9))
    return ops
}

private func dir(_ paths: String...) -> [Op] { paths.map { .mkdir(b($0), mode: 0o755) } }

/// One edge case: setup, the call under test (its Linux result is asserted too, so the
/// table reads as the specification), and calls after it. Every call's result is compared,
/// then the trees, then the trees after a digest and after a crash.
struct EdgeCase: Sendable, CustomTestStringConvertible {
    var name: String
    var setup: [Op]
    var call: Op
    var expect: Outcome?
    var after: [Op]

    init(_ name: String, _ setup: [Op] = [], _ call: Op, _ expect: Outcome? = nil, then after: [Op] = []) {
        self.name = name
        self.setup = setup
        self.call = call
        self.expect = expect
        self.after = after
    }

    var testDescription: String { name }

    /// Every name the calls use (to look the tree up without listing it).
    var names: [Bytes] {
        var paths: [Bytes] = []
        for op in setup + [call] + after {
            switch op {
            case let .mkdir(path, _), let .rmdir(path), let .unlink(path), let .open(_, path, _, _), let .truncate(path, _),
                 let .readlink(path), let .chmod(path, _), let .chown(path, _, _), let .utimens(path, _), let .setxattr(path, _, _, _),
                 let .getxattr(path, _), let .listxattr(path), let .removexattr(path, _), let .stat(path), let .lstat(path):
                paths.append(path)
            case let .rename(from, to, _), let .link(from, to): paths += [from, to]
            case let .symlink(target, path): paths += [target, path]
            default: break
            }
        }
        var names = Set<Bytes>()
        for path in paths {
            for name in path.split(separator: UInt8(ascii: "/")) where name != [0x2E] && name != [0x2E, 0x2E] { names.insert(Array(name)) }
        }
        return names.sorted { $0.lexicographicallyPrecedes($1) }
    }
}

private func fails(_ code: Int32) -> Outcome { .failed(code) }

extension EdgeCase {
    static let longName = String(repeating: "n", count: 256)
    static let maxName = String(repeating: "m", count: 255)
    /// 4096 bytes: one more than PATH_MAX allows (PATH_MAX counts the NUL).
    static let longPath = String(repeating: "./", count: 2047) + "ab"
    /// 4095 bytes: the longest path.
    static let maxPath = String(repeating: "./", count: 2046) + "abc"
    static let symlinkChain: [Op] = file("target") + (0 ... 40).map { .symlink(target: b($0 == 0 ? "target" : "s\($0 - 1)"), at: b("s\($0)")) }

    static let errors: [EdgeCase] = [
        // ENOENT
        EdgeCase("openOfAMissingFileFailsWithENOENT", [], .open(slot: 0, b("missing"), flags: rdonly, mode: 0), fails(ENOENT)),
        EdgeCase("createInAMissingDirectoryFailsWithENOENT", [], .open(slot: 0, b("nodir/f"), flags: wronly | creat, mode: 0o644), fails(ENOENT)),
        EdgeCase("unlinkOfAMissingNameFailsWithENOENT", [], .unlink(b("missing")), fails(ENOENT)),
        EdgeCase("anEmptyPathFailsWithENOENT", [], .stat([]), fails(ENOENT)),
        EdgeCase("renameOfAMissingSourceFailsWithENOENT", [], .rename(b("missing"), b("x"), flags: 0), fails(ENOENT)),
        EdgeCase("aDanglingSymlinkFailsWithENOENTWhenFollowed", [.symlink(target: b("nowhere"), at: b("l"))], .stat(b("l")), fails(ENOENT)),
        EdgeCase("symlinkWithAnEmptyTargetFailsWithENOENT", [], .symlink(target: [], at: b("l")), fails(ENOENT)),
        // EEXIST
        EdgeCase("mkdirOverAnExistingFileFailsWithEEXIST", file("a"), .mkdir(b("a"), mode: 0o755), fails(EEXIST)),
        EdgeCase("mkdirOverADanglingSymlinkFailsWithEEXIST", [.symlink(target: b("nowhere"), at: b("l"))], .mkdir(b("l"), mode: 0o755), fails(EEXIST)),
        EdgeCase("exclusiveCreateOfAnExistingFileFailsWithEEXIST", file("a"), .open(slot: 0, b("a"), flags: wronly | creat | excl, mode: 0o644), fails(EEXIST)),
        EdgeCase("exclusiveCreateThroughADanglingSymlinkFailsWithEEXIST", [.symlink(target: b("nowhere"), at: b("l"))],
                 .open(slot: 0, b("l"), flags: wronly | creat | excl, mode: 0o644), fails(EEXIST), then: [.lstat(b("nowhere"))]),
        EdgeCase("linkOntoAnExistingNameFailsWithEEXIST", file("a") + file("b"), .link(b("a"), b("b")), fails(EEXIST)),
        EdgeCase("symlinkOverAnExistingNameFailsWithEEXIST", dir("d"), .symlink(target: b("x"), at: b("d")), fails(EEXIST)),
        EdgeCase("mkdirOfDotDotFailsWithEEXIST", dir("d"), .mkdir(b("d/.."), mode: 0o755), fails(EEXIST)),
        // ENOTDIR
        EdgeCase("aFileUsedAsADirectoryFailsWithENOTDIR", file("a"), .stat(b("a/x")), fails(ENOTDIR)),
        EdgeCase("aTrailingSlashOnAFileFailsWithENOTDIR", file("a"), .stat(b("a/")), fails(ENOTDIR)),
        EdgeCase("rmdirOfAFileFailsWithENOTDIR", file("a"), .rmdir(b("a")), fails(ENOTDIR)),
        EdgeCase("renameOfADirectoryOverAFileFailsWithENOTDIR", dir("d") + file("a"), .rename(b("d"), b("a"), flags: 0), fails(ENOTDIR)),
        EdgeCase("openWithODirectoryOnAFileFailsWithENOTDIR", file("a"), .open(slot: 0, b("a"), flags: rdonly | directory, mode: 0), fails(ENOTDIR)),
        EdgeCase("unlinkWithATrailingSlashOnAFileFailsWithENOTDIR", file("a"), .unlink(b("a/")), fails(ENOTDIR)),
        EdgeCase("renameOfAFileWithATrailingSlashFailsWithENOTDIR", file("a"), .rename(b("a/"), b("b"), flags: 0), fails(ENOTDIR)),
        EdgeCase("rmdirOfASymlinkToADirectoryFailsWithENOTDIR", dir("d") + [.symlink(target: b("d"), at: b("l"))], .rmdir(b("l")), fails(ENOTDIR)),
        EdgeCase("mkdirUnderAFileFailsWithENOTDIR", file("a"), .mkdir(b("a/d"), mode: 0o755), fails(ENOTDIR)),
        // EISDIR
        EdgeCase("openingADirectoryForWritingFailsWithEISDIR", dir("d"), .open(slot: 0, b("d"), flags: wronly, mode: 0), fails(EISDIR)),
        EdgeCase("unlinkOfADirectoryFailsWithEISDIR", dir("d"), .unlink(b("d")), fails(EISDIR)),
        EdgeCase("renameOfAFileOverADirectoryFailsWithEISDIR", dir("d") + file("a"), .rename(b("a"), b("d"), flags: 0), fails(EISDIR)),
        EdgeCase("readingADirectoryHandleFailsWithEISDIR", dir("d") + [.open(slot: 0, b("d"), flags: rdonly, mode: 0)], .read(slot: 0, count: 10), fails(EISDIR)),
        EdgeCase("truncateOfADirectoryFailsWithEISDIR", dir("d"), .truncate(b("d"), size: 0), fails(EISDIR)),
        EdgeCase("createWithATrailingSlashFailsWithEISDIR", [], .open(slot: 0, b("new/"), flags: wronly | creat, mode: 0o644), fails(EISDIR)),
        // ENOTEMPTY
        EdgeCase("rmdirOfANonEmptyDirectoryFailsWithENOTEMPTY", dir("d") + file("d/a"), .rmdir(b("d")), fails(ENOTEMPTY)),
        EdgeCase("renameOverANonEmptyDirectoryFailsLikeLinux", dir("d", "e") + file("e/a"), .rename(b("d"), b("e"), flags: 0), fails(ENOTEMPTY)),
        EdgeCase("rmdirOfDotDotFailsWithENOTEMPTY", dir("d", "d/e"), .rmdir(b("d/e/..")), fails(ENOTEMPTY)),
        // ENAMETOOLONG
        EdgeCase("a256ByteNameFailsWithENAMETOOLONG", [], .open(slot: 0, b(longName), flags: wronly | creat, mode: 0o644), fails(ENAMETOOLONG)),
        EdgeCase("a255ByteNameIsFine", [], .open(slot: 0, b(maxName), flags: wronly | creat, mode: 0o644), .done),
        EdgeCase("a256ByteNameInTheMiddleFailsWithENAMETOOLONG", [], .stat(b(longName + "/x")), fails(ENAMETOOLONG)),
        EdgeCase("a4096BytePathFailsWithENAMETOOLONG", file("ab"), .stat(b(longPath)), fails(ENAMETOOLONG)),
        EdgeCase("a4095BytePathIsResolved", file("abc", [7]), .stat(b(maxPath)),
                 .status(StatusSummary(mode: 0o100644, linkCount: 1, uid: getuid(), gid: getgid(), size: 1))),
        EdgeCase("aSymlinkTargetOf4096BytesFailsWithENAMETOOLONG", [], .symlink(target: b(longPath), at: b("l")), fails(ENAMETOOLONG)),
        // EINVAL
        EdgeCase("renamingADirectoryIntoItsOwnSubtreeFailsWithEINVAL", dir("d", "d/e"), .rename(b("d"), b("d/e/f"), flags: 0), fails(EINVAL)),
        EdgeCase("renamingADirectoryOntoItsOwnChildFailsWithEINVAL", dir("d", "d/e"), .rename(b("d"), b("d/e"), flags: 0), fails(EINVAL)),
        EdgeCase("rmdirOfDotFailsWithEINVAL", dir("d"), .rmdir(b("d/.")), fails(EINVAL)),
        EdgeCase("readlinkOfAFileFailsWithEINVAL", file("a"), .readlink(b("a")), fails(EINVAL)),
        EdgeCase("renameWithNoReplaceAndExchangeFailsWithEINVAL", file("a") + file("b"), .rename(b("a"), b("b"), flags: noReplace | exchange), fails(EINVAL)),
        EdgeCase("lseekToANegativeOffsetFailsWithEINVAL", file("a", [1]) + [.open(slot: 0, b("a"), flags: rdonly, mode: 0)],
                 .lseek(slot: 0, offset: -1, whence: seekSet), fails(EINVAL)),
        EdgeCase("ftruncateOfAReadOnlyHandleFailsWithEINVAL", file("a", [1]) + [.open(slot: 0, b("a"), flags: rdonly, mode: 0)],
                 .ftruncate(slot: 0, size: 0), fails(EINVAL)),
        EdgeCase("openWithOCreatAndODirectoryFailsWithEINVAL", [], .open(slot: 0, b("n"), flags: rdonly | creat | directory, mode: 0o644),
                 fails(EINVAL), then: [.lstat(b("n"))]),
        // EBUSY: "." and ".." cannot be renamed or be renamed over.
        EdgeCase("renameOfDotFailsWithEBUSY", dir("d"), .rename(b("d/."), b("x"), flags: 0), fails(EBUSY)),
        EdgeCase("renameOntoDotDotFailsWithEBUSY", dir("d") + file("a"), .rename(b("a"), b("d/.."), flags: 0), fails(EBUSY)),
        // ELOOP
        EdgeCase("aSymlinkLoopFailsWithELOOP", [.symlink(target: b("l2"), at: b("l1")), .symlink(target: b("l1"), at: b("l2"))],
                 .stat(b("l1")), fails(ELOOP)),
        EdgeCase("aSelfLoopFailsWithELOOP", [.symlink(target: b("s"), at: b("s"))], .open(slot: 0, b("s"), flags: rdonly, mode: 0), fails(ELOOP)),
        EdgeCase("oNoFollowOnASymlinkFailsWithELOOP", file("a") + [.symlink(target: b("a"), at: b("l"))],
                 .open(slot: 0, b("l"), flags: rdonly | nofollow, mode: 0), fails(ELOOP)),
        EdgeCase("oNoFollowWithODirectoryOnASymlinkFailsWithENOTDIR", dir("d") + [.symlink(target: b("d"), at: b("l"))],
                 .open(slot: 0, b("l"), flags: rdonly | directory | nofollow, mode: 0), fails(ENOTDIR)),
        EdgeCase("oNoFollowCreateOnASymlinkFailsWithELOOP", file("a") + [.symlink(target: b("a"), at: b("l"))],
                 .open(slot: 0, b("l"), flags: wronly | creat | nofollow, mode: 0o644), fails(ELOOP)),
        EdgeCase("fortySymlinkHopsResolve", symlinkChain, .stat(b("s39")),
                 .status(StatusSummary(mode: 0o100644, linkCount: 1, uid: getuid(), gid: getgid(), size: 0))),
        EdgeCase("fortyOneSymlinkHopsFailWithELOOP", symlinkChain, .stat(b("s40")), fails(ELOOP)),
        // EBADF
        EdgeCase("writeOnAReadOnlyHandleFailsWithEBADF", file("a", [1]) + [.open(slot: 0, b("a"), flags: rdonly, mode: 0)],
                 .pwrite(slot: 0, offset: 0, data: [2]), fails(EBADF)),
        EdgeCase("readOnAWriteOnlyHandleFailsWithEBADF", file("a", [1]) + [.open(slot: 0, b("a"), flags: wronly, mode: 0)],
                 .pread(slot: 0, offset: 0, count: 1), fails(EBADF)),
        // EPERM
        EdgeCase("linkToADirectoryFailsWithEPERM", dir("d"), .link(b("d"), b("e")), fails(EPERM)),
        EdgeCase("linkOfADirectoryOntoAnExistingNameFailsWithEEXISTFirst", dir("d"), .link(b("d"), b("./d")), fails(EEXIST)),
        EdgeCase("linkToAMissingNameWithATrailingSlashFailsWithENOENT", file("a"), .link(b("a"), b("b/")), fails(ENOENT)),
        EdgeCase("symlinkAtAMissingNameWithATrailingSlashFailsWithENOENT", [], .symlink(target: b("a"), at: b("b/")), fails(ENOENT)),
        EdgeCase("symlinkAtAnExistingNameWithATrailingSlashFailsWithEEXIST", dir("d"), .symlink(target: b("a"), at: b("d/")), fails(EEXIST)),
    ]

    static let namespace: [EdgeCase] = [
        EdgeCase("aTrailingSlashOnADirectoryIsFine", dir("d"), .stat(b("d/")), .status(StatusSummary(mode: 0o040755, linkCount: 2, uid: getuid(), gid: getgid(), size: 0))),
        EdgeCase("mkdirWithATrailingSlashMakesTheDirectory", [], .mkdir(b("n/"), mode: 0o700), .done),
        EdgeCase("dotAndDotDotComponentsResolve", dir("d", "d/e") + file("d/e/../f", [1, 2]), .stat(b("./d/./e/../f")),
                 .status(StatusSummary(mode: 0o100644, linkCount: 1, uid: getuid(), gid: getgid(), size: 2))),
        EdgeCase("lstatWithATrailingSlashFollowsASymlinkToADirectory", dir("d") + [.symlink(target: b("d"), at: b("l"))], .lstat(b("l/")),
                 .status(StatusSummary(mode: 0o040755, linkCount: 2, uid: getuid(), gid: getgid(), size: 0))),
        EdgeCase("symlinksToDirectoriesResolveInTheMiddleOfAPath", dir("d", "d/e") + file("d/e/f", [3]) + [.symlink(target: b("d/e"), at: b("l"))],
                 .pread(slot: 1, offset: 0, count: 1), fails(EBADF), then: [.open(slot: 1, b("l/f"), flags: rdonly, mode: 0), .pread(slot: 1, offset: 0, count: 1)]),
        EdgeCase("aSymlinkToAFileWithATrailingSlashFailsWithENOTDIR", file("a") + [.symlink(target: b("a/"), at: b("l"))], .stat(b("l")), fails(ENOTDIR),
                 then: [.open(slot: 0, b("l"), flags: rdonly, mode: 0), .lstat(b("l"))]),
        EdgeCase("relativeSymlinkTargetsResolveFromTheLinksDirectory", dir("d") + file("d/t", [5]) + [.symlink(target: b("../d/t"), at: b("d/l"))],
                 .stat(b("d/l")), .status(StatusSummary(mode: 0o100644, linkCount: 1, uid: getuid(), gid: getgid(), size: 1))),
        EdgeCase("namesWithEveryByteButSlashAndNULWork",
                 (1 ... 255).filter { $0 != 0x2F && $0 != 0x2E }.flatMap { byte -> [Op] in
                     [.open(slot: 0, [UInt8(byte), UInt8(byte), 0x41], flags: wronly | creat, mode: 0o600), .pwrite(slot: 0, offset: 0, data: [UInt8(byte)])]
                 } + [
                     .mkdir((1 ... 127).filter { $0 != 0x2F }.map { UInt8($0) }, mode: 0o755),
                     .mkdir((128 ... 255).map { UInt8($0) }, mode: 0o755),
                     .symlink(target: (128 ... 255).map { UInt8($0) }, at: [0xFF, 0x01]),
                     .mkdir([0x2E, 0x2E, 0x2E], mode: 0o755),
                     .mkdir([0x2E, 0x41], mode: 0o755),
                 ],
                 .listDirectory([])),
        EdgeCase("aDotNameIsTheDirectoryItself", dir("d"), .mkdir(b("d/."), mode: 0o755), fails(EEXIST)),
    ]

    static let files: [EdgeCase] = [
        EdgeCase("exclusiveCreateMakesANewFile", [], .open(slot: 0, b("a"), flags: wronly | creat | excl, mode: 0o640), .done,
                 then: [.pwrite(slot: 0, offset: 0, data: [1, 2, 3])]),
        EdgeCase("oTruncEmptiesTheFile", file("a", pattern(1, 5000)), .open(slot: 0, b("a"), flags: wronly | trunc, mode: 0), .done,
                 then: [.fstat(slot: 0), .pwrite(slot: 0, offset: 10, data: [9])]),
        EdgeCase("oAppendWritesGoToTheEndEvenWithPwrite", file("a", b("hello")) + [.open(slot: 0, b("a"), flags: wronly | append, mode: 0)],
                 .write(slot: 0, data: b(" world")), .number(6),
                 then: [.pwrite(slot: 0, offset: 0, data: b("!")), .lseek(slot: 0, offset: 0, whence: seekCur), .fstat(slot: 0)]),
        EdgeCase("oCreatThroughADanglingSymlinkCreatesTheTarget", dir("d") + [.symlink(target: b("t"), at: b("d/l"))],
                 .open(slot: 0, b("d/l"), flags: wronly | creat, mode: 0o600), .done, then: [.pwrite(slot: 0, offset: 0, data: [4]), .lstat(b("d/t"))]),
        EdgeCase("oCreatThroughASymlinkChainCreatesTheFinalTarget", dir("d") + [.symlink(target: b("d/m"), at: b("l")), .symlink(target: b("t"), at: b("d/m"))],
                 .open(slot: 0, b("l"), flags: rdwr | creat, mode: 0o640), .done, then: [.lstat(b("d/t")), .stat(b("l"))]),
        EdgeCase("oCreatOnAnExistingDirectoryWithATrailingSlashFailsWithEISDIR", dir("d"),
                 .open(slot: 0, b("d/"), flags: rdonly | creat, mode: 0o644), fails(EISDIR)),
        EdgeCase("oCreatThroughASymlinkToAMissingNameWithASlashFailsWithEISDIR", [.symlink(target: b("t/"), at: b("l"))],
                 .open(slot: 0, b("l"), flags: wronly | creat, mode: 0o644), fails(EISDIR)),
        EdgeCase("readAndWriteMoveTheOffset", file("a", pattern(2, 100)) + [.open(slot: 0, b("a"), flags: rdwr, mode: 0)],
                 .read(slot: 0, count: 30), .bytes(Array(pattern(2, 100)[0 ..< 30])),
                 then: [.write(slot: 0, data: [0xAA, 0xBB]), .read(slot: 0, count: 200), .read(slot: 0, count: 10),
                        .lseek(slot: 0, offset: -10, whence: seekEnd), .read(slot: 0, count: 100)]),
        EdgeCase("aWriteBeyondTheEndLeavesAHoleOfZeros", file("a", b("abc")) + [.open(slot: 0, b("a"), flags: rdwr, mode: 0)],
                 .pwrite(slot: 0, offset: 100_000, data: b("xyz")), .number(3),
                 then: [.pread(slot: 0, offset: 0, count: 200_000), .fstat(slot: 0)]),
        EdgeCase("truncateGrowsWithZerosAndShrinks", file("a", pattern(3, 10000)), .truncate(b("a"), size: 3000), .done,
                 then: [.truncate(b("a"), size: 9000), .open(slot: 0, b("a"), flags: rdonly, mode: 0), .pread(slot: 0, offset: 0, count: 20000)]),
        EdgeCase("shrinkingThenGrowingZeroesTheTailOfTheLastBlock", file("a", pattern(4, 8192)) + [.open(slot: 0, b("a"), flags: rdwr, mode: 0)],
                 .ftruncate(slot: 0, size: 5000), .done,
                 then: [.ftruncate(slot: 0, size: 8192), .pread(slot: 0, offset: 4096, count: 8192), .lseek(slot: 0, offset: 0, whence: seekHole)]),
        EdgeCase("unlinkOfAnOpenFileKeepsItUsableUntilClose", [.open(slot: 0, b("a"), flags: rdwr | creat, mode: 0o644), .pwrite(slot: 0, offset: 0, data: pattern(5, 5000))],
                 .unlink(b("a")), .done,
                 then: [.stat(b("a")), .pwrite(slot: 0, offset: 5000, data: pattern(6, 3000)), .pread(slot: 0, offset: 0, count: 10000),
                        .fstat(slot: 0), .ftruncate(slot: 0, size: 100), .fstat(slot: 0), .close(slot: 0), .stat(b("a"))]),
        EdgeCase("unlinkOfOneOfTwoLinksOfAnOpenFile", file("a", [1]) + [.link(b("a"), b("b")), .open(slot: 0, b("a"), flags: rdwr, mode: 0)],
                 .unlink(b("a")), .done, then: [.pwrite(slot: 0, offset: 1, data: [2]), .close(slot: 0), .stat(b("b"))]),
        // fallocate
        EdgeCase("punchHoleZeroesTheRangeAndKeepsTheSize", file("a", pattern(7, 3 * 4096)) + [.open(slot: 0, b("a"), flags: rdwr, mode: 0)],
                 .fallocate(slot: 0, mode: punchHole | keepSize, offset: 1000, length: 6000), .done,
                 then: [.pread(slot: 0, offset: 0, count: 20000), .fstat(slot: 0), .lseek(slot: 0, offset: 0, whence: seekHole),
                        .lseek(slot: 0, offset: 4096, whence: seekData)]),
        EdgeCase("punchingWholeBlocksMakesAHole", file("a", pattern(8, 4 * 4096)) + [.open(slot: 0, b("a"), flags: rdwr, mode: 0)],
                 .fallocate(slot: 0, mode: punchHole | keepSize, offset: 4096, length: 8192), .done,
                 then: [.lseek(slot: 0, offset: 0, whence: seekHole), .lseek(slot: 0, offset: 4096, whence: seekData),
                        .pread(slot: 0, offset: 0, count: 5 * 4096)]),
        EdgeCase("punchHoleWithoutKeepSizeFailsWithEOPNOTSUPP", file("a", [1]) + [.open(slot: 0, b("a"), flags: rdwr, mode: 0)],
                 .fallocate(slot: 0, mode: punchHole, offset: 0, length: 1), fails(EOPNOTSUPP)),
        EdgeCase("punchHoleAndZeroRangeTogetherFailWithEOPNOTSUPP", file("a", [1]) + [.open(slot: 0, b("a"), flags: rdwr, mode: 0)],
                 .fallocate(slot: 0, mode: punchHole | zeroRange | keepSize, offset: 0, length: 1), fails(EOPNOTSUPP)),
        EdgeCase("keepSizeAllocationKeepsTheSize", file("a", pattern(9, 100)) + [.open(slot: 0, b("a"), flags: rdwr, mode: 0)],
                 .fallocate(slot: 0, mode: keepSize, offset: 0, length: 16384), .done,
                 then: [.fstat(slot: 0), .pread(slot: 0, offset: 0, count: 200), .lseek(slot: 0, offset: 0, whence: seekHole)]),
        EdgeCase("allocationGrowsTheSizeWithZeros", file("a", pattern(10, 100)) + [.open(slot: 0, b("a"), flags: rdwr, mode: 0)],
                 .fallocate(slot: 0, mode: 0, offset: 4096, length: 10000), .done,
                 then: [.fstat(slot: 0), .pread(slot: 0, offset: 0, count: 20000), .lseek(slot: 0, offset: 4096, whence: seekData)]),
        // tmpfs has no ZERO_RANGE; the Linux side does it as a punched hole (see LinuxSide).
        EdgeCase("zeroRangeZeroesTheRange", file("a", pattern(11, 3 * 4096)) + [.open(slot: 0, b("a"), flags: rdwr, mode: 0)],
                 .fallocate(slot: 0, mode: zeroRange, offset: 1000, length: 9000), .done,
                 then: [.pread(slot: 0, offset: 0, count: 20000), .fstat(slot: 0)]),
        EdgeCase("zeroRangeBeyondTheEndGrowsTheSize", file("a", pattern(12, 100)) + [.open(slot: 0, b("a"), flags: rdwr, mode: 0)],
                 .fallocate(slot: 0, mode: zeroRange, offset: 50, length: 9000), .done,
                 then: [.pread(slot: 0, offset: 0, count: 20000), .fstat(slot: 0)]),
        EdgeCase("fallocateOfZeroLengthFailsWithEINVAL", file("a", [1]) + [.open(slot: 0, b("a"), flags: rdwr, mode: 0)],
                 .fallocate(slot: 0, mode: 0, offset: 0, length: 0), fails(EINVAL)),
        EdgeCase("fallocateOnAReadOnlyHandleFailsWithEBADF", file("a", [1]) + [.open(slot: 0, b("a"), flags: rdonly, mode: 0)],
                 .fallocate(slot: 0, mode: 0, offset: 0, length: 10), fails(EBADF)),
        // SEEK_DATA / SEEK_HOLE: both report whole 4 KiB pages (tmpfs) or blocks (Shale).
        EdgeCase("seekDataAndSeekHoleFindTheWrittenBlocks",
                 [.open(slot: 0, b("a"), flags: rdwr | creat, mode: 0o644), .pwrite(slot: 0, offset: 0, data: pattern(13, 100)),
                  .pwrite(slot: 0, offset: 16384, data: pattern(14, 5000))],
                 .lseek(slot: 0, offset: 0, whence: seekData), .number(0),
                 then: [.lseek(slot: 0, offset: 0, whence: seekHole), .lseek(slot: 0, offset: 100, whence: seekData),
                        .lseek(slot: 0, offset: 4096, whence: seekData), .lseek(slot: 0, offset: 16384, whence: seekHole),
                        .lseek(slot: 0, offset: 20000, whence: seekHole), .lseek(slot: 0, offset: 21384, whence: seekData),
                        .lseek(slot: 0, offset: 21384, whence: seekHole), .pread(slot: 0, offset: 0, count: 30000)]),
        EdgeCase("seekDataInATrailingHoleFailsWithENXIO",
                 [.open(slot: 0, b("a"), flags: rdwr | creat, mode: 0o644), .pwrite(slot: 0, offset: 0, data: pattern(15, 10)), .ftruncate(slot: 0, size: 100_000)],
                 .lseek(slot: 0, offset: 50000, whence: seekData), fails(ENXIO),
                 then: [.lseek(slot: 0, offset: 50000, whence: seekHole), .lseek(slot: 0, offset: 0, whence: seekHole)]),
        EdgeCase("seekHoleInAFileWithoutHolesReturnsTheSize", file("a", pattern(16, 9000)) + [.open(slot: 0, b("a"), flags: rdonly, mode: 0)],
                 .lseek(slot: 0, offset: 10, whence: seekHole), .number(9000)),
        EdgeCase("seekAfterShrinkAndRegrowSeesTheTailAsAHole", file("a", pattern(17, 20000)) + [.open(slot: 0, b("a"), flags: rdwr, mode: 0)],
                 .ftruncate(slot: 0, size: 5000), .done,
                 then: [.ftruncate(slot: 0, size: 20000), .lseek(slot: 0, offset: 0, whence: seekHole), .lseek(slot: 0, offset: 8192, whence: seekData)]),
        EdgeCase("seekDataInAnEmptyFileFailsWithENXIO", file("a") + [.open(slot: 0, b("a"), flags: rdonly, mode: 0)],
                 .lseek(slot: 0, offset: 0, whence: seekData), fails(ENXIO)),
    ]

    static let renames: [EdgeCase] = [
        EdgeCase("renameOverAnExistingFileReplacesIt", file("a", [1]) + file("b", [2, 2]), .rename(b("a"), b("b"), flags: 0), .done),
        EdgeCase("renameOverAFileWithOtherLinksDropsOneLink", file("a", [1]) + file("b", [2]) + [.link(b("b"), b("c"))],
                 .rename(b("a"), b("b"), flags: 0), .done, then: [.stat(b("c"))]),
        EdgeCase("renameOverAnEmptyDirectoryReplacesIt", dir("d", "e", "d/x"), .rename(b("d"), b("e"), flags: 0), .done),
        EdgeCase("renameNoReplaceOverAnExistingNameFailsWithEEXIST", file("a") + file("b"), .rename(b("a"), b("b"), flags: noReplace), fails(EEXIST)),
        EdgeCase("renameNoReplaceToAFreeNameMoves", file("a", [1]), .rename(b("a"), b("b"), flags: noReplace), .done),
        EdgeCase("renameExchangeSwapsAFileAndADirectory", dir("p", "q", "q/d", "q/d/x") + file("p/a", [1]),
                 .rename(b("p/a"), b("q/d"), flags: exchange), .done, then: [.stat(b("p/a/x")), .stat(b("q/d"))]),
        EdgeCase("renameExchangeOfTwoDirectoriesInDifferentParents", dir("p", "q", "p/d", "q/e", "q/e/x"),
                 .rename(b("p/d"), b("q/e"), flags: exchange), .done, then: [.stat(b("p")), .stat(b("q")), .stat(b("p/d/x"))]),
        EdgeCase("renameExchangeWithAMissingTargetFailsWithENOENT", file("a"), .rename(b("a"), b("b"), flags: exchange), fails(ENOENT)),
        EdgeCase("renameOfAFileOntoItsOwnHardLinkDoesNothing", file("a", [1]) + [.link(b("a"), b("b"))], .rename(b("a"), b("b"), flags: 0), .done),
        EdgeCase("renameMovesADirectoryAndFixesTheLinkCounts", dir("p", "q", "p/d", "p/d/e"), .rename(b("p/d"), b("q/d"), flags: 0), .done,
                 then: [.stat(b("p")), .stat(b("q")), .stat(b("q/d/e/.."))]),
        EdgeCase("renameOfADirectoryOverAnEmptyDirectoryElsewhere", dir("p", "q", "p/d", "q/e"), .rename(b("p/d"), b("q/e"), flags: 0), .done),
        EdgeCase("renameToItselfIsFine", file("a", [1]), .rename(b("a"), b("a"), flags: 0), .done),
        EdgeCase("renameOfADirectoryIntoItsOwnSubtreeOverAFileFailsWithEINVALFirst", dir("d") + file("d/c"),
                 .rename(b("d"), b("d/./c"), flags: 0), fails(EINVAL)),
        EdgeCase("renameOfADirectoryIntoItselfOverANonEmptyDirectoryFailsWithEINVALFirst", dir("d", "d/d", "d/d/x"),
                 .rename(b("d/../d"), b("d/d"), flags: 0), fails(EINVAL)),
        EdgeCase("renameOverAnAncestorOfTheSourceFailsWithENOTEMPTY", dir("d") + file("d/f"), .rename(b("d/f"), b("d"), flags: 0), fails(ENOTEMPTY)),
        EdgeCase("renameExchangeWithAMissingTargetWithASlashFailsWithENOENTFirst", file("a") + dir("e"), .rename(b("a"), b("e/d/"), flags: exchange), fails(ENOENT)),
        EdgeCase("renameNoReplaceOntoDotDotFailsWithEEXIST", dir("d") + file("a"), .rename(b("a"), b("d/.."), flags: noReplace), fails(EEXIST)),
        EdgeCase("renameOfASymlinkMovesTheLinkNotItsTarget", file("a", [1]) + dir("d") + [.symlink(target: b("a"), at: b("l"))],
                 .rename(b("l"), b("d/l"), flags: 0), .done, then: [.readlink(b("d/l")), .stat(b("d/l"))]),
    ]

    static let links: [EdgeCase] = [
        EdgeCase("hardLinksShareContentsAndCountLinks", file("a", [1]) + dir("d"), .link(b("a"), b("d/b")), .done,
                 then: [.link(b("a"), b("c")), .open(slot: 0, b("c"), flags: wronly, mode: 0), .pwrite(slot: 0, offset: 1, data: [2]),
                        .stat(b("d/b")), .unlink(b("a")), .stat(b("c"))]),
        EdgeCase("linkOfASymlinkLinksTheSymlinkItself", [.symlink(target: b("nowhere"), at: b("l"))], .link(b("l"), b("m")), .done,
                 then: [.lstat(b("l")), .readlink(b("m"))]),
        EdgeCase("readlinkReturnsTheTargetBytes", [.symlink(target: b("some/../where/"), at: b("l"))], .readlink(b("l")), .bytes(b("some/../where/"))),
    ]

    static let attributes: [EdgeCase] = [
        EdgeCase("xattrsAreSetReadListedAndRemoved", file("a"), .setxattr(b("a"), name: "user.one", value: b("1"), flags: 0), .done,
                 then: [.setxattr(b("a"), name: "user.two", value: pattern(18, 3000), flags: 0), .getxattr(b("a"), name: "user.one"),
                        .listxattr(b("a")), .removexattr(b("a"), name: "user.one"), .getxattr(b("a"), name: "user.one"),
                        .setxattr(b("a"), name: "user.two", value: [], flags: 0), .getxattr(b("a"), name: "user.two")]),
        EdgeCase("xattrsOnADirectory", dir("d"), .setxattr(b("d"), name: "user.x", value: b("dir"), flags: 0), .done,
                 then: [.setxattr(b("d"), name: "trusted.y", value: b("t"), flags: 0), .listxattr(b("d"))]),
        EdgeCase("xattrCreateOnAnExistingAttributeFailsWithEEXIST", file("a") + [.setxattr(b("a"), name: "user.x", value: [1], flags: 0)],
                 .setxattr(b("a"), name: "user.x", value: [2], flags: 1), fails(EEXIST)),
        EdgeCase("xattrReplaceOfAMissingAttributeFailsWithENODATA", file("a"), .setxattr(b("a"), name: "user.x", value: [2], flags: 2), fails(ENODATA)),
        EdgeCase("getxattrOfAMissingAttributeFailsWithENODATA", file("a"), .getxattr(b("a"), name: "user.none"), fails(ENODATA)),
        EdgeCase("removexattrOfAMissingAttributeFailsWithENODATA", file("a"), .removexattr(b("a"), name: "user.none"), fails(ENODATA)),
        EdgeCase("xattrOfAnUnknownNamespaceFailsWithEOPNOTSUPP", file("a"), .setxattr(b("a"), name: "other.x", value: [1], flags: 0), fails(EOPNOTSUPP)),
        EdgeCase("xattrNamedOnlyByItsNamespaceFailsWithEINVAL", file("a"), .setxattr(b("a"), name: "user.", value: [1], flags: 0), fails(EINVAL)),
        EdgeCase("xattrCreateAndReplaceTogetherOnAMissingAttributeFailWithENODATA", file("a"),
                 .setxattr(b("a"), name: "user.x", value: [1], flags: 3), fails(ENODATA)),
        EdgeCase("xattrCreateAndReplaceTogetherOnAnExistingAttributeFailWithEEXIST", file("a") + [.setxattr(b("a"), name: "user.x", value: [1], flags: 0)],
                 .setxattr(b("a"), name: "user.x", value: [2], flags: 3), fails(EEXIST)),
        EdgeCase("xattrsFollowASymlinkToTheFile", file("a") + [.symlink(target: b("a"), at: b("l"))],
                 .setxattr(b("l"), name: "user.via", value: b("link"), flags: 0), .done, then: [.listxattr(b("a"))]),
        EdgeCase("chmodSetsPermissionAndSpecialBits", file("a") + dir("d"), .chmod(b("a"), mode: 0o4751), .done,
                 then: [.chmod(b("d"), mode: 0o3777), .stat(b("a")), .stat(b("d"))]),
        EdgeCase("chownAsRootChangesOwnersAndClearsSetUID", file("a") + [.chmod(b("a"), mode: 0o6755)], .chown(b("a"), uid: 1000, gid: 1000), .done,
                 then: [.stat(b("a"))]),
        EdgeCase("chownWithMinusOneKeepsTheIds", file("a"), .chown(b("a"), uid: 1234, gid: UInt32.max), .done,
                 then: [.chown(b("a"), uid: UInt32.max, gid: 99), .stat(b("a"))]),
        EdgeCase("aNewFileInASetGIDDirectoryTakesItsGroup", dir("d") + [.chown(b("d"), uid: 0, gid: 1000), .chmod(b("d"), mode: 0o2775)],
                 .mkdir(b("d/e"), mode: 0o755), .done, then: file("d/f") + [.stat(b("d/e")), .stat(b("d/f"))]),
        EdgeCase("utimensOfAMissingFileFailsWithENOENT", [], .utimens(b("missing"), seconds: 5), fails(ENOENT)),
        EdgeCase("utimensSetsTimesWithoutOtherChanges", file("a", [1]), .utimens(b("a"), seconds: 1_000_000), .done),
        EdgeCase("umaskAppliesToNewFiles", [], .open(slot: 0, b("a"), flags: wronly | creat, mode: 0o777), .done, then: [.mkdir(b("d"), mode: 0o777), .fstat(slot: 0), .stat(b("d"))]),
    ]

    static let all: [EdgeCase] = errors + namespace + files + renames + links + attributes
}

/// Everything both sides refused to digest (none, if KernFS and LibFS agree).
func refusals(_ fs: SimulatedFileSystem) -> String {
    fs.kernel.refusals.map { "record \($0.sequence): \($0.reason)" }.joined(separator: "; ")
}

@Suite(.serialized) struct DifferentialTests {
    @Test(arguments: EdgeCase.all)
    func edgeCaseAgreesWithLinux(_ edge: EdgeCase) throws {
        let differential = try Differential()
        for (index, op) in (edge.setup + [edge.call] + edge.after).enumerated() {
            let linux = differential.linux.run(op)
            let shale = differential.shale.run(op)
            #expect(linux == shale, "op #\(index) \(op)\n  linux: \(linux)\n  shale: \(shale)")
            if index == edge.setup.count, let expected = edge.expect {
                #expect(linux == expected, "Linux itself gave \(linux) for \(op), the table says \(expected)")
            }
        }
        // Before any digest, by looking names up (a listing would digest first).
        differential.alphabet = edge.names
        let live = differential.compareTrees(probing: true)
        #expect(live.isEmpty, "trees differ before a digest:\n\(live)")
        try differential.shale.fs.digest()
        let digested = differential.compareTrees()
        #expect(digested.isEmpty, "trees differ after a digest:\n\(digested)")
        #expect(differential.shale.fs.kernel.refusals.isEmpty, "the digest refused records: \(refusals(differential.shale.fs))")
        try differential.crash()
        let recovered = differential.compareTrees()
        #expect(recovered.isEmpty, "trees differ after a crash:\n\(recovered)")
        #expect(differential.shale.fs.kernel.refusals.isEmpty, "recovery refused records: \(refusals(differential.shale.fs))")
    }
}

// MARK: - Random sequences

/// Random calls over a small namespace: six names, in the root and in directories that the
/// sequence itself makes ("d", "e", and deeper), with every kind of call.
struct RandomOps {
    var random: SplitMix64
    static let alphabet: [Bytes] = ["a", "b", "c", "d", "e", "l"].map(bytes)

    init(seed: UInt64) { random = SplitMix64(seed: seed) }

    mutating func below(_ bound: Int) -> Int { Int(random.next() % UInt64(bound)) }
    mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }

    /// A path: mostly "name", "d/name", "e/name", sometimes deeper, with "." or ".."
    /// components or a trailing slash. Never climbs above the root.
    mutating func path(preferring names: [String]? = nil) -> Bytes {
        let prefix = pick(["", "", "", "d/", "d/", "e/", "d/e/", "e/d/", "./", "d/../", "d/./"])
        let name = names != nil && chance(75) ? pick(names!) : String(decoding: pick(Self.alphabet), as: UTF8.self)
        return bytes(prefix + name + (chance(4) ? "/" : ""))
    }

    mutating func data() -> Bytes {
        let count = chance(70) ? 1 + below(300) : pick([4096, 4097, 8191, 12288, 1 + below(16384)])
        return random.bytes(count)
    }

    mutating func offset() -> UInt64 {
        chance(50) ? UInt64(below(9000)) : UInt64(pick([0, 4096, 8192, 12288, 16384, 40960]) + pick([0, 0, 1, 100, 4095]))
    }

    mutating func next() -> Op {
        let slot = below(4)
        switch below(100) {
        case 0 ..< 12:
            let access = pick([rdonly, wronly, rdwr, rdwr])
            var flags = access
            if chance(60) { flags |= creat }
            if chance(15) { flags |= excl }
            if access != rdonly, chance(20) { flags |= trunc } // O_RDONLY|O_TRUNC is undefined (POSIX)
            if chance(15) { flags |= append }
            if chance(5) { flags |= directory }
            if chance(5) { flags |= nofollow }
            return .open(slot: slot, path(preferring: ["a", "b", "c"]), flags: flags, mode: pick([0o644, 0o600, 0o755, 0o444]))
        case 12 ..< 16: return .close(slot: slot)
        case 16 ..< 28: return .pwrite(slot: slot, offset: offset(), data: data())
        case 28 ..< 32: return .write(slot: slot, data: data())
        case 32 ..< 37: return .pread(slot: slot, offset: offset(), count: 1 + below(20000))
        case 37 ..< 39: return .read(slot: slot, count: 1 + below(5000))
        case 39 ..< 42: return .ftruncate(slot: slot, size: offset())
        case 42 ..< 44: return .truncate(path(preferring: ["a", "b", "c"]), size: offset())
        case 44 ..< 49:
            let mode = pick([0, keepSize, punchHole | keepSize, punchHole | keepSize, zeroRange, zeroRange | keepSize, punchHole])
            return .fallocate(slot: slot, mode: mode, offset: offset(), length: UInt64(pick([1, 100, 4096, 8192, 5000 + below(10000)])))
        case 49 ..< 54:
            let whence = pick([seekSet, seekCur, seekEnd, seekData, seekData, seekHole, seekHole])
            return .lseek(slot: slot, offset: Int64(below(20000)) - (whence == seekEnd ? 5000 : 0), whence: whence)
        case 54 ..< 60: return .mkdir(path(preferring: ["d", "e"]), mode: pick([0o755, 0o700, 0o777]))
        case 60 ..< 63: return .rmdir(path(preferring: ["d", "e"]))
        case 63 ..< 68: return .unlink(path())
        case 68 ..< 76:
            return .rename(path(), path(), flags: pick([0, 0, 0, noReplace, exchange]))
        case 76 ..< 79: return .link(path(preferring: ["a", "b", "c"]), path())
        case 79 ..< 82:
            // Relative targets that stay inside the tree wherever the link is.
            return .symlink(target: bytes(pick(["a", "b", "d", "e/a", "d/", "l", "nowhere", "./c"])), at: path(preferring: ["l"]))
        case 82 ..< 84: return .readlink(path(preferring: ["l"]))
        case 84 ..< 86: return .chmod(path(), mode: pick([0o644, 0o600, 0o755, 0o000, 0o4755, 0o2755, 0o1777, 0o444]))
        case 86 ..< 87: return .chown(path(), uid: pick([0, 1000, UInt32.max]), gid: pick([0, 1000, UInt32.max]))
        case 87 ..< 88: return .utimens(path(), seconds: chance(50) ? nil : Int64(below(1 << 30)))
        case 88 ..< 92:
            let value = chance(90) ? random.bytes(below(200)) : random.bytes(4000 + below(4000))
            return .setxattr(path(), name: pick(["user.x", "user.y", "trusted.z"]), value: value, flags: Int32(pick([0, 0, 1, 2])))
        case 92 ..< 93: return .getxattr(path(), name: pick(["user.x", "user.y", "trusted.z"]))
        case 93 ..< 94: return .listxattr(path())
        case 94 ..< 95: return .removexattr(path(), name: pick(["user.x", "user.y", "trusted.z"]))
        case 95 ..< 97: return .stat(path())
        case 97 ..< 98: return .lstat(path())
        case 98 ..< 99: return .fstat(slot: slot)
        default: return .listDirectory(pick([[], bytes("d"), bytes("e")]))
        }
    }
}

/// Calls per random sequence: SHALE_TEST_OPS, or `standard`.
func randomSequenceLength(_ standard: Int) -> Int {
    getenv("SHALE_TEST_OPS").flatMap { Int(String(cString: $0)) } ?? standard
}

/// The seeds of this run: SHALE_TEST_SEED replays one; otherwise fresh ones, printed.
func randomSeeds(_ count: Int) -> [UInt64] {
    if let text = getenv("SHALE_TEST_SEED").map({ String(cString: $0) }), let seed = UInt64(text) { return [seed] }
    var time = timespec()
    clock_gettime(CLOCK_REALTIME, &time)
    var generator = SplitMix64(seed: UInt64(time.tv_sec) &* 1_000_000_007 &+ UInt64(time.tv_nsec) &+ UInt64(getpid()))
    return (0 ..< count).map { _ in generator.next() % 1_000_000_000 }
}

/// Runs `count` random calls on both sides; records the first difference (with seed, index,
/// call and both results) and stops there.
func runRandomSequence(seed: UInt64, count: Int, background: Bool, logBytes: UInt64, explicitDigests: Bool,
                       crashes: Bool, label: String) throws {
    print("\(label): seed \(seed) (replay with SHALE_TEST_SEED=\(seed))")
    let differential = try Differential(logBytes: logBytes, background: background)
    differential.alphabet = RandomOps.alphabet
    var ops = RandomOps(seed: seed)
    var digests = 0, crashCount = 0, batches = 0
    var history: [String] = []
    func where_(_ index: Int, _ op: Op?) -> String {
        "\(label) seed \(seed) op #\(index)" + (op.map { " \($0)" } ?? "") + " (replay with SHALE_TEST_SEED=\(seed))"
            + "\n  the calls before it:\n" + history.suffix(12).joined(separator: "\n")
    }
    for index in 0 ..< count {
        let op = ops.next()
        // lseek on a directory is the file system's own business (POSIX leaves it open; tmpfs
        // takes only SEEK_SET and SEEK_CUR): both run it, the results are not compared.
        var compared = true
        if case let .lseek(slot, _, _) = op, differential.linux.isDirectory(slot: slot) { compared = false }
        let linux = differential.linux.run(op)
        let shale = differential.shale.run(op)
        guard linux == shale || !compared else {
            Issue.record("\(where_(index, op)):\n  linux: \(linux)\n  shale: \(shale)")
            return
        }
        history.append("    #\(index) \(op) -> \(linux)")
        let full = index % 50 == 49
        let difference = differential.compareTrees(probing: !full)
        guard difference.isEmpty else {
            Issue.record("\(where_(index, op)): trees differ after it\(full ? " (listed)" : ""):\n\(difference)")
            return
        }
        if explicitDigests, ops.chance(4) {
            try differential.shale.fs.digest()
            digests += 1
            let difference = differential.compareTrees(probing: true)
            guard difference.isEmpty else {
                Issue.record("\(where_(index, nil)): trees differ after a digest:\n\(difference)")
                return
            }
        }
        if crashes, ops.chance(2) {
            batches += differential.shale.fs.digestBatches
            guard differential.shale.fs.kernel.refusals.isEmpty else {
                Issue.record("\(where_(index, nil)): the digest refused records: \(refusals(differential.shale.fs))")
                return
            }
            try differential.crash()
            crashCount += 1
            let difference = differential.compareTrees(probing: true)
            guard difference.isEmpty else {
                Issue.record("\(where_(index, nil)): trees differ after a crash and recovery:\n\(difference)")
                return
            }
        }
    }
    let difference = differential.compareTrees()
    #expect(difference.isEmpty, "\(where_(count, nil)): trees differ at the end:\n\(difference)")
    #expect(differential.shale.fs.kernel.refusals.isEmpty, "\(where_(count, nil)): refused: \(refusals(differential.shale.fs))")
    batches += differential.shale.fs.digestBatches
    try differential.crash()
    let recovered = differential.compareTrees()
    #expect(recovered.isEmpty, "\(where_(count, nil)): trees differ after the final crash:\n\(recovered)")
    #expect(differential.shale.fs.kernel.refusals.isEmpty, "\(where_(count, nil)): recovery refused: \(refusals(differential.shale.fs))")
    print("\(label): seed \(seed): \(count) calls, \(digests) explicit digests, \(crashCount) crashes, \(batches) digest batches")
    if background { #expect(batches > 0, "the background digest never ran") }
}

@Suite(.serialized) struct RandomDifferentialTests {
    /// Digests and crashes (recovery from the durable NVM image) at random points.
    @Test func randomSequencesAgreeWithLinuxThroughDigestsAndCrashes() throws {
        for seed in randomSeeds(3) {
            try runRandomSequence(seed: seed, count: randomSequenceLength(300), background: false, logBytes: 1 << 20, explicitDigests: true,
                                  crashes: true, label: "digests and crashes")
        }
    }

    /// The background digest on a 128 KiB log (the smallest that holds the largest record
    /// these calls make twice over): the log wraps and writers wait for digests many times.
    @Test func randomSequencesAgreeWithLinuxWithTheBackgroundDigestOnATinyLog() throws {
        for seed in randomSeeds(3) {
            try runRandomSequence(seed: seed, count: randomSequenceLength(600), background: true, logBytes: 128 << 10, explicitDigests: false,
                                  crashes: true, label: "background digest, tiny log")
        }
    }
}
