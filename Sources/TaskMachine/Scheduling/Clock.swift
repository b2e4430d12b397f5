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

    /// `instant` on this clock, saturating.
    ///
    /// `ContinuousClock` counts time the system spends suspended (on Linux it is
    /// `CLOCK_BOOTTIME`) and this clock does not, so the two are compared afresh at each call:
    /// this clock is read on both sides of a reading of the continuous one, again while the two
    /// are more than 2 µs apart (a preemption between them would shift the result by its length).
    /// Equal instants convert to within a few microseconds, so they share a 1 ms tick but for
    /// those next to a tick's edge.
    static func nanoseconds(of instant: ContinuousClock.Instant) -> Int64 {
        var before = now
        var continuous = ContinuousClock.now
        var after = now
        var attempts = 1
        while after - before > 2_000 && attempts < 8 {
            before = now
            continuous = ContinuousClock.now
            after = now
            attempts += 1
        }
        let reference = before + (after - before) / 2
        let (sum, overflow) = reference.addingReportingOverflow((instant - continuous).totalNanoseconds)
        if overflow { return instant > continuous ? .max : .min }
        return sum
    }
}
