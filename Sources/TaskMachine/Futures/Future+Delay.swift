import Synchronization

/// The future of ``Future/delay(_:cancellation:)``: it succeeds when its time comes, and
/// ``cancel()`` ends it early, on its own, with no ``CancellationTokenSource``.
///
/// ```swift
/// let timeout = Future.delay(.seconds(5))
/// // … the work finished first:
/// timeout.cancel()   // cancelled now; its timer leaves the queue and its memory can go
/// ```
///
/// A delay is its own timer: the timer thread hands the future itself to the pool when the time
/// comes, and completing it there is the fire. Firing and cancelling race on the future's one
/// completion reservation, so exactly one of them happens. A delay given a token registers itself
/// with the token's source, with no closure.
///
/// One object per delay, 104 bytes (a 112-byte malloc chunk): the future's 76, the wheel's links
/// (12, from 80), its registration slot (4) and the source it registered with (8). While pending
/// it also takes 8 bytes in a slot array of the wheel.
public final class Delay: Future<Void> {
    /// The wheel's bookkeeping; only under the timer queue's lock.
    final var timerLinks = TimerLinks()
    /// The source this delay registered with, and its slot there, until it ends; set before the
    /// delay is scheduled, read only by whoever claims its completion (the fire or a cancel), which
    /// comes after. (The slot first: it fills the four bytes after the links.)
    @exclusivity(unchecked) private var registrationSlot: Int32 = 0
    @exclusivity(unchecked) private var source: CancellationTokenSource?

    init() {
        super.init(runsContinuationsAsynchronously: false)
    }

    /// A delay that ended before it began: for a zero or past deadline, a negative duration, or a
    /// token cancelled already. It never enters the timer queue.
    override init(completedWith status: FutureStatus, failure: Failure?) {
        super.init(completedWith: status, failure: failure)
    }

    /// A delay that ended before it began: elapsed at once, or cancelled by `token`, cancelled
    /// already.
    static func ended(cancelledBy token: CancellationToken? = nil) -> Delay {
        guard let token else { return Delay(completedWith: .succeeded, failure: nil) }
        return Delay(completedWith: .cancelled, failure: Failure(errors: [], token: token))
    }

    /// `delay(due in 1.5 s)` while in the wheel; `delay(due)` once its time has come and it is
    /// being fired, `delay(done)` or `delay(cancelled)` after; `delay(failed)` for a negative
    /// duration.
    override var diagnosticName: String {
        if let remaining = TimerQueue.shared.timeUntilDue(TimerNode(self)) {
            return "delay(due in \(remaining.readableText))"
        }
        switch status {
        case .pending: return "delay(due)"
        case .cancelled: return "delay(cancelled)"
        case .failed: return "delay(failed)"
        case .succeeded: return "delay(done)"
        }
    }

    /// A delay ending at `deadline` (`Clock` nanoseconds), in the timer queue.
    static func started(deadline: Int64, cancellation: CancellationToken) -> Delay {
        let future = Delay()
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

    /// Cancels the delay, unless it has ended: it is *cancelled* when this returns, and awaiting it
    /// throws ``OperationCancelledError`` with the token `.none`. Its continuations are queued,
    /// never run inside `cancel()`. Its timer leaves the timer queue at once, in constant time, and
    /// the delay leaves the source of the token it was given, so nothing keeps it alive.
    ///
    /// - Returns: `true` if this call cancelled the delay; `false` if it had fired, had been
    ///   cancelled, or had ended before it began (see ``Future/delay(_:cancellation:)``).
    @discardableResult
    public func cancel() -> Bool {
        guard cancel(by: .none) else { return false }
        leaveSource()
        return true
    }

    override func cancellationRequested(by token: CancellationToken) {
        // The source is cancelling: its table is its own now, so the delay does not leave it.
        _ = cancel(by: token)
    }

    /// Claims the completion for a cancellation by `token` and takes the timer out of the queue;
    /// `false` if the delay had ended.
    private func cancel(by token: CancellationToken) -> Bool {
        // Marked cancelled before cancel() returns; continuations are queued.
        guard tryCancel(token: token, forceAsynchronous: true) else { return false }
        TimerQueue.shared.remove(TimerNode(self))
        return true
    }

    /// Takes the delay's registration off its token's source; only by the one that claimed the
    /// completion.
    private func leaveSource() {
        guard let source else { return }
        source.unregister(slot: registrationSlot, future: self)
        self.source = nil
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
        leaveSource()
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
    /// - Returns: the delay, which ``Delay/cancel()`` can also end early; failed
    ///   (``InvalidArgumentError``) for a negative duration, cancelled when `cancellation` is
    ///   cancelled already.
    public static func delay(_ duration: Duration, cancellation: CancellationToken = .none) -> Delay {
        guard duration >= .zero else {
            let error = InvalidArgumentError("delay needs a duration of zero or more, not \(duration)")
            return Delay(completedWith: .failed, failure: Failure(errors: [error], token: .none))
        }
        if cancellation.isCancellationRequested { return .ended(cancelledBy: cancellation) }
        if duration == .zero { return .ended() }
        // The clock first: time spent allocating (an allocator busy on another thread can hold
        // it up) must not push the deadline back.
        return Delay.started(deadline: Clock.deadline(after: duration), cancellation: cancellation)
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
    /// - Returns: the delay, which ``Delay/cancel()`` can also end early; cancelled when
    ///   `cancellation` is cancelled already.
    public static func delay(
        until deadline: ContinuousClock.Instant, cancellation: CancellationToken = .none
    ) -> Delay {
        if cancellation.isCancellationRequested { return .ended(cancelledBy: cancellation) }
        let nanoseconds = Clock.nanoseconds(of: deadline)
        guard nanoseconds > Clock.now else { return .ended() }
        return Delay.started(deadline: nanoseconds, cancellation: cancellation)
    }
}

// Safe to share: the registration is written before the delay is scheduled and read by whoever
// claims its completion; the links are under the timer queue's lock.
extension Delay: @unchecked Sendable {}
