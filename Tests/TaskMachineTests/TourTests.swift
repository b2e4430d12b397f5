import CAllocationCounter
import Foundation
import Synchronization
import TaskMachine
import TaskMachineTour
import Testing

/// Runs tour section `number` into a buffer and returns the lines of its live output: the heading
/// and the explanation dropped, indentation trimmed, blank lines kept out.
private func liveOutput(ofSection number: Int) throws -> [String] {
    let lines = Mutex<[String]>([])
    let section = try #require(Tour.section(numbered: number))
    try section.run(into: TourOutput { line in lines.withLock { $0.append(line) } })
    let all = lines.withLock { $0 }
    #expect(all.first == "\(number). \(section.title)")
    return all.dropFirst(2).map { String($0.trimmingPrefix(while: \.isWhitespace)) }.filter { !$0.isEmpty }
}

/// The position of the first line that starts with `prefix`; records a failure if there is none.
private func index(of prefix: String, in lines: [String], sourceLocation: SourceLocation = #_sourceLocation) -> Int {
    guard let found = lines.firstIndex(where: { $0.hasPrefix(prefix) }) else {
        Issue.record(
            "no line starts with \"\(prefix)\" in:\n\(lines.joined(separator: "\n"))", sourceLocation: sourceLocation)
        return -1
    }
    return found
}

/// The first line that starts with `prefix`, or "" (with a recorded failure).
private func line(_ prefix: String, in lines: [String], sourceLocation: SourceLocation = #_sourceLocation) -> String {
    let found = index(of: prefix, in: lines, sourceLocation: sourceLocation)
    return found >= 0 ? lines[found] : ""
}

/// The numbers of the lines numbered `1.` to `9.`, in the order they were written.
private func stepNumbers(_ lines: [String]) -> [Int] {
    lines.compactMap { line in
        guard let match = line.firstMatch(of: #/^(\d)\. /#) else { return nil }
        return Int(match.1)
    }
}

/// Runs the `taskmachine` command built beside this test bundle with `arguments`, its environment
/// changed by `environment`, and returns its exit status and what it wrote to standard output and
/// standard error.
private func runCommand(_ arguments: [String], environment: [String: String] = [:]) throws -> (
    status: Int32, output: String
) {
    let folder = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    let command = folder.appendingPathComponent("taskmachine")
    try #require(FileManager.default.isExecutableFile(atPath: command.path), "no taskmachine in \(folder.path)")
    let process = Process()
    process.executableURL = command
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

// Serialized: section 4 counts the runtime's threads, which the contexts of section 8 would change.
@Suite(.serialized) struct TourTests {
    @Test func theSectionsAreNumberedOneToEightAndOtherNumbersAreRefused() {
        #expect(Tour.sections.map(\.number) == Array(1...8))
        #expect(Tour.section(numbered: 0) == nil)
        #expect(Tour.section(numbered: 9) == nil)
    }

    @Test func theCommandRefusesASectionNumberOutOfRangeNegativeOrNotANumber() throws {
        for section in ["9", "0", "-1"] {
            let (status, output) = try runCommand(["tour", "--section", section])
            #expect(status != 0)
            #expect(output.contains("There is no section \(section). Valid sections:"), "\(output)")
        }
        let (status, output) = try runCommand(["tour", "--section", "four"])
        #expect(status != 0)
        #expect(output.contains("The value 'four' is invalid for '--section <section>'"), "\(output)")
    }

    @Test func theListNamesEverySectionOrTheOneAskedFor() throws {
        let (status, output) = try runCommand(["tour", "--list"])
        #expect(status == 0)
        #expect(output.split(separator: "\n").count == Tour.sections.count, "\(output)")
        let (oneStatus, one) = try runCommand(["tour", "--list", "--section", "3"])
        #expect(oneStatus == 0)
        #expect(one == "  3. \(Tour.section(numbered: 3)!.title)\n", "\(one)")
    }

    @Test func continuationsRunAfterTheCallerGoesOnAndBComesAfterTheDelay() throws {
        let lines = try liveOutput(ofSection: 1)
        #expect(stepNumbers(lines) == [1, 2, 3, 4, 5])
        let a = index(of: "A. before the await", in: lines)
        let b = index(of: "B. after the await", in: lines)
        let c = index(of: "C. last", in: lines)
        #expect(a < b && b < c)
        let waited = try #require(lines[b].firstMatch(of: /resumed (\d+) ms later/))
        #expect(Int(waited.1)! >= 100)
    }

    @Test func theStateMachineRunsStatesZeroOneTwoInOrderInsideItsBox() throws {
        let lines = try liveOutput(ofSection: 2)
        let state0 = index(of: "State 0 (moveNext call 1,", in: lines)
        let returned = index(of: "caller: fetchData() returned its future, status pending", in: lines)
        let state1 = index(of: "State 1 (moveNext call 2)", in: lines)
        let state2 = index(of: "State 2 (moveNext call 3)", in: lines)
        #expect(state0 < returned && returned < state1 && state1 < state2)
        #expect(lines[state1].hasSuffix("running inside the future the caller holds: true"))
        #expect(lines.last == "caller: the future completed with \"data\"")
    }

    @Test func theAwaiterIsDrivenByHandThenAwaitedForReal() throws {
        let lines = try liveOutput(ofSection: 3)
        let pending = index(of: "isCompleted: false", in: lines)
        let registered = index(of: "onCompleted(_:) registered it", in: lines)
        let completed = index(of: "the continuation runs: isCompleted is now true", in: lines)
        let result = index(of: "getResult(): 42", in: lines)
        let realAwait = index(of: "a real await of the same future: isCompleted was true", in: lines)
        #expect(pending < registered && registered < completed && completed < result && result < realAwait)
        #expect(lines[realAwait].hasSuffix("value 42"))
    }

    @Test func awaitsResumeOnTheirContextUnlessConfiguredAndDelaysHoldNoThreads() throws {
        let lines = try liveOutput(ofSection: 4)
        let threadLines = lines.filter {
            $0.hasPrefix("before the first await:") || $0.hasPrefix("after a plain await:")
                || $0.hasPrefix("after configureAwait(false):")
        }
        #expect(threadLines.count == 6)
        let threads = threadLines.map {
            $0.split(separator: ":", maxSplits: 1)[1].trimmingPrefix(while: \.isWhitespace)
        }
        let poolWorker = /pool-\d+ \(pool worker\)/
        // No context: both continuations on pool workers.
        #expect(threads[1].wholeMatch(of: poolWorker) != nil)
        #expect(threads[2].wholeMatch(of: poolWorker) != nil)
        // On "ui": the plain await comes back to "ui", configureAwait(false) does not.
        #expect(threads[3] == "ui (context loop)")
        #expect(threads[4] == "ui (context loop)")
        #expect(threads[5].wholeMatch(of: poolWorker) != nil)

        let during = line("10,000 delays of 200 ms:", in: lines)
        #expect(during.contains("1 timer"))
        let extra = try #require(line("extra threads for the waits:", in: lines).firstMatch(of: /: (-?\d+)$/))
        // Other test suites may start a thread meanwhile; a thread per delay would be 10,000.
        #expect(Int(extra.1)! < 10)
        #expect(line("Future.run { } ran its body on", in: lines).firstMatch(of: poolWorker) != nil)
    }

    @Test func fastPathsAllocateNothingAndACacheHitFutureAllocatesOne() throws {
        let lines = try liveOutput(ofSection: 5)
        if tm_allocations_interposed() != 0 {
            func count(_ prefix: String) -> String? {
                line(prefix, in: lines).firstMatch(of: /:\s+(\d+(\.\d+)?)/).map { String($0.1) }
            }
            #expect(count("await a Future that has completed:") == "0")
            #expect(count("await a ValueFuture holding its value:") == "0")
            #expect(count("cache hit via ValueFutureMethodBuilder, awaited:") == "0")
            #expect(count("cache hit via FutureMethodBuilder, awaited:") == "1")
        } else {
            _ = line("Allocation counting is not active in this process", in: lines)
        }
        #expect(lines.contains("isCompleted right after the call: false"))
        #expect(line("the value arrived", in: lines).hasSuffix(": 700"))
    }

    @Test func aMethodResumesAfterItsAwaitAndReturnsTheTotal() throws {
        let lines = try liveOutput(ofSection: 6)
        let resumed = index(of: "addAfterDelay: resumed after its 20 ms delay", in: lines)
        #expect(index(of: "main: addAfterDelay(20, 22) returned a future, status pending", in: lines) < resumed)
        #expect(lines.last == "The total is 42")
    }

    @Test func theFiveNumberedLinesProveTheResumeOrder() throws {
        let lines = try liveOutput(ofSection: 7)
        #expect(stepNumbers(lines) == [1, 2, 3, 4, 5])
        #expect(lines.count == 5)
        // The lesson's challenge names the awaited method PourAsync().
        #expect(lines.first == "1. start: main calls pour() and does not await it yet")
        #expect(line("2. ", in: lines).hasPrefix("2. pour():"))
    }

    @Test func theCommonErrorsAreCaughtAndReported() throws {
        // The section stands in for the process-wide handler for a moment.
        let lines = try standingInForTheProcessWideHandler { try liveOutput(ofSection: 8) }

        let deadlock = line("wait() would deadlock:", in: lines)
        #expect(deadlock.contains("AddAfterDelay awaits delay("))
        #expect(deadlock.contains("must resume on \"ui\""))
        #expect(index(of: "caught DeadlockError", in: lines) < index(of: "once \"ui\" was free again", in: lines))
        #expect(line("once \"ui\" was free again", in: lines).hasSuffix("returned 42"))
        #expect(line("the fix: with configureAwait(false)", in: lines).hasSuffix("returns 42"))

        let rethrown = index(of: "started under AsyncContext:", in: lines)
        let handled = index(of: "started with no context:", in: lines)
        #expect(rethrown >= 0 && lines[rethrown + 1] == "sendReport(): the server refused the upload")
        #expect(handled >= 0 && lines[handled + 2] == "sendReport(): the server refused the upload")

        #expect(lines.contains("one await of a ValueFuture: compiles"))
        #expect(lines.contains("refused by the compiler:"))
        #expect(lines.contains { $0.contains("error: 'pending' consumed more than once") })

        #expect(line("reading the kept awaiter again:", in: lines).contains("stale value-future token 0"))
        #expect(line("a second continuation for the same operation:", in: lines).contains("already has a continuation"))
        #expect(lines.last == "the first continuation ran with 8")
    }

    /// A compiler that refuses even the single await proves nothing about the second one: the tour
    /// must not present its refusal as the compiler catching a double await.
    @Test func aCompilerThatRefusesEvenOneAwaitIsNotShownAsCatchingTheSecond() throws {
        let (status, output) = try runCommand(["tour", "--section", "8"], environment: ["SWIFTC": "/bin/false"])
        #expect(status == 0)
        #expect(output.contains("one await of a ValueFuture: does not compile"), "\(output)")
        #expect(!output.contains("refused by the compiler"), "\(output)")
        #expect(output.contains("(d) Misusing a pooled ValueFutureSourceCore"))
    }

    /// While section 8 shows where a fire-and-forget error goes with no context, it stands in for
    /// the process-wide handler; an error of anyone else's that arrives meanwhile must still reach
    /// the handler that was there.
    @Test func theFireAndForgetDemoPassesOtherErrorsToTheHandlerItReplaced() throws {
        try standingInForTheProcessWideHandler { try otherErrorsReachTheReplacedHandler() }
    }

    private func otherErrorsReachTheReplacedHandler() throws {
        let received = Promise<Int>()
        let previous = ErrorReporting.unhandledErrorHandler
        ErrorReporting.unhandledErrorHandler = { error in
            if let error = error as? TestError, error.code == 81 {
                received.trySucceed(error.code)
            } else {
                previous(error)
            }
        }
        defer { ErrorReporting.unhandledErrorHandler = previous }

        let section = try #require(Tour.section(numbered: 8))
        try section.run(
            into: TourOutput { line in
                // Written while the demo's own handler is in place.
                if line.hasSuffix("started with no context: the error went to ErrorReporting.unhandledErrorHandler") {
                    ErrorReporting.unhandledErrorHandler(TestError(code: 81))
                }
            })
        #expect(try received.future.wait(timeout: .seconds(1)) == 81)
    }
}
