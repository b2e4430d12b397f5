/// The writing side of a ``Future``: completes it once, with a value, errors or cancellation.
///
/// The throwing forms (`succeed`, `fail`, `cancel`) raise ``PromiseError/alreadyCompleted(_:)``
/// when the future has completed already; the `try…` forms return `false` instead. Either way the
/// first outcome stands.
///
/// ```swift
/// let promise = Promise<String>()
/// startDownload { bytes in promise.trySucceed(String(decoding: bytes, as: UTF8.self)) }
/// return promise.future
/// ```
public struct Promise<Value: Sendable>: Sendable {
    /// The future this promise completes.
    public let future: Future<Value>

    /// Creates a promise and its pending future.
    ///
    /// - Parameter runContinuationsAsynchronously: when `true`, completing never runs a continuation
    ///   inside the completing call: every one is queued to its context or to the pool (from a pool
    ///   worker, to that worker's own next slot, so it may run on the same thread once the
    ///   completing job returns, as in .NET). Use it when the completer holds a lock or must not be
    ///   delayed by the awaiters' code.
    public init(runContinuationsAsynchronously: Bool = false) {
        future = Future(runsContinuationsAsynchronously: runContinuationsAsynchronously)
    }

    /// Succeeds the future with `value`.
    /// - Throws: ``PromiseError/alreadyCompleted(_:)`` if the future has completed.
    @inlinable
    public func succeed(_ value: Value) throws {
        guard trySucceed(value) else { throw PromiseError.alreadyCompleted(future.settledStatus) }
    }

    /// Succeeds the future with `value` unless it has completed; returns whether it did.
    @inlinable @discardableResult
    public func trySucceed(_ value: Value) -> Bool {
        future.trySucceed(value)
    }

    /// Fails the future with `error`.
    /// - Throws: ``PromiseError/alreadyCompleted(_:)`` if the future has completed.
    public func fail(_ error: any Error) throws {
        guard tryFail(error) else { throw PromiseError.alreadyCompleted(future.settledStatus) }
    }

    /// Fails the future with several errors; awaiting rethrows the first, ``AnyFuture/errors`` has all.
    /// - Throws: ``PromiseError/noErrors`` for an empty list, ``PromiseError/alreadyCompleted(_:)``
    ///   if the future has completed.
    public func fail(errors: [any Error]) throws {
        guard !errors.isEmpty else { throw PromiseError.noErrors }
        guard future.tryFail(errors) else { throw PromiseError.alreadyCompleted(future.settledStatus) }
    }

    /// Fails the future with `error` unless it has completed; returns whether it did.
    @discardableResult
    public func tryFail(_ error: any Error) -> Bool {
        future.tryFail([error])
    }

    /// Cancels the future, recording `token` as the cause. Like ``succeed(_:)``, it may run a
    /// continuation inline, on this thread, unless the promise was made with
    /// `runContinuationsAsynchronously`.
    /// - Throws: ``PromiseError/alreadyCompleted(_:)`` if the future has completed.
    public func cancel(token: CancellationToken = .none) throws {
        guard tryCancel(token: token) else { throw PromiseError.alreadyCompleted(future.settledStatus) }
    }

    /// Cancels the future unless it has completed; returns whether it did.
    @discardableResult
    public func tryCancel(token: CancellationToken = .none) -> Bool {
        future.tryCancel(token: token)
    }
}

extension Promise where Value == Void {
    /// Succeeds the future.
    /// - Throws: ``PromiseError/alreadyCompleted(_:)`` if the future has completed.
    public func succeed() throws { try succeed(()) }

    /// Succeeds the future unless it has completed; returns whether it did.
    @discardableResult
    public func trySucceed() -> Bool { trySucceed(()) }
}
