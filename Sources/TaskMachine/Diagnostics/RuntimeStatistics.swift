import Synchronization

/// A snapshot of the threads the runtime has and what they are doing.
///
/// Threads start only when first needed: the pool's workers on the first queued job, the timer
/// thread on the first timer, a context's thread when the context is created.
public struct RuntimeStatistics: Sendable, Equatable, CustomStringConvertible {
    /// Pool worker threads alive, extra (compensating) workers included.
    public var poolWorkers: Int
    /// Workers running a job.
    public var busyWorkers: Int
    /// Workers parked, waiting for work.
    public var idleWorkers: Int
    /// Workers blocked in `wait()`.
    public var blockedWorkers: Int
    /// Timer threads alive: 0 before the first timer, then 1.
    public var timerThreads: Int
    /// Timers waiting for their deadline.
    public var pendingTimers: Int
    /// Threads of live `SingleThreadContext`s.
    public var contextThreads: Int

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
            contextThreads: contextThreads.load(ordering: .relaxed)
        )
    }

    /// The pool's target number of workers: one per core.
    public static var targetPoolWorkers: Int { ThreadPool.shared.targetWorkerCount }

    /// All the threads the runtime started and that are alive.
    public var totalThreads: Int { poolWorkers + timerThreads + contextThreads }

    public var description: String {
        "pool workers \(poolWorkers) (busy \(busyWorkers), idle \(idleWorkers), blocked \(blockedWorkers)), "
            + "timer threads \(timerThreads), pending timers \(pendingTimers), context threads \(contextThreads)"
    }

    private static let contextThreads = Atomic<Int>(0)

    static func contextThreadStarted() { contextThreads.add(1, ordering: .relaxed) }
    static func contextThreadExited() { contextThreads.subtract(1, ordering: .relaxed) }
}
