import Synchronization

/// The future of `Future.delay`, which is also its own timer in the timer queue's wheel.
///
/// One object per delay: the timer thread hands the future itself to the pool as a job, and
/// `runAsJob` completes it. Its completion reservation is the timer's claim, so firing and
/// cancelling race on one atomic. A cancellable delay registers itself with its token's source,
/// with no closure. 104 bytes (a 112-byte malloc chunk): the future's 76, the wheel's links (12,
/// from 80), its registration slot (4) and the source it registered with (8). While pending it
/// also takes 8 bytes in a slot array of the wheel.
final class DelayFuture: Future<Void> {
    /// The wheel's bookkeeping; only under the timer queue's lock.
    final var timerLinks = TimerLinks()
    /// The source this delay registered with, and its slot there, until it fires; set before the
    /// delay is scheduled, read only by the fire, which the timer queue's lock orders after it.
    /// (The slot first: it fills the four bytes after the links.)
    @exclusivity(unchecked) private var registrationSlot: Int32 = 0
    @exclusivity(unchecked) private var source: CancellationTokenSource?

    init() {
        super.init(runsContinuationsAsynchronously: false)
    }

    /// `delay(due in 1.5 s)` while in the wheel; `delay(due)` once its time has come and it is
    /// being fired, `delay(done)` or `delay(cancelled)` after.
    override var diagnosticName: String {
        if let remaining = TimerQueue.shared.timeUntilDue(TimerNode(self)) {
            return "delay(due in \(remaining.readableText))"
        }
        switch status {
        case .pending: return "delay(due)"
        case .cancelled: return "delay(cancelled)"
        default: return "delay(done)"
        }
    }

    /// A delay ending at `deadline` (`Clock` nanoseconds), in the timer queue.
    static func started(deadline: Int64, cancellation: CancellationToken) -> DelayFuture {
        let future = DelayFuture()
        future.start(deadline: deadline, cancellation: cancellation)
        return future
    }

    /// Hooks up `token`, then puts the delay in the timer queue.
    private func start(deadline: Int64, cancellation token: CancellationToken) {
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
        guard claimSuccess() else { return }
        publishCompletion(.succeeded)
    }

    /// The deadline passed, for a batch of expired timers (``ExpiredTimers``): like `runAsJob`,
    /// but a lone continuation, once run, goes to `retired` instead of being released here, so
    /// that freeing it (and whatever it captured) waits until the worker has fired the rest.
    func fire(retiringInto retired: inout [Job]) {
        guard claimSuccess() else { return }
        let taken = publish(.succeeded)
        guard SlotWord.isJob(taken) else { return runContinuations(taken, inline: true) }
        let continuation = Job(takingRetainedWord: taken)
        Continuations.dispatch(continuation, mayRunInline: true)
        retired.append(continuation)
    }

    /// Claims the completion for the fire and writes the outcome; `false` if cancelled first.
    private func claimSuccess() -> Bool {
        guard reserveCompletion() else { return false }
        if let source {
            source.unregister(slot: registrationSlot, future: self)
            self.source = nil
        }
        storeValue(())
        return true
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
        // The clock first: time spent allocating (an allocator busy on another thread can hold
        // it up) must not push the deadline back.
        return DelayFuture.started(deadline: Clock.deadline(after: duration), cancellation: cancellation)
    }

    /// A future that succeeds once the continuous clock reaches `deadline`, holding no thread while
    /// it waits; like `Task.sleep(until:clock:)`, a deadline that has passed completes it at once.
    ///
    /// Many operations that must end together can share one deadline this way, where durations
    /// each measured from their own call would drift apart by the time between the calls (or by
    /// a preemption between reading the time and making the call).
    ///
    /// The instant is converted to the runtime's timer clock when the delay is made. That clock,
    /// like every timer of the runtime, does not count time the system spends suspended, so a
    /// suspension while the delay waits ends it that much later.
    ///
    /// - Parameters:
    ///   - deadline: an instant of `ContinuousClock`.
    ///   - cancellation: cancelling it ends the delay early, *cancelled*.
    /// - Returns: the delay's future; a cancelled one when `cancellation` is cancelled already.
    public static func delay(
        until deadline: ContinuousClock.Instant, cancellation: CancellationToken = .none
    ) -> Future<Void> {
        if cancellation.isCancellationRequested { return .cancelled(token: cancellation) }
        let nanoseconds = Clock.nanoseconds(of: deadline)
        guard nanoseconds > Clock.now else { return .completed }
        return DelayFuture.started(deadline: nanoseconds, cancellation: cancellation)
    }
}

// Safe to share: the registration is written before the delay is scheduled and read by its fire; the
// links are under the timer queue's lock.
extension DelayFuture: @unchecked Sendable {}
