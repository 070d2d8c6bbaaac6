import FlowIR

/// Folds multi-head attention written in primitive ops into one `attention` op:
///
///     heads(x) = transpose[0,2,1,3](reshape[B,N,n,d](x))       (and slices of it along axis 1)
///     s = matmul(q, k, transpose_b) ; s = scale(s, c) | mul(s, r[B,1,1,1])
///     s = causal_mask(s, −inf) | mask_after(s, pos, −inf) ; p = softmax(s, last)
///     o = matmul(p, v) ; out = reshape[B,M,H·d](transpose[0,2,1,3](o))
///
/// q, k and v may also be head-major values [B,H,N,d] (e.g. a KV cache). The op reads the
/// sources in place (no head split or merge copies) and applies the mask inline.
public struct FuseAttention: CompilerPass, NodeRewrite {
    public var name: String { "fuse-attention" }
    public init() {}

    /// A per-head operand: its source value and the column offset of head 0 (row layout), or
    /// a head-major value (offset 0, rank 4).
    struct Source { var value: ValueID; var offset: Int }

    public func run(_ graph: inout Graph, context: PassContext) throws -> Bool {
        RewriteDriver.sweep(self, &graph).changed
    }

    func rewrite(at i: Int, _ index: GraphIndex) -> (op: Op, inputs: [ValueID])? { match(at: i, index) }

    func match(at i: Int, _ g: GraphIndex) -> (Op, [ValueID])? {
        // Merge: reshape[B,M,H·d](transpose[0,2,1,3](o)).
        let merge = g.graph.nodes[i]
        guard case .reshape(let shape) = merge.op, shape.count == 3,
            let tr = g.def(merge.inputs[0]), case .transpose(let perm) = tr.op, perm == [0, 2, 1, 3], g.single(merge.inputs[0]),
            let pv = g.def(tr.inputs[0]), case .matmul(false, false) = pv.op, g.single(tr.inputs[0]),
            let sm = g.def(pv.inputs[0]), case .softmax(let axis) = sm.op, g.single(pv.inputs[0]),
            axis == g.shape(pv.inputs[0]).count - 1,
            let mk = g.def(sm.inputs[0]), g.single(sm.inputs[0])
        else { return nil }
        var mask: AttentionMask
        var position: ValueID? = nil
        switch mk.op {
        case .causalMask(let v) where v == -.infinity: mask = .causal
        case .maskAfter(let v) where v == -.infinity: mask = .afterPosition; position = mk.inputs[1]
        default: return nil
        }
        guard let sc = g.def(mk.inputs[0]), g.single(mk.inputs[0]) else { return nil }
        var scale: Float = 1
        var rowScale: ValueID? = nil
        var qk: Node
        switch sc.op {
        case .scale(let c):
            scale = c
            guard let n = g.def(sc.inputs[0]), g.single(sc.inputs[0]) else { return nil }
            qk = n
        case .mul:
            // s · r with r [B,1,1,1] (either side).
            let (a, b) = (sc.inputs[0], sc.inputs[1])
            let isRow = { (v: ValueID) -> Bool in let s = g.shape(v); return s.count == 4 && s[1] == 1 && s[2] == 1 && s[3] == 1 }
            let sIn: ValueID
            if isRow(b) { sIn = a; rowScale = b } else if isRow(a) { sIn = b; rowScale = a } else { return nil }
            guard let n = g.def(sIn), g.single(sIn) else { return nil }
            qk = n
        default:
            return nil
        }
        guard case .matmul(false, true) = qk.op else { return nil }
        let qShape = g.shape(qk.inputs[0])
        guard qShape.count == 4, case .fixed(let heads) = qShape[1], case .fixed(let d) = qShape[3] else { return nil }
        guard let q = source(qk.inputs[0], heads: heads, d: d, g), let k = source(qk.inputs[1], heads: heads, d: d, g),
            let v = source(pv.inputs[1], heads: heads, d: d, g)
        else { return nil }
        // A row-layout source must be shared [B, tokens, width]; head-major ones need offset 0.
        guard shape == [qShape[0], qShape[2], .fixed(heads * d)] else { return nil }
        var inputs = [q.value, k.value, v.value]
        if let rowScale { inputs.append(rowScale) }
        if let position { inputs.append(position) }
        let op = Op.attention(heads: heads, scale: scale, mask: mask, offsets: [q.offset, k.offset, v.offset], rowScale: rowScale != nil)
        // The op's own shape rule must accept the match (e.g. head width from v's layout).
        guard let t = try? op.resultType(inputs.map { g.graph.values[$0].type }), t == g.graph.values[merge.outputs[0]].type else { return nil }
        return (op, inputs)
    }

    /// Recognizes heads(x) or a slice of it, or a head-major value.
    func source(_ v: ValueID, heads: Int, d: Int, _ g: GraphIndex) -> Source? {
        var value = v
        var headOffset = 0
        if let sl = g.def(value), case .slice(1, let start, let end) = sl.op, end - start == heads {
            headOffset = start
            value = sl.inputs[0]
        }
        if let tr = g.def(value), case .transpose([0, 2, 1, 3]) = tr.op,
            let rs = g.def(tr.inputs[0]), case .reshape(let s) = rs.op, s.count == 4, s[3] == .fixed(d) {
            let src = rs.inputs[0]
            let ss = g.shape(src)
            guard ss.count == 3, ss[0] == s[0], ss[1] == s[1] else { return nil }
            return Source(value: src, offset: headOffset * d)
        }
        // Head-major [B, H, N, d] value used as is.
        guard headOffset == 0, value == v else { return nil }
        let s = g.shape(v)
        guard s.count == 4, s[1] == .fixed(heads), s[3] == .fixed(d) else { return nil }
        return Source(value: v, offset: 0)
    }
}
