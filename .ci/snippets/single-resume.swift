// The control for double-resume.swift: the same code resuming once compiles.
import TaskMachine

func resumeOnce(_ continuation: consuming AwaitContinuation) {
    continuation.resume()
}
