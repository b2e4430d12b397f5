import Synchronization

/// A continuation that wakes a thread blocked in `wait()`.
final class BlockingWaiter: WorkItem {
    private let parker: Parker
    /// The futures that cannot complete while the thread blocks (`ThreadState.futuresOnStack`),
    /// for the deadlock detector: the blocked thread is a link in a chain of awaits, from the future
    /// it waits for to these. Emptied by `abandon()`.
    private let heldUp: Locked<[AnyFuture]>
    /// The blocked thread's name, for the detector's chain.
    let threadName: String

    init(parker: Parker, threadName: String, holdingUp heldUp: [AnyFuture]) {
        self.parker = parker
        self.threadName = threadName
        self.heldUp = Locked(heldUp)
        super.init()
    }

    override func run() { parker.unpark() }

    override var dependentFutures: [AnyFuture] { heldUp.withLock { $0 } }

    /// Called by a wait that ends without the future (timed out, or thrown a `DeadlockError`),
    /// before its thread goes on: its registration may stay behind, on a future that has no other
    /// continuation, and must neither claim to hold anything up nor keep it alive any more.
    func abandon() {
        let dropped = heldUp.withLock { heldUp in
            defer { heldUp = [] }
            return heldUp
        }
        _ = dropped  // released after the lock
    }
}

extension AnyFuture {
    /// Blocks the calling thread until the future completes or the time runs out (negative: never).
    /// Returns whether it completed.
    ///
    /// - Throws: ``DeadlockError`` when the thread owns a single-threaded context and the future can
    ///   only complete after a continuation runs on that context, or when the future needs work
    ///   that is on this thread's stack, under the wait.
    @usableFromInline @inline(never)
    final func blockUntilCompleted(timeoutNanoseconds: Int64) throws -> Bool {
        if isCompleted { return true }
        let thread = ThreadState.current
        // A pool worker with no context runs a `Future.run` body that no worker has started rather
        // than block until another worker does, as an await does (`registerAwait`). Not with a
        // time limit, which a body run here could not keep to.
        if timeoutNanoseconds < 0, thread.runsPoolJobs, thread.synchronizationContext == nil,
            runHereIfNotStarted(nestedOn: thread)
        {
            return true
        }
        if let deadlock = DeadlockDetector.detect(waitingFor: self, on: thread) { throw deadlock }
        // Continuations this thread deferred must not wait for this thread.
        Continuations.releaseDeferred(thread)
        // A thread blocked for good in the work of a future holds that future up: a waiter of its
        // own names it, for the deadlock detector to follow (the thread's reused waiter names
        // none). Not with a time limit: the wait ends, and the work goes on, without the future.
        let onStack = thread.futuresOnStack
        let heldUp = timeoutNanoseconds < 0 ? onStack : []
        let waiter =
            heldUp.isEmpty
            ? thread.blockingWaiter : BlockingWaiter(parker: thread.parker, threadName: thread.name, holdingUp: heldUp)
        onCompletion(.item(waiter))
        /// Takes the wait's continuation back, for a wait that ends without the future.
        func withdraw() {
            waiter.abandon()
            removeContinuation(waiter)
        }
        // Registered first: another thread blocking over the same cycle at once then sees this one.
        if !isCompleted, let deadlock = DeadlockDetector.detect(waitingFor: self, on: thread, onStack: onStack) {
            withdraw()
            throw deadlock
        }
        let (sum, overflow) = Clock.now.addingReportingOverflow(max(0, timeoutNanoseconds))
        let deadline = timeoutNanoseconds < 0 || overflow ? Int64.max : sum
        // On a context's thread, or in work on the stack, the detector looks again now and then,
        // even if nothing wakes it: a method suspended when the wait began can go on to await that
        // work later, and close the cycle without blocking anew.
        let recheck: Int64? =
            thread.ownedContext == nil && onStack.isEmpty ? nil : DeadlockDetector.recheckNanoseconds
        return try thread.blocking {
            while !isCompleted {
                let remaining = deadline == .max ? -1 : deadline - Clock.now
                if remaining < 0 && deadline != .max {
                    withdraw()
                    return false
                }
                var nap = remaining
                if let recheck, nap < 0 || nap > recheck { nap = recheck }
                thread.parker.park(timeoutNanoseconds: nap)
                // A job posted to this thread's context wakes it too: look again for a deadlock.
                if !isCompleted,
                    let deadlock = DeadlockDetector.detect(waitingFor: self, on: thread)
                        ?? DeadlockDetector.detect(waitingFor: self, on: thread, onStack: onStack)
                {
                    withdraw()
                    throw deadlock
                }
            }
            return true
        }
    }
}

extension Future {
    /// Blocks the calling thread until the future completes; returns its value or throws its error.
    ///
    /// Prefer `await`: a blocked thread does nothing else. When a pool worker blocks, leaving fewer
    /// unblocked workers than the pool's target (one per core), the pool starts an extra one at
    /// once to make up for it, whether or not another worker is idle. A pool worker with no context
    /// waiting for the future of a ``run(cancellation:_:)`` whose body no worker has started runs
    /// the body itself instead of blocking (``wait(timeout:)`` does not: the body could run past
    /// the time).
    ///
    /// - Throws: the future's error; ``DeadlockError`` instead of hanging when this thread runs a
    ///   single-threaded context that the future needs in order to complete, or when the future
    ///   needs work on this thread's own stack, under the wait (a method's `moveNext`, a
    ///   `Future.run` body, waiting for its own future).
    ///
    /// Inlinable, so that a completed future's value is read by code specialized for it; the
    /// blocking itself is out of line, in `blockUntilCompleted`, the frame a profiler shows.
    @inlinable
    public final func wait() throws -> Value {
        if !isCompleted { _ = try blockUntilCompleted(timeoutNanoseconds: -1) }
        return try getResult()
    }

    /// Blocks the calling thread until the future completes or `timeout` passes.
    ///
    /// - Throws: ``TimeoutError`` when the time runs out, ``InvalidArgumentError`` for a negative
    ///   timeout, ``DeadlockError``, or the future's error.
    @inlinable
    public final func wait(timeout: Duration) throws -> Value {
        if !isCompleted || timeout < .zero { try block(timeout: timeout) }
        return try getResult()
    }

    /// The blocking part of `wait(timeout:)`, out of line; first, the check of the timeout.
    @usableFromInline @inline(never)
    final func block(timeout: Duration) throws {
        guard timeout >= .zero else {
            throw InvalidArgumentError("wait(timeout:) needs a timeout of zero or more, not \(timeout)")
        }
        guard try blockUntilCompleted(timeoutNanoseconds: timeout.totalNanoseconds) else {
            throw TimeoutError(timeout: timeout)
        }
    }
}

// Safe to share: immutable; the parker is thread-safe.
extension BlockingWaiter: @unchecked Sendable {}
