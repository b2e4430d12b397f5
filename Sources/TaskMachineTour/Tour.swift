/// The lesson on async internals, live: each section runs its examples on the TaskMachine runtime
/// and writes what happened.
///
/// Run the sections from a thread with no synchronization context (a program's main thread, a
/// test): each one sets up the contexts it needs and waits for all its work before returning.
///
/// ```swift
/// try Tour.run(into: .standardOutput)
/// try Tour.section(numbered: 4)?.run(into: .standardOutput)
/// ```
public enum Tour {
    /// The sections, in the lesson's order, numbered from 1.
    public static let sections: [TourSection] = [
        ContinuationSection.section,
        StateMachineSection.section,
        AwaiterSection.section,
        ContextSection.section,
        ValueFutureSection.section,
        ReturnValueSection.section,
        ResumeOrderSection.section,
        CommonErrorsSection.section,
    ]

    /// The section numbered `number`, or `nil` if there is none.
    public static func section(numbered number: Int) -> TourSection? {
        sections.first { $0.number == number }
    }

    /// Runs every section in order, with a blank line between sections.
    /// - Throws: the first error a section did not expect.
    public static func run(into output: TourOutput) throws {
        for (index, section) in sections.enumerated() {
            if index > 0 { output("") }
            try section.run(into: output)
        }
    }
}

/// One section of the tour: a heading, a line saying what it shows, and its live output.
public struct TourSection: Sendable {
    /// The section's number, from 1.
    public let number: Int
    /// A short heading.
    public let title: String
    /// One line saying what the section shows.
    public let explanation: String
    private let body: @Sendable (TourOutput) throws -> Void

    init(number: Int, title: String, explanation: String, body: @escaping @Sendable (TourOutput) throws -> Void) {
        self.number = number
        self.title = title
        self.explanation = explanation
        self.body = body
    }

    /// Writes the heading and the explanation, then runs the examples, writing their lines
    /// indented under the heading.
    /// - Throws: an error the section did not expect; the errors it demonstrates are caught and
    ///   written.
    public func run(into output: TourOutput) throws {
        output("\(number). \(title)")
        let indented = output.indented(by: "   ")
        indented(explanation)
        indented("")
        try body(indented.indented(by: "  "))
    }
}
