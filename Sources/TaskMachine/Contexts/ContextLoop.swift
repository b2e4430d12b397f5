import Synchronization

/// The queue and pump behind a single-threaded context, and the record of the state machines
/// suspended on it, which the deadlock detector reads.
final class ContextLoop {
    private struct State {
        var queue = JobQueue(capacity: 64)
        var suspended: [ObjectIdentifier: (box: AnyFuture, awaiting: SuspendedOn)] = [:]
        var stopping = false
        /// The pump returned for good after `stop()`: nothing queued from now on would run.
        var exited = false
    }

    private let state = Locked(State())
    /// The pumping thread: its identity and its parker. Set before the first job is queued.
    private let ownerState = Locked<(thread: ObjectIdentifier, parker: Parker)?>(nil)

    init() {}

    /// Whether a thread pumps this loop.
    var hasOwner: Bool { ownerState.withLock { $0 != nil } }

    /// Whether the calling thread pumps this loop.
    var isOwnedByCurrentThread: Bool {
        guard let current = ThreadState.currentIfPresent else { return false }
        return ownerState.withLock { $0?.thread == ObjectIdentifier(current) }
    }

    func setOwner(_ owner: ThreadState?) {
        let entry = owner.map { (ObjectIdentifier($0), $0.parker) }
        ownerState.withLock { $0 = entry }
    }

    /// Queues `job` and wakes the loop's thread. Returns `false`, queuing nothing, once the loop
    /// has stopped for good.
    @discardableResult
    func push(_ job: Job) -> Bool {
        let queued = state.withLock { state -> Bool in
            guard !state.exited else { return false }
            state.queue.push(job)
            return true
        }
        if queued { wake() }
        return queued
    }

    /// Whether the loop has stopped for good.
    var hasExited: Bool { state.withLock { $0.exited } }

    /// Wakes the loop's thread so it re-checks its queue and its condition.
    func wake() {
        ownerState.withLock { $0?.parker }?.unpark()
    }

    /// Runs queued jobs on the calling thread (the owner) until `isDone` holds with the queue empty,
    /// or until `stop()`. `beforeParking` runs each time the queue is empty and `isDone` does not
    /// hold yet, and again every `parkingAtMost` nanoseconds (negative: only when woken) while
    /// nothing wakes the thread; what it throws ends the pump.
    ///
    /// A job that leaves `SynchronizationContext.current` changed does not pass the change on: the
    /// context the pump started with is put back before the next job.
    func pump(until isDone: () -> Bool, parkingAtMost: Int64 = -1, beforeParking: () throws -> Void) rethrows {
        let thread = ThreadState.current
        let installed = thread.synchronizationContext
        while true {
            let (next, stopped) = state.withLock { state -> (Job?, Bool) in
                if let job = state.queue.pop() { return (job, false) }
                // Empty and stopping: exit, and refuse later pushes in the same critical section,
                // so no job slips in between the last look and the exit.
                if state.stopping { state.exited = true }
                return (nil, state.stopping)
            }
            if let next {
                next.run()
                if thread.synchronizationContext !== installed { thread.synchronizationContext = installed }
                continue
            }
            if stopped || isDone() { return }
            // A pump nested inside an inline continuation must not sit on deferred ones.
            Continuations.releaseDeferred(thread)
            try beforeParking()
            thread.parker.park(timeoutNanoseconds: parkingAtMost)
        }
    }

    /// Runs `work` on the loop's thread, that of `context`, and returns once it has run: inline on
    /// that thread itself, and once the loop has stopped for good. A pool worker that waits here
    /// counts as blocked.
    ///
    /// - Throws: ``DeadlockError``, running nothing, when the calling thread owns a context and the
    ///   loop's thread is blocked sending back to it, directly or through other contexts' sends.
    func send(_ work: @Sendable () -> Void, to context: SynchronizationContext) throws {
        if isOwnedByCurrentThread || hasExited {
            work()
            return
        }
        let thread = ThreadState.current
        // A thread that owns contexts stalls them while it blocks here, and one in the work of a
        // future holds that up: recorded for the deadlock detector until the work has run, unless
        // the context's thread is blocked sending back, which would never let it run.
        let owned = DeadlockDetector.ownedContexts(from: thread.ownedContext)
        let heldUp = thread.futuresOnStack
        var sender: ObjectIdentifier?
        if !owned.isEmpty || !heldUp.isEmpty {
            let entry = BlockedSenders.Entry(contexts: owned, heldUp: heldUp, target: context, threadName: thread.name)
            if let deadlock = BlockedSenders.register(
                ObjectIdentifier(thread), entry,
                unless: { DeadlockDetector.detect(sendingTo: context, on: thread, senders: $0) })
            {
                throw deadlock
            }
            sender = ObjectIdentifier(thread)
        }
        withoutActuallyEscaping(work) { work in
            let job = SendJob(work, registeredAs: sender)
            // Stopped between the check above and now: run it here rather than wait for ever, as
            // a send that blocks nothing.
            guard push(.item(job)) else {
                if let sender { BlockedSenders.unregister(sender) }
                return work()
            }
            job.waitUntilRun()
        }
    }

    /// Stops the loop for good at once, for a pump that has returned: later pushes are refused,
    /// and what was queued meanwhile is handed back.
    func close() -> [Job] {
        state.withLock { state in
            state.exited = true
            var jobs: [Job] = []
            while let job = state.queue.pop() { jobs.append(job) }
            return jobs
        }
    }

    /// Makes `pump` return once the queue is empty.
    func stop() {
        state.withLock { $0.stopping = true }
        wake()
    }

    func trackSuspended(_ box: AnyFuture, awaiting future: SuspendedOn) {
        state.withLock { $0.suspended[ObjectIdentifier(box)] = (box, future) }
    }

    func untrackSuspended(_ box: AnyFuture) {
        _ = state.withLock { $0.suspended.removeValue(forKey: ObjectIdentifier(box)) }
    }

    /// The state machines that will resume on this loop, and the futures of bodies a context's
    /// `run` queued on it, with what each awaits.
    var suspendedBoxes: [(box: AnyFuture, awaiting: SuspendedOn)] {
        state.withLock { Array($0.suspended.values) }
    }
}

// State is under the mutexes.
extension ContextLoop: @unchecked Sendable {}

/// The job behind `send`: runs a borrowed closure, drops it, then wakes the sender, so the closure
/// never outlives the `send` call that lent it.
private final class SendJob: WorkItem {
    // Cleared by `run` before the sender is woken; read and written only by the one job run.
    private var work: (@Sendable () -> Void)?
    private let finished = Atomic<Bool>(false)
    private let sender = ThreadState.current.parker
    /// The sender's key in `BlockedSenders`, if it registered.
    private let registeredSender: ObjectIdentifier?

    init(_ work: @escaping @Sendable () -> Void, registeredAs registeredSender: ObjectIdentifier?) {
        self.work = work
        self.registeredSender = registeredSender
        super.init()
    }

    override func run() {
        work?()
        work = nil
        // The sender is no longer held up by this thread from here on, though it has yet to wake:
        // the detector must not take it for blocked, in a job this thread runs next.
        if let registeredSender { BlockedSenders.unregister(registeredSender) }
        finished.store(true, ordering: .releasing)
        sender.unpark()
    }

    func waitUntilRun() {
        let thread = ThreadState.current
        Continuations.releaseDeferred(thread)
        thread.blocking {
            while !finished.load(ordering: .acquiring) { sender.park() }
        }
    }
}

// Safe to share: `work` is touched by the one run, before the releasing store the sender waits for.
extension SendJob: @unchecked Sendable {}

/// What a suspended state machine awaits, for the chain a `DeadlockError` names.
enum SuspendedOn {
    case future(AnyFuture)
    /// Something that is not a future: a value-future source, a yield, a context's `run` body.
    case other(StaticString)

    var name: String {
        switch self {
        case .future(let future): future.diagnosticName
        case .other(let name): "\(name)"
        }
    }
}
