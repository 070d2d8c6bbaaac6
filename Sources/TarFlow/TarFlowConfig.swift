import FlowIR

/// The architecture of a TarFlow model, with the names of the official `Model.__init__`.
public struct TarFlowConfig: Sendable, Hashable, Codable {
    public var inChannels: Int
    public var imgSize: Int
    public var patchSize: Int
    public var channels: Int
    public var numBlocks: Int
    public var layersPerBlock: Int
    public var nvp: Bool
    public var numClasses: Int
    public var headDim: Int
    public var expansion: Int

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels", imgSize = "img_size", patchSize = "patch_size", channels
        case numBlocks = "num_blocks", layersPerBlock = "layers_per_block", nvp, numClasses = "num_classes"
        case headDim = "head_dim", expansion
    }

    public init(inChannels: Int, imgSize: Int, patchSize: Int, channels: Int, numBlocks: Int, layersPerBlock: Int,
                nvp: Bool = true, numClasses: Int = 0, headDim: Int = 64, expansion: Int = 4) {
        self.inChannels = inChannels
        self.imgSize = imgSize
        self.patchSize = patchSize
        self.channels = channels
        self.numBlocks = numBlocks
        self.layersPerBlock = layersPerBlock
        self.nvp = nvp
        self.numClasses = numClasses
        self.headDim = headDim
        self.expansion = expansion
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            inChannels: try c.decode(Int.self, forKey: .inChannels), imgSize: try c.decode(Int.self, forKey: .imgSize),
            patchSize: try c.decode(Int.self, forKey: .patchSize), channels: try c.decode(Int.self, forKey: .channels),
            numBlocks: try c.decode(Int.self, forKey: .numBlocks), layersPerBlock: try c.decode(Int.self, forKey: .layersPerBlock),
            nvp: try c.decodeIfPresent(Bool.self, forKey: .nvp) ?? true, numClasses: try c.decodeIfPresent(Int.self, forKey: .numClasses) ?? 0,
            headDim: try c.decodeIfPresent(Int.self, forKey: .headDim) ?? 64, expansion: try c.decodeIfPresent(Int.self, forKey: .expansion) ?? 4)
    }

    /// Patches per image, T = (H / p)².
    public var numPatches: Int { (imgSize / patchSize) * (imgSize / patchSize) }
    /// Features per patch, D = C·p².
    public var patchDim: Int { inChannels * patchSize * patchSize }
    public var numHeads: Int { channels / headDim }
    /// Dimensions of one image, C·H·W.
    public var imageDim: Int { inChannels * imgSize * imgSize }

    /// Checks the constraints the official model asserts, with a message that says what to fix.
    /// Each size is range-checked on its own, naming its key, before any derived size (patch
    /// count, image size) is computed, so no value from a file or a config can overflow.
    public func validate() throws(TarFlowError) {
        let ranges: [(String, Int, ClosedRange<Int>)] = [
            ("in_channels", inChannels, 1...(1 << 16)), ("img_size", imgSize, 1...(1 << 16)), ("patch_size", patchSize, 1...(1 << 16)),
            ("channels", channels, 1...(1 << 16)), ("num_blocks", numBlocks, 1...1024), ("layers_per_block", layersPerBlock, 0...1024),
            ("num_classes", numClasses, 0...(1 << 24)), ("head_dim", headDim, 1...(1 << 16)), ("expansion", expansion, 1...(1 << 10)),
        ]
        for (key, v, r) in ranges where !r.contains(v) {
            throw .invalidConfig(.outOfRange(key: key, value: v, range: r))
        }
        guard imgSize % patchSize == 0 else { throw .invalidConfig(.notMultiple(key: "img_size", value: imgSize, divisorKey: "patch_size", divisor: patchSize)) }
        guard channels % headDim == 0 else { throw .invalidConfig(.notMultiple(key: "channels", value: channels, divisorKey: "head_dim", divisor: headDim)) }
        // Every size the graphs, the sampler and the I/O derive from the config stays far from
        // overflow: an image and the MLP width fit one dimension (2^31 - 1).
        let limit = Int(Int32.max)
        func fits(_ xs: Int...) -> Bool { elementCount(xs, limit: limit) != nil }
        guard fits(inChannels, imgSize, imgSize), fits(channels, expansion), fits(3, channels), fits(numClasses + 1, channels) else {
            throw .invalidConfig(.sizesTooLarge(limit: limit, config: self))
        }
    }

    static let keys = ["in_channels", "img_size", "patch_size", "channels", "num_blocks", "layers_per_block", "num_classes", "head_dim", "expansion"]

    /// Metadata entries ("tarflow.*") recording this config in a model file.
    public var metadata: [String: MetadataValue] {
        let ints = [inChannels, imgSize, patchSize, channels, numBlocks, layersPerBlock, numClasses, headDim, expansion]
        var m: [String: MetadataValue] = [:]
        for (k, v) in zip(Self.keys, ints) { m["tarflow.\(k)"] = .int(Int64(v)) }
        m["tarflow.nvp"] = .bool(nvp)
        return m
    }

    public init(metadata m: [String: MetadataValue]) throws(TarFlowError) {
        var ints: [Int] = []
        for k in Self.keys {
            guard let v = m["tarflow.\(k)"]?.intValue else {
                throw .invalidModel(.missingMetadata(key: "tarflow.\(k)"))
            }
            ints.append(v)
        }
        guard let nvp = m["tarflow.nvp"]?.boolValue else { throw .invalidModel(.missingNVPMetadata) }
        self.init(inChannels: ints[0], imgSize: ints[1], patchSize: ints[2], channels: ints[3], numBlocks: ints[4],
                  layersPerBlock: ints[5], nvp: nvp, numClasses: ints[6], headDim: ints[7], expansion: ints[8])
        do { try validate() } catch {
            guard case .invalidConfig(let m) = error else { throw error }
            throw .invalidModel(.invalidMetadata(m))
        }
    }
}

// MARK: - Agreement between the config and a model file's graphs

extension TarFlowConfig {
    /// The config a model file records, checked against the file's graphs: the runtime writes
    /// inputs into and reads outputs out of buffers sized by the graphs, so a file whose
    /// metadata and graphs disagree is refused here, with the graph and value named.
    public init(validating model: Model) throws(TarFlowError) {
        try self.init(metadata: model.metadata)
        try checkGraphs(of: model)
    }

    /// Checks the signatures of `forward`, `decode0…` and `gradient` (those present) and the
    /// prior's `var` tensor against this config (Spec/ModelFile.md, "TarFlow graphs and tensors").
    public func checkGraphs(of model: Model) throws(TarFlowError) {
        let B = Dim.batch
        let image = TensorType(.float32, [B, .fixed(inChannels), .fixed(imgSize), .fixed(imgSize)])
        let tokens = TensorType(.float32, [B, .fixed(numPatches), .fixed(patchDim)])
        let token = TensorType(.float32, [B, 1, .fixed(patchDim)])
        let labels = TensorType(.int64, [B])
        let conditional = numClasses > 0
        func bad(_ g: Graph, _ m: ModelFailureKind.GraphMismatch) -> TarFlowError { .invalidModel(.graphMismatch(graph: g.name, m, config: self)) }
        func type(_ g: Graph, _ name: String) -> TensorType? { g.value(named: name).map { g.values[$0].type } }
        /// The graph inputs that are not states must be exactly `expected`, with these types.
        func inputs(_ g: Graph, _ expected: [(String, TensorType)]) throws(TarFlowError) {
            let states = Set(g.state.map(\.input))
            let names = g.inputs.filter { !states.contains($0) }.map { g.values[$0].name }
            guard Set(names) == Set(expected.map(\.0)), names.count == expected.count else {
                throw bad(g, .inputs(names: names, expected: expected.map(\.0)))
            }
            for (n, t) in expected where type(g, n) != t {
                throw bad(g, .inputType(name: n, actual: type(g, n), expected: t))
            }
        }
        func output(_ g: Graph, _ n: String, _ t: TensorType) throws(TarFlowError) {
            let states = Set(g.state.map(\.output))
            guard let v = g.value(named: n), g.outputs.contains(v), !states.contains(v) else { throw bad(g, .missingOutput(name: n)) }
            guard g.values[v].type == t else { throw bad(g, .outputType(name: n, actual: g.values[v].type, expected: t)) }
        }
        let imageInputs: [(String, TensorType)] = [("x", image)] + (conditional ? [("y", labels)] : [])
        /// The graphs that can run as function `name`: the file's graph and its compiled form
        /// (`tarflow compile`), which the runtime uses instead when present.
        func versions(_ name: String) -> [Graph] {
            [model.graph(named: name), model.compiledFunction(named: name)?.graph].compactMap { $0 }
        }

        guard model.graph(named: "forward") != nil else { throw .invalidModel(.missingGraph(name: "forward")) }
        try checkMetadataAgrees(with: model)
        for forward in versions("forward") {
            guard forward.state.isEmpty else { throw bad(forward, .hasState) }
            try inputs(forward, imageInputs)
            for k in 0..<(numBlocks - 1) { try output(forward, "block\(k)", tokens) }
            try output(forward, "z", tokens)
            try output(forward, "logdets", TensorType(.float32, [B]))
        }
        for k in 0..<numBlocks {
            for g in versions("decode\(k)") {
                try inputs(g, [("x", token), ("pos", TensorType(.int64, [1])), ("logit_scale", TensorType(.float32, [B, 1, 1, 1]))]
                    + (conditional ? [("y", labels)] : []))
                try output(g, "a", token)
                try output(g, "b", token)
                // The sampler fills a buffer named `y` when there is one: only the labels input may be.
                if !conditional, g.value(named: "y") != nil { throw bad(g, .labelsInUnconditional) }
            }
        }
        for g in versions("gradient") {
            guard g.state.isEmpty else { throw bad(g, .hasState) }
            try inputs(g, imageInputs)
            try output(g, "grad.x", image)
            try output(g, "loss", TensorType(.float32, []))
        }
        // No value may be larger than a TarFlow graph of this config can need, so a file cannot
        // make the runtime allocate more than its weights and batch justify: values without a
        // batch dimension are at most twice the largest weight (flipped or extended tables),
        // per-row values at most 8× the largest activation row (attention scores, MLP, image).
        func mul(_ xs: Int...) -> Int { elementCount(xs) ?? Int.max }
        let largestWeight = model.tensors.map { $0.bytes.count / $0.dtype.byteSize }.max() ?? 0
        let fixedLimit = max(mul(8, largestWeight), 1 << 16)
        let T = numPatches, H = max(numHeads, 1)
        let rowLimit = mul(32, max(mul(T, T, H), mul(T, channels, max(expansion, 3)), imageDim, mul(2, T, patchDim), 1 << 10))
        for g in model.graphs + model.compiled.map(\.graph) {
            for v in g.values {
                let batched = v.type.shape.contains { $0.fixedSize == nil }
                let limit = batched ? rowLimit : fixedLimit
                guard let bytes = Verifier.fixedByteCount(v.type), bytes <= limit else {
                    throw bad(g, .valueTooLarge(name: v.name, type: v.type, limit: limit, perRow: batched))
                }
            }
        }
        if let v = model.tensor(named: "var"), v.shape != [numPatches, patchDim] {
            throw .invalidModel(.priorShape(shape: v.shape, expected: [numPatches, patchDim]))
        }
    }
}
