/// A counter that closures on other threads may bump; the benchmarks read it to keep the work
/// observable. Only ever touched by one thread at a time in these benchmarks (the closures run
/// one after another), hence no lock.
public final class UncheckedCounter: @unchecked Sendable {
    public var value = 0

    public init() {}
}
