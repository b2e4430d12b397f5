public import Synchronization

/// What every state machine's box has beside its machine: the resumption bookkeeping and, for a
/// pooled box, its reuse.
///
/// A pooled box (``PoolingValueFutureMethodBuilder``) hands out its result as a value future on
/// itself, a ``ValueFutureSource`` whose token is the box's use count. Two parties hold it: the
/// method, until its last resumption has returned, and the reader of its result, until it has read
/// it. When both have let go, the box is reset and put in the cache of the thread that let go last,
/// where the next call of the same method on that thread finds it. A value future kept past its
/// one read names an older use and gets a stale-token error, as with any pooled source.
@usableFromInline
class MachineBox<Value: Sendable>: Future<Value> {
    // Eight bytes in all, so that a box of a small machine stays in a 128-byte allocation.

    /// Counts resumptions, so the thread that ran the final segment can tell it was the last one.
    /// It runs on across the uses of a pooled box, never reset: a resumption of an earlier use,
    /// preempted between its segment and its check while the box was recycled and a later use ran
    /// to completion, must not find its own number again and drop that use's machine.
    final let resumptions = Atomic<UInt32>(0)
    /// Pooled boxes only: the use the current value future belongs to.
    @usableFromInline
    let use = Atomic<UInt16>(0)
    /// Which parties still hold a pooled box (``Holder``'s bits), and `pooledBit`, which never
    /// changes: read atomically, as the method's final resumption may be letting go on another
    /// thread while the caller still asks whether the box is pooled.
    @usableFromInline
    let holders = Atomic<UInt8>(0)
    /// Set once the machine is dropped, and while a recycled box waits in a cache for its next
    /// machine; only the one resumption running touches it.
    @usableFromInline @exclusivity(unchecked) final var finished = false

    @usableFromInline
    static var pooledBit: UInt8 { 4 }

    /// Whether the box goes back to its thread's cache after use.
    @inlinable
    final var isPooled: Bool { holders.load(ordering: .relaxed) & Self.pooledBit != 0 }

    /// The two parties of a pooled box.
    @usableFromInline
    enum Holder: UInt8 {
        /// The method: lets go when its final resumption returns.
        case method = 1
        /// The reader: lets go when it has read the result.
        case reader = 2
    }

    /// The holders' bits and `pooledBit`; the bits above them name the use (``useTag(_:)``).
    private static var holderBits: UInt8 { Holder.method.rawValue | Holder.reader.rawValue | pooledBit }

    /// The low five bits of a use's token, kept in `holders` above the holders' bits, so that a
    /// reader lets go of the use it read and of no other: a copy of an awaiter kept past its read
    /// (misuse), reading as the box is recycled, must not let go for the next use's reader, nor
    /// two copies reading one use let go twice.
    @usableFromInline
    static func useTag(_ token: UInt16) -> UInt8 { UInt8(truncatingIfNeeded: token) << 3 }

    @usableFromInline
    init(pooled: Bool) {
        super.init(runsContinuationsAsynchronously: false)
        if pooled {
            holders.store(Self.holderBits | Self.useTag(0), ordering: .relaxed)
            slot.store(SlotWord.emptySlot(of: 0), ordering: .relaxed)
        }
    }

    /// Lets go of a pooled box for its method, once its final resumption has returned; the last to
    /// let go recycles it. Does nothing for a box that is not pooled.
    @usableFromInline
    final func releaseMethod() {
        // The reader usually let go first (a method that completed before its result was read):
        // then nobody else changes `holders` any more, and an acquiring load, which sees the
        // reader's releasing update, replaces the locked read-modify-write. The method holds the
        // current use, so the use's bits need no look.
        let method = Holder.method.rawValue
        let holding = holders.load(ordering: .acquiring) & Self.holderBits
        if holding == method | Self.pooledBit { return recycle() }
        guard holding & Self.pooledBit != 0 else { return }  // not pooled: nothing to let go of
        let before = holders.bitwiseAnd(~method, ordering: .acquiringAndReleasing).oldValue & Self.holderBits
        guard before & method != 0, before == method | Self.pooledBit else { return }
        recycle()
    }

    /// Lets go of a pooled box for the reader of the use `token` names; the last to let go
    /// recycles it. Only once, and only for that use: a second read of the use (through a copy of
    /// its awaiter) or a read of an earlier one lets go of nothing. Does nothing for a box that is
    /// not pooled.
    @usableFromInline
    final func releaseReader(of token: UInt16) {
        let reader = Holder.reader.rawValue
        let mine = reader | Self.pooledBit | Self.useTag(token)
        var holding = holders.load(ordering: .relaxed)
        while holding & ~Holder.method.rawValue == mine {
            let (exchanged, original) = holders.compareExchange(
                expected: holding, desired: holding & ~reader, ordering: .acquiringAndReleasing)
            if exchanged {
                if holding == mine { recycle() }  // the method had let go already
                return
            }
            holding = original
        }
    }

    /// Resets the box for its next use and offers it to this thread's cache; a full cache lets it go.
    private func recycle() {
        // The use first, as `ValueFutureSourceCore.reset()` moves its version first: from here a
        // value future of the old use gets a stale-token error, rather than a look at the box
        // being cleared or, registering, a place in the next use. A load and a store, not a
        // read-modify-write (a locked instruction on x86): only the last holder to let go writes
        // the use, once per use. A registration still holding the old use's token expects that
        // use's empty slot, and finds the completed slot or the next use's: it is refused either
        // way.
        let next = use.load(ordering: .relaxed) &+ 1
        use.store(next, ordering: .releasing)
        // `finished` stays set: the box holds no machine until the next use installs one.
        resetForReuse(use: next)
        holders.store(Self.holderBits | Self.useTag(next), ordering: .relaxed)
        BoxCache.put(self, as: ObjectIdentifier(type(of: self)))
    }

    /// The token of the current use.
    @inlinable
    final var token: UInt16 { use.load(ordering: .acquiring) }

    @inlinable @inline(__always)
    final func check(_ token: UInt16) throws {
        let current = use.load(ordering: .acquiring)
        guard token == current else { throw ValueFutureSourceError.staleToken(expected: current, found: token) }
    }

    /// Whether the use `token` names has completed; `true` for an earlier use, as reading it throws
    /// at once. What `status(token:)` says, with no error to make and drop.
    @inlinable
    final func isCompleted(token: UInt16) -> Bool {
        token != self.token || isCompleted
    }
}

extension MachineBox: ValueFutureSource {
    @usableFromInline
    func status(token: UInt16) throws -> FutureStatus {
        try check(token)
        return status
    }

    // Inlinable, as `getResult(token:)` is: out of line, in code generic over `Value`, the token
    // check was a call of its own.
    @inlinable
    func onCompleted(token: UInt16, _ continuation: consuming AwaitContinuation) throws {
        // The continuation, consumed at the end of this call, keeps its job for `register`.
        try register(continuation.job, token: token)
    }

    /// Registers `job` as the continuation of the use `token` names; the caller keeps `job` alive
    /// for the call. A runtime awaiter's path, with one retain for the slot.
    @inlinable
    func register(_ job: Job, token: UInt16) throws {
        try check(token)
        let word = job.retainedWord()
        // A stale copy of an awaiter, registering as the reader's read recycles the box, is queued
        // rather than landing in the next use, whose own await it would refuse.
        if try SlotWord.installSingle(word: word, for: token, in: slot) { return }
        Continuations.dispatch(slotWord: word, mayRunInline: false)
    }

    // Inlinable, so that an awaiter specialized for `Value` reads the value with a plain load.
    @inlinable
    func getResult(token: UInt16) throws -> Value {
        try check(token)
        guard isCompleted else { throw ValueFutureSourceError.notCompleted }
        defer { releaseReader(of: token) }
        return try getResult()
    }
}

/// Each thread's cache of pooled state machine boxes, a few per machine type.
///
/// Two-way set-associative by type: a type keeps its boxes in one of two rows, chosen by different
/// bits of its metadata's address, so that two types sharing one row can both keep boxes. A type
/// whose two rows both hold boxes of other types takes over the one claimed longer ago, letting
/// that type's boxes go: boxes left in the cache by a method no longer called must not keep a
/// method called in a loop allocating a box every call. Were it always the same one of the two, two
/// methods called by turns (a method and the pooled method it awaits), whose other rows hold such
/// boxes, would take a row they share over from each other on every call. Plain memory rather than
/// arrays, so that taking and keeping a box cost a few loads and stores, with no copy-on-write
/// checks.
@usableFromInline
struct BoxCache {
    static let kinds = 32
    static let boxesPerKind = 16

    /// Per row: the type's metadata address, then how many boxes the row holds.
    private var rows: UnsafeMutablePointer<(key: UInt, count: Int)>?
    /// `boxesPerKind` retained boxes per row.
    private var boxes: UnsafeMutablePointer<Unmanaged<AnyFuture>>?
    /// Per row: when a type last claimed it, on the count of claims `claims`; read and written by
    /// `claimRow` alone, off the path of a call that finds its row.
    private var claimedAt: UnsafeMutablePointer<UInt>?
    private var claims: UInt = 0

    /// The first of the two rows the type `key` names may use; `secondRow(after:for:)` the other.
    /// Metadata addresses are 16-byte aligned, so the low four bits say nothing: the next five
    /// choose the first row, and the four after them which of the other half's rows is the second.
    @inline(__always)
    private static func firstRow(for key: ObjectIdentifier) -> Int {
        Int(truncatingIfNeeded: (UInt(bitPattern: key) >> 4) & UInt(kinds - 1))
    }

    @inline(__always)
    private static func secondRow(after first: Int, for key: ObjectIdentifier) -> Int {
        first ^ (Int(truncatingIfNeeded: (UInt(bitPattern: key) >> 9) & UInt(kinds / 2 - 1)) | kinds / 2)
    }

    /// The row holding the type `key` names, if either of its two does.
    @inline(__always)
    private static func row(holding key: ObjectIdentifier, in rows: UnsafeMutablePointer<(key: UInt, count: Int)>)
        -> Int?
    {
        let first = firstRow(for: key)
        if rows[first].key == UInt(bitPattern: key) { return first }
        let second = secondRow(after: first, for: key)
        return rows[second].key == UInt(bitPattern: key) ? second : nil
    }

    /// A cached box of the type `key` names, if this thread has one.
    @usableFromInline
    static func take(_ key: ObjectIdentifier) -> AnyFuture? {
        // Unretained (the thread's state outlives the call): a strong local cost a retain and a
        // release per call, and a closure through `withCurrent` is not inlined here.
        unowned(unsafe) let state = ThreadState.unretainedCurrent
        guard let rows = state.boxCache.rows, let boxes = state.boxCache.boxes,
            let row = row(holding: key, in: rows), rows[row].count > 0
        else { return nil }
        rows[row].count -= 1
        return boxes[row * boxesPerKind + rows[row].count].takeRetainedValue()
    }

    /// Keeps `box` for the next call on this thread, if there is room.
    static func put(_ box: AnyFuture, as key: ObjectIdentifier) {
        // Unretained, as in `take`.
        unowned(unsafe) let state = ThreadState.unretainedCurrent
        if state.boxCache.rows == nil { state.boxCache.allocate() }
        let rows = state.boxCache.rows.unsafelyUnwrapped
        let boxes = state.boxCache.boxes.unsafelyUnwrapped
        let row = row(holding: key, in: rows) ?? state.boxCache.claimRow(for: key)
        guard rows[row].count < boxesPerKind else { return }
        boxes[row * boxesPerKind + rows[row].count] = Unmanaged.passRetained(box)
        rows[row].count += 1
    }

    /// Gives the type `key` names one of its two rows, where it holds neither: an empty one, else
    /// the one claimed longer ago, whose boxes of another type go. A row claimed since by a type
    /// still called stays: that type claims no row while it holds one. A cached box holds no
    /// machine, so letting it go runs none of a method's code.
    @inline(never)
    private mutating func claimRow(for key: ObjectIdentifier) -> Int {
        let (rows, boxes, claimedAt) = (rows.unsafelyUnwrapped, boxes.unsafelyUnwrapped, claimedAt.unsafelyUnwrapped)
        let first = Self.firstRow(for: key)
        let second = Self.secondRow(after: first, for: key)
        let row =
            rows[first].count == 0 || (rows[second].count != 0 && claimedAt[first] < claimedAt[second])
            ? first : second
        let evicted = rows[row].count
        rows[row] = (UInt(bitPattern: key), 0)
        claims += 1
        claimedAt[row] = claims
        for index in 0..<evicted { boxes[row * Self.boxesPerKind + index].release() }
        return row
    }

    private mutating func allocate() {
        let rows = UnsafeMutablePointer<(key: UInt, count: Int)>.allocate(capacity: Self.kinds)
        rows.initialize(repeating: (0, 0), count: Self.kinds)
        self.rows = rows
        boxes = .allocate(capacity: Self.kinds * Self.boxesPerKind)
        let claimedAt = UnsafeMutablePointer<UInt>.allocate(capacity: Self.kinds)
        claimedAt.initialize(repeating: 0, count: Self.kinds)
        self.claimedAt = claimedAt
    }

    /// Releases every cached box and the cache's memory; when its thread ends.
    mutating func empty() {
        guard let rows, let boxes, let claimedAt else { return }
        for row in 0..<Self.kinds {
            for index in 0..<rows[row].count { boxes[row * Self.boxesPerKind + index].release() }
        }
        rows.deallocate()
        boxes.deallocate()
        claimedAt.deallocate()
        self.rows = nil
        self.boxes = nil
        self.claimedAt = nil
    }
}

// Safe to share: the machine is touched by one resumption at a time, the reuse state through atomics.
extension MachineBox: @unchecked Sendable {}
