// A small JSON writer for `--json` output (the CLI does without Foundation). Keys keep the
// order given; strings are escaped as RFC 8259 requires.

enum JSON {
    case null
    case bool(Bool)
    case number(UInt64)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    static func object(_ fields: [(String, JSON)]) -> String { JSON.object(fields).text }

    var text: String {
        switch self {
        case .null: "null"
        case let .bool(value): value ? "true" : "false"
        case let .number(value): "\(value)"
        case let .string(value): Self.quoted(value)
        case let .array(items): "[" + items.map(\.text).joined(separator: ",") + "]"
        case let .object(fields): "{" + fields.map { Self.quoted($0.0) + ":" + $0.1.text }.joined(separator: ",") + "}"
        }
    }

    static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        return result + "\""
    }
}
