import Foundation
import FlowCompiler
import FlowIR
import FlowRuntime

/// The runtime's host tensor, so users of the TarFlow library need no other import.
public typealias Tensor = FlowRuntime.Tensor
public typealias BoundPlan = FlowRuntime.BoundPlan
public typealias BatchSplitPlan = FlowRuntime.BatchSplitPlan

/// A TarFlow model loaded from a model file: its config, weights and compiled graphs.
///
/// ```swift
/// let model = try TarFlowModel(contentsOf: URL(fileURLWithPath: "Models/mnist.tflow"))
/// let result = try model.likelihood(images: images, labels: nil)
/// print(result.meanBitsPerDim)
/// ```
///
/// Labels: −1 means "no label" (the mean class embedding) everywhere in this API, for
/// likelihood as for sampling; the official reverse pass would instead index the last class.
public final class TarFlowModel: @unchecked Sendable {
    public let model: Model
    public let config: TarFlowConfig
    /// The training noise level recorded at conversion (used by denoising), if known.
    public let noiseStd: Double?
    public let threads: Int
    let lock = NSLock()
    var forwardExecutor: Executor?
    /// Decode steps by block and whether their KV cache is f16.
    var decodeExecutors: [DecodeKey: Executor] = [:]
    struct DecodeKey: Hashable { var block: Int, halfCache: Bool }
    var gradientExecutor: Executor?
    /// The decode steps of the last sampling batch shape, in one shared arena (see `sample`).
    var samplingSession: SamplingSession?
    /// The weights as the kernels read them (packed linear layers), made once and shared by
    /// the forward plan, every decode block and the gradient.
    public let weights: WeightStore
    /// The model's compiled functions (`tarflow compile`), checked and ready: used instead of
    /// compiling the graph of the same name.
    let precompiled: [String: LoadedFunction]
    /// The model's graphs that are verified already (all of them for a model read from a file).
    let verifiedGraphs: [String: VerifiedGraph]

    public convenience init(contentsOf url: URL, threads: Int = 1) throws {
        let m = try ModelFile.readVerified(contentsOf: url)
        do { try self.init(model: m, threads: threads) } catch var e as IRError {
            e.location = e.location.isEmpty ? url.path : "\(url.path), \(e.location)"
            throw e
        } catch TarFlowError.invalidModel(let f) {
            throw TarFlowError.invalidModel(f.located(in: url.path))
        }
    }

    /// Compiled functions in `model.compiled` are verified here (their graphs and every stored
    /// memory plan, rules F13–F16 of Spec/ModelFile.md); a model whose plan fails is refused.
    /// Its graphs are verified when first compiled.
    public convenience init(model: Model, threads: Int = 1) throws {
        let constants = model.constantTypes
        let compiled = try model.compiled.map { (f) throws(IRError) in try f.verified(constants: constants) }
        try self.init(model: model, graphs: [:], compiled: compiled, threads: threads)
    }

    /// A verified model (`ModelFile.readVerified`, `Converter`, `AheadOfTime`): its graphs
    /// and compiled functions' graphs are not checked again; stored memory plans are (F13–F16).
    public convenience init(model: VerifiedModel, threads: Int = 1) throws {
        try self.init(model: model.model, graphs: Dictionary(model.verifiedGraphs.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }),
                      compiled: model.verifiedCompiled, threads: threads)
    }

    init(model: Model, graphs: [String: VerifiedGraph], compiled: [VerifiedCompiledFunction], threads: Int) throws {
        self.model = model
        verifiedGraphs = graphs
        config = try TarFlowConfig(validating: model)
        noiseStd = model.metadata["tarflow.noise_std"]?.doubleValue
        self.threads = max(1, threads)
        weights = WeightStore(model: model)
        guard model.graph(named: "forward") != nil else { throw TarFlowError.invalidModel(.missingGraph(name: "forward")) }
        var loaded: [String: LoadedFunction] = [:]
        for f in compiled { loaded[f.name] = try Compiler.load(f) }
        precompiled = loaded
    }

    /// Graph `name` of the model, verified: as the reader checked it, or now for a model built
    /// in memory (worded as the compiler's check of its input); nil if the model has none.
    func verifiedGraph(_ name: String) throws -> VerifiedGraph? {
        if let g = verifiedGraphs[name] { return g }
        guard let g = model.graph(named: name) else { return nil }
        return try Compiler.verifiedInput(g, constants: model.constantTypes)
    }

    /// True if function `name` (`forward`, `decode{k}`, `gradient`) comes compiled from the file.
    public func isPrecompiled(_ name: String) -> Bool { precompiled[name] != nil }

    /// An executor for function `name`: from its compiled form in the file if there is one
    /// (no passes run; stored memory plans are used for their bindings), else compiled now.
    /// `halfPrecisionState`: keep the graph's KV caches in f16 (a stored function is used only
    /// if it was compiled the same way).
    func makeExecutor(_ name: String, halfPrecisionState: Bool = false, source: () throws -> VerifiedGraph) throws -> Executor {
        if let f = precompiled[name], f.plan.graph.hasHalfPrecisionState == halfPrecisionState {
            return try Executor(plan: f.plan, model: model, threads: threads, memoryPlans: f.memoryPlans, weights: weights)
        }
        var options = Compiler.Options()
        options.halfPrecisionState = halfPrecisionState
        return try Executor(plan: try Compiler.compile(try source(), options: options), model: model,
                            threads: threads, weights: weights)
    }

    /// The storage precision of the linear-layer weights (f32, f16 or bf16; f32 when mixed).
    public var weightDType: DType { model.linearWeightDType ?? .float32 }

    /// The KV-cache precision sampling uses unless told otherwise: f16 for f16 and bf16 models,
    /// f32 for f32 models.
    public var defaultKVCache: DType { weightDType == .float32 ? .float32 : .float16 }

    /// The compiled forward plan's executor (compiled on first use).
    public func forwardPlan() throws -> Executor {
        lock.lock()
        defer { lock.unlock() }
        if let e = forwardExecutor { return e }
        let e = try makeExecutor("forward") { try verifiedGraph("forward")! }
        forwardExecutor = e
        return e
    }

    /// Whether a batch of `rows` runs as a `BatchSplitPlan` (one slice of rows per thread) rather
    /// than one plan with per-op threads: the forward and decode graphs compute every row on its
    /// own, and a split hands work to the other threads once per run instead of once per op
    /// (measured on MNIST with 2 threads: forward at batch 4 7.1 ms vs 10.8, batch 64 112 ms vs
    /// 116–133; decode steps at 16 rows 2× faster). Below one row per thread, per-op threads.
    func splitsBatch(_ e: Executor, rows: Int) -> Bool { e.threads > 1 && rows >= e.threads }

    /// `splitsBatch` for a decode step, which reads every weight for one token per row: each
    /// part of a split reads all of them, so with large weights (a paper-size block: 113–226 MB
    /// per step) the split would read them once per thread; per-op threads split each layer's
    /// columns instead and read them once.
    func splitsDecode(_ e: Executor, rows: Int) -> Bool {
        splitsBatch(e, rows: rows) && e.packedWeightBytes <= TarFlowModel.splitWeightLimit
    }

    /// Packed weight bytes up to which a decode step's batch is split between threads (about
    /// what the caches hold; `TARFLOW_SPLIT_WEIGHTS` overrides it for experiments).
    nonisolated(unsafe) static var splitWeightLimit: Int = {
        if let e = ProcessInfo.processInfo.environment["TARFLOW_SPLIT_WEIGHTS"], let v = Int(e) { return v }
        return 32 << 20
    }()

    /// Result of the forward pass on a batch.
    public struct ForwardResult: Sendable {
        /// f32[B, T, D], the latent.
        public var z: Tensor
        /// f32[B], Σ over blocks of −mean(a).
        public var logdets: [Float]
        /// Output of each block (the last one is `z`).
        public var blocks: [Tensor]
    }

    /// `Model.forward(x, y)` on images f32[B, C, H, W] in [−1, 1].
    public func forward(images: Tensor, labels: [Int]?) throws -> ForwardResult {
        let inputs = try graphInputs(images: images, labels: labels)
        let e = try forwardPlan()
        let out = try splitsBatch(e, rows: images.shape[0]) ? e.bindSplit(["B": images.shape[0]]).run(inputs) : e.run(inputs)
        var blocks: [Tensor] = []
        for k in 0..<(config.numBlocks - 1) { blocks.append(out["block\(k)"]!) }
        blocks.append(out["z"]!)
        return ForwardResult(z: out["z"]!, logdets: out["logdets"]!.floats, blocks: blocks)
    }

    /// Bits per dimension from a forward result, by the formula of the official
    /// `evaluate_bpd.py`: log p = Σ(−½z² − ½ log 2π) − D·log 128, bpd = (−log p / D − logdets) / log 2,
    /// with D = C·H·W. Also returns the NLL per dimension in nats (bpd · log 2).
    public func bitsPerDim(_ r: ForwardResult) -> (bpd: [Double], nll: [Double]) {
        let per = r.z.count / max(r.logdets.count, 1)
        let d = Double(config.imageDim)
        let z = r.z.floats
        var bpd: [Double] = [], nll: [Double] = []
        for i in r.logdets.indices {
            var s = 0.0
            for j in (i * per)..<((i + 1) * per) { s += -0.5 * Double(z[j]) * Double(z[j]) }
            let logp = s - 0.5 * log(2 * Double.pi) * Double(per) - d * log(128.0)
            let n = -logp / d - Double(r.logdets[i])
            nll.append(n)
            bpd.append(n / log(2.0))
        }
        return (bpd, nll)
    }

    /// The `x` (and, for conditional models, `y`) inputs of the forward and gradient graphs,
    /// after checking images and labels.
    func graphInputs(images: Tensor, labels: [Int]?) throws -> [String: Tensor] {
        let b = try checkImages(images)
        var inputs: [String: Tensor] = ["x": images]
        if config.numClasses > 0 {
            inputs["y"] = Tensor(shape: [b], int64s: try checkLabels(labels, count: b).map(Int64.init))
        } else if let labels, labels.contains(where: { $0 != -1 }) {
            throw TarFlowError.invalidInput(.labelsForUnconditional)
        }
        return inputs
    }

    func checkImages(_ images: Tensor) throws -> Int {
        let c = config
        guard images.dtype == .float32, images.shape.count == 4, images.shape[1] == c.inChannels,
            images.shape[2] == c.imgSize, images.shape[3] == c.imgSize
        else {
            throw TarFlowError.invalidInput(.imageTensorShape(shape: images.shape, channels: c.inChannels, size: c.imgSize))
        }
        guard images.shape[0] > 0 else { throw TarFlowError.invalidInput(.noImages) }
        if let i = images.floats.firstIndex(where: { !$0.isFinite }) {
            throw TarFlowError.invalidInput(.imageNotFinite(image: i / c.imageDim, element: i % c.imageDim))
        }
        return images.shape[0]
    }

    /// Labels for a batch: none → −1 for all; each must be −1 or in 0..<num_classes.
    func checkLabels(_ labels: [Int]?, count: Int) throws -> [Int] {
        guard let labels else { return [Int](repeating: -1, count: count) }
        guard labels.count == count else { throw TarFlowError.invalidInput(.labelCount(labels: labels.count, images: count)) }
        if let bad = labels.first(where: { $0 < -1 || $0 >= config.numClasses }) {
            throw TarFlowError.invalidInput(.labelOutOfRange(label: bad, classes: config.numClasses))
        }
        return labels
    }
}
