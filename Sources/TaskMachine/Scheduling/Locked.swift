import CTaskMachine

/// A value behind a futex lock.
///
/// The runtime's own lock rather than `Synchronization.Mutex`: that one hands contended locks over
/// inside the kernel (priority-inheritance futexes), which ThreadSanitizer cannot see, so every
/// contended section it guards would be reported as a race. This lock's acquire and release are
/// atomic operations on its word, compiled in C, which the sanitizer understands. One allocation
/// holds the value and the word.
struct Locked<Value> {
    private let storage: Storage

    init(_ value: Value) {
        storage = Storage.create(minimumCapacity: 1) { _ in value } as! Storage
        storage.withUnsafeMutablePointerToElements { $0.initialize(to: 0) }
    }

    /// Runs `body` with exclusive access to the value.
    @inline(__always)
    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        try storage.withUnsafeMutablePointers { value, word in
            tm_lock(word)
            defer { tm_unlock(word) }
            return try body(&value.pointee)
        }
    }

    fileprivate final class Storage: ManagedBuffer<Value, UInt32> {}
}

// The value is reached only under the lock.
extension Locked: @unchecked Sendable {}
