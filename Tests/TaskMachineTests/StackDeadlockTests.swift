import Glibc
import Testing

@testable import TaskMachine

/// `async Future<Int> M(gate, block) { await gate.configureAwait(false); return try block(M's own future) }`:
/// after its one await, the method runs `block` with its own future, inside its `moveNext`.
struct BlocksInItsOwnWork: AsyncStateMachine {
    var builder = FutureMethodBuilder<Int>()
    var state = 0
    let gate: ConfiguredFutureAwaiter<Void>
    let own: Locked<Future<Int>?>
    let block: @Sendable (Future<Int>) throws -> Int

    mutating func moveNext() {
        do {
            if state == 0 {
                state = 1
                if !gate.isCompleted {
                    awaitUnsafeOnCompleted(gate)
                    return
                }
            }
            builder.setResult(try block(own.withLock { $0! }))
        } catch {
            builder.setError(error)
        }
    }

    static func start(awaiting gate: Future<Void>, then block: @escaping @Sendable (Future<Int>) throws -> Int)
        -> Future<Int>
    {
        let own = Locked<Future<Int>?>(nil)
        var machine = BlocksInItsOwnWork(gate: gate.configureAwait(false).getAwaiter(), own: own, block: block)
        FutureMethodBuilder.start(&machine)
        own.withLock { $0 = machine.builder.future }
        return machine.builder.future
    }
}

/// A thread that waits for a future which needs work on that thread's own stack, under the wait,
/// to go on: no context is involved, the thread blocks itself.
@Suite struct StackDeadlockTests {
    /// "thread: chain" for the ``DeadlockError`` on the thread's own stack that `future` fails
    /// with, "no deadlock" when it succeeds, or the description of another error.
    func stackDeadlockText(of future: Future<Int>) -> String {
        do {
            _ = try future.wait(timeout: .seconds(20))
            return "no deadlock"
        } catch let error as DeadlockError {
            let text = "\(error.threadName ?? "(no thread)"): \(error.chain.joined(separator: " > "))"
            return text.replacing(/pool-[0-9]+/, with: "pool-N")
        } catch {
            return "\(error)"
        }
    }

    /// Shuts `thread` down unless a wait on it never ended (a failure of the test), which would
    /// hang the shutdown: that thread is left blocked.
    func shutDownIfFree(_ thread: SingleThreadContext) throws {
        if (try? thread.run {}.wait(timeout: .seconds(5))) != nil { try thread.shutdown() }
    }

    @Test func aMethodThatWaitsForItsOwnFutureInItsMoveNextThrows() throws {
        let gate = Promise<Void>()
        let method = BlocksInItsOwnWork.start(awaiting: gate.future) { own in try own.wait() }
        let thread = SingleThreadContext(name: "waits-for-itself")
        // Resumed inline on the context's thread, which completes the gate.
        thread.post { try? gate.succeed() }
        #expect(stackDeadlockText(of: method) == "waits-for-itself: BlocksInItsOwnWork")
        try shutDownIfFree(thread)
    }

    @Test func aRunBodyThatWaitsForItsOwnFutureThrows() throws {
        let own = Locked<Future<Int>?>(nil)
        let started = Promise<Void>()
        let body = Future.run { () throws -> Int in
            try started.future.wait(timeout: .seconds(20))
            return try own.withLock { $0! }.wait()
        }
        own.withLock { $0 = body }
        try started.succeed()
        #expect(stackDeadlockText(of: body) == "pool-N: run { } -> Future<Int>")
    }

    @Test func aMethodWaitingForARunBodyThatWaitsForTheMethodThrows() throws {
        // The method, resumed on a context's thread, blocks in `wait()` for a body on the pool,
        // which blocks in `wait()` for the method: whichever thread blocks second throws, and the
        // other's wait ends with the error.
        let gate = Promise<Void>()
        let method = BlocksInItsOwnWork.start(awaiting: gate.future) { own in
            try Future.run { try own.wait() }.wait()
        }
        let thread = SingleThreadContext(name: "waits-through-a-body")
        thread.post { try? gate.succeed() }
        let text = stackDeadlockText(of: method)
        #expect(
            text == "waits-through-a-body: run { } -> Future<Int> (in wait() on pool-N) > BlocksInItsOwnWork"
                || text == "pool-N: BlocksInItsOwnWork (in wait() on waits-through-a-body) > run { } -> Future<Int>",
            "\(text)"
        )
        try shutDownIfFree(thread)
    }

    @Test func aMethodOnAWorkerWaitingForABodyThatWaitsForTheMethodThrows() throws {
        // As above on a pool worker, which runs the body itself when no other worker has started
        // it: then the body's wait is under the method's `moveNext` on the same stack.
        let gate = Promise<Void>()
        let method = BlocksInItsOwnWork.start(awaiting: gate.future) { own in
            try Future.run { try own.wait() }.wait()
        }
        _ = Future.run { try? gate.succeed() }
        #expect(stackDeadlockText(of: method).hasPrefix("pool-N: "))
    }

    @Test func aMethodResumedInlineUnderAnotherThatWaitsForTheOtherThrows() throws {
        // The outer method completes a promise the inner one awaits, which resumes the inner one
        // inline, inside the outer's `moveNext`: the inner one waiting for the outer's future
        // waits for work under it on the same stack.
        let gate = Promise<Void>()
        let handOver = Promise<Void>()
        let outerHolder = Locked<Future<Int>?>(nil)
        let outer = BlocksInItsOwnWork.start(awaiting: gate.future) { _ in
            try handOver.succeed()
            return 1
        }
        outerHolder.withLock { $0 = outer }
        let inner = BlocksInItsOwnWork.start(awaiting: handOver.future) { _ in
            try outerHolder.withLock { $0! }.wait()
        }
        let thread = SingleThreadContext(name: "inline-under-another")
        thread.post { try? gate.succeed() }
        #expect(stackDeadlockText(of: inner) == "inline-under-another: BlocksInItsOwnWork")
        #expect(try outer.wait(timeout: .seconds(20)) == 1)
        try shutDownIfFree(thread)
    }

    @Test func aCycleThatAMethodClosesAfterTheWaitBeganIsFoundByALaterLook() throws {
        // The outer method blocks in `wait()` for a method suspended on `later`, which, once
        // resumed, awaits the outer method: the cycle closes while the outer one already blocks,
        // and no other thread blocks to see it.
        let gate = Promise<Void>()
        let later = Promise<Void>()
        let awaitingHolder = Locked<Future<Int>?>(nil)
        let outer = BlocksInItsOwnWork.start(awaiting: gate.future) { _ in
            try awaitingHolder.withLock { $0! }.wait()
        }
        let awaiting = AwaitInTurn.start(later.future, then: outer)
        awaitingHolder.withLock { $0 = awaiting }
        let thread = SingleThreadContext(name: "closed-later")
        thread.post { try? gate.succeed() }
        // The outer method's wait has registered on the awaiting one, and, a moment later, looked
        // (finding nothing): not observable, so this leaves it 20 ms.
        var polls = 0
        while awaiting.pendingContinuations.isEmpty && polls < 20_000 {
            polls += 1
            usleep(1_000)
        }
        usleep(20_000)
        try later.succeed()
        #expect(stackDeadlockText(of: outer) == "closed-later: AwaitInTurn > BlocksInItsOwnWork")
        try shutDownIfFree(thread)
    }

    @Test func aMethodThatPumpsAnAsyncContextForItsOwnFutureThrows() throws {
        let gate = Promise<Void>()
        let method = BlocksInItsOwnWork.start(awaiting: gate.future) { own in try AsyncContext.run { own } }
        _ = Future.run { try? gate.succeed() }
        #expect(stackDeadlockText(of: method) == "pool-N: BlocksInItsOwnWork")
        let error = #expect(throws: DeadlockError.self) { try method.wait(timeout: .seconds(20)) }
        #expect(
            error.map { "\($0)" }?.hasPrefix(
                "AsyncContext.run would deadlock: BlocksInItsOwnWork, whose work is on the stack of") == true)
    }

    @Test func aMethodWaitingForWorkThatDoesNotNeedItIsNoDeadlock() throws {
        let gate = Promise<Void>()
        let method = BlocksInItsOwnWork.start(awaiting: gate.future) { _ in
            try Future.delay(.milliseconds(1)).wait()
            return try Future.run { 7 }.wait()
        }
        _ = Future.run { try? gate.succeed() }
        #expect(try method.wait(timeout: .seconds(20)) == 7)
    }
}
