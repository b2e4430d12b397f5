import Benchmark
import TaskMachine

/// A Swift async function that returns without suspending: the peer of awaiting a completed future.
@inline(never)
func asyncIdentity(_ value: Int) async -> Int { value }

/// An opaque source of values, so the optimizer cannot fold an await of a ready value away.
@inline(never)
func identity(_ value: Int) -> Int { value }

/// An async method that awaits `inner` once and returns its value plus one.
struct AddOne: AsyncStateMachine {
    var builder = FutureMethodBuilder<Int>()
    var state = 0
    let inner: Future<Int>
    var awaiter: FutureAwaiter<Int>?

    mutating func moveNext() {
        do {
            if state == 0 {
                let awaiter = inner.getAwaiter()
                self.awaiter = awaiter
                state = 1
                if !awaiter.isCompleted {
                    awaitUnsafeOnCompleted(awaiter)
                    return
                }
            }
            builder.setResult(try awaiter!.getResult() + 1)
        } catch {
            builder.setError(error)
        }
    }

    @inline(never)
    static func start(_ inner: Future<Int>) -> Future<Int> {
        var machine = AddOne(inner: inner)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

let benchmarks: @Sendable () -> Void = {
    let metrics: [BenchmarkMetric] = [.wallClock, .mallocCountTotal, .memoryLeaked]
    let fast = Benchmark.Configuration(metrics: metrics, scalingFactor: .mega, maxDuration: .seconds(2))
    let slower = Benchmark.Configuration(metrics: metrics, scalingFactor: .kilo, maxDuration: .seconds(2))

    Benchmark("Await: completed Future, awaiter by hand (as a state machine does)", configuration: fast) { benchmark in
        let future = Future.succeeded(1)
        var sum = 0
        for _ in benchmark.scaledIterations {
            let awaiter = future.getAwaiter()
            if awaiter.isCompleted { sum &+= try awaiter.getResult() }
        }
        blackHole(sum)
    }

    Benchmark("Await: completed Future from Swift async (future.value)", configuration: fast) {
        benchmark async throws in
        let future = Future.succeeded(1)
        var sum = 0
        for _ in benchmark.scaledIterations { sum &+= try await future.value }
        blackHole(sum)
    }

    Benchmark("Await: ValueFuture holding its value from Swift async (get())", configuration: fast) {
        benchmark async throws in
        var sum = 0
        for index in benchmark.scaledIterations { sum &+= try await ValueFuture(identity(index)).get() }
        blackHole(sum)
    }

    Benchmark("Peer: Swift async call that does not suspend", configuration: fast) { benchmark async in
        var sum = 0
        for index in benchmark.scaledIterations { sum &+= await asyncIdentity(index) }
        blackHole(sum)
    }

    Benchmark("Method suspending once via FutureMethodBuilder, completed on the same thread", configuration: slower) {
        benchmark throws in
        var sum = 0
        for _ in benchmark.scaledIterations {
            let promise = Promise<Int>()  // one allocation: the awaited future
            let method = AddOne.start(promise.future)  // one allocation: the boxed machine
            try promise.succeed(41)  // resumes the machine inline
            sum &+= try method.getResult()
        }
        blackHole(sum)
    }
}
