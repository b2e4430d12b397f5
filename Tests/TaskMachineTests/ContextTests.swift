import Glibc
import Synchronization
import Testing

@testable import TaskMachine

/// Awaits `future` inside a state machine with `continueOnCapturedContext`, then records the thread
/// the continuation ran on.
struct ResumeWhere: AsyncStateMachine {
    var builder = FutureMethodBuilder<RuntimeThread>()
    var state = 0
    let awaited: Future<Void>
    let continueOnCapturedContext: Bool
    var awaiter: ConfiguredFutureAwaiter<Void>?

    mutating func moveNext() {
        if state == 0 {
            let awaiter = awaited.configureAwait(continueOnCapturedContext).getAwaiter()
            self.awaiter = awaiter
            state = 1
            if !awaiter.isCompleted {
                awaitUnsafeOnCompleted(awaiter)
                return
            }
        }
        builder.setResult(RuntimeThread.current)
    }

    static func start(awaiting future: Future<Void>, continueOnCapturedContext: Bool) -> Future<RuntimeThread> {
        var machine = ResumeWhere(awaited: future, continueOnCapturedContext: continueOnCapturedContext)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

@Suite struct ContextTests {
    @Test func workComingBackToAnAsyncContextAfterRunReturnedRunsOnThePool() throws {
        let promise = Promise<Void>()
        var resumed: Future<RuntimeThread>?
        try AsyncContext.run { () -> Void in
            // Started, not waited for: it resumes after `run` has returned.
            resumed = ResumeWhere.start(awaiting: promise.future, continueOnCapturedContext: true)
        }
        try promise.succeed()
        #expect(try resumed!.wait(timeout: .seconds(10)).role == .poolWorker)
    }

    @Test func aContextSetByAJobOnAPoolWorkerDoesNotOutliveTheJob() throws {
        // One worker, so that the second job runs on the thread the first left its context on.
        let pool = ThreadPool(workerCount: 1)
        let stray = SynchronizationContext()
        let seen = Promise<Bool>()
        pool.enqueue(job { SynchronizationContext.current = stray })
        pool.enqueue(job { seen.trySucceed(SynchronizationContext.current == nil) })
        #expect(try seen.future.wait(timeout: .seconds(10)))
    }

    @Test func aContextSetByABodyRunNestedInAWaitDoesNotOutliveTheBody() throws {
        // The inner body goes to the LIFO slot of the worker that waits for it, where no other
        // worker takes it: the wait runs it, nested, rather than a worker as a job of its own.
        let seen = Future.run { () throws -> (nested: Bool, cleared: Bool) in
            let waiting = RuntimeThread.current
            let inner = Future.run { () -> Bool in
                SynchronizationContext.current = SynchronizationContext()
                return RuntimeThread.current == waiting
            }
            let nested = try inner.wait()
            return (nested, SynchronizationContext.current == nil)
        }
        let outcome = try seen.wait(timeout: .seconds(20))
        #expect(outcome.nested)
        #expect(outcome.cleared)
    }

    @Test func aContextSetByAJobOnAContextsThreadDoesNotOutliveTheJob() throws {
        let ui = SingleThreadContext(name: "ui-reinstalled")
        defer { try? ui.shutdown() }
        let stray = SynchronizationContext()
        ui.post { SynchronizationContext.current = stray }
        let current = try ui.run { SynchronizationContext.current }.wait(timeout: .seconds(10))
        #expect(current === ui)
    }

    @Test func aSecondShutdownReturnsOnlyOnceTheThreadHasExited() throws {
        let ui = SingleThreadContext(name: "ui-twice")
        let ran = Flag()
        ui.post {
            usleep(200_000)
            ran.set()
        }
        let first = Future.run { try ui.shutdown() }
        while !ui.isShuttingDown { usleep(1000) }
        try ui.shutdown()
        #expect(ran.isSet)
        try first.wait(timeout: .seconds(10))
    }

    @Test func aWaitOnAContextForAMethodThatYieldedOnItIsDiagnosed() throws {
        let ui = SingleThreadContext(name: "ui-yield")
        defer { try? ui.shutdown() }
        #expect(try deadlockChain(waitingOn: ui) { YieldOnce.start() } == ["YieldOnce", "Future.yield()"])
    }

    @Test func aContextsRunFailsWhenItsBodyThrowsACancellation() throws {
        // No token, as with `Future.run` given none: nothing could have cancelled it.
        let ui = SingleThreadContext(name: "ui-cancel")
        defer { try? ui.shutdown() }
        let other = CancellationTokenSource()
        other.cancel()
        let token = other.token
        let ran = ui.run { () throws -> Int in throw OperationCancelledError(token: token) }
        _ = try? ran.wait(timeout: .seconds(10))
        #expect(ran.status == .failed)
    }

    @Test func anAwaitOnASingleThreadContextResumesOnItsThread() throws {
        let ui = SingleThreadContext(name: "ui-test")
        defer { try? ui.shutdown() }
        let resumed = ui.run { ResumeWhere.start(awaiting: .delay(.milliseconds(5)), continueOnCapturedContext: true) }
        #expect(try resumed.wait(timeout: .seconds(10)).name == "ui-test")
    }

    @Test func configureAwaitFalseResumesOnThePoolInstead() throws {
        let ui = SingleThreadContext(name: "ui-test2")
        defer { try? ui.shutdown() }
        let resumed = ui.run { ResumeWhere.start(awaiting: .delay(.milliseconds(5)), continueOnCapturedContext: false) }
        #expect(try resumed.wait(timeout: .seconds(10)).role == .poolWorker)
    }

    @Test func theContextIsCapturedAtRegistrationNotAtCompletion() throws {
        let ui = SingleThreadContext(name: "ui-capture")
        defer { try? ui.shutdown() }
        let promise = Promise<Void>()
        let resumed = ui.run { ResumeWhere.start(awaiting: promise.future, continueOnCapturedContext: true) }
        // Wait until the machine has registered its continuation, then complete from this
        // contextless thread: the continuation must still go back to "ui-capture".
        while promise.future.slot.load(ordering: .acquiring) == SlotWord.empty { usleepish() }
        try promise.succeed()
        #expect(try resumed.wait(timeout: .seconds(10)).name == "ui-capture")
    }

    @Test func aContinuationForTheCompletingThreadsOwnContextRunsInline() throws {
        let ui = SingleThreadContext(name: "ui-inline")
        defer { try? ui.shutdown() }
        let promise = Promise<Void>()
        let log = EventLog()
        let done = ui.run { () -> Future<RuntimeThread> in
            let resumed = ResumeWhere.start(awaiting: promise.future, continueOnCapturedContext: true)
            try promise.succeed()  // on "ui-inline": the continuation runs right here, inline
            log(resumed.isCompleted ? "completed inline" : "queued")
            return resumed
        }
        #expect(try done.wait(timeout: .seconds(10)).name == "ui-inline")
        #expect(log.all == ["completed inline"])
    }

    @Test func asyncContextPumpsOnTheCallingThreadUntilWorkIsDone() throws {
        let caller = RuntimeThread.current
        let thread = try AsyncContext.run {
            ResumeWhere.start(awaiting: .delay(.milliseconds(5)), continueOnCapturedContext: true)
        }
        #expect(thread == caller)
    }

    @Test func sendRunsOnTheContextThreadAndWaits() throws {
        let ui = SingleThreadContext(name: "ui-send")
        defer { try? ui.shutdown() }
        let seen = Locked<String>("")
        try ui.send { seen.withLock { $0 = RuntimeThread.current.name } }
        #expect(seen.withLock { $0 } == "ui-send")
    }

    @Test func sendToAnAsyncContextFromAnotherThreadRunsOnThePumpingThread() throws {
        let caller = RuntimeThread.current
        let sentOn = try AsyncContext.run { () -> Future<RuntimeThread> in
            let context = SynchronizationContext.current!
            return Future.run {
                let seen = Locked<RuntimeThread?>(nil)
                try context.send { seen.withLock { $0 = RuntimeThread.current } }
                return seen.withLock { $0 }!
            }
        }
        #expect(sentOn == caller)
    }

    @Test func aShutdownDeepInAChainOfInlineContinuationsLetsTheDeferredOnesRun() throws {
        let ui = SingleThreadContext(name: "ui-join")
        let promises = (0..<20).map { _ in Promise<Void>() }
        // Queued on "ui-join" before the chain starts: the shutdown below waits for it to finish,
        // and it waits for the end of the chain.
        let started = Promise<Void>()
        let drained = ui.run { () -> Bool in
            started.trySucceed()
            return (try? promises[19].future.wait(timeout: .seconds(10))) != nil
        }
        try started.future.wait(timeout: .seconds(10))
        for index in 0..<19 {
            let next = promises[index + 1]
            promises[index].future.configureAwait(false).getAwaiter().onCompleted {
                next.trySucceed()
                // Deep in the trampoline: the continuation of `next` is deferred to the outermost
                // frame, below this one, which cannot run it before the shutdown returns.
                if index == 15 { try? ui.shutdown() }
            }
        }
        promises[0].trySucceed()
        #expect(try drained.wait(timeout: .seconds(20)), "the chain stalled until the context's wait timed out")
    }

    @Test func currentIsPerThread() throws {
        let ui = SingleThreadContext(name: "ui-current")
        defer { try? ui.shutdown() }
        #expect(SynchronizationContext.current == nil)
        let inside = ui.run { SynchronizationContext.current === ui }
        #expect(try inside.wait())
    }

    @Test func shuttingDownFromTheContextsOwnThreadIsRefused() throws {
        let ui = SingleThreadContext(name: "ui-shutdown")
        defer { try? ui.shutdown() }
        let attempt = ui.run { () throws -> Void in try ui.shutdown() }
        #expect(throws: InvalidArgumentError.self) { try attempt.wait() }
    }

    @Test func invalidConfigureAwaitOptionsAreRefused() throws {
        let future = Future.succeeded(1)
        #expect(throws: InvalidArgumentError.self) { try future.configureAwait(options: .suppressThrowing) }
        #expect(throws: InvalidArgumentError.self) { try future.configureAwait(options: .init(rawValue: 0x80)) }
        let failed = Future<Void>.failed(TestError(code: 9))
        let awaiter = try failed.configureAwait(options: .suppressThrowing).getAwaiter()
        #expect(awaiter.isCompleted)
        try awaiter.getResult()
    }

    @Test func forceYieldingSuspendsEvenOnACompletedFuture() throws {
        let awaiter = try Future.completed.configureAwait(options: [.forceYielding]).getAwaiter()
        #expect(!awaiter.isCompleted)
    }
}

/// What a `wait()` on `ui`'s own thread for the future `start` returns there ends in: the chain
/// of its `DeadlockError`, nothing if it returned, or another error's description.
func deadlockChain<Value: Sendable>(
    waitingOn ui: SingleThreadContext, for start: @escaping @Sendable () -> Future<Value>
) throws -> [String] {
    let outcome = ui.run { () -> [String] in
        do {
            _ = try start().wait(timeout: .seconds(10))
            return []
        } catch let error as DeadlockError {
            return error.chain
        } catch {
            return ["\(error)"]
        }
    }
    return try outcome.wait(timeout: .seconds(20))
}

/// `async Future<Int> YieldOnce() { await Future.yield(); return 1 }`.
struct YieldOnce: AsyncStateMachine {
    var builder = FutureMethodBuilder<Int>()
    var state = 0

    mutating func moveNext() {
        if state == 0 {
            state = 1
            awaitUnsafeOnCompleted(Future.yield().getAwaiter())
            return
        }
        builder.setResult(1)
    }

    static func start() -> Future<Int> {
        var machine = YieldOnce()
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}
