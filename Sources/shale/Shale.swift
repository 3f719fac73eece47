// shale — the one command-line tool. Each subcommand lives in its own file.

import ArgumentParser

@main
struct Shale: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shale",
        abstract: "Shale, a cross-media file system: NVM logs in front of SSD and HDD tiers.",
        version: "0.1.0",
        subcommands: [Mkfs.self, Mount.self, Status.self, Digest.self, Fsck.self]
    )
}
