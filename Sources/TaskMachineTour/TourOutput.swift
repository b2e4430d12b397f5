/// Where the tour writes its lines: standard output for the `taskmachine` command, a buffer in
/// tests.
///
/// A section's continuations may run on other threads (a pool worker, a context's thread), so the
/// sink must accept lines from any thread; the tour makes sure they arrive one at a time, in order.
///
/// ```swift
/// let lines = Mutex<[String]>([])
/// try Tour.section(numbered: 6)!.run(into: TourOutput { line in lines.withLock { $0.append(line) } })
/// ```
public struct TourOutput: Sendable {
    private let writeLine: @Sendable (String) -> Void

    /// Creates a sink that hands each line, without its newline, to `writeLine`.
    public init(_ writeLine: @escaping @Sendable (String) -> Void) {
        self.writeLine = writeLine
    }

    /// Writes one line.
    public func callAsFunction(_ line: String) {
        writeLine(line)
    }

    /// A sink that prints each line to standard output.
    public static let standardOutput = TourOutput { line in print(line) }

    /// A sink that writes to this one with `prefix` before every line.
    func indented(by prefix: String = "  ") -> TourOutput {
        TourOutput { line in self(line.isEmpty ? line : prefix + line) }
    }
}
