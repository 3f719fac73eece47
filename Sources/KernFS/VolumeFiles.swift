// Volumes on real devices: `shale mkfs` and every offline command go through here to turn a
// directory (with its `shale.volume` manifest) into opened media, locks held, and a checked
// `Volume`. Default sizes are chosen from the machine; every size is validated first.

import ShaleFormat
import ShaleMedia

/// What `shale mkfs` was asked for. Nil sizes and paths get the defaults of `MkfsDefaults`.
public struct MkfsRequest: Sendable {
    public var directory: String
    public var nvmPath: String?
    public var nvmBytes: UInt64?
    public var ssdPath: String?
    public var ssdBytes: UInt64?
    public var hddPath: String?
    public var hddBytes: UInt64?
    public var withoutSSD = false
    public var withoutHDD = false
    public var ssdSegmentBytes: UInt64 = 8 << 20
    public var hddSegmentBytes: UInt64 = 32 << 20
    public var logRegionCount: UInt32 = 16
    public var logRegionBytes: UInt64?
    public var label = ""
    public var force = false

    public init(directory: String) { self.directory = directory }
}

/// Sizes a default file system gets on this machine (docs/architecture.md "mkfs defaults").
public struct MkfsDefaults: Sendable {
    public static let mebibyte: UInt64 = 1 << 20
    public static let gibibyte: UInt64 = 1 << 30
    /// NVM: 1/32 of RAM, at least 256 MiB, at most 2 GiB, and at most a quarter of what the
    /// DRAM-backed file system has free; reserved in full at mkfs (emulated NVM is RAM).
    public static func nvmBytes(physicalMemory: UInt64, shmAvailable: UInt64) -> UInt64 {
        let wanted = min(max(physicalMemory / 32, 256 * mebibyte), 2 * gibibyte)
        return roundDown(min(wanted, shmAvailable / 4), to: 16 * mebibyte)
    }

    /// SSD: 10 % of the free disk space, 1 GiB to 256 GiB. Sparse.
    public static func ssdBytes(diskAvailable: UInt64) -> UInt64 {
        roundDown(min(max(diskAvailable / 10, gibibyte), 256 * gibibyte), to: gibibyte)
    }

    /// HDD: 25 % of the free disk space, 4 GiB to 1 TiB. Sparse.
    public static func hddBytes(diskAvailable: UInt64) -> UInt64 {
        roundDown(min(max(diskAvailable / 4, 4 * gibibyte), 1024 * gibibyte), to: gibibyte)
    }

    /// Each log region: 1/64 of the NVM, 1 MiB to 64 MiB.
    public static func logRegionBytes(nvmBytes: UInt64) -> UInt64 {
        roundDown(min(max(nvmBytes / 64, mebibyte), 64 * mebibyte), to: mebibyte)
    }

    static func roundDown(_ value: UInt64, to unit: UInt64) -> UInt64 { value / unit * unit }
}

public struct MkfsResult {
    public var superblock: Superblock
    public var manifestPath: String
    public var nvmPath: String
    public var persistence: PersistenceKind
    public var devices: [(tier: Tier, path: String, ioMode: BlockIOMode)]
}

public enum VolumeFiles {
    public static let defaultNVMDirectory = "/dev/shm"

    /// Makes a file system as `request` says. Refuses to overwrite any Shale volume or
    /// non-empty file unless `force`.
    public static func mkfs(_ request: MkfsRequest, nowSeconds: Int64 = HostFiles.nowSeconds) throws(VolumeError) -> MkfsResult {
        let directory = HostFiles.absolute(request.directory)
        switch HostFiles.kind(of: directory) {
        case .directory: break
        case .missing: try VolumeError.wrap { () throws(MediaError) in try HostFiles.makeDirectory(directory) }
        default: throw .invalidOption("\(directory) is not a directory")
        }
        let manifestPath = directory + "/" + VolumeManifest.fileName
        if !request.force, HostFiles.kind(of: manifestPath) != .missing {
            throw .wouldOverwrite(path: directory, what: "already holds a Shale file system (\(VolumeManifest.fileName))")
        }
        var options = FormatOptions()
        options.label = request.label
        options.nowSeconds = nowSeconds
        options.rootUID = HostFiles.userID
        options.rootGID = HostFiles.groupID
        options.logRegionCount = request.logRegionCount
        guard request.logRegionCount >= 1, request.logRegionCount <= 4096 else {
            throw .invalidOption("--log-regions must be 1 to 4096 (got \(request.logRegionCount))")
        }
        let shortID = String(options.volumeID.description.prefix(8))

        // Sizes and paths. Remaking a volume (--force) reuses its NVM region's path, so that
        // the old region is replaced instead of left behind in RAM.
        var previousNVMPath: String?
        if HostFiles.kind(of: manifestPath) != .missing, request.nvmPath == nil,
           let text = try? HostFiles.read(manifestPath, limitBytes: 64 * 1024),
           let previous = try? VolumeManifest.decode(String(decoding: text, as: UTF8.self)) {
            previousNVMPath = previous.path(.nvm).map { $0.hasPrefix("/") ? $0 : directory + "/" + $0 }
        }
        let nvmPath = HostFiles.absolute(request.nvmPath ?? previousNVMPath ?? "\(defaultNVMDirectory)/shale-\(shortID).nvm")
        let nvmBytes: UInt64
        if let requested = request.nvmBytes {
            nvmBytes = requested
        } else {
            let available = HostFiles.availableBytes(at: HostFiles.parentDirectory(of: nvmPath)) ?? 0
            nvmBytes = MkfsDefaults.nvmBytes(physicalMemory: HostFiles.physicalMemoryBytes, shmAvailable: available)
            guard nvmBytes >= 64 * MkfsDefaults.mebibyte else {
                throw .invalidOption("only \(available) bytes free in \(HostFiles.parentDirectory(of: nvmPath)); give --nvm-size explicitly")
            }
        }
        try validate(size: nvmBytes, name: "--nvm-size", alignment: UInt64(Format.blockBytes), minimum: 32 * MkfsDefaults.mebibyte)
        options.logRegionBytes = request.logRegionBytes ?? MkfsDefaults.logRegionBytes(nvmBytes: nvmBytes)
        // 1 MiB at least: the largest record (a 64 KiB xattr value) must fit in any log.
        try validate(size: options.logRegionBytes, name: "--log-size", alignment: UInt64(Format.blockBytes),
                     minimum: MkfsDefaults.mebibyte)
        let diskAvailable = HostFiles.availableBytes(at: directory) ?? 0
        var lowerPlans: [(tier: Tier, path: String, bytes: UInt64, segment: UInt64)] = []
        let lowerRequests: [(tier: Tier, skip: Bool, path: String?, bytes: UInt64?, segment: UInt64, defaultBytes: UInt64)] = [
            (.ssd, request.withoutSSD, request.ssdPath, request.ssdBytes, request.ssdSegmentBytes,
             MkfsDefaults.ssdBytes(diskAvailable: diskAvailable)),
            (.hdd, request.withoutHDD, request.hddPath, request.hddBytes, request.hddSegmentBytes,
             MkfsDefaults.hddBytes(diskAvailable: diskAvailable)),
        ]
        for lower in lowerRequests where !lower.skip {
            let path = HostFiles.absolute(lower.path ?? directory + "/\(lower.tier).img")
            let existing = try sizeOfExistingBlockDevice(path)
            let bytes = lower.bytes ?? existing ?? lower.defaultBytes
            try validate(size: bytes, name: "--\(lower.tier)-size", alignment: UInt64(Format.blockBytes), minimum: 16 * MkfsDefaults.mebibyte)
            try validate(size: lower.segment, name: "--\(lower.tier)-segment", alignment: UInt64(Format.blockBytes), minimum: 64 * 1024)
            lowerPlans.append((lower.tier, path, bytes, lower.segment))
        }
        let allPaths = [nvmPath] + lowerPlans.map(\.path)
        guard Set(allPaths).count == allPaths.count else {
            throw .invalidOption("two devices share one path: \(allPaths.joined(separator: ", "))")
        }
        for plan in lowerPlans where plan.segment * 2 > plan.bytes {
            throw .invalidOption("the \(plan.tier) segment of \(plan.segment) bytes needs a device of at least twice that")
        }

        for path in allPaths where path.contains(where: { $0 == "\n" || $0 == "\r" }) {
            throw .invalidOption("device path \(path.debugDescription) contains a line break")
        }

        // Everything that can be checked is checked before any device is touched: a bad
        // option never costs the user an existing volume.
        guard options.label.utf8.count <= Superblock.labelBytes else {
            throw .invalidOption("label of \(options.label.utf8.count) bytes is longer than \(Superblock.labelBytes)")
        }
        let nvmIsDevice = HostFiles.kind(of: nvmPath) == .characterDevice
        if !nvmIsDevice {
            do {
                _ = try NVMLayout.plan(nvmBytes: nvmBytes, nvmPathHint: nvmPath, logRegionCount: options.logRegionCount,
                                       logRegionBytes: options.logRegionBytes,
                                       lowerTiers: lowerPlans.map { .init(tier: $0.tier, byteCount: $0.bytes, segmentBytes: $0.segment, pathHint: $0.path) })
            } catch {
                throw .format(error, location: "planning the layout")
            }
        }
        // Nothing is overwritten without --force; a volume in use is never overwritten.
        for path in allPaths { try checkOverwrite(path, force: request.force) }
        // The old region stays locked until the new one replaces it: no other shale process
        // can open it meanwhile.
        var existingLock: FileLock?
        if HostFiles.kind(of: nvmPath) != .missing {
            existingLock = try VolumeError.wrap { () throws(MediaError) in try FileLock(path: nvmPath, exclusive: true) }
        }
        defer { withExtendedLifetime(existingLock) {} }

        // Create the media. A new NVM file is made under a temporary name, locked, formatted,
        // and only then renamed over the old one, so no other process ever sees it half made.
        var created: [String] = []
        do {
            let nvm: MappedPersistentMemory
            let nvmLock: FileLock
            let workingPath: String
            if nvmIsDevice {
                workingPath = nvmPath
                nvm = try VolumeError.wrap { () throws(MediaError) in try MappedPersistentMemory.open(path: nvmPath) }
                nvmLock = existingLock!
            } else {
                workingPath = nvmPath + ".mkfs-\(HostFiles.processID)"
                try VolumeError.wrap { () throws(MediaError) in try HostFiles.remove(workingPath) }
                nvm = try VolumeError.wrap { () throws(MediaError) in
                    try MappedPersistentMemory.create(path: workingPath, byteCount: Int(nvmBytes), exclusive: true)
                }
                created.append(workingPath)
                nvmLock = try VolumeError.wrap { () throws(MediaError) in try FileLock(path: workingPath, exclusive: true) }
            }
            var lowerDevices: [LowerDevice] = []
            var deviceList: [(tier: Tier, path: String, ioMode: BlockIOMode)] = []
            for plan in lowerPlans {
                let device: URingBlockDevice = try VolumeError.wrap { () throws(MediaError) in
                    switch HostFiles.kind(of: plan.path) {
                    case .blockDevice:
                        return try URingBlockDevice.open(path: plan.path)
                    case .regular:
                        try HostFiles.remove(plan.path)
                        fallthrough
                    default:
                        let device = try URingBlockDevice.create(path: plan.path, byteCount: plan.bytes, exclusive: true)
                        created.append(plan.path)
                        return device
                    }
                }
                guard device.byteCount >= plan.bytes else {
                    throw VolumeError.invalidOption("\(plan.path) holds \(device.byteCount) bytes, less than the \(plan.bytes) asked for")
                }
                lowerDevices.append(LowerDevice(tier: plan.tier, device: device, byteCount: plan.bytes,
                                                segmentBytes: plan.segment, pathHint: plan.path))
                deviceList.append((plan.tier, plan.path, device.ioMode))
            }
            let superblock = try Formatter.format(nvm: nvm, nvmPathHint: nvmPath, lowerDevices: lowerDevices, options: options)
            if let failure = nvm.persistFailure { throw VolumeError.media(failure) }
            if workingPath != nvmPath {
                try VolumeError.wrap { () throws(MediaError) in try HostFiles.renameDurably(workingPath, to: nvmPath) }
                created.removeAll { $0 == workingPath }
                created.append(nvmPath)
            }

            // An earlier volume's saved NVM (SavedNVM) must never be restored into this one.
            try SavedNVM.forget(directory: directory)
            // The manifest last: until it exists, DIR holds no volume, and what this run made
            // is removed on failure.
            let manifest = VolumeManifest(volumeID: options.volumeID,
                                          devices: [(Tier.nvm, nvmPath)] + lowerPlans.map { ($0.tier, relative($0.path, to: directory)) })
            try VolumeError.wrap { () throws(MediaError) in
                try HostFiles.writeAtomically(manifestPath, contents: Array(manifest.encode().utf8))
            }
            withExtendedLifetime(nvmLock) {}
            return MkfsResult(superblock: superblock, manifestPath: manifestPath, nvmPath: nvmPath,
                              persistence: nvm.persistence, devices: [(Tier.nvm, nvmPath, BlockIOMode.direct)] + deviceList)
        } catch let error as VolumeError {
            for path in created { try? HostFiles.remove(path) }
            throw error
        } catch {
            for path in created { try? HostFiles.remove(path) }
            throw .invalidOption("\(error)")
        }
    }

    static func validate(size: UInt64, name: String, alignment: UInt64, minimum: UInt64) throws(VolumeError) {
        guard size >= minimum else {
            throw .invalidOption("\(name) \(size) bytes is below the minimum of \(minimum) bytes")
        }
        guard size % alignment == 0 else {
            throw .invalidOption("\(name) \(size) bytes is not a multiple of \(alignment)")
        }
        guard size <= 1 << 60 else { throw .invalidOption("\(name) \(size) bytes is absurdly large") }
    }

    static func sizeOfExistingBlockDevice(_ path: String) throws(VolumeError) -> UInt64? {
        guard HostFiles.kind(of: path) == .blockDevice else { return nil }
        let device = try VolumeError.wrap { () throws(MediaError) in try URingBlockDevice.open(path: path) }
        return device.byteCount
    }

    /// Refuses (without force) to overwrite a Shale volume or any non-empty file.
    static func checkOverwrite(_ path: String, force: Bool) throws(VolumeError) {
        switch HostFiles.kind(of: path) {
        case .missing:
            return
        case .directory, .other:
            throw .invalidOption("\(path) exists and is not a file or device")
        case .characterDevice:
            if force { return }
            throw .wouldOverwrite(path: path, what: "is a device")
        case let .regular(byteCount):
            if byteCount == 0 || force { return }
            let head = (try? HostFiles.readHead(path, count: 2 * Format.blockBytes)) ?? []
            throw .wouldOverwrite(path: path, what: holdsShale(head) ? "holds a Shale file system" : "exists and is not empty (\(byteCount) bytes)")
        case .blockDevice:
            if force { return }
            throw .wouldOverwrite(path: path, what: "is a block device")
        }
    }

    static func holdsShale(_ head: [UInt8]) -> Bool {
        let magics = [Superblock.magic, DeviceHeader.magic]
        return [0, Format.blockBytes].contains { offset in
            head.count >= offset + 8 && magics.contains(Array(head[offset ..< offset + 8]))
        }
    }

    static func relative(_ path: String, to directory: String) -> String {
        path.hasPrefix(directory + "/") ? String(path.dropFirst(directory.count + 1)) : path
    }
}
