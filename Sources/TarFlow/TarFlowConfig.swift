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
    public func validate() throws(TarFlowError) {
        func bad(_ m: String) -> TarFlowError { .invalidConfig(m) }
        guard inChannels > 0, imgSize > 0, patchSize > 0, channels > 0, numBlocks > 0, layersPerBlock >= 0, headDim > 0, expansion > 0
        else { throw bad("all sizes must be positive: \(self)") }
        guard imgSize % patchSize == 0 else { throw bad("img_size \(imgSize) is not a multiple of patch_size \(patchSize)") }
        guard channels % headDim == 0 else { throw bad("channels \(channels) is not a multiple of head_dim \(headDim)") }
        guard numClasses >= 0 else { throw bad("num_classes must be >= 0") }
        guard numPatches >= 1, imgSize <= 1 << 16, channels <= 1 << 16, numBlocks <= 1024, layersPerBlock <= 1024 else {
            throw bad("sizes out of range: \(self)")
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
                throw .invalidModel("metadata 'tarflow.\(k)' is missing; is this a TarFlow model file made by `tarflow convert`?")
            }
            ints.append(v)
        }
        guard let nvp = m["tarflow.nvp"]?.boolValue else { throw .invalidModel("metadata 'tarflow.nvp' is missing") }
        self.init(inChannels: ints[0], imgSize: ints[1], patchSize: ints[2], channels: ints[3], numBlocks: ints[4],
                  layersPerBlock: ints[5], nvp: nvp, numClasses: ints[6], headDim: ints[7], expansion: ints[8])
        try validate()
    }
}

/// Errors of the TarFlow layer; each says what to do.
public enum TarFlowError: Error, Sendable, CustomStringConvertible, Equatable {
    case invalidConfig(String)
    case invalidModel(String)
    case invalidCheckpoint(String)
    case invalidInput(String)

    public var description: String {
        switch self {
        case .invalidConfig(let m): "invalid config: \(m)"
        case .invalidModel(let m): "invalid model: \(m)"
        case .invalidCheckpoint(let m): "invalid checkpoint: \(m)"
        case .invalidInput(let m): "invalid input: \(m)"
        }
    }
}
