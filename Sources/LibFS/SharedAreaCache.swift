// What LibFS has read of the shared area (inodes and directory entries, present or absent),
// kept for as long as the kernel's `sharedGeneration` stays the value it had when the read was
// made: the kernel changes the generation with every commit it applies, whoever's records the
// commit carries, so a cached answer is always what the kernel would answer now. Path walks
// ask the same directories and inodes again and again between two digests (creating 1,000
// files in one directory looks the directory up 1,000 times); without the cache each step is a
// kernel call that reads and checks a directory block and an inode.
//
// Where it sits: LibFS, used by `FileSystem` under its lock, below the pending state (what
// this process logged and the shared area does not hold yet always wins). Bounded: it starts
// afresh past `entriesMax` entries, and at every new generation.

import ShaleFormat

struct SharedAreaCache {
    static let entriesMax = 65_536

    private struct EntryKey: Hashable {
        var directory: UInt64
        var name: [UInt8]
    }

    private var generation: UInt64 = .max
    private var inodes: [UInt64: Inode?] = [:]
    private var entries: [EntryKey: SharedDirectoryEntry?] = [:]
    private(set) var hits = 0
    private(set) var misses = 0

    /// Forgets everything unless `current` is the generation the cache was filled under.
    mutating func validate(_ current: UInt64) {
        guard current != generation else { return }
        generation = current
        if !inodes.isEmpty { inodes.removeAll(keepingCapacity: true) }
        if !entries.isEmpty { entries.removeAll(keepingCapacity: true) }
    }

    /// The cached inode `number` (`.some(nil)`: known absent), or nil when not cached.
    mutating func inode(_ number: UInt64) -> Inode?? {
        let found = inodes[number]
        if found == nil { misses += 1 } else { hits += 1 }
        return found
    }

    /// Keeps what the kernel answered under `generation` (nothing if it moved meanwhile).
    mutating func keep(inode: Inode?, number: UInt64, readUnder generation: UInt64) {
        guard generation == self.generation else { return }
        if inodes.count + entries.count >= Self.entriesMax { inodes.removeAll(); entries.removeAll() }
        inodes[number] = .some(inode)
    }

    mutating func entry(_ directory: UInt64, _ name: [UInt8]) -> SharedDirectoryEntry?? {
        let found = entries[EntryKey(directory: directory, name: name)]
        if found == nil { misses += 1 } else { hits += 1 }
        return found
    }

    mutating func keep(entry: SharedDirectoryEntry?, directory: UInt64, name: [UInt8], readUnder generation: UInt64) {
        guard generation == self.generation else { return }
        if inodes.count + entries.count >= Self.entriesMax { inodes.removeAll(); entries.removeAll() }
        entries[EntryKey(directory: directory, name: name)] = .some(entry)
    }
}
