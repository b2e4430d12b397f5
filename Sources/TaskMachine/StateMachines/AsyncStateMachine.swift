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

    /// Destroys the machine at `machine`. A runtime entry point with one implementation, the
    /// default below; do not implement it.
    ///
    /// A requirement rather than a generic function, so that the box's code, which is not
    /// specialized for the machine, reaches code that is: the witness for a conforming type is
    /// compiled with that type known, and destroys its fields in place.
    static func _destroy(at machine: UnsafeMutablePointer<Self>)
}

extension AsyncStateMachine {
    @inlinable
    public static func _destroy(at machine: UnsafeMutablePointer<Self>) {
        machine.deinitialize(count: 1)
    }
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

/// The heap box of a suspended state machine: a future of the method's result, and the job that
/// resumes the machine.
///
/// The machine lives in `storage`, raw words (`Storage` is a tuple of `UInt`s at least as large
/// as the machine, or ``OutOfLineMachine`` for a machine too large or too aligned for them), not
/// in a `Machine?`. The box's own code is unspecialized — the runtime reaches its `deinit` and its
/// job entry point through the class's vtable — and every operation on a `Machine?` there goes
/// through `Optional`'s generic value witnesses, which ask the machine's for its enum tag: about 150
/// instructions just to destroy the `nil` left behind by a finished machine. Over raw words, the
/// box resumes and destroys the machine through the machine's own conformance and value witnesses
/// (the compiler's code for that very type), and destroying the words themselves costs nothing.
/// `finished` says whether the words hold a machine.
@usableFromInline
final class StateMachineBox<Machine: AsyncStateMachine, Storage, Value: Sendable>: MachineBox<Value> {
    /// The machine's words; it is dropped once it has completed, as the frame of a finished call
    /// would be. A finished machine holding the future it awaited would otherwise keep a whole
    /// chain of futures alive, and releasing a long chain at once would recurse through every deinit.
    ///
    /// Exclusivity is checked statically only: one resumption runs the machine at a time (the
    /// runtime's contract), and the dynamic check costs a thread-local access set per resumption.
    @usableFromInline @exclusivity(unchecked) var storage: Storage

    /// Where `storage` starts in every box: after the fields of `MachineBox`, which do not depend
    /// on any type parameter, at a word boundary (every `Storage` is word-aligned). A constant
    /// rather than the address of `storage`, because the box's unspecialized code reaches a stored
    /// property of a generic type through a generic, out-of-line `withUnsafeMutablePointer`. The
    /// initializer asserts it, and a test checks it for several machines.
    @usableFromInline
    static var storageOffset: Int { heapObjectHeaderSize + 72 }

    /// A box holding `machine`; `storage` is zeroed words, or the out-of-line memory it goes to.
    @inlinable
    init(machine: Machine, storage: Storage, pooled: Bool) {
        self.storage = storage
        super.init(pooled: pooled)
        assert(
            withUnsafeMutablePointer(to: &self.storage) { UnsafeMutableRawPointer($0) }
                == Unmanaged.passUnretained(self).toOpaque() + Self.storageOffset,
            "StateMachineBox.storageOffset is not where the storage is")
        machineMemory.bindMemory(to: Machine.self, capacity: 1).initialize(to: machine)
    }

    /// The machine's memory: in the box's words, or the memory an ``OutOfLineMachine`` points to.
    @inlinable
    var machineMemory: UnsafeMutableRawPointer {
        let words = Unmanaged.passUnretained(self).toOpaque() + Self.storageOffset
        return Storage.self == OutOfLineMachine.self ? words.load(as: UnsafeMutableRawPointer.self) : words
    }

    /// The machine, which must be there (the box has not finished). Only one resumption runs the
    /// machine at a time, so the address is used by one thread at a time.
    @inlinable
    var machine: UnsafeMutablePointer<Machine> {
        machineMemory.assumingMemoryBound(to: Machine.self)
    }

    /// Puts `machine` into a recycled box, whose machine was dropped when its last use finished.
    @inlinable
    func install(_ machine: Machine) {
        machineMemory.bindMemory(to: Machine.self, capacity: 1).initialize(to: machine)
        finished = false
    }

    /// Drops the machine and marks the box finished.
    private func dropMachine() {
        finished = true
        // Through the machine's own conformance: here, unspecialized, `deinitialize(count: 1)`
        // goes through the runtime's `swift_arrayDestroy`, and `move()` copies the machine out to
        // destroy the copy.
        Machine._destroy(at: machine)
    }

    deinit {
        // A box dropped before its method finished (it awaited something that never completed)
        // still holds its machine.
        if !finished { dropMachine() }
        if Storage.self == OutOfLineMachine.self { machineMemory.deallocate() }
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
        // Two reads of the thread's state rather than one closure around `moveNext`, which the
        // optimizer would not inline.
        let outer = ThreadState.withCurrent { $0.enterBox(ObjectIdentifier(self)) }
        let context = ThreadState.withCurrent { $0.contextToPutBack() }
        machine.pointee.moveNext()
        ThreadState.withCurrent { $0.leaveBox(restoring: outer, context: context) }
        // Completed, and by this resumption (no later one started, in this use or a later use of
        // a pooled box, whose completion this would otherwise be seeing): the machine is done with.
        if isCompleted && resumptions.load(ordering: .relaxed) == resumption {
            dropMachine()
            releaseMethod()  // a pooled box's; nothing for any other
        }
    }

    override var diagnosticName: String { "\(Machine.self)" }
}

/// The storage of a machine that does not fit the word tuples of ``MachineWords`` (larger than
/// 32 words, or aligned beyond a word): a pointer to memory of its own, allocated with the box and
/// freed with it.
@usableFromInline
struct OutOfLineMachine {
    @usableFromInline
    let memory: UnsafeMutableRawPointer

    @inlinable
    init<Machine>(for _: Machine.Type) {
        memory = .allocate(byteCount: MemoryLayout<Machine>.size, alignment: MemoryLayout<Machine>.alignment)
    }
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

    /// Runs `body` on the method's future, if there is one yet, and returns what it returns.
    ///
    /// Borrowed, with no retain and release: a stack copy's builder owns its future, and a builder
    /// inside a box runs only while its box runs the machine, which whoever runs the box as a job
    /// holds a reference to for the whole run.
    @inlinable @inline(__always)
    func withFuture<Result>(_ body: (Future<Value>) -> Result) -> Result? {
        switch self {
        case .none: nil
        case .owned(let future): body(future)
        case .inside(let box): box._withUnsafeGuaranteedRef(body)
        }
    }

    /// Moves the future out of an `owned` reference, leaving `none`: no retain and no release.
    @inlinable
    mutating func takeOwned() -> Future<Value> {
        var taken = BoxReference.none
        swap(&taken, &self)
        guard case .owned(let future) = consume taken else { preconditionFailure("no future to take") }
        return future
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
    /// Ends the method with `error`, as the machine's own `catch` would.
    mutating func setError(_ error: any Error)
}

extension BoxingMethodBuilder {
    @inlinable
    static var poolsBoxes: Bool { false }

    /// The machine's box, created and filled with a copy of the machine on the first suspension.
    ///
    /// Unretained: `machine`'s builder owns the box (or, for the boxed copy, the box is running the
    /// machine), so it lives at least as long as the caller's `machine`.
    @inlinable
    static func box<Machine: AsyncStateMachine>(for machine: inout Machine) -> Unmanaged<Future<Value>>
    where Machine.Builder == Self {
        let builder = machine.builder
        switch builder.box {
        case .none: break
        case .owned(let box): return Unmanaged.passUnretained(box)
        case .inside(let box): return box
        }
        // The smallest word tuple the machine fits in; specialized, all but one branch folds away.
        if MemoryLayout<Machine>.alignment <= MemoryLayout<UInt>.alignment {
            switch (MemoryLayout<Machine>.size + MemoryLayout<UInt>.size - 1) / MemoryLayout<UInt>.size {
            case 0, 1: return makeBox(for: &machine, builder: builder) { MachineWords.w1 }
            case 2: return makeBox(for: &machine, builder: builder) { MachineWords.w2 }
            case 3: return makeBox(for: &machine, builder: builder) { MachineWords.w3 }
            case 4: return makeBox(for: &machine, builder: builder) { MachineWords.w4 }
            case 5: return makeBox(for: &machine, builder: builder) { MachineWords.w5 }
            case 6: return makeBox(for: &machine, builder: builder) { MachineWords.w6 }
            case 7: return makeBox(for: &machine, builder: builder) { MachineWords.w7 }
            case 8: return makeBox(for: &machine, builder: builder) { MachineWords.w8 }
            case 9...10: return makeBox(for: &machine, builder: builder) { MachineWords.w10 }
            case 11...12: return makeBox(for: &machine, builder: builder) { MachineWords.w12 }
            case 13...14: return makeBox(for: &machine, builder: builder) { MachineWords.w14 }
            case 15...16: return makeBox(for: &machine, builder: builder) { MachineWords.w16 }
            case 17...20: return makeBox(for: &machine, builder: builder) { MachineWords.w20 }
            case 21...24: return makeBox(for: &machine, builder: builder) { MachineWords.w24 }
            case 25...32: return makeBox(for: &machine, builder: builder) { MachineWords.w32 }
            default: break
            }
        }
        return makeBox(for: &machine, builder: builder) { OutOfLineMachine(for: Machine.self) }
    }

    /// Boxes `machine`, whose builder `builder` is a copy of, in a box with the storage `storage`
    /// makes, or in a recycled box of the same type.
    @inlinable
    static func makeBox<Machine: AsyncStateMachine, Storage>(
        for machine: inout Machine, builder: Self, storage: () -> Storage
    ) -> Unmanaged<Future<Value>>
    where Machine.Builder == Self {
        typealias Box = StateMachineBox<Machine, Storage, Value>
        // A call per path rather than a `let box` set on either: the merged value kept a retain and
        // a release of the box that the optimizer did not pair.
        if Self.poolsBoxes, let recycled = BoxCache.take(ObjectIdentifier(Box.self)) {
            let box = unsafeDowncast(recycled, to: Box.self)
            box.install(machine)
            return attach(box, to: &machine, builder: builder)
        }
        let box = Box(machine: machine, storage: storage(), pooled: Self.poolsBoxes)
        return attach(box, to: &machine, builder: builder)
    }

    /// Gives the copy of `machine` in `box` a builder that points at the box, and `machine` a
    /// builder that holds the box's one reference.
    @inlinable
    static func attach<Machine: AsyncStateMachine, Storage>(
        _ box: consuming StateMachineBox<Machine, Storage, Value>, to machine: inout Machine, builder: Self
    ) -> Unmanaged<Future<Value>>
    where Machine.Builder == Self {
        var builder = builder
        // Read-modify-write through the getter and setter: unspecialized code reaching `builder`
        // through a `modify` accessor may allocate the coroutine's frame.
        let unretained = Unmanaged<Future<Value>>.passUnretained(box)
        builder.box = .inside(unretained)
        box.machine.pointee.builder = builder
        builder.box = .owned(consume box)  // the stack copy's reference: the box's one retain
        machine.builder = builder
        return unretained
    }

    /// Registers the machine's box on `awaiter`.
    @inlinable
    static func suspend<A: Awaiter, Machine: AsyncStateMachine>(on awaiter: A, _ machine: inout Machine)
    where Machine.Builder == Self {
        // Borrowed: `machine`, the caller's, owns the box until after this returns (see `box(for:)`),
        // so no retain and release around the registration.
        let box = box(for: &machine)
        do {
            try box._withUnsafeGuaranteedRef { try register(box: $0, on: awaiter) }
        } catch {
            // The awaiter refused the continuation (a misused value-future source): the method ends
            // with that error through its builder, as its own `catch` would end it, so that a
            // fire-and-forget method reports it and tells its context it is done.
            box._withUnsafeGuaranteedRef { $0.releaseResumeContext() }
            machine.builder.setError(error)
        }
    }

    /// Registers `box` on `awaiter`: directly with the runtime's own awaiters, else as a closure.
    @inlinable
    static func register<A: Awaiter>(box: Future<Value>, on awaiter: A) throws {
        // Cast the type, not the value: specialized, the test folds away either way, but a value
        // cast builds an existential box for the awaiter (and copies it) that the optimizer keeps.
        if let runtimeAwaiter = A.self as? any JobRegisteringAwaiter.Type {
            try runtimeAwaiter.register(awaiter, box: box)
        } else {
            try awaiter.unsafeOnCompleted { Continuations.dispatch(.future(box), mayRunInline: true) }
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
