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
    @usableFromInline
    var context: SynchronizationContext?

    /// Creates the builder a machine stores.
    public init() {}

    /// Captures the current context, counts the operation on it, and runs `machine` up to its
    /// first suspension or its end; puts that context back as current if the method changed it.
    public static func start<Machine: AsyncStateMachine>(_ machine: inout Machine)
    where Machine.Builder == FireAndForgetMethodBuilder {
        let context = SynchronizationContext.current
        machine.builder.context = context
        context?.operationStarted()
        let caller = ContextAtStart()
        machine.moveNext()
        caller.restore()
    }

    /// Suspends the machine until `awaiter` completes.
    @inlinable
    public static func awaitOnCompleted<A: Awaiter, Machine: AsyncStateMachine>(_ awaiter: A, _ machine: inout Machine)
    where Machine.Builder == FireAndForgetMethodBuilder {
        if case .none = machine.builder.box, machine.builder.context != nil { recordFirstSuspension(&machine) }
        suspend(on: awaiter, &machine)
    }

    /// Suspends the machine until `awaiter` completes.
    @inlinable
    public static func awaitUnsafeOnCompleted<A: Awaiter, Machine: AsyncStateMachine>(
        _ awaiter: A, _ machine: inout Machine
    ) where Machine.Builder == FireAndForgetMethodBuilder {
        if case .none = machine.builder.box, machine.builder.context != nil { recordFirstSuspension(&machine) }
        suspend(on: awaiter, &machine)
    }

    /// Tells the ``AsyncContext`` the method was started in, if it was, about the method's box,
    /// at its first suspension and before the box is registered anywhere: the context's `run`
    /// waits for the method to end, and needs the box to see that it never can.
    @usableFromInline
    static func recordFirstSuspension<Machine: AsyncStateMachine>(_ machine: inout Machine)
    where Machine.Builder == FireAndForgetMethodBuilder {
        guard let context = machine.builder.context as? AsyncContext else { return }
        context.methodSuspended(box(for: &machine).takeUnretainedValue())
    }

    /// Ends the method.
    public mutating func setResult() {
        _ = box.future?.trySucceed(())
        methodEnded()
        context?.operationCompleted()
    }

    /// Ends the method with `error`, which goes to the captured context or the process-wide handler.
    public mutating func setError(_ error: any Error) {
        // The error is reported here, so the box itself ends as succeeded: nothing else to observe.
        _ = box.future?.trySucceed(())
        methodEnded()
        if let context {
            context.reportUnhandledError(error)
            context.operationCompleted()
        } else {
            ErrorReporting.reportUnhandled(error)
        }
    }

    /// Tells the ``AsyncContext`` that `recordFirstSuspension` told about the box that it ended.
    private func methodEnded() {
        guard let box = box.future, let context = context as? AsyncContext else { return }
        context.methodEnded(box)
    }
}
