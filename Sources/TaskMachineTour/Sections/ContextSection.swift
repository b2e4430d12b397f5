import TaskMachine

/// Section 4: where continuations run, with and without a synchronization context, and which
/// threads an await really uses.
enum ContextSection {
    static let section = TourSection(
        number: 4,
        title: "Contexts, configureAwait(false) and threads",
        explanation: "An await resumes on the context it captured; with none, or with "
            + "configureAwait(false), on a pool thread.",
        body: run
    )

    static func run(_ output: TourOutput) throws {
        output("With no context, as on a console program's main thread:")
        try ReportThreads.start(output.indented()).wait()

        output("")
        output("On a SingleThreadContext named \"ui\" (the part a UI thread plays):")
        let ui = SingleThreadContext(name: "ui")
        defer { try? ui.shutdown() }
        let onUI: Future<Void> = ui.run { ReportThreads.start(output.indented()) }
        try onUI.wait()
        try ui.shutdown()

        output("")
        try showWhereThreadsAreUsed(output)
    }

    /// Many pending delays hold no threads; `Future.run` borrows a pool worker.
    static func showWhereThreadsAreUsed(_ output: TourOutput) throws {
        output("Where threads are and are not used:")
        let before = RuntimeStatistics.current
        output("  before:                      \(describeThreads(before))")
        // A pending delay is an entry in the timer thread's wheel, not a sleeping thread.
        let delays = (0..<10_000).map { _ in Future.delay(.milliseconds(200)) }
        let during = RuntimeStatistics.current
        output(
            "  10,000 delays of 200 ms:     \(describeThreads(during)), \(during.pendingTimers.groupedText) timers pending"
        )
        output("  extra threads for the waits: \(during.totalThreads - before.totalThreads)")
        _ = try Future.whenAll(delays).wait()
        output("  all completed:               \(describeThreads(RuntimeStatistics.current))")
        let worker = try Future.run { currentThreadDescription }.wait()
        output("  Future.run { } ran its body on \(worker): CPU work borrows a pool thread")
    }

    private static func describeThreads(_ statistics: RuntimeStatistics) -> String {
        "\(statistics.totalThreads) runtime threads (\(statistics.poolWorkers) pool, "
            + "\(statistics.monitorThreads) pool monitor, \(statistics.timerThreads) timer, "
            + "\(statistics.contextThreads) context)"
    }
}

/// Writes the thread it runs on before its awaits, after a plain await, and after one with
/// `configureAwait(false)`.
private struct ReportThreads: TourStateMachine {
    var builder = FutureMethodBuilder<Void>()
    var state = 0
    var plainDelay: FutureAwaiter<Void>?
    var configuredDelay: ConfiguredFutureAwaiter<Void>?
    let output: TourOutput

    mutating func moveNext() {
        do {
            switch state {
            case 0:
                output("before the first await:         \(currentThreadDescription)")
                let awaiter = Future.delay(.milliseconds(20)).getAwaiter()
                plainDelay = awaiter
                if suspends(on: awaiter, resumingAt: 1) { return }
                fallthrough
            case 1:
                try plainDelay!.getResult()
                output("after a plain await:            \(currentThreadDescription)")
                let awaiter = Future.delay(.milliseconds(20)).configureAwait(false).getAwaiter()
                configuredDelay = awaiter
                if suspends(on: awaiter, resumingAt: 2) { return }
                fallthrough
            default:
                try configuredDelay!.getResult()
                output("after configureAwait(false):    \(currentThreadDescription)")
                builder.setResult()
            }
        } catch {
            builder.setError(error)
        }
    }

    static func start(_ output: TourOutput) -> Future<Void> {
        var machine = ReportThreads(output: output)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}
