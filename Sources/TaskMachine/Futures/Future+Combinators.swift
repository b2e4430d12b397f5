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

    override var dependentFutures: [AnyFuture] { [output] }

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

/// A `whenAny` call: the inputs and their entries until one input's entry runs, which completes
/// the output with that input and takes the other entries back from the inputs that lost, so
/// that racing a future that never completes, again and again, does not pile up entries on it or
/// keep the outputs alive.
final class WhenAnyRace<Value: Sendable>: Sendable {
    private struct State {
        var output: Future<Future<Value>>?
        var inputs: [Future<Value>]
        var entries: [WhenAnyEntry<Value>] = []
    }

    /// Emptied by the winner: an entry left on an input that lost (a future's one continuation
    /// stays in its slot) then holds nothing.
    private let state: Locked<State>

    init(output: Future<Future<Value>>, inputs: [Future<Value>]) {
        state = Locked(State(output: output, inputs: inputs))
    }

    /// Makes one entry per input, to register on it.
    func makeEntries() -> [WhenAnyEntry<Value>] {
        let entries = (0..<state.withLock { $0.inputs.count }).map { WhenAnyEntry(race: self, index: $0) }
        state.withLock { $0.entries = entries }
        return entries
    }

    /// Input `index` completed; the first call wins.
    func complete(with index: Int) {
        guard
            let won = state.withLock({ state -> State? in
                guard state.output != nil else { return nil }
                defer { state = State(output: nil, inputs: []) }
                return state
            })
        else { return }
        _ = won.output?.trySucceed(won.inputs[index])
        for (other, input) in won.inputs.enumerated() where other != index && other < won.entries.count {
            input.removeContinuation(won.entries[other])
        }
    }
}

/// One input of `whenAny`: the first to run completes the shared output with its input.
final class WhenAnyEntry<Value: Sendable>: WorkItem {
    private let race: WhenAnyRace<Value>
    private let index: Int

    init(race: WhenAnyRace<Value>, index: Int) {
        self.race = race
        self.index = index
        super.init()
    }

    override func run() { race.complete(with: index) }

    // No `dependentFutures`: the output needs any one input, not this one, so a blocked input does
    // not block it, and the deadlock detector must not follow it.
}

extension Future {
    /// A future that completes when every one of `futures` has: with their values in order if all
    /// succeeded; failed, with every error of every failed input, if any failed; else cancelled if
    /// any was cancelled. It always waits for all of them, and holds them until then: an input
    /// that never completes keeps the others and the result in memory, even once dropped.
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
    /// "First" is the first whose continuations run: an input that queues them (a promise made
    /// with `runContinuationsAsynchronously`, or one cancelled through a token, which never runs
    /// continuations inside `cancel()`) can lose to one that completes a moment later and runs
    /// them at once. Once one has won, the others no longer hold anything of this call; until
    /// then, every input holds the result, so inputs that never complete keep each other and the
    /// result in memory, even once dropped.
    ///
    /// - Returns: a future of that future; a failed one (``InvalidArgumentError``) for an empty list.
    public static func whenAny(_ futures: [Future<Value>]) -> Future<Future<Value>> {
        guard !futures.isEmpty else {
            return .failed(InvalidArgumentError("whenAny needs at least one future"))
        }
        if let done = futures.first(where: \.isCompleted) { return .succeeded(done) }
        let output = Future<Future<Value>>(runsContinuationsAsynchronously: false)
        let entries = WhenAnyRace(output: output, inputs: futures).makeEntries()
        var registered = 0
        for (future, entry) in zip(futures, entries) {
            future.onCompletion(.item(entry))
            registered += 1
            if output.isCompleted { break }
        }
        // An input that won while the others were being registered took back the entries there
        // were then; take back any registered since.
        if output.isCompleted {
            for index in 0..<registered { futures[index].removeContinuation(entries[index]) }
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
///
/// Who holds whom: the source holds the forwarder, its continuation, which holds the race until the
/// race ends; the race holds the source until then, so that a forwarder run queued, after every other
/// owner of the source has let go of it, still finds its result. The callback registered on the
/// token holds the race, so that the output can be cancelled while nothing else refers to the
/// source; the timer queue holds a race with a timeout. Nothing here holds the token's source.
/// A source that never completes, dropped while its race goes on (no timeout, and a token never
/// cancelled), stays in memory with the race, as an input does with any combinator.
final class WaitingRace<Value: Sendable>: TimerEntry {
    let output: Future<Value>
    private let timeout: Duration
    /// Whether the race has a timer in the timer queue (only then may it cancel it).
    let hasTimer: Bool
    private let hooks: Locked<Hooks>

    struct Hooks {
        /// The source, until the race ends.
        var source: Future<Value>?
        /// The forwarder, to take back from the source if the race ends otherwise. Weak: the
        /// source, or the queue running it, holds it.
        weak var forwarder: WaitingForwarder<Value>?
        /// The token's registration, its source held weakly: a strong reference would make a
        /// cycle with the callback that source holds.
        weak var tokenSource: CancellationTokenSource?
        var registrationSlot: Int32 = 0
        var registrationGeneration: UInt32 = 0
    }

    init(output: Future<Value>, source: Future<Value>, timeout: Duration?) {
        self.output = output
        self.timeout = timeout ?? .zero
        hasTimer = timeout != nil
        hooks = Locked(Hooks(source: source))
        super.init(deadline: timeout.map { Clock.deadline(after: $0) } ?? .max)
    }

    /// Registers on `source`, on `token` and on the timer queue.
    func start(on source: Future<Value>, cancellation token: CancellationToken) {
        let forwarder = WaitingForwarder(race: self)
        hooks.withLock { $0.forwarder = forwarder }
        if let tokenSource = token.source {
            let registered = token.register { [self, weak tokenSource] in
                guard !output.isCompleted else { return }
                dropForwarder()
                guard output.tryCancel(token: CancellationToken(source: tokenSource), forceAsynchronous: true)
                else { return }
                if hasTimer { cancel() }
            }
            hooks.withLock { hooks in
                hooks.tokenSource = registered.source
                hooks.registrationSlot = registered.slot
                hooks.registrationGeneration = registered.generation
            }
        }
        // Cancelled during the registration above: nothing left to forward.
        guard !output.isCompleted else { return }
        source.onCompletion(.item(forwarder))
        // Cancelled while the forwarder was being registered: the callback let go of the source
        // before the forwarder landed on it, so it took nothing back. Whichever of the two comes
        // second under the lock takes it back.
        if hooks.withLock({ $0.source == nil }) { source.removeContinuation(forwarder) }
        if hasTimer { TimerQueue.shared.schedule(self) }
    }

    /// The timeout. The forwarder is taken back first, so that whoever sees the output time out
    /// finds the source as it was before `waiting` was called.
    override func fire() {
        guard !output.isCompleted else { return }
        dropForwarder()
        guard output.tryFail([TimeoutError(timeout: timeout)]) else { return }
        unregisterFromToken()
    }

    /// The source completed (first, or after the race was decided).
    fileprivate func sourceCompleted() {
        let source = hooks.withLock { hooks in
            defer {
                hooks.source = nil
                hooks.forwarder = nil
            }
            return hooks.source
        }
        guard let source, output.tryComplete(from: source) else { return }
        if hasTimer { cancel() }
        unregisterFromToken()
    }

    /// Takes the forwarding continuation back from a source that lost the race, so that racing a
    /// future that never completes, again and again, does not pile up continuations on it, and
    /// lets go of the source. A forwarder that cannot be taken back, the source's only
    /// continuation, lets go of the race instead.
    private func dropForwarder() {
        let (source, forwarder) = hooks.withLock { hooks in
            defer {
                hooks.source = nil
                hooks.forwarder = nil
            }
            return (hooks.source, hooks.forwarder)
        }
        guard let forwarder else { return }
        source?.removeContinuation(forwarder)
        forwarder.letGoOfRace()
    }

    private func unregisterFromToken() {
        let registration = hooks.withLock { hooks in
            hooks.tokenSource.map {
                CancellationRegistration(
                    source: $0, slot: hooks.registrationSlot, generation: hooks.registrationGeneration)
            }
        }
        registration?.unregister()
    }
}

/// The continuation `waiting(timeout:cancellation:)` puts on its source: hands the source's
/// completion to the race. It holds the race only until the race ends: a future's only
/// continuation stays in its slot until the future completes, where, holding the race, it would
/// keep the race's output alive as long as a source that never completes.
final class WaitingForwarder<Value: Sendable>: WorkItem {
    private let race: Locked<WaitingRace<Value>?>

    init(race: WaitingRace<Value>) {
        self.race = Locked(race)
        super.init()
    }

    override func run() {
        race.withLock { $0.take() }?.sourceCompleted()
    }

    /// The race ended otherwise: nothing left to forward.
    func letGoOfRace() {
        // Taken out and released after the lock: the race may hold the output's last reference.
        _ = race.withLock { $0.take() }
    }
}

extension Future {
    /// A future of this future's result that gives up waiting after `timeout` (failing with
    /// ``TimeoutError``) or when `cancellation` is cancelled (ending cancelled). This future itself
    /// is not affected either way.
    ///
    /// - Returns: a failed future (``InvalidArgumentError``) for a negative timeout, as
    ///   ``wait(timeout:)`` throws one, even if this future has completed; else `self` if it has
    ///   completed; a cancelled one when `cancellation` is cancelled already.
    public func waiting(timeout: Duration? = nil, cancellation: CancellationToken = .none) -> Future<Value> {
        if let timeout, timeout < .zero {
            return .failed(InvalidArgumentError("waiting(timeout:) needs a timeout of zero or more, not \(timeout)"))
        }
        if isCompleted { return self }
        if cancellation.isCancellationRequested { return .cancelled(token: cancellation) }
        if timeout == nil && !cancellation.canBeCancelled { return self }
        let output = Future<Value>(runsContinuationsAsynchronously: false)
        WaitingRace(output: output, source: self, timeout: timeout).start(on: self, cancellation: cancellation)
        return output
    }
}

// Safe to share: the counter is atomic and the rest immutable.
extension WhenAllCounter: @unchecked Sendable {}

// Safe to share: immutable.
extension WhenAnyEntry: @unchecked Sendable {}

// Safe to share: the hooks sit under a lock, the rest is immutable.
extension WaitingRace: @unchecked Sendable {}

// Safe to share: the race sits under a lock.
extension WaitingForwarder: @unchecked Sendable {}
