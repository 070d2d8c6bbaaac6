import Foundation
import FlowRuntime

extension TarFlowModel {
    /// Prior noise f32[count, T, D] of images 0..<count (see `noise(images:seed:)`).
    public func noise(count: Int, seed: UInt64) -> Tensor { noise(images: 0..<count, seed: seed) }

    /// Prior noise f32[n, T, D] of images `images` of a run: element e of image i is
    /// `CounterRNG(seed).gaussian(i·T·D + e)`, a function of (seed, i) alone, so a shard that
    /// draws images 500..<1000 gets the bytes an unsharded run gives them, whatever the batch
    /// size, shard count, thread count or machine.
    public func noise(images: Range<Int>, seed: UInt64) -> Tensor {
        let per = config.numPatches * config.patchDim
        let rng = CounterRNG(seed: seed)
        let first = images.lowerBound * per
        return Tensor(shape: [images.count, config.numPatches, config.patchDim],
                      floats: (0..<(images.count * per)).map { rng.gaussian(UInt64(first + $0)) })
    }
}

extension TarFlowModel {
    /// Prior noise from a float32 `.npy` of shape (B, T, D), checked as `sample` takes it;
    /// errors name the file.
    public func noise(contentsOf url: URL) throws -> Tensor {
        let a = try NPY.read(contentsOf: url)
        guard case .float32(let f) = a.storage else { throw TarFlowError.invalidInput(.noiseDType(a.dtype), file: url.path) }
        let t = Tensor(shape: a.shape, floats: f)
        do { _ = try checkNoise(t) } catch TarFlowError.invalidInput(let f) { throw TarFlowError.invalidInput(f.located(in: url.path)) }
        return t
    }

    /// The batch size of prior noise f32[B, T, D] (B > 0, every element finite).
    func checkNoise(_ noise: Tensor) throws -> Int {
        let T = config.numPatches, D = config.patchDim
        guard noise.dtype == .float32 else { throw TarFlowError.invalidInput(.noiseDType(noise.dtype)) }
        guard noise.shape.count == 3, noise.shape[0] > 0, noise.shape[1] == T, noise.shape[2] == D else {
            throw TarFlowError.invalidInput(.noiseShape(shape: noise.shape, tokens: T, patchDim: D))
        }
        let f = noise.floats
        if let i = f.firstIndex(where: { !$0.isFinite }) { throw TarFlowError.invalidInput(.noiseNotFinite(element: i, value: f[i])) }
        return noise.shape[0]
    }
}
