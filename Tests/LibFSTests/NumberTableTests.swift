import Testing
@testable import LibFS
@testable import ShaleMedia

/// The pending state's hash table against Swift's Dictionary: the same inserts, updates,
/// in-place edits and removals (which shift probe runs back) give the same contents.
struct NumberTableTests {
    @Test(arguments: [1, 2, 3])
    func matchesDictionary(seed: UInt64) {
        var generator = SplitMix64(seed: seed)
        var table = NumberTable<[Int]>()
        var reference: [UInt64: [Int]] = [:]
        // Keys from a small range collide and cluster; sequential ones (inode numbers) and
        // huge ones (leaf numbers of sparse files) both occur.
        func key() -> UInt64 {
            switch generator.next() % 3 {
            case 0: generator.next() % 64
            case 1: 1000 + generator.next() % 4096
            default: UInt64.max - generator.next() % 128
            }
        }
        for step in 0 ..< 20_000 {
            let k = key()
            switch generator.next() % 10 {
            case 0 ..< 4:
                table[k] = [step]
                reference[k] = [step]
            case 4 ..< 6:
                table[k, default: []].append(step)
                reference[k, default: []].append(step)
            case 6:
                if let position = table.index(forKey: k) {
                    table[position: position].append(-step)
                    reference[k]!.append(-step)
                } else {
                    #expect(reference[k] == nil, "step \(step): \(k) missing")
                }
            default:
                table[k] = nil
                reference[k] = nil
            }
            #expect(table[k] == reference[k], "step \(step), key \(k)")
            #expect(table.count == reference.count)
            if step % 1000 == 999 {
                var seen: [UInt64: [Int]] = [:]
                table.forEach { seen[$0] = $1 }
                #expect(seen == reference, "step \(step)")
                for (k, value) in reference { #expect(table[k] == value) }
            }
        }
        table.removeAll(keepingCapacity: true)
        #expect(table.isEmpty && table[0] == nil && table.index(forKey: UInt64.max) == nil)
        table[7] = [7]
        #expect(table[7] == [7] && table.count == 1)
    }

    /// Removing every key in turn, with the table full to its load limit, leaves it empty and
    /// every remaining key findable after each removal (the backward shift keeps runs whole).
    @Test func removalsKeepProbeRunsWhole() {
        var table = NumberTable<UInt64>()
        let keys = (0 ..< 768 as Range<UInt64>).map { $0 &* 0x1000 }
        for key in keys { table[key] = key }
        for (done, key) in keys.enumerated() {
            table[key] = nil
            for later in keys[(done + 1)...] { #expect(table[later] == later, "after removing \(key)") }
            if table[key] != nil { Issue.record("\(key) still there"); return }
        }
        #expect(table.isEmpty)
    }
}
