import CTaskMachine
import Glibc
import Synchronization
import Testing

@testable import TaskMachine

/// A helper thread that runs `step(round)` once for each round the test posts, racing what the
/// test does meanwhile.
private final class Rival: @unchecked Sendable {
    private let posted = Atomic<Int>(0)
    private let handled = Atomic<Int>(0)
    let stopped = Atomic<Bool>(false)
    private var thread: pthread_t?

    init(_ name: String, step: @escaping @Sendable (Int) -> Void) {
        thread = spawnThread(name: name, role: .other) { [self] in
            var seen = 0
            while !stopped.load(ordering: .acquiring) {
                let round = posted.load(ordering: .acquiring)
                guard round != seen else {
                    sched_yield()
                    continue
                }
                seen = round
                step(round)
                handled.store(round, ordering: .releasing)
            }
        }
    }

    /// Starts the rival's step for `round`.
    func post(_ round: Int) { posted.store(round, ordering: .releasing) }

    /// Waits until the rival's step for `round` has returned.
    func waitUntilHandled(_ round: Int) {
        while handled.load(ordering: .acquiring) != round { sched_yield() }
    }

    /// Stops the thread and joins it.
    func finish() {
        stopped.store(true, ordering: .releasing)
        if let thread { pthread_join(thread, nil) }
    }
}

/// Runs `body(round)` for rounds 1, 2, ... for a second.
private func forASecond(_ body: (Int) throws -> Void) rethrows {
    let deadline = ContinuousClock.now + .seconds(1)
    var round = 0
    while ContinuousClock.now < deadline {
        round += 1
        try body(round)
    }
}

/// A read loop on a pooled source, as a method that awaits the same source again and again is: each
/// run reads the current operation, resets the source and registers itself for the next operation.
private final class ReadLoop: WorkItem, @unchecked Sendable {
    let core = ValueFutureSourceCore<Int>()
    /// Runs that found their operation pending: resumed by no completion.
    let early = Atomic<Int>(0)
    let reads = Atomic<Int>(0)
    let refused = Atomic<Int>(0)
    let stopped = Atomic<Bool>(false)

    override func run() {
        guard (try? core.getResult(token: core.version)) != nil else {
            early.add(1, ordering: .relaxed)
            return stopped.store(true, ordering: .releasing)
        }
        reads.add(1, ordering: .relaxed)
        guard !stopped.load(ordering: .acquiring) else { return }
        core.reset()
        do { try core.register(.item(self), token: core.version) } catch {
            refused.add(1, ordering: .relaxed)
            stopped.store(true, ordering: .releasing)
        }
    }
}

/// What a loop of awaits on a pooled method and the threads completing them share: the operation
/// waiting for a producer, and what the loop saw.
private final class PooledAwaitHub: @unchecked Sendable {
    /// A retained pending future, the one the pooled method awaits, or 0 when none waits.
    let offered = Atomic<UInt>(0)
    /// Runs that found their use pending: resumed by no completion.
    let early = Atomic<Int>(0)
    /// Awaits refused, or failed otherwise.
    let refused = Atomic<Int>(0)
    let reads = Atomic<Int>(0)
    let stopped = Atomic<Bool>(false)
    let finished = Atomic<Bool>(false)

    /// A new operation for a producer to complete.
    func offer() -> Future<Int> {
        let future = Promise<Int>().future
        let word = UInt(bitPattern: Unmanaged.passRetained(future).toOpaque())
        let old = offered.exchange(word, ordering: .acquiringAndReleasing)
        if old != 0 { Unmanaged<Future<Int>>.fromOpaque(UnsafeRawPointer(bitPattern: old)!).release() }
        return future
    }

    /// The operation waiting for a producer, if any, taken.
    func take() -> Future<Int>? {
        let word = offered.exchange(0, ordering: .acquiringAndReleasing)
        guard word != 0 else { return nil }
        return Unmanaged<Future<Int>>.fromOpaque(UnsafeRawPointer(bitPattern: word)!).takeRetainedValue()
    }
}

/// `async ValueFuture<Int> Relay(input) { return await input }` on the pooling builder.
private struct Relay: AsyncStateMachine {
    var builder = PoolingValueFutureMethodBuilder<Int>()
    var state = 0
    let input: FutureAwaiter<Int>

    mutating func moveNext() {
        do {
            if state == 0 {
                state = 1
                if !input.isCompleted {
                    awaitUnsafeOnCompleted(input)
                    return
                }
            }
            builder.setResult(try input.getResult())
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ input: Future<Int>) -> ValueFuture<Int> {
        var machine = Relay(input: input.getAwaiter())
        PoolingValueFutureMethodBuilder.start(&machine)
        return machine.builder.valueFuture
    }
}

/// `async ValueFuture<Int> AwaitLoop(hub) { while !stopped { await Relay(hub.offer()) } }` on the
/// pooling builder: one continuation (its box) awaits one pooled box after another, and a box its
/// read recycles comes back to it from a thread's cache.
private struct AwaitLoop: AsyncStateMachine {
    var builder = PoolingValueFutureMethodBuilder<Int>()
    var state = 0
    let hub: PooledAwaitHub
    var relay: ValueFutureAwaiter<Int>?

    mutating func moveNext() {
        do {
            while true {
                if state == 1 {
                    _ = try relay!.getResult()
                    relay = nil
                    hub.reads.add(1, ordering: .relaxed)
                }
                state = 1
                if hub.stopped.load(ordering: .acquiring) {
                    hub.finished.store(true, ordering: .releasing)
                    return builder.setResult(0)
                }
                let awaiter = Relay.start(hub.offer()).getAwaiter()
                relay = awaiter
                if !awaiter.isCompleted {
                    awaitUnsafeOnCompleted(awaiter)
                    return
                }
            }
        } catch {
            if case ValueFutureSourceError.notCompleted = error {
                hub.early.add(1, ordering: .relaxed)
            } else {
                hub.refused.add(1, ordering: .relaxed)
            }
            hub.stopped.store(true, ordering: .releasing)
            hub.finished.store(true, ordering: .releasing)
            builder.setResult(-1)  // the hub has the error
        }
    }

    static func start(_ hub: PooledAwaitHub) -> ValueFuture<Int> {
        var machine = AwaitLoop(hub: hub)
        PoolingValueFutureMethodBuilder.start(&machine)
        return machine.builder.valueFuture
    }
}

/// Races between completing, cancelling and registering, each repeated for a second against a
/// rival thread.
@Suite(.serialized) struct CompletionRaceTests {
    @Test func waitingCancelledWhileItRegistersLeavesNothingOnItsSource() throws {
        let never = Promise<Int>()
        let current = Locked<CancellationTokenSource?>(nil)
        // Cancels the round's token after a pause that varies, while the test is in `waiting`.
        let rival = Rival("canceller") { round in
            let source = current.withLock { $0 }
            for _ in 0..<(round * 7 % 41) { tm_spin_pause() }
            source?.cancel()
        }
        defer { rival.finish() }
        forASecond { round in
            let tokenSource = CancellationTokenSource()
            current.withLock { $0 = tokenSource }
            rival.post(round)
            let output = never.future.waiting(cancellation: tokenSource.token)
            rival.waitUntilHandled(round)
            #expect(output.status == .cancelled)
        }
        // Each wait was cancelled, and took its forwarder back from the source (but the first, which
        // may stay as the source's lone continuation): none piles up on a future that never completes.
        #expect(never.future.pendingContinuations.count <= 1)
    }

    @Test func aStaleAwaiterCopyRegisteringAsItsBoxIsRecycledDoesNotTakeTheNextUsesSlot() throws {
        // A copy of a pooled method's awaiter, kept past the read (misuse the box diagnoses with a
        // stale-token error), registers while the reader's read recycles the box. Its job must not
        // land in the next use's slot, where it would refuse that use's own await.
        let copy = Locked<ValueFutureAwaiter<Int>?>(nil)
        let rival = Rival("stale-copy") { _ in
            guard let copy = copy.withLock({ $0 }) else { return }
            let item = ClosureWorkItem {}
            for _ in 0..<10_000 {
                do { try copy.register(item: item) } catch { break }
            }
        }
        defer { rival.finish() }
        var refused = 0
        try forASecond { round in
            let promise = Promise<Int>()
            let awaiter = Doubled.start(reading: ValueFuture(future: promise.future)).getAwaiter()
            // This use's own await: nothing else may be registered on the box yet.
            do { try awaiter.register(item: ClosureWorkItem {}) } catch { refused += 1 }
            try promise.succeed(round)
            copy.withLock { $0 = awaiter }
            rival.post(round)
            #expect(try awaiter.getResult() == 2 * round)  // recycles the box into this thread's cache
            rival.waitUntilHandled(round)
        }
        #expect(refused == 0)
    }

    @Test func copiesOfAnAwaiterReadingAtOnceLetGoOfTheirOwnUseOfTheBoxOnly() throws {
        // Misuse: a copy of a pooled method's awaiter reads on another thread while the awaiter
        // itself reads (and recycles the box). What those two reads get is their own affair; but
        // the box must be let go of once, and the next call, which takes it from this thread's
        // cache, must get its own result.
        let copy = Locked<ValueFutureAwaiter<Int>?>(nil)
        let rival = Rival("stale-reader") { _ in
            guard let copy = copy.withLock({ $0 }) else { return }
            for _ in 0..<10_000 {
                do { _ = try copy.getResult() } catch { break }
            }
        }
        defer { rival.finish() }
        var lost = 0
        try forASecond { round in
            let promise = Promise<Int>()
            let awaiter = Doubled.start(reading: ValueFuture(future: promise.future)).getAwaiter()
            try promise.succeed(round)
            copy.withLock { $0 = awaiter }
            rival.post(round)
            _ = try? awaiter.getResult()
            rival.waitUntilHandled(round)
            copy.withLock { $0 = nil }
            let next = Promise<Int>()
            let innocent = Doubled.start(reading: ValueFuture(future: next.future))
            try next.succeed(1_000_000 - round)
            do {
                #expect(try innocent.getAwaiter().getResult() == 2 * (1_000_000 - round))
            } catch {
                lost += 1
            }
        }
        #expect(lost == 0)
    }

    @Test func aContinuationRegisteringForThePooledSourcesNextOperationIsResumedOnlyByItsCompletion() throws {
        // Two producers complete the operations of a source in turn, each one once it has its
        // continuation; the continuation, run inline by the completion, reads, resets the source and
        // registers again. A registration still returning on one producer when the other has
        // completed its operation, and the continuation has registered once more, for the next
        // one, must leave that newer registration alone: taken back, it ran early, its operation
        // pending.
        let loop = ReadLoop()
        let core = loop.core
        let claimed = Atomic<UInt16>(core.version)  // the version next to complete
        try core.register(.item(loop), token: core.version)
        let producers = (0..<2).map { index in
            spawnThread(name: "producer-\(index)", role: .other) {
                while !loop.stopped.load(ordering: .acquiring) {
                    let version = core.version
                    guard SlotWord.isJob(core.slot.load(ordering: .acquiring)),
                        claimed.compareExchange(
                            expected: version, desired: version &+ 1, ordering: .acquiringAndReleasing
                        ).exchanged
                    else { continue }
                    try? core.succeed(Int(version))
                }
            }
        }
        let deadline = ContinuousClock.now + .seconds(2)
        while ContinuousClock.now < deadline && !loop.stopped.load(ordering: .acquiring) { usleepish() }
        loop.stopped.store(true, ordering: .releasing)
        for producer in producers { pthread_join(producer, nil) }
        #expect(loop.early.load(ordering: .relaxed) == 0, "after \(loop.reads.load(ordering: .relaxed)) reads")
        #expect(loop.refused.load(ordering: .relaxed) == 0)
        #expect(loop.reads.load(ordering: .relaxed) > 0)
    }

    @Test func aMethodAwaitingPooledMethodsInALoopIsResumedOnlyByTheCompletionOfTheUseItAwaits() throws {
        // Producers complete the operations the pooled method awaits, which resumes the pooled
        // method inline, which resumes the loop inline; the loop reads the result (recycling the
        // box once the pooled method has let go of it) and calls the pooled method again, which
        // may take the same box from the thread's cache. A registration of the loop still
        // returning on one producer, for an earlier use of that box, must leave its newer
        // registration alone: taken back, the loop ran early, its use pending.
        let hub = PooledAwaitHub()
        let producers = (0..<3).map { index in
            spawnThread(name: "producer-\(index)", role: .other) {
                while !hub.finished.load(ordering: .acquiring) {
                    guard let operation = hub.take() else { continue }
                    _ = operation.trySucceed(index)
                }
            }
        }
        // Threads that wake every few microseconds: each wake-up preempts a running producer
        // wherever it is, now and then between a registration's store and its check of the use.
        let interrupters = (0..<4).map { index in
            spawnThread(name: "interrupter-\(index)", role: .other) {
                var request = timespec(tv_sec: 0, tv_nsec: 5_000)
                while !hub.finished.load(ordering: .acquiring) { nanosleep(&request, nil) }
            }
        }
        _ = AwaitLoop.start(hub)
        let deadline = ContinuousClock.now + .seconds(2)
        while ContinuousClock.now < deadline && !hub.stopped.load(ordering: .acquiring) { usleepish() }
        hub.stopped.store(true, ordering: .releasing)
        // The loop ends at its next run; a loop whose use lost its continuation never runs again.
        let limit = ContinuousClock.now + .seconds(1)
        while ContinuousClock.now < limit && !hub.finished.load(ordering: .acquiring) { usleepish() }
        hub.finished.store(true, ordering: .releasing)
        for thread in producers + interrupters { pthread_join(thread, nil) }
        _ = hub.take()
        #expect(hub.early.load(ordering: .relaxed) == 0, "after \(hub.reads.load(ordering: .relaxed)) reads")
        #expect(hub.refused.load(ordering: .relaxed) == 0)
        #expect(hub.reads.load(ordering: .relaxed) > 0)
    }

    @Test func theLoserOfARaceToCompleteAPromiseIsToldHowItEnded() throws {
        // Two threads succeed and fail the same promise at once. The loser's
        // `PromiseError.alreadyCompleted(status)` must carry the outcome that stood, never `.pending`.
        let current = Locked<Promise<Int>?>(nil)
        let ready = Atomic<Int>(0)
        let go = Atomic<Int>(0)
        let pendingSeen = Atomic<Int>(0)
        let rival = Rival("rival") { round in
            let promise = current.withLock { $0 }
            ready.store(round, ordering: .releasing)
            while go.load(ordering: .acquiring) != round { tm_spin_pause() }
            do { try promise?.fail(TestError(code: 1)) } catch PromiseError.alreadyCompleted(let status) {
                if status == .pending { pendingSeen.add(1, ordering: .relaxed) }
            } catch {}
        }
        defer { rival.finish() }
        var pendingHere = 0
        forASecond { round in
            let promise = Promise<Int>()
            current.withLock { $0 = promise }
            rival.post(round)
            while ready.load(ordering: .acquiring) != round { sched_yield() }
            go.store(round, ordering: .releasing)
            for _ in 0..<(round % 16) { tm_spin_pause() }  // offsets the two attempts
            do { try promise.succeed(round) } catch PromiseError.alreadyCompleted(let status) {
                if status == .pending { pendingHere += 1 }
            } catch {}
            rival.waitUntilHandled(round)
            _ = promise.future.error  // observed either way
        }
        #expect(pendingHere + pendingSeen.load(ordering: .relaxed) == 0)
    }
}
