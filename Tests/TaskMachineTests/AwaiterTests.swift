import Synchronization
import Testing

@testable import TaskMachine

/// A countdown latch with an awaiter of its own: the awaiter pattern adopted by a user type.
final class CountdownLatch: Awaitable, Sendable {
    struct Awaiter: TaskMachine.Awaiter {
        let latch: CountdownLatch
        var isCompleted: Bool { latch.state.withLock { $0.remaining == 0 } }
        func onCompleted(_ continuation: @escaping @Sendable () -> Void) {
            let runNow = latch.state.withLock { state -> Bool in
                guard state.remaining > 0 else { return true }
                state.waiters.append(continuation)
                return false
            }
            if runNow { _ = Future.run { continuation() } }
        }
        func getResult() -> Int { latch.initialCount }
    }

    private struct State {
        var remaining: Int
        var waiters: [@Sendable () -> Void] = []
    }

    let initialCount: Int
    private let state: Locked<State>

    init(count: Int) {
        initialCount = count
        state = Locked(State(remaining: count))
    }

    func countDown() {
        let released = state.withLock { state -> [@Sendable () -> Void] in
            guard state.remaining > 0 else { return [] }
            state.remaining -= 1
            guard state.remaining == 0 else { return [] }
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in released { waiter() }
    }

    func getAwaiter() -> Awaiter { Awaiter(latch: self) }
}

/// Awaits any awaitable inside a state machine: the builder takes user awaiters too.
struct AwaitLatch: AsyncStateMachine {
    var builder = FutureMethodBuilder<Int>()
    var state = 0
    let latch: CountdownLatch
    var awaiter: CountdownLatch.Awaiter?

    mutating func moveNext() {
        if state == 0 {
            let awaiter = latch.getAwaiter()
            self.awaiter = awaiter
            state = 1
            if !awaiter.isCompleted {
                awaitOnCompleted(awaiter)
                return
            }
        }
        builder.setResult(awaiter!.getResult())
    }
}

@Suite struct AwaiterTests {
    /// Swift awaits cancelled while what they await completes end once each (no double resume, no
    /// hang), on every kind of awaitable.
    @Test func swiftCancellationRacingCompletionEndsEachAwaitOnce() async throws {
        let deadline = ContinuousClock.now + .seconds(1)
        var rounds = 0
        while ContinuousClock.now < deadline && rounds < 1000 {
            rounds += 1
            let latch = CountdownLatch(count: 1)
            let promise = Promise<Int>()
            let core = ValueFutureSourceCore<Int>()
            let forced = try promise.future.configureAwait(options: [.forceYielding])
            let waiters: [Task<Int, any Error>] = [
                Task { try await promise.future.value },
                Task { try await promise.future.value },
                Task { try await latch.value },
                Task {
                    try await Future.yield().value; return 7
                },
                Task { try await forced.value },
                Task { try await core.makeValueFuture().get() },
            ]
            let completer = Future.run {
                latch.countDown()
                try promise.succeed(7)
                try core.succeed(7)
            }
            for waiter in waiters { waiter.cancel() }
            for waiter in waiters {
                do {
                    let value = try await waiter.value
                    #expect(value == 7 || value == 1)
                } catch is CancellationError {}
            }
            try completer.wait(timeout: .seconds(10))
        }
    }

    @Test func theAwaiterPatternDrivenByHand() throws {
        let promise = Promise<Int>()
        let awaiter = promise.future.getAwaiter()
        #expect(!awaiter.isCompleted)
        let resumed = Promise<Int>()
        awaiter.onCompleted { resumed.trySucceed((try? awaiter.getResult()) ?? -1) }
        try promise.succeed(42)
        #expect(awaiter.isCompleted)
        #expect(try awaiter.getResult() == 42)
        #expect(try resumed.future.wait(timeout: .seconds(10)) == 42)
    }

    @Test func aUserTypeAdoptsTheAwaiterPattern() async throws {
        let latch = CountdownLatch(count: 3)
        var machine = AwaitLatch(latch: latch)
        FutureMethodBuilder.start(&machine)
        let fromMachine = machine.builder.future
        #expect(!fromMachine.isCompleted)
        let waiter = Task { try await latch.value }
        for _ in 0..<3 { latch.countDown() }
        #expect(try fromMachine.wait(timeout: .seconds(10)) == 3)
        #expect(try await waiter.value == 3)
    }

    @Test func awaitingACompletedFutureFromSwiftDoesNotSuspend() async throws {
        #expect(try await Future.succeeded(1).value == 1)
        #expect(try await ValueFuture(2).get() == 2)
        #expect(try await Future.completed.configureAwait(false).value == ())
    }

    @Test func cancellingTheSwiftTaskEndsTheAwaitButLeavesTheFutureAlone() async throws {
        let promise = Promise<Int>()
        let shared = promise.future
        let waiter = Task { try await shared.value }
        while shared.slot.load(ordering: .acquiring) == SlotWord.empty { await Task.yield() }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(shared.status == .pending)
        try promise.succeed(5)
        #expect(try await shared.value == 5)
    }

    @Test func cancelledSwiftAwaitsDoNotPileUpOnAFutureThatNeverCompletes() async throws {
        // Each cancelled await takes its resumer back. (Counting the waiting continuations moves
        // a future's only one from its slot into its list, where it can be taken back.)
        let never = Promise<Int>().future
        for _ in 1...50 {
            let waiter = Task { try await never.value }
            while never.pendingContinuations.isEmpty { await Task.yield() }
            waiter.cancel()
            _ = try? await waiter.value
        }
        #expect(never.pendingContinuations.count <= 1)
    }

    @Test func aSwiftTaskCancelledBeforeItAwaitsThrowsAtOnce() async throws {
        let shared = Promise<Int>().future
        let waiter = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await shared.value
        }
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(shared.status == .pending)
    }
}
