import Benchmark
import BenchmarkSupport
import Dispatch
import NIOCore
import NIOPosix
import Synchronization
import TaskMachine

// 100,000 delays pending at once, each cancelled on its own: how fast they are made and cancelled,
// what each costs in memory while it waits, and how many threads hold them. Beside the peers:
// Swift `Task.sleep` (one task per delay, cancelled through the task), NIO `scheduleTask` on one
// event loop, and Dispatch `asyncAfter` with a cancellable work item.
//
// Every iteration creates the delays, reads the heap and the threads while all are pending, and
// cancels them all; the time is that of the whole (the two readings cost microseconds and a few
// dozen allocations, nothing against 100,000 delays). Waiting until cancelled peers have really
// finished comes after, unmeasured.

let benchmarks: @Sendable () -> Void = {
    taskMachineDelays()
    taskMachineDelaysWithSources()
    taskMachinePlainDelays()
    taskSleepDelays()
    nioScheduledDelays()
    dispatchDelays()
    dueTogetherBenchmarks()
    timerStructureBenchmarks()
}

/// Delays pending at once in one iteration (a quick run, counting allocations only, makes 200).
let delayCount = 100_000
/// Far enough away that none fires during the benchmark.
let delayDuration = Duration.seconds(3_600)

/// Heap bytes the delays keep while pending, per delay (glibc's count of bytes in use, less the
/// header the malloc-counting interposer adds to each allocation; see `HeapReading`). Recorded
/// only in a run that counts allocations: the header is there in every run, but its count is known
/// only while the interposer counts.
let bytesPerPendingDelay = BenchmarkMetric.custom(
    "bytesPerPendingDelay", polarity: .prefersSmaller, useScalingFactor: false)
/// Threads the process has while the delays are pending, beyond those it had before the
/// benchmark's first delay (and before its NIO loop started).
let threadsUsed = BenchmarkMetric.custom("threadsUsed", polarity: .prefersSmaller, useScalingFactor: false)

var delayConfiguration: Benchmark.Configuration {
    configuration(
        .batch(delayCount, quick: 200), seconds: 5, maxIterations: 10,
        extraMetrics: [bytesPerPendingDelay, threadsUsed])
}

/// Threads before the benchmark made anything; read in each benchmark's setup.
nonisolated(unsafe) var threadsAtStart = 0

/// Records the heap and thread readings taken while the delays are pending.
func recordPending(_ benchmark: Benchmark, heapBefore: HeapReading) {
    if !isTimeOnlyRun {
        benchmark.measurement(bytesPerPendingDelay, HeapReading.now().bytesKept(since: heapBefore) / benchmark.operations)
    }
    benchmark.measurement(threadsUsed, threadCount() - threadsAtStart)
}

func prepare() {
    abortIfStillRunning(after: 180)
    threadsAtStart = threadCount()
}

// MARK: TaskMachine

func taskMachineDelays() {
    cancelledDelays("100,000 delays: TaskMachine, Future.delay + Delay.cancel()") {
        Future.delay(delayDuration)
    } cancel: { delay in
        delay.cancel()
    } hasEnded: { delay in
        delay.isCompleted
    }
}

/// The .NET shape: each delay takes a token of a source of its own, and is cancelled through it.
func taskMachineDelaysWithSources() {
    cancelledDelays("100,000 delays: TaskMachine, Future.delay + CancellationTokenSource") {
        let source = CancellationTokenSource()
        return (source, Future.delay(delayDuration, cancellation: source.token))
    } cancel: { source, _ in
        source.cancel()
    } hasEnded: { _, delay in
        delay.isCompleted
    }
}

/// A benchmark that makes `operations` delays with `make`, records what they keep while pending,
/// then cancels each with `cancel`; `Handle` is what cancelling one needs.
func cancelledDelays<Handle>(
    _ name: String, make: @escaping () -> Handle, cancel: @escaping (Handle) -> Void,
    hasEnded: @escaping (Handle) -> Bool
) {
    Benchmark(name, configuration: delayConfiguration) { benchmark throws in
        let delayCount = benchmark.operations
        var handles: [Handle] = []
        handles.reserveCapacity(delayCount)
        let heapBefore = HeapReading.now()

        benchmark.startMeasurement()
        for _ in 0..<delayCount { handles.append(make()) }
        recordPending(benchmark, heapBefore: heapBefore)
        precondition(RuntimeStatistics.current.timerThreads == 1, "expected one timer thread")

        for handle in handles { cancel(handle) }
        benchmark.stopMeasurement()

        // Cancelled before cancel() returned: nothing left to wait for.
        precondition(handles.allSatisfy(hasEnded), "a cancelled delay is still pending")
    } setup: {
        prepare()
    }
}

/// The footprint of a delay with no cancellation: its object and its place in the wheel. Not
/// comparable in time with the rows above (nothing is cancelled; the delays are left to fire).
func taskMachinePlainDelays() {
    Benchmark("100,000 delays: TaskMachine, Future.delay, not cancellable", configuration: delayConfiguration) {
        benchmark throws in
        let delayCount = benchmark.operations
        var delays: [Future<Void>] = []
        delays.reserveCapacity(delayCount)
        let heapBefore = HeapReading.now()
        let deadline = ContinuousClock.now + .milliseconds(200)

        benchmark.startMeasurement()
        for _ in 0..<delayCount { delays.append(Future.delay(until: deadline)) }
        recordPending(benchmark, heapBefore: heapBefore)
        benchmark.stopMeasurement()

        for delay in delays { try delay.wait(timeout: .seconds(60)) }
    } setup: {
        prepare()
    }
}

// MARK: Swift Concurrency

func taskSleepDelays() {
    Benchmark("100,000 delays: peer, Task { Task.sleep } + task.cancel()", configuration: delayConfiguration) {
        benchmark async in
        let sleeping = SharedCounter()
        let delayCount = benchmark.operations
        var tasks: [Task<Void, Never>] = []
        tasks.reserveCapacity(delayCount)
        let heapBefore = HeapReading.now()

        benchmark.startMeasurement()
        for _ in 0..<delayCount {
            tasks.append(
                Task {
                    sleeping.value.add(1, ordering: .relaxed)
                    try? await Task.sleep(for: delayDuration)
                })
        }
        // The tasks start on the cooperative pool: wait until every one has reached its sleep.
        while sleeping.value.load(ordering: .relaxed) < delayCount { await Task.yield() }
        recordPending(benchmark, heapBefore: heapBefore)

        for task in tasks { task.cancel() }
        benchmark.stopMeasurement()

        for task in tasks { await task.value }
    } setup: {
        prepare()
    }
}

// MARK: SwiftNIO

func nioScheduledDelays() {
    Benchmark("100,000 delays: peer, NIO scheduleTask + cancel on one loop", configuration: delayConfiguration) {
        benchmark throws in
        let loop = oneLoop.next()
        let delayCount = benchmark.operations
        var scheduled: [Scheduled<Void>] = []
        scheduled.reserveCapacity(delayCount)
        let heapBefore = HeapReading.now()

        benchmark.startMeasurement()
        for _ in 0..<delayCount {
            scheduled.append(loop.scheduleTask(in: .seconds(3_600)) {})
        }
        // Scheduling from outside the loop queues the tasks to it; let the loop take them in.
        try loop.submit {}.wait()
        recordPending(benchmark, heapBefore: heapBefore)

        for task in scheduled { task.cancel() }
        benchmark.stopMeasurement()

        try loop.submit {}.wait()
    } setup: {
        prepare()
        _ = oneLoop  // started after the thread count, so its thread counts as used
    }
}

/// NIO's timers live on an event loop; one loop holds them all.
let oneLoop = MultiThreadedEventLoopGroup(numberOfThreads: 1)

// MARK: Dispatch

func dispatchDelays() {
    Benchmark(
        "100,000 delays: peer, DispatchQueue.asyncAfter + DispatchWorkItem.cancel", configuration: delayConfiguration
    ) { benchmark in
        let queue = DispatchQueue(label: "delays")
        let delayCount = benchmark.operations
        var items: [DispatchWorkItem] = []
        items.reserveCapacity(delayCount)
        let heapBefore = HeapReading.now()

        benchmark.startMeasurement()
        for _ in 0..<delayCount {
            let item = DispatchWorkItem {}
            items.append(item)
            queue.asyncAfter(deadline: .now() + .seconds(3_600), execute: item)
        }
        recordPending(benchmark, heapBefore: heapBefore)

        for item in items { item.cancel() }
        benchmark.stopMeasurement()
    } setup: {
        prepare()
    }
}

// MARK: 100,000 delays due at the same instant

// Every iteration sets 100,000 delays (200 in a quick run) that all end at one deadline a second
// away, each with a continuation that counts it, and waits until the last has run; the metric is
// how late that last continuation ran after the deadline. All four take the deadline as an
// instant: `ContinuousClock`'s for TaskMachine and Swift, converted once per iteration to NIO's
// and Dispatch's clocks. (A relative delay computed at each call would let a preemption between
// reading the clock and making the call push single delays back, and measure that instead.) A
// delay that never fires would leave the benchmark waiting for ever: each arms the watchdog too.

/// How late, after the shared deadline, the last of the delays ran its continuation.
let lastFiredLate = BenchmarkMetric.custom(
    "lastFiredLateMicroseconds", polarity: .prefersSmaller, useScalingFactor: false)

/// Far enough for the slowest peer to set 100,000 delays before the first is due.
let dueIn: Duration = isQuickRun ? .milliseconds(50) : .seconds(1)

var dueTogetherConfiguration: Benchmark.Configuration {
    configuration(.batch(delayCount, quick: 200), seconds: 10, maxIterations: 5, extraMetrics: [lastFiredLate])
}

/// Counts fired delays; the last to fire reads the clock and lets the benchmark go on.
final class LastFired: Sendable {
    let expected: Int
    let deadline: ContinuousClock.Instant
    private let fired = Atomic<Int>(0)
    private let lateness = Atomic<Int>(0)
    private let done = DispatchSemaphore(value: 0)

    init(expected: Int, deadline: ContinuousClock.Instant) {
        self.expected = expected
        self.deadline = deadline
    }

    func fire() {
        guard fired.add(1, ordering: .acquiringAndReleasing).newValue == expected else { return }
        let late = ContinuousClock.now - deadline
        lateness.store(Int(late.totalMicroseconds), ordering: .releasing)
        done.signal()
    }

    /// Waits for the last delay; returns how late it fired, in microseconds.
    func waitForAll() -> Int {
        done.wait()
        return lateness.load(ordering: .acquiring)
    }

    /// Waits for the last delay without blocking a thread of Swift's cooperative pool (the tasks
    /// being measured need both); returns how late it fired, in microseconds.
    func waitForAllAsync() async -> Int {
        while fired.load(ordering: .acquiring) < expected { try? await Task.sleep(for: .milliseconds(1)) }
        done.wait()  // signalled already
        return lateness.load(ordering: .acquiring)
    }

    /// What is left until the deadline, to convert it to another clock.
    var remaining: Duration { max(.zero, deadline - .now) }
}

extension Duration {
    var totalMicroseconds: Int64 {
        components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000
    }
}

func dueTogetherBenchmarks() {
    let name = "100,000 delays due together"
    Benchmark("\(name): TaskMachine, Future.delay(until:) + continuation", configuration: dueTogetherConfiguration) {
        benchmark in
        let fired = LastFired(expected: benchmark.operations, deadline: .now + dueIn)
        for _ in 0..<benchmark.operations {
            Future.delay(until: fired.deadline).getAwaiter().onCompleted { fired.fire() }
        }
        benchmark.measurement(lastFiredLate, fired.waitForAll())
    } setup: {
        prepare()
    }

    Benchmark("\(name): peer, Task { Task.sleep(until:) }", configuration: dueTogetherConfiguration) {
        benchmark async in
        let fired = LastFired(expected: benchmark.operations, deadline: .now + dueIn)
        for _ in 0..<benchmark.operations {
            Task {
                try? await Task.sleep(until: fired.deadline, clock: .continuous)
                fired.fire()
            }
        }
        benchmark.measurement(lastFiredLate, await fired.waitForAllAsync())
    } setup: {
        prepare()
    }

    Benchmark("\(name): peer, NIO scheduleTask on one loop", configuration: dueTogetherConfiguration) {
        benchmark in
        let loop = oneLoop.next()
        let fired = LastFired(expected: benchmark.operations, deadline: .now + dueIn)
        let deadline = NIODeadline.now() + .nanoseconds(fired.remaining.totalMicroseconds * 1_000)
        for _ in 0..<benchmark.operations {
            loop.scheduleTask(deadline: deadline) { fired.fire() }
        }
        benchmark.measurement(lastFiredLate, fired.waitForAll())
    } setup: {
        prepare()
    }

    Benchmark("\(name): peer, DispatchQueue.global().asyncAfter", configuration: dueTogetherConfiguration) {
        benchmark in
        let fired = LastFired(expected: benchmark.operations, deadline: .now + dueIn)
        let deadline = DispatchTime.now() + .nanoseconds(Int(fired.remaining.totalMicroseconds * 1_000))
        for _ in 0..<benchmark.operations {
            DispatchQueue.global().asyncAfter(deadline: deadline) { fired.fire() }
        }
        benchmark.measurement(lastFiredLate, fired.waitForAll())
    } setup: {
        prepare()
    }
}

/// Counts the tasks that have started.
final class SharedCounter: Sendable {
    let value = Atomic<Int>(0)
}
