import Synchronization

/// The queue and pump behind a single-threaded context, and the record of the state machines
/// suspended on it, which the deadlock detector reads.
final class ContextLoop {
    private struct State {
        var queue = JobQueue(capacity: 64)
        var suspended: [ObjectIdentifier: (box: AnyFuture, awaiting: AnyFuture)] = [:]
        var stopping = false
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

    /// Queues `job` and wakes the loop's thread.
    func push(_ job: Job) {
        state.withLock { $0.queue.push(job) }
        wake()
    }

    /// Wakes the loop's thread so it re-checks its queue and its condition.
    func wake() {
        ownerState.withLock { $0?.parker }?.unpark()
    }

    /// Runs queued jobs on the calling thread (the owner) until `isDone` holds with the queue empty,
    /// or until `stop()`.
    func pump(until isDone: () -> Bool) {
        let thread = ThreadState.current
        while true {
            let next = state.withLock { state -> Job? in state.queue.pop() }
            if let next {
                next.run()
                continue
            }
            if isDone() || state.withLock({ $0.stopping }) { return }
            thread.parker.park()
        }
    }

    /// Makes `pump` return once the queue is empty.
    func stop() {
        state.withLock { $0.stopping = true }
        wake()
    }

    var queuedCount: Int { state.withLock { $0.queue.count } }

    func trackSuspended(_ box: AnyFuture, awaiting future: AnyFuture) {
        state.withLock { $0.suspended[ObjectIdentifier(box)] = (box, future) }
    }

    func untrackSuspended(_ box: AnyFuture) {
        _ = state.withLock { $0.suspended.removeValue(forKey: ObjectIdentifier(box)) }
    }

    /// The state machines that will resume on this loop, with what each awaits.
    var suspendedBoxes: [(box: AnyFuture, awaiting: AnyFuture)] {
        state.withLock { Array($0.suspended.values) }
    }
}

// State is under the mutexes.
extension ContextLoop: @unchecked Sendable {}
