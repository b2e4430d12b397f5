import CBenchmarkShims
import Foundation
import Glibc

/// Ends this process with SIGALRM if it is still running after `seconds`. The benchmark tool runs
/// each benchmark in a process of its own, so a thread-hopping benchmark that lost a wake-up fails
/// (the tool reports it) instead of hanging the run. Call it in a benchmark's setup.
public func abortIfStillRunning(after seconds: UInt32) {
    alarm(seconds)
}

/// The threads this process has now: the entries of `/proc/self/task`.
public func threadCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? -1
}

/// Bytes the C heap has handed out and not taken back (glibc's `mallinfo2`: small blocks in use
/// plus large mmapped ones). A difference of two readings is what the code between them keeps.
public func heapBytesInUse() -> Int {
    Int(cbench_heap_bytes_in_use())
}

/// A reading of the heap: glibc's bytes in use, and the allocations live by the count of the
/// malloc-counting interposer the benchmarks run with.
public struct HeapReading {
    public let bytes: Int
    public let liveAllocations: Int

    /// The interposer's header in front of every allocation it hands out.
    static let interposerHeader = 16

    public static func now() -> HeapReading {
        HeapReading(bytes: heapBytesInUse(), liveAllocations: Int(cbench_live_allocations()))
    }

    /// The bytes the code between `earlier` and this reading keeps, as it would without the
    /// interposer: glibc's difference, less the interposer's header on each allocation still live
    /// (a header adds exactly 16 to a chunk, since chunks grow in steps of 16). Without the
    /// interposer, glibc's difference as it is. With the interposer linked but not counting (a
    /// time-only run), its headers are still there but not counted: the difference reads 16 bytes
    /// high for every allocation kept.
    public func bytesKept(since earlier: HeapReading) -> Int {
        let bytes = self.bytes - earlier.bytes
        guard liveAllocations >= 0, earlier.liveAllocations >= 0 else { return bytes }
        return bytes - HeapReading.interposerHeader * (liveAllocations - earlier.liveAllocations)
    }
}
