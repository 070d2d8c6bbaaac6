import FlowIR

/// What classifier-free guidance acts on: the log-scale a, the shift b, or both (the official
/// `guide_what` 'a', 'b', 'ab').
public enum GuidanceTarget: String, Sendable, Hashable, CaseIterable {
    case a, b, both

    /// The official code's `guide_what` ('a', 'b' or 'ab'); nil for anything else.
    public init?(officialName: String) {
        switch officialName {
        case "a": self = .a
        case "b": self = .b
        case "ab": self = .both
        default: return nil
        }
    }
}

/// Classifier-free guidance and temperature settings of `Model.reverse`.
public struct SamplingOptions: Sendable, Hashable {
    /// Guidance weight W ≥ 0; 0 runs no unguided branch.
    public var guidance: Float = 0
    /// Which of a, b guidance acts on.
    public var guide: GuidanceTarget = .both
    public var guideA: Bool { guide != .b }
    public var guideB: Bool { guide != .a }
    /// The unguided branch divides its attention logits by this (> 0).
    public var attentionTemperature: Float = 1
    /// g_i = (i + 1) / (T − 1) · W instead of W.
    public var annealed = false
    /// Scales the prior noise (τ).
    public var temperature: Float = 1
    /// Precision of the KV cache: f32 or f16 (math is f32 either way); nil: the model's
    /// default (`TarFlowModel.defaultKVCache`: f16 for f16/bf16 weights, f32 for f32).
    public var kvCache: DType? = nil

    public init(guidance: Float = 0, guide: GuidanceTarget = .both, attentionTemperature: Float = 1, annealed: Bool = false,
                temperature: Float = 1) {
        self.guidance = guidance
        self.guide = guide
        self.attentionTemperature = attentionTemperature
        self.annealed = annealed
        self.temperature = temperature
    }

    /// Whether an unguided branch runs beside the guided one (doubling the rows).
    public var isGuided: Bool { guidance > 0 && (guideA || guideB) }

    /// What messages call each setting: a command line passes its flags.
    public struct Names: Sendable {
        public var guidance = "guidance", guide = "guide target", attentionTemperature = "attention temperature"
        public var annealed = "annealing", temperature = "temperature", kvCache = "KV cache"
        public init() {}
    }

    /// Refuses settings `sample` cannot use, and settings that would be ignored: guide target,
    /// attention temperature and annealing shape the guided branch only.
    public func validate(names: Names = Names()) throws {
        guard guidance >= 0, guidance.isFinite else { throw TarFlowError.invalidInput(.notFiniteNonNegative(option: names.guidance, value: guidance)) }
        guard attentionTemperature > 0, attentionTemperature.isFinite else {
            throw TarFlowError.invalidInput(.notFinitePositive(option: names.attentionTemperature, value: attentionTemperature))
        }
        guard temperature >= 0, temperature.isFinite else { throw TarFlowError.invalidInput(.notFiniteNonNegative(option: names.temperature, value: temperature)) }
        if guidance == 0 {
            let given = [guide != .both ? "\(names.guide) \(guide.rawValue)" : nil,
                         attentionTemperature != 1 ? "\(names.attentionTemperature) \(attentionTemperature)" : nil,
                         annealed ? names.annealed : nil].compactMap { $0 }
            if !given.isEmpty {
                throw TarFlowError.invalidInput(.needsGuidance(options: given, guidanceOption: names.guidance))
            }
        }
        if let kvCache, kvCache != .float32, kvCache != .float16 {
            throw TarFlowError.invalidInput(.kvCacheDType(option: names.kvCache, dtype: kvCache))
        }
    }
}
