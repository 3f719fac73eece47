// The volume argument every offline command takes, and opening it with a clear error.

import ArgumentParser
import KernFS

struct VolumeArgument: ParsableArguments {
    @Argument(help: "The volume directory (holding shale.volume), or the manifest itself.")
    var volume: String

    /// Opens the volume (repairing a damaged superblock copy when it can), or fails the
    /// command with the reason.
    func open(for command: String) throws -> OpenedVolume {
        try restoreSavedNVM(for: command)
        do {
            return try VolumeFiles.open(volume, repair: true)
        } catch {
            throw Output.fail(command, error.description)
        }
    }

    /// After a reboot the emulated NVM is gone: bring back the copy the last clean unmount
    /// saved (SavedNVM), and say so.
    func restoreSavedNVM(for command: String) throws {
        do {
            if let report = try SavedNVM.restoreIfMissing(volume: volume) {
                Output.error("shale \(command): \(report)")
            }
        } catch {
            throw Output.fail(command, error.description)
        }
    }
}
