// ShaleFormat — layer 2 of Shale: every on-media structure, defined once and shared by the
// code that writes it and the code that reads it (docs/format.md is the prose spec).
//
// Offers: for each structure a Swift value with `encode` into its fixed-size bytes and a
// validating `decode` that never trusts its input; the NVM layout computed from a volume's
// geometry; CRC32C. Needs: nothing but memory (no I/O: the media layer does that).

/// Why bytes read from a device are not a valid structure. Decoders throw these and never
/// crash on any input.
public enum FormatError: Error, Equatable, CustomStringConvertible {
    /// The bytes do not start with the structure's magic: not Shale's, or not this structure.
    case badMagic(structure: String, found: [UInt8])
    /// A Shale structure of a format version this build does not read.
    case unsupportedVersion(structure: String, found: UInt32, supported: UInt32)
    /// The stored checksum does not match the contents: torn or corrupted.
    case checksumMismatch(structure: String, stored: UInt32, computed: UInt32)
    /// A field holds a value the format does not allow.
    case invalidField(structure: String, field: String, reason: String)
    /// Fewer bytes than the structure needs.
    case truncated(structure: String, needed: Int, available: Int)

    public var description: String {
        switch self {
        case let .badMagic(structure, found):
            let shown = found.prefix(8).map { byte in
                (0x20 ... 0x7E).contains(byte) ? String(UnicodeScalar(byte)) : "."
            }.joined()
            return "\(structure): bad magic \"\(shown)\" (not a Shale \(structure))"
        case let .unsupportedVersion(structure, found, supported):
            return "\(structure): format version \(found), but this shale reads version \(supported)"
        case let .checksumMismatch(structure, stored, computed):
            return "\(structure): checksum mismatch (stored \(hex(stored)), computed \(hex(computed))): torn or corrupted"
        case let .invalidField(structure, field, reason):
            return "\(structure): invalid \(field): \(reason)"
        case let .truncated(structure, needed, available):
            return "\(structure): needs \(needed) bytes, only \(available) available"
        }
    }
}

func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}
