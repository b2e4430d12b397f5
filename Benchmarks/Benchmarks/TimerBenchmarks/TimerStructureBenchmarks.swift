import Benchmark
import BenchmarkSupport
@_spi(Benchmarks) import TaskMachine

// The two designs the issue named for O(1) timers, as data structures over the same real timers:
// TaskMachine's hierarchical timing wheel (tokio's layout), and .NET's timer queue, an unordered
// short list of the timers due within 333 ms, walked whole at every pass, and a long list for the
// rest, looked at when that threshold passes (`TimerLists`, one shard). Each is driven directly
// (`TimerStructureBenchmark`): no lock, no clock, no thread, no timer firing; time goes in ticks of
// 1 ms, as in the timer queue.
//
// - insert + remove: one timer inserted and removed again while 100,000 are pending, spread over
//   10 s (a timeout that is cancelled, the common case); also records the heap the structure keeps
//   for those 100,000.
// - due together: 100,000 timers made due at one tick 1 s ahead (untimed), then the timer thread's
//   passes until they have all expired: the wheel cascades them from the level a second ahead
//   files them in, the lists move them from the long list to the short one; what a burst of delays
//   due together costs the timer thread.
// - the pass at the deadline: the same, but only the pass at the timers' tick is timed, the one
//   that decides how late they fire; what a structure does earlier (the wheel's cascade, when the
//   timers' slot of level 1 starts) is not.
// - timer-thread passes: the timers spread evenly over 10 s, and the passes a timer thread makes
//   as they expire, each at the structure's next deadline, as the timer queue's thread sleeps until
//   then: all the work a timer thread does for them over their life, per timer. This is where the
//   designs differ: the lists walk the short list at every pass, the wheel moves each timer down a
//   level or two.

/// The structure the benchmark that runs works on, made in its setup (each benchmark runs in a
/// process of its own).
nonisolated(unsafe) var timerStructure: TimerStructureBenchmark?

/// Timers pending in the insert + remove benchmarks and due together in the burst ones (a quick
/// run, counting allocations only, has 1,000).
let structureTimerCount = isQuickRun ? 1_000 : 100_000

/// The heap the structure keeps for the pending timers, in bytes: its arrays, not the timers.
let structureHeapBytes = BenchmarkMetric.custom(
    "structureHeapBytes", polarity: .prefersSmaller, useScalingFactor: false)

/// The two structures, as each benchmark's name ends.
let timerStructures: [(TimerStructureBenchmark.Structure, String)] = [
    (.wheel, "TaskMachine, timing wheel"),
    (.lists, "peer, .NET-style short and long lists"),
]

func timerStructureBenchmarks() {
    for (structure, side) in timerStructures {
        Benchmark(
            "Timer structure, insert + remove with 100,000 pending: \(side)",
            configuration: configuration(.batch(1_000_000, quick: 1_000), extraMetrics: [structureHeapBytes])
        ) { benchmark in
            guard let timers = timerStructure else { fatalError("made in setup") }
            benchmark.startMeasurement()
            blackHole(timers.insertAndRemove(repetitions: benchmark.operations))
            benchmark.stopMeasurement()
            benchmark.measurement(structureHeapBytes, timers.heapBytes)
        } setup: {
            let timers = TimerStructureBenchmark(structure, timerCount: structureTimerCount)
            timers.spreadTimers()
            timerStructure = timers
        } teardown: {
            timerStructure = nil
        }

        expiryBenchmark(
            "Timer structure, 100,000 due together 1 s ahead, every pass: \(side)", structure,
            timerCount: structureTimerCount,
            configuration: configuration(.batch(100_000, quick: 1_000), maxIterations: 1_000)
        ) {
            $0.scheduleTogether()
        } expire: {
            $0.expireTogether()
        }

        expiryBenchmark(
            "Timer structure, 100,000 due together 1 s ahead, the pass at the deadline: \(side)", structure,
            timerCount: structureTimerCount,
            configuration: configuration(.batch(100_000, quick: 1_000), maxIterations: 1_000)
        ) {
            $0.scheduleTogether()
            precondition($0.prepareForTogether() == 0, "none is due before the deadline")
        } expire: {
            $0.expireTogether()
        }

        for (count, quick, label) in [(100_000, 1_000, "100,000"), (1_000, 100, "1,000")] {
            expiryBenchmark(
                "Timer structure, timer-thread passes across 10 s of \(label) timers: \(side)", structure,
                timerCount: isQuickRun ? quick : count,
                configuration: configuration(.batch(count, quick: quick), seconds: 5, maxIterations: 50)
            ) {
                $0.spreadTimers()
            } expire: {
                $0.expireAcrossSpan()
            }
        }
    }
}

/// A benchmark that links the timers of `structure` with `link`, untimed, then times `expire`, which
/// must expire every one of them.
func expiryBenchmark(
    _ name: String, _ structure: TimerStructureBenchmark.Structure, timerCount: Int,
    configuration: Benchmark.Configuration, link: @escaping (TimerStructureBenchmark) -> Void,
    expire: @escaping (TimerStructureBenchmark) -> Int
) {
    Benchmark(name, configuration: configuration) { benchmark in
        guard let timers = timerStructure else { fatalError("made in setup") }
        link(timers)
        benchmark.startMeasurement()
        let expired = expire(timers)
        benchmark.stopMeasurement()
        precondition(expired == benchmark.operations, "every timer expired")
    } setup: {
        timerStructure = TimerStructureBenchmark(structure, timerCount: timerCount)
    } teardown: {
        timerStructure = nil
    }
}
