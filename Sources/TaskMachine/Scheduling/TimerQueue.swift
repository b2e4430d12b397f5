import CTaskMachine
import Glibc
import Synchronization

/// A timer: when its deadline passes, the timer thread hands it to the pool, which runs `fire`.
class TimerEntry: WorkItem {
    let deadline: Int64
    /// Set once, by whichever of firing and cancelling comes first.
    private let settled = Atomic<Bool>(false)

    init(deadline: Int64) {
        self.deadline = deadline
        super.init()
    }

    /// Claims the timer; the first caller wins. Used by both expiry and cancellation.
    final func claim() -> Bool {
        !settled.exchange(true, ordering: .acquiringAndReleasing)
    }

    final var isSettled: Bool { settled.load(ordering: .acquiring) }

    /// Runs on a pool worker when the deadline passes and nothing cancelled the timer first.
    func fire() {}

    override final func run() {
        guard claim() else { return }
        TimerQueue.shared.noteSettled()
        fire()
    }

    /// Cancels the timer if it has not fired; returns whether this call cancelled it.
    @discardableResult
    final func cancel() -> Bool {
        guard claim() else { return false }
        TimerQueue.shared.noteSettled()
        return true
    }
}

/// The timer thread and its queue of deadlines.
///
/// This first queue is a binary min-heap under a lock: O(log n) insert, O(1) cancel (a cancelled
/// timer is only marked; the heap drops it when it reaches the top). The timer thread sleeps until
/// the earliest deadline and only moves expired timers to the pool; it never runs user code.
final class TimerQueue {
    static let shared = TimerQueue()

    private struct State {
        var heap: [TimerEntry] = []
        var threadStarted = false
        var sleepingUntil = Int64.max
    }

    private let state = Locked(State())
    /// Timers inserted and neither fired nor cancelled.
    private let pending = Atomic<Int>(0)
    private let parker = Parker()

    /// Schedules `entry`; starts the timer thread on first use.
    func schedule(_ entry: TimerEntry) {
        pending.add(1, ordering: .relaxed)
        let (wake, start) = state.withLock { state -> (Bool, Bool) in
            state.heap.append(entry)
            siftUp(&state.heap, state.heap.count - 1)
            let start = !state.threadStarted
            state.threadStarted = true
            // Only a deadline earlier than the one the thread sleeps towards needs a wake-up.
            return (entry.deadline < state.sleepingUntil, start)
        }
        if start {
            let thread = spawnThread(name: "timer", role: .timer) { [self] in run() }
            pthread_detach(thread)
        } else if wake {
            parker.unpark()
        }
    }

    /// Counts a timer that fired or was cancelled.
    func noteSettled() {
        pending.subtract(1, ordering: .relaxed)
    }

    /// Timers waiting for their deadline.
    var pendingCount: Int { max(0, pending.load(ordering: .relaxed)) }

    /// Whether the timer thread has been started.
    var threadCount: Int { state.withLock { $0.threadStarted ? 1 : 0 } }

    private func run() {
        while true {
            let now = tm_monotonic_nanoseconds()
            var expired: [TimerEntry] = []
            let sleepUntil = state.withLock { state -> Int64 in
                while let top = state.heap.first {
                    if top.isSettled {
                        removeTop(&state.heap)
                    } else if top.deadline <= now {
                        expired.append(top)
                        removeTop(&state.heap)
                    } else {
                        break
                    }
                }
                state.sleepingUntil = state.heap.first?.deadline ?? Int64.max
                return state.sleepingUntil
            }
            for entry in expired { ThreadPool.shared.enqueue(.item(entry)) }
            if sleepUntil == Int64.max {
                parker.park()
            } else {
                parker.park(timeoutNanoseconds: max(0, sleepUntil - tm_monotonic_nanoseconds()))
            }
        }
    }

    private func removeTop(_ heap: inout [TimerEntry]) {
        let last = heap.removeLast()
        guard !heap.isEmpty else { return }
        heap[0] = last
        siftDown(&heap, 0)
    }

    private func siftUp(_ heap: inout [TimerEntry], _ start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].deadline < heap[parent].deadline else { return }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    private func siftDown(_ heap: inout [TimerEntry], _ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            guard left < heap.count else { return }
            var smallest = left
            if left + 1 < heap.count && heap[left + 1].deadline < heap[left].deadline { smallest = left + 1 }
            guard heap[smallest].deadline < heap[parent].deadline else { return }
            heap.swapAt(smallest, parent)
            parent = smallest
        }
    }
}

// All mutable state is inside the mutex or atomics.
extension TimerQueue: @unchecked Sendable {}

// Safe to share: immutable apart from the atomic claimed flag.
extension TimerEntry: @unchecked Sendable {}
