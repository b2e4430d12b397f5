/// "Where to resume": the place a continuation captured on this thread will run.
///
/// `await` captures ``current`` when it registers its continuation (unless configured not to) and
/// posts the continuation back to it. With no context — the default on every thread — a
/// continuation runs where the awaited future completes, or on the thread pool.
///
/// Subclass it to send continuations somewhere of your own: override ``post(_:)`` at least.
/// ``SingleThreadContext`` (a dedicated thread, like a UI thread) and ``AsyncContext`` (pumps on
/// the calling thread) are the runtime's own.
open class SynchronizationContext {
    /// The loop behind the runtime's single-threaded contexts; `nil` for other contexts.
    let loop: ContextLoop?

    /// Creates a context that posts to the thread pool and sends inline.
    public init() {
        loop = nil
    }

    init(loop: ContextLoop) {
        self.loop = loop
    }

    /// The calling thread's context, or `nil`. Each thread has its own.
    ///
    /// Set in a job on a pool worker or on a context's thread, it lasts until the job ends: the pool
    /// clears it after each job (and after a `Future.run` body that a wait or an await ran nested),
    /// and a context's loop puts its own context back. Set by an async method, it lasts until the
    /// method suspends or ends: the builder's `start`, and each resumption, put back the context
    /// they found, as .NET's do.
    public static var current: SynchronizationContext? {
        get { ThreadState.withCurrentIfPresent { $0?.synchronizationContext } }
        set { ThreadState.current.synchronizationContext = newValue }
    }

    /// A name for diagnostics.
    open var name: String { "\(type(of: self))" }

    /// Queues `work` to run on this context, asynchronously. The base context queues it on the pool.
    open func post(_ work: @escaping @Sendable () -> Void) {
        ThreadPool.shared.enqueue(.item(ClosureWorkItem(work)))
    }

    /// Runs `work` on this context and returns when it has run. The base context runs it inline.
    ///
    /// - Throws: ``DeadlockError``, from the runtime's single-threaded contexts, when the calling
    ///   thread runs a context and this context's thread is blocked sending back to it, directly or
    ///   through other contexts' sends: neither send could ever return. `work` does not run.
    open func send(_ work: @Sendable () -> Void) throws {
        work()
    }

    /// Tells the context an asynchronous operation started on it (a fire-and-forget method).
    open func operationStarted() {}

    /// Tells the context an operation counted by ``operationStarted()`` completed.
    open func operationCompleted() {}

    /// Receives the error of a fire-and-forget method that captured this context. The base context
    /// passes it to ``ErrorReporting/unhandledErrorHandler``.
    open func reportUnhandledError(_ error: any Error) {
        ErrorReporting.reportUnhandled(error)
    }

    /// Queues a runtime job: straight into the loop of a runtime context, through `post` otherwise.
    func enqueue(_ job: Job) {
        if let loop {
            // A stopped loop (a shut-down context) runs nothing more: the job goes to the pool
            // rather than being lost.
            if !loop.push(job) { ThreadPool.shared.enqueue(job) }
        } else {
            post { job.run() }
        }
    }

    /// Records that `box` is suspended and will resume on this context, for the deadlock detector.
    func trackSuspended(_ box: AnyFuture, awaiting future: SuspendedOn) {
        loop?.trackSuspended(box, awaiting: future)
    }

    /// Forgets a box recorded by `trackSuspended`, as it resumes.
    func untrackSuspended(_ box: AnyFuture) {
        loop?.untrackSuspended(box)
    }
}

// Subclasses decide how posting synchronizes; the runtime's own contexts keep their state in a loop
// guarded by a mutex.
extension SynchronizationContext: @unchecked Sendable {}
