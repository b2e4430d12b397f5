/// The future of `Future.run`: it is its own pool job, so running a closure costs one allocation.
final class RunFuture<Value: Sendable>: Future<Value> {
    private var body: (@Sendable () throws -> Value)?
    private let token: CancellationToken

    init(token: CancellationToken, body: @escaping @Sendable () throws -> Value) {
        self.body = body
        self.token = token
        super.init(runsContinuationsAsynchronously: false)
    }

    override func runAsJob() {
        guard let body else { return }
        self.body = nil
        if token.isCancellationRequested {
            _ = tryCancel(token: token)
            return
        }
        do {
            _ = trySucceed(try body())
        } catch {
            _ = tryComplete(throwing: error, ownToken: token)
        }
    }

    override var diagnosticName: String { "run { } -> Future<\(Value.self)>" }
}

extension Future {
    /// Runs `body` on the thread pool and returns a future of its result — for CPU work that should
    /// not hold up the calling thread.
    ///
    /// - Parameters:
    ///   - cancellation: checked before the body starts: a token cancelled by then (or already when
    ///     `run` is called) ends the future *cancelled* without running the body. A body that throws
    ///     ``OperationCancelledError`` with this same token ends it cancelled too; any other error
    ///     fails it.
    ///   - body: the work.
    public static func run(
        cancellation: CancellationToken = .none,
        _ body: @escaping @Sendable () throws -> Value
    ) -> Future<Value> {
        if cancellation.isCancellationRequested {
            return Future.cancelled(token: cancellation)
        }
        let future = RunFuture(token: cancellation, body: body)
        ThreadPool.shared.enqueue(.future(future))
        return future
    }
}

// Safe to share: the body is read and cleared only by the one job run.
extension RunFuture: @unchecked Sendable {}
