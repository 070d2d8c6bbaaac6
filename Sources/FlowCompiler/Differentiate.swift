import FlowIR

/// Reverse-mode automatic differentiation as a graph rewrite.
///
/// Appends to the graph the gradient of one scalar output with respect to some float32 graph
/// inputs, as ordinary nodes of the closed op set, so the result goes through the same
/// verifier, compiler, planner and runtimes as any other graph. Every op has one
/// vector-Jacobian rule (`Differentiate.vjp`); an op without one is a compile-time error that
/// names it. Only values on a path from a `wrt` input to the output get gradients, and a value
/// read several times sums its gradient contributions with `add`.
public struct Differentiate: CompilerPass {
    /// Name of the scalar graph output (shape [] or [1]) to differentiate.
    public var output: String
    /// Names of the float32 graph inputs to differentiate with respect to.
    public var wrt: [String]

    /// Appends to the graph the gradient of scalar output `output` (a graph output of shape []
    /// or [1]) with respect to graph inputs `wrt` (float32), as new graph outputs named
    /// "grad.<input name>". Other outputs are kept.
    public init(of output: String, wrt: [String]) {
        self.output = output
        self.wrt = wrt
    }

    public var name: String { "differentiate" }

    public func run(_ graph: inout Graph, context: PassContext) throws -> Bool {
        graph = try Self.gradientGraph(graph, of: output, wrt: wrt, constants: context.constants)
        return true
    }

    /// `g` with the gradient outputs "grad.<input name>" appended (in the order of `wrt`),
    /// verified against the tensor table `constants`.
    public static func gradientGraph(_ g: Graph, of output: String, wrt: [String], constants: [String: TensorType]) throws -> Graph {
        try verifiedGradientGraph(g, of: output, wrt: wrt, constants: constants).graph
    }

    /// The same, as the `VerifiedGraph` the compiler takes: the input graph is checked once
    /// here, and the result is the verifier's.
    public static func verifiedGradientGraph(_ g: Graph, of output: String, wrt: [String], constants: [String: TensorType]) throws -> VerifiedGraph {
        func fail(_ f: CompilerError.DifferentiateFailure) -> CompilerError { CompilerError(.differentiate(f)) }
        do { try Verifier.verify(g, constants: constants) } catch { throw fail(.invalidInput(error)) }

        // Check the request before touching the graph.
        guard let out = g.value(named: output), g.outputs.contains(out) else {
            throw fail(.notAnOutput(output, graph: g.name))
        }
        let outType = g.values[out].type
        guard outType.dtype == .float32, outType.shape == [] || outType.shape == [1] else {
            throw fail(.outputNotScalar(output, type: outType))
        }
        var wrtIDs: [ValueID] = []
        for w in wrt {
            guard let v = g.value(named: w), g.inputs.contains(v) else { throw fail(.notAnInput(w, graph: g.name)) }
            guard g.values[v].type.dtype == .float32 else { throw fail(.inputNotFloat(w, type: g.values[v].type)) }
            guard !wrtIDs.contains(v) else { throw fail(.listedTwice(w)) }
            guard g.value(named: "grad.\(w)") == nil else { throw fail(.gradientNameTaken(input: w, graph: g.name)) }
            wrtIDs.append(v)
        }

        // Active values: float32, reachable from a wrt input and reaching the output.
        var reach = [Bool](repeating: false, count: g.values.count)
        for v in wrtIDs { reach[v] = true }
        for n in g.nodes where n.inputs.contains(where: { reach[$0] }) {
            for o in n.outputs where g.values[o].type.dtype == .float32 { reach[o] = true }
        }
        var needed = [Bool](repeating: false, count: g.values.count)
        needed[out] = true
        for n in g.nodes.reversed() where n.outputs.contains(where: { needed[$0] }) {
            for i in n.inputs { needed[i] = true }
        }
        let active = zip(reach, needed).map { $0 && $1 }

        let t = GraphBuilder(extending: g, constants: constants, freshNamePrefix: "vjp")
        var contributions = [[ValueID]](repeating: [], count: g.values.count)
        do {
            if active[out] { contributions[out] = [try t.full(1, outType.shape)] }
            for (ni, n) in g.nodes.enumerated().reversed() {
                let y = n.outputs[0]
                guard active[y], let gy = try t.sum(contributions[y]) else { continue }
                let grads: [ValueID?]
                do { grads = try vjp(n.op, inputs: n.inputs, output: y, gradient: gy, active: active, builder: t) } catch let e as IRError {
                    throw fail(.ruleFailed(op: n.op.name, node: ni, value: g.values[y].name, e))
                } catch let e as NoRule {
                    throw fail(.noDerivative(what: e.what, node: ni, value: g.values[y].name, why: e.why))
                }
                for (i, gi) in zip(n.inputs, grads) where active[i] {
                    if let gi { contributions[i].append(gi) }
                }
            }
            var claimed = Set<ValueID>()
            for (w, v) in zip(wrt, wrtIDs) {
                var gv: ValueID
                if let s = try t.sum(contributions[v]) { gv = s } else { gv = try t.full(0, g.values[v].type.shape) }
                // Two gradients can be the same value (d(a + b)); each output needs its own.
                if claimed.contains(gv) { gv = try t.apply(.reshape(shape: t.type(gv).shape), gv) }
                claimed.insert(gv)
                t.rename(gv, "grad.\(w)")
                t.output(gv)
            }
        } catch let e as IRError {
            throw fail(.buildFailed(e))
        }
        do { return try Verifier.verified(t.graph, constants: constants) } catch {
            throw fail(.invalidResult(error))
        }
    }

    /// Thrown by a rule for an op (or operand) that has no derivative here.
    struct NoRule: Error {
        var what: String
        var why: String
    }

    /// The vector-Jacobian product of one op: given `gradient` (of the op's result), the
    /// gradient contribution of each input, or nil for inputs off the active path.
    static func vjp(_ op: Op, inputs x: [ValueID], output y: ValueID, gradient g: ValueID, active: [Bool],
                    builder t: GraphBuilder) throws -> [ValueID?] {
        func on(_ i: Int) -> Bool { active[x[i]] }
        switch op {
        case .constant, .full:
            return []
        case .add:
            return [on(0) ? try t.unbroadcast(g, x[0]) : nil,
                    on(1) ? try t.unbroadcast(g, x[1]) : nil]
        case .sub:
            return [on(0) ? try t.unbroadcast(g, x[0]) : nil,
                    on(1) ? try t.unbroadcast(t.apply(.neg, g), x[1]) : nil]
        case .mul:
            return [on(0) ? try t.unbroadcast(t.apply(.mul, g, x[1]), x[0]) : nil,
                    on(1) ? try t.unbroadcast(t.apply(.mul, g, x[0]), x[1]) : nil]
        case .div:
            // d(a/b)/db = −(a/b)/b: reuse the result.
            return [on(0) ? try t.unbroadcast(t.apply(.div, g, x[1]), x[0]) : nil,
                    on(1) ? try t.unbroadcast(t.apply(.neg, t.apply(.div, t.apply(.mul, g, y), x[1])), x[1]) : nil]
        case .neg:
            return [try t.apply(.neg, g)]
        case .scale(let v):
            return [try t.apply(.scale(v), g)]
        case .exp:
            return [try t.apply(.mul, g, y)]
        case .log:
            return [try t.apply(.div, g, x[0])]
        case .sqrt:
            return [try t.apply(.div, t.apply(.scale(0.5), g), y)]
        case .erf:
            // 2/√π · exp(−x²)
            let e = try t.apply(.exp, t.apply(.neg, t.apply(.mul, x[0], x[0])))
            return [try t.apply(.mul, g, t.apply(.scale(Float(2 / Double.pi.squareRoot())), e))]
        case .gelu:
            // Φ(x) + x·φ(x), with Φ(x) = ½(1 + erf(x/√2)) and φ(x) = exp(−x²/2)/√(2π).
            let cdf = try t.apply(.add, t.apply(.scale(0.5), t.apply(.erf, t.apply(.scale(Float(1 / 2.0.squareRoot())), x[0]))), t.full(0.5, []))
            let pdf = try t.apply(.scale(Float(1 / (2 * Double.pi).squareRoot())), t.apply(.exp, t.apply(.scale(-0.5), t.apply(.mul, x[0], x[0]))))
            return [try t.apply(.mul, g, t.apply(.add, cdf, t.apply(.mul, x[0], pdf)))]
        case .matmul(let ta, let tb):
            // C = op(A)·op(B): dA = G·op(B)ᵀ (transposed back when A is), dB = op(A)ᵀ·G likewise;
            // broadcast batch axes are summed away.
            let a = x[0], b = x[1]
            var ga: ValueID?, gb: ValueID?
            if on(0) {
                let r = ta ? try t.apply(.matmul(transposeA: tb, transposeB: true), b, g)
                    : try t.apply(.matmul(transposeA: false, transposeB: !tb), g, b)
                ga = try t.unbroadcast(r, a)
            }
            if on(1) {
                let r = tb ? try t.apply(.matmul(transposeA: true, transposeB: ta), g, a)
                    : try t.apply(.matmul(transposeA: !ta, transposeB: false), a, g)
                gb = try t.unbroadcast(r, b)
            }
            return [ga, gb]
        case .linear:
            // y = x·Wᵀ + b: dx = G·W, dW = Σ Gᵀ·x over the leading axes, db = Σ G.
            let xv = x[0], w = x[1]
            let rank = t.type(xv).rank
            var gx: ValueID?, gw: ValueID?, gb: ValueID?
            if on(0) { gx = try t.apply(.linear, g, t.apply(.transpose(perm: [1, 0]), w)) }
            if on(1) {
                let gs = t.type(g).shape, xs = t.type(xv).shape
                let n = gs[rank - 1], k = xs[rank - 1]
                if rank == 1 {
                    gw = try t.apply(.matmul(transposeA: false, transposeB: false),
                                     t.apply(.reshape(shape: [n, 1]), g), t.apply(.reshape(shape: [1, k]), xv))
                } else if rank == 2 {
                    gw = try t.apply(.matmul(transposeA: true, transposeB: false), g, xv)
                } else if let rows = fixedProduct(gs.dropLast()) {
                    gw = try t.apply(.matmul(transposeA: true, transposeB: false),
                                     t.apply(.reshape(shape: [.fixed(rows), n]), g), t.apply(.reshape(shape: [.fixed(rows), k]), xv))
                } else {
                    // A symbolic leading axis cannot be merged by reshape: batch the products, then sum.
                    gw = try t.apply(.reduceSum(axes: Array(0..<(rank - 2)), keepDims: false),
                                     t.apply(.matmul(transposeA: true, transposeB: false), g, xv))
                }
            }
            if x.count == 3, on(2) { gb = try t.sumLeading(g, keep: 1) }
            return x.count == 3 ? [gx, gw, gb] : [gx, gw]
        case .layerNorm(let eps):
            // Recompute x̂ = (x − mean)·rstd from primitives, then
            // dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) with ĝ = G·w; dw = Σ G·x̂; db = Σ G.
            let xv = x[0], w = x[1]
            let last = t.type(xv).rank - 1
            var gx: ValueID?, gw: ValueID?, gb: ValueID?
            if on(0) || on(1) {
                let mean = Op.reduceMean(axes: [last], keepDims: true)
                let xc = try t.apply(.sub, xv, t.apply(mean, xv))
                let variance = try t.apply(mean, t.apply(.mul, xc, xc))
                let rstd = try t.apply(.div, t.full(1, []), t.apply(.sqrt, t.apply(.add, variance, t.full(eps, []))))
                let xhat = try t.apply(.mul, xc, rstd)
                if on(0) {
                    let gh = try t.apply(.mul, g, w)
                    let m1 = try t.apply(mean, gh)
                    let m2 = try t.apply(mean, t.apply(.mul, gh, xhat))
                    gx = try t.apply(.mul, rstd, t.apply(.sub, t.apply(.sub, gh, m1), t.apply(.mul, xhat, m2)))
                }
                if on(1) { gw = try t.sumLeading(t.apply(.mul, g, xhat), keep: 1) }
            }
            if on(2) { gb = try t.sumLeading(g, keep: 1) }
            return [gx, gw, gb]
        case .softmax(let axis):
            // y·(G − Σ G·y)
            let s = try t.apply(.reduceSum(axes: [axis], keepDims: true), t.apply(.mul, g, y))
            return [try t.apply(.mul, y, t.apply(.sub, g, s))]
        case .causalMask:
            // Masked entries are constants: their gradient is zero.
            return [try t.apply(.causalMask(value: 0), g)]
        case .maskAfter:
            return [try t.apply(.maskAfter(value: 0), g, x[1]), nil]
        case .reshape:
            return [try t.apply(.reshape(shape: t.type(x[0]).shape), g)]
        case .transpose(let perm):
            var inverse = [Int](repeating: 0, count: perm.count)
            for (i, p) in perm.enumerated() { inverse[p] = i }
            return [try t.apply(.transpose(perm: inverse), g)]
        case .slice(let axis, let start, let end):
            let n = t.type(x[0]).shape[axis].fixedSize ?? end
            return [try t.apply(.pad(axis: axis, before: start, after: n - end), g)]
        case .pad(let axis, let before, _):
            let n = t.type(x[0]).shape[axis].fixedSize ?? 0
            return [try t.apply(.slice(axis: axis, start: before, end: before + n), g)]
        case .concat(let axis):
            var offset = 0
            var r: [ValueID?] = []
            for (i, v) in x.enumerated() {
                let n = t.type(v).shape[axis].fixedSize ?? 0
                r.append(on(i) ? try t.apply(.slice(axis: axis, start: offset, end: offset + n), g) : nil)
                offset += n
            }
            return r
        case .flip(let axis):
            return [try t.apply(.flip(axis: axis), g)]
        case .gather:
            if on(0) {
                throw NoRule(what: "gather's table",
                             why: "the table depends on a wrt input (a scatter-add would be needed); only constant tables are supported")
            }
            return [nil, nil]
        case .writeSlice:
            throw NoRule(what: "write_slice", why: "write_slice is not differentiable here; keep it off the path from the wrt inputs to the output")
        case .attention, .fusedLinear, .affineCoupling:
            throw NoRule(what: op.name, why: "fused ops have no rules: differentiate the graph before the fusion passes run")
        case .reduceSum(let axes, let keep), .reduceMean(let axes, let keep):
            // Broadcast G back over the reduced axes (÷ their size for a mean).
            let xs = t.type(x[0]).shape
            var kept = xs
            for a in axes { kept[a] = 1 }
            var gk = keep ? g : try t.apply(.reshape(shape: kept), g)
            if case .reduceMean = op {
                if let count = fixedProduct(axes.map { xs[$0] }) {
                    gk = try t.apply(.scale(Float(1 / Double(max(count, 1)))), gk)
                } else {
                    let count = try t.apply(.reduceSum(axes: axes, keepDims: true), t.full(1, xs))
                    gk = try t.apply(.div, gk, count)
                }
            }
            return [try t.expand(gk, to: xs)]
        }
    }

    static func fixedProduct<S: Sequence<Dim>>(_ dims: S) -> Int? {
        var p = 1
        for d in dims {
            guard let n = d.fixedSize else { return nil }
            p *= n
        }
        return p
    }
}

/// The gradient's building blocks on top of `GraphBuilder`.
extension GraphBuilder {
    func full(_ value: Float, _ shape: [Dim]) throws(IRError) -> ValueID {
        try apply(.full(value: value, shape: shape))
    }

    /// Sum of gradient contributions (nil when there are none).
    func sum(_ vs: [ValueID]) throws(IRError) -> ValueID? {
        guard var acc = vs.first else { return nil }
        for v in vs.dropFirst() { acc = try apply(.add, acc, v) }
        return acc
    }

    /// `g` (of a broadcast result's shape) summed down to the shape of operand `x`.
    func unbroadcast(_ g: ValueID, _ x: ValueID) throws(IRError) -> ValueID {
        let target = type(x).shape
        var v = g
        var s = type(g).shape
        if s == target { return v }
        let lead = s.count - target.count
        if lead > 0 {
            v = try apply(.reduceSum(axes: Array(0..<lead), keepDims: false), v)
            s = type(v).shape
        }
        let axes = target.indices.filter { target[$0] == 1 && s[$0] != 1 }
        if !axes.isEmpty { v = try apply(.reduceSum(axes: axes, keepDims: true), v) }
        return v
    }

    /// `g` broadcast to `shape` (there is no broadcast op: add zeros of that shape).
    func expand(_ g: ValueID, to shape: [Dim]) throws(IRError) -> ValueID {
        if type(g).shape == shape { return g }
        return try apply(.add, g, full(0, shape))
    }

    /// Sums `v` over all but its last `keep` axes.
    func sumLeading(_ v: ValueID, keep: Int) throws(IRError) -> ValueID {
        let r = type(v).rank
        if r <= keep { return v }
        return try apply(.reduceSum(axes: Array(0..<(r - keep)), keepDims: false), v)
    }
}
