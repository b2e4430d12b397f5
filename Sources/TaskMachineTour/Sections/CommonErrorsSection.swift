import TaskMachine

/// Section 8: the common mistakes, each made on purpose where it can do no harm.
enum CommonErrorsSection {
    static let section = TourSection(
        number: 8,
        title: "Common errors, made safely",
        explanation: "Each mistake below really happens; the runtime, or the compiler, catches it.",
        body: run
    )

    static func run(_ output: TourOutput) throws {
        output("(a) Blocking with wait() on the thread a continuation must come back to")
        try showDeadlock(output.indented())
        output("")
        output("(b) An error in a fire-and-forget method")
        try showFireAndForgetErrors(output.indented())
        output("")
        output("(c) Awaiting a ValueFuture twice")
        try showDoubleAwaitRefused(output.indented())
        output("")
        output("(d) Misusing a pooled ValueFutureSourceCore")
        try showSourceMisuse(output.indented())
    }

    // MARK: (a) The classic deadlock

    /// What the blocking attempt on the context's thread saw, and the method it started.
    private struct BlockingAttempt: Sendable {
        var report: String
        var method: Future<Int>
    }

    static func showDeadlock(_ output: TourOutput) throws {
        let ui = SingleThreadContext(name: "ui")
        defer { try? ui.shutdown() }
        let attempt: Future<BlockingAttempt> = ui.run {
            // The method's await captures "ui"; this thread then blocks on the method.
            let method = AddAfterDelay.start(20, 22)
            do {
                return BlockingAttempt(report: "wait() returned \(try method.wait())", method: method)
            } catch let deadlock as DeadlockError {
                return BlockingAttempt(report: "caught DeadlockError:\n  \(deadlock)", method: method)
            }
        }
        let seen = try attempt.wait()
        output("on \"ui\": addAfterDelay(20, 22), then wait() on its future")
        for line in seen.report.split(separator: "\n") { output(String(line)) }
        let total = try seen.method.wait()
        output("once \"ui\" was free again, the paused method resumed there and returned \(total)")

        let fixed: Future<Int> = ui.run {
            try AddAfterDelay.start(20, 22, continueOnCapturedContext: false).wait()
        }
        output("the fix: with configureAwait(false) inside addAfterDelay, wait() on \"ui\" returns \(try fixed.wait())")
        try ui.shutdown()
    }

    // MARK: (b) Fire-and-forget errors

    static func showFireAndForgetErrors(_ output: TourOutput) throws {
        do {
            try AsyncContext.run { SendReport.start() }
            output("under AsyncContext: no error came back")
        } catch {
            output("started under AsyncContext: the error went to that context; AsyncContext.run rethrew it:")
            output("  \(error)")
        }

        let reported = Promise<String>()
        let savedHandler = ErrorReporting.unhandledErrorHandler
        // The handler is the process's: an error of anyone else's arriving meanwhile goes on to the
        // handler it replaces, not into the demo's output.
        ErrorReporting.unhandledErrorHandler = { error in
            if error is TourDemoError {
                reported.trySucceed("\(error)")
            } else {
                savedHandler(error)
            }
        }
        defer { ErrorReporting.unhandledErrorHandler = savedHandler }
        // A pool worker has no context, so the method captures none.
        try Future.run { SendReport.start() }.wait()
        let message = try reported.future.wait(timeout: .seconds(5))
        output("started with no context: the error went to ErrorReporting.unhandledErrorHandler")
        output("(replaced for this demo; the default one prints the error and exits the process):")
        output("  \(message)")
    }

    // MARK: (c) The second await that does not compile

    static let oneAwait = """
        import TaskMachine

        func readOnce(_ pending: consuming ValueFuture<Int>) async throws -> Int {
            try await pending.get()
        }
        """

    static let twoAwaits = """
        import TaskMachine

        func readTwice(_ pending: consuming ValueFuture<Int>) async throws -> Int {
            let first = try await pending.get()
            let second = try await pending.get()
            return first + second
        }
        """

    static func showDoubleAwaitRefused(_ output: TourOutput) throws {
        let compiler: CompilerCheck
        do {
            compiler = try CompilerCheck.locate()
        } catch {
            output("not checked: \(error)")
            return
        }
        output("compiling against the TaskMachine module this program was built with (swiftc -emit-sil):")
        let once = try compiler.compile(oneAwait, as: "OneAwait.swift")
        output("one await of a ValueFuture: \(once.compiled ? "compiles" : "does not compile")")
        for line in once.diagnostics { output("  \(line)") }
        guard once.compiled else {
            // A compiler that refuses the single await would refuse the pair for the same reason.
            output("not checked: with one await refused, a refusal of two would prove nothing")
            return
        }
        output("two awaits of the same ValueFuture:")
        for line in twoAwaits.split(separator: "\n") where line.contains("await pending") {
            output("  > \(line.trimmingPrefix(while: \.isWhitespace))")
        }
        let twice = try compiler.compile(twoAwaits, as: "TwoAwaits.swift")
        output(twice.compiled ? "compiles (the compiler did not catch the second await)" : "refused by the compiler:")
        for line in twice.diagnostics { output("  \(line)") }
    }

    // MARK: (d) A pooled source misused

    static func showSourceMisuse(_ output: TourOutput) throws {
        let source = ValueFutureSourceCore<Int>()
        // The awaiter is a copy that outlives the value future it came from: the way around the
        // compiler's await-once rule.
        let kept = source.makeValueFuture().getAwaiter()
        try source.succeed(7)
        output("version \(source.version) completed with \(try kept.getResult()); the awaiter that read it is kept")
        source.reset()
        output("reset(): the source moves to version \(source.version) for its next operation")
        do {
            let value = try kept.getResult()
            output("reading the kept awaiter again returned \(value)")
        } catch let error as ValueFutureSourceError {
            output("reading the kept awaiter again: \(error)")
        }

        let current = source.makeValueFuture().getAwaiter()
        try current.onCompleted { output("the first continuation ran with \((try? current.getResult()) ?? -1)") }
        do {
            try current.onCompleted {}
            output("a second continuation for the same operation was accepted")
        } catch let error as ValueFutureSourceError {
            output("a second continuation for the same operation: \(error)")
        }
        try source.succeed(8)
    }
}

/// `sendReport()`, fire-and-forget: fails after a 10 ms delay, with nobody awaiting it.
private struct SendReport: TourStateMachine {
    var builder = FireAndForgetMethodBuilder()
    var state = 0
    var delay: FutureAwaiter<Void>?

    mutating func moveNext() {
        do {
            switch state {
            case 0:
                let awaiter = Future.delay(.milliseconds(10)).getAwaiter()
                delay = awaiter
                if suspends(on: awaiter, resumingAt: 1) { return }
                fallthrough
            default:
                try delay!.getResult()
                throw TourDemoError("sendReport(): the server refused the upload")
            }
        } catch {
            builder.setError(error)
        }
    }

    static func start() {
        var machine = SendReport()
        FireAndForgetMethodBuilder.start(&machine)
    }
}
