import CTaskMachine
import Glibc

/// What the runtime keeps per thread: the current synchronization context, the trampoline that
/// keeps chains of inline continuations from growing the stack, the thread's parker, and its role.
///
/// Reached through a C thread-local pointer (one load) and released by a pthread key destructor
/// when the thread exits. Only its own thread touches the fields below (the parker aside), so their
/// exclusivity is checked statically only: a dynamic check would cost a thread-local access set on
/// every continuation.
final class ThreadState {
    /// The context continuations captured on this thread will return to.
    @exclusivity(unchecked) var synchronizationContext: SynchronizationContext?
    /// The single-threaded context whose loop runs on this thread, if any.
    @exclusivity(unchecked) var ownedContext: SynchronizationContext?
    /// The pool worker running on this thread, if any; unretained, as the worker's thread holds
    /// it for as long as it runs.
    @exclusivity(unchecked) var unretainedWorker: Unmanaged<ThreadPool.Worker>?

    /// The pool worker running on this thread, if any.
    var worker: ThreadPool.Worker? { unretainedWorker?.takeUnretainedValue() }

    /// Whether this thread is a pool worker running jobs: not one blocked in a call
    /// (``blocking(_:)``), whose jobs wait for it.
    @inline(__always)
    var runsPoolJobs: Bool { unretainedWorker != nil && !isBlocked }
    /// Wakes this thread when it sleeps: in the pool, in a context's loop, or in a blocking wait.
    let parker = Parker()
    let name: String
    let role: RuntimeThread.Role
    let kernelID: Int64

    /// The state machine box whose `moveNext` runs innermost on this thread, if any.
    @exclusivity(unchecked) var runningBox: ObjectIdentifier?
    /// The boxes whose `moveNext` a resumption run inline on this thread interrupted, outermost
    /// first: the first `boxesUnderCapacity` of them; `boxesUnderCount` counts all.
    let boxesUnder = UnsafeMutablePointer<ObjectIdentifier>.allocate(capacity: boxesUnderCapacity)
    @exclusivity(unchecked) var boxesUnderCount = 0
    /// More than the trampoline lets inline resumptions nest, with room for those nested in the
    /// jobs of an ``AsyncContext`` run inside a method; past it, the deadlock detector does not see
    /// the interrupted boxes.
    static let boxesUnderCapacity = 64

    /// Records `box` as the box whose `moveNext` runs innermost on this thread, and the one it
    /// interrupts, if any, among the boxes under it; returns that one, for
    /// ``leaveBox(restoring:context:)``.
    @inline(__always)
    func enterBox(_ box: ObjectIdentifier) -> ObjectIdentifier? {
        let outer = runningBox
        if let outer { pushBoxUnder(outer) }
        runningBox = box
        return outer
    }

    /// The thread's context, retained when there is one (out of line: most methods run with none),
    /// for ``putBackContext(_:)`` to make current again once a method's `start`, or a resumption,
    /// has returned.
    @inline(__always)
    func contextToPutBack() -> Unmanaged<SynchronizationContext>? {
        synchronizationContext == nil ? nil : retainedContext()
    }

    /// Makes `context`, from ``contextToPutBack()``, current again if the method changed it, as
    /// .NET puts the context back after `Start` and after each resumption, and drops its retain.
    @inline(__always)
    func putBackContext(_ context: Unmanaged<SynchronizationContext>?) {
        if context != nil || synchronizationContext != nil { putBack(context) }
    }

    /// Undoes ``enterBox(_:)``, whose result `outer` is: the box it interrupted runs innermost
    /// again. And `context`, from ``contextToPutBack()``, is current again.
    @inline(__always)
    func leaveBox(restoring outer: ObjectIdentifier?, context: Unmanaged<SynchronizationContext>?) {
        runningBox = outer
        if outer != nil { boxesUnderCount &-= 1 }
        putBackContext(context)
    }

    /// The thread's context, with a retain of its own.
    @inline(never)
    private func retainedContext() -> Unmanaged<SynchronizationContext>? {
        synchronizationContext.map { Unmanaged.passUnretained($0).retain() }
    }

    /// ``putBackContext(_:)``'s work, where there is any.
    @inline(never)
    private func putBack(_ context: Unmanaged<SynchronizationContext>?) {
        let found = context?.takeRetainedValue()
        if synchronizationContext !== found { synchronizationContext = found }
    }

    /// Records `box` among the boxes under the innermost, if there is room.
    @inline(__always)
    private func pushBoxUnder(_ box: ObjectIdentifier) {
        if boxesUnderCount < Self.boxesUnderCapacity { boxesUnder[boxesUnderCount] = box }
        boxesUnderCount &+= 1
    }

    /// The future whose body runs innermost on this thread, if any: a `Future.run` body, or a
    /// body queued by a context's `run`.
    @exclusivity(unchecked) var runningBody: Unmanaged<AnyFuture>?
    /// The futures of the bodies that a body run nested on this thread interrupted, outermost
    /// first: none goes on before it returns. A `Future.run` body runs nested when a wait or an
    /// await in another runs it (`runHereIfNotStarted(nestedOn:)`).
    @exclusivity(unchecked) var interruptedBodies: [Unmanaged<AnyFuture>] = []

    /// Runs `body`, the work that completes `future` (a `Future.run` body, a context's `run` body),
    /// recorded as `runningBody`: a `wait()` in it holds `future` up.
    @inline(__always)
    func runningBody<Result>(of future: AnyFuture, _ body: () throws -> Result) rethrows -> Result {
        let outer = runningBody
        if let outer { interruptedBodies.append(outer) }
        runningBody = Unmanaged.passUnretained(future)
        defer {
            runningBody = outer
            if outer != nil { resumeInterruptedBody() }
        }
        return try body()
    }

    /// Forgets the innermost interrupted body, running again. Out of line, as the push is not:
    /// most bodies interrupt none.
    @inline(never)
    private func resumeInterruptedBody() { interruptedBodies.removeLast() }

    /// The futures that cannot complete while this thread blocks: those whose work is on its stack
    /// (the state machines whose `moveNext` runs, innermost or interrupted by a resumption run
    /// inline, the innermost body and the bodies that nested ones interrupted).
    var futuresOnStack: [AnyFuture] {
        var futures = interruptedBodies.map { $0.takeUnretainedValue() }
        if let runningBody { futures.append(runningBody.takeUnretainedValue()) }
        // Alive, all: their `moveNext` is running on this stack.
        func box(_ identifier: ObjectIdentifier) -> AnyFuture {
            let address = UnsafeRawPointer(bitPattern: UInt(bitPattern: identifier))!
            return Unmanaged<AnyFuture>.fromOpaque(address).takeUnretainedValue()
        }
        for index in 0..<min(boxesUnderCount, Self.boxesUnderCapacity) { futures.append(box(boxesUnder[index])) }
        if let runningBox { futures.append(box(runningBox)) }
        return futures
    }
    /// How many continuations are running inline, nested, on this stack.
    @exclusivity(unchecked) var inlineDepth = 0
    /// Continuations deferred by the trampoline; drained by the outermost inline run.
    @exclusivity(unchecked) var deferred: [Job] = []
    @exclusivity(unchecked) var deferredHead = 0
    /// Pooled state machine boxes waiting for their next call on this thread.
    @exclusivity(unchecked) var boxCache = BoxCache()
    /// The continuation that wakes this thread from `wait()`, made on the first wait and reused:
    /// a registration left behind by a wait that timed out only wakes the thread once for nothing,
    /// which every wait loop tolerates, as it must tolerate any spurious wake-up.
    @exclusivity(unchecked) private var waiter: BlockingWaiter?

    var blockingWaiter: BlockingWaiter {
        if let waiter { return waiter }
        let made = BlockingWaiter(parker: parker, threadName: name, holdingUp: [])
        waiter = made
        return made
    }

    /// Runs `body`, a call that blocks this thread until another thread acts. On a pool worker,
    /// the pool counts the worker as blocked for the call, and starts an extra worker at once if too
    /// few unblocked ones would remain: work that the blocked call waits for must not wait in turn
    /// for this worker. A blocking call nested in another (a `wait()` in a job that an
    /// ``AsyncContext`` pumps) counts once.
    func blocking<Result>(_ body: () throws -> Result) rethrows -> Result {
        guard !isBlocked, let pool = worker?.pool else { return try body() }
        // Before the flag: the pool hands over this worker's LIFO job while it is still its worker.
        pool.workerWillBlock()
        isBlocked = true
        defer {
            pool.workerDidUnblock()
            isBlocked = false
        }
        return try body()
    }

    /// Whether this thread is in ``blocking(_:)``. The pool queues what a blocked worker queues
    /// where other workers can take it, not in the worker's LIFO slot: a job that an AsyncContext's
    /// pump or a nested wait() runs may queue work that the blocked call then waits for.
    @exclusivity(unchecked) private(set) var isBlocked = false

    init(name: String, role: RuntimeThread.Role) {
        self.name = name
        self.role = role
        self.kernelID = tm_current_thread_id()
    }

    deinit {
        // Cached boxes are reset and hold nothing; releasing them touches no thread state.
        boxCache.empty()
        boxesUnder.deallocate()
    }

    /// The calling thread's state, created on first use.
    static var current: ThreadState {
        @inline(__always) get { withCurrent { $0 } }
    }

    /// Runs `body` with the calling thread's state (created on first use), borrowed: no retain and
    /// release around it, which reading ``current`` into a local costs on every continuation.
    ///
    /// Safe because the thread-local pointer holds a retain that only the thread's own exit drops
    /// (the pthread key's destructor), so the state outlives any call made on its thread.
    @inline(__always)
    static func withCurrent<Result>(_ body: (ThreadState) throws -> Result) rethrows -> Result {
        try currentUnmanaged._withUnsafeGuaranteedRef(body)
    }

    /// The calling thread's state (created on first use), for an `unowned(unsafe)` local: no
    /// retain and release, and no closure, which the optimizer does not always inline.
    ///
    /// Safe for the same reason as ``withCurrent(_:)``: the state outlives any call on its thread.
    @inline(__always)
    static var unretainedCurrent: ThreadState {
        currentUnmanaged.takeUnretainedValue()
    }

    /// The calling thread's state, created on first use, as the thread-local pointer holds it.
    @inline(__always)
    private static var currentUnmanaged: Unmanaged<ThreadState> {
        if let raw = tm_thread_state_get() { return Unmanaged.fromOpaque(raw) }
        return Unmanaged.passUnretained(adoptCurrentThread(name: nil, role: nil))
    }

    /// Like ``withCurrent(_:)``, but `nil` for a thread that has no state yet; never creates it.
    @inline(__always)
    static func withCurrentIfPresent<Result>(_ body: (ThreadState?) throws -> Result) rethrows -> Result {
        guard let raw = tm_thread_state_get() else { return try body(nil) }
        return try Unmanaged<ThreadState>.fromOpaque(raw)._withUnsafeGuaranteedRef(body)
    }

    /// The calling thread's state if it has one; never creates it.
    static var currentIfPresent: ThreadState? { withCurrentIfPresent { $0 } }

    /// Creates the state of a thread the runtime did not start, or of one of its own threads at start.
    @discardableResult
    static func adoptCurrentThread(name: String?, role: RuntimeThread.Role?) -> ThreadState {
        let isMain = getpid() == Int32(truncatingIfNeeded: tm_current_thread_id())
        let state = ThreadState(
            name: name ?? (isMain ? "main" : "thread \(tm_current_thread_id())"),
            role: role ?? (isMain ? .main : .other)
        )
        let raw = Unmanaged.passRetained(state).toOpaque()
        tm_thread_state_set(raw)
        pthread_setspecific(threadStateKey, raw)
        return state
    }
}

/// Releases a thread's state when the thread exits.
private let threadStateKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { raw in
        guard let raw else { return }
        tm_thread_state_set(nil)
        Unmanaged<ThreadState>.fromOpaque(raw).release()
    }
    return key
}()

/// A description of a thread as the runtime sees it: for logs, traces and the tour.
public struct RuntimeThread: Sendable, Hashable, CustomStringConvertible {
    /// What a thread is for.
    public enum Role: String, Sendable {
        /// The process's first thread.
        case main
        /// A thread-pool worker.
        case poolWorker = "pool worker"
        /// The pool's starvation monitor, which adds a worker when queued work stands still.
        case poolMonitor = "pool monitor"
        /// The timer thread.
        case timer
        /// The loop thread of a `SingleThreadContext`.
        case contextLoop = "context loop"
        /// Any other thread.
        case other
    }

    /// The thread's name: `main`, `pool-1`, `pool-monitor`, `timer`, a context's name, or `thread <id>`.
    public let name: String
    /// The role the runtime gave the thread.
    public let role: Role
    /// The kernel's thread id.
    public let kernelID: Int64

    /// The calling thread.
    public static var current: RuntimeThread {
        let state = ThreadState.current
        return RuntimeThread(name: state.name, role: state.role, kernelID: state.kernelID)
    }

    public var description: String { name }
}

/// Starts a named OS thread running `body`, with its runtime state set up first.
func spawnThread(name: String, role: RuntimeThread.Role, _ body: @escaping @Sendable () -> Void) -> pthread_t {
    final class Start: Sendable {
        let name: String
        let role: RuntimeThread.Role
        let body: @Sendable () -> Void
        init(name: String, role: RuntimeThread.Role, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.role = role
            self.body = body
        }
    }
    let start = Unmanaged.passRetained(Start(name: name, role: role, body: body)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(
        &thread, nil,
        { raw in
            let start = Unmanaged<Start>.fromOpaque(raw!).takeRetainedValue()
            // Linux limits thread names to 15 bytes.
            tm_set_thread_name(String(start.name.prefix(15)))
            ThreadState.adoptCurrentThread(name: start.name, role: start.role)
            start.body()
            return nil
        }, start)
    precondition(result == 0, "TaskMachine could not start thread \(name): error \(result)")
    return thread
}
