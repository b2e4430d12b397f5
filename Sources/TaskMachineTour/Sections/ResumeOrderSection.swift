import TaskMachine

/// Section 7, the mini-challenge: five numbered lines whose order proves the resume order.
enum ResumeOrderSection {
    static let section = TourSection(
        number: 7,
        title: "Mini-challenge: prove the resume order",
        explanation: "Even Future.yield(), which waits for nothing, resumes only after the caller "
            + "has gone on.",
        body: run
    )

    static func run(_ output: TourOutput) throws {
        try AsyncContext.run { PourMain.start(output) }
    }
}

/// `main`: starts `pour()`, does its own work, then awaits `pour()`.
private struct PourMain: TourStateMachine {
    var builder = FutureMethodBuilder<Void>()
    var state = 0
    var pouring: FutureAwaiter<Void>?
    let output: TourOutput

    mutating func moveNext() {
        do {
            switch state {
            case 0:
                output("1. start: main calls pour() and does not await it yet")
                let future = Pour.start(output)
                output("3. main carries on while pour() is paused at its await")
                let awaiter = future.getAwaiter()
                pouring = awaiter
                if suspends(on: awaiter, resumingAt: 1) { return }
                fallthrough
            default:
                try pouring!.getResult()
                output("5. done: main's await of pour() completed")
                builder.setResult()
            }
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ output: TourOutput) -> Future<Void> {
        var machine = PourMain(output: output)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

/// `pour()`: one line, an await of `Future.yield()`, one line.
private struct Pour: TourStateMachine {
    var builder = FutureMethodBuilder<Void>()
    var state = 0
    var yielding: YieldAwaiter?
    let output: TourOutput

    mutating func moveNext() {
        switch state {
        case 0:
            output("2. pour(): before its await")
            let awaiter = Future.yield().getAwaiter()
            yielding = awaiter
            if suspends(on: awaiter, resumingAt: 1) { return }
            fallthrough
        default:
            yielding!.getResult()
            output("4. pour(): after its await, resumed from the context's queue")
            builder.setResult()
        }
    }

    static func start(_ output: TourOutput) -> Future<Void> {
        var machine = Pour(output: output)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}
