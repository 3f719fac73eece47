// Crash rounds: a writer process works on the mount (numbered records written at their
// offsets, small files created and renamed), writing down each operation the mount answered in
// a file outside it; the daemon is killed with SIGKILL at a random moment; `shale mount` is run
// again on the same (dead) mount point, which it must detach by itself, recovers the volume,
// and every answered operation of every round so far must be there, intact. After the last
// round the volume is unmounted and `shale fsck` must find it clean.
//
// The seed is printed; SHALE_CRASH_SEED=N repeats a run.

import Foundation
import ShaleMedia
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension MountSuites {
    @Suite struct MountCrashTests {}
}

/// Records go round 8,192 slots of 512 bytes (a 4 MiB file), so rounds overwrite each other's.
private let slots = 8192

/// Record `index`: 512 bytes, its number repeated, at offset 512 × (index mod slots) of `data`.
private func record(_ index: Int) -> [UInt8] {
    Array(String(repeating: String(format: "<%010ld>", index), count: 43).utf8.prefix(511)) + [0x0A]
}

/// The writer, in Perl (part of every Debian system): from record START on, writes each
/// record at its offset, and every 32nd also creates files/f<i> with its number and renames
/// it to files/g<i>; after each call returns it appends "w <i>" or "f <i>" to ACK (outside the
/// mount) before going on. It stops at the first error (the daemon is gone).
private let writerScript = """
    use Fcntl;
    my ($dir, $ack, $start) = @ARGV;
    sysopen(my $data, "$dir/data", O_RDWR | O_CREAT, 0644) or die "open data: $!";
    sysopen(my $acks, $ack, O_WRONLY | O_APPEND | O_CREAT, 0644) or die "open ack: $!";
    for (my $i = $start; $i < $start + 1000000; $i++) {
        my $r = substr(sprintf("<%010d>", $i) x 43, 0, 511) . "\\n";
        sysseek($data, 512 * ($i % \(slots)), 0) or die "seek: $!";
        my $n = syswrite($data, $r);
        die "write $i: $!" unless defined $n && $n == 512;
        syswrite($acks, "w $i\\n") == length("w $i\\n") or die "ack: $!";
        if ($i % 32 == 0) {
            sysopen(my $f, "$dir/files/f$i", O_WRONLY | O_CREAT | O_EXCL, 0644) or die "create f$i: $!";
            syswrite($f, "file $i\\n") == length("file $i\\n") or die "write f$i: $!";
            close($f) or die "close f$i: $!";
            rename("$dir/files/f$i", "$dir/files/g$i") or die "rename f$i: $!";
            syswrite($acks, "f $i\\n") == length("f $i\\n") or die "ack: $!";
        }
    }
    """

extension MountSuites.MountCrashTests {
    @Test(.timeLimit(.minutes(3)))
    func everyAnsweredOperationSurvivesTheDaemonKilledAtRandomMoments() throws {
        let seed = ProcessInfo.processInfo.environment["SHALE_CRASH_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 0 ... .max)
        print("MountCrashTests: seed \(seed) (SHALE_CRASH_SEED=\(seed) repeats the kill times)")
        var random = SplitMix64(seed: seed)  // ShaleMedia: a printed seed repeats a run
        let fixture = try MountFixture(watchdogSeconds: 170)
        let point = fixture.newMountPoint()
        let ack = fixture.scratch.directory + "/acks"
        let script = fixture.scratch.directory + "/writer.pl"
        try writerScript.write(toFile: script, atomically: true, encoding: .utf8)
        var daemon = try fixture.mountInForeground(on: point)
        try check(Int(mkdir(point + "/files", 0o755)), "mkdir files")

        let started = Date()
        var rounds = 0
        var next = 0  // the first record the next writer writes
        var acknowledgedRecords = Set<Int>()
        var acknowledgedFiles = Set<Int>()
        while rounds < 25, rounds < 5 || Date().timeIntervalSince(started) < 45 {
            rounds += 1
            let writer = Process()
            writer.executableURL = URL(fileURLWithPath: "/usr/bin/perl")
            writer.arguments = [script, point, ack, "\(next)"]
            let errors = Pipe()
            writer.standardError = errors
            try writer.run()
            // The kill comes 0 to 1.5 s after the writer's first answered call of this round.
            let before = acknowledgedRecords.count
            let ackBytes = (try? status(ack).st_size) ?? 0
            let deadline = Date().addingTimeInterval(20)
            while ((try? status(ack).st_size) ?? 0) == ackBytes, writer.isRunning, Date() < deadline { usleep(2_000) }
            let delay = UInt32.random(in: 0 ... 1_500_000, using: &random)
            usleep(delay)
            kill(daemon.processIdentifier, SIGKILL)
            #expect(fixture.waitForExit(daemon) != nil, "round \(rounds): the daemon did not die")
            // The writer's next call fails (the connection is gone) and it stops.
            let writerDeadline = Date().addingTimeInterval(15)
            while writer.isRunning, Date() < writerDeadline { usleep(10_000) }
            if writer.isRunning { kill(writer.processIdentifier, SIGKILL) }
            writer.waitUntilExit()
            let writerErrors = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(writer.terminationReason == .exit && writer.terminationStatus != 0,
                    "round \(rounds) (seed \(seed)): the writer should have stopped at an error: \(writerErrors)")

            // Mounted again on the dead mount point: detached, recovered.
            daemon = try fixture.mountInForeground(on: point)
            let log = fixture.log(of: daemon)
            #expect(log.contains("detached a dead mount"), "round \(rounds): \(log)")
            let acks = try readAcks(ack)
            #expect(acks.records.count > before, "round \(rounds) (seed \(seed)): the writer answered nothing")
            acknowledgedRecords = acks.records
            acknowledgedFiles = acks.files
            let damaged = try verify(point, records: acknowledgedRecords, files: acknowledgedFiles)
            #expect(damaged.isEmpty, "round \(rounds) (seed \(seed), kill \(delay) µs after the first answer): \(damaged.prefix(10))")
            next = (acknowledgedRecords.max() ?? -1) + 1
            if !damaged.isEmpty { break }
        }
        print("MountCrashTests: \(rounds) rounds, \(acknowledgedRecords.count) records and \(acknowledgedFiles.count) files answered, \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        #expect(rounds >= 5 && acknowledgedRecords.count >= rounds)
        #expect(acknowledgedRecords == Set(0 ..< acknowledgedRecords.count), "records are answered in order, none skipped")

        fixture.unmount(point, daemon: daemon)
        fixture.expectFsckClean()
        #expect(!fixture.didTimeOut, "seed \(seed)")
    }
}

/// The acknowledgement file: answered records and answered (created and renamed) files.
private func readAcks(_ path: String) throws -> (records: Set<Int>, files: Set<Int>) {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return ([], []) }
    var records = Set<Int>(), files = Set<Int>()
    for line in text.split(separator: "\n") {
        let parts = line.split(separator: " ")
        // A torn last line (the writer killed mid-append) is no acknowledgement.
        guard parts.count == 2, let index = Int(parts[1]), line.utf8.count == 2 + parts[1].utf8.count else { continue }
        if parts[0] == "w" { records.insert(index) } else if parts[0] == "f" { files.insert(index) }
    }
    return (records, files)
}

/// What is missing or wrong on the mount: each slot must hold the last answered record
/// written to it (or the one in flight at the kill, if that went to the same slot), each
/// answered file must be g<i> holding its number (its f<i> name gone).
private func verify(_ point: String, records: Set<Int>, files: Set<Int>) throws -> [String] {
    var problems: [String] = []
    guard let last = records.max() else { return [] }
    let fd = open(point + "/data", O_RDONLY)
    guard fd >= 0 else { return ["data: \(errnoName(errno))"] }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 512)
    for slot in 0 ..< min(slots, last + 1) {
        let latest = last - (last - slot) % slots  // the last answered index in this slot
        let count = pread(fd, &buffer, 512, off_t(slot) * 512)
        let inFlight = (last + 1) % slots == slot && buffer == record(last + 1)
        if count != 512 || (buffer != record(latest) && !inFlight) {
            problems.append("slot \(slot) (record \(latest)): read \(count) bytes: \(String(decoding: buffer.prefix(max(0, count)).prefix(24), as: UTF8.self))")
        }
    }
    for index in files.sorted() {
        let contents = (try? readFile(point + "/files/g\(index)")).map { String(decoding: $0, as: UTF8.self) }
        if contents != "file \(index)\n" { problems.append("files/g\(index): \(contents ?? errnoName(errno))") }
        if (try? status(point + "/files/f\(index)")) != nil { problems.append("files/f\(index) is still there after its rename") }
    }
    return problems
}
