/// The builder of an async method that returns a ``ValueFuture`` — the counterpart of an async
/// method returning `ValueTask<T>`.
///
/// A method that returns a value without suspending allocates nothing: the value travels inline in
/// the value future. One that fails without suspending allocates the failed future; one that
/// suspends allocates its box, once.
public struct ValueFutureMethodBuilder<Value: Sendable>: BoxingMethodBuilder {
    @usableFromInline
    var box: BoxReference<Value> = .none
    @usableFromInline
    var synchronousResult: Value?

    /// Creates the builder a machine stores.
    public init() {}

    /// Runs `machine` up to its first suspension or its end, on the calling thread, and puts the
    /// caller's ``SynchronizationContext/current`` back if the method changed it.
    @inlinable
    public static func start<Machine: AsyncStateMachine>(_ machine: inout Machine)
    where Machine.Builder == ValueFutureMethodBuilder<Value> {
        let caller = ContextAtStart()
        machine.moveNext()
        caller.restore()
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
    // Always inlined into the machine's `moveNext()`: a call here is a frame nested once per link
    // of a chain of continuations run inline.
    @inlinable @inline(__always)
    public mutating func setResult(_ value: Value) {
        // The machine is the box's only completer: no rival to claim the completion against.
        if box.withFuture({ $0.succeedAsOwner(value) }) == nil {
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

/// The builder of an async method that returns a ``ValueFuture`` and reuses its box — the
/// counterpart of `PoolingAsyncValueTaskMethodBuilder`.
///
/// Like ``ValueFutureMethodBuilder``, a call that completes without suspending allocates nothing.
/// A call that suspends takes a box from the calling thread's cache (allocating one only when the
/// cache has none), and its value future reads the result from that box. Once the method has
/// finished and its result has been read, the box goes back to the cache of the thread that let go
/// of it last, up to 16 per method and thread. A method called in a steady loop therefore
/// allocates nothing per call.
///
/// The value future must be read once, as every value future is; ``ValueFuture/asFuture()`` reads
/// it into a future of its own. A value future that is dropped unread keeps its box out of the
/// cache, and the box is freed like any object.
public struct PoolingValueFutureMethodBuilder<Value: Sendable>: BoxingMethodBuilder {
    @usableFromInline
    var plain = ValueFutureMethodBuilder<Value>()

    @inlinable
    var box: BoxReference<Value> {
        get { plain.box }
        set { plain.box = newValue }
    }

    @inlinable
    static var poolsBoxes: Bool { true }

    /// Creates the builder a machine stores.
    public init() {}

    /// Runs `machine` up to its first suspension or its end, on the calling thread, and puts the
    /// caller's ``SynchronizationContext/current`` back if the method changed it.
    @inlinable
    public static func start<Machine: AsyncStateMachine>(_ machine: inout Machine)
    where Machine.Builder == PoolingValueFutureMethodBuilder<Value> {
        let caller = ContextAtStart()
        machine.moveNext()
        caller.restore()
    }

    /// The method's value future. Read it once, after ``start(_:)``.
    ///
    /// Reading it moves the builder's reference to the method's box into the value future, which
    /// is read once in turn: no retain for the value future, and no release when the caller's copy
    /// of the machine goes. A second read of a suspended method's value future stops the program.
    @inlinable
    public var valueFuture: ValueFuture<Value> {
        mutating get {
            // This builder's future is its box, a pooled `MachineBox`, unless the method failed
            // without suspending: then it is a plain `Future` made for the error. Told apart by the
            // object's class: a conditional cast cost a call into the runtime.
            switch plain.box {
            case .owned(let future) where type(of: future) != Future<Value>.self:
                return Self.valueFuture(on: unsafeDowncast(plain.box.takeOwned(), to: MachineBox<Value>.self))
            case .inside(let box):
                return Self.valueFuture(on: unsafeDowncast(box.takeUnretainedValue(), to: MachineBox<Value>.self))
            case .none where plain.synchronousResult == nil:
                preconditionFailure(
                    "PoolingValueFutureMethodBuilder.valueFuture read twice, or before start(_:) completed or suspended the machine"
                )
            default:
                return plain.valueFuture
            }
        }
    }

    /// A value future reading the current use of `box`.
    @inlinable
    static func valueFuture(on box: MachineBox<Value>) -> ValueFuture<Value> {
        assert(box.isPooled, "a pooling builder's box is pooled")
        return ValueFuture(machine: box, token: box.token)
    }

    /// Completes the method with `value`.
    // Always inlined into the machine's `moveNext()`: a call here is a frame nested once per link
    // of a chain of continuations run inline.
    @inlinable @inline(__always)
    public mutating func setResult(_ value: Value) {
        plain.setResult(value)
    }

    /// Completes the method with `error`: cancelled for an ``OperationCancelledError``, failed otherwise.
    public mutating func setError(_ error: any Error) {
        plain.setError(error)
    }
}

extension PoolingValueFutureMethodBuilder where Value == Void {
    /// Completes the method.
    public mutating func setResult() { setResult(()) }
}
