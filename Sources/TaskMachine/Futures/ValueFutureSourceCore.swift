public import Synchronization

/// A resettable, reusable ``ValueFutureSource``: one operation at a time, each under its own
/// `UInt16` version — the counterpart of `ManualResetValueTaskSourceCore<T>`.
///
/// Hand out ``makeValueFuture()``, complete it with ``succeed(_:)`` or ``fail(_:)``, and once the
/// result has been read call ``reset()`` to move to the next version and reuse the object. Reusing
/// it allocates nothing.
///
/// ```swift
/// let source = ValueFutureSourceCore<Int>()
/// let pending = source.makeValueFuture()
/// try source.succeed(7)
/// print(try await pending.get())   // 7
/// source.reset()                   // the next operation; the old token is now stale
/// ```
public final class ValueFutureSourceCore<Value: Sendable>: ValueFutureSource {
    // Lock-free, as a future is: the continuation slot moves empty → one continuation → completed
    // (or straight to completed) within an operation, and `reset()` empties it for the next. The
    // empty slot names its operation's version, so a registration lands only in the operation its
    // token names. The value sits in two raw words like a future's, so code reached through the
    // protocol, which is not specialized for `Value`, never looks up the metadata of a type built
    // on it.

    /// The value of a succeeded operation (see ``InlineValue``); declared first, so that it sits
    /// right after the object's header (see `heapObjectHeaderSize`).
    @exclusivity(unchecked) var valueStorage: (UInt, UInt) = (0, 0)
    /// `SlotWord.emptySlot(of: version)` while the operation is pending with no continuation,
    /// `SlotWord.completed`, or the retained job of the one continuation.
    @usableFromInline
    let slot = Atomic<UInt>(SlotWord.emptySlot(of: 0))
    /// 0 pending, 1 while the completer writes the outcome, then `succeeded` or `failed`.
    @usableFromInline
    let outcome = Atomic<UInt8>(0)
    @usableFromInline
    let currentVersion = Atomic<UInt16>(0)
    /// The error of a failed operation; written by the completer before the slot is published.
    @usableFromInline @exclusivity(unchecked) var error: (any Error)?
    /// Continuations are queued, never run inside the call that completes the operation.
    public let runsContinuationsAsynchronously: Bool

    @usableFromInline
    static var succeeded: UInt8 { 2 }
    private static var failed: UInt8 { 3 }

    /// Creates a source at version 0 with a pending operation.
    public init(runContinuationsAsynchronously: Bool = false) {
        self.runsContinuationsAsynchronously = runContinuationsAsynchronously
    }

    deinit {
        clearOutcome()
    }

    /// The address of `valueStorage`, without an `inout` access to it (see `Future.valueAddress`).
    @inlinable
    var valueAddress: UnsafeMutableRawPointer {
        Unmanaged.passUnretained(self).toOpaque() + heapObjectHeaderSize
    }

    /// The version of the current operation: the token its value futures carry.
    public var version: UInt16 { currentVersion.load(ordering: .acquiring) }

    /// A value future for the current operation.
    @inlinable
    public func makeValueFuture() -> ValueFuture<Value> {
        ValueFuture(core: self, token: currentVersion.load(ordering: .acquiring))
    }

    // Inlinable, so that the value is destroyed by code specialized for its type: for plain data,
    // nothing at all, where the generic code asked the type's metadata (about 15 instructions).
    /// Moves to the next operation: a new version, no result, no continuation. Value futures of
    /// earlier versions become stale. Call it once the current operation's result has been read,
    /// from the source's owner: two resets at once, on two threads, are not supported.
    ///
    /// A continuation still waiting on the operation, reset before it completed, is not dropped:
    /// it is queued, and its read throws ``ValueFutureSourceError/staleToken(expected:found:)``.
    @inlinable
    public func reset() {
        // The version first: from here a value future of the old operation gets a stale-token
        // error rather than a glimpse of the outcome being cleared. A load and a store, not a
        // read-modify-write (a locked instruction on x86): only the one owner resets, so nothing
        // else writes the version. Nothing needs the loads below kept after the store: a
        // registration racing the reset lands in the old version's slot before the exchange in
        // `resumeAbandoned` takes it, or fails against the slot that exchange or the store below
        // leaves, either way queued to throw its stale-token error.
        let version = currentVersion.load(ordering: .relaxed) &+ 1
        currentVersion.store(version, ordering: .releasing)
        let wasCompleted = clearOutcome()
        outcome.store(0, ordering: .relaxed)
        // Completed, the slot takes no registration (one expects it empty, for its own version), so
        // a releasing store empties it: it publishes the cleared outcome to the next operation's
        // users, who read the slot with an acquiring load or register with a compare-and-exchange;
        // on x86 it is a plain store, where an exchange is a locked instruction. Pending,
        // `clearOutcome` emptied it already, by an exchange that took whatever a registration had
        // put there; a store now would overwrite a registration landing after that exchange, which
        // would then never run.
        if wasCompleted { slot.store(SlotWord.emptySlot(of: version), ordering: .releasing) }
    }

    /// Drops the current operation's value and error, and queues its continuation if one is still
    /// waiting (the operation was reset, or dropped, before it completed). Returns whether the
    /// operation had completed; its slot is then left `completed`, for the caller to empty.
    @inlinable @discardableResult
    func clearOutcome() -> Bool {
        if outcome.load(ordering: .acquiring) == Self.succeeded {
            InlineValue.destroy(Value.self, at: valueAddress)
        }
        return clearErrorAndContinuation()
    }

    /// Drops the current operation's error and, if it has not completed, empties its slot and
    /// queues a continuation still waiting there: it is not lost, and its read, of a version that
    /// has moved on, throws a stale-token error. Returns whether the operation had completed. The
    /// part of `clearOutcome()` that does not depend on `Value`, out of line.
    @usableFromInline
    func clearErrorAndContinuation() -> Bool {
        // Tested first: assigning `nil` over `nil` still calls out to destroy the old value.
        if error != nil { error = nil }
        if slot.load(ordering: .acquiring) == SlotWord.completed { return true }
        resumeAbandoned()
        return false
    }

    /// Empties the slot of an operation that did not complete, for the current version, and queues
    /// the continuation it held, if any. An exchange, not a load and a store: a registration may
    /// land at any moment. Out of line, so that a reset, which almost always finds the operation
    /// completed, pays nothing for it.
    @inline(never)
    private func resumeAbandoned() {
        let word = slot.exchange(
            SlotWord.emptySlot(of: currentVersion.load(ordering: .relaxed)), ordering: .acquiringAndReleasing)
        guard SlotWord.isJob(word) else { return }
        Continuations.dispatch(Job(takingRetainedWord: word), mayRunInline: false)
    }

    // Inlinable, so that the value is stored by code specialized for its type rather than through
    // its value witnesses (about 90 instructions fewer per completion for an `Int`, callgrind).
    /// Completes the current operation with `value`.
    /// - Throws: ``ValueFutureSourceError/alreadyCompleted`` if it has completed.
    @inlinable
    public func succeed(_ value: Value) throws {
        try reserve()
        InlineValue.store(value, at: valueAddress)
        publish(Self.succeeded)
    }

    /// Completes the current operation with `error`.
    /// - Throws: ``ValueFutureSourceError/alreadyCompleted`` if it has completed.
    public func fail(_ error: any Error) throws {
        try reserve()
        self.error = error
        publish(Self.failed)
    }

    @usableFromInline
    func reserve() throws {
        guard outcome.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged else {
            throw ValueFutureSourceError.alreadyCompleted
        }
    }

    @usableFromInline
    func publish(_ result: UInt8) {
        outcome.store(result, ordering: .releasing)
        let taken = slot.exchange(SlotWord.completed, ordering: .acquiringAndReleasing)
        guard SlotWord.isJob(taken) else { return }
        Continuations.dispatch(slotWord: taken, mayRunInline: !runsContinuationsAsynchronously)
    }

    public func status(token: UInt16) throws -> FutureStatus {
        try check(token)
        guard slot.load(ordering: .acquiring) == SlotWord.completed else { return .pending }
        if outcome.load(ordering: .acquiring) == Self.succeeded { return .succeeded }
        return error is OperationCancelledError ? .cancelled : .failed
    }

    public func onCompleted(token: UInt16, _ continuation: consuming AwaitContinuation) throws {
        // The continuation, consumed at the end of this call, keeps its job for `register`.
        try register(continuation.job, token: token)
    }

    /// Registers `job` as the continuation of the operation `token` names; the caller keeps `job`
    /// alive for the call. A runtime awaiter's path, with one retain for the slot.
    @inlinable
    func register(_ job: Job, token: UInt16) throws {
        try check(token)
        let word = job.retainedWord()
        // Reset since the check above: queued rather than landing in the next operation.
        if try SlotWord.installSingle(word: word, for: token, in: slot) { return }
        Continuations.dispatch(slotWord: word, mayRunInline: false)
    }

    /// Whether the operation `token` names has completed; `true` for an earlier one, as reading it
    /// throws at once. What `status(token:)` says, with no error to make and drop.
    @inlinable
    func isCompleted(token: UInt16) -> Bool {
        token != currentVersion.load(ordering: .acquiring) || slot.load(ordering: .acquiring) == SlotWord.completed
    }

    // Inlinable, so that an awaiter specialized for `Value` reads the value with a plain load.
    @inlinable
    public func getResult(token: UInt16) throws -> Value {
        try check(token)
        guard slot.load(ordering: .acquiring) == SlotWord.completed else { throw ValueFutureSourceError.notCompleted }
        guard outcome.load(ordering: .acquiring) == Self.succeeded else {
            throw error ?? ValueFutureSourceError.notCompleted
        }
        return InlineValue.load(Value.self, at: valueAddress)
    }

    @inlinable @inline(__always)
    func check(_ token: UInt16) throws {
        let current = currentVersion.load(ordering: .acquiring)
        guard token == current else {
            throw ValueFutureSourceError.staleToken(expected: current, found: token)
        }
    }
}

// Safe to share: the outcome is written once per operation before the slot's publishing exchange
// and read after an acquiring load sees it; `reset()` belongs to the one owner of the operation.
extension ValueFutureSourceCore: @unchecked Sendable {}
