import Synchronization
import Testing

@testable import TaskMachine

/// A context that counts the continuations posted to it and runs each inline.
final class CountingContext: SynchronizationContext, @unchecked Sendable {
    let posts = Atomic<Int>(0)

    override func post(_ work: @escaping @Sendable () -> Void) {
        posts.add(1, ordering: .relaxed)
        work()
    }
}

/// `async Future<Void> M() { SynchronizationContext.current = context; await gate }`, on each of
/// the builders: `moveNext` is the same for all four.
protocol SetsContextThenAwaits: AsyncStateMachine {
    var state: Int { get set }
    var context: SynchronizationContext { get }
    var gate: FutureAwaiter<Void> { get }
    mutating func end()
}

extension SetsContextThenAwaits {
    mutating func moveNext() {
        if state == 0 {
            SynchronizationContext.current = context
            state = 1
            if !gate.isCompleted {
                awaitUnsafeOnCompleted(gate)
                return
            }
        }
        end()
    }
}

struct SetsContextOnFuture: SetsContextThenAwaits {
    var builder = FutureMethodBuilder<Void>()
    var state = 0
    let context: SynchronizationContext
    let gate: FutureAwaiter<Void>
    mutating func end() { builder.setResult() }
}

struct SetsContextOnValueFuture: SetsContextThenAwaits {
    var builder = ValueFutureMethodBuilder<Void>()
    var state = 0
    let context: SynchronizationContext
    let gate: FutureAwaiter<Void>
    mutating func end() { builder.setResult() }
}

struct SetsContextOnPooledValueFuture: SetsContextThenAwaits {
    var builder = PoolingValueFutureMethodBuilder<Void>()
    var state = 0
    let context: SynchronizationContext
    let gate: FutureAwaiter<Void>
    mutating func end() { builder.setResult() }
}

struct SetsContextFireAndForget: SetsContextThenAwaits {
    var builder = FireAndForgetMethodBuilder()
    var state = 0
    let context: SynchronizationContext
    let gate: FutureAwaiter<Void>
    mutating func end() { builder.setResult() }
}

@Suite struct ContextAtStartTests {
    /// Starts the method with `outer` current, on each builder, and returns what is current once
    /// `start` has returned; the method sets `inner` and awaits `gate`.
    func currentAfterStart(
        outer: SynchronizationContext?, inner: SynchronizationContext, gate: Future<Void>
    ) -> [SynchronizationContext?] {
        let before = SynchronizationContext.current
        defer { SynchronizationContext.current = before }
        var seen: [SynchronizationContext?] = []

        SynchronizationContext.current = outer
        var future = SetsContextOnFuture(context: inner, gate: gate.getAwaiter())
        FutureMethodBuilder.start(&future)
        seen.append(SynchronizationContext.current)

        SynchronizationContext.current = outer
        var value = SetsContextOnValueFuture(context: inner, gate: gate.getAwaiter())
        ValueFutureMethodBuilder.start(&value)
        seen.append(SynchronizationContext.current)

        SynchronizationContext.current = outer
        var pooled = SetsContextOnPooledValueFuture(context: inner, gate: gate.getAwaiter())
        PoolingValueFutureMethodBuilder.start(&pooled)
        seen.append(SynchronizationContext.current)
        _ = pooled.builder.valueFuture

        SynchronizationContext.current = outer
        var fireAndForget = SetsContextFireAndForget(context: inner, gate: gate.getAwaiter())
        FireAndForgetMethodBuilder.start(&fireAndForget)
        seen.append(SynchronizationContext.current)
        return seen
    }

    @Test func aContextSetBeforeTheFirstSuspensionStaysInTheMethod() throws {
        let outer = SynchronizationContext()
        let inner = CountingContext()
        let gate = Promise<Void>()
        let seen = currentAfterStart(outer: outer, inner: inner, gate: gate.future)
        #expect(seen.count == 4)
        #expect(seen.allSatisfy { $0 === outer })
        // The continuations captured the method's context, not the caller's.
        try gate.succeed()
        #expect(inner.posts.load(ordering: .relaxed) == 4)
    }

    @Test func aContextSetInAResumptionStaysInTheResumption() throws {
        let before = SynchronizationContext.current
        defer { SynchronizationContext.current = before }
        let outer = SynchronizationContext()
        let inner = CountingContext()
        let gate = Promise<Void>()
        let method = BlocksInItsOwnWork.start(awaiting: gate.future) { _ in
            SynchronizationContext.current = inner
            return 1
        }
        SynchronizationContext.current = outer
        try gate.succeed()  // resumes the method inline, here
        #expect(try method.wait(timeout: .seconds(10)) == 1)
        #expect(SynchronizationContext.current === outer)
    }

    @Test func aContextSetByAMethodThatEndsWithoutSuspendingStaysInTheMethod() {
        let seen = currentAfterStart(outer: nil, inner: CountingContext(), gate: .completed)
        #expect(seen.count == 4)
        #expect(seen.allSatisfy { $0 == nil })
    }
}
