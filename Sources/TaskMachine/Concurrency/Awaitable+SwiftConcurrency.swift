import Synchronization

/// Resumes a Swift task suspended on an awaiter, once: when the awaited operation completes, or
/// with `CancellationError` when the Swift task is cancelled first. Cancelling leaves the awaited
/// operation as it is — other awaiters still get its result.
final class SwiftTaskResumer: WorkItem {
    private static let empty: UInt8 = 0
    private static let installed: UInt8 = 1
    private static let finished: UInt8 = 2
    private static let cancelledEarly: UInt8 = 3

    private let state = Atomic<UInt8>(SwiftTaskResumer.empty)
    // Written before the installing compare-exchange, read only after winning the one that finishes.
    private var continuation: UnsafeContinuation<Void, any Error>?

    /// Stores the continuation; returns `false` (having resumed it) if the task was cancelled already.
    func install(_ continuation: UnsafeContinuation<Void, any Error>) -> Bool {
        self.continuation = continuation
        if state.compareExchange(expected: Self.empty, desired: Self.installed, ordering: .acquiringAndReleasing)
            .exchanged
        {
            return true
        }
        continuation.resume(throwing: CancellationError())
        return false
    }

    override func run() {
        finish(with: nil)
    }

    func cancel() {
        if !state.compareExchange(expected: Self.empty, desired: Self.cancelledEarly, ordering: .acquiringAndReleasing)
            .exchanged
        {
            finish(with: CancellationError())
        }
    }

    func finish(with error: (any Error)?) {
        guard
            state.compareExchange(expected: Self.installed, desired: Self.finished, ordering: .acquiringAndReleasing)
                .exchanged
        else { return }
        if let error { continuation!.resume(throwing: error) } else { continuation!.resume() }
    }
}

extension Awaiter {
    /// Suspends the calling Swift task until the awaiter completes, then returns its result.
    /// Does not suspend when it has completed already.
    ///
    /// - Throws: the awaited error, or `CancellationError` if the Swift task is cancelled while it
    ///   waits (the awaited operation is left untouched).
    @inlinable
    public func awaitResult() async throws -> Result {
        if !isCompleted { try await suspendUntilCompleted() }
        return try getResult()
    }

    @usableFromInline
    func suspendUntilCompleted() async throws {
        let resumer = SwiftTaskResumer()
        do {
            try await suspend(until: resumer)
        } catch let error as CancellationError {
            // Stopped waiting: take the resumer back, so that a future that never completes does
            // not gather one per cancelled await.
            (self as? any JobRegisteringAwaiter)?.withdraw(item: resumer)
            throw error
        }
    }

    private func suspend(until resumer: SwiftTaskResumer) async throws {
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                guard resumer.install(continuation) else { return }
                do {
                    if let runtimeAwaiter = self as? any JobRegisteringAwaiter {
                        try runtimeAwaiter.register(item: resumer)
                    } else {
                        try unsafeOnCompleted { resumer.run() }
                    }
                } catch {
                    resumer.finish(with: error)
                }
            }
        } onCancel: {
            resumer.cancel()
        }
    }
}

extension Awaitable {
    /// Awaits the result from Swift async code: `try await latch.value`. Does not suspend, and does
    /// not allocate, when the operation has completed.
    ///
    /// - Throws: the awaited error; `CancellationError` if the Swift task is cancelled while waiting.
    public var value: AwaiterType.Result {
        get async throws { try await getAwaiter().awaitResult() }
    }
}

extension Awaitable where Self: ~Copyable {
    /// Awaits the result from Swift async code, consuming a non-copyable awaitable:
    /// `try await valueFuture.get()`.
    ///
    /// - Throws: the awaited error; `CancellationError` if the Swift task is cancelled while waiting.
    public consuming func get() async throws -> AwaiterType.Result {
        try await getAwaiter().awaitResult()
    }
}

extension Future {
    /// The future's value, awaited from Swift async code: `try await future.value`.
    ///
    /// Returns at once, with no suspension and no allocation, when the future has completed.
    /// If the Swift task is cancelled while waiting, throws `CancellationError` and leaves the
    /// future untouched.
    @inlinable
    public var value: Value {
        get async throws {
            if !isCompleted { try await FutureAwaiter(self).suspendUntilCompleted() }
            return try getResult()
        }
    }
}

// Safe to share: the continuation is written before, and read after, the state word's compare-exchanges.
extension SwiftTaskResumer: @unchecked Sendable {}
