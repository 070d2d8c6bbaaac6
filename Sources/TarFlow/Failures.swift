import FlowIR

// The failures carried by `TarFlowError`'s `invalidConfig`, `invalidModel`, `invalidCheckpoint`
// and `nonFinite` cases (`invalidInput`'s kinds are in InputFailure.swift): a closed kind with the
// key, tensor, graph or index as data, so a caller branches without reading text; each message
// is written once, in the kind's `description`.

/// A failure of kind `K` (a closed enum that words its message), about `file` when known:
/// the message is then "file: message".
public struct FileFailure<K: Sendable & Equatable & CustomStringConvertible>: Sendable, Equatable, CustomStringConvertible {
    public typealias Kind = K
    public var kind: Kind
    /// The file concerned (or the files, outermost first, as "a: b"), if known.
    public var file: String?

    public init(_ kind: Kind, file: String? = nil) {
        self.kind = kind
        self.file = file
    }

    public var description: String { file.map { "\($0): \(kind)" } ?? "\(kind)" }

    /// The same failure, found while reading `path` (which then comes first in the message).
    public func located(in path: String) -> Self {
        var f = self
        f.file = file.map { "\(path): \($0)" } ?? path
        return f
    }
}

/// A config (JSON file, metadata or checkpoint-inferred) that breaks a constraint of the model.
public typealias ConfigFailure = FileFailure<ConfigFailureKind>

/// What is wrong with a config.
public enum ConfigFailureKind: Sendable, Equatable, CustomStringConvertible {
    /// `key` (a config key such as `channels`) is `value`, outside `range`.
    case outOfRange(key: String, value: Int, range: ClosedRange<Int>)
    /// `key` is `value`, not a multiple of `divisorKey`'s `divisor` (img_size / patch_size, channels / head_dim).
    case notMultiple(key: String, value: Int, divisorKey: String, divisor: Int)
    /// An image (C·H·W) or a layer of `config` has more than `limit` elements.
    case sizesTooLarge(limit: Int, config: TarFlowConfig)
    /// The JSON lacks the required `key`.
    case missingKey(String)
    /// The value at `key` (a dotted coding path) has the wrong type or is null.
    case wrongType(key: String, detail: String)
    /// The file is not JSON.
    case notJSON(detail: String)
    /// Another decoding failure, as the decoder words it.
    case undecodable(detail: String)
    /// `noise_std` is not a finite number >= 0.
    case badNoiseStd
    /// Tensor `name` of this config would have more elements than a weight may.
    case tensorTooLarge(name: String, shape: [Int])

    public var description: String {
        switch self {
        case let .outOfRange(key, value, range): "\(key) \(value) is out of range: use \(range.lowerBound)...\(range.upperBound)"
        case let .notMultiple(key, value, divisorKey, divisor): "\(key) \(value) is not a multiple of \(divisorKey) \(divisor)"
        case let .sizesTooLarge(limit, config): "sizes out of range: an image (C·H·W) or a layer exceeds \(limit) elements: \(config)"
        case let .missingKey(key): "missing key '\(key)'"
        case let .wrongType(key, detail): "key '\(key)': \(detail)"
        case let .notJSON(detail): "not valid JSON: \(detail)"
        case let .undecodable(detail): detail
        case .badNoiseStd: "noise_std must be a finite number >= 0"
        case let .tensorTooLarge(name, shape): "tensor '\(name)' \(shape) is too large"
        }
    }
}

/// A model file whose metadata, tensors and graphs are not those of a TarFlow model.
public typealias ModelFailure = FileFailure<ModelFailureKind>

/// What is wrong with a model file.
public enum ModelFailureKind: Sendable, Equatable, CustomStringConvertible {
    /// How a graph's signature differs from the one the config implies.
    public enum GraphMismatch: Sendable, Equatable, CustomStringConvertible {
        /// The non-state inputs are `names`, not `expected`.
        case inputs(names: [String], expected: [String])
        /// Input `name` has type `actual` (nil: absent), not `expected`.
        case inputType(name: String, actual: TensorType?, expected: TensorType)
        /// Output `name` is absent (or a state).
        case missingOutput(name: String)
        /// Output `name` has type `actual`, not `expected`.
        case outputType(name: String, actual: TensorType, expected: TensorType)
        /// The graph has state bindings where none belong.
        case hasState
        /// An unconditional model's graph has a value `y` (the sampler would fill it with labels).
        case labelsInUnconditional
        /// Value `name` is larger than the model can need: more than `limit` bytes (per batch row if `perRow`).
        case valueTooLarge(name: String, type: TensorType, limit: Int, perRow: Bool)

        public var description: String {
            switch self {
            case let .inputs(names, expected): "inputs are \(names), expected \(expected)"
            case let .inputType(name, actual, expected): "input '\(name)' is \(actual.map { "\($0)" } ?? "missing"), expected \(expected)"
            case let .missingOutput(name): "output '\(name)' is missing"
            case let .outputType(name, actual, expected): "output '\(name)' is \(actual), expected \(expected)"
            case .hasState: "has state bindings"
            case .labelsInUnconditional: "has a value named 'y' but the model is unconditional"
            case let .valueTooLarge(name, type, limit, perRow):
                "value '\(name)' of type \(type) is larger than this model can need (\(limit) bytes\(perRow ? " per batch row" : ""))"
            }
        }
    }

    /// Metadata `key` (e.g. `tarflow.channels`) is absent.
    case missingMetadata(key: String)
    /// Metadata `tarflow.nvp` is absent.
    case missingNVPMetadata
    /// The metadata's config breaks a constraint of the model.
    case invalidMetadata(ConfigFailure)
    /// Metadata `key` records `metadata`, but `source` (a tensor or graph) says `found`.
    case metadataDisagrees(key: String, metadata: String, found: String, source: String)
    /// No `blocks.0.proj_in.weight` matrix: not a TarFlow model.
    case notTarFlow
    /// Tensor `name`, which the metadata's config needs, is absent.
    case missingTensor(name: String)
    /// Tensor `name` has `shape`; the metadata's config needs `expected`.
    case tensorShape(name: String, shape: [Int], expected: [Int])
    /// Tensor `name` is not part of the model the metadata describes.
    case unexpectedTensor(name: String)
    /// The prior's `var` tensor has `shape`, not `expected`.
    case priorShape(shape: [Int], expected: [Int])
    /// The prior's `var` tensor is absent.
    case missingPrior
    /// Graph `graph`'s signature does not fit `config`.
    case graphMismatch(graph: String, GraphMismatch, config: TarFlowConfig)
    /// The file has no graph `name` (decode graphs: made by an older converter).
    case missingGraph(name: String)
    /// The model has no graph `name` to compile from.
    case missingSourceGraph(name: String)
    /// The forward graph has no outputs `z` and `logdets` to differentiate.
    case forwardLacksOutputs
    /// Graph `decode{block}` lacks one of the buffers the sampler fills or reads.
    case decodeSignature(block: Int)

    static let reconvert = "re-convert the checkpoint with `tarflow convert`"

    public var description: String {
        switch self {
        case let .missingMetadata(key): "metadata '\(key)' is missing; is this a TarFlow model file made by `tarflow convert`?"
        case .missingNVPMetadata: "metadata 'tarflow.nvp' is missing"
        case let .invalidMetadata(f): "metadata (tarflow.*): \(f); the file was damaged or edited: \(Self.reconvert)"
        case let .metadataDisagrees(key, metadata, found, source):
            "metadata '\(key)' is \(metadata) but \(source) says \(found); the metadata, tensors and graphs disagree: \(Self.reconvert)"
        case .notTarFlow:
            "tensor 'blocks.0.proj_in.weight' is missing or not a matrix; is this a TarFlow model file made by `tarflow convert`?"
        case let .missingTensor(name): "tensor '\(name)' is missing; the config in the metadata needs it: \(Self.reconvert)"
        case let .tensorShape(name, shape, expected):
            "tensor '\(name)' has shape \(shape), the config in the metadata needs \(expected): \(Self.reconvert)"
        case let .unexpectedTensor(name): "tensor '\(name)' is not part of the model the metadata describes; \(Self.reconvert)"
        case let .priorShape(shape, expected): "tensor 'var' has shape \(shape), the config needs \(expected); \(Self.reconvert)"
        case .missingPrior: "the prior 'var' tensor is missing"
        case let .graphMismatch(graph, m, c):
            "graph '\(graph)': \(m) (config \(c.inChannels)x\(c.imgSize)x\(c.imgSize), patch \(c.patchSize), \(c.numClasses) classes); "
                + "the file's metadata and graphs disagree: \(Self.reconvert)"
        case let .missingGraph(name):
            "the model file has no '\(name)' graph" + (name.hasPrefix("decode") ? "; re-convert it with this version of `tarflow convert`" : "")
        case let .missingSourceGraph(name): "the model has no '\(name)' graph"
        case .forwardLacksOutputs: "the forward graph lacks outputs 'z' and 'logdets'"
        case let .decodeSignature(block): "decode\(block) lacks the inputs x, pos, logit_scale or outputs a, b"
        }
    }
}

/// A checkpoint state dict that is not one of the official TarFlow model (its file could be read).
public typealias StateDictFailure = FileFailure<StateDictFailureKind>

/// What is wrong with a state dict.
public enum StateDictFailureKind: Sendable, Equatable, CustomStringConvertible {
    /// Tensor `tensor` holds a NaN or an infinity at `element`.
    case nonFiniteWeight(tensor: String, element: Int)
    /// Two tensors are named `name`.
    case duplicateTensor(name: String)
    /// Tensor `name`, which the official model has, is absent.
    case missingTensor(name: String)
    /// No `blocks.0.proj_in.weight`: not a TarFlow state dict.
    case notTarFlow
    /// `blocks.0.proj_in.weight` has `shape`, not two dimensions.
    case projInShape(shape: [Int])
    /// `blocks.0.pos_embed` has `shape`, not [T, channels].
    case posEmbedShape(shape: [Int], channels: Int)
    /// `blocks.0.proj_out.weight` has `shape`, not [2·patchDim or patchDim, channels].
    case projOutShape(shape: [Int], patchDim: Int, channels: Int)
    /// `mlp.main.0.weight` has `shape`, not [k·channels, channels].
    case mlpShape(shape: [Int])
    /// The config inferred from the tensors breaks a constraint of the model.
    case inferredConfig(ConfigFailure)
    /// Tensor `name` has `shape`; the inferred `config` needs `expected`.
    case tensorShape(name: String, shape: [Int], expected: [Int], config: TarFlowConfig)
    /// Weight `name` is int64.
    case integerWeight(name: String)
    /// Tensor `name` is not part of the model of the inferred `config`.
    case unexpectedTensor(name: String, shape: [Int], config: TarFlowConfig)
    /// The patch dimension or token count is outside what a model can have.
    case geometryOutOfRange(patchDim: Int, tokens: Int)
    /// The token count of `pos_embed` is not a square.
    case tokensNotSquare(tokens: Int)

    public var description: String {
        switch self {
        case let .nonFiniteWeight(tensor, element):
            "tensor '\(tensor)' holds NaN or Inf at element \(element); the checkpoint is damaged (or was saved after training diverged): use another checkpoint"
        case let .duplicateTensor(name): "tensor '\(name)' appears twice"
        case let .missingTensor(name): "tensor '\(name)' is missing; is this an official TarFlow state_dict?"
        case .notTarFlow: "no 'blocks.0.proj_in.weight': not a TarFlow state_dict"
        case let .projInShape(shape): "blocks.0.proj_in.weight must be 2-D, is \(shape)"
        case let .posEmbedShape(shape, channels): "blocks.0.pos_embed has shape \(shape), expected [T, \(channels)]"
        case let .projOutShape(shape, d, channels): "blocks.0.proj_out.weight has shape \(shape), expected [\(2 * d) or \(d), \(channels)]"
        case let .mlpShape(shape): "mlp.main.0.weight has shape \(shape)"
        case let .inferredConfig(f): "\(TarFlowError.invalidConfig(f))"
        case let .tensorShape(name, shape, expected, config):
            "tensor '\(name)' has shape \(shape), the inferred config \(Converter.summary(config)) needs \(expected)"
        case let .integerWeight(name): "tensor '\(name)' is int64; TarFlow weights are floating point"
        case let .unexpectedTensor(name, shape, config): "unexpected tensor '\(name)' (shape \(shape)) for config \(Converter.summary(config))"
        case let .geometryOutOfRange(d, t): "patch dimension \(d) or token count \(t) is out of range"
        case let .tokensNotSquare(t): "pos_embed has \(t) tokens, not a square number"
        }
    }
}

/// A result that came out NaN or infinite: which quantity, its value, and the first image it
/// concerns (`Finite.check`).
public struct NonFiniteResult: Sendable, Equatable, CustomStringConvertible {
    /// The quantity ("z", "logdets", "the loss with label 3", ...).
    public var quantity: String
    /// The first non-finite value (NaN or ±infinity).
    public var value: Double
    /// The global index of the first image whose result is not finite.
    public var image: Int

    public init(quantity: String, value: Double, image: Int) {
        self.quantity = quantity
        self.value = value
        self.image = image
    }

    public var description: String {
        "\(quantity) of image \(image) is \(value.isNaN ? "NaN" : "\(value)"); the model file's weights or the images are damaged "
            + "(images must be in model space [-1, 1]); nothing was written"
    }
}

extension TarFlowError {
    static func invalidConfig(_ kind: ConfigFailure.Kind, file: String? = nil) -> TarFlowError { .invalidConfig(ConfigFailure(kind, file: file)) }
    static func invalidModel(_ kind: ModelFailure.Kind, file: String? = nil) -> TarFlowError { .invalidModel(ModelFailure(kind, file: file)) }
    static func invalidCheckpoint(_ kind: StateDictFailure.Kind, file: String? = nil) -> TarFlowError {
        .invalidCheckpoint(StateDictFailure(kind, file: file))
    }
    static func invalidInput(_ kind: InputFailure.Kind, file: String? = nil) -> TarFlowError { .invalidInput(InputFailure(kind, file: file)) }
}
