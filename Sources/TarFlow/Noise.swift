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
