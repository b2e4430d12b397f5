import Benchmark
import Foundation

/// How many operations one iteration of a benchmark performs, recorded as the benchmark's
/// `operations` tag so that `Benchmarks/compare` and `Benchmarks/check-allocations` can turn the
/// exported per-iteration samples into figures per operation. The tag is part of the name the
/// tool prints and exports: "Suspend once: peer, Task { } + await value (operations: 1000)".
///
/// A quick run does fewer operations per iteration: the tool reports a count of 10,000 or more in
/// thousands, rounded, and its histograms hold counts below 2,048 exactly, so the allocation gate
/// keeps an iteration's allocations small enough to be counted one by one.
public enum Operations {
    /// `factor.rawValue` operations in a full run; 100 (1,000 for `.mega`) in a quick one.
    case scaled(BenchmarkScalingFactor)
    /// This many operations in a loop of its own (100,000 delays, say), `quick` in a quick run.
    case batch(Int, quick: Int)

    var scalingFactor: BenchmarkScalingFactor {
        switch self {
        case .scaled(let factor): isQuickRun ? .one : factor
        case .batch: .one
        }
    }

    var count: Int {
        switch self {
        case .scaled(let factor): isQuickRun ? (factor == .mega ? 1_000 : min(factor.rawValue, 100)) : factor.rawValue
        case .batch(let count, let quick): isQuickRun ? quick : count
        }
    }
}

extension Benchmark {
    /// The operations one iteration performs: loop over `0..<benchmark.operations`.
    public var operations: Int {
        Int(configuration.tags["operations"] ?? "1") ?? 1
    }
}

/// Whether this run only counts allocations (`Benchmarks/check-allocations` sets
/// `TASKMACHINE_BENCHMARK_QUICK=1`): a warm-up and a few short iterations per benchmark.
public let isQuickRun = ProcessInfo.processInfo.environment["TASKMACHINE_BENCHMARK_QUICK"] == "1"

/// Whether this run only times the benchmarks (`Benchmarks/compare` sets
/// `TASKMACHINE_BENCHMARK_TIME_ONLY=1` for its timed passes, and counts allocations in a pass of
/// its own): counting adds a little to every allocation and free, on both sides of a comparison, in
/// proportion to how many each makes.
public let isTimeOnlyRun = ProcessInfo.processInfo.environment["TASKMACHINE_BENCHMARK_TIME_ONLY"] == "1"

/// The metrics every benchmark reports: time and heap allocations (time alone in a timed-only run).
public let standardMetrics: [BenchmarkMetric] = isTimeOnlyRun ? [.wallClock] : [.wallClock, .mallocCountTotal]

/// A configuration for a benchmark of `operations` operations per iteration.
///
/// - Parameters:
///   - seconds: how long to sample in a full run; a quick run samples three iterations at most.
///   - extraMetrics: custom metrics the benchmark records itself, beside time and allocations.
///     They are reported in plain units: left to pick its own, the tool reports a value of 10,000
///     or more in thousands, rounded (a lateness of 10,400 µs would read 10 ms).
public func configuration(
    _ operations: Operations,
    seconds: Int = 2,
    maxIterations: Int = 1_000_000,
    extraMetrics: [BenchmarkMetric] = []
) -> Benchmark.Configuration {
    Benchmark.Configuration(
        metrics: standardMetrics + extraMetrics,
        tags: ["operations": String(operations.count)],
        timeUnits: .nanoseconds,
        units: Dictionary(uniqueKeysWithValues: extraMetrics.map { ($0, .count) }),
        warmupIterations: 1,
        scalingFactor: operations.scalingFactor,
        maxDuration: isQuickRun ? .milliseconds(200) : .seconds(seconds),
        maxIterations: isQuickRun ? 3 : maxIterations
    )
}
