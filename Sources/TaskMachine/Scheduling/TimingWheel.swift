/// A hierarchical timing wheel of millisecond ticks: O(1) insert and remove, and an advance that
/// costs O(1) per timer per level it passes through, and O(1) per expiring slot.
///
/// The layout follows tokio's (`tokio/src/runtime/time/wheel/`): six levels of 64 slots, a slot
/// of level `n` spanning 64^n ticks, so the levels cover 64 ms, 4 s, 4.4 min, 4.7 h, 12 days and
/// 2.2 years. A timer goes to the lowest level where its tick and `elapsed` differ only in that
/// level's six bits or below; when time reaches a slot of a higher level, its timers cascade to
/// lower ones, and the timers of a level-0 slot expire. Each level keeps a 64-bit mask of its
/// non-empty slots, so finding the next deadline is a rotate and a count of trailing zeros.
///
/// Unlike tokio, a timer beyond the wheel's span (it and `elapsed` differ in bit 36 or above,
/// such as `Duration.seconds(Int64.max)`) goes to one unordered "far" list, looked at once each
/// time `elapsed` enters a new 2^36-tick block, instead of wrapping round the top level.
///
/// Each slot is an array of timers, not a linked list: a timer knows its place and its index
/// there (`TimerLinks`), so removing a cancelled one moves the slot's last timer into its index.
/// Every timer of a level-0 slot is due at the slot's one tick, so expiring the slot hands its
/// whole array over without touching a timer. That is what makes many timers due together cheap:
/// walking a list of 100,000 timers scattered over the heap is 100,000 cache misses one after the
/// other, on the timer thread, under the queue's lock; an array lets the pool's workers split the
/// timers by index and the CPU fetch many at once. A cascade reads each timer's tick, from
/// addresses it knows ahead, for the same reason.
///
/// A timer that has expired still carries its old place and index; it counts as linked only while
/// its tick is after `elapsed` (every timer due by `elapsed` has left the wheel).
///
/// A pure data structure: no locks, no clock. `TimerQueue` holds it under its lock.
struct TimingWheel {
    static let levelCount = 6
    static let slotBits: UInt64 = 6
    static let slotsPerLevel = 64
    /// Ticks the levels span: 64^6 ms, about 2.2 years.
    static let span: UInt64 = 1 << 36
    /// The place of the far list, after the 6 × 64 slots.
    static let farPlace = UInt16(levelCount * slotsPerLevel)
    /// The place of a timer that is in no slot.
    static let nowhere = UInt16.max
    /// A slot emptied by removals keeps up to this many places for the next timers; a larger
    /// array is given back.
    static let keptCapacity = 1_024
    /// The places a slot's array gets when its first timer comes: a slot that fills with the
    /// timers of one millisecond, or with those a cascade brings down, grows once for up to 16
    /// rather than at 1, 3, 5 and 9. What it costs in memory is bounded by the slots, not by the
    /// timers: 385 arrays of 160 bytes at most, 60 KB, for slots holding a timer or two. A slot
    /// holding many steps through other capacities (17, 35, 70, … rather than 1, 2, 4, …): 100,000
    /// timers due together keep about a byte more each, 123 rather than 122.
    static let firstCapacity = 16

    /// Ticks the wheel has processed: every timer due at or before it has expired.
    private(set) var elapsed: UInt64 = 0
    /// Timers linked in the wheel.
    private(set) var count = 0
    /// The timers of each slot, then the far list.
    private var slots = [[TimerNode]](repeating: [], count: Int(farPlace) + 1)
    /// Per level, bit `s` set when slot `s` is not empty.
    private var occupied = [UInt64](repeating: 0, count: levelCount)

    /// Links `node`, due at `tick`. Returns `false`, linking nothing, when `tick` has passed: the
    /// caller fires the timer itself.
    mutating func insert(_ node: TimerNode, at tick: UInt64) -> Bool {
        guard tick > elapsed else { return false }
        node.tick = tick
        link(node, at: place(for: tick))
        count += 1
        return true
    }

    /// Unlinks `node` if it is in the wheel; returns whether it was. A large array the removal
    /// empties goes to `spent`, for the caller to free once it has let go of its lock, as in
    /// `advance`.
    mutating func remove(_ node: TimerNode, spent: inout [TimerNode]) -> Bool {
        guard contains(node) else { return false }
        unlink(node, spent: &spent)
        count -= 1
        return true
    }

    /// The tick at which `advance` next has work: a slot to expire or cascade, or the far list to
    /// look at. `nil` when the wheel is empty.
    var nextDeadline: UInt64? { nextExpiration()?.deadline }

    /// Moves time forward to `now` and hands the timers due by then to `expire`, in deadline order:
    /// an array at a time, all of one tick. `expire` may let them go: the wheel does not touch
    /// them again. Arrays the wheel has emptied go to `spent`, for the caller to free once it has
    /// let go of its lock (a large free can take the allocator long).
    mutating func advance(to now: UInt64, spent: inout [[TimerNode]], _ expire: ([TimerNode]) -> Void) {
        while let expiration = nextExpiration(), expiration.deadline <= now {
            elapsed = expiration.deadline
            let place = Int(expiration.place)
            // Take the whole array first: a far timer may go straight back to the far list.
            var nodes: [TimerNode] = []
            swap(&nodes, &slots[place])
            markEmpty(place)
            if place < TimingWheel.slotsPerLevel {
                // A level-0 slot spans one tick, the one due now.
                assert(nodes.allSatisfy { $0.tick == elapsed }, "a level-0 slot holds one tick")
                count -= nodes.count
                expire(nodes)
                continue
            }
            var due: [TimerNode] = []
            for node in nodes {
                if node.tick <= elapsed {
                    due.append(node)
                } else {
                    link(node, at: self.place(for: node.tick))
                }
            }
            if !due.isEmpty {
                count -= due.count
                expire(due)
            }
            spent.append(nodes)
        }
        if now > elapsed { elapsed = now }
    }

    // MARK: Footprint

    /// The heap the wheel keeps for its timers: the array of slots, each slot's array and the
    /// occupancy masks. The timers themselves are not counted. For `TimerStructureBenchmark`.
    var heapBytes: Int {
        let slotArrays = slots.reduce(0) { $0 + TimingWheel.heapBytes(of: $1) }
        return TimingWheel.heapBytes(of: slots) + slotArrays + TimingWheel.heapBytes(of: occupied)
    }

    /// The heap an array keeps: its header (an object's two words, then its count and capacity)
    /// and its capacity's elements; nothing for an empty array that has no storage. The allocator's
    /// own rounding is not counted.
    static func heapBytes<Element>(of array: [Element]) -> Int {
        array.capacity == 0 ? 0 : 32 + array.capacity * MemoryLayout<Element>.stride
    }

    // MARK: Slots

    /// The slot a timer due at `tick` belongs in, given `elapsed`.
    private func place(for tick: UInt64) -> UInt16 {
        let differing = elapsed ^ tick
        guard differing < TimingWheel.span else { return TimingWheel.farPlace }
        // The highest bit where tick and elapsed differ picks the level; the low six bits are
        // masked in so that a difference in them alone means level 0.
        let significant = UInt64(63 - (differing | 63).leadingZeroBitCount)
        let level = significant / TimingWheel.slotBits
        let slot = (tick >> (level * TimingWheel.slotBits)) & 63
        return UInt16(level * 64 + slot)
    }

    private mutating func link(_ node: TimerNode, at place: UInt16) {
        node.place = place
        if slots[Int(place)].capacity == 0 { slots[Int(place)].reserveCapacity(TimingWheel.firstCapacity) }
        node.index = UInt32(truncatingIfNeeded: slots[Int(place)].count)
        slots[Int(place)].append(node)
        if place != TimingWheel.farPlace {
            occupied[Int(place) / TimingWheel.slotsPerLevel] |= 1 << UInt64(Int(place) % TimingWheel.slotsPerLevel)
        }
    }

    private mutating func unlink(_ node: TimerNode, spent: inout [TimerNode]) {
        let place = Int(node.place)
        let index = Int(node.index)
        assert(slots[place][index] == node, "a timer's place and index find it")
        let last = slots[place].removeLast()
        if last != node {
            slots[place][index] = last
            last.index = UInt32(truncatingIfNeeded: index)
        }
        node.place = TimingWheel.nowhere
        if slots[place].isEmpty {
            if slots[place].capacity > TimingWheel.keptCapacity { swap(&spent, &slots[place]) }
            markEmpty(place)
        }
    }

    private mutating func markEmpty(_ place: Int) {
        guard place != Int(TimingWheel.farPlace) else { return }
        occupied[place / TimingWheel.slotsPerLevel] &= ~(1 << UInt64(place % TimingWheel.slotsPerLevel))
    }

    /// The first non-empty slot in time and the tick it is due.
    ///
    /// Every timer of level `n` shares all bits above level `n` with `elapsed`, and its slot comes
    /// strictly after `elapsed`'s slot of that level (a slot is processed as soon as `elapsed`
    /// reaches its start), so the lowest non-empty level holds the earliest slot, and the next
    /// occupied slot is found without wrapping.
    private func nextExpiration() -> (place: UInt16, deadline: UInt64)? {
        for level in 0..<TimingWheel.levelCount where occupied[level] != 0 {
            let shift = UInt64(level) * TimingWheel.slotBits
            let current = (elapsed >> shift) & 63
            let ahead = occupied[level] >> current
            assert(ahead & 1 == 0 && ahead != 0, "a slot at or before elapsed was left unprocessed")
            let slot = current + UInt64(ahead.trailingZeroBitCount)
            let levelStart = elapsed & ~((1 << (shift + TimingWheel.slotBits)) - 1)
            return (UInt16(level * 64) + UInt16(slot), levelStart + slot << shift)
        }
        if !slots[Int(TimingWheel.farPlace)].isEmpty {
            // The start of the next 2^36-tick block: some far timers may fit in the levels then.
            return (TimingWheel.farPlace, (elapsed | (TimingWheel.span - 1)) + 1)
        }
        return nil
    }
}
