// shale — the one command-line tool. Each subcommand lives in its own file.

import ArgumentParser
import Glibc

@main
struct Shale: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shale",
        abstract: "Shale, a cross-media file system: NVM logs in front of SSD and HDD tiers.",
        version: "0.1.0",
        subcommands: [Mkfs.self, Mount.self, Status.self, Digest.self, Fsck.self, Crashtest.self]
    )

    /// Called as mount(8)'s helper (mount.fuse.shale), the arguments are mount(8)'s.
    static func main() {
        let arguments = CommandLine.arguments
        do {
            guard let translated = try MountHelper.translate(program: arguments[0], arguments: Array(arguments.dropFirst())) else {
                main(nil)
                return
            }
            if translated.isEmpty { return }
            main(translated)
        } catch {
            Output.error(error.description)
            Glibc.exit(1)
        }
    }
}
