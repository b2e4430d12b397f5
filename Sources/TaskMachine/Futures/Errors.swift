/// The error a cancelled operation throws when awaited: it carries the token that cancelled it.
///
/// A future that ends cancelled rethrows this error from `getResult()`, `value` and `wait()`.
/// A `Future.run` body that throws it with the run's own token ends the run *cancelled*; with any
/// other token it is an ordinary failure. An async method that returns a future (a state machine
/// whose builder's `setError` receives it) ends cancelled whatever the token, as it has no token of
/// its own; a fire-and-forget method reports it as it reports any error.
public struct OperationCancelledError: Error, Sendable, CustomStringConvertible {
    /// The token whose cancellation ended the operation, or `.none` when it was cancelled directly.
    public let token: CancellationToken

    /// Creates the error for a cancellation through `token`.
    public init(token: CancellationToken = .none) {
        self.token = token
    }

    public var description: String {
        token.canBeCancelled
            ? "the operation was cancelled through its cancellation token" : "the operation was cancelled"
    }
}

/// Misuse of a promise.
public enum PromiseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The future was completed already; the first outcome stands.
    case alreadyCompleted(FutureStatus)
    /// `fail(errors:)` was given an empty list: a failed future needs at least one error.
    case noErrors

    public var description: String {
        switch self {
        case .alreadyCompleted(let status):
            "the promise's future is already completed (\(status)); the first outcome stands"
        case .noErrors:
            "a future cannot fail without an error: the list of errors is empty"
        }
    }
}

/// An argument the runtime cannot accept, such as a negative delay.
public struct InvalidArgumentError: Error, Sendable, CustomStringConvertible {
    /// What was wrong, in a sentence.
    public let message: String

    /// Creates the error with a sentence that says what was wrong.
    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// A wait that ran out of time.
public struct TimeoutError: Error, Sendable, CustomStringConvertible {
    /// How long the wait was allowed to take.
    public let timeout: Duration

    /// Creates the error for a wait that was allowed `timeout`.
    public init(timeout: Duration) {
        self.timeout = timeout
    }

    public var description: String { "the operation did not complete within \(timeout.readableText)" }
}

/// Reading the result of a future that has not completed.
public struct FutureNotCompletedError: Error, Sendable, CustomStringConvertible {
    /// Creates the error.
    public init() {}

    public var description: String {
        "the future has not completed: await it, check isCompleted, or block with wait()"
    }
}

extension Duration {
    /// `20 ms`, `1.5 s`, `250 µs`: a duration as a person writes it.
    var readableText: String {
        let nanoseconds = totalNanoseconds
        // The magnitude, not `abs`, which traps on Int64.min.
        let magnitude = nanoseconds.magnitude
        func scaled(_ unit: UInt64, _ name: String) -> String {
            let whole = "\(nanoseconds < 0 ? "-" : "")\(magnitude / unit)"
            let tenths = magnitude % unit * 10 / unit
            return tenths == 0 ? "\(whole) \(name)" : "\(whole).\(tenths) \(name)"
        }
        switch magnitude {
        case 1_000_000_000...: return scaled(1_000_000_000, "s")
        case 1_000_000...: return scaled(1_000_000, "ms")
        case 1_000...: return scaled(1_000, "µs")
        default: return "\(nanoseconds) ns"
        }
    }

    /// The duration in whole nanoseconds, saturating at the ends of `Int64`.
    var totalNanoseconds: Int64 {
        // Checked first: `components` traps past Int64.max seconds, which a Duration can exceed.
        if self >= .nanoseconds(Int64.max) { return .max }
        if self <= .nanoseconds(Int64.min) { return .min }
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflow2) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow2 { return seconds < 0 ? .min : .max }
        return sum
    }
}
