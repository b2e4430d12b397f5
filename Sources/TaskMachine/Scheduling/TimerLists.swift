/// .NET's timer queue as a data structure: two unordered lists, "short" and "long", O(1) insert and
/// remove, and a firing pass that walks the whole short list every time it runs.
///
/// The design is that of `TimerQueue` in .NET's `System.Threading.Timer` (Timer.cs). A timer due at
/// or before `threshold` goes to the short list, any other to the long one. Each pass of the timer
/// thread walks the short list, handing over what is due and finding the earliest of the rest; once
/// time reaches `threshold`, it also walks the long list, hands over what is due there, moves what
/// is now due within `shortSpan` ticks to the short list, and sets `threshold` to `shortSpan` ticks
/// ahead. So no timer of the long list is due at or before `threshold`, and a pass before then
/// need not look at the long list at all. The bet, as .NET's comments put it, is that most timers
/// are timeouts that are cancelled long before they fire: insert and cancel must be cheap, and a
/// linear walk when firing is affordable.
///
/// .NET keeps one such queue per processor, each under its own lock, to spread the contention of
/// many threads creating and cancelling timers; this is one queue alone, which is all a
/// single-threaded comparison of the data structures can tell apart (it sees no lock).
///
/// Each list is an array of timers, not a linked list, with the wheel's bookkeeping (`TimerLinks`):
/// a timer's place is its list and its index is its position there, and removing one moves the
/// list's last timer into its index. So both structures are measured over the same nodes, with the
/// same cost of an unlink, and differ only in how they find what is due. Like the wheel, it hands
/// expired timers over in deadline order, an array of one tick at a time, and an expired timer
/// keeps its old place and index: it counts as linked only while its tick is after `elapsed`.
///
/// A pure data structure: no locks, no clock. Production keeps the wheel (`TimerQueue`); this one
/// exists to measure it against (`TimerStructureBenchmark`).
struct TimerLists {
    /// How far ahead of a walk of the long list the short list reaches, in ticks: .NET's
    /// `ShortTimersThresholdMilliseconds`, 333 ms, with the wheel's 1 ms tick.
    static let shortSpan: UInt64 = 333
    /// The place of a timer in the short list.
    static let shortPlace: UInt16 = 0
    /// The place of a timer in the long list.
    static let longPlace: UInt16 = 1
    /// A list emptied by removals or a pass keeps up to this many places, as a slot of the wheel
    /// does; a larger array is given back.
    static let keptCapacity = TimingWheel.keptCapacity

    /// Ticks processed: every timer due at or before it has expired.
    private(set) var elapsed: UInt64 = 0
    /// Timers linked in either list.
    private(set) var count = 0
    /// Timers due at or before it go to the short list; every timer of the long list is due after
    /// it. Set to `shortSpan` ticks ahead at each walk of the long list.
    private(set) var threshold: UInt64 = shortSpan
    private var shortTimers: [TimerNode] = []
    private var longTimers: [TimerNode] = []
    /// No timer of the short list is due before it: the earliest found by the last pass, lowered by
    /// inserts. Removals leave it as it is, so it may be early, as .NET's native timer may fire early
    /// and find nothing due. `.max` when the list is empty.
    private var shortDue = UInt64.max
    /// The same for the long list, as of its last walk.
    private var longDue = UInt64.max

    /// Links `node`, due at `tick`. Returns `false`, linking nothing, when `tick` has passed: the
    /// caller fires the timer itself.
    mutating func insert(_ node: TimerNode, at tick: UInt64) -> Bool {
        guard tick > elapsed else { return false }
        node.tick = tick
        if tick <= threshold {
            link(node, into: TimerLists.shortPlace)
            shortDue = min(shortDue, tick)
        } else {
            link(node, into: TimerLists.longPlace)
            longDue = min(longDue, tick)
        }
        count += 1
        return true
    }

    /// Unlinks `node` if it is linked; returns whether it was. A large array the removal empties
    /// goes to `spent`, for the caller to free once it has let go of its lock, as in `advance`.
    mutating func remove(_ node: TimerNode, spent: inout [TimerNode]) -> Bool {
        guard contains(node) else { return false }
        let index = Int(node.index)
        let emptied: Bool
        if node.place == TimerLists.shortPlace {
            assert(shortTimers[index] == node, "a timer's place and index find it")
            TimerLists.unlink(at: index, from: &shortTimers)
            emptied = shortTimers.isEmpty
        } else {
            assert(longTimers[index] == node, "a timer's place and index find it")
            TimerLists.unlink(at: index, from: &longTimers)
            emptied = longTimers.isEmpty
        }
        if emptied, let array = takeIfEmptied(node.place) { spent = array }
        node.place = TimingWheel.nowhere
        count -= 1
        return true
    }

    /// The tick of the next pass that may find a timer due: the earliest deadline, or earlier after
    /// removals. `nil` when no timer is linked.
    var nextDeadline: UInt64? {
        count == 0 ? nil : min(shortDue, longDue)
    }

    /// Moves time forward to `now` and hands the timers due by then to `expire`, in deadline order:
    /// an array at a time, all of one tick. `expire` may let them go: the lists do not touch them
    /// again. Arrays emptied here go to `spent`, for the caller to free once it has let go of its
    /// lock.
    ///
    /// One pass, as .NET's `FireNextTimers`: the whole short list, then the long list if `now` has
    /// reached `threshold`. Nothing is walked while `now` is before `nextDeadline`, as .NET's timer
    /// thread sleeps until then.
    mutating func advance(to now: UInt64, spent: inout [[TimerNode]], _ expire: ([TimerNode]) -> Void) {
        guard now > elapsed else { return }
        guard let next = nextDeadline, next <= now else {
            elapsed = now
            return
        }
        var due = DueTimers()
        shortDue = walk(TimerLists.shortPlace, now: now, movingUpTo: 0, into: &due)
        if now >= threshold {
            threshold = now + TimerLists.shortSpan
            longDue = walk(TimerLists.longPlace, now: now, movingUpTo: threshold, into: &due)
        }
        if let array = takeIfEmptied(TimerLists.shortPlace) { spent.append(array) }
        if let array = takeIfEmptied(TimerLists.longPlace) { spent.append(array) }
        elapsed = now
        count -= due.nodes.count
        guard !due.nodes.isEmpty else { return }
        if due.earliest == due.latest {
            expire(due.nodes)
            return
        }
        // Due at several ticks (a pass that came late): sort this batch only, and hand over each
        // tick's timers as an array of its own.
        var nodes = due.nodes
        nodes.sort { $0.tick < $1.tick }
        var start = 0
        while start < nodes.count {
            let tick = nodes[start].tick
            var end = start + 1
            while end < nodes.count && nodes[end].tick == tick { end += 1 }
            expire(Array(nodes[start..<end]))
            start = end
        }
        spent.append(nodes)
    }

    /// The heap the lists keep for their timers: each array's places and its header. The timers
    /// themselves are not counted.
    var heapBytes: Int {
        TimingWheel.heapBytes(of: shortTimers) + TimingWheel.heapBytes(of: longTimers)
    }

    // MARK: Lists

    /// The timers a pass found due, and the earliest and latest of their ticks.
    private struct DueTimers {
        var nodes: [TimerNode] = []
        var earliest = UInt64.max
        var latest: UInt64 = 0

        mutating func append(_ node: TimerNode, tick: UInt64) {
            nodes.append(node)
            earliest = min(earliest, tick)
            latest = max(latest, tick)
        }
    }

    /// Walks one list: takes what is due by `now` out into `due`, moves what is due by `moveLimit`
    /// to the short list (a walk of the long list), and returns the earliest tick of what is left.
    private mutating func walk(
        _ place: UInt16, now: UInt64, movingUpTo moveLimit: UInt64, into due: inout DueTimers
    ) -> UInt64 {
        // The list is taken out while it is walked, so that moving a timer can append to the other.
        var list: [TimerNode] = []
        swapList(place, with: &list)
        defer { swapList(place, with: &list) }
        var earliest = UInt64.max
        var index = 0
        while index < list.count {
            let node = list[index]
            let tick = node.tick
            if tick <= now {
                due.append(node, tick: tick)
                // The last timer moves into `index`, to be looked at next.
                TimerLists.unlink(at: index, from: &list)
            } else if tick <= moveLimit {
                TimerLists.unlink(at: index, from: &list)
                link(node, into: TimerLists.shortPlace)
                shortDue = min(shortDue, tick)
            } else {
                earliest = min(earliest, tick)
                index += 1
            }
        }
        return earliest
    }

    private mutating func swapList(_ place: UInt16, with list: inout [TimerNode]) {
        if place == TimerLists.shortPlace {
            swap(&list, &shortTimers)
        } else {
            swap(&list, &longTimers)
        }
    }

    /// When a list is empty, forgets its earliest tick, and takes its array away if it is large:
    /// an emptied list keeps up to `keptCapacity` places, as a slot of the wheel does.
    private mutating func takeIfEmptied(_ place: UInt16) -> [TimerNode]? {
        var list: [TimerNode] = []
        swapList(place, with: &list)
        if list.isEmpty {
            if place == TimerLists.shortPlace { shortDue = .max } else { longDue = .max }
            // The list stays without an array.
            if list.capacity > TimerLists.keptCapacity { return list }
        }
        swapList(place, with: &list)
        return nil
    }

    private mutating func link(_ node: TimerNode, into place: UInt16) {
        node.place = place
        if place == TimerLists.shortPlace {
            node.index = UInt32(truncatingIfNeeded: shortTimers.count)
            shortTimers.append(node)
        } else {
            node.index = UInt32(truncatingIfNeeded: longTimers.count)
            longTimers.append(node)
        }
    }

    /// Takes the timer at `index` out of `list`, moving the last one into its place.
    private static func unlink(at index: Int, from list: inout [TimerNode]) {
        let last = list.removeLast()
        if index < list.count {
            list[index] = last
            last.index = UInt32(truncatingIfNeeded: index)
        }
    }
}
