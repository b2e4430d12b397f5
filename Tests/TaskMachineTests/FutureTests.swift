import Glibc
import Synchronization
import Testing

@testable import TaskMachine

struct TestError: Error, Equatable {
    let code: Int
}

@Suite struct FutureTests {
    @Test func aPromiseCompletesItsFutureOnceAndTheFirstOutcomeStands() throws {
        let promise = Promise<Int>()
        #expect(promise.future.status == .pending)
        try promise.succeed(1)
        #expect(promise.future.status == .succeeded)
        #expect(throws: PromiseError.alreadyCompleted(.succeeded)) { try promise.succeed(2) }
        #expect(!promise.trySucceed(3))
        #expect(!promise.tryFail(TestError(code: 1)))
        #expect(!promise.tryCancel())
        #expect(try promise.future.getResult() == 1)
    }

    @Test func awaitingAFailedFutureRethrowsTheOriginalError() async throws {
        let promise = Promise<Int>()
        try promise.fail(TestError(code: 7))
        await #expect(throws: TestError(code: 7)) { try await promise.future.value }
        #expect(promise.future.status == .failed)
    }

    @Test func aFutureCarriesSeveralErrorsAndRethrowsTheFirst() throws {
        let promise = Promise<Void>()
        try promise.fail(errors: [TestError(code: 1), TestError(code: 2)])
        #expect(throws: TestError(code: 1)) { try promise.future.getResult() }
        #expect(promise.future.errors.compactMap { $0 as? TestError } == [TestError(code: 1), TestError(code: 2)])
        #expect(throws: PromiseError.noErrors) { try Promise<Void>().fail(errors: []) }
    }

    @Test func aCancelledFutureThrowsACancellationErrorCarryingItsToken() throws {
        let source = CancellationTokenSource()
        let promise = Promise<Int>()
        try promise.cancel(token: source.token)
        #expect(promise.future.status == .cancelled)
        do {
            _ = try promise.future.getResult()
            Issue.record("expected a cancellation error")
        } catch let error as OperationCancelledError {
            #expect(error.token == source.token)
        }
        #expect(promise.future.cancellationToken == source.token)
    }

    @Test func factoriesMakeCompletedFutures() throws {
        #expect(try Future.succeeded(5).getResult() == 5)
        let failed = Future<Int>.failed(TestError(code: 3))
        #expect(failed.status == .failed)
        #expect(failed.errors.count == 1)
        #expect(Future<Int>.cancelled().status == .cancelled)
        #expect(Future.completed.isCompleted)
    }

    @Test func valuesOfEverySizeAreKeptWhileTheFutureLivesAndReleasedWithIt() throws {
        final class Tracked: Sendable {}
        /// Larger than a future's two words of in-place storage, so it is kept in a box of its own.
        struct Large: Sendable {
            let object: Tracked
            let numbers: (Int, Int, Int, Int)
            let text: String
        }
        weak var inPlace: Tracked?
        weak var boxed: Tracked?
        weak var fromFactory: Tracked?
        do {
            let small = Promise<Tracked>()
            let large = Promise<Large>()
            let text = Promise<String>()
            do {
                let a = Tracked()
                let b = Tracked()
                let c = Tracked()
                inPlace = a
                boxed = b
                fromFactory = c
                try small.succeed(a)
                try large.succeed(Large(object: b, numbers: (1, 2, 3, 4), text: "large"))
                try text.succeed(String(repeating: "long enough to live on the heap ", count: 4))
                let completed = Future.succeeded(Large(object: c, numbers: (5, 6, 7, 8), text: "made"))
                #expect(try completed.getResult().numbers.3 == 8)
                #expect(try completed.getResult().object === c)
            }
            #expect(try small.future.getResult() === inPlace)
            #expect(try large.future.getResult().object === boxed)
            #expect(try large.future.getResult().numbers == (1, 2, 3, 4))
            #expect(try large.future.getResult().text == "large")
            #expect(try text.future.getResult().hasPrefix("long enough"))
            #expect(fromFactory == nil)
            #expect(inPlace != nil && boxed != nil)
        }
        #expect(inPlace == nil)
        #expect(boxed == nil)
    }

    @Test func theValueStorageIsTheFirstFieldOfEveryFutureAndSource() {
        func offset(of object: AnyObject, _ field: (UnsafeMutableRawPointer) -> Int) -> Int {
            field(Unmanaged.passUnretained(object).toOpaque())
        }
        let source = CancellationTokenSource()
        defer { source.cancel() }  // other tests wait for the timer queue to empty
        let futures: [AnyFuture] = [
            Promise<Int>().future, Future.succeeded("text"),
            Future<Void>.delay(.seconds(3_600), cancellation: source.token), Future.run { 1 }, CachedLookupBox.make(),
        ]
        for future in futures {
            let found = offset(of: future) { object in
                withUnsafeMutablePointer(to: &future.valueStorage) { UnsafeMutableRawPointer($0) - object }
            }
            #expect(found == heapObjectHeaderSize, "\(type(of: future))")
        }
        let core = ValueFutureSourceCore<Int>()
        let found = offset(of: core) { object in
            withUnsafeMutablePointer(to: &core.valueStorage) { UnsafeMutableRawPointer($0) - object }
        }
        #expect(found == heapObjectHeaderSize)
    }

    @Test func aFailedOrCancelledFutureHoldsNoValue() throws {
        final class Tracked: Sendable {}
        weak var never: Tracked?
        do {
            let failed = Promise<Tracked>()
            let cancelled = Promise<Tracked>()
            try failed.fail(TestError(code: 1))
            try cancelled.cancel()
            let late = Tracked()
            never = late
            #expect(!failed.trySucceed(late))
            #expect(!cancelled.trySucceed(late))
            #expect(throws: TestError(code: 1)) { try failed.future.getResult() }
        }
        #expect(never == nil)
    }

    @Test func readingAPendingFutureIsAClearError() {
        #expect(throws: FutureNotCompletedError.self) { try Promise<Int>().future.getResult() }
    }

    @Test func continuationsMoveFromOneToAListAndAllRunOnce() throws {
        let promise = Promise<Int>()
        let runs = Locked<[Int]>([])
        for index in 0..<5 {
            promise.future.getAwaiter().onCompleted { runs.withLock { $0.append(index) } }
        }
        #expect(promise.future.slot.load(ordering: .acquiring) == SlotWord.list)
        try promise.succeed(1)
        let deadline = ContinuousClock.now + .seconds(5)
        while runs.withLock({ $0.count }) < 5 && ContinuousClock.now < deadline { usleepish() }
        #expect(runs.withLock { $0.sorted() } == [0, 1, 2, 3, 4])
    }

    @Test func theOnlyContinuationRunsInlineOnTheCompletingThread() throws {
        let promise = Promise<Int>()
        let ranOn = Locked<RuntimeThread?>(nil)
        promise.future.getAwaiter().onCompleted { ranOn.withLock { $0 = RuntimeThread.current } }
        try promise.succeed(1)
        #expect(ranOn.withLock { $0 } == RuntimeThread.current)
    }

    @Test func runContinuationsAsynchronouslyNeverRunsOnTheCompletingThread() throws {
        let promise = Promise<Int>(runContinuationsAsynchronously: true)
        let ranOn = Locked<RuntimeThread?>(nil)
        promise.future.getAwaiter().onCompleted { ranOn.withLock { $0 = RuntimeThread.current } }
        try promise.succeed(1)
        let deadline = ContinuousClock.now + .seconds(5)
        while ranOn.withLock({ $0 }) == nil && ContinuousClock.now < deadline { usleepish() }
        #expect(ranOn.withLock { $0 } != nil)
        #expect(ranOn.withLock { $0 } != RuntimeThread.current)
        #expect(ranOn.withLock { $0 }?.role == .poolWorker)
    }
}

/// A short sleep for polling loops in tests.
func usleepish() {
    var request = timespec(tv_sec: 0, tv_nsec: 200_000)
    nanosleep(&request, nil)
}

/// A suspended state machine's box, for layout checks.
enum CachedLookupBox {
    static func make() -> AnyFuture {
        let never = Promise<Int>().future
        var machine = CachedLookup(key: 1, load: never)
        ValueFutureMethodBuilder.start(&machine)
        return machine.builder.box.future!
    }
}
