import Synchronization

/// The future of `Future.delay`, which is also its own timer in the timer queue's wheel.
///
/// One object per delay: the timer thread hands the future itself to the pool as a job, and
/// `runAsJob` completes it. Its completion reservation is the timer's claim, so firing and
/// cancelling race on one atomic. 120 bytes (a 128-byte malloc chunk): the future's 73, the wheel's
/// links (24), the duration for diagnostics and the optional registration box.
final class DelayFuture: Future<Void> {
    /// The wheel's bookkeeping; only under the timer queue's lock.
    final var timerLinks = TimerLinks()
    /// For `diagnosticName` only; whole nanoseconds (8 bytes) rather than a 16-byte `Duration`.
    private let nanoseconds: Int64
    /// The cancellation callback, kept to remove it when the timer fires; only for a token that
    /// can be cancelled, so a plain delay allocates just the future.
    private let registration: Locked<CancellationRegistration?>?

    init(duration: Duration, cancellable: Bool) {
        nanoseconds = duration.totalNanoseconds
        registration = cancellable ? Locked(nil) : nil
        super.init(runsContinuationsAsynchronously: false)
    }

    override var diagnosticName: String { "delay(\(Duration.nanoseconds(nanoseconds).readableText))" }

    /// Hooks up `token`, then puts the delay in the timer queue.
    func start(after duration: Duration, cancellation token: CancellationToken) {
        let deadline = Clock.deadline(after: duration)
        if token.canBeCancelled {
            // Strong: the source holds the callback until it runs or `runAsJob` unregisters it.
            let registered = token.register { [self] in cancel(token: token) }
            registration?.withLock { $0 = registered }
        }
        // After the registration is stored, so the fire sees it. If the callback ran already, the
        // queue sees the future claimed and does not link it.
        TimerQueue.shared.schedule(self, deadline: deadline)
    }

    private func cancel(token: CancellationToken) {
        // Marked cancelled before cancel() returns; continuations are queued.
        guard tryCancel(token: token, forceAsynchronous: true) else { return }
        TimerQueue.shared.remove(TimerNode(self))
    }

    /// The deadline passed: runs on a pool worker, so continuations run inline there, never on the
    /// timer thread.
    override func runAsJob() {
        guard reserveCompletion() else { return }
        registration?.withLock { $0 }?.unregister()
        storeValue(())
        publishCompletion(.succeeded)
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
        future.start(after: duration, cancellation: cancellation)
        return future
    }
}

// Safe to share: the registration sits under a lock, the links under the timer queue's.
extension DelayFuture: @unchecked Sendable {}
