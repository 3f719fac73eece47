// Writing to the terminal without Foundation: standard output and standard error by file
// descriptor (Glibc's stdout/stderr globals are not concurrency-safe under Swift 6).

import ArgumentParser
import Glibc
import ShaleMedia

enum Output {
    static func line(_ text: String = "") { write(1, text + "\n") }

    static func error(_ text: String) { write(2, text + "\n") }

    /// Standard error without a line break (progress redrawn in place).
    static func errorRaw(_ text: String) { write(2, text) }

    private static func write(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let count = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if count <= 0 { return }
            offset += count
        }
    }

    /// Prints `shale COMMAND: message` on standard error and exits with status 1.
    static func fail(_ command: String, _ message: String) -> ExitCode {
        error("shale \(command): \(message)")
        return ExitCode(1)
    }

    /// "2026-11-25 13:56:01 UTC".
    static func utc(_ seconds: Int64) -> String { HostFiles.describeTime(seconds) }

    /// Left-aligned columns.
    static func table(_ rows: [[String]], indent: String = "  ") -> [String] {
        guard let width = rows.map(\.count).max() else { return [] }
        let widths = (0 ..< width).map { column in rows.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0 }
        return rows.map { row in
            indent + row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[column] - cell.count + 2)
            }.joined()
        }
    }
}
