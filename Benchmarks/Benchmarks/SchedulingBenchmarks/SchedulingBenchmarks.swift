import Benchmark
import BenchmarkSupport
import CBenchmarkShims
import Dispatch
import NIOCore
import NIOPosix
import TaskMachine

// Work handed to other threads, each beside its peer: throughput of short jobs on two workers,
// yields, and the round trip of a completion to another thread and back. Every benchmark here
// crosses threads, so each arms a watchdog: a lost wake-up fails the benchmark instead of hanging.

let benchmarks: @Sendable () -> Void = {
    runThroughputBenchmarks()
    yieldBenchmarks()
    roundTripBenchmarks()
}

/// Seconds after which a benchmark process that is still running is ended.
let watchdogSeconds: UInt32 = 120
/// How long a single wait may take before the benchmark fails.
let waitTimeout = Duration.seconds(30)

func armWatchdog() { abortIfStillRunning(after: watchdogSeconds) }

// MARK: Throughput of short jobs

/// Jobs per iteration: queued all at once, then all awaited.
let jobsPerIteration = 1_000

func runThroughputBenchmarks() {
    let config = configuration(.scaled(.kilo))

    Benchmark("Run on the pool: TaskMachine, Future.run + wait", configuration: config) { benchmark throws in
        var futures: [Future<Int>] = []
        futures.reserveCapacity(jobsPerIteration)
        var sum = 0
        for index in 0..<benchmark.operations {
            futures.append(Future.run { identity(index) })
        }
        for future in futures { sum &+= try future.wait(timeout: waitTimeout) }
        futures.removeAll(keepingCapacity: true)
        blackHole(sum)
    } setup: {
        armWatchdog()
    }

    // The body takes the index as its argument instead of capturing it: no closure context.
    Benchmark("Run on the pool: TaskMachine, Future.run(with:) + wait", configuration: config) { benchmark throws in
        var futures: [Future<Int>] = []
        futures.reserveCapacity(jobsPerIteration)
        var sum = 0
        for index in 0..<benchmark.operations {
            futures.append(Future.run(with: index) { identity($0) })
        }
        for future in futures { sum &+= try future.wait(timeout: waitTimeout) }
        futures.removeAll(keepingCapacity: true)
        blackHole(sum)
    } setup: {
        armWatchdog()
    }

    // Queued and awaited from a method running on the pool, as the Swift tasks below are created
    // and awaited from a task on Swift's pool: the two workers do all of it, with no third thread.
    Benchmark("Run on the pool: TaskMachine, Future.run(with:) + await in a method on the pool", configuration: config) {
        benchmark throws in
        blackHole(try RunAndAwait.start(count: benchmark.operations).wait(timeout: waitTimeout))
    } setup: {
        armWatchdog()
    }

    Benchmark("Run on the pool: peer, Task { } + await value", configuration: config) { benchmark async in
        var tasks: [Task<Int, Never>] = []
        tasks.reserveCapacity(jobsPerIteration)
        var sum = 0
        for index in 0..<benchmark.operations {
            tasks.append(Task { identity(index) })
        }
        for task in tasks { sum &+= await task.value }
        blackHole(sum)
    } setup: {
        armWatchdog()
    }

    Benchmark("Run on the pool: peer, DispatchQueue.global().async + group wait", configuration: config) {
        benchmark in
        let group = DispatchGroup()
        let queue = DispatchQueue.global()
        for index in 0..<benchmark.operations {
            queue.async(group: group) { blackHole(identity(index)) }
        }
        precondition(group.wait(timeout: .now() + .seconds(30)) == .success, "Dispatch jobs did not finish")
    } setup: {
        armWatchdog()
    }

    // Waiting on each NIO future from outside its loop would hop to the loop once per future (an
    // off-loop `whenComplete` is itself submitted to the loop): NIO's way is to gather them first.
    Benchmark("Run on the pool: peer, NIO eventLoop.submit on 2 loops + andAllSucceed", configuration: config) {
        benchmark throws in
        var futures: [EventLoopFuture<Int>] = []
        futures.reserveCapacity(jobsPerIteration)
        for index in 0..<benchmark.operations {
            futures.append(twoLoops.next().submit { identity(index) })
        }
        try EventLoopFuture.andAllSucceed(futures, on: twoLoops.next()).wait()
    } setup: {
        armWatchdog()
    }
}

/// NIO's peer of our pool: one event loop per core, as NIO's own default is.
let twoLoops = MultiThreadedEventLoopGroup(numberOfThreads: 2)

/// An opaque source of values, so the optimizer cannot fold the work away.
@inline(never)
func identity(_ value: Int) -> Int { value }

// MARK: Yields

func yieldBenchmarks() {
    // Long loops: starting the method on the pool and waiting for it from the benchmark thread
    // cost two wake-ups across threads (tens of microseconds on these VMs), which a loop of a
    // thousand yields would spread over each yield. Both sides run the same long loop.
    let config = configuration(.batch(100_000, quick: 1_000))

    // A method on the pool that yields again and again: each yield queues it and the pool runs it
    // again, the bounce off the scheduler that `Task.yield()` makes too.
    Benchmark("Yield: TaskMachine, await Future.yield() in a builder method", configuration: config) {
        benchmark throws in
        let method = YieldLoop.start(count: benchmark.operations)
        blackHole(try method.wait(timeout: waitTimeout))
    } setup: {
        armWatchdog()
    }

    Benchmark("Yield: peer, await Task.yield()", configuration: config) { benchmark async in
        for _ in 0..<benchmark.operations { await Task.yield() }
    } setup: {
        armWatchdog()
    }
}

/// ```
/// async Future<Int> RunAndAwait(count) {
///     await Future.yield()  // onto the pool
///     let futures = (0..<count).map { Future.run(with: $0) { identity($0) } }
///     var sum = 0
///     for future in futures { sum &+= await future }
///     return sum
/// }
/// ```
struct RunAndAwait: AsyncStateMachine {
    var builder = FutureMethodBuilder<Int>()
    let count: Int
    /// 0: not started; 1: on the pool; 2: resumed from awaiting `futures[index]`.
    var state = 0
    var futures: [Future<Int>] = []
    var index = 0
    var sum = 0
    var awaiter: FutureAwaiter<Int>?

    mutating func moveNext() {
        do {
            switch state {
            case 0:
                state = 1
                awaitUnsafeOnCompleted(Future.yield().getAwaiter())
                return
            case 1:
                futures.reserveCapacity(count)
                for item in 0..<count { futures.append(Future.run(with: item) { identity($0) }) }
            default:
                sum &+= try awaiter.take()!.getResult()
                index += 1
            }
            while index < futures.count {
                let next = futures[index].getAwaiter()
                if !next.isCompleted {
                    state = 2
                    awaiter = next
                    awaitUnsafeOnCompleted(next)
                    return
                }
                sum &+= try next.getResult()
                index += 1
            }
            futures = []
            builder.setResult(sum)
        } catch {
            builder.setError(error)
        }
    }

    static func start(count: Int) -> Future<Int> {
        var machine = RunAndAwait(count: count)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

/// `async Future<Int> YieldLoop(count) { for i in 0..<count { await Future.yield() }; return count }`
struct YieldLoop: AsyncStateMachine {
    var builder = FutureMethodBuilder<Int>()
    let count: Int
    var done = 0
    var suspended = false

    mutating func moveNext() {
        if suspended {  // resumed after a yield
            suspended = false
            done += 1
        }
        if done < count {
            suspended = true
            awaitUnsafeOnCompleted(Future.yield().getAwaiter())
            return
        }
        builder.setResult(done)
    }

    static func start(count: Int) -> Future<Int> {
        var machine = YieldLoop(count: count)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

// MARK: Round trip to another thread

func roundTripBenchmarks() {
    let config = configuration(.scaled(.kilo))

    // The benchmark thread completes a promise whose continuation, a suspended method, runs on a
    // pool worker; the method's completion wakes the benchmark thread blocked in `wait`. Two
    // hand-offs between threads per round trip.
    Benchmark("Round trip: TaskMachine, promise -> method on a worker -> wait", configuration: config) {
        benchmark throws in
        var sum = 0
        for index in 0..<benchmark.operations {
            let ping = Promise<Int>(runContinuationsAsynchronously: true)
            let echo = AddOne.start(ping.future)
            try ping.succeed(index)
            sum &+= try echo.wait(timeout: waitTimeout)
        }
        blackHole(sum)
    } setup: {
        armWatchdog()
    }

    // A Swift task suspends in `withUnsafeContinuation`; a Dispatch queue's thread resumes it, and
    // the task goes on on a cooperative-pool thread. Two hand-offs per round trip.
    Benchmark("Round trip: peer, withUnsafeContinuation resumed from a Dispatch thread", configuration: config) {
        benchmark async in
        let echoQueue = DispatchQueue(label: "echo")
        var sum = 0
        for index in 0..<benchmark.operations {
            sum &+= await withUnsafeContinuation { continuation in
                echoQueue.async { continuation.resume(returning: index) }
            }
        }
        blackHole(sum)
    } setup: {
        armWatchdog()
    }

    // The machine's limit: two threads taking turns on one futex word, each parking at once.
    Benchmark("Round trip: peer, raw futex ping-pong between two threads", configuration: config) { benchmark in
        futexPingPong(benchmark, spins: 0)
    } setup: {
        armWatchdog()
    }

    // The same with a short spin before parking, as our pool's workers do.
    Benchmark("Round trip: peer, futex ping-pong spinning before it parks", configuration: config) { benchmark in
        futexPingPong(benchmark, spins: 2_000)
    } setup: {
        armWatchdog()
    }
}

/// Times `benchmark.operations` futex round trips, and not the start of the helper thread: our
/// round trip's workers are running before it is timed, and a thread's start until it runs (20 to
/// 1,000 µs on these VMs) is as long as a thousand round trips at their fastest (270 ns each).
func futexPingPong(_ benchmark: Benchmark, spins: Int32) {
    guard let game = cfutex_game_start(spins) else { preconditionFailure("the futex helper did not start") }
    benchmark.startMeasurement()
    let elapsed = cfutex_game_play(game, Int64(benchmark.operations), 30_000_000_000)
    benchmark.stopMeasurement()
    cfutex_game_end(game)
    precondition(elapsed >= 0, "the futex ping-pong timed out")
}
