import FlowIR

/// Folds the shift-and-affine step of an autoregressive flow into one `affine_coupling` op:
///
///     s  = pad[axis 1, before k](slice[axis 1, 0 : T−k](p))        (shift by k tokens)
///     z  = mul(sub(x, slice[axis 2, D : 2D](s)), exp(neg(slice[axis 2, 0 : D](s))))
///       or z = sub(x, s)                                           (shift only)
///     z' = flip[axis 1](z)                                         (optional)
///
/// The shift, split and flip become indexing in one pass over x. Other readers of the
/// pieces (e.g. a log-determinant's mean of the scale half) keep them alive.
public struct FuseAffineCoupling: CompilerPass, NodeRewrite {
    public var name: String { "fuse-affine-coupling" }
    public init() {}

    public func run(_ graph: inout Graph, context: PassContext) throws -> Bool {
        RewriteDriver.sweep(self, &graph).changed
    }

    func rewrite(at i: Int, _ index: GraphIndex) -> (op: Op, inputs: [ValueID])? { match(i, index) }

    /// The shift (k) and source p of s = pad(slice(p)).
    func shifted(_ s: ValueID, _ g: GraphIndex) -> (Int, ValueID)? {
        guard let pad = g.def(s), case .pad(1, let k, 0) = pad.op,
            let sl = g.def(pad.inputs[0]), case .slice(1, 0, let end) = sl.op,
            case .fixed(let t) = g.shape(sl.inputs[0])[1], end == t - k
        else { return nil }
        return (k, sl.inputs[0])
    }

    /// Matches at node `i` (the z node, or a flip of a single-use z, which then takes the
    /// whole pattern). Returns the op and its inputs.
    func match(_ i: Int, _ g: GraphIndex) -> (Op, [ValueID])? {
        var node = g.graph.nodes[i]
        var flip = false
        if case .flip(1) = node.op, let zi = g.producer[node.inputs[0]], g.single(node.inputs[0]) {
            flip = true
            node = g.graph.nodes[zi]
        } else if let reader = g.soleReader(node.outputs[0]), reader.op == .flip(axis: 1) {
            return nil  // the flip that reads it will take the whole pattern
        }
        let x: ValueID, p: ValueID, k: Int, hasScale: Bool
        switch node.op {
        case .mul:
            guard let sub = g.def(node.inputs[0]), case .sub = sub.op, g.single(node.inputs[0]),
                let ex = g.def(node.inputs[1]), case .exp = ex.op, g.single(node.inputs[1]),
                let ng = g.def(ex.inputs[0]), case .neg = ng.op, g.single(ex.inputs[0]),
                let sa = g.def(ng.inputs[0]), case .slice(2, 0, let d) = sa.op,
                let sb = g.def(sub.inputs[1]), case .slice(2, let d2, let e2) = sb.op, d2 == d, e2 == 2 * d, g.single(sub.inputs[1]),
                sa.inputs[0] == sb.inputs[0], let (kk, src) = shifted(sa.inputs[0], g)
            else { return nil }
            (x, p, k, hasScale) = (sub.inputs[0], src, kk, true)
        case .sub:
            guard g.single(node.inputs[1]), let (kk, src) = shifted(node.inputs[1], g) else { return nil }
            (x, p, k, hasScale) = (node.inputs[0], src, kk, false)
        default:
            return nil
        }
        let op = Op.affineCoupling(shift: k, hasScale: hasScale, flip: flip)
        let outValue = g.graph.nodes[i].outputs[0]
        guard let t = try? op.resultType([g.graph.values[x].type, g.graph.values[p].type]), t == g.graph.values[outValue].type else { return nil }
        return (op, [x, p])
    }
}
