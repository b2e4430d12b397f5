import CTaskMachine
import Synchronization

/// Requests cancellation of the operations holding its ``token``.
///
/// `cancel()` marks the source cancelled, then runs the registered callbacks on the calling
/// thread. The delays and `waiting(timeout:cancellation:)` futures it cancels are marked cancelled
/// before that `cancel()` returns, and their continuations are queued, never run inside `cancel()`.
/// A `Future.run` still queued checks its token when its turn comes, and ends cancelled then.
///
/// Callbacks are taken from the table one at a time as they run, so a callback unregistered while
/// `cancel()` runs others is removed (``CancellationRegistration/unregister()`` returns `true`) and
/// never runs. A callback is released outside the source's lock, so whatever its release frees may
/// use the source.
public final class CancellationTokenSource {
    /// What runs on cancellation: a closure, or a future that cancels itself (a delay), which needs
    /// no closure and so no allocation of its own.
    enum Callback {
        case closure(@Sendable () -> Void)
        case future(AnyFuture)
    }

    /// A slot of the callback table. A slot freed by `unregister` is reused; its generation tells a
    /// stale registration from the slot's new tenant.
    private struct Slot {
        var callback: Callback?
        var generation: UInt32
    }

    /// What a source needs once it holds more than one callback at a time, a timer or links: kept
    /// out of the source, which most of the time holds one callback (a delay's, or an operation's)
    /// and nothing else, so that the source stays one allocation of 56 bytes.
    private final class Extras {
        /// Slots 1 and up, each with its registration order.
        var rest: [(slot: Slot, sequence: UInt64)] = []
        /// Freed slots past 0; slot 0, when free, is found empty in place.
        var freeSlots: [Int32] = []
        /// The registration order of slot 0's callback: 0, older than any other, when it was
        /// registered before these extras existed.
        var firstSequence: UInt64 = 0
        var nextSequence: UInt64 = 0
        var timer: CancelTimer?
        var links: [CancellationRegistration] = []
    }

    /// The callback table: slot 0 in place, the rest in the extras made on the second
    /// registration.
    private struct State {
        var first = Slot(callback: nil, generation: 0)
        var extras: Extras?

        /// The extras, made on first use.
        mutating func madeExtras() -> Extras {
            if let extras { return extras }
            let made = Extras()
            extras = made
            return made
        }

        /// The number of slots, free or not.
        var slotCount: Int { 1 + (extras?.rest.count ?? 0) }

        subscript(slot: Int32) -> Slot {
            get { slot == 0 ? first : extras.unsafelyUnwrapped.rest[Int(slot) - 1].slot }
            set {
                if slot == 0 { first = newValue } else { extras.unsafelyUnwrapped.rest[Int(slot) - 1].slot = newValue }
            }
        }

        /// Stores `callback` in a free slot; returns the slot and its generation.
        mutating func add(_ callback: Callback) -> (slot: Int32, generation: UInt32) {
            if first.callback == nil {
                first.callback = callback
                if let extras {
                    extras.nextSequence += 1
                    extras.firstSequence = extras.nextSequence
                }
                return (0, first.generation)
            }
            let extras = madeExtras()
            extras.nextSequence += 1
            if let slot = extras.freeSlots.popLast() {
                extras.rest[Int(slot) - 1].slot.callback = callback
                extras.rest[Int(slot) - 1].sequence = extras.nextSequence
                return (slot, extras.rest[Int(slot) - 1].slot.generation)
            }
            extras.rest.append((Slot(callback: callback, generation: 0), extras.nextSequence))
            return (Int32(extras.rest.count), 0)
        }

        /// Empties `slot`, moves its generation on, and returns what it held, for the caller to
        /// release once it has let go of the lock.
        mutating func remove(_ slot: Int32) -> Callback? {
            let callback = self[slot].callback
            self[slot].callback = nil
            self[slot].generation &+= 1
            if slot != 0 { extras.unsafelyUnwrapped.freeSlots.append(slot) }
            return callback
        }

        /// The occupied slots of a table with extras, each with its generation, most recently
        /// registered first.
        func slotsMostRecentFirst(_ extras: Extras) -> [(slot: Int32, generation: UInt32, sequence: UInt64)] {
            var occupied: [(slot: Int32, generation: UInt32, sequence: UInt64)] = []
            occupied.reserveCapacity(1 + extras.rest.count)
            if first.callback != nil { occupied.append((0, first.generation, extras.firstSequence)) }
            for (index, entry) in extras.rest.enumerated() where entry.slot.callback != nil {
                occupied.append((Int32(index + 1), entry.slot.generation, entry.sequence))
            }
            // Slots are reused, so table order is not registration order.
            occupied.sort { $0.sequence > $1.sequence }
            return occupied
        }
    }

    // The lock's word and the table it guards live in the source itself, as `Locked` would keep
    // them in an object of its own: one allocation per source rather than two.

    /// The lock's futex word, taken and released by `tm_lock` and `tm_unlock` only (atomic
    /// operations compiled in C, which ThreadSanitizer sees, as with `Locked`). Declared first, so
    /// that it sits right after the object's header, where `lockWord` finds it.
    @exclusivity(unchecked) private var lockStorage: UInt32 = 0
    private let cancelled = Atomic<Bool>(false)
    /// The callback table, the timer and the links; touched only under the lock.
    @exclusivity(unchecked) private var state = State()

    /// Creates a source that is not cancelled.
    public init() {
        assert(
            withUnsafeMutablePointer(to: &lockStorage) { $0 } == lockWord,
            "CancellationTokenSource's lock word is not right after its header")
    }

    /// The lock word's address: a constant offset into the object rather than an `inout` access
    /// to the property, which several threads may not make at once.
    private var lockWord: UnsafeMutablePointer<UInt32> {
        (Unmanaged.passUnretained(self).toOpaque() + heapObjectHeaderSize).assumingMemoryBound(to: UInt32.self)
    }

    /// Runs `body` with exclusive access to the state.
    private func withLock<Result>(_ body: (inout State) throws -> Result) rethrows -> Result {
        let word = lockWord
        tm_lock(word)
        defer { tm_unlock(word) }
        return try body(&state)
    }

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
            source.withLock { $0.madeExtras().links.append(link) }
        }
        return source
    }

    /// A source that is cancelled when any of `tokens` is, or when it is cancelled itself.
    public static func linked(to tokens: CancellationToken...) -> CancellationTokenSource {
        linked(to: tokens)
    }

    deinit {
        guard let extras = withLock({ $0.extras }) else { return }
        // No timer is pending here: a pending timer holds its source (see `CancelTimer`).
        for link in extras.links { link.unregister() }
    }

    /// The token to hand to operations.
    public var token: CancellationToken { CancellationToken(source: self) }

    /// Whether cancellation has been requested.
    public var isCancellationRequested: Bool { cancelled.load(ordering: .acquiring) }

    /// Requests cancellation: runs the registered callbacks, most recent first, on this thread.
    ///
    /// Only the first call cancels. A call while another thread's is running the callbacks, or
    /// after, returns at once, and may return before that thread has run them all.
    public func cancel() {
        guard !cancelled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        // From here no callback is added. The order is taken once; each callback then leaves the
        // table under the lock just before it runs, so that one unregistered meanwhile is found
        // there and removed instead. The common case, one callback and no extras, takes the lock
        // once.
        var timer: CancelTimer?
        let (order, only) = withLock { state -> ([(slot: Int32, generation: UInt32, sequence: UInt64)], Callback?) in
            if let extras = state.extras {
                // The links stay, for the deinit to unregister.
                swap(&timer, &extras.timer)
                return (state.slotsMostRecentFirst(extras), nil)
            }
            return ([], state.first.callback == nil ? nil : state.remove(0))
        }
        timer?.cancel()
        let token = self.token
        if let only { Self.run(only, token: token) }
        for (slot, generation, _) in order {
            let callback = withLock { state in
                state[slot].generation == generation ? state.remove(slot) : nil
            }
            if let callback { Self.run(callback, token: token) }
        }
    }

    /// Runs one callback for a cancellation by `token`.
    private static func run(_ callback: Callback, token: CancellationToken) {
        switch callback {
        case .closure(let callback): callback()
        case .future(let future): future.cancellationRequested(by: token)
        }
    }

    /// Schedules cancellation after `delay`, replacing an earlier schedule. A zero delay cancels now.
    ///
    /// The timer keeps the source alive until it fires, so a source that nothing else holds still
    /// cancels the operations holding its token; cancelling the source ends the timer at once. A
    /// delay too long for the runtime's clock (`Int64.max` nanoseconds from now) never ends: it
    /// only takes the earlier schedule out.
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
        // A delay past what the clock counts never ends: no timer, which would keep the source for
        // good, only the earlier one taken out.
        let deadline = Clock.deadline(after: delay)
        let timer = deadline == .max ? nil : CancelTimer(source: self, deadline: deadline)
        // Checked again under the lock, against a `cancel()` since the check above: one that went
        // through the lock first is seen here, and one that goes through it after takes this
        // timer out and cancels it. Either way no timer outlives the cancellation.
        let (previous, stored) = withLock { state -> (CancelTimer?, Bool) in
            guard !cancelled.load(ordering: .acquiring) else { return (nil, false) }
            let extras = state.madeExtras()
            defer { extras.timer = timer }
            return (extras.timer, true)
        }
        previous?.cancel()
        guard stored, let timer else { return }
        TimerQueue.shared.schedule(timer)
    }

    func register(_ callback: @escaping @Sendable () -> Void) -> CancellationRegistration {
        guard let (slot, generation) = add(.closure(callback)) else {
            callback()
            return CancellationRegistration(source: nil, slot: 0, generation: 0)
        }
        return CancellationRegistration(source: self, slot: slot, generation: generation)
    }

    /// Registers `future` to be told of cancellation (``AnyFuture/cancellationRequested(by:)``);
    /// tells it at once, and returns `nil`, if cancellation was requested already.
    func register(future: AnyFuture) -> Int32? {
        guard let (slot, _) = add(.future(future)) else {
            future.cancellationRequested(by: token)
            return nil
        }
        return slot
    }

    /// Stores `callback` unless cancellation was requested; O(1).
    private func add(_ callback: Callback) -> (slot: Int32, generation: UInt32)? {
        withLock { state in
            guard !cancelled.load(ordering: .acquiring) else { return nil }
            return state.add(callback)
        }
    }

    /// Removes the closure registered in `slot` at `generation`, if it is still there; O(1).
    func unregister(slot: Int32, generation: UInt32) -> Bool {
        remove(slot) { $0.generation == generation }
    }

    /// Removes `future`'s registration in `slot`, if it is still there; O(1).
    func unregister(slot: Int32, future: AnyFuture) {
        _ = remove(slot) { entry in
            if case .future(let registered) = entry.callback { registered === future } else { false }
        }
    }

    /// Empties `slot` if it holds a callback that `isTheOne` recognizes as the caller's.
    private func remove(_ slot: Int32, if isTheOne: (Slot) -> Bool) -> Bool {
        // Released here, after the lock: the callback may hold the last reference to something
        // whose deinit uses this source (a linked source unregistering its link, say).
        let removed = withLock { state -> Callback? in
            guard Int(slot) < state.slotCount, state[slot].callback != nil, isTheOne(state[slot])
            else { return nil }
            return state.remove(slot)
        }
        return removed != nil
    }
}

/// The timer behind `cancel(after:)`.
///
/// It holds its source until it fires or is cancelled, as the wheel holds it: an operation may
/// hold nothing of the source but its callback there (`waiting(timeout:cancellation:)` does), so
/// a source made for a timeout and dropped at once must live until its time comes. The cycle
/// through the source's extras lasts only while the timer is pending: `cancel()` and a later
/// `cancel(after:)` take the timer out of them, and firing calls `cancel()`.
final class CancelTimer: TimerEntry {
    private let source: CancellationTokenSource

    init(source: CancellationTokenSource, deadline: Int64) {
        self.source = source
        super.init(deadline: deadline)
    }

    override func fire() {
        source.cancel()
    }
}

// Safe to share: immutable.
extension CancelTimer: @unchecked Sendable {}

// Safe to share: the state is touched only under the lock in the object's own word; the flag is atomic.
extension CancellationTokenSource: @unchecked Sendable {}
