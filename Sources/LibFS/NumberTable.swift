// A hash table keyed by UInt64 numbers (inode numbers, leaf numbers) for LibFS's pending
// state, on the write path of every call. Swift's Dictionary hashes an integer key with
// SipHash-1-3 (~15 ns here, a few per write); keys of this table are chosen by the process
// itself (never by another user), so a multiplicative hash does, at ~1 ns, and spreads the
// sequential numbers inodes get as well as the random ones of leaves.
//
// Open addressing with linear probing and backward-shift deletion (no tombstones), at most
// 3/4 full. `index(forKey:)` gives a position that stays valid until the next insertion or
// removal, for reading and editing a value in place (`subscript(position:)`).

struct NumberTable<Value> {
    private var keys: [UInt64] = []
    /// nil: an empty bucket.
    private var values: [Value?] = []
    private(set) var count = 0
    /// Buckets - 1 (a power of two less one), or -1 with no buckets.
    private var mask = -1
    /// 64 - log2(buckets): the hash is the product's top bits.
    private var shift: UInt64 = 64

    init() {}

    var isEmpty: Bool { count == 0 }

    @inline(__always)
    private func home(_ key: UInt64) -> Int {
        // Fibonacci hashing: the top bits of the product by 2^64 / golden ratio.
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
    }

    /// The bucket holding `key`, if any.
    @inline(__always)
    func index(forKey key: UInt64) -> Int? {
        guard count > 0 else { return nil }
        var bucket = home(key)
        while values[bucket] != nil {
            if keys[bucket] == key { return bucket }
            bucket = (bucket + 1) & mask
        }
        return nil
    }

    /// The value at a position `index(forKey:)` returned.
    subscript(position position: Int) -> Value {
        get { values[position]! }
        // In place (an inout access to the bucket's payload: no copy of the value's arrays).
        _modify { yield &values[position]! }
    }

    subscript(key: UInt64) -> Value? {
        get { index(forKey: key).map { values[$0]! } }
        set {
            if let newValue {
                if let bucket = index(forKey: key) { values[bucket] = newValue } else { insertNew(key, newValue) }
            } else if let bucket = index(forKey: key) {
                remove(at: bucket)
            }
        }
    }

    /// The value for `key`, inserting `defaultValue()` first when there is none; edited in place.
    subscript(key: UInt64, default defaultValue: @autoclosure () -> Value) -> Value {
        get { self[key] ?? defaultValue() }
        _modify {
            let bucket = index(forKey: key) ?? insertNew(key, defaultValue())
            yield &values[bucket]!
        }
    }

    /// Every key and value, in no order.
    func forEach(_ body: (UInt64, Value) -> Void) {
        for bucket in values.indices { if let value = values[bucket] { body(keys[bucket], value) } }
    }

    mutating func removeAll(keepingCapacity: Bool = false) {
        guard keepingCapacity else { self = NumberTable(); return }
        for bucket in values.indices { values[bucket] = nil }
        count = 0
    }

    @discardableResult
    private mutating func insertNew(_ key: UInt64, _ value: Value) -> Int {
        if (count + 1) * 4 > (mask + 1) * 3 { grow() }
        var bucket = home(key)
        while values[bucket] != nil { bucket = (bucket + 1) & mask }
        keys[bucket] = key
        values[bucket] = value
        count += 1
        return bucket
    }

    private mutating func grow() {
        let buckets = max(16, (mask + 1) * 2)
        let oldKeys = keys, oldValues = values
        keys = Array(repeating: 0, count: buckets)
        values = Array(repeating: nil, count: buckets)
        mask = buckets - 1
        shift = UInt64(64 - buckets.trailingZeroBitCount)
        count = 0
        for bucket in oldValues.indices { if let value = oldValues[bucket] { insertNew(oldKeys[bucket], value) } }
    }

    /// Backward-shift deletion: later members of the probe run move up into the hole, so a
    /// lookup's scan never stops early at it.
    private mutating func remove(at removed: Int) {
        values[removed] = nil
        count -= 1
        var hole = removed
        var bucket = (removed + 1) & mask
        while values[bucket] != nil {
            let wanted = home(keys[bucket])
            // Moves when its home is not cyclically within (hole, bucket].
            if (bucket - wanted) & mask >= (bucket - hole) & mask {
                keys[hole] = keys[bucket]
                values[hole] = values[bucket].take()
                hole = bucket
            }
            bucket = (bucket + 1) & mask
        }
    }
}
