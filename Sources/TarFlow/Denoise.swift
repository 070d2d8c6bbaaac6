import Foundation
import FlowRuntime

extension TarFlowModel {
    /// Result of one score-based denoising step.
    public struct DenoiseResult: Sendable {
        /// x − lr · ∇ₓ loss, f32[B, C, H, W].
        public var images: Tensor
        /// ∇ₓ of the batch loss 0.5·mean(z²) − mean(logdets).
        public var gradient: Tensor
        /// The step, B·H·W·C·σ².
        public var learningRate: Double
        public var loss: Float
    }

    /// The paper's denoising step on a batch, as the official code: x − lr·∇ₓ loss with
    /// lr = B·H·W·C·σ², which per image is x + σ²·∇ₓ log p(x) (so batching does not matter).
    /// σ defaults to the noise level stored in the model. `firstImage` (the batch's place in a
    /// dataset) only numbers the image named when a result is not finite.
    public func denoise(images: Tensor, labels: [Int]?, noiseStd: Double? = nil, firstImage: Int = 0) throws -> DenoiseResult {
        guard let sigma = noiseStd ?? self.noiseStd else {
            throw TarFlowError.invalidInput(.noNoiseLevel)
        }
        guard sigma >= 0, sigma.isFinite else { throw TarFlowError.invalidInput(.noiseStd(sigma)) }
        let inputs = try graphInputs(images: images, labels: labels)
        let b = images.shape[0]
        let out = try gradientPlan().run(inputs)
        let grad = out["grad.x"]!
        let lr = Double(b * config.imageDim) * sigma * sigma
        let x = images.floats, g = grad.floats
        let lrF = Float(lr)
        let y = (0..<x.count).map { x[$0] - lrF * g[$0] }
        try Finite.check(g, rowSize: config.imageDim, what: "the gradient", firstImage: firstImage)
        try Finite.check(y, rowSize: config.imageDim, what: "the denoised image", firstImage: firstImage)
        return DenoiseResult(images: Tensor(shape: images.shape, floats: y), gradient: grad, learningRate: lr, loss: out["loss"]!.floats[0])
    }
}
