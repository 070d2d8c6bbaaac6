import FlowCompiler
import FlowIR

/// One graph bound for a batch of rows that are computed independently of each other, run as
/// `parts` single-threaded plans over disjoint slices of the batch, side by side, one per
/// thread. Per-op parallelism hands work to the other threads once per op (about 60 times per
/// TarFlow decode step, each op a few microseconds at batch 16) and moves activations between
/// cores; a split hands over once per run and keeps each slice's activations and state in one
/// core's cache.
///
/// A graph whose rows along `symbol` are not independent (an op mixes rows, as a loss averaged
/// over the batch does) is refused with the `CompilerError` (kind `rowsNotIndependent`) of
/// `BatchRows.check`.
/// Inputs and outputs whose first dimension is `symbol` are sliced by rows; every other input
/// is per part (write it to each, see `buffers(_:)`). State lives in the parts.
///
/// With fk_linear's row-independent sums, a split gives the same bits as the unsplit plan.
public final class BatchSplitPlan: @unchecked Sendable {
    /// The parts, in row order, and the global rows each one holds.
    public let parts: [BoundPlan]
    public let rows: [Range<Int>]
    let pool: ThreadPool
    private let partsJob: PartsJob
    let job: JobBox
    /// The split symbol and its size.
    public let symbol: String
    public let total: Int

    /// The bindings of each part: `count` slices of `symbol`'s rows, as even as possible.
    static func partRanges(total: Int, parts count: Int) -> [Range<Int>] {
        let n = max(1, min(count, total))
        var ranges: [Range<Int>] = []
        var start = 0
        for i in 0..<n {
            let size = total / n + (i < total % n ? 1 : 0)
            ranges.append(start..<(start + size))
            start += size
        }
        return ranges
    }

    /// - Parameter arenas: one shared arena per part (see `Executor.bind(_:in:)`), or nil for
    ///   parts with arenas of their own (cached by the executor).
    init(executor e: Executor, symbol: String, bindings: [String: Int], parts count: Int, arenas: [SharedArena]? = nil) throws {
        guard let total = bindings[symbol], total > 0 else { throw RuntimeError(.splitSymbolUnbound(symbol)) }
        try BatchRows.check(e.plan.graph, symbol: symbol)
        let ranges = BatchSplitPlan.partRanges(total: total, parts: count)
        if let arenas, arenas.count != ranges.count { throw RuntimeError(.splitArenaCount(parts: ranges.count, arenas: arenas.count)) }
        var plans: [BoundPlan] = []
        for (i, r) in ranges.enumerated() {
            var b = bindings
            b[symbol] = r.count
            if let arenas {
                plans.append(try BoundPlan(executor: e, bindings: b, threads: 1, shared: arenas[i]))
            } else {
                plans.append(try e.bind(b, part: i))
            }
        }
        parts = plans
        rows = ranges
        self.symbol = symbol
        self.total = total
        pool = e.pool
        partsJob = PartsJob(plans)
        job = JobBox(partsJob)
    }

    /// Runs every part on its own thread (the caller's among them) and waits for all.
    public func run() throws {
        partsJob.error = nil
        pool.run(job, count: parts.count)
        if let e = partsJob.error { throw e }
    }

    /// Runs on whole-batch inputs and returns whole-batch outputs (state inputs may be omitted
    /// and state outputs are not returned, as in `Executor.run`). Values whose first dimension
    /// is the split symbol are cut into the parts' rows and joined back; other inputs go to
    /// every part, other outputs come from the first.
    public func run(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        let g = graph
        let stateInputs = Set(g.state.map(\.input)), stateOutputs = Set(g.state.map(\.output))
        for name in inputs.keys where g.value(named: name).map({ g.inputs.contains($0) }) != true {
            throw RuntimeError(.notAnInput(name: name, graph: g.name, inputs: nil))
        }
        for v in g.inputs {
            let val = g.values[v]
            guard let t = inputs[val.name] else {
                if stateInputs.contains(v) { continue }
                throw RuntimeError(.missingInput(name: val.name, type: val.type))
            }
            guard t.dtype == val.type.dtype, t.shape.count == val.type.rank else {
                throw RuntimeError(.inputType(name: val.name, expected: val.type, dtype: t.dtype, shape: t.shape))
            }
            let sliced = isSliced(val.type)
            for (i, part) in parts.enumerated() {
                let expected = part.shapes[v]
                var shape = t.shape
                if sliced { shape[0] = rows[i].count }
                guard shape == expected, !sliced || t.shape[0] == total else {
                    throw RuntimeError(.inputRows(name: val.name, expected: val.type, symbol: symbol, total: total, got: t.shape))
                }
                let bytes = part.byteCount(v)
                let offset = sliced ? rows[i].lowerBound * (bytes / max(rows[i].count, 1)) : 0
                t.withUnsafeBytes { part.pointers[v]!.copyMemory(from: $0.baseAddress! + offset, byteCount: bytes) }
            }
        }
        try run()
        var out: [String: Tensor] = [:]
        for v in g.outputs where !stateOutputs.contains(v) {
            let val = g.values[v]
            guard isSliced(val.type) else {
                out[val.name] = parts[0].read(v)
                continue
            }
            var shape = parts[0].shapes[v]
            shape[0] = total
            if val.type.dtype == .int64 {
                out[val.name] = Tensor(shape: shape, int64s: parts.flatMap { $0.read(v).int64s })
            } else {
                out[val.name] = Tensor(shape: shape, floats: parts.flatMap { $0.read(v).floats })
            }
        }
        return out
    }

    var graph: Graph { parts[0].graph }

    func isSliced(_ t: TensorType) -> Bool {
        if case .symbol(let s)? = t.shape.first, s == symbol { return true }
        return false
    }

    /// Zeroes every part's state.
    public func resetState() { for p in parts { p.resetState() } }

    /// Row `row` (global) of a value whose first dimension is the split symbol: the part's
    /// buffer at that row, and the bytes of one row.
    public func row(_ name: String, _ row: Int) -> UnsafeMutableRawPointer? {
        guard let i = rows.firstIndex(where: { $0.contains(row) }), let b = parts[i].buffer(name), let first = b.shape.first, first > 0
        else { return nil }
        let rowBytes = parts[i].byteCount(ofValueNamed: name)! / first
        return b.pointer + (row - rows[i].lowerBound) * rowBytes
    }

    /// The value's buffer in every part (for inputs that are not sliced, such as a position).
    public func buffers(_ name: String) -> [UnsafeMutableRawPointer] { parts.compactMap { $0.buffer(name)?.pointer } }

    /// Bytes of all parts' arenas.
    public var arenaByteCount: Int { parts.reduce(0) { $0 + $1.arenaByteCount } }
}

/// Runs part `index` of a split; the parts' steps are prepared single-threaded.
private final class PartsJob: ParallelJob {
    let plans: [BoundPlan]
    let lock = NSLockLike()
    var error: Error?
    init(_ plans: [BoundPlan]) { self.plans = plans }
    /// Always worth a hand-off: each part is a whole run of the graph.
    var work: Double { .infinity }
    func run(_ index: Int, worker: Int) {
        do { try plans[index].execute() } catch {
            lock.lock()
            if self.error == nil { self.error = error }
            lock.unlock()
        }
    }
}

extension Executor {
    /// Arena bytes each part of a split of `bindings` needs (for sizing shared arenas).
    public func splitArenaBytes(_ bindings: [String: Int], symbol: String = "B", parts: Int? = nil) throws -> [Int] {
        guard let total = bindings[symbol], total > 0 else { throw RuntimeError(.splitSymbolUnbound(symbol)) }
        try BatchRows.check(plan.graph, symbol: symbol)
        return try BatchSplitPlan.partRanges(total: total, parts: parts ?? threads).map { r in
            var b = bindings
            b[symbol] = r.count
            return try memoryPlan(b).arenaBytes
        }
    }

    /// `bindSplit` with each part's buffers in the shared arena of the same index (not cached).
    public func bindSplit(_ bindings: [String: Int], in arenas: [SharedArena], symbol: String = "B") throws -> BatchSplitPlan {
        try BatchSplitPlan(executor: self, symbol: symbol, bindings: bindings, parts: arenas.count, arenas: arenas)
    }

    /// Binds the graph as `parts` single-threaded plans over slices of the batch symbol
    /// (default: one per thread). See `BatchSplitPlan`. Cached like `bind(_:)`.
    public func bindSplit(_ bindings: [String: Int], symbol: String = "B", parts: Int? = nil) throws -> BatchSplitPlan {
        let n = parts ?? threads
        let key = bindings.keys.sorted().map { "\($0)=\(bindings[$0]!)" }.joined(separator: ",") + "/\(symbol)/\(n)"
        lock.lock()
        if let s = splits[key] {
            lock.unlock()
            return s
        }
        lock.unlock()
        let s = try BatchSplitPlan(executor: self, symbol: symbol, bindings: bindings, parts: n)
        lock.lock()
        defer { lock.unlock() }
        if let existing = splits[key] { return existing }
        splits[key] = s
        return s
    }
}
