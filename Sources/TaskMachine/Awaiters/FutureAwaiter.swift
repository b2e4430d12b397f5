// Eager-move: a local awaiter's lifetime may end at its last use rather than at the end of its
// scope. With a lexical lifetime, its copy of the future (a retain and a release) outlived the
// optimizer's ownership passes, and the later ARC passes could not pair the two across the
// future's atomic status load (to them, something that may release) whenever the value was read
// after that load: awaiting a completed future by hand, as a state machine does, took 6 ns
// rather than under 1. An awaiter has no deinit; all that can move earlier is the release of
// the future, after the awaiter's last use, and only when the awaiter held the last reference.

/// The awaiter of a ``Future``: resumes on the captured context, if there was one.
///
/// A local awaiter may let go of its future right after its last use, before the end of its
/// scope: keep the future itself where its lifetime matters (a weak reference to it, or its
/// address taken without a retain).
@_eagerMove
public struct FutureAwaiter<Value: Sendable>: Awaiter, JobRegisteringAwaiter, Sendable {
    /// The future being awaited.
    public let future: Future<Value>

    /// The awaiter of `future`.
    @inlinable
    public init(_ future: Future<Value>) {
        self.future = future
    }

    @inlinable
    public var isCompleted: Bool { future.isCompleted }

    public func onCompleted(_ continuation: @escaping @Sendable () -> Void) {
        future.registerAwait(continuation, continueOnCapturedContext: true)
    }

    @inlinable
    public func getResult() throws -> Value {
        try future.getResult()
    }

    @usableFromInline
    func register(box: AnyFuture) {
        future.registerAwait(of: box, continueOnCapturedContext: true)
    }

    @usableFromInline
    func register(item: WorkItem) {
        future.onCompletion(.item(item))
    }

    @usableFromInline
    func withdraw(item: WorkItem) {
        future.removeContinuation(item)
    }
}

extension Future: Awaitable {
    /// The awaiter for one await of this future.
    @inlinable
    public func getAwaiter() -> FutureAwaiter<Value> {
        FutureAwaiter(self)
    }
}
