import Glibc
import Synchronization
import Testing

@testable import TaskMachine

// The runtime's sources move an `AwaitContinuation`'s job into their slot (`movedIntoWord`, then a
// compare-and-exchange with the empty slot of the operation). Every path — installed, slot completed already, second
// registration, stale token — must leave the job with exactly the references it had.

/// A work item that counts its runs and its deinit (the counter outlives it).
final class CountingItem: WorkItem, @unchecked Sendable {
    let runs = Atomic<Int>(0)
    let freed: Counter
    init(freed: Counter) {
        self.freed = freed
        super.init()
    }
    override func run() { runs.add(1, ordering: .relaxed) }
    deinit { freed.increment() }
    var runCount: Int { runs.load(ordering: .relaxed) }
}

/// Polls `condition` until it holds or ten seconds pass.
func eventually(_ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + .seconds(10)
    while !condition() {
        if ContinuousClock.now >= deadline { return false }
        usleepish()
    }
    return true
}

/// `item` ran `runs` times, the runtime let go of it (no leak), and it was not freed while the
/// test still held it (no over-release).
func expectBalanced(
    _ item: inout CountingItem, _ freed: Counter, runs: Int, sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(eventually { item.runCount == runs }, "ran \(item.runCount) times", sourceLocation: sourceLocation)
    #expect(
        eventually { isKnownUniquelyReferenced(&item) }, "leak: the runtime still holds the job",
        sourceLocation: sourceLocation)
    #expect(freed.count == 0, "over-release: the item was freed while the test held it", sourceLocation: sourceLocation)
}

/// Runs `rounds` rounds in which `register(round)`, on this thread, and `complete(round)`, on
/// another, start together, each after a random spin of its own, so that either may win.
func race(rounds: Int, register: (Int) throws -> Void, complete: @escaping @Sendable (Int) -> Void) rethrows {
    let ready = Atomic<Int>(-1)
    let go = Atomic<Int>(-1)
    let finished = Atomic<Int>(-1)
    @Sendable func spin(_ count: Int) {
        var x = 0
        for i in 0..<count { x &+= i; if x == -1 { print(x) } }
    }
    let completer = spawnThread(name: "completer", role: .other) {
        for round in 0..<rounds {
            ready.store(round, ordering: .releasing)
            while go.load(ordering: .acquiring) < round { sched_yield() }
            spin(Int.random(in: 0..<400))
            complete(round)
            finished.store(round, ordering: .releasing)
        }
    }
    defer { pthread_join(completer, nil) }
    for round in 0..<rounds {
        while ready.load(ordering: .acquiring) < round { sched_yield() }
        go.store(round, ordering: .releasing)
        spin(Int.random(in: 0..<400))
        try register(round)
        while finished.load(ordering: .acquiring) < round { sched_yield() }
    }
}

/// Serialized: each race keeps two threads busy, and two races at once on two cores would mostly
/// wait for each other.
@Suite(.serialized) struct ContinuationOwnershipTests {
    // MARK: ValueFutureSourceCore.onCompleted

    /// Registered before the operation completes (installed, then run) or after (run at once).
    @Test(arguments: [false, true]) func coreRegisteredBeforeOrAfterCompletion(completedFirst: Bool) throws {
        let freed = Counter()
        var item = CountingItem(freed: freed)
        let core = ValueFutureSourceCore<Int>()
        if completedFirst { try core.succeed(1) }
        try core.onCompleted(token: 0, AwaitContinuation(job: .item(item)))
        if !completedFirst {
            #expect(!isKnownUniquelyReferenced(&item), "the slot holds the job")
            try core.succeed(1)
        }
        expectBalanced(&item, freed, runs: 1)
    }

    @Test func coreSecondRegistrationThrowsAndReleasesOnlyItsOwnJob() throws {
        let freed = Counter()
        var first = CountingItem(freed: freed)
        var second = CountingItem(freed: freed)
        let core = ValueFutureSourceCore<Int>()
        try core.onCompleted(token: 0, AwaitContinuation(job: .item(first)))
        #expect(throws: ValueFutureSourceError.continuationAlreadyRegistered) {
            try core.onCompleted(token: 0, AwaitContinuation(job: .item(second)))
        }
        expectBalanced(&second, freed, runs: 0)
        #expect(!isKnownUniquelyReferenced(&first), "the first job is still in the slot")
        try core.succeed(1)
        expectBalanced(&first, freed, runs: 1)
    }

    @Test func coreStaleTokenThrowsAndDropsTheContinuation() throws {
        let freed = Counter()
        var item = CountingItem(freed: freed)
        let core = ValueFutureSourceCore<Int>()
        try core.succeed(1)
        core.reset()
        #expect(throws: ValueFutureSourceError.staleToken(expected: 1, found: 0)) {
            try core.onCompleted(token: 0, AwaitContinuation(job: .item(item)))
        }
        expectBalanced(&item, freed, runs: 0)
    }

    // MARK: MachineBox.onCompleted (a pooled method's value future)

    /// Registered before the operation completes (installed, then run) or after (run at once).
    @Test(arguments: [false, true]) func boxRegisteredBeforeOrAfterCompletion(completedFirst: Bool) throws {
        let freed = Counter()
        var item = CountingItem(freed: freed)
        let core = ValueFutureSourceCore<Int>()
        let awaiter = Doubled.start(reading: core.makeValueFuture()).getAwaiter()
        if completedFirst { try core.succeed(3) }
        try awaiter.register(item: item)
        if !completedFirst {
            #expect(!isKnownUniquelyReferenced(&item), "the box's slot holds the job")
            try core.succeed(3)
        }
        expectBalanced(&item, freed, runs: 1)
        #expect(try awaiter.getResult() == 6)
    }

    @Test func boxSecondRegistrationThrowsAndReleasesOnlyItsOwnJob() throws {
        let freed = Counter()
        var first = CountingItem(freed: freed)
        var second = CountingItem(freed: freed)
        let core = ValueFutureSourceCore<Int>()
        let awaiter = Doubled.start(reading: core.makeValueFuture()).getAwaiter()
        try awaiter.register(item: first)
        #expect(throws: ValueFutureSourceError.continuationAlreadyRegistered) { try awaiter.register(item: second) }
        expectBalanced(&second, freed, runs: 0)
        try core.succeed(3)
        expectBalanced(&first, freed, runs: 1)
        #expect(try awaiter.getResult() == 6)
    }

    @Test func boxStaleTokenThrowsAndDropsTheContinuation() throws {
        let freed = Counter()
        var item = CountingItem(freed: freed)
        let core = ValueFutureSourceCore<Int>()
        let awaiter = Doubled.start(reading: core.makeValueFuture()).getAwaiter()
        try core.succeed(3)
        #expect(try awaiter.getResult() == 6)
        #expect(throws: ValueFutureSourceError.self) { try awaiter.register(item: item) }
        expectBalanced(&item, freed, runs: 0)
    }

    // MARK: A machine's box as the job (`.future(box)`)

    @Test func aMethodBoxRegisteredOnEitherSourceIsReleasedOnEveryPath() throws {
        // Installed, then completed: the method resumes inline.
        for viaBox in [false, true] {
            weak var weakMethod: Future<String>?
            do {
                let core = ValueFutureSourceCore<Int>()
                let method =
                    viaBox
                    ? WhereResumed.start(Doubled.start(reading: core.makeValueFuture()).getAwaiter())
                    : WhereResumed.start(core.makeValueFuture().getAwaiter())
                weakMethod = method
                try core.succeed(1)
                #expect(try method.wait(timeout: .seconds(10)) == "elsewhere")
                #expect(weakMethod != nil, "over-release: freed while held")
            }
            #expect(eventually { weakMethod == nil }, "leak (installed, viaBox \(viaBox))")

            // Completed, then registered: the method is queued.
            do {
                let core = ValueFutureSourceCore<Int>()
                let doubled = Doubled.start(reading: core.makeValueFuture()).getAwaiter()
                try core.succeed(1)
                let method =
                    viaBox
                    ? WhereResumed.start(doubled)
                    : WhereResumed.start(core.makeValueFuture().getAwaiter())
                weakMethod = method
                #expect(try method.wait(timeout: .seconds(10)) == "elsewhere")
                #expect(weakMethod != nil, "over-release: freed while held")
                if viaBox == false { _ = try doubled.getResult() }
            }
            #expect(eventually { weakMethod == nil }, "leak (completed, viaBox \(viaBox))")

            // A second registration: refused, the method fails with the source's error.
            do {
                let core = ValueFutureSourceCore<Int>()
                let firstAwaiter =
                    viaBox
                    ? Doubled.start(reading: core.makeValueFuture()).getAwaiter() : core.makeValueFuture().getAwaiter()
                try firstAwaiter.onCompleted {}
                let method = WhereResumed.start(firstAwaiter)
                weakMethod = method
                #expect(throws: ValueFutureSourceError.continuationAlreadyRegistered) {
                    try method.wait(timeout: .seconds(10))
                }
                #expect(weakMethod != nil, "over-release: freed while held")
                try core.succeed(1)
            }
            #expect(eventually { weakMethod == nil }, "leak (already registered, viaBox \(viaBox))")

            // A stale token: refused before the move.
            do {
                let core = ValueFutureSourceCore<Int>()
                let awaiter: ValueFutureAwaiter<Int>
                if viaBox {
                    awaiter = Doubled.start(reading: core.makeValueFuture()).getAwaiter()
                    try core.succeed(1)
                    _ = try awaiter.getResult()
                } else {
                    awaiter = core.makeValueFuture().getAwaiter()
                    try core.succeed(1)
                    core.reset()
                }
                let method = WhereResumed.start(awaiter)
                weakMethod = method
                #expect(throws: ValueFutureSourceError.self) { try method.wait(timeout: .seconds(10)) }
                #expect(weakMethod != nil, "over-release: freed while held")
            }
            #expect(eventually { weakMethod == nil }, "leak (stale, viaBox \(viaBox))")
        }
    }

    // MARK: Registration racing completion

    /// Each registration races a completion on another thread: the job runs exactly once and is
    /// released exactly once, whichever side wins.
    @Test func registrationRacingCompletionRunsAndReleasesEachJobOnce() throws {
        let rounds = 2_000
        let cores = (0..<rounds).map { _ in ValueFutureSourceCore<Int>() }
        let freed = Counter()
        var items = (0..<rounds).map { _ in CountingItem(freed: freed) }
        try race(
            rounds: rounds,
            register: { round in try cores[round].onCompleted(token: 0, AwaitContinuation(job: .item(items[round]))) },
            complete: { round in try! cores[round].succeed(round) })
        var wrong = 0
        for round in 0..<rounds {
            if !eventually({ items[round].runCount == 1 && isKnownUniquelyReferenced(&items[round]) }) { wrong += 1 }
        }
        #expect(wrong == 0)
        #expect(freed.count == 0, "over-release")
        items.removeAll()
        #expect(freed.count == rounds, "leak")
    }

    /// A method awaiting a source core, or a pooled method's value future, while another thread
    /// completes what it awaits: every method ends once with its value, and every box is freed.
    @Test func methodsRegisteringOnRuntimeSourcesWhileTheyCompleteEndOnceAndAreFreed() throws {
        let rounds = 2_000
        let cores = (0..<rounds).map { _ in ValueFutureSourceCore<Int>() }
        var methods: [Future<Int>] = []
        race(
            rounds: rounds,
            register: { round in
                methods.append(
                    round % 2 == 0
                        ? SourceAwait.start(cores[round].makeValueFuture())
                        : SourceAwait.start(Doubled.start(reading: cores[round].makeValueFuture())))
            },
            complete: { round in try! cores[round].succeed(round) })
        final class WeakRef: @unchecked Sendable { weak var future: Future<Int>? }
        let weaks = methods.map { method in
            let weak = WeakRef()
            weak.future = method
            return weak
        }
        var wrong = 0
        for (round, method) in methods.enumerated() {
            let expected = round % 2 == 0 ? round : 2 * round
            if (try? method.wait(timeout: .seconds(10))) != expected { wrong += 1 }
        }
        #expect(wrong == 0)
        methods.removeAll()
        #expect(eventually { weaks.allSatisfy { $0.future == nil } }, "leak")
    }
}
