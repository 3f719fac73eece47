// The volume manifest: a small text file, `shale.volume`, in the directory a user names to
// `shale mkfs DIR` (docs/format.md "Volume manifest"). It says where each device of the
// volume lives, so that `shale status DIR` and `shale mount DIR …` find an NVM region that
// sits in /dev/shm while the SSD and HDD images sit in DIR. It holds no file system state:
// the superblock and device headers are the truth, and the manifest's volume ID must match
// them.
//
//     # Shale volume manifest. Written by `shale mkfs`; edit a path only to move a device.
//     format = 2
//     uuid = 1b4e28ba-2fa1-41d2-883f-0016d3cca427
//     nvm = /dev/shm/shale-1b4e28ba.nvm
//     ssd = ssd.img
//     hdd = hdd.img
//
// Relative paths are relative to the manifest's directory.

public struct VolumeManifest: Equatable, Sendable {
    public static let fileName = "shale.volume"

    public var volumeID: VolumeID
    public var devices: [(tier: Tier, path: String)]

    public init(volumeID: VolumeID, devices: [(tier: Tier, path: String)]) {
        self.volumeID = volumeID
        self.devices = devices
    }

    public static func == (a: VolumeManifest, b: VolumeManifest) -> Bool {
        a.volumeID == b.volumeID && a.devices.map(\.tier) == b.devices.map(\.tier) && a.devices.map(\.path) == b.devices.map(\.path)
    }

    public func path(_ tier: Tier) -> String? { devices.first { $0.tier == tier }?.path }

    public func encode() -> String {
        var text = "# Shale volume manifest. Written by `shale mkfs`; edit a path only to move a device.\n"
        text += "format = \(Format.version)\n"
        text += "uuid = \(volumeID)\n"
        for device in devices { text += "\(device.tier) = \(device.path)\n" }
        return text
    }

    public static func decode(_ text: String) throws(FormatError) -> VolumeManifest {
        let name = "volume manifest"
        var version: UInt32?
        var volumeID: VolumeID?
        var devices: [(tier: Tier, path: String)] = []
        // "\r\n" is one Character in Swift: split on it too, or a CRLF file is one long line.
        let lines = text.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" }
        for (number, rawLine) in lines.enumerated() {
            let line = rawLine.trimmingSpaces
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let equals = line.firstIndex(of: "=") else {
                throw .invalidField(structure: name, field: "line \(number + 1)", reason: "expected `key = value`")
            }
            let key = line[..<equals].trimmingSpaces
            let value = line[line.index(after: equals)...].trimmingSpaces
            switch key {
            case "format":
                guard version == nil else { throw .invalidField(structure: name, field: "format", reason: "repeated") }
                guard let parsed = UInt32(value) else {
                    throw .invalidField(structure: name, field: "format", reason: "\"\(value)\"")
                }
                version = parsed
            case "uuid":
                guard volumeID == nil else { throw .invalidField(structure: name, field: "uuid", reason: "repeated") }
                guard let parsed = VolumeID(value) else {
                    throw .invalidField(structure: name, field: "uuid", reason: "\"\(value)\"")
                }
                volumeID = parsed
            default:
                guard let tier = Tier.allCases.first(where: { "\($0)" == key }) else {
                    throw .invalidField(structure: name, field: "line \(number + 1)", reason: "unknown key \"\(key)\"")
                }
                guard !value.isEmpty, !devices.contains(where: { $0.tier == tier }) else {
                    throw .invalidField(structure: name, field: key, reason: "empty or repeated")
                }
                devices.append((tier, value))
            }
        }
        guard let version else { throw .invalidField(structure: name, field: "format", reason: "missing") }
        guard version == Format.version else {
            throw .unsupportedVersion(structure: name, found: version, supported: Format.version)
        }
        guard let volumeID else { throw .invalidField(structure: name, field: "uuid", reason: "missing") }
        guard devices.contains(where: { $0.tier == .nvm }) else {
            throw .invalidField(structure: name, field: "nvm", reason: "missing")
        }
        return VolumeManifest(volumeID: volumeID, devices: devices)
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed())
    }
}
