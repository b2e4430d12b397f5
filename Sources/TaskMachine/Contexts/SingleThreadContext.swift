import Glibc
import Synchronization

/// A context with a thread of its own that runs everything posted to it, one job at a time, in
/// order — the part a UI thread plays in the lesson.
///
/// Awaits that start on its thread resume on its thread. Blocking that thread on a future whose
/// continuation must come back to it is the classic deadlock; ``Future/wait()`` detects it and
/// throws ``DeadlockError`` instead of hanging.
///
/// ```swift
/// let ui = SingleThreadContext(name: "ui")
/// let result = ui.run { loadAndShowAsync() }   // runs on "ui"; its awaits come back to "ui"
/// print(try result.wait())
/// try ui.shutdown()
/// ```
///
/// Call ``shutdown()`` when done: it runs what is queued and joins the thread.
public final class SingleThreadContext: SynchronizationContext {
    private let contextName: String
    private let outstanding = Atomic<Int>(0)
    private let thread = Locked<pthread_t?>(nil)
    /// Completed once the thread has exited, for a `shutdown()` that finds another under way.
    private let exited = Promise<Void>()
    private let unhandled: (@Sendable (any Error) -> Void)?

    /// Starts a context and its thread.
    ///
    /// - Parameters:
    ///   - name: the context's and the thread's name.
    ///   - unhandledErrorHandler: receives errors of fire-and-forget methods that captured this
    ///     context, on its thread (on a pool worker once the context has shut down); by default
    ///     they go to ``ErrorReporting/unhandledErrorHandler``.
    public init(name: String = "single-thread", unhandledErrorHandler: (@Sendable (any Error) -> Void)? = nil) {
        contextName = name
        unhandled = unhandledErrorHandler
        super.init(loop: ContextLoop())
        let started = Parker()
        let handle = spawnThread(name: name, role: .contextLoop) { [self] in
            let state = ThreadState.current
            state.synchronizationContext = self
            state.ownedContext = self
            loop!.setOwner(state)
            started.unpark()
            loop!.pump(until: { false }, beforeParking: {})
            loop!.setOwner(nil)
            state.synchronizationContext = nil
            state.ownedContext = nil
        }
        thread.withLock { $0 = handle }
        RuntimeStatistics.contextThreadStarted()
        while !loop!.hasOwner { started.park() }
    }

    public override var name: String { contextName }

    /// Whether the calling thread is this context's thread.
    public var isCurrentThread: Bool { loop!.isOwnedByCurrentThread }

    /// Whether `shutdown()` has been called (for tests).
    var isShuttingDown: Bool { thread.withLock { $0 == nil } }

    /// Operations started and not yet completed (fire-and-forget methods that captured this context).
    public var outstandingOperations: Int { outstanding.load(ordering: .relaxed) }

    /// Queues `work` to run on this context's thread. After ``shutdown()`` the thread is gone, and
    /// the work runs on the pool instead, so that nothing posted is lost.
    public override func post(_ work: @escaping @Sendable () -> Void) {
        enqueue(.item(ClosureWorkItem(work)))
    }

    /// Runs `work` on this context's thread and returns once it has run. On the context's own
    /// thread, and after ``shutdown()``, it runs inline on the calling thread. A pool worker that
    /// waits here counts as blocked, as in ``Future/wait()``: the pool makes up for it at once.
    ///
    /// - Throws: ``DeadlockError``, running nothing, when called on another context's thread while
    ///   this context's thread is blocked sending back to it, directly or through other contexts.
    public override func send(_ work: @Sendable () -> Void) throws {
        try loop!.send(work, to: self)
    }

    /// Runs `body` on this context's thread and returns a future of its result. An error `body`
    /// throws fails the future, a cancellation error included: no token could have asked it to
    /// stop, as for a ``Future/run(cancellation:_:)`` given none.
    public func run<Value: Sendable>(_ body: @escaping @Sendable () throws -> Value) -> Future<Value> {
        let promise = Promise<Value>()
        post(completing: promise.future) {
            do { promise.trySucceed(try body()) } catch {
                _ = promise.future.tryComplete(throwing: error, ownToken: CancellationToken.none)
            }
        }
        return promise.future
    }

    /// Runs `body`, an async method, on this context's thread and returns the future it returns:
    /// one that ends as that future does, or fails with the error `body` throws before returning
    /// it (a cancellation error included).
    public func run<Value: Sendable>(_ body: @escaping @Sendable () throws -> Future<Value>) -> Future<Value> {
        let promise = Promise<Value>()
        post(completing: promise.future) {
            do {
                let inner = try body()
                inner.onCompletion(
                    .item(ForwardingWorkItem(to: promise.future) { _ = promise.future.tryComplete(from: inner) }))
            } catch {
                _ = promise.future.tryComplete(throwing: error, ownToken: CancellationToken.none)
            }
        }
        return promise.future
    }

    /// Posts `body`, which completes `future`, and records `future` on the loop until `body` starts:
    /// a `wait()` for it on this context's thread would block the only thread that can run `body`,
    /// and the deadlock detector names it. While `body` runs, a `wait()` in it holds `future` up,
    /// and the detector follows that too.
    private func post(completing future: AnyFuture, _ body: @escaping @Sendable () -> Void) {
        let loop = loop!
        loop.trackSuspended(future, awaiting: .other("SingleThreadContext.run"))
        post {
            loop.untrackSuspended(future)
            ThreadState.withCurrent { $0.runningBody(of: future, body) }
        }
    }

    public override func operationStarted() {
        outstanding.add(1, ordering: .relaxed)
    }

    public override func operationCompleted() {
        outstanding.subtract(1, ordering: .relaxed)
    }

    /// Passes a fire-and-forget method's error to this context's `unhandledErrorHandler`, on its
    /// thread (on a pool worker once the context has shut down), or to
    /// ``ErrorReporting/unhandledErrorHandler`` when it has none.
    public override func reportUnhandledError(_ error: any Error) {
        let handler = unhandled
        post {
            if let handler { handler(error) } else { ErrorReporting.reportUnhandled(error) }
        }
    }

    /// Runs everything queued, stops the thread and waits for it to exit. Work posted afterwards
    /// (a continuation that captured this context, say) runs on the pool instead, and `send` runs
    /// inline. Calling it from the context's own thread is refused.
    /// - Throws: ``InvalidArgumentError`` when called on the context's own thread.
    public func shutdown() throws {
        guard !isCurrentThread else {
            throw InvalidArgumentError("a SingleThreadContext cannot shut down from its own thread")
        }
        guard
            let handle = thread.withLock({ state -> pthread_t? in
                defer { state = nil }
                return state
            })
        else {
            // Another call is shutting it down, or has: return once the thread has exited.
            try exited.future.wait()
            return
        }
        loop!.stop()
        // The thread runs what is queued before it exits, which may wait for the pool, or for
        // continuations this thread deferred: they must not wait for the join.
        let caller = ThreadState.current
        Continuations.releaseDeferred(caller)
        caller.blocking { _ = pthread_join(handle, nil) }
        RuntimeStatistics.contextThreadExited()
        exited.trySucceed()
    }
}

// Safe to share: its state is atomics, a mutex and the loop's mutex.
extension SingleThreadContext: @unchecked Sendable {}
