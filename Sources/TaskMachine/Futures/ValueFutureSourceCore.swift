import Synchronization

/// A resettable, reusable ``ValueFutureSource``: one operation at a time, each under its own
/// `UInt16` version — the counterpart of `ManualResetValueTaskSourceCore<T>`.
///
/// Hand out ``makeValueFuture()``, complete it with ``succeed(_:)`` or ``fail(_:)``, and once the
/// result has been read call ``reset()`` to move to the next version and reuse the object. Reusing
/// it allocates nothing.
///
/// ```swift
/// let source = ValueFutureSourceCore<Int>()
/// let pending = source.makeValueFuture()
/// try source.succeed(7)
/// print(try await pending.get())   // 7
/// source.reset()                   // the next operation; the old token is now stale
/// ```
public final class ValueFutureSourceCore<Value: Sendable>: ValueFutureSource {
    private struct State {
        var version: UInt16 = 0
        var result: Result<Value, any Error>?
        var continuation: AwaitContinuation?
    }

    private let state = Locked(State())
    /// Continuations are queued, never run by the thread that completes the operation.
    public let runsContinuationsAsynchronously: Bool

    /// Creates a source at version 0 with a pending operation.
    public init(runContinuationsAsynchronously: Bool = false) {
        self.runsContinuationsAsynchronously = runContinuationsAsynchronously
    }

    /// The version of the current operation: the token its value futures carry.
    public var version: UInt16 { state.withLock { $0.version } }

    /// A value future for the current operation.
    public func makeValueFuture() -> ValueFuture<Value> {
        ValueFuture(source: self, token: version)
    }

    /// Moves to the next operation: a new version, no result, no continuation. Value futures of
    /// earlier versions become stale.
    public func reset() {
        state.withLock { state in
            state.version &+= 1
            state.result = nil
            state.continuation = nil
        }
    }

    /// Completes the current operation with `value`.
    /// - Throws: ``ValueFutureSourceError/alreadyCompleted`` if it has completed.
    public func succeed(_ value: Value) throws {
        try complete(.success(value))
    }

    /// Completes the current operation with `error`.
    /// - Throws: ``ValueFutureSourceError/alreadyCompleted`` if it has completed.
    public func fail(_ error: any Error) throws {
        try complete(.failure(error))
    }

    private func complete(_ result: Result<Value, any Error>) throws {
        let continuation = try state.withLock { state -> AwaitContinuation? in
            guard state.result == nil else { throw ValueFutureSourceError.alreadyCompleted }
            state.result = result
            defer { state.continuation = nil }
            return state.continuation
        }
        guard let continuation else { return }
        if runsContinuationsAsynchronously { continuation.resumeAsynchronously() } else { continuation.resume() }
    }

    public func status(token: UInt16) throws -> FutureStatus {
        try state.withLock { state in
            try check(token, state)
            switch state.result {
            case nil: return .pending
            case .success: return .succeeded
            case .failure(let error): return error is OperationCancelledError ? .cancelled : .failed
            }
        }
    }

    public func onCompleted(token: UInt16, _ continuation: AwaitContinuation) throws {
        let runNow = try state.withLock { state -> Bool in
            try check(token, state)
            if state.result != nil { return true }
            guard state.continuation == nil else { throw ValueFutureSourceError.continuationAlreadyRegistered }
            state.continuation = continuation
            return false
        }
        if runNow { continuation.resumeAsynchronously() }
    }

    public func getResult(token: UInt16) throws -> Value {
        let result = try state.withLock { state -> Result<Value, any Error> in
            try check(token, state)
            guard let result = state.result else { throw ValueFutureSourceError.notCompleted }
            return result
        }
        return try result.get()
    }

    private func check(_ token: UInt16, _ state: State) throws {
        guard token == state.version else {
            throw ValueFutureSourceError.staleToken(expected: state.version, found: token)
        }
    }
}
