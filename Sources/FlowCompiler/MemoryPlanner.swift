import FlowIR

/// Liveness-based placement of every run-time buffer in one arena, for one binding of the
/// symbols (the sizes depend on the batch).
///
/// Values share a buffer when the runtime may compute one over the other: a reshape is a view
/// of its input; a write_slice chain updates its state in place; an elementwise op, LayerNorm,
/// a mask, a softmax or a fused linear's residual can overwrite an operand of the same shape
/// whose last reader it is. Each buffer lives from its first definition to its last read
/// (graph inputs and state for the whole run, outputs to the end); buffers are placed largest
/// first at the lowest offset free for their whole lifetime.
public struct MemoryPlan: Sendable {
    /// Buffer index of each value (nil for constants, load-time values and unused values).
    public var buffer: [Int?]
    public var offsets: [Int]
    public var sizes: [Int]
    /// First and last step index each buffer is live (−1: before the first step).
    public var lifetimes: [ClosedRange<Int>]
    public var arenaBytes: Int
    /// What one buffer per value would take.
    public var naiveBytes: Int
}

public enum MemoryPlanner {
    public static let alignment = 64

    /// - Parameter inPlace: allow ops to overwrite operands (off: only views and state share).
    public static func plan(_ p: ExecutionPlan, bindings: [String: Int], inPlace: Bool = true) throws -> MemoryPlan {
        let g = p.graph
        let shapes = try ShapeInference.concreteShapes(g, bindings: bindings)
        // Sizes of every run-time value, overflow-checked once: a batch (or a file) too large for
        // Int is an error here, and every sum below (at most their total) then fits.
        var sizeOf = [Int](repeating: 0, count: g.values.count)
        var sum = 0
        for v in g.inputs + p.steps.flatMap(\.outputs) {
            guard let n = elementCount(shapes[v]),
                case let (b, o1) = n.multipliedReportingOverflow(by: g.values[v].type.dtype.byteSize), !o1, b <= Int.max / 8,
                case let (t, o2) = sum.addingReportingOverflow(b + alignment), !o2, t <= Int.max / 4
            else { throw CompilerError(.tooLarge(graph: g.name, bindings: bindings)) }
            sum = t
            sizeOf[v] = (b + alignment - 1) / alignment * alignment
        }
        func bytes(_ v: ValueID) -> Int { sizeOf[v] }
        let end = p.steps.count
        var dynamic = [Bool](repeating: false, count: g.values.count)
        for v in g.inputs { dynamic[v] = true }
        for s in p.steps { for o in s.outputs { dynamic[o] = true } }

        // Union of values into buffers.
        var root = Array(0..<g.values.count)
        func find(_ v: Int) -> Int {
            var v = v
            while root[v] != v { v = root[v] }
            return v
        }
        var lastUse = [Int](repeating: -1, count: g.values.count)
        for (i, s) in p.steps.enumerated() { for v in s.inputs { lastUse[v] = i } }
        let outputs = Set(g.outputs), states = Set(g.state.map(\.input))
        // Last read of any value of a buffer, updated as buffers merge.
        var bufferLast = lastUse
        for v in outputs { bufferLast[v] = end }
        // Inputs keep their values across runs (a caller may set one once and run many times).
        for v in g.inputs { bufferLast[v] = end }

        for (i, s) in p.steps.enumerated() {
            let out = s.outputs[0]
            var share: ValueID? = nil
            switch s.op {
            case .reshape:
                if dynamic[s.inputs[0]] { share = s.inputs[0] }
            case .writeSlice:
                if states.contains(find(s.inputs[0])) { share = s.inputs[0] }
            default:
                if inPlace, let c = inPlaceCandidates(s.op, s.inputs.count) {
                    for j in c {
                        let v = s.inputs[j]
                        let r = find(v)
                        guard dynamic[v], shapes[v] == shapes[out], g.values[v].type.dtype == g.values[out].type.dtype,
                            bufferLast[r] == i, !outputs.contains(v), !states.contains(r),
                            !s.inputs.enumerated().contains(where: { $0.offset != j && find($0.element) == r })
                        else { continue }
                        share = v
                        break
                    }
                }
            }
            if let v = share {
                let r = find(v)
                root[out] = r
                bufferLast[r] = max(bufferLast[r], bufferLast[out], lastUse[out], outputs.contains(out) ? end : -1)
            }
        }
        // Buffers, their sizes and lifetimes.
        var bufferOf = [Int?](repeating: nil, count: g.values.count)
        var rootIndex: [Int: Int] = [:]
        var sizes: [Int] = [], firsts: [Int] = [], lasts: [Int] = []
        var defStep = [Int](repeating: -1, count: g.values.count)
        for (i, s) in p.steps.enumerated() { for o in s.outputs { defStep[o] = i } }
        var naive = 0
        for v in g.values.indices where dynamic[v] {
            naive += bytes(v)
            let r = find(v)
            let b: Int
            if let x = rootIndex[r] { b = x } else {
                b = sizes.count
                rootIndex[r] = b
                sizes.append(0)
                firsts.append(Int.max)
                lasts.append(-1)
            }
            bufferOf[v] = b
            sizes[b] = max(sizes[b], bytes(v))
            let first = g.inputs.contains(v) ? -1 : defStep[v]
            firsts[b] = min(firsts[b], first)
            lasts[b] = max(lasts[b], bufferLast[r], lastUse[v], first, outputs.contains(v) ? end : -1)
        }
        // Largest first, lowest free offset.
        var offsets = [Int](repeating: 0, count: sizes.count)
        var placed: [Int] = []
        var arena = 0
        for b in sizes.indices.sorted(by: { sizes[$0] != sizes[$1] ? sizes[$0] > sizes[$1] : $0 < $1 }) {
            let conflicts = placed.filter { firsts[$0] <= lasts[b] && firsts[b] <= lasts[$0] }
                .map { (offsets[$0], offsets[$0] + sizes[$0]) }.sorted { $0.0 < $1.0 }
            var off = 0
            for (s, e) in conflicts {
                if off + sizes[b] <= s { break }
                off = max(off, e)
            }
            offsets[b] = off
            placed.append(b)
            arena = max(arena, off + sizes[b])
        }
        return MemoryPlan(buffer: bufferOf, offsets: offsets, sizes: sizes,
                          lifetimes: sizes.indices.map { firsts[$0]...max(firsts[$0], lasts[$0]) }, arenaBytes: arena, naiveBytes: naive)
    }

    /// Operands an op's kernel may overwrite with its result (same shape, read before written).
    static func inPlaceCandidates(_ op: Op, _ arity: Int) -> [Int]? {
        switch op {
        case .neg, .exp, .gelu, .sqrt, .log, .erf, .scale, .softmax, .causalMask, .maskAfter, .layerNorm: [0]
        case .add, .sub, .mul, .div: [0, 1]
        case .fusedLinear(let act, let hasBias, let hasResidual) where hasResidual && act == .none: [hasBias ? 3 : 2]
        default: nil
        }
    }
}
