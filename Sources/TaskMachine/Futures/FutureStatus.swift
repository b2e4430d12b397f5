/// Where a future is in its life. It moves from `pending` to one of the three others, once.
public enum FutureStatus: UInt8, Sendable, CustomStringConvertible {
    /// Not completed yet.
    case pending = 0
    /// Completed with a value.
    case succeeded = 2
    /// Completed with one or more errors.
    case failed = 3
    /// Completed by cancellation.
    case cancelled = 4

    /// Whether the future has completed, in any way.
    public var isCompleted: Bool { self != .pending }

    public var description: String {
        switch self {
        case .pending: "pending"
        case .succeeded: "succeeded"
        case .failed: "failed"
        case .cancelled: "cancelled"
        }
    }
}
