// Exhaustive bounded workloads in the style of ACE (Mohan et al., OSDI '18): every sequence
// of one (`--seq 1`) or two (`--seq 2`) operations from a fixed set, over a small starting
// tree, each recorded and crashed at every fence.

public enum BoundedWorkloads {
    /// The starting tree of every bounded workload: two directories, a file of two and a
    /// half blocks in one, a small file at the root.
    public static let setup: [WorkloadOperation] = [
        .mkdir("/A"), .mkdir("/B"), .creat("/A/foo"), .write("/A/foo", offset: 0, length: 10_240, seed: 1),
        .creat("/bar"), .write("/bar", offset: 0, length: 700, seed: 2),
    ]

    /// One of each kind of call the harness covers, on the starting tree's names.
    public static let operations: [WorkloadOperation] = [
        .creat("/A/new"),
        .mkdir("/A/dir"),
        .write("/A/foo", offset: 10_240, length: 4096, seed: 11),       // append
        .write("/A/foo", offset: 4096, length: 4096, seed: 12),         // aligned overwrite
        .write("/A/foo", offset: 100, length: 3000, seed: 13),          // unaligned overwrite
        .write("/bar", offset: 20_000, length: 100, seed: 14),          // beyond EOF (a hole)
        .write("/bar", offset: 0, length: 60, seed: 15),                // small, inline in the record
        .truncate("/A/foo", size: 1000),
        .truncate("/bar", size: 9000),
        .fallocate("/A/foo", offset: 0, length: 4096, mode: "punch-hole"),
        .fallocate("/bar", offset: 0, length: 16384, mode: "keep-size"),
        .link("/A/foo", "/B/hard"),
        .unlink("/A/foo"),
        .unlink("/bar"),
        .rename("/A/foo", "/B/foo", flags: ""),
        .rename("/A/foo", "/bar", flags: ""),                           // over an existing file
        .rename("/A", "/C", flags: ""),                                 // a directory
        .rename("/A/foo", "/bar", flags: "exchange"),
        .symlink(target: "/A/foo", "/B/sym"),
        .setxattr("/A/foo", name: "user.k", value: "v1"),
        .chmod("/A/foo", mode: 0o600),
        .rmdir("/B"),
    ]

    /// Every sequence of `length` operations (1 or 2; 3 is allowed but large).
    public static func sequences(of length: Int) -> [Workload] {
        precondition((1 ... 3).contains(length))
        var sequences: [[Int]] = [[]]
        for _ in 0 ..< length {
            sequences = sequences.flatMap { prefix in operations.indices.map { prefix + [$0] } }
        }
        return sequences.map { indices in
            Workload(name: "seq\(length)-" + indices.map { String($0 + 1) }.joined(separator: "-"),
                     setup: setup, operations: indices.map { operations[$0] })
        }
    }
}
