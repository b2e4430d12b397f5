import Glibc
import Synchronization
import Testing

@testable import TaskMachine

/// `async ValueFuture<Int> Doubled(source) { let x = await source.next(); if x < 0 { throw }; return 2 * x }`
/// on the pooling builder; a value of 0 returns without suspending when the read is ready.
typealias Doubled = TaggedDoubled<Void>

/// `Doubled` as a type of its own per `Tag`: each makes another kind of box for a thread's cache.
struct TaggedDoubled<Tag>: AsyncStateMachine {
    var builder = PoolingValueFutureMethodBuilder<Int>()
    var state = 0
    let read: ValueFutureAwaiter<Int>

    mutating func moveNext() {
        do {
            if state == 0 {
                state = 1
                if !read.isCompleted {
                    awaitUnsafeOnCompleted(read)
                    return
                }
            }
            let value = try read.getResult()
            guard value >= 0 else { throw TestError(code: value) }
            builder.setResult(2 * value)
        } catch {
            builder.setError(error)
        }
    }

    static func start(reading read: consuming ValueFuture<Int>) -> ValueFuture<Int> {
        var machine = TaggedDoubled(read: read.getAwaiter())
        PoolingValueFutureMethodBuilder.start(&machine)
        return machine.builder.valueFuture
    }
}

/// `async ValueFuture<Int> Sum(a, b) { return await a + await b }` on the pooling builder.
/// `pause`, when set, runs right after the method has registered its second await: the resumption
/// that got there stops inside it, as if preempted, while the second await may already resume the
/// method elsewhere (the method touches nothing of its own after the registration).
struct SumOfTwo: AsyncStateMachine {
    var builder = PoolingValueFutureMethodBuilder<Int>()
    var state = 0
    var first = 0
    let a: ValueFutureAwaiter<Int>
    let b: ValueFutureAwaiter<Int>
    let pause: (@Sendable () -> Void)?

    mutating func moveNext() {
        do {
            if state == 0 {
                state = 1
                if !a.isCompleted {
                    awaitUnsafeOnCompleted(a)
                    return
                }
            }
            if state == 1 {
                first = try a.getResult()
                state = 2
                if !b.isCompleted {
                    let pause = self.pause
                    awaitUnsafeOnCompleted(b)
                    pause?()
                    return
                }
            }
            builder.setResult(first + (try b.getResult()))
        } catch {
            builder.setError(error)
        }
    }

    static func start(
        _ a: consuming ValueFuture<Int>, _ b: consuming ValueFuture<Int>, pause: (@Sendable () -> Void)? = nil
    ) -> ValueFuture<Int> {
        var machine = SumOfTwo(a: a.getAwaiter(), b: b.getAwaiter(), pause: pause)
        PoolingValueFutureMethodBuilder.start(&machine)
        return machine.builder.valueFuture
    }
}

/// The token of a value future that reads from a source.
func sourceToken(of future: borrowing ValueFuture<Int>) -> UInt16? {
    switch future.storage {
    case .machine(_, let token), .core(_, let token), .source(_, let token): token
    case .value, .future: nil
    }
}

/// The object behind a value future that reads from a source, or `nil` for an inline value.
func sourceObject(of future: borrowing ValueFuture<Int>) -> ObjectIdentifier? {
    switch future.storage {
    case .machine(let box, _): ObjectIdentifier(box)
    case .core(let core, _): ObjectIdentifier(core)
    case .source(let source, _): ObjectIdentifier(source)
    case .value, .future: nil
    }
}

@Suite struct PoolingBuilderTests {
    @Test func aBoxIsReusedByTheNextCallOnceItsResultHasBeenRead() throws {
        let source = ValueFutureSourceCore<Int>()
        var boxes: [ObjectIdentifier] = []
        for round in 1...3 {
            let doubled = Doubled.start(reading: source.makeValueFuture())
            let box = sourceObject(of: doubled)
            boxes.append(try #require(box))
            try source.succeed(round)  // resumes the method inline
            source.reset()
            #expect(try doubled.getAwaiter().getResult() == 2 * round)
        }
        // The first call allocated the box; the next two found it in this thread's cache.
        #expect(Set(boxes).count == 1)
    }

    @Test func aBoxStillBeingReadIsNotHandedToAnotherCall() throws {
        let first = ValueFutureSourceCore<Int>()
        let second = ValueFutureSourceCore<Int>()
        let one = Doubled.start(reading: first.makeValueFuture())
        let two = Doubled.start(reading: second.makeValueFuture())
        #expect(sourceObject(of: one) != sourceObject(of: two))
        try first.succeed(1)
        try second.succeed(2)
        #expect(try two.getAwaiter().getResult() == 4)
        #expect(try one.getAwaiter().getResult() == 2)
    }

    @Test func aValueFutureKeptPastItsReadGetsAStaleTokenError() throws {
        let source = ValueFutureSourceCore<Int>()
        let doubled = Doubled.start(reading: source.makeValueFuture())
        try source.succeed(5)
        source.reset()
        // Boxes come from this thread's cache, so the token is whatever use the box is at.
        let maybeToken = sourceToken(of: doubled)
        let token = try #require(maybeToken)
        let awaiter = doubled.getAwaiter()
        let copy = awaiter  // an awaiter is copyable; the box must refuse the second read
        #expect(try awaiter.getResult() == 10)
        #expect(copy.isCompleted, "a stale awaiter reports completion, so that reading it throws at once")
        #expect(throws: ValueFutureSourceError.staleToken(expected: token &+ 1, found: token)) {
            try copy.getResult()
        }
        // The box is back in the cache; the next call takes it, and the old copy still reads stale.
        let next = Doubled.start(reading: source.makeValueFuture())
        try source.succeed(6)
        source.reset()
        #expect(try next.getAwaiter().getResult() == 12)
        #expect(throws: ValueFutureSourceError.self) { try copy.getResult() }
    }

    @Test func aMethodThatFailsAfterSuspendingRethrowsAndItsBoxIsReused() throws {
        let source = ValueFutureSourceCore<Int>()
        let failing = Doubled.start(reading: source.makeValueFuture())
        let box = sourceObject(of: failing)
        try source.succeed(-3)
        source.reset()
        let failingAwaiter = failing.getAwaiter()
        #expect(throws: TestError(code: -3)) { try failingAwaiter.getResult() }
        let next = Doubled.start(reading: source.makeValueFuture())
        #expect(sourceObject(of: next) == box)
        try source.succeed(1)
        #expect(try next.getAwaiter().getResult() == 2)
    }

    @Test func readingTheValueFutureTakesTheCallersReferenceToTheBox() throws {
        let source = ValueFutureSourceCore<Int>()
        var machine = Doubled(read: source.makeValueFuture().getAwaiter())
        PoolingValueFutureMethodBuilder.start(&machine)
        guard case .owned = machine.builder.box else {
            Issue.record("a suspended method's caller holds its box until the value future is read")
            return
        }
        let doubled = machine.builder.valueFuture
        guard case .none = machine.builder.box else {
            Issue.record("the caller's machine still holds the box after its value future was read")
            return
        }
        try source.succeed(4)
        #expect(try doubled.getAwaiter().getResult() == 8)
    }

    @Test func readingASuspendedMethodsValueFutureTwiceStopsTheProgram() async {
        await #expect(processExitsWith: .failure) {
            let source = ValueFutureSourceCore<Int>()
            var machine = Doubled(read: source.makeValueFuture().getAwaiter())
            PoolingValueFutureMethodBuilder.start(&machine)
            _ = machine.builder.valueFuture
            _ = machine.builder.valueFuture
        }
    }

    @Test func aMethodThatDoesNotSuspendTakesNoBox() throws {
        let inline = Doubled.start(reading: ValueFuture(21))
        #expect(sourceObject(of: inline) == nil)
        #expect(try inline.getAwaiter().getResult() == 42)
        let failed = Doubled.start(reading: ValueFuture(-1))
        let failedAwaiter = failed.getAwaiter()
        #expect(throws: TestError(code: -1)) { try failedAwaiter.getResult() }
    }

    @Test func asFutureReadsThePooledResultOnce() async throws {
        let source = ValueFutureSourceCore<Int>()
        let doubled = Doubled.start(reading: source.makeValueFuture())
        let future = doubled.asFuture()
        #expect(!future.isCompleted)
        try source.succeed(4)
        #expect(try await future.value == 8)
        #expect(try await future.value == 8)
    }

    @Test func boxesCompletedOnOtherThreadsAreReusedWithoutLosingAResult() throws {
        // Each call awaits a future that a pool worker completes; this thread reads every result.
        // Boxes move between threads' caches; every result must still arrive, once, intact.
        let rounds = 2_000
        var total = 0
        for round in 0..<rounds {
            let value = Future.run { round }
            let doubled = Doubled.start(reading: ValueFuture(future: value))
            total += try doubled.asFuture().wait(timeout: .seconds(10))
        }
        #expect(total == (0..<rounds).reduce(0) { $0 + 2 * $1 })
    }

    @Test func aReaderRacingTheMethodsLastStepsGetsEveryResultOnce() throws {
        // The method's final resumption runs on a pool worker; this thread reads the result as soon
        // as it sees the box complete, often while the worker is still returning from the method.
        // Whichever side lets go last recycles the box; no result may be lost, doubled or mixed up.
        var total = 0
        for round in 0..<5_000 {
            let doubled = Doubled.start(reading: ValueFuture(future: Future.run { round }))
            let awaiter = doubled.getAwaiter()
            while !awaiter.isCompleted { sched_yield() }
            total += try awaiter.getResult()
        }
        #expect(total == (0..<5_000).reduce(0) { $0 + 2 * $1 })
    }

    @Test func aResumptionLateToItsLastCheckLeavesTheNextUseOfItsBoxAlone() throws {
        // Use 1 of a box resumes on thread A, registers its second await and stops there (as if
        // preempted before its "was I the last resumption?" check). Meanwhile thread B ends use 1,
        // reads it (recycling the box into B's cache), and runs use 2 of the same box to
        // completion in one resumption. A's check must not take use 2's completion for its own:
        // it would destroy use 2's machine a second time. B is a new thread, so that its cache
        // holds no other kind of box in the row this one maps to.
        struct Outcome {
            var sameBox = false
            var results: [Int] = []
            var error: (any Error)?
        }
        let outcome = Locked(Outcome())
        let threadB = spawnThread(name: "reuser", role: .other) {
            do {
                let registered = Promise<Void>()
                let go = Promise<Void>()
                let a1 = Promise<Int>()
                let b1 = Promise<Int>()
                let use1 = SumOfTwo.start(
                    ValueFuture(future: a1.future), ValueFuture(future: b1.future),
                    pause: {
                        registered.trySucceed(())
                        _ = try? go.future.wait(timeout: .seconds(30))
                    })
                let box1 = sourceObject(of: use1)
                let threadA = spawnThread(name: "late-resumption", role: .other) { a1.trySucceed(1) }
                try registered.future.wait(timeout: .seconds(30))
                try b1.succeed(2)  // resumption 2, here: ends use 1
                let first = try use1.getAwaiter().getResult()  // the last holder: the box is recycled

                let a2 = Promise<Int>()
                let use2 = SumOfTwo.start(ValueFuture(future: a2.future), ValueFuture(40))
                let sameBox = box1 != nil && sourceObject(of: use2) == box1
                try a2.succeed(2)  // use 2's one resumption ends it
                go.trySucceed(())
                pthread_join(threadA, nil)
                var results = [first, try use2.getAwaiter().getResult()]

                // The box goes on serving calls.
                for round in 1...3 {
                    let a3 = Promise<Int>()
                    let use3 = SumOfTwo.start(ValueFuture(future: a3.future), ValueFuture(round))
                    try a3.succeed(round)
                    results.append(try use3.getAwaiter().getResult())
                }
                outcome.withLock { outcome in
                    outcome.sameBox = sameBox
                    outcome.results = results
                }
            } catch {
                outcome.withLock { $0.error = error }
            }
        }
        pthread_join(threadB, nil)
        let result = outcome.withLock { $0 }
        #expect(result.error == nil)
        #expect(result.sameBox, "use 2 took the recycled box")
        #expect(result.results == [3, 42, 2, 4, 6])
    }
}

/// A made-up type key for the thread's box cache, whose rows there are `firstRow` and
/// `firstRow ^ (16 | secondRowBits)`: the bits `BoxCache` reads from a metadata address, with
/// `tag` above them to tell keys with the same rows apart.
func boxCacheKey(firstRow: Int, secondRowBits: Int, tag: UInt) -> ObjectIdentifier {
    unsafeBitCast(tag << 16 | UInt(secondRowBits) << 9 | UInt(firstRow) << 4, to: ObjectIdentifier.self)
}

extension PoolingBuilderTests {
    /// Two types called by turns, as a pooled method and the pooled method it awaits are, whose
    /// first rows hold boxes of types no longer called and whose second rows are one row: each
    /// keeps its box, where each taking that row over from the other would allocate on every call.
    @Test func twoTypesCalledByTurnsKeepTheirBoxesWhereTheyShareTheirSecondRow() {
        let missed = Locked<Int?>(nil)
        // A thread of its own, whose cache holds nothing else.
        let thread = spawnThread(name: "box-cache", role: .other) {
            let idle = [
                boxCacheKey(firstRow: 0, secondRowBits: 5, tag: 1), boxCacheKey(firstRow: 1, secondRowBits: 6, tag: 2),
            ]
            // Second rows 0 ^ 16 and 1 ^ 17: both row 16.
            let called = [
                boxCacheKey(firstRow: 0, secondRowBits: 0, tag: 3), boxCacheKey(firstRow: 1, secondRowBits: 1, tag: 4),
            ]
            for key in idle { BoxCache.put(Future<Int>(runsContinuationsAsynchronously: false), as: key) }
            var kept: [ObjectIdentifier: AnyFuture] = [:]
            var misses = 0
            for _ in 0..<10 {
                for key in called {
                    let box = BoxCache.take(key)
                    if let previous = kept[key], box !== previous { misses += 1 }
                    let next = box ?? Future<Int>(runsContinuationsAsynchronously: false)
                    kept[key] = next
                    BoxCache.put(next, as: key)
                }
            }
            missed.withLock { $0 = misses }
        }
        pthread_join(thread, nil)
        #expect(missed.withLock { $0 } == 0, "calls that found no box of their type once warm")
    }
}
