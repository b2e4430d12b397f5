/// A growable FIFO ring of jobs, used under a lock.
///
/// A class over raw storage rather than a struct over an array: the lock already makes each
/// access exclusive, so a push or a pop need not ask the array whether it is uniquely referenced
/// (two runtime calls per job on the pool's global queue), and a job moves in and out of its slot
/// with no copy.
final class JobQueue {
    private var slots: UnsafeMutablePointer<Job>
    /// A power of two.
    private var capacity: Int
    private var head = 0
    private(set) var count = 0

    /// - Parameter capacity: the first size of the ring, rounded up to a power of two.
    init(capacity: Int = 256) {
        var size = 2
        while size < capacity { size <<= 1 }
        self.capacity = size
        slots = .allocate(capacity: size)
    }

    deinit {
        while pop() != nil {}
        slots.deallocate()
    }

    var isEmpty: Bool { count == 0 }

    func push(_ job: consuming Job) {
        if count == capacity { grow() }
        (slots + ((head + count) & (capacity - 1))).initialize(to: job)
        count += 1
    }

    func pop() -> Job? {
        guard count > 0 else { return nil }
        let job = (slots + head).move()
        head = (head + 1) & (capacity - 1)
        count -= 1
        return job
    }

    private func grow() {
        let bigger = UnsafeMutablePointer<Job>.allocate(capacity: capacity * 2)
        for index in 0..<count {
            (bigger + index).moveInitialize(from: slots + ((head + index) & (capacity - 1)), count: 1)
        }
        slots.deallocate()
        slots = bigger
        capacity *= 2
        head = 0
    }
}
