// Resuming a continuation twice must not compile: resuming consumes it.
import TaskMachine

func resumeTwice(_ continuation: consuming AwaitContinuation) {
    continuation.resume()
    continuation.resume()
}
