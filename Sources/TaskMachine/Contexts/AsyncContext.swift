import Synchronization

/// A context that pumps on the calling thread until the work started in it is done.
///
/// ``run(_:)->_`` installs the context on the calling thread, calls the body,
/// then runs every continuation that comes back to the context until the body's future and every
/// fire-and-forget method started in it have completed. It gives a console program or a test the
/// single-threaded, ordered behaviour of a UI thread, on the thread it already has.
///
/// ```swift
/// let total = try AsyncContext.run { addAfterDelay(20, 22) }   // 42
/// ```
///
/// An error from a fire-and-forget method started inside is rethrown by `run` once all work is
/// done; when several fail, or the body throws too, `run` rethrows the first and passes the others
/// to ``ErrorReporting/unhandledErrorHandler``. Work that comes back to the context after `run` has returned (an await the body started
/// but did not wait for) runs on the pool instead, as it does for a shut-down
/// ``SingleThreadContext``.
///
/// Called on a pool worker, `run` keeps that worker for as long as it pumps; the pool counts it as
/// blocked, as in ``Future/wait()``, and makes up for it at once.
public final class AsyncContext: SynchronizationContext {
    private let outstanding = Atomic<Int>(0)
    /// The errors of fire-and-forget methods, for `run` to rethrow; `nil` once `run` has returned,
    /// after which an error goes to ``ErrorReporting/unhandledErrorHandler`` (a method still
    /// running when the pump threw ``DeadlockError``).
    private let errors = Locked<[any Error]?>([])
    /// The context whose loop the thread ran when `run` began, stalled until `run` returns; set
    /// and read on that thread only, and cleared when `run` returns.
    private(set) var enclosingContext: SynchronizationContext?
    /// The future the body of ``run(_:)->_`` returned; on the pumping thread only.
    private var awaited: AnyFuture?
    /// The boxes of the fire-and-forget methods started inside that have suspended and not ended:
    /// `run` waits for them as it waits for `awaited`. `nil` once `run` has returned.
    private let suspendedMethods = Locked<[ObjectIdentifier: AnyFuture]?>([:])

    private override init() {
        super.init(loop: ContextLoop())
    }

    public override var name: String { "AsyncContext" }

    public override func post(_ work: @escaping @Sendable () -> Void) {
        enqueue(.item(ClosureWorkItem(work)))
    }

    /// Runs `work` on the thread that pumps this context and returns once it has run: inline when
    /// called on that thread, and once ``run(_:)->_`` has returned (as work posted then runs on the
    /// pool). A pool worker that waits here counts as blocked, as in ``Future/wait()``.
    ///
    /// - Throws: ``DeadlockError``, running nothing, when called on another context's thread while
    ///   the thread pumping this context is blocked sending back to it, directly or through other
    ///   contexts.
    public override func send(_ work: @Sendable () -> Void) throws {
        try loop!.send(work, to: self)
    }

    public override func operationStarted() {
        outstanding.add(1, ordering: .acquiringAndReleasing)
    }

    public override func operationCompleted() {
        if outstanding.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            loop!.wake()
        }
    }

    /// Records `box`, a fire-and-forget method started inside, at its first suspension.
    func methodSuspended(_ box: AnyFuture) {
        suspendedMethods.withLock { $0?[ObjectIdentifier(box)] = box }
    }

    /// Forgets a box recorded by `methodSuspended`, as its method ends.
    func methodEnded(_ box: AnyFuture) {
        _ = suspendedMethods.withLock { $0?.removeValue(forKey: ObjectIdentifier(box)) }
    }

    /// Keeps the error; ``run(_:)->_`` and ``run(_:)->()`` rethrow the first once its work is done,
    /// and pass the others to ``ErrorReporting/unhandledErrorHandler``.
    public override func reportUnhandledError(_ error: any Error) {
        let kept = errors.withLock { errors -> Bool in
            guard errors != nil else { return false }
            errors!.append(error)
            return true
        }
        if !kept { ErrorReporting.reportUnhandled(error) }
    }

    /// Runs `body` with an `AsyncContext` current on this thread, pumps until the future it returns
    /// and every fire-and-forget method started inside have completed, and returns the value.
    ///
    /// - Throws: the first error of a fire-and-forget method started inside, else the body's own
    ///   error (rethrown once the work it started is done), else the future's error; the errors of
    ///   the other failed methods, and the body's when it is not the one thrown, go to
    ///   ``ErrorReporting/unhandledErrorHandler``.
    ///   ``DeadlockError`` instead of pumping for ever when `run` is called on the thread of another
    ///   context (a ``SingleThreadContext``'s), which stalls while `run` pumps, and the future, or a
    ///   fire-and-forget method started inside, can only complete after a continuation runs on
    ///   that context, or when they need work on this thread's stack, under `run` (a method's
    ///   `moveNext` that runs its own future here); the work left then goes on without this
    ///   context, and the errors of fire-and-forget methods started inside, and the body's, go to
    ///   ``ErrorReporting/unhandledErrorHandler``.
    public static func run<Value: Sendable>(_ body: () throws -> Future<Value>) throws -> Value {
        let context = AsyncContext()
        let future: Future<Value>? = try context.pump {
            let future = try body()
            context.awaited = future
            context.operationStarted()
            future.onCompletion(.item(ClosureWorkItem(context: context) { context.operationCompleted() }))
            return future
        }
        return try future!.getResult()
    }

    /// Runs `body` — typically one that starts fire-and-forget methods — with an `AsyncContext`
    /// current on this thread, and pumps until every operation started inside has completed.
    ///
    /// - Throws: the first error of a fire-and-forget method started inside, else the body's error;
    ///   the others go to ``ErrorReporting/unhandledErrorHandler``. ``DeadlockError`` instead of
    ///   pumping for ever when `run` is called on the thread of another context, and a
    ///   fire-and-forget method started inside can only complete after a continuation runs on that
    ///   context, or needs work on this thread's stack, under `run`, as for ``run(_:)->_``.
    public static func run(_ body: () throws -> Void) throws {
        let context = AsyncContext()
        _ = try context.pump { try body() }
    }

    private func pump<Result>(_ body: () throws -> Result) throws -> Result? {
        var bodyResult: Result?
        var bodyError: (any Error)?
        var pumpError: (any Error)?
        do {
            let thread = ThreadState.current
            let saved = (thread.synchronizationContext, thread.ownedContext)
            enclosingContext = thread.ownedContext
            thread.synchronizationContext = self
            thread.ownedContext = self
            loop!.setOwner(thread)
            // The thread has its own context back before any error is reported below: the handler
            // is code of the user's, and under this context, which runs nothing more, its awaits
            // would capture a context that sends them to the pool, and its waits would be taken
            // for deadlocks on a loop nobody pumps.
            defer {
                thread.synchronizationContext = saved.0
                thread.ownedContext = saved.1
                enclosingContext = nil
                awaited = nil
                loop!.setOwner(nil)
            }
            do { bodyResult = try body() } catch { bodyError = error }
            // The work under this call on the thread's stack, which cannot go on while it pumps;
            // looked at once at first, then at most once a recheck period: the pump comes to park
            // each time its queue empties, which may be once a job.
            let onStack = thread.futuresOnStack
            var lastStackLook = Int64.min
            // Pumping, the thread is lost to its pool, if it is a worker, as in a blocking wait.
            // A `DeadlockError`, the one error the pump throws: it stopped with work left.
            do {
                try thread.blocking {
                    try loop!.pump(
                        until: { outstanding.load(ordering: .acquiring) == 0 },
                        // Stalling a context, or work on the stack, it looks for a deadlock again
                        // now and then, as a wait() does.
                        parkingAtMost: enclosingContext == nil && onStack.isEmpty
                            ? -1 : DeadlockDetector.recheckNanoseconds,
                        beforeParking: {
                            if let found = deadlockThroughEnclosingContexts() { throw found }
                            let now = Clock.now
                            guard !onStack.isEmpty,
                                lastStackLook == .min || now - lastStackLook >= DeadlockDetector.recheckNanoseconds
                            else { return }
                            lastStackLook = now
                            if let found = deadlockOnTheStack(onStack, of: thread) { throw found }
                        })
                }
            } catch {
                pumpError = error
            }
            // Nobody pumps the loop from here: what comes back later goes to the pool.
            for job in loop!.close() { ThreadPool.shared.enqueue(job) }
        }
        // A method still suspended (the pump threw) keeps this context in its builder: let go of
        // its box, which would keep the method; after the lock, and once the thread has its own
        // contexts back, as what it releases may run a deinit of the user's, whose waits and sends
        // must not be looked at as this finished context's.
        _ = suspendedMethods.withLock { methods in
            defer { methods = nil }
            return methods
        }
        // From here, a late error (the pump threw with work left) goes to the process-wide handler.
        let kept = errors.withLock { errors -> [any Error] in
            defer { errors = nil }
            return errors ?? []
        }
        // One error can be thrown, in this order of precedence: the others go where an error
        // nobody catches goes.
        var thrown = (pumpError.map { [$0] } ?? []) + kept + (bodyError.map { [$0] } ?? [])
        guard !thrown.isEmpty else { return bodyResult }
        let first = thrown.removeFirst()
        for error in thrown { ErrorReporting.reportUnhandled(error) }
        throw first
    }
}

extension AsyncContext {
    /// The deadlock that pumping on until the body's future and the fire-and-forget methods
    /// started inside complete would be, if one of them can only complete after a continuation
    /// runs on a context this one's `run` stalls.
    fileprivate func deadlockThroughEnclosingContexts() -> DeadlockError? {
        guard let enclosingContext else { return nil }
        for future in pendingFutures {
            if let found = DeadlockDetector.detect(waitingFor: future, from: enclosingContext) {
                return DeadlockError(
                    contextName: found.contextName, chain: found.chain, blockingCall: "AsyncContext.run",
                    blockedSends: found.blockedSends)
            }
        }
        return nil
    }
}

extension AsyncContext {
    /// What the pump waits for and is not complete yet: the body's future and the fire-and-forget
    /// methods started inside and suspended.
    fileprivate var pendingFutures: [AnyFuture] {
        let methods = suspendedMethods.withLock { $0.map { Array($0.values) } ?? [] }
        return ([awaited].compactMap { $0 } + methods).filter { !$0.isCompleted }
    }

    /// The deadlock that pumping on would be if the body's future, or a fire-and-forget method
    /// started inside, needs work that is on this thread's stack under the pump (`onStack`), which
    /// cannot go on until `run` returns: a method's `moveNext` that runs its own future under an
    /// `AsyncContext`, say.
    fileprivate func deadlockOnTheStack(_ onStack: [AnyFuture], of thread: ThreadState) -> DeadlockError? {
        guard !onStack.isEmpty else { return nil }
        let pending = pendingFutures
        guard !pending.isEmpty,
            let found = DeadlockDetector.detect(waitingForAnyOf: pending, on: thread, onStack: onStack)
        else { return nil }
        return DeadlockError(
            contextName: found.contextName, chain: found.chain, blockingCall: "AsyncContext.run",
            threadName: found.threadName)
    }
}

// Safe to share: its counters are atomics, and its errors and suspended methods sit under mutexes.
extension AsyncContext: @unchecked Sendable {}
