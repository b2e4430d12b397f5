import CTaskMachine
import Glibc
import Synchronization

/// The thread pool: worker threads, started on first use, that run queued jobs and sleep when idle.
///
/// This first pool shares one FIFO queue under a lock. A worker that blocks in `wait()` tells the
/// pool, which starts an extra worker when no other is idle, so blocking cannot starve the queue;
/// extra workers retire after a few idle seconds.
final class ThreadPool {
    /// The process-wide pool.
    static let shared = ThreadPool(workerCount: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))

    /// One worker thread.
    final class Worker {
        let index: Int
        /// Extra workers, started to compensate for blocked ones, retire when idle.
        let isExtra: Bool
        unowned(unsafe) let pool: ThreadPool
        var state: ThreadState!

        init(index: Int, isExtra: Bool, pool: ThreadPool) {
            self.index = index
            self.isExtra = isExtra
            self.pool = pool
        }
    }

    private struct State {
        var queue = JobQueue()
        var started = false
        var workers = 0
        var idle: [Worker] = []
        var busy = 0
        var blocked = 0
        var nextIndex = 1
        var enqueued: UInt64 = 0
    }

    let targetWorkerCount: Int
    private let state = Locked(State())
    /// How long an extra worker stays idle before it retires (5 s for the shared pool).
    let extraWorkerIdleNanoseconds: Int64

    init(workerCount: Int, extraWorkerIdleNanoseconds: Int64 = 5_000_000_000) {
        targetWorkerCount = max(1, workerCount)
        self.extraWorkerIdleNanoseconds = extraWorkerIdleNanoseconds
    }

    /// Queues `job` to run on a worker.
    func enqueue(_ job: Job) {
        let (toWake, toStart) = state.withLock { state -> (Worker?, Int) in
            state.queue.push(job)
            state.enqueued &+= 1
            if !state.started {
                state.started = true
                state.workers = targetWorkerCount
                return (nil, targetWorkerCount)
            }
            // Each idle worker is taken off the list as it is woken: one wake-up per sleeper.
            if let idle = state.idle.popLast() { return (idle, 0) }
            // No one idle and fewer running workers than the target, because some are blocked in
            // wait(): start one, or the queue could wait for a job that only it would run.
            if state.workers - state.blocked < targetWorkerCount {
                state.workers += 1
                return (nil, 1)
            }
            return (nil, 0)
        }
        if let toWake { toWake.state.parker.unpark() }
        for _ in 0..<toStart { startWorker(isExtra: state.withLock { $0.workers } > targetWorkerCount) }
    }

    private func startWorker(isExtra: Bool) {
        let index = state.withLock { state -> Int in
            defer { state.nextIndex += 1 }
            return state.nextIndex
        }
        let worker = Worker(index: index, isExtra: isExtra, pool: self)
        let thread = spawnThread(name: "pool-\(index)", role: .poolWorker) { [worker] in
            worker.state = ThreadState.current
            worker.state.worker = worker
            worker.pool.runWorker(worker)
        }
        pthread_detach(thread)
    }

    private func runWorker(_ worker: Worker) {
        let threadState = worker.state!
        while true {
            let next = state.withLock { state -> Job? in
                if let job = state.queue.pop() {
                    state.busy += 1
                    return job
                }
                state.idle.append(worker)
                return nil
            }
            if let next {
                next.run()
                state.withLock { $0.busy -= 1 }
                continue
            }
            let woken = threadState.parker.park(timeoutNanoseconds: worker.isExtra ? extraWorkerIdleNanoseconds : -1)
            if !woken && worker.isExtra {
                let retire = state.withLock { state -> Bool in
                    // Retire only while enough workers remain that are not blocked in wait().
                    guard state.workers - state.blocked > targetWorkerCount,
                        let position = state.idle.firstIndex(where: { $0 === worker })
                    else { return false }
                    state.idle.remove(at: position)
                    state.workers -= 1
                    return true
                }
                if retire { return }
            }
            // Woken, or a spurious return: take this worker off the idle list if it is still there.
            state.withLock { state in
                if let position = state.idle.firstIndex(where: { $0 === worker }) {
                    state.idle.remove(at: position)
                }
            }
        }
    }

    /// Called by a worker about to block: starts an extra worker if no other could take queued work.
    func workerWillBlock() {
        let startExtra = state.withLock { state -> Bool in
            state.blocked += 1
            guard state.idle.isEmpty else { return false }
            state.workers += 1
            return true
        }
        if startExtra { startWorker(isExtra: true) }
    }

    /// Called by a worker when its blocking call returns.
    func workerDidUnblock() {
        state.withLock { $0.blocked -= 1 }
    }

    /// A snapshot of the pool's threads.
    var counts: (workers: Int, busy: Int, idle: Int, blocked: Int) {
        state.withLock { ($0.workers, $0.busy, $0.idle.count, $0.blocked) }
    }
}

// All mutable state is inside the mutex; workers are handed to their own threads once.
extension ThreadPool: @unchecked Sendable {}
extension ThreadPool.Worker: @unchecked Sendable {}
