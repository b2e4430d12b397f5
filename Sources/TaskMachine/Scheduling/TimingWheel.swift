/// A hierarchical timing wheel of millisecond ticks: O(1) insert and remove, and an advance that
/// costs O(1) per timer per level it passes through.
///
/// The layout follows tokio's (`tokio/src/runtime/time/wheel/`): six levels of 64 slots, a slot
/// of level `n` spanning 64^n ticks, so the levels cover 64 ms, 4 s, 4.4 min, 4.7 h, 12 days and
/// 2.2 years. A timer goes to the lowest level where its tick and `elapsed` differ only in that
/// level's six bits or below; when time reaches a slot of a higher level, its timers cascade to
/// lower ones, and the timers of a level-0 slot expire. Each level keeps a 64-bit mask of its
/// non-empty slots, so finding the next deadline is a rotate and a count of trailing zeros.
///
/// Unlike tokio, a timer beyond the wheel's span (it and `elapsed` differ above bit 36, such as
/// `Duration.seconds(Int64.max)`) goes to one unordered "far" list, looked at once each time
/// `elapsed` enters a new 2^36-tick block, instead of wrapping round the top level.
///
/// Each slot is an intrusive doubly linked list threaded through the timers' own `TimerLinks`,
/// so removing a cancelled timer is an unlink, and the wheel's memory is fixed: 385 list heads and
/// six masks, about 3 KB, whatever the number of timers.
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
    /// The place of a timer that is in no list.
    static let nowhere = UInt16.max

    /// Ticks the wheel has processed: every timer due at or before it has expired.
    private(set) var elapsed: UInt64 = 0
    /// Timers linked in the wheel.
    private(set) var count = 0
    /// The heads of the slot lists, then the far list.
    private var heads = [TimerNode](repeating: .none, count: Int(farPlace) + 1)
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

    /// Unlinks `node` if it is in the wheel; returns whether it was.
    mutating func remove(_ node: TimerNode) -> Bool {
        let place = node.place
        guard place != TimingWheel.nowhere else { return false }
        unlink(node, from: place)
        count -= 1
        return true
    }

    /// The tick at which `advance` next has work: a slot to expire or cascade, or the far list to
    /// look at. `nil` when the wheel is empty.
    var nextDeadline: UInt64? { nextExpiration()?.deadline }

    /// Moves time forward to `now` and hands each timer due by then to `expire`, in deadline order,
    /// unlinked (its place `nowhere`, its `next` empty). `expire` may let the timer go: the wheel
    /// does not touch it after the call.
    mutating func advance(to now: UInt64, _ expire: (TimerNode) -> Void) {
        while let expiration = nextExpiration(), expiration.deadline <= now {
            elapsed = expiration.deadline
            // Take the whole list first: a far timer may go straight back to the far list.
            var node = heads[Int(expiration.place)]
            heads[Int(expiration.place)] = .none
            if expiration.place != TimingWheel.farPlace {
                occupied[Int(expiration.place) / TimingWheel.slotsPerLevel] &=
                    ~(1 << UInt64(Int(expiration.place) % TimingWheel.slotsPerLevel))
            }
            while node != .none {
                let next = node.next
                if node.tick <= elapsed {
                    node.place = TimingWheel.nowhere
                    node.next = .none
                    count -= 1
                    expire(node)
                } else {
                    link(node, at: place(for: node.tick))
                }
                node = next
            }
        }
        if now > elapsed { elapsed = now }
    }

    // MARK: Slots

    /// The list a timer due at `tick` belongs in, given `elapsed`.
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
        let head = heads[Int(place)]
        node.next = head
        node.previous = .none
        if head != .none { head.previous = node }
        heads[Int(place)] = node
        node.place = place
        if place != TimingWheel.farPlace {
            occupied[Int(place) / TimingWheel.slotsPerLevel] |= 1 << UInt64(Int(place) % TimingWheel.slotsPerLevel)
        }
    }

    private mutating func unlink(_ node: TimerNode, from place: UInt16) {
        let next = node.next
        let previous = node.previous
        if next != .none { next.previous = previous }
        if previous != .none {
            previous.next = next
        } else {
            heads[Int(place)] = next
            if next == .none && place != TimingWheel.farPlace {
                occupied[Int(place) / TimingWheel.slotsPerLevel] &=
                    ~(1 << UInt64(Int(place) % TimingWheel.slotsPerLevel))
            }
        }
        node.next = .none
        node.previous = .none
        node.place = TimingWheel.nowhere
    }

    /// The first non-empty list in time and the tick it is due.
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
        if heads[Int(TimingWheel.farPlace)] != .none {
            // The start of the next 2^36-tick block: some far timers may fit in the levels then.
            return (TimingWheel.farPlace, (elapsed | (TimingWheel.span - 1)) + 1)
        }
        return nil
    }
}
