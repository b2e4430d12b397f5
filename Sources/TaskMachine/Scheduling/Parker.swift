import CTaskMachine
import Glibc

/// A one-thread sleep/wake primitive on a futex word, with a short spin before sleeping.
///
/// Waking a parked thread on the other core of a small VM costs tens of microseconds, while a
/// hand-off caught during a spin costs about a tenth of one; so `park` first spins briefly.
/// `unpark` leaves a token when the thread is not parked yet, so a wake-up is never lost, and
/// tokens do not accumulate: many `unpark` calls before one `park` wake it once.
final class Parker {
    // Unsafe: the futex needs a stable address, so the word lives in its own allocation, freed in deinit.
    private let word: UnsafeMutablePointer<UInt32>

    private static let empty: UInt32 = 0
    private static let notified: UInt32 = 1
    private static let parked: UInt32 = 2

    /// Polls for a token before going to sleep (about 10 µs): pause instructions, and every
    /// `pausesPerYield` of them a `sched_yield`.
    static let spinIterations = 200
    /// A yielding spin yields the processor this often. The thread this one just woke is often
    /// queued on this very processor (the kernel places a woken thread near its waker), and a spin
    /// made of pauses alone held it off for the whole spin: a round trip from a thread blocked in
    /// `wait()` to a pool worker and back took 8–20 µs, where with the yields it takes 1–1.5 µs.
    static let pausesPerYield = 16

    init() {
        word = .allocate(capacity: 1)
        word.initialize(to: Parker.empty)
    }

    deinit { word.deallocate() }

    /// Blocks until `unpark` is called, or until `timeoutNanoseconds` pass (negative, or past what
    /// the clock counts: no limit).
    /// Returns `false` when the time ran out without a token. May return early (spuriously):
    /// callers re-check their condition in a loop.
    ///
    /// - Parameter yielding: whether the spin yields the processor now and then (see
    ///   `pausesPerYield`). An idle pool worker's does not: with yields there, `Future.run`
    ///   throughput on the two workers fell by a quarter (147 to 185 ns an item), and the round
    ///   trip kept its gain without them.
    /// - Parameter spins: how many polls the spin makes; 0 for a thread that has spun already
    ///   (a pool worker that has just searched for work).
    @discardableResult
    func park(timeoutNanoseconds: Int64 = -1, yielding: Bool = true, spinning spins: Int = Parker.spinIterations)
        -> Bool
    {
        // From the call, not from the end of the spin, which on a busy machine can take a while. A
        // deadline past what the clock counts is no limit: wrapped, it was in the past, and the
        // time left below overflowed.
        let (end, overflow) = tm_monotonic_nanoseconds().addingReportingOverflow(max(0, timeoutNanoseconds))
        let timeoutNanoseconds = overflow ? -1 : timeoutNanoseconds
        let deadline = timeoutNanoseconds < 0 ? Int64.max : end
        for iteration in 0..<spins {
            if tm_atomic_compare_exchange_u32(word, Parker.notified, Parker.empty) != 0 { return true }
            if yielding && iteration % Parker.pausesPerYield == Parker.pausesPerYield - 1 {
                sched_yield()
            } else {
                tm_spin_pause()
            }
        }
        if tm_atomic_compare_exchange_u32(word, Parker.empty, Parker.parked) == 0 {
            // The only other value is `notified`: consume it.
            _ = tm_atomic_exchange_u32(word, Parker.empty)
            return true
        }
        while true {
            let remaining = timeoutNanoseconds < 0 ? -1 : max(0, deadline - tm_monotonic_nanoseconds())
            _ = tm_futex_wait(word, Parker.parked, remaining)
            if tm_atomic_compare_exchange_u32(word, Parker.notified, Parker.empty) != 0 { return true }
            if timeoutNanoseconds >= 0 && tm_monotonic_nanoseconds() >= deadline {
                if tm_atomic_compare_exchange_u32(word, Parker.parked, Parker.empty) != 0 { return false }
                // A token arrived at the last moment.
                _ = tm_atomic_exchange_u32(word, Parker.empty)
                return true
            }
        }
    }

    /// Wakes the parked thread, or lets its next `park` return at once.
    func unpark() {
        if tm_atomic_exchange_u32(word, Parker.notified) == Parker.parked {
            _ = tm_futex_wake(word, 1)
        }
    }
}

// All state is in the futex word, touched only through atomic operations.
extension Parker: @unchecked Sendable {}
