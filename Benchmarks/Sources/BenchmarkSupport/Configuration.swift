import Benchmark
import Foundation

/// How many operations one iteration of a benchmark performs, recorded as the benchmark's
/// `operations` tag so that `Benchmarks/compare` and `Benchmarks/check-allocations` can turn the
/// exported per-iteration samples into figures per operation. The tag is part of the name the
/// tool prints and exports: "Await completed Future: TaskMachine (operations: 1000000)".
public enum Operations {
    /// One iteration is one operation.
    case one
    /// One iteration runs `benchmark.scaledIterations`, that is `factor.rawValue` operations.
    case scaled(BenchmarkScalingFactor)
    /// One iteration runs this many operations in a loop of its own (100,000 delays, say).
    case batch(Int)

    var scalingFactor: BenchmarkScalingFactor {
        switch self {
        case .one, .batch: .one
        case .scaled(let factor): factor
        }
    }

    var count: Int {
        switch self {
        case .one: 1
        case .scaled(let factor): factor.rawValue
        case .batch(let count): count
        }
    }
}

/// Whether this run only counts allocations (`Benchmarks/check-allocations` sets
/// `TASKMACHINE_BENCHMARK_QUICK=1`): a warm-up and a few short iterations per benchmark.
public let isQuickRun = ProcessInfo.processInfo.environment["TASKMACHINE_BENCHMARK_QUICK"] == "1"

/// The metrics every benchmark reports: time and heap allocations.
public let standardMetrics: [BenchmarkMetric] = [.wallClock, .mallocCountTotal]

/// A configuration for a benchmark of `operations` operations per iteration.
///
/// - Parameters:
///   - seconds: how long to sample in a full run; a quick run samples three iterations at most.
///   - extraMetrics: custom metrics the benchmark records itself, beside time and allocations.
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
        warmupIterations: 1,
        scalingFactor: operations.scalingFactor,
        maxDuration: isQuickRun ? .milliseconds(200) : .seconds(seconds),
        maxIterations: isQuickRun ? 3 : maxIterations
    )
}
