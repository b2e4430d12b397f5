/// A unit of work the runtime runs: a continuation, a pool item, a timer's expiry.
///
/// Two kinds, one word: a future that runs itself (a state machine's box resuming, or the body of
/// `Future.run`), or any other work item. A future is its own job, so resuming a suspended state
/// machine needs no closure and no second object.
@usableFromInline
enum Job {
    case future(AnyFuture)
    case item(WorkItem)

    /// Runs the work on the calling thread.
    @inline(__always)
    func run() {
        switch self {
        case .future(let future): future.runAsJob()
        case .item(let item): item.run()
        }
    }

    /// Whether this job is `item`.
    func isItem(_ item: WorkItem) -> Bool {
        if case .item(let mine) = self { return mine === item }
        return false
    }

    /// The context this continuation must run on, or `nil` for anywhere.
    var context: SynchronizationContext? {
        switch self {
        case .future(let future): future.resumeContext
        case .item(let item): item.context
        }
    }
}

// A job is handed from thread to thread by design; the objects it names synchronize their own state.
extension Job: @unchecked Sendable {}

/// The base of every job that is not a future: closures, resumers of Swift tasks, blocked waiters,
/// combinator counters, timers. Subclasses override `run()`.
@usableFromInline
class WorkItem {
    /// Where the item must run when it is a continuation; `nil` means anywhere.
    final let context: SynchronizationContext?

    init(context: SynchronizationContext? = nil) {
        self.context = context
    }

    func run() {}

    /// The futures that cannot complete before this continuation runs, which the deadlock detector
    /// follows: the future it goes on to complete (a combinator's result, a forwarded result), or
    /// for a thread blocked in `wait()`, the futures whose work it is doing.
    var dependentFutures: [AnyFuture] { [] }
}

// Work items are created on one thread and run on another; subclasses keep their state safe.
extension WorkItem: @unchecked Sendable {}

/// A closure as a job.
class ClosureWorkItem: WorkItem {
    private let body: @Sendable () -> Void

    init(context: SynchronizationContext? = nil, _ body: @escaping @Sendable () -> Void) {
        self.body = body
        super.init(context: context)
    }

    final override func run() { body() }
}

/// A closure as a job that completes `output` from another future's or source's result: a
/// forwarding continuation, such as `asFuture()`'s. It names `output`, so that the deadlock
/// detector follows a result to the future it is forwarded to, as it follows a combinator's.
final class ForwardingWorkItem: ClosureWorkItem {
    private let output: AnyFuture

    init(to output: AnyFuture, _ body: @escaping @Sendable () -> Void) {
        self.output = output
        super.init(body)
    }

    override var dependentFutures: [AnyFuture] { [output] }
}

// Safe to share: immutable.
extension ClosureWorkItem: @unchecked Sendable {}

// Safe to share: immutable.
extension ForwardingWorkItem: @unchecked Sendable {}
