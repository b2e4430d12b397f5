import TaskMachine

/// Section 3: the calls an await makes, made by hand.
enum AwaiterSection {
    static let section = TourSection(
        number: 3,
        title: "The awaiter pattern, by hand",
        explanation: "An await is four plain calls: getAwaiter(), isCompleted, onCompleted(_:) and getResult().",
        body: run
    )

    static func run(_ output: TourOutput) throws {
        try AsyncContext.run {
            let done = Promise<Void>()
            let number = GetNumber.start()
            output("getNumber() returned a future; future.getAwaiter() gives its awaiter")
            let awaiter = number.getAwaiter()
            output("isCompleted: \(awaiter.isCompleted), so an await registers a continuation and returns")
            awaiter.onCompleted {
                output("the continuation runs: isCompleted is now \(awaiter.isCompleted)")
                do {
                    output("getResult(): \(try awaiter.getResult())")
                    let awaitingAgain = AwaitNumber.start(number, output)
                    awaitingAgain.whenCompleted { _ in done.trySucceed() }
                } catch {
                    done.tryFail(error)
                }
            }
            output("onCompleted(_:) registered it; the caller's thread is free meanwhile")
            return done.future
        }
    }
}

extension Future {
    /// Calls `body` with the completed future; for glue in the tour where no await is being shown.
    func whenCompleted(_ body: @escaping @Sendable (Future<Value>) -> Void) {
        configureAwait(false).getAwaiter().onCompleted { body(self) }
    }
}

/// `getNumber()`: 42 after a 30 ms delay.
private struct GetNumber: TourStateMachine {
    var builder = FutureMethodBuilder<Int>()
    var state = 0
    var delay: FutureAwaiter<Void>?

    mutating func moveNext() {
        do {
            switch state {
            case 0:
                let awaiter = Future.delay(.milliseconds(30)).getAwaiter()
                delay = awaiter
                if suspends(on: awaiter, resumingAt: 1) { return }
                fallthrough
            default:
                try delay!.getResult()
                builder.setResult(42)
            }
        } catch {
            builder.setError(error)
        }
    }

    static func start() -> Future<Int> {
        var machine = GetNumber()
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

/// A real await of a future, as a state machine, saying whether it had to suspend.
private struct AwaitNumber: TourStateMachine {
    var builder = FutureMethodBuilder<Void>()
    var state = 0
    var suspended = false
    var number: FutureAwaiter<Int>
    let output: TourOutput

    mutating func moveNext() {
        do {
            if state == 0 && suspends(on: number, resumingAt: 1) {
                suspended = true
                return
            }
            let value = try number.getResult()
            let path = suspended ? "it suspended first" : "isCompleted was true, so it went on without suspending"
            output("a real await of the same future: \(path); value \(value)")
            builder.setResult()
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ number: Future<Int>, _ output: TourOutput) -> Future<Void> {
        var machine = AwaitNumber(number: number.getAwaiter(), output: output)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}
