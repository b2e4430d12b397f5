import CTaskMachine
import Glibc
import Synchronization

/// The thread pool: a work-stealing scheduler whose workers start on first use.
///
/// Each worker owns a ``LocalQueue``, a deque it pushes and pops at the top while others steal the
/// older half from the bottom, and a LIFO slot. A job queued by a worker (a continuation, a
/// `Future.run` from pool code) goes into that worker's LIFO slot, pushing the slot's previous job
/// onto its queue: the newest job runs next, while its data is warm in the cache. Jobs from other
/// threads go to a global FIFO queue. An idle worker looks, in order, at its LIFO slot, the top of
/// its queue, the global queue, and then steals half the queue of a randomly chosen other worker.
///
/// Fairness: while other work is queued, the LIFO slot runs at most `maxLifoStreak` times in a
/// row, after which its job goes to the global queue, behind that work, as a yielded job does; and
/// every `globalQueueInterval` jobs a worker takes an oldest waiting job, by turns the global
/// queue's first and the bottom of its own queue first. Only a few rare jobs are put under a bottom
/// (`pushLocalOldest`), so every job in a worker's queue comes down to the bottom in turn, and
/// waits at most about twice `globalQueueInterval` jobs for each job below it; the global queue
/// likewise.
///
/// Sleeping: a worker that runs out of work searches for a few microseconds, watching the queues,
/// unless another worker is searching already, and then parks on its futex. Work queued on the
/// global queue (from outside the pool, or overflowing a worker's queue) wakes one parked worker,
/// and only when no worker is searching: at most one wake-up is outstanding, and a searcher, woken
/// or not, wakes the next worker if more is waiting once it finds work, or once it gives up. Work
/// moved between queues (a batch from the global queue, the jobs a thief keeps) wakes one too, as
/// it was in no queue on its way; a job a worker queues for itself wakes one only when it puts
/// work where others can steal it (the LIFO slot's previous job onto the worker's queue).
///
/// Blocking: a worker about to block in `wait()` hands its LIFO job over and, when fewer than the
/// target number of workers would be left unblocked, starts an extra worker at once. A monitor
/// thread looks four times every `starvationPeriodNanoseconds`: it takes the LIFO job of a worker
/// that has started no job for a period (stuck in a long job, or polling for that very job) and
/// queues it where any worker can run it, and it adds a worker when queued work has stood still
/// for a period, no worker starting a job meanwhile. Extra workers retire after
/// `extraWorkerIdleNanoseconds` idle.
///
/// A pool lives as long as the process: its workers and its monitor never exit, but for extra
/// workers that retire. The shared pool is the only one made outside tests.
final class ThreadPool {
    /// The process-wide pool: one worker per core.
    static let shared = ThreadPool(workerCount: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))

    /// Times in a row the LIFO slot may run before the queue gets a turn (tokio's choice: enough
    /// for a ping-pong of continuations, too few to starve the queue).
    static let maxLifoStreak = 3
    /// A worker takes an oldest waiting job, from the global queue or from the bottom of its own,
    /// once in this many jobs (tokio's 61 for its global queue: a prime, so it does not fall into
    /// step with patterns in the workload).
    static let globalQueueInterval: UInt32 = 61
    /// How long queued work may stand still before the monitor adds a worker.
    static let starvationPeriodNanoseconds: Int64 = 500_000_000
    /// At most this many extra workers beyond the target, whatever blocks.
    static let maxExtraWorkers = 256
    /// A worker that never runs out of work releases what it put off for release when idle (see
    /// `releasingWhenIdle`) once the oldest has waited this long: the memory held is what its
    /// timers free in this time, and a burst of 100,000 timers due together fires in less.
    static let maxRetiredNanoseconds: Int64 = 20_000_000
    /// And at the latest when it holds this many references: 131,072 expired delays with their
    /// continuations, about 32 MiB, which the same timers held while they were pending.
    static let maxRetired = 262_144
    /// References an idle worker releases before it looks for work again: a few tens of
    /// microseconds, so that work queued meanwhile does not wait for a long release.
    static let retiredReleasedAtOnce = 256

    /// One worker thread and its queues.
    final class Worker {
        let index: Int
        /// Extra workers, started to compensate for blocked or starved ones, retire when idle.
        let isExtra: Bool
        unowned(unsafe) let pool: ThreadPool
        let queue = LocalQueue()
        /// The newest job, run next: a retained job word (`Job.movedIntoWord()`), 0 when empty. Its
        /// owner puts and takes it; the monitor takes it from a worker stuck in a long job. Every
        /// change is a read-modify-write (an exchange), which also publishes a job put there.
        let lifoSlot = Atomic<UInt>(0)
        /// Monitor only: `started` at its last look.
        @exclusivity(unchecked) var startedAtLastLook: UInt64 = 0
        /// Monitor only: when it last saw `started` change, or the worker was made.
        @exclusivity(unchecked) var startedChangedAt = Clock.now
        /// Owner only: woken to look for work, and not found any yet.
        var isSearching = false
        /// Set by the waker, under the pool's lock, when it takes this worker off the idle list.
        let notified = Atomic<Bool>(false)
        /// Jobs started, counted as each begins; written by the owner, read by the monitor.
        let started = Atomic<UInt64>(0)
        /// Owner only: xorshift state for choosing victims.
        var random: UInt64
        /// Owner only: room for the jobs taken from the global queue on their way to `queue`, as
        /// retained job words (`Job.movedIntoWord()`), `batchCapacity` of them; empty between
        /// batches, so that taking one allocates nothing.
        let batch = UnsafeMutablePointer<UInt>.allocate(capacity: Worker.batchCapacity)
        /// The most jobs a batch from the global queue holds: a quarter of a ring.
        static let batchCapacity = Int(LocalQueue.capacity) / 4
        /// Owner only: references whose release waits until the worker runs out of work.
        @exclusivity(unchecked) var retired: [Job] = []
        /// Owner only: when the oldest of `retired` was put there.
        var retiredSince: Int64 = 0
        /// Owner only: its copy of the pool's workers, to choose victims from without the pool's
        /// lock, and the `workersVersion` it was copied at.
        @exclusivity(unchecked) var victims: [Worker] = []
        var victimsVersion: UInt64 = .max
        var state: ThreadState!

        init(index: Int, isExtra: Bool, pool: ThreadPool) {
            self.index = index
            self.isExtra = isExtra
            self.pool = pool
            random = 0x9E37_79B9_7F4A_7C15 &* UInt64(index + 1)
        }

        deinit {
            _ = takeLifoJob()
            batch.deallocate()
        }

        /// Whether the LIFO slot holds a job.
        var hasLifoJob: Bool { lifoSlot.load(ordering: .relaxed) != 0 }

        /// Takes the LIFO slot's job, if any.
        @inline(__always)
        func takeLifoJob() -> Job? {
            guard hasLifoJob else { return nil }
            let word = lifoSlot.exchange(0, ordering: .acquiring)
            return word == 0 ? nil : Job(takingRetainedWord: word)
        }

        /// Puts the job `word` holds (`Job.movedIntoWord()`) in the LIFO slot; returns the job it held.
        @inline(__always)
        func putLifoJob(word: UInt) -> Job? {
            let previous = lifoSlot.exchange(word, ordering: .acquiringAndReleasing)
            return previous == 0 ? nil : Job(takingRetainedWord: previous)
        }

        /// The next pseudo-random number (xorshift64).
        func nextRandom() -> UInt64 {
            random ^= random << 13
            random ^= random >> 7
            random ^= random << 17
            return random
        }
    }

    private struct Control {
        var started = false
        var workers: [Worker] = []
        var idle: [Worker] = []
        var blocked = 0
        var nextIndex = 1
    }

    let targetWorkerCount: Int
    /// How long an extra worker stays idle before it retires (5 s for the shared pool).
    let extraWorkerIdleNanoseconds: Int64
    private let control = Locked(Control())
    private let started = Atomic<Bool>(false)
    private let global = Locked(JobQueue())
    /// The global queue's length, written under its lock, read without it.
    private let globalCount = Atomic<Int>(0)
    private let idleCount = Atomic<Int>(0)
    /// Bumped, under the control lock, whenever a worker joins or leaves `Control.workers`.
    private let workersVersion = Atomic<UInt64>(0)
    private let searchingCount = Atomic<Int>(0)
    private let monitorParker = Parker()
    let activity = Activity()
    private let hooks: Hooks

    /// Calls a pool makes at points that tests need to stop it at; each `nil` outside tests.
    struct Hooks: Sendable {
        /// Called by a worker that has taken a batch from the global queue, before the batch
        /// reaches its own queue.
        var onBatchInTransit: (@Sendable () -> Void)?
        /// Called by a searching worker that found no work, while it still counts as searching.
        var onSearchFailed: (@Sendable () -> Void)?
        /// Called by a worker that has stolen jobs it keeps, before they reach its own queue.
        var onStealInTransit: (@Sendable () -> Void)?
        /// Called by a worker out of work that has become the searcher, before its search.
        var onSearchStarted: (@Sendable () -> Void)?
        /// Called by a worker about to block that is to get an extra worker, before the extra's
        /// thread starts.
        var onExtraWorkerDecided: (@Sendable () -> Void)?
        /// Called by the monitor as each look begins, before it reads anything.
        var onMonitorLook: (@Sendable () -> Void)?
    }

    init(workerCount: Int, extraWorkerIdleNanoseconds: Int64 = 5_000_000_000, hooks: Hooks = Hooks()) {
        targetWorkerCount = max(1, workerCount)
        self.extraWorkerIdleNanoseconds = extraWorkerIdleNanoseconds
        self.hooks = hooks
    }

    // MARK: Queuing

    /// The calling thread's worker, if it is one of this pool's and not blocked: a worker in a
    /// blocking call (`ThreadState.blocking`) does not come back to its LIFO slot or queue until the
    /// call returns, so what it queues goes to the global queue, as from any other thread.
    @inline(__always)
    private var currentWorker: Unmanaged<Worker>? {
        // Unretained, with no closure (the optimizer did not inline one here): the state outlives
        // any call on its thread, and the worker's thread holds the worker for as long. A strong
        // reference cost every job queued on a worker a retain and a release.
        guard let raw = tm_thread_state_get() else { return nil }
        unowned(unsafe) let state = Unmanaged<ThreadState>.fromOpaque(raw).takeUnretainedValue()
        guard !state.isBlocked, let worker = state.unretainedWorker,
            worker._withUnsafeGuaranteedRef({ $0.pool === self })
        else { return nil }
        return worker
    }

    /// Whether no job waits in `worker`'s queue or in the global queue (its owner asks).
    @inline(__always)
    private func nothingQueued(for worker: Worker) -> Bool {
        worker.queue.count == 0 && globalCount.load(ordering: .relaxed) == 0
    }

    /// Queues `job`: into the calling worker's LIFO slot, or, from any other thread, the global queue.
    func enqueue(_ job: consuming Job) {
        guard let current = currentWorker else { return inject(job) }
        // As a word, which the closure takes with no copy of the job.
        let word = job.movedIntoWord()
        current._withUnsafeGuaranteedRef { worker in
            if let previous = worker.putLifoJob(word: word) {
                pushLocal(consume previous, on: worker)
                // The worker's queue has stealable work now.
                notify()
            }
        }
    }

    /// Queues `job` where any worker can take it: a worker's own queue (not its LIFO slot, which
    /// others cannot steal from) when called on a worker of this pool, else the global queue.
    func enqueueStealable(_ job: consuming Job) {
        guard let current = currentWorker else { return inject(job) }
        let word = job.movedIntoWord()
        // At the bottom of the queue, where the next steal takes it first.
        current._withUnsafeGuaranteedRef { pushLocalOldest(Job(takingRetainedWord: word), on: $0) }
        notify()
    }

    /// Queues `job` behind the work already waiting, as `Future.yield()` asks: from a worker of this
    /// pool, on the global queue, which the worker reaches once its own queue is empty or at its
    /// next look at the global queue (every `globalQueueInterval` jobs); from any other thread, as
    /// `enqueue`. It wakes another worker only when the caller has work of its own to do first (a
    /// LIFO job, or a queue): otherwise the caller is about to look for work itself. A worker with
    /// nothing queued, here or in the global queue, keeps the job in its LIFO slot: there is nothing
    /// for it to wait behind, and a yield in a loop then takes no lock.
    func enqueueBehind(_ job: consuming Job) {
        guard let current = currentWorker else { return inject(job) }
        let word = job.movedIntoWord()
        current._withUnsafeGuaranteedRef { worker in
            if !worker.hasLifoJob, nothingQueued(for: worker) {
                _ = worker.putLifoJob(word: word)
            } else {
                inject(
                    Job(takingRetainedWord: word), wakingAWorker: worker.hasLifoJob || worker.queue.count > 0,
                    countsAsInjection: false)
            }
        }
    }

    /// Queues many jobs from outside the pool, as the timer thread does with the wheel's slots that
    /// expired in one pass (a job per slot): one lock per batch, and one wake-up.
    func enqueue(contentsOf jobs: [Job]) {
        guard !jobs.isEmpty else { return }
        inject(jobs)
    }

    /// Runs `body`, which fires work and collects the references it is done with in `retired`;
    /// on a worker of this pool they are released when the worker runs out of work, elsewhere
    /// when `body` returns.
    ///
    /// For bursts such as many timers due on the same tick: freeing an object the timer thread's
    /// caller allocated costs more than firing it (a free into another thread's malloc arena),
    /// and a worker that frees as it goes makes every later timer wait for the earlier ones'
    /// frees. Releasing later does the same work once the burst is over (or, on a worker that
    /// stays busy, after `maxRetiredNanoseconds`). A release may run a `deinit` of the user's,
    /// which then runs on that worker a little later than it would have.
    func releasingWhenIdle(_ body: (inout [Job]) -> Void) {
        guard let current = currentWorker else {
            var retired: [Job] = []
            body(&retired)
            return
        }
        let worker = current.takeUnretainedValue()
        if worker.retired.isEmpty { worker.retiredSince = Clock.now }
        // Moved out and back rather than passed `inout`: `body` runs continuations, and no access
        // to the list may stay open across them.
        var retired = worker.retired
        worker.retired = []
        body(&retired)
        if retired.count > Self.maxRetired || Clock.now - worker.retiredSince > Self.maxRetiredNanoseconds {
            retired = []
        }
        worker.retired = retired
    }

    /// Pushes onto the top of `worker`'s queue (its owner calls), sending overflow to the global
    /// queue.
    private func pushLocal(_ job: consuming Job, on worker: Worker) {
        if let overflow = worker.queue.push(consume job) { inject(overflow) }
    }

    /// Pushes under the bottom of `worker`'s queue (its owner calls), behind every job waiting
    /// there and first in line for a thief; to the global queue when the queue is full.
    private func pushLocalOldest(_ job: consuming Job, on worker: Worker) {
        if let overflow = worker.queue.pushOldest(consume job) { inject(overflow) }
    }

    /// Queues jobs on the global queue and wakes a worker. `countsAsInjection`: the jobs come from
    /// outside the pool or overflow a worker's queue, what the `injections` statistic counts,
    /// rather than being a worker's own work passed on (a yield, a LIFO job whose streak is over,
    /// a retiring worker's queue).
    private func inject(_ jobs: some Collection<Job>, countsAsInjection: Bool = true) {
        if !started.load(ordering: .acquiring) { startIfNeeded() }
        global.withLock { queue in
            for job in jobs { queue.push(job) }
            publishCount(of: queue, injected: countsAsInjection ? jobs.count : 0)
        }
        notify()
    }

    /// Queues one job on the global queue and, unless told not to, wakes a worker. The job moves
    /// into the queue: the path of every `Future.run` from outside the pool, where a copy cost a
    /// retain and a release.
    private func inject(_ job: consuming Job, wakingAWorker: Bool = true, countsAsInjection: Bool = true) {
        if !started.load(ordering: .acquiring) { startIfNeeded() }
        var job = Optional(job)
        global.withLock { queue in
            queue.push(job.take().unsafelyUnwrapped)
            publishCount(of: queue, injected: countsAsInjection ? 1 : 0)
        }
        if wakingAWorker { notify() }
    }

    /// Publishes the global queue's new length and counts `injected` injections; called under its
    /// lock.
    @inline(__always)
    private func publishCount(of queue: JobQueue, injected: Int) {
        // Writers hold the lock, so plain stores keep the counts exact.
        globalCount.store(queue.count, ordering: .releasing)
        if injected > 0 {
            activity.injections.store(
                activity.injections.load(ordering: .relaxed) &+ UInt64(injected), ordering: .relaxed)
        }
    }

    /// Takes one job from the global queue and, for `worker`, a fair share more into its own
    /// queue (at most a quarter of a ring), so that a burst from outside costs one lock per batch
    /// rather than one per job.
    private func popGlobal(into worker: Worker) -> Job? {
        guard globalCount.load(ordering: .acquiring) > 0 else { return nil }
        let room = Int(LocalQueue.capacity) / 2 - worker.queue.count
        let batch = worker.batch
        var taken = 0
        let first = global.withLock { queue -> Job? in
            guard let first = queue.pop() else { return nil }
            taken = min(queue.count / targetWorkerCount, Worker.batchCapacity, max(0, room))
            for index in 0..<taken { batch[index] = queue.pop().unsafelyUnwrapped.movedIntoWord() }
            globalCount.store(queue.count, ordering: .relaxed)
            return first
        }
        guard taken > 0 else { return first }
        // Into this worker's queue once the lock is released, the first taken on top. Each job's
        // memory, written on the core that queued it, is asked for ahead of running it, in one
        // pass over the batch: without that, `Future.run` from outside the pool took 189 ns per
        // item instead of 172 (harness medians of 11). Pushed under the lock, the jobs made steals
        // four times as frequent.
        hooks.onBatchInTransit?()
        for index in 0..<taken {
            // The object's first two cache lines: its header and the fields a run touches first.
            let object = UnsafeRawPointer(bitPattern: batch[index] & ~SlotWord.itemTag).unsafelyUnwrapped
            tm_prefetch_for_writing(object)
            tm_prefetch_for_writing(object + 64)
        }
        if !worker.queue.push(takingRetainedWords: batch, count: taken) {
            for index in (0..<taken).reversed() { pushLocal(Job(takingRetainedWord: batch[index]), on: worker) }
        }
        // In transit, the batch was in no queue: a worker that looked for work then found none
        // and may have parked. A searcher wakes the next one once it runs its job (`runWorker`);
        // any other worker wakes one now, or the batch would wait for this one's current job.
        if !worker.isSearching { notify() }
        return first
    }

    /// Wakes one parked worker if none is searching already.
    private func notify() {
        // Pairs with the fence a worker makes between joining the idle list and its last look
        // for work: either it sees this work, or this sees it idle.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        guard idleCount.load(ordering: .relaxed) > 0, searchingCount.load(ordering: .relaxed) == 0 else { return }
        // The parker is read under the lock, while the worker is still on the idle list: a worker
        // leaves the list under this lock before it retires and clears its `state`, and one taken
        // off the list here does not retire before it is on the list again.
        let woken = control.withLock { control -> Parker? in
            guard searchingCount.load(ordering: .relaxed) == 0, let worker = control.idle.popLast() else { return nil }
            idleCount.subtract(1, ordering: .relaxed)
            searchingCount.add(1, ordering: .relaxed)
            worker.notified.store(true, ordering: .relaxed)
            return worker.state.parker
        }
        guard let woken else { return }
        activity.wakeUps.add(1, ordering: .relaxed)
        woken.unpark()
    }

    /// Whether any queue the workers share holds work.
    private func hasStealableWork() -> Bool {
        if globalCount.load(ordering: .acquiring) > 0 { return true }
        return control.withLock { control in control.workers.contains { $0.queue.count > 0 } }
    }

    // MARK: Workers

    private func startIfNeeded() {
        let start = control.withLock { control -> Bool in
            guard !control.started else { return false }
            control.started = true
            return true
        }
        guard start else { return }
        started.store(true, ordering: .releasing)
        for _ in 0..<targetWorkerCount { startWorker(isExtra: false) }
        let monitor = spawnThread(name: "pool-monitor", role: .poolMonitor) { [self] in runMonitor() }
        pthread_detach(monitor)
    }

    private func startWorker(isExtra: Bool) {
        startThread(of: control.withLock { addWorker(isExtra: isExtra, to: &$0) })
    }

    /// Adds a worker to the list, under the control lock, for `startThread(of:)` to start once the
    /// lock is released. A worker that is to be added when a condition on the list holds is added
    /// under the same lock as the condition is checked: counted from then on, it keeps a second
    /// check, made before its thread starts, from adding another for the same need.
    private func addWorker(isExtra: Bool, to control: inout Control) -> Worker {
        defer { control.nextIndex += 1 }
        let worker = Worker(index: control.nextIndex, isExtra: isExtra, pool: self)
        control.workers.append(worker)
        workersVersion.add(1, ordering: .releasing)
        return worker
    }

    /// Adds an extra worker, as `addWorker(isExtra:to:)` does, unless the pool has
    /// `maxExtraWorkers` already: the cap is checked under the lock that adds the worker.
    private func addExtraWorker(to control: inout Control) -> Worker? {
        guard control.workers.count < targetWorkerCount + Self.maxExtraWorkers else { return nil }
        return addWorker(isExtra: true, to: &control)
    }

    /// Starts the thread of `worker`, added by `addWorker(isExtra:to:)`.
    private func startThread(of worker: Worker) {
        if worker.isExtra { activity.extraWorkersStarted.add(1, ordering: .relaxed) }
        let thread = spawnThread(name: "pool-\(worker.index)", role: .poolWorker) { [worker] in
            worker.state = ThreadState.current
            // Unretained: this closure holds the worker until the thread ends.
            worker.state.unretainedWorker = Unmanaged.passUnretained(worker)
            worker.pool.runWorker(worker)
            // Retired: the worker holds its thread's state; let it go.
            worker.state.unretainedWorker = nil
            worker.state = nil
        }
        pthread_detach(thread)
    }

    private func runWorker(_ worker: Worker) {
        var tick: UInt32 = 0
        var lifoStreak = 0
        var spun = false
        while true {
            if let job = nextJob(for: worker, tick: &tick, lifoStreak: &lifoStreak) {
                spun = false
                // The last searcher found work: if more is waiting, it wakes the next one.
                if worker.isSearching { stopSearching(worker) }
                worker.started.store(worker.started.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
                job.run()
                // A job that set `SynchronizationContext.current` and left it does not pass it on to
                // the jobs after it, whose awaits would capture it (.NET resets it likewise).
                if worker.state.synchronizationContext != nil { worker.state.synchronizationContext = nil }
                // A worker that stays busy releases what it put off once it has waited long enough,
                // not only when it runs out of work (which may not happen for as long as it is busy).
                if !worker.retired.isEmpty && Clock.now - worker.retiredSince > Self.maxRetiredNanoseconds {
                    worker.retired = []
                }
                continue
            }
            if worker.isSearching {
                hooks.onSearchFailed?()
                // The last searcher gives up: a queuer that saw it searching woke nobody, counting on
                // it to wake the next once it found work. This worker takes one job on its way to
                // park (`parkIdle`), not the rest: it wakes a worker for them, as in tokio's
                // `transition_to_parked`.
                stopSearching(worker)
            }
            if !worker.retired.isEmpty {
                // Out of work: release some of what it put off, then look for work again.
                worker.retired.removeLast(min(worker.retired.count, Self.retiredReleasedAtOnce))
                if worker.retired.isEmpty { worker.retired = [] }
                continue
            }
            // Out of work: first, if no other worker is, search for a while, watching the queues
            // (see `spinForWork`); then park. A worker that has just searched parks with no spin
            // of its own; one that did not (another was searching) spins in its parker, where a
            // searcher that finds more work than it can run wakes it with no system call.
            if !spun, startSearching(worker) {
                spun = true
                hooks.onSearchStarted?()
                spinForWork(worker)
                continue
            }
            let parkerSpins = spun ? 0 : Parker.spinIterations
            spun = false
            if !parkIdle(worker, spinning: parkerSpins) { return }
        }
    }

    /// Ends `worker`'s search, whether it found work or not. The last searcher to stop wakes a
    /// worker if work is waiting: a queuer that saw a searcher woke nobody, counting on it. The
    /// fence pairs with `notify`'s, as in `parkIdle`: either a queuer sees no searcher left and
    /// wakes a worker itself, or this sees what it queued.
    @inline(__always)
    private func stopSearching(_ worker: Worker) {
        worker.isSearching = false
        if searchingCount.subtract(1, ordering: .relaxed).newValue == 0 {
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            if hasStealableWork() { notify() }
        }
    }

    /// The next job for `worker`, or `nil` when there is none anywhere it can look.
    private func nextJob(for worker: Worker, tick: inout UInt32, lifoStreak: inout Int) -> Job? {
        tick &+= 1
        if tick % Self.globalQueueInterval == 0 {
            // Now and then the oldest waiting job, before even the LIFO slot's: by turns the global
            // queue's first, else the bottom of this queue, and the other way round. A worker that
            // keeps pushing would otherwise leave its bottom to thieves, and one whose LIFO jobs
            // keep ending their streaks would keep the global queue from ever emptying.
            // With neither, a steal: a worker whose own jobs never run out (a yield loop keeps its
            // job in its LIFO slot while nothing is queued here or globally) would otherwise never
            // look at the others' queues.
            let job =
                (tick / Self.globalQueueInterval) % 2 == 0
                ? worker.queue.popOldest() ?? popGlobal(into: worker)
                : popGlobal(into: worker) ?? worker.queue.popOldest()
            if let job = job ?? steal(for: worker) { return job }
        }
        if let job = worker.takeLifoJob() {
            // The streak goes on while no job waits, here or in the global queue, behind it.
            if lifoStreak < Self.maxLifoStreak || nothingQueued(for: worker) {
                lifoStreak = min(lifoStreak + 1, Self.maxLifoStreak)
                return job
            }
            // The streak is over: the LIFO job waits its turn behind the queued work. On the global
            // queue, not under the bottom of this one, whose older jobs would then wait for it.
            inject(job, wakingAWorker: false, countsAsInjection: false)
        }
        lifoStreak = 0
        if let job = worker.queue.pop() ?? popGlobal(into: worker) { return job }
        return steal(for: worker)
    }

    /// Steals half the queue of another worker, starting from a random one.
    private func steal(for thief: Worker) -> Job? {
        // The list changes only when a worker starts or retires: a thief copies it under the lock
        // then, and otherwise reads its copy with no lock. A copy a little out of date is harmless:
        // a worker that retired has handed its queue over, and one that started has none yet.
        let version = workersVersion.load(ordering: .acquiring)
        if version != thief.victimsVersion {
            (thief.victims, thief.victimsVersion) = control.withLock {
                ($0.workers, workersVersion.load(ordering: .relaxed))
            }
        }
        let victims = thief.victims
        guard victims.count > 1 else { return nil }
        let start = Int(thief.nextRandom() % UInt64(victims.count))
        for offset in 0..<victims.count {
            // Unretained (`victims` holds it): a retain and a release of another worker's object,
            // whose owner keeps writing beside its reference count, cost each look a transfer
            // of that cache line and back.
            let victim = Unmanaged.passUnretained(victims[(start + offset) % victims.count])
            let stolen = victim._withUnsafeGuaranteedRef { victim -> Job? in
                guard victim !== thief, victim.queue.count > 0 else { return nil }
                return victim.queue.steal(into: thief.queue, beforePublishing: hooks.onStealInTransit)
            }
            guard let job = stolen else { continue }
            activity.steals.add(1, ordering: .relaxed)
            // The jobs kept were in no queue while they moved, as a batch from the global queue is
            // in transit (`popGlobal`): a worker that looked for work then found none and may have
            // parked. A searcher wakes the next one once it runs its job (`runWorker`); any other
            // thief wakes one now, or they would wait for this one's job or the monitor.
            if !thief.isSearching, thief.queue.count > 0 { notify() }
            return job
        }
        return nil
    }

    /// Makes `worker`, out of work, a searcher, unless another worker is searching already.
    ///
    /// While one worker searches, a thread queuing work wakes nobody (`notify`): the searcher
    /// sees the work, and wakes the next worker if more is waiting once it has found some, or, if
    /// its search ends first, as it gives up (`runWorker`), the same protocol as a woken worker's.
    /// Before, an idle worker spun in its parker for the same few microseconds, but for a token
    /// only: work reached it through a wake-up, which costs the queuing thread the pool's lock, the
    /// idle list and the parker's word, each a cache line last written on another core, and the
    /// worker the same lines back. A completion from another thread resuming a method on the pool,
    /// and back, took 1.06 µs; with a searcher watching the global queue, 0.67 µs (harness medians
    /// of 7 interleaved runs).
    private func startSearching(_ worker: Worker) -> Bool {
        guard searchingCount.load(ordering: .relaxed) == 0,
            searchingCount.compareExchange(expected: 0, desired: 1, ordering: .relaxed).exchanged
        else { return false }
        worker.isSearching = true
        return true
    }

    /// Spins for about `Parker.spinIterations` pauses, or until a queue it could take work from
    /// shows some. Reads only: the counts' cache lines stay shared with the cores writing them.
    private func spinForWork(_ worker: Worker) {
        for iteration in 0..<Parker.spinIterations {
            if globalCount.load(ordering: .relaxed) > 0 { return }
            // The other workers' queues less often: each look reads a line their owners write.
            // Unretained, as in `steal(for:)`, and from the list as the last steal copied it.
            if iteration % 8 == 7 {
                let victims = worker.victims
                for index in victims.indices {
                    let victim = Unmanaged.passUnretained(victims[index])
                    if victim._withUnsafeGuaranteedRef({ $0 !== worker && $0.queue.count > 0 }) { return }
                }
            }
            tm_spin_pause()
        }
    }

    /// Parks an idle worker until there is work, spinning first for `spinning` pauses. Returns
    /// `false` when the worker retires.
    private func parkIdle(_ worker: Worker, spinning spins: Int) -> Bool {
        control.withLock { $0.idle.append(worker) }
        idleCount.add(1, ordering: .relaxed)
        // Pairs with `notify`: after joining the idle list, look once more for work queued
        // meanwhile by a thread that did not see this worker idle yet.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if hasStealableWork() {
            leaveIdleList(worker)
            return true
        }
        activity.parks.add(1, ordering: .relaxed)
        let woken = worker.state.parker.park(
            timeoutNanoseconds: worker.isExtra ? extraWorkerIdleNanoseconds : -1, yielding: false, spinning: spins)
        if worker.notified.exchange(false, ordering: .acquiring) {
            worker.isSearching = true
            return true
        }
        let retire = control.withLock { control -> Bool in
            guard let position = control.idle.firstIndex(where: { $0 === worker }) else { return false }
            control.idle.remove(at: position)
            idleCount.subtract(1, ordering: .relaxed)
            // Retire an extra worker that timed out, while enough unblocked workers remain.
            guard !woken, worker.isExtra, control.workers.count - control.blocked > targetWorkerCount else {
                return false
            }
            control.workers.removeAll { $0 === worker }
            workersVersion.add(1, ordering: .releasing)
            return true
        }
        if retire {
            // Nothing of this worker's may be stranded: its queue goes to the global queue.
            var leftover: [Job] = []
            while let job = worker.queue.popOldest() { leftover.append(job) }
            if !leftover.isEmpty { inject(leftover, countsAsInjection: false) }
            // Its copy of the list holds the worker itself.
            worker.victims = []
            activity.retirements.add(1, ordering: .relaxed)
            return false
        }
        // Taken off the idle list by a waker between the park and the lock: it is searching.
        if worker.notified.exchange(false, ordering: .acquiring) { worker.isSearching = true }
        return true
    }

    /// Takes `worker` off the idle list, or, if a waker took it already, makes it a searcher.
    private func leaveIdleList(_ worker: Worker) {
        let wasIdle = control.withLock { control -> Bool in
            guard let position = control.idle.firstIndex(where: { $0 === worker }) else { return false }
            control.idle.remove(at: position)
            idleCount.subtract(1, ordering: .relaxed)
            return true
        }
        if !wasIdle, worker.notified.exchange(false, ordering: .acquiring) { worker.isSearching = true }
    }

    // MARK: Blocking and starvation

    /// Called by a worker about to block in `wait()`: hands over its LIFO job and, if fewer than
    /// the target of unblocked workers would remain, starts an extra worker at once.
    func workerWillBlock() {
        if let worker = currentWorker?.takeUnretainedValue(), let job = worker.takeLifoJob() {
            // First in line for the worker that steals from this one while it blocks.
            pushLocalOldest(job, on: worker)
        }
        let extra = control.withLock { control -> Worker? in
            control.blocked += 1
            guard control.workers.count - control.blocked < targetWorkerCount else { return nil }
            return addExtraWorker(to: &control)
        }
        if let extra {
            hooks.onExtraWorkerDecided?()
            startThread(of: extra)
        } else {
            notify()
        }
    }

    /// Called by a worker when its blocking call returns.
    func workerDidUnblock() {
        control.withLock { $0.blocked -= 1 }
    }

    /// The monitor's looks per `starvationPeriodNanoseconds`: work that stands still gets a worker
    /// between one period and a period and a quarter after it was queued (a period and a half, if
    /// a job started just after it was queued), and work that has not stood still for a period is
    /// not mistaken for it.
    static let monitorLooksPerPeriod: Int64 = 4

    /// Looks at the workers `monitorLooksPerPeriod` times a period, and at each look:
    /// - a worker that has started no job for a period (stuck in a long job, or polling for that
    ///   very job) and holds a LIFO job, which no other worker takes, gives it up to the global
    ///   queue;
    /// - if queued work has stood still for a period, every worker busy all along, with no job
    ///   started by any of them while it was queued, a worker is added (a LIFO job given up with no
    ///   idle worker to take it gets one a period and a look later).
    ///
    /// Work counts as standing still from the first look that sees it queued with no job started
    /// since the look before (it was queued in between): work queued just before a look, in a pool
    /// that had started nothing for a while, has not stood still yet.
    private func runMonitor() {
        let period = Self.starvationPeriodNanoseconds
        // The first look of those since that saw work queued and no worker starting a job: the work
        // was queued between the look before it and it. `nil` while work moves or none waits.
        var stillSince: Int64?
        while true {
            monitorParker.park(timeoutNanoseconds: period / Self.monitorLooksPerPeriod)
            hooks.onMonitorLook?()
            let now = Clock.now
            let workers = control.withLock { $0.workers }
            // Before the LIFO jobs below are queued: those have not stood still on a queue, and an
            // idle worker that their queuing wakes runs them.
            let queued = hasStealableWork()
            var moved = false
            for worker in workers {
                let started = worker.started.load(ordering: .relaxed)
                if started != worker.startedAtLastLook {
                    worker.startedAtLastLook = started
                    worker.startedChangedAt = now
                    moved = true
                } else if now - worker.startedChangedAt >= period, let job = worker.takeLifoJob() {
                    activity.lifoJobsRescued.add(1, ordering: .relaxed)
                    inject(job, countsAsInjection: false)
                }
            }
            guard queued && !moved else {
                stillSince = nil
                continue
            }
            guard let since = stillSince else {
                stillSince = now
                continue
            }
            if now - since >= period {
                stillSince = now
                if let extra = control.withLock({ addExtraWorker(to: &$0) }) {
                    activity.starvationWorkersAdded.add(1, ordering: .relaxed)
                    startThread(of: extra)
                }
            }
        }
    }

    // MARK: Statistics

    /// Counters of what the pool did, for statistics and tests.
    final class Activity: Sendable {
        let steals = Atomic<UInt64>(0)
        let parks = Atomic<UInt64>(0)
        let wakeUps = Atomic<UInt64>(0)
        let injections = Atomic<UInt64>(0)
        let retirements = Atomic<UInt64>(0)
        let extraWorkersStarted = Atomic<UInt64>(0)
        let starvationWorkersAdded = Atomic<UInt64>(0)
        /// LIFO jobs the monitor took from stuck workers.
        let lifoJobsRescued = Atomic<UInt64>(0)
    }

    /// A snapshot of the pool's threads.
    var counts: (workers: Int, busy: Int, idle: Int, blocked: Int) {
        control.withLock { control in
            let idle = control.idle.count
            return (
                control.workers.count, max(0, control.workers.count - idle - control.blocked), idle, control.blocked
            )
        }
    }

    /// The activity counters, read now.
    var activitySnapshot: RuntimeStatistics.PoolActivity {
        RuntimeStatistics.PoolActivity(
            steals: activity.steals.load(ordering: .relaxed),
            parks: activity.parks.load(ordering: .relaxed),
            wakeUps: activity.wakeUps.load(ordering: .relaxed),
            injections: activity.injections.load(ordering: .relaxed),
            retirements: activity.retirements.load(ordering: .relaxed),
            extraWorkersStarted: activity.extraWorkersStarted.load(ordering: .relaxed),
            starvationWorkersAdded: activity.starvationWorkersAdded.load(ordering: .relaxed),
            lifoJobsRescued: activity.lifoJobsRescued.load(ordering: .relaxed))
    }

    /// Whether the monitor thread runs (it starts with the workers).
    var monitorThreadCount: Int { control.withLock { $0.started ? 1 : 0 } }
}

// The shared state is in atomics and under locks; each worker's plain fields are its own thread's.
extension ThreadPool: @unchecked Sendable {}
extension ThreadPool.Worker: @unchecked Sendable {}
