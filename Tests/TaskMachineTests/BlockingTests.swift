import Glibc
import Synchronization
import Testing

@testable import TaskMachine

/// An async method that awaits `inner` (capturing the context) and returns its value doubled.
struct DoubleAfter: AsyncStateMachine {
    var builder = FutureMethodBuilder<Int>()
    var state = 0
    let inner: Future<Int>
    var awaiter: FutureAwaiter<Int>?

    mutating func moveNext() {
        do {
            if state == 0 {
                let awaiter = inner.getAwaiter()
                self.awaiter = awaiter
                state = 1
                if !awaiter.isCompleted {
                    awaitUnsafeOnCompleted(awaiter)
                    return
                }
            }
            builder.setResult(try awaiter!.getResult() * 2)
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ inner: Future<Int>) -> Future<Int> {
        var machine = DoubleAfter(inner: inner)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

/// A fire-and-forget method (`async void`) that awaits `inner`, capturing the context, and ends.
struct AwaitAndForget: AsyncStateMachine {
    var builder = FireAndForgetMethodBuilder()
    var state = 0
    let inner: Future<Int>
    var awaiter: FutureAwaiter<Int>?

    mutating func moveNext() {
        do {
            if state == 0 {
                let awaiter = inner.getAwaiter()
                self.awaiter = awaiter
                state = 1
                if !awaiter.isCompleted {
                    awaitUnsafeOnCompleted(awaiter)
                    return
                }
            }
            _ = try awaiter!.getResult()
            builder.setResult()
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ inner: Future<Int>) {
        var machine = AwaitAndForget(inner: inner)
        FireAndForgetMethodBuilder.start(&machine)
    }
}

/// `async Future<Int> AwaitInTurn(first, second) { await first; return await second }`, neither
/// await capturing a context.
struct AwaitInTurn: AsyncStateMachine {
    var builder = FutureMethodBuilder<Int>()
    var state = 0
    let first: Future<Void>
    let second: Future<Int>
    var firstAwaiter: ConfiguredFutureAwaiter<Void>?
    var secondAwaiter: ConfiguredFutureAwaiter<Int>?

    mutating func moveNext() {
        do {
            if state == 0 {
                let awaiter = first.configureAwait(false).getAwaiter()
                firstAwaiter = awaiter
                state = 1
                if !awaiter.isCompleted {
                    awaitUnsafeOnCompleted(awaiter)
                    return
                }
            }
            if state == 1 {
                try firstAwaiter!.getResult()
                let awaiter = second.configureAwait(false).getAwaiter()
                secondAwaiter = awaiter
                state = 2
                if !awaiter.isCompleted {
                    awaitUnsafeOnCompleted(awaiter)
                    return
                }
            }
            builder.setResult(try secondAwaiter!.getResult())
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ first: Future<Void>, then second: Future<Int>) -> Future<Int> {
        var machine = AwaitInTurn(first: first, second: second)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

@Suite struct BlockingTests {
    @Test func waitReturnsTheValueOnceCompleted() throws {
        let future = Future.run { 6 * 7 }
        #expect(try future.wait() == 42)
    }

    @Test func waitWithTimeoutThrowsATimeoutError() {
        let never = Promise<Int>().future
        #expect(throws: TimeoutError.self) { try never.wait(timeout: .milliseconds(20)) }
        #expect(throws: InvalidArgumentError.self) { try never.wait(timeout: .milliseconds(-1)) }
    }

    @Test func blockingAContextOnItsOwnContinuationIsDiagnosedNotHung() throws {
        let ui = SingleThreadContext(name: "ui-deadlock")
        defer { try? ui.shutdown() }
        let promise = Promise<Int>()
        let outcome = ui.run { () -> String in
            let doubled = DoubleAfter.start(promise.future)
            // Completing from another thread later would post the continuation to "ui-deadlock",
            // whose thread this wait would block.
            return deadlockText { _ = try doubled.wait() }
        }
        #expect(try outcome.wait(timeout: .seconds(10)) == "ui-deadlock: DoubleAfter > Future<Int>")
        promise.trySucceed(1)
    }

    @Test func aDeadlockThroughTheContextAnAsyncContextRunsInsideIsDiagnosed() throws {
        let ui = SingleThreadContext(name: "ui-outer")
        defer { try? ui.shutdown() }
        let promise = Promise<Int>()
        let outcome = ui.run { () -> String in
            // Suspended on "ui-outer", which stalls while the AsyncContext below pumps on its thread.
            let doubled = DoubleAfter.start(promise.future)
            return deadlockText { try AsyncContext.run { _ = try doubled.wait(timeout: .seconds(10)) } }
        }
        #expect(try outcome.wait(timeout: .seconds(20)) == "ui-outer: DoubleAfter > Future<Int>")
        promise.trySucceed(1)
    }

    @Test func anAsyncContextWhoseFutureNeedsTheContextItStallsThrowsInsteadOfPumpingForEver() throws {
        let ui = SingleThreadContext(name: "ui-stalled")
        let promise = Promise<Int>()
        let outcome = ui.run { () -> String in
            let doubled = DoubleAfter.start(promise.future)  // resumes on "ui-stalled"
            return deadlockText { _ = try AsyncContext.run { doubled } }
        }
        // The promise completes only once the outcome is in: a pump that waited would wait for ever,
        // and so would a shutdown of "ui-stalled" (the test leaves the thread then, and fails).
        let text = try outcome.waiting(timeout: .seconds(10)).wait(timeout: .seconds(20))
        promise.trySucceed(1)
        #expect(text == "ui-stalled: DoubleAfter > Future<Int>")
        try ui.shutdown()
    }

    /// `run` returns only once every fire-and-forget method started inside has ended: one that
    /// awaits a method suspended on the context `run` stalls would keep it pumping for ever.
    @Test func anAsyncContextWhoseFireAndForgetMethodNeedsTheContextItStallsThrowsInsteadOfPumpingForEver() throws {
        let ui = SingleThreadContext(name: "ui-stalled-method")
        let promise = Promise<Int>()
        let outcome = ui.run { () -> [String] in
            let doubled = DoubleAfter.start(promise.future)  // resumes on "ui-stalled-method"
            return [
                deadlockText { try AsyncContext.run { AwaitAndForget.start(doubled) } },
                // The body's own future has completed; the method it started has not.
                deadlockText {
                    _ = try AsyncContext.run { () -> Future<Int> in
                        AwaitAndForget.start(doubled)
                        return .succeeded(1)
                    }
                },
            ]
        }
        // As above: a pump that waited would wait for ever, and so would the shutdown.
        let texts = try outcome.waiting(timeout: .seconds(10)).wait(timeout: .seconds(20))
        promise.trySucceed(1)
        let expected = "ui-stalled-method: AwaitAndForget > DoubleAfter > Future<Int>"
        #expect(texts == [expected, expected])
        try ui.shutdown()
    }

    @Test func theDeadlockErrorOfAnAsyncContextsPumpNamesItNotWait() throws {
        let ui = SingleThreadContext(name: "ui-message")
        let promise = Promise<Int>()
        let outcome = ui.run { () -> String in
            let doubled = DoubleAfter.start(promise.future)
            do {
                _ = try AsyncContext.run { doubled }
                return "no deadlock"
            } catch {
                return "\(error)"
            }
        }
        let text = try outcome.waiting(timeout: .seconds(10)).wait(timeout: .seconds(20))
        promise.trySucceed(1)
        try ui.shutdown()
        #expect(text.hasPrefix("AsyncContext.run would deadlock: DoubleAfter awaits Future<Int>"), "\(text)")
        #expect(!text.contains("wait()"), "\(text)")
    }

    @Test func waitingOnAContextsThreadForWhatItsRunQueuedThereIsDiagnosed() throws {
        let ui = SingleThreadContext(name: "ui-run-wait")
        defer { try? ui.shutdown() }
        let outcome = ui.run { () -> [String] in
            // Both bodies are queued behind this job, on the thread the wait would block.
            [
                deadlockText { _ = try ui.run { 1 }.wait(timeout: .seconds(2)) },
                deadlockText { _ = try ui.run { Future.succeeded(2) }.wait(timeout: .seconds(2)) },
            ]
        }
        let expected = "ui-run-wait: Future<Int> > SingleThreadContext.run"
        #expect(try outcome.wait(timeout: .seconds(20)) == [expected, expected])
    }

    /// The wait starts on a future that does not need the context yet, and looks for a deadlock
    /// again each time a job queued on the context wakes it. The future comes to need the context
    /// after the last such job: a method it awaits goes on to await a method whose continuation
    /// already waits in the context's queue. Nothing else is queued there, yet it must be diagnosed.
    @Test func aWaitForAFutureThatComesToNeedTheBlockedContextAfterTheLastJobQueuedThereIsDiagnosed() throws {
        let text = try deadlockComingLater(on: "ui-later") { _ = try $0.wait() }
        #expect(text == "ui-later: AwaitInTurn > DoubleAfter > Future<Int>")
    }

    /// As above, for the pump of an AsyncContext run on the context's thread.
    @Test func anAsyncContextWhoseFutureComesToNeedTheContextItStallsAfterTheLastJobQueuedThereThrows() throws {
        let text = try deadlockComingLater(on: "ui-later-run") { future in _ = try AsyncContext.run { future } }
        #expect(text == "ui-later-run: AwaitInTurn > DoubleAfter > Future<Int>")
    }

    /// What `block`, run on the thread of a context named `name`, ends in when the future it
    /// blocks on comes to need that context only after the last job queued there.
    private func deadlockComingLater(
        on name: String, _ block: @escaping @Sendable (Future<Int>) throws -> Void
    ) throws -> String {
        let ui = SingleThreadContext(name: name)
        let promise = Promise<Int>()
        let gate = Promise<Void>()
        let started = Promise<Void>()
        let outcome = ui.run { () -> String in
            let doubled = DoubleAfter.start(promise.future)  // resumes on `name`
            let inTurn = AwaitInTurn.start(gate.future, then: doubled)  // captures no context
            started.trySucceed()
            return deadlockText { try block(inTurn) }
        }
        try started.future.wait(timeout: .seconds(10))
        usleep(100_000)  // the context's thread blocks: no deadlock yet
        // The continuation of `doubled` is queued on the context and wakes the thread: still none.
        try promise.succeed(1)
        usleep(100_000)
        // `inTurn` resumes here and awaits `doubled`: now it can only complete once the context
        // runs that continuation, and nothing more is queued there.
        try gate.succeed()
        // A block that hung would hang the shutdown too: the test leaves the thread then, and fails.
        let text = try outcome.waiting(timeout: .seconds(10)).wait(timeout: .seconds(20))
        try ui.shutdown()
        return text
    }

    @Test func aDeadlockThroughNestedMethodsNamesTheWholeChain() throws {
        let ui = SingleThreadContext(name: "ui-chain")
        defer { try? ui.shutdown() }
        let outcome = ui.run { () -> [String] in
            let inner = DoubleAfter.start(Future.delay(.milliseconds(30)).mapForTests { 5 })
            let outer = DoubleAfter.start(inner)
            do {
                _ = try outer.wait()
                return []
            } catch let error as DeadlockError {
                return error.chain
            }
        }
        let chain = try outcome.wait(timeout: .seconds(10))
        #expect(chain.first == "DoubleAfter")
        #expect(chain.count == 3)
    }

    @Test func aWaitForARunBodyBlockedOnWorkQueuedOnTheWaitingContextIsDiagnosed() throws {
        // The context's thread waits for a `Future.run` body that waits in turn, blocking its pool
        // worker, for a body it queued on that same context: a cycle through a blocked thread.
        // Whichever blocks first, the context's thread finds it (at once, or on a later look).
        for bodyBlocksFirst in [false, true] {
            let text = try onContextThread(named: "ui-through-worker") { ui in
                let queued = Promise<Void>()
                let work = Future.run { () throws -> Int in
                    let onUI = ui.run { 42 }
                    queued.trySucceed()
                    return try onUI.wait()
                }
                if bodyBlocksFirst {
                    try? queued.future.wait(timeout: .seconds(10))
                    usleep(20_000)
                }
                // Once this thread is free, the body it queued runs and the worker goes on.
                return deadlockText { _ = try work.wait() }
            }
            #expect(
                text
                    == "ui-through-worker: run { } -> Future<Int> (in wait() on pool-N) > Future<Int> > SingleThreadContext.run"
            )
        }
    }

    @Test func aRunBodyWaitingWithATimeLimitForTheWaitingContextIsNoDeadlock() throws {
        // As above, but the body waits with a time limit: it gives up and goes on, and the
        // context's thread, waiting for it meanwhile, gets its result rather than an error.
        let text = try onContextThread(named: "ui-timed") { ui in
            let work = Future.run { () -> Int in
                (try? ui.run { 42 }.wait(timeout: .milliseconds(300))) ?? -1
            }
            var result = 0
            let text = deadlockText { result = try work.wait() }
            return "\(text), \(result)"
        }
        #expect(text == "no deadlock, -1")
    }

    @Test func aWaitForARunBodyThatRunsAnotherWhichBlocksOnTheWaitingContextIsDiagnosed() throws {
        // As above, the body waiting for a second `Future.run` that no worker has started: it runs
        // the second body itself, nested, and that one blocks. Both bodies are held up.
        let text = try onContextThread(named: "ui-through-nested") { ui in
            let work = Future.run { () throws -> Int in
                let second = Future.run { () throws -> Int in try ui.run { 42 }.wait() }
                return try second.wait()
            }
            return deadlockText { _ = try work.wait() }
        }
        #expect(
            text
                == "ui-through-nested: run { } -> Future<Int> (in wait() on pool-N) > Future<Int> > SingleThreadContext.run"
        )
    }

    @Test func aWaitForABodyOnAnotherContextBlockedOnWorkQueuedOnTheWaitingContextIsDiagnosed() throws {
        // As above, the body run by another context's `run`, blocking that context's thread.
        // Not shut down on failure: its thread would still be blocked, and the shutdown with it.
        let other = SingleThreadContext(name: "other-context")
        let text = try onContextThread(named: "ui-through-context") { ui in
            let work = other.run { () throws -> Int in try ui.run { 42 }.wait() }
            return deadlockText { _ = try work.wait() }
        }
        #expect(
            text
                == "ui-through-context: Future<Int> (in wait() on other-context) > Future<Int> > SingleThreadContext.run"
        )
        try other.shutdown()
    }

    @Test func aWaitForAMethodThatBlocksOnWorkQueuedOnTheWaitingContextIsDiagnosed() throws {
        // As above, with an async method on the pool that blocks in `wait()` inside `moveNext`.
        let text = try onContextThread(named: "ui-through-method") { ui in
            let method = BlockAfterResuming.start(on: ui, awaiting: .delay(.milliseconds(1)))
            return deadlockText { _ = try method.wait() }
        }
        #expect(
            text
                == "ui-through-method: BlockAfterResuming (in wait() on pool-N) > Future<Int> > SingleThreadContext.run"
        )
    }

    @Test func aSendBackToAContextWhoseThreadIsBlockedSendingThrows() throws {
        // The thread of "send-a" sends to "send-b", whose thread, running that work, sends back:
        // neither could ever return. The second send throws; the first then returns.
        let a = SingleThreadContext(name: "send-a")
        let b = SingleThreadContext(name: "send-b")
        let inner = Locked("")
        let outer = try a.run {
            deadlockText { try b.send { inner.withLock { $0 = sendDeadlockText { try a.send {} } } } }
        }
        .wait(timeout: .seconds(20))
        #expect(outer == "no deadlock")
        #expect(
            inner.withLock { $0 }
                == "send would deadlock: \"send-a\" is blocked in send to \"send-b\" — the thread this send blocks. Post instead of sending, or send one way only."
        )
        try a.shutdown()
        try b.shutdown()
    }

    @Test func aCycleOfSendsThroughThreeContextsThrows() throws {
        let contexts = ["ring-a", "ring-b", "ring-c"].map { SingleThreadContext(name: $0) }
        let last = Locked("")
        let first = try contexts[0].run {
            deadlockText {
                try contexts[1].send {
                    try? contexts[2].send { last.withLock { $0 = deadlockText { try contexts[0].send {} } } }
                }
            }
        }.wait(timeout: .seconds(20))
        #expect(first == "no deadlock")
        #expect(last.withLock { $0 } == "ring-c: ring-a > ring-b")
        for context in contexts { try context.shutdown() }
    }

    @Test func aWaitForAMethodThatMustResumeOnAContextWhoseThreadIsBlockedSendingHereThrows() throws {
        // A method suspended on "sending" must resume there, but that context's thread is blocked
        // in send to "waiting", whose thread the wait would block.
        let sending = SingleThreadContext(name: "sending")
        let waiting = SingleThreadContext(name: "waiting")
        let promise = Promise<Int>()
        let waited = Locked("")
        try sending.run {
            let method = DoubleAfter.start(promise.future)  // resumes on "sending"
            try waiting.send {
                // Completed from here, the method's continuation is queued on "sending".
                try? promise.succeed(1)
                waited.withLock { $0 = sendDeadlockText { _ = try method.wait() } }
            }
        }.wait(timeout: .seconds(20))
        #expect(
            waited.withLock { $0 }
                == "wait() would deadlock: DoubleAfter awaits Future<Int>, and must resume on \"sending\", whose thread is blocked in send to \"waiting\" — the thread this wait() blocks. Await instead of blocking, or configureAwait(false) in the awaited code."
        )
        try sending.shutdown()
        try waiting.shutdown()
    }

    @Test func aWaitForARunBodyBlockedSendingToTheWaitingContextIsDiagnosed() throws {
        // The context's thread waits for a `Future.run` body that sends to that same context.
        let text = try onContextThread(named: "ui-through-send") { ui in
            let work = Future.run { () throws -> Int in
                try ui.send {}
                return 1
            }
            return deadlockText { _ = try work.wait() }
        }
        #expect(
            text == "ui-through-send: run { } -> Future<Int> (in send on pool-N) > work sent to \"ui-through-send\"")
    }

    @Test func aSendWhoseWorkHasRunHoldsNothingUpThoughItsThreadHasYetToWake() throws {
        // The work sent posts, on the context it ran on, a send back, or a wait for the sender's
        // future: by then the first send's work has run, and nothing is blocked. (Its thread may
        // not have woken yet: the detector took it for blocked, 2 and 183 times in 200.)
        let a = SingleThreadContext(name: "sent-a")
        let b = SingleThreadContext(name: "sent-b")
        var outcomes: Set<String> = []
        for _ in 0..<200 {
            let sentBack = Promise<String>()
            a.post { try? b.send { b.post { sentBack.trySucceed(sendDeadlockText { try a.send {} }) } } }
            outcomes.insert(try sentBack.future.wait(timeout: .seconds(10)))
            let waited = Promise<String>()
            let body = Locked<Future<Int>?>(nil)
            let bodyKnown = Promise<Void>()
            body.withLock {
                $0 = Future.run { () throws -> Int in
                    try bodyKnown.future.wait(timeout: .seconds(10))
                    try b.send {
                        b.post { waited.trySucceed(deadlockText { _ = try body.withLock { $0 }!.wait() }) }
                    }
                    return 1
                }
            }
            bodyKnown.trySucceed()
            outcomes.insert(try waited.future.wait(timeout: .seconds(10)))
        }
        #expect(outcomes == ["no deadlock"])
        try a.shutdown()
        try b.shutdown()
    }

    @Test func ofTwoThreadsSendingToEachOtherAtOnceOnlyOneThrows() throws {
        // Each registers its send and looks for the other's in one critical section: the second
        // finds the first, and throws; the first's send then completes. (Both threw, 42 in 2,000.)
        let a = SingleThreadContext(name: "both-a")
        let b = SingleThreadContext(name: "both-b")
        var bothThrew = 0
        for _ in 0..<300 {
            let go = Flag()
            let aThrew = a.run { () -> Bool in
                while !go.isSet {}
                return (try? b.send {}) == nil
            }
            let bThrew = b.run { () -> Bool in
                while !go.isSet {}
                return (try? a.send {}) == nil
            }
            usleep(200)
            go.set()
            if try aThrew.wait(timeout: .seconds(10)) && bThrew.wait(timeout: .seconds(10)) { bothThrew += 1 }
        }
        #expect(bothThrew == 0)
        try a.shutdown()
        try b.shutdown()
    }

    @Test func aWaitThatThrewADeadlockErrorNoLongerHoldsUpItsThreadsWork() throws {
        // On a recheck, the wait finds the deadlock and throws; its waiter may stay on the future
        // (the one continuation there), but must not go on naming the body it ran in as held up.
        let ui = SingleThreadContext(name: "abandoned-ui")
        let other = SingleThreadContext(name: "abandoned-other")
        let gate = Promise<Int>()
        let heldUp = try ui.run { () -> [Int] in
            let method = DoubleAfter.start(gate.future)  // resumes on "abandoned-ui"
            let later = other.run { () -> Future<Int> in
                usleep(50_000)  // the wait below blocks first, and finds the deadlock on a recheck
                return method
            }
            _ = deadlockText { _ = try later.wait() }
            return later.pendingContinuations.compactMap { job in
                guard case .item(let waiter as BlockingWaiter) = job else { return nil }
                return waiter.dependentFutures.count
            }
        }.wait(timeout: .seconds(10))
        #expect(heldUp.allSatisfy { $0 == 0 }, "futures still held up by waits that ended: \(heldUp)")
        try gate.succeed(1)
        try ui.shutdown()
        try other.shutdown()
    }

    /// What `body` returns, run on the thread of a new context named `name`, with each pool
    /// worker's number replaced by N; the context is shut down after.
    private func onContextThread(
        named name: String, _ body: @escaping @Sendable (SingleThreadContext) -> String
    ) throws -> String {
        let ui = SingleThreadContext(name: name)
        let text = try ui.run { body(ui) }.wait(timeout: .seconds(20))
        try ui.shutdown()
        return text.replacing(/pool-[0-9]+/, with: "pool-N")
    }

    @Test func waitingOnAContextThreadIsFineWhenTheContinuationDoesNotNeedIt() throws {
        let ui = SingleThreadContext(name: "ui-nodeadlock")
        defer { try? ui.shutdown() }
        let outcome = ui.run { () throws -> Int in
            let resumed = ResumeWhere.start(awaiting: .delay(.milliseconds(5)), continueOnCapturedContext: false)
            _ = try resumed.wait(timeout: .seconds(10))
            return 1
        }
        #expect(try outcome.wait(timeout: .seconds(10)) == 1)
    }

    @Test func aWorkerBlockedInWaitIsCompensatedSoThePoolKeepsRunning() throws {
        // Block every worker, and more, in wait(); a job queued after them must still run.
        let gate = Promise<Void>()
        let blockers = (0..<(RuntimeStatistics.targetPoolWorkers + 2)).map { _ in
            Future.run { try gate.future.wait(timeout: .seconds(20)) }
        }
        let probe = Future.run { 1 }
        #expect(try probe.wait(timeout: .seconds(10)) == 1)
        try gate.succeed()
        for blocker in blockers { try blocker.wait(timeout: .seconds(10)) }
    }

    @Test func aWorkerBlockedInWaitIsCompensatedAtOnceNotByTheMonitor() throws {
        // On a pool of its own, so that its counts are this test's: two workers and four jobs that
        // block in wait(). All four blocked at once takes two threads beyond the workers, which
        // each wait must start as it blocks: the monitor, which would add them only after work
        // stood still for half a second, adds none. A job queued then still runs.
        let pool = ThreadPool(workerCount: 2)
        let gate = Promise<Void>()
        let released = Counter()
        for _ in 0..<4 {
            pool.enqueue(
                job {
                    _ = try? gate.future.wait(timeout: .seconds(20))
                    released.increment()
                })
        }
        try #require(eventually { pool.counts.blocked == 4 }, "\(pool.counts.blocked) of 4 jobs blocked")
        let probe = Promise<Void>()
        pool.enqueue(job { probe.trySucceed() })
        try probe.future.wait(timeout: .seconds(10))
        let activity = pool.activitySnapshot
        #expect(activity.starvationWorkersAdded == 0, "the monitor had to add a worker")
        #expect(activity.extraWorkersStarted >= 2, "\(activity.extraWorkersStarted) extra workers for 4 blocked jobs")
        try gate.succeed()
        #expect(eventually { released.count == 4 })
    }
}

extension Future {
    /// Maps the value on completion, wherever it completes (no context captured), for tests that
    /// need a future of another type.
    func mapForTests<Other: Sendable>(_ transform: @escaping @Sendable () -> Other) -> Future<Other> {
        let promise = Promise<Other>()
        configureAwait(false).getAwaiter().onCompleted { promise.trySucceed(transform()) }
        return promise.future
    }
}

/// "context: chain" for the ``DeadlockError`` that `body` throws, "no deadlock" when it returns,
/// or the description of another error.
func deadlockText(_ body: () throws -> Void) -> String {
    do {
        try body()
        return "no deadlock"
    } catch let error as DeadlockError {
        return "\(error.contextName): \(error.chain.joined(separator: " > "))"
    } catch {
        return "\(error)"
    }
}

/// The description of the ``DeadlockError`` that `body` throws, "no deadlock" when it returns.
func sendDeadlockText(_ body: () throws -> Void) -> String {
    do {
        try body()
        return "no deadlock"
    } catch {
        return "\(error)"
    }
}

/// An async method that resumes on the pool (`configureAwait(false)`), then blocks its worker in
/// `wait()` for a body it queues on `context`.
struct BlockAfterResuming: AsyncStateMachine {
    var builder = FutureMethodBuilder<Int>()
    var state = 0
    let context: SingleThreadContext
    let awaited: Future<Void>
    var awaiter: ConfiguredFutureAwaiter<Void>?

    mutating func moveNext() {
        do {
            if state == 0 {
                let awaiter = awaited.configureAwait(false).getAwaiter()
                self.awaiter = awaiter
                state = 1
                if !awaiter.isCompleted {
                    awaitUnsafeOnCompleted(awaiter)
                    return
                }
            }
            builder.setResult(try context.run { 42 }.wait())
        } catch {
            builder.setError(error)
        }
    }

    static func start(on context: SingleThreadContext, awaiting awaited: Future<Void>) -> Future<Int> {
        var machine = BlockAfterResuming(context: context, awaited: awaited)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}
