import Synchronization

/// The future of `Future.delay`, which is also its own timer in the timer queue's wheel.
///
/// One object per delay: the timer thread hands the future itself to the pool as a job, and
/// `runAsJob` completes it. Its completion reservation is the timer's claim, so firing and
/// cancelling race on one atomic. A cancellable delay registers itself with its token's source,
/// with no closure. 120 bytes (a 128-byte malloc chunk): the future's 80, the wheel's links (24),
/// the source it registered with (8), its slot there and its duration for diagnostics (4 + 4).
final class DelayFuture: Future<Void> {
    /// The wheel's bookkeeping; only under the timer queue's lock.
    final var timerLinks = TimerLinks()
    /// The source this delay registered with, until it fires; set before the delay is scheduled,
    /// read only by the fire, which the timer queue's lock orders after it.
    @exclusivity(unchecked) private var source: CancellationTokenSource?
    @exclusivity(unchecked) private var registrationSlot: Int32 = 0
    /// For `diagnosticName` only: whole milliseconds, `UInt32.max` for longer than 49 days.
    private let milliseconds: UInt32

    init(duration: Duration) {
        let (seconds, attoseconds) = duration.components
        let (total, overflow) = seconds.multipliedReportingOverflow(by: 1_000)
        milliseconds = overflow ? .max : UInt32(clamping: total + attoseconds / 1_000_000_000_000_000)
        super.init(runsContinuationsAsynchronously: false)
    }

    override var diagnosticName: String {
        milliseconds == .max ? "delay(over 49 days)" : "delay(\(Duration.milliseconds(milliseconds).readableText))"
    }

    /// Hooks up `token`, then puts the delay in the timer queue.
    func start(after duration: Duration, cancellation token: CancellationToken) {
        let deadline = Clock.deadline(after: duration)
        if let tokenSource = token.source, let slot = tokenSource.register(future: self) {
            source = tokenSource
            registrationSlot = slot
        }
        // After the registration is stored, so the fire sees it. If cancellation came first, the
        // queue sees the future claimed and does not link it.
        TimerQueue.shared.schedule(self, deadline: deadline)
    }

    override func cancellationRequested(by token: CancellationToken) {
        // Marked cancelled before cancel() returns; continuations are queued.
        guard tryCancel(token: token, forceAsynchronous: true) else { return }
        TimerQueue.shared.remove(TimerNode(self))
    }

    /// The deadline passed: runs on a pool worker, so continuations run inline there, never on the
    /// timer thread.
    override func runAsJob() {
        guard reserveCompletion() else { return }
        if let source {
            source.unregister(slot: registrationSlot, future: self)
            self.source = nil
        }
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
        let future = DelayFuture(duration: duration)
        future.start(after: duration, cancellation: cancellation)
        return future
    }
}

// Safe to share: the registration is written before the delay is scheduled and read by its fire; the
// links are under the timer queue's lock.
extension DelayFuture: @unchecked Sendable {}
