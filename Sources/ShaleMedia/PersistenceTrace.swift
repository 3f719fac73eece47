// What a recording or simulated NVM region remembers: every store, flush and fence in
// program order, so that the crash harness can rebuild the state at any event and ask what
// a crash there could leave (CacheLineModel).

/// One persistence event of an NVM region.
public enum PersistenceEvent: Equatable, Sendable {
    /// Bytes written at an offset (cached: not durable yet).
    case store(offset: Int, bytes: [UInt8])
    /// Write-back of the cache lines covering a range was started.
    case flush(offset: Int, count: Int)
    /// Every flush issued before this point is durable.
    case fence
}

/// The events of one region, in program order, with marks placed by the layers above
/// (for instance "call 17 returned"), each attached to the event count at that moment.
public struct PersistenceTrace: Sendable {
    public private(set) var events: [PersistenceEvent] = []
    /// (event count when marked, label).
    public private(set) var marks: [(eventCount: Int, label: String)] = []

    public init() {}

    public mutating func append(_ event: PersistenceEvent) { events.append(event) }

    public mutating func mark(_ label: String) { marks.append((events.count, label)) }

    public var fenceCount: Int { events.reduce(0) { $1 == .fence ? $0 + 1 : $0 } }

    /// The event counts right after each fence: the crash points at which every fenced
    /// write is guaranteed and nothing later is.
    public var fenceBoundaries: [Int] {
        events.indices.compactMap { events[$0] == .fence ? $0 + 1 : nil }
    }

    /// The cache state after the first `eventCount` events, starting from `initialImage`.
    public func replay(initialImage: [UInt8], eventCount: Int) -> CacheLineModel {
        precondition(eventCount >= 0 && eventCount <= events.count)
        let model = CacheLineModel(image: initialImage)
        for event in events[0 ..< eventCount] { model.apply(event) }
        return model
    }
}
