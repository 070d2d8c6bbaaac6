import FlowCompiler
import FlowIR

// Shared by the compiler's and TarFlow's memory-plan tests: an independent check of a memory
// plan's invariants (it cross-checks FlowCompiler's own MemoryPlanVerifier, so it does not use it).

/// The invariants of a memory plan, checked value by value:
/// - every run-time value (graph input or step output) has a buffer, nothing else has one;
/// - each buffer is 64-byte aligned, inside the arena, and large enough for its values;
/// - a buffer's lifetime covers each of its values from definition (−1 for inputs) to last
///   read (the end for graph outputs and inputs);
/// - buffers whose lifetimes overlap do not overlap in bytes;
/// - two values in one buffer are views of one another (reshape), or the later one is made
///   after the earlier one's last read, or at that read by an op allowed to overwrite that
///   operand (elementwise ops, LayerNorm, softmax, masks, write_slice of a state, a fused
///   linear's residual without GELU).
public enum PlanChecker {
    public static func violations(of m: MemoryPlan, for p: ExecutionPlan, bindings: [String: Int]) throws -> [String] {
        let g = p.graph
        let shapes = try ShapeInference.concreteShapes(g, bindings: bindings)
        let end = p.steps.count
        var bad: [String] = []
        func name(_ v: ValueID) -> String { "'\(g.values[v].name)'" }
        func bytes(_ v: ValueID) -> Int { elementCount(shapes[v])! * (g.values[v].type.dtype == .int64 ? 8 : 4) }

        var def = [Int?](repeating: nil, count: g.values.count)
        var producer = [Int?](repeating: nil, count: g.values.count)
        for v in g.inputs { def[v] = -1 }
        for (i, s) in p.steps.enumerated() { for o in s.outputs { def[o] = i; producer[o] = i } }
        let states = Set(g.state.map(\.input))
        var last = [Int](repeating: -1, count: g.values.count)
        for (i, s) in p.steps.enumerated() { for v in s.inputs { last[v] = max(last[v], i) } }
        for v in g.outputs { last[v] = end }
        for v in g.inputs where !states.contains(v) { last[v] = end }
        for v in g.values.indices { if let d = def[v] { last[v] = max(last[v], d) } }

        guard m.buffer.count == g.values.count, m.offsets.count == m.sizes.count, m.lifetimes.count == m.sizes.count else {
            return ["plan arrays have the wrong lengths"]
        }
        // Buffers and their values.
        var members = [[ValueID]](repeating: [], count: m.sizes.count)
        for v in g.values.indices {
            switch (def[v], m.buffer[v]) {
            case (nil, nil): continue
            case (nil, .some): bad.append("\(name(v)) is no run-time value but has a buffer")
            case (.some, nil): bad.append("\(name(v)) has no buffer")
            case (.some(let d), .some(let b)):
                guard b >= 0, b < m.sizes.count else { bad.append("\(name(v)): buffer \(b) out of range"); continue }
                members[b].append(v)
                if m.sizes[b] < bytes(v) { bad.append("\(name(v)) needs \(bytes(v)) bytes, buffer \(b) has \(m.sizes[b])") }
                if !m.lifetimes[b].contains(d) || !m.lifetimes[b].contains(last[v]) {
                    bad.append("\(name(v)) lives \(d)...\(last[v]), its buffer \(b) only \(m.lifetimes[b])")
                }
            }
        }
        for b in m.sizes.indices {
            if m.offsets[b] % MemoryPlanner.alignment != 0 { bad.append("buffer \(b) at offset \(m.offsets[b]) is not 64-aligned") }
            if m.offsets[b] < 0 || m.offsets[b] + m.sizes[b] > m.arenaBytes { bad.append("buffer \(b) lies outside the arena") }
        }
        // No two buffers live at once in the same bytes.
        for i in m.sizes.indices {
            for j in m.sizes.indices where j > i && m.sizes[i] > 0 && m.sizes[j] > 0 {
                let li = m.lifetimes[i], lj = m.lifetimes[j]
                guard li.overlaps(lj) else { continue }
                if m.offsets[i] < m.offsets[j] + m.sizes[j] && m.offsets[j] < m.offsets[i] + m.sizes[i] {
                    bad.append("buffers \(i) \(members[i].map(name)) and \(j) \(members[j].map(name)) overlap in bytes while both live")
                }
            }
        }
        // The values of one buffer.
        func viewRoot(_ v: ValueID) -> ValueID {
            var v = v
            while let s = producer[v], case .reshape = p.steps[s].op, def[p.steps[s].inputs[0]] != nil { v = p.steps[s].inputs[0] }
            return v
        }
        for (b, vs) in members.enumerated() {
            for u in vs {
                for v in vs where u != v && (def[u]!, u) < (def[v]!, v) {
                    if viewRoot(u) == viewRoot(v) { continue }
                    let dv = def[v]!
                    if last[u] < dv { continue }
                    if last[u] == dv, let s = producer[v], mayOverwrite(p.steps[s], inBuffer: { m.buffer[$0] == b }, shapes: shapes, states: states, g) {
                        continue
                    }
                    bad.append("buffer \(b): \(name(v)) (step \(dv)) overwrites \(name(u)) (live to \(last[u]))")
                }
            }
        }
        return bad
    }

    /// Whether the step may write its result over its operands that lie in one buffer.
    static func mayOverwrite(_ s: ExecutionPlan.Step, inBuffer: (ValueID) -> Bool, shapes: [[Int]], states: Set<ValueID>, _ g: Graph) -> Bool {
        let allowed: [Int]
        switch s.op {
        case .neg, .exp, .gelu, .sqrt, .log, .erf, .scale, .softmax, .causalMask, .maskAfter, .layerNorm: allowed = [0]
        case .add, .sub, .mul, .div: allowed = [0, 1]
        case .writeSlice: allowed = [0]
        case .fusedLinear(let act, let hasBias, let hasResidual) where hasResidual && act == .none: allowed = [hasBias ? 3 : 2]
        default: return false
        }
        let aliased = s.inputs.indices.filter { inBuffer(s.inputs[$0]) }
        guard !aliased.isEmpty, aliased.count == 1, let j = aliased.first, allowed.contains(j) else { return false }
        return shapes[s.inputs[j]] == shapes[s.outputs[0]]
    }
}
