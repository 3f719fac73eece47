// Random long workloads (`shale crashtest --random N`): sequences of calls drawn with a seed
// over a small, changing tree, with digests forced at random points so that crashes land
// inside digests of every kind of record, not only in the log. What the bounded workloads
// cannot reach: long histories, files written many times, logs that fill and wrap.
//
// The generator keeps a rough model of the tree (which names are files, which directories)
// so that most calls succeed; a call that fails anyway (an errno) is as good a result as any,
// since the oracle run gets the same one. Directories are never renamed (the model would
// have to move their children; the bounded workloads rename one).

import ShaleMedia

public enum RandomWorkloads {
    /// Calls per workload unless told otherwise.
    public static let defaultLength = 12
    /// One call in this many is a forced digest.
    static let digestOneIn: UInt64 = 6

    /// `count` workloads of `length` calls each, named "random-SEED-I"; the same seed gives
    /// the same workloads.
    public static func workloads(count: Int, length: Int = defaultLength, seed: UInt64) -> [Workload] {
        (0 ..< count).map { index in
            var generator = SplitMix64(seed: seed &* 0x2545_F491_4F6C_DD1D &+ UInt64(index))
            return workload(name: "random-\(seed)-\(index + 1)", length: length, generator: &generator)
        }
    }

    static func workload(name: String, length: Int, generator: inout SplitMix64) -> Workload {
        var model = Model()
        let setup: [WorkloadOperation] = [.mkdir("/A"), .mkdir("/B"), .creat("/A/f1"),
                                          .write("/A/f1", offset: 0, length: 9000, seed: 1), .creat("/B/f2")]
        model.directories = ["/", "/A", "/B"]
        model.files = ["/A/f1", "/B/f2"]
        var operations: [WorkloadOperation] = []
        var nextName = 1
        func pick<T>(_ items: [T]) -> T { items[Int(generator.next() % UInt64(items.count))] }
        func below(_ bound: UInt64) -> UInt64 { generator.next() % bound }
        func freshName(in directory: String) -> String {
            defer { nextName += 1 }
            return (directory == "/" ? "" : directory) + "/n\(nextName)"
        }
        while operations.count < length {
            if below(digestOneIn) == 0, operations.last != .digest {
                operations.append(.digest)
                continue
            }
            let file = model.files.isEmpty ? nil : pick(model.files)
            switch below(16) {
            case 0:
                let path = freshName(in: pick(model.directories))
                operations.append(.creat(path))
                model.files.append(path)
            case 1:
                let path = freshName(in: pick(model.directories))
                operations.append(.mkdir(path))
                model.directories.append(path)
            case 2, 3, 4, 5:
                guard let file else { continue }
                // Mostly small, sometimes over several blocks, sometimes longer than one call.
                let length = [Int(1 + below(200)), Int(1 + below(9000)), Int(4096 * (1 + below(4))), Int(16_384 + below(30_000))][Int(below(4))]
                let offset = below(4) == 0 ? below(64) * 4096 : below(70_000)
                operations.append(.write(file, offset: offset, length: length, seed: 100 + UInt64(operations.count)))
            case 6:
                guard let file else { continue }
                operations.append(.truncate(file, size: below(4) == 0 ? 0 : below(80_000)))
            case 7:
                guard let file else { continue }
                operations.append(.fallocate(file, offset: below(16) * 4096, length: (1 + below(4)) * 4096,
                                             mode: pick(["", "keep-size", "punch-hole", "zero-range"])))
            case 8:
                guard let file else { continue }
                let path = freshName(in: pick(model.directories))
                operations.append(.link(file, path))
                model.files.append(path)
            case 9:
                guard let file else { continue }
                operations.append(.unlink(file))
                model.files.removeAll { $0 == file }
            case 10:
                guard let file else { continue }
                // To a new name, or over another file.
                let others = model.files.filter { $0 != file }
                let target = below(3) == 0 && !others.isEmpty ? pick(others) : freshName(in: pick(model.directories))
                operations.append(.rename(file, target, flags: ""))
                model.files.removeAll { $0 == file || $0 == target }
                model.files.append(target)
            case 11:
                let path = freshName(in: pick(model.directories))
                operations.append(.symlink(target: file ?? "/nowhere", path))
                model.others.append(path)
            case 12:
                guard let file else { continue }
                operations.append(.setxattr(file, name: "user.k\(below(3))", value: "v\(operations.count)"))
            case 13:
                guard let file else { continue }
                operations.append(.removexattr(file, name: "user.k\(below(3))"))
            case 14:
                guard let file else { continue }
                operations.append(.chmod(file, mode: pick([0o600, 0o644, 0o755, 0o400])))
            default:
                // An empty directory, if the model knows one (rmdir of a full one is ENOTEMPTY).
                let empty = model.directories.filter { directory in
                    directory != "/" && !(model.files + model.directories + model.others).contains { $0.hasPrefix(directory + "/") }
                }
                guard !empty.isEmpty else { continue }
                let directory = pick(empty)
                operations.append(.rmdir(directory))
                model.directories.removeAll { $0 == directory }
            }
        }
        return Workload(name: name, setup: setup, operations: operations)
    }

    struct Model {
        var directories: [String] = []
        var files: [String] = []
        /// Symlinks: names that exist but are not written.
        var others: [String] = []
    }
}
