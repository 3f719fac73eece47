// readdirplus through the real mount: listings with attributes (`ls -l`, `find -ls`) come
// from READDIRPLUS requests (seen in the daemon's -d trace) and show every entry with its
// true size, link count and mode; the lookups they hand the kernel are given back when it
// drops its caches, and the volume stays clean.

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension MountSuites {
    @Suite struct MountReaddirPlusTests {}
}

extension MountSuites.MountReaddirPlusTests {
    @Test func listingsWithAttributesComeFromReaddirplusAndShowEveryEntry() throws {
        let fixture = try MountFixture()
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point, ["-d"])
        let directory = point + "/listed"
        #expect(mkdir(directory, 0o755) == 0)
        var expected: [String: (size: Int, links: Int, mode: String)] = [:]
        for index in 0 ..< 300 {
            let name = "file-\(index)"
            try writeFile(directory + "/" + name, pattern(index * 37, seed: index), mode: 0o600 | mode_t(index % 2) * 0o044)
            #expect(chmod(directory + "/" + name, 0o600 | mode_t(index % 2) * 0o044) == 0)
            expected[name] = (index * 37, 1, index % 2 == 0 ? "-rw-------" : "-rw-r--r--")
        }
        #expect(link(directory + "/file-7", directory + "/second-name-of-7") == 0)
        expected["file-7"]!.links = 2
        expected["second-name-of-7"] = (7 * 37, 2, "-rw-r--r--")
        #expect(mkdir(directory + "/sub", 0o750) == 0)

        let listing = try shell("ls -la --time-style=+ \(quoted(directory))")
        #expect(listing.status == 0, "\(listing.all)")
        var seen: [String: (size: Int, links: Int, mode: String)] = [:]
        for line in listing.stdout.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            guard fields.count >= 6 else { continue }
            seen[fields.last!] = (Int(fields[4]) ?? -1, Int(fields[1]) ?? -1, fields[0])
        }
        for (name, want) in expected {
            let got = seen[name]
            #expect(got?.size == want.size && got?.links == want.links && got?.mode == want.mode,
                    "\(name): listed \(String(describing: got)), expected \(want)")
        }
        #expect(seen["sub"]?.mode == "drwxr-x---" && seen["sub"]?.links == 2, "\(String(describing: seen["sub"]))")
        #expect(seen["."] != nil && seen[".."] != nil)
        #expect(fixture.log(of: daemon).contains("READDIRPLUS"), "the kernel listed with readdirplus")

        // The kernel gives back what the listing handed it; nothing is held or leaked.
        #expect(try shell("sync; echo 3 > /proc/sys/vm/drop_caches").status == 0)
        let found = try shell("find \(quoted(directory)) -ls | wc -l")
        #expect(found.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "303", "\(found.all)")
        #expect(try shell("rm -rf \(quoted(directory))").status == 0)
        #expect(errnoOf { _ = try status(directory) } == ENOENT)
        fixture.unmount(point, daemon: daemon)
        fixture.expectFsckClean()
    }
}
