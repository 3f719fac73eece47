// Emulated NVM across reboots (the design brief's "Media emulation on ordinary machines").
//
// An NVM region on a DRAM-backed file system (tmpfs, ramfs) survives the crash of any
// process, the daemon's included, but not a reboot. So a clean unmount saves it beside the
// volume's manifest (`shale.nvm.saved`, holes where the region holds only zeros), and any
// command that finds the NVM file gone while a saved copy exists restores the copy before it
// opens the volume. Real NVM (a DAX device or a file on persistent memory) and a region on
// an ordinary file system (made durable with msync) need neither and get neither.
//
// The saved copy is exactly as current as the last clean unmount. While a mount serves the
// volume a marker (`shale.nvm.mounted`, holding the time it mounted) says that the copy is
// older than the NVM; the clean unmount that saves again removes it. A restore that finds the
// marker tells the user that what the mount changed after that time was lost with the RAM.
//
// Needs: ShaleMedia's host-file operations (sparse atomic copy, locks) and the manifest.

import ShaleFormat
import ShaleMedia

public enum SavedNVM {
    public static let fileName = "shale.nvm.saved"
    public static let mountedMarkerName = "shale.nvm.mounted"

    /// Where a volume's NVM, its saved copy and the marker are.
    public struct Paths: Sendable {
        public var nvm: String
        public var saved: String
        public var marker: String
        public var volumeID: VolumeID
    }

    public static func paths(volume location: String) throws(VolumeError) -> Paths {
        let (manifestPath, manifest, devices) = try VolumeFiles.readManifest(location)
        let directory = HostFiles.parentDirectory(of: manifestPath)
        return Paths(nvm: devices.first { $0.tier == .nvm }?.path ?? "", saved: directory + "/" + fileName,
                     marker: directory + "/" + mountedMarkerName, volumeID: manifest.volumeID)
    }

    /// What a save wrote.
    public struct SaveReport: Sendable {
        public var savedPath: String
        public var nvmBytes: UInt64
        /// Bytes that were not all zeros (the copy's other steps are holes).
        public var dataBytes: UInt64
    }

    /// After a clean unmount: saves the volume's NVM beside its manifest if it is emulated in
    /// RAM, holding the volume's lock while it copies, and removes the mount marker. nil when
    /// the NVM survives a reboot by itself (nothing to save). `progress` gets bytes done and total.
    public static func save(volume location: String,
                            progress: ((UInt64, UInt64) -> Void)? = nil) throws(VolumeError) -> SaveReport? {
        let paths = try paths(volume: location)
        guard MappedPersistentMemory.isDRAMBacked(paths.nvm) else {
            try VolumeError.wrap { () throws(MediaError) in try HostFiles.remove(paths.marker) }
            return nil
        }
        // The lock keeps any other opener out while the copy is taken: it sees a whole volume.
        let lock: FileLock
        do {
            lock = try FileLock(path: paths.nvm, exclusive: true)
        } catch {
            if error.errno == .wouldBlock { throw .inUse(path: paths.nvm) }
            throw .media(error)
        }
        let data = try VolumeError.wrap { () throws(MediaError) in
            try HostFiles.copyAtomically(paths.nvm, to: paths.saved, progress: progress)
        }
        try VolumeError.wrap { () throws(MediaError) in try HostFiles.remove(paths.marker) }
        _ = lock
        return SaveReport(savedPath: paths.saved, nvmBytes: regularSize(paths.saved) ?? 0, dataBytes: data)
    }

    /// What a restore found and did.
    public struct RestoreReport: Sendable, CustomStringConvertible {
        public var savedPath: String
        public var nvmPath: String
        /// When the copy was saved (seconds since the epoch).
        public var savedAtSeconds: Int64
        /// When the mount that did not end cleanly began, if one did not.
        public var uncleanMountSinceSeconds: Int64?

        public var description: String {
            var text = "restored the emulated NVM \(nvmPath) (lost, as RAM is at a reboot) from \(savedPath), "
                + "saved at the clean unmount of \(HostFiles.describeTime(savedAtSeconds))"
            if let since = uncleanMountSinceSeconds {
                text += "; WARNING: the volume was mounted again at \(HostFiles.describeTime(since)) and that mount did not "
                    + "end cleanly before the NVM was lost: what it changed is gone"
            }
            return text
        }
    }

    /// When the volume's NVM file is missing and a saved copy of this volume exists, restores
    /// the copy (space reserved first, so a full tmpfs is ENOSPC now rather than a fault
    /// later). nil when there is nothing to restore.
    public static func restoreIfMissing(volume location: String) throws(VolumeError) -> RestoreReport? {
        let paths = try paths(volume: location)
        guard HostFiles.kind(of: paths.nvm) == .missing, regularSize(paths.saved) != nil else { return nil }
        // One restorer at a time; the one that waited finds the NVM back and does nothing.
        let lock: FileLock
        do {
            lock = try FileLock(path: paths.saved, exclusive: true)
        } catch {
            if error.errno == .wouldBlock { throw .inUse(path: paths.saved) }
            throw .media(error)
        }
        defer { _ = lock }
        guard HostFiles.kind(of: paths.nvm) == .missing else { return nil }
        // Only this volume's copy: a directory reused by a new mkfs keeps no stale one, but
        // a copy moved in by hand could be anyone's.
        let head = try VolumeError.wrap { () throws(MediaError) in try HostFiles.readHead(paths.saved, count: Superblock.encodedBytes) }
        let savedID: VolumeID? = head.withUnsafeBytes { bytes in
            guard bytes.count == Superblock.encodedBytes else { return nil }
            return try? Superblock.decode(bytes, nvmBytes: regularSize(paths.saved) ?? 0).volumeID
        }
        guard savedID == paths.volumeID else {
            throw .deviceMismatch(path: paths.saved, reason: "is not a saved NVM region of file system \(paths.volumeID)"
                + (savedID.map { " (it holds \($0))" } ?? "") + "; it was not restored")
        }
        let savedAt = HostFiles.modificationSeconds(of: paths.saved) ?? 0
        try VolumeError.wrap { () throws(MediaError) in _ = try HostFiles.copyAtomically(paths.saved, to: paths.nvm, reserve: true) }
        var since: Int64?
        if regularSize(paths.marker) != nil,
           let text = try? HostFiles.read(paths.marker, limitBytes: 4096) {
            since = Int64(String(decoding: text, as: UTF8.self).trimmingPrefixAndSuffixWhitespace) ?? savedAt
        }
        return RestoreReport(savedPath: paths.saved, nvmPath: paths.nvm, savedAtSeconds: savedAt, uncleanMountSinceSeconds: since)
    }

    /// A mount now serves the volume: from here on the saved copy (if any) is older than the
    /// NVM, until the clean unmount saves again. Only for emulated NVM.
    public static func markMounted(volume location: String, nowSeconds: Int64 = HostFiles.nowSeconds) throws(VolumeError) {
        let paths = try paths(volume: location)
        guard MappedPersistentMemory.isDRAMBacked(paths.nvm) else { return }
        try VolumeError.wrap { () throws(MediaError) in
            try HostFiles.writeAtomically(paths.marker, contents: Array("\(nowSeconds)\n".utf8))
        }
    }

    private static func regularSize(_ path: String) -> UInt64? {
        if case let .regular(byteCount) = HostFiles.kind(of: path) { return byteCount }
        return nil
    }

    /// mkfs: a new volume in a directory drops what an old one saved there.
    static func forget(directory: String) throws(VolumeError) {
        try VolumeError.wrap { () throws(MediaError) in
            try HostFiles.remove(directory + "/" + fileName)
            try HostFiles.remove(directory + "/" + mountedMarkerName)
        }
    }
}

extension String {
    fileprivate var trimmingPrefixAndSuffixWhitespace: String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
