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
