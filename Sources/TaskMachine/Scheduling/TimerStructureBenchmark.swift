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
/// let expired = wheel.expireAcrossSpan()  // 100_000
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
    /// How far ahead `scheduleTogether()` makes every timer due, in ticks: 1 s, as for a burst of
    /// delays made a second before they are all due. Far enough that the wheel files them a level
    /// up and cascades them when the time comes, as it does the delays of the timer queue's burst.
    public static let togetherTicks: UInt64 = 1_000

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
    /// The tick `scheduleTogether()` last made every timer due at.
    private var togetherTick: UInt64 = 0

    /// Makes `timerCount` timers, plus one, for `structure`; none is linked yet.
    ///
    /// - Parameters:
    ///   - structure: the structure to drive.
    ///   - timerCount: how many timers `spreadTimers()` and `scheduleTogether()` link.
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

    /// Links every timer at one tick, `togetherTicks` ahead; `expireTogether()` expires them.
    public func scheduleTogether() {
        switch structure {
        case .wheel: scheduleTogether(in: &wheel)
        case .lists: scheduleTogether(in: &lists)
        }
    }

    /// Makes the timer thread's passes up to the tick `scheduleTogether()` chose; returns the
    /// timers that expired (all of them).
    public func expireTogether() -> Int {
        switch structure {
        case .wheel: passes(&wheel, through: togetherTick)
        case .lists: passes(&lists, through: togetherTick)
        }
    }

    /// Makes the timer thread's passes before the tick `scheduleTogether()` chose, and none at it:
    /// what the structure does ahead of the deadline (the wheel cascades the timers to level 0 when
    /// their slot of level 1 starts, up to 63 ticks early), so that `expireTogether()` then makes
    /// only the pass at the deadline, the one that decides how late the timers fire. Returns the
    /// timers that expired (none).
    public func prepareForTogether() -> Int {
        precondition(togetherTick > 0, "scheduleTogether() first")
        switch structure {
        case .wheel: return passes(&wheel, through: togetherTick - 1)
        case .lists: return passes(&lists, through: togetherTick - 1)
        }
    }

    /// Makes the timer thread's passes across the next `spanTicks` ticks; returns the timers that
    /// expired (after `spreadTimers()`, all of them).
    public func expireAcrossSpan() -> Int {
        switch structure {
        case .wheel: passes(&wheel, through: wheel.elapsed + TimerStructureBenchmark.spanTicks)
        case .lists: passes(&lists, through: lists.elapsed + TimerStructureBenchmark.spanTicks)
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

    private func scheduleTogether<S: TimerStructure>(in structure: inout S) {
        precondition(structure.count == 0, "the timers are linked already")
        let tick = structure.elapsed + TimerStructureBenchmark.togetherTicks
        togetherTick = tick
        for index in 0..<timerCount {
            let inserted = structure.insert(nodes[index], at: tick)
            precondition(inserted, "a timer after elapsed is linked")
        }
    }

    /// The passes a timer thread makes up to the tick `end`: it sleeps until the structure's next
    /// deadline, and advances to it (never late, as no clock runs here).
    private func passes<S: TimerStructure>(_ structure: inout S, through end: UInt64) -> Int {
        var expired = 0
        while let next = structure.nextDeadline, next <= end {
            structure.advance(to: next, spent: &spent) { expired += $0.count }
            spent.removeAll(keepingCapacity: true)
        }
        return expired
    }
}

@available(*, unavailable)
extension TimerStructureBenchmark: Sendable {}
