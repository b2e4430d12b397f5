import CAllocationCounter

/// Counts the heap allocations the calling thread makes, through the allocator entry points of
/// the `CAllocationCounter` target.
enum AllocationMeter {
    /// Whether counting works in this process: `false` when the process's malloc is not the
    /// counting one (then every count would read 0, which would be a lie).
    static var isActive: Bool { tm_allocations_interposed() != 0 }

    /// The allocations `body` makes on this thread per call, averaged over `iterations` calls after
    /// one uncounted warm-up call (the first call of a generic function may allocate its type
    /// metadata once; that is not a per-call cost).
    static func allocationsPerCall(iterations: Int = 1_000, _ body: () throws -> Void) rethrows -> Double {
        try body()
        tm_allocations_begin()
        defer { _ = tm_allocations_end(nil) }
        for _ in 0..<iterations { try body() }
        return Double(tm_allocations_end(nil)) / Double(iterations)
    }

    /// The allocations `body` makes on this thread in one call.
    static func allocations(_ body: () throws -> Void) rethrows -> UInt64 {
        tm_allocations_begin()
        defer { _ = tm_allocations_end(nil) }
        try body()
        return tm_allocations_end(nil)
    }
}

extension Int {
    /// `10,000`: thousands grouped with commas, as the tour's prose writes them.
    var groupedText: String {
        let digits = String(magnitude)
        var grouped = ""
        for (offset, digit) in digits.enumerated() {
            if offset > 0 && (digits.count - offset) % 3 == 0 { grouped.append(",") }
            grouped.append(digit)
        }
        return self < 0 ? "-" + grouped : grouped
    }
}

extension Double {
    /// `0`, `1`, or `2.5`: a count per call, without a trailing `.0`.
    var countText: String {
        rounded() == self ? String(Int(self)) : String(self)
    }
}
