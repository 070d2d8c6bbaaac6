import Dispatch
import FlowIR

// Models made from a config alone (`tarflow compile --config --random-weights`).
extension AheadOfTime {
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
            guard let n = elementCount(shape), n <= Int(Int32.max) else { throw TarFlowError.invalidConfig(.tensorTooLarge(name: name, shape: shape)) }
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
        var m = try Converter.unverifiedModel(config: config, weights: weights, noiseStd: noiseStd)
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
