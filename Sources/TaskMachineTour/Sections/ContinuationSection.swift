import TaskMachine

/// Section 1: the lines after an await run later, as a continuation.
enum ContinuationSection {
    static let section = TourSection(
        number: 1,
        title: "Code after await is a continuation",
        explanation: "A method runs on its caller's thread until an await must wait; "
            + "the lines after that await run later.",
        body: run
    )

    static func run(_ output: TourOutput) throws {
        // AsyncContext runs every continuation back on this thread, one at a time, so the lines
        // come out in the order the runtime really ran them.
        try AsyncContext.run { RunMain.start(output) }
        output("")
        output("Exercise: A, B, C")
        try AsyncContext.run { Letters.start(output) }
    }
}

/// `main`: calls `doWork()`, goes on while it is paused, then awaits it.
private struct RunMain: TourStateMachine {
    var builder = FutureMethodBuilder<Void>()
    var state = 0
    var work: FutureAwaiter<Void>?
    let output: TourOutput

    mutating func moveNext() {
        do {
            switch state {
            case 0:
                output("1. main: before calling doWork()")
                let future = DoWork.start(output)
                output("3. main: doWork() returned a pending future, so main goes on while doWork() is paused")
                let awaiter = future.getAwaiter()
                work = awaiter
                if suspends(on: awaiter, resumingAt: 1) { return }
                fallthrough
            default:
                try work!.getResult()
                output("5. main: done; its own await of doWork() has completed")
                builder.setResult()
            }
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ output: TourOutput) -> Future<Void> {
        var machine = RunMain(output: output)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

/// `doWork()`: one line before its await of a 50 ms delay, one after.
private struct DoWork: TourStateMachine {
    var builder = FutureMethodBuilder<Void>()
    var state = 0
    var delay: FutureAwaiter<Void>?
    let output: TourOutput

    mutating func moveNext() {
        do {
            switch state {
            case 0:
                output("2. doWork(): before its await, still on main's call stack")
                let awaiter = Future.delay(.milliseconds(50)).getAwaiter()
                delay = awaiter
                if suspends(on: awaiter, resumingAt: 1) { return }
                fallthrough
            default:
                try delay!.getResult()
                output("4. doWork(): after its await; this continuation ran once the 50 ms delay completed")
                builder.setResult()
            }
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ output: TourOutput) -> Future<Void> {
        var machine = DoWork(output: output)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

/// The exercise: A before an await of a 100 ms delay, B after it, C last.
private struct Letters: TourStateMachine {
    var builder = FutureMethodBuilder<Void>()
    var state = 0
    var delay: FutureAwaiter<Void>?
    var startedAt = ContinuousClock.now
    let output: TourOutput

    mutating func moveNext() {
        do {
            switch state {
            case 0:
                output("A. before the await")
                startedAt = .now
                let awaiter = Future.delay(.milliseconds(100)).getAwaiter()
                delay = awaiter
                if suspends(on: awaiter, resumingAt: 1) { return }
                fallthrough
            default:
                try delay!.getResult()
                let waited = (ContinuousClock.now - startedAt) / .milliseconds(1)
                output("B. after the await: resumed \(Int(waited)) ms later, when the 100 ms delay completed")
                output("C. last")
                builder.setResult()
            }
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ output: TourOutput) -> Future<Void> {
        var machine = Letters(output: output)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}
