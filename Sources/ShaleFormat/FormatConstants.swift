// Numbers every structure agrees on.

public enum Format {
    /// The on-media format this build writes and reads. Any other version is refused with
    /// a clear error (FormatError.unsupportedVersion), never guessed at.
    public static let version: UInt32 = 2
    /// The block size of every tier and of every block-sized structure.
    public static let blockBytes = 4096
    /// Names in a directory: 1 to 255 bytes, any byte but '/' and NUL.
    public static let nameBytesMax = 255
    /// Device slots in the superblock's device table (NVM, SSD, HDD, and room for more).
    public static let deviceSlots = 8
}

/// A storage tier. The raw values are stored on media (extents, device table, bitmaps).
public enum Tier: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case nvm = 1
    case ssd = 2
    case hdd = 3

    public var description: String {
        switch self {
        case .nvm: "nvm"
        case .ssd: "ssd"
        case .hdd: "hdd"
        }
    }
}

/// The 16-byte identity of one file system, carried by its superblock and by the header of
/// every device, so that a wrong or swapped device is refused.
public struct VolumeID: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 16)
        self.bytes = bytes
    }

    /// A random (version 4) identity.
    public static func random() -> VolumeID {
        var generator = SystemRandomNumberGenerator()
        var bytes = (0 ..< 16).map { _ in UInt8.random(in: 0 ... 255, using: &generator) }
        bytes[6] = (bytes[6] & 0x0F) | 0x40
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        return VolumeID(bytes: bytes)
    }

    /// Parses the usual 8-4-4-4-12 hex form.
    public init?(_ text: String) {
        let digits = text.filter { $0 != "-" }
        guard digits.count == 32 else { return nil }
        var bytes: [UInt8] = []
        var index = digits.startIndex
        while index < digits.endIndex {
            let next = digits.index(index, offsetBy: 2)
            guard let byte = UInt8(digits[index ..< next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        self.init(bytes: bytes)
    }

    public var description: String {
        let hexDigits = bytes.map { byte in
            let text = String(byte, radix: 16)
            return text.count == 1 ? "0" + text : text
        }
        return [0 ..< 4, 4 ..< 6, 6 ..< 8, 8 ..< 10, 10 ..< 16]
            .map { hexDigits[$0].joined() }.joined(separator: "-")
    }

    /// The seed of every block-level checksum of this volume (docs/format.md, "Checksums"):
    /// a block from another Shale file system never verifies here.
    public var checksumSeed: UInt32 { CRC32C.checksum(bytes) }
}
