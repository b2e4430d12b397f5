import CTaskMachine

/// The calling thread's ``SynchronizationContext/current`` as an async method builder's `start`
/// found it, put back when `start` returns.
///
/// A method that sets `current` before its first suspension changes it for itself, not for its
/// caller: the continuation it registers captures the new context, and the caller goes on with
/// its own. .NET's `AsyncMethodBuilder.Start` restores the thread's context the same way.
///
/// The context is held by a retain of its own, taken only when there is one and dropped by
/// ``restore()``, which `start` calls exactly once (`ThreadState.contextToPutBack()` and
/// `putBackContext(_:)`, as a resumption uses them).
@usableFromInline
struct ContextAtStart {
    /// The caller's context, retained.
    let context: Unmanaged<SynchronizationContext>?

    /// Records the calling thread's context. Creates no state for a thread that has none (one the
    /// runtime did not start, which has no context then).
    @usableFromInline
    init() {
        guard let raw = tm_thread_state_get() else {
            context = nil
            return
        }
        context = Unmanaged<ThreadState>.fromOpaque(raw)._withUnsafeGuaranteedRef { $0.contextToPutBack() }
    }

    /// Puts the caller's context back if the method left another one current, and drops the
    /// record's retain.
    @usableFromInline
    func restore() {
        // No state: the method set no context either (setting one makes the state).
        guard let raw = tm_thread_state_get() else { return }
        Unmanaged<ThreadState>.fromOpaque(raw)._withUnsafeGuaranteedRef { $0.putBackContext(context) }
    }
}
