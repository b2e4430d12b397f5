import Foundation

/// Compiles Swift snippets against the TaskMachine module this program was built with, to show
/// what the compiler accepts and refuses.
struct CompilerCheck {
    /// Why no check could be run.
    enum Unavailable: Error, CustomStringConvertible {
        case noCompiler
        case noModule(searched: String)

        var description: String {
            switch self {
            case .noCompiler:
                "swiftc was not found (set SWIFTC or put it on PATH)"
            case .noModule(let searched):
                "the built TaskMachine module was not found next to this program (looked in \(searched))"
            }
        }
    }

    /// What the compiler said about a snippet.
    struct Verdict {
        /// Whether it compiled.
        var compiled: Bool
        /// Its `error:` and `note:` lines, file paths shortened to the snippet's name.
        var diagnostics: [String]
    }

    let swiftc: URL
    /// Folders to search for modules: the Swift modules, and the C targets' module maps that
    /// TaskMachine's module needs to load.
    let includePaths: [String]

    /// Finds `swiftc` and the build folder of the running executable (a SwiftPM build puts the
    /// executables, test bundles included, beside `Modules/` and the `<Target>.build/` folders).
    static func locate() throws(Unavailable) -> CompilerCheck {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let buildFolder = executable.deletingLastPathComponent()
        let files = FileManager.default
        // SwiftPM 6 keeps the modules in Modules/; earlier versions kept them in the build folder.
        let moduleFolder = [buildFolder.appendingPathComponent("Modules"), buildFolder].first {
            files.fileExists(atPath: $0.appendingPathComponent("TaskMachine.swiftmodule").path)
        }
        guard let moduleFolder else { throw .noModule(searched: buildFolder.path) }
        let moduleMapFolders = ((try? files.contentsOfDirectory(atPath: buildFolder.path)) ?? [])
            .filter { $0.hasSuffix(".build") }
            .map { buildFolder.appendingPathComponent($0) }
            .filter { files.fileExists(atPath: $0.appendingPathComponent("module.modulemap").path) }
            .map(\.path)
            .sorted()
        guard let swiftc = findCompiler() else { throw .noCompiler }
        return CompilerCheck(swiftc: swiftc, includePaths: [moduleFolder.path] + moduleMapFolders)
    }

    private static func findCompiler() -> URL? {
        let environment = ProcessInfo.processInfo.environment
        if let explicit = environment["SWIFTC"], FileManager.default.isExecutableFile(atPath: explicit) {
            return URL(fileURLWithPath: explicit)
        }
        for folder in (environment["PATH"] ?? "").split(separator: ":") {
            let candidate = URL(fileURLWithPath: String(folder)).appendingPathComponent("swiftc")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return nil
    }

    /// Compiles `source` as `fileName` up to SIL, with the mandatory passes.
    ///
    /// `-typecheck` is not enough: a second consume of a non-copyable value is found by the move
    /// checker, a SIL pass that runs after type checking; `-emit-sil` runs it and writes nothing.
    func compile(_ source: String, as fileName: String) throws -> Verdict {
        let folder = FileManager.default.temporaryDirectory
            .appendingPathComponent("taskmachine-tour-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try source.write(to: folder.appendingPathComponent(fileName), atomically: true, encoding: .utf8)

        let process = Process()
        process.executableURL = swiftc
        process.currentDirectoryURL = folder
        process.arguments =
            ["-emit-sil", "-o", "/dev/null", "-diagnostic-style", "llvm"]
            + includePaths.flatMap { ["-I", $0] } + [fileName]
        let messages = Pipe()
        process.standardOutput = messages
        process.standardError = messages
        try process.run()
        let data = messages.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()

        let diagnostics = String(decoding: data, as: UTF8.self)
            .split(separator: "\n")
            .filter { $0.contains(": error: ") || $0.contains(": note: ") }
            .map { $0.replacingOccurrences(of: folder.path + "/", with: "") }
        return Verdict(compiled: process.terminationStatus == 0, diagnostics: diagnostics)
    }
}
