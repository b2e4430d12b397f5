import Glibc
import Synchronization
import Testing

@testable import TaskMachine

@Suite struct SchedulingTests {
    @Test func runExecutesOnAPoolWorker() throws {
        let thread = Future.run { RuntimeThread.current }
        #expect(try thread.wait(timeout: .seconds(10)).role == .poolWorker)
    }

    @Test func runWithACancelledTokenEndsCancelledWithoutRunning() throws {
        let source = CancellationTokenSource()
        source.cancel()
        let ran = Flag()
        let future = Future.run(cancellation: source.token) { ran.set() }
        #expect(future.status == .cancelled)
        #expect(future.cancellationToken == source.token)
        #expect(throws: OperationCancelledError.self) { try future.wait() }
        #expect(!ran.isSet)
    }

    @Test func aBodyThrowingItsOwnTokensCancellationEndsCancelledAnyOtherFails() throws {
        let own = CancellationTokenSource()
        let other = CancellationTokenSource()
        other.cancel()
        let cancelled = Future.run(cancellation: own.token) { () throws -> Int in
            throw OperationCancelledError(token: own.token)
        }
        let failed = Future.run(cancellation: own.token) { () throws -> Int in
            try other.token.throwIfCancellationRequested()
            return 0
        }
        _ = try? cancelled.wait(timeout: .seconds(10))
        _ = try? failed.wait(timeout: .seconds(10))
        #expect(cancelled.status == .cancelled)
        #expect(failed.status == .failed)
    }

    @Test func runWithAnArgumentHandsItToTheBodyOnAWorkerAndLetsItGo() throws {
        final class Tracked: Sendable {
            let number: Int
            init(_ number: Int) { self.number = number }
        }
        /// Larger than a future's two words: kept in a box of its own.
        struct Large: Sendable {
            let object: Tracked
            let extra: (Int, Int, Int)
        }
        weak var small: Tracked?
        weak var large: Tracked?
        let squares = (1...50).map { Future.run(with: $0) { $0 * $0 } }
        #expect(try squares.map { try $0.wait(timeout: .seconds(10)) } == (1...50).map { $0 * $0 })
        let role = Future.run(with: ()) { RuntimeThread.current.role }
        #expect(try role.wait(timeout: .seconds(10)) == .poolWorker)

        let gate = Promise<Void>()
        var futures: [Future<Int>] = []
        do {
            let a = Tracked(3)
            let b = Tracked(4)
            small = a
            large = b
            futures.append(
                Future.run(with: a) { value in
                    try gate.future.wait(timeout: .seconds(10))
                    return value.number
                })
            futures.append(
                Future.run(with: Large(object: b, extra: (1, 2, 3))) { value in
                    try gate.future.wait(timeout: .seconds(10))
                    return value.object.number + value.extra.2
                })
        }
        try gate.succeed()
        #expect(try futures.map { try $0.wait(timeout: .seconds(10)) } == [3, 7])
        // The futures are still here; the arguments went with their bodies.
        #expect(small == nil && large == nil)
    }

    @Test func runKeepsItsClosureAndCapturesUntilTheFutureGoes() throws {
        final class Tracked: Sendable {
            let number: Int
            init(_ number: Int) { self.number = number }
        }
        weak var captured: Tracked?
        var future: Future<Int>?
        do {
            let tracked = Tracked(7)
            captured = tracked
            future = Future.run { tracked.number * 6 }
        }
        #expect(try future?.wait(timeout: .seconds(10)) == 42)
        // The closure is freed with the future, by the thread that made it, not by the worker.
        #expect(captured != nil)
        future = nil
        // The worker may still hold the job for the moment after it completed the future.
        let deadline = ContinuousClock.now + .seconds(10)
        while captured != nil && ContinuousClock.now < deadline { sched_yield() }
        #expect(captured == nil)
    }

    @Test func runWithAnArgumentAndACancelledTokenNeitherRunsNorKeepsIt() throws {
        final class Tracked: Sendable {}
        let source = CancellationTokenSource()
        source.cancel()
        weak var kept: Tracked?
        let ran = Flag()
        var cancelled: Future<Void>?
        do {
            let argument = Tracked()
            kept = argument
            cancelled = Future.run(with: argument, cancellation: source.token) { _ in ran.set() }
        }
        #expect(cancelled?.status == .cancelled)
        #expect(cancelled?.cancellationToken == source.token)
        #expect(!ran.isSet)
        #expect(kept == nil)
    }

    @Test func delayCompletesAfterItsDurationOnThePool() throws {
        let start = ContinuousClock.now
        let delay = Future.delay(.milliseconds(30))
        let thread = Promise<RuntimeThread>()
        delay.getAwaiter().onCompleted { thread.trySucceed(RuntimeThread.current) }
        try delay.wait(timeout: .seconds(10))
        #expect(ContinuousClock.now - start >= .milliseconds(30))
        // The timer thread only hands the delay to the pool; the continuation runs there.
        #expect(try thread.future.wait(timeout: .seconds(10)).role == .poolWorker)
    }

    @Test func aNegativeDelayIsAClearError() {
        let future = Future.delay(.milliseconds(-5))
        #expect(throws: InvalidArgumentError.self) { try future.getResult() }
    }

    @Test func cancellingADelayMarksItCancelledBeforeCancelReturnsButRunsNoContinuationInside() throws {
        let source = CancellationTokenSource()
        let delay = Future.delay(.seconds(30), cancellation: source.token)
        let ranOn = Promise<RuntimeThread>()
        delay.getAwaiter().onCompleted { ranOn.trySucceed(RuntimeThread.current) }
        source.cancel()
        #expect(delay.status == .cancelled)
        #expect(throws: OperationCancelledError.self) { try delay.wait(timeout: .seconds(10)) }
        // Queued to the pool, not run on this thread inside cancel().
        #expect(try ranOn.future.wait(timeout: .seconds(10)) != RuntimeThread.current)
    }

    @Test func pendingDelaysHoldNoThreads() throws {
        let source = CancellationTokenSource()
        let delays = (0..<10_000).map { _ in Future.delay(.seconds(60), cancellation: source.token) }
        let during = RuntimeStatistics.current
        // Ten thousand waits, one timer thread. (The pool's size is not compared: suites running in
        // parallel block and starve workers, and the pool grows for them, not for these delays.)
        #expect(during.pendingTimers >= 10_000)
        #expect(during.timerThreads == 1)
        source.cancel()
        for delay in delays { #expect(delay.status == .cancelled) }
    }

    @Test func cancelAfterCancelsLater() throws {
        let source = try CancellationTokenSource(cancelAfter: .milliseconds(20))
        let delay = Future.delay(.seconds(30), cancellation: source.token)
        #expect(throws: OperationCancelledError.self) { try delay.wait(timeout: .seconds(10)) }
        #expect(throws: InvalidArgumentError.self) { try CancellationTokenSource().cancel(after: .seconds(-1)) }
    }

    @Test func linkedSourcesCancelWithAnyParent() {
        let first = CancellationTokenSource()
        let second = CancellationTokenSource()
        let linked = CancellationTokenSource.linked(to: first.token, second.token)
        #expect(!linked.isCancellationRequested)
        second.cancel()
        #expect(linked.isCancellationRequested)
        #expect(!first.isCancellationRequested)
    }

    @Test func registrationsRunOnCancelMostRecentFirstAndCanBeRemoved() {
        let source = CancellationTokenSource()
        let order = Locked<[Int]>([])
        source.token.register { order.withLock { $0.append(1) } }
        let removed = source.token.register { order.withLock { $0.append(2) } }
        source.token.register { order.withLock { $0.append(3) } }
        #expect(removed.unregister())
        source.cancel()
        #expect(order.withLock { $0 } == [3, 1])
        // Registering after cancellation runs the callback at once.
        source.token.register { order.withLock { $0.append(4) } }
        #expect(order.withLock { $0 } == [3, 1, 4])
    }

    @Test func aCallbackInTheSourcesOwnSlotKeepsItsPlaceInTheOrder() throws {
        // The first slot lives in the source and is reused when freed; the others, and the order of
        // them all, live in extras made on demand (by a second callback, or by a timer).
        let order = Locked<[Int]>([])
        let source = CancellationTokenSource()
        let oldest = source.token.register { order.withLock { $0.append(1) } }  // slot 0
        source.token.register { order.withLock { $0.append(2) } }  // slot 1: the extras are made
        #expect(oldest.unregister())
        let newest = source.token.register { order.withLock { $0.append(3) } }
        #expect(newest.slot == oldest.slot)  // slot 0 again, and now the newest
        source.token.register { order.withLock { $0.append(4) } }
        source.cancel()
        #expect(order.withLock { $0 } == [4, 3, 2])

        // Extras made by a timer first: the callback in slot 0 is still older than the next one.
        order.withLock { $0 = [] }
        let timed = CancellationTokenSource()
        try timed.cancel(after: .seconds(3600))
        timed.token.register { order.withLock { $0.append(1) } }
        timed.token.register { order.withLock { $0.append(2) } }
        timed.cancel()
        #expect(order.withLock { $0 } == [2, 1])
    }

    @Test func aFreedSlotIsReusedAndAStaleRegistrationCannotRemoveItsNewTenant() {
        let source = CancellationTokenSource()
        let ran = Locked<[Int]>([])
        let first = source.token.register { ran.withLock { $0.append(1) } }
        #expect(first.unregister())
        #expect(!first.unregister())  // already gone
        let second = source.token.register { ran.withLock { $0.append(2) } }
        #expect(second.slot == first.slot)  // the freed slot, under a new generation
        #expect(!first.unregister())  // the stale registration leaves the new tenant alone
        source.cancel()
        #expect(ran.withLock { $0 } == [2])
        #expect(!second.unregister())  // ran already
    }

    @Test func aCallbackUnregisteredWhileCancelRunsOthersIsRemovedAndNeverRuns() throws {
        // Callbacks leave the table one at a time as they run: one not reached yet can still be
        // removed, and `unregister()` says so.
        let source = CancellationTokenSource()
        let olderRan = Flag()
        let older = source.token.register { olderRan.set() }
        let entered = Promise<Void>()
        let proceed = Promise<Void>()
        let newest = source.token.register {  // runs first, and holds the cancel until told
            entered.trySucceed()
            _ = try? proceed.future.wait(timeout: .seconds(10))
        }
        let cancelling = Future.run { source.cancel() }
        try entered.future.wait(timeout: .seconds(10))
        #expect(!newest.unregister())  // running: too late
        #expect(older.unregister())  // not reached yet: removed
        proceed.trySucceed()
        try cancelling.wait(timeout: .seconds(10))
        #expect(!olderRan.isSet)
    }

    @Test func unregisteringACallbackWhoseReleaseFreesALinkedSourceDoesNotDeadlock() throws {
        // The removed closure holds the last reference to a source linked to this one; freeing it
        // unregisters the link from this source, which must not be locked at that moment.
        let parent = CancellationTokenSource()
        let done = Future.run {
            let registration = Self.registerHoldingALinkedSource(of: parent)
            #expect(registration.unregister())
        }
        try done.wait(timeout: .seconds(10))
        // The same through cancel(), which releases each callback after running it.
        let other = CancellationTokenSource()
        _ = Self.registerHoldingALinkedSource(of: other)
        try Future.run { other.cancel() }.wait(timeout: .seconds(10))
    }

    private static func registerHoldingALinkedSource(of parent: CancellationTokenSource) -> CancellationRegistration {
        let child = CancellationTokenSource.linked(to: parent.token)
        return parent.token.register { _ = child }
    }

    @Test func manyRegistrationsOnOneTokenAreRemovedInAnyOrder() {
        // Removal is constant time: 20,000 registrations removed from the middle out would take
        // hundreds of millions of steps with a linear search, and this test would crawl.
        let source = CancellationTokenSource()
        let ran = Atomic<Int>(0)
        var registrations = (0..<20_000).map { _ in source.token.register { ran.add(1, ordering: .relaxed) } }
        var random = SystemRandomNumberGenerator()
        registrations.shuffle(using: &random)
        for registration in registrations.prefix(15_000) { #expect(registration.unregister()) }
        source.cancel()
        #expect(ran.load(ordering: .relaxed) == 5_000)
    }

    @Test func delaysSharingOneTokenFireOrCancelEachOnce() throws {
        let source = CancellationTokenSource()
        let fired = (0..<2_000).map { _ in Future.delay(.milliseconds(1), cancellation: source.token) }
        for delay in fired { try delay.wait(timeout: .seconds(10)) }
        // Every fired delay took itself off the source: cancelling now touches none of them.
        let pending = (0..<2_000).map { _ in Future.delay(.seconds(3_600), cancellation: source.token) }
        source.cancel()
        #expect(fired.allSatisfy { $0.status == .succeeded })
        #expect(pending.allSatisfy { $0.status == .cancelled && $0.cancellationToken == source.token })
        #expect(Future.delay(.seconds(1), cancellation: source.token).status == .cancelled)
    }

    @Test func whenAllWaitsForEveryInputAndKeepsOrder() throws {
        let futures = (1...5).map { value in Future.run { value * 10 } }
        #expect(try Future.whenAll(futures).wait(timeout: .seconds(10)) == [10, 20, 30, 40, 50])
        #expect(try Future<Int>.whenAll([]).getResult() == [])
    }

    @Test func whenAllFailsWithEveryErrorIfAnyFailedElseIsCancelledIfAnyWas() throws {
        let cancelled = Future<Int>.cancelled()
        let failedA = Future<Int>.failed(TestError(code: 1))
        let failedB = Future<Int>.failed(TestError(code: 2))
        let all = Future.whenAll([.succeeded(1), cancelled, failedA, failedB])
        #expect(all.status == .failed)
        #expect(all.errors.compactMap { $0 as? TestError } == [TestError(code: 1), TestError(code: 2)])
        let someCancelled = Future.whenAll([.succeeded(1), cancelled])
        #expect(someCancelled.status == .cancelled)
        let mixed = Future.whenAll(mixed: [Future.succeeded(1), Future.succeeded("a")])
        #expect(mixed.status == .succeeded)
    }

    @Test func whenAnyCompletesWithTheFirstToComplete() throws {
        let slow = Promise<Int>()
        let fast = Promise<Int>()
        let any = Future.whenAny(slow.future, fast.future)
        #expect(!any.isCompleted)
        try fast.succeed(2)
        #expect(try any.wait(timeout: .seconds(10)) === fast.future)
        #expect(throws: InvalidArgumentError.self) { try Future<Int>.whenAny([]).getResult() }
    }

    @Test func waitingGivesUpOnTimeoutOrCancellationWithoutTouchingTheSource() throws {
        let source = Promise<Int>()
        let timedOut = source.future.waiting(timeout: .milliseconds(20))
        #expect(throws: TimeoutError.self) { try timedOut.wait(timeout: .seconds(10)) }
        let cancellation = CancellationTokenSource()
        let cancelled = source.future.waiting(cancellation: cancellation.token)
        cancellation.cancel()
        #expect(cancelled.status == .cancelled)
        #expect(source.future.status == .pending)
        let completed = source.future.waiting(timeout: .seconds(10))
        try source.succeed(3)
        #expect(try completed.wait(timeout: .seconds(10)) == 3)
        #expect(source.future.waiting(timeout: .seconds(1)) === source.future)  // completed: as it is
        // A negative timeout is refused, completed or not, as `wait(timeout:)` refuses it.
        let negative = source.future.waiting(timeout: .seconds(-1))
        #expect(negative.status == .failed)
        #expect(negative.error is InvalidArgumentError)
    }

    @Test func waitingKeepsNoTokenSourceAliveAndLetsGoOfItsSourceWhenCancelled() {
        // The callback on the token holds the wait, not the other way round: a token source the
        // caller drops is freed while the wait goes on.
        weak var weakTokenSource: CancellationTokenSource?
        let pending = Promise<Int>()
        do {
            let tokenSource = CancellationTokenSource()
            weakTokenSource = tokenSource
            let output = pending.future.waiting(cancellation: tokenSource.token)
            #expect(output.status == .pending)
        }
        #expect(weakTokenSource == nil)
        // Once cancelled, the wait holds nothing of a source that never completes.
        weak var weakWaited: Future<Int>?
        weak var weakOutput: Future<Int>?
        let tokenSource = CancellationTokenSource()
        do {
            let never = Promise<Int>()
            let output = never.future.waiting(cancellation: tokenSource.token)
            weakWaited = never.future
            weakOutput = output
            tokenSource.cancel()
            #expect(output.status == .cancelled)
        }
        #expect(weakWaited == nil)
        #expect(weakOutput == nil)
    }

    @Test func aWaitThatGaveUpLetsGoOfItsOutputThoughItsSourceNeverCompletes() throws {
        // The wait's forwarder is the source's only continuation, which stays in its slot until the
        // source completes: once the wait has timed out or been cancelled, it holds nothing of it.
        let never = Promise<Int>()
        let tokenSource = CancellationTokenSource()
        weak var weakCancelled: Future<Int>?
        do {
            let output = never.future.waiting(cancellation: tokenSource.token)
            weakCancelled = output
            tokenSource.cancel()
            #expect(output.status == .cancelled)
        }
        #expect(weakCancelled == nil)
        let other = Promise<Int>()
        weak var weakTimedOut: Future<Int>?
        do {
            let output = other.future.waiting(timeout: .milliseconds(1))
            weakTimedOut = output
            #expect(throws: TimeoutError.self) { try output.wait(timeout: .seconds(10)) }
        }
        // The timer's worker lets go of the wait just after it fails the output.
        let deadline = ContinuousClock.now + .seconds(10)
        while weakTimedOut != nil && ContinuousClock.now < deadline { usleep(1000) }
        #expect(weakTimedOut == nil)
        #expect(never.future.status == .pending && other.future.status == .pending)
    }

    @Test func waitingForwardsACompletionRunQueuedAfterItsSourceWasDropped() throws {
        // The forwarder is queued (it is not the source's first continuation, or the source runs
        // its continuations asynchronously), and the caller drops the source before it runs.
        for asynchronous in [false, true] {
            let tokenSource = CancellationTokenSource()
            var promise: Promise<Int>? = Promise<Int>(runContinuationsAsynchronously: asynchronous)
            promise!.future.onCompletion(.item(ClosureWorkItem {}))
            let output = promise!.future.waiting(cancellation: tokenSource.token)
            promise!.trySucceed(5)
            promise = nil
            #expect(try output.wait(timeout: .seconds(10)) == 5)
        }
    }

    @Test func waitingIsCancelledThoughNothingElseHoldsItsSource() {
        let tokenSource = CancellationTokenSource()
        let output = Promise<Int>().future.waiting(cancellation: tokenSource.token)  // the promise is dropped
        tokenSource.cancel()
        #expect(output.status == .cancelled)
        #expect(output.cancellationToken == tokenSource.token)
    }

    @Test func whenAnyLetsGoOfTheInputsThatLost() throws {
        // Once an input wins, the others hold nothing of the call: a loser that never completes
        // neither keeps the result alive nor piles up entries, raced again and again.
        let never = Promise<Int>()
        weak var weakOutput: Future<Future<Int>>?
        weak var weakWinner: Future<Int>?
        do {
            let winner = Promise<Int>()
            let any = Future.whenAny([never.future, winner.future])
            try winner.succeed(2)
            #expect(try any.wait(timeout: .seconds(10)) === winner.future)
            weakOutput = any
            weakWinner = winner.future
        }
        #expect(weakOutput == nil)
        #expect(weakWinner == nil)
        for round in 0..<100 {
            let other = Promise<Int>()
            let any = Future.whenAny([never.future, other.future])
            try other.succeed(round)
            _ = try any.wait(timeout: .seconds(10))
        }
        #expect(never.future.pendingContinuations.count <= 1)
        weak var weakLoser: Future<Int>?
        do {
            let loser = Promise<Int>()
            weakLoser = loser.future
            _ = try Future.whenAny([loser.future, .succeeded(1)]).getResult()
            _ = try Future.whenAny([loser.future, Future.run { 1 }]).wait(timeout: .seconds(10))
        }
        // The winner's worker lets go of the inputs just after it completes the result.
        let deadline = ContinuousClock.now + .seconds(10)
        while weakLoser != nil && ContinuousClock.now < deadline { usleep(1000) }
        #expect(weakLoser == nil)
    }

    @Test func runWithNoTokenFailsWhenItsBodyThrowsACancellation() {
        let future = Future.run { () throws -> Int in throw OperationCancelledError(token: .none) }
        #expect(throws: OperationCancelledError.self) { try future.wait(timeout: .seconds(10)) }
        #expect(future.status == .failed)
        let source = CancellationTokenSource()
        let own = Future.run(cancellation: source.token) { () throws -> Int in
            throw OperationCancelledError(token: source.token)
        }
        _ = try? own.wait(timeout: .seconds(10))
        #expect(own.status == .cancelled)
    }

    @Test func aNegativeWaitingTimeoutIsAClearError() {
        let pending = Promise<Int>().future
        #expect(throws: InvalidArgumentError.self) { try pending.waiting(timeout: .seconds(-1)).getResult() }
    }

    @Test func yieldAlwaysSuspendsAndResumesThroughTheQueue() throws {
        let awaiter = Future.yield().getAwaiter()
        #expect(!awaiter.isCompleted)
        let ranOn = Promise<RuntimeThread>()
        awaiter.onCompleted { ranOn.trySucceed(RuntimeThread.current) }
        #expect(try ranOn.future.wait(timeout: .seconds(10)).role == .poolWorker)
    }

    @Test func threadsStartOnlyWhenNeededAndAreCounted() throws {
        _ = try Future.run { 1 }.wait(timeout: .seconds(10))
        let statistics = RuntimeStatistics.current
        #expect(statistics.poolWorkers >= RuntimeStatistics.targetPoolWorkers)
        #expect(
            statistics.busyWorkers + statistics.idleWorkers + statistics.blockedWorkers <= statistics.poolWorkers + 1)
    }
}

/// A boolean shared between threads.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    func clear() { value.store(false, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}
