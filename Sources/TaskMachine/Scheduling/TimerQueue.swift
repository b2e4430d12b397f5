import CTaskMachine
import Glibc
import Synchronization

/// A timer: when its deadline passes, the timer thread hands it to the pool, which runs `fire`.
///
/// Cancelling it unlinks it from the wheel at once, so a cancelled timer (and whatever it holds)
/// is released then, not at its deadline.
class TimerEntry: WorkItem {
    let deadline: Int64
    /// The queue it is scheduled on: the shared one, but for tests.
    final let queue: TimerQueue
    /// The wheel's bookkeeping; only under the queue's lock.
    final var timerLinks = TimerLinks()
    /// Set once, by whichever of firing and cancelling comes first.
    private let settled = Atomic<Bool>(false)

    init(deadline: Int64, queue: TimerQueue = .shared) {
        self.deadline = deadline
        self.queue = queue
        super.init()
    }

    /// Claims the timer; the first caller wins. Used by both expiry and cancellation.
    final func claim() -> Bool {
        !settled.exchange(true, ordering: .acquiringAndReleasing)
    }

    final var isSettled: Bool { settled.load(ordering: .acquiring) }

    /// Runs on a pool worker when the deadline passes and nothing cancelled the timer first.
    func fire() {}

    override final func run() {
        guard claim() else { return }
        fire()
    }

    /// Cancels the timer if it has not fired, and takes it out of the wheel; returns whether this
    /// call cancelled it. A timer the timer thread has already handed to the pool stays queued
    /// there, and does nothing when it runs.
    @discardableResult
    final func cancel() -> Bool {
        guard claim() else { return false }
        queue.remove(TimerNode(self))
        return true
    }
}

/// The timer queue's state machine: the wheel, and what the timer thread is doing.
///
/// Every event returns what to do once the lock is released: starting or waking the thread,
/// handing a timer to the pool, dropping the wheel's reference.
struct TimerQueueState {
    var wheel = TimingWheel()
    var threadStarted = false
    var stopping = false
    /// The tick the timer thread sleeps towards: `.max` when it sleeps with no timers, 0 while it
    /// is awake and will look at the wheel before sleeping again. Only a timer due earlier needs
    /// to wake it, and the first such timer lowers it, so a burst of timers wakes it once.
    var sleepingUntil: UInt64 = 0

    enum ScheduleAction {
        /// Linked; the thread wakes in time for it already.
        case none
        /// Linked, earlier than the thread's wake-up: unpark it.
        case wake
        /// Linked, the first timer ever: start the thread.
        case startThread
        /// Due already: hand it to the pool now (the wheel's reference goes with it).
        case fireNow
        /// Cancelled before it was linked: drop the wheel's reference.
        case discard
    }

    mutating func schedule(_ node: TimerNode, at tick: UInt64) -> ScheduleAction {
        // Under the lock, so a cancel that claimed it first either is seen here, or takes the lock
        // after this and finds it linked.
        if node.isSettled { return .discard }
        guard wheel.insert(node, at: tick) else { return .fireNow }
        if !threadStarted {
            threadStarted = true
            sleepingUntil = 0
            return .startThread
        }
        guard tick < sleepingUntil else { return .none }
        sleepingUntil = tick
        return .wake
    }

    /// The timer thread's turn: hands what is due by `now` to `expire`, and says until when to
    /// sleep.
    mutating func expire(now: UInt64, _ expire: (TimerNode) -> Void) -> UInt64 {
        wheel.advance(to: now, expire)
        sleepingUntil = wheel.nextDeadline ?? .max
        return sleepingUntil
    }
}

/// The timer thread and its timing wheel.
///
/// Insert and cancel are O(1) under one lock (see `TimingWheel`). The timer thread sleeps on a
/// parker until the next slot is due, then moves the expired timers to the pool, outside the lock;
/// it never runs user code. An insert unparks it only when the new deadline is earlier than the one
/// it sleeps towards.
///
/// Cancel racing fire: a timer's claim (an atomic exchange, or a delay future's completion
/// reservation) decides which wins. Cancel claims, then unlinks under the lock if it is still
/// linked. The timer thread unlinks under the lock and hands the timer to the pool, which claims
/// before firing. So a timer is unlinked exactly once, and fires or is cancelled exactly once.
///
/// Memory: a `TimerEntry` carries its links; a delay is its own timer (`DelayFuture`), one
/// 120-byte allocation in all. The wheel holds one retain on each linked timer.
final class TimerQueue {
    static let shared = TimerQueue(threadName: "timer")

    /// One tick of the wheel: 1 ms.
    static let nanosecondsPerTick: Int64 = 1_000_000

    /// Expired timers per pool job.
    static let timersPerBatch = 64
    /// Expired timers a worker runs one after another; a longer batch first hands its back half
    /// back to the pool, where another worker can take it.
    static let timersRunTogether = 16
    /// Batches handed to the pool under one lock of its queue.
    static let batchesPerHandOver = 4

    private let state = Locked(TimerQueueState())
    private let parker = Parker()
    /// The monotonic time of tick 0.
    private let origin: Int64
    private let threadName: String

    init(threadName: String) {
        self.threadName = threadName
        origin = Clock.now
    }

    /// Schedules `entry` at its deadline; starts the timer thread on first use.
    func schedule(_ entry: TimerEntry) {
        precondition(entry.queue === self, "a timer is scheduled on the queue it was made for")
        insert(TimerNode(entry), deadline: entry.deadline)
    }

    /// Schedules a delay, which is its own timer, to complete at `deadline`.
    func schedule(_ delay: DelayFuture, deadline: Int64) {
        insert(TimerNode(delay), deadline: deadline)
    }

    private func insert(_ node: TimerNode, deadline: Int64) {
        let tick = tick(atOrAfter: deadline)
        // The wheel's reference. Taken before the lock and released, if unused, after it.
        node.retain()
        switch state.withLock({ $0.schedule(node, at: tick) }) {
        case .none:
            break
        case .wake:
            parker.unpark()
        case .startThread:
            let thread = spawnThread(name: threadName, role: .timer) { [self] in run() }
            pthread_detach(thread)
        case .fireNow:
            ThreadPool.shared.enqueue(node.takeJob())
        case .discard:
            node.release()
        }
    }

    /// Unlinks a timer that was just cancelled (claimed), if the timer thread has not taken it.
    func remove(_ node: TimerNode) {
        if state.withLock({ $0.wheel.remove(node) }) {
            node.release()
        }
    }

    /// Timers waiting in the wheel for their deadline: neither handed to the pool nor cancelled.
    var pendingCount: Int { state.withLock { $0.wheel.count } }

    /// Whether the timer thread has been started.
    var threadCount: Int { state.withLock { $0.threadStarted && !$0.stopping ? 1 : 0 } }

    /// Ends the timer thread of a queue made for a test (the shared queue's runs for the life of the
    /// process). Timers still in the wheel stay there, unfired.
    func stop() {
        state.withLock { $0.stopping = true }
        parker.unpark()
    }

    // MARK: Time

    /// The first tick at or after `deadline`, so that a timer never fires early.
    private func tick(atOrAfter deadline: Int64) -> UInt64 {
        guard deadline > origin else { return 0 }
        // No overflow: `origin` is positive, so the difference is at most Int64.max.
        let (ticks, remainder) = UInt64(deadline - origin).quotientAndRemainder(
            dividingBy: UInt64(TimerQueue.nanosecondsPerTick))
        return remainder == 0 ? ticks : ticks + 1
    }

    /// The tick of `now`, rounded down.
    private func tick(ofNow now: Int64) -> UInt64 {
        now <= origin ? 0 : UInt64(now - origin) / UInt64(TimerQueue.nanosecondsPerTick)
    }

    // MARK: The timer thread

    private func run() {
        // Expired timers go to the pool in batches, each one job, while the wheel is still being
        // walked, so workers start on the first ones at once and take a queue slot per batch.
        var batch: ExpiredTimers?
        var ready: [Job] = []
        while true {
            let now = Clock.now
            let sleepUntil = state.withLock { state -> UInt64? in
                guard !state.stopping else { return nil }
                return state.expire(now: tick(ofNow: now)) { node in
                    let current = batch ?? ExpiredTimers()
                    batch = current
                    if current.append(node) {
                        ready.append(.item(current))
                        batch = nil
                        if ready.count == TimerQueue.batchesPerHandOver {
                            ThreadPool.shared.enqueue(contentsOf: ready)
                            ready.removeAll(keepingCapacity: true)
                        }
                    }
                }
            }
            guard let sleepUntil else { return }
            if let last = batch {
                ready.append(.item(last))
                batch = nil
            }
            ThreadPool.shared.enqueue(contentsOf: ready)
            ready.removeAll(keepingCapacity: true)
            if sleepUntil == .max {
                parker.park()
            } else {
                parker.park(timeoutNanoseconds: nanoseconds(untilTick: sleepUntil))
            }
        }
    }

    /// Nanoseconds from now until `tick` starts, 0 if it has, at most an hour: the parker adds the
    /// timeout to the clock, and a far deadline must not overflow there; one spurious wake-up an
    /// hour costs nothing.
    private func nanoseconds(untilTick tick: UInt64) -> Int64 {
        let hour: Int64 = 3_600_000_000_000
        let (offset, overflow) = Int64(clamping: tick).multipliedReportingOverflow(by: TimerQueue.nanosecondsPerTick)
        let (wake, overflow2) = origin.addingReportingOverflow(offset)
        if overflow || overflow2 { return hour }
        return min(hour, max(0, wake - Clock.now))
    }
}

// All mutable state is inside the lock or atomics.
extension TimerQueue: @unchecked Sendable {}

/// Expired timers run as one pool job, in deadline order: a batch costs the pool one queue slot
/// and one hand-over, rather than one per timer. The timers are chained through their own `next`
/// links, which the wheel no longer uses once they have expired, and each holds the wheel's
/// retain. A batch is `count` links from `first`: splitting one writes no link.
final class ExpiredTimers: WorkItem {
    private var first = TimerNode.none
    private var last = TimerNode.none
    private var count = 0

    override init(context: SynchronizationContext? = nil) {
        super.init(context: context)
    }

    private init(first: TimerNode, count: Int) {
        self.first = first
        self.count = count
        super.init()
    }

    /// Chains `node`, still under the timer queue's lock; returns whether the batch is full.
    func append(_ node: TimerNode) -> Bool {
        if last == .none { first = node } else { last.next = node }
        last = node
        count += 1
        return count == TimerQueue.timersPerBatch
    }

    override func run() {
        // Expiring a delay runs its continuations here, and one of them may take long: first hand
        // the back half of a long batch to the pool, again and again, so that the other workers
        // can take it rather than wait behind this one.
        while count > TimerQueue.timersRunTogether {
            let keep = count / 2
            var middle = first
            for _ in 0..<keep { middle = middle.next }
            ThreadPool.shared.enqueueStealable(.item(ExpiredTimers(first: middle, count: count - keep)))
            count = keep
        }
        var node = first
        var left = count
        first = .none
        count = 0
        while left > 0 {
            // Read before the timer runs: it may be freed as soon as its job is done.
            let next = node.next
            node.takeJob().run()
            node = next
            left -= 1
        }
    }

    deinit {
        // A batch dropped before it ran (a pool that never ran it) gives the wheel's retains back.
        var node = first
        for _ in 0..<count {
            let next = node.next
            node.release()
            node = next
        }
    }
}

// Safe to share: immutable apart from the atomic claimed flag, and the links, which only the
// queue's lock guards.
extension TimerEntry: @unchecked Sendable {}

// Safe to share: filled under the timer queue's lock, handed to the pool through its queue's lock,
// then run by one worker.
extension ExpiredTimers: @unchecked Sendable {}
