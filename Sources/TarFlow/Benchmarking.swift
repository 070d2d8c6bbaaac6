import Dispatch
import Foundation
import FlowIR
import FlowRuntime
#if canImport(Glibc)
import Glibc
#endif

/// Timing helpers behind `tarflow bench` and the Benchmarks package.
public enum BenchSupport {
    public struct Result: Sendable {
        public var seconds: [Double]
        public var flops: Double
        public var arenaBytes: Int
        /// For `load`: seconds from opening the file to the forward plan bound and ready to run.
        public var readySeconds: [Double] = []
        public var median: Double { seconds.sorted()[seconds.count / 2] }
    }

    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

    /// Untimed calls for at least `seconds` (and at least one): a fresh process runs its first
    /// ~0.1 s up to 2× slower on this machine (measured with one thread too: 7.4 ms → 3.6 ms per
    /// batch-1 forward over the first 20 calls), while the Python runners it is compared with
    /// are timed in a process that has been running for a while.
    static func warmUp(seconds: Double = 0.3, _ body: () throws -> Void) throws {
        let t0 = now()
        repeat { try body() } while now() - t0 < seconds
    }

    /// Forward passes at batch `batch` through the bound plan: inputs written in place, so the
    /// timed loop is the executor alone (no allocation).
    public static func forward(_ m: TarFlowModel, batch: Int, reps: Int, profile: Bool = false) throws -> Result {
        let exec = try m.forwardPlan()
        // The path `TarFlowModel.forward` takes: the batch split between threads, or one plan.
        let split = m.splitsBatch(exec, rows: batch) ? try exec.bindSplit(["B": batch]) : nil
        // One plan at this batch when it is what runs, or for the per-op profile.
        let bound = split == nil || profile ? try exec.bind(["B": batch]) : nil
        let dim = m.config.imageDim
        for r in 0..<batch {
            let xs = [split?.row("x", r), bound.flatMap { $0.buffer("x") }.map { $0.pointer + r * dim * 4 }].compactMap { $0 }
            let ys = [split?.row("y", r), bound.flatMap { $0.buffer("y") }.map { $0.pointer + r * 8 }].compactMap { $0 }
            for x in xs {
                for i in 0..<dim { x.assumingMemoryBound(to: Float.self)[i] = Float(((r * dim + i) * 7919) % 255) / 127.5 - 1 }
            }
            for y in ys { y.assumingMemoryBound(to: Int64.self).pointee = Int64(r % max(m.config.numClasses, 1)) }
        }
        let run: () throws -> Void = split.map { s in { try s.run() } } ?? { try bound!.run() }
        try warmUp(run)
        var times = [Double](repeating: 0, count: reps)
        let m0 = mallocCount()
        for r in 0..<reps {
            let t0 = now()
            try run()
            times[r] = now() - t0
        }
        let m1 = mallocCount()
        if let m0, let m1 { FileDescriptorOutput.standardError("heap allocations per call: \(Double(m1 - m0) / Double(reps))\n") }
        if profile {
            printProfile(try bound!.profile(), what: "one call", unit: "s", scale: 1)
        }
        return Result(seconds: times, flops: exec.plan.flops(bindings: ["B": batch]), arenaBytes: split?.arenaByteCount ?? bound!.arenaByteCount)
    }

    /// Full sampling runs (all blocks, all tokens) of `batch` images, unguided.
    public static func sample(_ m: TarFlowModel, batch: Int, reps: Int, profile: Bool = false, kvCache: DType? = nil) throws -> Result {
        var options = SamplingOptions()
        options.kvCache = kvCache
        if profile {
            // One decode step of block 0 at the middle token.
            let bound = try m.decodePlan(0).bind(["B": batch])
            bound.buffer("pos")!.pointer.assumingMemoryBound(to: Int64.self)[0] = Int64(m.config.numPatches / 2)
            if let ls = bound.buffer("logit_scale") {
                for i in 0..<batch { ls.pointer.assumingMemoryBound(to: Float.self)[i] = TarFlowGraphs.attentionScale(m.config) }
            }
            try bound.run()
            let m0 = mallocCount()
            for _ in 0..<100 { try bound.run() }
            if let m0, let m1 = mallocCount() { FileDescriptorOutput.standardError("heap allocations per decode step: \(Double(m1 - m0) / 100)\n") }
            if m.splitsBatch(try m.decodePlan(0), rows: batch) {
                // The path `sample` takes at this batch: the step split between threads.
                let split = try m.decodeStepSplit(block: 0, batch: batch)
                for p in split.buffers("pos") { p.assumingMemoryBound(to: Int64.self).pointee = Int64(m.config.numPatches / 2) }
                for r in 0..<batch { split.row("logit_scale", r)?.assumingMemoryBound(to: Float.self).pointee = TarFlowGraphs.attentionScale(m.config) }
                try split.run()
                let s0 = mallocCount()
                for _ in 0..<100 { try split.run() }
                if let s0, let s1 = mallocCount() {
                    FileDescriptorOutput.standardError("heap allocations per decode step, batch split between threads: \(Double(s1 - s0) / 100)\n")
                }
            }
            printProfile(try bound.profile(), what: "decode step of block 0, one step", unit: "ms", scale: 1e3)
        }
        let z = m.noise(count: batch, seed: 0)
        try warmUp { _ = try m.sample(noise: z, options: options) }
        var times: [Double] = []
        for _ in 0..<reps {
            let t0 = now()
            _ = try m.sample(noise: z, options: options)
            times.append(now() - t0)
        }
        var flops = 0.0
        let half = (kvCache ?? m.defaultKVCache) == .float16
        for k in 0..<m.config.numBlocks {
            flops += try m.decodePlan(k, halfCache: half).plan.flops(bindings: ["B": batch]) * Double(m.config.numPatches - 1)
        }
        return Result(seconds: times, flops: flops, arenaBytes: try m.samplingSession(rows: batch, halfCache: half).arenaBytes)
    }

    /// Seconds from opening a model file to the first forward result on `batch` images, each
    /// repetition a fresh load: with a compiled file (`tarflow compile`) no compiler pass runs.
    public static func load(contentsOf url: URL, batch: Int, reps: Int, threads: Int = 1) throws -> Result {
        let probe = try TarFlowModel(contentsOf: url, threads: threads)
        let c = probe.config
        let n = batch * c.imageDim
        let images = Tensor(shape: [batch, c.inChannels, c.imgSize, c.imgSize], floats: (0..<n).map { Float(($0 * 7919) % 255) / 127.5 - 1 })
        let labels = c.numClasses > 0 ? (0..<batch).map { $0 % c.numClasses } : nil
        var times: [Double] = [], ready: [Double] = []
        var arena = 0
        for _ in 0..<reps {
            let t0 = now()
            let m = try TarFlowModel(contentsOf: url, threads: threads)
            arena = try m.forwardPlan().bind(["B": batch]).arenaByteCount
            let t1 = now()
            _ = try m.forward(images: images, labels: labels)
            times.append(now() - t0)
            ready.append(t1 - t0)
        }
        var r = Result(seconds: times, flops: 0, arenaBytes: arena)
        r.readySeconds = ready
        return r
    }

    /// Calls to malloc so far, when a counting interposer that exports `mcount_get` is preloaded.
    static func mallocCount() -> Int? {
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mcount_get") else { return nil }
        typealias Get = @convention(c) () -> Int
        return unsafeBitCast(sym, to: Get.self)()
    }

    /// Peak resident set size of this process image: VmHWM of /proc/self/status (getrusage's
    /// ru_maxrss keeps the peak from before execve, so a process started by a large parent, such
    /// as Tools/compare, would report the parent's), else getrusage.
    public static func peakRSS() -> Int {
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
            let kb = Int(line.dropFirst(6).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
        {
            return kb * 1024
        }
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Int(u.ru_maxrss) * 1024
    }
}

func fmt(_ v: Double, _ digits: Int = 4) -> String {
    let p = (0..<digits).reduce(1.0) { a, _ in a * 10 }
    return String((v * p).rounded() / p)
}

extension String {
    func padding(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}

extension BenchSupport {
    /// A per-op profile on stderr, slowest op first: time per run in `unit` (seconds × `scale`),
    /// share of the total, and calls per run; `entries` sum `runs` runs.
    static func printProfile(_ entries: [(op: String, seconds: Double, count: Int)], what: String, runs: Int = 1, unit: String, scale: Double) {
        let n = Double(max(1, runs))
        let total = entries.reduce(0) { $0 + $1.seconds }
        var s = "per-op profile (\(what), \(fmt(total / n * scale)) \(unit)):\n"
        for e in entries.sorted(by: { $0.seconds > $1.seconds }) {
            let share = total > 0 ? fmt(100 * e.seconds / total, 1) : "0"
            s += "  " + e.op.padding(18) + " \(fmt(e.seconds / n * scale)) \(unit)  \(share)%  x\(e.count / max(1, runs))\n"
        }
        FileDescriptorOutput.standardError(s)
    }
}

/// Writes to file descriptor 2 without touching C's `stderr` global.
enum FileDescriptorOutput {
    static func standardError(_ s: String) {
        var bytes = Array(s.utf8)
        _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
    }
}

extension BenchSupport {
    /// `tarflow bench --what decode`: decode steps of the first block sampling runs, as
    /// `sample` runs them (same arena, split or per-op threads, KV-cache precision).
    public struct DecodeResult: Sendable {
        public var secondsPerStep: Double
        /// Per step × (T − 1) × blocks / batch: sampling time per image from the steps alone.
        public var secondsPerImageEstimate: Double
        /// Weights plus KV cache read per step, averaged over the timed positions.
        public var bytesPerStep: Double
        public var gbytesPerSecond: Double { bytesPerStep / secondsPerStep / 1e9 }
        public var weightBytes: Int
        public var kvCache: DType
        public var split: Bool
    }

    /// Times `steps` decode steps at positions spread evenly over 0 ..< T − 1 (so the KV reads
    /// average those of a whole block), after one untimed pass over a few of them.
    /// With `profile`, the same positions run once more with a clock around every op and the
    /// per-op times go to stderr (not possible when the step is split between threads).
    public static func decode(_ m: TarFlowModel, batch: Int, steps: Int, kvCache: DType? = nil, profile: Bool = false) throws -> DecodeResult {
        let c = m.config
        let T = c.numPatches
        let kv = kvCache ?? m.defaultKVCache
        let session = try m.samplingSession(rows: batch, halfCache: kv == .float16)
        let k = c.numBlocks - 1
        let step = session.steps[k]
        // Known before anything is timed: a split step's parts run at once and have no per-op clock.
        let profileStep = profile ? step.profile : nil
        if profile && profileStep == nil {
            throw TarFlowError.invalidInput(.profileSplitDecode(batch: batch))
        }
        step.resetState()
        let scale = TarFlowGraphs.attentionScale(c)
        for r in 0..<batch {
            step.logitScale[r].pointee = scale
            step.label[r]?.pointee = c.numClasses > 0 ? Int64(r % c.numClasses) : -1
            for d in 0..<c.patchDim { step.x[r][d] = Float((r * 31 + d) % 17) / 17 - 0.5 }
        }
        let positions = (0..<max(1, steps)).map { $0 * (T - 1) / max(1, steps) }
        for p in positions.prefix(4) {
            for q in step.position { q.pointee = Int64(p) }
            try step.run()
        }
        var total = 0.0
        for p in positions {
            for q in step.position { q.pointee = Int64(p) }
            let t0 = now()
            try step.run()
            total += now() - t0
        }
        let perStep = total / Double(positions.count)
        if let run = profileStep {
            var acc: [String: (seconds: Double, count: Int)] = [:]
            for p in positions {
                for q in step.position { q.pointee = Int64(p) }
                for e in try run() { acc[e.op, default: (0, 0)].seconds += e.seconds; acc[e.op, default: (0, 0)].count += e.count }
            }
            printProfile(acc.map { (op: $0.key, seconds: $0.value.seconds, count: $0.value.count) },
                         what: "decode step of block \(k), mean of \(positions.count) steps", runs: positions.count, unit: "ms", scale: 1e3)
        }
        let plan = try m.decodePlan(k, halfCache: kv == .float16)
        let split = m.splitsDecode(plan, rows: batch)
        // Each part of a split reads every weight; per-op threads read each once.
        let weights = plan.packedWeightBytes * (split ? min(plan.threads, batch) : 1)
        let meanKeys = positions.reduce(0.0) { $0 + Double($1 + 1) } / Double(positions.count)
        let kvBytes = 2 * Double(c.layersPerBlock) * Double(batch) * meanKeys * Double(c.channels) * Double(kv.byteSize)
        return DecodeResult(secondsPerStep: perStep, secondsPerImageEstimate: perStep * Double(T - 1) * Double(c.numBlocks) / Double(batch),
                            bytesPerStep: Double(weights) + kvBytes, weightBytes: weights, kvCache: kv, split: split)
    }
}
