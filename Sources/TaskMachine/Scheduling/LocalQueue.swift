import Synchronization

/// A worker's run queue: a bounded ring that one thread, its owner, pushes to and takes from, and
/// that other workers steal half of at a time.
///
/// The layout follows tokio's local queue. `tail` is written by the owner only. `head` packs two
/// indices: `real`, the next job to take, and `steal`, which equals `real` except while a thief is
/// copying the jobs between them out; until it finishes, the owner does not reuse those slots. A
/// steal claims its half with one compare-exchange, so thieves never take jobs one at a time.
///
/// Slots hold retained job words (`Job.retainedWord()`). Every publication of a slot is followed by
/// a read-modify-write of `tail`, never a plain store: in release builds a plain release store would
/// let the optimizer move the job's retain below it (see the toolchain notes).
final class LocalQueue {
    /// Slots per queue: a power of two, and enough that the owner rarely overflows to the global
    /// queue (tokio uses the same).
    static let capacity: UInt32 = 256
    private static let mask = capacity - 1

    /// `(steal << 32) | real`.
    private let head = Atomic<UInt64>(0)
    private let tail = Atomic<UInt32>(0)
    // Unsafe: raw slots, each touched by one thread at a time as the head and tail protocol says.
    private let slots: UnsafeMutablePointer<UInt>

    init() {
        slots = .allocate(capacity: Int(Self.capacity))
        slots.initialize(repeating: 0, count: Int(Self.capacity))
    }

    deinit {
        while pop() != nil {}
        slots.deallocate()
    }

    @inline(__always)
    private static func pack(steal: UInt32, real: UInt32) -> UInt64 {
        UInt64(steal) << 32 | UInt64(real)
    }

    @inline(__always)
    private static func unpack(_ head: UInt64) -> (steal: UInt32, real: UInt32) {
        (UInt32(truncatingIfNeeded: head >> 32), UInt32(truncatingIfNeeded: head))
    }

    /// About how many jobs wait here: exact for the owner, a hint for anyone else.
    var count: Int {
        let (_, real) = Self.unpack(head.load(ordering: .acquiring))
        return Int(tail.load(ordering: .acquiring) &- real)
    }

    /// Owner only: queues `job`. When the ring is full, half of it and `job` come back, for the
    /// global queue; `nil` when everything fit.
    func push(_ job: Job) -> [Job]? {
        let word = job.retainedWord()
        while true {
            let packed = head.load(ordering: .acquiring)
            let (steal, real) = Self.unpack(packed)
            let tail = tail.load(ordering: .relaxed)
            if tail &- steal < Self.capacity {
                slots[Int(tail & Self.mask)] = word
                _ = self.tail.exchange(tail &+ 1, ordering: .releasing)
                return nil
            }
            if steal != real {
                // Full while a thief copies jobs out: it frees room soon, but not now.
                return [Job(takingRetainedWord: word)]
            }
            // Full: claim the older half in one step and hand it, with `job`, to the caller.
            let half = Self.capacity / 2
            let claimed = Self.pack(steal: real &+ half, real: real &+ half)
            if head.compareExchange(expected: packed, desired: claimed, ordering: .acquiringAndReleasing).exchanged {
                var overflow: [Job] = []
                overflow.reserveCapacity(Int(half) + 1)
                for offset in 0..<half {
                    overflow.append(Job(takingRetainedWord: slots[Int((real &+ offset) & Self.mask)]))
                }
                overflow.append(Job(takingRetainedWord: word))
                return overflow
            }
            // A thief moved the head meanwhile: look again.
        }
    }

    /// Owner only: queues all of `jobs` with one publication of the tail, if they fit; returns
    /// `false`, queuing none, if they do not (the caller then pushes them one by one).
    func push(contentsOf jobs: [Job]) -> Bool {
        let (steal, _) = Self.unpack(head.load(ordering: .acquiring))
        let tail = tail.load(ordering: .relaxed)
        guard Int(tail &- steal) + jobs.count <= Int(Self.capacity) else { return false }
        for (offset, job) in jobs.enumerated() {
            slots[Int((tail &+ UInt32(offset)) & Self.mask)] = job.retainedWord()
        }
        // A read-modify-write publishes every slot written above (see the type's note).
        _ = self.tail.exchange(tail &+ UInt32(jobs.count), ordering: .releasing)
        return true
    }

    /// Owner only: takes the oldest job.
    func pop() -> Job? {
        var packed = head.load(ordering: .acquiring)
        while true {
            let (steal, real) = Self.unpack(packed)
            if real == tail.load(ordering: .relaxed) { return nil }
            let next = real &+ 1
            // While a steal is in progress its marker stays where it is.
            let desired = steal == real ? Self.pack(steal: next, real: next) : Self.pack(steal: steal, real: next)
            let (exchanged, original) = head.compareExchange(
                expected: packed, desired: desired, ordering: .acquiringAndReleasing)
            if exchanged { return Job(takingRetainedWord: slots[Int(real & Self.mask)]) }
            packed = original
        }
    }

    /// Thief: moves about half of this queue's jobs into `destination`, a queue the caller owns,
    /// and returns one of them to run now. `nil` when there was nothing to take, another thief
    /// was at work, or `destination` has no room for half a queue.
    func steal(into destination: LocalQueue) -> Job? {
        let destinationTail = destination.tail.load(ordering: .relaxed)
        let (destinationSteal, _) = Self.unpack(destination.head.load(ordering: .acquiring))
        guard destinationTail &- destinationSteal <= Self.capacity / 2 else { return nil }
        let taken = copyHalf(into: destination, at: destinationTail)
        guard taken > 0 else { return nil }
        // Run the last one copied; publish the rest in the destination.
        let keep = taken - 1
        let job = Job(takingRetainedWord: destination.slots[Int((destinationTail &+ keep) & Self.mask)])
        if keep > 0 { _ = destination.tail.exchange(destinationTail &+ keep, ordering: .releasing) }
        return job
    }

    private func copyHalf(into destination: LocalQueue, at destinationTail: UInt32) -> UInt32 {
        var packed = head.load(ordering: .acquiring)
        var claimed: UInt64
        var count: UInt32
        while true {
            let (steal, real) = Self.unpack(packed)
            guard steal == real else { return 0 }  // another thief is copying
            let available = tail.load(ordering: .acquiring) &- real
            count = available &- available / 2  // half, rounded up
            guard count > 0 else { return 0 }
            // Claim [real, real + count): `real` moves past it, `steal` stays as the marker.
            claimed = Self.pack(steal: steal, real: real &+ count)
            let (exchanged, original) = head.compareExchange(
                expected: packed, desired: claimed, ordering: .acquiringAndReleasing)
            if exchanged { break }
            packed = original
        }
        let (first, _) = Self.unpack(claimed)
        for offset in 0..<count {
            destination.slots[Int((destinationTail &+ offset) & Self.mask)] = slots[Int((first &+ offset) & Self.mask)]
        }
        // Copied: drop the marker so the owner may reuse the slots. The owner may have taken jobs
        // meanwhile (moving `real`), so retry until the exchange sees the current value.
        packed = claimed
        while true {
            let (_, real) = Self.unpack(packed)
            let (exchanged, original) = head.compareExchange(
                expected: packed, desired: Self.pack(steal: real, real: real), ordering: .acquiringAndReleasing)
            if exchanged { return count }
            packed = original
        }
    }
}

// Shared between the owner and thieves through the head and tail protocol above.
extension LocalQueue: @unchecked Sendable {}
