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

struct CoalescingTests {
    @Test func aFileCreatedAndRemovedInOneBatchCostsNothing() throws {
        // A log big enough that no digest runs before the explicit one.
        let fs = try simulatedFileSystem(logBytes: 4 << 20)
        try fs.mkdir("/tmp")
        try fs.writeFile("/tmp/keep", [1])
        try fs.digest()
        let freeBefore = fs.kernel.allocator.freeBlocks
        let inodesBefore = fs.kernel.inodes.freeCount
        for round in 0 ..< 20 {
            try fs.writeFile(Path("/tmp/scratch\(round)"), [UInt8](repeating: UInt8(round), count: 50_000))
            try fs.setxattr(Path("/tmp/scratch\(round)"), name: "user.a", value: [1])
            try fs.unlink(Path("/tmp/scratch\(round)"))
        }
        try fs.mkdir("/tmp/sub")
        try fs.rmdir("/tmp/sub")
        let before = try fs.stat("/tmp")
        try fs.digest()
        // Nothing of the twenty files reached the shared area: each one's create, write,
        // setxattr and unlink were skipped (and the directory's mkdir and rmdir).
        #expect(fs.kernel.coalescedRecords == 20 * 4 + 2)
        #expect(fs.kernel.allocator.freeBlocks == freeBefore)
        #expect(fs.kernel.inodes.freeCount >= inodesBefore)
        // The directory's times are what applying every record would have left.
        let after = try fs.stat("/tmp")
        #expect(after.mtime == before.mtime && after.ctime == before.ctime && after.linkCount == 2)
        #expect(try fs.listDirectory("/tmp").map(\.nameString) == ["keep"])
        #expect(fs.refusedRecords == 0)
    }

    /// A batch that fills its share of the metadata journal stops early; when it stops
    /// between a file's create and its removal, the file is applied both ways rather than
    /// skipped at one end only (which would leave the removal to a later batch that cannot
    /// find the name).
    @Test func aLifeStraddlingAFullJournalIsAppliedWhole() throws {
        let fs = try simulatedFileSystem(logBytes: 8 << 20)
        try fs.writeFile("/x", [1])
        for index in 0 ..< 4000 { try fs.mkdir(Path("/d\(index)")) }
        try fs.unlink("/x")
        let batchesBefore = fs.digestBatches
        try fs.digest()
        #expect(fs.digestBatches - batchesBefore >= 2, "the journal budget should have split the digest")
        #expect(fs.refusedRecords == 0)
        #expect(fs.kernel.coalescedRecords == 0)
        #expect(errnoOf { _ = try fs.stat("/x") } == .noSuchFileOrDirectory)
        #expect(try fs.listDirectory("/").count == 4000)
    }

    @Test func anOpenFileRemovedInTheBatchIsNotCoalescedAway() throws {
        let fs = try simulatedFileSystem()
        try fs.writeFile("/f", [1, 2, 3])
        let handle = try fs.open("/f", .readWrite)
        try fs.unlink("/f")
        try fs.digest()
        #expect(try fs.pread(handle, count: 3, at: 0) == [1, 2, 3])
        try fs.close(handle)
        #expect(fs.kernel.coalescedRecords == 0)
        #expect(fs.refusedRecords == 0)
    }
}

struct EmbeddedOpenTests {
    @Test func aSecondOpenerIsToldTheVolumeIsInUseAndCloseLetsGo() throws {
        let scratch = try ScratchVolume(nvmBytes: 128 << 20, logBytes: 1 << 20)
        let fs = try EmbeddedFileSystem.open(volume: scratch.volume)
        try fs.writeFile("/kept", [1, 2, 3])
        do {
            _ = try EmbeddedFileSystem.open(volume: scratch.volume)
            Issue.record("a second open of a volume in use succeeded")
        } catch {
            guard case .inUse = error else { throw error }
            #expect("\(error)".contains("in use"))
        }
        try fs.close()
        // No waiting: close() has let go of the volume's lock.
        let again = try EmbeddedFileSystem.open(volume: scratch.volume)
        #expect(try again.readFile("/kept") == [1, 2, 3])
        try again.close()
    }
}
