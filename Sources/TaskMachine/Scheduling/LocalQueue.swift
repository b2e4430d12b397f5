import CTaskMachine
import Synchronization

/// A worker's run queue: a bounded ring that one thread, its owner, pushes to and pops from at one
/// end, the top, and that other workers steal the older half of at the other end, the bottom.
///
/// The owner takes its newest job first, whose data is still in its cache; a thief takes the oldest
/// jobs, which have waited longest, and half of them at once, so that a burst of jobs spreads over
/// the workers in a few steals. The pool's fairness rules bound how long the bottom waits while
/// its owner keeps pushing (see ``ThreadPool``).
///
/// `tail`, the top, is written by the owner only. `head` packs two indices of the bottom: `real`,
/// the oldest job not yet taken, and `steal`, which equals `real` except while a thief moves out
/// the jobs between them; until it has, the owner does not reuse those slots. Thieves steal under
/// the queue's lock, one at a time: a thief claims its half by moving `real` up, then reads `tail`
/// again and gives up any part of the claim that a pop took meanwhile. The owner pops without the
/// lock: it lowers `tail`, then reads `head`, all four accesses sequentially consistent, so that of
/// a pop and a steal racing for the same job at least one sees the other. A pop that finds its job
/// already claimed waits for the lock, when the thief has settled its claim, and looks again.
///
/// Jobs move in and out of the slots: pushing, popping and stealing cost no retain and no release.
/// Every publication of a slot is still followed by a read-modify-write of `tail` (or `head`),
/// never a plain store: in release builds the optimizer has moved a retain made before a plain
/// release store below it (see the toolchain notes), and a later change that brings a copy back
/// here must not bring that hazard with it.
final class LocalQueue {
    /// Slots per queue: a power of two, and enough that the owner rarely overflows to the global
    /// queue (tokio uses the same).
    static let capacity: UInt32 = 256
    private static let mask = capacity - 1

    /// `(steal << 32) | real`: written by thieves and by the owner's slow paths, all under `lock`.
    private let head = Atomic<UInt64>(0)
    private let tail = Atomic<UInt32>(0)
    // Unsafe: raw slots, each touched by one thread at a time as the head and tail protocol says;
    // and the lock word, which needs a stable address. A word of its own rather than a
    // `Locked(())`: with nothing to guard but the protocol, `Locked`'s zero-sized value shares the
    // word's address, and ThreadSanitizer reports its `inout` access by one thief against another
    // thread's look at the buffer before it takes the lock.
    private let slots: UnsafeMutablePointer<Job>
    private let lockWord: UnsafeMutablePointer<UInt32>

    init() {
        // Uninitialized: a slot holds a job only between the index moves that put it there and
        // take it out.
        slots = .allocate(capacity: Int(Self.capacity))
        lockWord = .allocate(capacity: 1)
        lockWord.initialize(to: 0)
    }

    deinit {
        while pop() != nil {}
        slots.deallocate()
        lockWord.deallocate()
    }

    @inline(__always)
    private static func pack(steal: UInt32, real: UInt32) -> UInt64 {
        UInt64(steal) << 32 | UInt64(real)
    }

    @inline(__always)
    private static func unpack(_ head: UInt64) -> (steal: UInt32, real: UInt32) {
        (UInt32(truncatingIfNeeded: head >> 32), UInt32(truncatingIfNeeded: head))
    }

    /// The slot of ring index `index`.
    @inline(__always)
    private func slot(_ index: UInt32) -> UnsafeMutablePointer<Job> {
        slots + Int(index & Self.mask)
    }

    /// How far `index` lies above `bottom`, as a signed distance (the indices wrap).
    @inline(__always)
    private static func distance(from bottom: UInt32, to index: UInt32) -> Int32 {
        Int32(bitPattern: index &- bottom)
    }

    private func withLock<Result>(_ body: () -> Result) -> Result {
        tm_lock(lockWord)
        defer { tm_unlock(lockWord) }
        return body()
    }

    /// About how many jobs wait here: exact for the owner, a hint for anyone else.
    var count: Int {
        let (_, real) = Self.unpack(head.load(ordering: .acquiring))
        return Int(max(0, Self.distance(from: real, to: tail.load(ordering: .acquiring))))
    }

    /// Owner only: queues `job` on top. When the ring is full, its older half and `job` come back,
    /// oldest first, for the global queue; `nil` when everything fit.
    func push(_ job: consuming Job) -> [Job]? {
        let (steal, _) = Self.unpack(head.load(ordering: .acquiring))
        let tail = tail.load(ordering: .relaxed)
        // Below `steal` (never below `real`): the slots a thief is still moving out stay untouched.
        if tail &- steal < Self.capacity {
            slot(tail).initialize(to: job)
            _ = self.tail.exchange(tail &+ 1, ordering: .releasing)
            return nil
        }
        // Full, or a thief is moving jobs out: settle it under the lock, where no thief is at work.
        var pending = Optional(job)
        return withLock {
            let (_, real) = Self.unpack(head.load(ordering: .acquiring))
            let tail = self.tail.load(ordering: .relaxed)
            if tail &- real < Self.capacity {
                slot(tail).initialize(to: pending.take().unsafelyUnwrapped)
                _ = self.tail.exchange(tail &+ 1, ordering: .releasing)
                return nil
            }
            // Full: the older half goes, with `job`, to the caller.
            let half = Self.capacity / 2
            var overflow: [Job] = []
            overflow.reserveCapacity(Int(half) + 1)
            for offset in 0..<half { overflow.append(slot(real &+ offset).move()) }
            _ = head.exchange(Self.pack(steal: real &+ half, real: real &+ half), ordering: .releasing)
            overflow.append(pending.take().unsafelyUnwrapped)
            return overflow
        }
    }

    /// Owner only: queues the jobs of the `count` retained job words at `words` on top with one
    /// publication of the tail, the first of them last, so that it is the next to be popped.
    /// Returns `false`, taking none, if they do not fit (the caller then pushes them one by one).
    func push(takingRetainedWords words: UnsafePointer<UInt>, count: Int) -> Bool {
        let (steal, _) = Self.unpack(head.load(ordering: .acquiring))
        let tail = tail.load(ordering: .relaxed)
        guard Int(tail &- steal) + count <= Int(Self.capacity) else { return false }
        for offset in 0..<count {
            slot(tail &+ UInt32(offset)).initialize(to: Job(takingRetainedWord: words[count - 1 - offset]))
        }
        // A read-modify-write publishes every slot written above (see the type's note).
        _ = self.tail.exchange(tail &+ UInt32(count), ordering: .releasing)
        return true
    }

    /// Owner only: takes the newest job, from the top.
    func pop() -> Job? {
        let top = tail.load(ordering: .relaxed)
        let (_, real) = Self.unpack(head.load(ordering: .acquiring))
        if top == real { return nil }
        let index = top &- 1
        _ = tail.exchange(index, ordering: .sequentiallyConsistent)
        let (_, bottom) = Self.unpack(head.load(ordering: .sequentiallyConsistent))
        if Self.distance(from: bottom, to: index) >= 0 {
            // At or above the bottom as this pop saw it: a thief that claimed the job after that
            // look at `head` reads `tail` after lowering it, and gives the job up.
            return slot(index).move()
        }
        // Below a thief's claim: settle it once the thief is done (it may give part of it up).
        return withLock {
            let (_, bottom) = Self.unpack(head.load(ordering: .acquiring))
            if Self.distance(from: bottom, to: index) >= 0 { return slot(index).move() }
            // A thief took it: the queue is empty, with its top back at its bottom.
            _ = tail.exchange(bottom, ordering: .releasing)
            return nil
        }
    }

    /// Owner only: takes the oldest job, from the bottom, as a thief would; for the pool's
    /// fairness rules.
    func popOldest() -> Job? {
        if tail.load(ordering: .relaxed) == Self.unpack(head.load(ordering: .acquiring)).real { return nil }
        return withLock {
            let (_, real) = Self.unpack(head.load(ordering: .acquiring))
            guard tail.load(ordering: .relaxed) != real else { return nil }
            let job = slot(real).move()
            _ = head.exchange(Self.pack(steal: real &+ 1, real: real &+ 1), ordering: .sequentiallyConsistent)
            return job
        }
    }

    /// Owner only: queues `job` at the bottom, behind every job waiting here, where it is the next
    /// to be stolen (on top when the queue is empty). When the queue is full, `job` comes back, for
    /// the global queue; `nil` when it fit.
    func pushOldest(_ job: consuming Job) -> [Job]? {
        if tail.load(ordering: .relaxed) == Self.unpack(head.load(ordering: .acquiring)).real { return push(job) }
        var pending = Optional(job)
        return withLock {
            let (_, real) = Self.unpack(head.load(ordering: .acquiring))
            guard tail.load(ordering: .relaxed) &- real < Self.capacity else {
                return [pending.take().unsafelyUnwrapped]
            }
            let bottom = real &- 1
            slot(bottom).initialize(to: pending.take().unsafelyUnwrapped)
            // A read-modify-write publishes the slot (see the type's note).
            _ = head.exchange(Self.pack(steal: bottom, real: bottom), ordering: .sequentiallyConsistent)
            return nil
        }
    }

    /// Thief: moves about half of this queue's jobs, the oldest, into `destination`, a queue the
    /// caller owns, and returns the oldest of them to run now. `nil` when there was nothing to
    /// take or `destination` has no room for half a queue.
    ///
    /// - Parameter beforePublishing: for tests, called when jobs are kept, before they are
    ///   published in `destination`: until then they are in neither queue.
    func steal(into destination: LocalQueue, beforePublishing: (() -> Void)? = nil) -> Job? {
        let destinationTail = destination.tail.load(ordering: .relaxed)
        let (destinationSteal, _) = Self.unpack(destination.head.load(ordering: .acquiring))
        guard destinationTail &- destinationSteal <= Self.capacity / 2 else { return nil }
        let taken = withLock { moveHalf(into: destination, at: destinationTail) }
        guard taken > 0 else { return nil }
        // Moved newest first, so the oldest is on top: run it; publish the rest in the destination.
        let keep = taken - 1
        let job = destination.slot(destinationTail &+ keep).move()
        if keep > 0 {
            beforePublishing?()
            _ = destination.tail.exchange(destinationTail &+ keep, ordering: .releasing)
        }
        return job
    }

    /// Under the lock: claims the older half, moves it to `destination` from `destinationTail`
    /// (unpublished), and returns how many it took.
    private func moveHalf(into destination: LocalQueue, at destinationTail: UInt32) -> UInt32 {
        let (_, real) = Self.unpack(head.load(ordering: .acquiring))
        let available = Self.distance(from: real, to: tail.load(ordering: .acquiring))
        guard available > 0 else { return 0 }
        let wanted = UInt32(available) - UInt32(available) / 2  // half, rounded up
        // Claim [real, real + wanted): `real` moves past it, `steal` stays as the marker. Then look
        // at the top again: a pop that lowered it meanwhile, without seeing the claim, took its
        // job, and the claim gives up what lies at or above the new top.
        _ = head.exchange(Self.pack(steal: real, real: real &+ wanted), ordering: .sequentiallyConsistent)
        let top = tail.load(ordering: .sequentiallyConsistent)
        let taken = UInt32(max(0, min(Int32(wanted), Self.distance(from: real, to: top))))
        for offset in 0..<taken {
            let from = slot(real &+ taken &- 1 &- offset)
            destination.slot(destinationTail &+ offset).moveInitialize(from: from, count: 1)
        }
        // Moved: drop the marker, and the part of the claim given up.
        _ = head.exchange(Self.pack(steal: real &+ taken, real: real &+ taken), ordering: .sequentiallyConsistent)
        return taken
    }
}

// Shared between the owner and thieves through the head and tail protocol above.
extension LocalQueue: @unchecked Sendable {}
