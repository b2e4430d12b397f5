/// A growable FIFO ring of jobs, used under a lock.
struct JobQueue {
    private var storage: [Job?]
    private var head = 0
    private(set) var count = 0

    /// - Parameter capacity: the first size of the ring, rounded up to a power of two.
    init(capacity: Int = 256) {
        var size = 2
        while size < capacity { size <<= 1 }
        storage = Array(repeating: nil, count: size)
    }

    var isEmpty: Bool { count == 0 }

    mutating func push(_ job: Job) {
        if count == storage.count { grow() }
        storage[(head + count) & (storage.count - 1)] = job
        count += 1
    }

    mutating func pop() -> Job? {
        guard count > 0 else { return nil }
        let job = storage[head]
        storage[head] = nil
        head = (head + 1) & (storage.count - 1)
        count -= 1
        return job
    }

    private mutating func grow() {
        var bigger = [Job?](repeating: nil, count: storage.count * 2)
        for index in 0..<count {
            bigger[index] = storage[(head + index) & (storage.count - 1)]
        }
        storage = bigger
        head = 0
    }
}
