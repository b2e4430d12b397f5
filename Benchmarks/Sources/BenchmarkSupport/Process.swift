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
