import Foundation
import FlowCompiler
import FlowIR
import FlowRuntime

/// Where sampling is: block (in the order run, 0 first) and token, for progress reports.
public struct SamplingProgress: Sendable {
    public var block: Int
    public var blocks: Int
    public var token: Int
    public var tokens: Int
    /// Fraction done, 0…1.
    public var fraction: Double { (Double(block) + Double(token) / Double(max(tokens, 1))) / Double(max(blocks, 1)) }
}

extension TarFlowModel {
    /// The compiled decode step of block `k`, with its KV cache in f16 if `halfCache`.
    func decodePlan(_ k: Int, halfCache: Bool = false) throws -> Executor {
        lock.lock()
        defer { lock.unlock() }
        let key = DecodeKey(block: k, halfCache: halfCache)
        if let e = decodeExecutors[key] { return e }
        let e = try makeExecutor("decode\(k)", halfPrecisionState: halfCache) {
            guard let g = try verifiedGraph("decode\(k)") else {
                throw TarFlowError.invalidModel(.missingGraph(name: "decode\(k)"))
            }
            return g
        }
        decodeExecutors[key] = e
        return e
    }

    /// The bound decode step of block `k` for `batch` rows (for benchmarks and custom loops).
    public func decodeStep(block k: Int, batch: Int, kvCache: DType = .float32) throws -> BoundPlan {
        try decodePlan(k, halfCache: kvCache == .float16).bind(["B": batch])
    }

    /// The decode step of block `k` for `batch` rows split between the threads, as `sample`
    /// runs it when there are at least as many rows as threads and the weights are small (for
    /// benchmarks and custom loops).
    public func decodeStepSplit(block k: Int, batch: Int, kvCache: DType = .float32) throws -> BatchSplitPlan {
        try decodePlan(k, halfCache: kvCache == .float16).bindSplit(["B": batch])
    }

    /// The decode steps of every block for `rows` rows, in one arena (one per thread when the
    /// batch is split): blocks run one after another, so they share buffers and KV cache. Kept
    /// for the next call with the same shape; a new shape replaces it.
    func samplingSession(rows: Int, halfCache: Bool) throws -> SamplingSession {
        lock.lock()
        if let s = samplingSession, s.rows == rows, s.halfCache == halfCache {
            lock.unlock()
            return s
        }
        samplingSession = nil  // free the old arena before making the new one
        lock.unlock()
        let plans = try (0..<config.numBlocks).map { try decodePlan($0, halfCache: halfCache) }
        let split = splitsDecode(plans[0], rows: rows)
        let sizes = try samplingArenaSizes(rows: rows, halfCache: halfCache)
        let arenas = try sizes.map { try SharedArena(byteCount: $0) }
        let steps = try plans.enumerated().map { k, p in try DecodeStep(plan: p, rows: rows, split: split, block: k, arenas: arenas) }
        let s = SamplingSession(rows: rows, halfCache: halfCache, steps: steps, arenaBytes: sizes.reduce(0, +))
        lock.lock()
        samplingSession = s
        lock.unlock()
        return s
    }

    /// `Model.reverse`: prior noise f32[B, T, D] → images f32[B, C, H, W] in model space.
    /// Labels: one per image, −1 = no label (mean class embedding); nil = all −1.
    public func sample(noise: Tensor, labels: [Int]? = nil, options: SamplingOptions = SamplingOptions(),
                       progress: ((SamplingProgress) -> Void)? = nil, isCancelled: (() -> Bool)? = nil) throws -> Tensor {
        try options.validate()
        let T = config.numPatches, D = config.patchDim
        let B = try checkNoise(noise)
        let labs: [Int]
        if config.numClasses > 0 {
            labs = try checkLabels(labels, count: B)
        } else {
            if let labels, labels.contains(where: { $0 != -1 }) {
                throw TarFlowError.invalidInput(.labelsForUnconditional)
            }
            labs = [Int](repeating: -1, count: B)
        }
        guard let varTensor = model.tensor(named: "var") else { throw TarFlowError.invalidModel(.missingPrior) }
        let sd = varTensor.floats().map { $0.squareRoot() }
        var x = noise.floats
        for i in x.indices { x[i] = x[i] * options.temperature * sd[i % (T * D)] }

        let guided = options.isGuided
        let rows = guided ? 2 * B : B
        let scale = TarFlowGraphs.attentionScale(config)
        let session = try samplingSession(rows: rows, halfCache: (options.kvCache ?? defaultKVCache) == .float16)
        for (run, k) in (0..<config.numBlocks).reversed().enumerated() {
            let step = session.steps[k]
            step.resetState()
            for r in 0..<rows { step.logitScale[r].pointee = r < B ? scale : scale / options.attentionTemperature }
            for r in 0..<rows { step.label[r]?.pointee = r < B ? Int64(labs[r]) : -1 }
            let flip = k % 2 == 1
            // Token t of the permuted sequence is token perm(t) of x.
            @inline(__always) func tok(_ t: Int) -> Int { flip ? T - 1 - t : t }
            for i in 0..<(T - 1) {
                if isCancelled?() == true { throw CancellationError() }
                for p in step.position { p.pointee = Int64(i) }
                for r in 0..<rows {
                    let src = (r % B) * T * D + tok(i) * D
                    let xp = step.x[r]
                    for d in 0..<D { xp[d] = x[src + d] }
                }
                try step.run()
                let g: Float = options.annealed ? Float(i + 1) / Float(T - 1) * options.guidance : options.guidance
                for r in 0..<B {
                    let dst = r * T * D + tok(i + 1) * D
                    let ap = step.a[r], bp = step.b[r]
                    for d in 0..<D {
                        var a = ap[d], bb = bp[d]
                        if guided {
                            if options.guideA { a = a + g * (a - step.a[B + r][d]) }
                            if options.guideB { bb = bb + g * (bb - step.b[B + r][d]) }
                        }
                        x[dst + d] = x[dst + d] * expf(a) + bb
                    }
                }
                progress?(SamplingProgress(block: run, blocks: config.numBlocks, token: i + 1, tokens: T - 1))
            }
        }
        return unpatchify(Tensor(shape: [B, T, D], floats: x))
    }

    /// (B, T, D) patches → (B, C, H, W) images, the inverse of the forward graph's patchify.
    public func unpatchify(_ t: Tensor) -> Tensor {
        let c = config, p = c.patchSize, h = c.imgSize / p, C = c.inChannels, S = c.imgSize
        let B = t.shape[0]
        let src = t.floats
        var out = [Float](repeating: 0, count: B * C * S * S)
        for b in 0..<B {
            for i in 0..<h {
                for j in 0..<h {
                    let tokenBase = (b * h * h + i * h + j) * c.patchDim
                    for ch in 0..<C {
                        for ki in 0..<p {
                            for kj in 0..<p {
                                out[((b * C + ch) * S + i * p + ki) * S + j * p + kj] = src[tokenBase + (ch * p + ki) * p + kj]
                            }
                        }
                    }
                }
            }
        }
        return Tensor(shape: [B, C, S, S], floats: out)
    }
}

/// A block's decode step as the sampler drives it, with a pointer per row to each row input
/// and output: one bound plan, or a `BatchSplitPlan` (see `TarFlowModel.splitsBatch`).
struct DecodeStep {
    let run: () throws -> Void
    let resetState: () -> Void
    /// One run with a clock around every op (nil when the step is split between threads,
    /// whose parts run at once).
    var profile: (() throws -> [(op: String, seconds: Double, count: Int)])? = nil
    var x: [UnsafeMutablePointer<Float>] = [], a: [UnsafeMutablePointer<Float>] = [], b: [UnsafeMutablePointer<Float>] = []
    var logitScale: [UnsafeMutablePointer<Float>] = []
    var label: [UnsafeMutablePointer<Int64>?] = []
    var position: [UnsafeMutablePointer<Int64>] = []

    /// - Parameter arenas: where the buffers go (one arena per part when split, else one).
    init(plan: Executor, rows: Int, split: Bool, block k: Int, arenas: [SharedArena]) throws {
        let missing = TarFlowError.invalidModel(.decodeSignature(block: k))
        if split {
            let split = try plan.bindSplit(["B": rows], in: arenas)
            run = { try split.run() }
            resetState = { split.resetState() }
            for r in 0..<rows {
                guard let xp = split.row("x", r), let ap = split.row("a", r), let bp = split.row("b", r), let lp = split.row("logit_scale", r)
                else { throw missing }
                x.append(xp.assumingMemoryBound(to: Float.self))
                a.append(ap.assumingMemoryBound(to: Float.self))
                b.append(bp.assumingMemoryBound(to: Float.self))
                logitScale.append(lp.assumingMemoryBound(to: Float.self))
                label.append(split.row("y", r)?.assumingMemoryBound(to: Int64.self))
            }
            position = split.buffers("pos").map { $0.assumingMemoryBound(to: Int64.self) }
            guard position.count == split.parts.count else { throw missing }
        } else {
            let bound = try plan.bind(["B": rows], in: arenas[0])
            run = { try bound.run() }
            resetState = { bound.resetState() }
            profile = { try bound.profile() }
            guard let xin = bound.buffer("x"), let pos = bound.buffer("pos"), let ls = bound.buffer("logit_scale"),
                let aOut = bound.buffer("a"), let bOut = bound.buffer("b")
            else { throw missing }
            let d = xin.shape.last ?? 0
            let y = bound.buffer("y")?.pointer.assumingMemoryBound(to: Int64.self)
            for r in 0..<rows {
                x.append(xin.pointer.assumingMemoryBound(to: Float.self) + r * d)
                a.append(aOut.pointer.assumingMemoryBound(to: Float.self) + r * d)
                b.append(bOut.pointer.assumingMemoryBound(to: Float.self) + r * d)
                logitScale.append(ls.pointer.assumingMemoryBound(to: Float.self) + r)
                label.append(y.map { $0 + r })
            }
            position = [pos.pointer.assumingMemoryBound(to: Int64.self)]
        }
    }
}

/// Every block's decode step for one batch shape, sharing one arena (per thread when split).
final class SamplingSession: @unchecked Sendable {
    let rows: Int
    let halfCache: Bool
    /// By block index.
    let steps: [DecodeStep]
    let arenaBytes: Int
    init(rows: Int, halfCache: Bool, steps: [DecodeStep], arenaBytes: Int) {
        self.rows = rows
        self.halfCache = halfCache
        self.steps = steps
        self.arenaBytes = arenaBytes
    }
}
