/// The future of `Future.run`: it is its own pool job, so running a closure costs one allocation
/// beyond the closure's captures.
@usableFromInline
final class RunFuture<Value: Sendable>: Future<Value> {
    /// Kept until the future goes, not dropped once run: the closure's context was allocated by
    /// the thread that called `run`, which usually holds the future last, and freeing it there is
    /// glibc's fast path, where the worker freed it into another thread's arena.
    private let body: @Sendable () throws -> Value
    private let token: CancellationToken

    @usableFromInline
    init(token: CancellationToken, body: @escaping @Sendable () throws -> Value) {
        self.body = body
        self.token = token
        super.init(runsContinuationsAsynchronously: false)
    }

    override func runAsJob() {
        _ = runHereIfNotStarted()
    }

    override func runHereIfNotStarted() -> Bool {
        // Run once, by whoever reserves the completion first: the job, or a worker awaiting the
        // future. No flag of its own, which would take the object past 104 bytes, into a 128-byte
        // heap chunk from a 112-byte one.
        guard reserveCompletion() else { return false }
        runReserved(token: token, argument: ()) { _ in try body() }
        return true
    }

    override var diagnosticName: String { "run { } -> Future<\(Value.self)>" }
}

/// The future of `Future.run(with:)`: the body's argument lives in the future itself, in place
/// when it fits in two words, so a body that captures nothing costs this one allocation in all.
///
/// The argument waits in the words that will hold the result (``Future/valueAddress``), unused
/// until the future succeeds: the body takes it out before the result goes in. Two words less
/// make the object 105 bytes, a 128-byte heap chunk rather than 144, which glibc keeps in its
/// fast bins: queuing a thousand of these and dropping them again took about 116 fewer
/// instructions each on the queuing thread.
@usableFromInline
final class RunWithArgumentFuture<Argument: Sendable, Value: Sendable>: Future<Value> {
    @usableFromInline
    let body: @Sendable (Argument) throws -> Value
    @usableFromInline
    let token: CancellationToken
    /// Whether the argument is still in the value's words. Only the creator and the one run (the
    /// thread that reserved the completion) touch it.
    @usableFromInline @exclusivity(unchecked)
    var hasArgument = true

    /// Inlinable, so the caller's specialized code stores the argument.
    @inlinable
    init(argument: Argument, token: CancellationToken, body: @escaping @Sendable (Argument) throws -> Value) {
        self.body = body
        self.token = token
        super.init(runsContinuationsAsynchronously: false)
        InlineValue.store(argument, at: valueAddress)
    }

    deinit {
        // A job never run still holds its argument; a future that ran holds its value, if any,
        // which `Future`'s deinit destroys.
        if hasArgument { InlineValue.destroy(Argument.self, at: valueAddress) }
    }

    override func runAsJob() {
        _ = runHereIfNotStarted()
    }

    override func runHereIfNotStarted() -> Bool {
        // Run once, by whoever reserves the completion first: the job, or a worker awaiting the
        // future. The argument is taken after the reservation, which orders it after the creator's
        // store for a thread other than the job's.
        guard reserveCompletion() else { return false }
        hasArgument = false
        runReserved(token: token, argument: InlineValue.take(Argument.self, at: valueAddress), body)
        return true
    }

    override var diagnosticName: String { "run(with: \(Argument.self)) { } -> Future<\(Value.self)>" }
}

extension Future {
    /// Runs `body(argument)` as this future's work, its completion reserved already by the caller,
    /// which runs it once: cancelled without running if `token` is cancelled by now; cancelled too
    /// if the body throws a cancellation through `token`; failed for any other error, and for any
    /// error at all when there is no token (`.none`). The argument is gone before the future
    /// completes, so whoever sees the result may count on the future no longer keeping it.
    final func runReserved<Argument>(
        token: CancellationToken, argument: consuming Argument, _ body: (Argument) throws -> Value
    ) {
        if token.isCancellationRequested {
            _ = consume argument
            cancelReserved(token: token)
            return
        }
        do {
            let value = try call(body, with: consume argument)
            storeValue(value)
            publishCompletion(.succeeded)
        } catch {
            completeReserved(throwing: error, ownToken: token)
        }
    }

    /// Calls `body`; `argument` ends with this call. While the body runs, a `wait()` in it holds this
    /// future up (`ThreadState.futuresOnStack`).
    @inline(__always)
    private func call<Argument>(_ body: (Argument) throws -> Value, with argument: consuming Argument) throws
        -> Value
    {
        // Borrowed: an `unowned(unsafe)` local here cost a retain and a release of the state.
        try ThreadState.withCurrent { thread in try thread.runningBody(of: self) { try body(argument) } }
    }

    /// Runs `body` on the thread pool and returns a future of its result — for CPU work that should
    /// not hold up the calling thread.
    ///
    /// The future keeps `body`, and what it captures, until the future itself is released: the
    /// closure's context is freed by the thread that lets go of the future last, usually the one
    /// that made it, rather than by the worker. To hand the body something it lets go of as soon
    /// as it starts, pass it as the argument of ``run(with:cancellation:_:)``.
    ///
    /// A state machine on a pool worker, with no context, that awaits the future before any worker
    /// has started the body runs the body itself, on that worker, instead of suspending; the body
    /// still runs once, and on a pool worker.
    ///
    /// - Parameters:
    ///   - cancellation: checked before the body starts: a token cancelled by then (or already when
    ///     `run` is called) ends the future *cancelled* without running the body. A body that throws
    ///     ``OperationCancelledError`` with this same token ends it cancelled too; any other error
    ///     fails it, as does every error with no token (`.none`), which nothing can cancel.
    ///   - body: the work.
    @inlinable
    public static func run(
        cancellation: CancellationToken = .none,
        _ body: @escaping @Sendable () throws -> Value
    ) -> Future<Value> {
        if cancellation.isCancellationRequested {
            return Future.cancelled(token: cancellation)
        }
        let future = RunFuture(token: cancellation, body: body)
        Continuations.enqueueOnPool(future)
        return future
    }

    /// Runs `body` with `argument` on the thread pool and returns a future of its result.
    ///
    /// The argument is kept in the future itself, so a body that captures nothing needs no closure
    /// context: one allocation per call in all (two for an argument larger than two words). The
    /// counterpart of .NET's `Task.Factory.StartNew(action, state)`, for code that starts many
    /// small jobs.
    ///
    /// ```swift
    /// let squares = (1...100).map { Future.run(with: $0) { $0 * $0 } }
    /// ```
    ///
    /// As with ``run(cancellation:_:)``, a state machine on a pool worker that awaits the future
    /// before any worker has started the body runs the body itself.
    ///
    /// - Parameters:
    ///   - argument: handed to `body` on the worker; the future lets go of it as the body starts,
    ///     and it lives on only as long as the body's use of it.
    ///   - cancellation: as for ``run(cancellation:_:)``.
    ///   - body: the work.
    @inlinable
    public static func run<Argument: Sendable>(
        with argument: Argument,
        cancellation: CancellationToken = .none,
        _ body: @escaping @Sendable (Argument) throws -> Value
    ) -> Future<Value> {
        if cancellation.isCancellationRequested {
            return Future.cancelled(token: cancellation)
        }
        let future = RunWithArgumentFuture(argument: argument, token: cancellation, body: body)
        Continuations.enqueueOnPool(future)
        return future
    }
}

// Safe to share: the body and argument are read and cleared only by the one job run.
extension RunFuture: @unchecked Sendable {}
extension RunWithArgumentFuture: @unchecked Sendable {}
