import Foundation
import FlowIR

/// Checkpoint → model file: reads an official `state_dict` (.pth or .safetensors), infers the
/// architecture from tensor names and shapes, checks every tensor, and builds the graphs.
public enum Converter {
    /// What the shapes cannot tell: one of image size, input channels or patch size (the
    /// tensors fix D = C·p² and T = (H/p)²), and the training noise level.
    public struct Options: Sendable {
        public var imageSize: Int?
        public var inChannels: Int?
        public var patchSize: Int?
        public var noiseStd: Double?
        public var headDim: Int = 64
        /// The entry of a training checkpoint that holds the state dict (see `Checkpoint.read`).
        public var key: String?
        public init(imageSize: Int? = nil, inChannels: Int? = nil, patchSize: Int? = nil, noiseStd: Double? = nil, key: String? = nil) {
            self.key = key
            self.imageSize = imageSize
            self.inChannels = inChannels
            self.patchSize = patchSize
            self.noiseStd = noiseStd
        }
    }

    /// `progress(done, total)` counts the checkpoint's tensors as they are read.
    /// The architecture is inferred and every tensor's name, dtype and shape checked before any
    /// tensor data is read, so a checkpoint whose tensors the model cannot use (a 1 GiB tensor of
    /// deflated zeros in a small file) costs only its header. Errors name the file.
    public static func convert(checkpoint url: URL, options: Options, progress: ((Int, Int) -> Void)? = nil) throws -> VerifiedModel {
        var opts = options
        if opts.noiseStd == nil { opts.noiseStd = noiseStd(fromFileName: url.lastPathComponent) }
        var model: VerifiedModel
        do {
            let tensors = try Checkpoint.read(contentsOf: url, key: options.key, progress: progress) { infos in
                _ = try config(of: infos, options: opts)
            }
            model = try convert(tensors: tensors, options: opts)
        } catch TarFlowError.invalidCheckpoint(let f) {
            throw TarFlowError.invalidCheckpoint(f.located(in: url.path))
        }
        model.metadata["source.file"] = .string(url.lastPathComponent)
        model.metadata["source.format"] = .string(url.pathExtension.lowercased() == "safetensors" ? "safetensors" : "pytorch")
        return model
    }

    /// The noise level in an official checkpoint name, e.g. `afhq_model_8_768_8_8_0.07.pth` → 0.07.
    public static func noiseStd(fromFileName name: String) -> Double? {
        let parts = name.split(separator: "_")
        guard let i = parts.lastIndex(of: "model"), parts.count - i == 6 else { return nil }
        guard parts[(i + 1)..<(parts.count - 1)].allSatisfy({ Int($0) != nil }) else { return nil }
        let last = parts[parts.count - 1]
        guard let dot = last.lastIndex(of: "."), let v = Double(last[..<dot]), v >= 0, v.isFinite else { return nil }
        return v
    }

    public static func convert(tensors: [CheckpointTensor], options: Options) throws -> VerifiedModel {
        let config = try config(of: tensors.map { CheckpointTensorInfo(name: $0.name, dtype: $0.tensor.dtype, shape: $0.tensor.shape) }, options: options)
        var byName: [String: CheckpointTensor] = [:]
        for t in tensors { byName[t.name] = t }
        let expected = expectedShapes(config)
        var weights: [WeightTensor] = []
        for name in expected.keys.sorted() {
            let t = byName[name]!.tensor
            if let i = firstNonFinite(t) {
                throw TarFlowError.invalidCheckpoint(.nonFiniteWeight(tensor: name, element: i))
            }
            weights.append(WeightTensor(name: name, tensor: t))
        }
        return try assemble(config: config, weights: weights, noiseStd: options.noiseStd)
    }

    /// The architecture of a state dict, inferred from its tensors' names and shapes, with every
    /// tensor the official model has checked for its exact shape and nothing unexpected (an
    /// `attn_mask` buffer is [T, T]): needs no tensor data, so it runs before any is read.
    static func config(of tensors: [CheckpointTensorInfo], options: Options) throws -> TarFlowConfig {
        var byName: [String: CheckpointTensorInfo] = [:]
        for t in tensors {
            guard byName[t.name] == nil else { throw TarFlowError.invalidCheckpoint(.duplicateTensor(name: t.name)) }
            byName[t.name] = t
        }
        func shape(_ n: String) throws -> [Int] {
            guard let t = byName[n] else { throw TarFlowError.invalidCheckpoint(.missingTensor(name: n)) }
            return t.shape
        }
        // Architecture from names and shapes.
        var numBlocks = 0
        while byName["blocks.\(numBlocks).proj_in.weight"] != nil { numBlocks += 1 }
        guard numBlocks > 0 else { throw TarFlowError.invalidCheckpoint(.notTarFlow) }
        var layers = 0
        while byName["blocks.0.attn_blocks.\(layers).attention.qkv.weight"] != nil { layers += 1 }
        let pin = try shape("blocks.0.proj_in.weight")
        guard pin.count == 2 else { throw TarFlowError.invalidCheckpoint(.projInShape(shape: pin)) }
        let channels = pin[0], D = pin[1]
        let pos = try shape("blocks.0.pos_embed")
        guard pos.count == 2, pos[1] == channels else { throw TarFlowError.invalidCheckpoint(.posEmbedShape(shape: pos, channels: channels)) }
        let T = pos[0]
        let pout = try shape("blocks.0.proj_out.weight")
        guard pout.count == 2, pout[0] == D || pout[0] == 2 * D else {
            throw TarFlowError.invalidCheckpoint(.projOutShape(shape: pout, patchDim: D, channels: channels))
        }
        let nvp = pout[0] == 2 * D
        let numClasses = byName["blocks.0.class_embed"].map { $0.shape.first ?? 0 } ?? 0
        var expansion = 4
        if layers > 0 {
            let m0 = try shape("blocks.0.attn_blocks.0.mlp.main.0.weight")
            guard m0.count == 2, channels > 0, m0[0] % channels == 0 else { throw TarFlowError.invalidCheckpoint(.mlpShape(shape: m0)) }
            expansion = m0[0] / channels
        }
        let (img, inC, p) = try geometry(patchDim: D, tokens: T, options: options)
        let config = TarFlowConfig(inChannels: inC, imgSize: img, patchSize: p, channels: channels, numBlocks: numBlocks,
                                   layersPerBlock: layers, nvp: nvp, numClasses: numClasses, headDim: options.headDim, expansion: expansion)
        do { try config.validate() } catch {
            guard case .invalidConfig(let f) = error else { throw error }
            throw TarFlowError.invalidCheckpoint(.inferredConfig(f))
        }

        // Every tensor the official model has, with its exact shape; nothing unexpected.
        let expected = expectedShapes(config)
        for (name, s) in expected {
            let got = try shape(name)
            guard got == s else { throw TarFlowError.invalidCheckpoint(.tensorShape(name: name, shape: got, expected: s, config: config)) }
            guard byName[name]?.dtype != .int64 else { throw TarFlowError.invalidCheckpoint(.integerWeight(name: name)) }
        }
        let masks = Set((0..<numBlocks).map { "blocks.\($0).attn_mask" })
        for t in tensors where expected[t.name] == nil {
            // The causal mask is an op, not a weight; its buffer is skipped, but only at its size.
            if masks.contains(t.name) {
                guard t.shape == [T, T] else {
                    throw TarFlowError.invalidCheckpoint(.tensorShape(name: t.name, shape: t.shape, expected: [T, T], config: config))
                }
                continue
            }
            throw TarFlowError.invalidCheckpoint(.unexpectedTensor(name: t.name, shape: t.shape, config: config))
        }
        return config
    }

    /// Builds the graphs over the given weights and records the config as metadata.
    static func unverifiedModel(config: TarFlowConfig, weights: [WeightTensor], noiseStd: Double?) throws -> Model {
        var model = Model(graphs: [], tensors: weights, metadata: config.metadata)
        let types = model.constantTypes
        model.graphs = [try TarFlowGraphs.forward(config, constants: types)]
        for k in 0..<config.numBlocks { model.graphs.append(try TarFlowGraphs.decodeStep(config, block: k, constants: types)) }
        if let noiseStd { model.metadata["tarflow.noise_std"] = .double(noiseStd) }
        model.metadata["converter"] = .string("tarflow convert (swift-tarflow, format \(ModelFile.formatVersion))")
        return model
    }

    /// `unverifiedModel`, verified: the one check before it is written.
    public static func assemble(config: TarFlowConfig, weights: [WeightTensor], noiseStd: Double?) throws -> VerifiedModel {
        try unverifiedModel(config: config, weights: weights, noiseStd: noiseStd).verified()
    }

    /// Index of the first NaN or infinity (half types: exponent bits all ones), nil when every
    /// element is finite or the tensor holds integers.
    static func firstNonFinite(_ t: Tensor) -> Int? {
        switch t.storage {
        case .float32(let v): v.firstIndex { !$0.isFinite }
        case .float64(let v): v.firstIndex { !$0.isFinite }
        case .float16(let v): v.firstIndex { $0 & 0x7C00 == 0x7C00 }
        case .bfloat16(let v): v.firstIndex { $0 & 0x7F80 == 0x7F80 }
        case .uint8, .int32, .int64: nil
        }
    }

    static func summary(_ c: TarFlowConfig) -> String {
        "(C=\(c.inChannels), \(c.imgSize)px, p=\(c.patchSize), \(c.channels) ch, \(c.numBlocks) blocks x \(c.layersPerBlock) layers, classes=\(c.numClasses), nvp=\(c.nvp))"
    }

    /// Solves D = C·p², T = (H/p)² from any consistent subset of the options.
    static func geometry(patchDim D: Int, tokens T: Int, options o: Options) throws -> (img: Int, inChannels: Int, patch: Int) {
        // Bounds first, so the products below cannot overflow (TarFlowConfig.validate has the same limits).
        for (flag, v) in [("--image-size", o.imageSize), ("--in-channels", o.inChannels), ("--patch-size", o.patchSize)] {
            if let v, !(1...(1 << 16)).contains(v) { throw TarFlowError.invalidInput(.flagOutOfRange(flag: flag, value: v, range: 1...(1 << 16))) }
        }
        guard D > 0, D <= 1 << 30, T > 0, T <= 1 << 32 else {
            throw TarFlowError.invalidCheckpoint(.geometryOutOfRange(patchDim: D, tokens: T))
        }
        let side = Int(Double(T).squareRoot().rounded())
        guard side * side == T, side > 0 else { throw TarFlowError.invalidCheckpoint(.tokensNotSquare(tokens: T)) }
        var p: Int
        if let ps = o.patchSize {
            p = ps
        } else if let img = o.imageSize {
            guard img % side == 0 else { throw TarFlowError.invalidInput(.imageSizeNotGridMultiple(imageSize: img, side: side)) }
            p = img / side
        } else if let c = o.inChannels {
            guard c > 0, D % c == 0 else { throw TarFlowError.invalidInput(.inChannelsNotDividing(inChannels: c, patchDim: D)) }
            p = Int(Double(D / c).squareRoot().rounded())
            guard p * p * c == D else { throw TarFlowError.invalidInput(.inChannelsNotSquare(inChannels: c, patchDim: D)) }
        } else {
            throw TarFlowError.invalidInput(.geometryUnderdetermined(patchDim: D, tokens: T))
        }
        guard p > 0, D % (p * p) == 0 else { throw TarFlowError.invalidInput(.patchSizeNotFitting(patchSize: p, patchDim: D)) }
        let c = D / (p * p), img = side * p
        if let x = o.patchSize, x != p { throw TarFlowError.invalidInput(.patchSizeDisagrees(given: x, implied: p)) }
        if let x = o.imageSize, x != img { throw TarFlowError.invalidInput(.imageSizeDisagrees(given: x, patchSize: p, tokens: T, implied: img)) }
        if let x = o.inChannels, x != c { throw TarFlowError.invalidInput(.inChannelsDisagrees(given: x, patchSize: p, patchDim: D, implied: c)) }
        return (img, c, p)
    }

    /// Names and shapes of every parameter and buffer of the official model (except `attn_mask`).
    public static func expectedShapes(_ c: TarFlowConfig) -> [String: [Int]] {
        var s: [String: [Int]] = ["var": [c.numPatches, c.patchDim]]
        for k in 0..<c.numBlocks {
            let b = "blocks.\(k)"
            for (name, shape) in blockShapes(c) { s["\(b).\(name)"] = shape }
            for l in 0..<c.layersPerBlock {
                for (name, shape) in layerShapes(c) { s["\(b).attn_blocks.\(l).\(name)"] = shape }
            }
        }
        return s
    }

    /// The tensors of each block outside its attention layers, by name within the block.
    static func blockShapes(_ c: TarFlowConfig) -> KeyValuePairs<String, [Int]> {
        let C = c.channels, D = c.patchDim, out = c.nvp ? 2 * c.patchDim : c.patchDim
        if c.numClasses == 0 {
            return ["proj_in.weight": [C, D], "proj_in.bias": [C], "pos_embed": [c.numPatches, C], "proj_out.weight": [out, C], "proj_out.bias": [out]]
        }
        return ["proj_in.weight": [C, D], "proj_in.bias": [C], "pos_embed": [c.numPatches, C], "class_embed": [c.numClasses, 1, C],
                "proj_out.weight": [out, C], "proj_out.bias": [out]]
    }

    /// The tensors of each attention layer, by name within `attn_blocks.{l}`.
    static func layerShapes(_ c: TarFlowConfig) -> KeyValuePairs<String, [Int]> {
        let C = c.channels, E = C * c.expansion
        return ["attention.norm.weight": [C], "attention.norm.bias": [C], "attention.qkv.weight": [3 * C, C], "attention.qkv.bias": [3 * C],
                "attention.proj.weight": [C, C], "attention.proj.bias": [C], "mlp.norm.weight": [C], "mlp.norm.bias": [C],
                "mlp.main.0.weight": [E, C], "mlp.main.0.bias": [E], "mlp.main.2.weight": [C, E], "mlp.main.2.bias": [C]]
    }

    /// Bytes of the float32 tensors of `expectedShapes(c)`, counted per block and layer (listing
    /// every tensor of a huge config would itself take long); saturates at `Int.max`.
    public static func expectedWeightBytes(_ c: TarFlowConfig) -> Int {
        func elements(_ shapes: KeyValuePairs<String, [Int]>) -> Int { shapes.reduce(0) { Saturating.add($0, $1.value.reduce(1, Saturating.mul)) } }
        let block = Saturating.add(elements(blockShapes(c)), Saturating.mul(c.layersPerBlock, elements(layerShapes(c))))
        return Saturating.mul(Saturating.add(Saturating.mul(c.numBlocks, block), Saturating.mul(c.numPatches, c.patchDim)), 4)
    }
}
