import Foundation

extension TarFlowModel {
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
        guard k > 0 else { throw TarFlowError.invalidInput(.unconditionalClassify) }
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
                    guard loss.isFinite else { throw TarFlowError.nonFinite(NonFiniteResult(quantity: "the loss with label \(c)", value: Double(loss), image: start + i)) }
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
