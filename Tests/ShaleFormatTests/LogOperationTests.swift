import Testing
@testable import ShaleFormat

// The payloads of logged operations (docs/format.md "Operation payloads"). The refusal tests
// read as the list of rules: each builds a valid operation, breaks one rule, and expects both
// `validate` and `decode` of its encoding to refuse it, naming the field.

private func decode(_ type: LogRecordType, _ bytes: [UInt8], dataBytes: UInt32 = 0) throws -> LogOperation {
    try bytes.withUnsafeBytes { try LogOperation.decode(type: type, payload: $0, dataBytes: dataBytes) }
}

private func roundTrip(_ operation: LogOperation, dataBytes: UInt32 = 0) throws -> LogOperation {
    try decode(operation.recordType, operation.encodePayload(), dataBytes: dataBytes)
}

/// The field `operation` is refused for (decode of its encoding and `validate` agree), or nil
/// when it is accepted. A refusal that is not `invalidField` of "log record <type>" is an issue.
private func refusal(_ operation: LogOperation, dataBytes: UInt32 = 0,
                     sourceLocation: SourceLocation = #_sourceLocation) -> String? {
    let decoded = formatError(sourceLocation: sourceLocation) { try roundTrip(operation, dataBytes: dataBytes) }
    let validated = formatError(sourceLocation: sourceLocation) { try operation.validate(dataBytes: dataBytes) }
    #expect(decoded == validated, "decode and validate disagree", sourceLocation: sourceLocation)
    guard let decoded else { return nil }
    guard case let .invalidField(structure, field, _) = decoded else {
        Issue.record("refused with \(decoded), not invalidField", sourceLocation: sourceLocation)
        return nil
    }
    #expect(structure == "log record \(operation.recordType)", sourceLocation: sourceLocation)
    return field
}

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// A legal directory-entry name of `count` arbitrary bytes (anything but NUL and '/').
private func arbitraryName(_ count: Int, seed: UInt64) -> [UInt8] {
    var generator = SplitMix(seed: seed)
    var name = generator.nonzeroBytes(count).map { $0 == UInt8(ascii: "/") ? 0xFF : $0 }
    if name == [UInt8(ascii: ".")] { name = [0x80] }
    return name
}

/// One valid operation of every kind, and builders for variants of them.
enum Sample {
    static let time = Timestamp(seconds: 1_764_072_961, nanoseconds: 123_456_789)
    static let name = bytes("report.txt")  // 10 bytes

    static let createArguments = CreateArguments(parent: 0x0000_0002_0000_0001, inode: 0x0000_0003_0000_0040,
                                                 mode: 0o104755, uid: 1000, gid: 100, time: time, name: name)
    static let mkdirArguments = CreateArguments(parent: 2, inode: 77, mode: 0o041777, uid: 0, gid: 0,
                                                time: Timestamp(seconds: -1, nanoseconds: 999_999_999), name: bytes("photos"))
    static let mknodArguments = CreateArguments(parent: 2, inode: 78, mode: 0o020620, uid: 0, gid: 5,
                                                rdev: 0x0000_0103_0000_0001, time: time, name: bytes("tty9"))
    static let symlinkArguments = SymlinkArguments(parent: 2, inode: 79, uid: 1000, gid: 100, time: time,
                                                   name: bytes("latest"), target: bytes("../releases/2025/shale-1.0"))
    static let linkArguments = LinkArguments(parent: 9, inode: 0x40, time: time, name: bytes("report-copy.txt"))
    static let removeArguments = RemoveArguments(parent: 2, inode: 0x40, time: time, name: name)
    static let renameArguments = RenameArguments(oldParent: 2, oldName: bytes("draft"), newParent: 9,
                                                 newName: bytes("final.txt"), source: 0x41, replaced: 0x42, time: time)
    static let inlineWriteArguments = WriteArguments(inode: 0x40, offset: 123_456_789, length: 11, time: time,
                                                     inline: bytes("hello world"))
    static let bulkWriteArguments = WriteArguments(inode: 0x40, offset: 1 << 40, length: 4096, time: time)
    static let truncateArguments = TruncateArguments(inode: 0x40, size: 0x1_0000_0001, time: time)
    static let fallocateArguments = FallocateArguments(inode: 0x40, mode: [.keepSize, .punchHole], offset: 8192,
                                                       length: 1 << 30, time: time)
    static let setattrArguments = SetattrArguments(inode: 0x40, valid: .known, mode: 0o2750, uid: 1001, gid: 1002,
                                                   atime: Timestamp(seconds: -86_400, nanoseconds: 1),
                                                   mtime: Timestamp(seconds: 1_700_000_000, nanoseconds: 999_999_999),
                                                   ctime: time)
    static let setxattrArguments = SetxattrArguments(inode: 0x40, flags: .create, name: bytes("user.shale.pin"),
                                                     value: bytes("ssd"), time: time)
    static let removexattrArguments = RemoveXattrArguments(inode: 0x40, name: bytes("user.shale.pin"), time: time)

    /// One valid operation of every type, with the bulk data it is logged with.
    static let all: [(operation: LogOperation, dataBytes: UInt32)] = [
        (.create(createArguments), 0),
        (.mkdir(mkdirArguments), 0),
        (.mknod(mknodArguments), 0),
        (.symlink(symlinkArguments), 0),
        (.link(linkArguments), 0),
        (.unlink(removeArguments), 0),
        (.rmdir(RemoveArguments(parent: 2, inode: 77, time: time, name: bytes("photos"))), 0),
        (.rename(renameArguments), 0),
        (.write(inlineWriteArguments), 0),
        (.write(bulkWriteArguments), 4096),
        (.truncate(truncateArguments), 0),
        (.fallocate(fallocateArguments), 0),
        (.setattr(setattrArguments), 0),
        (.setxattr(setxattrArguments), 0),
        (.removexattr(removexattrArguments), 0),
    ]

    static func create(_ edit: (inout CreateArguments) -> Void) -> LogOperation {
        var arguments = createArguments
        edit(&arguments)
        return .create(arguments)
    }

    static func mkdir(_ edit: (inout CreateArguments) -> Void) -> LogOperation {
        var arguments = mkdirArguments
        edit(&arguments)
        return .mkdir(arguments)
    }

    static func mknod(_ edit: (inout CreateArguments) -> Void) -> LogOperation {
        var arguments = mknodArguments
        edit(&arguments)
        return .mknod(arguments)
    }

    static func symlink(_ edit: (inout SymlinkArguments) -> Void) -> LogOperation {
        var arguments = symlinkArguments
        edit(&arguments)
        return .symlink(arguments)
    }

    static func link(_ edit: (inout LinkArguments) -> Void) -> LogOperation {
        var arguments = linkArguments
        edit(&arguments)
        return .link(arguments)
    }

    static func unlink(_ edit: (inout RemoveArguments) -> Void) -> LogOperation {
        var arguments = removeArguments
        edit(&arguments)
        return .unlink(arguments)
    }

    static func rmdir(_ edit: (inout RemoveArguments) -> Void) -> LogOperation {
        var arguments = removeArguments
        edit(&arguments)
        return .rmdir(arguments)
    }

    static func rename(_ edit: (inout RenameArguments) -> Void) -> LogOperation {
        var arguments = renameArguments
        edit(&arguments)
        return .rename(arguments)
    }

    static func write(_ edit: (inout WriteArguments) -> Void) -> LogOperation {
        var arguments = inlineWriteArguments
        edit(&arguments)
        return .write(arguments)
    }

    static func bulkWrite(_ edit: (inout WriteArguments) -> Void) -> LogOperation {
        var arguments = bulkWriteArguments
        edit(&arguments)
        return .write(arguments)
    }

    static func truncate(_ edit: (inout TruncateArguments) -> Void) -> LogOperation {
        var arguments = truncateArguments
        edit(&arguments)
        return .truncate(arguments)
    }

    static func fallocate(_ edit: (inout FallocateArguments) -> Void) -> LogOperation {
        var arguments = fallocateArguments
        edit(&arguments)
        return .fallocate(arguments)
    }

    static func setattr(_ edit: (inout SetattrArguments) -> Void) -> LogOperation {
        var arguments = setattrArguments
        edit(&arguments)
        return .setattr(arguments)
    }

    static func setxattr(_ edit: (inout SetxattrArguments) -> Void) -> LogOperation {
        var arguments = setxattrArguments
        edit(&arguments)
        return .setxattr(arguments)
    }

    static func removexattr(_ edit: (inout RemoveXattrArguments) -> Void) -> LogOperation {
        var arguments = removexattrArguments
        edit(&arguments)
        return .removexattr(arguments)
    }
}

struct LogOperationRoundTripTests {
    @Test func everyOperationRoundTrips() throws {
        for (operation, dataBytes) in Sample.all {
            #expect(try roundTrip(operation, dataBytes: dataBytes) == operation, "\(operation.recordType)")
        }
        let covered = Set(Sample.all.map(\.operation.recordType))
        #expect(covered == Set(LogRecordType.allCases).subtracting([.wrap]))
    }

    @Test func recordTypeFollowsTheCase() {
        let types = Sample.all.map(\.operation.recordType)
        #expect(types == [.create, .mkdir, .mknod, .symlink, .link, .unlink, .rmdir, .rename, .write, .write,
                          .truncate, .fallocate, .setattr, .setxattr, .removexattr])
    }

    @Test(arguments: [1, 255])
    func namesOfArbitraryBytesRoundTripInEveryNamedOperation(count: Int) throws {
        let name = arbitraryName(count, seed: UInt64(count))
        let other = arbitraryName(count, seed: UInt64(count) + 1000)
        #expect(name.count == count && DirectoryEntry.nameProblem(name) == nil && DirectoryEntry.nameProblem(other) == nil)
        let operations: [LogOperation] = [
            Sample.create { $0.name = name }, Sample.mkdir { $0.name = name }, Sample.mknod { $0.name = name },
            Sample.symlink { $0.name = name }, Sample.link { $0.name = name }, Sample.unlink { $0.name = name },
            Sample.rmdir { $0.name = name }, Sample.rename { $0.oldName = name; $0.newName = other },
        ]
        for operation in operations {
            #expect(try roundTrip(operation) == operation, "\(operation.recordType)")
        }
    }

    @Test func symlinkTargetsOf1To4095ArbitraryBytesRoundTrip() throws {
        var generator = SplitMix(seed: 4095)
        for count in [1, 4095] {
            let operation = Sample.symlink { $0.target = generator.nonzeroBytes(count) }
            #expect(try roundTrip(operation) == operation)
        }
        #expect(SymlinkArguments.targetBytesMax == 4095)
    }

    @Test func xattrValuesOf0To64KiBAndNamesOf1To255BytesRoundTrip() throws {
        var generator = SplitMix(seed: 65536)
        let value = generator.bytes(65536)
        let longName = generator.nonzeroBytes(255)  // any byte but NUL, '/' included
        for operation in [Sample.setxattr { $0.value = value }, Sample.setxattr { $0.value = [] },
                          Sample.setxattr { $0.name = longName; $0.value = [0] }, Sample.setxattr { $0.name = [0x2F] },
                          Sample.removexattr { $0.name = longName }, Sample.removexattr { $0.name = [0xFF] }] {
            #expect(try roundTrip(operation) == operation)
        }
        #expect(SetxattrArguments.valueBytesMax == 65536)
    }

    @Test(arguments: [1, 100, 3072])
    func inlineWritesUpTo3072BytesRoundTrip(length: Int) throws {
        var generator = SplitMix(seed: UInt64(length))
        let operation = Sample.write { $0.length = UInt32(length); $0.inline = generator.bytes(length) }
        #expect(try roundTrip(operation) == operation)
        #expect(WriteArguments.inlineBytesMax == 3072)
    }

    @Test func bulkWritesOfAnyLengthRoundTripWithTheirData() throws {
        for length: UInt32 in [1, 3073, 4096, 1 << 20, .max] {
            let operation = Sample.bulkWrite { $0.length = length }
            #expect(try roundTrip(operation, dataBytes: length) == operation)
        }
        // Small writes may go to bulk data too, and a write may end at the largest file size.
        let last = Sample.bulkWrite { $0.length = .max; $0.offset = LogOperation.fileBytesMax - UInt64(UInt32.max) }
        #expect(try roundTrip(last, dataBytes: .max) == last)
        #expect(LogOperation.fileBytesMax == (UInt64(1) << 63) - 1)
    }

    @Test func everyAllowedRenameFlagCombinationRoundTrips() throws {
        for operation in [Sample.rename { $0.flags = [] }, Sample.rename { $0.flags = [] ; $0.replaced = 0 },
                          Sample.rename { $0.flags = .noReplace; $0.replaced = 0 },
                          Sample.rename { $0.flags = .exchange }] {
            #expect(try roundTrip(operation) == operation)
        }
        // Within one directory, and a directory moved to another parent.
        let sameDirectory = Sample.rename { $0.newParent = $0.oldParent }
        #expect(try roundTrip(sameDirectory) == sameDirectory)
    }

    @Test func everyAllowedFallocateModeRoundTrips() throws {
        let modes: [FallocateMode] = [[], .keepSize, [.keepSize, .punchHole], .zeroRange, [.zeroRange, .keepSize]]
        for mode in modes {
            let operation = Sample.fallocate { $0.mode = mode }
            #expect(try roundTrip(operation) == operation, "mode \(mode.rawValue)")
        }
        let last = Sample.fallocate { $0.offset = 1; $0.length = LogOperation.fileBytesMax - 1 }
        #expect(try roundTrip(last) == last)
    }

    @Test func everyAllowedXattrFlagCombinationRoundTrips() throws {
        for flags: XattrFlags in [[], .create, .replace] {
            let operation = Sample.setxattr { $0.flags = flags }
            #expect(try roundTrip(operation) == operation)
        }
    }

    @Test func everySetattrMaskRoundTrips() throws {
        for bits in UInt32(0) ..< 32 {
            let valid = SetattrMask(rawValue: bits)
            var arguments = SetattrArguments(inode: 0x40, valid: valid, ctime: Sample.time)
            if valid.contains(.mode) { arguments.mode = 0o7777 }
            if valid.contains(.uid) { arguments.uid = UInt32.max - 1 }
            if valid.contains(.gid) { arguments.gid = 0 }
            if valid.contains(.atime) { arguments.atime = Timestamp(seconds: .min, nanoseconds: 999_999_999) }
            if valid.contains(.mtime) { arguments.mtime = Timestamp(seconds: .max, nanoseconds: 0) }
            let operation = LogOperation.setattr(arguments)
            #expect(try roundTrip(operation) == operation, "mask \(bits)")
        }
    }

    @Test func everyMknodFileTypeRoundTrips() throws {
        let kinds: [(type: UInt32, rdev: UInt64)] = [(0o010000, 0), (0o140000, 0), (0o020000, 0x0000_0004_0000_0040),
                                                     (0o060000, 0x0000_0008_0000_0001), (0o020000, 0), (0o100000, 0)]
        for (type, rdev) in kinds {
            let operation = Sample.mknod { $0.mode = type | 0o640; $0.rdev = rdev }
            #expect(try roundTrip(operation) == operation, "type \(String(type, radix: 8))")
        }
    }

    @Test func extremeTimestampsAndNumbersRoundTrip() throws {
        for time in [Timestamp(seconds: .min, nanoseconds: 0), Timestamp(seconds: .max, nanoseconds: 999_999_999),
                     Timestamp(seconds: 0, nanoseconds: 0)] {
            let operation = Sample.create { $0.time = time; $0.parent = .max; $0.inode = 1; $0.rdev = 0 }
            #expect(try roundTrip(operation) == operation)
        }
        let truncate = Sample.truncate { $0.size = LogOperation.fileBytesMax; $0.inode = .max }
        #expect(try roundTrip(truncate) == truncate)
        let empty = Sample.truncate { $0.size = 0 }
        #expect(try roundTrip(empty) == empty)
    }
}

struct LogOperationLayoutTests {
    @Test func aCreateWithA10ByteNameTakes64Bytes() {
        let operation = LogOperation.create(Sample.createArguments)
        #expect(Sample.name.count == 10)
        #expect(operation.encodedPayloadBytes == 64)
        #expect(operation.encodePayload().count == 64)
    }

    @Test func payloadSizes() {
        let expected: [(LogOperation, Int)] = [
            (.create(Sample.createArguments), 54 + 10),
            (.symlink(Sample.symlinkArguments), 44 + 6 + 26),
            (.link(Sample.linkArguments), 34 + 15),
            (.unlink(Sample.removeArguments), 34 + 10),
            (.rename(Sample.renameArguments), 56 + 5 + 9),
            (.write(Sample.inlineWriteArguments), 40 + 11),
            (.write(Sample.bulkWriteArguments), 40),
            (.truncate(Sample.truncateArguments), 32),
            (.fallocate(Sample.fallocateArguments), 44),
            (.setattr(Sample.setattrArguments), 72),
            (.setxattr(Sample.setxattrArguments), 34 + 14 + 3),
            (.removexattr(Sample.removexattrArguments), 26 + 14),
        ]
        for (operation, bytes) in expected {
            #expect(operation.encodedPayloadBytes == bytes, "\(operation.recordType)")
            #expect(operation.encodePayload().count == bytes, "\(operation.recordType)")
        }
    }

    /// docs/format.md "Operation payloads", create.
    @Test func createFieldOffsetsMatchTheSpec() {
        let arguments = Sample.mknodArguments
        let payload = LogOperation.mknod(arguments).encodePayload()
        #expect(payload.le(UInt64.self, at: 0) == arguments.parent)
        #expect(payload.le(UInt64.self, at: 8) == arguments.inode)
        #expect(payload.le(UInt64.self, at: 16) == 0x0000_0103_0000_0001)
        #expect(payload.le(UInt64.self, at: 24) == UInt64(bitPattern: Sample.time.seconds))
        #expect(payload.le(UInt32.self, at: 32) == Sample.time.nanoseconds)
        #expect(payload.le(UInt32.self, at: 36) == 0)
        #expect(payload.le(UInt32.self, at: 40) == 0o020620)
        #expect(payload.le(UInt32.self, at: 44) == 0)
        #expect(payload.le(UInt32.self, at: 48) == 5)
        #expect(payload.le(UInt16.self, at: 52) == 4)
        #expect(Array(payload[54...]) == bytes("tty9"))
    }

    /// docs/format.md "Operation payloads", rename.
    @Test func renameFieldOffsetsMatchTheSpec() {
        let payload = Sample.rename { $0.flags = .exchange }.encodePayload()
        #expect(payload.le(UInt64.self, at: 0) == 2)
        #expect(payload.le(UInt64.self, at: 8) == 9)
        #expect(payload.le(UInt64.self, at: 16) == 0x41)
        #expect(payload.le(UInt64.self, at: 24) == 0x42)
        #expect(payload.le(UInt64.self, at: 32) == UInt64(bitPattern: Sample.time.seconds))
        #expect(payload.le(UInt32.self, at: 40) == Sample.time.nanoseconds)
        #expect(payload.le(UInt32.self, at: 44) == 0)
        #expect(payload.le(UInt32.self, at: 48) == RenameFlags.exchange.rawValue)
        #expect(payload.le(UInt16.self, at: 52) == 5)
        #expect(Array(payload[54 ..< 59]) == bytes("draft"))
        #expect(payload.le(UInt16.self, at: 59) == 9)
        #expect(Array(payload[61...]) == bytes("final.txt"))
    }

    /// docs/format.md "Operation payloads", write and setxattr.
    @Test func writeAndSetxattrFieldOffsetsMatchTheSpec() {
        let write = LogOperation.write(Sample.inlineWriteArguments).encodePayload()
        #expect(write.le(UInt64.self, at: 0) == 0x40)
        #expect(write.le(UInt64.self, at: 8) == 123_456_789)
        #expect(write.le(UInt64.self, at: 16) == UInt64(bitPattern: Sample.time.seconds))
        #expect(write.le(UInt32.self, at: 32) == 11)
        #expect(write.le(UInt32.self, at: 36) == 11)
        #expect(Array(write[40...]) == bytes("hello world"))
        let bulk = LogOperation.write(Sample.bulkWriteArguments).encodePayload()
        #expect(bulk.le(UInt32.self, at: 32) == 4096)
        #expect(bulk.le(UInt32.self, at: 36) == 0)

        let xattr = LogOperation.setxattr(Sample.setxattrArguments).encodePayload()
        #expect(xattr.le(UInt64.self, at: 0) == 0x40)
        #expect(xattr.le(UInt64.self, at: 8) == UInt64(bitPattern: Sample.time.seconds))
        #expect(xattr.le(UInt32.self, at: 24) == XattrFlags.create.rawValue)
        #expect(xattr.le(UInt16.self, at: 28) == 14)
        #expect(Array(xattr[30 ..< 44]) == bytes("user.shale.pin"))
        #expect(xattr.le(UInt32.self, at: 44) == 3)
        #expect(Array(xattr[48...]) == bytes("ssd"))
    }

    @Test func encodeIntoWritesExactlyEncodedPayloadBytes() {
        for (operation, _) in Sample.all {
            let size = operation.encodedPayloadBytes
            var buffer = [UInt8](repeating: 0xA5, count: size + 64)
            let written = buffer.withUnsafeMutableBytes { operation.encodePayload(into: $0) }
            #expect(written == size, "\(operation.recordType)")
            #expect(Array(buffer[..<size]) == operation.encodePayload(), "\(operation.recordType)")
            #expect(buffer[size...].allSatisfy { $0 == 0xA5 }, "\(operation.recordType) wrote past its payload")
            // A buffer of exactly the payload's size is enough.
            var exact = [UInt8](repeating: 0, count: size)
            #expect(exact.withUnsafeMutableBytes { operation.encodePayload(into: $0) } == size)
        }
    }
}

/// Every rule decode applies to a client's log, one test each.
struct LogOperationRefusalTests {
    @Test func aWrapRecordCarriesNoOperation() {
        let error = formatError { try decode(.wrap, []) }
        #expect(error == .invalidField(structure: "log record wrap", field: "type",
                                       reason: "a wrap record carries no operation"))
    }

    @Test func inodeZeroIsRefusedInEveryInodeField() {
        let cases: [(LogOperation, String)] = [
            (Sample.create { $0.parent = 0 }, "parent"), (Sample.create { $0.inode = 0 }, "inode"),
            (Sample.mkdir { $0.parent = 0 }, "parent"), (Sample.mknod { $0.inode = 0 }, "inode"),
            (Sample.symlink { $0.parent = 0 }, "parent"), (Sample.symlink { $0.inode = 0 }, "inode"),
            (Sample.link { $0.parent = 0 }, "parent"), (Sample.link { $0.inode = 0 }, "inode"),
            (Sample.unlink { $0.parent = 0 }, "parent"), (Sample.rmdir { $0.inode = 0 }, "inode"),
            (Sample.rename { $0.oldParent = 0 }, "oldParent"), (Sample.rename { $0.newParent = 0 }, "newParent"),
            (Sample.rename { $0.source = 0 }, "source"), (Sample.write { $0.inode = 0 }, "inode"),
            (Sample.truncate { $0.inode = 0 }, "inode"), (Sample.fallocate { $0.inode = 0 }, "inode"),
            (Sample.setattr { $0.inode = 0 }, "inode"), (Sample.setxattr { $0.inode = 0 }, "inode"),
            (Sample.removexattr { $0.inode = 0 }, "inode"),
        ]
        for (operation, field) in cases { #expect(refusal(operation) == field, "\(operation.recordType) \(field)") }
    }

    @Test func createMakesOnlyRegularFiles() {
        for type: UInt32 in [0, 0o040000, 0o120000, 0o010000, 0o020000, 0o140000, 0o170000] {
            #expect(refusal(Sample.create { $0.mode = type | 0o644 }) == "mode", "type \(String(type, radix: 8))")
        }
    }

    @Test func mkdirMakesOnlyDirectories() {
        for type: UInt32 in [0, 0o100000, 0o120000, 0o010000, 0o060000] {
            #expect(refusal(Sample.mkdir { $0.mode = type | 0o755 }) == "mode", "type \(String(type, radix: 8))")
        }
    }

    @Test func mknodMakesOnlyFifosSocketsDevicesAndRegularFiles() {
        for type: UInt32 in [0, 0o040000, 0o120000, 0o030000, 0o170000] {
            #expect(refusal(Sample.mknod { $0.mode = type | 0o600; $0.rdev = 0 }) == "mode", "type \(String(type, radix: 8))")
        }
    }

    @Test func modeBitsBeyondTypeAndPermissionsAreRefused() {
        #expect(refusal(Sample.create { $0.mode |= 1 << 16 }) == "mode")
        #expect(refusal(Sample.mkdir { $0.mode |= 1 << 31 }) == "mode")
    }

    @Test func rdevIsRefusedForFilesThatAreNotDevices() {
        #expect(refusal(Sample.create { $0.rdev = 1 }) == "rdev")
        #expect(refusal(Sample.mkdir { $0.rdev = 1 }) == "rdev")
        #expect(refusal(Sample.mknod { $0.mode = 0o010644 }) == "rdev")
    }

    @Test func aNewInodeIsNeverItsOwnParent() {
        #expect(refusal(Sample.create { $0.inode = $0.parent }) == "inode")
        #expect(refusal(Sample.mkdir { $0.inode = $0.parent }) == "inode")
        #expect(refusal(Sample.symlink { $0.inode = $0.parent }) == "inode")
    }

    @Test func ownerMinusOneIsRefused() {
        #expect(refusal(Sample.create { $0.uid = .max }) == "uid")
        #expect(refusal(Sample.mknod { $0.gid = .max }) == "gid")
        #expect(refusal(Sample.symlink { $0.uid = .max }) == "uid")
        #expect(refusal(Sample.symlink { $0.gid = .max }) == "gid")
        #expect(refusal(Sample.setattr { $0.uid = .max }) == "uid")
        #expect(refusal(Sample.setattr { $0.gid = .max }) == "gid")
    }

    @Test func namesFollowTheDirectoryEntryRules() {
        let bad: [[UInt8]] = [[], [UInt8](repeating: 0x61, count: 256), bytes("a\0b"), bytes("a/b"), bytes("/"),
                              bytes("."), bytes("..")]
        for name in bad {
            let cases: [(LogOperation, String)] = [
                (Sample.create { $0.name = name }, "name"), (Sample.mkdir { $0.name = name }, "name"),
                (Sample.mknod { $0.name = name }, "name"), (Sample.symlink { $0.name = name }, "name"),
                (Sample.link { $0.name = name }, "name"), (Sample.unlink { $0.name = name }, "name"),
                (Sample.rmdir { $0.name = name }, "name"), (Sample.rename { $0.oldName = name }, "oldName"),
                (Sample.rename { $0.newName = name }, "newName"),
            ]
            for (operation, field) in cases {
                #expect(refusal(operation) == field, "\(operation.recordType) \(field) \(name.prefix(8))")
            }
        }
    }

    @Test func anEmptySymlinkTargetIsRefused() {
        #expect(refusal(Sample.symlink { $0.target = [] }) == "target")
    }

    @Test func aSymlinkTargetOver4095BytesIsRefused() {
        #expect(refusal(Sample.symlink { $0.target = [UInt8](repeating: 0x61, count: 4096) }) == "target")
    }

    @Test func aSymlinkTargetWithNulIsRefused() {
        #expect(refusal(Sample.symlink { $0.target = bytes("a\0") }) == "target")
    }

    @Test func aDirectoryIsNeverLinkedIntoItself() {
        #expect(refusal(Sample.link { $0.inode = $0.parent }) == "inode")
    }

    @Test func aRemovedNameNeverRefersToItsOwnDirectory() {
        #expect(refusal(Sample.unlink { $0.inode = $0.parent }) == "inode")
        #expect(refusal(Sample.rmdir { $0.inode = $0.parent }) == "inode")
    }

    @Test func renameWithBothNoReplaceAndExchangeIsRefused() {
        #expect(refusal(Sample.rename { $0.flags = [.noReplace, .exchange] }) == "flags")
        #expect(refusal(Sample.rename { $0.flags = [.noReplace, .exchange]; $0.replaced = 0 }) == "flags")
    }

    @Test func renameWithUnknownFlagsIsRefused() {
        for bits: UInt32 in [4, 8, 1 << 31] {  // RENAME_WHITEOUT and beyond
            #expect(refusal(Sample.rename { $0.flags = RenameFlags(rawValue: bits) }) == "flags")
        }
    }

    @Test func renameNoReplaceOverAnExistingNameIsRefused() {
        #expect(refusal(Sample.rename { $0.flags = .noReplace }) == "replaced")
    }

    @Test func renameExchangeWithNothingToSwapIsRefused() {
        #expect(refusal(Sample.rename { $0.flags = .exchange; $0.replaced = 0 }) == "replaced")
    }

    @Test func renameOfANameOntoItselfIsRefused() {
        #expect(refusal(Sample.rename { $0.newParent = $0.oldParent; $0.newName = $0.oldName; $0.replaced = 0 }) == "newName")
    }

    @Test func renameOntoAnotherNameOfTheSameInodeIsRefused() {
        #expect(refusal(Sample.rename { $0.replaced = $0.source }) == "replaced")
    }

    @Test func renameOfADirectoryIntoItselfIsRefused() {
        #expect(refusal(Sample.rename { $0.source = $0.newParent }) == "source")
        #expect(refusal(Sample.rename { $0.source = $0.oldParent }) == "source")
    }

    @Test func renameReplacingOneOfItsParentDirectoriesIsRefused() {
        #expect(refusal(Sample.rename { $0.replaced = $0.oldParent }) == "replaced")
        #expect(refusal(Sample.rename { $0.replaced = $0.newParent; $0.flags = .exchange }) == "replaced")
    }

    @Test func aZeroLengthWriteIsRefused() {
        #expect(refusal(Sample.write { $0.length = 0; $0.inline = [] }) == "length")
        #expect(refusal(Sample.bulkWrite { $0.length = 0 }) == "length")
    }

    @Test func inlineWritesOver3072BytesAreRefused() {
        #expect(refusal(Sample.write { $0.length = 3073; $0.inline = [UInt8](repeating: 7, count: 3073) }) == "inline")
    }

    @Test func inlineBytesMustBeTheWholeWrite() {
        #expect(refusal(Sample.write { $0.length = 12 }) == "inline")
        #expect(refusal(Sample.write { $0.length = 10 }) == "inline")
    }

    @Test func aWriteWithBothInlineBytesAndBulkDataIsRefused() {
        #expect(refusal(Sample.write { _ in }, dataBytes: 11) == "dataBytes")
    }

    @Test func aBulkWriteCarriesExactlyItsLengthOfData() {
        for dataBytes: UInt32 in [0, 4095, 4097] {
            #expect(refusal(Sample.bulkWrite { _ in }, dataBytes: dataBytes) == "dataBytes", "\(dataBytes)")
        }
    }

    @Test func aWriteEndingPastTheLargestFileSizeIsRefused() {
        #expect(refusal(Sample.write { $0.offset = LogOperation.fileBytesMax - 10 }) == "offset")
        #expect(refusal(Sample.write { $0.offset = LogOperation.fileBytesMax + 1 }) == "offset")
        #expect(refusal(Sample.bulkWrite { $0.offset = .max }, dataBytes: 4096) == "offset", "overflow")
    }

    @Test func bulkDataIsRefusedForEveryTypeButWrite() {
        for (operation, _) in Sample.all where operation.recordType != .write {
            #expect(refusal(operation, dataBytes: 4096) == "dataBytes", "\(operation.recordType)")
            #expect(refusal(operation, dataBytes: 1) == "dataBytes", "\(operation.recordType)")
        }
    }

    @Test func truncateBeyondTheLargestFileSizeIsRefused() {
        #expect(refusal(Sample.truncate { $0.size = LogOperation.fileBytesMax + 1 }) == "size")
        #expect(refusal(Sample.truncate { $0.size = .max }) == "size")
    }

    @Test func fallocateOfZeroBytesIsRefused() {
        #expect(refusal(Sample.fallocate { $0.length = 0 }) == "length")
    }

    @Test func fallocatePastTheLargestFileSizeIsRefused() {
        #expect(refusal(Sample.fallocate { $0.offset = 1; $0.length = LogOperation.fileBytesMax }) == "offset")
        #expect(refusal(Sample.fallocate { $0.offset = .max; $0.length = 2 }) == "offset", "overflow")
        #expect(refusal(Sample.fallocate { $0.offset = 0; $0.length = .max }) == "offset")
    }

    @Test func fallocateWithUnknownModeBitsIsRefused() {
        // Collapse range, 0x04 (no-hide-stale), insert range, unshare range: not supported.
        for bits: UInt32 in [0x04, 0x08, 0x20, 0x40, 1 << 31] {
            #expect(refusal(Sample.fallocate { $0.mode = [.keepSize, FallocateMode(rawValue: bits)] }) == "mode",
                    "\(bits)")
        }
    }

    @Test func punchHoleWithoutKeepSizeIsRefused() {
        #expect(refusal(Sample.fallocate { $0.mode = .punchHole }) == "mode")
    }

    @Test func punchHoleWithZeroRangeIsRefused() {
        #expect(refusal(Sample.fallocate { $0.mode = [.keepSize, .punchHole, .zeroRange] }) == "mode")
    }

    @Test func setattrWithUnknownMaskBitsIsRefused() {
        for bits: UInt32 in [32, 64, 1 << 31] {
            #expect(refusal(Sample.setattr { $0.valid.insert(SetattrMask(rawValue: bits)) }) == "valid", "\(bits)")
        }
    }

    @Test func setattrModeIsPermissionBitsOnly() {
        #expect(refusal(Sample.setattr { $0.mode = 0o10000 }) == "mode")
        #expect(refusal(Sample.setattr { $0.mode = 0o100644 }) == "mode")
    }

    @Test func setattrFieldsOutsideTheMaskAreZero() {
        #expect(refusal(Sample.setattr { $0.valid.remove(.mode) }) == "mode")
        #expect(refusal(Sample.setattr { $0.valid.remove(.uid) }) == "uid")
        #expect(refusal(Sample.setattr { $0.valid.remove(.gid) }) == "gid")
        #expect(refusal(Sample.setattr { $0.valid.remove(.atime) }) == "atime")
        #expect(refusal(Sample.setattr { $0.valid.remove(.mtime) }) == "mtime")
        #expect(refusal(Sample.setattr { $0.valid.remove(.atime); $0.atime = Timestamp(seconds: 0, nanoseconds: 1) }) == "atime")
    }

    @Test func nanosecondsOfASecondOrMoreAreRefusedInEveryTimestamp() {
        let bad = Timestamp(seconds: 1, nanoseconds: 1_000_000_000)
        let cases: [(LogOperation, String)] = [
            (Sample.create { $0.time = bad }, "time"), (Sample.mkdir { $0.time = bad }, "time"),
            (Sample.mknod { $0.time = bad }, "time"), (Sample.symlink { $0.time = bad }, "time"),
            (Sample.link { $0.time = bad }, "time"), (Sample.unlink { $0.time = bad }, "time"),
            (Sample.rmdir { $0.time = bad }, "time"), (Sample.rename { $0.time = bad }, "time"),
            (Sample.write { $0.time = bad }, "time"), (Sample.truncate { $0.time = bad }, "time"),
            (Sample.fallocate { $0.time = bad }, "time"), (Sample.setattr { $0.atime = bad }, "atime"),
            (Sample.setattr { $0.mtime = bad }, "mtime"), (Sample.setattr { $0.ctime = bad }, "ctime"),
            (Sample.setxattr { $0.time = bad }, "time"), (Sample.removexattr { $0.time = bad }, "time"),
            (Sample.create { $0.time = Timestamp(seconds: 0, nanoseconds: .max) }, "time"),
        ]
        for (operation, field) in cases { #expect(refusal(operation) == field, "\(operation.recordType) \(field)") }
    }

    @Test func timestampReservedBytesAreZero() {
        // create: time at 24, reserved at 36; setattr: atime 8, mtime 24, ctime 40.
        var create = LogOperation.create(Sample.createArguments).encodePayload()
        create.setLE(UInt32(1), at: 36)
        #expect(formatError { try decode(.create, create) }?.field == "time")
        for (offset, field) in [(20, "atime"), (36, "mtime"), (52, "ctime")] {
            var setattr = LogOperation.setattr(Sample.setattrArguments).encodePayload()
            setattr.setLE(UInt32(0x8000_0000), at: offset)
            #expect(formatError { try decode(.setattr, setattr) }?.field == field)
        }
    }

    @Test func setxattrWithBothCreateAndReplaceIsRefused() {
        #expect(refusal(Sample.setxattr { $0.flags = [.create, .replace] }) == "flags")
    }

    @Test func setxattrWithUnknownFlagsIsRefused() {
        for bits: UInt32 in [4, 1 << 31] {
            #expect(refusal(Sample.setxattr { $0.flags = XattrFlags(rawValue: bits) }) == "flags")
        }
    }

    @Test func xattrNamesAre1To255BytesWithoutNul() {
        for name in [[], [UInt8](repeating: 0x61, count: 256), bytes("user.a\0b")] {
            #expect(refusal(Sample.setxattr { $0.name = name }) == "name")
            #expect(refusal(Sample.removexattr { $0.name = name }) == "name")
        }
    }

    @Test func xattrValuesOver64KiBAreRefused() {
        #expect(refusal(Sample.setxattr { $0.value = [UInt8](repeating: 1, count: 65537) }) == "value")
    }

    @Test func errorsNameTheRecordTypeAndField() {
        let error = formatError { try roundTrip(Sample.rename { $0.flags = [.noReplace, .exchange] }) }
        #expect(error?.description == "log record rename: invalid flags: noReplace and exchange are exclusive")
    }
}

/// Payloads come from a client's log: no bytes may trap the decoder, and what decodes is exactly
/// what a writer could have encoded.
struct LogOperationRobustnessTests {
    /// Valid payloads, the largest variants included.
    static let payloads: [(type: LogRecordType, bytes: [UInt8], dataBytes: UInt32)] = {
        var generator = SplitMix(seed: 7)
        let big: [(LogOperation, UInt32)] = [
            (Sample.symlink { $0.name = arbitraryName(255, seed: 1); $0.target = generator.nonzeroBytes(4095) }, 0),
            (Sample.setxattr { $0.name = generator.nonzeroBytes(255); $0.value = generator.bytes(65536) }, 0),
            (Sample.write { $0.length = 3072; $0.inline = generator.bytes(3072) }, 0),
        ]
        return (Sample.all + big).map { ($0.0.recordType, $0.0.encodePayload(), $0.1) }
    }()

    @Test func everyTruncationOfAValidPayloadIsRefusedAsTruncated() {
        for (type, payload, dataBytes) in Self.payloads {
            var misses: [Int] = []
            payload.withUnsafeBytes { whole in
                for length in 0 ..< whole.count {
                    let prefix = UnsafeRawBufferPointer(rebasing: whole[0 ..< length])
                    do throws(FormatError) {
                        _ = try LogOperation.decode(type: type, payload: prefix, dataBytes: dataBytes)
                        misses.append(length)
                    } catch {
                        guard case let .truncated(structure, needed, available) = error,
                              structure == "log record \(type)", available == length, needed > length else {
                            misses.append(length)
                            continue
                        }
                    }
                }
            }
            #expect(misses.isEmpty, "\(type): prefixes of \(misses.prefix(10)) bytes not refused as truncated")
        }
    }

    @Test func bytesAfterTheLastFieldAreRefused() {
        for (type, payload, dataBytes) in Self.payloads {
            for extra in [[UInt8(0)], [UInt8](repeating: 0, count: 8), [0xFF]] {
                #expect(formatError { try decode(type, payload + extra, dataBytes: dataBytes) }?.field == "payload length",
                        "\(type)")
            }
        }
    }

    /// Random bytes of random lengths, for every type (wrap included): nothing traps, and
    /// anything that decodes re-encodes to the same bytes.
    @Test func randomGarbageNeverTraps() {
        var generator = SplitMix(seed: 0x5EED)
        var decoded = 0
        for round in 0 ..< 4500 {
            let type = LogRecordType.allCases[round % LogRecordType.allCases.count]
            let length = round % 3 == 0 ? generator.below(4200) : generator.below(120)
            let payload = generator.bytes(length)
            let dataBytes: UInt32 = generator.below(2) == 0 ? 0 : UInt32(truncatingIfNeeded: generator.next())
            if let operation = try? decode(type, payload, dataBytes: dataBytes) {
                decoded += 1
                #expect(operation.encodePayload() == payload)
            }
        }
        #expect(decoded < 4500)
    }

    /// Valid payloads with a few bytes changed, cut or extended (so the decoder gets past the
    /// fixed fields and into every rule): nothing traps; whatever decodes is canonical (it
    /// re-encodes to exactly the damaged bytes) and valid.
    @Test func damagedValidPayloadsNeverTrapAndDecodeOnlyToCanonicalOperations() {
        var generator = SplitMix(seed: 0xDA3A6E)
        var decoded = 0, refused = 0
        for (type, original, originalData) in Self.payloads where original.count < 5000 {
            for _ in 0 ..< 400 {
                var payload = original
                for _ in 0 ... generator.below(3) {
                    let offset = generator.below(payload.count)
                    switch generator.below(4) {
                    case 0: payload[offset] = 0
                    case 1: payload[offset] = 0xFF
                    default: payload[offset] ^= UInt8(truncatingIfNeeded: generator.next() % 255 + 1)
                    }
                }
                switch generator.below(8) {
                case 0: payload.removeLast(generator.below(payload.count))
                case 1: payload += generator.bytes(generator.below(16) + 1)
                default: break
                }
                let dataBytes: UInt32 = switch generator.below(4) {
                case 0: UInt32(truncatingIfNeeded: generator.next())
                case 1: 0
                default: originalData
                }
                do {
                    let operation = try decode(type, payload, dataBytes: dataBytes)
                    decoded += 1
                    #expect(operation.encodePayload() == payload, "\(type)")
                    #expect(operation.recordType == type)
                    #expect(formatError { try operation.validate(dataBytes: dataBytes) } == nil)
                } catch {
                    refused += 1
                }
            }
        }
        #expect(decoded > 0 && refused > 0, "the damage reached both outcomes (\(decoded) decoded, \(refused) refused)")
    }
}
