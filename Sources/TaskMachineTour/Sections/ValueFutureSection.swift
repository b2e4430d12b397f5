import TaskMachine

/// Section 5: what a Future costs and what a ValueFuture saves, counted live.
enum ValueFutureSection {
    static let section = TourSection(
        number: 5,
        title: "Future vs ValueFuture",
        explanation: "A Future is a heap object even when its value is ready; a ValueFuture holds a "
            + "ready value inline.",
        body: run
    )

    static let cache = [42: 4_200]

    static func run(_ output: TourOutput) throws {
        if AllocationMeter.isActive {
            output("Heap allocations on the calling thread, counted per call over 1,000 calls:")
            try countFastPaths(output)
        } else {
            output("Allocation counting is not active in this process (its malloc is not the counting one),")
            output("so no counts are shown; the calls below still run.")
        }
        output("")
        output("A cache miss really waits:")
        var pending: ValueFuture<Int>?
        var started = ContinuousClock.now
        if AllocationMeter.isActive {
            // One uncounted miss first: the first delay ever starts the timer thread and the pool.
            _ = try ValueLookUp.start(key: 8).asFuture().wait()
            started = ContinuousClock.now
            let count = AllocationMeter.allocations { pending = ValueLookUp.start(key: 7) }
            output("  lookUp(7) suspended at its await: \(count) allocations on the calling thread,")
            output("  (the boxed machine; the delay, which is its own timer; and, for the first delay due in")
            output("  its millisecond, the timer wheel's array for that millisecond)")
        } else {
            pending = ValueLookUp.start(key: 7)
            output("  lookUp(7) suspended at its await")
        }
        let miss = pending.take()!
        output("  isCompleted right after the call: \(miss.isCompleted)")
        let value = try miss.asFuture().wait()
        let waited = Int((ContinuousClock.now - started) / .milliseconds(1))
        output("  the value arrived \(waited) ms later: \(value)")
    }

    private static func countFastPaths(_ output: TourOutput) throws {
        var sum = 0
        let ready = Future.succeeded(1)
        let awaitFuture = try AllocationMeter.allocationsPerCall {
            // What an await does with a completed future: the fast path, no suspension.
            let awaiter = ready.getAwaiter()
            if awaiter.isCompleted { sum &+= try awaiter.getResult() }
        }
        output("  await a Future that has completed:                \(awaitFuture.countText)")

        let awaitValueFuture = try AllocationMeter.allocationsPerCall {
            let awaiter = ValueFuture(1).getAwaiter()
            if awaiter.isCompleted { sum &+= try awaiter.getResult() }
        }
        output("  await a ValueFuture holding its value:            \(awaitValueFuture.countText)")

        let hitAsValueFuture = try AllocationMeter.allocationsPerCall {
            let awaiter = ValueLookUp.start(key: 42).getAwaiter()
            if awaiter.isCompleted { sum &+= try awaiter.getResult() }
        }
        output("  cache hit via ValueFutureMethodBuilder, awaited:  \(hitAsValueFuture.countText)")

        let hitAsFuture = try AllocationMeter.allocationsPerCall {
            let awaiter = FutureLookUp.start(key: 42).getAwaiter()
            if awaiter.isCompleted { sum &+= try awaiter.getResult() }
        }
        output("  cache hit via FutureMethodBuilder, awaited:       \(hitAsFuture.countText) (the Future itself)")
        precondition(sum != 0)
    }
}

/// What `LookUp` needs of its builder: the two ways a method ends.
private protocol LookUpBuilder: AsyncMethodBuilder {
    init()
    mutating func setResult(_ value: Int)
    mutating func setError(_ error: any Error)
}

extension ValueFutureMethodBuilder<Int>: LookUpBuilder {}
extension FutureMethodBuilder<Int>: LookUpBuilder {}

/// `lookUp(key)`: the cached value at once, or a 20 ms load. The same method body serves both
/// return types; only the builder differs, as it would in a compiler's output.
private struct LookUp<Builder: LookUpBuilder>: TourStateMachine {
    var builder = Builder()
    var state = 0
    var load: FutureAwaiter<Void>?
    let key: Int

    mutating func moveNext() {
        do {
            switch state {
            case 0:
                if let hit = ValueFutureSection.cache[key] {
                    builder.setResult(hit)
                    return
                }
                let awaiter = Future.delay(.milliseconds(20)).getAwaiter()
                load = awaiter
                if suspends(on: awaiter, resumingAt: 1) { return }
                fallthrough
            default:
                try load!.getResult()
                builder.setResult(key * 100)
            }
        } catch {
            builder.setError(error)
        }
    }
}

private typealias ValueLookUp = LookUp<ValueFutureMethodBuilder<Int>>
private typealias FutureLookUp = LookUp<FutureMethodBuilder<Int>>

extension LookUp where Builder == ValueFutureMethodBuilder<Int> {
    /// `lookUp(key)` returning a `ValueFuture`: a cache hit allocates nothing.
    static func start(key: Int) -> ValueFuture<Int> {
        var machine = LookUp(key: key)
        ValueFutureMethodBuilder.start(&machine)
        return machine.builder.valueFuture
    }
}

extension LookUp where Builder == FutureMethodBuilder<Int> {
    /// `lookUp(key)` returning a `Future`: even a cache hit allocates the future it returns.
    static func start(key: Int) -> Future<Int> {
        var machine = LookUp(key: key)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}
