// KernFS — layer 4 of Shale, the trusted "kernel-role" half that owns the shared area.
//
// Today it offers: formatting a volume (`Formatter`), opening one with its superblock
// checked and repaired and every device verified against it (`Volume`), and the space
// accounting `shale status` prints (`SpaceReport`). Digest, recovery and leases arrive with
// the core file system.
// Needs: ShaleMedia (NVM region and block devices, generic so the crash harness can run the
// same code on simulated media) and ShaleFormat (every structure it reads or writes).

import ShaleFormat
import ShaleMedia

/// Why a volume could not be made or opened. Each case reads as a sentence for the user.
public enum VolumeError: Error, CustomStringConvertible {
    case media(MediaError)
    /// A structure failed to decode; `location` says where it was read from.
    case format(FormatError, location: String)
    /// Neither superblock copy is a Shale superblock.
    case notShale(path: String, reasons: [FormatError])
    /// Both copies are Shale superblocks but neither verifies.
    case bothSuperblocksDamaged(path: String, reasons: [FormatError])
    /// The volume was written by a format version this build does not read.
    case unsupportedVersion(path: String, FormatError)
    /// A device does not belong to this volume, or is not the tier the superblock says.
    case deviceMismatch(path: String, reason: String)
    case missingDevice(tier: Tier, reason: String)
    /// mkfs would overwrite something without --force.
    case wouldOverwrite(path: String, what: String)
    case invalidOption(String)
    case journal(JournalError)
    /// Another process (a mount, a linked application) holds the volume.
    case inUse(path: String)

    public var description: String {
        switch self {
        case let .media(error): return error.description
        case let .format(error, location): return "\(location): \(error)"
        case let .notShale(path, reasons):
            return "\(path) is not a Shale file system (\(reasons.map(\.description).joined(separator: "; ")))"
        case let .bothSuperblocksDamaged(path, reasons):
            return "\(path): both superblock copies are damaged, the file system cannot be opened: "
                + reasons.map(\.description).joined(separator: "; ")
        case let .unsupportedVersion(path, error):
            return "\(path): \(error)"
        case let .deviceMismatch(path, reason): return "\(path): \(reason)"
        case let .missingDevice(tier, reason): return "\(tier) device: \(reason)"
        case let .wouldOverwrite(path, what):
            return "\(path) \(what); refusing to overwrite it without --force"
        case let .invalidOption(text): return text
        case let .journal(error): return error.description
        case let .inUse(path):
            return "\(path) is in use by another shale process (a mount or an application); it can be opened by one at a time"
        }
    }
}

extension VolumeError {
    static func wrap<T>(_ body: () throws(MediaError) -> T) throws(VolumeError) -> T {
        do { return try body() } catch { throw .media(error) }
    }
}
