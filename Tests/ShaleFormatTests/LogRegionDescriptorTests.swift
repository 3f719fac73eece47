import Testing
@testable import ShaleFormat

private let regionBytes: UInt64 = 1 << 20

private func decodeDescriptor(_ bytes: [UInt8], seed: UInt32 = Fixture.seed) throws -> LogRegionDescriptor? {
    try bytes.withUnsafeBytes { try LogRegionDescriptor.decode($0, seed: seed, regionBytes: regionBytes) }
}

private func current(_ a: [UInt8], _ b: [UInt8]) -> (descriptor: LogRegionDescriptor?, copyIndex: Int?, damaged: [FormatError]) {
    a.withUnsafeBytes { first in
        b.withUnsafeBytes { second in
            LogRegionDescriptor.current(copies: (first, second), seed: Fixture.seed, regionBytes: regionBytes)
        }
    }
}

struct LogRegionDescriptorTests {
    static let descriptor = LogRegionDescriptor(state: .attached, version: 41, epoch: 0x1_0000_0007,
                                                digestedOffset: 65_536 + 824, digestedSequence: 9_000_001,
                                                ownerPID: 31_337, ownerUID: 1000, attachedSeconds: 1_764_072_961)

    @Test func roundTrip() throws {
        let bytes = Self.descriptor.encode(seed: Fixture.seed)
        #expect(bytes.count == 64)
        #expect(LogRegionDescriptor.encodedBytes == 64)
        #expect(try decodeDescriptor(bytes) == Self.descriptor)
    }

    @Test(arguments: [LogRegionDescriptor.State.free, .attached, .detached])
    func everyStateRoundTrips(state: LogRegionDescriptor.State) throws {
        var descriptor = Self.descriptor
        descriptor.state = state
        #expect(try decodeDescriptor(descriptor.encode(seed: Fixture.seed))?.state == state)
        #expect(descriptor.encode(seed: Fixture.seed)[4] == state.rawValue)
    }

    @Test func fieldOffsetsMatchTheSpec() {
        let bytes = Self.descriptor.encode(seed: Fixture.seed)
        var zeroed = bytes
        zeroed.setLE(UInt32(0), at: 0)
        #expect(bytes.le(UInt32.self, at: 0) == zeroed.withUnsafeBytes { CRC32C.update(Fixture.seed, $0) })
        #expect(bytes[4] == LogRegionDescriptor.State.attached.rawValue)
        #expect(bytes[5 ..< 8].allSatisfy { $0 == 0 })
        #expect(bytes.le(UInt64.self, at: 8) == 41)
        #expect(bytes.le(UInt64.self, at: 16) == 0x1_0000_0007)
        #expect(bytes.le(UInt64.self, at: 24) == 65_536 + 824)
        #expect(bytes.le(UInt64.self, at: 32) == 9_000_001)
        #expect(bytes.le(UInt32.self, at: 40) == 31_337)
        #expect(bytes.le(UInt32.self, at: 44) == 1000)
        #expect(bytes.le(UInt64.self, at: 48) == 1_764_072_961)
        #expect(bytes[56 ..< 64].allSatisfy { $0 == 0 })
    }

    @Test func neverWrittenCopyIsNil() throws {
        #expect(try decodeDescriptor([UInt8](repeating: 0, count: 64)) == nil)
    }

    @Test func everySingleByteFlipIsAChecksumMismatch() {
        let missed = offsetsWhereDamageIsMissed(in: Self.descriptor.encode(seed: Fixture.seed),
                                                expected: { _ in .checksumMismatch }) { _ = try decodeDescriptor($0) }
        #expect(missed.isEmpty, "undetected flips at \(missed)")
    }

    @Test func aDescriptorOfAnotherVolumeDoesNotVerify() {
        let bytes = Self.descriptor.encode(seed: Fixture.otherSeed)
        #expect(formatError { try decodeDescriptor(bytes) }?.kind == .checksumMismatch)
    }

    @Test func unknownStateIsRefused() {
        var bytes = Self.descriptor.encode(seed: Fixture.seed)
        bytes[4] = 3
        #expect(formatError { try decodeDescriptor(bytes.resealed(crcOffset: 0, seed: Fixture.seed)) }?.field == "state")
    }

    @Test(arguments: [regionBytes, regionBytes + 8, 4, UInt64.max & ~7])
    func digestCursorOutsideTheRegionOrUnalignedIsRefused(offset: UInt64) {
        var descriptor = Self.descriptor
        descriptor.digestedOffset = offset
        #expect(formatError { try decodeDescriptor(descriptor.encode(seed: Fixture.seed)) }?.field == "digest cursor")
    }

    @Test func truncatedBufferIsRefused() {
        #expect(formatError { try decodeDescriptor(Array(Self.descriptor.encode(seed: Fixture.seed)[0 ..< 63])) }?.kind == .truncated)
    }

    @Test func currentIsTheValidCopyWithTheHigherVersion() {
        var older = Self.descriptor
        older.version = 40
        older.digestedOffset = 0
        let newer = Self.descriptor
        for (a, b, index) in [(older, newer, 1), (newer, older, 0)] {
            let result = current(a.encode(seed: Fixture.seed), b.encode(seed: Fixture.seed))
            #expect(result.descriptor == newer)
            #expect(result.copyIndex == index)
            #expect(result.damaged.isEmpty)
        }
    }

    /// An update writes the copy that is not current; a crash tears at most that copy, and
    /// the other one, one version older, is still current.
    @Test func aTornCopyLeavesTheOtherCurrentAndIsReported() {
        var older = Self.descriptor
        older.version = 40
        var torn = Self.descriptor.encode(seed: Fixture.seed)
        for index in 32 ..< 64 { torn[index] = 0 }
        for (a, b, index) in [(torn, older.encode(seed: Fixture.seed), 1), (older.encode(seed: Fixture.seed), torn, 0)] {
            let result = current(a, b)
            #expect(result.descriptor == older)
            #expect(result.copyIndex == index)
            #expect(result.damaged.count == 1)
            #expect(result.damaged.first?.kind == .checksumMismatch)
        }
    }

    @Test func bothCopiesDamagedGivesNoDescriptorAndTwoReports() {
        let good = Self.descriptor.encode(seed: Fixture.seed)
        let result = current(good.flipping(9), good.flipping(40))
        #expect(result.descriptor == nil)
        #expect(result.copyIndex == nil)
        #expect(result.damaged.count == 2)
    }

    @Test func aNeverWrittenCopyIsNotDamage() {
        let zeros = [UInt8](repeating: 0, count: 64)
        let one = current(zeros, Self.descriptor.encode(seed: Fixture.seed))
        #expect(one.descriptor == Self.descriptor && one.copyIndex == 1 && one.damaged.isEmpty)
        let none = current(zeros, zeros)
        #expect(none.descriptor == nil && none.copyIndex == nil && none.damaged.isEmpty)
    }
}
