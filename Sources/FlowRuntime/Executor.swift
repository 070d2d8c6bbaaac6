import Dispatch
import CFlowKernels
import COpenBLAS
import FlowCompiler
import FlowIR
#if canImport(Glibc)
import Glibc
#endif

/// Runs an execution plan. Constants come from a `WeightStore` shared by the model's executors:
/// f32 and i64 tensors stay where the model file mapped them, f16/bf16 ones read by other ops
/// are widened once, and linear-layer weights are packed once in their stored precision.
/// Load-time steps run once in `init`. For each binding of the graph's symbols (each batch
/// size) the executor prepares an instance once — buffer pointers, kernel sizes, strides — so
/// a run only copies inputs in, walks the prepared steps and copies outputs out.
public final class Executor: @unchecked Sendable {
    public let plan: ExecutionPlan
    public let threads: Int
    /// Pointers of values available before any input: constants and load-step results.
    var fixed: [ValueID: UnsafeMutableRawPointer] = [:]
    /// Linear-layer weights among `fixed`, packed for `fk_linear_w` (see `LinearJob`).
    var packedWeights: [ValueID: WeightStore.Packed] = [:]
    /// Owns the memory `fixed` points into; bound plans hold it too.
    let loaded: LoadedValues
    var model: Model { loaded.store.model }
    /// The model's weights as the kernels read them, shared with its other executors.
    public var weights: WeightStore { loaded.store }
    var instances: [[Int]: BoundPlan] = [:]
    var splits: [String: BatchSplitPlan] = [:]
    let lock = NSLockLike()

    let pool: ThreadPool
    /// Whether the memory plan lets ops overwrite operands (off for debugging and tests).
    let inPlace: Bool
    /// Memory plans made ahead of time (a compiled model file, checked by `MemoryPlanner.verify`),
    /// by binding; other bindings are planned when first bound.
    let memoryPlans: [[String: Int]: MemoryPlan]

    /// - Parameter weights: the store of `model`'s weights to share (nil: a store of its own).
    public init(plan: ExecutionPlan, model: Model, threads: Int = 1, inPlace: Bool = true,
                memoryPlans: [[String: Int]: MemoryPlan] = [:], weights: WeightStore? = nil) throws {
        self.plan = plan
        let store = weights ?? WeightStore(model: model)
        loaded = LoadedValues(store: store)
        self.inPlace = inPlace
        self.memoryPlans = memoryPlans
        self.threads = max(1, threads)
        pool = ThreadPool(threads: self.threads)
        let g = plan.graph
        // Constants read only as the weight of linear layers are read packed, never as f32.
        var constantName: [ValueID: String] = [:]
        for n in g.nodes { if case .constant(let name) = n.op { constantName[n.outputs[0]] = name } }
        var otherUse = Set<ValueID>(g.outputs)
        for s in plan.loadSteps + plan.steps {
            let isLinear: Bool = switch s.op {
            case .linear, .fusedLinear: true
            default: false
            }
            for (j, v) in s.inputs.enumerated() where !(isLinear && j == 1) { otherUse.insert(v) }
        }
        for (v, name) in constantName {
            if otherUse.contains(v) {
                fixed[v] = try store.values(name)
            } else if let t = model.tensor(named: name) {
                // Never dereferenced as f32: every reader is a linear step with packed weights.
                fixed[v] = UnsafeMutableRawPointer(mutating: t.bytes.pointer)
            } else {
                throw RuntimeError(.missingConstant(name))
            }
        }
        // Load-time steps: fixed shapes, evaluated once.
        var shapes: [ValueID: [Int]] = [:]
        var loadBytes = 0
        for s in plan.loadSteps {
            for v in s.inputs + s.outputs {
                guard let sh = g.values[v].type.concreteShape([:]) else { throw RuntimeError(.symbolicLoadTimeValue(g.values[v].name)) }
                shapes[v] = sh
            }
            for o in s.outputs where fixed[o] == nil {
                // Sizes come from the file: checked against memory before anything is allocated.
                guard let bytes = Executor.byteCount(shapes[o] ?? [], g.values[o].type.dtype),
                    case let (total, overflow) = loadBytes.addingReportingOverflow(bytes), !overflow, total <= Executor.memoryLimit
                else {
                    throw RuntimeError(.loadTimeValuesTooLarge(graph: g.name, limit: Executor.memoryLimit))
                }
                loadBytes = total
                fixed[o] = allocate(max(1, bytes))
            }
            if case .constant = s.op { continue }
            let prepared = try Self.prepare(s, graph: g, shapes: { shapes[$0]! }, pointer: { self.fixed[$0]! }, scratch: { self.allocate($0) }, threads: 1)
            try prepared.execute(ThreadPool(threads: 1))
        }
        // Weights of linear layers known at load: constants from the shared store; f32 weights
        // computed by load-time steps packed here, once.
        for s in plan.steps {
            switch s.op {
            case .linear, .fusedLinear: break
            default: continue
            }
            let wv = s.inputs[1]
            guard packedWeights[wv] == nil, let ws = g.values[wv].type.concreteShape([:]), ws.count == 2 else { continue }
            if let name = constantName[wv] {
                packedWeights[wv] = try store.packed(name, n: ws[0], k: ws[1])
                continue
            }
            guard let wp = fixed[wv], g.values[wv].type.dtype == .float32 else { continue }
            let floats = fk_packed_size(ws[0], ws[1])
            guard case let (total, overflow) = loadBytes.addingReportingOverflow(floats * 4), !overflow, total <= Executor.memoryLimit else {
                throw RuntimeError(.packedWeightsTooLarge(graph: g.name, limit: Executor.memoryLimit))
            }
            loadBytes = total
            let p = allocate(floats * 4).assumingMemoryBound(to: Float.self)
            fk_pack_weights(wp.assumingMemoryBound(to: Float.self), ws[0], ws[1], p)
            packedWeights[wv] = WeightStore.Packed(pointer: UnsafeRawPointer(p), type: Int32(FK_WEIGHTS_F32), bytes: floats * 4)
        }
        store.releaseMappedPages()
    }

    /// Bytes of the packed linear weights this plan reads per run (each once).
    public var packedWeightBytes: Int { packedWeights.values.reduce(0) { $0 + $1.bytes } }

    func allocate(_ bytes: Int) -> UnsafeMutableRawPointer {
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 8), alignment: 64)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: max(bytes, 8))
        loaded.owned.append(p)
        return p
    }

    // MARK: Running

    /// Runs the plan; inputs by graph input name, outputs by graph output name. State inputs
    /// may be omitted (the bound plan keeps them); state outputs are not returned.
    public func run(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        let inst = try instance(for: inputs)
        try inst.execute()
        var out: [String: Tensor] = [:]
        let states = Set(plan.graph.state.map(\.output))
        for v in plan.graph.outputs where !states.contains(v) { out[plan.graph.values[v].name] = inst.read(v) }
        return out
    }

    /// The plan prepared for one binding of the symbols (e.g. `["B": 16]`), for callers that
    /// write inputs and read outputs in place, call after call, with no allocation: the sampler's
    /// decode steps. Bound plans are cached; state (KV caches) lives in them.
    public func bind(_ bindings: [String: Int]) throws -> BoundPlan {
        try bind(bindings, part: nil)
    }

    /// The memory plan for a binding: the stored one (a compiled model file) or a new one.
    public func memoryPlan(_ bindings: [String: Int]) throws -> MemoryPlan {
        try (inPlace ? memoryPlans[bindings] : nil) ?? MemoryPlanner.plan(plan, bindings: bindings, inPlace: inPlace)
    }

    /// The plan for a binding with its buffers (state included) in `arena`, which other plans
    /// share: plans that run one after another (the decode blocks of sampling) then need one
    /// arena, not one each. The caller runs at most one of them at a time and keeps it (this
    /// binding is not cached). State is whatever the arena holds: reset it before a new sequence.
    public func bind(_ bindings: [String: Int], in arena: SharedArena) throws -> BoundPlan {
        try BoundPlan(executor: self, bindings: bindings, threads: threads, shared: arena)
    }

    /// `part` nil: the plan run on all threads. A part number: one single-threaded instance
    /// of a `BatchSplitPlan`, with its own buffers and state.
    func bind(_ bindings: [String: Int], part: Int?) throws -> BoundPlan {
        let key = bindings.keys.sorted().map { bindings[$0]! } + (part.map { [-1, $0] } ?? [])
        lock.lock()
        defer { lock.unlock() }
        if let i = instances[key] { return i }
        let i = try BoundPlan(executor: self, bindings: bindings, threads: part == nil ? threads : 1)
        instances[key] = i
        return i
    }

    /// Runs the plan and returns every value it computed (for differential tests and debugging).
    /// Buffers are shared over time (see MemoryPlanner), so each value is copied out right
    /// after the step that makes it.
    public func runCapturingAll(_ inputs: [String: Tensor]) throws -> [Tensor?] {
        let inst = try instance(for: inputs)
        let g = plan.graph
        var out = [Tensor?](repeating: nil, count: g.values.count)
        for v in g.values.indices where inst.pointers[v] != nil && (fixed[v] != nil || g.inputs.contains(v)) { out[v] = inst.read(v) }
        Executor.setBLASThreads(1)
        for (i, s) in inst.steps.enumerated() {
            try s.execute(pool)
            for o in plan.steps[i].outputs { out[o] = inst.read(o) }
        }
        return out
    }

    /// Binds symbols from the inputs' shapes, then finds or prepares the instance and copies
    /// the inputs into it.
    func instance(for inputs: [String: Tensor]) throws -> BoundPlan {
        let g = plan.graph
        var bindings: [String: Int] = [:]
        let stateInputs = Set(g.state.map(\.input))
        for v in g.inputs {
            let val = g.values[v]
            guard let t = inputs[val.name] else {
                if stateInputs.contains(v) { continue }
                throw RuntimeError(.missingInput(name: val.name, type: val.type))
            }
            guard t.dtype == val.type.dtype else { throw RuntimeError(.inputDType(name: val.name, expected: val.type.dtype, got: t.dtype)) }
            guard t.shape.count == val.type.rank else { throw RuntimeError(.inputShape(name: val.name, expected: val.type, got: t.shape)) }
            for (d, n) in zip(val.type.shape, t.shape) {
                switch d {
                case .fixed(let f) where f != n:
                    throw RuntimeError(.inputShape(name: val.name, expected: val.type, got: t.shape))
                case .symbol(let s):
                    if let b = bindings[s], b != n { throw RuntimeError(.symbolDisagrees(symbol: s, first: b, second: n, input: val.name)) }
                    bindings[s] = n
                default: break
                }
            }
        }
        for name in inputs.keys where g.value(named: name).map({ g.inputs.contains($0) }) != true {
            throw RuntimeError(.notAnInput(name: name, graph: g.name, inputs: plan.inputNames))
        }
        for s in Set(g.inputs.flatMap { g.values[$0].type.shape.compactMap { if case .symbol(let s) = $0 { s } else { nil } } })
        where bindings[s] == nil {
            throw RuntimeError(.symbolOnlyInState(s))
        }
        let inst = try bind(bindings)
        for v in g.inputs {
            guard let t = inputs[g.values[v].name] else { continue }
            t.withUnsafeBytes { inst.pointers[v]!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        return inst
    }

}

/// The memory of the values fixed at load: the weight store (whose model's tensors and copies
/// constants point into) and the buffers of load-step results. A bound plan keeps it alive, so its
/// pointers stay valid when the executor that made it is gone.
final class LoadedValues: @unchecked Sendable {
    let store: WeightStore
    var owned: [UnsafeMutableRawPointer] = []
    init(store: WeightStore) { self.store = store }
    deinit { for p in owned { p.deallocate() } }
}

/// Everything prepared for one binding of the symbols: concrete shapes, one arena holding every
/// buffer, kernels with their pointers and sizes. State inputs keep their values between runs.
public final class BoundPlan: @unchecked Sendable {
        let shapes: [[Int]]
        var pointers: [UnsafeMutableRawPointer?]
        var steps: [PreparedStep] = []
        let arena: UnsafeMutableRawPointer
        let arenaBytes: Int
        var scratch: [UnsafeMutableRawPointer] = []
        let graph: Graph

        /// - Parameter shared: an arena to take the buffers from instead of one of its own.
        init(executor e: Executor, bindings: [String: Int], threads: Int, shared: SharedArena? = nil) throws {
            let g = e.plan.graph
            graph = g
            plan = e.plan
            loaded = e.loaded
            self.threads = threads
            pool = threads == 1 ? ThreadPool.serial : e.pool
            shapes = try ShapeInference.concreteShapes(g, bindings: bindings)
            pointers = [UnsafeMutableRawPointer?](repeating: nil, count: g.values.count)
            for (v, p) in e.fixed { pointers[v] = p }
            stateBuffers = g.state.map(\.input)
            // Every run-time buffer at its planned offset in one arena (views, in-place
            // updates and state chains share buffers; see MemoryPlanner).
            memoryPlan = try e.memoryPlan(bindings)
            let total = memoryPlan.arenaBytes
            guard total <= Executor.memoryLimit else {
                throw RuntimeError(.buffersTooLarge(graph: g.name, bindings: bindings, bytes: total, limit: Executor.memoryLimit))
            }
            arenaBytes = total
            if let shared {
                guard shared.byteCount >= total else {
                    throw RuntimeError(.sharedArenaTooSmall(graph: g.name, bindings: bindings, bytes: total, arena: shared.byteCount))
                }
                arena = shared.pointer
            } else {
                arena = UnsafeMutableRawPointer.allocate(byteCount: max(total, 64), alignment: 64)
                arena.initializeMemory(as: UInt8.self, repeating: 0, count: max(total, 64))
            }
            self.shared = shared
            for v in g.values.indices where pointers[v] == nil {
                if let b = memoryPlan.buffer[v] { pointers[v] = arena + memoryPlan.offsets[b] }
            }
            var scratch: [UnsafeMutableRawPointer] = []
            for s in e.plan.steps {
                steps.append(try Executor.prepare(s, graph: g, shapes: { self.shapes[$0] }, pointer: { self.pointers[$0]! }, scratch: { n in
                    let p = UnsafeMutableRawPointer.allocate(byteCount: max(n, 8), alignment: 64)
                    scratch.append(p)
                    return p
                }, packed: { e.packedWeights[$0] }, bf16Attention: e.loaded.store.bf16Attention, threads: threads))
            }
            self.scratch = scratch
        }

        deinit {
            if shared == nil { arena.deallocate() }
            for p in scratch { p.deallocate() }
        }

        /// The arena this plan shares with others (which then run one at a time), if any.
        let shared: SharedArena?

        let stateBuffers: [ValueID]
        /// Keeps the constants and load-time values that `pointers` reach alive.
        let loaded: LoadedValues
        public let memoryPlan: MemoryPlan
        let plan: ExecutionPlan
        let pool: ThreadPool

        let threads: Int

        func execute() throws {
            // The pool is the only parallelism; OpenBLAS runs single-threaded inside its jobs.
            Executor.setBLASThreads(1)
            for s in steps { try s.execute(pool) }
        }

        /// Runs the prepared steps on whatever the input buffers hold.
        public func run() throws { try execute() }

        /// Runs once with a clock around every step; seconds per op name, slowest first.
        public func profile() throws -> [(op: String, seconds: Double, count: Int)] {
            Executor.setBLASThreads(1)
            var acc: [String: (Double, Int)] = [:]
            let names = plan.steps.map(\.op.name)
            for (i, s) in steps.enumerated() {
                let t0 = DispatchTime.now().uptimeNanoseconds
                try s.execute(pool)
                let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
                acc[names[i], default: (0, 0)].0 += dt
                acc[names[i], default: (0, 0)].1 += 1
            }
            return acc.map { ($0.key, $0.value.0, $0.value.1) }.sorted { $0.seconds > $1.seconds }
        }

        /// Zeroes every state buffer (e.g. empties the KV caches before a new sequence).
        public func resetState() {
            for v in stateBuffers { pointers[v]!.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount(v)) }
        }

        /// Bytes of a value's buffer, by name.
        public func byteCount(ofValueNamed name: String) -> Int? { graph.value(named: name).map(byteCount) }

        func byteCount(_ v: ValueID) -> Int { (elementCount(shapes[v]) ?? 0) * graph.values[v].type.dtype.byteSize }

        /// The buffer of a graph input or output (or any value) by name, and its concrete shape.
        public func buffer(_ name: String) -> (pointer: UnsafeMutableRawPointer, shape: [Int])? {
            guard let v = graph.value(named: name), let p = pointers[v] else { return nil }
            return (p, shapes[v])
        }

        /// Bytes of the arena holding every buffer of this binding.
        public var arenaByteCount: Int { arenaBytes }

        public func read(_ v: ValueID) -> Tensor {
            let n = elementCount(shapes[v]) ?? 0
            let p = pointers[v]!
            switch graph.values[v].type.dtype {
            case .int64:
                return Tensor(shape: shapes[v], int64s: Array(UnsafeBufferPointer(start: p.assumingMemoryBound(to: Int64.self), count: n)))
            case .float16:
                return Tensor(shape: shapes[v], floats: [Float](unsafeUninitializedCapacity: n) { buf, c in
                    fk_f16_to_f32(p.assumingMemoryBound(to: UInt16.self), buf.baseAddress!, n)
                    c = n
                })
            case .float32, .bfloat16, .float64, .uint8, .int32:  // verified graphs compute f32 (W9)
                break
            }
            return Tensor(shape: shapes[v], floats: Array(UnsafeBufferPointer(start: p.assumingMemoryBound(to: Float.self), count: n)))
        }
}

extension Executor {
    /// What the process may allocate (`MemoryLimit`: RLIMIT_AS, RLIMIT_DATA, cgroup memory.max,
    /// else RAM): no plan may ask for more buffers than this, so a hostile file or an oversized
    /// batch gets an error instead of an allocation the system cannot satisfy.
    public static let memoryLimit: Int = MemoryLimit.current().bytes

    /// Bytes of a buffer of this shape and dtype (f32/i64 as the runtime stores them), nil on overflow.
    static func byteCount(_ shape: [Int], _ dtype: DType) -> Int? {
        guard let n = elementCount(shape) else { return nil }
        let (b, o) = n.multipliedReportingOverflow(by: dtype.byteSize)
        return o ? nil : b
    }

    /// Sets the OpenBLAS thread count (process-wide; OpenBLAS has no per-call setting).
    public static func setBLASThreads(_ n: Int) {
        let n = max(1, n)
        blasLock.lock()
        defer { blasLock.unlock() }
        if blasThreads != n {
            openblas_set_num_threads(Int32(clamping: n))
            blasThreads = n
        }
    }
    nonisolated(unsafe) static var blasThreads = 0
    static let blasLock = NSLockLike()
}

/// A tiny mutex (Foundation-free), guarding the instance cache.
final class NSLockLike: @unchecked Sendable {
    var m = pthread_mutex_t()
    init() { pthread_mutex_init(&m, nil) }
    deinit { pthread_mutex_destroy(&m) }
    func lock() { pthread_mutex_lock(&m) }
    func unlock() { pthread_mutex_unlock(&m) }
}

/// One block of memory that several bound plans take their buffers from: plans that never run
/// at the same time (see `Executor.bind(_:in:)`).
public final class SharedArena: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    public let byteCount: Int

    public init(byteCount: Int) throws {
        guard byteCount >= 0, byteCount <= Executor.memoryLimit else {
            throw RuntimeError(.sharedArenaTooLarge(bytes: byteCount, limit: Executor.memoryLimit))
        }
        self.byteCount = byteCount
        pointer = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 64), alignment: 64)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 64))
    }

    deinit { pointer.deallocate() }
}
