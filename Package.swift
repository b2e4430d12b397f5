// swift-tools-version:6.0
import PackageDescription

let strictSwift: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "TaskMachine",
    products: [
        .library(name: "TaskMachine", targets: ["TaskMachine"]),
        .executable(name: "taskmachine", targets: ["taskmachine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0")
    ],
    targets: [
        // Futex, raw 32-bit atomics and a thread-local pointer: the Linux facilities Swift cannot call.
        .target(name: "CTaskMachine"),
        // The runtime: futures, awaiters, state machines, contexts, the pool and the timers.
        .target(name: "TaskMachine", dependencies: ["CTaskMachine"], swiftSettings: strictSwift),
        // Counts the calling thread's heap allocations; linked only into the tour and the tests.
        .target(name: "CAllocationCounter"),
        // The lesson, section by section, written to any output sink so tests can read it.
        .target(
            name: "TaskMachineTour",
            dependencies: ["TaskMachine", "CAllocationCounter"],
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "taskmachine",
            dependencies: [
                "TaskMachineTour",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "TaskMachineTests",
            dependencies: ["TaskMachine", "TaskMachineTour", "CAllocationCounter", "CTaskMachine"],
            swiftSettings: strictSwift
        ),
    ]
)
