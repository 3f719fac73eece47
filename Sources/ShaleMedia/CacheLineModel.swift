// The x86 persistence model of an NVM region, as the crash harness needs it.
//
// A store lands in a cache line. A line becomes durable when a flush covering it is
// followed by a fence; until then the hardware may have written the line back in part
// (aligned 8-byte words are atomic), whole, or not at all. A store after a line's flush but
// before the fence leaves the line pending again. This model tracks, per 64-byte line, the
// durable contents and whether newer contents are pending, and materialises the image a
// crash would leave for any choice of fate per pending line (docs/consistency.md).

/// What a crash does to one pending cache line.
public enum LineFate: Equatable, Sendable {
    /// The newest contents reached the media.
    case keep
    /// None of the pending contents reached the media.
    case drop
    /// Word i (8 bytes) of the line has its newest contents where bit i of the mask is set,
    /// its durable contents otherwise.
    case tear(wordMask: UInt8)
}

public final class CacheLineModel {
    public static let lineBytes = 64
    public static let wordBytes = 8

    /// What the program reads: every store applied.
    public private(set) var current: [UInt8]
    /// What is guaranteed to be on the media.
    public private(set) var durable: [UInt8]
    /// Lines whose newest contents are not guaranteed durable.
    private var pending: Set<Int> = []

    public init(image: [UInt8]) {
        current = image
        durable = image
    }

    public var byteCount: Int { current.count }

    /// Indices of lines whose newest contents are not yet guaranteed durable, ascending.
    public var pendingLines: [Int] { pending.sorted() }

    /// The same lines, the least recently stored first (the lines of one store by address):
    /// a crash that keeps the newest and drops the oldest is the one that finds a commit
    /// record persisted before its payload. Deterministic, so a replay names the same state.
    public var pendingLinesByLastStore: [Int] {
        pending.sorted { (lastStore[$0]!, $0) < (lastStore[$1]!, $1) }
    }

    public func apply(_ event: PersistenceEvent) {
        switch event {
        case let .store(offset, bytes): store(bytes, at: offset)
        case let .flush(offset, count): flush(offset: offset, count: count)
        case .fence: fence()
        }
    }

    public func store(_ bytes: [UInt8], at offset: Int) {
        bytes.withUnsafeBytes { store($0, at: offset) }
    }

    public func store(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        guard bytes.count > 0 else { return }
        precondition(offset >= 0 && offset + bytes.count <= current.count)
        current.withUnsafeMutableBytes { target in
            (target.baseAddress! + offset).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        }
        storeCount += 1
        for line in lines(offset, bytes.count) {
            pending.insert(line)
            lastStore[line] = storeCount
            // A store after a flush keeps the line pending past the next fence; the flushed
            // snapshot still becomes durable then (the write-back already carries it).
            if snapshots[line] != nil { dirtyAfterFlush.insert(line) }
        }
    }

    public func flush(offset: Int, count: Int) {
        guard count > 0 else { return }
        for line in lines(offset, count) where pending.contains(line) {
            snapshots[line] = lineContents(line)
            dirtyAfterFlush.remove(line)
        }
    }

    public func fence() {
        for (line, snapshot) in snapshots {
            let start = line * Self.lineBytes
            durable.replaceSubrange(start ..< start + snapshot.count, with: snapshot)
            if !dirtyAfterFlush.contains(line) {
                pending.remove(line)
                lastStore[line] = nil
            }
        }
        snapshots.removeAll(keepingCapacity: true)
        dirtyAfterFlush.removeAll(keepingCapacity: true)
    }

    /// The image a crash right now leaves, with `fate` chosen for each pending line.
    public func crashImage(fate: (Int) -> LineFate) -> [UInt8] {
        var image = durable
        for line in pendingLines {
            let start = line * Self.lineBytes
            let end = min(start + Self.lineBytes, current.count)
            switch fate(line) {
            case .keep:
                image.replaceSubrange(start ..< end, with: current[start ..< end])
            case .drop:
                break
            case let .tear(mask):
                for word in 0 ..< Self.lineBytes / Self.wordBytes where mask & (1 << word) != 0 {
                    let from = start + word * Self.wordBytes
                    guard from < end else { break }
                    let to = min(from + Self.wordBytes, end)
                    image.replaceSubrange(from ..< to, with: current[from ..< to])
                }
            }
        }
        return image
    }

    // MARK: - Private state

    /// Lines flushed since their last fence: contents at the flush.
    private var snapshots: [Int: [UInt8]] = [:]
    /// Flushed lines stored to again before the fence.
    private var dirtyAfterFlush: Set<Int> = []
    /// Per pending line, the number of the last store to it (stores counted from 1).
    private var lastStore: [Int: Int] = [:]
    private var storeCount = 0

    private func lineContents(_ line: Int) -> [UInt8] {
        let start = line * Self.lineBytes
        return Array(current[start ..< min(start + Self.lineBytes, current.count)])
    }

    private func lines(_ offset: Int, _ count: Int) -> ClosedRange<Int> {
        (offset / Self.lineBytes) ... ((offset + count - 1) / Self.lineBytes)
    }
}
