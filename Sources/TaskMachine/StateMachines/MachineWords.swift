/// Zeroed word tuples of several sizes: the raw storage of a state machine in its box (see
/// ``StateMachineBox``). Tuples of `UInt` are plain data, so the box's `deinit` destroys them with
/// no work.
@usableFromInline
enum MachineWords {
    @usableFromInline typealias W1 = UInt
    @inlinable static var w1: W1 { 0 }
    @usableFromInline typealias W2 = (UInt, UInt)
    @inlinable static var w2: W2 { (0, 0) }
    @usableFromInline typealias W3 = (UInt, UInt, UInt)
    @inlinable static var w3: W3 { (0, 0, 0) }
    @usableFromInline typealias W4 = (UInt, UInt, UInt, UInt)
    @inlinable static var w4: W4 { (0, 0, 0, 0) }
    @usableFromInline typealias W5 = (UInt, UInt, UInt, UInt, UInt)
    @inlinable static var w5: W5 { (0, 0, 0, 0, 0) }
    @usableFromInline typealias W6 = (UInt, UInt, UInt, UInt, UInt, UInt)
    @inlinable static var w6: W6 { (0, 0, 0, 0, 0, 0) }
    @usableFromInline typealias W7 = (UInt, UInt, UInt, UInt, UInt, UInt, UInt)
    @inlinable static var w7: W7 { (0, 0, 0, 0, 0, 0, 0) }
    @usableFromInline typealias W8 = (UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt)
    @inlinable static var w8: W8 { (0, 0, 0, 0, 0, 0, 0, 0) }
    // Larger ones nest the smaller: a tuple of tuples of words is as many contiguous words.
    @usableFromInline typealias W10 = (W8, W2)
    @inlinable static var w10: W10 { (w8, w2) }
    @usableFromInline typealias W12 = (W8, W4)
    @inlinable static var w12: W12 { (w8, w4) }
    @usableFromInline typealias W14 = (W8, W6)
    @inlinable static var w14: W14 { (w8, w6) }
    @usableFromInline typealias W16 = (W8, W8)
    @inlinable static var w16: W16 { (w8, w8) }
    @usableFromInline typealias W20 = (W16, W4)
    @inlinable static var w20: W20 { (w16, w4) }
    @usableFromInline typealias W24 = (W16, W8)
    @inlinable static var w24: W24 { (w16, w8) }
    @usableFromInline typealias W32 = (W16, W16)
    @inlinable static var w32: W32 { (w16, w16) }
}
