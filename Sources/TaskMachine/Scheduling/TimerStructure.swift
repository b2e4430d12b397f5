/// What `TimingWheel` and `TimerLists` share, so that one benchmark or test drives either.
///
/// The contract: a timer is linked at a tick after `elapsed` (an earlier one is refused) and
/// unlinked by `remove` or by expiring; `advance` hands the timers due over in deadline order, an
/// array of one tick at a time, and never touches them again. The structure holds no references:
/// whoever links a timer keeps it alive (`TimerQueue` retains it).
protocol TimerStructure {
    init()
    /// Ticks processed: every timer due at or before it has expired.
    var elapsed: UInt64 { get }
    /// Timers linked.
    var count: Int { get }
    /// The tick at which `advance` next has work; `nil` when nothing is linked.
    var nextDeadline: UInt64? { get }
    /// The heap the structure keeps for its timers, not counting the timers.
    var heapBytes: Int { get }
    /// Links `node`, due at `tick`; `false`, linking nothing, when `tick` is not after `elapsed`.
    mutating func insert(_ node: TimerNode, at tick: UInt64) -> Bool
    /// Unlinks `node` if it is linked; a large array this empties goes to `spent`.
    mutating func remove(_ node: TimerNode, spent: inout [TimerNode]) -> Bool
    /// Moves time to `now`, handing what is due to `expire`; emptied arrays go to `spent`.
    mutating func advance(to now: UInt64, spent: inout [[TimerNode]], _ expire: ([TimerNode]) -> Void)
}

extension TimerStructure {
    /// Whether `node` is linked. An expired timer keeps its last place, so it counts as linked only
    /// while its tick is after `elapsed` (every timer due by then has left the structure); a
    /// removed one has no place.
    func contains(_ node: TimerNode) -> Bool {
        node.place != TimingWheel.nowhere && node.tick > elapsed
    }

    /// Unlinks `node` if it is linked; returns whether it was. Frees at once what the removal
    /// empties.
    mutating func remove(_ node: TimerNode) -> Bool {
        var spent: [TimerNode] = []
        return remove(node, spent: &spent)
    }
}

extension TimingWheel: TimerStructure {}
extension TimerLists: TimerStructure {}
