// swift-tools-version:6.1
import Foundation
import PackageDescription

// The package is found by path; its identity is the name of the folder it was cloned into.
let rootPackage = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .lastPathComponent

/// A benchmark suite: an executable target that the benchmark plugin finds under `Benchmarks/<name>`.
func suite(_ name: String, dependencies: [Target.Dependency]) -> Target {
    .executableTarget(
        name: name,
        dependencies: [
            .product(name: "TaskMachine", package: rootPackage),
            .product(name: "Benchmark", package: "benchmark"),
            "BenchmarkSupport",
        ] + dependencies,
        path: "Benchmarks/\(name)",
        swiftSettings: [.swiftLanguageMode(.v6)],
        plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    )
}

/// The benchmark tool's traits: its malloc-counting interposer, except in the build of the timed
/// passes (`Scripts/results.py`), which sets `BENCHMARK_DISABLE_MALLOC_INTERPOSER`, so that their
/// allocations and frees are glibc's own, with no call and no 16-byte header added to each.
let benchmarkTraits: Set<Package.Dependency.Trait> =
    ProcessInfo.processInfo.environment["BENCHMARK_DISABLE_MALLOC_INTERPOSER"] == nil ? ["MallocInterposer"] : []

let package = Package(
    name: "TaskMachineBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.0", traits: benchmarkTraits),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
    ],
    targets: [
        // What every suite shares: configurations tagged with their operation count, quick mode,
        // a watchdog, thread and heap readings.
        .target(
            name: "BenchmarkSupport",
            dependencies: [
                "CBenchmarkShims",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "TaskMachine", package: rootPackage),
            ],
            path: "Sources/BenchmarkSupport",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // What Swift cannot call: the raw futex (and two threads ping-ponging on it, the machine's
        // limit for a hand-off) and glibc's heap statistics.
        .target(name: "CBenchmarkShims", path: "Sources/CBenchmarkShims"),
        // Futures, awaits and method builders, beside Swift async calls, Task and NIO promises.
        suite("FutureBenchmarks", dependencies: [.product(name: "NIOCore", package: "swift-nio"),
                                                 .product(name: "NIOPosix", package: "swift-nio"),
                                                 .product(name: "NIOEmbedded", package: "swift-nio")]),
        // Work on the pool, yields and cross-thread hand-offs, beside Task, Dispatch, NIO and a futex.
        suite("SchedulingBenchmarks", dependencies: ["CBenchmarkShims",
                                                    .product(name: "NIOCore", package: "swift-nio"),
                                                     .product(name: "NIOPosix", package: "swift-nio")]),
        // 100,000 pending delays: rate, memory and threads, beside Task.sleep, NIO and Dispatch.
        suite("TimerBenchmarks", dependencies: [.product(name: "NIOCore", package: "swift-nio"),
                                                .product(name: "NIOPosix", package: "swift-nio")]),
    ]
)
