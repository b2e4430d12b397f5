import TaskMachine

/// Section 6: a method resumes after its await and returns a value to the one awaiting it.
enum ReturnValueSection {
    static let section = TourSection(
        number: 6,
        title: "Resume after await and return a value",
        explanation: "What a method returns after its await completes its future; the caller's "
            + "await receives it.",
        body: run
    )

    static func run(_ output: TourOutput) throws {
        try AsyncContext.run { PrintTotal.start(output) }
    }
}

/// `main`: awaits `addAfterDelay(20, 22)` and prints the total.
private struct PrintTotal: TourStateMachine {
    var builder = FutureMethodBuilder<Void>()
    var state = 0
    var sum: FutureAwaiter<Int>?
    let output: TourOutput

    mutating func moveNext() {
        do {
            switch state {
            case 0:
                let future = AddAfterDelay.start(20, 22, report: output)
                output("main: addAfterDelay(20, 22) returned a future, status \(future.status); awaiting it")
                let awaiter = future.getAwaiter()
                sum = awaiter
                if suspends(on: awaiter, resumingAt: 1) { return }
                fallthrough
            default:
                let total = try sum!.getResult()
                output("The total is \(total)")
                builder.setResult()
            }
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ output: TourOutput) -> Future<Void> {
        var machine = PrintTotal(output: output)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

/// `addAfterDelay(a, b)`: awaits a 20 ms delay, then returns `a + b`.
///
/// Section 8 starts it with `continueOnCapturedContext` `false` to show the fix for the classic
/// deadlock; the type's name is what the deadlock report prints.
struct AddAfterDelay: TourStateMachine {
    var builder = FutureMethodBuilder<Int>()
    var state = 0
    var delay: ConfiguredFutureAwaiter<Void>?
    let a: Int
    let b: Int
    let continueOnCapturedContext: Bool
    let report: TourOutput?

    mutating func moveNext() {
        do {
            switch state {
            case 0:
                let awaiter = Future.delay(.milliseconds(20)).configureAwait(continueOnCapturedContext).getAwaiter()
                delay = awaiter
                if suspends(on: awaiter, resumingAt: 1) { return }
                fallthrough
            default:
                try delay!.getResult()
                report?("addAfterDelay: resumed after its 20 ms delay; returning \(a) + \(b)")
                builder.setResult(a + b)
            }
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ a: Int, _ b: Int, continueOnCapturedContext: Bool = true, report: TourOutput? = nil)
        -> Future<Int>
    {
        var machine = AddAfterDelay(
            a: a, b: b, continueOnCapturedContext: continueOnCapturedContext, report: report)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}
