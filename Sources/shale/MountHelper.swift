// mount(8)'s helper: `mount -t fuse.shale DIR MOUNTPOINT` and an fstab line of type
// fuse.shale run /sbin/mount.fuse.shale (a link to this binary, put there by `make install`)
// as `mount.fuse.shale DIR MOUNTPOINT [-sfnv] [-o OPTIONS] [-t TYPE]`. Called by that name,
// shale turns the helper's arguments into `shale mount DIR MOUNTPOINT -o OPTIONS` (daemon in
// the background, returning once the mount is ready, as mount(8) expects), keeping the
// options FUSE understands and dropping those that only mean something to mount(8) and
// fstab (noauto, nofail, _netdev, user, x-*, …).

enum MountHelper {
    /// The names this binary answers to as mount(8)'s helper.
    static let programNames: Set<String> = ["mount.fuse.shale", "mount.shale"]

    /// fstab and mount(8) options that are not mount options of the file system.
    static let mountCommandOnlyOptions: Set<String> = [
        "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "nofail", "_netdev", "loop",
    ]

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// What to do when the binary runs as `program` with `arguments` (after the program name):
    /// nil when it was not called as the helper; otherwise the `shale` arguments to run, or
    /// an empty array when there is nothing to do (-f, a "fake" mount).
    static func translate(program: String, arguments: [String]) throws(Failure) -> [String]? {
        let name = program.split(separator: "/").last.map(String.init) ?? program
        guard programNames.contains(name) else { return nil }
        var positional: [String] = []
        var options: [String] = []
        var fake = false
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            switch argument {
            case "-s", "-n", "-v": break  // sloppy, no mtab, verbose: nothing to do differently
            case "-f": fake = true
            case "-o", "-t", "-N":
                guard index < arguments.count else { throw Failure(description: "\(name): \(argument) needs a value") }
                let value = arguments[index]
                index += 1
                if argument == "-o" { options += value.split(separator: ",", omittingEmptySubsequences: true).map(String.init) }
                if argument == "-t", value != "fuse.shale", value != "shale" {
                    throw Failure(description: "\(name): cannot mount type \(value) (this helper mounts fuse.shale)")
                }
                if argument == "-N" { throw Failure(description: "\(name): mounting in another namespace (-N) is not supported") }
            default:
                if argument.hasPrefix("-o"), argument.count > 2 {
                    options += argument.dropFirst(2).split(separator: ",").map(String.init)
                } else if argument.hasPrefix("-") {
                    throw Failure(description: "\(name): unknown option \(argument)")
                } else {
                    positional.append(argument)
                }
            }
        }
        guard positional.count == 2 else {
            throw Failure(description: "usage: \(name) VOLUME MOUNTPOINT [-sfnv] [-o OPTIONS] (as mount(8) runs it)")
        }
        if fake { return [] }
        let kept = options.filter { option in
            let key = option.split(separator: "=", maxSplits: 1).first.map(String.init) ?? option
            return !mountCommandOnlyOptions.contains(key) && !key.hasPrefix("x-") && key != "comment"
        }
        return ["mount", positional[0], positional[1]] + (kept.isEmpty ? [] : ["-o", kept.joined(separator: ",")])
    }
}
