import CAllocationCounter
import Glibc
import Testing

@testable import TaskMachine

/// Allocations made by `body` on the calling thread, and their bytes; `nil` when the allocator is
/// not interposed in this process.
func countAllocations(_ body: () throws -> Void) rethrows -> (count: UInt64, bytes: UInt64)? {
    guard tm_allocations_interposed() != 0 else { return nil }
    tm_allocations_begin()
    var bytes: UInt64 = 0
    do {
        try body()
    } catch {
        _ = tm_allocations_end(&bytes)
        throw error
    }
    let count = tm_allocations_end(&bytes)
    return (count, bytes)
}

/// Counts the allocations of making the future `Future.run(with: argument) { $0 }` makes, not
/// queued. Generic throughout, so that even unoptimized the body reaches the future as it is,
/// with no thunk around it (and no allocation for one); the body itself is made before counting.
func countEchoFuture<Argument: Sendable>(
    _ argument: Argument
) -> (future: RunWithArgumentFuture<Argument, Argument>, counted: (count: UInt64, bytes: UInt64)?) {
    let body: @Sendable (Argument) throws -> Argument = { $0 }
    var future: RunWithArgumentFuture<Argument, Argument>?
    let counted = countAllocations { future = RunWithArgumentFuture(argument: argument, token: .none, body: body) }
    return (future!, counted)
}

@Suite struct AllocationTests {
    @Test func theAllocationCounterIsInterposed() {
        #expect(tm_allocations_interposed() != 0)
    }

    @Test func awaitingACompletedFutureAllocatesNothing() throws {
        let future = Future.succeeded(1)
        var sum = 0
        let counted = try countAllocations {
            for _ in 0..<1000 {
                let awaiter = future.getAwaiter()
                if awaiter.isCompleted { sum += try awaiter.getResult() }
            }
        }
        #expect(sum == 1000)
        #expect(counted?.count == 0)
    }

    @Test func aWaitThatBlocksAllocatesNothingOnTheWaitingThread() throws {
        // The thread's reused waiter goes on the future; the deadlock checks around the block find
        // nothing on the stack and make nothing. Completed from another thread once the wait has
        // registered, and a little later, so that the wait really blocks.
        func blockingWait() throws -> (count: UInt64, bytes: UInt64)? {
            let promise = Promise<Int>()
            let completer = spawnThread(name: "completer", role: .other) {
                while promise.future.pendingContinuations.isEmpty { usleepish() }
                usleep(20_000)
                promise.trySucceed(7)
            }
            defer { pthread_join(completer, nil) }
            var value = 0
            let counted = try countAllocations { value = try promise.future.wait() }
            #expect(value == 7)
            return counted
        }
        _ = try blockingWait()  // the thread's state and its waiter, made once
        let counted = try blockingWait()
        #expect(counted == nil || counted?.count == 0, "\(counted?.count ?? 0) allocations")
    }

    @Test func aCacheHitThroughTheValueFutureBuilderAllocatesNothing() throws {
        let never = Promise<Int>().future
        // Warm up: the first run instantiates generic metadata, once.
        _ = try CachedLookup.start(key: 42, load: never).getAwaiter().getResult()
        var sum = 0
        let counted = try countAllocations {
            for _ in 0..<1000 {
                let hit = CachedLookup.start(key: 42, load: never)
                sum += try hit.getAwaiter().getResult()
            }
        }
        #expect(sum == 42_000)
        #expect(counted?.count == 0)
    }

    /// A method on the pooling builder that suspends on a pooled source, called in a loop: its box
    /// comes back from the thread's cache, so the loop allocates nothing.
    @Test func aSteadyLoopOfPooledCallsAllocatesNothing() throws {
        let source = ValueFutureSourceCore<Int>()
        func once(_ value: Int) throws -> Int {
            let doubled = Doubled.start(reading: source.makeValueFuture())
            try source.succeed(value)
            source.reset()
            return try doubled.getAwaiter().getResult()
        }
        for value in 0..<3 { _ = try once(value) }  // the first call allocates the box, and metadata
        var sum = 0
        let counted = try countAllocations {
            for value in 0..<1_000 { sum += try once(value) }
        }
        #expect(sum == 999_000)
        #expect(counted?.count == 0)
    }

    @Test func awaitingCompletedFuturesFromSwiftAsyncCodeAllocatesNothing() async throws {
        let future = Future.succeeded(2)
        _ = try await future.value
        _ = try await ValueFuture(3).get()
        tm_allocations_begin()
        var sum = 0
        for _ in 0..<100 {
            sum += try await future.value
            sum += try await ValueFuture(3).get()
        }
        var bytes: UInt64 = 0
        let count = tm_allocations_end(&bytes)
        #expect(sum == 500)
        #expect(count == 0)
    }

    @Test func runWithAWordSizedArgumentIsOneObjectWithinA128ByteChunk() throws {
        _ = countEchoFuture(1)  // warm up: metadata
        let (future, counted) = countEchoFuture(41)
        future.runAsJob()
        #expect(try future.getResult() == 41)
        guard let counted else { return }
        // The argument shares the words of the result: 105 bytes, where a field of its own made
        // 121, past the 120 a 128-byte heap chunk holds.
        #expect(counted.count == 1)
        #expect(counted.bytes <= 120, "the future of Future.run(with:) took \(counted.bytes) bytes")
    }

    @Test func aTokenSourceIsOneObjectAndItsFirstRegistrationAllocatesNothing() throws {
        // Warm up: the source's metadata and the closure's.
        let warmUp = CancellationTokenSource()
        _ = warmUp.token.register {}
        warmUp.cancel()

        var source: CancellationTokenSource?
        let made = countAllocations { source = CancellationTokenSource() }
        let token = try #require(source).token
        var registration: CancellationRegistration?
        let registered = countAllocations { registration = token.register {} }
        #expect(registration?.unregister() == true)
        guard let made, let registered else { return }
        // The lock and the first callback's slot live in the source itself; the rest of the table,
        // a timer and links, in extras made when needed.
        #expect(made.count == 1)
        #expect(made.bytes <= 56, "a token source took \(made.bytes) bytes")
        #expect(registered.count == 0)
    }

    @Test func aMethodThatSuspendsOnceAllocatesOnlyItsBox() throws {
        // Warm up: the first run instantiates generic metadata and the thread's state, once.
        let warmUp = Promise<Int>()
        _ = DoubleAfter.start(warmUp.future)
        try warmUp.succeed(1)

        let promise = Promise<Int>()
        var result: Future<Int>?
        let counted = try countAllocations {
            result = DoubleAfter.start(promise.future)
            try promise.succeed(21)  // resumes the machine inline, on this thread
        }
        #expect(try result?.getResult() == 42)
        #expect(counted?.count == 1)
        print(
            "a method suspended once through FutureMethodBuilder: \(counted?.count ?? 0) allocation(s), \(counted?.bytes ?? 0) bytes"
        )
    }
}

/// A type per nesting depth: `Nested<Nested<…<Int>>>`.
struct Nested<Inner> {}

/// Calls `TaggedDoubled<Tag>` `calls` times, each suspending on `source`, on the `depth`-th nesting
/// of `Tag`; returns the sum of the results, and the allocations of the last `counted` calls.
func callTaggedDoubled<Tag>(
    _: Tag.Type, depth: Int, calls: Int, counting counted: Int, on source: ValueFutureSourceCore<Int>
) throws -> (sum: Int, allocations: UInt64?) {
    if depth > 0 {
        return try callTaggedDoubled(Nested<Tag>.self, depth: depth - 1, calls: calls, counting: counted, on: source)
    }
    func once(_ value: Int) throws -> Int {
        let doubled = TaggedDoubled<Tag>.start(reading: source.makeValueFuture())
        try source.succeed(value)
        source.reset()
        return try doubled.getAwaiter().getResult()
    }
    var sum = 0
    for value in 0..<(calls - counted) { sum += try once(value) }
    let allocations = try countAllocations {
        for value in (calls - counted)..<calls { sum += try once(value) }
    }
    return (sum, allocations?.count)
}

extension AllocationTests {
    /// More pooled method types than the thread's cache has rows, each called once so that its box
    /// stays in the cache: then each, called in a loop, allocates nothing once warm, though some
    /// share their row of the cache with a type whose box is still there.
    @Test func aSteadyLoopOfPooledCallsAllocatesNothingWhereOtherTypesHoldItsRowOfTheCache() throws {
        let source = ValueFutureSourceCore<Int>()
        let types = BoxCache.kinds + 8
        for depth in 0..<types {
            _ = try callTaggedDoubled(Int.self, depth: depth, calls: 1, counting: 0, on: source)
        }
        var allocatingTypes: [Int] = []
        for depth in 0..<types {
            let (sum, allocations) = try callTaggedDoubled(Int.self, depth: depth, calls: 40, counting: 20, on: source)
            #expect(sum == 2 * (0..<40).reduce(0, +))
            if let allocations, allocations > 0 { allocatingTypes.append(depth) }
        }
        #expect(allocatingTypes.isEmpty, "types whose steady loop allocated: \(allocatingTypes)")
    }
}
