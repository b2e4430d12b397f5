import TaskMachine

/// An async method that awaits `inner` once and returns its value plus one, written as the state
/// machine a compiler would make of `async Future<Int> AddOne(Future<Int> inner) => await inner + 1;`.
public struct AddOne: AsyncStateMachine {
    public var builder = FutureMethodBuilder<Int>()
    var state = 0
    let inner: Future<Int>
    var awaiter: FutureAwaiter<Int>?

    public mutating func moveNext() {
        do {
            if state == 0 {
                let awaiter = inner.getAwaiter()
                self.awaiter = awaiter
                state = 1
                if !awaiter.isCompleted {
                    awaitUnsafeOnCompleted(awaiter)
                    return
                }
            }
            builder.setResult(try awaiter!.getResult() + 1)
        } catch {
            builder.setError(error)
        }
    }

    /// Starts the method: runs it up to its await and returns its future.
    @inline(never)
    public static func start(_ inner: Future<Int>) -> Future<Int> {
        var machine = AddOne(inner: inner)
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}

/// `async ValueFuture<Int> AddOnePooled(input) { return await input + 1 }` on the pooling builder:
/// once warm, a call that suspends takes its box from the thread's cache instead of allocating.
public struct AddOnePooled: AsyncStateMachine {
    public var builder = PoolingValueFutureMethodBuilder<Int>()
    var state = 0
    let input: ValueFutureAwaiter<Int>

    public mutating func moveNext() {
        do {
            if state == 0 {
                state = 1
                if !input.isCompleted {
                    awaitUnsafeOnCompleted(input)
                    return
                }
            }
            builder.setResult(try input.getResult() + 1)
        } catch {
            builder.setError(error)
        }
    }

    /// Starts the method: runs it up to its await and returns its value future.
    @inline(never)
    public static func start(_ input: consuming ValueFuture<Int>) -> ValueFuture<Int> {
        var machine = AddOnePooled(input: input.getAwaiter())
        PoolingValueFutureMethodBuilder.start(&machine)
        return machine.builder.valueFuture
    }
}

/// `async Future<Int> AddOneToRead(input) { return await input + 1 }`: the plain builder awaiting a
/// value future, so that a call that suspends on a pooled source allocates its box and nothing
/// else.
public struct AddOneToRead: AsyncStateMachine {
    public var builder = FutureMethodBuilder<Int>()
    var awaitedAlready = false
    let input: ValueFutureAwaiter<Int>

    public mutating func moveNext() {
        do {
            if !awaitedAlready {
                awaitedAlready = true
                if !input.isCompleted {
                    awaitUnsafeOnCompleted(input)
                    return
                }
            }
            builder.setResult(try input.getResult() + 1)
        } catch {
            builder.setError(error)
        }
    }

    /// Starts the method: runs it up to its await and returns its future.
    @inline(never)
    public static func start(_ input: consuming ValueFuture<Int>) -> Future<Int> {
        var machine = AddOneToRead(input: input.getAwaiter())
        FutureMethodBuilder.start(&machine)
        return machine.builder.future
    }
}
