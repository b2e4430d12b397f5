/// Where continuations run: inline on the completing thread, or queued.
///
/// Inline runs go through a trampoline: a continuation that completes another future whose
/// continuation would run inline, and so on, nests at most `maxInlineDepth` frames; deeper work is
/// deferred to the outermost inline frame on the same thread, so a chain of a million synchronous
/// completions runs in constant stack.
@usableFromInline
enum Continuations {
    /// Nested inline continuations allowed on one stack before the trampoline defers.
    /// Each level costs a few hundred bytes of stack; 16 keeps well under 64 KiB.
    static let maxInlineDepth = 16

    /// Runs or queues `job`, a continuation of a future that just completed on this thread.
    ///
    /// - Parameter mayRunInline: `false` when the promise asked for asynchronous continuations, when
    ///   the continuation is not the first of several, or when registration found the future done.
    @usableFromInline
    static func dispatch(_ job: Job, mayRunInline requested: Bool) {
        guard requested else { return enqueue(job) }
        // One thread-local read, borrowed (no retain), serves every check below.
        ThreadState.withCurrent { state in
            // A machine resumed from inside its own moveNext (an awaiter that calls back while it is
            // being registered) is queued: running it here would enter the same machine twice.
            if case .future(let future) = job, state.runningBox == ObjectIdentifier(future) {
                return enqueue(job)
            }
            if let context = job.context, state.synchronizationContext !== context {
                return context.enqueue(job)
            }
            runInline(job, state: state)
        }
    }

    /// Runs or queues the one continuation a future's slot held, `word`, taking over its retain.
    ///
    /// The common case, a state machine's box with no context to return to, run inline, takes a
    /// path of its own: it reads the box straight from the word and runs it, with none of the
    /// general path's steps (making a `Job`, asking it for its context, switching on it to run
    /// it, destroying it), about a fifth of the instructions of a resumption. Inlined into the
    /// completion that calls it, so that a chain of continuations run inline nests one frame fewer
    /// per link.
    @usableFromInline @inline(__always)
    static func dispatch(slotWord word: UInt, mayRunInline: Bool) {
        guard mayRunInline, word & SlotWord.itemTag == 0 else {
            return dispatch(Job(takingRetainedWord: word), mayRunInline: mayRunInline)
        }
        let box = Unmanaged<AnyFuture>.fromOpaque(UnsafeRawPointer(bitPattern: word).unsafelyUnwrapped)
        // Borrowed, both: the thread's state outlives the call, and the word's retain keeps the box.
        let ranInline = ThreadState.withCurrent { state in
            box._withUnsafeGuaranteedRef { runInlineIfAllowed($0, state: state) }
        }
        guard ranInline else { return dispatch(Job(takingRetainedWord: word), mayRunInline: true) }
        box.release()
    }

    /// Runs `future` inline unless `dispatch(_:mayRunInline:)` or `runInline` would not (it has a
    /// context, it is the machine running, or the stack is deep), and says whether it did.
    ///
    /// Inlined into its caller, with the closures around it: each was a frame of its own, and a
    /// chain of continuations run inline nests these frames once per link.
    @inline(__always)
    private static func runInlineIfAllowed(_ future: AnyFuture, state: ThreadState) -> Bool {
        guard future.resumeContext == nil, state.runningBox != ObjectIdentifier(future),
            state.inlineDepth < maxInlineDepth
        else { return false }
        nested(on: state) { future.runAsJob() }
        return true
    }

    /// Queues `job` on its context, or on the pool when it has none.
    ///
    /// - Parameter behindQueuedWork: on the pool, queue it behind the work already waiting
    ///   (`ThreadPool.enqueueBehind`), as `Future.yield()` does, rather than run it next. A
    ///   context's queue is first in, first out either way.
    @inline(__always)
    static func enqueue(_ job: Job, behindQueuedWork: Bool = false) {
        if let context = job.context {
            context.enqueue(job)
        } else if behindQueuedWork {
            ThreadPool.shared.enqueueBehind(job)
        } else {
            ThreadPool.shared.enqueue(job)
        }
    }

    /// Queues a future that runs itself (`Future.run`) on the shared pool.
    @usableFromInline
    static func enqueueOnPool(_ future: AnyFuture) {
        ThreadPool.shared.enqueue(.future(future))
    }

    /// Runs `job` now on this thread, or defers it when the stack is deep already.
    static func runInline(_ job: Job, state: ThreadState) {
        if state.inlineDepth >= maxInlineDepth {
            state.deferred.append(job)
            return
        }
        nested(on: state) { job.run() }
    }

    /// Runs `body`, a continuation run inline, one level deeper on `state`'s trampoline; the
    /// outermost level then runs what deeper ones deferred.
    @inline(__always)
    static func nested(on state: ThreadState, _ body: () -> Void) {
        state.inlineDepth += 1
        body()
        // The emptiness test here, not in a call: the outermost run nearly always finds none.
        if state.inlineDepth == 1 && !state.deferred.isEmpty {
            drainDeferred(state)
        }
        state.inlineDepth -= 1
    }

    private static func drainDeferred(_ state: ThreadState) {
        while state.deferredHead < state.deferred.count {
            let next = state.deferred[state.deferredHead]
            state.deferredHead += 1
            next.run()
        }
        state.deferred.removeAll(keepingCapacity: state.deferred.capacity <= 1024)
        state.deferredHead = 0
    }

    /// Queues this thread's deferred continuations, each to its own context or to the pool: called
    /// before the thread blocks, so none of them waits for a thread that is waiting for it.
    static func releaseDeferred(_ state: ThreadState) {
        guard state.deferredHead < state.deferred.count else { return }
        let pending = state.deferred[state.deferredHead...]
        state.deferred.removeAll()
        state.deferredHead = 0
        for job in pending { dispatch(job, mayRunInline: false) }
    }
}
