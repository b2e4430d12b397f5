import ArgumentParser
import TaskMachineTour

/// The `taskmachine` command: a root for the tool's subcommands.
struct TaskMachineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "taskmachine",
        abstract: "The TaskMachine async runtime, shown at work.",
        subcommands: [TourCommand.self],
        defaultSubcommand: TourCommand.self
    )
}

/// `taskmachine tour`: the lesson on async internals, run live.
struct TourCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tour",
        abstract: "Walk through async internals, every example running on the TaskMachine runtime."
    )

    // Unconditional, so that `--section -1` reaches `validate()` as a number and is refused as
    // one, rather than taken for an option and reported as a missing value.
    @Option(name: .long, parsing: .unconditional, help: "Run only this section (1-\(Tour.sections.count)).")
    var section: Int?

    @Flag(name: .long, help: "List the sections (with --section, that one) and exit.")
    var list = false

    func validate() throws {
        if let section, Tour.section(numbered: section) == nil {
            throw ValidationError("There is no section \(section). Valid sections:\n\(Self.sectionList)")
        }
    }

    func run() throws {
        if list {
            print(section.flatMap(Tour.section(numbered:)).map(Self.line(for:)) ?? Self.sectionList)
        } else if let section, let chosen = Tour.section(numbered: section) {
            try chosen.run(into: .standardOutput)
        } else {
            try Tour.run(into: .standardOutput)
        }
    }

    private static var sectionList: String {
        Tour.sections.map(line(for:)).joined(separator: "\n")
    }

    private static func line(for section: TourSection) -> String {
        "  \(section.number). \(section.title)"
    }
}

TaskMachineCommand.main()
