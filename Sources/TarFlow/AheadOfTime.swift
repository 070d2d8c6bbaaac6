import Dispatch
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
    public static func compile(_ model: Model, functions: [Function] = Function.allCases, batches: [Int] = [1],
                               options: Compiler.Options = Compiler.Options(), kvCache: DType? = nil,
                               progress: ((Int, Int) -> Void)? = nil) throws -> Model {
        guard !batches.isEmpty, batches.allSatisfy({ $0 >= 1 && $0 <= Int(Int32.max) / 2 }) else {
            throw TarFlowError.invalidInput("batch sizes must lie in 1...\(Int32.max / 2), are \(batches)")
        }
        var m = model
        m.compiled = []
        let config = try TarFlowConfig(validating: m)  // metadata, tensors and graphs agree
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
        progress?(0, unique.count)
        for (i, name) in unique.enumerated() {
            let sizes = Set(batches + (name.hasPrefix("decode") ? batches.map { 2 * $0 } : [])).sorted()
            let bindings = sizes.map { ["B": $0] }
            var o = options
            if name.hasPrefix("decode") {
                let weights = model.linearWeightDType ?? .float32
                o.halfPrecisionState = (kvCache ?? (weights == .float32 ? .float32 : .float16)) == .float16
            }
            m.compiled.append(try compileFunction(name, of: m, bindings: bindings, options: o))
            progress?(i + 1, unique.count)
        }
        try m.verify()
        return m
    }

    /// Compiles function `name` of `model` (`forward`, `decode{k}` or `gradient`, derived from
    /// `forward` unless the file has a `gradient` graph) with memory plans for `bindings`.
    public static func compileFunction(_ name: String, of model: Model, bindings: [[String: Int]],
                                       options: Compiler.Options = Compiler.Options()) throws -> CompiledFunction {
        let (g, source) = try sourceGraph(name, of: model)
        guard let digest = model.sourceDigest(of: source) else { throw TarFlowError.invalidModel("the model has no '\(source)' graph") }
        return try Compiler.compileAhead(g, source: source, sourceDigest: digest, constants: model.constantTypes,
                                         bindings: bindings, options: options)
    }

    /// The graph function `name` is compiled from, and the model graph it comes from.
    static func sourceGraph(_ name: String, of m: Model) throws -> (Graph, String) {
        if name == "gradient", m.graph(named: "gradient") == nil {
            guard let forward = m.graph(named: "forward") else { throw TarFlowError.invalidModel("the model file has no 'forward' graph") }
            return (try TarFlowGraphs.gradient(forward: forward, constants: m.constantTypes), "forward")
        }
        guard let g = m.graph(named: name) else {
            throw TarFlowError.invalidModel("the model file has no '\(name)' graph" + (name.hasPrefix("decode") ? "; re-convert it with this version of `tarflow convert`" : ""))
        }
        return (g, name)
    }

    /// Whether a stored compiled function is exactly what compiling its source now gives (the
    /// same optimized graph and the same memory plans): `tarflow inspect --plan` reports it.
    public static func matchesRecompilation(_ f: CompiledFunction, of model: Model) throws -> Bool {
        let again = try compileFunction(f.name, of: model, bindings: f.plans.map(\.bindings))
        return again.graph == f.graph && again.plans == f.plans && again.source == f.source && again.passes == f.passes
    }

    /// Parses `--batch 1,16,64` and `--functions forward,sample` style lists.
    public static func parseBatches(_ s: String) throws -> [Int] {
        let parts = s.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        var out: [Int] = []
        for p in parts {
            if let b = Int(p), b < 1 { throw TarFlowError.invalidInput("batch size \(b) must be positive (give a list like 1,16,64)") }
            guard let b = Int(p), b >= 1, b <= Int(Int32.max) / 2 else {
                throw TarFlowError.invalidInput("batch size '\(p)' is not a whole number in 1...\(Int32.max / 2) (give a list like 1,16,64)")
            }
            if !out.contains(b) { out.append(b) }
        }
        return out
    }

    /// `none` is the empty list: the model is written without compiled functions.
    public static func parseFunctions(_ s: String) throws -> [Function] {
        if s.trimmingCharacters(in: .whitespaces) == "none" { return [] }
        return try s.split(separator: ",", omittingEmptySubsequences: false).map { p in
            let t = p.trimmingCharacters(in: .whitespaces)
            guard let f = Function(rawValue: t) else {
                throw TarFlowError.invalidInput("unknown function '\(t)'; choose from \(Function.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return f
        }
    }

    // MARK: Models from a config alone

    /// A config file as the fixtures' `case.json`: the keys of `TarFlowConfig` (`in_channels`,
    /// `img_size`, `patch_size`, `channels`, `num_blocks`, `layers_per_block`, and optionally
    /// `nvp` (true), `num_classes` (0), `head_dim` (64), `expansion` (4)), plus an optional
    /// `noise_std`. Other keys are ignored.
    public static func loadConfig(contentsOf url: URL) throws -> (config: TarFlowConfig, noiseStd: Double?) {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw TarFlowError.invalidInput("\(url.path): cannot read: \(error.localizedDescription)") }
        return try parseConfig(data, path: url.path)
    }

    /// The config JSON in `data` (as `loadConfig`); `path` only labels errors.
    public static func parseConfig(_ data: Data, path: String) throws -> (config: TarFlowConfig, noiseStd: Double?) {
        guard data.count <= 1 << 20 else { throw TarFlowError.invalidInput("\(path): \(data.count) bytes is too large for a config") }
        let config: TarFlowConfig
        do { config = try JSONDecoder().decode(TarFlowConfig.self, from: data) } catch {
            throw TarFlowError.invalidConfig("\(path): \(describe(error))")
        }
        do { try config.validate() } catch {
            guard case .invalidConfig(let m) = error else { throw error }
            throw TarFlowError.invalidConfig("\(path): \(m)")
        }
        var noise: Double?
        if let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let v = obj["noise_std"] {
            guard let d = (v as? NSNumber)?.doubleValue, d >= 0, d.isFinite else {
                throw TarFlowError.invalidConfig("\(path): noise_std must be a finite number >= 0")
            }
            noise = d
        }
        return (config, noise)
    }

    static func describe(_ e: any Error) -> String {
        switch e as? DecodingError {
        case .keyNotFound(let k, _)?: "missing key '\(k.stringValue)'"
        case .typeMismatch(_, let c)?, .valueNotFound(_, let c)?:
            "key '\(c.codingPath.map(\.stringValue).joined(separator: "."))': \(c.debugDescription)"
        case .dataCorrupted(let c)?: "not valid JSON: \(c.debugDescription)"
        default: "\(e)"
        }
    }

    /// A model with generated weights, for compiling, inspecting and benchmarking a
    /// configuration without its checkpoint. Tensors are the official `state_dict`'s (sorted by
    /// name, float32): biases 0, LayerNorm weights and the prior `var` 1, every other tensor
    /// 0.02 · N(0, 1) from `CounterRNG(seed)`, element j of a tensor drawing counter o + j with o
    /// the number of elements of the tensors before it.
    public static func randomModel(config: TarFlowConfig, seed: UInt64, noiseStd: Double? = nil) throws -> Model {
        try config.validate()
        let shapes = Converter.expectedShapes(config)
        let rng = CounterRNG(seed: seed)
        var weights: [WeightTensor] = []
        var counter: UInt64 = 0
        for name in shapes.keys.sorted() {
            let shape = shapes[name] ?? []
            guard let n = elementCount(shape), n <= Int(Int32.max) else { throw TarFlowError.invalidConfig("tensor '\(name)' \(shape) is too large") }
            let base = counter
            let kind: Int = name.hasSuffix(".bias") ? 0 : (name.hasSuffix("norm.weight") || name == "var") ? 1 : 2
            let bytes = TensorBytes(count: 4 * n) { raw in
                let p = raw.bindMemory(to: Float.self)
                guard let q = p.baseAddress else { return }
                switch kind {
                case 0: q.update(repeating: 0, count: n)
                case 1: q.update(repeating: 1, count: n)
                default:
                    // Counter-based, so chunks may run in any order on any thread.
                    let chunk = 1 << 18
                    let chunks = (n + chunk - 1) / chunk
                    let out = UnsafeMutableSendablePointer(q)
                    DispatchQueue.concurrentPerform(iterations: chunks) { c in
                        for i in (c * chunk)..<min(n, (c + 1) * chunk) { out.p[i] = 0.02 * rng.gaussian(base + UInt64(i)) }
                    }
                }
            }
            weights.append(WeightTensor(name: name, dtype: .float32, shape: shape, bytes: bytes))
            counter += UInt64(n)
        }
        var m = try Converter.assemble(config: config, weights: weights, noiseStd: noiseStd)
        m.metadata["converter"] = .string("tarflow compile --random-weights (swift-tarflow, format \(ModelFile.formatVersion))")
        m.metadata["source.format"] = .string("random")
        m.metadata["source.random_seed"] = .int(Int64(bitPattern: seed))
        return m
    }
}

/// A pointer handed to concurrent workers that write disjoint ranges.
struct UnsafeMutableSendablePointer: @unchecked Sendable {
    let p: UnsafeMutablePointer<Float>
    init(_ p: UnsafeMutablePointer<Float>) { self.p = p }
}
