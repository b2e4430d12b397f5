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

    /// One reading of `ContinuousClock` and one of this clock, taken back to back the first time
    /// an instant is converted.
    private static let continuousReference = (instant: ContinuousClock.now, nanoseconds: now)

    /// `instant` on this clock, saturating. Every conversion goes through the same pair of
    /// readings, so instants that are equal convert equally, however far apart the calls are.
    static func nanoseconds(of instant: ContinuousClock.Instant) -> Int64 {
        let reference = continuousReference
        let (sum, overflow) = reference.nanoseconds.addingReportingOverflow(
            (instant - reference.instant).totalNanoseconds)
        if overflow { return instant > reference.instant ? .max : .min }
        return sum
    }
}
