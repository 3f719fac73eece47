// Real programs on the mount: tar extracts a source tarball, git makes a repository and checks
// it, SQLite runs thousands of durable transactions, cp -a and rsync -a copy a tree in and out.
// Each compares what it finds on the mount with the same program's result on the host's own
// file system (contents by sha256sum, and type, mode, link count, owner, size, mtime to the
// nanosecond, symlink target of every entry), then unmounts and checks the volume with
// `shale fsck`.
//
// The tools must be installed (`make deps`: DEB_PACKAGES in the Makefile); a missing tool
// fails the test rather than skipping it.

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension MountSuites {
    @Suite struct MountProgramsTests {}
}

/// The repository's root (this file is Tests/CLITests/MountProgramsTests.swift).
private let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// Every tool is on PATH; a missing one fails the test (CI installs them with `make deps`).
private func requireTools(_ tools: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
    let missing = tools.filter { (try? shell("command -v \($0)"))?.status != 0 }
    try #require(missing.isEmpty, "missing tools \(missing) (make deps installs them)", sourceLocation: sourceLocation)
}

/// Runs a script under `set -e`, expects it to succeed, and returns its standard output.
@discardableResult
private func run(_ script: String, seconds: Int = 120, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
    let result = try shell("set -e\n" + script, seconds: seconds)
    #expect(result.status == 0, "\(script)\n--- exit \(result.status):\n\(result.all.suffix(4000))", sourceLocation: sourceLocation)
    return result.stdout
}

/// Every entry under `directory` but the directory itself, one line each, sorted: type, mode,
/// link count, owner, size (not for directories: theirs is the file system's own business),
/// mtime in nanoseconds, symlink target, path.
private func listing(_ directory: String) throws -> [String] {
    let out = try run("""
        cd \(quoted(directory))
        find . -mindepth 1 \\( -type d -printf 'd %M %n %U:%G - %T@ - %P\\n' \\) -o -printf '%y %M %n %U:%G %s %T@ %l %P\\n' | LC_ALL=C sort
        """)
    return out.split(separator: "\n").map(String.init)
}

/// sha256sum of every regular file under `directory`, sorted by path.
private func checksums(_ directory: String) throws -> String {
    try run("cd \(quoted(directory)) && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum")
}

/// Expects two listings to be equal, showing the first lines that differ.
private func expectSameListing(_ found: [String], _ expected: [String], _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let missing = expected.filter { !found.contains($0) }.prefix(5)
    let extra = found.filter { !expected.contains($0) }.prefix(5)
    let same = found == expected
    #expect(same, "\(what): \(found.count) entries, expected \(expected.count); missing \(Array(missing)); unexpected \(Array(extra))",
            sourceLocation: sourceLocation)
}

/// A tree to copy: Linux's UAPI headers and this repository's Sources (about a thousand files),
/// plus what a copy must keep: modes (setuid, setgid, sticky, 0600, 0750), owners, hard links,
/// symlinks (one dangling), an empty directory, times to the nanosecond (files, symlinks and
/// directories), a sparse file, names with spaces and non-ASCII bytes, random data.
private func makeTree(_ tree: String) throws {
    try run("""
        mkdir -p \(quoted(tree))
        cd \(quoted(tree))
        cp -R /usr/include/linux uapi
        cp -R \(quoted(repositoryRoot + "/Sources")) sources
        mkdir -p 'odd names/sp ace' odd\\ names/ünïcødé empty bin
        printf 'a file with spaces\\n' > 'odd names/sp ace/file one'
        printf '\\377\\376 bytes\\n' > "odd names/ünïcødé/$(printf 'n\\001\\177\\377')"
        printf '#!/bin/sh\\necho hi\\n' > bin/run
        chown 1000:1000 bin/run
        chmod 4755 bin/run
        head -c 1000000 /dev/urandom > bin/blob
        chmod 600 bin/blob
        truncate -s 5M bin/sparse
        printf x | dd of=bin/sparse bs=1 seek=3000000 conv=notrunc status=none
        ln bin/blob bin/blob.hard
        ln bin/blob 'odd names/blob third link'
        ln -s ../sources/shale/Mount.swift bin/link
        ln -s nowhere bin/dangling
        chown 1000:1000 bin/sparse
        chown -h 1000:1001 bin/link
        chmod 2750 'odd names'
        chmod 1777 empty
        touch -d '2001-02-03 04:05:06.123456789' bin/run
        touch -h -d '2002-03-04 05:06:07.987654321' bin/link
        touch -d '1999-12-31 23:59:59.5' empty
        touch -d '2010-10-10 10:10:10.000000001' uapi
        """)
}

extension MountSuites.MountProgramsTests {
    @Test(.timeLimit(.minutes(4)))
    func tarExtractsASourceTarballWithEveryFileIntact() throws {
        try requireTools(["tar", "xz", "sha256sum", "find", "xargs"])
        let fixture = try MountFixture()
        let work = fixture.scratch.directory
        try makeTree(work + "/tree")
        try run("tar -C \(quoted(work + "/tree")) -cf - . | xz -1 -T1 > \(quoted(work + "/src.tar.xz"))")
        // The reference: the same archive extracted on the host's file system.
        try run("mkdir \(quoted(work + "/ref")) && tar -C \(quoted(work + "/ref")) -xJf \(quoted(work + "/src.tar.xz"))")

        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point)
        let extracted = point + "/src"
        try run("mkdir \(quoted(extracted)) && tar -C \(quoted(extracted)) -xJf \(quoted(work + "/src.tar.xz"))")
        // tar itself compares the archive with what is on the mount (contents, modes, owners, times, links).
        try run("tar -C \(quoted(extracted)) -dJf \(quoted(work + "/src.tar.xz"))")
        let sums = try checksums(extracted)
        #expect(sums.split(separator: "\n").count > 800, "\(sums.prefix(500))")
        #expect(try sums == checksums(work + "/ref"))
        let reference = try listing(work + "/ref")
        expectSameListing(try listing(extracted), reference, "extracted on the mount")
        #expect(try status(extracted + "/bin/blob").st_nlink == 3)

        // Mounted again: the same tree.
        fixture.unmount(point, daemon: daemon)
        let again = try fixture.mountInForeground(on: point)
        #expect(try checksums(extracted) == sums)
        expectSameListing(try listing(extracted), reference, "after remounting")
        try run("rm -rf \(quoted(extracted))")
        #expect(try names(in: point) == [])
        fixture.unmount(point, daemon: again)
        fixture.expectFsckClean()
        #expect(!fixture.didTimeOut)
    }

    @Test(.timeLimit(.minutes(4)))
    func gitCommitsBranchesMergesRepacksAndFsckFindsNothingWrong() throws {
        try requireTools(["git", "diff"])
        let fixture = try MountFixture()
        let work = fixture.scratch.directory
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point)
        let repository = point + "/repo"
        let environment = """
            export HOME=\(quoted(work)) GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=Shale GIT_AUTHOR_EMAIL=shale@example.com \
            GIT_COMMITTER_NAME=Shale GIT_COMMITTER_EMAIL=shale@example.com
            """
        try run("""
            \(environment)
            git init -q -b main \(quoted(repository))
            cd \(quoted(repository))
            cp -R \(quoted(repositoryRoot + "/Sources")) sources
            cp -R \(quoted(repositoryRoot + "/docs")) docs
            git add -A
            git commit -q -m 'first: the sources'
            i=1
            while [ $i -le 20 ]; do
                echo "line $i" >> notes.txt
                sed -i "1s/^/\\/\\/ edit $i\\n/" sources/shale/Mount.swift
                git add -A
                git commit -q -m "edit $i"
                i=$((i + 1))
            done
            git checkout -q -b side
            echo side > side.txt && git add side.txt && git commit -q -m side
            git checkout -q main
            echo main > main.txt && git add main.txt && git commit -q -m main
            git merge -q --no-edit side
            git mv sources src && git commit -q -m rename
            git tag -a v1 -m 'a tag'
            git gc -q --prune=now
            git fsck --full --strict --no-progress
            """)
        let log = try run("\(environment)\ncd \(quoted(repository)) && git log --oneline | wc -l && git status --porcelain && ls .git/objects/pack | grep -c '\\.pack$'")
        #expect(log == "25\n1\n", "24 commits and the merge, a clean work tree, one pack after gc: \(log)")
        // A clone off the mount has the same history and files.
        try run("""
            \(environment)
            git clone -q \(quoted(repository)) \(quoted(work + "/clone"))
            cd \(quoted(work + "/clone")) && git fsck --full --strict --no-progress
            diff -r -x .git . \(quoted(repository))
            test "$(git rev-parse HEAD)" = "$(git -C \(quoted(repository)) rev-parse HEAD)"
            """)

        fixture.unmount(point, daemon: daemon)
        let again = try fixture.mountInForeground(on: point)
        try run("\(environment)\ncd \(quoted(repository)) && git fsck --full --strict --no-progress && test -z \"$(git status --porcelain)\"")
        fixture.unmount(point, daemon: again)
        fixture.expectFsckClean()
        #expect(!fixture.didTimeOut)
    }

    @Test(.timeLimit(.minutes(4)))
    func sqliteSurvivesThousandsOfDurableWALTransactionsAndARemount() throws {
        try requireTools(["sqlite3", "awk", "seq"])
        let fixture = try MountFixture()
        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point)
        let database = point + "/db/test.sqlite"
        try check(Int(mkdir(point + "/db", 0o755)), "mkdir")
        let setup = try run("""
            sqlite3 \(quoted(database)) 'PRAGMA journal_mode=WAL;' \
                'CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT UNIQUE, v BLOB, n INTEGER);' 'CREATE INDEX tn ON t(n);'
            """)
        #expect(setup == "wal\n", "\(setup)")
        // 4,000 one-row transactions (every fifth also updates an older row, every seventh
        // deletes one), with synchronous=FULL, while another process keeps reading.
        let script = """
            seq 1 4000 | awk 'BEGIN { print ".timeout 10000"; print "PRAGMA synchronous=FULL;" }
                { print "BEGIN; INSERT INTO t(k, v, n) VALUES (\\047k" $1 "\\047, randomblob(" (300 + $1 % 700) "), " $1 ");"
                  if ($1 % 5 == 0) print "UPDATE t SET v = randomblob(1000), n = n + 100000 WHERE id = " int($1 / 2) ";"
                  if ($1 % 7 == 0) print "DELETE FROM t WHERE id = " ($1 - 3) ";"
                  print "COMMIT;" }' | sqlite3 -bail \(quoted(database)) &
            writer=$!
            reads=0
            while kill -0 $writer 2>/dev/null; do
                count=$(sqlite3 -cmd '.timeout 10000' \(quoted(database)) 'SELECT count(*) FROM t;')
                case "$count" in ''|*[!0-9]*) echo "bad read: $count"; exit 1;; esac
                reads=$((reads + 1))
            done
            wait $writer
            echo "reads $reads" >&2
            """
        try run(script, seconds: 180)
        // Rows: 4,000 inserted; deletes hit ids 4, 11, 18, ... (each id 7k - 3, all distinct).
        let expectedRows = 4000 - 4000 / 7
        let check1 = try run("sqlite3 \(quoted(database)) 'PRAGMA integrity_check;' 'SELECT count(*), max(id) FROM t;' 'PRAGMA journal_mode;'")
        #expect(check1 == "ok\n\(expectedRows)|4000\nwal\n", "\(check1)")
        let sum = try run("sqlite3 \(quoted(database)) 'SELECT sum(n), sum(length(v)) FROM t;'")

        // After a remount: the same rows; a checkpoint, and the database is still whole.
        fixture.unmount(point, daemon: daemon)
        let again = try fixture.mountInForeground(on: point)
        let check2 = try run("""
            sqlite3 \(quoted(database)) 'PRAGMA integrity_check;' 'SELECT count(*), max(id) FROM t;' \
                'PRAGMA wal_checkpoint(TRUNCATE);' 'PRAGMA integrity_check;'
            """)
        #expect(check2 == "ok\n\(expectedRows)|4000\n0|0|0\nok\n", "\(check2)")
        #expect(try run("sqlite3 \(quoted(database)) 'SELECT sum(n), sum(length(v)) FROM t;'") == sum)
        fixture.unmount(point, daemon: again)
        fixture.expectFsckClean()
        #expect(!fixture.didTimeOut)
    }

    @Test(.timeLimit(.minutes(4)))
    func cpAndRsyncRoundTripsKeepContentsModesOwnersLinksAndTimes() throws {
        try requireTools(["cp", "rsync", "diff", "find", "sha256sum"])
        let fixture = try MountFixture()
        let work = fixture.scratch.directory
        let tree = work + "/tree"
        try makeTree(tree)
        // rsync compares times in whole seconds: a copy made in the second the source was
        // last changed would keep its own creation time, and the references would be wrong.
        usleep(1_100_000)
        // The references: the same copies on the host's file system.
        try run("cp -a \(quoted(tree)) \(quoted(work + "/ref-cp")) && rsync -a \(quoted(tree + "/")) \(quoted(work + "/ref-rsync"))")
        let source = try listing(tree)
        let cpReference = try listing(work + "/ref-cp")
        let rsyncReference = try listing(work + "/ref-rsync")
        expectSameListing(cpReference, source, "cp -a on the host keeps everything listed")
        let sums = try checksums(tree)

        let point = fixture.newMountPoint()
        let daemon = try fixture.mountInForeground(on: point)
        // In: cp -a and rsync -a onto the mount.
        try run("cp -a \(quoted(tree)) \(quoted(point + "/cp"))")
        try run("rsync -a \(quoted(tree + "/")) \(quoted(point + "/rsync"))")
        try run("diff -r --no-dereference \(quoted(tree)) \(quoted(point + "/cp")) && diff -r --no-dereference \(quoted(tree)) \(quoted(point + "/rsync"))")
        expectSameListing(try listing(point + "/cp"), cpReference, "cp -a onto the mount")
        expectSameListing(try listing(point + "/rsync"), rsyncReference, "rsync -a onto the mount")
        #expect(try checksums(point + "/cp") == sums && checksums(point + "/rsync") == sums)
        // rsync again finds nothing to do: sizes and times on the mount are exactly what it set.
        let second = try run("rsync -ai \(quoted(tree + "/")) \(quoted(point + "/rsync"))")
        #expect(second == "", "a second rsync changes nothing: \(second.prefix(2000))")

        // Out: back from the mount to the host.
        try run("cp -a \(quoted(point + "/cp")) \(quoted(work + "/back-cp")) && rsync -a \(quoted(point + "/rsync/")) \(quoted(work + "/back-rsync"))")
        try run("diff -r --no-dereference \(quoted(tree)) \(quoted(work + "/back-cp")) && diff -r --no-dereference \(quoted(tree)) \(quoted(work + "/back-rsync"))")
        expectSameListing(try listing(work + "/back-cp"), cpReference, "cp -a back off the mount")
        expectSameListing(try listing(work + "/back-rsync"), rsyncReference, "rsync -a back off the mount")

        // rsync with --delete over a changed tree: it removes, replaces and adds on the mount.
        // Deleting moves the mtime of the directory it deletes in, as on any file system, and
        // rsync (which compares whole seconds) leaves it: directories' times are not compared
        // with the host's copy here, but must survive the remount exactly.
        try run("""
            rm -rf \(quoted(tree + "/uapi/netfilter")) && echo new > \(quoted(tree + "/new")) && echo changed > \(quoted(tree + "/bin/run"))
            rsync -a --delete \(quoted(tree + "/")) \(quoted(point + "/rsync"))
            diff -r --no-dereference \(quoted(tree)) \(quoted(point + "/rsync"))
            """)
        try run("rsync -a \(quoted(tree + "/")) \(quoted(work + "/ref-rsync2"))")
        func withoutDirectoryTimes(_ lines: [String]) -> [String] {
            lines.map { line in
                guard line.hasPrefix("d ") else { return line }
                var fields = line.split(separator: " ", maxSplits: 6).map(String.init)
                fields[5] = "-"
                return fields.joined(separator: " ")
            }
        }
        let changed = try listing(point + "/rsync")
        expectSameListing(withoutDirectoryTimes(changed), withoutDirectoryTimes(try listing(work + "/ref-rsync2")), "rsync --delete onto the mount")

        fixture.unmount(point, daemon: daemon)
        let again = try fixture.mountInForeground(on: point)
        expectSameListing(try listing(point + "/cp"), cpReference, "the cp -a copy after remounting")
        expectSameListing(try listing(point + "/rsync"), changed, "the rsync -a copy after remounting")
        fixture.unmount(point, daemon: again)
        fixture.expectFsckClean()
        #expect(!fixture.didTimeOut)
    }
}
