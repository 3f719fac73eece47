import Testing
@testable import LibFS
@testable import ShaleFormat
@testable import ShaleMedia

/// The operation log, run on simulated NVM so that every crash the hardware allows can be
/// materialised, and read back with the recovery scanner of the format layer.
struct OperationLogTests {
    static let regionOffset: UInt64 = 64 * 1024
    static let volumeSeed: UInt32 = 0x5EED_1234

    static func makeLog(regionBytes: UInt64 = 128 * 1024, epoch: UInt64 = 3) -> (SimulatedPersistentMemory, OperationLog<SimulatedPersistentMemory>) {
        let nvm = SimulatedPersistentMemory(byteCount: Int(regionOffset + regionBytes + 4096))
        let grant = LogGrant(region: 2, regionOffset: regionOffset, regionBytes: regionBytes, epoch: epoch,
                             startOffset: 0, startSequence: 1, volumeSeed: volumeSeed)
        return (nvm, OperationLog(nvm: nvm, grant: grant))
    }

    struct Appended: Equatable {
        var sequence: UInt64
        var type: LogRecordType
        var payload: [UInt8]
        var data: [UInt8]
    }

    /// Reads the committed records of a region image from (offset, sequence), as recovery does.
    static func scan(_ image: [UInt8], grant: LogGrant, from offset: UInt64, sequence: UInt64)
        -> (records: [Appended], damage: [LogDamage], end: LogEnd?, cursor: (UInt64, UInt64)) {
        let start = Int(grant.regionOffset)
        return image[start ..< start + Int(grant.regionBytes)].withUnsafeBytes { region in
            var scanner = LogScanner(region: region, epoch: UInt32(truncatingIfNeeded: grant.epoch), seed: grant.recordSeed,
                                     startOffset: offset, startSequence: sequence)
            var records: [Appended] = []
            while let record = scanner.next() {
                let payload = Array(region[Int(record.payloadOffset) ..< Int(record.payloadOffset) + Int(record.header.payloadBytes)])
                let data = Array(region[Int(record.dataOffset) ..< Int(record.dataOffset) + Int(record.header.dataBytes)])
                records.append(Appended(sequence: record.header.sequence, type: record.header.type, payload: payload, data: data))
            }
            return (records, scanner.damage, scanner.end, (scanner.offset, scanner.nextSequence))
        }
    }

    static func randomRecord(_ generator: inout SplitMix64, maxData: Int = 9000) -> (LogRecordType, [UInt8], [UInt8]) {
        let types: [LogRecordType] = [.create, .write, .unlink, .setattr, .rename]
        let type = types[Int(generator.next() % UInt64(types.count))]
        let payload = generator.bytes(Int(generator.next() % 300))
        let data = type == .write && generator.next() % 2 == 0 ? generator.bytes(1 + Int(generator.next() % UInt64(maxData))) : []
        return (type, payload, data)
    }

    @Test func recordsReadBackInOrderAcrossManyLaps() throws {
        let (nvm, log) = Self.makeLog()
        var generator = SplitMix64(seed: 1)
        var pending: [Appended] = []
        var laps = 0
        for _ in 0 ..< 1500 {
            let (type, payload, data) = Self.randomRecord(&generator)
            let headBefore = log.head
            do {
                let sequence = try log.append(type, payload: payload, data: data)
                pending.append(Appended(sequence: sequence, type: type, payload: payload, data: data))
                if log.head < headBefore { laps += 1 }
            } catch {
                guard case .full = error else { Issue.record("\(error)"); return }
                // Digest: everything committed is read back exactly, then its space is reclaimed.
                let scanned = Self.scan(nvm.durableImage, grant: log.grant, from: log.tail, sequence: log.tailSequence)
                #expect(scanned.records == pending)
                #expect(scanned.damage.isEmpty)
                log.reclaim(upTo: scanned.cursor.0, sequence: scanned.cursor.1)
                #expect(log.usedBytes == 0 && log.freeBytes == log.capacityBytes)
                pending.removeAll()
            }
        }
        #expect(laps >= 5, "the test must wrap the region several times")
        let scanned = Self.scan(nvm.durableImage, grant: log.grant, from: log.tail, sequence: log.tailSequence)
        #expect(scanned.records == pending)
    }

    @Test func eachAppendIsOneFenceAndLeavesNothingPending() throws {
        let (nvm, log) = Self.makeLog()
        try log.append(.create, payload: [1, 2, 3])  // warm-up, no wrap afterwards
        for data in [[UInt8](), [UInt8](repeating: 7, count: 4096)] {
            let before = nvm.trace.fenceCount
            try log.append(.write, payload: Array(repeating: 9, count: 40), data: data)
            #expect(nvm.trace.fenceCount == before + 1)
            #expect(nvm.pendingLines.isEmpty, "durable on return")
        }
    }

    @Test func smallRecordsStayCompact() throws {
        let (_, log) = Self.makeLog()
        try log.append(.create, payload: Array(repeating: 1, count: 60))
        #expect(log.usedBytes == 96, "32-byte header + 60 bytes, rounded to 8: no block per record")
        try log.append(.write, payload: Array(repeating: 2, count: 40), data: Array(repeating: 3, count: 4096))
        #expect(log.usedBytes == 192 + 4096, "bulk data starts at the next cache line (the record at 96: header, payload to 168)")
    }

    @Test func fullLogRefusesUntilReclaimed() throws {
        let (_, log) = Self.makeLog(regionBytes: 64 * 1024)
        // Header and 1-byte payload in the first line, the data from the second: 4,160 bytes.
        let recordBytes: UInt64 = 64 + 4096
        var appended = 0
        var lastSequence: UInt64 = 0
        while true {
            do {
                lastSequence = try log.append(.write, payload: [1], data: Array(repeating: 5, count: 4096))
                appended += 1
            } catch {
                // The next record would wrap: the region's rest is padding, then the record.
                #expect(error == .full(neededBytes: 64 * 1024 - 15 * recordBytes + recordBytes, freeBytes: log.freeBytes))
                break
            }
        }
        #expect(appended == 15)
        #expect(log.freeBytes < recordBytes)
        // KernFS digested the first three records: their space is reusable.
        log.reclaim(upTo: 3 * recordBytes, sequence: 4)
        try log.append(.write, payload: [1], data: Array(repeating: 5, count: 4096))
        // The wrap record before it took a sequence number too.
        #expect(log.nextSequence == lastSequence + 3)
    }

    /// Records are written as whole cache lines: one that starts inside a line rewrites the
    /// line's earlier bytes. A log resumed there (after recovery) takes them from NVM, so the
    /// records before it read back intact.
    @Test func resumingInsideALineKeepsThePreviousRecords() throws {
        let (nvm, log) = Self.makeLog()
        var expected: [Appended] = []
        for size in [5, 17, 40, 3] {
            let payload = [UInt8](repeating: UInt8(size), count: size)
            expected.append(Appended(sequence: try log.append(.create, payload: payload), type: .create, payload: payload, data: []))
        }
        #expect(log.head % 64 != 0, "the next record starts inside a line")
        let grant = LogGrant(region: 2, regionOffset: Self.regionOffset, regionBytes: log.grant.regionBytes, epoch: 3,
                             startOffset: log.head, startSequence: log.nextSequence, volumeSeed: Self.volumeSeed)
        let resumed = OperationLog(nvm: nvm, grant: grant)
        for size in [9, 70] {
            let payload = [UInt8](repeating: UInt8(size), count: size)
            expected.append(Appended(sequence: try resumed.append(.write, payload: payload), type: .write, payload: payload, data: []))
        }
        let scanned = Self.scan(nvm.durableImage, grant: grant, from: 0, sequence: 1)
        #expect(scanned.records == expected)
        #expect(scanned.damage.isEmpty)
    }

    /// A small record's last line is written whole, zeros after the record: when the oldest
    /// undigested record starts inside that line, the record waits for space instead.
    @Test func aSmallRecordNeverZeroesTheLineOfTheOldestRecord() throws {
        let (nvm, log) = Self.makeLog(regionBytes: 64 * 1024)
        let payload = [UInt8](repeating: 6, count: 40)  // 72-byte records
        var pending: [Appended] = []
        func fill() {
            while let sequence = try? log.append(.create, payload: payload) {
                pending.append(Appended(sequence: sequence, type: .create, payload: payload, data: []))
            }
        }
        fill()
        // The first three records digested: the tail is at 216, inside the line 192 ..< 256.
        log.reclaim(upTo: 3 * 72, sequence: pending[3].sequence)
        pending.removeFirst(3)
        #expect(log.tail % 64 != 0)
        fill()
        #expect(log.head <= log.tail)
        let scanned = Self.scan(nvm.durableImage, grant: log.grant, from: log.tail, sequence: log.tailSequence)
        #expect(scanned.records == pending, "every undigested record intact")
        #expect(scanned.damage.isEmpty)
    }

    @Test func aRecordLargerThanTheRegionIsRefused() {
        let (_, log) = Self.makeLog(regionBytes: 64 * 1024)
        #expect(throws: LogError.tooLarge(recordBytes: 64 + 65536, regionBytes: 65536)) {
            try log.append(.write, payload: [1], data: Array(repeating: 0, count: 65536))
        }
    }

    /// The durability contract at the log's level: a crash at ANY event, with unfenced lines
    /// kept, dropped or torn, leaves exactly a prefix of the appends that contains every
    /// append that returned; a torn record is a clean end, never reported damage. The log
    /// starts near the end of its region so that the crash points include a wrap.
    @Test func crashAtAnyEventLeavesAPrefixWithEveryReturnedAppend() throws {
        let regionBytes: UInt64 = 512 * 1024
        let nvm = SimulatedPersistentMemory(byteCount: Int(Self.regionOffset + regionBytes))
        let start = regionBytes - 5000
        let grant = LogGrant(region: 1, regionOffset: Self.regionOffset, regionBytes: regionBytes, epoch: 9,
                             startOffset: start, startSequence: 1, volumeSeed: Self.volumeSeed)
        let log = OperationLog(nvm: nvm, grant: grant)
        var generator = SplitMix64(seed: 2)
        var appended: [Appended] = []
        var returnedAt: [Int] = []  // event count when append i returned
        var wrapped = false
        while appended.count < 40 {
            let (type, payload, data) = Self.randomRecord(&generator, maxData: 6000)
            let sequence = try log.append(type, payload: payload, data: data)
            appended.append(Appended(sequence: sequence, type: type, payload: payload, data: data))
            returnedAt.append(nvm.trace.events.count)
            if log.head < start { wrapped = true }
        }
        #expect(wrapped)
        let events = nvm.trace.events
        let model = CacheLineModel(image: nvm.initialImage)
        var tornSeen = false
        for eventCount in 0 ... events.count {
            if eventCount > 0 { model.apply(events[eventCount - 1]) }
            let mustHave = returnedAt.filter { $0 <= eventCount }.count
            var fates: [LineFate] = [.keep, .drop]
            for _ in 0 ..< 3 { fates.append(.tear(wordMask: UInt8(truncatingIfNeeded: generator.next()))) }
            for fate in fates {
                let scanned = Self.scan(model.crashImage { _ in fate }, grant: grant, from: start, sequence: 1)
                #expect(scanned.damage.isEmpty, "event \(eventCount), \(fate): \(scanned.damage)")
                #expect(Array(appended.prefix(scanned.records.count)) == scanned.records, "not a prefix at event \(eventCount)")
                #expect(scanned.records.count >= mustHave,
                        "event \(eventCount), \(fate): \(scanned.records.count) records, but \(mustHave) appends had returned")
                if case .tornTail = scanned.end { tornSeen = true }
            }
        }
        #expect(tornSeen, "some crash point must tear a record")
    }
}

/// Operations go into the log in their format-layer encoding and come back identical.
struct OperationLogOperationTests {
    @Test func operationsRoundTripThroughTheLog() throws {
        let (nvm, log) = OperationLogTests.makeLog()
        let time = Timestamp(seconds: 1_764_000_000, nanoseconds: 123)
        let operations: [(LogOperation, [UInt8])] = [
            (.mkdir(CreateArguments(parent: 1, inode: 2, mode: 0o040755, uid: 0, gid: 0, rdev: 0, time: time, name: Array("src".utf8))), []),
            (.create(CreateArguments(parent: 2, inode: 3, mode: 0o100644, uid: 0, gid: 0, rdev: 0, time: time, name: Array("main.c".utf8))), []),
            (.write(WriteArguments(inode: 3, offset: 0, length: 5, time: time, inline: Array("hello".utf8))), []),
            (.write(WriteArguments(inode: 3, offset: 4096, length: 4096, time: time, inline: [])), [UInt8](repeating: 0xAB, count: 4096)),
        ]
        for (operation, data) in operations {
            _ = try data.withUnsafeBytes { buffer in try log.append(operation, data: buffer) }
        }
        let scanned = OperationLogTests.scan(nvm.durableImage, grant: log.grant, from: 0, sequence: 1)
        #expect(scanned.records.count == operations.count)
        for (record, (operation, data)) in zip(scanned.records, operations) {
            let decoded = try record.payload.withUnsafeBytes {
                try LogOperation.decode(type: record.type, payload: $0, dataBytes: UInt32(record.data.count))
            }
            #expect(decoded == operation)
            #expect(record.data == data)
        }
    }
}
