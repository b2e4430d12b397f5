/// A read-only view of a ``CancellationTokenSource``: lets an operation notice, and react to, a
/// request to cancel it.
///
/// Tokens compare equal when they come from the same source. `CancellationToken.none` can never be
/// cancelled.
///
/// ```swift
/// let source = CancellationTokenSource()
/// let download = Future.delay(.seconds(30), cancellation: source.token)
/// source.cancel()   // `download` is now cancelled; awaiting it throws OperationCancelledError
/// ```
public struct CancellationToken: Sendable, Hashable {
    let source: CancellationTokenSource?

    init(source: CancellationTokenSource?) {
        self.source = source
    }

    /// The token that is never cancelled.
    public static let none = CancellationToken(source: nil)

    /// Whether cancellation may ever be requested through this token.
    public var canBeCancelled: Bool { source != nil }

    /// Whether cancellation has been requested.
    public var isCancellationRequested: Bool { source?.isCancellationRequested ?? false }

    /// Throws ``OperationCancelledError`` carrying this token if cancellation has been requested.
    public func throwIfCancellationRequested() throws {
        if isCancellationRequested { throw OperationCancelledError(token: self) }
    }

    /// Runs `callback` when cancellation is requested, or at once (on this thread) if it was already.
    ///
    /// Callbacks run on the thread that calls `cancel()`, most recent registration first.
    /// - Returns: a registration whose ``CancellationRegistration/unregister()`` removes the callback.
    @discardableResult
    public func register(_ callback: @escaping @Sendable () -> Void) -> CancellationRegistration {
        guard let source else { return CancellationRegistration(source: nil, slot: 0, generation: 0) }
        return source.register(callback)
    }

    public static func == (lhs: CancellationToken, rhs: CancellationToken) -> Bool {
        lhs.source === rhs.source
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(source.map(ObjectIdentifier.init))
    }
}

/// A callback registered on a ``CancellationToken``.
public struct CancellationRegistration: Sendable {
    let source: CancellationTokenSource?
    /// Where the callback sits in its source's table, and which tenant of that slot it is.
    let slot: Int32
    let generation: UInt32

    /// Removes the callback, in constant time. Returns `true` if it was removed before it ran, even
    /// while `cancel()` is running other callbacks; `false` if it is running or has run (this call
    /// does not wait for it to finish), or was removed already.
    @discardableResult
    public func unregister() -> Bool {
        source?.unregister(slot: slot, generation: generation) ?? false
    }
}
