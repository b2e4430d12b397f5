import Glibc
public import Synchronization

/// The part of every future that does not depend on its value type: status, errors, and the
/// continuation slot.
///
/// `Future<Value>` is the type to use; `AnyFuture` lets code hold futures of different value
/// types together, as `whenAll` over mixed futures and the deadlock detector do.
///
/// ## The continuation slot
/// One atomic word per future holds what must run when it completes. It moves one way only:
///
///     empty ──▶ one continuation ──▶ list ──▶ completed
///       └──────────────┴──────────────────────▲
///
/// The common case, one awaiter, never allocates beyond the continuation itself. A second
/// continuation spills both into a list object that is created once per future and never freed
/// before it. Completion swaps in `completed` and runs what it took out.
public class AnyFuture {
    // Word-sized fields first and the three bytes together at the end, so that no padding sits
    // between them: a pending delay (a future, its timer links and its deadline) stays within a
    // 128-byte allocation.

    /// The value of a succeeded future (`Future<Value>`'s, kept here so that it is the first field,
    /// at a fixed place): in place when it fits in two words (most values: numbers, references,
    /// arrays, strings), else a retained ``ValueBox``. Written once by the completer before the
    /// completion is published; destroyed by `Future`'s `deinit` if the future succeeded.
    ///
    /// Raw words rather than a `Value?`: code not specialized for `Value` — the `deinit` above all,
    /// which runs for every future — would look up the metadata of `Optional<Value>` in the
    /// runtime's cache at every access, a few hundred instructions each time. Reached only through
    /// `Future.valueAddress`.
    @usableFromInline @exclusivity(unchecked)
    final var valueStorage: (UInt, UInt) = (0, 0)

    /// The continuation slot: `SlotWord.empty`, `.completed`, `.list`, or one retained job. Empty,
    /// a pooled state machine's box holds `SlotWord.emptySlot(of:)` its use instead of `.empty`; it
    /// takes registrations through `MachineBox.register(_:token:)` only, never `addContinuation`.
    @usableFromInline
    let slot = Atomic<UInt>(SlotWord.empty)
    /// Continuations past the first; created on demand, once.
    let spill = AtomicLazyReference<ContinuationList>()
    /// Errors or the cancelling token; written once by the completer before the slot is published.
    @exclusivity(unchecked) final var failure: Failure?
    /// For a state machine's box: the context its pending continuation must run on.
    @usableFromInline @exclusivity(unchecked) final var resumeContext: SynchronizationContext?
    /// 0 while pending, 1 while one completer writes the outcome, then a `FutureStatus` raw value,
    /// stored (releasing) after the outcome and before the slot's publishing exchange.
    @usableFromInline
    let completionState = Atomic<UInt8>(0)
    /// Set when someone reads the errors, so a failure nobody read can be reported.
    private let observed = Atomic<Bool>(false)
    /// The promise asked for continuations to be queued, never run inline by its completer.
    final let runsContinuationsAsynchronously: Bool
    /// Set by the completer, with the value, when the value is not plain data in place: only then
    /// does `Future`'s `deinit` destroy it. Decided by the completer's code, specialized for the
    /// value's type; the `deinit` is not, and asking the value's metadata there costs a call and a
    /// few dozen instructions for every future, most of which hold a number or nothing.
    /// (In the byte after the three above, which padding filled before.)
    @usableFromInline @exclusivity(unchecked)
    final var valueNeedsDestroying = false

    struct Failure {
        var errors: [any Error]
        var token: CancellationToken
    }

    @usableFromInline
    init(runContinuationsAsynchronously: Bool) {
        self.runsContinuationsAsynchronously = runContinuationsAsynchronously
    }

    /// Creates a future completed already, without atomics traffic.
    init(completedWith status: FutureStatus, failure: Failure?) {
        self.runsContinuationsAsynchronously = false
        self.failure = failure
        completionState.store(status.rawValue, ordering: .relaxed)
        slot.store(SlotWord.completed, ordering: .relaxed)
    }

    deinit {
        if completionState.load(ordering: .acquiring) == FutureStatus.failed.rawValue,
            !observed.load(ordering: .relaxed), let failure
        {
            ErrorReporting.reportUnobserved(failure.errors, futureDescription: diagnosticName)
        }
        let word = slot.load(ordering: .acquiring)
        if SlotWord.isJob(word) { Job.releaseWord(word) }
    }

    // MARK: Status

    /// Where the future is in its life.
    public final var status: FutureStatus {
        guard isCompleted else { return .pending }
        return FutureStatus(rawValue: completionState.load(ordering: .acquiring)) ?? .pending
    }

    /// The outcome of a future whose completion has been claimed (a completion attempt that
    /// failed says so): the claimant publishes it at once, so this waits for that, rather than
    /// answering `.pending` for a future that is already taken. For a completer that lost the race.
    @usableFromInline
    final var settledStatus: FutureStatus {
        var state = completionState.load(ordering: .acquiring)
        while state == 1 {
            sched_yield()
            state = completionState.load(ordering: .acquiring)
        }
        return FutureStatus(rawValue: state) ?? .pending
    }

    /// Whether the future has completed: succeeded, failed or cancelled.
    @inlinable
    public final var isCompleted: Bool {
        slot.load(ordering: .acquiring) == SlotWord.completed
    }

    /// Whether the future has succeeded; the fast path of reading a result.
    @inlinable
    final var hasSucceeded: Bool {
        completionState.load(ordering: .acquiring) == FutureStatus.succeeded.rawValue
    }

    /// The errors of a failed future, in the order they were given; empty otherwise.
    /// Reading them counts as observing the failure.
    public final var errors: [any Error] {
        guard status == .failed, let failure else { return [] }
        markObserved()
        return failure.errors
    }

    /// The error awaiting this future would throw: the first error of a failed future, an
    /// `OperationCancelledError` for a cancelled one, `nil` otherwise.
    public final var error: (any Error)? {
        switch status {
        case .failed:
            markObserved()
            return failure?.errors.first
        case .cancelled:
            return OperationCancelledError(token: failure?.token ?? .none)
        case .pending, .succeeded:
            return nil
        }
    }

    /// For a cancelled future, the token that cancelled it (`.none` when cancelled directly).
    public final var cancellationToken: CancellationToken? {
        status == .cancelled ? (failure?.token ?? CancellationToken.none) : nil
    }

    final func markObserved() {
        observed.store(true, ordering: .relaxed)
    }

    /// Throws the error of a failed or cancelled future; marks a failure observed.
    final func throwIfUnsuccessful() throws {
        switch completionState.load(ordering: .acquiring) {
        case FutureStatus.failed.rawValue:
            markObserved()
            throw failure!.errors[0]
        case FutureStatus.cancelled.rawValue:
            throw OperationCancelledError(token: failure?.token ?? .none)
        default:
            return
        }
    }

    /// A name for diagnostics: deadlock chains, unobserved-error reports, traces.
    var diagnosticName: String { "future" }

    /// Called on the cancelling thread when the source of a token this future registered with
    /// (``CancellationTokenSource/register(future:)``) is cancelled. A delay cancels itself.
    func cancellationRequested(by token: CancellationToken) {}

    /// Runs the future as a job: a state machine's box resumes its machine, a `run` future runs its
    /// body. Plain futures are never queued.
    func runAsJob() {
        assertionFailure("\(diagnosticName) is not a runnable future")
    }

    /// Runs this future's own work on the calling thread, now, if it has work of its own (the body
    /// of a `Future.run`) that no thread has started; returns whether it did, the future then
    /// being complete. A pool worker about to suspend on the future calls it (`registerAwait`).
    func runHereIfNotStarted() -> Bool { false }

    /// `runHereIfNotStarted()` on `thread`, one level deeper on its trampoline, as a continuation
    /// run inline: a body run here may start a method that awaits another such future, and so on,
    /// so that, unbounded, a chain of them would nest a frame per link. Refused, returning `false`,
    /// once the stack is as deep as the trampoline allows.
    final func runHereIfNotStarted(nestedOn thread: ThreadState) -> Bool {
        guard thread.inlineDepth < Continuations.maxInlineDepth else { return false }
        // A body this thread was running waits for this one: a wait() in it holds both up (the
        // nested body's `runningBody(of:)` records the one it interrupts).
        var ran = false
        // A context the body sets lasts until it ends, as it would in a pool job of its own.
        let context = thread.synchronizationContext
        Continuations.nested(on: thread) { ran = runHereIfNotStarted() }
        if thread.synchronizationContext !== context { thread.synchronizationContext = context }
        return ran
    }

    // MARK: Completion

    /// Claims the right to complete; exactly one caller ever gets `true`.
    @usableFromInline
    final func reserveCompletion() -> Bool {
        completionState.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged
    }

    /// Claims the right to complete a future that nothing but its owner completes, and only one
    /// thread at a time (a state machine's box, completed by the resumption running its machine):
    /// with no rival completer, a plain load and store do what `reserveCompletion()`'s
    /// compare-and-exchange does, without its locked instruction.
    @usableFromInline
    final func reserveCompletionAsOwner() -> Bool {
        guard completionState.load(ordering: .relaxed) == 0 else { return false }
        completionState.store(1, ordering: .relaxed)
        return true
    }

    /// Publishes the outcome written after `reserveCompletion()` and runs the continuations.
    ///
    /// - Parameter forceAsynchronous: queue every continuation, run none inline (cancellation uses it,
    ///   so that `cancel()` never runs continuations).
    @usableFromInline
    final func publishCompletion(_ status: FutureStatus, forceAsynchronous: Bool = false) {
        let taken = publish(status)
        runContinuations(taken, inline: !(forceAsynchronous || runsContinuationsAsynchronously))
    }

    /// Publishes the outcome written after `reserveCompletion()` and closes the continuation slot;
    /// returns what the slot held, for `runContinuations(_:inline:)`.
    final func publish(_ status: FutureStatus) -> UInt {
        completionState.store(status.rawValue, ordering: .releasing)
        // The exchange is the publication: a read-modify-write, which keeps every write above it.
        return slot.exchange(SlotWord.completed, ordering: .acquiringAndReleasing)
    }

    /// Runs or queues the continuations `taken` from the slot by `publish(_:)`, releasing them.
    @inline(__always)
    final func runContinuations(_ taken: UInt, inline: Bool) {
        switch taken {
        case SlotWord.list:
            let jobs = spill.load()!.close()
            // Queue the rest first, so the one that runs inline delays none of them.
            for job in jobs.dropFirst() { Continuations.dispatch(job, mayRunInline: false) }
            if let first = jobs.first { Continuations.dispatch(first, mayRunInline: inline) }
        default:
            // Empty: `SlotWord.empty`, or a pooled box's empty slot of its use.
            guard SlotWord.isJob(taken) else { return }
            Continuations.dispatch(slotWord: taken, mayRunInline: inline)
        }
    }

    /// Fails the future with `errors` (at least one) unless it has completed.
    @discardableResult
    final func tryFail(_ errors: [any Error], forceAsynchronous: Bool = false) -> Bool {
        precondition(!errors.isEmpty)
        guard reserveCompletion() else { return false }
        failReserved(errors, forceAsynchronous: forceAsynchronous)
        return true
    }

    /// Cancels the future unless it has completed.
    @discardableResult
    final func tryCancel(token: CancellationToken, forceAsynchronous: Bool = false) -> Bool {
        guard reserveCompletion() else { return false }
        cancelReserved(token: token, forceAsynchronous: forceAsynchronous)
        return true
    }

    /// Completes the future as a body's error dictates: cancelled for a cancellation through
    /// `ownToken` (or any cancellation, when `ownToken` is nil), failed otherwise. An operation
    /// whose own token is `.none` has nothing that could cancel it: every error fails it.
    @usableFromInline
    final func tryComplete(throwing error: any Error, ownToken: CancellationToken?) -> Bool {
        guard reserveCompletion() else { return false }
        completeReserved(throwing: error, ownToken: ownToken)
        return true
    }

    /// Completes the future, its completion reserved already (`reserveCompletion()`), as
    /// `tryComplete(throwing:ownToken:)` does.
    final func completeReserved(throwing error: any Error, ownToken: CancellationToken?) {
        if let cancelled = error as? OperationCancelledError,
            ownToken == nil || (cancelled.token == ownToken && cancelled.token.canBeCancelled)
        {
            return cancelReserved(token: cancelled.token)
        }
        failReserved([error])
    }

    /// Fails the future, its completion reserved already, as `tryFail(_:forceAsynchronous:)` does.
    private func failReserved(_ errors: [any Error], forceAsynchronous: Bool = false) {
        failure = Failure(errors: errors, token: .none)
        publishCompletion(.failed, forceAsynchronous: forceAsynchronous)
    }

    /// Cancels the future, its completion reserved already, as `tryCancel(token:forceAsynchronous:)`
    /// does.
    final func cancelReserved(token: CancellationToken, forceAsynchronous: Bool = false) {
        failure = Failure(errors: [], token: token)
        publishCompletion(.cancelled, forceAsynchronous: forceAsynchronous)
    }

    /// Makes a completed future pending again, for a pooled state machine box that nobody else
    /// refers to any more: no continuation may be waiting, and no reader may still look at it.
    /// Its slot is left the empty slot of `use`, the box's next use.
    func resetForReuse(use: UInt16) {
        precondition(slot.load(ordering: .acquiring) == SlotWord.completed, "only a completed future is reused")
        // Tested first: a box that succeeded has neither, and assigning `nil` to a field that holds
        // `nil` still calls out to destroy the old value.
        if failure != nil { failure = nil }
        if resumeContext != nil { resumeContext = nil }
        observed.store(false, ordering: .relaxed)
        completionState.store(0, ordering: .relaxed)
        // A releasing store (a plain store on x86, where an exchange is a locked instruction): it
        // publishes the cleared fields to whoever next reads the slot with an acquiring load or
        // registers with a compare-and-exchange. Nobody else writes the slot of a box being reset:
        // a stale registration that passed its token check before the use moved expects the empty
        // slot of its own use, and finds this one's.
        slot.store(SlotWord.emptySlot(of: use), ordering: .releasing)
    }

    // MARK: Continuations

    /// Adds `job` to run when the future completes. Returns `false`, without keeping the job, when
    /// the future has completed already.
    final func addContinuation(_ job: Job) -> Bool {
        var current = slot.load(ordering: .acquiring)
        while true {
            switch current {
            case SlotWord.completed:
                return false
            case SlotWord.empty:
                let word = job.retainedWord()
                let (exchanged, original) = slot.compareExchange(
                    expected: SlotWord.empty, desired: word, ordering: .acquiringAndReleasing)
                if exchanged { return true }
                Job.releaseWord(word)
                current = original
            case SlotWord.list:
                return spill.load()!.append(job)
            default:
                // One continuation is there: move it and this one into the list.
                if spillSingle(current, adding: job, seen: &current) { return true }
            }
        }
    }

    /// Adds `job` as a continuation, or queues it at once if the future has completed. A job is
    /// never run inside the call that registers it.
    @usableFromInline
    final func onCompletion(_ job: Job) {
        if !addContinuation(job) {
            Continuations.dispatch(job, mayRunInline: false)
        }
    }

    /// Takes back a continuation that is no longer wanted (a wait that timed out), so that polling a
    /// future that never completes does not grow its list. The slot never moves back, so a lone
    /// continuation still in the slot stays there until completion, and then does nothing.
    final func removeContinuation(_ item: WorkItem) {
        guard slot.load(ordering: .acquiring) == SlotWord.list else { return }
        spill.load()?.remove(item)
    }

    /// The jobs waiting on a pending future, for the deadlock detector's walk.
    ///
    /// A single continuation is first moved into the list, under the list's lock: reading it
    /// straight from the slot would borrow an object that a concurrent completion may free.
    final var pendingContinuations: [Job] {
        var word = slot.load(ordering: .acquiring)
        while SlotWord.isJob(word) {
            if spillSingle(word, adding: nil, seen: &word) { word = SlotWord.list }
        }
        return word == SlotWord.list ? spill.load()?.snapshot() ?? [] : []
    }

    /// Moves the single continuation `single` from the slot into the list, with `job` after it,
    /// under the list's lock. Returns `false` if the slot no longer held `single`; `seen` then
    /// holds what it held instead.
    private final func spillSingle(_ single: UInt, adding job: Job?, seen: inout UInt) -> Bool {
        let list = spill.load() ?? spill.storeIfNil(ContinuationList())
        return list.appendMoving(job) {
            let (exchanged, original) = slot.compareExchange(
                expected: single, desired: SlotWord.list, ordering: .acquiringAndReleasing)
            if !exchanged { seen = original }
            return exchanged ? Job(takingRetainedWord: single) : nil
        }
    }
}

// The slot and the status are atomics; `failure` and the value are written once, before the slot's
// publishing exchange, and read only after an acquiring load sees it.
extension AnyFuture: @unchecked Sendable {}

/// The values of the continuation slot.
@usableFromInline
enum SlotWord {
    @usableFromInline
    static var empty: UInt { 0 }
    @usableFromInline
    static var completed: UInt { 1 }
    static let list: UInt = 2
    /// The low bit marks a `WorkItem`; clear, the pointer is an `AnyFuture`.
    static let itemTag: UInt = 1
    /// The bit that marks the empty slot of one operation of a pooled source, a pooled state
    /// machine's box or a `ValueFutureSourceCore` (``emptySlot(of:)``): a job's word never has it
    /// (an object's address is 16-byte aligned, and the lowest bit is the item tag), nor do the
    /// words above.
    @usableFromInline
    static var useTag: UInt { 4 }

    /// The empty slot of the operation (a box's use, a source's version) `use` names: a
    /// registration for that operation expects it, so that one whose token went stale cannot land
    /// there.
    @usableFromInline
    static func emptySlot(of use: UInt16) -> UInt { UInt(use) << 3 | useTag }

    @usableFromInline
    static func isJob(_ word: UInt) -> Bool { word > list && word & useTag == 0 }

    /// Puts the job `word` holds (with one retain) in a single-continuation slot whose empty value
    /// names its operation (``emptySlot(of:)``), for the operation `token` names. Returns `false`,
    /// leaving the word and its retain to the caller to queue, when the slot is completed or empty
    /// for another operation (reset or recycled since the caller checked `token`): its read then
    /// gets the result or a stale-token error. Throws, having released the word, when the slot
    /// holds a continuation already.
    ///
    /// Expecting the operation's own empty slot is what keeps a stale registration out of the next
    /// operation; taking it back once it had landed could not tell it from the same job registered
    /// again for that next operation, by its run of this one's completion.
    @usableFromInline @inline(__always)
    static func installSingle(word: UInt, for token: UInt16, in slot: borrowing Atomic<UInt>) throws -> Bool {
        let (exchanged, found) = slot.compareExchange(
            expected: emptySlot(of: token), desired: word, ordering: .acquiringAndReleasing)
        if exchanged { return true }
        guard found == completed || found & useTag != 0 else {
            Job.releaseWord(word)
            throw ValueFutureSourceError.continuationAlreadyRegistered
        }
        return false
    }
}

extension Job {
    /// The job as a slot word holding one retain: a copy of it, moved in.
    @usableFromInline
    func retainedWord() -> UInt {
        (copy self).movedIntoWord()
    }

    /// The job as a slot word holding the retain the job held: moved in, with no retain and
    /// release.
    consuming func movedIntoWord() -> UInt {
        switch consume self {
        case .future(let future):
            UInt(bitPattern: Unmanaged.passRetained(consume future).toOpaque())
        case .item(let item):
            UInt(bitPattern: Unmanaged.passRetained(consume item).toOpaque()) | SlotWord.itemTag
        }
    }

    /// The job a slot word holds, taking over its retain.
    init(takingRetainedWord word: UInt) {
        if word & SlotWord.itemTag != 0 {
            let pointer = UnsafeRawPointer(bitPattern: word & ~SlotWord.itemTag)!
            self = .item(Unmanaged<WorkItem>.fromOpaque(pointer).takeRetainedValue())
        } else {
            self = .future(Unmanaged<AnyFuture>.fromOpaque(UnsafeRawPointer(bitPattern: word)!).takeRetainedValue())
        }
    }

    /// Drops the retain a slot word holds.
    @usableFromInline
    static func releaseWord(_ word: UInt) {
        _ = Job(takingRetainedWord: word)
    }
}

/// The continuations of a future that has more than one, kept under a lock.
final class ContinuationList: Sendable {
    private struct State {
        var jobs: [Job] = []
        var closed = false
    }

    private let state = Locked(State())

    /// Appends `job` unless the future completed; returns whether it was kept.
    func append(_ job: Job) -> Bool {
        state.withLock { state in
            guard !state.closed else { return false }
            state.jobs.append(job)
            return true
        }
    }

    /// Under the lock, runs `takeSingle` (which moves the slot from one continuation to `list`) and,
    /// if it returned the continuation it displaced, appends that and `job`, if any.
    func appendMoving(_ job: Job?, _ takeSingle: () -> Job?) -> Bool {
        state.withLock { state in
            guard let single = takeSingle() else { return false }
            state.jobs.append(single)
            if let job { state.jobs.append(job) }
            return true
        }
    }

    /// Closes the list for good and returns its jobs.
    func close() -> [Job] {
        state.withLock { state in
            state.closed = true
            defer { state.jobs = [] }
            return state.jobs
        }
    }

    /// Removes `item` if it is still waiting.
    func remove(_ item: WorkItem) {
        state.withLock { state in
            guard !state.closed, let index = state.jobs.firstIndex(where: { $0.isItem(item) }) else { return }
            state.jobs.remove(at: index)
        }
    }

    func snapshot() -> [Job] {
        state.withLock { $0.jobs }
    }
}
