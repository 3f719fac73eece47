// Opening an existing volume from its directory (or manifest path) for the offline
// commands: the manifest is read, the NVM region mapped and locked, every lower device
// opened, and the superblock chosen and repaired by `Volume`.

import ShaleFormat
import ShaleMedia

public final class OpenedVolume {
    public let volume: Volume<MappedPersistentMemory>
    public let manifestPath: String
    public let devicePaths: [(tier: Tier, path: String)]
    public let ioModes: [Tier: BlockIOMode]
    /// True when another shale process holds the volume: it was opened read-only, unlocked.
    public let inUseElsewhere: Bool
    private let lock: FileLock?

    init(volume: Volume<MappedPersistentMemory>, manifestPath: String, devicePaths: [(tier: Tier, path: String)],
         ioModes: [Tier: BlockIOMode], inUseElsewhere: Bool, lock: FileLock?) {
        self.volume = volume
        self.manifestPath = manifestPath
        self.devicePaths = devicePaths
        self.ioModes = ioModes
        self.inUseElsewhere = inUseElsewhere
        self.lock = lock
    }
}

extension VolumeFiles {
    /// Where the manifest of `location` (a volume directory or a manifest file) is.
    public static func manifestPath(for location: String) throws(VolumeError) -> String {
        let path = HostFiles.absolute(location)
        switch HostFiles.kind(of: path) {
        case .directory:
            let manifest = path + "/" + VolumeManifest.fileName
            guard HostFiles.kind(of: manifest) != .missing else {
                throw .invalidOption("\(path) holds no Shale file system (no \(VolumeManifest.fileName); make one with `shale mkfs \(location)`)")
            }
            return manifest
        case .regular:
            return path
        case .missing:
            throw .invalidOption("\(path) does not exist")
        default:
            throw .invalidOption("\(path) is neither a volume directory nor a manifest")
        }
    }

    /// Opens the volume at `location`. With `repair`, a damaged superblock copy is rewritten;
    /// that needs the exclusive lock, so a volume in use elsewhere is opened read-only.
    /// The manifest of `location`, read and decoded, with its devices' paths made absolute
    /// (relative ones are relative to the manifest's directory).
    public static func readManifest(_ location: String) throws(VolumeError)
        -> (path: String, manifest: VolumeManifest, devices: [(tier: Tier, path: String)]) {
        let manifestPath = try manifestPath(for: location)
        let directory = HostFiles.parentDirectory(of: manifestPath)
        let text = try VolumeError.wrap { () throws(MediaError) in try HostFiles.read(manifestPath, limitBytes: 64 * 1024) }
        let manifest: VolumeManifest
        do {
            manifest = try VolumeManifest.decode(String(decoding: text, as: UTF8.self))
        } catch {
            throw .format(error, location: manifestPath)
        }
        let paths = manifest.devices.map { device in
            (tier: device.tier, path: device.path.hasPrefix("/") ? device.path : directory + "/" + device.path)
        }
        return (manifestPath, manifest, paths)
    }

    public static func open(_ location: String, repair: Bool) throws(VolumeError) -> OpenedVolume {
        let (manifestPath, manifest, paths) = try readManifest(location)
        let nvmPath = paths.first { $0.tier == .nvm }!.path
        guard HostFiles.kind(of: nvmPath) != .missing else {
            throw .missingDevice(tier: .nvm, reason: "\(nvmPath) does not exist. Emulated NVM lives in RAM and does not survive a reboot; "
                + "a volume that was not unmounted cleanly before the reboot has lost its logs")
        }
        var lock: FileLock?
        var inUse = false
        do {
            lock = try FileLock(path: nvmPath, exclusive: true)
        } catch {
            guard error.errno == .wouldBlock else { throw .media(error) }
            inUse = true
        }
        let nvm = try VolumeError.wrap { () throws(MediaError) in try MappedPersistentMemory.open(path: nvmPath) }
        var lower: [(tier: Tier, device: any BlockDevice, name: String)] = []
        var modes: [Tier: BlockIOMode] = [.nvm: .direct]
        for entry in paths where entry.tier != .nvm {
            let device = try VolumeError.wrap { () throws(MediaError) in try URingBlockDevice.open(path: entry.path) }
            lower.append((entry.tier, device, entry.path))
            modes[entry.tier] = device.ioMode
        }
        let volume = try Volume(nvm: nvm, nvmName: nvmPath, lowerDevices: lower, repair: repair && !inUse,
                                expectedVolumeID: manifest.volumeID)
        return OpenedVolume(volume: volume, manifestPath: manifestPath, devicePaths: paths, ioModes: modes,
                            inUseElsewhere: inUse, lock: lock)
    }
}
