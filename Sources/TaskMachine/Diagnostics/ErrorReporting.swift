import Glibc
import Synchronization

/// Where errors nobody awaits end up: the process-wide handlers for fire-and-forget errors and for
/// failed futures released without their error being read.
public enum ErrorReporting {
    /// A failed future that was released without anyone reading its error.
    public struct UnobservedError: Sendable, CustomStringConvertible {
        /// The future's errors.
        public let errors: [any Error]
        /// What the future was, e.g. `Future<Int>` or the name of an async method.
        public let futureDescription: String

        public var description: String {
            "a failed \(futureDescription) was released without its error being observed: "
                + errors.map { "\($0)" }.joined(separator: "; ")
        }
    }

    private static let handlers = Locked(
        (
            unhandled: defaultUnhandledErrorHandler as @Sendable (any Error) -> Void,
            unobserved: defaultUnobservedErrorHandler as @Sendable (UnobservedError) -> Void
        ))

    /// Receives the error of a fire-and-forget method that captured no context. The default prints
    /// the error to standard error and exits the process with status 1, as an unhandled error
    /// should; replace it to log and carry on.
    public static var unhandledErrorHandler: @Sendable (any Error) -> Void {
        get { handlers.withLock { $0.unhandled } }
        set { handlers.withLock { $0.unhandled = newValue } }
    }

    /// Receives, once, each failed future released without its error being read. The default
    /// prints a line to standard error.
    public static var unobservedErrorHandler: @Sendable (UnobservedError) -> Void {
        get { handlers.withLock { $0.unobserved } }
        set { handlers.withLock { $0.unobserved = newValue } }
    }

    /// The default ``unhandledErrorHandler``: prints and exits with status 1.
    public static let defaultUnhandledErrorHandler: @Sendable (any Error) -> Void = { error in
        printToStandardError("TaskMachine: unhandled error in a fire-and-forget method: \(error)")
        exit(1)
    }

    /// The default ``unobservedErrorHandler``: prints one line to standard error.
    public static let defaultUnobservedErrorHandler: @Sendable (UnobservedError) -> Void = { report in
        printToStandardError("TaskMachine: \(report)")
    }

    static func reportUnhandled(_ error: any Error) {
        unhandledErrorHandler(error)
    }

    static func reportUnobserved(_ errors: [any Error], futureDescription: String) {
        unobservedErrorHandler(UnobservedError(errors: errors, futureDescription: futureDescription))
    }

    private static func printToStandardError(_ line: String) {
        var text = line + "\n"
        text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
    }
}
