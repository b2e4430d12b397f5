/// The error `wait()` throws instead of blocking forever: the future it would wait for can only
/// complete after a continuation runs on the context whose thread the wait would block, or after
/// work that is on the waiting thread's own stack, under the wait, goes on (a method's `moveNext`,
/// a `Future.run` body, that waits for a future which needs that method or body to finish). An
/// ``AsyncContext``'s `run` throws it too, instead of pumping for ever, when its future, or a
/// fire-and-forget method started in it, needs the context whose thread the pump stalls; and
/// `send` on a context's thread, when the thread of the context it sends to is blocked, through a
/// chain of `send`s, sending back to it.
public struct DeadlockError: Error, Sendable, CustomStringConvertible {
    /// The context whose thread was about to block; for a deadlock on the thread's own stack
    /// (``threadName`` set), the context the thread runs, if any, else the thread's name.
    public let contextName: String
    /// For a deadlock on the blocking thread's own stack, the thread's name: the last link of
    /// ``chain`` is work on that thread's stack, under the call that would block, which cannot go
    /// on until that call returns. `nil` for a deadlock on a context.
    public let threadName: String?
    /// The chain of awaits, from the future `wait()` was called on down to the last link, which must
    /// run on ``contextName``: a state machine's resumption, or work queued there (a body passed to
    /// `SingleThreadContext.run`), or work sent there; or, with ``threadName``, the future whose
    /// work is on that thread's stack. A link may be a thread blocked in `wait()` or
    /// `send` rather than an await: the work of a future (a `Future.run` body, a method's
    /// `moveNext`) that waits for the next link, whose name then ends in "(in wait() on" or
    /// "(in send on" and the thread's name.
    ///
    /// For a `send` that throws, the contexts whose threads are blocked in `send`, from the one
    /// this `send` would wait for, each sending to the next, the last to ``contextName``.
    public let chain: [String]
    /// The call that would have blocked: `wait()`, `AsyncContext.run`, or `send`.
    let blockingCall: String
    /// The contexts from the one the last link must resume on down to one whose thread this call
    /// blocks, each one's thread blocked in `send` to the next; just ``contextName`` when the last
    /// link must resume on that thread itself.
    let blockedSends: [String]

    init(
        contextName: String, chain: [String], blockingCall: String = "wait()", blockedSends: [String] = [],
        threadName: String? = nil
    ) {
        self.contextName = contextName
        self.chain = chain
        self.blockingCall = blockingCall
        self.blockedSends = blockedSends
        self.threadName = threadName
    }

    public var description: String {
        var text = "\(blockingCall) would deadlock: "
        if blockingCall == "send" {
            // `chain` is the contexts whose threads send, each to the next, back to this thread's.
            text += zip(chain, chain.dropFirst() + [contextName]).map { "\"\($0)\" is blocked in send to \"\($1)\"" }
                .joined(separator: ", ")
            text += " — the thread this send blocks. Post instead of sending, or send one way only."
            return text
        }
        if let threadName {
            text += chain.joined(separator: " awaits ")
            text += ", whose work is on the stack of \"\(threadName)\" under this \(blockingCall), and cannot go"
            text += " on until it returns. Await instead of blocking."
            return text
        }
        if chain.count >= 2 {
            text += chain.dropLast().joined(separator: " awaits ")
            text += " awaits \(chain.last!), and must resume on \"\(contextName)\""
        } else {
            text += "\(chain.first ?? "the future") must resume on \"\(contextName)\""
        }
        for target in blockedSends.dropFirst() { text += ", whose thread is blocked in send to \"\(target)\"" }
        text += " — the thread this \(blockingCall) blocks. Await instead of blocking, "
        text += "or configureAwait(false) in the awaited code."
        return text
    }
}

/// The threads blocked in `send` to a runtime context that hold something up meanwhile: the
/// contexts they own, stalled until the context sent to runs the work, or the futures whose work
/// is on their stacks. The deadlock detector follows both.
enum BlockedSenders {
    struct Entry {
        /// The contexts the sending thread owns, innermost first: none runs while it blocks.
        let contexts: [SynchronizationContext]
        /// The futures whose work is on the sending thread's stack (`ThreadState.futuresOnStack`).
        let heldUp: [AnyFuture]
        /// The context it sends to.
        let target: SynchronizationContext
        /// The sending thread's name.
        let threadName: String
    }

    /// By sending thread (`ObjectIdentifier` of its `ThreadState`).
    private static let entries = Locked<[ObjectIdentifier: Entry]>([:])

    /// Records `entry` for the thread `sender`, unless `check`, given the other entries, finds a
    /// deadlock, which it returns instead. The check and the record are one critical section: of
    /// two threads sending to each other at once, exactly the second finds the first.
    static func register(
        _ sender: ObjectIdentifier, _ entry: Entry, unless check: ([Entry]) -> DeadlockError?
    ) -> DeadlockError? {
        entries.withLock { entries in
            if let deadlock = check(Array(entries.values)) { return deadlock }
            entries[sender] = entry
            return nil
        }
    }

    /// Forgets the entry of the thread `sender`: called as soon as the work it sent has run.
    static func unregister(_ sender: ObjectIdentifier) {
        _ = entries.withLock { $0.removeValue(forKey: sender) }
    }

    static var all: [Entry] { entries.withLock { Array($0.values) } }
}

enum DeadlockDetector {
    /// Futures the walk may visit before it gives up (and lets the wait block).
    static let visitLimit = 10_000

    /// How long a thread blocked on a context's behalf, or with work on its stack, sleeps, when
    /// nothing wakes it, before it looks for a deadlock again. A job queued on the context wakes
    /// it, but the future it blocks on can come to need the context without one: a method it
    /// awaits goes on to await a method whose continuation waits in the context's queue already,
    /// or the work on the stack.
    static let recheckNanoseconds: Int64 = 100_000_000

    /// The deadlock that blocking `thread` until `target` completes would cause, if any.
    ///
    /// Every state machine suspended on the thread's context is blocked while the thread is, and so
    /// is everything that awaits it. The walk also starts from other threads' records (the machines
    /// of contexts whose threads are blocked sending here, the futures a blocked sender holds up),
    /// which change as those threads go on: each future's continuations are read under its lock,
    /// and the records are snapshots holding what they name, so a walk that races a thread going
    /// on reads stale links, never freed memory. A sender's record goes as soon as its work has
    /// run, and a wait's as soon as it ends without its future; a link read just before that can
    /// still be followed, so two threads blocking over one cycle at the same moment may both
    /// throw (for two sends, only the second: they register under one lock).
    ///
    /// An ``AsyncContext`` run on the thread of another context (a `SingleThreadContext`'s, or an
    /// outer `AsyncContext`'s) stalls that context's loop until it returns: machines suspended on
    /// the enclosing contexts are blocked as well, and are looked at too.
    static func detect(waitingFor target: AnyFuture, on thread: ThreadState) -> DeadlockError? {
        detect(waitingFor: target, from: thread.ownedContext)
    }

    /// The deadlock that blocking `thread` until `target` completes would cause on the thread's own
    /// stack: `target` awaits, through its chain of awaits, one of `onStack`, the futures whose work
    /// is on the stack under the wait (``ThreadState/futuresOnStack``), none of which can complete
    /// until the wait returns. The simplest: a method's `moveNext` or a `Future.run` body that
    /// waits for its own future.
    ///
    /// Called once the wait's continuation is registered, as that of any other thread blocked in
    /// the cycle is: of two threads that block over one cycle at once, at least one sees the other.
    /// Called again every `recheckNanoseconds` while the thread blocks: a method that was suspended
    /// on something else when the wait began can await the work on the stack later.
    static func detect(waitingFor target: AnyFuture, on thread: ThreadState, onStack: [AnyFuture]) -> DeadlockError? {
        // The one target in place, not in an array: a wait that blocks with nothing on the stack,
        // the usual case, allocates nothing here.
        detect(waitingForAnyOf: CollectionOfOne(target), on: thread, onStack: onStack)
    }

    /// ``detect(waitingFor:on:onStack:)`` for a thread that waits for all of `targets` (an
    /// ``AsyncContext``'s pump): one walk from each future on the stack, whatever their number.
    static func detect(
        waitingForAnyOf targets: some Sequence<AnyFuture>, on thread: ThreadState, onStack: [AnyFuture]
    ) -> DeadlockError? {
        guard !onStack.isEmpty else { return nil }
        let targets = Set(targets.map(ObjectIdentifier.init))
        for future in onStack {
            guard let chain = path(from: future, upToAnyOf: targets) else { continue }
            return DeadlockError(
                contextName: thread.ownedContext?.name ?? thread.name, chain: chain, threadName: thread.name)
        }
        return nil
    }

    /// The deadlock that blocking the thread that runs `innermost`'s loop until `target` completes
    /// would cause, looking at `innermost`, the contexts it stalls, and those whose threads are
    /// blocked sending to any of these (`stalledContexts(from:)`).
    static func detect(waitingFor target: AnyFuture, from innermost: SynchronizationContext?) -> DeadlockError? {
        // Name the deepest machine that must resume on a stalled context: the longest chain tells
        // the whole story.
        var longest: (context: Stalled, chain: [String])?
        let senders = innermost == nil ? [] : BlockedSenders.all
        let stalledContexts = stalledContexts(from: innermost, senders: senders)
        for stalled in stalledContexts {
            guard let loop = stalled.context.loop else { continue }
            for (box, awaited) in loop.suspendedBoxes {
                if let path = path(from: box, upTo: target), path.count + 1 > (longest?.chain.count ?? 0) {
                    longest = (stalled, path + [awaited.name])
                }
            }
        }
        // A thread blocked in `send` to a stalled context, in the work of futures that `target`
        // awaits: a `Future.run` body sending to the context whose thread waits for it.
        for stalled in stalledContexts {
            for sender in senders where sender.target === stalled.context {
                for future in sender.heldUp {
                    guard var path = path(from: future, upTo: target), path.count + 1 > (longest?.chain.count ?? 0)
                    else { continue }
                    path[path.count - 1] += " (in send on \(sender.threadName))"
                    longest = (stalled, path + ["work sent to \"\(stalled.context.name)\""])
                }
            }
        }
        return longest.map {
            DeadlockError(contextName: $0.context.context.name, chain: $0.chain, blockedSends: $0.context.sends)
        }
    }

    /// A context that cannot run while some thread blocks, and why: `sends` names the contexts
    /// from it down to one that thread owns, each one's thread blocked in `send` to the next (just
    /// its own name for a context the thread owns).
    struct Stalled {
        let context: SynchronizationContext
        let sends: [String]
    }

    /// The contexts that cannot run while the thread that owns `innermost` blocks: `innermost`, the
    /// contexts an ``AsyncContext`` run inside another stalls, and, over and over, the contexts of
    /// any thread blocked in `send` to one of those.
    static func stalledContexts(
        from innermost: SynchronizationContext?, senders: [BlockedSenders.Entry]
    ) -> [Stalled] {
        var stalled = ownedContexts(from: innermost).map { Stalled(context: $0, sends: [$0.name]) }
        guard !stalled.isEmpty else { return [] }
        var seen = Set(stalled.map { ObjectIdentifier($0.context) })
        var head = 0
        while head < stalled.count {
            let blocked = stalled[head]
            head += 1
            for sender in senders where sender.target === blocked.context {
                for context in sender.contexts where seen.insert(ObjectIdentifier(context)).inserted {
                    stalled.append(Stalled(context: context, sends: [context.name] + blocked.sends))
                }
            }
        }
        return stalled
    }

    /// `innermost` and the contexts an ``AsyncContext`` run inside another stalls: those whose loops
    /// the same thread runs.
    static func ownedContexts(from innermost: SynchronizationContext?) -> [SynchronizationContext] {
        var owned: [SynchronizationContext] = []
        var next = innermost
        while let context = next, !owned.contains(where: { $0 === context }) {
            owned.append(context)
            next = (context as? AsyncContext)?.enclosingContext
        }
        return owned
    }

    /// The deadlock that blocking `thread` in `send` to `target` would cause: `target`'s thread is
    /// blocked, through a chain of `senders`, sending to a context `thread` owns. Called by
    /// `BlockedSenders.register`, under its lock.
    static func detect(
        sendingTo target: SynchronizationContext, on thread: ThreadState, senders: [BlockedSenders.Entry]
    ) -> DeadlockError? {
        guard let innermost = thread.ownedContext,
            let found = stalledContexts(from: innermost, senders: senders).first(where: { $0.context === target })
        else { return nil }
        return DeadlockError(
            contextName: found.sends.last!, chain: Array(found.sends.dropLast()), blockingCall: "send")
    }

    /// The names of the awaits from `target` down to `start`, following continuations upward from
    /// `start`. A future whose work blocks a thread in `wait()` for the next link is named with
    /// that thread. Names are made for the path found only: a wait may walk thousands of futures.
    private static func path(from start: AnyFuture, upTo target: AnyFuture) -> [String]? {
        path(from: start, upToAnyOf: [ObjectIdentifier(target)])
    }

    /// ``path(from:upTo:)`` to whichever of `targets` the walk reaches first.
    private static func path(from start: AnyFuture, upToAnyOf targets: Set<ObjectIdentifier>) -> [String]? {
        // Each link: a future, and the thread whose wait() in its work holds it up, if that is how
        // it awaits the link before.
        typealias Link = (future: AnyFuture, blockedThread: String?)
        var queue: [(future: AnyFuture, path: [Link])] = [(start, [(start, nil)])]
        var visited: Set<ObjectIdentifier> = [ObjectIdentifier(start)]
        var head = 0
        while head < queue.count && head < visitLimit {
            let (future, path) = queue[head]
            head += 1
            if targets.contains(ObjectIdentifier(future)) {
                return path.reversed().map { link in
                    link.future.diagnosticName + (link.blockedThread.map { " (in wait() on \($0))" } ?? "")
                }
            }
            for job in future.pendingContinuations {
                let awaiters: [AnyFuture]
                var blockedThread: String?
                switch job {
                case .future(let box): awaiters = [box]
                case .item(let item):
                    awaiters = item.dependentFutures
                    blockedThread = (item as? BlockingWaiter)?.threadName
                }
                for awaiter in awaiters where visited.insert(ObjectIdentifier(awaiter)).inserted {
                    queue.append((awaiter, path + [(awaiter, blockedThread)]))
                }
            }
        }
        return nil
    }
}
