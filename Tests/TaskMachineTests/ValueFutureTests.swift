import Glibc
import Synchronization
import Testing

@testable import TaskMachine

/// A cache lookup written as a state machine on the value-future builder: a hit completes
/// synchronously, a miss awaits a load.
struct CachedLookup: AsyncStateMachine {
    var builder = ValueFutureMethodBuilder<Int>()
    var state = 0
    let key: Int
    let load: Future<Int>
    var awaiter: FutureAwaiter<Int>?

    mutating func moveNext() {
        do {
            if state == 0 {
                if key == 42 {
                    builder.setResult(42)
                    return
                }
                let awaiter = load.getAwaiter()
                self.awaiter = awaiter
                state = 1
                if !awaiter.isCompleted {
                    awaitUnsafeOnCompleted(awaiter)
                    return
                }
            }
            builder.setResult(try awaiter!.getResult())
        } catch {
            builder.setError(error)
        }
    }

    static func start(key: Int, load: Future<Int>) -> ValueFuture<Int> {
        var machine = CachedLookup(key: key, load: load)
        ValueFutureMethodBuilder.start(&machine)
        return machine.builder.valueFuture
    }
}

@Suite struct ValueFutureTests {
    /// A registration racing a reset that abandons the pending operation: one that passed its
    /// token check just before the version moved must still be queued, as `reset()` promises, and
    /// must not take the next operation's slot.
    @Test func aRegistrationRacingAnAbandoningResetIsNeverLost() throws {
        let deadline = ContinuousClock.now + .seconds(1)
        var rounds = 0
        var lost = 0
        var nextRefused = 0
        while ContinuousClock.now < deadline && rounds < 100_000 && lost == 0 {
            rounds += 1
            let core = ValueFutureSourceCore<Int>()
            let token = core.version
            let ran = Flag()
            let go = Atomic<Int>(0)
            let registering = Future.run { () -> Bool in
                go.add(1, ordering: .relaxed)
                while go.load(ordering: .relaxed) < 2 {}
                do {
                    try core.onCompleted(token: token, AwaitContinuation { ran.set() })
                    return true
                } catch {
                    return false  // refused with a stale token: nothing to run, as documented
                }
            }
            go.add(1, ordering: .relaxed)
            while go.load(ordering: .relaxed) < 2 {}
            core.reset()  // abandons the pending operation
            guard try registering.wait(timeout: .seconds(10)) else { continue }
            // Accepted: the reset queued it, or the registration did. Either way it runs.
            let until = ContinuousClock.now + .seconds(5)
            while !ran.isSet && ContinuousClock.now < until { usleepish() }
            guard !ran.isSet else { continue }
            lost += 1
            do { try core.onCompleted(token: core.version, AwaitContinuation {}) } catch { nextRefused += 1 }
        }
        #expect(lost == 0, "lost after \(rounds) rounds")
        #expect(nextRefused == 0, "the lost continuation took the next operation's slot")
    }

    @Test func aSourceOfTheUsersOwnResumesAMethodFromAnotherThread() throws {
        let source = OneShotSource()
        let method = SourceAwait.start(ValueFuture(source: source, token: 0))
        #expect(!method.isCompleted)
        let thread = spawnThread(name: "completer", role: .other) { source.complete(with: 7) }
        #expect(try method.wait(timeout: .seconds(10)) == 7)
        pthread_join(thread, nil)
    }

    @Test func aValueFutureHoldsAReadyValueOrAFuture() async throws {
        let ready = ValueFuture(5)
        let readyIsCompleted = ready.isCompleted
        #expect(readyIsCompleted)
        #expect(try await ready.get() == 5)
        let promise = Promise<Int>()
        let pending = ValueFuture(future: promise.future)
        let pendingIsCompleted = pending.isCompleted
        #expect(!pendingIsCompleted)
        try promise.succeed(6)
        #expect(try await pending.get() == 6)
    }

    @Test func asFutureAllowsAwaitingMoreThanOnce() async throws {
        let future = ValueFuture(7).asFuture()
        #expect(try await future.value == 7)
        #expect(try await future.value == 7)
    }

    @Test func theValueFutureBuilderCompletesACacheHitWithoutAFuture() async throws {
        let hit = CachedLookup.start(key: 42, load: Promise<Int>().future)
        let hitIsCompleted = hit.isCompleted
        #expect(hitIsCompleted)
        #expect(try await hit.get() == 42)
        let promise = Promise<Int>()
        let miss = CachedLookup.start(key: 1, load: promise.future)
        let missIsCompleted = miss.isCompleted
        #expect(!missIsCompleted)
        try promise.succeed(10)
        #expect(try await miss.get() == 10)
    }

    @Test func aSourceCoreIsReusedAcrossVersions() async throws {
        let source = ValueFutureSourceCore<Int>()
        for round in 0..<3 {
            let pending = source.makeValueFuture()
            try source.succeed(round)
            #expect(try await pending.get() == round)
            source.reset()
        }
        #expect(source.version == 3)
    }

    @Test func aSourceCoreKeepsEachOutcomeUntilResetAndReleasesIt() async throws {
        final class Tracked: Sendable {}
        /// Too large for the source's two words: kept in a box of its own.
        struct Large: Sendable {
            let object: Tracked
            let padding: (Int, Int, Int)
        }
        weak var small: Tracked?
        weak var large: Tracked?
        let objects = ValueFutureSourceCore<Tracked>()
        let records = ValueFutureSourceCore<Large>()
        do {
            let first = Tracked()
            let second = Tracked()
            small = first
            large = second
            let pendingObject = objects.makeValueFuture()
            let pendingRecord = records.makeValueFuture()
            try objects.succeed(first)
            try records.succeed(Large(object: second, padding: (1, 2, 3)))
            #expect(try await pendingObject.get() === first)
            #expect(try await pendingRecord.get().padding.2 == 3)
        }
        #expect(small != nil && large != nil)  // the sources keep the outcome until reset
        objects.reset()
        records.reset()
        #expect(small == nil && large == nil)

        // A failure after a success, on the same source: each version has its own outcome.
        let failing = objects.makeValueFuture()
        try objects.fail(TestError(code: 4))
        do {
            _ = try await failing.get()
            Issue.record("a failed operation returned a value")
        } catch {
            #expect(error as? TestError == TestError(code: 4))
        }
        #expect(try objects.status(token: objects.version) == .failed)
        objects.reset()
        #expect(try objects.status(token: objects.version) == .pending)
    }

    @Test func aStaleTokenIsAClearError() throws {
        let source = ValueFutureSourceCore<Int>()
        let stale = source.makeValueFuture().getAwaiter()
        try source.succeed(1)
        source.reset()
        #expect(stale.isCompleted, "a stale awaiter reports completion, so that reading it throws at once")
        #expect(throws: ValueFutureSourceError.staleToken(expected: 1, found: 0)) { try stale.getResult() }
        #expect(throws: ValueFutureSourceError.staleToken(expected: 1, found: 0)) {
            try source.onCompleted(token: 0, AwaitContinuation {})
        }
    }

    @Test func aSecondContinuationOnASourceIsAClearError() throws {
        let source = ValueFutureSourceCore<Int>()
        let awaiter = source.makeValueFuture().getAwaiter()
        let copy = awaiter  // the awaiter is copyable: the source must catch the second registration
        try awaiter.onCompleted {}
        #expect(throws: ValueFutureSourceError.continuationAlreadyRegistered) { try copy.onCompleted {} }
        #expect(throws: ValueFutureSourceError.alreadyCompleted) {
            try source.succeed(1)
            try source.succeed(2)
        }
    }

    @Test func aStateMachineAwaitingAMisusedSourceFailsWithTheSourcesError() throws {
        let source = ValueFutureSourceCore<Int>()
        let first = source.makeValueFuture().getAwaiter()
        try first.onCompleted {}
        // A second value future for the same operation: its await is refused, so the method fails.
        let second = SourceAwait.start(source.makeValueFuture())
        #expect(throws: ValueFutureSourceError.continuationAlreadyRegistered) { try second.getResult() }
    }

    @Test func aResetBeforeCompletionResumesTheWaitingMethodWithAStaleTokenError() throws {
        let core = ValueFutureSourceCore<Int>()
        let method = SourceAwait.start(core.makeValueFuture())
        core.reset()  // misuse: the operation never completed, and its reader is suspended
        #expect(throws: ValueFutureSourceError.self) { try method.wait(timeout: .seconds(10)) }
    }

    @Test func registeringOnAnInlineValueResumesOnTheCapturedContext() throws {
        let resumedOn = try AsyncContext.run { WhereResumed.start(ValueFuture(1).getAwaiter()) }
        #expect(resumedOn == "the context")
    }

    @Test func blockingAContextOnAMethodAwaitingASourceIsDiagnosed() throws {
        let ui = SingleThreadContext(name: "ui-source")
        defer { try? ui.shutdown() }
        let core = ValueFutureSourceCore<Int>()
        let chain = try deadlockChain(waitingOn: ui) { SourceAwait.start(core.makeValueFuture()) }
        #expect(chain == ["SourceAwait", "a value-future source"])
        try core.succeed(1)
    }

    @Test func aFireAndForgetMethodWhoseAwaitIsRefusedEndsAndReportsToItsContext() throws {
        // The refusal ends the method through its builder: the context hears of the error and of
        // the end, so `AsyncContext.run` returns, throwing it.
        let outcome = Promise<String>()
        let thread = spawnThread(name: "refused", role: .other) {
            do {
                try AsyncContext.run { RefusedFireAndForget.start() }
                outcome.trySucceed("no error")
            } catch {
                outcome.trySucceed("\(error)")
            }
        }
        #expect(try outcome.future.wait(timeout: .seconds(10)) == "\(RefusingAwaiter.Refused())")
        pthread_join(thread, nil)
    }
}

/// A source of one operation, written as a user would: it keeps the non-copyable continuation
/// under a mutex and resumes it when completed from another thread.
final class OneShotSource: ValueFutureSource {
    private let pending = Mutex<AwaitContinuation?>(nil)
    private let value = Atomic<Int>(-1)

    func status(token: UInt16) throws -> FutureStatus { value.load(ordering: .acquiring) < 0 ? .pending : .succeeded }

    func onCompleted(token: UInt16, _ continuation: consuming AwaitContinuation) throws {
        var continuation = Optional(continuation)
        pending.withLock { $0 = continuation.take() }
        // Completed meanwhile: the completer found no continuation, so resume it here.
        if value.load(ordering: .acquiring) >= 0 { pending.withLock { $0.take() }?.resumeAsynchronously() }
    }

    func getResult(token: UInt16) throws -> Int { value.load(ordering: .acquiring) }

    func complete(with result: Int) {
        value.store(result, ordering: .releasing)
        pending.withLock { $0.take() }?.resume()
    }
}

/// Awaits a value future once.
struct SourceAwait: AsyncStateMachine {
    var builder = FutureMethodBuilder<Int>()
    var state = 0
    var awaiter: ValueFutureAwaiter<Int>

    mutating func moveNext() {
        do {
            if state == 0 {
                state = 1
                if !awaiter.isCompleted {
                    awaitUnsafeOnCompleted(awaiter)
                    return
                }
            }
            builder.setResult(try awaiter.getResult())
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ future: consuming ValueFuture<Int>) -> Future<Int> {
        var machine = SourceAwait(awaiter: future.getAwaiter())
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

/// An awaiter that refuses every continuation.
struct RefusingAwaiter: Awaiter {
    struct Refused: Error {}
    var isCompleted: Bool { false }
    func onCompleted(_ continuation: @escaping @Sendable () -> Void) throws { throw Refused() }
    func getResult() throws {}
}

/// `async void M() { await RefusingAwaiter() }`.
struct RefusedFireAndForget: AsyncStateMachine {
    var builder = FireAndForgetMethodBuilder()
    var state = 0

    mutating func moveNext() {
        do {
            if state == 0 {
                state = 1
                awaitUnsafeOnCompleted(RefusingAwaiter())
                return
            }
            try RefusingAwaiter().getResult()
            builder.setResult()
        } catch {
            builder.setError(error)
        }
    }

    static func start() {
        var machine = RefusedFireAndForget()
        FireAndForgetMethodBuilder.start(&machine)
    }
}

/// Awaits `awaiter` through the builder even when it is complete, then says where it resumed.
struct WhereResumed<A: Awaiter & Sendable>: AsyncStateMachine where A.Result == Int {
    var builder = FutureMethodBuilder<String>()
    var state = 0
    let awaiter: A

    mutating func moveNext() {
        do {
            if state == 0 {
                state = 1
                awaitUnsafeOnCompleted(awaiter)
                return
            }
            _ = try awaiter.getResult()
            builder.setResult(SynchronizationContext.current is AsyncContext ? "the context" : "elsewhere")
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ awaiter: A) -> Future<String> {
        var machine = WhereResumed(awaiter: awaiter)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}
