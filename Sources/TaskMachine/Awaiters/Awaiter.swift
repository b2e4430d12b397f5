/// The awaiter pattern: what `await` does, as four calls a person can make by hand.
///
/// To await something, a state machine asks it for an awaiter (``Awaitable/getAwaiter()``), checks
/// ``isCompleted`` — if `true` it goes on at once, the fast path — otherwise registers its
/// continuation with ``onCompleted(_:)`` and returns; when the continuation runs, it calls
/// ``getResult()`` for the value or the error.
///
/// Any type can be awaited by adopting ``Awaitable`` with an awaiter of its own. A countdown latch:
///
/// ```swift
/// import Synchronization
///
/// final class Latch: Awaitable, Sendable {
///     struct Awaiter: TaskMachine.Awaiter {
///         let latch: Latch
///         var isCompleted: Bool { latch.opened.future.isCompleted }
///         func onCompleted(_ continuation: @escaping @Sendable () -> Void) {
///             latch.opened.future.getAwaiter().onCompleted(continuation)
///         }
///         func getResult() throws { try latch.opened.future.getResult() }
///     }
///
///     let opened = Promise<Void>()
///     private let remaining: Mutex<Int>
///     init(count: Int) { remaining = Mutex(count) }
///
///     func countDown() {
///         if remaining.withLock({ $0 -= 1; return $0 == 0 }) { opened.trySucceed() }
///     }
///     func getAwaiter() -> Awaiter { Awaiter(latch: self) }
/// }
///
/// try await latch.value   // any awaitable can be awaited from Swift async code
/// ```
public protocol Awaiter {
    /// What ``getResult()`` returns.
    associatedtype Result

    /// Whether the awaited operation has completed; when `true`, `await` does not suspend.
    var isCompleted: Bool { get }

    /// Registers `continuation` to run once when the operation completes. If it has completed
    /// already, the continuation is queued, never run inside this call.
    ///
    /// - Throws: when the awaiter cannot accept a continuation, such as a second one on a
    ///   ``ValueFutureSource`` that takes only one.
    func onCompleted(_ continuation: @escaping @Sendable () -> Void) throws

    /// Like ``onCompleted(_:)``; the form the method builders call for awaiters other than the
    /// runtime's own (those take the state machine's box directly). TaskMachine keeps no execution
    /// context to flow, so the two differ only in intent; the default implementation forwards.
    func unsafeOnCompleted(_ continuation: @escaping @Sendable () -> Void) throws

    /// The operation's value, or its error rethrown. Call it after completion.
    func getResult() throws -> Result
}

extension Awaiter {
    public func unsafeOnCompleted(_ continuation: @escaping @Sendable () -> Void) throws {
        try onCompleted(continuation)
    }
}

/// Something `await` can wait for: it hands out an ``Awaiter``.
///
/// Futures, value futures, ``Future/yield()`` and configured awaits adopt it, and so can your own
/// types. A non-copyable awaitable (``ValueFuture``) is consumed by `getAwaiter()`, so it can be
/// awaited once only — the compiler enforces it.
public protocol Awaitable: ~Copyable {
    /// The awaiter type.
    associatedtype AwaiterType: Awaiter

    /// The awaiter for one await.
    consuming func getAwaiter() -> AwaiterType
}

/// The runtime's own awaiters register a state machine's box, or a resumer, directly: no closure.
@usableFromInline
protocol JobRegisteringAwaiter {
    /// Registers a suspended state machine's box to resume, capturing the context as configured.
    func register(box: AnyFuture) throws
    /// Registers a work item that must run, wherever, when the operation completes.
    func register(item: WorkItem) throws
    /// Takes back `item`, registered by `register(item:)`, if it has not run: for a Swift task that
    /// stopped waiting when it was cancelled. Does nothing where it cannot.
    func withdraw(item: WorkItem)
}

extension JobRegisteringAwaiter {
    @usableFromInline
    func withdraw(item: WorkItem) {}
}

extension JobRegisteringAwaiter {
    /// Registers `box` on `awaiter`, an awaiter whose type is `Self` (a builder checked its type).
    @inlinable
    static func register<A>(_ awaiter: A, box: AnyFuture) throws {
        try unsafeBitCast(awaiter, to: Self.self).register(box: box)
    }
}

extension AnyFuture {
    /// Registers `box` (a suspended state machine) to resume when this future completes.
    ///
    /// The context is captured now, at registration: `SynchronizationContext.current` of the
    /// registering thread, unless `continueOnCapturedContext` is `false`.
    ///
    /// A pool worker with no context, about to suspend on the future of a `Future.run` whose body
    /// no worker has started, runs the body itself instead, at once: the method then resumes as the
    /// worker's next job, on the same core as the body's result, rather than waiting for another
    /// worker to reach the job and hand it back. A method awaiting, in order, jobs it queued itself
    /// would otherwise suspend on most of them: its worker runs its own queue newest first.
    @usableFromInline
    final func registerAwait(of box: AnyFuture, continueOnCapturedContext: Bool) {
        // Tested before anything is stored: with no context (the common case) there is nothing to
        // retain or release. A box registers with no context left from an earlier await: `runAsJob`
        // clears it before resuming, and a reused box is reset.
        assert(box.resumeContext == nil, "a box registers with a context left from an earlier await")
        ThreadState.withCurrentIfPresent { thread in
            guard let thread else { return }
            if let context = thread.synchronizationContext {
                if continueOnCapturedContext {
                    box.resumeContext = context
                    context.trackSuspended(box, awaiting: .future(self))
                }
                return
            }
            // Completed by the run, if it ran: the registration below then queues the box.
            if thread.runsPoolJobs { _ = runHereIfNotStarted(nestedOn: thread) }
        }
        onCompletion(.future(box))
    }

    /// Captures this thread's context, if any and if `continueOnCapturedContext`, as the context
    /// this box, registering on a value-future source, resumes on.
    ///
    /// Out of line, for the inlinable registration that calls it: reading the public
    /// `SynchronizationContext.current` there cost an access to the class's metadata, and the
    /// store a release of the `nil` it replaced (the box has no context, as in `registerAwait`).
    @usableFromInline
    final func captureResumeContext(_ continueOnCapturedContext: Bool) {
        assert(resumeContext == nil, "a box registers with a context left from an earlier await")
        if continueOnCapturedContext, let context = SynchronizationContext.current {
            resume(on: context, awaiting: "a value-future source")
        }
    }

    /// Makes `context` the one this box resumes on, and tells its loop, as `registerAwait` does,
    /// so that a `wait()` on its thread that this box would have to resume for is diagnosed
    /// rather than hung. Out of line: most awaits capture no context.
    @inline(never)
    final func resume(on context: SynchronizationContext, awaiting awaited: StaticString) {
        resumeContext = context
        context.trackSuspended(self, awaiting: .other(awaited))
    }

    /// Forgets the context `captureResumeContext` captured, for a box whose registration was
    /// refused: it will not resume there.
    @usableFromInline
    final func releaseResumeContext() {
        guard let context = resumeContext else { return }
        context.untrackSuspended(self)
        resumeContext = nil
    }

    /// Registers `continuation` to run when this future completes, capturing the context as configured.
    final func registerAwait(_ continuation: @escaping @Sendable () -> Void, continueOnCapturedContext: Bool) {
        let context = continueOnCapturedContext ? SynchronizationContext.current : nil
        onCompletion(.item(ClosureWorkItem(context: context, continuation)))
    }
}
