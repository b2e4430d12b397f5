import Synchronization

/// An async method rewritten as a resumable state machine: what a compiler makes of a method with
/// `await`s, written out by hand.
///
/// The method's body is cut at each `await` into segments; ``moveNext()`` runs one segment, chosen
/// by a state field, and the method's locals become stored properties so they survive each pause.
/// At an await that is not complete yet, the segment stores its state and the awaiter, calls
/// ``awaitUnsafeOnCompleted(_:)`` and returns; when the awaited operation completes, the runtime
/// calls `moveNext()` again and the machine picks up where it stopped.
///
/// ```swift
/// struct AddAfterDelay: AsyncStateMachine {
///     var builder = FutureMethodBuilder<Int>()
///     var state = 0
///     var a: Int, b: Int
///     var delay: FutureAwaiter<Void>?
///
///     mutating func moveNext() {
///         do {
///             if state == 0 {
///                 let awaiter = Future.delay(.milliseconds(50)).getAwaiter()
///                 delay = awaiter
///                 if !awaiter.isCompleted {
///                     state = 1
///                     awaitUnsafeOnCompleted(awaiter)
///                     return            // suspended: the caller gets the future now
///                 }
///             }
///             try delay!.getResult()    // state 1: the continuation
///             builder.setResult(a + b)
///         } catch {
///             builder.setError(error)
///         }
///     }
/// }
///
/// func addAfterDelay(_ a: Int, _ b: Int) -> Future<Int> {
///     var machine = AddAfterDelay(a: a, b: b)
///     FutureMethodBuilder.start(&machine)
///     return machine.builder.future
/// }
/// ```
///
/// The builder runs `moveNext()` synchronously on the caller's thread. Only at the first real
/// suspension is the machine copied into a heap box; that box is the returned future and is itself
/// the registered continuation — one allocation per suspended call, none for a call that completes
/// synchronously through ``ValueFutureMethodBuilder``.
public protocol AsyncStateMachine {
    /// The builder that makes the method's future and resumes the machine.
    associatedtype Builder: AsyncMethodBuilder

    /// The builder, stored in the machine as a compiler would store it.
    var builder: Builder { get set }

    /// Runs the machine from its current state to its next suspension or to its end.
    mutating func moveNext()
}

/// What a state machine's builder does: box the machine at its first suspension and register it as
/// the continuation of what it awaits.
public protocol AsyncMethodBuilder {
    /// Registers `machine` to resume when `awaiter` completes.
    static func awaitOnCompleted<A: Awaiter, Machine: AsyncStateMachine>(
        _ awaiter: A, _ machine: inout Machine
    ) where Machine.Builder == Self

    /// Registers `machine` to resume when `awaiter` completes; the runtime's own awaiters take the
    /// machine's box directly, with no closure.
    static func awaitUnsafeOnCompleted<A: Awaiter, Machine: AsyncStateMachine>(
        _ awaiter: A, _ machine: inout Machine
    ) where Machine.Builder == Self
}

extension AsyncStateMachine {
    /// Suspends the machine until `awaiter` completes; call it, then return from ``moveNext()``.
    public mutating func awaitOnCompleted<A: Awaiter>(_ awaiter: A) {
        Builder.awaitOnCompleted(awaiter, &self)
    }

    /// Suspends the machine until `awaiter` completes; call it, then return from ``moveNext()``.
    public mutating func awaitUnsafeOnCompleted<A: Awaiter>(_ awaiter: A) {
        Builder.awaitUnsafeOnCompleted(awaiter, &self)
    }
}

/// What a state machine's box holds: `Machine?`, the machine until it has finished.
///
/// The box is generic over the slot's type rather than over the machine's, so that every
/// operation on the optional — resuming through it, clearing it, destroying it with the box — uses
/// the metadata the box's own type carries. Generic over the machine, the box's unspecialized code
/// (its `deinit` and its job entry point, which the runtime reaches through the class's vtable)
/// would look up `Optional<Machine>`'s metadata in the runtime's cache at every use.
@usableFromInline
protocol MachineSlot {
    /// Runs the machine's next segment.
    mutating func resume()
    /// Drops the machine.
    mutating func clear()
    /// The machine's type, for diagnostics.
    static var machineName: String { get }
}

extension Optional: MachineSlot where Wrapped: AsyncStateMachine {
    @usableFromInline
    mutating func resume() { self!.moveNext() }

    @usableFromInline
    mutating func clear() { self = nil }

    @usableFromInline
    static var machineName: String { "\(Wrapped.self)" }
}

/// The heap box of a suspended state machine: a future of the method's result, and the job that
/// resumes the machine. `Slot` is `Machine?` (see ``MachineSlot``).
@usableFromInline
final class StateMachineBox<Slot: MachineSlot, Value: Sendable>: MachineBox<Value> {
    /// The machine; dropped once it has completed, as the frame of a finished call would be. A
    /// finished machine holding the future it awaited would otherwise keep a whole chain of futures
    /// alive, and releasing a long chain at once would recurse through every deinit.
    ///
    /// Exclusivity is checked statically only: one resumption runs the machine at a time (the
    /// runtime's contract), and the dynamic check costs a thread-local access set per resumption.
    @usableFromInline @exclusivity(unchecked) var machine: Slot

    @inlinable
    init(machine: Slot, pooled: Bool) {
        self.machine = machine
        super.init(pooled: pooled)
    }

    override func runAsJob() {
        if let context = resumeContext {
            context.untrackSuspended(self)
            resumeContext = nil
        }
        guard !finished else { return }  // completed already, e.g. when its awaiter refused it
        // One resumption runs at a time, so a plain store suffices; it happens before this
        // resumption can complete the future, which publishes it to whoever sees the completion.
        let resumption = resumptions.load(ordering: .relaxed) &+ 1
        resumptions.store(resumption, ordering: .relaxed)
        let thread = ThreadState.current
        let outer = thread.runningBox
        thread.runningBox = ObjectIdentifier(self)
        machine.resume()
        thread.runningBox = outer
        // Completed, and by this resumption (no later one started): the machine is done with.
        if isCompleted && resumptions.load(ordering: .relaxed) == resumption {
            finished = true
            machine.clear()
            if isPooled { release(.method) }
        }
    }

    override var diagnosticName: String { Slot.machineName }
}

/// How a builder refers to its box: the stack copy of the machine owns it, the boxed copy only
/// points at the box it lives in (owning it would be a cycle).
@usableFromInline
enum BoxReference<Value: Sendable> {
    case none
    case owned(Future<Value>)
    case inside(Unmanaged<Future<Value>>)

    @inlinable
    var future: Future<Value>? {
        switch self {
        case .none: nil
        case .owned(let future): future
        case .inside(let box): box.takeUnretainedValue()
        }
    }

    /// Ends the method with `error`: cancelled for an ``OperationCancelledError``, failed otherwise;
    /// the box if there is one, else a completed future made for it.
    mutating func complete(throwing error: any Error) {
        if let future {
            _ = future.tryComplete(throwing: error, ownToken: nil)
        } else if let cancelled = error as? OperationCancelledError {
            self = .owned(Future.cancelled(token: cancelled.token))
        } else {
            self = .owned(Future.failed(error))
        }
    }
}

/// The builders that box a machine into a `Future<Value>` at its first suspension.
@usableFromInline
protocol BoxingMethodBuilder: AsyncMethodBuilder {
    associatedtype Value: Sendable
    var box: BoxReference<Value> { get set }
    /// Whether the builder's boxes go back to a per-thread cache once used, rather than being freed.
    static var poolsBoxes: Bool { get }
}

extension BoxingMethodBuilder {
    @inlinable
    static var poolsBoxes: Bool { false }

    /// The machine's box, created and filled with a copy of the machine on the first suspension.
    @inlinable
    static func box<Machine: AsyncStateMachine>(for machine: inout Machine) -> Future<Value>
    where Machine.Builder == Self {
        var builder = machine.builder
        if let existing = builder.box.future { return existing }
        typealias Box = StateMachineBox<Machine?, Value>
        let box: Box
        if Self.poolsBoxes, let recycled = BoxCache.take(ObjectIdentifier(Box.self)) {
            box = unsafeDowncast(recycled, to: Box.self)
            box.machine = machine
        } else {
            box = Box(machine: machine, pooled: Self.poolsBoxes)
        }
        // Read-modify-write through the getter and setter: unspecialized code reaching `builder`
        // through a `modify` accessor may allocate the coroutine's frame.
        builder.box = .inside(Unmanaged.passUnretained(box))
        box.machine!.builder = builder
        builder.box = .owned(box)
        machine.builder = builder
        return box
    }

    /// Registers the machine's box on `awaiter`.
    @inlinable
    static func suspend<A: Awaiter, Machine: AsyncStateMachine>(on awaiter: A, _ machine: inout Machine)
    where Machine.Builder == Self {
        let box = box(for: &machine)
        do {
            if let runtimeAwaiter = awaiter as? any JobRegisteringAwaiter {
                try runtimeAwaiter.register(box: box)
            } else {
                try awaiter.unsafeOnCompleted { Continuations.dispatch(.future(box), mayRunInline: true) }
            }
        } catch {
            // The awaiter refused the continuation (a misused value-future source): the method fails.
            _ = box.tryComplete(throwing: error, ownToken: nil)
        }
    }

    @inlinable
    public static func awaitOnCompleted<A: Awaiter, Machine: AsyncStateMachine>(
        _ awaiter: A, _ machine: inout Machine
    ) where Machine.Builder == Self {
        suspend(on: awaiter, &machine)
    }

    @inlinable
    public static func awaitUnsafeOnCompleted<A: Awaiter, Machine: AsyncStateMachine>(
        _ awaiter: A, _ machine: inout Machine
    ) where Machine.Builder == Self {
        suspend(on: awaiter, &machine)
    }
}

// Safe to share: the machine is touched only by the one job that resumes it at a time.
extension StateMachineBox: @unchecked Sendable {}
