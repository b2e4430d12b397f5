// Awaiting a ValueFuture twice must not compile: awaiting consumes it.
import TaskMachine

func awaitTwice() async throws -> Int {
    let future = ValueFuture(21)
    let first = try await future.get()
    let second = try await future.get()
    return first + second
}
