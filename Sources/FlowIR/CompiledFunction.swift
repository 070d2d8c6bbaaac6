import Foundation
import SwiftProtobuf

/// A function compiled ahead of time (`tarflow compile`): the optimized graph the compiler's
/// passes made from a source graph of the model, and memory plans for chosen bindings of its
/// symbols, so a loader can skip the passes. Spec/ModelFile.md, "Compiled functions".
///
/// What this layer checks on reading (rules F11, F12): the structure, the optimized graph's
/// well-formedness, and that the source graph is unchanged. The memory plans are checked
/// against the graph by FlowCompiler (`MemoryPlanner.verify`, rules F13–F16) before use.
public struct CompiledFunction: Sendable, Hashable {
    /// Where every run-time value lies in one arena, for one binding of the symbols.
    public struct Plan: Sendable, Hashable {
        public var bindings: [String: Int]
        /// Buffer index of each value of the optimized graph (nil: no run-time buffer).
        public var buffer: [Int?]
        public var offsets: [Int]
        public var sizes: [Int]
        public var arenaBytes: Int
        public var naiveBytes: Int

        public init(bindings: [String: Int], buffer: [Int?], offsets: [Int], sizes: [Int], arenaBytes: Int, naiveBytes: Int) {
            self.bindings = bindings
            self.buffer = buffer
            self.offsets = offsets
            self.sizes = sizes
            self.arenaBytes = arenaBytes
            self.naiveBytes = naiveBytes
        }
    }

    /// The function's name (unique among a model's compiled functions), e.g. `forward`, `decode3`.
    public var name: String
    /// The graph of `Model.graphs` it was compiled from (for a derived function such as the
    /// gradient, the graph it was derived from).
    public var source: String
    /// `Model.sourceDigest(of:)` of the source graph when it was compiled.
    public var sourceDigest: [UInt8]
    /// The optimized graph, named `name`.
    public var graph: Graph
    /// Passes that changed the graph, in order.
    public var passes: [String]
    public var plans: [Plan]

    public init(name: String, source: String, sourceDigest: [UInt8], graph: Graph, passes: [String], plans: [Plan]) {
        self.name = name
        self.source = source
        self.sourceDigest = sourceDigest
        self.graph = graph
        self.passes = passes
        self.plans = plans
    }

    /// The stored plan for exactly these bindings, if any.
    public func plan(for bindings: [String: Int]) -> Plan? { plans.first { $0.bindings == bindings } }

    /// Largest offset, size or arena a plan may state: far above any real arena, small enough
    /// that sums of two never overflow `Int`.
    public static let maxPlanBytes = 1 << 62
}

extension Model {
    /// The compiled function named `name`, if the file carries one.
    public func compiledFunction(named name: String) -> CompiledFunction? { compiled.first { $0.name == name } }

    /// SHA-256 of what a compiled form of graph `name` depends on: the graph, serialized as
    /// `ModelFile.encode` writes it, then each distinct constant it reads (sorted by name) as a
    /// `TensorInfo` holding only name, dtype and shape; each part preceded by its length as a
    /// little-endian u64. Weight values and tensor offsets are not included: plans do not depend
    /// on them. Nil if the model has no such graph.
    public func sourceDigest(of name: String) -> [UInt8]? {
        guard let g = graph(named: name) else { return nil }
        var bytes: [UInt8] = []
        func part(_ p: [UInt8]) {
            withUnsafeBytes(of: UInt64(p.count).littleEndian) { bytes += $0 }
            bytes += p
        }
        part(CanonicalEncoding.graph(g.proto))
        let names = Set(g.constantNames).map { ($0, Array($0.utf8)) }.sorted { $0.1.lexicographicallyPrecedes($1.1) }
        if !names.isEmpty {
            let table = Dictionary(tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            for (n, _) in names {
                var info = Flowir_TensorInfo()
                info.name = n
                if let t = table[n] {
                    info.dtype = t.dtype.proto
                    info.shape = t.shape.map { Int64($0) }
                }
                part(CanonicalEncoding.tensorInfo(info))
            }
        }
        return SHA256.hash(bytes)
    }

    /// Rules F11 and F12 on the compiled functions (called by `verify`).
    func verifyCompiled(constants: [String: TensorType]) throws(IRError) -> [VerifiedCompiledFunction] {
        var verified: [VerifiedCompiledFunction] = []
        var seen = Set<String>()
        var digests: [String: [UInt8]] = [:]  // the gradient shares forward's
        for f in compiled {
            let loc = "compiled function '\(f.name)'"
            guard !f.name.isEmpty, seen.insert(f.name).inserted else {
                throw IRError(rule: "F11", "compiled function name '\(f.name)' is empty or used twice")
            }
            guard graph(named: f.source) != nil else {
                throw IRError(rule: "F11", "its source graph '\(f.source)' is not in the file", at: loc)
            }
            guard f.graph.name == f.name else {
                throw IRError(rule: "F11", "its graph is named '\(f.graph.name)', not '\(f.name)'", at: loc)
            }
            guard f.sourceDigest.count == 32 else {
                throw IRError(rule: "F11", "source digest has \(f.sourceDigest.count) bytes, not 32 (SHA-256)", at: loc)
            }
            verified.append(try f.verified(constants: constants))
            let digest = digests[f.source] ?? sourceDigest(of: f.source)
            digests[f.source] = digest
            guard digest == f.sourceDigest else {
                throw IRError(rule: "F12", "stale: graph '\(f.source)' or the types of its constants changed after it was compiled; "
                    + "recompile with `tarflow compile`", at: loc)
            }
        }
        return verified
    }
}

// MARK: - Protobuf

extension CompiledFunction {
    init(proto p: Flowir_CompiledFunction) throws(IRError) {
        let loc = "compiled function '\(p.name)'"
        let g: Graph
        do { g = try Graph(proto: p.graph) } catch { throw error.located(loc) }
        var plans: [Plan] = []
        for (i, mp) in p.plans.enumerated() {
            do { plans.append(try Plan(proto: mp, values: g.values.count)) } catch { throw error.located("\(loc), plan \(i)") }
        }
        self.init(name: p.name, source: p.source, sourceDigest: Array(p.sourceDigest), graph: g, passes: p.passes, plans: plans)
    }

    var proto: Flowir_CompiledFunction {
        var p = Flowir_CompiledFunction()
        p.name = name
        p.source = source
        p.sourceDigest = Data(sourceDigest)
        p.graph = graph.proto
        p.passes = passes
        p.plans = plans.map(\.proto)
        return p
    }
}

extension CompiledFunction.Plan {
    /// Decodes numbers into range (F13–F15 on what a single field can say); the checks against
    /// the graph are `MemoryPlanner.verify`'s.
    init(proto p: Flowir_MemoryPlan, values: Int) throws(IRError) {
        var b: [String: Int] = [:]
        for s in p.bindings {
            guard !s.symbol.isEmpty, b[s.symbol] == nil else { throw IRError(rule: "F13", "symbol '\(s.symbol)' is empty or bound twice") }
            guard s.size >= 1, s.size <= Int64(Int32.max) else { throw IRError(rule: "F13", "symbol '\(s.symbol)' bound to \(s.size), outside 1...\(Int32.max)") }
            b[s.symbol] = Int(s.size)
        }
        guard p.valueBuffer.count == values else {
            throw IRError(rule: "F14", "the buffer table has \(p.valueBuffer.count) entries for \(values) values")
        }
        var buffer: [Int?] = []
        buffer.reserveCapacity(values)
        for (v, x) in p.valueBuffer.enumerated() {
            guard x >= -1, Int(x) < p.buffers.count else {
                throw IRError(rule: "F14", "value %\(v) is assigned buffer \(x), outside -1..<\(p.buffers.count)")
            }
            buffer.append(x < 0 ? nil : Int(x))
        }
        let limit = UInt64(CompiledFunction.maxPlanBytes)
        for (i, q) in p.buffers.enumerated() where q.offset > limit || q.size > limit {
            throw IRError(rule: "F15", "buffer \(i) has offset \(q.offset) and size \(q.size); at most 2^62 each")
        }
        guard p.arenaBytes <= limit, p.naiveBytes <= limit else { throw IRError(rule: "F15", "arena size \(p.arenaBytes) exceeds 2^62") }
        self.init(bindings: b, buffer: buffer, offsets: p.buffers.map { Int($0.offset) }, sizes: p.buffers.map { Int($0.size) },
                  arenaBytes: Int(p.arenaBytes), naiveBytes: Int(p.naiveBytes))
    }

    var proto: Flowir_MemoryPlan {
        var p = Flowir_MemoryPlan()
        p.bindings = bindings.keys.sorted().map { k in
            var s = Flowir_SymbolSize()
            s.symbol = k
            s.size = Int64(bindings[k] ?? 0)
            return s
        }
        p.valueBuffer = buffer.map { $0.map { Int32(truncatingIfNeeded: $0) } ?? -1 }
        p.buffers = zip(offsets, sizes).map { o, s in
            var q = Flowir_BufferPlacement()
            q.offset = UInt64(max(0, o))
            q.size = UInt64(max(0, s))
            return q
        }
        p.arenaBytes = UInt64(max(0, arenaBytes))
        p.naiveBytes = UInt64(max(0, naiveBytes))
        return p
    }
}
