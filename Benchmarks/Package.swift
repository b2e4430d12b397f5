// swift-tools-version:6.1
import Foundation
import PackageDescription

// The package is found by path; its identity is the name of the folder it was cloned into.
let rootPackage = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .lastPathComponent

let package = Package(
    name: "TaskMachineBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        // Futures, awaits and method builders, side by side with the Swift Concurrency peer.
        .executableTarget(
            name: "FutureBenchmarks",
            dependencies: [
                .product(name: "TaskMachine", package: rootPackage),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/FutureBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
