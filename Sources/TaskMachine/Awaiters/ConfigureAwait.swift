/// How an await of a future behaves.
public struct ConfigureAwaitOptions: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8

    public init(rawValue: UInt8) {
        self.rawValue = rawValue
    }

    /// Resume on the context captured at the await (`SynchronizationContext.current`), if any.
    /// Without it, the continuation runs wherever the future completes, or on the pool.
    public static let continueOnCapturedContext = ConfigureAwaitOptions(rawValue: 1 << 0)
    /// Do not throw the future's error: the await only waits. Only for `Future<Void>`.
    public static let suppressThrowing = ConfigureAwaitOptions(rawValue: 1 << 1)
    /// Always suspend, even when the future has completed already: the continuation is queued.
    public static let forceYielding = ConfigureAwaitOptions(rawValue: 1 << 2)

    /// Every option this version knows.
    public static let all: ConfigureAwaitOptions = [.continueOnCapturedContext, .suppressThrowing, .forceYielding]
}

extension Future {
    /// An await of this future that returns to the captured context only when
    /// `continueOnCapturedContext` is `true`.
    ///
    /// Library code passes `false`: it needs no particular thread, saves a hop through a context's
    /// queue, and cannot deadlock a caller that blocks that context's thread.
    public func configureAwait(_ continueOnCapturedContext: Bool) -> ConfiguredFutureAwaitable<Value> {
        ConfiguredFutureAwaitable(future: self, options: continueOnCapturedContext ? .continueOnCapturedContext : [])
    }

    /// An await of this future with `options`.
    /// - Throws: ``InvalidArgumentError`` for `suppressThrowing` on a future with a value (there
    ///   would be no value to return), or for option bits this version does not know.
    public func configureAwait(options: ConfigureAwaitOptions) throws -> ConfiguredFutureAwaitable<Value> {
        guard ConfigureAwaitOptions.all.isSuperset(of: options) else {
            throw InvalidArgumentError("unknown configureAwait options: raw value \(options.rawValue)")
        }
        if options.contains(.suppressThrowing) && Value.self != Void.self {
            throw InvalidArgumentError(
                "suppressThrowing needs a Future<Void>: a Future<\(Value.self)> that failed has no value to return")
        }
        return ConfiguredFutureAwaitable(future: self, options: options)
    }
}

/// A future with await options, from ``Future/configureAwait(_:)`` or
/// ``Future/configureAwait(options:)``.
public struct ConfiguredFutureAwaitable<Value: Sendable>: Awaitable, Sendable {
    let future: Future<Value>
    let options: ConfigureAwaitOptions

    public func getAwaiter() -> ConfiguredFutureAwaiter<Value> {
        ConfiguredFutureAwaiter(future: future, options: options)
    }
}

/// The awaiter of a configured await.
public struct ConfiguredFutureAwaiter<Value: Sendable>: Awaiter, JobRegisteringAwaiter, Sendable {
    let future: Future<Value>
    let options: ConfigureAwaitOptions

    public var isCompleted: Bool {
        !options.contains(.forceYielding) && future.isCompleted
    }

    public func onCompleted(_ continuation: @escaping @Sendable () -> Void) {
        future.registerAwait(continuation, continueOnCapturedContext: options.contains(.continueOnCapturedContext))
    }

    public func getResult() throws -> Value {
        if options.contains(.suppressThrowing) {
            guard future.isCompleted else { throw FutureNotCompletedError() }
            future.markObserved()
            // configureAwait(options:) admits suppressThrowing only when Value is Void.
            return () as! Value
        }
        return try future.getResult()
    }

    @usableFromInline
    func register(box: AnyFuture) {
        future.registerAwait(of: box, continueOnCapturedContext: options.contains(.continueOnCapturedContext))
    }

    @usableFromInline
    func register(item: WorkItem) {
        future.onCompletion(.item(item))
    }

    @usableFromInline
    func withdraw(item: WorkItem) {
        future.removeContinuation(item)
    }
}
