/// A result that is often ready at once: a value inline, a ``Future``, or a reusable
/// ``ValueFutureSource`` with a version token — the counterpart of `ValueTask<T>`.
///
/// A method that usually completes synchronously (a cache hit, a buffered read) returns its value
/// inline and allocates nothing; only when it must really wait does it hand out a future or a
/// pooled source.
///
/// A value future is non-copyable and awaiting it consumes it, so it can be awaited **once**; a
/// second await does not compile (`'f' consumed more than once`). To await a result more than once,
/// or to store it, convert it with ``asFuture()``.
///
/// ```swift
/// func cachedValue(_ key: Int) -> ValueFuture<Int> {
///     if let hit = cache[key] { return ValueFuture(hit) }   // no allocation
///     return ValueFuture(future: loadAsync(key))            // a real future
/// }
/// let value = try await cachedValue(42).get()
/// ```
public struct ValueFuture<Value: Sendable>: ~Copyable {
    @usableFromInline
    enum Storage {
        case value(Value)
        case future(Future<Value>)
        /// A pooled state machine's box and the use it names. The runtime's two own sources have
        /// cases of their own, so that an awaiter reads them through code specialized for `Value`:
        /// through `source`, each read is a call through the protocol's witness table into generic
        /// code, and each switch copies the existential (a retain and a release).
        case machine(MachineBox<Value>, UInt16)
        /// A source core and the version it names; see `machine`.
        case core(ValueFutureSourceCore<Value>, UInt16)
        case source(any ValueFutureSource<Value>, UInt16)

        /// Whether the result is ready; `true` for a stale token, whose read then throws.
        @inlinable
        var isCompleted: Bool {
            switch self {
            case .value: true
            case .future(let future): future.isCompleted
            case .machine(let box, let token): box.isCompleted(token: token)
            case .core(let core, let token): core.isCompleted(token: token)
            case .source(let source, let token): (try? source.status(token: token).isCompleted) ?? true
            }
        }

        /// The runtime's own source this storage reads, if it is one, unretained: a `switch` that
        /// binds the reference copies it, a retain and a release around the call it is used for,
        /// even though the storage holds it for as long as its owner is borrowed. Bound only to
        /// make a trivial `Unmanaged`, the copy is dead and the optimizer drops it.
        @inlinable
        var unretainedRuntimeSource: (RuntimeSource, UInt16)? {
            switch self {
            case .machine(let box, let token): (.machine(Unmanaged.passUnretained(box)), token)
            case .core(let core, let token): (.core(Unmanaged.passUnretained(core)), token)
            default: nil
            }
        }

        /// One of the runtime's own sources, unretained.
        @usableFromInline
        enum RuntimeSource {
            case machine(Unmanaged<MachineBox<Value>>)
            case core(Unmanaged<ValueFutureSourceCore<Value>>)
        }

        /// The result, or the error awaiting throws.
        @inlinable
        func getResult() throws -> Value {
            switch self {
            case .value(let value): value
            case .future(let future): try future.getResult()
            case .machine(let box, let token): try box.getResult(token: token)
            case .core(let core, let token): try core.getResult(token: token)
            case .source(let source, let token): try source.getResult(token: token)
            }
        }
    }

    @usableFromInline
    let storage: Storage

    /// A value future holding `value`: completed, with no allocation.
    @inlinable
    public init(_ value: Value) {
        storage = .value(value)
    }

    /// A value future backed by `future`.
    @inlinable
    public init(future: Future<Value>) {
        storage = .future(future)
    }

    /// A value future backed by `source`, valid while the source's version is `token`.
    @inlinable
    public init(source: any ValueFutureSource<Value>, token: UInt16) {
        storage = .source(source, token)
    }

    /// A value future on the use `token` of a pooled state machine's box.
    @inlinable
    init(machine box: MachineBox<Value>, token: UInt16) {
        storage = .machine(box, token)
    }

    /// A value future on the version `token` of `core`.
    @inlinable
    init(core: ValueFutureSourceCore<Value>, token: UInt16) {
        storage = .core(core, token)
    }

    /// Whether the result is ready. For a source whose version moved on, `true`: awaiting then
    /// throws ``ValueFutureSourceError/staleToken(expected:found:)`` at once.
    @inlinable
    public var isCompleted: Bool { storage.isCompleted }

    /// A future of the same result, which can be awaited any number of times and stored.
    /// Allocates only when the value future held an inline value or a source.
    public consuming func asFuture() -> Future<Value> {
        switch storage {
        case .value(let value):
            return Future(completedWith: value)
        case .future(let future):
            return future
        case .machine(let box, let token):
            return Self.forward(source: box, token: token)
        case .core(let core, let token):
            return Self.forward(source: core, token: token)
        case .source(let source, let token):
            return Self.forward(source: source, token: token)
        }
    }

    /// A future that completes with the result of the operation `token` names on `source`.
    private static func forward(source: any ValueFutureSource<Value>, token: UInt16) -> Future<Value> {
        let promise = Promise<Value>()
        let forward = ForwardingWorkItem(to: promise.future) {
            do { promise.trySucceed(try source.getResult(token: token)) } catch {
                _ = promise.future.tryComplete(throwing: error, ownToken: nil)
            }
        }
        do {
            if try source.status(token: token).isCompleted {
                forward.run()
            } else {
                try source.onCompleted(token: token, AwaitContinuation(job: .item(forward)))
            }
        } catch {
            _ = promise.future.tryComplete(throwing: error, ownToken: nil)
        }
        return promise.future
    }

    /// An await of this value future that returns to the captured context only when
    /// `continueOnCapturedContext` is `true`.
    public consuming func configureAwait(_ continueOnCapturedContext: Bool) -> ConfiguredValueFuture<Value> {
        ConfiguredValueFuture(
            awaiter: ValueFutureAwaiter(storage: storage, continueOnCapturedContext: continueOnCapturedContext))
    }
}

extension ValueFuture: Awaitable {
    /// The awaiter for the one await this value future allows.
    @inlinable
    public consuming func getAwaiter() -> ValueFutureAwaiter<Value> {
        ValueFutureAwaiter(storage: storage, continueOnCapturedContext: true)
    }
}

extension ValueFuture {
    /// Awaits the result from Swift async code: returns at once, with no suspension and no
    /// allocation, when the value is inline.
    @inlinable
    public consuming func get() async throws -> Value {
        if case .value(let value) = storage { return value }
        return try await getAwaiter().awaitResult()
    }
}

/// A value future with an await option, from ``ValueFuture/configureAwait(_:)``; awaitable once.
public struct ConfiguredValueFuture<Value: Sendable>: ~Copyable, Awaitable {
    let awaiter: ValueFutureAwaiter<Value>

    public consuming func getAwaiter() -> ValueFutureAwaiter<Value> { awaiter }
}

/// The awaiter of a ``ValueFuture``.
public struct ValueFutureAwaiter<Value: Sendable>: Awaiter, JobRegisteringAwaiter {
    @usableFromInline
    let storage: ValueFuture<Value>.Storage
    @usableFromInline
    let continueOnCapturedContext: Bool

    @inlinable
    init(storage: ValueFuture<Value>.Storage, continueOnCapturedContext: Bool) {
        self.storage = storage
        self.continueOnCapturedContext = continueOnCapturedContext
    }

    @inlinable
    public var isCompleted: Bool { storage.isCompleted }

    public func onCompleted(_ continuation: @escaping @Sendable () -> Void) throws {
        let context = continueOnCapturedContext ? SynchronizationContext.current : nil
        try register(job: .item(ClosureWorkItem(context: context, continuation)))
    }

    @inlinable
    public func getResult() throws -> Value {
        try storage.getResult()
    }

    // Inlinable, so that a state machine's builder registers through code specialized for
    // `Value`: unspecialized, each switch over the storage looks up its metadata at run time.
    @inlinable
    func register(box: AnyFuture) throws {
        switch storage {
        case .value:
            // Resumed through the queue, on the context captured now, as a completed future's would.
            box.captureResumeContext(continueOnCapturedContext)
            Continuations.dispatch(.future(box), mayRunInline: false)
        case .future(let future):
            future.registerAwait(of: box, continueOnCapturedContext: continueOnCapturedContext)
        case .machine, .core, .source:
            box.captureResumeContext(continueOnCapturedContext)
            try register(job: .future(box))
        }
    }

    @inlinable
    func register(item: WorkItem) throws {
        try register(job: .item(item))
    }

    @usableFromInline
    func withdraw(item: WorkItem) {
        if case .future(let future) = storage { future.removeContinuation(item) }
    }

    @inlinable
    func register(job: Job) throws {
        // The runtime's own sources without a copy of their reference (see `unretainedRuntimeSource`);
        // the storage keeps them alive for the call.
        if let (source, token) = storage.unretainedRuntimeSource {
            switch source {
            case .machine(let box):
                try box._withUnsafeGuaranteedRef { try $0.register(job, token: token) }
            case .core(let core):
                try core._withUnsafeGuaranteedRef { try $0.register(job, token: token) }
            }
            return
        }
        switch storage {
        case .value:
            Continuations.dispatch(job, mayRunInline: false)
        case .future(let future):
            future.onCompletion(job)
        case .source(let source, let token):
            try source.onCompleted(token: token, AwaitContinuation(job: job))
        case .machine, .core:
            break  // registered above
        }
    }
}

// The storage is a value, a future or a source, all safe to share; the source checks its token.
extension ValueFutureAwaiter: @unchecked Sendable {}
