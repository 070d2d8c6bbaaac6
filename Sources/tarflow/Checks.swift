import Foundation
import FlowCompiler
import FlowIR
import FlowRuntime
import TarFlow
#if canImport(Glibc)
import Glibc
#endif

/// A bad flag or input file, reported as one line that names it and says what to do.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
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

    static func finite(_ x: Float, _ flag: String, _ rule: String, _ ok: (Float) -> Bool) throws {
        guard x.isFinite, ok(x) else { throw CLIError("\(flag) \(x) must be a finite number \(rule)") }
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

    /// Loads a model file and checks its graphs against its config (a file whose graphs and
    /// metadata disagree is refused before anything runs).
    static func model(_ path: String, threads: Int) throws -> TarFlowModel {
        Signals.setMappedFile(path)
        let m = try TarFlowModel(contentsOf: URL(fileURLWithPath: path), threads: threads)
        try m.config.checkGraphs(of: m.model)
        return m
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

    /// What a run may use at most: RLIMIT_AS, RLIMIT_DATA, the cgroup's memory.max, else RAM.
    static var memoryLimit: MemoryLimit { MemoryLimit.current() }

    static func mul(_ a: Int, _ b: Int) -> Int {
        let (p, o) = a.multipliedReportingOverflow(by: b)
        return o ? Int.max : p
    }

    static func add(_ a: Int, _ b: Int) -> Int {
        let (s, o) = a.addingReportingOverflow(b)
        return o ? Int.max : s
    }

    /// Bytes the executor allocates for `plan` at batch size `batch`: the memory planner's arena
    /// (what `BoundPlan` allocates) plus the load-time values. Saturates at `Int.max`.
    /// The planner runs only when a one-slot-per-value bound fits comfortably in `Int`, so no
    /// batch, however large, can overflow its arithmetic.
    static func planBytes(_ plan: ExecutionPlan, batch: Int) -> Int {
        let g = plan.graph
        func bytes(_ v: ValueID) -> Int {
            var n = g.values[v].type.dtype.byteSize
            for d in g.values[v].type.shape { n = mul(n, d.resolved(["B": batch]) ?? batch) }
            return add(n, 63) / 64 * 64
        }
        var loadTime = 0
        for s in plan.loadSteps { if case .constant = s.op {} else { for o in s.outputs { loadTime = add(loadTime, bytes(o)) } } }
        var naive = 0
        for v in Set(g.inputs + plan.steps.flatMap(\.outputs)) where v >= 0 && v < g.values.count { naive = add(naive, bytes(v)) }
        guard naive < Int.max / 8, let arena = try? MemoryPlanner.plan(plan, bindings: ["B": batch]).arenaBytes else {
            return add(naive, loadTime)
        }
        return add(arena, loadTime)
    }

    /// Refuses a run whose estimate exceeds physical memory, naming the flag that sets the batch.
    static func memory(_ bytes: Int, batchFlag: String, batch: Int) throws {
        let limit = memoryLimit
        guard bytes > limit.bytes else { return }
        func gb(_ b: Int) -> String { b == Int.max ? "more than 9.2e9 GB" : String(format: "%.1f GB", Double(b) / 1e9) }
        throw CLIError("\(batchFlag) \(batch) needs about \(gb(bytes)) of memory (\(bytes == Int.max ? "overflow" : "\(bytes) bytes"), estimated from the execution plan), more than the \(gb(limit.bytes)) (\(limit.bytes) bytes) this process may use (\(limit.source)); use a smaller \(batchFlag)")
    }

    /// The weights of a config made up from scratch (`compile --config --random-weights`) must fit
    /// in memory: the bounds of `TarFlowConfig.validate` still allow terabytes of them.
    static func weights(of c: TarFlowConfig, from source: String) throws {
        let bytes = weightBytes(of: c)
        let limit = memoryLimit
        guard bytes <= limit.bytes else {
            throw CLIError("\(source): the weights of this config take \(bytes == Int.max ? "more than 9.2e18" : "\(bytes)") bytes, more than the \(limit.bytes) bytes of memory this process may use (\(limit.source)); use a smaller config")
        }
    }

    /// Bytes of the float32 weights of `Converter.expectedShapes(c)`, summed in closed form
    /// (listing them would itself take long for a huge config). Saturates at `Int.max`.
    static func weightBytes(of c: TarFlowConfig) -> Int {
        let C = c.channels, D = c.patchDim, T = c.numPatches, E = c.expansion, out = c.nvp ? 2 * D : D
        let layer = [4 * C, mul(3 * C, C), 3 * C, mul(C, C), C, mul(mul(C, E), C), mul(C, E), mul(mul(C, E), C), C].reduce(0, add)
        let block = [mul(C, D), C, mul(T, C), mul(c.numClasses, C), mul(out, C), out, mul(c.layersPerBlock, layer)].reduce(0, add)
        return mul(add(mul(c.numBlocks, block), mul(T, D)), 4)
    }

    /// Estimated bytes of a forward batch of `rows` images (plan arena plus the batch's input
    /// and copies).
    static func forwardBytes(_ m: TarFlowModel, rows: Int) throws -> Int {
        let plan = try Compiler.compile(try graph(m, "forward"), constants: m.model.constantTypes)
        return add(planBytes(plan, batch: rows), mul(mul(rows, m.config.imageDim), 12))
    }

    /// Estimated bytes of a denoising batch (the gradient graph's arena).
    static func gradientBytes(_ m: TarFlowModel, rows: Int) throws -> Int {
        let g = try m.model.graph(named: "gradient")
            ?? TarFlowGraphs.gradient(forward: try graph(m, "forward"), constants: m.model.constantTypes)
        let plan = try Compiler.compile(g, constants: m.model.constantTypes)
        return add(planBytes(plan, batch: rows), mul(mul(rows, m.config.imageDim), 16))
    }

    /// Estimated bytes of sampling `images` images: the decode blocks share one arena (the
    /// largest block's plan at `rows` rows, 2× with guidance, KV cache in the model's default
    /// precision), plus the noise, the working copy and the output.
    static func sampleBytes(_ m: TarFlowModel, images: Int, rows: Int) throws -> Int {
        var arena = 0
        var options = Compiler.Options()
        options.halfPrecisionState = m.defaultKVCache == .float16
        for k in 0..<m.config.numBlocks {
            guard let g = m.model.graph(named: "decode\(k)") else { break }  // sample() reports it
            arena = max(arena, planBytes(try Compiler.compile(g, constants: m.model.constantTypes, options: options), batch: rows))
            if arena == Int.max { break }
        }
        return add(mul(mul(images, m.config.imageDim), 16), arena)
    }

    static func graph(_ m: TarFlowModel, _ name: String) throws -> Graph {
        guard let g = m.model.graph(named: name) else { throw CLIError("the model file has no '\(name)' graph") }
        return g
    }
}
