// The state of one log region, kept in the log table (docs/format.md "Log table"). Each
// region has two 64-byte descriptor copies; an update writes the copy that is not current
// with `version + 1` and persists it, so a torn update leaves the previous copy valid. The
// reader takes the valid copy with the higher version.
//
// Durability point of the digest cursor: the persist of a descriptor copy whose
// `digestedOffset`/`digestedSequence` moved forward. Log space behind it may be reused only
// after that persist (docs/consistency.md).

public struct LogRegionDescriptor: Equatable, Sendable {
    public static let encodedBytes = 64
    public static let regionBytesMin: UInt64 = 64 * 1024
    static let crcOffset = 0

    public enum State: UInt8, Sendable {
        /// No process owns the region; nothing in it is undigested.
        case free = 0
        /// A LibFS instance appends to the region.
        case attached = 1
        /// The owner is gone; committed records may remain to digest.
        case detached = 2
    }

    public var state: State
    /// Bumped by every update of the descriptor; picks the current copy.
    public var version: UInt64
    /// Bumped each time the region is handed to a new owner. Records carry it, so a record
    /// left by an earlier owner never reads as committed.
    public var epoch: UInt64
    /// Byte offset in the region of the first record not yet digested.
    public var digestedOffset: UInt64
    /// Sequence number of that record.
    public var digestedSequence: UInt64
    public var ownerPID: UInt32
    public var ownerUID: UInt32
    public var attachedSeconds: Int64

    public init(state: State, version: UInt64, epoch: UInt64, digestedOffset: UInt64 = 0, digestedSequence: UInt64 = 1,
                ownerPID: UInt32 = 0, ownerUID: UInt32 = 0, attachedSeconds: Int64 = 0) {
        self.state = state
        self.version = version
        self.epoch = epoch
        self.digestedOffset = digestedOffset
        self.digestedSequence = digestedSequence
        self.ownerPID = ownerPID
        self.ownerUID = ownerUID
        self.attachedSeconds = attachedSeconds
    }

    public func encode(seed: UInt32) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.encodedBytes)
        bytes.withUnsafeMutableBytes { buffer in
            var writer = FieldWriter(buffer)
            writer.put(UInt32(0))
            writer.put(state.rawValue)
            writer.skip(3)
            writer.put(version)
            writer.put(epoch)
            writer.put(digestedOffset)
            writer.put(digestedSequence)
            writer.put(ownerPID)
            writer.put(ownerUID)
            writer.put(attachedSeconds)
            writer.skip(8)
            assert(writer.offset == Self.encodedBytes)
            StructureChecksum.seal(buffer, crcOffset: Self.crcOffset, seed: seed)
        }
        return bytes
    }

    /// Decodes one copy. An all-zero copy (never written) is reported as `nil`.
    public static func decode(_ buffer: UnsafeRawBufferPointer, seed: UInt32, regionBytes: UInt64) throws(FormatError) -> LogRegionDescriptor? {
        let name = "log region descriptor"
        try FormatError.need(name, encodedBytes, buffer)
        let copy = UnsafeRawBufferPointer(rebasing: buffer[0 ..< encodedBytes])
        if copy.allSatisfy({ $0 == 0 }) { return nil }
        try StructureChecksum.verify(copy, crcOffset: crcOffset, seed: seed, structure: name)
        var reader = FieldReader(copy, at: 4)
        let rawState: UInt8 = reader.get()
        guard let state = State(rawValue: rawState) else {
            throw .invalidField(structure: name, field: "state", reason: "\(rawState)")
        }
        reader.skip(3)
        let descriptor = LogRegionDescriptor(state: state, version: reader.get(), epoch: reader.get(),
                                             digestedOffset: reader.get(), digestedSequence: reader.get(),
                                             ownerPID: reader.get(), ownerUID: reader.get(), attachedSeconds: reader.get())
        guard descriptor.digestedOffset < regionBytes, descriptor.digestedOffset % 8 == 0 else {
            throw .invalidField(structure: name, field: "digest cursor",
                                reason: "offset \(descriptor.digestedOffset) outside a \(regionBytes)-byte region")
        }
        return descriptor
    }

    /// The current descriptor of a region from its two copies: the valid one with the higher
    /// version. `damaged` counts copies that failed to verify (0, 1 or 2).
    public static func current(copies: (UnsafeRawBufferPointer, UnsafeRawBufferPointer), seed: UInt32,
                               regionBytes: UInt64) -> (descriptor: LogRegionDescriptor?, copyIndex: Int?, damaged: [FormatError]) {
        var damaged: [FormatError] = []
        var best: (LogRegionDescriptor, Int)?
        for (index, copy) in [copies.0, copies.1].enumerated() {
            do {
                if let descriptor = try decode(copy, seed: seed, regionBytes: regionBytes),
                   best == nil || descriptor.version > best!.0.version {
                    best = (descriptor, index)
                }
            } catch {
                damaged.append(error)
            }
        }
        return (best?.0, best?.1, damaged)
    }
}
