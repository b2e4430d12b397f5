/// Where a timer sits in the timing wheel: its deadline in wheel ticks, the slot it is in and its
/// index in that slot's array.
///
/// It lives inside the timer itself (a `TimerEntry` or a `Delay`), so the wheel finds and
/// unlinks a timer in O(1). 12 bytes. Read and written only under the timer queue's lock.
struct TimerLinks {
    /// The deadline in ticks in the high 48 bits (2^48 ms is 8,900 years; `Int64.max` ns is under
    /// 2^44 ms), the place in the low 16: one word instead of two keeps a delay small.
    private var packed = UInt64(TimingWheel.nowhere)
    /// The timer's index in its slot's array.
    var index: UInt32 = 0

    var tick: UInt64 {
        get { packed >> 16 }
        set { packed = newValue << 16 | (packed & 0xFFFF) }
    }

    /// `level * 64 + slot`, `TimingWheel.farPlace`, or `TimingWheel.nowhere` when never linked or
    /// removed. An expired timer keeps its last place (see `TimingWheel`).
    var place: UInt16 {
        get { UInt16(truncatingIfNeeded: packed) }
        set { packed = (packed & ~0xFFFF) | UInt64(newValue) }
    }
}

/// A timer in the wheel, as one tagged word: a `TimerEntry`, or a `Delay` that is its own timer.
///
/// Two class hierarchies share the wheel because a delay must be a `Future<Void>` (it is what
/// `Future.delay` returns) and the other timers are work items; making the future its own timer
/// saves a second object per delay. The low bit tells them apart (objects are 16-byte aligned).
/// The word holds no reference count: the wheel retains a node explicitly while it is linked.
struct TimerNode: Hashable {
    private let word: UInt

    private static let delayTag: UInt = 1

    init(_ entry: TimerEntry) {
        word = UInt(bitPattern: Unmanaged.passUnretained(entry).toOpaque())
    }

    init(_ delay: Delay) {
        word = UInt(bitPattern: Unmanaged.passUnretained(delay).toOpaque()) | TimerNode.delayTag
    }

    private var pointer: UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: word & ~TimerNode.delayTag).unsafelyUnwrapped
    }

    private var isDelay: Bool { word & TimerNode.delayTag != 0 }

    /// The node's links, read without retain or release (the caller holds the node alive: the
    /// wheel's retain, or its own reference). A plain read, not an `inout` access.
    @inline(__always)
    private var links: TimerLinks {
        if isDelay {
            return Unmanaged<Delay>.fromOpaque(pointer)._withUnsafeGuaranteedRef { $0.timerLinks }
        }
        return Unmanaged<TimerEntry>.fromOpaque(pointer)._withUnsafeGuaranteedRef { $0.timerLinks }
    }

    /// Changes the node's links; only under the queue's lock.
    @inline(__always)
    private func updateLinks(_ body: (inout TimerLinks) -> Void) {
        if isDelay {
            Unmanaged<Delay>.fromOpaque(pointer)._withUnsafeGuaranteedRef { body(&$0.timerLinks) }
        } else {
            Unmanaged<TimerEntry>.fromOpaque(pointer)._withUnsafeGuaranteedRef { body(&$0.timerLinks) }
        }
    }

    var index: UInt32 {
        get { links.index }
        nonmutating set { updateLinks { $0.index = newValue } }
    }

    var tick: UInt64 {
        get { links.tick }
        nonmutating set { updateLinks { $0.tick = newValue } }
    }

    var place: UInt16 {
        get { links.place }
        nonmutating set { updateLinks { $0.place = newValue } }
    }

    /// Whether the timer has fired or been cancelled: for a delay, whether its future has been claimed
    /// for completion; an atomic load either way.
    var isSettled: Bool {
        if isDelay {
            return Unmanaged<Delay>.fromOpaque(pointer)._withUnsafeGuaranteedRef {
                $0.completionState.load(ordering: .acquiring) != 0
            }
        }
        return Unmanaged<TimerEntry>.fromOpaque(pointer)._withUnsafeGuaranteedRef { $0.isSettled }
    }

    /// Takes a reference for the wheel, before the node is linked.
    func retain() {
        if isDelay {
            _ = Unmanaged<Delay>.fromOpaque(pointer).retain()
        } else {
            _ = Unmanaged<TimerEntry>.fromOpaque(pointer).retain()
        }
    }

    /// Drops the wheel's reference to a node that was unlinked; may free it, so call it outside the
    /// lock.
    func release() {
        if isDelay {
            Unmanaged<Delay>.fromOpaque(pointer).release()
        } else {
            Unmanaged<TimerEntry>.fromOpaque(pointer).release()
        }
    }

    /// Fires the expired timer here, taking over the wheel's reference and handing it, with the
    /// continuation a delay ran, to `retired`: the caller releases them later (see ``ExpiredTimers``).
    func fire(retiringInto retired: inout [Job]) {
        let job = takeJob()
        if isDelay {
            Unmanaged<Delay>.fromOpaque(pointer)._withUnsafeGuaranteedRef { $0.fire(retiringInto: &retired) }
        } else {
            job.run()
        }
        retired.append(job)
    }

    /// The node as a pool job, taking over the wheel's reference: a delay runs as a future job (it
    /// completes itself), any other timer as a work item.
    func takeJob() -> Job {
        if isDelay {
            return .future(Unmanaged<Delay>.fromOpaque(pointer).takeRetainedValue())
        }
        return .item(Unmanaged<TimerEntry>.fromOpaque(pointer).takeRetainedValue())
    }
}
