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
    /// The tick the timer thread sleeps towards, set at the end of each of its passes over the
    /// wheel: `.max` when there are no timers, 0 before its first pass. Only a timer due earlier
    /// needs to wake it, and the first such timer lowers it, so a burst of timers wakes it once;
    /// a wake-up that comes while the thread is still awake makes its next sleep return at once.
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

    /// The timer thread's turn: hands what is due by `now` to `expire`, an array of timers at a
    /// time, the arrays it emptied to `spent`, and says until when to sleep.
    mutating func expire(now: UInt64, spent: inout [[TimerNode]], _ expire: ([TimerNode]) -> Void) -> UInt64 {
        wheel.advance(to: now, spent: &spent, expire)
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
/// Memory: a `TimerEntry` carries its links; a delay is its own timer (`Delay`), one
/// allocation, plus its place in a slot's array. The wheel holds one retain on each linked timer.
final class TimerQueue {
    static let shared = TimerQueue(threadName: "timer")

    /// One tick of the wheel: 1 ms.
    static let nanosecondsPerTick: Int64 = 1_000_000

    /// Expired timers a worker runs one after another; a longer batch first hands its back half
    /// back to the pool, where another worker can take it.
    static let timersRunTogether = 16

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
    func schedule(_ delay: Delay, deadline: Int64) {
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
        // An emptied slot's large array is freed here, after the lock.
        var spent: [TimerNode] = []
        if state.withLock({ $0.wheel.remove(node, spent: &spent) }) {
            node.release()
        }
    }

    /// The time left until `node`'s tick, while it is in the wheel (for diagnostics).
    func timeUntilDue(_ node: TimerNode) -> Duration? {
        guard let tick = state.withLock({ $0.wheel.contains(node) ? node.tick : nil }) else { return nil }
        guard let due = nanoseconds(atTick: tick) else { return .nanoseconds(Int64.max) }
        return .nanoseconds(max(0, due - Clock.now))
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
        // The wheel hands over each expired slot as an array, without touching its timers; each
        // array becomes one pool job, whose workers split it by index.
        var expired: [[TimerNode]] = []
        var spent: [[TimerNode]] = []
        var jobs: [Job] = []
        while true {
            let now = Clock.now
            let sleepUntil = state.withLock { state -> UInt64? in
                guard !state.stopping else { return nil }
                return state.expire(now: tick(ofNow: now), spent: &spent) { expired.append($0) }
            }
            guard let sleepUntil else { return }
            spent.removeAll(keepingCapacity: true)
            if !expired.isEmpty {
                for nodes in expired { jobs.append(.item(ExpiredTimers(nodes))) }
                expired.removeAll(keepingCapacity: true)
                ThreadPool.shared.enqueue(contentsOf: jobs)
                jobs.removeAll(keepingCapacity: true)
            }
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
        guard let wake = nanoseconds(atTick: tick) else { return hour }
        return min(hour, max(0, wake - Clock.now))
    }

    /// When `tick` starts, in `Clock` nanoseconds; `nil` past what they can count.
    private func nanoseconds(atTick tick: UInt64) -> Int64? {
        let (offset, overflow) = Int64(clamping: tick).multipliedReportingOverflow(by: TimerQueue.nanosecondsPerTick)
        let (start, overflow2) = origin.addingReportingOverflow(offset)
        return overflow || overflow2 ? nil : start
    }
}

// All mutable state is inside the lock or atomics.
extension TimerQueue: @unchecked Sendable {}

/// Expired timers of one tick, run as one pool job: a slot's whole array, from the wheel as it
/// was, each timer holding the wheel's retain. A worker splits a long run by index (no timer is
/// touched to split it), handing the back half to the pool until `timersRunTogether` are left.
final class ExpiredTimers: WorkItem {
    private let nodes: [TimerNode]
    /// The range still to run: `start..<end`.
    private var start: Int
    private var end: Int

    init(_ nodes: [TimerNode]) {
        self.nodes = nodes
        start = 0
        end = nodes.count
        super.init()
    }

    private init(_ nodes: [TimerNode], start: Int, end: Int) {
        self.nodes = nodes
        self.start = start
        self.end = end
        super.init()
    }

    override func run() {
        // Expiring a delay runs its continuations here, and one of them may take long: first hand
        // the back half of a long run to the pool, again and again, so that the other workers can
        // take it rather than wait behind this one.
        while end - start > TimerQueue.timersRunTogether {
            let middle = start + (end - start) / 2
            ThreadPool.shared.enqueueStealable(.item(ExpiredTimers(nodes, start: middle, end: end)))
            end = middle
        }
        let first = start
        let last = end
        start = end
        // Firing first, freeing later: each timer and the continuation it ran are released when
        // the worker runs out of work, not between one fire and the next (see
        // `ThreadPool.releasingWhenIdle`). Releasing them here cost two thirds of each fire (two
        // or three objects freed into another thread's arena), and every timer due with the last
        // one waited for it.
        ThreadPool.shared.releasingWhenIdle { retired in
            for index in first..<last { nodes[index].fire(retiringInto: &retired) }
        }
    }

    deinit {
        // A job dropped before it ran (a pool that never ran it) gives the wheel's retains back.
        for index in start..<end { nodes[index].release() }
    }
}

// Safe to share: immutable apart from the atomic claimed flag, and the links, which only the
// queue's lock guards.
extension TimerEntry: @unchecked Sendable {}

// Safe to share: made by the timer thread, handed to the pool through its queue's lock, then run
// by one worker; the array it shares with the jobs split from it is never written.
extension ExpiredTimers: @unchecked Sendable {}
