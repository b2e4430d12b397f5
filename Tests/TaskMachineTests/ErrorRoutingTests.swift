import Foundation
import Synchronization
import Testing

@testable import TaskMachine

/// Held by every test that stands in for the process-wide handler, for as long as it does: tests
/// run in parallel, and two that swapped it at once could each put back a handler the other had
/// replaced, so that an error reached the default handler, which ends the test process.
func standingInForTheProcessWideHandler<Result>(_ body: () throws -> Result) rethrows -> Result {
    handlerSwaps.lock()
    defer { handlerSwaps.unlock() }
    return try body()
}

private let handlerSwaps = NSLock()

/// A fire-and-forget method (`async void`) that awaits a delay, then throws.
struct FailLater: AsyncStateMachine {
    var builder = FireAndForgetMethodBuilder()
    var state = 0
    let error: TestError
    var awaiter: FutureAwaiter<Void>?

    mutating func moveNext() {
        do {
            if state == 0 {
                let awaiter = Future.delay(.milliseconds(5)).getAwaiter()
                self.awaiter = awaiter
                state = 1
                if !awaiter.isCompleted {
                    awaitUnsafeOnCompleted(awaiter)
                    return
                }
            }
            try awaiter!.getResult()
            throw error
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ error: TestError) {
        var machine = FailLater(error: error)
        FireAndForgetMethodBuilder.start(&machine)
    }
}

@Suite(.serialized) struct ErrorRoutingTests {
    @Test func aFireAndForgetErrorGoesToTheCapturedContext() throws {
        #expect(throws: TestError(code: 11)) {
            try AsyncContext.run { FailLater.start(TestError(code: 11)) }
        }
    }

    @Test func asyncContextWaitsForFireAndForgetWork() throws {
        let log = EventLog()
        try AsyncContext.run { FireAndForgetLog.start(log) }
        #expect(log.all == ["fire-and-forget finished"])
    }

    /// Runs `body` with the process-wide handler catching the `TestError` of `code` into the
    /// promise it passes (other errors go on to the handler that was there), then puts it back.
    func catchingUnhandled(code: Int, _ body: (Promise<Int>) throws -> Void) throws {
        try standingInForTheProcessWideHandler { try catchingUnhandledAlone(code: code, body) }
    }

    private func catchingUnhandledAlone(code: Int, _ body: (Promise<Int>) throws -> Void) throws {
        let received = Promise<Int>()
        let previous = ErrorReporting.unhandledErrorHandler
        ErrorReporting.unhandledErrorHandler = { error in
            if let error = error as? TestError, error.code == code {
                received.trySucceed(error.code)
            } else {
                previous(error)
            }
        }
        defer { ErrorReporting.unhandledErrorHandler = previous }
        try body(received)
    }

    @Test func withNoContextAFireAndForgetErrorGoesToTheProcessWideHandler() throws {
        try catchingUnhandled(code: 12) { received throws in
            FailLater.start(TestError(code: 12))
            #expect(try received.future.wait(timeout: .seconds(10)) == 12)
        }
    }

    /// An AsyncContext whose pump throws DeadlockError with a fire-and-forget method still running:
    /// the method's later error goes to the process-wide handler, not to the context nobody reads.
    @Test func aFireAndForgetErrorAfterAnAsyncContextsDeadlockErrorIsNotLost() throws {
        try catchingUnhandled(code: 41) { received throws in
            let ui = SingleThreadContext(name: "ui-lost-error")
            let promise = Promise<Int>()
            let outcome = ui.run { () -> String in
                let doubled = DoubleAfter.start(promise.future)  // resumes on "ui-lost-error"
                return deadlockText {
                    _ = try AsyncContext.run { () -> Future<Int> in
                        FailLater.start(TestError(code: 41))  // fails a little later, on the AsyncContext
                        return doubled
                    }
                }
            }
            let text = try outcome.waiting(timeout: .seconds(10)).wait(timeout: .seconds(20))
            promise.trySucceed(1)
            try ui.shutdown()
            #expect(text == "ui-lost-error: DoubleAfter > Future<Int>")
            #expect(try received.future.wait(timeout: .seconds(10)) == 41)
        }
    }

    /// `run` can throw one error: when several fire-and-forget methods fail inside it, it throws
    /// one and the others go to the process-wide handler, before `run` returns.
    @Test func everyFireAndForgetErrorOfAnAsyncContextIsThrownOrReported() {
        standingInForTheProcessWideHandler { everyErrorIsThrownOrReported() }
    }

    private func everyErrorIsThrownOrReported() {
        let (thrown, reported) = thrownAndReported(codes: 15...17) {
            try AsyncContext.run {
                for code in 15...17 { FailLater.start(TestError(code: code)) }
            }
        }
        #expect(thrown.count == 1)
        #expect((thrown + reported).sorted() == [15, 16, 17])
    }

    /// A body that throws after starting a method that fails: `run` throws the method's error, and
    /// the body's goes to the process-wide handler rather than nowhere.
    @Test func theBodysErrorIsReportedWhenAFireAndForgetErrorIsThrown() {
        standingInForTheProcessWideHandler {
            let (thrown, reported) = thrownAndReported(codes: 18...19) {
                try AsyncContext.run {
                    FailLater.start(TestError(code: 18))
                    throw TestError(code: 19)
                }
            }
            #expect(thrown == [18])
            #expect(reported == [19])
        }
    }

    /// The handler that receives the errors `run` does not throw runs on the thread `run` was
    /// called on, with that thread's own context back: not with the finished AsyncContext, whose
    /// loop no longer runs anything. A handler that waits for an async method of its own must see
    /// it resume, not a DeadlockError naming a context that would never have run the continuation.
    @Test func theHandlerOfTheErrorsRunDoesNotThrowRunsWithTheCallersContextBack() {
        standingInForTheProcessWideHandler {
            let seen = Locked<[String]>([])
            let previous = ErrorReporting.unhandledErrorHandler
            ErrorReporting.unhandledErrorHandler = { error in
                guard let error = error as? TestError, (22...23).contains(error.code) else { return previous(error) }
                let context = SynchronizationContext.current.map(\.name) ?? "no context"
                let outcome = deadlockText {
                    let resumed = ResumeWhere.start(awaiting: .delay(.milliseconds(5)), continueOnCapturedContext: true)
                    _ = try resumed.wait(timeout: .seconds(10))
                }
                seen.withLock { $0.append("\(context): \(outcome)") }
            }
            defer { ErrorReporting.unhandledErrorHandler = previous }
            #expect(throws: TestError.self) {
                try AsyncContext.run {
                    for code in 22...23 { FailLater.start(TestError(code: code)) }
                }
            }
            #expect(seen.withLock { $0 } == ["no context: no deadlock"])
        }
    }

    /// Runs `body`, collecting the code of the `TestError` it throws and those of the `TestError`s
    /// in `codes` that reach the process-wide handler meanwhile.
    private func thrownAndReported(codes: ClosedRange<Int>, _ body: () throws -> Void) -> (
        thrown: [Int], reported: [Int]
    ) {
        let reported = Locked<[Int]>([])
        let previous = ErrorReporting.unhandledErrorHandler
        ErrorReporting.unhandledErrorHandler = { error in
            if let error = error as? TestError, codes.contains(error.code) {
                reported.withLock { $0.append(error.code) }
            } else {
                previous(error)
            }
        }
        defer { ErrorReporting.unhandledErrorHandler = previous }
        var thrown: [Int] = []
        do { try body() } catch let error as TestError { thrown.append(error.code) } catch {}
        return (thrown, reported.withLock { $0 })
    }

    @Test func aSingleThreadContextRoutesFireAndForgetErrorsToItsHandler() throws {
        let received = Promise<String>()
        let ui = SingleThreadContext(name: "ui-errors") { error in
            received.trySucceed("\(RuntimeThread.current.name): \(error)")
        }
        defer { try? ui.shutdown() }
        ui.post { FailLater.start(TestError(code: 13)) }
        #expect(try received.future.wait(timeout: .seconds(10)) == "ui-errors: TestError(code: 13)")
    }

    @Test func aFailedFutureReleasedUnobservedIsReportedOnce() throws {
        let reports = Locked<[String]>([])
        let previous = ErrorReporting.unobservedErrorHandler
        ErrorReporting.unobservedErrorHandler = { report in
            if report.errors.contains(where: { ($0 as? TestError)?.code == 14 }) {
                reports.withLock { $0.append(report.futureDescription) }
            } else {
                previous(report)
            }
        }
        defer { ErrorReporting.unobservedErrorHandler = previous }
        do {
            let promise = Promise<Int>()
            try promise.fail(TestError(code: 14))
        }
        do {
            let observed = Promise<Int>()
            try observed.fail(TestError(code: 14))
            _ = observed.future.error
        }
        #expect(reports.withLock { $0 } == ["Future<Int>"])
    }
}

/// A fire-and-forget method that logs after a delay.
struct FireAndForgetLog: AsyncStateMachine {
    var builder = FireAndForgetMethodBuilder()
    var state = 0
    let log: EventLog
    var awaiter: FutureAwaiter<Void>?

    mutating func moveNext() {
        if state == 0 {
            let awaiter = Future.delay(.milliseconds(5)).getAwaiter()
            self.awaiter = awaiter
            state = 1
            if !awaiter.isCompleted {
                awaitUnsafeOnCompleted(awaiter)
                return
            }
        }
        log("fire-and-forget finished")
        builder.setResult()
    }

    static func start(_ log: EventLog) {
        var machine = FireAndForgetLog(log: log)
        FireAndForgetMethodBuilder.start(&machine)
    }
}
