// Sizes on the command line: "4096", "64K", "512M", "1.5G", "2GiB", "1T". Units are binary
// (K = 1024). Anything else is a clear error, never a silent zero.

import ArgumentParser

struct ByteSize: ExpressibleByArgument, Equatable, CustomStringConvertible {
    let bytes: UInt64

    init(bytes: UInt64) { self.bytes = bytes }

    init?(argument: String) {
        guard let parsed = ByteSize.parse(argument) else { return nil }
        bytes = parsed
    }

    static func parse(_ text: String) -> UInt64? {
        let trimmed = text.trimmingCharacters(in: " ")
        var number = Substring(trimmed)
        var unit = ""
        while let last = number.last, last.isLetter {
            unit = String(last) + unit
            number = number.dropLast()
        }
        let multipliers: [String: UInt64] = ["": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10,
                                             "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
                                             "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30,
                                             "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40]
        guard let multiplier = multipliers[unit.uppercased()], !number.isEmpty,
              number.allSatisfy({ $0.isNumber || $0 == "." }), number.filter({ $0 == "." }).count <= 1 else { return nil }
        if let whole = UInt64(number) {
            let (product, overflow) = whole.multipliedReportingOverflow(by: multiplier)
            return overflow ? nil : product
        }
        guard let fractional = Double(number), fractional.isFinite, fractional >= 0 else { return nil }
        let product = fractional * Double(multiplier)
        // A fraction must come to whole bytes ("1.5K" is 1536; "0.1K" and "1.5" are refused).
        guard product < 1.8e19, product == product.rounded() else { return nil }
        return UInt64(product)
    }

    var description: String { ByteSize.format(bytes) }

    /// "768 MiB", "1.5 GiB", "4 KiB", "512 B".
    static func format(_ bytes: UInt64) -> String {
        let units: [(String, UInt64)] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        for (name, size) in units where bytes >= size {
            // Divide first: bytes * 10 would overflow for sizes near 2^64.
            let tenths = bytes / size * 10 + ((bytes % size) * 10 + size / 2) / size
            return tenths % 10 == 0 ? "\(tenths / 10) \(name)" : "\(tenths / 10).\(tenths % 10) \(name)"
        }
        return "\(bytes) B"
    }

    static var defaultValueDescription: String { "size" }
}

extension String {
    func trimmingCharacters(in set: Character) -> String {
        String(drop { $0 == set }.reversed().drop { $0 == set }.reversed())
    }
}
