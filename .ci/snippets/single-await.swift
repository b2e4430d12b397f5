// The control for double-await.swift: the same code awaiting once compiles.
import TaskMachine

func awaitOnce() async throws -> Int {
    let future = ValueFuture(21)
    let first = try await future.get()
    return first * 2
}
