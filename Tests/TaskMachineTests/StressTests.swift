import Glibc
import Synchronization
import Testing

@testable import TaskMachine

/// A counter shared between threads.
final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    func increment() { value.add(1, ordering: .relaxed) }
    var count: Int { value.load(ordering: .relaxed) }
}

/// A heap value, to exercise the publication of object references across threads.
final class Payload: Sendable {
    let number: Int
    init(_ number: Int) { self.number = number }
}

/// Awaits `Future.run` `remaining` times in a row: every step completes on a pool worker and
/// resumes the machine there, or inline, bouncing the box between threads.
struct Bounce: AsyncStateMachine {
    var builder = FutureMethodBuilder<Int>()
    var remaining: Int
    var total = 0
    var awaiter: ConfiguredFutureAwaiter<Payload>?

    mutating func moveNext() {
        do {
            while true {
                if let pending = awaiter {
                    total += try pending.getResult().number
                    awaiter = nil
                }
                guard remaining > 0 else { break }
                remaining -= 1
                let step = remaining
                let next = Future.run { Payload(step) }.configureAwait(false).getAwaiter()
                awaiter = next
                if !next.isCompleted {
                    awaitUnsafeOnCompleted(next)
                    return
                }
            }
            builder.setResult(total)
        } catch {
            builder.setError(error)
        }
    }
}

/// Bounded stress of every cross-thread publication path. CI runs this suite again in a release
/// build, where the optimizer is free to move retains across plain atomic stores.
@Suite struct StressTests {
    @Test func continuationsRegisteredWhileTheFutureCompletesRunExactlyOnce() throws {
        for _ in 0..<500 {
            let promise = Promise<Payload>()
            let ran = Counter()
            let registrants = (0..<4).map { _ in
                Future.run {
                    for _ in 0..<4 {
                        promise.future.getAwaiter().onCompleted {
                            if (try? promise.future.getResult().number) == 7 { ran.increment() }
                        }
                    }
                }
            }
            try promise.succeed(Payload(7))
            for registrant in registrants { try registrant.wait(timeout: .seconds(20)) }
            let deadline = ContinuousClock.now + .seconds(20)
            while ran.count < 16 && ContinuousClock.now < deadline { usleepish() }
            #expect(ran.count == 16)
        }
    }

    @Test func aStateMachineBouncingBetweenThreadsKeepsItsState() throws {
        var machine = Bounce(remaining: 20_000)
        FutureMethodBuilder.start(&machine)
        let total = try machine.builder.future.wait(timeout: .seconds(60))
        #expect(total == (0..<20_000).reduce(0, +))
    }

    @Test func objectValuesCrossThreadsIntact() throws {
        let futures = (0..<20_000).map { index in Future.run { Payload(index) } }
        let sum = try futures.reduce(0) { $0 + (try $1.wait(timeout: .seconds(20)).number) }
        #expect(sum == (0..<20_000).reduce(0, +))
    }

    @Test func swiftTasksAwaitFuturesCompletedOnThePool() async throws {
        let promises = (0..<2_000).map { _ in Promise<Payload>() }
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for promise in promises {
                group.addTask { try await promise.future.value.number }
            }
            for (index, promise) in promises.enumerated() {
                _ = Future.run { promise.trySucceed(Payload(index)) }
            }
            return try await group.reduce(0, +)
        }
        #expect(total == (0..<2_000).reduce(0, +))
    }

    @Test func aPooledSourceReusedAcrossThreadsHandsEachResultToItsOwnAwait() async throws {
        let source = ValueFutureSourceCore<Payload>()
        for round in 0..<2_000 {
            let pending = source.makeValueFuture()
            _ = Future.run { try? source.succeed(Payload(round)) }
            #expect(try await pending.get().number == round)
            source.reset()
        }
    }

    @Test func delaysCancelledWhileFiringSettleOnce() throws {
        for round in 0..<20 {
            let source = CancellationTokenSource()
            let delays = (0..<500).map { _ in Future.delay(.milliseconds(1), cancellation: source.token) }
            let runs = delays.map { delay in
                let runs = Counter()
                delay.onCompletion(.item(ClosureWorkItem { runs.increment() }))
                return runs
            }
            // Cancelled from at once to about twice the delay later, round by round, so that in
            // some rounds the cancel races the timer thread handing the delays to the pool.
            var pause = timespec(tv_sec: 0, tv_nsec: round * 100_000)
            nanosleep(&pause, nil)
            source.cancel()
            for delay in delays {
                _ = try? delay.wait(timeout: .seconds(20))
                #expect(delay.status == .succeeded || delay.status == .cancelled)
                // Fired or cancelled, it has left the wheel.
                #expect(TimerQueue.shared.timeUntilDue(TimerNode(delay)) == nil)
            }
            // Each delay's continuation ran once, whichever of the fire and the cancel settled it.
            #expect(eventually { runs.allSatisfy { $0.count >= 1 } })
            #expect(runs.allSatisfy { $0.count == 1 }, "a continuation ran twice")
        }
    }
}
