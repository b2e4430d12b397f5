import Synchronization
import Testing

@testable import TaskMachine

/// A log that state machines append to from any thread.
final class EventLog: Sendable {
    private let lines = Locked<[String]>([])
    func callAsFunction(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}

/// The lesson's FetchDataAsync: three segments separated by two awaits.
struct FetchDataMachine: AsyncStateMachine {
    var builder = FutureMethodBuilder<String>()
    var state = 0
    var delay: FutureAwaiter<Void>?
    let log: EventLog
    let pause: Duration

    mutating func moveNext() {
        do {
            if state == 0 {
                log("State 0: before first await")
                let awaiter = Future.delay(pause).getAwaiter()
                delay = awaiter
                if !awaiter.isCompleted {
                    state = 1
                    awaitUnsafeOnCompleted(awaiter)
                    return
                }
                state = 1
            }
            if state == 1 {
                try delay!.getResult()
                log("State 1: resumed after first await")
                let awaiter = Future.delay(pause).getAwaiter()
                delay = awaiter
                if !awaiter.isCompleted {
                    state = 2
                    awaitUnsafeOnCompleted(awaiter)
                    return
                }
                state = 2
            }
            try delay!.getResult()
            log("State 2: resumed after second await")
            state = -1
            builder.setResult("data")
        } catch {
            state = -1
            builder.setError(error)
        }
    }

    static func fetchData(log: EventLog, pause: Duration) -> Future<String> {
        var machine = FetchDataMachine(log: log, pause: pause)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

@Suite struct StateMachineTests {
    @Test func threeStatesRunInOrderAcrossTwoAwaits() async throws {
        let log = EventLog()
        let future = FetchDataMachine.fetchData(log: log, pause: .milliseconds(20))
        log("caller got the future")
        #expect(try await future.value == "data")
        #expect(
            log.all == [
                "State 0: before first await",
                "caller got the future",
                "State 1: resumed after first await",
                "State 2: resumed after second await",
            ])
    }

    @Test func aMachineThatNeverSuspendsCompletesSynchronously() throws {
        let log = EventLog()
        let future = FetchDataMachine.fetchData(log: log, pause: .zero)
        #expect(future.isCompleted)
        #expect(try future.getResult() == "data")
        #expect(log.all.count == 3)
    }
}

/// Awaits `inner`, then returns `payload`: a machine of any size and alignment, for the box's
/// storage of it (word tuples of several sizes, or memory of its own).
struct PayloadMachine<Payload: Sendable>: AsyncStateMachine {
    /// Freed with the machine: tells a test when the box dropped it.
    final class Tracker: Sendable {}

    var builder = FutureMethodBuilder<Payload>()
    var state = 0
    let inner: Future<Int>
    let payload: Payload
    let tracker: Tracker
    /// Await an awaiter that refuses the continuation instead: the box fails at once and keeps its
    /// machine, never resumed, until it is dropped.
    var refused = false

    /// Refuses every continuation.
    struct RefusingAwaiter: Awaiter {
        struct Refused: Error {}
        var isCompleted: Bool { false }
        func onCompleted(_ continuation: @escaping @Sendable () -> Void) throws { throw Refused() }
        func getResult() {}
    }

    mutating func moveNext() {
        do {
            if state == 0 {
                state = 1
                if refused {
                    awaitUnsafeOnCompleted(RefusingAwaiter())
                    return
                }
                let awaiter = inner.getAwaiter()
                if !awaiter.isCompleted {
                    awaitUnsafeOnCompleted(awaiter)
                    return
                }
            }
            _ = try inner.getResult()
            builder.setResult(payload)
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ inner: Future<Int>, payload: Payload, tracker: Tracker, refused: Bool = false)
        -> Future<Payload>
    {
        var machine = PayloadMachine(inner: inner, payload: payload, tracker: tracker, refused: refused)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

@Suite struct MachineStorageTests {
    /// Runs a suspending machine carrying `payload`; checks its result, that the box drops the
    /// machine once it has finished, and that a box dropped unfinished drops its machine too (a
    /// method left waiting on a future it holds is a cycle; one whose awaiter refused it is not).
    func check<Payload: Sendable & Equatable>(_ payload: Payload) throws {
        weak var finishedTracker: PayloadMachine<Payload>.Tracker?
        let promise = Promise<Int>()
        let method: Future<Payload>
        do {
            let tracker = PayloadMachine<Payload>.Tracker()
            finishedTracker = tracker
            method = PayloadMachine.start(promise.future, payload: payload, tracker: tracker)
        }
        #expect(finishedTracker != nil, "\(Payload.self): the suspended machine is held")
        try promise.succeed(1)
        #expect(try method.getResult() == payload, "\(Payload.self)")
        #expect(finishedTracker == nil, "\(Payload.self): the finished machine is dropped")

        weak var abandonedTracker: PayloadMachine<Payload>.Tracker?
        do {
            let tracker = PayloadMachine<Payload>.Tracker()
            abandonedTracker = tracker
            let refused = PayloadMachine.start(promise.future, payload: payload, tracker: tracker, refused: true)
            #expect(refused.error is PayloadMachine<Payload>.RefusingAwaiter.Refused)
            #expect(abandonedTracker != nil, "\(Payload.self): the unfinished box holds its machine")
        }
        #expect(abandonedTracker == nil, "\(Payload.self): a box dropped unfinished drops its machine")
    }

    @Test func machinesOfEverySizeRunAndAreDropped() throws {
        try check(UInt8(7))
        try check("a string")
        try check(Words<1>(1))
        try check(Words<2>(2))
        try check(Words<5>(5))
        try check(Words<9>(9))
        try check(Words<13>(13))
        try check(Words<17>(17))
        try check(Words<23>(23))
        try check(Words<27>(27))
    }

    @Test func machinesLargerThanTheWordTuplesOrOveralignedGetMemoryOfTheirOwn() throws {
        #expect(MemoryLayout<PayloadMachine<Words<40>>>.size > 32 * MemoryLayout<UInt>.size)
        try check(Words<40>(40))
        #expect(MemoryLayout<SIMD4<Double>>.alignment > MemoryLayout<UInt>.alignment)
        try check(SIMD4<Double>(1, 2, 3, 4))
    }
}

/// `count` words of payload.
struct Words<let count: Int>: Sendable, Equatable {
    var values: InlineArray<count, Int>

    init(_ value: Int) { values = InlineArray(repeating: value) }

    static func == (a: Self, b: Self) -> Bool { a.values.indices.allSatisfy { a.values[$0] == b.values[$0] } }
}
