import Synchronization

/// Requests cancellation of the operations holding its ``token``.
///
/// `cancel()` marks the source cancelled, then runs the registered callbacks on the calling
/// thread. The delays and `waiting(timeout:cancellation:)` futures it cancels are marked cancelled
/// before `cancel()` returns, and their continuations are queued, never run inside `cancel()`. A
/// `Future.run` still queued checks its token when its turn comes, and ends cancelled then.
public final class CancellationTokenSource: Sendable {
    private struct State {
        var callbacks: [(id: UInt64, callback: @Sendable () -> Void)] = []
        var nextID: UInt64 = 1
        var timer: CancelTimer?
        var links: [CancellationRegistration] = []
    }

    private let cancelled = Atomic<Bool>(false)
    private let state = Locked(State())

    /// Creates a source that is not cancelled.
    public init() {}

    /// Creates a source that cancels itself after `delay`.
    /// - Throws: ``InvalidArgumentError`` if `delay` is negative.
    public convenience init(cancelAfter delay: Duration) throws {
        self.init()
        try cancel(after: delay)
    }

    /// A source that is cancelled when any of `tokens` is, or when it is cancelled itself.
    public static func linked(to tokens: [CancellationToken]) -> CancellationTokenSource {
        let source = CancellationTokenSource()
        for token in tokens where token.canBeCancelled {
            let link = token.register { [weak source] in source?.cancel() }
            source.state.withLock { $0.links.append(link) }
        }
        return source
    }

    /// A source that is cancelled when any of `tokens` is, or when it is cancelled itself.
    public static func linked(to tokens: CancellationToken...) -> CancellationTokenSource {
        linked(to: tokens)
    }

    deinit {
        for link in state.withLock({ $0.links }) { link.unregister() }
        state.withLock { $0.timer }?.cancel()
    }

    /// The token to hand to operations.
    public var token: CancellationToken { CancellationToken(source: self) }

    /// Whether cancellation has been requested.
    public var isCancellationRequested: Bool { cancelled.load(ordering: .acquiring) }

    /// Requests cancellation: runs the registered callbacks, most recent first, on this thread.
    /// Calling it again does nothing.
    public func cancel() {
        guard !cancelled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let (callbacks, timer) = state.withLock { state in
            defer {
                state.callbacks = []
                state.timer = nil
            }
            return (state.callbacks, state.timer)
        }
        timer?.cancel()
        for entry in callbacks.reversed() { entry.callback() }
    }

    /// Schedules cancellation after `delay`, replacing an earlier schedule. A zero delay cancels now.
    /// - Throws: ``InvalidArgumentError`` if `delay` is negative.
    public func cancel(after delay: Duration) throws {
        guard delay >= .zero else {
            throw InvalidArgumentError("cancel(after:) needs a delay of zero or more, not \(delay)")
        }
        guard !isCancellationRequested else { return }
        if delay == .zero {
            cancel()
            return
        }
        let timer = CancelTimer(source: self, delay: delay)
        let previous = state.withLock { state in
            defer { state.timer = timer }
            return state.timer
        }
        previous?.cancel()
        TimerQueue.shared.schedule(timer)
    }

    func register(_ callback: @escaping @Sendable () -> Void) -> CancellationRegistration {
        let id: UInt64? = state.withLock { state in
            guard !cancelled.load(ordering: .acquiring) else { return nil }
            defer { state.nextID += 1 }
            state.callbacks.append((state.nextID, callback))
            return state.nextID
        }
        guard let id else {
            callback()
            return CancellationRegistration(source: nil, id: 0)
        }
        return CancellationRegistration(source: self, id: id)
    }

    func unregister(_ id: UInt64) -> Bool {
        state.withLock { state in
            guard let index = state.callbacks.firstIndex(where: { $0.id == id }) else { return false }
            state.callbacks.remove(at: index)
            return true
        }
    }
}

/// The timer behind `cancel(after:)`.
final class CancelTimer: TimerEntry {
    private weak var source: CancellationTokenSource?

    init(source: CancellationTokenSource, delay: Duration) {
        self.source = source
        super.init(deadline: Clock.deadline(after: delay))
    }

    override func fire() {
        source?.cancel()
    }
}

// Safe to share: its source reference is weak and set once.
extension CancelTimer: @unchecked Sendable {}
