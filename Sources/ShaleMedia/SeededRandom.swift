// Seeded randomness for the simulated media and the crash harness: a run that fails must be
// replayable from its seed, so nothing in a simulation draws from the system generator.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and every seed — including 0 — gives a
/// full-period, well-mixed sequence. Not for cryptography.
public struct SplitMix64: RandomNumberGenerator, Sendable, Equatable {
    public private(set) var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Fills `buffer` with pseudo-random bytes, eight at a time (little-endian).
    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        var position = 0
        while position < buffer.count {
            var word = next().littleEndian
            let count = min(8, buffer.count - position)
            withUnsafeBytes(of: &word) { bytes in
                for i in 0 ..< count { buffer[position + i] = bytes[i] }
            }
            position += count
        }
    }

    /// `count` pseudo-random bytes.
    public mutating func bytes(_ count: Int) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        result.withUnsafeMutableBytes { fill($0) }
        return result
    }

    /// A generator for one item of a family (e.g. one sector of one crash), independent of
    /// how many other items were drawn before it: the same (seed, key) always gives the same
    /// stream.
    public static func derived(seed: UInt64, _ keys: UInt64...) -> SplitMix64 {
        var mixer = SplitMix64(seed: seed)
        var state = mixer.next()
        for key in keys {
            mixer = SplitMix64(seed: state ^ key)
            state = mixer.next()
        }
        return SplitMix64(seed: state)
    }
}
