import Foundation
import FlowRuntime

extension TarFlowModel {
    /// Per-image likelihood figures of a run over a dataset.
    public struct LikelihoodResult: Sendable {
        public var bitsPerDim: [Double]
        /// −log p(x) / D − logdets, in nats per dimension (evaluate_bpd.py's `nll`).
        public var nll: [Double]
        public var logdets: [Float]
        /// f32[count, T, D] when latents were kept, else empty.
        public var z: [Float]
        public init(bitsPerDim: [Double], nll: [Double], logdets: [Float], z: [Float]) {
            self.bitsPerDim = bitsPerDim
            self.nll = nll
            self.logdets = logdets
            self.z = z
        }

        public var count: Int { bitsPerDim.count }
        public var meanBitsPerDim: Double { bitsPerDim.reduce(0, +) / Double(max(count, 1)) }
        public var meanNLL: Double { nll.reduce(0, +) / Double(max(count, 1)) }
    }

    /// The images of `range` (default: all), after checking that the dataset fits the model and
    /// the range and batch size make sense: what likelihood and classification both need.
    func checkedBatches(_ images: ImageSet, range: Range<Int>?, batchSize: Int) throws -> Range<Int> {
        guard images.channels == config.inChannels, images.size == config.imgSize else {
            throw TarFlowError.invalidInput(.imageGeometry(channels: images.channels, size: images.size, expectedChannels: config.inChannels, expectedSize: config.imgSize))
        }
        guard batchSize > 0 else { throw TarFlowError.invalidInput(.batchSizeNotPositive(batchSize)) }
        let r = range ?? 0..<images.count
        guard r.lowerBound >= 0, r.upperBound <= images.count else {
            throw TarFlowError.invalidInput(.rangeOutside(range: r, count: images.count))
        }
        return r
    }

    /// Exact likelihood of images `range` of a dataset, in batches of `batchSize` so any dataset
    /// fits in memory. Integer images are dequantized with uniform noise from `seed`.
    public func likelihood(images: ImageSet, labels: [Int]?, range: Range<Int>? = nil, batchSize: Int = 64, seed: UInt64 = 0,
                           keepLatents: Bool = false, progress: ((Int, Int) -> Void)? = nil) throws -> LikelihoodResult {
        let r = try checkedBatches(images, range: range, batchSize: batchSize)
        if let labels, labels.count != images.count {
            throw TarFlowError.invalidInput(.labelCount(labels: labels.count, images: images.count))
        }
        var result = LikelihoodResult(bitsPerDim: [], nll: [], logdets: [], z: [])
        var start = r.lowerBound
        while start < r.upperBound {
            try Task.checkCancellation()
            let end = min(start + batchSize, r.upperBound)
            let x = images.batch(start..<end, dequantization: .uniform(seed: seed))
            let f = try forward(images: x, labels: labels.map { Array($0[start..<end]) })
            let (bpd, nll) = bitsPerDim(f)
            try Finite.check(f.z.floats, rowSize: config.numPatches * config.patchDim, what: "z", firstImage: start)
            try Finite.check(f.logdets, rowSize: 1, what: "logdets", firstImage: start)
            try Finite.check(bpd, rowSize: 1, what: "bits/dim", firstImage: start)
            result.bitsPerDim += bpd
            result.nll += nll
            result.logdets += f.logdets
            if keepLatents { result.z += f.z.floats }
            start = end
            progress?(start - r.lowerBound, r.count)
        }
        return result
    }
}
