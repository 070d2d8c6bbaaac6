/// A deterministic text form of a graph, one node per line (`tarflow inspect`).
///
///     graph forward(%x: f32[B,3,8,8], %y: i64[B]) -> (%z, %logdets)
///       %p0 = reshape[shape=B,3,4,2,4,2](%x) : f32[B,3,4,2,4,2]
public enum Printer {
    public static func print(_ g: Graph) -> String {
        var s = "graph \(g.name)("
        s += g.inputs.map { "%\(g.values[$0].name): \(g.values[$0].type)" }.joined(separator: ", ")
        s += ") -> (" + g.outputs.map { "%" + g.values[$0].name }.joined(separator: ", ") + ") {\n"
        for n in g.nodes {
            let outs = n.outputs.map { "%" + g.values[$0].name }.joined(separator: ", ")
            let ins = n.inputs.map { "%" + g.values[$0].name }.joined(separator: ", ")
            let attrs = attributes(n.op)
            let type = n.outputs.map { g.values[$0].type.description }.joined(separator: ", ")
            s += "  \(outs) = \(n.op.name)\(attrs.isEmpty ? "" : "[\(attrs)]")(\(ins)) : \(type)\n"
        }
        for st in g.state { s += "  state %\(g.values[st.input].name) <- %\(g.values[st.output].name)\n" }
        s += "}\n"
        return s
    }

    static func fmt(_ f: Float) -> String {
        if f == -.infinity { return "-inf" }
        if f == .infinity { return "inf" }
        return "\(f)"
    }

    static func dims(_ d: [Dim]) -> String { d.map(\.description).joined(separator: ",") }

    public static func attributes(_ op: Op) -> String {
        switch op {
        case .constant(let t): "\"\(t)\""
        case .full(let v, let shape): "value=\(fmt(v)), shape=\(dims(shape))"
        case .add, .sub, .mul, .div, .neg, .exp, .gelu, .sqrt, .log, .erf, .linear, .gather: ""
        case .scale(let v): "value=\(fmt(v))"
        case .matmul(let ta, let tb): [ta ? "transpose_a" : nil, tb ? "transpose_b" : nil].compactMap { $0 }.joined(separator: ", ")
        case .layerNorm(let eps): "eps=\(fmt(eps))"
        case .softmax(let axis): "axis=\(axis)"
        case .causalMask(let v), .maskAfter(let v): "value=\(fmt(v))"
        case .reshape(let shape): "shape=\(dims(shape))"
        case .transpose(let perm): "perm=\(perm.map(String.init).joined(separator: ","))"
        case .slice(let axis, let start, let end): "axis=\(axis), \(start):\(end)"
        case .concat(let axis), .flip(let axis), .writeSlice(let axis): "axis=\(axis)"
        case .pad(let axis, let before, let after): "axis=\(axis), before=\(before), after=\(after)"
        case .attention(let heads, let scale, let mask, let offsets, let rowScale):
            "heads=\(heads), scale=\(fmt(scale)), mask=\(mask), offsets=\(offsets.map(String.init).joined(separator: ","))\(rowScale ? ", row_scale" : "")"
        case .fusedLinear(let act, let b, let r):
            "activation=\(act)\(b ? ", bias" : "")\(r ? ", residual" : "")"
        case .affineCoupling(let shift, let hasScale, let flip):
            "shift=\(shift)\(hasScale ? ", scale" : "")\(flip ? ", flip" : "")"
        case .reduceSum(let axes, let keep), .reduceMean(let axes, let keep):
            "axes=\(axes.map(String.init).joined(separator: ","))\(keep ? ", keep_dims" : "")"
        }
    }
}
