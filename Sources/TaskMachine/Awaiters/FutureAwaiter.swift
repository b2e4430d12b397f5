/// The awaiter of a ``Future``: resumes on the captured context, if there was one.
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
}

extension Future: Awaitable {
    /// The awaiter for one await of this future.
    @inlinable
    public func getAwaiter() -> FutureAwaiter<Value> {
        FutureAwaiter(self)
    }
}
