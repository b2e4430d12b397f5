/// The timing wheel beside .NET's timer lists, over the same real timers, for the benchmarks.
///
/// It makes its timers up front (`TimerEntry` objects on a queue of its own, whose thread never
/// starts) and drives one structure, `TimingWheel` or `TimerLists`, directly: no lock, no clock,
/// no thread. An expired timer is counted and left alone, so no timer ever runs code. Neither
/// structure holds references (`TimerQueue` retains what it links); this object keeps every timer
/// alive as long as it lives, and frees them with it.
///
/// ```swift
/// let wheel = TimerStructureBenchmark(.wheel, timerCount: 100_000)
/// wheel.spreadTimers()
/// let expired = wheel.advanceAcrossSpan()  // 100_000
/// ```
@_spi(Benchmarks) public final class TimerStructureBenchmark {
    /// A timer structure.
    public enum Structure: Sendable {
        /// `TimingWheel`, the hierarchical wheel the timer queue uses.
        case wheel
        /// `TimerLists`, .NET's short and long lists.
        case lists
    }

    /// The ticks (milliseconds) that `spreadTimers()` spreads the timers over: 10 s.
    public static let spanTicks: UInt64 = 10_000

    /// The structure this object drives.
    public let structure: Structure
    /// The timers it has, besides the one `insertAndRemove` uses.
    public let timerCount: Int

    /// The timers, and last the one `insertAndRemove` inserts and removes.
    private let entries: [TimerEntry]
    /// The same timers as nodes, made once.
    private let nodes: [TimerNode]
    private var wheel = TimingWheel()
    private var lists = TimerLists()
    /// Arrays a structure emptied, freed after each pass as the timer thread frees them.
    private var spent: [[TimerNode]] = []
    /// Where the next `insertAndRemove` starts in its round of ticks.
    private var probeStep: UInt64 = 0

    /// Makes `timerCount` timers, plus one, for `structure`; none is linked yet.
    ///
    /// - Parameters:
    ///   - structure: the structure to drive.
    ///   - timerCount: how many timers `spreadTimers()` and `scheduleAtOneTick()` link.
    public init(_ structure: Structure, timerCount: Int) {
        precondition(timerCount > 0, "at least one timer")
        self.structure = structure
        self.timerCount = timerCount
        // A queue of its own, never scheduled on, so its thread never starts; the deadline is never
        // read (the ticks are set here).
        let queue = TimerQueue(threadName: "timer structure")
        entries = (0...timerCount).map { _ in TimerEntry(deadline: .max, queue: queue) }
        nodes = entries.map { TimerNode($0) }
    }

    /// Timers linked in the structure.
    public var pendingCount: Int {
        switch structure {
        case .wheel: wheel.count
        case .lists: lists.count
        }
    }

    /// The heap the structure keeps for the timers linked now: its arrays' capacities times 8
    /// bytes, plus 32 for each array's header. The timers themselves, the same for both
    /// structures, are not counted.
    public var heapBytes: Int {
        switch structure {
        case .wheel: wheel.heapBytes
        case .lists: lists.heapBytes
        }
    }

    /// Links every timer, spread evenly over the next `spanTicks` ticks, one every
    /// `spanTicks / timerCount` ticks: 10 a tick for 100,000 timers.
    public func spreadTimers() {
        switch structure {
        case .wheel: spread(in: &wheel)
        case .lists: spread(in: &lists)
        }
    }

    /// Inserts one more timer and removes it again, `repetitions` times, each time at another tick
    /// of the next `spanTicks`, while whatever is linked stays linked; returns the removals (all of
    /// them).
    public func insertAndRemove(repetitions: Int) -> Int {
        switch structure {
        case .wheel: insertAndRemove(in: &wheel, repetitions: repetitions)
        case .lists: insertAndRemove(in: &lists, repetitions: repetitions)
        }
    }

    /// Links every timer at the next tick; `expireAtOneTick()` expires them.
    public func scheduleAtOneTick() {
        switch structure {
        case .wheel: scheduleAtOneTick(in: &wheel)
        case .lists: scheduleAtOneTick(in: &lists)
        }
    }

    /// Advances one tick; returns the timers that expired.
    public func expireAtOneTick() -> Int {
        switch structure {
        case .wheel: advance(&wheel, ticks: 1)
        case .lists: advance(&lists, ticks: 1)
        }
    }

    /// Advances `spanTicks` ticks, one at a time, as a timer thread woken every millisecond would;
    /// returns the timers that expired (after `spreadTimers()`, all of them).
    public func advanceAcrossSpan() -> Int {
        switch structure {
        case .wheel: advance(&wheel, ticks: TimerStructureBenchmark.spanTicks)
        case .lists: advance(&lists, ticks: TimerStructureBenchmark.spanTicks)
        }
    }

    // MARK: Operations, on either structure

    private func spread<S: TimerStructure>(in structure: inout S) {
        precondition(structure.count == 0, "the timers are linked already")
        let start = structure.elapsed + 1
        let count = UInt64(timerCount)
        for index in 0..<timerCount {
            let tick = start + UInt64(index) * TimerStructureBenchmark.spanTicks / count
            let inserted = structure.insert(nodes[index], at: tick)
            precondition(inserted, "a timer after elapsed is linked")
        }
    }

    private func insertAndRemove<S: TimerStructure>(in structure: inout S, repetitions: Int) -> Int {
        let probe = nodes[timerCount]
        let start = structure.elapsed + 1
        var removed = 0
        var spent: [TimerNode] = []
        for _ in 0..<repetitions {
            // 7,919 is a prime, so the steps go round every tick of the span before repeating.
            probeStep = (probeStep + 7_919) % TimerStructureBenchmark.spanTicks
            _ = structure.insert(probe, at: start + probeStep)
            if structure.remove(probe, spent: &spent) { removed += 1 }
        }
        return removed
    }

    private func scheduleAtOneTick<S: TimerStructure>(in structure: inout S) {
        precondition(structure.count == 0, "the timers are linked already")
        let tick = structure.elapsed + 1
        for index in 0..<timerCount {
            let inserted = structure.insert(nodes[index], at: tick)
            precondition(inserted, "a timer after elapsed is linked")
        }
    }

    private func advance<S: TimerStructure>(_ structure: inout S, ticks: UInt64) -> Int {
        let start = structure.elapsed
        var expired = 0
        for tick in start + 1...start + ticks {
            structure.advance(to: tick, spent: &spent) { expired += $0.count }
            spent.removeAll(keepingCapacity: true)
        }
        return expired
    }
}

@available(*, unavailable)
extension TimerStructureBenchmark: Sendable {}
