/// Checks the well-formedness rules W1–W11 of Spec/IR.md. Every error names its rule.
///
/// Run on every graph a file brings (untrusted) and, in debug builds, between compiler passes.
public enum Verifier {
    /// Largest rank of any value (W11); also the limit the file format puts on shapes (F5, F10).
    public static let maxRank = 8
    /// Largest fixed dimension (W11), 2³¹ − 1.
    public static let maxDim = Int(Int32.max)
    /// Largest byte size of a value's fixed part (W11): the product of its fixed dims times the
    /// element size, symbols counting as 1. 2³⁴ bytes = 16 GiB: far above any real model, low
    /// enough that sizes derived from it (× a batch, × 8 bytes) never overflow `Int`.
    public static let maxValueBytes = 1 << 34

    /// Bytes of the fixed part of `t` (symbols count as 1), or nil if a dim is out of range or
    /// the product passes `maxValueBytes`.
    public static func fixedByteCount(_ t: TensorType) -> Int? {
        let fixed = t.shape.compactMap(\.fixedSize)
        guard fixed.allSatisfy({ $0 <= maxDim }) else { return nil }
        return elementCount([t.dtype.byteSize] + fixed, limit: maxValueBytes)
    }

    /// - Parameter constants: the tensor table (name → type as seen in the graph); when given,
    ///   constants are checked against it (rule W6).
    public static func verify(_ g: Graph, constants: [String: TensorType]? = nil) throws(IRError) {
        let loc = "graph '\(g.name)'"
        let nv = g.values.count
        func inRange(_ v: ValueID) -> Bool { v >= 0 && v < nv }

        // W7: names.
        var names = Set<String>()
        for (i, v) in g.values.enumerated() {
            if v.name.isEmpty { throw IRError(rule: "W7", "value %\(i) has an empty name", at: loc) }
            if !names.insert(v.name).inserted { throw IRError(rule: "W7", "value name '\(v.name)' is used twice", at: loc) }
        }
        // W11: sizes. Checked before anything allocates or multiplies shapes.
        for v in g.values {
            guard v.type.rank <= maxRank else {
                throw IRError(rule: "W11", "value '\(v.name)' has rank \(v.type.rank) > \(maxRank)", at: loc)
            }
            for d in v.type.shape {
                if case .symbol(let s) = d, s.isEmpty { throw IRError(rule: "W11", "value '\(v.name)' has an empty dimension symbol", at: loc) }
            }
            guard fixedByteCount(v.type) != nil else {
                throw IRError(rule: "W11", "value '\(v.name)' of type \(v.type) exceeds the size limit (dims 0...\(maxDim), at most \(maxValueBytes) bytes per batch row)", at: loc)
            }
        }
        // W9: host-only dtypes (f64, u8, i32) never enter a graph.
        for v in g.values where !v.type.dtype.inModelFile {
            throw IRError(rule: "W9", "value '\(v.name)' has dtype \(v.type.dtype), which graphs do not compute with (f32, f16, bf16, i64)", at: loc)
        }
        // W1: indices in range.
        for v in g.inputs + g.outputs where !inRange(v) {
            throw IRError(rule: "W1", "graph input/output index \(v) out of range (\(nv) values)", at: loc)
        }
        for (ni, n) in g.nodes.enumerated() {
            for v in n.inputs + n.outputs where !inRange(v) {
                throw IRError(rule: "W1", "value index \(v) out of range (\(nv) values)", at: "\(loc), node \(ni) (\(n.op.name))")
            }
        }
        // W2 + W3: single definition, topological order.
        var defined = [Bool](repeating: false, count: nv)
        for v in g.inputs {
            if defined[v] { throw IRError(rule: "W2", "value '\(g.values[v].name)' is a graph input twice", at: loc) }
            defined[v] = true
            switch g.values[v].type.dtype {
            case .float32, .int64: break
            case .float16 where g.state.contains(where: { $0.input == v }): break  // a state kept in half precision
            case .float16, .bfloat16, .float64, .uint8, .int32:
                throw IRError(rule: "W9", "graph input '\(g.values[v].name)' must be f32 or i64 (f16 only for a state)", at: loc)
            }
        }
        let inputSymbols = Set(g.inputs.flatMap { g.values[$0].type.shape.compactMap { if case .symbol(let s) = $0 { s } else { nil } } })
        for (ni, n) in g.nodes.enumerated() {
            let nloc = "\(loc), node \(ni) (\(n.op.name) -> \(n.outputs.map { "%" + g.values[$0].name }.joined(separator: ",")))"
            for v in n.inputs where !defined[v] {
                throw IRError(rule: "W3", "input '\(g.values[v].name)' is used before it is defined", at: nloc)
            }
            // W4: arity.
            guard n.op.arity.contains(n.inputs.count) else {
                throw IRError(rule: "W4", "\(n.op.name) cannot take \(n.inputs.count) inputs", at: nloc)
            }
            guard n.outputs.count == 1 else {
                throw IRError(rule: "W4", "\(n.op.name) has exactly one output, has \(n.outputs.count)", at: nloc)
            }
            let out = n.outputs[0]
            if defined[out] { throw IRError(rule: "W2", "value '\(g.values[out].name)' is defined twice", at: nloc) }
            defined[out] = true
            let declared = g.values[out].type
            // W5 / W6: types.
            let expected: TensorType
            if case .constant(let t) = n.op {
                if let constants {
                    guard let ct = constants[t] else { throw IRError(rule: "W6", "constant '\(t)' is not in the tensor table", at: nloc) }
                    expected = ct
                } else {
                    expected = declared
                }
                if declared.shape.contains(where: { $0.fixedSize == nil }) {
                    throw IRError(rule: "W6", "constant '\(t)' must have a fixed shape", at: nloc)
                }
            } else {
                do { expected = try n.op.resultType(n.inputs.map { g.values[$0].type }) } catch { throw error.located(nloc) }
            }
            if expected != declared {
                throw IRError(rule: n.op.isConstant ? "W6" : "W5", "declared type \(declared) differs from the op's result type \(expected)", at: nloc)
            }
            // W8: symbols must be bindable from the inputs.
            for d in declared.shape {
                if case .symbol(let s) = d, !inputSymbols.contains(s) {
                    throw IRError(rule: "W8", "symbol '\(s)' does not appear in any graph input's shape", at: nloc)
                }
            }
        }
        for v in g.outputs where !defined[v] {
            throw IRError(rule: "W3", "output '\(g.values[v].name)' is never defined", at: loc)
        }
        // W10: a state's new value is written in place: it is a graph output made by a chain of
        // write_slice ops starting at the state input, and nothing else reads the old value or
        // any value in between (a graph output counts as a reader, since it would alias).
        var stateInputs = Set<ValueID>()
        var stateOutputs = Set<ValueID>()
        let outputSet = Set(g.outputs)
        for st in g.state {
            guard inRange(st.input), inRange(st.output) else { throw IRError(rule: "W1", "state binding index out of range", at: loc) }
            let name = g.values[st.input].name
            guard g.inputs.contains(st.input), outputSet.contains(st.output) else {
                throw IRError(rule: "W10", "state '\(name)' must bind a graph input to a graph output", at: loc)
            }
            guard st.input != st.output else { throw IRError(rule: "W10", "state '\(name)' is bound to itself; its new value must be computed", at: loc) }
            guard !outputSet.contains(st.input) else {
                throw IRError(rule: "W10", "state '\(name)' is also a graph output, which would alias the buffer updated in place", at: loc)
            }
            guard stateInputs.insert(st.input).inserted else { throw IRError(rule: "W10", "state '\(name)' is bound twice", at: loc) }
            guard stateOutputs.insert(st.output).inserted else {
                throw IRError(rule: "W10", "state '\(name)': value '\(g.values[st.output].name)' is the new value of two states", at: loc)
            }
            guard g.values[st.input].type == g.values[st.output].type else {
                throw IRError(rule: "W10", "state '\(name)' changes type", at: loc)
            }
            var chain = Set([st.input])
            var cur = st.input
            while cur != st.output {
                if cur != st.input, outputSet.contains(cur) {
                    throw IRError(rule: "W10", "state '\(name)': '\(g.values[cur].name)' is a graph output, which would alias the buffer updated in place", at: loc)
                }
                let readers = g.nodes.filter { $0.inputs.contains(cur) }
                guard readers.count == 1, case .writeSlice = readers[0].op, readers[0].inputs[0] == cur,
                    readers[0].inputs.dropFirst().allSatisfy({ !chain.contains($0) })
                else {
                    throw IRError(rule: "W10", "state '\(name)': '\(g.values[cur].name)' must be read only by the write_slice that updates it", at: loc)
                }
                cur = readers[0].outputs[0]
                chain.insert(cur)
            }
        }
    }
}

extension Op {
    var isConstant: Bool { if case .constant = self { true } else { false } }
}
