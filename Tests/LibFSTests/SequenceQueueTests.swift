import Testing
@testable import LibFS

/// The pending state's queues (touches, block demands): entries leave oldest first, exactly
/// those before the sequence asked for, through compactions and full drains.
struct SequenceQueueTests {
    @Test func dropsExactlyTheEntriesBeforeASequenceInOrder() {
        var queue = SequenceQueue<[UInt64]>()
        var next: UInt64 = 0, expectedFirst: UInt64 = 0
        // Appends run ahead of the drops, so the queue compacts (more than 4,096 dead
        // entries, over half of it) many times, and now and then empties.
        for round in 0 ..< 200 {
            for _ in 0 ..< 1 + (round * 37) % 3000 {
                queue.append([next], sequence: next)
                next += 1
            }
            let before = round % 25 == 24 ? next : expectedFirst + UInt64((round * 53) % 2500)
            var dropped: [UInt64] = []
            queue.dropFront(before: min(before, next)) { dropped.append($0[0]) }
            let expected = Array(expectedFirst ..< max(expectedFirst, min(before, next)))
            #expect(dropped == expected, "round \(round)")
            expectedFirst = max(expectedFirst, min(before, next))
            #expect(queue.count == Int(next - expectedFirst))
            #expect(queue.isEmpty == (next == expectedFirst))
        }
        var rest: [UInt64] = []
        queue.dropFront(before: .max) { rest.append($0[0]) }
        #expect(rest == Array(expectedFirst ..< next))
        #expect(queue.isEmpty)
    }
}
