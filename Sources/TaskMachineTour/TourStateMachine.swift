import TaskMachine

/// A hand-written state machine that keeps its place in an integer, as a compiler's would:
/// 0 before the first await, then the number of the segment to resume at.
protocol TourStateMachine: AsyncStateMachine {
    /// The segment `moveNext()` runs next.
    var state: Int { get set }
}

extension TourStateMachine {
    /// The start of every `await` in a hand-written `moveNext()`.
    ///
    /// Records `resumeState` as the segment to go on with. If `awaiter` has completed, returns
    /// `false` and the machine carries straight on (the fast path: no suspension, no box). If not,
    /// registers the machine to resume when it completes and returns `true`; `moveNext()` must then
    /// return at once, handing control back to its caller.
    mutating func suspends<A: Awaiter>(on awaiter: A, resumingAt resumeState: Int) -> Bool {
        state = resumeState
        if awaiter.isCompleted { return false }
        awaitUnsafeOnCompleted(awaiter)
        return true
    }
}

/// The thread running the caller, for lines that say where they ran: `pool-2 (pool worker)`.
var currentThreadDescription: String {
    let thread = RuntimeThread.current
    return thread.name == thread.role.rawValue ? thread.name : "\(thread.name) (\(thread.role.rawValue))"
}

/// An error the tour's examples throw on purpose.
struct TourDemoError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}
