/// The error `wait()` throws instead of blocking forever: the future it would wait for can only
/// complete after a continuation runs on the context whose thread the wait would block. An
/// ``AsyncContext``'s `run` throws it too, instead of pumping for ever, when its future, or a
/// fire-and-forget method started in it, needs the context whose thread the pump stalls.
public struct DeadlockError: Error, Sendable, CustomStringConvertible {
    /// The context whose thread was about to block.
    public let contextName: String
    /// The chain of awaits, from the future `wait()` was called on down to the last link, which must
    /// run on ``contextName``: a state machine's resumption, or work queued there (a body passed to
    /// `SingleThreadContext.run`). A link may be a thread blocked in `wait()` rather than an await:
    /// the work of a future (a `Future.run` body, a method's `moveNext`) that waits for the next
    /// link, whose name then ends in "(in wait() on" and the thread's name.
    public let chain: [String]
    /// The call that would have blocked: `wait()`, or `AsyncContext.run`.
    let blockingCall: String

    init(contextName: String, chain: [String], blockingCall: String = "wait()") {
        self.contextName = contextName
        self.chain = chain
        self.blockingCall = blockingCall
    }

    public var description: String {
        var text = "\(blockingCall) would deadlock: "
        if chain.count >= 2 {
            text += chain.dropLast().joined(separator: " awaits ")
            text += " awaits \(chain.last!), and must resume on \"\(contextName)\""
        } else {
            text += "\(chain.first ?? "the future") must resume on \"\(contextName)\""
        }
        text += " — the thread this \(blockingCall) blocks. Await instead of blocking, "
        text += "or configureAwait(false) in the awaited code."
        return text
    }
}

enum DeadlockDetector {
    /// Futures the walk may visit before it gives up (and lets the wait block).
    static let visitLimit = 10_000

    /// How long a thread blocked on a context's behalf sleeps, when nothing wakes it, before it
    /// looks for a deadlock again. A job queued on the context wakes it, but the future it blocks
    /// on can come to need the context without one: a method it awaits goes on to await a method
    /// whose continuation waits in the context's queue already.
    static let recheckNanoseconds: Int64 = 100_000_000

    /// The deadlock that blocking `thread` until `target` completes would cause, if any.
    ///
    /// Every state machine suspended on the thread's context is blocked while the thread is, and so
    /// is everything that awaits it, so the futures above such a machine cannot complete or drop
    /// continuations during the walk: reading their slots from here is safe.
    ///
    /// An ``AsyncContext`` run on the thread of another context (a `SingleThreadContext`'s, or an
    /// outer `AsyncContext`'s) stalls that context's loop until it returns: machines suspended on
    /// the enclosing contexts are blocked as well, and are looked at too.
    static func detect(waitingFor target: AnyFuture, on thread: ThreadState) -> DeadlockError? {
        detect(waitingFor: target, from: thread.ownedContext)
    }

    /// The deadlock that blocking the thread that runs `innermost`'s loop until `target` completes
    /// would cause, looking at `innermost` and the contexts it stalls.
    static func detect(waitingFor target: AnyFuture, from innermost: SynchronizationContext?) -> DeadlockError? {
        // Name the deepest machine that must resume on the thread: the longest chain tells the
        // whole story.
        var longest: (context: SynchronizationContext, chain: [String])?
        var next = innermost
        while let context = next {
            next = (context as? AsyncContext)?.enclosingContext
            guard let loop = context.loop else { continue }
            for (box, awaited) in loop.suspendedBoxes {
                if let path = path(from: box, upTo: target), path.count + 1 > (longest?.chain.count ?? 0) {
                    longest = (context, path + [awaited.name])
                }
            }
        }
        return longest.map { DeadlockError(contextName: $0.context.name, chain: $0.chain) }
    }

    /// The names of the awaits from `target` down to `start`, following continuations upward from
    /// `start`. A future whose work blocks a thread in `wait()` for the next link is named with
    /// that thread.
    private static func path(from start: AnyFuture, upTo target: AnyFuture) -> [String]? {
        var queue: [(future: AnyFuture, path: [String])] = [(start, [start.diagnosticName])]
        var visited: Set<ObjectIdentifier> = [ObjectIdentifier(start)]
        var head = 0
        while head < queue.count && head < visitLimit {
            let (future, path) = queue[head]
            head += 1
            if future === target { return path.reversed() }
            for job in future.pendingContinuations {
                let awaiters: [AnyFuture]
                var how = ""
                switch job {
                case .future(let box): awaiters = [box]
                case .item(let item):
                    awaiters = item.dependentFutures
                    if let waiter = item as? BlockingWaiter { how = " (in wait() on \(waiter.threadName))" }
                }
                for awaiter in awaiters where visited.insert(ObjectIdentifier(awaiter)).inserted {
                    queue.append((awaiter, path + [awaiter.diagnosticName + how]))
                }
            }
        }
        return nil
    }
}
