extension Future where Value == Void {
    /// An await that always suspends and resumes at once through the queue: on the current
    /// context if there is one, else on the pool. Lets other queued work run first: on a pool
    /// worker, the work in its own queue and whatever waits in the pool's global queue, behind
    /// which the resumption is queued (when nothing waits at all, it runs next).
    public static func yield() -> YieldAwaitable {
        YieldAwaitable()
    }
}

/// The awaitable of ``Future/yield()``.
public struct YieldAwaitable: Awaitable, Sendable {
    public func getAwaiter() -> YieldAwaiter {
        YieldAwaiter()
    }
}

/// The awaiter of ``Future/yield()``: never completed, so `await` always suspends.
public struct YieldAwaiter: Awaiter, JobRegisteringAwaiter, Sendable {
    public var isCompleted: Bool { false }

    public func onCompleted(_ continuation: @escaping @Sendable () -> Void) {
        let context = SynchronizationContext.current
        Continuations.enqueue(.item(ClosureWorkItem(context: context, continuation)), behindQueuedWork: true)
    }

    public func getResult() {}

    @usableFromInline
    func register(box: AnyFuture) {
        assert(box.resumeContext == nil, "a box registers with a context left from an earlier await")
        if let context = SynchronizationContext.current { box.resume(on: context, awaiting: "Future.yield()") }
        Continuations.enqueue(.future(box), behindQueuedWork: true)
    }

    @usableFromInline
    func register(item: WorkItem) {
        Continuations.enqueue(.item(item), behindQueuedWork: true)
    }
}
