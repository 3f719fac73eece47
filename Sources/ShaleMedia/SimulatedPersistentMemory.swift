// Two NVM regions for tests and the crash harness, behind the same `PersistentMemory`
// interface as the real one, so the production code above runs unchanged:
//
// - `RecordingPersistentMemory` forwards to any region (the real libpmem one included) and
//   records every store, flush and fence in a `PersistenceTrace`.
// - `SimulatedPersistentMemory` lives in memory, tracks the cache state of every line
//   (`CacheLineModel`) and can materialise the image a crash would leave at any moment, or,
//   from its trace, at any earlier event.

import Glibc
import Synchronization

public final class RecordingPersistentMemory<Base: PersistentMemory>: PersistentMemory, @unchecked Sendable {
    public let base: Base
    /// Events from every thread, in the order they took the lock (the base is called under
    /// it, so the trace order is the order the base saw).
    private let recorded = Mutex(PersistenceTrace())

    public var trace: PersistenceTrace { recorded.withLock { $0 } }

    public init(_ base: Base) { self.base = base }

    public var byteCount: Int { base.byteCount }
    public var persistence: PersistenceKind { base.persistence }
    public var baseAddress: UnsafeRawPointer { base.baseAddress }

    public func mark(_ label: String) { recorded.withLock { $0.mark(label) } }

    public func store(_ source: UnsafeRawBufferPointer, at offset: Int) {
        recorded.withLock { trace in
            trace.append(.store(offset: offset, bytes: Array(source)))
            base.store(source, at: offset)
        }
    }

    public func storeWord(_ value: UInt64, at offset: Int) {
        recorded.withLock { trace in
            trace.append(.store(offset: offset, bytes: withUnsafeBytes(of: value.littleEndian) { Array($0) }))
            base.storeWord(value, at: offset)
        }
    }

    public func fill(_ byte: UInt8, at offset: Int, count: Int) {
        recorded.withLock { trace in
            trace.append(.store(offset: offset, bytes: [UInt8](repeating: byte, count: count)))
            base.fill(byte, at: offset, count: count)
        }
    }

    public func flush(offset: Int, count: Int) {
        recorded.withLock { trace in
            trace.append(.flush(offset: offset, count: count))
            base.flush(offset: offset, count: count)
        }
    }

    public func fence() {
        recorded.withLock { trace in
            trace.append(.fence)
            base.fence()
        }
    }

    public func storeFlush(_ source: UnsafeRawBufferPointer, at offset: Int) {
        recorded.withLock { trace in
            trace.append(.store(offset: offset, bytes: Array(source)))
            trace.append(.flush(offset: offset, count: source.count))
            base.storeFlush(source, at: offset)
        }
    }

    public func storePersist(_ source: UnsafeRawBufferPointer, at offset: Int) {
        recorded.withLock { trace in
            trace.append(.store(offset: offset, bytes: Array(source)))
            trace.append(.flush(offset: offset, count: source.count))
            trace.append(.fence)
            base.storePersist(source, at: offset)
        }
    }
}

public final class SimulatedPersistentMemory: PersistentMemory, @unchecked Sendable {
    public let byteCount: Int
    public var persistence: PersistenceKind { .simulated }
    /// The image the region started from (zeros, or what `init(image:)` was given).
    public let initialImage: [UInt8]
    /// Every event since creation, when `recordsTrace` (the default).
    public var trace: PersistenceTrace { lock.withLock { _ in storedTrace } }
    public let recordsTrace: Bool

    /// Guards the cache model and the trace: the layers above may call from several threads.
    private let lock = Mutex(())
    private var storedTrace = PersistenceTrace()
    private let model: CacheLineModel
    /// The program's view, kept in a stable allocation so `baseAddress` stays valid.
    private let memory: UnsafeMutableRawPointer

    public convenience init(byteCount: Int, recordsTrace: Bool = true) {
        self.init(image: [UInt8](repeating: 0, count: byteCount), recordsTrace: recordsTrace)
    }

    /// A region whose durable and current contents are `image` (e.g. a crash image, to run
    /// recovery on it).
    public init(image: [UInt8], recordsTrace: Bool = true) {
        byteCount = image.count
        initialImage = image
        self.recordsTrace = recordsTrace
        model = CacheLineModel(image: image)
        memory = UnsafeMutableRawPointer.allocate(byteCount: max(image.count, 1), alignment: 64)
        image.withUnsafeBytes { memory.copyMemory(from: $0.baseAddress!, byteCount: image.count) }
    }

    deinit { memory.deallocate() }

    public var baseAddress: UnsafeRawPointer { UnsafeRawPointer(memory) }

    /// Lines whose newest contents a crash now could lose.
    public var pendingLines: [Int] { lock.withLock { _ in model.pendingLines } }

    /// What is guaranteed on the media now.
    public var durableImage: [UInt8] { lock.withLock { _ in model.durable } }

    public func mark(_ label: String) { lock.withLock { _ in if recordsTrace { storedTrace.mark(label) } } }

    /// The image a crash now leaves, with `fate` chosen per pending line.
    public func crashImage(fate: (Int) -> LineFate) -> [UInt8] { lock.withLock { _ in model.crashImage(fate: fate) } }

    /// The cache state after the first `eventCount` recorded events, to materialise a crash
    /// at that point: `crashState(afterEvents: n).crashImage(fate:)`.
    public func crashState(afterEvents eventCount: Int) -> CacheLineModel {
        precondition(recordsTrace, "crashState(afterEvents:) needs a recorded trace")
        return trace.replay(initialImage: initialImage, eventCount: eventCount)
    }

    private func record(_ event: PersistenceEvent) {
        if recordsTrace { storedTrace.append(event) }
    }

    public func store(_ source: UnsafeRawBufferPointer, at offset: Int) {
        checkRange(offset, source.count)
        guard source.count > 0 else { return }
        lock.withLock { _ in
            (memory + offset).copyMemory(from: source.baseAddress!, byteCount: source.count)
            model.store(source, at: offset)
            record(.store(offset: offset, bytes: Array(source)))
        }
    }

    public func storeWord(_ value: UInt64, at offset: Int) {
        precondition(offset % 8 == 0, "storeWord needs an 8-byte aligned offset")
        withUnsafeBytes(of: value.littleEndian) { store($0, at: offset) }
    }

    public func fill(_ byte: UInt8, at offset: Int, count: Int) {
        [UInt8](repeating: byte, count: count).withUnsafeBytes { store($0, at: offset) }
    }

    public func flush(offset: Int, count: Int) {
        checkRange(offset, count)
        lock.withLock { _ in
            model.flush(offset: offset, count: count)
            record(.flush(offset: offset, count: count))
        }
    }

    public func fence() {
        lock.withLock { _ in
            model.fence()
            record(.fence)
        }
    }

    public func storeFlush(_ source: UnsafeRawBufferPointer, at offset: Int) {
        store(source, at: offset)
        flush(offset: offset, count: source.count)
    }

    public func storePersist(_ source: UnsafeRawBufferPointer, at offset: Int) {
        storeFlush(source, at: offset)
        fence()
    }
}
