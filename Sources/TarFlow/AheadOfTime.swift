import Foundation
import FlowCompiler
import FlowIR

/// Ahead-of-time compilation (`tarflow compile`): a model file that carries, beside its source
/// graphs and weights, the optimized graphs and memory plans, so loading it runs no passes.
public enum AheadOfTime {
    /// What to compile: the forward pass, the decode steps of sampling, or the denoising gradient.
    public enum Function: String, Sendable, CaseIterable {
        case forward, sample, gradient
    }

    /// `model` with compiled functions for `functions`, each with memory plans for the batch
    /// sizes `batches` (decode steps also for twice each size: guidance doubles the rows).
    /// Any compiled functions the model had are replaced. Other batch sizes still work; they
    /// are planned when first used. `progress(done, total)` counts the graphs compiled. Decode
    /// steps keep their KV cache in `kvCache` (f32 or f16; nil: f16 for f16/bf16 weights).
    /// With `packWeights`, linear-layer weights are stored in the layout the kernels read
    /// (`panels32`, Spec/ModelFile.md §2), so loading the file maps them and copies nothing.
    public static func compile(_ model: Model, functions: [Function] = Function.allCases, batches: [Int] = [1],
                               options: Compiler.Options = Compiler.Options(), kvCache: DType? = nil, packWeights: Bool = true,
                               progress: ((Int, Int) -> Void)? = nil) throws -> VerifiedModel {
        var m = model
        m.compiled = []
        return try compile(try m.verified(), functions: functions, batches: batches, options: options, kvCache: kvCache, packWeights: packWeights, progress: progress)
    }

    /// The same for a model already verified (read from a file): its graphs are not checked again.
    public static func compile(_ model: VerifiedModel, functions: [Function] = Function.allCases, batches: [Int] = [1],
                               options: Compiler.Options = Compiler.Options(), kvCache: DType? = nil, packWeights: Bool = true,
                               progress: ((Int, Int) -> Void)? = nil) throws -> VerifiedModel {
        guard !batches.isEmpty, batches.allSatisfy({ $0 >= 1 && $0 <= Int(Int32.max) / 2 }) else {
            throw TarFlowError.invalidInput(.batchesOutOfRange(batches))
        }
        let m = model
        let config = try TarFlowConfig(validating: m.model)  // metadata, tensors and graphs agree
        var names: [String] = []
        for f in functions {
            switch f {
            case .forward: names.append("forward")
            case .sample: names += (0..<config.numBlocks).map { "decode\($0)" }
            case .gradient: names.append("gradient")
            }
        }
        var seen = Set<String>()
        let unique = names.filter { seen.insert($0).inserted }
        var compiled: [CompiledFunction] = []
        progress?(0, unique.count)
        for (i, name) in unique.enumerated() {
            let sizes = Set(batches + (name.hasPrefix("decode") ? batches.map { 2 * $0 } : [])).sorted()
            let bindings = sizes.map { ["B": $0] }
            var o = options
            if name.hasPrefix("decode") {
                let weights = model.linearWeightDType ?? .float32
                o.halfPrecisionState = (kvCache ?? (weights == .float32 ? .float32 : .float16)) == .float16
            }
            compiled.append(try compileFunction(name, of: m, bindings: bindings, options: o))
            progress?(i + 1, unique.count)
        }
        let result = try m.replacingCompiled(with: compiled)
        return packWeights ? result.packingLinearWeights() : result
    }

    /// Compiles function `name` of `model` (`forward`, `decode{k}` or `gradient`, derived from
    /// `forward` unless the file has a `gradient` graph) with memory plans for `bindings`.
    public static func compileFunction(_ name: String, of model: VerifiedModel, bindings: [[String: Int]],
                                       options: Compiler.Options = Compiler.Options()) throws -> CompiledFunction {
        let (g, source) = try sourceGraph(name, of: model)
        guard let digest = model.model.sourceDigest(of: source) else { throw TarFlowError.invalidModel(.missingSourceGraph(name: source)) }
        return try Compiler.compileAhead(g, source: source, sourceDigest: digest, bindings: bindings, options: options)
    }

    /// The graph function `name` is compiled from, and the model graph it comes from.
    static func sourceGraph(_ name: String, of m: VerifiedModel) throws -> (VerifiedGraph, String) {
        if name == "gradient", m.graph(named: "gradient") == nil {
            guard let forward = m.graph(named: "forward") else { throw TarFlowError.invalidModel(.missingGraph(name: "forward")) }
            return (try TarFlowGraphs.gradient(forward: forward.graph, constants: m.constantTypes), "forward")
        }
        guard let g = m.graph(named: name) else {
            throw TarFlowError.invalidModel(.missingGraph(name: name))
        }
        return (g, name)
    }

    /// Whether a stored compiled function is exactly what compiling its source now gives (the
    /// same optimized graph and the same memory plans): `tarflow inspect --plan` reports it.
    public static func matchesRecompilation(_ f: CompiledFunction, of model: VerifiedModel) throws -> Bool {
        let again = try compileFunction(f.name, of: model, bindings: f.plans.map(\.bindings))
        return again.graph == f.graph && again.plans == f.plans && again.source == f.source && again.passes == f.passes
    }
}
