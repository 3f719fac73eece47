// SimulatedBlockDevice: an in-memory SSD/HDD tier for unit tests and the crash harness.
//
// Where it sits: layer 1 (media), a stand-in for URingBlockDevice with the same contract
// (BlockDevice.swift) and the fault model of docs/consistency.md ("Fault model: block tiers").
// Offers: what reads return (the current contents); a trace of every persistence event
// (`.write`, `.flush`) numbered by its index in `trace`; the image a crash after any prefix of
// that trace would leave, with the fate of every sector of every unflushed write (kept,
// dropped or garbled) chosen by the caller; and injected errors (the next N requests fail
// with a chosen errno).
// Needs from below: nothing but memory. The trace keeps a copy of every written byte, so a
// simulated device costs its size twice plus everything ever written to it.
// Durability point: `flush()`. Every write that completed before a flush survives any later
// crash intact; a write not yet followed by a flush may survive a crash in any per-sector mix
// of old, new and garbled contents.

import Synchronization
import SystemPackage

/// One persistence event of a simulated device. Reads change nothing and are not recorded.
public enum BlockEvent: Sendable, Equatable {
    /// A write that completed: the bytes it put at `offset`.
    case write(offset: UInt64, bytes: [UInt8])
    /// A flush that returned: every earlier write is durable.
    case flush
}

/// What a crash does to one sector of a write that was not yet flushed.
public enum SectorFate: Sendable, Equatable {
    /// The new contents reached the medium.
    case keep
    /// The sector still holds what it held before the write.
    case drop
    /// The sector holds bytes that are neither old nor new (a torn or half-programmed
    /// sector), pseudo-random but deterministic for the crash's seed.
    case garble
}

/// One sector of a write that was not yet flushed at the crash point, given to the fate
/// function so that a harness can choose per sector, per write or at random.
public struct UnflushedSector: Sendable, Equatable, Hashable {
    /// Index in `trace` of the write event this sector belongs to.
    public var eventIndex: Int
    /// Position of that write among the writes unflushed at the crash point (0 = oldest).
    public var writeOrdinal: Int
    /// Device offset of the whole write.
    public var writeOffset: UInt64
    /// Device offset of this sector.
    public var offset: UInt64
    /// This sector's number within the write, from 0, and the write's number of sectors.
    public var sectorInWrite: Int
    public var sectorsInWrite: Int
}

/// Which requests an injected fault applies to.
public struct BlockFaultKinds: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let reads = BlockFaultKinds(rawValue: 1 << 0)
    public static let writes = BlockFaultKinds(rawValue: 1 << 1)
    public static let flushes = BlockFaultKinds(rawValue: 1 << 2)
    public static let all: BlockFaultKinds = [.reads, .writes, .flushes]
}

public final class SimulatedBlockDevice: BlockDevice, Sendable {
    public let byteCount: UInt64
    public let alignmentBytes: Int
    /// The unit of crash damage: a sector of an unflushed write is kept, dropped or garbled
    /// as a whole. 512 bytes by default, the smallest atomic write unit of common drives.
    public let sectorBytes: Int
    public var ioMode: BlockIOMode { .simulated }
    /// Used in error messages, like a path.
    public let name: String

    private let initialImage: [UInt8]
    private let state: Mutex<State>

    private struct State: Sendable {
        /// What reads return: every completed write applied.
        var current: [UInt8]
        /// What survives any crash: every flushed write applied.
        var durable: [UInt8]
        var trace: [BlockEvent] = []
        /// Trace indices of the writes completed since the last flush, oldest first.
        var unflushedWrites: [Int] = []
        var fault: Fault?
    }

    private struct Fault: Sendable {
        var remaining: Int
        var errno: Errno
        var kinds: BlockFaultKinds
    }

    /// A device of `byteCount` bytes holding `initialImage` (zeros if nil), e.g. a crash
    /// image from another simulated device, to run recovery on.
    public init(byteCount: UInt64, alignmentBytes: Int = 4096, sectorBytes: Int = 512,
                initialImage: [UInt8]? = nil, name: String = "simulated block device") {
        precondition(sectorBytes > 0 && alignmentBytes > 0 && alignmentBytes % sectorBytes == 0,
                     "alignmentBytes (\(alignmentBytes)) must be a positive multiple of sectorBytes (\(sectorBytes))")
        precondition(byteCount % UInt64(alignmentBytes) == 0 && byteCount <= UInt64(Int.max),
                     "byteCount (\(byteCount)) must be a multiple of alignmentBytes (\(alignmentBytes))")
        let image = initialImage ?? [UInt8](repeating: 0, count: Int(byteCount))
        precondition(image.count == Int(byteCount), "initialImage holds \(image.count) bytes, not \(byteCount)")
        self.byteCount = byteCount
        self.alignmentBytes = alignmentBytes
        self.sectorBytes = sectorBytes
        self.name = name
        self.initialImage = image
        self.state = Mutex(State(current: image, durable: image))
    }

    // MARK: BlockDevice

    /// Carries out the requests in order, each as one event. An injected fault fails the
    /// request it hits, leaving it undone; the requests before it in the batch are done.
    public func perform(_ requests: [BlockRequest]) throws(MediaError) {
        for request in requests {
            try validate(request, deviceName: name)
        }
        try state.withLock { (state: inout State) throws(MediaError) in
            for request in requests {
                let kind: BlockFaultKinds = request.operation == .read ? .reads : .writes
                if let errno = Self.takeFault(kind, &state) {
                    throw MediaError(errno, describe(request), detail: "injected fault")
                }
                let start = Int(request.offset)
                let count = request.buffer.count
                switch request.operation {
                case .read:
                    state.current.withUnsafeBytes { current in
                        request.buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: current[start ..< start + count]))
                    }
                case .write:
                    let bytes = [UInt8](UnsafeRawBufferPointer(request.buffer))
                    state.current.replaceSubrange(start ..< start + count, with: bytes)
                    state.unflushedWrites.append(state.trace.count)
                    state.trace.append(.write(offset: request.offset, bytes: bytes))
                }
            }
        }
    }

    public func flush() throws(MediaError) {
        try state.withLock { (state: inout State) throws(MediaError) in
            if let errno = Self.takeFault(.flushes, &state) {
                throw MediaError(errno, "flushing \(name)", detail: "injected fault")
            }
            for eventIndex in state.unflushedWrites {
                guard case let .write(offset, bytes) = state.trace[eventIndex] else { continue }
                state.durable.replaceSubrange(Int(offset) ..< Int(offset) + bytes.count, with: bytes)
            }
            state.unflushedWrites.removeAll()
            state.trace.append(.flush)
        }
    }

    // MARK: Fault injection

    /// Makes the next `count` requests of the given kinds fail with `errno` (e.g. `.ioError`,
    /// `.noSpace`), replacing any fault still armed. A failed request changes nothing: a
    /// failed write writes nothing, a failed flush makes nothing durable and is not traced.
    /// Requests rejected by `validate` do not count.
    public func failNext(_ count: Int = 1, with errno: Errno, kinds: BlockFaultKinds = .all) {
        precondition(count >= 0)
        state.withLock { $0.fault = count > 0 ? Fault(remaining: count, errno: errno, kinds: kinds) : nil }
    }

    /// Disarms any injected fault.
    public func clearFaults() {
        state.withLock { $0.fault = nil }
    }

    /// Injected failures still to come.
    public var pendingFaultCount: Int {
        state.withLock { $0.fault?.remaining ?? 0 }
    }

    private static func takeFault(_ kind: BlockFaultKinds, _ state: inout State) -> Errno? {
        guard var fault = state.fault, !fault.kinds.isDisjoint(with: kind) else { return nil }
        fault.remaining -= 1
        state.fault = fault.remaining > 0 ? fault : nil
        return fault.errno
    }

    // MARK: Inspection

    /// Every persistence event so far; an event's index in this array is its event index.
    public var trace: [BlockEvent] {
        state.withLock { $0.trace }
    }

    /// The number of events so far: `crashImage(afterEvents: eventCount, …)` is a crash now.
    public var eventCount: Int {
        state.withLock { $0.trace.count }
    }

    /// What reads return now.
    public var currentImage: [UInt8] {
        state.withLock { $0.current }
    }

    /// What every crash now would keep at least: the initial image with every flushed write.
    public var durableImage: [UInt8] {
        state.withLock { $0.durable }
    }

    /// Writes completed since the last flush.
    public var unflushedWriteCount: Int {
        state.withLock { $0.unflushedWrites.count }
    }

    // MARK: Crash images

    /// The sectors whose fate a crash after the first `afterEvents` events would decide, in
    /// the order the fate function sees them.
    public func unflushedSectors(afterEvents eventCount: Int) -> [UnflushedSector] {
        let (_, events, pending) = replay(afterEvents: eventCount)
        var sectors: [UnflushedSector] = []
        forEachSector(of: pending, in: events) { sectors.append($0) }
        return sectors
    }

    /// What the medium holds after a crash that follows the first `afterEvents` events of
    /// `trace`: the initial image, every write flushed within that prefix, and each sector
    /// of each write not flushed within it kept, dropped or garbled as `fate` says (applied
    /// oldest write first, so a later kept sector overwrites an earlier one). Garbled bytes
    /// depend only on `seed`, the write's event index and the sector, and always differ from
    /// both the sector's previous and its new contents.
    public func crashImage(afterEvents eventCount: Int, seed: UInt64 = 0,
                           fate: (UnflushedSector) -> SectorFate) -> [UInt8] {
        var (image, events, pending) = replay(afterEvents: eventCount)
        forEachSector(of: pending, in: events) { sector in
            guard case let .write(_, bytes) = events[sector.eventIndex] else { return }
            let start = Int(sector.offset)
            let range = start ..< start + sectorBytes
            let newBytes = bytes[sector.sectorInWrite * sectorBytes ..< (sector.sectorInWrite + 1) * sectorBytes]
            switch fate(sector) {
            case .keep:
                image.replaceSubrange(range, with: newBytes)
            case .drop:
                break
            case .garble:
                let garbage = garbledSector(seed: seed, sector: sector, old: image[range], new: newBytes)
                image.replaceSubrange(range, with: garbage)
            }
        }
        return image
    }

    /// `crashImage` with one fate for every unflushed sector.
    public func crashImage(afterEvents eventCount: Int, fate: SectorFate, seed: UInt64 = 0) -> [UInt8] {
        crashImage(afterEvents: eventCount, seed: seed) { _ in fate }
    }

    /// A crash now.
    public func crashImageNow(seed: UInt64 = 0, fate: (UnflushedSector) -> SectorFate) -> [UInt8] {
        crashImage(afterEvents: eventCount, seed: seed, fate: fate)
    }

    /// A crash now, with one fate for every unflushed sector.
    public func crashImageNow(fate: SectorFate, seed: UInt64 = 0) -> [UInt8] {
        crashImage(afterEvents: eventCount, seed: seed) { _ in fate }
    }

    /// The durable image after the first `eventCount` events, the events themselves, and the
    /// trace indices of the writes still unflushed at that point.
    private func replay(afterEvents eventCount: Int) -> (image: [UInt8], events: [BlockEvent], pending: [Int]) {
        let events = state.withLock { state in
            precondition((0 ... state.trace.count).contains(eventCount),
                         "crash point \(eventCount) outside the trace of \(state.trace.count) events")
            return Array(state.trace[..<eventCount])  // the byte arrays are shared, not copied
        }
        var image = initialImage
        var pending: [Int] = []
        for (index, event) in events.enumerated() {
            switch event {
            case .write:
                pending.append(index)
            case .flush:
                for writeIndex in pending {
                    guard case let .write(offset, bytes) = events[writeIndex] else { continue }
                    image.replaceSubrange(Int(offset) ..< Int(offset) + bytes.count, with: bytes)
                }
                pending.removeAll()
            }
        }
        return (image, events, pending)
    }

    private func forEachSector(of pending: [Int], in events: [BlockEvent], _ body: (UnflushedSector) -> Void) {
        for (ordinal, eventIndex) in pending.enumerated() {
            guard case let .write(offset, bytes) = events[eventIndex] else { continue }
            let sectorCount = bytes.count / sectorBytes
            for sector in 0 ..< sectorCount {
                body(UnflushedSector(eventIndex: eventIndex, writeOrdinal: ordinal, writeOffset: offset,
                                     offset: offset + UInt64(sector * sectorBytes),
                                     sectorInWrite: sector, sectorsInWrite: sectorCount))
            }
        }
    }

    private func garbledSector(seed: UInt64, sector: UnflushedSector,
                               old: ArraySlice<UInt8>, new: ArraySlice<UInt8>) -> [UInt8] {
        var random = SplitMix64.derived(seed: seed, UInt64(sector.eventIndex), UInt64(sector.sectorInWrite))
        while true {
            let garbage = random.bytes(sectorBytes)
            // Equal to either would make "garbled" indistinguishable from keep or drop;
            // astronomically unlikely, but a harness must be able to rely on it.
            if !garbage.elementsEqual(old) && !garbage.elementsEqual(new) { return garbage }
        }
    }

    private func describe(_ request: BlockRequest) -> String {
        "\(request.operation) of \(request.buffer.count) bytes at offset \(request.offset) of \(name)"
    }
}
