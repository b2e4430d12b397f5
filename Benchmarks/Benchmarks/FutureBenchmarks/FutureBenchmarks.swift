import Benchmark
import BenchmarkSupport
import NIOCore
import NIOEmbedded
import TaskMachine

// Futures, awaits and method builders on one thread, each beside its peer: a Swift async call,
// Swift `Task`, and a SwiftNIO promise on an `EmbeddedEventLoop` (NIO's same-thread loop, so the
// peer runs on the benchmark thread as ours does).

let benchmarks: @Sendable () -> Void = {
    awaitCompletedBenchmarks()
    suspendOnceBenchmarks()
    chainBenchmarks()
    pooledSourceBenchmarks()
}

// MARK: Awaiting something complete

func awaitCompletedBenchmarks() {
    let config = configuration(.scaled(.mega))

    Benchmark("Await completed Future: TaskMachine, awaiter by hand", configuration: config) { benchmark in
        let future = Future.succeeded(1)
        var sum = 0
        for _ in 0..<benchmark.operations {
            let awaiter = future.getAwaiter()
            if awaiter.isCompleted { sum &+= try awaiter.getResult() }
        }
        blackHole(sum)
    }

    Benchmark("Await completed Future: TaskMachine, future.value", configuration: config) { benchmark async throws in
        let future = Future.succeeded(1)
        var sum = 0
        for _ in 0..<benchmark.operations { sum &+= try await future.value }
        blackHole(sum)
    }

    Benchmark("Await completed ValueFuture: TaskMachine, get()", configuration: config) {
        benchmark async throws in
        var sum = 0
        for index in 0..<benchmark.operations { sum &+= try await ValueFuture(identity(index)).get() }
        blackHole(sum)
    }

    Benchmark("Await completed: peer, Swift async call that does not suspend", configuration: config) {
        benchmark async in
        var sum = 0
        for index in 0..<benchmark.operations { sum &+= await asyncIdentity(index) }
        blackHole(sum)
    }

    // The floor for awaiting inside a state machine: an ordinary call the optimizer may not inline.
    Benchmark("Await completed: peer, plain non-inlined call", configuration: config) { benchmark in
        var sum = 0
        for index in 0..<benchmark.operations { sum &+= identity(index) }
        blackHole(sum)
    }
}

/// A Swift async function that returns without suspending: the peer of awaiting a completed future.
@inline(never)
func asyncIdentity(_ value: Int) async -> Int { value }

/// An opaque source of values, so the optimizer cannot fold an await of a ready value away (with
/// `@inline(never)` alone it still saw through the call and summed the loop in closed form).
@_optimize(none) @inline(never)
func identity(_ value: Int) -> Int { value }

// MARK: A method that suspends once

func suspendOnceBenchmarks() {
    let config = configuration(.scaled(.kilo))

    Benchmark("Suspend once: TaskMachine, builder method awaiting a promise", configuration: config) {
        benchmark throws in
        var sum = 0
        for _ in 0..<benchmark.operations {
            let promise = Promise<Int>()  // one allocation: the awaited future
            let method = AddOne.start(promise.future)  // one allocation: the boxed machine
            try promise.succeed(41)  // resumes the machine inline
            sum &+= try method.getResult()
        }
        blackHole(sum)
    }

    // The same method awaiting a read from a pooled source, which is reset and reused: the box is
    // the one allocation.
    Benchmark("Suspend once: TaskMachine, builder method awaiting a pooled source", configuration: config) {
        benchmark throws in
        let source = ValueFutureSourceCore<Int>()
        var sum = 0
        for _ in 0..<benchmark.operations {
            let method = AddOneToRead.start(source.makeValueFuture())  // one allocation: the box
            try source.succeed(41)  // resumes the machine inline
            source.reset()
            sum &+= try method.getResult()
        }
        blackHole(sum)
    }

    // The same method on the pooling builder, awaiting a read from a pooled source: once warm, the
    // box comes from this thread's cache and the source is reset, so nothing is allocated.
    Benchmark("Suspend once: TaskMachine, pooling builder method awaiting a pooled source", configuration: config) {
        benchmark throws in
        let source = ValueFutureSourceCore<Int>()
        var sum = 0
        for _ in 0..<benchmark.operations {
            let method = AddOnePooled.start(source.makeValueFuture())
            try source.succeed(41)  // resumes the machine inline
            source.reset()
            sum &+= try method.getAwaiter().getResult()
        }
        blackHole(sum)
    }

    Benchmark("Suspend once: peer, Task { } + await value", configuration: config) { benchmark async in
        var sum = 0
        for index in 0..<benchmark.operations {
            sum &+= await Task { identity(index) }.value
        }
        blackHole(sum)
    }

    // `Task.immediate` runs its body on the calling thread up to its first suspension; this body has
    // none, so the await does not suspend either: this is the cost of making and finishing a task.
    Benchmark("Suspend once: peer, Task.immediate { } + await value", configuration: config) { benchmark async in
        var sum = 0
        for index in 0..<benchmark.operations {
            sum &+= await Task.immediate { identity(index) }.value
        }
        blackHole(sum)
    }

    Benchmark("Suspend once: peer, NIO promise + whenComplete on EmbeddedEventLoop", configuration: config) {
        benchmark in
        let loop = EmbeddedEventLoop()
        let sum = UncheckedCounter()
        for index in 0..<benchmark.operations {
            let promise = loop.makePromise(of: Int.self)
            promise.futureResult.whenComplete { result in
                if case .success(let value) = result { sum.value &+= value + 1 }
            }
            promise.succeed(identity(index))
        }
        blackHole(sum.value)
        try loop.syncShutdownGracefully()
    }
}

// MARK: A chain of ten continuations

/// Links in each chain: every link is a continuation of the one before it.
let chainLength = 10

func chainBenchmarks() {
    let config = configuration(.scaled(.kilo))

    // Ten suspended methods, each awaiting the one before; completing the promise runs all ten.
    Benchmark("Chain of 10: TaskMachine, 10 builder methods each awaiting the last", configuration: config) {
        benchmark throws in
        var sum = 0
        for _ in 0..<benchmark.operations {
            let promise = Promise<Int>()
            var last = promise.future
            for _ in 0..<chainLength { last = AddOne.start(last) }
            try promise.succeed(0)
            sum &+= try last.getResult()
        }
        blackHole(sum)
    }

    // The same chain on the pooling builder: each link's box comes from this thread's cache, so a
    // chain allocates only its promise.
    Benchmark("Chain of 10: TaskMachine, 10 pooling builder methods each awaiting the last", configuration: config) {
        benchmark throws in
        var sum = 0
        for _ in 0..<benchmark.operations {
            let promise = Promise<Int>()
            var last = ValueFuture(future: promise.future)
            for _ in 0..<chainLength { last = AddOnePooled.start(last) }
            try promise.succeed(0)
            sum &+= try last.getAwaiter().getResult()
        }
        blackHole(sum)
    }

    Benchmark("Chain of 10: peer, NIO map x10 on EmbeddedEventLoop", configuration: config) { benchmark in
        let loop = EmbeddedEventLoop()
        let sum = UncheckedCounter()
        for _ in 0..<benchmark.operations {
            let promise = loop.makePromise(of: Int.self)
            var last = promise.futureResult
            for _ in 0..<chainLength { last = last.map { $0 + 1 } }
            last.whenSuccess { sum.value &+= $0 }
            promise.succeed(0)
        }
        blackHole(sum.value)
        try loop.syncShutdownGracefully()
    }
}

// MARK: A pooled source reused for every operation

func pooledSourceBenchmarks() {
    let config = configuration(.batch(1_000_000, quick: 1_000), seconds: 3)

    // One long-lived method reads a million results from one source, as a socket's read loop
    // would: each read suspends on a fresh version of the source, the benchmark thread completes
    // it, the method resumes inline, resets the source and suspends on the next version.
    Benchmark("Pooled source: TaskMachine, ValueFutureSourceCore reused, suspend + resume", configuration: config) {
        benchmark throws in
        let source = ValueFutureSourceCore<Int>()
        let reader = ReadLoop.start(source: source, count: benchmark.operations)
        for index in 0..<benchmark.operations { try source.succeed(index) }
        blackHole(try reader.wait(timeout: .seconds(10)))
    }

    // The same loop where every read is completed before it is awaited: no suspension at all.
    Benchmark("Pooled source: TaskMachine, ValueFutureSourceCore reused, completed first", configuration: config) {
        benchmark async throws in
        let source = ValueFutureSourceCore<Int>()
        var sum = 0
        for index in 0..<benchmark.operations {
            let pending = source.makeValueFuture()
            try source.succeed(index)
            sum &+= try await pending.get()
            source.reset()
        }
        blackHole(sum)
    }

    // Without pooling: a fresh NIO promise per read, the peer's usual way.
    Benchmark("Pooled source: peer, NIO promise per operation", configuration: config) { benchmark in
        let loop = EmbeddedEventLoop()
        let sum = UncheckedCounter()
        for index in 0..<benchmark.operations {
            let promise = loop.makePromise(of: Int.self)
            promise.futureResult.whenSuccess { sum.value &+= $0 }
            promise.succeed(index)
        }
        blackHole(sum.value)
        try loop.syncShutdownGracefully()
    }
}

/// `async Future<Int> ReadLoop(source, count) { var sum = 0; for _ in 0..<count { sum += await source.next(); source.reset() }; return sum }`
struct ReadLoop: AsyncStateMachine {
    var builder = FutureMethodBuilder<Int>()
    let source: ValueFutureSourceCore<Int>
    let count: Int
    var done = 0
    var sum = 0
    var awaiter: ValueFutureAwaiter<Int>?

    mutating func moveNext() {
        do {
            // Resumed: read the result of the operation the machine was waiting for.
            if let awaiter {
                sum &+= try awaiter.getResult()
                self.awaiter = nil
                source.reset()
                done += 1
            }
            while done < count {
                let next = source.makeValueFuture().getAwaiter()
                if !next.isCompleted {
                    awaiter = next
                    awaitUnsafeOnCompleted(next)
                    return
                }
                sum &+= try next.getResult()
                source.reset()
                done += 1
            }
            builder.setResult(sum)
        } catch {
            builder.setError(error)
        }
    }

    static func start(source: ValueFutureSourceCore<Int>, count: Int) -> Future<Int> {
        var machine = ReadLoop(source: source, count: count)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}
