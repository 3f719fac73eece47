// Known bugs the crash harness must catch: issue 5's proof that `shale crashtest` is not
// blind. They are compiled into debug builds only (Package.swift defines SHALE_PLANTED_BUGS
// for the debug configuration, which `make test` and CI build); release builds — what
// `make install`, the demo's mount and the benchmarks run — contain none. At most one is
// active, named by the environment variable SHALE_PLANTED_BUG, which
// `shale crashtest --plant NAME` sets before anything reads it. The media layer holds the
// switch because it is the one layer every other imports.

#if canImport(Glibc)
import Glibc
#endif

public enum PlantedBug: String, CaseIterable, Sendable {
    /// The log's append returns without its commit fence: an acknowledged call is not
    /// durable until some later fence.
    case missingFence = "missing-fence"
    /// The log's append commits (stores and fences) a bulk record's header before its data
    /// is durable, and returns: the record's commit is marked before its payload persists.
    case commitBeforePayload = "commit-before-payload"
    /// The digest makes its cursor durable before the batch's shared-area changes commit:
    /// a crash between them skips records that were never applied.
    case cursorBeforeApply = "cursor-before-apply"
    /// The digest returns with its batch's journal commit stored and flushed but not fenced
    /// (the journal's fences deferred to the next fence anyone issues; the data fence before
    /// it kept), and LibFS reclaims the batch's log space at once: new records may overwrite
    /// log records whose shared-area changes are not yet durable (space reclaimed too early).
    /// The crash states that catch it also see the journal's in-place writes without their
    /// commit, so it proves the harness sees a non-durable digest, not log reuse alone.
    case earlyReclaim = "early-reclaim"
    /// mkfs writes each superblock copy whole, magic included, and makes both durable with
    /// one fence at the end: a crash can tear both copies (the volume reads as damaged, not
    /// as unformatted).
    case tornSuperblock = "torn-superblock"
    /// The digest commits its journal transaction without first fencing the file data it
    /// copied into new blocks: the commit may persist while the data does not (a bug the
    /// harness found in the real code, kept here so that it stays found).
    case digestDataUnordered = "digest-data-unordered"

    /// The bug this process runs with, if any (debug builds only).
    #if SHALE_PLANTED_BUGS
    public static let active: PlantedBug? = getenv("SHALE_PLANTED_BUG").flatMap { PlantedBug(rawValue: String(cString: $0)) }
    public static var compiledIn: Bool { true }
    #else
    @inline(__always) public static var active: PlantedBug? { nil }
    public static var compiledIn: Bool { false }
    #endif
}
