import CTaskMachine

/// The monotonic clock the runtime's timers use.
enum Clock {
    /// Now, in nanoseconds since an arbitrary start.
    static var now: Int64 { tm_monotonic_nanoseconds() }

    /// The deadline `delay` from now, saturating instead of overflowing.
    static func deadline(after delay: Duration) -> Int64 {
        let (sum, overflow) = now.addingReportingOverflow(delay.totalNanoseconds)
        return overflow ? .max : sum
    }
}
