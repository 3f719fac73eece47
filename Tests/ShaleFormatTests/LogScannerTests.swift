import Testing
@testable import ShaleFormat

/// A record as the test writer put it into the region.
struct WrittenRecord: Equatable {
    var sequence: UInt64
    var type: LogRecordType
    var offset: UInt64
    var payloadOffset: UInt64
    var dataOffset: UInt64
    var end: UInt64
    var payload: [UInt8]
    var data: [UInt8]

    /// Offset just past the last byte the record's checksums cover.
    var coveredEnd: UInt64 { data.isEmpty ? payloadOffset + UInt64(payload.count) : dataOffset + UInt64(data.count) }

    /// True when the byte at `position` is covered by the record's checksums (header,
    /// payload, data; not the padding before the data).
    func covers(_ position: UInt64) -> Bool {
        (offset ..< payloadOffset + UInt64(payload.count)).contains(position)
            || (dataOffset ..< dataOffset + UInt64(data.count)).contains(position)
    }
}

/// Writes a log region the way LibFS does (docs/format.md "Log records"): records at 8-byte
/// boundaries, bulk data at the next 4096-byte boundary, a `.wrap` record when the next
/// record does not fit before the end of the region, and no wrap record (the writer just
/// continues at 0) when fewer than 32 bytes are left. Payload and data bytes are never zero,
/// so that losing any of them is visible.
struct TestLog {
    var region: [UInt8]
    var epoch: UInt32
    let seed: UInt32
    var offset: UInt64
    var sequence: UInt64
    var written: [WrittenRecord] = []
    var generator: SplitMix
    /// Records from this sequence number on are undigested: the writer must never overwrite
    /// them (a test setup that would is itself wrong). `.max` for a log that is only history.
    var protectFrom: UInt64

    init(bytes: Int = 256 << 10, epoch: UInt32 = 7, seed: UInt32 = Fixture.seed, offset: UInt64 = 0,
         sequence: UInt64 = 1, randomSeed: UInt64 = 1) {
        region = [UInt8](repeating: 0, count: bytes)
        self.epoch = epoch
        self.seed = seed
        self.offset = offset
        self.sequence = sequence
        protectFrom = sequence
        generator = SplitMix(seed: randomSeed)
    }

    /// Everything written so far has been digested: the writer may overwrite it.
    mutating func digestAll() { protectFrom = sequence }

    var count: UInt64 { UInt64(region.count) }

    /// The records a scan must return: everything written but wrap records.
    var operations: [WrittenRecord] { written.filter { $0.type != .wrap } }

    @discardableResult
    mutating func append(_ type: LogRecordType = .create, payloadBytes: Int, dataBytes: Int = 0) -> WrittenRecord {
        append(type, payload: generator.nonzeroBytes(payloadBytes), data: generator.nonzeroBytes(dataBytes))
    }

    @discardableResult
    mutating func append(_ type: LogRecordType, payload: [UInt8], data: [UInt8]) -> WrittenRecord {
        if count - offset < UInt64(LogRecordHeader.encodedBytes) { offset = 0 }
        if LogRecordHeader.extent(at: offset, payloadBytes: UInt32(payload.count), dataBytes: UInt32(data.count)).end > count {
            place(.wrap, payload: [], data: [])
            offset = 0
        }
        return place(type, payload: payload, data: data)
    }

    /// Writes records from the current position until fewer than `margin` bytes are left
    /// before the end of the region (no wrap yet).
    mutating func fillLap(leaving margin: UInt64) {
        while offset < count - margin { append(.create, payloadBytes: 150) }
    }

    /// Moves the write position, as if the records before it had been digested long ago.
    mutating func jump(to newOffset: UInt64) { offset = newOffset }

    @discardableResult
    private mutating func place(_ type: LogRecordType, payload: [UInt8], data: [UInt8]) -> WrittenRecord {
        let parts = LogRecordHeader.extent(at: offset, payloadBytes: UInt32(payload.count), dataBytes: UInt32(data.count))
        precondition(parts.end <= count)
        if let victim = written.first(where: { $0.sequence >= protectFrom && $0.offset < parts.end && offset < $0.end }) {
            Issue.record("test writer overwrote undigested record \(victim.sequence) at \(victim.offset)")
        }
        for (index, byte) in payload.enumerated() { region[Int(parts.payloadOffset) + index] = byte }
        for (index, byte) in data.enumerated() { region[Int(parts.dataOffset) + index] = byte }
        let bodyCRC = payload.withUnsafeBytes { p in
            data.withUnsafeBytes { d in LogRecordHeader.bodyChecksum(payload: p, data: d, seed: seed) }
        }
        let header = LogRecordHeader(sequence: sequence, epoch: epoch, type: type,
                                     payloadBytes: UInt32(payload.count), dataBytes: UInt32(data.count), bodyCRC: bodyCRC)
        let start = Int(offset)
        region.withUnsafeMutableBytes { header.encode(into: UnsafeMutableRawBufferPointer(rebasing: $0[start ..< start + 32]), seed: seed) }
        let record = WrittenRecord(sequence: sequence, type: type, offset: offset, payloadOffset: parts.payloadOffset,
                                   dataOffset: parts.dataOffset, end: parts.end, payload: payload, data: data)
        written.append(record)
        offset = parts.end
        sequence += 1
        return record
    }

    /// Appends `n` records of assorted sizes; every third carries bulk data when `data`.
    mutating func appendMany(_ n: Int, data: Bool = false, maxPayload: Int = 300, maxData: Int = 9000) {
        for index in 0 ..< n {
            let type = LogRecordType.allCases.filter { $0 != .wrap }[index % 14]
            let dataBytes = data && index % 3 == 2 ? 1 + generator.below(maxData) : 0
            append(type, payloadBytes: generator.below(maxPayload + 1), dataBytes: dataBytes)
        }
    }

    func scan(from start: UInt64 = 0, sequence: UInt64 = 1, epoch: UInt32? = nil, searchPastDamage: Bool = true) -> ScanResult {
        ScanResult(region: region, epoch: epoch ?? self.epoch, seed: seed, start: start, sequence: sequence,
                   searchPastDamage: searchPastDamage)
    }

    mutating func damage(_ offset: UInt64, mask: UInt8 = 0xFF) { region[Int(offset)] ^= mask }

    mutating func fill(_ range: Range<UInt64>, with byte: UInt8) {
        for index in range { region[Int(index)] = byte }
    }
}

struct ScanResult {
    var records: [ScannedRecord] = []
    var payloads: [[UInt8]] = []
    var data: [[UInt8]] = []
    var damage: [LogDamage]
    var end: LogEnd?

    init(region: [UInt8], epoch: UInt32, seed: UInt32, start: UInt64, sequence: UInt64, searchPastDamage: Bool = true) {
        var records: [ScannedRecord] = [], payloads: [[UInt8]] = [], data: [[UInt8]] = []
        (damage, end) = region.withUnsafeBytes { buffer in
            var scanner = LogScanner(region: buffer, epoch: epoch, seed: seed, startOffset: start, startSequence: sequence,
                                     searchPastDamage: searchPastDamage)
            while let record = scanner.next() {
                records.append(record)
                let payloadStart = Int(record.payloadOffset), dataStart = Int(record.dataOffset)
                payloads.append(Array(buffer[payloadStart ..< payloadStart + Int(record.header.payloadBytes)]))
                data.append(Array(buffer[dataStart ..< dataStart + Int(record.header.dataBytes)]))
                if records.count > 100_000 { break }
            }
            #expect(scanner.next() == nil, "a scan that ended stays ended")
            return (scanner.damage, scanner.end)
        }
        self.records = records
        self.payloads = payloads
        self.data = data
    }

    var sequences: [UInt64] { records.map(\.header.sequence) }

    /// Records an issue unless the scan returned exactly `expected`, in order, at the offsets
    /// the writer used and with the bytes it wrote.
    func expectReturned(_ expected: [WrittenRecord], _ context: String = "", sourceLocation: SourceLocation = #_sourceLocation) {
        guard records.count == expected.count else {
            Issue.record("\(context): returned sequences \(sequences), expected \(expected.map(\.sequence))", sourceLocation: sourceLocation)
            return
        }
        for (index, (record, written)) in zip(records, expected).enumerated() {
            let same = record.header.sequence == written.sequence && record.header.type == written.type
                && record.offset == written.offset && record.payloadOffset == written.payloadOffset
                && record.dataOffset == written.dataOffset && record.end == written.end
                && payloads[index] == written.payload && data[index] == written.data
            if !same {
                let what = "scanned sequence \(record.header.sequence) at \(record.offset), written \(written.sequence) at \(written.offset)"
                Issue.record("\(context): record \(index): \(what)", sourceLocation: sourceLocation)
                return
            }
        }
    }
}

struct LogScannerTests {
    // MARK: A healthy log

    @Test func recordsComeBackInOrderAtTheirOffsets() {
        var log = TestLog()
        log.appendMany(200)
        let scan = log.scan()
        scan.expectReturned(log.operations)
        #expect(scan.damage.isEmpty)
        #expect(scan.end == .cleanEnd(offset: log.offset))
        #expect(scan.records.allSatisfy { $0.offset % 8 == 0 })
    }

    @Test func bulkDataLandsOn4096ByteBoundaries() {
        var log = TestLog()
        log.appendMany(60, data: true)
        #expect(log.operations.contains { !$0.data.isEmpty })
        let scan = log.scan()
        scan.expectReturned(log.operations)
        for record in scan.records where record.header.dataBytes > 0 {
            #expect(record.dataOffset % 64 == 0)
            #expect(record.dataOffset >= record.payloadOffset + UInt64(record.header.payloadBytes))
        }
        #expect(scan.damage.isEmpty)
        #expect(scan.end == .cleanEnd(offset: log.offset))
    }

    @Test func emptyRecordsAndEmptyLogsScan() {
        var log = TestLog()
        #expect(log.scan().records.isEmpty)
        #expect(log.scan().end == .cleanEnd(offset: 0))
        log.append(.unlink, payloadBytes: 0)
        log.append(.write, payloadBytes: 0, dataBytes: 1)
        let scan = log.scan()
        scan.expectReturned(log.operations)
        // The unlink ends at 32; the write's header at 32, its data from the next line, 64.
        #expect(scan.end == .cleanEnd(offset: 64 + 8))
    }

    @Test func scanStartsAtTheDigestCursor() {
        var log = TestLog()
        log.appendMany(30, data: true)
        let cursor = log.operations[12]
        let scan = log.scan(from: cursor.offset, sequence: cursor.sequence)
        scan.expectReturned(Array(log.operations[12...]))
        #expect(scan.damage.isEmpty)
    }

    // MARK: Wrapping

    /// The writer wrapped: a `.wrap` record (which takes a sequence number) ends the lap and
    /// the next record is at offset 0, over records of the previous lap.
    @Test func wrapRecordNearTheEndIsFollowed() {
        var log = TestLog(bytes: 64 << 10)
        log.appendMany(150)  // an earlier lap, digested long ago
        log.digestAll()
        log.jump(to: log.count - 200)
        let cursor = log.append(.create, payloadBytes: 100)  // ends 64 bytes before the end of the region
        #expect(cursor.end == log.count - 64)
        let afterWrap = log.append(.mkdir, payloadBytes: 100)
        #expect(afterWrap.offset == 0)
        let wrap = log.written[log.written.count - 2]
        #expect(wrap.type == .wrap && wrap.offset == log.count - 64 && wrap.sequence == cursor.sequence + 1)
        #expect(afterWrap.sequence == cursor.sequence + 2)
        log.appendMany(20, data: true)

        let scan = log.scan(from: cursor.offset, sequence: cursor.sequence)
        let expected = log.operations.filter { $0.sequence >= cursor.sequence }
        scan.expectReturned(expected)
        #expect(!scan.sequences.contains(wrap.sequence))
        #expect(scan.damage.isEmpty)
        #expect(scan.end == .cleanEnd(offset: log.offset))
    }

    @Test func recordWithBulkDataThatDoesNotFitWrapsToo() {
        var log = TestLog(bytes: 64 << 10)
        log.jump(to: log.count - 5000)
        let cursor = log.append(.write, payloadBytes: 40)
        let big = log.append(.write, payloadBytes: 40, dataBytes: 8192)
        #expect(big.offset == 0 && big.dataOffset == 128)
        #expect(log.written.contains { $0.type == .wrap })
        let scan = log.scan(from: cursor.offset, sequence: cursor.sequence)
        scan.expectReturned([cursor, big])
        #expect(scan.end == .cleanEnd(offset: big.end))
    }

    /// With fewer than 32 bytes left there is no room for a wrap record: the writer goes on
    /// at offset 0 with the next sequence number, and so does the scanner.
    @Test func fewerThan32BytesLeftContinuesAtZeroWithoutAWrapRecord() {
        for left: UInt64 in [0, 8, 16, 24] {
            var log = TestLog(bytes: 64 << 10)
            log.appendMany(100)
            log.digestAll()
            log.jump(to: log.count - 40 - left)
            let last = log.append(.create, payloadBytes: 8)
            #expect(last.end == log.count - left)
            // The log may end right here: its end is where the writer goes next, offset 0.
            #expect(log.scan(from: last.offset, sequence: last.sequence).end == .cleanEnd(offset: 0))
            let first = log.append(.rename, payloadBytes: 50)
            #expect(first.offset == 0 && first.sequence == last.sequence + 1)
            log.appendMany(5)
            #expect(!log.written.contains { $0.type == .wrap })
            let scan = log.scan(from: last.offset, sequence: last.sequence)
            scan.expectReturned(log.operations.filter { $0.sequence >= last.sequence }, "\(left) bytes left")
            #expect(scan.damage.isEmpty)
            #expect(scan.end == .cleanEnd(offset: log.offset))
        }
    }

    @Test func manyLapsInOneEpoch() {
        var log = TestLog()
        var cursor = (offset: UInt64(0), sequence: UInt64(1))
        for lap in 0 ..< 6 {
            let before = log.operations.count
            log.appendMany(80, data: lap % 2 == 1)
            let scan = log.scan(from: cursor.offset, sequence: cursor.sequence)
            scan.expectReturned(Array(log.operations[before...]), "lap \(lap)")
            #expect(scan.damage.isEmpty && scan.end == .cleanEnd(offset: log.offset))
            cursor = (log.offset, log.sequence)
            log.digestAll()
        }
        #expect(log.written.contains { $0.type == .wrap })
    }

    // MARK: The end of the log

    /// A crash at any point while the last record is being written: whatever part of it
    /// reached the media, the scan returns every earlier record, reports no damage, and ends
    /// at the torn record (clean end if its header is unreadable, torn tail if only the
    /// body is incomplete).
    @Test(arguments: [UInt8(0), 0xA5])
    func tornTailIsCleanEnd(fill: UInt8) {
        var log = TestLog(bytes: 64 << 10)
        log.appendMany(20, data: true)
        let last = log.append(.write, payloadBytes: 77, dataBytes: 5000)
        let intact = log.region
        var cuts = Array(last.offset ..< last.payloadOffset + 77)
        cuts += stride(from: last.payloadOffset + 77, to: last.coveredEnd, by: 61).map { $0 }
        let header = Int(last.offset) ..< Int(last.payloadOffset), body = Int(last.payloadOffset) ..< Int(last.coveredEnd)
        for cut in cuts {
            log.region = intact
            log.fill(cut ..< last.coveredEnd, with: fill)
            let headerIntact = log.region[header] == intact[header], bodyIntact = log.region[body] == intact[body]
            let scan = log.scan()
            if headerIntact && bodyIntact {  // the lost bytes happened to hold the fill value already
                scan.expectReturned(log.operations, "cut at \(cut)")
                continue
            }
            scan.expectReturned(Array(log.operations.dropLast()), "cut at \(cut)")
            #expect(scan.damage.isEmpty, "cut at \(cut)")
            let expectedEnd: LogEnd = headerIntact ? .tornTail(offset: last.offset, sequence: last.sequence)
                                                   : .cleanEnd(offset: last.offset)
            #expect(scan.end == expectedEnd, "cut at \(cut)")
        }
    }

    @Test func tornTailAfterAWrapOverAnEarlierLap() {
        var log = TestLog(bytes: 64 << 10)
        log.protectFrom = .max
        log.appendMany(50, data: true)
        log.fillLap(leaving: 1000)
        let cursor = log.operations[log.operations.count - 3]
        log.protectFrom = cursor.sequence
        log.appendMany(10)
        #expect(log.offset < cursor.offset, "the writer wrapped")
        let last = log.append(.create, payloadBytes: 200)
        log.fill(last.payloadOffset + 100 ..< last.payloadOffset + 200, with: 0)
        let scan = log.scan(from: cursor.offset, sequence: cursor.sequence)
        scan.expectReturned(log.operations.filter { $0.sequence >= cursor.sequence && $0.sequence < last.sequence })
        #expect(scan.damage.isEmpty)
        #expect(scan.end == .tornTail(offset: last.offset, sequence: last.sequence))
    }

    /// A region handed to a new owner keeps the old owner's records; they carry the old
    /// epoch, so they never read as committed, whatever their sequence numbers.
    @Test func staleRecordsOfAnOlderEpochAreNotReturned() {
        var old = TestLog(epoch: 6, sequence: 1)
        old.protectFrom = .max
        old.appendMany(800, data: true)
        var log = TestLog(epoch: 7, sequence: 1, randomSeed: 2)
        log.region = old.region
        log.appendMany(25)
        let scan = log.scan()
        scan.expectReturned(log.operations)
        #expect(scan.damage.isEmpty)
        #expect(scan.end == .cleanEnd(offset: log.offset))
        // Old records lie beyond the new end, some with higher sequence numbers.
        #expect(old.written.contains { $0.offset >= log.offset && $0.sequence > log.sequence })
    }

    @Test func staleRecordsWithLowerSequencesBeyondTheEndAreNotReturned() {
        var log = TestLog(bytes: 64 << 10)
        log.fillLap(leaving: 2000)
        let cursor = log.operations[log.operations.count - 2]
        log.protectFrom = cursor.sequence
        log.appendMany(30)  // wraps, overwriting part of the earlier lap
        #expect(log.written.contains { $0.type == .wrap } || log.offset < cursor.offset)
        let scan = log.scan(from: cursor.offset, sequence: cursor.sequence)
        scan.expectReturned(log.operations.filter { $0.sequence >= cursor.sequence })
        #expect(scan.damage.isEmpty)
        #expect(scan.end == .cleanEnd(offset: log.offset))
        // Records of the earlier lap do lie beyond the end.
        let staleBeyond = log.written.filter { $0.sequence < cursor.sequence && $0.offset >= log.offset }
        #expect(!staleBeyond.isEmpty)
    }

    // MARK: Damage inside the log

    @Test(arguments: [false, true])
    func bodyChecksumMismatchMidLogIsReportedAndSkipped(inData: Bool) {
        var log = TestLog()
        log.appendMany(30, data: true)
        let victim = log.operations.filter { inData ? !$0.data.isEmpty : !$0.payload.isEmpty }[4]
        log.damage(inData ? victim.dataOffset + UInt64(victim.data.count) - 1 : victim.payloadOffset)
        let scan = log.scan()
        scan.expectReturned(log.operations.filter { $0 != victim })
        #expect(scan.damage == [LogDamage(kind: .bodyChecksum, offset: victim.offset, lostSequences: victim.sequence ... victim.sequence)])
        #expect(scan.end == .cleanEnd(offset: log.offset))
    }

    @Test(arguments: [UInt8(0), 0x3C])
    func destroyedHeaderMidLogIsReportedWithTheLostSequence(fill: UInt8) {
        var log = TestLog()
        log.appendMany(30, data: true)
        let victim = log.operations[11]
        log.fill(victim.offset ..< victim.offset + 32, with: fill)
        let scan = log.scan()
        scan.expectReturned(log.operations.filter { $0 != victim })
        #expect(scan.damage == [LogDamage(kind: .header, offset: victim.offset, lostSequences: victim.sequence ... victim.sequence)])
        #expect(scan.end == .cleanEnd(offset: log.offset))
    }

    /// A digest of a live log does not search past a missing header: the tail is simply
    /// not written yet, and the search would cost a pass over the region each time.
    @Test func liveScanStopsAtAMissingHeaderWithoutSearching() {
        var log = TestLog()
        log.appendMany(30, data: true)
        let victim = log.operations[11]
        log.fill(victim.offset ..< victim.offset + 32, with: 0)
        let scan = log.scan(searchPastDamage: false)
        scan.expectReturned(Array(log.operations.prefix(11)))
        #expect(scan.damage.isEmpty)
        #expect(scan.end == .cleanEnd(offset: victim.offset))
    }

    @Test func recordSeedDiffersPerRegionAndEpoch() {
        let seed = Fixture.seed
        let base = LogRecordHeader.recordSeed(volumeSeed: seed, region: 3, epoch: 9)
        #expect(base == LogRecordHeader.recordSeed(volumeSeed: seed, region: 3, epoch: 9))
        #expect(base != LogRecordHeader.recordSeed(volumeSeed: seed, region: 4, epoch: 9))
        #expect(base != LogRecordHeader.recordSeed(volumeSeed: seed, region: 3, epoch: 9 + (1 << 32)), "the full epoch counts")
        #expect(base != LogRecordHeader.recordSeed(volumeSeed: Fixture.otherSeed, region: 3, epoch: 9))
        // A record sealed for region 3 does not verify as region 4's.
        let header = LogRecordHeader(sequence: 1, epoch: 9, type: .create, payloadBytes: 0, dataBytes: 0, bodyCRC: 0)
        let bytes = header.encode(seed: base)
        #expect(bytes.withUnsafeBytes { LogRecordHeader.decode($0, seed: base) } == header)
        let other = LogRecordHeader.recordSeed(volumeSeed: seed, region: 4, epoch: 9)
        #expect(bytes.withUnsafeBytes { LogRecordHeader.decode($0, seed: other) } == nil)
    }

    @Test func severalDestroyedRecordsInARowAreOneReportedRange() {
        var log = TestLog()
        log.appendMany(30)
        let lost = Array(log.operations[8 ... 10])
        log.fill(lost.first!.offset ..< lost.last!.end, with: 0)
        let scan = log.scan()
        scan.expectReturned(log.operations.filter { !lost.contains($0) })
        #expect(scan.damage == [LogDamage(kind: .header, offset: lost[0].offset, lostSequences: lost[0].sequence ... lost[2].sequence)])
    }

    @Test func damageInTwoPlacesIsReportedTwice() {
        var log = TestLog()
        log.appendMany(40, data: true)
        let first = log.operations[5]
        let withBody = log.operations.filter { !$0.payload.isEmpty || !$0.data.isEmpty }
        let second = withBody[withBody.count - 5]
        log.damage(first.offset + 9)  // the sequence field
        log.damage(second.coveredEnd - 1)  // the last byte the body checksum covers
        let scan = log.scan()
        scan.expectReturned(log.operations.filter { $0 != first && $0 != second })
        #expect(scan.damage.map(\.kind) == [.header, .bodyChecksum])
        #expect(scan.damage.map(\.lostSequences.lowerBound) == [first.sequence, second.sequence])
    }

    /// A destroyed wrap record loses no operation, but the scan cannot know that: it
    /// reports the wrap's sequence number as lost and goes on at offset 0.
    @Test func destroyedWrapRecordIsReportedAndTheNextLapStillScans() {
        var log = TestLog(bytes: 64 << 10)
        log.jump(to: log.count - 200)
        let cursor = log.append(.create, payloadBytes: 100)
        log.append(.create, payloadBytes: 100)
        log.appendMany(10)
        let wrap = log.written.first { $0.type == .wrap }!
        log.fill(wrap.offset ..< wrap.offset + 32, with: 0)
        let scan = log.scan(from: cursor.offset, sequence: cursor.sequence)
        scan.expectReturned(log.operations)
        #expect(scan.damage == [LogDamage(kind: .header, offset: wrap.offset, lostSequences: wrap.sequence ... wrap.sequence)])
    }

    /// Whatever single byte of the region is damaged, a scan returns only records exactly as
    /// the writer wrote them: at most the one record holding that byte is lost, reported as
    /// damage unless it was the last one (then the log just ends there).
    @Test func noSingleByteDamageYieldsARecordTheWriterDidNotWrite() {
        var log = TestLog(bytes: 64 << 10)
        log.protectFrom = .max
        log.appendMany(60, data: true)
        let cursor = log.operations[log.operations.count - 4]
        log.protectFrom = cursor.sequence
        log.appendMany(25, data: true, maxData: 3000)
        #expect(log.written.contains { $0.type == .wrap } || log.offset < cursor.offset, "the writer wrapped")
        let expected = log.operations.filter { $0.sequence >= cursor.sequence }
        let intact = log.region
        var generator = SplitMix(seed: 99)
        var positions = (0 ..< 700).map { _ in UInt64(generator.below(intact.count)) }
        for record in expected.prefix(3) + expected.suffix(2) { positions += (record.offset ..< record.offset + 32).map { $0 } }
        for position in positions {
            log.region = intact
            log.damage(position, mask: UInt8(truncatingIfNeeded: generator.next() % 255 + 1))
            let scan = log.scan(from: cursor.offset, sequence: cursor.sequence)
            let hit = log.written.last { $0.sequence >= cursor.sequence && $0.covers(position) }
            guard let hit else {
                scan.expectReturned(expected, "damage at \(position)")
                #expect(scan.damage.isEmpty, "damage at \(position)")
                continue
            }
            scan.expectReturned(expected.filter { $0.sequence != hit.sequence }, "damage at \(position)")
            if hit.sequence == log.sequence - 1 {
                #expect(scan.damage.isEmpty, "damage at \(position)")
                #expect(scan.end == .cleanEnd(offset: hit.offset) || scan.end == .tornTail(offset: hit.offset, sequence: hit.sequence))
            } else {
                #expect(scan.damage.count == 1 && scan.damage.first?.lostSequences == hit.sequence ... hit.sequence,
                        "damage at \(position): \(scan.damage)")
                #expect(scan.end == .cleanEnd(offset: log.offset))
            }
        }
    }

    // MARK: Hostile bytes

    @Test(arguments: [UInt64(1), 2, 3])
    func randomGarbageRegionYieldsNothing(seed: UInt64) {
        var generator = SplitMix(seed: seed)
        let region = generator.bytes(64 << 10)
        for (start, sequence) in [(UInt64(0), UInt64(1)), (4096, 77), (13, 2), (UInt64(region.count - 8), 5), (1 << 40, 9)] {
            let scan = ScanResult(region: region, epoch: 7, seed: Fixture.seed, start: start, sequence: sequence)
            #expect(scan.records.isEmpty)
            #expect(scan.damage.isEmpty)
            #expect(scan.end != nil)
        }
    }

    @Test(arguments: [0, 1, 31, 32, 33, 100])
    func tinyRegionsDoNotCrash(bytes: Int) {
        var log = TestLog(bytes: bytes)
        if bytes >= 32 { log.append(.create, payloadBytes: 0) }
        let scan = log.scan()
        #expect(scan.records.count == (bytes >= 32 ? 1 : 0))
        #expect(scan.end != nil)
    }

    /// A header that verifies but whose payload or data would run past the end of the
    /// region is never returned: at the tail it is the end, mid-log it is damage.
    static let lies: [(UInt32, UInt32)] = [(.max, 0), (0, .max), (70_000, 0), (0, 70_000), (40, 4096)]

    @Test(arguments: lies)
    func headerPointingPastTheRegionEndIsNeverReturned(payloadBytes: UInt32, dataBytes: UInt32) {
        var log = TestLog(bytes: 64 << 10)
        log.jump(to: log.count - 4096 - 128)
        log.appendMany(3)
        let liar = LogRecordHeader(sequence: log.sequence, epoch: log.epoch, type: .write,
                                   payloadBytes: payloadBytes, dataBytes: dataBytes, bodyCRC: 0)
        let at = Int(log.offset)
        log.region.withUnsafeMutableBytes { liar.encode(into: UnsafeMutableRawBufferPointer(rebasing: $0[at ..< at + 32]), seed: log.seed) }
        let tail = log.scan(from: log.operations[0].offset, sequence: log.operations[0].sequence)
        tail.expectReturned(log.operations)
        #expect(tail.damage.isEmpty)
        #expect(tail.end == .cleanEnd(offset: UInt64(at)))
        #expect(tail.records.allSatisfy { $0.end <= log.count })

        // The same lie followed by a good record (the writer wrapped after it).
        log.sequence += 1
        log.jump(to: 0)
        let after = log.append(.create, payloadBytes: 10)
        let mid = log.scan(from: log.operations[0].offset, sequence: log.operations[0].sequence)
        mid.expectReturned(log.operations)
        #expect(mid.damage == [LogDamage(kind: .header, offset: UInt64(at), lostSequences: liar.sequence ... liar.sequence)])
        #expect(mid.records.last?.offset == after.offset)
    }

    @Test func recordOfAnotherVolumeIsNotCommittedHere() {
        var log = TestLog(seed: Fixture.otherSeed)
        log.appendMany(10)
        let scan = ScanResult(region: log.region, epoch: log.epoch, seed: Fixture.seed, start: 0, sequence: 1)
        #expect(scan.records.isEmpty)
        #expect(scan.end == .cleanEnd(offset: 0))
    }
}
