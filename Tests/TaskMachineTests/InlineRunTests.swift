import Synchronization
import Testing

@testable import TaskMachine

/// `async Future<Void> AwaitAJobItQueued(log, token)`: hops onto the pool (or the context it was
/// started on), queues a `Future.run` there and awaits it at once, writing what happens, in order,
/// to `log`. `cancelling`, if given, is cancelled between the queuing and the await.
struct AwaitAJobItQueued: AsyncStateMachine {
    var builder = FutureMethodBuilder<Void>()
    var state = 0
    let log: Locked<[String]>
    let cancelling: CancellationTokenSource?
    let configure: Bool?
    var hop: YieldAwaiter?
    var job: FutureAwaiter<RuntimeThread>?
    var configured: ConfiguredFutureAwaiter<RuntimeThread>?
    var thread: RuntimeThread?

    mutating func moveNext() {
        do {
            switch state {
            case 0:
                state = 1
                // From the test's thread onto a pool worker, or onto the context running the call.
                let awaiter = Future.yield().getAwaiter()
                hop = awaiter
                awaitUnsafeOnCompleted(awaiter)
            case 1:
                state = 2
                thread = RuntimeThread.current
                let log = log
                let future = Future.run(cancellation: cancelling?.token ?? .none) { () -> RuntimeThread in
                    log.withLock { $0.append("body") }
                    return RuntimeThread.current
                }
                cancelling?.cancel()
                log.withLock { $0.append("awaits") }
                if let configure {
                    let awaiter = future.configureAwait(configure).getAwaiter()
                    configured = awaiter
                    if !awaiter.isCompleted {
                        awaitUnsafeOnCompleted(awaiter)
                        log.withLock { $0.append("suspended") }
                        return
                    }
                } else {
                    let awaiter = future.getAwaiter()
                    job = awaiter
                    if !awaiter.isCompleted {
                        awaitUnsafeOnCompleted(awaiter)
                        log.withLock { $0.append("suspended") }
                        return
                    }
                }
                fallthrough
            default:
                let ranOn = try job?.getResult() ?? configured!.getResult()
                log.withLock {
                    $0.append(
                        ranOn == thread
                            ? "body ran on the awaiting thread"
                            : ranOn.role == .poolWorker ? "body ran on another pool worker" : "body ran on \(ranOn)")
                    $0.append(RuntimeThread.current == thread ? "resumed on the awaiting thread" : "resumed elsewhere")
                }
                builder.setResult()
            }
        } catch {
            log.withLock { $0.append("threw \(type(of: error))") }
            builder.setError(error)
        }
    }

    static func start(
        _ log: Locked<[String]>, cancelling: CancellationTokenSource? = nil, configure: Bool? = nil
    ) -> Future<Void> {
        var machine = AwaitAJobItQueued(log: log, cancelling: cancelling, configure: configure)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

@Suite struct InlineRunTests {
    /// The job waits in the awaiting worker's LIFO slot, which no other worker takes from: the
    /// worker runs the body itself, inside the await, and the method resumes as its next job.
    @Test func aPoolWorkerAwaitingAJobNobodyStartedRunsItsBodyInsteadOfSuspending() throws {
        let log = Locked<[String]>([])
        try AwaitAJobItQueued.start(log).wait(timeout: .seconds(10))
        #expect(
            log.withLock { $0 } == [
                "awaits", "body", "suspended", "body ran on the awaiting thread", "resumed on the awaiting thread",
            ])
    }

    /// Run once: the job the pool still holds finds the future completed and does nothing.
    @Test func aBodyRunByItsAwaiterDoesNotRunAgainAsAJob() throws {
        let bodies = Atomic<Int>(0)
        let futures = (0..<200).map { _ in
            Future.run(with: ()) { (_: Void) -> Void in bodies.add(1, ordering: .relaxed) }
        }
        let log = Locked<[String]>([])
        for _ in 0..<50 { try AwaitAJobItQueued.start(log).wait(timeout: .seconds(10)) }
        for future in futures { try future.wait(timeout: .seconds(10)) }
        // Each started method queued one job, and the awaits ran it.
        #expect(log.withLock { $0.filter { $0 == "body" }.count } == 50)
        #expect(log.withLock { $0.filter { $0 == "body ran on the awaiting thread" }.count } == 50)
        #expect(bodies.load(ordering: .relaxed) == 200)
        // Let the jobs left in the queues run: none runs a body twice.
        _ = try Future.delay(.milliseconds(50)).wait(timeout: .seconds(10))
        #expect(log.withLock { $0.filter { $0 == "body" }.count } == 50)
    }

    /// Run by its awaiter, a job whose token was cancelled after it was queued ends cancelled
    /// without running its body, as it would on a worker of its own.
    @Test func aTokenCancelledBeforeTheAwaitEndsTheJobCancelledWithoutRunningIt() throws {
        let log = Locked<[String]>([])
        let method = AwaitAJobItQueued.start(log, cancelling: CancellationTokenSource())
        #expect(throws: OperationCancelledError.self) { try method.wait(timeout: .seconds(10)) }
        #expect(log.withLock { $0 } == ["awaits", "suspended", "threw OperationCancelledError"])
    }

    /// A thread with a context never runs the body, even with `configureAwait(false)`: `Future.run`
    /// moves work off such a thread (a UI thread) on purpose.
    @Test(arguments: [nil, true, false] as [Bool?])
    func aContextsThreadAwaitingAJobLeavesItToThePool(configure: Bool?) throws {
        let ui = SingleThreadContext(name: "ui-inline")
        defer { try? ui.shutdown() }
        let log = Locked<[String]>([])
        try ui.run { AwaitAJobItQueued.start(log, configure: configure) }.wait(timeout: .seconds(10))
        let lines = log.withLock { $0 }
        #expect(lines.contains("body ran on another pool worker"), "\(lines)")
        #expect(!lines.contains("body ran on the awaiting thread"), "\(lines)")
    }
}

@Suite struct InlineWaitTests {
    /// A job queued from a worker waits in its LIFO slot; a worker about to block hands that job
    /// over to the others. Waiting for it without a time limit, the worker runs it itself instead.
    @Test func aPoolWorkerWaitingForAJobNobodyStartedRunsItsBodyInsteadOfBlocking() throws {
        let threads = try Future.run { () -> [RuntimeThread] in
            let inner = Future.run { RuntimeThread.current }
            return [RuntimeThread.current, try inner.wait()]
        }.wait(timeout: .seconds(10))
        #expect(threads[0] == threads[1])
    }

    /// With a time limit the worker blocks as before: a body run there could not keep to it.
    @Test func aWaitWithATimeLimitLeavesTheBodyToAnotherWorker() throws {
        let threads = try Future.run { () -> [RuntimeThread] in
            let inner = Future.run { RuntimeThread.current }
            return [RuntimeThread.current, try inner.wait(timeout: .seconds(10))]
        }.wait(timeout: .seconds(10))
        #expect(threads[0] != threads[1])
    }
}

/// `async Future<Void> StartTheNextLink(remaining, done)`: awaits a `Future.run` whose body starts
/// the next link, which does the same, until the last link succeeds `done`. Each body starts its
/// link on the worker running the body, where the link's await finds the next job not started.
struct StartTheNextLink: AsyncStateMachine {
    var builder = FutureMethodBuilder<Void>()
    var state = 0
    let remaining: Int
    let done: Promise<Void>
    var job: FutureAwaiter<Void>?

    mutating func moveNext() {
        do {
            switch state {
            case 0:
                state = 1
                guard remaining > 0 else {
                    _ = done.trySucceed()
                    return builder.setResult()
                }
                let (remaining, done) = (remaining - 1, done)
                let awaiter = Future.run { _ = StartTheNextLink.start(remaining: remaining, done: done) }.getAwaiter()
                job = awaiter
                if !awaiter.isCompleted { return awaitUnsafeOnCompleted(awaiter) }
                fallthrough
            default:
                try job!.getResult()
                builder.setResult()
            }
        } catch {
            builder.setError(error)
        }
    }

    static func start(remaining: Int, done: Promise<Void>) -> Future<Void> {
        var machine = StartTheNextLink(remaining: remaining, done: done)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

@Suite struct InlineRunDepthTests {
    /// A body run inside an await may itself start a method that awaits another job nobody
    /// started: the runs nest no deeper than inline continuations do, so a long chain of them
    /// runs in bounded stack, as it does when each body runs as a job of its own.
    @Test func aChainOfAwaitsEachRunningTheNextBodyRunsInBoundedStack() throws {
        let done = Promise<Void>()
        _ = Future.run { _ = StartTheNextLink.start(remaining: 200_000, done: done) }
        try done.future.wait(timeout: .seconds(60))
    }
}
