import Foundation
import FlowCompiler
import FlowIR
import FlowRuntime

extension TarFlowGraphs {
    /// The official training loss on top of the forward graph, `get_loss`:
    /// loss = 0.5 · mean(z²) − mean(logdets) over the batch (unit Gaussian prior, also for
    /// volume-preserving models), then its gradient with respect to the images, derived by the
    /// compiler's `Differentiate` pass. Outputs `loss` f32[] and `grad.x` f32[B,C,H,W].
    public static func gradient(forward: Graph, constants: [String: TensorType]) throws -> Graph {
        let b = GraphBuilder(extending: forward, name: "gradient", constants: constants)
        guard let z = forward.value(named: "z"), let ld = forward.value(named: "logdets") else {
            throw TarFlowError.invalidModel("the forward graph lacks outputs 'z' and 'logdets'")
        }
        let rank = b.type(z).rank
        let zz = try b.apply(.mul, z, z)
        let half = try b.apply(.scale(0.5), try b.apply(.reduceMean(axes: Array(0..<rank), keepDims: false), zz))
        let loss = try b.apply(.sub, half, try b.apply(.reduceMean(axes: [0], keepDims: false), ld), name: "loss")
        var g = b.graph
        g.outputs = [loss]
        return try Differentiate.gradientGraph(g, of: "loss", wrt: ["x"], constants: constants)
    }
}

extension TarFlowModel {
    /// The compiled gradient function (compiled on first use).
    func gradientPlan() throws -> Executor {
        lock.lock()
        defer { lock.unlock() }
        if let e = gradientExecutor { return e }
        let e = try makeExecutor("gradient") {
            try model.graph(named: "gradient") ?? TarFlowGraphs.gradient(forward: model.graph(named: "forward")!, constants: model.constantTypes)
        }
        gradientExecutor = e
        return e
    }

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
            throw TarFlowError.invalidInput("the model records no training noise level: pass --noise-std σ")
        }
        guard sigma >= 0, sigma.isFinite else { throw TarFlowError.invalidInput("noise std must be a finite number >= 0, is \(sigma)") }
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

    /// Per-class losses and Bayes-rule predictions.
    public struct ClassifyResult: Sendable {
        /// argmin over classes of the loss, one per image.
        public var predictions: [Int]
        /// f32[count, num_classes]: 0.5·mean(z²) − logdets with each label.
        public var losses: [Float]
        public var numClasses: Int
    }

    /// The flow as a classifier (the official notebook's Bayes rule): each image's loss
    /// 0.5·mean(z²) − logdets under every label; the smallest wins. Images are run in chunks of
    /// `batchSize`, each chunk as one forward batch of batchSize × classes rows.
    /// Integer images map to x/255·2 − 1 with no dequantization noise, as the notebook does.
    public func classify(images: ImageSet, range: Range<Int>? = nil, batchSize: Int = 64,
                         progress: ((Int, Int) -> Void)? = nil) throws -> ClassifyResult {
        let k = config.numClasses
        guard k > 0 else { throw TarFlowError.invalidInput("the model is unconditional (num_classes = 0); it cannot classify") }
        let r = try checkedBatches(images, range: range, batchSize: batchSize)
        var result = ClassifyResult(predictions: [], losses: [], numClasses: k)
        let per = config.imageDim
        var start = r.lowerBound
        while start < r.upperBound {
            try Task.checkCancellation()
            let end = min(start + batchSize, r.upperBound)
            let n = end - start
            let x = images.batch(start..<end, dequantization: .none).floats
            // Rows: class-major, as the notebook's repeat: row c·n + i is image i with label c.
            var rep = [Float]()
            rep.reserveCapacity(n * k * per)
            for _ in 0..<k { rep += x }
            let labels = (0..<k).flatMap { [Int](repeating: $0, count: n) }
            let f = try forward(images: Tensor(shape: [n * k, config.inChannels, config.imgSize, config.imgSize], floats: rep), labels: labels)
            let z = f.z.floats
            let zper = z.count / (n * k)
            for i in 0..<n {
                var best = 0
                var row: [Float] = []
                for c in 0..<k {
                    let rowIndex = c * n + i
                    var s = 0.0
                    for j in (rowIndex * zper)..<((rowIndex + 1) * zper) { s += Double(z[j]) * Double(z[j]) }
                    let loss = Float(0.5 * s / Double(zper) - Double(f.logdets[rowIndex]))
                    guard loss.isFinite else { throw TarFlowError.nonFinite(Finite.message("the loss with label \(c)", value: Double(loss), image: start + i)) }
                    row.append(loss)
                    if loss < row[best] { best = c }
                }
                result.losses += row
                result.predictions.append(best)
            }
            start = end
            progress?(start - r.lowerBound, r.count)
        }
        return result
    }
}
