import Testing
@testable import KernFS
@testable import ShaleFormat
@testable import ShaleMedia

/// Formatting and opening volumes on simulated media: the production code, run unchanged.
struct FormatterTests {
    static let nvmBytes = 48 << 20

    func options(label: String = "sim") -> FormatOptions {
        var options = FormatOptions()
        options.label = label
        options.logRegionCount = 4
        options.logRegionBytes = 1 << 20
        options.nowSeconds = 1_700_000_000
        return options
    }

    func lowerDevices() -> [LowerDevice] {
        [LowerDevice(tier: .ssd, device: SimulatedBlockDevice(byteCount: 16 << 20), segmentBytes: 1 << 20, pathHint: "ssd.img"),
         LowerDevice(tier: .hdd, device: SimulatedBlockDevice(byteCount: 24 << 20), segmentBytes: 2 << 20, pathHint: "hdd.img")]
    }

    func open(_ nvm: SimulatedPersistentMemory, _ lower: [LowerDevice], repair: Bool = true) throws -> Volume<SimulatedPersistentMemory> {
        try Volume(nvm: nvm, nvmName: "sim.nvm", lowerDevices: lower.map { ($0.tier, $0.device, $0.pathHint) }, repair: repair)
    }

    @Test func formattedVolumeOpensWithEverythingFree() throws {
        let nvm = SimulatedPersistentMemory(byteCount: Self.nvmBytes, recordsTrace: false)
        let lower = lowerDevices()
        let made = try Formatter.format(nvm: nvm, nvmPathHint: "sim.nvm", lowerDevices: lower, options: options())
        let volume = try open(nvm, lower)
        #expect(volume.superblock == made)
        #expect(volume.validCopies == ["A", "B"])
        #expect(volume.notes.isEmpty)
        #expect(nvm.pendingLines.isEmpty, "mkfs leaves nothing unpersisted")
        let report = volume.spaceReport()
        #expect(report.problems.isEmpty, "\(report.problems)")
        #expect(report.inodesUsed == 1)
        #expect(report.inodeChunksAllocated == 1)
        #expect(report.logRegions.count == 4 && report.logRegions.allSatisfy { $0 == nil })
        let chunkBlocks = made.layout.inodeChunkBytes / UInt64(Format.blockBytes)
        let nvmSpace = try #require(report.tiers.first { $0.tier == .nvm })
        #expect(nvmSpace.usedBlocks == chunkBlocks + 1, "the first inode chunk and the root directory")
        for tier in [Tier.ssd, .hdd] {
            let space = try #require(report.tiers.first { $0.tier == tier })
            #expect(space.freeBlocks == space.dataBlocks && space.dataBlocks > 0)
        }
    }

    @Test func rootDirectoryIsAnEmptyDirectory() throws {
        let nvm = SimulatedPersistentMemory(byteCount: Self.nvmBytes, recordsTrace: false)
        var opts = options()
        opts.rootUID = 1000
        opts.rootGID = 100
        let made = try Formatter.format(nvm: nvm, nvmPathHint: "sim.nvm", lowerDevices: [], options: opts)
        let seed = made.volumeID.checksumSeed
        let layout = made.layout
        let location = layout.inodeLocation(made.rootInode)
        let chunk = nvm.loadWord(at: Int(location.mapEntryOffset))
        #expect(chunk == made.device(.nvm)!.dataOffset)
        let root = try #require(try Inode.decode(nvm.view(at: Int(chunk + location.offsetInChunk), count: 256),
                                                 seed: seed, expectedNumber: made.rootInode))
        #expect(root.isDirectory && root.mode & 0o7777 == 0o755)
        #expect(root.linkCount == 2 && root.uid == 1000 && root.gid == 100)
        guard case let .extents(extents) = root.mapping, let first = extents.first, extents.count == 1 else {
            Issue.record("root has \(root.mapping)")
            return
        }
        #expect(first.tier == .nvm && first.blockCount == 1)
        let offset = Int(made.device(.nvm)!.dataOffset + first.physicalBlock * 4096)
        let block = try DirectoryBlock.decode(nvm.view(at: offset, count: 4096), seed: seed,
                                              expectedDirectory: made.rootInode, expectedLogicalBlock: 0)
        #expect(block.content == .leaf(localDepth: 0, hashPrefix: 0, overflowNext: 0, entries: []))
    }

    /// Commit point of mkfs: at every fence, a crash leaves either no file system at all or
    /// the whole new one, never a superblock over half-written structures.
    @Test func crashAtAnyFenceOfMkfsLeavesNothingOrTheWholeVolume() throws {
        let nvm = SimulatedPersistentMemory(byteCount: 40 << 20)
        let lower = lowerDevices()
        let made = try Formatter.format(nvm: nvm, nvmPathHint: "sim.nvm", lowerDevices: lower, options: options())
        var opened = 0, refused = 0
        for boundary in [0] + nvm.trace.fenceBoundaries {
            for fate in [LineFate.drop, .keep, .tear(wordMask: 0b0101_0101)] {
                let image = nvm.crashState(afterEvents: boundary).crashImage { _ in fate }
                let crashed = SimulatedPersistentMemory(image: image, recordsTrace: false)
                do {
                    let volume = try open(crashed, lower)
                    #expect(volume.superblock.volumeID == made.volumeID)
                    #expect(volume.spaceReport().problems.isEmpty)
                    opened += 1
                } catch let error as VolumeError {
                    guard case .notShale = error else {
                        Issue.record("crash after \(boundary) events with \(fate): \(error)")
                        continue
                    }
                    refused += 1
                }
            }
        }
        #expect(opened > 0 && refused > 0)
    }

    /// Inside the superblock writes, at every single event (not only at fences), with the
    /// pending lines kept, dropped or torn: a crash never leaves "both copies damaged".
    @Test func crashInsideTheSuperblockWritesIsNothingOrTheWholeVolume() throws {
        let nvm = SimulatedPersistentMemory(byteCount: 40 << 20)
        let lower = lowerDevices()
        let made = try Formatter.format(nvm: nvm, nvmPathHint: "sim.nvm", lowerDevices: lower, options: options())
        let events = nvm.trace.events
        // The superblock writes are the last events: from the first store into copy B on.
        let firstSuperblockStore = try #require(events.lastIndex { event in
            if case let .store(offset, _) = event { return offset >= 2 * 4096 } else { return false }
        }) + 1
        var generator = SplitMix64(seed: 5)
        var outcomes: Set<String> = []
        let model = nvm.trace.replay(initialImage: nvm.initialImage, eventCount: firstSuperblockStore)
        for index in firstSuperblockStore ... events.count {
            if index > firstSuperblockStore { model.apply(events[index - 1]) }
            var fates: [LineFate] = [.keep, .drop]
            for _ in 0 ..< 6 { fates.append(.tear(wordMask: UInt8.random(in: 0 ... 255, using: &generator))) }
            for fate in fates {
                let crashed = SimulatedPersistentMemory(image: model.crashImage { _ in fate }, recordsTrace: false)
                do {
                    let volume = try open(crashed, lower)
                    #expect(volume.superblock.volumeID == made.volumeID)
                    outcomes.insert("opened")
                } catch let error as VolumeError {
                    guard case .notShale = error else {
                        Issue.record("crash after event \(index) with \(fate): \(error)")
                        continue
                    }
                    outcomes.insert("not shale")
                }
            }
        }
        #expect(outcomes == ["opened", "not shale"])
    }

    @Test func remkfsNeverLeavesTheOldSuperblockOverNewStructures() throws {
        let nvm = SimulatedPersistentMemory(byteCount: 40 << 20, recordsTrace: false)
        let lower = lowerDevices()
        let old = try Formatter.format(nvm: nvm, nvmPathHint: "sim.nvm", lowerDevices: lower, options: options(label: "old"))
        let again = SimulatedPersistentMemory(image: nvm.durableImage)
        let new = try Formatter.format(nvm: again, nvmPathHint: "sim.nvm", lowerDevices: lower, options: options(label: "new"))
        let boundaries = again.trace.fenceBoundaries
        // Before the first fence the old superblock is still whole (its lower devices are
        // the shared simulated ones, already re-headered, so check the superblock alone).
        let untouched = again.crashState(afterEvents: 0).crashImage { _ in .drop }
        let oldCopy = try untouched.withUnsafeBytes { try Superblock.decode(UnsafeRawBufferPointer(rebasing: $0[0 ..< 4096]), nvmBytes: UInt64(untouched.count)) }
        #expect(oldCopy.volumeID == old.volumeID)
        for (index, boundary) in boundaries.enumerated() {
            let image = again.crashState(afterEvents: boundary).crashImage { _ in .drop }
            let crashed = SimulatedPersistentMemory(image: image, recordsTrace: false)
            do {
                let volume = try open(crashed, lower)
                // The first fence already erased the old superblocks.
                #expect(volume.superblock.volumeID == new.volumeID, "fence \(index): \(volume.superblock.label)")
            } catch let error as VolumeError {
                guard case .notShale = error else { Issue.record("fence \(index): \(error)"); continue }
            } catch {
                Issue.record("fence \(index): \(error)")
            }
        }
    }

    @Test func openRepairsAStaleCopyAndReadOnlyOpenDoesNot() throws {
        let nvm = SimulatedPersistentMemory(byteCount: Self.nvmBytes, recordsTrace: false)
        var made = try Formatter.format(nvm: nvm, nvmPathHint: "sim.nvm", lowerDevices: [], options: options())
        // A superblock update that reached copy B but not copy A.
        made.generation = 2
        made.label = "renamed"
        nvm.storePersist(made.encode(), at: Superblock.copyOffsets[1])

        let readOnly = try open(nvm, [], repair: false)
        #expect(readOnly.superblock.label == "renamed")
        #expect(readOnly.notes.count == 1 && readOnly.notes[0].contains("stale") && readOnly.notes[0].contains("not repaired"))
        #expect(try Superblock.decode(nvm.view(at: 0, count: 4096), nvmBytes: UInt64(Self.nvmBytes)).generation == 1)

        let repaired = try open(nvm, [], repair: true)
        #expect(repaired.notes.count == 1 && repaired.notes[0].contains("copy A is stale"))
        #expect(try Superblock.decode(nvm.view(at: 0, count: 4096), nvmBytes: UInt64(Self.nvmBytes)) == made)
        #expect(try open(nvm, []).notes.isEmpty)
    }

    /// A bit flip in one copy's version field is damage, repaired from the other copy, not
    /// a newer format that stops the open.
    @Test func aFlippedVersionByteIsRepairedNotRefused() throws {
        let nvm = SimulatedPersistentMemory(byteCount: Self.nvmBytes, recordsTrace: false)
        let made = try Formatter.format(nvm: nvm, nvmPathHint: "sim.nvm", lowerDevices: [], options: options())
        var copyA = nvm.load(at: 0, count: 4096)
        copyA[8] ^= 0x02
        nvm.storePersist(copyA, at: 0)
        let volume = try open(nvm, [])
        #expect(volume.superblock == made)
        #expect(volume.notes.count == 1 && volume.notes[0].contains("copy A is damaged (superblock: checksum mismatch"))
        #expect(try Superblock.decode(nvm.view(at: 0, count: 4096), nvmBytes: UInt64(Self.nvmBytes)) == made)
    }

    @Test func aTornSuperblockUpdateLeavesAValidCopy() throws {
        let nvm = SimulatedPersistentMemory(byteCount: Self.nvmBytes)
        var made = try Formatter.format(nvm: nvm, nvmPathHint: "sim.nvm", lowerDevices: [], options: options())
        made.generation = 2
        made.label = "updated"
        let start = nvm.trace.events.count
        nvm.storePersist(made.encode(), at: Superblock.copyOffsets[1])
        // Crash after the store of copy B, before its fence, with every line torn some way.
        let state = nvm.crashState(afterEvents: start + 1)
        var generator = SplitMix64(seed: 3)
        for _ in 0 ..< 20 {
            let image = state.crashImage { _ in .tear(wordMask: UInt8.random(in: 0 ... 255, using: &generator)) }
            let volume = try open(SimulatedPersistentMemory(image: image, recordsTrace: false), [])
            #expect(volume.superblock.generation == 1 || volume.superblock == made)
        }
    }

    @Test func devicesAreCheckedAgainstTheSuperblock() throws {
        let nvm = SimulatedPersistentMemory(byteCount: Self.nvmBytes, recordsTrace: false)
        let lower = lowerDevices()
        _ = try Formatter.format(nvm: nvm, nvmPathHint: "sim.nvm", lowerDevices: lower, options: options())

        // Missing device.
        #expect(throws: VolumeError.self) { try open(nvm, [lower[0]]) }
        // Swapped tiers.
        let swapped = [LowerDevice(tier: .ssd, device: lower[1].device, segmentBytes: 0, pathHint: "hdd.img"),
                       LowerDevice(tier: .hdd, device: lower[0].device, segmentBytes: 0, pathHint: "ssd.img")]
        do {
            _ = try open(nvm, swapped)
            Issue.record("swapped devices were accepted")
        } catch let error as VolumeError {
            #expect(error.description.contains("swapped"), "\(error)")
        }
        // A device of another volume.
        let otherNVM = SimulatedPersistentMemory(byteCount: Self.nvmBytes, recordsTrace: false)
        let otherLower = lowerDevices()
        _ = try Formatter.format(nvm: otherNVM, nvmPathHint: "other.nvm", lowerDevices: otherLower, options: options())
        do {
            _ = try open(nvm, [otherLower[0], lower[1]])
            Issue.record("a foreign device was accepted")
        } catch let error as VolumeError {
            #expect(error.description.contains("belongs to another Shale file system"), "\(error)")
        }
        // A blank device.
        do {
            _ = try open(nvm, [LowerDevice(tier: .ssd, device: SimulatedBlockDevice(byteCount: 16 << 20), segmentBytes: 0, pathHint: "blank"), lower[1]])
            Issue.record("a blank device was accepted")
        } catch let error as VolumeError {
            #expect(error.description.contains("is not a Shale ssd device"), "\(error)")
        }
        // A device the volume does not have.
        let noLower = SimulatedPersistentMemory(byteCount: Self.nvmBytes, recordsTrace: false)
        _ = try Formatter.format(nvm: noLower, nvmPathHint: "n.nvm", lowerDevices: [], options: options())
        #expect(throws: VolumeError.self) { try open(noLower, [lower[0]]) }
    }

    @Test func formatRefusesBadGeometry() {
        let small = SimulatedPersistentMemory(byteCount: 4 << 20, recordsTrace: false)
        #expect(throws: VolumeError.self) { try Formatter.format(nvm: small, nvmPathHint: "s", lowerDevices: [], options: options()) }
        let nvm = SimulatedPersistentMemory(byteCount: Self.nvmBytes, recordsTrace: false)
        let twoSSDs = [lowerDevices()[0], lowerDevices()[0]]
        #expect(throws: VolumeError.self) { try Formatter.format(nvm: nvm, nvmPathHint: "s", lowerDevices: twoSSDs, options: options()) }
        var longLabel = options()
        longLabel.label = String(repeating: "é", count: 40)
        #expect(throws: VolumeError.self) { try Formatter.format(nvm: nvm, nvmPathHint: "s", lowerDevices: [], options: longLabel) }
    }
}
