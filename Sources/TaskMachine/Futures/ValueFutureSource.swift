/// An object that completes value futures and can be reused for the next operation: the
/// counterpart of `IValueTaskSource<T>`.
///
/// Each operation is named by a version token. A source hands out
/// `ValueFuture(source: self, token: version)`, completes it, and after its result has been read
/// moves to the next version; a value future still holding an old token then gets
/// ``ValueFutureSourceError/staleToken(expected:found:)`` instead of someone else's result.
///
/// ``ValueFutureSourceCore`` implements the whole protocol; a pooled operation object usually
/// wraps one.
public protocol ValueFutureSource<Value>: AnyObject, Sendable {
    /// The result type.
    associatedtype Value: Sendable

    /// The status of the operation `token` names.
    /// - Throws: ``ValueFutureSourceError/staleToken(expected:found:)`` for another version's token.
    func status(token: UInt16) throws -> FutureStatus

    /// Registers the continuation of the operation `token` names. A source takes one continuation
    /// per operation, keeps it (it is non-copyable: an `AwaitContinuation?` the source `take()`s
    /// from when it completes), and resumes it once.
    /// - Throws: ``ValueFutureSourceError`` for a stale token or a second continuation.
    func onCompleted(token: UInt16, _ continuation: consuming AwaitContinuation) throws

    /// The result of the completed operation `token` names.
    /// - Throws: the operation's error, or ``ValueFutureSourceError``.
    func getResult(token: UInt16) throws -> Value
}

/// A continuation handed to a ``ValueFutureSource``: call ``resume()`` once, when the operation
/// completes. It already knows where it must run (its captured context, or anywhere).
///
/// It is non-copyable, and resuming it consumes it: a source cannot resume a method twice, which
/// would run its next step twice (a second resume does not compile: `'continuation' consumed more
/// than once`). A continuation dropped without being resumed leaves its method suspended for ever.
///
/// ```swift
/// final class OneShot: ValueFutureSource {
///     private let pending = Mutex<AwaitContinuation?>(nil)
///     private let done = Atomic<Bool>(false)
///     func onCompleted(token: UInt16, _ continuation: consuming AwaitContinuation) throws {
///         var continuation = Optional(continuation)  // a closure cannot consume a parameter
///         pending.withLock { $0 = continuation.take() }
///         // Completed meanwhile: the completer found no continuation to resume.
///         if done.load(ordering: .acquiring) { pending.withLock { $0.take() }?.resumeAsynchronously() }
///     }
///     func complete() {
///         done.store(true, ordering: .releasing)
///         pending.withLock { $0.take() }?.resume()
///     }
///     // status(token:) reads `done`; getResult(token:) as usual
/// }
/// ```
public struct AwaitContinuation: ~Copyable, Sendable {
    @usableFromInline
    let job: Job

    @usableFromInline
    init(job: consuming Job) {
        self.job = job
    }

    /// Wraps a closure as a continuation that may run anywhere.
    public init(_ body: @escaping @Sendable () -> Void) {
        job = .item(ClosureWorkItem(body))
    }

    /// Runs the continuation: inline on this thread when it may run anywhere or belongs to this
    /// thread's context, else posted to its context.
    public consuming func resume() {
        Continuations.dispatch(job, mayRunInline: true)
    }

    /// Queues the continuation (to its context, or to the pool); never runs it on this thread.
    public consuming func resumeAsynchronously() {
        Continuations.dispatch(job, mayRunInline: false)
    }
}

/// Misuse of a ``ValueFutureSource``.
public enum ValueFutureSourceError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The token names an operation the source has moved past: the value future was kept after its
    /// result was read (or awaited after the source was reset).
    case staleToken(expected: UInt16, found: UInt16)
    /// A second continuation for one operation: the value future was awaited twice, through copies
    /// of its awaiter.
    case continuationAlreadyRegistered
    /// The result was read before the operation completed.
    case notCompleted
    /// The operation was completed twice.
    case alreadyCompleted

    public var description: String {
        switch self {
        case .staleToken(let expected, let found):
            "stale value-future token \(found): the source is at version \(expected); a value future may be awaited "
                + "once, before its source is reset — use asFuture() to keep a result"
        case .continuationAlreadyRegistered:
            "the value-future source already has a continuation for this operation: a value future is awaited once"
        case .notCompleted:
            "the value-future source's operation has not completed"
        case .alreadyCompleted:
            "the value-future source's operation was completed already"
        }
    }
}
