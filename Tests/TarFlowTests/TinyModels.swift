import Foundation
import FlowIR
@testable import TarFlow

/// Very small TarFlow models built in memory (deterministic weights), for tests that run a model
/// many times: hardening sweeps and CLI input checks.
enum TinyModels {
    /// 1×4×4 images, patch 2 (T = 4, D = 4), width 8 in two heads of 4, two blocks of one layer.
    static func config(classes: Int) -> TarFlowConfig {
        TarFlowConfig(inChannels: 1, imgSize: 4, patchSize: 2, channels: 8, numBlocks: 2, layersPerBlock: 1,
                      nvp: true, numClasses: classes, headDim: 4, expansion: 1)
    }

    static func model(classes: Int = 0, noiseStd: Double? = 0.1) throws -> Model {
        let c = config(classes: classes)
        var weights: [WeightTensor] = []
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for (name, shape) in Converter.expectedShapes(c).sorted(by: { $0.key < $1.key }) {
            let n = elementCount(shape)!
            let values: [Float] = (0..<n).map { _ in
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                let u = Float(state >> 40) / Float(1 << 24) - 0.5
                return name == "var" ? 1 + u * 0.2 : name.hasSuffix("norm.weight") ? 1 + 0.1 * u : 0.3 * u
            }
            weights.append(WeightTensor(name: name, dtype: .float32, shape: shape, bytes: TensorBytes(floats: values)))
        }
        return try Converter.assemble(config: c, weights: weights, noiseStd: noiseStd).model
    }

    static func bytes(classes: Int = 0) throws -> [UInt8] { try ModelFile.encode(try model(classes: classes)) }

    /// `model()` with weight `tensor` zero but for a NaN at `element`: the results it reaches are NaN.
    static func model(nanIn tensor: String, at element: Int) throws -> Model {
        var m = try model()
        guard let i = m.tensors.firstIndex(where: { $0.name == tensor }) else { throw TarFlowError.invalidModel(.missingTensor(name: tensor)) }
        var v = [Float](repeating: 0, count: elementCount(m.tensors[i].shape)!)
        v[element] = .nan
        m.tensors[i] = WeightTensor(name: tensor, dtype: .float32, shape: m.tensors[i].shape, bytes: TensorBytes(floats: v))
        return m
    }
}
