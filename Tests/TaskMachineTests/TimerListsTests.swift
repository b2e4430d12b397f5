import Testing

@_spi(Benchmarks) @testable import TaskMachine

/// Timers for a bare structure, which holds no references: the caller keeps `entries` alive (with
/// `withExtendedLifetime`) for as long as the structure may hold them.
private func makeEntries(_ count: Int) -> [TimerEntry] {
    (0..<count).map { _ in TimerEntry(deadline: 0) }
}

/// Advances `lists` to `now` and returns what expired, checking that each array is of one tick.
private func advance(_ lists: inout TimerLists, to now: UInt64) -> [TimerNode] {
    var spent: [[TimerNode]] = []
    var expired: [TimerNode] = []
    lists.advance(to: now, spent: &spent) { nodes in
        #expect(!nodes.isEmpty)
        #expect(Set(nodes.map(\.tick)).count == 1, "an expired array is all of one tick")
        expired.append(contentsOf: nodes)
    }
    return expired
}

@Suite struct TimerListsTests {
    @Test func theListsExpireEveryTimerAtItsTickInDeadlineOrderAndForgetsRemovedOnes() {
        var random = SplitMix(state: 7)
        var lists = TimerLists()
        // Ticks on both sides of the short list's threshold, and far beyond it.
        let ticks: [(first: UInt64, count: UInt64)] = [
            (1, TimerLists.shortSpan), (1, 1_000), (1, 300_000), (1, 20_000_000), (1, 1 << 40),
        ]
        let severalTicksAtOnce = checkExpiryInDeadlineOrder(of: &lists, random: &random, ticks: ticks)
        // Late passes, whose due timers the lists sort.
        #expect(severalTicksAtOnce > 10)
    }

    @Test(arguments: [TimerLists.shortPlace, TimerLists.longPlace])
    func removingTheFirstMiddleOrLastTimerOfAListKeepsTheOthers(place: UInt16) {
        // Five timers in the list under test and five in the other; removing from the front, the
        // middle and the end moves the last timer into the gap, which must still be found.
        let base: UInt64 = place == TimerLists.shortPlace ? 10 : 1_000
        let other: UInt64 = place == TimerLists.shortPlace ? 1_000 : 10
        for position in [0, 2, 4] {
            var lists = TimerLists()
            let entries = makeEntries(10)
            let nodes = entries.map { TimerNode($0) }
            for index in 0..<5 {
                #expect(lists.insert(nodes[index], at: base + UInt64(index)) == true)
                #expect(lists.insert(nodes[5 + index], at: other + UInt64(index)) == true)
            }
            #expect(nodes[0..<5].allSatisfy { $0.place == place })
            let removed = nodes[0..<5].first { $0.index == UInt32(position) }!
            #expect(lists.remove(removed) == true)
            #expect(!lists.contains(removed))
            #expect(lists.remove(removed) == false)
            #expect(lists.count == 9)
            // What is left: each at an index that finds it, and each expiring once.
            let left = nodes.filter { $0 != removed }
            #expect(left.allSatisfy { lists.contains($0) })
            let expired = advance(&lists, to: 2_000)
            #expect(Set(expired) == Set(left) && expired.count == left.count)
            #expect(lists.count == 0)
            withExtendedLifetime(entries) {}
        }
    }

    @Test func aPassAfterTheThresholdMovesTimersDueSoonFromTheLongListToTheShort() {
        var lists = TimerLists()
        let entries = makeEntries(4)
        let (first, soon, late, past) = (
            TimerNode(entries[0]), TimerNode(entries[1]), TimerNode(entries[2]), TimerNode(entries[3])
        )
        #expect(lists.insert(first, at: 100) == true)
        #expect(lists.insert(soon, at: 500) == true)
        #expect(lists.insert(late, at: 2_000) == true)
        #expect(first.place == TimerLists.shortPlace)
        #expect(soon.place == TimerLists.longPlace && late.place == TimerLists.longPlace)

        // Before the threshold, a pass looks at the short list alone.
        #expect(advance(&lists, to: 100) == [first])
        #expect(lists.threshold == TimerLists.shortSpan)
        #expect(soon.place == TimerLists.longPlace)
        #expect(lists.nextDeadline == 500)

        // A timer due just past the threshold goes to the long list; the pass that expires it walks
        // the long list, and moves what is due within 333 ticks of now to the short one.
        #expect(lists.insert(past, at: 340) == true)
        #expect(past.place == TimerLists.longPlace)
        #expect(advance(&lists, to: 340) == [past])
        #expect(lists.threshold == 340 + TimerLists.shortSpan)
        #expect(soon.place == TimerLists.shortPlace && late.place == TimerLists.longPlace)
        #expect(lists.contains(soon) && lists.contains(late))
        #expect(lists.nextDeadline == 500)
        #expect(lists.count == 2)

        #expect(advance(&lists, to: 1_999) == [soon])
        #expect(advance(&lists, to: 2_000) == [late])
        #expect(lists.count == 0 && lists.nextDeadline == nil)
        withExtendedLifetime(entries) {}
    }

    @Test func aTimerDueAtOrBeforeTheListsTimeIsRefused() {
        var lists = TimerLists()
        checkElapsedTicksAreRefused(by: &lists)
    }

    @Test func theCountAndTheNextDeadlineFollowInsertsRemovalsAndPasses() {
        var lists = TimerLists()
        let entries = makeEntries(3)
        let nodes = entries.map { TimerNode($0) }
        #expect(lists.count == 0 && lists.nextDeadline == nil)
        #expect(lists.insert(nodes[0], at: 50) == true)
        #expect(lists.insert(nodes[1], at: 20) == true)
        #expect(lists.insert(nodes[2], at: 5_000) == true)
        #expect(lists.count == 3)
        #expect(lists.nextDeadline == 20)
        // A removal never makes the next deadline later than the earliest timer left; a pass makes
        // it exact again.
        #expect(lists.remove(nodes[1]) == true)
        #expect(lists.count == 2)
        #expect(lists.nextDeadline.map { $0 <= 50 } == true)
        #expect(advance(&lists, to: 30).isEmpty)
        #expect(lists.nextDeadline == 50)
        #expect(lists.remove(nodes[0]) == true)
        #expect(lists.nextDeadline == 5_000)
        #expect(lists.remove(nodes[2]) == true)
        #expect(lists.count == 0 && lists.nextDeadline == nil)
        withExtendedLifetime(entries) {}
    }

    @Test func theListsAndTheWheelExpireTheSameTimersAtTheSameTicks() {
        // The same random inserts, removals and advances on both structures, each over timers of
        // its own (a timer's links belong to one structure): at every advance, the same timers
        // expire, grouped by the same ticks, in the same order of ticks.
        var random = SplitMix(state: 2_024)
        var wheel = TimingWheel()
        var lists = TimerLists()
        let count = 1_500
        let wheelEntries = makeEntries(count)
        let listEntries = makeEntries(count)
        let wheelIndex = Dictionary(uniqueKeysWithValues: wheelEntries.enumerated().map { (TimerNode($1), $0) })
        let listIndex = Dictionary(uniqueKeysWithValues: listEntries.enumerated().map { (TimerNode($1), $0) })
        var pending = Set<Int>()
        var now: UInt64 = 0
        var spent: [[TimerNode]] = []
        var removedSpent: [TimerNode] = []
        var expiredInAll = 0
        var removedInAll = 0
        for step in 0..<6_000 {
            switch random.next() % 8 {
            case 0, 1, 2:
                let index = Int(random.next() % UInt64(count))
                guard !pending.contains(index) else { continue }
                // Ticks within the short span, around it, across the wheel's levels, and at `now`
                // (refused by both).
                let ahead: UInt64 =
                    switch random.next() % 5 {
                    case 0: random.next() % TimerLists.shortSpan
                    case 1: random.next() % 1_000
                    case 2: random.next() % 100_000
                    case 3: random.next() % 10_000_000
                    default: random.next() % 4
                    }
                let inWheel = wheel.insert(TimerNode(wheelEntries[index]), at: now + ahead)
                let inLists = lists.insert(TimerNode(listEntries[index]), at: now + ahead)
                #expect(inWheel == inLists && inWheel == (ahead > 0))
                if inWheel { pending.insert(index) }
            case 3:
                // Half the time a pending timer (in a fixed order: a `Set`'s varies between runs),
                // else any, often one that expired or was removed.
                let candidates = random.next() % 2 == 0 && !pending.isEmpty ? pending.sorted() : Array(0..<count)
                let index = candidates[Int(random.next() % UInt64(candidates.count))]
                let fromWheel = wheel.remove(TimerNode(wheelEntries[index]), spent: &removedSpent)
                let fromLists = lists.remove(TimerNode(listEntries[index]), spent: &removedSpent)
                #expect(fromWheel == fromLists && fromWheel == pending.contains(index))
                if fromWheel { removedInAll += 1 }
                pending.remove(index)
            default:
                now += 1 + random.next() % (step % 50 == 0 ? 200_000 : 400)
                var fromWheel: [[Int]] = []
                var fromLists: [[Int]] = []
                wheel.advance(to: now, spent: &spent) { fromWheel.append($0.map { wheelIndex[$0]! }.sorted()) }
                lists.advance(to: now, spent: &spent) { fromLists.append($0.map { listIndex[$0]! }.sorted()) }
                // The wheel may hand one tick over in several arrays (a cascade's due timers, then a
                // slot's): compare tick by tick.
                #expect(ticks(fromWheel, wheelEntries) == ticks(fromLists, listEntries))
                for index in fromWheel.joined() { #expect(pending.remove(index) != nil) }
                expiredInAll += fromWheel.joined().count
            }
            #expect(wheel.count == pending.count && lists.count == pending.count)
        }
        #expect(expiredInAll > 500 && removedInAll > 100)
        withExtendedLifetime((wheelEntries, listEntries)) {}
    }

    @Test(arguments: [TimerStructureBenchmark.Structure.wheel, .lists])
    func theBenchmarkOperationsLinkAndExpireEveryTimer(structure: TimerStructureBenchmark.Structure) {
        let benchmark = TimerStructureBenchmark(structure, timerCount: 1_000)
        #expect(benchmark.heapBytes >= 0 && benchmark.pendingCount == 0)
        benchmark.spreadTimers()
        #expect(benchmark.pendingCount == 1_000)
        // 1,000 places of 8 bytes at least, wherever they are.
        #expect(benchmark.heapBytes >= 8_000)
        #expect(benchmark.insertAndRemove(repetitions: 500) == 500)
        #expect(benchmark.pendingCount == 1_000)
        #expect(benchmark.expireAcrossSpan() == 1_000)
        #expect(benchmark.pendingCount == 0)
        benchmark.scheduleTogether()
        #expect(benchmark.expireTogether() == 1_000)
        benchmark.scheduleTogether()
        #expect(benchmark.prepareForTogether() == 0)
        #expect(benchmark.pendingCount == 1_000)
        #expect(benchmark.expireTogether() == 1_000)
        #expect(benchmark.pendingCount == 0)
    }
}

/// Expired timers, as arrays of indices into `entries`, grouped by tick in the order they came.
private func ticks(_ arrays: [[Int]], _ entries: [TimerEntry]) -> [[Int]] {
    var grouped: [(tick: UInt64, indices: [Int])] = []
    for array in arrays {
        let tick = TimerNode(entries[array[0]]).tick
        if grouped.last?.tick == tick {
            grouped[grouped.count - 1].indices = (grouped[grouped.count - 1].indices + array).sorted()
        } else {
            grouped.append((tick, array))
        }
    }
    return grouped.map(\.indices)
}
