import Foundation
import FlowCompiler
import FlowIR
import FlowRuntime

// The memory check every big run makes before it starts. The numbers come from the executors
// the run will use (stored plans of a compiled file included; compiling them here is compiling
// them for the run) and from the same batching the run does, so the estimate is what the run
// allocates, not a second model of it. A run refused here costs a load and a plan, and under a
// tight `ulimit -v` it is a one-line error instead of `malloc` aborting half-way.

/// Integer arithmetic that sticks at `Int.max` instead of trapping: sizes computed from
/// outside numbers (a batch of 2^62) are compared with a limit, never used to allocate.
public enum Saturating {
    public static func mul(_ a: Int, _ b: Int) -> Int {
        let (p, o) = a.multipliedReportingOverflow(by: b)
        return o ? Int.max : p
    }

    public static func add(_ a: Int, _ b: Int) -> Int {
        let (s, o) = a.addingReportingOverflow(b)
        return o ? Int.max : s
    }
}

/// What a run will allocate, in bytes, beyond what the process uses already, with what it is for.
public struct MemoryNeed: Sendable, Equatable, CustomStringConvertible {
    public struct Part: Sendable, Equatable {
        public var what: String
        public var bytes: Int
    }

    public private(set) var parts: [Part] = []
    /// The sum of the parts; `Int.max` when it does not fit in `Int`.
    public private(set) var bytes = 0

    public init() {}

    mutating func add(_ what: String, _ bytes: Int) {
        guard bytes > 0 else { return }
        parts.append(Part(what: what, bytes: bytes))
        self.bytes = Saturating.add(self.bytes, bytes)
    }

    /// Bytes for people: GB with one decimal, MB below 1 GB (so a small need is not "0.0 GB").
    static func gb(_ b: Int) -> String {
        if b == Int.max { return "more than 9.2e9 GB" }
        return b >= 1_000_000_000 ? String(format: "%.1f GB", Double(b) / 1e9) : String(format: "%.1f MB", Double(b) / 1e6)
    }

    /// "about 1.2 GB (1234567890 bytes: forward plan arena 1000000000, batch images 234567890)".
    public var description: String {
        let total = bytes == Int.max ? "more than \(Int.max) bytes, an overflow" : "\(bytes) bytes"
        let list = parts.map { "\($0.what) \($0.bytes == Int.max ? "overflow" : String($0.bytes))" }.joined(separator: ", ")
        return "about \(MemoryNeed.gb(bytes)) (\(total)\(list.isEmpty ? "" : ": \(list)"))"
    }

    /// Refuses a need above what the process may still allocate (`MemoryLimit.current()`).
    /// - Parameter batch: the batch size that sets the need, for the message; nil when the
    ///   need comes from the weights (a config, a checkpoint).
    public func check(batch: Int? = nil, limit: MemoryLimit = .current()) throws {
        guard bytes > limit.bytes else { return }
        throw TarFlowError.insufficientMemory(MemoryShortfall(need: self, limit: limit, batch: batch))
    }
}

/// A run that needs more memory than the process may use: the numbers of the refusal.
public struct MemoryShortfall: Sendable, Equatable, CustomStringConvertible {
    public var need: MemoryNeed
    public var limit: MemoryLimit
    /// The batch size that sets the need, if a batch does.
    public var batch: Int?

    /// The refusal as one line: `subject` names what is too large ("--count 1000000000"), `fix`
    /// says what to do ("use a smaller --count").
    public func message(subject: String, fix: String) -> String {
        "\(subject) needs \(need) of memory, more than the \(limit.bytes) bytes of memory (\(MemoryNeed.gb(limit.bytes))) this process may use (\(limit.source)); \(fix)"
    }

    public var description: String {
        batch.map { message(subject: "a batch of \($0)", fix: "use a smaller batch") }
            ?? message(subject: "this run", fix: "use a smaller model or config, or raise the limit")
    }
}

extension TarFlowModel {
    /// A run as the preflight sizes it: the command, its image count and batching, and what it
    /// keeps. The model's thread count and weights are the model's own.
    public enum Run: Sendable, Equatable {
        /// `likelihood(images:range:batchSize:keepLatents:)` over `images` images.
        case likelihood(images: Int, batchSize: Int, keepLatents: Bool)
        /// `classify(images:range:batchSize:)` over `images` images.
        case classify(images: Int, batchSize: Int)
        /// `denoise` of `images` images in batches of `batchSize`, keeping the gradient if asked.
        case denoise(images: Int, batchSize: Int, keepGradient: Bool)
        /// `sample` of `images` images in one batch (guidance doubles the rows), then one
        /// denoising step of the whole batch if `denoise`.
        case sample(images: Int, options: SamplingOptions, denoise: Bool)
        /// `BenchSupport.forward` at `batch` (with the one-plan profile if `profile`).
        case benchForward(batch: Int, profile: Bool)
        /// `BenchSupport.sample` or `.decode` at `batch`: one sampling session, unguided.
        case benchSample(batch: Int, kvCache: DType?)

        /// The batch size that sets the need, for messages.
        public var batch: Int {
            switch self {
            case .likelihood(let n, let b, _), .classify(let n, let b), .denoise(let n, let b, _): min(n, b)
            case .sample(let n, _, _): n
            case .benchForward(let b, _), .benchSample(let b, _): b
            }
        }
    }

    /// The bytes `run` will allocate: the arenas of the plans it binds (stored memory plans where
    /// the file has them, split between threads as the run splits them), the tensors it makes
    /// per batch, and what it keeps. Prepares the executors the run will use (compiling graphs
    /// the file does not carry compiled, once, for this and the run).
    public func memoryNeed(_ run: Run) throws -> MemoryNeed {
        let image = Saturating.mul(config.imageDim, 4)  // one image (or latent) in f32
        var need = MemoryNeed()
        switch run {
        case .likelihood(let n, let batch, let keep):
            guard n > 0, batch > 0 else { break }
            let rows = min(n, batch)
            need.add("forward plan arenas", try forwardArenas(batchSizes(n, rows)))
            // The batch, its dequantized copy and every block's output read back.
            need.add("batch tensors", Saturating.mul(Saturating.mul(rows, image), 2 + config.numBlocks))
            if keep { need.add("kept latents (and their copy written)", Saturating.mul(Saturating.mul(n, image), 2)) }
        case .classify(let n, let batch):
            guard n > 0, batch > 0 else { break }
            let k = max(config.numClasses, 1), rows = min(n, batch)
            need.add("forward plan arenas", try forwardArenas(batchSizes(n, rows).map { Saturating.mul($0, k) }))
            // The chunk, its copy per class (array and tensor) and every block's output.
            need.add("batch tensors", Saturating.add(Saturating.mul(rows, image), Saturating.mul(Saturating.mul(Saturating.mul(rows, k), image), 2 + config.numBlocks)))
        case .denoise(let n, let batch, let keepGradient):
            guard n > 0, batch > 0 else { break }
            let rows = min(n, batch)
            need.add("gradient plan arenas", try arenas(gradientPlan(), batchSizes(n, rows), split: false))
            // The batch, the gradient read back and the denoised copy.
            need.add("batch tensors", Saturating.mul(Saturating.mul(rows, image), 3))
            // The denoised images (and the gradients) gathered, and their copies written.
            need.add("results (and their copies written)", Saturating.mul(Saturating.mul(n, image), keepGradient ? 4 : 2))
        case .sample(let n, let options, let denoise):
            guard n > 0 else { break }
            try options.validate()
            let rows = options.isGuided ? Saturating.mul(n, 2) : n
            need.add("decode plan arenas (KV caches included)", try samplingArenaSizes(rows: rows, halfCache: (options.kvCache ?? defaultKVCache) == .float16).reduce(0, Saturating.add))
            // The noise, the working copy, the images and the copy written.
            need.add("noise and images", Saturating.mul(Saturating.mul(n, image), 4))
            if denoise {
                need.add("gradient plan arena", try arenas(gradientPlan(), [n], split: false))
                need.add("denoising tensors", Saturating.mul(Saturating.mul(n, image), 3))
            }
        case .benchForward(let batch, let profile):
            guard batch > 0 else { break }
            need.add("forward plan arenas", try forwardArenas([batch]))
            let e = try forwardPlan()
            if profile, splitsBatch(e, rows: batch) { need.add("profiled plan arena", try arenas(e, [batch], split: false)) }
        case .benchSample(let batch, let kvCache):
            guard batch > 0 else { break }
            need.add("decode plan arenas (KV caches included)", try samplingArenaSizes(rows: batch, halfCache: (kvCache ?? defaultKVCache) == .float16).reduce(0, Saturating.add))
            need.add("noise and images", Saturating.mul(Saturating.mul(batch, image), 3))
        }
        return need
    }

    /// `memoryNeed(run)`, refused (`TarFlowError.insufficientMemory`, with the numbers) when
    /// it exceeds what this process may still allocate: RLIMIT_AS, RLIMIT_DATA, the cgroup's
    /// memory.max, else physical RAM (`MemoryLimit.current()`). Call it before the run.
    /// The packed weights first (`packedWeightNeed`: sizing the run makes its executors, which
    /// pack them), refused with a shortfall of no batch.
    @discardableResult
    public func preflight(_ run: Run, limit: MemoryLimit? = nil) throws -> MemoryNeed {
        try packedWeightNeed.check(limit: limit ?? .current())
        let need = try memoryNeed(run)
        try need.check(batch: run.batch, limit: limit ?? .current())
        return need
    }

    /// What the weight store still has to allocate when the first executor is made: a packed
    /// copy of each linear-layer weight in its storage precision. A lower bound of what it
    /// makes (panel padding, copied constants), so it refuses nothing the store would accept;
    /// the store refuses the rest itself. None once the weights are packed.
    public var packedWeightNeed: MemoryNeed {
        var need = MemoryNeed()
        guard weights.packedBytes == 0 else { return need }
        let names = model.linearWeightNames
        var bytes = 0
        for t in model.tensors where names.contains(t.name) {
            bytes = Saturating.add(bytes, Saturating.mul(t.shape.reduce(1, Saturating.mul), t.dtype.byteSize))
        }
        need.add("packed linear-layer weights", bytes)
        return need
    }

    /// The batch sizes a run over `n` images in batches of `rows` binds: the full batch, and
    /// the last, shorter one (bound plans are kept per size, so both arenas stay allocated).
    func batchSizes(_ n: Int, _ rows: Int) -> [Int] {
        n % rows == 0 ? [rows] : [rows, n % rows]
    }

    /// The forward plan's arenas at each batch size, split between threads as `forward` splits it.
    func forwardArenas(_ sizes: [Int]) throws -> Int {
        let e = try forwardPlan()
        return try sizes.reduce(0) { Saturating.add($0, try arenas(e, [$1], split: splitsBatch(e, rows: $1))) }
    }

    /// Arena bytes of `e` bound at each of `sizes` rows (summed over the parts when split).
    func arenas(_ e: Executor, _ sizes: [Int], split: Bool) throws -> Int {
        try sizes.reduce(0) { total, rows in Saturating.add(total, try planned(e, rows) { b in
            split ? try e.splitArenaBytes(b, symbol: TarFlowModel.batchSymbol).reduce(0, Saturating.add) : try e.memoryPlan(b).arenaBytes
        }) }
    }

    /// The arena sizes of a sampling session for `rows` rows: the decode blocks share them,
    /// so each is the largest block's (one per thread when the batch is split). `samplingSession`
    /// allocates exactly these.
    func samplingArenaSizes(rows: Int, halfCache: Bool) throws -> [Int] {
        let plans = try (0..<config.numBlocks).map { try decodePlan($0, halfCache: halfCache) }
        let split = splitsDecode(plans[0], rows: rows)
        var sizes: [Int] = []
        for p in plans {
            let need = try planned(p, rows) { b in split ? try p.splitArenaBytes(b, symbol: TarFlowModel.batchSymbol) : [try p.memoryPlan(b).arenaBytes] }
            sizes = sizes.isEmpty ? need : zip(sizes, need).map { max($0, $1) }
        }
        return sizes
    }

    /// The batch dimension's symbol in every graph of a TarFlow model (`Dim.batch`).
    static let batchSymbol: String = {
        guard case .symbol(let s) = Dim.batch else { preconditionFailure("Dim.batch is a symbol") }
        return s
    }()

    /// `body` with the batch symbol bound to `rows`; a batch whose buffers overflow the address
    /// space (the memory planner refuses it) gives `T.saturated` instead of the planner's error.
    func planned<T: SaturatingBytes>(_ e: Executor, _ rows: Int, _ body: ([String: Int]) throws -> T) throws -> T {
        let bindings = [TarFlowModel.batchSymbol: rows]
        do {
            return try body(bindings)
        } catch {
            // The planner's own bound (Int.max / 8 per buffer): past it, the batch is the reason.
            let g = e.plan.graph
            let naive = g.values.reduce(0) { total, v in
                Saturating.add(total, v.type.shape.reduce(v.type.dtype.byteSize) { Saturating.mul($0, $1.resolved(bindings) ?? 1) })
            }
            guard naive >= Int.max / 8 else { throw error }
            return T.saturated(parts: max(1, min(e.threads, rows)))
        }
    }
}

/// Arena figures that `planned` saturates when a batch overflows the address space.
protocol SaturatingBytes { static func saturated(parts: Int) -> Self }
extension Int: SaturatingBytes { static func saturated(parts: Int) -> Int { Int.max } }
extension Array: SaturatingBytes where Element == Int { static func saturated(parts: Int) -> [Int] { [Int](repeating: Int.max, count: parts) } }

extension TarFlowConfig {
    /// What making this config's float32 weights takes (`compile --config --random-weights`):
    /// `TarFlowConfig.validate` bounds each size but still allows terabytes of them.
    public var weightMemoryNeed: MemoryNeed {
        var need = MemoryNeed()
        need.add("float32 weights", Converter.expectedWeightBytes(self))
        return need
    }
}

extension Model {
    /// What `storingLinearWeights(as: dtype)` takes: a new copy, in `dtype`, of each linear-layer
    /// weight stored in another precision (and its f32 widening while it is converted).
    public func reencodingMemoryNeed(as dtype: DType) -> MemoryNeed {
        let names = linearWeightNames
        var copies = 0, widened = 0
        for t in tensors where names.contains(t.name) && t.dtype != dtype && t.dtype != .int64 {
            let n = t.shape.reduce(1, Saturating.mul)
            copies = Saturating.add(copies, Saturating.mul(n, dtype.byteSize))
            widened = max(widened, Saturating.mul(n, 4))
        }
        var need = MemoryNeed()
        need.add("re-encoded linear weights", copies)
        need.add("one weight widened to f32", widened)
        return need
    }

    /// What storing the linear weights packed (`AheadOfTime.compile`) takes: a packed copy of
    /// each one not yet in `panels32`.
    public func packingMemoryNeed() -> MemoryNeed {
        let names = linearWeightNames
        var bytes = 0
        for t in tensors where names.contains(t.name) && t.layout == .rowMajor && TensorLayout.panels32.refusal(t.dtype, t.shape) == nil {
            bytes = Saturating.add(bytes, Saturating.mul(TensorLayout.panels32.storedElements(t.shape) ?? Int.max, t.dtype.byteSize))
        }
        var need = MemoryNeed()
        need.add("linear weights packed for the kernels", bytes)
        return need
    }
}

extension Converter {
    /// What converting the checkpoint at `url` takes before any re-encoding: its tensors read
    /// into memory and the model's copy of them, about twice the file (checked before reading).
    public static func memoryNeed(checkpoint url: URL) -> MemoryNeed {
        let size = ((try? FileManager.default.attributesOfItem(atPath: url.path))?[.size] as? NSNumber)?.intValue ?? 0
        var need = MemoryNeed()
        need.add("the checkpoint's tensors read", size)
        need.add("the model's copy of them", size)
        return need
    }
}
