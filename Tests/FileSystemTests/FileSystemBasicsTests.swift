import Testing
import KernFS
import LibFS
import ShaleFormat
import ShaleMedia
import SystemPackage

struct FileSystemBasicsTests {
    @Test func aWriteIsReadBackBeforeAndAfterDigest() throws {
        let fs = try simulatedFileSystem()
        try fs.mkdir("/dir")
        let bytes = (0 ..< 10000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try fs.writeFile("/dir/file", bytes)
        #expect(try fs.readFile("/dir/file") == bytes)
        #expect(try fs.stat("/dir/file").size == 10000)
        try fs.digest()
        #expect(try fs.readFile("/dir/file") == bytes)
        // A partial overwrite, pending over digested data.
        let handle = try fs.open("/dir/file", .readWrite)
        try fs.pwrite(handle, [1, 2, 3], at: 4095)
        var expected = bytes
        expected.replaceSubrange(4095 ..< 4098, with: [1, 2, 3])
        #expect(try fs.pread(handle, count: 20000, at: 0) == expected)
        try fs.close(handle)
        try fs.digest()
        #expect(try fs.readFile("/dir/file") == expected)
        #expect(fs.refusedRecords == 0)
    }

    @Test func namespaceOperationsAreVisibleAtOnce() throws {
        let fs = try simulatedFileSystem()
        try fs.mkdir("/a")
        try fs.mkdir("/a/b")
        try fs.writeFile("/a/b/f", [1])
        #expect(try fs.stat("/a").linkCount == 3)
        try fs.rename("/a/b/f", "/a/g")
        #expect(errnoOf { _ = try fs.stat("/a/b/f") } == .noSuchFileOrDirectory)
        #expect(try fs.readFile("/a/g") == [1])
        try fs.link("/a/g", "/a/h")
        #expect(try fs.stat("/a/h").linkCount == 2)
        try fs.unlink("/a/g")
        #expect(try fs.stat("/a/h").linkCount == 1)
        #expect(errnoOf { try fs.rmdir("/a") } == .directoryNotEmpty)
        try fs.rmdir("/a/b")
        #expect(try fs.stat("/a").linkCount == 2)
        try fs.digest()
        #expect(try fs.listDirectory("/a").map(\.nameString) == ["h"])
        #expect(try fs.readFile("/a/h") == [1])
        #expect(fs.refusedRecords == 0)
    }

    @Test func everyReturnedCallSurvivesReopenWithoutClose() throws {
        let fs = try simulatedFileSystem()
        try fs.mkdir("/d")
        try fs.writeFile("/d/x", Array(repeating: 9, count: 5000))
        try fs.truncate("/d/x", size: 100)
        // No close, no digest: a crash now. Recovery digests the log at reopen.
        let again = try reopen(fs)
        #expect(try again.readFile("/d/x") == Array(repeating: 9, count: 100))
        #expect(again.kernel.recovered.first?.applied ?? 0 > 0)
    }
}
