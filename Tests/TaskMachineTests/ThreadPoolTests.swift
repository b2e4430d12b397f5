import Glibc
import Synchronization
import Testing

@testable import TaskMachine

/// A job that records its number where it runs.
final class NumberedItem: WorkItem {
    let number: Int
    init(_ number: Int) {
        self.number = number
        super.init()
    }
}

// Safe to share: immutable.
extension NumberedItem: @unchecked Sendable {}

extension Job {
    var number: Int { if case .item(let item) = self { (item as! NumberedItem).number } else { -1 } }
    var probeNumber: Int { if case .item(let item) = self { (item as! ReleaseProbe).number } else { -1 } }
}

/// Numbers seen by one thread; merged and checked at the end.
final class Seen: @unchecked Sendable {
    var numbers: [Int] = []
}

@Suite struct ThreadPoolTests {
    @Test func theLocalQueueLosesAndDuplicatesNothingUnderStealing() throws {
        let total = 1_000_000
        let queue = LocalQueue()
        let ownerSeen = Seen()
        let thieves = (0..<3).map { _ in (queue: LocalQueue(), seen: Seen()) }
        let done = Atomic<Bool>(false)
        let finished = Atomic<Int>(0)
        let threads = thieves.enumerated().map { index, thief in
            spawnThread(name: "thief-\(index)", role: .other) {
                func drain() {
                    while let job = thief.queue.pop() { thief.seen.numbers.append(job.number) }
                }
                while !done.load(ordering: .acquiring) {
                    if let job = queue.steal(into: thief.queue) {
                        thief.seen.numbers.append(job.number)
                        drain()
                    }
                }
                // One last sweep after the owner stopped.
                while let job = queue.steal(into: thief.queue) {
                    thief.seen.numbers.append(job.number)
                    drain()
                }
                drain()
                finished.add(1, ordering: .releasing)
            }
        }
        // The owner runs on a thread of its own too, so that the test thread can give up on a
        // queue that hangs (a lost wake-up, a lock never released) instead of hanging the run.
        let owner = spawnThread(name: "owner", role: .other) {
            func push(_ job: Job) {
                if let overflow = queue.push(job) { ownerSeen.numbers.append(contentsOf: overflow.map(\.number)) }
            }
            var number = 0
            while number < total {
                if number % 50 == 0, number + 8 <= total {
                    // A batch with one publication, as a worker takes from the global queue; one
                    // that does not fit is pushed job by job.
                    let batch = (number..<number + 8).map { Job.item(NumberedItem($0)) }
                    if !queue.push(copiesOf: batch) { batch.forEach(push) }
                    number += 8
                } else if number % 7 == 0 {
                    // Under the bottom, as a worker's LIFO job at the end of its streak.
                    if let overflow = queue.pushOldest(.item(NumberedItem(number))) {
                        ownerSeen.numbers.append(contentsOf: overflow.map(\.number))
                    }
                    number += 1
                } else {
                    push(.item(NumberedItem(number)))
                    number += 1
                }
                // The owner takes some back, as a worker does between pushes: mostly the newest, now
                // and then the oldest, racing the thieves at the bottom.
                if number % 3 == 0, let job = queue.pop() { ownerSeen.numbers.append(job.number) }
                if number % 61 == 0, let job = queue.popOldest() { ownerSeen.numbers.append(job.number) }
                // And now and then all it can, down to the last job, racing the thieves at the bottom.
                if number % 29 == 0 {
                    while let job = queue.pop() { ownerSeen.numbers.append(job.number) }
                }
            }
            while let job = queue.pop() { ownerSeen.numbers.append(job.number) }
            done.store(true, ordering: .releasing)
            finished.add(1, ordering: .releasing)
        }
        // Bounded: a second or two normally, far longer under ThreadSanitizer; never for ever.
        let deadline = ContinuousClock.now + .seconds(300)
        while finished.load(ordering: .acquiring) < thieves.count + 1, ContinuousClock.now < deadline { usleepish() }
        try #require(
            finished.load(ordering: .acquiring) == thieves.count + 1,
            "the owner and thieves did not finish in 300 s: the queue hangs")
        for thread in threads + [owner] { pthread_join(thread, nil) }

        var counts = [UInt8](repeating: 0, count: total)
        for seen in [ownerSeen] + thieves.map(\.seen) {
            for number in seen.numbers { counts[number] &+= 1 }
        }
        #expect(counts.allSatisfy { $0 == 1 })
        let stolen = thieves.reduce(0) { $0 + $1.seen.numbers.count }
        #expect(stolen > 0)
    }

    @Test func theOwnerTakesTheNewestJobAndAThiefTheOldestHalf() {
        let queue = LocalQueue()
        let thief = LocalQueue()
        for number in 0..<8 { #expect(queue.push(.item(NumberedItem(number))) == nil) }
        #expect(queue.pop()?.number == 7, "the owner pops at the top")
        // Seven left, 0...6: the thief takes the older four and runs the oldest of them first.
        #expect(queue.steal(into: thief)?.number == 0)
        #expect(thief.count == 3)
        #expect(queue.count == 3)
        #expect(queue.popOldest()?.number == 4, "the bottom is now 4")
        #expect(queue.pushOldest(.item(NumberedItem(100))) == nil)
        #expect(queue.push(copiesOf: [.item(NumberedItem(200)), .item(NumberedItem(201))]))
        var owner: [Int] = []
        while let job = queue.pop() { owner.append(job.number) }
        #expect(owner == [200, 201, 6, 5, 100], "a batch's first job on top, a job pushed under the bottom last")
        var stolen: [Int] = []
        while let job = thief.pop() { stolen.append(job.number) }
        #expect(stolen == [1, 2, 3], "the rest of the stolen half, oldest on top")
    }

    @Test func aFullQueueHandsBackItsOlderHalfInOrder() {
        let queue = LocalQueue()
        let capacity = Int(LocalQueue.capacity)
        for number in 0..<capacity { #expect(queue.push(.item(NumberedItem(number))) == nil) }
        let overflow = queue.push(.item(NumberedItem(capacity)))
        #expect(overflow?.map(\.number) == Array(0..<capacity / 2) + [capacity])
        #expect(queue.pushOldest(.item(NumberedItem(-1))) == nil)
        #expect(queue.count == capacity / 2 + 1)
        #expect(queue.popOldest()?.number == -1)
        #expect(queue.pop()?.number == capacity - 1)
    }

    @Test func aJobQueuedBehindRunsAfterTheWorkAlreadyQueued() throws {
        let pool = ThreadPool(workerCount: 1)
        let order = Locked<[String]>([])
        let done = Promise<Void>()
        @Sendable func note(_ name: String) -> Job {
            .item(ClosureWorkItem { order.withLock { $0.append(name) } })
        }
        pool.enqueue(
            .item(
                ClosureWorkItem {
                    pool.enqueue(note("first queued"))
                    pool.enqueue(note("second queued"))
                    // As `Future.yield()` queues its resumption: behind both, not in the LIFO slot.
                    pool.enqueueBehind(
                        .item(
                            ClosureWorkItem {
                                order.withLock { $0.append("yielded") }
                                done.trySucceed()
                            }))
                }))
        try done.future.wait(timeout: .seconds(20))
        #expect(order.withLock { $0 } == ["second queued", "first queued", "yielded"])
    }

    @Test func jobsQueuedFromOutsideRunInTheirOrderOnOneWorker() throws {
        // The worker takes them from the global queue in batches, into its own queue, whose newest
        // job it pops first: a batch goes in with its first job on top. (Fewer than 61 jobs, so
        // that the fairness rule's look at the oldest job does not come into it.)
        let pool = ThreadPool(workerCount: 1)
        let running = Locked(false)
        let open = Locked(false)
        let order = Locked<[Int]>([])
        let done = Promise<Void>()
        let count = 50
        pool.enqueue(
            .item(
                ClosureWorkItem {
                    running.withLock { $0 = true }
                    while !open.withLock({ $0 }) { usleepish() }
                }))
        // The worker is busy: the jobs below wait in the global queue, all of them.
        while !running.withLock({ $0 }) { usleepish() }
        for number in 0..<count {
            pool.enqueue(
                .item(
                    ClosureWorkItem {
                        order.withLock { $0.append(number) }
                        if number == count - 1 { done.trySucceed() }
                    }))
        }
        open.withLock { $0 = true }
        try done.future.wait(timeout: .seconds(20))
        #expect(order.withLock { $0 } == Array(0..<count))
    }

    @Test func theOldestJobOfABusyWorkersQueueRunsWithinAFewHundredJobs() throws {
        // One worker whose jobs keep queuing more on top of its queue: depth first, a job at the
        // bottom would wait for the whole tree, but every 61st job is the oldest waiting.
        let pool = ThreadPool(workerCount: 1)
        let ran = Counter()
        let oldestRanAfter = Locked<Int?>(nil)
        let done = Promise<Void>()
        let total = (1 << 13) - 1
        pool.enqueue(
            .item(
                ClosureWorkItem {
                    pool.enqueue(.item(ClosureWorkItem { oldestRanAfter.withLock { $0 = ran.count } }))
                    pool.enqueue(.item(TreeJob(pool: pool, depth: 1, maxDepth: 13, ran: ran, done: done, total: total)))
                }))
        try done.future.wait(timeout: .seconds(60))
        let deadline = ContinuousClock.now + .seconds(20)
        while oldestRanAfter.withLock({ $0 }) == nil && ContinuousClock.now < deadline { usleepish() }
        let after = try #require(oldestRanAfter.withLock { $0 })
        #expect(after < 500, "ran after \(after) of the tree's \(total) jobs")
    }

    @Test func aBatchTakenFromTheGlobalQueueWhileAnotherWorkerParksStillWakesIt() throws {
        // A worker moving a batch from the global queue to its own holds it in no queue for a
        // moment: the other worker, looking then, finds nothing and parks. Once the batch lands,
        // and the first worker runs a long job, the other must be woken to take it.
        let inTransit = Promise<Void>()
        let proceed = Flag()
        let pool = ThreadPool(
            workerCount: 2,
            hooks: .init(onBatchInTransit: {
                guard inTransit.trySucceed() else { return }  // the first batch only
                while !proceed.isSet { usleepish() }
            }))
        let releaseFirst = Flag()
        let releaseSecond = Flag()
        let releaseLong = Flag()
        let started = Counter()
        // Busy without blocking in a way the pool sees, as a long computation is.
        func spinning(until flag: Flag, counting: Bool = false) -> Job {
            .item(
                ClosureWorkItem {
                    if counting { started.increment() }
                    while !flag.isSet { usleepish() }
                })
        }
        pool.enqueue(spinning(until: releaseFirst, counting: true))
        pool.enqueue(spinning(until: releaseSecond, counting: true))
        let deadline = ContinuousClock.now + .seconds(10)
        while started.count < 2 && ContinuousClock.now < deadline { usleepish() }
        try #require(started.count == 2, "both workers should run a job")
        // Both workers busy: nobody is woken for these. The first to finish takes the long job,
        // with the next in a batch; the other worker takes the last.
        let batched = Promise<Void>()
        pool.enqueue(contentsOf: [
            spinning(until: releaseLong), .item(ClosureWorkItem { batched.trySucceed() }), .item(ClosureWorkItem {}),
        ])
        releaseFirst.set()
        try inTransit.future.wait(timeout: .seconds(10))
        // The batch is in transit: the other worker runs the last job, finds nothing, and parks.
        releaseSecond.set()
        while pool.counts.idle < 1 && ContinuousClock.now < deadline { usleepish() }
        try #require(pool.counts.idle == 1, "the other worker should park")
        proceed.set()
        // The first worker now runs the long job; the parked one must take the batched job.
        try batched.future.wait(timeout: .seconds(10))
        #expect(pool.activitySnapshot.starvationWorkersAdded == 0, "the batch waited for the monitor")
        releaseLong.set()
    }

    @Test func jobsStolenWhileTheirVictimParksStillWakeIt() throws {
        // A worker that runs out of work steals the older half of another's queue, runs the oldest
        // and keeps the rest, which are in neither queue until they land in its own: the victim,
        // running out of work then, finds none and parks. Once they land, and the thief runs a long
        // job, the victim must be woken to take them.
        let inTransit = Promise<Void>()
        let proceed = Flag()
        let pool = ThreadPool(
            workerCount: 2,
            hooks: .init(onStealInTransit: {
                guard inTransit.trySucceed() else { return }  // the first steal only
                while !proceed.isSet { usleepish() }
            }))
        try pool.waitUntilIdle()
        let releaseThief = Flag()
        let releaseLong = Flag()
        defer { releaseLong.set() }
        let thiefBusy = Promise<Void>()
        let keptRan = Promise<Void>()
        // Busy without blocking in a way the pool sees, as a long computation is (a worker blocked
        // in wait() would have an extra one started).
        pool.enqueue(
            job {
                thiefBusy.trySucceed()
                while !releaseThief.isSet { usleepish() }
            })
        try thiefBusy.future.wait(timeout: .seconds(10))
        pool.enqueue(
            job {
                // The victim's queue, oldest first: the long job and the one the thief keeps, then a
                // third it leaves; the last job queued stays in the LIFO slot.
                pool.enqueue(job { while !releaseLong.isSet { usleepish() } })
                pool.enqueue(job { keptRan.trySucceed() })
                pool.enqueue(job {})
                pool.enqueue(job {})
                releaseThief.set()
                while !inTransit.future.isCompleted { usleepish() }
            })
        try inTransit.future.wait(timeout: .seconds(10))
        // The victim runs what the thief left, finds nothing, and parks.
        let deadline = ContinuousClock.now + .seconds(10)
        while pool.counts.idle < 1 && ContinuousClock.now < deadline { usleepish() }
        try #require(pool.counts.idle == 1, "the victim should park")
        usleep(20_000)  // past the spin before a park
        proceed.set()
        // The thief now runs the long job; the parked victim must take the kept one.
        try keptRan.future.wait(timeout: .seconds(10))
        let activity = pool.activitySnapshot
        #expect(activity.starvationWorkersAdded == 0, "the stolen job waited for the monitor")
        // The statistics saw it: the steal, the victim's park, and its wake-up.
        #expect(activity.steals >= 1)
        #expect(activity.parks >= 1)
        #expect(activity.wakeUps >= 1)
    }

    @Test func workQueuedAsTheSearcherGivesUpStillWakesAnIdleWorker() throws {
        // A queuer that sees a worker searching wakes nobody: the searcher is to wake the next
        // worker once it finds work. One that found none, and gives up just as two jobs arrive,
        // takes one of them on its way to park: the other must not wait, while a worker idles,
        // for the monitor.
        let armed = Flag()
        let gaveUp = Promise<Void>()
        let proceed = Flag()
        let pool = ThreadPool(
            workerCount: 2,
            hooks: .init(onSearchFailed: {
                guard armed.isSet, gaveUp.trySucceed() else { return }
                while !proceed.isSet { usleepish() }
            }))
        // Three workers for a target of two: an extra one, started for a worker that blocked,
        // stays once that worker is back.
        let firstGate = Promise<Void>()
        let firstDone = Promise<Void>()
        pool.enqueue(
            job {
                _ = try? firstGate.future.wait(timeout: .seconds(20))
                firstDone.trySucceed()
            })
        let deadline = ContinuousClock.now + .seconds(20)
        while pool.counts.workers < 3 && ContinuousClock.now < deadline { usleepish() }
        try #require(pool.counts.workers == 3)
        try firstGate.succeed()
        try firstDone.future.wait(timeout: .seconds(20))
        while pool.counts.idle < 3 && ContinuousClock.now < deadline { usleepish() }
        try #require(pool.counts.idle == 3)
        usleep(20_000)  // past the spin before a park
        // A worker that blocks with two others unblocked has an idle one woken to look for work
        // it handed over, of which there is none: that searcher gives up.
        let secondGate = Promise<Void>()
        pool.enqueue(
            job {
                armed.set()
                _ = try? secondGate.future.wait(timeout: .seconds(20))
            })
        try gaveUp.future.wait(timeout: .seconds(20))
        while pool.counts.idle < 1 && ContinuousClock.now < deadline { usleepish() }
        try #require(pool.counts.idle == 1, "the third worker should park")
        usleep(20_000)
        let started = Counter()
        let release = Flag()
        let long = {
            job {
                started.increment(); while !release.isSet { usleepish() }
            }
        }
        // The searcher still counts: queuing these wakes nobody.
        pool.enqueue(contentsOf: [long(), long()])
        proceed.set()
        while started.count < 2 && ContinuousClock.now < deadline { usleepish() }
        #expect(started.count == 2)
        #expect(pool.activitySnapshot.starvationWorkersAdded == 0, "the second job waited for the monitor")
        release.set()
        try secondGate.succeed()
    }

    @Test func workQueuedWhileAWorkerSearchesIsFoundByItWithNoWakeUp() throws {
        // A worker that runs out of work searches for a while before it parks, and while it does,
        // a thread queuing work wakes nobody: the searcher takes the work itself.
        let armed = Flag()
        let searching = Promise<Void>()
        let proceed = Flag()
        let pool = ThreadPool(
            workerCount: 2,
            hooks: .init(onSearchStarted: {
                guard armed.isSet, searching.trySucceed() else { return }
                while !proceed.isSet { usleepish() }
            }))
        let warmUp = Promise<Void>()
        pool.enqueue(job { warmUp.trySucceed() })
        try warmUp.future.wait(timeout: .seconds(10))
        let deadline = ContinuousClock.now + .seconds(10)
        while pool.counts.idle < 2 && ContinuousClock.now < deadline { usleepish() }
        try #require(pool.counts.idle == 2, "both workers should park")
        armed.set()
        // Woken for this job, the worker runs it, runs out of work, and searches.
        pool.enqueue(job {})
        try searching.future.wait(timeout: .seconds(10))
        let wakeUpsBefore = pool.activitySnapshot.wakeUps
        let ran = Promise<Void>()
        pool.enqueue(job { ran.trySucceed() })
        #expect(pool.activitySnapshot.wakeUps == wakeUpsBefore, "queuing woke a worker while one searched")
        proceed.set()
        try ran.future.wait(timeout: .seconds(10))
        #expect(pool.activitySnapshot.wakeUps == wakeUpsBefore, "the searcher woke a worker for a job it took")
    }

    @Test func aWorkerThatBlocksAgainWhileAnotherWorkersExtraIsStartingGetsNoSecondExtra() throws {
        // Two workers of two block: each gets an extra. Were the first's extra not counted until
        // its thread is on its way, the second, unblocking and blocking again meanwhile, would
        // count one worker short and get a second extra: one more worker than blocking asks for.
        let firstDecided = Promise<Void>()
        let proceed = Flag()
        let pool = ThreadPool(
            workerCount: 2,
            hooks: .init(onExtraWorkerDecided: {
                guard firstDecided.trySucceed() else { return }
                while !proceed.isSet { usleepish() }
            }))
        let gateA = Promise<Void>()
        let gateB1 = Promise<Void>()
        let gateB2 = Promise<Void>()
        let doneA = Promise<Void>()
        let doneB = Promise<Void>()
        let firstWaitReturned = Promise<Void>()
        pool.enqueue(
            job {
                _ = try? gateA.future.wait(timeout: .seconds(20))
                doneA.trySucceed()
            })
        try firstDecided.future.wait(timeout: .seconds(10))
        // The first worker is between deciding on its extra and starting it; the other blocks,
        // unblocks and blocks again.
        pool.enqueue(
            job {
                _ = try? gateB1.future.wait(timeout: .seconds(20))
                firstWaitReturned.trySucceed()
                _ = try? gateB2.future.wait(timeout: .seconds(20))
                doneB.trySucceed()
            })
        let deadline = ContinuousClock.now + .seconds(10)
        while pool.activitySnapshot.extraWorkersStarted < 1 && ContinuousClock.now < deadline { usleepish() }
        try #require(pool.activitySnapshot.extraWorkersStarted == 1, "the second worker should get an extra")
        try gateB1.succeed()
        try firstWaitReturned.future.wait(timeout: .seconds(10))
        // Blocked again once it counts as blocked: it has decided on an extra or not by then.
        while pool.counts.blocked < 2 && ContinuousClock.now < deadline { usleepish() }
        try #require(pool.counts.blocked == 2)
        proceed.set()
        try gateA.succeed()
        try doneA.future.wait(timeout: .seconds(10))
        try gateB2.succeed()
        try doneB.future.wait(timeout: .seconds(10))
        #expect(pool.activitySnapshot.extraWorkersStarted == 2, "two blocked workers, two extras")
    }

    @Test func whatAWorkerPutOffIsReleasedAfterAWhileEvenIfItNeverRunsOutOfWork() throws {
        // A timer batch's worker puts off the releases of what it fired (`releasingWhenIdle`); a
        // worker that never runs out of work must still release them once they have waited
        // `maxRetiredNanoseconds`, not hold them, and what they capture, for as long as it is busy.
        let pool = ThreadPool(workerCount: 1)
        let released = Locked<[Int]>([])
        let heldAtTheEnd = Promise<Bool>()
        let steps = Int(3 * ThreadPool.maxRetiredNanoseconds / 2_000_000)
        @Sendable func step(_ remaining: Int) {
            guard remaining > 0 else {
                heldAtTheEnd.trySucceed(released.withLock { $0.isEmpty })
                return
            }
            // Queued before this job ends: the worker goes on to it, never out of work.
            pool.enqueue(.item(ClosureWorkItem { step(remaining - 1) }))
            usleep(2_000)
        }
        pool.enqueue(
            .item(
                ClosureWorkItem {
                    pool.releasingWhenIdle { retired in retired.append(.item(ReleaseProbe(1, into: released))) }
                    step(steps)
                }))
        #expect(
            try heldAtTheEnd.future.wait(timeout: .seconds(10)) == false, "still held after \(steps * 2) ms of work")
    }

    @Test func jobsQueuedByJobsAllRunOnce() throws {
        let pool = ThreadPool(workerCount: 2)
        let ran = Counter()
        let done = Promise<Void>()
        let total = 100_000
        // Each job queues the next two until the total is reached: the LIFO slot, the local
        // queues and stealing all take part.
        // 2^17 - 1 jobs in all.

        pool.enqueue(.item(TreeJob(pool: pool, depth: 0, maxDepth: 16, ran: ran, done: done, total: total)))
        try done.future.wait(timeout: .seconds(60))
        let deadline = ContinuousClock.now + .seconds(30)
        while ran.count < (1 << 17) - 1 && ContinuousClock.now < deadline { usleepish() }
        #expect(ran.count == (1 << 17) - 1)
    }

    @Test func workersThatBlockWithoutWaitStallThePoolForAPeriodAndTwoLooksAtMost() throws {
        let pool = ThreadPool(workerCount: 2)
        let release = Promise<Void>()
        let starts = Locked<[ContinuousClock.Instant]>([])
        let queued = ContinuousClock.now
        // Four jobs that block the way wait() cannot see (sleeping), then a probe.
        for _ in 0..<4 {
            pool.enqueue(
                .item(
                    ClosureWorkItem {
                        starts.withLock { $0.append(ContinuousClock.now) }
                        while !release.future.isCompleted { usleep(10_000) }
                    }))
        }
        let probe = Promise<Void>()
        pool.enqueue(
            .item(
                ClosureWorkItem {
                    starts.withLock { $0.append(ContinuousClock.now) }
                    probe.trySucceed()
                }))
        try probe.future.wait(timeout: .seconds(20))
        try release.succeed()
        // The queue never stands still for longer than the monitor's bound: work that stands still
        // gets a worker a period after the first look that saw it still, that look up to a look
        // after it was queued, one more look if a job started just after (see
        // `ThreadPool.monitorLooksPerPeriod`); then the worker's thread starts, which a loaded
        // machine can hold up for a while.
        let times = [queued] + starts.withLock { $0 }.sorted()
        let longestStill = zip(times.dropFirst(), times).map { $0 - $1 }.max()!
        let period = Duration.nanoseconds(ThreadPool.starvationPeriodNanoseconds)
        let look = period / Int(ThreadPool.monitorLooksPerPeriod)
        let threadStart = Duration.milliseconds(250)
        #expect(longestStill < period + look * 2 + threadStart, "stood still for \(longestStill)")
        #expect(pool.activitySnapshot.starvationWorkersAdded >= 1)
    }

    @Test func workQueuedJustBeforeALookHasNotStoodStillAndGetsNoWorkerUntilItHas() throws {
        // The one worker is in a long job that a look has seen start. Work queued just before the
        // next look has not stood still for a period: no worker is added for it then. Left
        // standing while the job goes on, it gets one a period or so later.
        let looks = Counter()
        let stopAtLook = Locked(Int.max)
        let stopped = Promise<Void>()
        let proceed = Flag()
        let pool = ThreadPool(
            workerCount: 1,
            hooks: .init(onMonitorLook: {
                looks.increment()
                guard looks.count == stopAtLook.withLock({ $0 }) else { return }
                stopped.trySucceed()
                while !proceed.isSet { usleepish() }
            }))
        let releaseLong = Flag()
        defer { releaseLong.set() }
        let longStarted = Promise<Void>()
        pool.enqueue(
            job {  // busy without blocking in a way the pool sees, as a long computation is
                longStarted.trySucceed()
                while !releaseLong.isSet { usleepish() }
            })
        try longStarted.future.wait(timeout: .seconds(10))
        // The next look begins after the job started, and sees it; stop the monitor at the one after.
        let seen = looks.count + 1
        stopAtLook.withLock { $0 = seen + 1 }
        try stopped.future.wait(timeout: .seconds(10))
        let queuedRan = Promise<Duration>()
        let queued = ContinuousClock.now
        pool.enqueue(job { queuedRan.trySucceed(ContinuousClock.now - queued) })
        proceed.set()
        // That look is over once the next begins.
        let deadline = ContinuousClock.now + .seconds(10)
        while looks.count < seen + 2 && ContinuousClock.now < deadline { usleepish() }
        try #require(looks.count >= seen + 2)
        #expect(pool.activitySnapshot.starvationWorkersAdded == 0, "a worker added for work just queued")
        #expect(!queuedRan.future.isCompleted)
        // Standing still now: a worker is added for it, once it has stood still for a period (a
        // lower bound, which a slow machine only makes longer).
        let waited = try queuedRan.future.wait(timeout: .seconds(10))
        #expect(pool.activitySnapshot.starvationWorkersAdded == 1)
        #expect(waited >= .nanoseconds(ThreadPool.starvationPeriodNanoseconds))
    }

    @Test(arguments: [1, 2])
    func aJobLeftInTheLIFOSlotOfAStuckWorkerRunsElsewhere(workers: Int) throws {
        // A job polls, without wait(), for the continuation it just queued, which sits in its own
        // worker's LIFO slot where no other worker takes from: the monitor takes it out, and with
        // one worker adds one to run it.
        let pool = ThreadPool(workerCount: workers)
        let continuationRan = Promise<Void>()
        let polled = Promise<Duration>()
        pool.enqueue(
            job {
                let queued = ContinuousClock.now
                pool.enqueue(job { continuationRan.trySucceed() })
                while !continuationRan.future.isCompleted && ContinuousClock.now - queued < .seconds(10) {
                    usleep(1000)
                }
                polled.trySucceed(ContinuousClock.now - queued)
            })
        let waited = try polled.future.wait(timeout: .seconds(20))
        #expect(continuationRan.future.isCompleted)
        #expect(waited < .nanoseconds(ThreadPool.starvationPeriodNanoseconds) * 4)
        #expect(pool.activitySnapshot.lifoJobsRescued == 1)
    }

    @Test func aJobTheMonitorMovesFromAStuckWorkersSlotGoesToAnIdleWorkerWithNoWorkerAdded() throws {
        // A job polls for the continuation it queued, in its LIFO slot, while the other worker
        // idles. The monitor moves the continuation to the global queue and wakes the idle worker,
        // which runs it: it never stood still on a queue, and no worker is added for it. Eight
        // pools at once: the idle worker often runs the job before the monitor looks at the queues
        // again, which hid the extra worker.
        let pools = (0..<8).map { _ in ThreadPool(workerCount: 2) }
        let polled = pools.map { pool in
            let continuationRan = Promise<Void>()
            let polled = Promise<Bool>()
            pool.enqueue(
                job {
                    pool.enqueue(job { continuationRan.trySucceed() })
                    let start = ContinuousClock.now
                    while !continuationRan.future.isCompleted && ContinuousClock.now - start < .seconds(10) {
                        usleep(1000)
                    }
                    polled.trySucceed(continuationRan.future.isCompleted)
                })
            return polled.future
        }
        for (pool, ran) in zip(pools, polled) {
            #expect(try ran.wait(timeout: .seconds(20)))
            #expect(pool.activitySnapshot.lifoJobsRescued == 1)
        }
        let added = pools.map { $0.activitySnapshot.starvationWorkersAdded }
        #expect(added.allSatisfy { $0 == 0 }, "workers added while one idled: \(added)")
    }

    @Test func aWorkerInAYieldLoopStealsFromABusyWorkersQueue() throws {
        // One worker yields in a loop with nothing queued, its job in its LIFO slot all along; the
        // other is busy until a job in its own queue has run. Every `globalQueueInterval` jobs the
        // yielding worker looks at the others' queues too.
        let pool = ThreadPool(workerCount: 2)
        let looping = Promise<Void>()
        let stolenRan = Promise<Void>()
        let waited = Promise<Duration>()
        let stop = ContinuousClock.now + .seconds(10)
        pool.enqueue(
            job {
                // Polled, not waited for: a worker blocking in wait() would have an extra one
                // started, which would take the job below.
                while !looping.future.isCompleted && ContinuousClock.now < stop { usleep(1000) }
                let queued = ContinuousClock.now
                pool.enqueue(job { stolenRan.trySucceed() })
                pool.enqueue(job {})  // pushes the job above out of the LIFO slot, into the queue
                while !stolenRan.future.isCompleted && ContinuousClock.now < stop { usleep(1000) }
                waited.trySucceed(ContinuousClock.now - queued)
            })
        pool.enqueue(
            .item(
                YieldLoop(pool: pool, started: looping) { stolenRan.future.isCompleted || ContinuousClock.now > stop }))
        #expect(try waited.future.wait(timeout: .seconds(20)) < .nanoseconds(ThreadPool.starvationPeriodNanoseconds))
    }

    @Test func aJobQueuedBehindAWorkersOwnWorkWakesAnIdleWorker() throws {
        // The worker has a long LIFO job to run first: the job it queues behind does not wait for
        // it, nor for the monitor, while the other worker idles.
        let pool = ThreadPool(workerCount: 2)
        try pool.waitUntilIdle()
        let behindRan = Promise<Duration>()
        let longJobDone = Promise<Void>()
        pool.enqueue(
            job {
                pool.enqueue(
                    job {  // polls rather than waits, which would have an extra worker started
                        let start = ContinuousClock.now
                        while !behindRan.future.isCompleted && ContinuousClock.now - start < .seconds(10) {
                            usleep(1000)
                        }
                        longJobDone.trySucceed()
                    })
                let queued = ContinuousClock.now
                pool.enqueueBehind(job { behindRan.trySucceed(ContinuousClock.now - queued) })
            })
        try longJobDone.future.wait(timeout: .seconds(20))
        #expect(try behindRan.future.getResult() < .nanoseconds(ThreadPool.starvationPeriodNanoseconds) / 2)
        #expect(pool.activitySnapshot.starvationWorkersAdded == 0)
    }

    @Test func aRetiredWorkerAndItsThreadStateAreFreed() throws {
        let pool = ThreadPool(workerCount: 1, extraWorkerIdleNanoseconds: 50_000_000)
        let gate = Promise<Void>()
        let blockerDone = Promise<Void>()
        let extra = Locked<(worker: WeakBox<ThreadPool.Worker>, state: WeakBox<ThreadState>)?>(nil)
        pool.enqueue(
            job {
                _ = try? gate.future.wait(timeout: .seconds(10))  // an extra worker starts at once
                blockerDone.trySucceed()
            })
        pool.enqueue(
            job {  // on the extra worker, or the first once it is back: only the extra retires
                let state = ThreadState.current
                if state.worker?.isExtra == true { extra.withLock { $0 = (WeakBox(state.worker), WeakBox(state)) } }
                gate.trySucceed()
            })
        try blockerDone.future.wait(timeout: .seconds(20))
        let deadline = ContinuousClock.now + .seconds(20)
        while pool.activitySnapshot.retirements == 0 && ContinuousClock.now < deadline { usleep(1000) }
        #expect(pool.activitySnapshot.retirements == 1)
        // The remaining worker drops its copy of the worker list at its next look for work.
        try pool.runAJob()
        while extra.withLock({ $0?.worker.value != nil || $0?.state.value != nil }) && ContinuousClock.now < deadline {
            usleep(1000)
        }
        let found = try #require(extra.withLock { $0 })
        #expect(found.worker.value == nil)
        #expect(found.state.value == nil)
    }

    @Test func injectionsCountJobsFromOutsideNotAWorkersOwn() throws {
        let pool = ThreadPool(workerCount: 1)
        let done = Promise<Void>()
        pool.enqueue(
            job {
                pool.enqueue(job {})
                for _ in 0..<10 { pool.enqueueBehind(job {}) }  // yields: passed on, not injected
                pool.enqueueBehind(job { done.trySucceed() })
            })
        try done.future.wait(timeout: .seconds(20))
        #expect(pool.activitySnapshot.injections == 1)
    }

    @Test func aWorkerReleasesWhatItPutOffOnceIdleOrOnceTheOldestHasWaitedTooLong() throws {
        let pool = ThreadPool(workerCount: 1)
        let released = Locked<[Int]>([])
        let seenInJob = Locked<[[Int]]>([])
        let done = Promise<Void>()
        pool.enqueue(
            .item(
                ClosureWorkItem {
                    pool.releasingWhenIdle { $0.append(.item(ReleaseProbe(1, into: released))) }
                    seenInJob.withLock { $0.append(released.withLock { $0 }) }
                    // Busy, never idle, past the bound: the next call releases both.
                    let busyUntil = Clock.now + ThreadPool.maxRetiredNanoseconds + 5_000_000
                    while Clock.now < busyUntil { sched_yield() }
                    pool.releasingWhenIdle { $0.append(.item(ReleaseProbe(2, into: released))) }
                    seenInJob.withLock { $0.append(released.withLock { $0 }) }
                    pool.releasingWhenIdle { $0.append(.item(ReleaseProbe(3, into: released))) }
                    seenInJob.withLock { $0.append(released.withLock { $0 }) }
                    done.trySucceed()
                }))
        try done.future.wait(timeout: .seconds(20))
        #expect(seenInJob.withLock { $0 } == [[], [1, 2], [1, 2]], "kept while busy, until the oldest was too old")
        let deadline = ContinuousClock.now + .seconds(20)
        while released.withLock({ $0.count }) < 3 && ContinuousClock.now < deadline { usleepish() }
        #expect(released.withLock { $0 } == [1, 2, 3], "the last released once the worker ran out of work")
    }

    @Test func theGlobalQueueKeepsOrderAcrossGrowthAndReleasesWhatItHoldsWhenItGoes() {
        let released = Locked<[Int]>([])
        var order: [Int] = []
        do {
            // A ring of 4 whose head has moved: growing must unwrap it in order.
            let queue = JobQueue(capacity: 4)
            for number in 0..<3 { queue.push(.item(ReleaseProbe(number, into: released))) }
            order.append(queue.pop()!.probeNumber)
            order.append(queue.pop()!.probeNumber)
            for number in 3..<12 { queue.push(.item(ReleaseProbe(number, into: released))) }
            #expect(queue.count == 10)
            for _ in 0..<5 { order.append(queue.pop()!.probeNumber) }
            #expect(released.withLock { $0.count } == 7, "a job popped and dropped is released")
        }
        #expect(order == Array(0..<7))
        #expect(released.withLock { $0.sorted() } == Array(0..<12), "the queue released the five it still held")
    }

    @Test func aParkWhoseDeadlineIsPastWhatTheClockCountsWaitsForItsUnpark() {
        // The deadline is the clock plus the timeout: a timeout that overflows it is that far off,
        // not a wrapped deadline, whose time left then overflowed (a trap).
        let parker = Parker()
        let woken = Locked<Bool?>(nil)
        let thread = spawnThread(name: "far-park", role: .other) {
            let result = parker.park(timeoutNanoseconds: .max)
            woken.withLock { $0 = result }
        }
        usleep(50_000)  // far past the spin before the park
        parker.unpark()
        pthread_join(thread, nil)
        #expect(woken.withLock { $0 } == true, "the park timed out before its unpark")
    }

    @Test func theSharedPoolReportsItsActivity() throws {
        let futures = (0..<1000).map { index in Future.run { index } }
        for future in futures { _ = try future.wait(timeout: .seconds(10)) }
        let statistics = RuntimeStatistics.current
        #expect(statistics.poolActivity.injections >= 1000)
        #expect(statistics.monitorThreads == 1)
    }
}

/// A job that notes its number when it is released.
final class ReleaseProbe: WorkItem {
    let number: Int
    let released: Locked<[Int]>

    init(_ number: Int, into released: Locked<[Int]>) {
        self.number = number
        self.released = released
        super.init()
    }

    deinit { released.withLock { $0.append(number) } }
}

// Safe to share: immutable.
extension ReleaseProbe: @unchecked Sendable {}

/// A job of a binary tree of jobs: queues its two children until `maxDepth`.
final class TreeJob: WorkItem {
    let pool: ThreadPool
    let depth: Int
    let maxDepth: Int
    let ran: Counter
    let done: Promise<Void>
    let total: Int
    init(pool: ThreadPool, depth: Int, maxDepth: Int, ran: Counter, done: Promise<Void>, total: Int) {
        self.pool = pool
        self.depth = depth
        self.maxDepth = maxDepth
        self.ran = ran
        self.done = done
        self.total = total
        super.init()
    }
    override func run() {
        ran.increment()
        if ran.count >= total { done.trySucceed() }
        guard depth < maxDepth else { return }
        for _ in 0..<2 {
            pool.enqueue(
                .item(TreeJob(pool: pool, depth: depth + 1, maxDepth: maxDepth, ran: ran, done: done, total: total)))
        }
    }
}

// Safe to share: immutable.
extension TreeJob: @unchecked Sendable {}

/// A closure as a job.
func job(_ body: @escaping @Sendable () -> Void) -> Job { .item(ClosureWorkItem(body)) }

/// A weak reference that can be shared.
final class WeakBox<Object: AnyObject>: @unchecked Sendable {
    weak var value: Object?
    init(_ value: Object?) { self.value = value }
}

/// A job that queues itself behind queued work, as `while !stop() { await Future.yield() }` does.
final class YieldLoop: WorkItem {
    let pool: ThreadPool
    let started: Promise<Void>
    let stop: @Sendable () -> Bool

    init(pool: ThreadPool, started: Promise<Void>, stop: @escaping @Sendable () -> Bool) {
        self.pool = pool
        self.started = started
        self.stop = stop
        super.init()
    }

    override func run() {
        started.trySucceed()
        if !stop() { pool.enqueueBehind(.item(self)) }
    }
}

// Safe to share: immutable.
extension YieldLoop: @unchecked Sendable {}

extension ThreadPool {
    /// Queues an empty job from outside and waits until it has run (starting the workers first).
    func runAJob() throws {
        let done = Promise<Void>()
        enqueue(job { done.trySucceed() })
        try done.future.wait(timeout: .seconds(20))
    }

    /// Waits until every worker, started by a first job, is parked.
    func waitUntilIdle() throws {
        try runAJob()
        let deadline = ContinuousClock.now + .seconds(20)
        while counts.idle < targetWorkerCount && ContinuousClock.now < deadline { usleep(1000) }
        usleep(20_000)  // past the spin before a park
    }
}

extension LocalQueue {
    /// Queues copies of `jobs` as one batch, as a worker queues what it took from the global
    /// queue; `false`, queuing none, if they do not fit.
    func push(copiesOf jobs: [Job]) -> Bool {
        let words = jobs.map { $0.retainedWord() }
        let queued = words.withUnsafeBufferPointer { push(takingRetainedWords: $0.baseAddress!, count: $0.count) }
        if !queued { words.forEach(Job.releaseWord) }
        return queued
    }
}
