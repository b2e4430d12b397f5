import CAllocationCounter
import CTaskMachine
import Glibc
import Synchronization
import Testing

@testable import TaskMachine

/// A timer that counts its fires.
private final class ProbeTimer: TimerEntry {
    let fires = Atomic<Int>(0)
    let onFire: (@Sendable () -> Void)?

    init(deadline: Int64, queue: TimerQueue, onFire: (@Sendable () -> Void)? = nil) {
        self.onFire = onFire
        super.init(deadline: deadline, queue: queue)
    }

    override func fire() {
        fires.add(1, ordering: .relaxed)
        onFire?()
    }
}

/// Runs `onRelease` when the last reference to it goes.
private final class ReleaseWitness: Sendable {
    let onRelease: @Sendable () -> Void

    init(_ onRelease: @escaping @Sendable () -> Void) {
        self.onRelease = onRelease
    }

    deinit { onRelease() }
}

/// Polls `condition` every millisecond or so until it holds or `limit` passes; returns whether it held.
private func eventually(within limit: Duration = .seconds(20), _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + limit
    while !condition() {
        if ContinuousClock.now >= deadline { return false }
        usleepish()
    }
    return true
}

/// Whether this process runs under a sanitizer (which owns the allocator, so nothing is counted):
/// the big tests scale down there, as it is ten times slower.
private var sanitized: Bool { tm_allocations_interposed() == 0 }

@Suite struct TimerTests {
    @Test func aDurationBeyondInt64SecondsMeansNeverRatherThanATrap() {
        // A `Duration` counts attoseconds in 128 bits, up to about 1.7e20 seconds, and its
        // `components` trap past Int64.max seconds: a delay or a timeout that long is "never".
        let forever = Duration.seconds(UInt64.max)
        #expect(forever.totalNanoseconds == .max)
        #expect((.zero - forever).totalNanoseconds == .min)
        let delay = Future.delay(forever)
        #expect(delay.status == .pending)
        #expect(delay.cancel())
        let source = CancellationTokenSource()
        #expect(throws: Never.self) { try source.cancel(after: forever) }
        #expect(!source.isCancellationRequested)
        let waited = Promise<Int>().future.waiting(timeout: forever)
        #expect(waited.status == .pending)
        source.cancel()
        #expect(TimeoutError(timeout: forever).description.hasSuffix(" s"))
        #expect(TimeoutError(timeout: .nanoseconds(Int64.min)).description.hasSuffix(" s"))
    }

    // MARK: The wheel alone (deterministic)

    @Test func theWheelExpiresEveryTimerAtItsTickInDeadlineOrderAndForgetsRemovedOnes() {
        var random = SplitMix(state: 42)
        var wheel = TimingWheel()
        // Ticks across every level, and some past the wheel's span (the far list).
        let ticks: [(first: UInt64, count: UInt64)] = [
            (1, 64), (1, 4_096), (1, 300_000), (1, 20_000_000), (1, 1 << 37), (TimingWheel.span * 3, 1_000),
        ]
        _ = checkExpiryInDeadlineOrder(of: &wheel, random: &random, ticks: ticks)
    }

    @Test func aTimerDueAtOrBeforeTheWheelsTimeIsRefused() {
        var wheel = TimingWheel()
        checkElapsedTicksAreRefused(by: &wheel)
    }

    // MARK: Delays on the shared queue

    @Test func delaysOfDifferentLengthsCompleteInDeadlineOrder() throws {
        let order = Locked<[Int]>([])
        let lengths = [5, 2, 7, 0, 4, 1, 6, 3]
        let delays = lengths.map { length in
            // 75 ms apart: each continuation runs on whichever worker fires its delay, and a worker
            // descheduled on a loaded machine (25 ms apart, seen once) lets the next one overtake it.
            let delay = Future.delay(.milliseconds(20 + 75 * length))
            delay.getAwaiter().onCompleted { order.withLock { $0.append(length) } }
            return delay
        }
        for delay in delays { try delay.wait(timeout: .seconds(20)) }
        #expect(eventually { order.withLock { $0.count } == lengths.count })
        #expect(order.withLock { $0 } == lengths.sorted())
    }

    @Test func aZeroDelayCompletesAtOnceAndAPastDeadlineFiresPromptly() throws {
        #expect(Future.delay(.zero).status == .succeeded)
        let start = ContinuousClock.now
        try Future.delay(.nanoseconds(1)).wait(timeout: .seconds(10))
        #expect(ContinuousClock.now - start < .seconds(5))

        // A timer whose deadline has passed goes straight to the pool, never into the wheel.
        let queue = TimerQueue(threadName: "timer-test")
        defer { queue.stop() }
        let fired = Promise<Void>()
        let timer = ProbeTimer(deadline: Clock.now - 1_000_000_000, queue: queue) { fired.trySucceed(()) }
        queue.schedule(timer)
        try fired.future.wait(timeout: .seconds(10))
        #expect(timer.fires.load(ordering: .relaxed) == 1)
        #expect(queue.pendingCount == 0)
        #expect(queue.threadCount == 0)
    }

    @Test func aNegativeDelayFailsWithInvalidArgumentError() {
        let delay = Future.delay(.milliseconds(-1))
        #expect(delay.status == .failed)
        #expect(delay.error is InvalidArgumentError)
        #expect(throws: InvalidArgumentError.self) { try delay.wait() }
    }

    @Test func aDelayUntilAnInstantEndsThereAndNotBefore() throws {
        // An instant that has passed, or is now, completes at once, as `Task.sleep(until:)` returns.
        #expect(Future.delay(until: .now - .seconds(1)).status == .succeeded)
        #expect(Future.delay(until: .now).status == .succeeded)

        let deadline = ContinuousClock.now + .milliseconds(30)
        let delays = (0..<3).map { _ in Future.delay(until: deadline) }
        for delay in delays { try delay.wait(timeout: .seconds(10)) }
        #expect(ContinuousClock.now >= deadline)

        // Equal instants convert to within a few microseconds, however far apart the conversions
        // are made; differences carry over; a far instant saturates.
        let first = Clock.nanoseconds(of: deadline)
        sleepForTests(milliseconds: 2)
        #expect(abs(Clock.nanoseconds(of: deadline) - first) < 20_000)
        let later = Clock.nanoseconds(of: deadline + .microseconds(1_500))
        #expect(abs(later - first - 1_500_000) < 20_000)
        #expect(Clock.nanoseconds(of: deadline + .seconds(Int64.max)) == .max)

        let source = CancellationTokenSource()
        let cancellable = Future.delay(until: .now + .seconds(3600), cancellation: source.token)
        #expect(cancellable.status == .pending)
        #expect(cancellable.diagnosticName.hasPrefix("delay(due in "))
        source.cancel()
        #expect(cancellable.status == .cancelled)
        #expect(cancellable.diagnosticName == "delay(cancelled)")
        #expect(Future.delay(until: .now + .seconds(1), cancellation: source.token).status == .cancelled)
    }

    @Test func farDeadlinesDoNotOverflowAndCanBeCancelled() throws {
        let source = CancellationTokenSource()
        weak var released: Future<Void>?
        do {
            let hours = Future.delay(.seconds(3 * 3600), cancellation: source.token)
            let forever = Future.delay(.seconds(Int64.max), cancellation: source.token)
            let huge = Future.delay(.nanoseconds(Int64.max), cancellation: source.token)
            released = forever
            #expect(hours.status == .pending && forever.status == .pending && huge.status == .pending)
            #expect(forever.diagnosticName.hasPrefix("delay(due in "))
            // The time left, however far: 10,800 s, not capped.
            let name = hours.diagnosticName
            #expect(name.hasPrefix("delay(due in 1079") || name.hasPrefix("delay(due in 1080"), "\(name)")
            source.cancel()
            for delay in [hours, forever, huge] {
                #expect(delay.status == .cancelled)
                #expect(throws: OperationCancelledError.self) { try delay.wait(timeout: .seconds(10)) }
            }
        }
        // The wheel let go of it when it was cancelled, not at its deadline.
        #expect(eventually { released == nil })
    }

    @Test func cancellingADelayReleasesItAtOnce() {
        let source = CancellationTokenSource()
        weak var released: Future<Void>?
        do {
            let delay = Future.delay(.seconds(3600), cancellation: source.token)
            released = delay
        }
        #expect(released != nil, "the wheel holds a pending delay")
        source.cancel()
        #expect(eventually { released == nil })
    }

    @Test func aSourceDroppedWithItsTimerPendingStillCancelsAWaitOnItsToken() throws {
        // `waiting(cancellation:)` keeps no token source alive, so the timer of `cancel(after:)`
        // must: a source made for a timeout and dropped at once still cancels, then goes.
        weak var weakSource: CancellationTokenSource?
        do {
            let never = Promise<Int>()
            let output = never.future.waiting(
                cancellation: try CancellationTokenSource(cancelAfter: .milliseconds(5)).token)
            let error = #expect(throws: OperationCancelledError.self) { try output.wait(timeout: .seconds(10)) }
            #expect(error?.token == output.cancellationToken)
            weakSource = error?.token.source
        }
        // The output and its error held the token (and the promise held the output, through the
        // forwarder still in its slot); with them gone and the timer fired, nothing keeps the source.
        #expect(eventually { weakSource == nil })
    }

    @Test func aSourceWhoseTimerCanNeverFireIsFreedWhenDropped() throws {
        // A pending timer keeps its source; one that would never fire is not made at all, and
        // replacing an earlier one with it takes that one out.
        weak var weakSource: CancellationTokenSource?
        do {
            let source = try CancellationTokenSource(cancelAfter: .seconds(3600))
            try source.cancel(after: .seconds(UInt64.max))
            weakSource = source
        }
        #expect(weakSource == nil)
    }

    @Test func cancellingAfterTheDelayFiredChangesNothing() throws {
        let source = CancellationTokenSource()
        let delay = Future.delay(.milliseconds(2), cancellation: source.token)
        try delay.wait(timeout: .seconds(10))
        source.cancel()
        #expect(delay.status == .succeeded)
    }

    @Test func aDelayCancelledOnItsOwnEndsCancelledAndIsReleasedAtOnce() throws {
        weak var released: Delay?
        let ranOn = Promise<RuntimeThread>()
        do {
            let delay = Future.delay(.seconds(3600))
            released = delay
            delay.getAwaiter().onCompleted { ranOn.trySucceed(RuntimeThread.current) }
            #expect(delay.cancel())
            #expect(delay.status == .cancelled)
            #expect(delay.diagnosticName == "delay(cancelled)")
            let error = #expect(throws: OperationCancelledError.self) { try delay.wait(timeout: .seconds(10)) }
            #expect(error?.token == CancellationToken.none)
            #expect(!delay.cancel(), "a second cancel finds it ended")
        }
        // Queued to the pool, not run on this thread inside cancel().
        #expect(try ranOn.future.wait(timeout: .seconds(10)) != RuntimeThread.current)
        // The wheel let go of it when it was cancelled, not at its deadline.
        #expect(eventually { released == nil })
    }

    @Test func cancellingADelayThatEndedReturnsFalseAndChangesNothing() throws {
        let fired = Future.delay(.milliseconds(1))
        try fired.wait(timeout: .seconds(10))
        #expect(!fired.cancel())
        #expect(fired.status == .succeeded)
        // Delays that ended before they began.
        #expect(!Future.delay(.zero).cancel())
        #expect(!Future.delay(until: .now - .seconds(1)).cancel())
        let negative = Future.delay(.seconds(-1))
        #expect(!negative.cancel())
        #expect(negative.error is InvalidArgumentError)
        let source = CancellationTokenSource()
        source.cancel()
        let early = Future.delay(.seconds(1), cancellation: source.token)
        #expect(!early.cancel())
        #expect(early.cancellationToken == source.token)
    }

    @Test func aDelayCancelledOnItsOwnLeavesItsTokensSource() throws {
        let source = CancellationTokenSource()
        weak var released: Delay?
        do {
            let delay = Future.delay(.seconds(3600), cancellation: source.token)
            released = delay
            #expect(delay.cancel())
            // Cancelled directly, not through the token.
            #expect(delay.cancellationToken == CancellationToken.none)
        }
        // Neither the wheel nor the source, which lives on, keeps it.
        #expect(eventually { released == nil })

        // The token's cancellation and a direct one: the first wins, and the other does nothing.
        let throughToken = Future.delay(.seconds(3600), cancellation: source.token)
        source.cancel()
        #expect(!throughToken.cancel())
        #expect(throughToken.cancellationToken == source.token)
    }

    @Test func delaysCancelledAsTheyExpireEachEndExactlyOnce() throws {
        let count = sanitized ? 300 : 2_000
        let source = CancellationTokenSource()
        let ends = Atomic<Int>(0)
        let delays = (0..<count).map { index in
            let delay = Future.delay(.microseconds(100 * (index % 40)), cancellation: source.token)
            delay.getAwaiter().onCompleted { ends.add(1, ordering: .relaxed) }
            return delay
        }
        // Cancel about when the middle ones expire.
        sleepForTests(milliseconds: 2)
        source.cancel()
        #expect(eventually { ends.load(ordering: .relaxed) == count })
        for delay in delays { #expect(delay.status == .succeeded || delay.status == .cancelled) }
        sleepForTests(milliseconds: 20)
        #expect(ends.load(ordering: .relaxed) == count)
    }

    @Test func delaysCancelledOnTheirOwnAsTheyExpireEachEndExactlyOnce() throws {
        let count = sanitized ? 300 : 2_000
        let ends = Atomic<Int>(0)
        let delays = (0..<count).map { index in
            let delay = Future.delay(.microseconds(100 * (index % 40)))
            delay.getAwaiter().onCompleted { ends.add(1, ordering: .relaxed) }
            return delay
        }
        // Cancel about when the middle ones expire.
        sleepForTests(milliseconds: 2)
        let cancelled = delays.filter { $0.cancel() }.count
        #expect(eventually { ends.load(ordering: .relaxed) == count })
        #expect(delays.filter { $0.status == .cancelled }.count == cancelled)
        #expect(delays.filter { $0.status == .succeeded }.count == count - cancelled)
        sleepForTests(milliseconds: 20)
        #expect(ends.load(ordering: .relaxed) == count)
    }

    // MARK: Timers on a queue of their own (exact counts)

    @Test func timersCancelledAsTheyFireEachSettleOnceAndThePendingCountReturnsToZero() throws {
        let queue = TimerQueue(threadName: "timer-test")
        defer { queue.stop() }
        let count = sanitized ? 500 : 5_000
        let start = Clock.now
        let timers = (0..<count).map { index in
            ProbeTimer(deadline: start + Int64(index % 50) * 100_000, queue: queue)
        }
        for timer in timers { queue.schedule(timer) }
        #expect(queue.threadCount == 1)
        // Cancel them while the timer thread expires them: from here and from a pool worker.
        let half = count / 2
        let cancelledByWorker = Future.run { timers[half...].filter { $0.cancel() }.count }
        let cancelledHere = timers[..<half].filter { $0.cancel() }.count
        let cancelled = cancelledHere + (try cancelledByWorker.wait(timeout: .seconds(20)))
        let fired = { timers.reduce(0) { $0 + $1.fires.load(ordering: .relaxed) } }
        #expect(eventually { fired() == count - cancelled })
        #expect(queue.pendingCount == 0)
        for timer in timers {
            #expect(timer.fires.load(ordering: .relaxed) <= 1)
            #expect(timer.isSettled)
            // Fired or cancelled already: cancelling again does nothing.
            #expect(!timer.cancel())
        }
        sleepForTests(milliseconds: 10)
        #expect(fired() == count - cancelled)
    }

    @Test func cancellingAFiredTimerReturnsFalse() throws {
        let queue = TimerQueue(threadName: "timer-test")
        defer { queue.stop() }
        let fired = Promise<Void>()
        let timer = ProbeTimer(deadline: Clock.deadline(after: .milliseconds(3)), queue: queue) {
            fired.trySucceed(())
        }
        queue.schedule(timer)
        try fired.future.wait(timeout: .seconds(10))
        #expect(!timer.cancel())
        #expect(timer.fires.load(ordering: .relaxed) == 1)
        #expect(queue.pendingCount == 0)
    }

    @Test func aCancelledTimerIsUnlinkedAndReleased() {
        let queue = TimerQueue(threadName: "timer-test")
        defer { queue.stop() }
        weak var released: ProbeTimer?
        do {
            let near = ProbeTimer(deadline: Clock.deadline(after: .seconds(3600)), queue: queue)
            let far = ProbeTimer(deadline: .max, queue: queue)
            released = near
            queue.schedule(near)
            queue.schedule(far)
            #expect(queue.pendingCount == 2)
            #expect(near.cancel())
            #expect(far.cancel())
            #expect(!near.cancel())
        }
        #expect(queue.pendingCount == 0)
        #expect(released == nil)
    }

    @Test func aLongTimerDoesNotHoldUpTheTimersThatExpiredWithIt() throws {
        // 64 timers with one deadline expire on one tick and reach the pool as one batch. The first
        // to fire keeps its worker busy for up to two seconds; the batch must have handed most of
        // the rest back to the pool first, so the other worker fires them meanwhile. At most the
        // few a worker runs one after another (`TimerQueue.timersRunTogether`, 16) wait behind
        // the slow one.
        let queue = TimerQueue(threadName: "timer-test")
        defer { queue.stop() }
        let release = Atomic<Bool>(false)
        let blockerStarted = Atomic<Bool>(false)
        let firedMeanwhile = Atomic<Int>(0)
        let deadline = Clock.now + 30_000_000
        let timers = (0..<64).map { _ in
            ProbeTimer(deadline: deadline, queue: queue) {
                if !blockerStarted.exchange(true, ordering: .acquiringAndReleasing) {
                    let giveUp = ContinuousClock.now + .seconds(2)
                    while !release.load(ordering: .acquiring) && ContinuousClock.now < giveUp { sched_yield() }
                } else {
                    firedMeanwhile.add(1, ordering: .relaxed)
                }
            }
        }
        for timer in timers { queue.schedule(timer) }
        #expect(eventually(within: .seconds(2)) { firedMeanwhile.load(ordering: .relaxed) >= 48 })
        release.store(true, ordering: .releasing)
        #expect(eventually { timers.allSatisfy { $0.fires.load(ordering: .relaxed) == 1 } })
    }

    @Test func delaysThatExpireTogetherAllFireBeforeAnyIsFreed() {
        // Eight delays due on one tick reach one worker as one job (up to
        // `TimerQueue.timersRunTogether`, 16, run together). The worker fires all eight and only
        // then, out of work, frees the delays and their continuations, whose captured witnesses
        // note it. Eight, not sixteen: a timer of another test due on the same tick made the
        // slot's run longer than 16, and the worker split it in two jobs, one freed before the
        // other fired.
        // `Locked`, not `Mutex`: `Mutex` takes a contended lock in the Synchronization library,
        // which ThreadSanitizer does not instrument, so when a fire and the test's check met at
        // the lock it reported their accesses as a race. `Locked`'s lock is the runtime's own C.
        let log = Locked<[String]>([])
        let deadline = ContinuousClock.now + .milliseconds(50)
        for _ in 0..<8 {
            let witness = ReleaseWitness { log.withLock { $0.append("freed") } }
            Future.delay(until: deadline).getAwaiter().onCompleted {
                withExtendedLifetime(witness) { log.withLock { $0.append("fired") } }
            }
        }
        #expect(eventually { log.withLock { $0.count } == 16 }, "every delay and continuation is freed")
        #expect(log.withLock { $0 } == Array(repeating: "fired", count: 8) + Array(repeating: "freed", count: 8))
    }

    @Test func anEarlierTimerWakesTheSleepingThread() throws {
        let queue = TimerQueue(threadName: "timer-test")
        defer { queue.stop() }
        let late = ProbeTimer(deadline: Clock.deadline(after: .seconds(3600)), queue: queue)
        queue.schedule(late)
        sleepForTests(milliseconds: 5)
        let fired = Promise<Void>()
        let start = ContinuousClock.now
        queue.schedule(
            ProbeTimer(deadline: Clock.deadline(after: .milliseconds(5)), queue: queue) { fired.trySucceed(()) })
        try fired.future.wait(timeout: .seconds(10))
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(late.cancel())
    }

    // MARK: Memory

    @Test func aPendingDelayIsOneAllocationOf104BytesAndAPlaceInTheWheel() throws {
        // Warm up: the timer thread and the first delay's metadata.
        try Future.delay(.milliseconds(1)).wait(timeout: .seconds(10))
        var delays: [Future<Void>] = []
        delays.reserveCapacity(1_000)
        // The object alone: future, timer and wheel links, 104 bytes (a 112-byte glibc chunk).
        var unscheduled: Delay?
        if let one = countAllocations({ unscheduled = Delay() }) {
            #expect(one.count == 1 && one.bytes <= 104)
        }
        withExtendedLifetime(unscheduled) {}
        // One instant, so that they share one slot (two, for an instant at a tick's edge), however
        // long making them takes on a loaded machine.
        let deadline = ContinuousClock.now + .milliseconds(20)
        let create = { for _ in 0..<1_000 { delays.append(Future.delay(until: deadline)) } }
        // Under a sanitizer nothing is counted, and `countAllocations` does not run its body.
        let counted = sanitized ? nil : countAllocations(create)
        if sanitized { create() }
        if let counted {
            // One object each, and the growth of the one or two slot arrays they land in: doubling
            // from one place, at most 11 allocations each, and under 2 × 1,024 places of 8 bytes in all.
            #expect(counted.count >= 1_000 && counted.count <= 1_000 + 2 * 11)
            #expect(counted.bytes <= 104 * 1_000 + 2 * (2 * 1_024 * 8 + 11 * 32))
        }
        for delay in delays { try delay.wait(timeout: .seconds(10)) }
    }

    @Test func aMillionPendingDelaysNeedOneTimerThreadAndAreReleasedWhenCancelled() throws {
        let count = sanitized ? 100_000 : 1_000_000
        let source = CancellationTokenSource()
        var weakSamples: [WeakFuture] = []
        let created = ContinuousClock.now
        var delays: [Future<Void>] = []
        delays.reserveCapacity(count)
        let create = { for _ in 0..<count { delays.append(Future.delay(.seconds(3600), cancellation: source.token)) } }
        // Under a sanitizer nothing is counted, and `countAllocations` does not run its body.
        let counted = sanitized ? nil : countAllocations(create)
        if sanitized { create() }
        let createTime = ContinuousClock.now - created
        if let counted {
            // They fit: one object each, 104 bytes, and a place in the wheel's slot array and in
            // the token source's registrations, 8 and 16 bytes or so, up to twice that while an
            // array has just doubled; about 200 bytes a delay, 200 MB for a million.
            #expect(counted.count <= UInt64(count) + 100, "\(counted.count) allocations for \(count) delays")
            #expect(counted.bytes / UInt64(count) <= 256, "\(counted.bytes / UInt64(count)) bytes a delay")
        }
        let during = RuntimeStatistics.current
        #expect(during.timerThreads == 1)
        #expect(during.pendingTimers >= count)
        for index in stride(from: 0, to: count, by: count / 100) { weakSamples.append(WeakFuture(delays[index])) }

        let cancelling = ContinuousClock.now
        source.cancel()
        let cancelTime = ContinuousClock.now - cancelling
        #expect(delays[0].status == .cancelled && delays[count - 1].status == .cancelled)
        delays = []
        // Other suites' timers may be pending meanwhile, but not a million of them.
        #expect(RuntimeStatistics.current.pendingTimers < count / 2)
        #expect(eventually { weakSamples.allSatisfy { $0.future == nil } })
        let bytes = counted.map { " \($0.bytes / UInt64(count)) bytes," } ?? ""
        print(
            "\(count) cancellable delays:\(bytes) created in \(createTime.readableText),"
                + " cancelled in \(cancelTime.readableText)")
    }
}

// Safe to share: the count is atomic, the rest immutable.
extension ProbeTimer: @unchecked Sendable {}

private struct WeakFuture {
    weak var future: Future<Void>?
    init(_ future: Future<Void>) { self.future = future }
}

/// Sleeps the calling thread.
private func sleepForTests(milliseconds: Int) {
    usleep(useconds_t(milliseconds * 1_000))
}
