import Testing
@testable import ShaleFormat

/// Known answers from RFC 3720 (iSCSI) appendix B.4 and the common "123456789" check value.
struct CRC32CTests {
    static let vectors: [([UInt8], UInt32)] = [
        (Array("123456789".utf8), 0xE306_9283),
        ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
        ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
        ((0 ..< 32).map { UInt8($0) }, 0x46DD_794E),
        ((0 ..< 32).map { UInt8(31 - $0) }, 0x113F_DB5C),
        ([], 0),
    ]

    @Test func knownAnswersOnTheDispatchedPath() {
        for (input, expected) in Self.vectors {
            #expect(CRC32C.checksum(input) == expected, "input \(input)")
        }
    }

    @Test func knownAnswersOnTheSoftwarePath() {
        for (input, expected) in Self.vectors {
            #expect(input.withUnsafeBytes { CRC32C.softwareChecksum($0) } == expected)
        }
    }

    @Test func hardwareAndSoftwareAgreeAtEveryLengthAndAlignment() {
        var generator = SplitMix(seed: 7)
        let data = (0 ..< 600).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        data.withUnsafeBytes { all in
            for start in 0 ..< 9 {
                for length in stride(from: 0, to: 580, by: 13) {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start ..< start + length])
                    #expect(CRC32C.checksum(slice) == CRC32C.softwareChecksum(slice))
                }
            }
        }
    }

    /// Long buffers take the three-lane paths (768-byte and 24 KiB lanes) of the hardware code.
    @Test func hardwareAndSoftwareAgreeOnLongBuffers() {
        var generator = SplitMix(seed: 9)
        let data = (0 ..< 70_000).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        data.withUnsafeBytes { all in
            for length in [767, 768, 769, 4096, 4096 + 40, 8191, 24_575, 24_576, 24_577, 50_000, 69_990] {
                for start in [0, 3, 8] {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start ..< start + length])
                    #expect(CRC32C.checksum(slice) == CRC32C.softwareChecksum(slice), "length \(length) at \(start)")
                }
            }
        }
    }

    /// Folding (AVX-512 VPCLMULQDQ, from 512 bytes) and the crc32 lanes agree with the
    /// software path at lengths around every threshold and at random lengths, offsets and
    /// starting values.
    @Test func foldingAndLanesAgreeWithSoftware() {
        var generator = SplitMix(seed: 11)
        let data = (0 ..< 70_000).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        data.withUnsafeBytes { all in
            var lengths = [255, 256, 257, 511, 512, 513, 767, 768, 1023, 1024, 1025, 4096, 4097, 8192 + 255, 65_536]
            for _ in 0 ..< 200 { lengths.append(Int(generator.next() % 69_000)) }
            for length in lengths {
                let start = Int(generator.next() % 64)
                let slice = UnsafeRawBufferPointer(rebasing: all[start ..< start + length])
                let expected = CRC32C.softwareChecksum(slice)
                #expect(CRC32C.checksum(slice) == expected, "length \(length) at \(start)")
                #expect(CRC32C.laneChecksum(slice) == expected, "lanes: length \(length) at \(start)")
                // Continuing from a checksum of earlier bytes folds the register in.
                let prefix = UnsafeRawBufferPointer(rebasing: all[0 ..< start])
                #expect(CRC32C.update(CRC32C.checksum(prefix), slice) == CRC32C.softwareChecksum(UnsafeRawBufferPointer(rebasing: all[0 ..< start + length])))
            }
        }
    }

    @Test func updateContinuesAChecksum() {
        let a = Array("hello, ".utf8), b = Array("world".utf8)
        let whole = CRC32C.checksum(a + b)
        let continued = b.withUnsafeBytes { CRC32C.update(CRC32C.checksum(a), $0) }
        #expect(continued == whole)
    }
}

/// A tiny deterministic generator for test data.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
