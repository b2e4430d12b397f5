import CTaskMachine
import Synchronization
import Testing

@testable import TaskMachine

/// The lowest stack address seen by any `Forward` machine on the completing thread.
let lowestStackAddress = Atomic<UInt>(.max)

/// An async method that awaits `inner` and returns its value plus one.
struct Forward: AsyncStateMachine {
    var builder = FutureMethodBuilder<Int>()
    var state = 0
    let inner: Future<Int>

    mutating func moveNext() {
        if state == 0 {
            state = 1
            if !inner.isCompleted {
                awaitUnsafeOnCompleted(inner.configureAwait(false).getAwaiter())
                return
            }
        }
        let here = UInt(tm_stack_address())
        var seen = lowestStackAddress.load(ordering: .relaxed)
        while here < seen {
            let (exchanged, original) = lowestStackAddress.compareExchange(
                expected: seen, desired: here, ordering: .relaxed)
            if exchanged { break }
            seen = original
        }
        do { builder.setResult(try inner.getResult() + 1) } catch { builder.setError(error) }
    }

    static func start(_ inner: Future<Int>) -> Future<Int> {
        var machine = Forward(inner: inner)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

@Suite struct ChainTests {
    @Test func aMillionSynchronousCompletionsRunInBoundedStack() throws {
        let count = 1_000_000
        let first = Promise<Int>()
        var last = first.future
        for _ in 0..<count { last = Forward.start(last) }
        #expect(!last.isCompleted)

        let top = UInt(tm_stack_address())
        try first.succeed(0)  // every continuation runs on this thread, through the trampoline
        #expect(last.isCompleted)
        #expect(try last.getResult() == count)
        let lowest = lowestStackAddress.load(ordering: .relaxed)
        let depth = top &- lowest
        print("peak stack depth for \(count) chained continuations: \(depth) bytes")
        #expect(depth < 256 * 1024)
    }
}
