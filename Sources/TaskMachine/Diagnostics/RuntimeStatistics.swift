import Synchronization

/// A snapshot of the threads the runtime has and what they are doing.
///
/// Threads start only when first needed: the pool's workers and its monitor on the first queued
/// job, the timer thread on the first timer, a context's thread when the context is created.
public struct RuntimeStatistics: Sendable, Equatable, CustomStringConvertible {
    /// Pool worker threads alive, extra (compensating) workers included.
    public var poolWorkers: Int
    /// Workers neither idle nor blocked: running a job, or looking for one.
    public var busyWorkers: Int
    /// Workers on the idle list: parked, waiting for work, or about to park.
    public var idleWorkers: Int
    /// Workers blocked in `wait()`, in a context's `send` or `shutdown()`, or pumping an
    /// `AsyncContext`.
    public var blockedWorkers: Int
    /// Timer threads alive: 0 before the first timer, then 1.
    public var timerThreads: Int
    /// Timers waiting for their deadline.
    public var pendingTimers: Int
    /// Threads of live `SingleThreadContext`s.
    public var contextThreads: Int
    /// The pool's starvation monitor: 0 before the pool starts, then 1.
    public var monitorThreads: Int
    /// What the pool has done since the process started.
    public var poolActivity: PoolActivity

    /// Counts of the pool's scheduling events since the process started.
    public struct PoolActivity: Sendable, Equatable {
        /// Successful steals: each moved about half of another worker's queue.
        public var steals: UInt64
        /// Times a worker found no work and parked, whether it then slept in the kernel or a wake-up
        /// came during the moment it spins first.
        public var parks: UInt64
        /// Idle workers woken because work arrived, whether asleep yet or still spinning before it.
        public var wakeUps: UInt64
        /// Jobs queued from outside the pool, or overflowing a worker's queue, onto the global queue.
        public var injections: UInt64
        /// Extra workers that retired after a long idle.
        public var retirements: UInt64
        /// Extra workers started, for blocked workers or for starvation.
        public var extraWorkersStarted: UInt64
        /// Of those, workers the monitor added because queued work stood still.
        public var starvationWorkersAdded: UInt64
        /// Jobs the monitor took from the LIFO slot of a worker stuck in a long job (a slot no other
        /// worker takes from), and queued where any worker can run them.
        public var lifoJobsRescued: UInt64
    }

    /// The runtime now.
    public static var current: RuntimeStatistics {
        let pool = ThreadPool.shared.counts
        return RuntimeStatistics(
            poolWorkers: pool.workers,
            busyWorkers: pool.busy,
            idleWorkers: pool.idle,
            blockedWorkers: pool.blocked,
            timerThreads: TimerQueue.shared.threadCount,
            pendingTimers: TimerQueue.shared.pendingCount,
            contextThreads: contextThreads.load(ordering: .relaxed),
            monitorThreads: ThreadPool.shared.monitorThreadCount,
            poolActivity: ThreadPool.shared.activitySnapshot
        )
    }

    /// The pool's target number of workers: one per core.
    public static var targetPoolWorkers: Int { ThreadPool.shared.targetWorkerCount }

    /// All the threads the runtime started and that are alive.
    public var totalThreads: Int { poolWorkers + monitorThreads + timerThreads + contextThreads }

    public var description: String {
        "pool workers \(poolWorkers) (busy \(busyWorkers), idle \(idleWorkers), blocked \(blockedWorkers)), "
            + "pool monitor \(monitorThreads), timer threads \(timerThreads), pending timers \(pendingTimers), "
            + "context threads \(contextThreads)"
    }

    private static let contextThreads = Atomic<Int>(0)

    static func contextThreadStarted() { contextThreads.add(1, ordering: .relaxed) }
    static func contextThreadExited() { contextThreads.subtract(1, ordering: .relaxed) }
}
