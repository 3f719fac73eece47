import Testing
import Glibc
@testable import ShaleMedia

struct MappedPersistentMemoryTests {
    @Test func storeFlushFenceRoundTripOnDevShm() throws {
        let path = "/dev/shm/shale-test-\(getpid())-\(UInt32.random(in: 0 ... .max)).nvm"
        defer { unlink(path) }
        do {
            let region = try MappedPersistentMemory.create(path: path, byteCount: 1 << 20)
            #expect(region.byteCount == 1 << 20)
            #expect(region.persistence == .emulatedOnDRAM)
            region.storePersist(Array("durable".utf8), at: 4096)
            region.storeWord(0x1122_3344_5566_7788, at: 8192)
            region.persist(offset: 8192, count: 8)
        }
        let reopened = try MappedPersistentMemory.open(path: path)
        #expect(reopened.load(at: 4096, count: 7) == Array("durable".utf8))
        #expect(reopened.loadWord(at: 8192) == 0x1122_3344_5566_7788)
    }
}
