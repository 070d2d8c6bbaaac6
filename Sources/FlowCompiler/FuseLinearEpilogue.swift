import FlowIR

/// Folds what follows a GEMM into its epilogue:
///
///     gelu(linear(x, W, b))           → fused_linear[gelu, bias](x, W, b)
///     add(r, linear(...)) / add(linear(...), r), r of the same shape
///                                     → fused_linear[..., residual](x, W, b, r)
///
/// so bias and residual ride on the GEMM's β = 1 and GELU runs on each output tile while it is
/// in cache. The linear's result must have no other reader.
public struct FuseLinearEpilogue: CompilerPass, NodeRewrite {
    public var name: String { "fuse-linear-epilogue" }
    public init() {}

    public func run(_ graph: inout Graph, context: PassContext) throws -> Bool {
        RewriteDriver.sweep(self, &graph).changed
    }

    func rewrite(at i: Int, _ idx: GraphIndex) -> (op: Op, inputs: [ValueID])? {
        let n = idx.graph.nodes[i]
        switch n.op {
        case .gelu:
            guard let (x, w, b, act, res) = linearParts(n.inputs[0], idx), act == .none, res == nil else { return nil }
            return (.fusedLinear(activation: .gelu, hasBias: b != nil, hasResidual: false), [x, w] + (b.map { [$0] } ?? []))
        case .add:
            let (l, r) = (n.inputs[0], n.inputs[1])
            let out = idx.shape(n.outputs[0])
            // Neither side may broadcast: the fused op's result has exactly the linear's shape.
            guard idx.shape(l) == out, idx.shape(r) == out, l != r else { return nil }
            var matched: (ValueID, ValueID, ValueID?, Activation, ValueID?, ValueID)?
            if let p = linearParts(r, idx), p.4 == nil { matched = (p.0, p.1, p.2, p.3, p.4, l) }
            else if let p = linearParts(l, idx), p.4 == nil { matched = (p.0, p.1, p.2, p.3, p.4, r) }
            guard let (x, w, b, act, _, residual) = matched else { return nil }
            return (.fusedLinear(activation: act, hasBias: b != nil, hasResidual: true), [x, w] + (b.map { [$0] } ?? []) + [residual])
        default:
            return nil
        }
    }

    /// (x, W, bias, activation, residual) of a linear or fused linear read only here.
    func linearParts(_ v: ValueID, _ g: GraphIndex) -> (ValueID, ValueID, ValueID?, Activation, ValueID?)? {
        guard g.single(v), let n = g.def(v) else { return nil }
        switch n.op {
        case .linear:
            return (n.inputs[0], n.inputs[1], n.inputs.count == 3 ? n.inputs[2] : nil, .none, nil)
        case .fusedLinear(let act, let hasBias, let hasResidual):
            return (n.inputs[0], n.inputs[1], hasBias ? n.inputs[2] : nil, act, hasResidual ? n.inputs.last : nil)
        default:
            return nil
        }
    }
}
