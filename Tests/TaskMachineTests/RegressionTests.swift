import Glibc
import Synchronization
import Testing

@testable import TaskMachine

/// A source that finds its operation done just as the continuation arrives, and resumes it from
/// inside `onCompleted`.
final class EagerSource: ValueFutureSource {
    func status(token: UInt16) throws -> FutureStatus { .pending }
    func onCompleted(token: UInt16, _ continuation: consuming AwaitContinuation) throws { continuation.resume() }
    func getResult(token: UInt16) throws -> Int { 5 }
}

/// Suspends once (so it runs inside its box), then awaits an `EagerSource`.
struct AwaitEagerSource: AsyncStateMachine {
    var builder = FutureMethodBuilder<Int>()
    var state = 0
    var awaiter: ValueFutureAwaiter<Int>?

    mutating func moveNext() {
        do {
            if state == 0 {
                state = 1
                awaitUnsafeOnCompleted(Future.yield().getAwaiter())
                return
            }
            if state == 1 {
                let awaiter = ValueFuture<Int>(source: EagerSource(), token: 0).getAwaiter()
                self.awaiter = awaiter
                state = 2
                if !awaiter.isCompleted {
                    awaitUnsafeOnCompleted(awaiter)
                    return
                }
            }
            builder.setResult(try awaiter!.getResult())
        } catch {
            builder.setError(error)
        }
    }
}

/// Suspends once (so it runs inside its box), then awaits a promise and, before returning, completes
/// it on the same thread: the promise's continuation is the very box that is running.
struct CompleteWhatItAwaits: AsyncStateMachine {
    var builder = FutureMethodBuilder<Int>()
    var state = 0
    var awaiter: FutureAwaiter<Int>?
    let entry = EntryGuard()

    mutating func moveNext() {
        do {
            if state == 0 {
                state = 1
                awaitUnsafeOnCompleted(Future.yield().getAwaiter())
                return
            }
            // In the box from here: a resumption nested in this one would find it entered. A local,
            // as the segment below goes on after its registration, when another thread may already
            // have finished the machine and dropped it.
            let entry = self.entry
            entry.enter()
            defer { entry.leave() }
            if state == 1 {
                let promise = Promise<Int>()
                let awaiter = promise.future.getAwaiter()
                self.awaiter = awaiter
                state = 2
                awaitUnsafeOnCompleted(awaiter)
                try promise.succeed(9)  // its continuation is this box, running now
                return
            }
            builder.setResult(try awaiter!.getResult())
        } catch {
            builder.setError(error)
        }
    }
}

/// Which thread is inside a machine's `moveNext()`. A thread entering it again while inside, a
/// nested resumption, stops the program; another thread may enter before the first has left, as a
/// continuation run elsewhere may start while the segment that registered it returns.
final class EntryGuard: Sendable {
    private let thread = Atomic<UInt>(0)

    func enter() {
        let me = UInt(bitPattern: Int(bitPattern: pthread_self()))
        precondition(thread.exchange(me, ordering: .relaxed) != me, "the machine was entered while it was running")
    }

    func leave() {
        let me = UInt(bitPattern: Int(bitPattern: pthread_self()))
        _ = thread.compareExchange(expected: me, desired: 0, ordering: .relaxed)
    }
}

/// Bugs found in review, each pinned by the scenario that exposed it.
@Suite struct RegressionTests {
    @Test func anExtraWorkerDoesNotRetireWhileRegularWorkersAreBlocked() throws {
        let pool = ThreadPool(workerCount: 2, extraWorkerIdleNanoseconds: 20_000_000)
        func run(_ body: @escaping @Sendable () throws -> Void) -> Future<Void> {
            let done = Promise<Void>()
            pool.enqueue(
                .item(
                    ClosureWorkItem {
                        do { try body(); done.trySucceed() } catch { done.tryFail(error) }
                    }))
            return done.future
        }
        try run {}.wait(timeout: .seconds(10))
        let first = Promise<Void>()
        let second = Promise<Void>()
        let third = Promise<Void>()
        let a = run {
            try first.future.wait(timeout: .seconds(20))  // blocks one worker while the other idles
            try third.future.wait(timeout: .seconds(20))  // blocks it again while the extra idles
        }
        while pool.counts.blocked < 1 { usleepish() }
        let b = run { try second.future.wait(timeout: .seconds(20)) }  // all blocked: an extra starts
        while pool.counts.blocked < 2 { usleepish() }
        try first.succeed()
        usleep(100_000)  // five times the extra's idle limit
        _ = run { third.trySucceed() }  // needs a worker that is not blocked
        try a.wait(timeout: .seconds(10))
        try second.succeed()
        try b.wait(timeout: .seconds(10))
    }

    @Test func aDeferredContinuationStaysOnItsContextWhenTheThreadBlocks() throws {
        let ui = SingleThreadContext(name: "ui-deferred")
        defer { try? ui.shutdown() }
        let ranOn = Promise<String>()
        let done = ui.run { () throws -> Int in
            let promises = (0..<20).map { _ in Promise<Void>() }
            for index in 0..<19 {
                let next = promises[index + 1]
                promises[index].future.getAwaiter().onCompleted {
                    next.trySucceed()
                    // Deep in the trampoline: the next continuation is deferred; block a little.
                    if index == 15 { _ = try? Future.delay(.milliseconds(10)).wait() }
                    if index == 16 { ranOn.trySucceed(RuntimeThread.current.name) }
                }
            }
            promises[0].trySucceed()
            return 1
        }
        _ = try done.wait(timeout: .seconds(10))
        #expect(try ranOn.future.wait(timeout: .seconds(10)) == "ui-deferred")
    }

    @Test func whenAnyOverABlockedInputIsNotADeadlock() throws {
        let ui = SingleThreadContext(name: "ui-whenany")
        defer { try? ui.shutdown() }
        let never = Promise<Int>()
        let outcome = ui.run { () throws -> Int in
            let blocked = DoubleAfter.start(never.future)
            let quick = Future.delay(.milliseconds(10)).mapForTests { 7 }
            return try Future.whenAny(blocked, quick).wait(timeout: .seconds(10)).getResult()
        }
        #expect(try outcome.wait(timeout: .seconds(10)) == 7)
        never.trySucceed(1)
    }

    /// A pooled method's result reaches `asFuture()`'s future through a continuation on its box:
    /// the deadlock detector follows it there, as it follows a combinator to its result.
    @Test func blockingOnAPooledMethodsResultAsAFutureIsDiagnosedNotHung() throws {
        let ui = SingleThreadContext(name: "ui-pooled")
        defer { try? ui.shutdown() }
        let promise = Promise<Int>()
        let outcome = ui.run { () -> String in
            // Suspended on "ui-pooled", whose thread the wait below blocks.
            let doubled = Doubled.start(reading: ValueFuture(future: promise.future)).asFuture()
            return deadlockText { _ = try doubled.wait(timeout: .seconds(2)) }
        }
        #expect(try outcome.wait(timeout: .seconds(10)) == "ui-pooled: Future<Int> > \(Doubled.self) > Future<Int>")
        promise.trySucceed(1)
    }

    /// A context's `run` of an async method completes its future from a continuation on the
    /// method's: the deadlock detector follows it there.
    @Test func blockingOnAContextsRunOfAnAsyncMethodIsDiagnosedNotHung() throws {
        let ui = SingleThreadContext(name: "ui-forward")
        defer { try? ui.shutdown() }
        let promise = Promise<Int>()
        let doubled = ui.run { DoubleAfter.start(promise.future) }  // suspends on "ui-forward"
        let outcome = ui.run { () -> String in
            deadlockText { _ = try doubled.wait(timeout: .seconds(2)) }
        }
        #expect(try outcome.wait(timeout: .seconds(10)) == "ui-forward: Future<Int> > DoubleAfter > Future<Int>")
        promise.trySucceed(1)
    }

    @Test func aHugeTimeoutWaitsInsteadOfOverflowing() throws {
        let soon = Future.delay(.milliseconds(5))
        try soon.wait(timeout: .seconds(Int64.max))
        try Future.delay(.milliseconds(5)).wait(timeout: .seconds(1_000_000_000))
    }

    @Test func aSourceThatResumesInsideOnCompletedDoesNotReenterTheMachine() throws {
        var machine = AwaitEagerSource()
        FutureMethodBuilder.start(&machine)
        #expect(try machine.builder.future.wait(timeout: .seconds(10)) == 5)
    }

    @Test func aMachineCompletingWhatItAwaitsIsResumedAfterItReturnsNotInsideItself() throws {
        var machine = CompleteWhatItAwaits()
        FutureMethodBuilder.start(&machine)
        #expect(try machine.builder.future.wait(timeout: .seconds(10)) == 9)
    }

    @Test func aSourceFailingAfterATimeoutIsStillReportedUnobserved() throws {
        let reported = Promise<String>()
        let previous = ErrorReporting.unobservedErrorHandler
        ErrorReporting.unobservedErrorHandler = { report in
            if report.errors.contains(where: { ($0 as? TestError)?.code == 21 }) {
                reported.trySucceed(report.futureDescription)
            } else {
                previous(report)
            }
        }
        defer { ErrorReporting.unobservedErrorHandler = previous }
        do {
            let source = Promise<Int>()
            let timed = source.future.waiting(timeout: .milliseconds(1))
            #expect(throws: TimeoutError.self) { try timed.wait(timeout: .seconds(10)) }
            try source.fail(TestError(code: 21))
        }
        #expect(try reported.future.wait(timeout: .seconds(10)) == "Future<Int>")
    }

    @Test func workPostedAfterShutdownRunsOnThePoolAndSendRunsInline() throws {
        let ui = SingleThreadContext(name: "ui-gone")
        try ui.shutdown()
        let ranOn = Promise<RuntimeThread.Role>()
        ui.post { ranOn.trySucceed(RuntimeThread.current.role) }
        #expect(try ranOn.future.wait(timeout: .seconds(10)) == .poolWorker)
        let sentOn = Locked<String>("")
        try ui.send { sentOn.withLock { $0 = RuntimeThread.current.name } }
        #expect(sentOn.withLock { $0 } == RuntimeThread.current.name)
        #expect(!ui.isCurrentThread)
    }
}

/// A pool worker that blocks other than in `wait()` is made up for at once, as in `wait()`.
@Suite struct BlockedWorkerTests {
    /// Waits, for at most ten seconds, until `pool` counts `count` blocked workers.
    func waitUntilBlocked(_ pool: ThreadPool, count: Int) -> Bool {
        let deadline = Clock.now + 10_000_000_000
        while pool.counts.blocked < count {
            if Clock.now > deadline { return false }
            usleepish()
        }
        return true
    }

    /// Runs `body` as a job on `pool`; the future ends when it returns.
    func run(on pool: ThreadPool, _ body: @escaping @Sendable () throws -> Void) -> Future<Void> {
        let done = Promise<Void>()
        pool.enqueue(.item(ClosureWorkItem { do { try body(); done.trySucceed() } catch { done.tryFail(error) } }))
        return done.future
    }

    @Test func aWorkerBlockedInSendIsMadeUpFor() throws {
        let pool = ThreadPool(workerCount: 1)
        let ui = SingleThreadContext(name: "ui-send-blocked")
        defer { try? ui.shutdown() }
        let uiBusy = Promise<Void>()
        ui.post { try? uiBusy.future.wait(timeout: .seconds(20)) }
        let sent = run(on: pool) { try ui.send {} }
        #expect(waitUntilBlocked(pool, count: 1), "the worker in send() is not counted as blocked")
        // The only worker is in send(): a job on the pool runs on the extra worker started for it.
        try run(on: pool) {}.wait(timeout: .seconds(10))
        #expect(pool.activitySnapshot.starvationWorkersAdded == 0)
        try uiBusy.succeed()
        try sent.wait(timeout: .seconds(10))
        #expect(pool.counts.blocked == 0)
    }

    @Test func aWorkerPumpingAnAsyncContextIsMadeUpFor() throws {
        let pool = ThreadPool(workerCount: 1)
        let gate = Promise<Int>()
        let result = Locked<Int>(0)
        let pumped = run(on: pool) {
            let value = try AsyncContext.run { gate.future }
            result.withLock { $0 = value }
        }
        #expect(waitUntilBlocked(pool, count: 1), "the worker pumping AsyncContext is not counted as blocked")
        try run(on: pool) {}.wait(timeout: .seconds(10))
        #expect(pool.activitySnapshot.starvationWorkersAdded == 0)
        try gate.succeed(42)
        try pumped.wait(timeout: .seconds(10))
        #expect(result.withLock { $0 } == 42)
        #expect(pool.counts.blocked == 0)
    }

    /// Runs an AsyncContext on the one worker of a pool, whose body posts `step` to the context
    /// and waits for it to complete the promise it is given; returns whether the monitor had to
    /// rescue a job from the worker's LIFO slot meanwhile.
    func pumpOnTheOnlyWorker(_ step: @escaping @Sendable (ThreadPool, Promise<Void>) -> Void) throws -> Bool {
        let pool = ThreadPool(workerCount: 1)
        let pumped = run(on: pool) {
            try AsyncContext.run { () -> Future<Void> in
                let done = Promise<Void>()
                SynchronizationContext.current!.post { step(pool, done) }
                return done.future
            }
        }
        try pumped.wait(timeout: .seconds(10))
        return pool.activitySnapshot.lifoJobsRescued > 0
    }

    /// A wait() nested in an AsyncContext's pump on a worker: the job it waits for, queued on that
    /// worker, must go where another worker can take it, not into the blocked worker's LIFO slot
    /// (from which only the monitor would rescue it, half a second later).
    @Test func aJobQueuedByAWaitNestedInAnAsyncContextOnAWorkerIsNotStranded() throws {
        let rescued = try pumpOnTheOnlyWorker { pool, done in
            let job = Promise<Void>()
            pool.enqueue(.item(ClosureWorkItem { job.trySucceed() }))
            _ = try? job.future.wait(timeout: .seconds(10))
            done.trySucceed()
        }
        #expect(!rescued, "the job waited in the LIFO slot for the monitor")
    }

    /// The same for a job that a continuation run by the pump queues, and the pump waits for.
    @Test func aJobQueuedByAnAsyncContextPumpingOnAWorkerIsNotStranded() throws {
        let rescued = try pumpOnTheOnlyWorker { pool, done in
            pool.enqueue(.item(ClosureWorkItem { done.trySucceed() }))
        }
        #expect(!rescued, "the job waited in the LIFO slot for the monitor")
    }
}

@Suite struct ContinuationRemovalTests {
    @Test func waitsThatTimeOutDoNotPileUpOnAFutureThatNeverCompletes() throws {
        let never = Promise<Int>().future
        for _ in 0..<50 {
            #expect(throws: TimeoutError.self) { try never.wait(timeout: .zero) }
            #expect(throws: TimeoutError.self) { try never.waiting(timeout: .zero).wait(timeout: .seconds(10)) }
        }
        // At most the first continuation stays in the slot, which never moves back.
        #expect(never.pendingContinuations.count <= 1)
    }
}
