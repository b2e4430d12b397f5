/// The builder of a fire-and-forget async method — the counterpart of `async void`.
///
/// Nothing can await such a method, so the builder reports to the context it started on: `start`
/// captures ``SynchronizationContext/current`` and tells it ``SynchronizationContext/operationStarted()``;
/// the end tells it ``SynchronizationContext/operationCompleted()``. An error goes to that context's
/// ``SynchronizationContext/reportUnhandledError(_:)``, or, with no context, to
/// ``ErrorReporting/unhandledErrorHandler``, whose default prints it and exits.
public struct FireAndForgetMethodBuilder: BoxingMethodBuilder {
    @usableFromInline
    var box: BoxReference<Void> = .none
    var context: SynchronizationContext?

    /// Creates the builder a machine stores.
    public init() {}

    /// Captures the current context, counts the operation on it, and runs `machine` up to its
    /// first suspension or its end.
    public static func start<Machine: AsyncStateMachine>(_ machine: inout Machine)
    where Machine.Builder == FireAndForgetMethodBuilder {
        let context = SynchronizationContext.current
        machine.builder.context = context
        context?.operationStarted()
        machine.moveNext()
    }

    /// Ends the method.
    public mutating func setResult() {
        _ = box.future?.trySucceed(())
        context?.operationCompleted()
    }

    /// Ends the method with `error`, which goes to the captured context or the process-wide handler.
    public mutating func setError(_ error: any Error) {
        // The error is reported here, so the box itself ends as succeeded: nothing else to observe.
        _ = box.future?.trySucceed(())
        if let context {
            context.reportUnhandledError(error)
            context.operationCompleted()
        } else {
            ErrorReporting.reportUnhandled(error)
        }
    }
}
