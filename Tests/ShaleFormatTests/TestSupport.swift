import Testing
@testable import ShaleFormat

// Helpers shared by the format tests: two fixed volumes, raw little-endian access to encoded
// bytes (so tests state offsets independently of FieldReader), re-sealing after a deliberate
// edit, and the damage loop every sealed structure goes through.

enum Fixture {
    static let volume = VolumeID("1b4e28ba-2fa1-41d2-883f-0016d3cca427")!
    static let otherVolume = VolumeID("9f0c1d2e-3a4b-4c5d-8e6f-708192a3b4c5")!
    static var seed: UInt32 { volume.checksumSeed }
    static var otherSeed: UInt32 { otherVolume.checksumSeed }
    static let hashKey = DirectoryHashKey(k0: 0x0706_0504_0302_0100, k1: 0x0F0E_0D0C_0B0A_0908)
    static let otherHashKey = DirectoryHashKey(k0: 0x1111_2222_3333_4444, k1: 0x5555_6666_7777_8888)
}

/// The case of a FormatError, without its payload.
enum ErrorKind: Equatable {
    case badMagic, unsupportedVersion, checksumMismatch, invalidField, truncated
}

extension FormatError {
    var kind: ErrorKind {
        switch self {
        case .badMagic: .badMagic
        case .unsupportedVersion: .unsupportedVersion
        case .checksumMismatch: .checksumMismatch
        case .invalidField: .invalidField
        case .truncated: .truncated
        }
    }

    /// The field an `invalidField` names.
    var field: String? {
        if case let .invalidField(_, field, _) = self { return field }
        return nil
    }
}

/// The FormatError `body` throws, or nil when it returns. Any other error is a test failure.
func formatError<T>(sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> T) -> FormatError? {
    do {
        _ = try body()
        return nil
    } catch let error as FormatError {
        return error
    } catch {
        Issue.record("threw \(error), not a FormatError", sourceLocation: sourceLocation)
        return nil
    }
}

extension Array where Element == UInt8 {
    /// The little-endian integer at `offset`, read byte by byte.
    func le<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, at offset: Int) -> T {
        var value: T = 0
        for index in 0 ..< MemoryLayout<T>.size { value |= T(self[offset + index]) << (8 * index) }
        return value
    }

    mutating func setLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        let bits = UInt64(truncatingIfNeeded: value)
        for index in 0 ..< MemoryLayout<T>.size { self[offset + index] = UInt8(truncatingIfNeeded: bits >> (8 * index)) }
    }

    func flipping(_ offset: Int, mask: UInt8 = 0xFF) -> [UInt8] {
        var copy = self
        copy[offset] ^= mask
        return copy
    }

    /// Recomputes the structure checksum after a deliberate edit, so the decoder sees the
    /// edit itself rather than a checksum mismatch.
    func resealed(crcOffset: Int, seed: UInt32 = 0) -> [UInt8] {
        var copy = self
        copy.withUnsafeMutableBytes { StructureChecksum.seal($0, crcOffset: crcOffset, seed: seed) }
        return copy
    }
}

/// Flips every byte of `bytes` (with 0xFF and with one random non-zero mask per offset) and
/// returns the offsets where `decodes` did not throw the error kind `expected(offset)` names.
/// A decoder that crashes fails the whole run, so this also proves it never crashes.
func offsetsWhereDamageIsMissed(in bytes: [UInt8], expected: (Int) -> ErrorKind,
                                decodes: ([UInt8]) throws -> Void) -> [Int] {
    var generator = SplitMix(seed: UInt64(bytes.count))
    var missed: [Int] = []
    for offset in bytes.indices {
        let random = UInt8(truncatingIfNeeded: generator.next() % 255 + 1)
        for mask in [UInt8(0xFF), random] {
            let damaged = bytes.flipping(offset, mask: mask)
            do {
                try decodes(damaged)
                missed.append(offset)
            } catch let error as FormatError {
                if error.kind != expected(offset) { missed.append(offset) }
            } catch {
                missed.append(offset)
            }
        }
    }
    return missed
}

extension SplitMix {
    mutating func bytes(_ count: Int) -> [UInt8] {
        (0 ..< count).map { _ in UInt8(truncatingIfNeeded: next()) }
    }

    /// Bytes that are never zero, so that losing any of them is visible.
    mutating func nonzeroBytes(_ count: Int) -> [UInt8] {
        (0 ..< count).map { _ in UInt8(truncatingIfNeeded: next() % 255 + 1) }
    }

    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}
