import Testing
@testable import ShaleFormat

struct ByteCodingTests {
    @Test func fieldsAreLittleEndianAndConsecutive() {
        var bytes = [UInt8](repeating: 0xAA, count: 15)
        bytes.withUnsafeMutableBytes { buffer in
            var writer = FieldWriter(buffer)
            writer.put(UInt8(0x01))
            writer.put(UInt16(0x0302))
            writer.put(UInt32(0x0706_0504))
            writer.put(UInt64(0x0F0E_0D0C_0B0A_0908))
            #expect(writer.offset == 15)
        }
        #expect(bytes == (1 ... 15).map { UInt8($0) })
        bytes.withUnsafeBytes { buffer in
            var reader = FieldReader(buffer)
            #expect(reader.get(UInt8.self) == 0x01)
            #expect(reader.get(UInt16.self) == 0x0302)
            #expect(reader.get(UInt32.self) == 0x0706_0504)
            #expect(reader.get(UInt64.self) == 0x0F0E_0D0C_0B0A_0908)
            #expect(reader.offset == 15)
        }
    }

    @Test func signedFieldsRoundTrip() {
        var bytes = [UInt8](repeating: 0, count: 8)
        bytes.withUnsafeMutableBytes { buffer in
            var writer = FieldWriter(buffer)
            writer.put(Int64(-2))
        }
        #expect(bytes == [0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(bytes.withUnsafeBytes { buffer in
            var reader = FieldReader(buffer)
            return reader.get(Int64.self)
        } == -2)
    }

    @Test func textFieldIsNULPaddedToItsWidth() {
        var bytes = [UInt8](repeating: 0xAA, count: 8)
        bytes.withUnsafeMutableBytes { buffer in
            var writer = FieldWriter(buffer)
            writer.put(text: "abc", width: 8)
            #expect(writer.offset == 8)
        }
        #expect(bytes == Array("abc".utf8) + [0, 0, 0, 0, 0])
        #expect(bytes.withUnsafeBytes { buffer in
            var reader = FieldReader(buffer)
            return reader.text(width: 8)
        } == "abc")
    }

    @Test func textFieldFilledToTheLastByteHasNoTerminator() {
        var bytes = [UInt8](repeating: 0, count: 4)
        bytes.withUnsafeMutableBytes { buffer in
            var writer = FieldWriter(buffer)
            writer.put(text: "wxyz", width: 4)
        }
        #expect(bytes == Array("wxyz".utf8))
        #expect(bytes.withUnsafeBytes { buffer in
            var reader = FieldReader(buffer)
            return reader.text(width: 4)
        } == "wxyz")
    }

    /// A text longer than its field is cut, but never inside a character: what a writer
    /// stores must always read back as UTF-8.
    @Test(arguments: ["a" + String(repeating: "é", count: 40), String(repeating: "€", count: 30),
                      "ab" + String(repeating: "🪨", count: 20)])
    func overlongTextIsCutAtACharacterBoundary(text: String) {
        let width = 16
        var bytes = [UInt8](repeating: 0, count: width)
        bytes.withUnsafeMutableBytes { buffer in
            var writer = FieldWriter(buffer)
            writer.put(text: text, width: width)
        }
        let read = bytes.withUnsafeBytes { buffer in
            var reader = FieldReader(buffer)
            return reader.text(width: width)
        }
        #expect(read != nil)
        if let read {
            #expect(text.hasPrefix(read))
            #expect(read.utf8.count <= width && read.utf8.count > width - 4)
        }
    }

    @Test func textFieldThatIsNotUTF8ReadsAsNil() {
        let bytes: [UInt8] = [0x61, 0xC3, 0x28, 0, 0, 0]
        #expect(bytes.withUnsafeBytes { buffer in
            var reader = FieldReader(buffer)
            return reader.text(width: 6)
        } == nil)
    }

    @Test func checksumTreatsItsOwnFieldAsZero() {
        var generator = SplitMix(seed: 11)
        var bytes = generator.bytes(64)
        let before = bytes.withUnsafeBytes { StructureChecksum.compute($0, crcOffset: 12) }
        bytes.setLE(UInt32(0xDEAD_BEEF), at: 12)
        let after = bytes.withUnsafeBytes { StructureChecksum.compute($0, crcOffset: 12) }
        #expect(before == after)
        var zeroed = bytes
        zeroed.setLE(UInt32(0), at: 12)
        #expect(before == CRC32C.checksum(zeroed))
    }

    @Test func sealThenVerifyAndEveryFlipIsCaught() throws {
        var generator = SplitMix(seed: 12)
        let sealed = generator.bytes(100).resealed(crcOffset: 4, seed: Fixture.seed)
        try sealed.withUnsafeBytes { try StructureChecksum.verify($0, crcOffset: 4, seed: Fixture.seed, structure: "test") }
        let missed = offsetsWhereDamageIsMissed(in: sealed, expected: { _ in .checksumMismatch }) { damaged in
            try damaged.withUnsafeBytes { try StructureChecksum.verify($0, crcOffset: 4, seed: Fixture.seed, structure: "test") }
        }
        #expect(missed.isEmpty, "undetected flips at \(missed.prefix(8))")
    }

    @Test func aSealFromAnotherSeedDoesNotVerifyAndTheErrorSaysWhy() {
        let sealed = [UInt8](repeating: 7, count: 32).resealed(crcOffset: 0, seed: Fixture.seed)
        let error = formatError {
            try sealed.withUnsafeBytes { try StructureChecksum.verify($0, crcOffset: 0, seed: Fixture.otherSeed, structure: "thing") }
        }
        guard case let .checksumMismatch(structure, stored, computed)? = error else {
            Issue.record("expected a checksum mismatch, got \(String(describing: error))")
            return
        }
        #expect(structure == "thing")
        #expect(stored == sealed.le(UInt32.self, at: 0))
        #expect(stored != computed)
        #expect(error!.description.contains("torn or corrupted"))
    }

    @Test func seedsChangeTheChecksum() {
        let bytes = [UInt8](repeating: 0, count: 64)
        let unseeded = bytes.withUnsafeBytes { StructureChecksum.compute($0, crcOffset: 0) }
        let seeded = bytes.withUnsafeBytes { StructureChecksum.compute($0, crcOffset: 0, seed: Fixture.seed) }
        let other = bytes.withUnsafeBytes { StructureChecksum.compute($0, crcOffset: 0, seed: Fixture.otherSeed) }
        #expect(Set([unseeded, seeded, other]).count == 3)
    }

    @Test func truncationErrorStatesBothSizes() {
        let error = formatError {
            try [UInt8](repeating: 0, count: 10).withUnsafeBytes { try FormatError.need("widget", 64, $0) }
        }
        #expect(error == .truncated(structure: "widget", needed: 64, available: 10))
        #expect(error?.description == "widget: needs 64 bytes, only 10 available")
    }
}
