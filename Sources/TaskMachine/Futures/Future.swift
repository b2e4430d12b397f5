/// A value that will be ready later: the result of an asynchronous operation, awaitable any
/// number of times, by any number of awaiters.
///
/// A future starts *pending* and completes once: *succeeded* with a value, *failed* with one or
/// more errors, or *cancelled*. Its writing side is a ``Promise``; async methods written as state
/// machines return the future their builder makes; ``Future/run(cancellation:_:)`` runs a closure
/// on the pool and returns its future.
///
/// ```swift
/// let promise = Promise<Int>()
/// let future = promise.future
/// try promise.succeed(42)
/// let value = try await future.value   // 42, without suspending: the future has completed
/// ```
///
/// Awaiting a failed future rethrows its first error as it was thrown, not wrapped; a cancelled
/// one throws ``OperationCancelledError`` carrying the token that cancelled it.
public class Future<Value: Sendable>: AnyFuture {
    /// The address of the value's storage (`AnyFuture.valueStorage`, the first field of every
    /// future): no `inout` access to the field, which two readers of a completed future would
    /// otherwise make at once, and no lookup of where the field is.
    @inlinable
    final var valueAddress: UnsafeMutableRawPointer {
        Unmanaged.passUnretained(self).toOpaque() + heapObjectHeaderSize
    }

    /// Stores the value; called once, by the completer, before publishing.
    @inlinable
    final func storeValue(_ value: Value) {
        InlineValue.store(value, at: valueAddress)
        if !InlineValue.isPlainInPlace(Value.self) { valueNeedsDestroying = true }
    }

    /// The stored value; only once the future has succeeded.
    @inlinable
    final var storedValue: Value {
        InlineValue.load(Value.self, at: valueAddress)
    }

    deinit {
        if valueNeedsDestroying { InlineValue.destroy(Value.self, at: valueAddress) }
    }

    override func resetForReuse(use: UInt16) {
        if valueNeedsDestroying {
            InlineValue.destroy(Value.self, at: valueAddress)
            valueNeedsDestroying = false
        }
        super.resetForReuse(use: use)
    }

    @usableFromInline
    init(runsContinuationsAsynchronously: Bool) {
        super.init(runContinuationsAsynchronously: runsContinuationsAsynchronously)
    }

    @usableFromInline
    init(completedWith value: Value) {
        super.init(completedWith: .succeeded, failure: nil)
        storeValue(value)
    }

    override init(completedWith status: FutureStatus, failure: Failure?) {
        super.init(completedWith: status, failure: failure)
    }

    // MARK: Completed futures

    /// A future that has succeeded with `value`.
    public static func succeeded(_ value: Value) -> Future<Value> {
        Future(completedWith: value)
    }

    /// A future that has failed with `error`.
    public static func failed(_ error: any Error) -> Future<Value> {
        Future(completedWith: .failed, failure: Failure(errors: [error], token: .none))
    }

    /// A future that was cancelled, through `token` or directly.
    public static func cancelled(token: CancellationToken = .none) -> Future<Value> {
        Future(completedWith: .cancelled, failure: Failure(errors: [], token: token))
    }

    // MARK: Reading

    /// The value of a succeeded future; throws the error of a failed or cancelled one, and
    /// ``FutureNotCompletedError`` if the future is still pending.
    @inlinable
    public final func getResult() throws -> Value {
        if _fastPath(hasSucceeded) { return storedValue }
        return try getResultSlowly()
    }

    @usableFromInline
    final func getResultSlowly() throws -> Value {
        guard isCompleted else { throw FutureNotCompletedError() }
        try throwIfUnsuccessful()
        return storedValue
    }

    /// The outcome, once completed: the value, or the error awaiting would throw.
    public final var result: Result<Value, any Error>? {
        guard isCompleted else { return nil }
        return Result { try getResult() }
    }

    // MARK: Completing

    /// Succeeds the future unless it has completed already. Inlinable, so the value is stored by
    /// code specialized for its type.
    @inlinable
    final func trySucceed(_ value: Value, forceAsynchronous: Bool = false) -> Bool {
        guard reserveCompletion() else { return false }
        storeValue(value)
        publishCompletion(.succeeded, forceAsynchronous: forceAsynchronous)
        return true
    }

    /// Succeeds a future that only its owner completes, one thread at a time: a state machine's
    /// box, completed by its machine's running resumption. The claim is a load and a store rather
    /// than a compare-and-exchange; `false` if the future has completed already.
    @inlinable
    final func succeedAsOwner(_ value: Value) -> Bool {
        guard reserveCompletionAsOwner() else { return false }
        storeValue(value)
        publishCompletion(.succeeded)
        return true
    }

    /// Completes this future with the outcome of `other`, which has completed.
    /// Reads `other`'s errors (observing them) only if this future takes them.
    final func tryComplete(from other: Future<Value>) -> Bool {
        precondition(other.isCompleted, "tryComplete(from:) needs a completed future")
        guard reserveCompletion() else { return false }
        switch other.status {
        case .succeeded:
            storeValue(other.storedValue)
            publishCompletion(.succeeded)
        case .failed:
            failure = Failure(errors: other.errors, token: .none)
            publishCompletion(.failed)
        case .cancelled, .pending:
            failure = Failure(errors: [], token: other.failure?.token ?? .none)
            publishCompletion(.cancelled)
        }
        return true
    }

    override var diagnosticName: String { "Future<\(Value.self)>" }
}

extension Future where Value == Void {
    /// A future that has succeeded.
    public static var completed: Future<Void> { Future(completedWith: ()) }
}

// Safe to share: the value is written once before the publishing exchange.
extension Future: @unchecked Sendable {}

/// Where the first stored property of a Swift class instance starts: after the object's metadata
/// pointer and its reference counts. A value's raw storage is declared first (in `AnyFuture` and
/// `ValueFutureSourceCore`) so that its address is the object's plus this; a test checks it.
@inlinable
var heapObjectHeaderSize: Int { 2 * MemoryLayout<UInt>.size }

/// A value kept in two words of raw storage inside an object (a future, a value-future source):
/// in place when it fits, else in a ``ValueBox`` whose retained pointer the first word holds.
/// Generic functions rather than a generic type, so that unspecialized callers use only the
/// metadata of `Value` they were given.
@usableFromInline
enum InlineValue {
    /// Whether a `Value` fits in the two words itself.
    @inlinable
    static func fitsInPlace<Value>(_: Value.Type) -> Bool {
        MemoryLayout<Value>.size <= MemoryLayout<(UInt, UInt)>.size
            && MemoryLayout<Value>.alignment <= MemoryLayout<(UInt, UInt)>.alignment
    }

    /// Initializes the storage at `address` with `value`.
    @inlinable
    static func store<Value>(_ value: Value, at address: UnsafeMutableRawPointer) {
        if fitsInPlace(Value.self) {
            address.initializeMemory(as: Value.self, to: value)
        } else {
            let box = Unmanaged.passRetained(ValueBox(value)).toOpaque()
            address.storeBytes(of: box, as: UnsafeMutableRawPointer.self)
        }
    }

    /// A copy of the value stored at `address`.
    @inlinable
    static func load<Value>(_: Value.Type, at address: UnsafeMutableRawPointer) -> Value {
        if fitsInPlace(Value.self) {
            return address.assumingMemoryBound(to: Value.self).pointee
        }
        let box = address.load(as: UnsafeMutableRawPointer.self)
        return Unmanaged<ValueBox<Value>>.fromOpaque(box).takeUnretainedValue().value
    }

    /// Moves the value out of the storage at `address`, leaving raw storage.
    @inlinable
    static func take<Value>(_: Value.Type, at address: UnsafeMutableRawPointer) -> Value {
        if fitsInPlace(Value.self) {
            return address.assumingMemoryBound(to: Value.self).move()
        }
        let box = Unmanaged<ValueBox<Value>>.fromOpaque(address.load(as: UnsafeMutableRawPointer.self))
        return box.takeRetainedValue().value
    }

    /// Whether a `Value` is stored in place and is plain data: nothing to destroy.
    @inlinable
    static func isPlainInPlace<Value>(_: Value.Type) -> Bool {
        fitsInPlace(Value.self) && _isPOD(Value.self)
    }

    /// Destroys the value stored at `address`, leaving raw storage.
    @inlinable
    static func destroy<Value>(_: Value.Type, at address: UnsafeMutableRawPointer) {
        // A plain value needs nothing: skip the call through its value witness table.
        if isPlainInPlace(Value.self) { return }
        if fitsInPlace(Value.self) {
            address.assumingMemoryBound(to: Value.self).deinitialize(count: 1)
        } else {
            Unmanaged<ValueBox<Value>>.fromOpaque(address.load(as: UnsafeMutableRawPointer.self)).release()
        }
    }
}

/// A value too large for ``InlineValue``'s two words.
@usableFromInline
final class ValueBox<Value> {
    @usableFromInline
    let value: Value

    @inlinable
    init(_ value: Value) { self.value = value }
}
