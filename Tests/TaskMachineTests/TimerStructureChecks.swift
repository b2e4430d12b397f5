import Testing

@testable import TaskMachine

/// A small deterministic generator, so a failing timer test replays.
struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Links 3,000 timers, the `n`th at a random tick of `ticks[n % ticks.count]` (a first tick and how
/// many follow it), removes a tenth, then
/// moves time in steps of every size, removing timers as it goes, and checks that every timer left
/// expires once, at the first advance that reaches its tick, in deadline order, an array of one tick
/// at a time, and that no removed one does. Returns how many advances expired timers of more than
/// one tick.
///
/// Removals happen before and while time moves: of pending timers (wherever they are, after the
/// structure has moved them and other removals have moved them within their array), of expired
/// ones (which still carry their last place) and of removed ones.
func checkExpiryInDeadlineOrder<S: TimerStructure>(
    of structure: inout S, random: inout SplitMix, ticks: [(first: UInt64, count: UInt64)]
) -> Int {
    let entries = (0..<3_000).map { _ in TimerEntry(deadline: 0) }
    var due: [TimerNode: UInt64] = [:]
    for (index, entry) in entries.enumerated() {
        let range = ticks[index % ticks.count]
        let tick = range.first + random.next() % range.count
        let inserted = structure.insert(TimerNode(entry), at: tick)
        #expect(inserted)
        due[TimerNode(entry)] = tick
    }
    // Remove a tenth, from everywhere.
    for entry in entries.enumerated().filter({ $0.offset % 10 == 3 }).map(\.element) {
        let removed = structure.remove(TimerNode(entry))
        let removedAgain = structure.remove(TimerNode(entry))
        #expect(removed && !removedAgain)
        due[TimerNode(entry)] = nil
    }
    #expect(structure.count == due.count)

    var now: UInt64 = 0
    var previous: UInt64 = 0
    var seen = Set<TimerNode>()
    var spent: [[TimerNode]] = []
    var steps = 0
    var removedWhileRunning = 0
    var refused = 0
    var severalTicksAtOnce = 0
    while structure.count > 0 && steps < 100_000 {
        steps += 1
        // Steps of every size: single ticks, then ever longer jumps.
        now += 1 + random.next() % (steps < 2_000 ? 3 : UInt64(steps) * UInt64(steps) * 1_000)
        var expired: [TimerNode] = []
        structure.advance(to: now, spent: &spent) { nodes in
            #expect(Set(nodes.map { due[$0] }).count == 1, "an expired array is all of one tick")
            expired.append(contentsOf: nodes)
        }
        if Set(expired.map { due[$0] }).count > 1 { severalTicksAtOnce += 1 }
        if steps % 7 == 0 {
            for _ in 0..<3 {
                let node = TimerNode(entries[Int(random.next() % UInt64(entries.count))])
                let pending = due[node] != nil && !seen.contains(node) && !expired.contains(node)
                #expect(structure.remove(node) == pending)
                if pending { due[node] = nil }
                if pending { removedWhileRunning += 1 } else { refused += 1 }
            }
        }
        var last: UInt64 = 0
        for node in expired {
            let tick = due[node]
            #expect(tick != nil, "a removed timer expired")
            if let tick {
                // Expired at the first advance that reached its tick, in deadline order.
                #expect(tick <= now && tick > previous)
                #expect(tick >= last)
                last = tick
            }
            #expect(seen.insert(node).inserted, "a timer expired twice")
            #expect(!structure.contains(node))
        }
        previous = now
    }
    #expect(removedWhileRunning > 20 && refused > 20)
    #expect(structure.count == 0)
    #expect(seen.count == due.count)
    #expect(structure.nextDeadline == nil)
    // The structure itself holds no references (the queue retains what it links): without this, an
    // optimized build frees the entries after their last use above.
    withExtendedLifetime(entries) {}
    return severalTicksAtOnce
}

/// Checks that, at tick 100, `structure` refuses a timer due at 100 or before and takes one due at
/// 101, which then expires at 101.
func checkElapsedTicksAreRefused<S: TimerStructure>(by structure: inout S) {
    var spent: [[TimerNode]] = []
    structure.advance(to: 100, spent: &spent) { _ in }
    let entry = TimerEntry(deadline: 0)
    let atNow = structure.insert(TimerNode(entry), at: 100)
    let before = structure.insert(TimerNode(entry), at: 7)
    let after = structure.insert(TimerNode(entry), at: 101)
    #expect(!atNow && !before && after)
    #expect(structure.count == 1)
    #expect(structure.nextDeadline == 101)
    var expired: [TimerNode] = []
    structure.advance(to: 101, spent: &spent) { expired.append(contentsOf: $0) }
    #expect(expired == [TimerNode(entry)])
    withExtendedLifetime(entry) {}
}
