import Synchronization

/// The future of `Future.delay`, and its timer.
final class DelayFuture: Future<Void> {
    final class Timer: TimerEntry {
        let future: DelayFuture

        init(future: DelayFuture, deadline: Int64) {
            self.future = future
            super.init(deadline: deadline)
        }

        override func fire() {
            // Runs on a pool worker: continuations run inline there, never on the timer thread.
            future.registration?.withLock { $0 }?.unregister()
            _ = future.trySucceed(())
        }
    }

    let duration: Duration
    /// The cancellation callback, kept to remove it when the timer fires; only for a token that
    /// can be cancelled, so a plain delay allocates just the future and its timer.
    private let registration: Locked<CancellationRegistration?>?

    init(duration: Duration, cancellable: Bool) {
        self.duration = duration
        registration = cancellable ? Locked(nil) : nil
        super.init(runsContinuationsAsynchronously: false)
    }

    override var diagnosticName: String { "delay(\(duration.readableText))" }

    /// Starts the timer and hooks up `token`.
    func start(cancellation token: CancellationToken) {
        let timer = Timer(future: self, deadline: Clock.deadline(after: duration))
        if token.canBeCancelled {
            let registered = token.register { [weak timer] in
                guard let timer, timer.cancel() else { return }
                // Marked cancelled before cancel() returns; continuations are queued.
                _ = timer.future.tryCancel(token: token, forceAsynchronous: true)
            }
            registration?.withLock { $0 = registered }
        }
        TimerQueue.shared.schedule(timer)
    }
}

extension Future where Value == Void {
    /// A future that succeeds after `duration`, holding no thread while it waits: the timer thread
    /// hands it to the pool when the time comes.
    ///
    /// - Parameters:
    ///   - duration: zero or more; zero completes at once.
    ///   - cancellation: cancelling it ends the delay early, *cancelled*.
    /// - Returns: the delay's future; a failed one (``InvalidArgumentError``) for a negative
    ///   duration, a cancelled one when `cancellation` is cancelled already.
    public static func delay(_ duration: Duration, cancellation: CancellationToken = .none) -> Future<Void> {
        guard duration >= .zero else {
            return .failed(InvalidArgumentError("delay needs a duration of zero or more, not \(duration)"))
        }
        if cancellation.isCancellationRequested { return .cancelled(token: cancellation) }
        if duration == .zero { return .completed }
        let future = DelayFuture(duration: duration, cancellable: cancellation.canBeCancelled)
        future.start(cancellation: cancellation)
        return future
    }
}

// Safe to share: the registration sits under a mutex.
extension DelayFuture: @unchecked Sendable {}

// Safe to share: immutable apart from the claimed flag.
extension DelayFuture.Timer: @unchecked Sendable {}
