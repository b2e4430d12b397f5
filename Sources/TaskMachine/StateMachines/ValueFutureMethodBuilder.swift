/// The builder of an async method that returns a ``ValueFuture`` — the counterpart of an async
/// method returning `ValueTask<T>`.
///
/// A method that returns a value without suspending allocates nothing: the value travels inline in
/// the value future. One that fails without suspending allocates the failed future; one that
/// suspends allocates its box, once.
public struct ValueFutureMethodBuilder<Value: Sendable>: BoxingMethodBuilder {
    @usableFromInline
    var box: BoxReference<Value> = .none
    var synchronousResult: Value?

    /// Creates the builder a machine stores.
    public init() {}

    /// Runs `machine` up to its first suspension or its end, on the calling thread.
    public static func start<Machine: AsyncStateMachine>(_ machine: inout Machine)
    where Machine.Builder == ValueFutureMethodBuilder<Value> {
        machine.moveNext()
    }

    /// The method's value future. Read it after ``start(_:)``.
    public var valueFuture: ValueFuture<Value> {
        if let synchronousResult { return ValueFuture(synchronousResult) }
        guard let future = box.future else {
            preconditionFailure("ValueFutureMethodBuilder.valueFuture read before start(_:) completed or suspended")
        }
        return ValueFuture(future: future)
    }

    /// Completes the method with `value`.
    public mutating func setResult(_ value: Value) {
        if let future = box.future {
            _ = future.trySucceed(value)
        } else {
            synchronousResult = value
        }
    }

    /// Completes the method with `error`: cancelled for an ``OperationCancelledError``, failed otherwise.
    public mutating func setError(_ error: any Error) {
        box.complete(throwing: error)
    }
}

extension ValueFutureMethodBuilder where Value == Void {
    /// Completes the method.
    public mutating func setResult() { setResult(()) }
}
