/// The builder of an async method that returns a ``Future`` — the counterpart of an async method
/// returning `Task<T>`.
///
/// `start` runs the machine synchronously up to its first suspension. A method that completes
/// without suspending returns a completed future (one allocation: the future). One that suspends
/// returns its box, which is also its continuation (one allocation in all).
public struct FutureMethodBuilder<Value: Sendable>: BoxingMethodBuilder {
    @usableFromInline
    var box: BoxReference<Value> = .none

    /// Creates the builder a machine stores.
    public init() {}

    /// Runs `machine` up to its first suspension or its end, on the calling thread, and puts the
    /// caller's ``SynchronizationContext/current`` back if the method changed it.
    @inlinable
    public static func start<Machine: AsyncStateMachine>(_ machine: inout Machine)
    where Machine.Builder == FutureMethodBuilder<Value> {
        let caller = ContextAtStart()
        machine.moveNext()
        caller.restore()
    }

    /// The method's future. Read it after ``start(_:)``.
    public var future: Future<Value> {
        guard let future = box.future else {
            preconditionFailure("FutureMethodBuilder.future read before start(_:) completed or suspended the machine")
        }
        return future
    }

    /// Completes the method with `value`.
    // Always inlined into the machine's `moveNext()`: a call here is a frame nested once per link
    // of a chain of continuations run inline.
    @inlinable @inline(__always)
    public mutating func setResult(_ value: Value) {
        // The machine is the box's only completer: no rival to claim the completion against.
        if box.withFuture({ $0.succeedAsOwner(value) }) == nil {
            box = .owned(Future(completedWith: value))
        }
    }

    /// Completes the method with `error`: cancelled for an ``OperationCancelledError``, failed otherwise.
    public mutating func setError(_ error: any Error) {
        box.complete(throwing: error)
    }
}

extension FutureMethodBuilder where Value == Void {
    /// Completes the method.
    public mutating func setResult() { setResult(()) }
}
