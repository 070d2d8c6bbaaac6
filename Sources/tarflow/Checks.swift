import Foundation
import TarFlow

/// A bad flag or input file, reported as one line that names it and says what to do.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }

    /// A flag combination the CLI refuses itself, worded as the library's invalid input.
    static func invalidInput(_ m: String) -> CLIError { CLIError("invalid input: \(m)") }
}

/// Checks shared by the subcommands, run before any expensive work so a bad flag costs nothing
/// and leaves every output untouched.
enum Checks {
    /// Upper bound of `--threads`: each compiled graph starts a pool of this many threads, and
    /// more threads than cores never helps.
    static let maxThreads = 256

    static func threads(_ n: Int) throws {
        guard (1...maxThreads).contains(n) else { throw CLIError("--threads \(n) is out of range: use 1...\(maxThreads)") }
    }

    /// --batch-size, --offset, --limit and --threads of the commands that walk a dataset.
    static func batching(batchSize: Int, offset: Int, limit: Int?, threads n: Int) throws {
        try positive(batchSize, "--batch-size")
        guard offset >= 0 else { throw CLIError("--offset \(offset) must be >= 0") }
        try positive(limit, "--limit")
        try threads(n)
    }

    static func positive(_ n: Int?, _ flag: String) throws {
        if let n, n <= 0 { throw CLIError("\(flag) \(n) must be positive") }
    }

    /// An output path must name a file in an existing folder; checked before the run so a typo
    /// does not cost a whole computation (the write itself is atomic: temporary file + rename).
    static func output(_ path: String?, _ flag: String) throws {
        guard let path else { return }
        let url = URL(fileURLWithPath: path)
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), isDir.boolValue {
            throw CLIError("\(flag) \(path) is a folder; give a file name")
        }
        let parent = url.deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: parent, isDirectory: &isDir), isDir.boolValue else {
            throw CLIError("\(flag) \(path): the folder \(parent) does not exist; create it first")
        }
    }

    /// Loads a model file; `TarFlowModel` checks its graphs against its config (a file whose
    /// graphs and metadata disagree is refused before anything runs).
    static func model(_ path: String, threads: Int) throws -> TarFlowModel {
        try TarFlowModel(contentsOf: URL(fileURLWithPath: path), threads: threads)
    }

    /// Labels must be −1 (no label) or a class of a conditional model.
    static func labels(_ labels: [Int]?, from source: String, config c: TarFlowConfig) throws {
        guard let labels else { return }
        if c.numClasses == 0 {
            if let i = labels.firstIndex(where: { $0 != -1 }) {
                throw CLIError("\(source): label \(labels[i]) given but the model is unconditional (num_classes = 0); drop the labels or use -1")
            }
            return
        }
        if let i = labels.firstIndex(where: { $0 < -1 || $0 >= c.numClasses }) {
            throw CLIError("\(source): label \(labels[i])\(labels.count > 1 ? " at index \(i)" : "") is out of range: use 0...\(c.numClasses - 1), or -1 for no label")
        }
    }

    /// `--images`, with `--resize` and `--labels-from-folders` for image folders (which alone
    /// take them); the labels are the folder classes' indices.
    /// `limit`: read no more than this many images of a file (compressed data is inflated only
    /// as far as needed); a folder is read whole.
    static func images(_ path: String, model m: TarFlowModel, resize: Bool, labelsFromFolders: Bool, limit: Int? = nil) throws -> (ImageSet, [Int]?) {
        let url = URL(fileURLWithPath: path)
        var isDir: ObjCBool = false
        let folder = FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) && isDir.boolValue
        guard folder || !(resize || labelsFromFolders) else {
            throw CLIError("\(resize ? "--resize" : "--labels-from-folders") applies to a folder of images; --images \(path) is a file")
        }
        let c = m.config
        guard folder else { return (try ImageSet.load(contentsOf: url, channels: c.inChannels, size: c.imgSize, limit: limit), nil) }
        let f = try ImageFolder.load(contentsOf: url, channels: c.inChannels, size: c.imgSize, resize: resize, labelsFromFolders: labelsFromFolders)
        if labelsFromFolders, f.classes.count > c.numClasses {
            throw CLIError("--labels-from-folders: \(path) has \(f.classes.count) class folders (\(f.classes.prefix(5).joined(separator: ", "))\(f.classes.count > 5 ? ", ..." : "")) but the model has \(c.numClasses) classes")
        }
        return (f.images, f.labels)
    }

    // MARK: Memory

    /// The library's preflight of `run` (`TarFlowModel.preflight`), its refusal naming `flag`,
    /// the flag that sets the batch.
    static func memory(_ m: TarFlowModel, _ run: TarFlowModel.Run, flag: String) throws {
        do { try m.preflight(run) } catch TarFlowError.insufficientMemory(let s) {
            guard let batch = s.batch else {
                throw CLIError(s.message(subject: "loading the model", fix: "raise the memory limit (ulimit -v, ulimit -d) or use a smaller model"))
            }
            throw CLIError(s.message(subject: "\(flag) \(batch)", fix: "use a smaller \(flag)"))
        }
    }

    /// A need that does not come from a batch (weights of a config, a re-encoding, a
    /// checkpoint), refused with `subject` ("--config x.json") and what to do.
    static func memory(_ need: MemoryNeed, _ subject: String, fix: String) throws {
        do { try need.check() } catch TarFlowError.insufficientMemory(let s) {
            throw CLIError(s.message(subject: subject, fix: fix))
        }
    }

    /// A library call on the input of `flag`: its `invalid input` error, as one line that
    /// starts with the flag (nil: the message names the flags itself).
    static func input<T>(_ flag: String?, _ body: () throws -> T) throws -> T {
        do { return try body() } catch TarFlowError.invalidInput(let m) { throw CLIError(flag.map { "\($0) \(m)" } ?? "\(m)") }
    }
}
