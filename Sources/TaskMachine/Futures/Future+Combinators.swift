import Synchronization

/// Completes `whenAll`'s future when the last input completes. One object serves every input: it
/// is registered on each, and counts down.
final class WhenAllCounter<Value: Sendable>: WorkItem {
    private let inputs: [AnyFuture]
    private let remaining: Atomic<Int>
    private let finish: @Sendable ([AnyFuture]) -> Void
    let output: AnyFuture

    init(inputs: [AnyFuture], output: AnyFuture, finish: @escaping @Sendable ([AnyFuture]) -> Void) {
        self.inputs = inputs
        self.output = output
        self.finish = finish
        remaining = Atomic(inputs.count)
        super.init()
    }

    /// Registers on every input. An input that has completed already counts down at once, so
    /// `whenAll` over completed futures returns a completed future. (Nothing awaits the output yet,
    /// so finishing here runs no one's continuation.)
    func start() {
        for input in inputs where !input.addContinuation(.item(self)) { run() }
    }

    override func run() {
        if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { finish(inputs) }
    }

    override var dependentFuture: AnyFuture? { output }

    /// Completes `output` as failed (every input's errors, in input order) if any input failed, else
    /// cancelled if any was; returns `false` when all succeeded and the caller must set the value.
    static func completeUnsuccessfully(_ output: AnyFuture, from inputs: [AnyFuture]) -> Bool {
        let errors = inputs.filter { $0.status == .failed }.flatMap(\.errors)
        if !errors.isEmpty {
            output.tryFail(errors)
            return true
        }
        if let cancelled = inputs.first(where: { $0.status == .cancelled }) {
            output.tryCancel(token: cancelled.cancellationToken ?? .none)
            return true
        }
        return false
    }
}

/// One input of `whenAny`: the first to run completes the shared output with its own future.
final class WhenAnyEntry<Value: Sendable>: WorkItem {
    private let input: Future<Value>
    let output: Future<Future<Value>>

    init(input: Future<Value>, output: Future<Future<Value>>) {
        self.input = input
        self.output = output
        super.init()
    }

    override func run() { _ = output.trySucceed(input) }

    // No `dependentFuture`: the output needs any one input, not this one, so a blocked input does
    // not block it, and the deadlock detector must not follow it.
}

extension Future {
    /// A future that completes when every one of `futures` has: with their values in order if all
    /// succeeded; failed, with every error of every failed input, if any failed; else cancelled if
    /// any was cancelled. It always waits for all of them.
    public static func whenAll(_ futures: [Future<Value>]) -> Future<[Value]> {
        guard !futures.isEmpty else { return .succeeded([]) }
        let output = Future<[Value]>(runsContinuationsAsynchronously: false)
        let counter = WhenAllCounter<Value>(inputs: futures, output: output) { [output] inputs in
            if WhenAllCounter<Value>.completeUnsuccessfully(output, from: inputs) { return }
            _ = output.trySucceed(inputs.map { unsafeDowncast($0, to: Future<Value>.self).storedValue })
        }
        counter.start()
        return output
    }

    /// A future that completes when every one of `futures` has; see ``whenAll(_:)-([Future<Value>])``.
    public static func whenAll(_ futures: Future<Value>...) -> Future<[Value]> {
        whenAll(futures)
    }

    /// A future that completes with the first of `futures` to complete, however it completed.
    ///
    /// - Returns: a future of that future; a failed one (``InvalidArgumentError``) for an empty list.
    public static func whenAny(_ futures: [Future<Value>]) -> Future<Future<Value>> {
        guard !futures.isEmpty else {
            return .failed(InvalidArgumentError("whenAny needs at least one future"))
        }
        if let done = futures.first(where: \.isCompleted) { return .succeeded(done) }
        let output = Future<Future<Value>>(runsContinuationsAsynchronously: false)
        for future in futures {
            future.onCompletion(.item(WhenAnyEntry(input: future, output: output)))
            if output.isCompleted { break }
        }
        return output
    }

    /// A future that completes with the first of `futures` to complete; see ``whenAny(_:)-([Future<Value>])``.
    public static func whenAny(_ futures: Future<Value>...) -> Future<Future<Value>> {
        whenAny(futures)
    }
}

extension Future where Value == Void {
    /// A future that completes when every one of `futures`, of any value types, has; it fails or is
    /// cancelled as ``Future/whenAll(_:)-([Future<Value>])`` does.
    public static func whenAll(mixed futures: [AnyFuture]) -> Future<Void> {
        guard !futures.isEmpty else { return .completed }
        let output = Future<Void>(runsContinuationsAsynchronously: false)
        let counter = WhenAllCounter<Void>(inputs: futures, output: output) { [output] inputs in
            if WhenAllCounter<Void>.completeUnsuccessfully(output, from: inputs) { return }
            _ = output.trySucceed(())
        }
        counter.start()
        return output
    }
}

/// The state of a `waiting(timeout:cancellation:)` call: whichever comes first completes the output.
final class WaitingRace<Value: Sendable>: TimerEntry {
    let output: Future<Value>
    /// Weak: the source holds the forwarder, which holds the race; a strong reference back would
    /// keep a source that never completes alive for ever.
    private weak var source: Future<Value>?
    private let timeout: Duration
    /// Whether the race has a timer in the timer queue (only then may it cancel it).
    let hasTimer: Bool
    /// The token the output is cancelled with. Kept here, not captured by the callback registered
    /// on it: the token's source holds that callback, and a callback holding the token would keep
    /// a source that is never cancelled alive for ever.
    private var token = CancellationToken.none
    private let hooks = Locked<Hooks>(Hooks())

    struct Hooks {
        var registration: CancellationRegistration?
        /// Weak: the forwarder, registered on the source, holds the race, which is what keeps the
        /// race alive while it waits; a strong reference back would be a cycle that a source
        /// that never completes would never break.
        weak var forwarder: WorkItem?
    }

    init(output: Future<Value>, source: Future<Value>, timeout: Duration?) {
        self.output = output
        self.source = source
        self.timeout = timeout ?? .zero
        hasTimer = timeout != nil
        super.init(deadline: timeout.map { Clock.deadline(after: $0) } ?? .max)
    }

    /// Registers on the source, on `token` and on the timer queue.
    func start(cancellation token: CancellationToken) {
        let forwarder = ClosureWorkItem { [self] in sourceCompleted() }
        hooks.withLock { $0.forwarder = forwarder }
        if token.canBeCancelled {
            self.token = token
            let registered = token.register { [weak self] in
                guard let self, !output.isCompleted else { return }
                dropForwarder()
                guard output.tryCancel(token: self.token, forceAsynchronous: true) else { return }
                if hasTimer { cancel() }
            }
            hooks.withLock { $0.registration = registered }
        }
        source?.onCompletion(.item(forwarder))
        if hasTimer { TimerQueue.shared.schedule(self) }
    }

    /// The timeout. The forwarder is taken back first, so that whoever sees the output time out
    /// finds the source as it was before `waiting` was called.
    override func fire() {
        guard !output.isCompleted else { return }
        dropForwarder()
        guard output.tryFail([TimeoutError(timeout: timeout)]) else { return }
        hooks.withLock { $0.registration }?.unregister()
    }

    /// The source completed (first, or after the race was decided).
    private func sourceCompleted() {
        hooks.withLock { $0.forwarder = nil }
        guard let source, output.tryComplete(from: source) else { return }
        if hasTimer { cancel() }
        hooks.withLock { $0.registration }?.unregister()
    }

    /// Takes the forwarding continuation back from a source that lost the race, so that racing a
    /// future that never completes, again and again, does not pile up continuations on it.
    private func dropForwarder() {
        let forwarder = hooks.withLock { hooks in
            defer { hooks.forwarder = nil }
            return hooks.forwarder
        }
        if let forwarder { source?.removeContinuation(forwarder) }
    }
}

extension Future {
    /// A future of this future's result that gives up waiting after `timeout` (failing with
    /// ``TimeoutError``) or when `cancellation` is cancelled (ending cancelled). This future itself
    /// is not affected either way.
    ///
    /// - Returns: `self` if it has completed; a failed future (``InvalidArgumentError``) for a
    ///   negative timeout; a cancelled one when `cancellation` is cancelled already.
    public func waiting(timeout: Duration? = nil, cancellation: CancellationToken = .none) -> Future<Value> {
        if isCompleted { return self }
        if let timeout, timeout < .zero {
            return .failed(InvalidArgumentError("waiting(timeout:) needs a timeout of zero or more, not \(timeout)"))
        }
        if cancellation.isCancellationRequested { return .cancelled(token: cancellation) }
        if timeout == nil && !cancellation.canBeCancelled { return self }
        let output = Future<Value>(runsContinuationsAsynchronously: false)
        WaitingRace(output: output, source: self, timeout: timeout).start(cancellation: cancellation)
        return output
    }
}

// Safe to share: the counter is atomic and the rest immutable.
extension WhenAllCounter: @unchecked Sendable {}

// Safe to share: immutable.
extension WhenAnyEntry: @unchecked Sendable {}

// Safe to share: the hooks sit under a lock, the rest is immutable.
extension WaitingRace: @unchecked Sendable {}
