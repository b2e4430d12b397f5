import Synchronization
import TaskMachine

/// Section 2: an async method rewritten by hand as a state machine with three segments.
enum StateMachineSection {
    static let section = TourSection(
        number: 2,
        title: "The state machine",
        explanation: "An async method becomes a struct whose moveNext() runs one segment per call; "
            + "a state number says which.",
        body: run
    )

    static func run(_ output: TourOutput) throws {
        let callersFuture = CallersFuture()
        let data = try AsyncContext.run {
            let future = FetchData.start(output, callersFuture: callersFuture)
            callersFuture.remember(future)
            output("caller: fetchData() returned its future, status \(future.status)")
            return future
        }
        output("caller: the future completed with \"\(data)\"")
    }
}

/// The future the caller holds, so that the resumed machine can check it runs inside it.
private final class CallersFuture: Sendable {
    private let identity = Mutex<ObjectIdentifier?>(nil)

    func remember(_ future: Future<String>) {
        identity.withLock { $0 = ObjectIdentifier(future) }
    }

    func isSame(as future: Future<String>) -> Bool {
        identity.withLock { $0 == ObjectIdentifier(future) }
    }
}

/// `fetchData()`: three segments separated by two awaits of a 30 ms delay.
private struct FetchData: TourStateMachine {
    var builder = FutureMethodBuilder<String>()
    var state = 0
    /// How many times `moveNext()` has run: it travels with the machine into its box.
    var moveNextCalls = 0
    var delay: FutureAwaiter<Void>?
    let output: TourOutput
    let callersFuture: CallersFuture

    mutating func moveNext() {
        moveNextCalls += 1
        do {
            switch state {
            case 0:
                output("State 0 (moveNext call \(moveNextCalls), on the caller's stack): before the first await")
                let awaiter = Future.delay(.milliseconds(30)).getAwaiter()
                delay = awaiter
                if suspends(on: awaiter, resumingAt: 1) {
                    output(
                        "  the delay is pending: state = \(state), the machine is copied into a heap box, "
                            + "moveNext returns")
                    return
                }
                fallthrough
            case 1:
                try delay!.getResult()
                // Once boxed, the machine runs inside its box, and the box is the method's future.
                let insideCallersFuture = callersFuture.isSame(as: builder.future)
                output(
                    "State 1 (moveNext call \(moveNextCalls)): resumed after the first await, "
                        + "running inside the future the caller holds: \(insideCallersFuture)")
                let awaiter = Future.delay(.milliseconds(30)).getAwaiter()
                delay = awaiter
                if suspends(on: awaiter, resumingAt: 2) {
                    output("  the delay is pending: state = \(state), moveNext returns")
                    return
                }
                fallthrough
            default:
                try delay!.getResult()
                output("State 2 (moveNext call \(moveNextCalls)): resumed after the second await; returning \"data\"")
                state = -1
                builder.setResult("data")
            }
        } catch {
            state = -1
            builder.setError(error)
        }
    }

    static func start(_ output: TourOutput, callersFuture: CallersFuture) -> Future<String> {
        var machine = FetchData(output: output, callersFuture: callersFuture)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}
