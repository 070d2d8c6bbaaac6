import FlowCompiler
import FlowIR
#if canImport(Glibc)
import Glibc
#endif

/// A plain interpreter of every op, in Double, written for clarity rather than speed and
/// sharing no code with the kernels. Tests check every compiled step against it, and its
/// results against the float64 yardstick of the fixtures.
public enum ReferenceInterpreter {
    /// An operand read once as Doubles (int64 values are held exactly up to 2^53), so the loops
    /// below index plain arrays; results leave as float64 `Tensor`s.
    struct Operand {
        var shape: [Int]
        var data: [Double]
        init(shape: [Int], data: [Double]) {
            self.shape = shape
            self.data = data
        }
        init(_ t: Tensor) {
            shape = t.shape
            data = t.asDoubles()
        }
        var tensor: Tensor { Tensor(shape: shape, doubles: data) }
    }

    /// Evaluates a whole graph; returns every value (nil for values never computed).
    public static func run(_ g: Graph, model: Model, inputs: [String: Tensor]) throws -> [Tensor?] {
        var vals = [Tensor?](repeating: nil, count: g.values.count)
        for v in g.inputs {
            guard let t = inputs[g.values[v].name] else { throw RuntimeError(.referenceMissingInput(g.values[v].name)) }
            vals[v] = t
        }
        for n in g.nodes {
            let ins = n.inputs.map { vals[$0]! }
            vals[n.outputs[0]] = try evaluate(n.op, ins, model: model, outputType: g.values[n.outputs[0]].type, bindings: bindings(g, vals))
        }
        return vals
    }

    static func bindings(_ g: Graph, _ vals: [Tensor?]) -> [String: Int] {
        var b: [String: Int] = [:]
        for v in g.inputs {
            guard let t = vals[v] else { continue }
            for (d, n) in zip(g.values[v].type.shape, t.shape) { if case .symbol(let s) = d { b[s] = n } }
        }
        return b
    }

    static func strides(_ s: [Int]) -> [Int] {
        var r = [Int](repeating: 1, count: s.count)
        var a = 1
        for i in s.indices.reversed() { r[i] = a; a *= s[i] }
        return r
    }

    /// Multi-index of flat position `i` in shape `s`.
    static func unravel(_ i: Int, _ s: [Int]) -> [Int] {
        var r = [Int](repeating: 0, count: s.count)
        var i = i
        for d in s.indices.reversed() where s[d] > 0 {
            r[d] = i % s[d]
            i /= s[d]
        }
        return r
    }

    static func ravel(_ idx: [Int], _ s: [Int]) -> Int {
        var o = 0
        for d in s.indices { o = o * s[d] + idx[d] }
        return o
    }

    /// Evaluates one op on reference tensors.
    public static func evaluate(_ op: Op, _ x: [Tensor], model: Model, outputType: TensorType, bindings: [String: Int] = [:]) throws -> Tensor {
        try evaluate(op, x.map(Operand.init), model: model, outputType: outputType, bindings: bindings).tensor
    }

    static func evaluate(_ op: Op, _ x: [Operand], model: Model, outputType: TensorType, bindings: [String: Int]) throws -> Operand {
        func count(_ s: [Int]) -> Int { elementCount(s) ?? 0 }
        switch op {
        case .constant(let name):
            guard let t = model.tensor(named: name) else { throw RuntimeError(.referenceMissingTensor(name)) }
            return Operand(t.tensor())
        case .full(let v, let shape):
            let s = shape.map { $0.resolved(bindings) ?? 0 }
            return Operand(shape: s, data: [Double](repeating: Double(v), count: count(s)))
        case .add, .sub, .mul, .div:
            let a = x[0], b = x[1]
            let r = max(a.shape.count, b.shape.count)
            let sa = [Int](repeating: 1, count: r - a.shape.count) + a.shape
            let sb = [Int](repeating: 1, count: r - b.shape.count) + b.shape
            let so = (0..<r).map { max(sa[$0], sb[$0]) }
            var out = [Double](repeating: 0, count: count(so))
            for i in out.indices {
                let idx = unravel(i, so)
                let ia = ravel(idx.enumerated().map { sa[$0.offset] == 1 ? 0 : $0.element }, sa)
                let ib = ravel(idx.enumerated().map { sb[$0.offset] == 1 ? 0 : $0.element }, sb)
                let p = a.data[ia], q = b.data[ib]
                out[i] = switch op {
                case .add: p + q
                case .sub: p - q
                case .mul: p * q
                default: p / q
                }
            }
            return Operand(shape: so, data: out)
        case .neg: return Operand(shape: x[0].shape, data: x[0].data.map { -$0 })
        case .exp: return Operand(shape: x[0].shape, data: x[0].data.map { Glibc.exp($0) })
        case .gelu: return Operand(shape: x[0].shape, data: x[0].data.map { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) })
        case .sqrt: return Operand(shape: x[0].shape, data: x[0].data.map { $0.squareRoot() })
        case .log: return Operand(shape: x[0].shape, data: x[0].data.map { Glibc.log($0) })
        case .erf: return Operand(shape: x[0].shape, data: x[0].data.map { Glibc.erf($0) })
        case .scale(let v): return Operand(shape: x[0].shape, data: x[0].data.map { Double(v) * $0 })
        case .linear:
            let w = x[1]
            let n = w.shape[0], k = w.shape[1]
            // Rows from the leading axes: with K = 0, x has no elements but still its rows.
            let rows = count(Array(x[0].shape.dropLast()))
            var out = [Double](repeating: 0, count: rows * n)
            for r in 0..<rows {
                for j in 0..<n {
                    var s = x.count == 3 ? x[2].data[j] : 0
                    for t in 0..<k { s += x[0].data[r * k + t] * w.data[j * k + t] }
                    out[r * n + j] = s
                }
            }
            return Operand(shape: Array(x[0].shape.dropLast()) + [n], data: out)
        case .matmul(let ta, let tb):
            let a = x[0], b = x[1]
            let ar = a.shape.count, br = b.shape.count
            let m = ta ? a.shape[ar - 1] : a.shape[ar - 2], k = ta ? a.shape[ar - 2] : a.shape[ar - 1]
            let n = tb ? b.shape[br - 2] : b.shape[br - 1]
            let ba = Array(a.shape.dropLast(2)), bb = Array(b.shape.dropLast(2))
            let r = max(ba.count, bb.count)
            let pa = [Int](repeating: 1, count: r - ba.count) + ba, pb = [Int](repeating: 1, count: r - bb.count) + bb
            let bo = (0..<r).map { max(pa[$0], pb[$0]) }
            let nb = count(bo)
            var out = [Double](repeating: 0, count: nb * m * n)
            for bi in 0..<nb {
                let idx = unravel(bi, bo)
                let ia = ravel(idx.enumerated().map { pa[$0.offset] == 1 ? 0 : $0.element }, pa)
                let ib = ravel(idx.enumerated().map { pb[$0.offset] == 1 ? 0 : $0.element }, pb)
                let oa = ia * a.shape[ar - 1] * a.shape[ar - 2], ob = ib * b.shape[br - 1] * b.shape[br - 2]
                for i in 0..<m {
                    for j in 0..<n {
                        var s = 0.0
                        for t in 0..<k {
                            let av = ta ? a.data[oa + t * m + i] : a.data[oa + i * k + t]
                            let bv = tb ? b.data[ob + j * k + t] : b.data[ob + t * n + j]
                            s += av * bv
                        }
                        out[bi * m * n + i * n + j] = s
                    }
                }
            }
            return Operand(shape: bo + [m, n], data: out)
        case .layerNorm(let eps):
            let c = x[0].shape.last ?? 1
            var out = x[0].data
            for r in 0..<(count(x[0].shape) / max(c, 1)) {
                let row = x[0].data[(r * c)..<((r + 1) * c)]
                let mean = row.reduce(0, +) / Double(c)
                let v = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(c)
                for i in 0..<c { out[r * c + i] = (row[r * c + i] - mean) / (v + Double(eps)).squareRoot() * x[1].data[i] + x[2].data[i] }
            }
            return Operand(shape: x[0].shape, data: out)
        case .softmax(let axis):
            let s = x[0].shape
            let st = strides(s)
            var out = x[0].data
            for i in out.indices where unravel(i, s)[axis] == 0 {
                let idx = (0..<s[axis]).map { i + $0 * st[axis] }
                let m = idx.map { x[0].data[$0] }.max() ?? 0
                let e = idx.map { Glibc.exp(x[0].data[$0] - m) }
                let z = e.reduce(0, +)
                for (j, p) in idx.enumerated() { out[p] = e[j] / z }
            }
            return Operand(shape: s, data: out)
        case .causalMask(let value):
            let s = x[0].shape
            let m = s[s.count - 2], n = s[s.count - 1]
            var out = x[0].data
            for i in out.indices {
                let idx = unravel(i, s)
                if idx[s.count - 1] > idx[s.count - 2] + n - m { out[i] = Double(value) }
            }
            return Operand(shape: s, data: out)
        case .reshape:
            return Operand(shape: outputType.concreteShape(bindings) ?? [], data: x[0].data)
        case .transpose(let perm):
            let s = x[0].shape
            let so = perm.map { s[$0] }
            var out = [Double](repeating: 0, count: x[0].data.count)
            for i in out.indices {
                let oi = unravel(i, so)
                var ii = [Int](repeating: 0, count: s.count)
                for (d, p) in perm.enumerated() { ii[p] = oi[d] }
                out[i] = x[0].data[ravel(ii, s)]
            }
            return Operand(shape: so, data: out)
        case .slice(let axis, let start, let end):
            var so = x[0].shape
            so[axis] = end - start
            return Operand(shape: so, data: (0..<count(so)).map { i in
                var idx = unravel(i, so)
                idx[axis] += start
                return x[0].data[ravel(idx, x[0].shape)]
            })
        case .concat(let axis):
            var so = x[0].shape
            so[axis] = x.reduce(0) { $0 + $1.shape[axis] }
            return Operand(shape: so, data: (0..<count(so)).map { i in
                var idx = unravel(i, so)
                var part = 0
                while idx[axis] >= x[part].shape[axis] {
                    idx[axis] -= x[part].shape[axis]
                    part += 1
                }
                return x[part].data[ravel(idx, x[part].shape)]
            })
        case .flip(let axis):
            let s = x[0].shape
            return Operand(shape: s, data: (0..<count(s)).map { i in
                var idx = unravel(i, s)
                idx[axis] = s[axis] - 1 - idx[axis]
                return x[0].data[ravel(idx, s)]
            })
        case .pad(let axis, let before, let after):
            var so = x[0].shape
            so[axis] += before + after
            return Operand(shape: so, data: (0..<count(so)).map { i in
                var idx = unravel(i, so)
                idx[axis] -= before
                if idx[axis] < 0 || idx[axis] >= x[0].shape[axis] { return 0 }
                return x[0].data[ravel(idx, x[0].shape)]
            })
        case .gather:
            let t = x[0]
            let rows = t.shape[0], rs = count(Array(t.shape.dropFirst()))
            var out: [Double] = []
            for v in x[1].data {
                // Range-check in Double first: an index near ±2⁶³ does not convert to Int.
                guard v >= -Double(rows), v < Double(rows) else { throw RuntimeError(.referenceGatherIndex(v)) }
                var r = Int(v)
                if r < 0 { r += rows }
                out += t.data[(r * rs)..<((r + 1) * rs)]
            }
            return Operand(shape: x[1].shape + t.shape.dropFirst(), data: out)
        case .writeSlice(let axis):
            let s = x[0].shape, u = x[1].shape
            let pd = x[2].data[0]
            guard pd >= 0, pd + Double(u[axis]) <= Double(s[axis]) else { throw RuntimeError(.referenceWritePosition(pd)) }
            let p = Int(pd)
            var out = x[0].data
            for i in x[1].data.indices {
                var idx = unravel(i, u)
                idx[axis] += p
                // An f16 state stores the update rounded to half precision.
                out[ravel(idx, s)] = outputType.dtype == .float16 ? Double(Float(Float16(Float(x[1].data[i])))) : x[1].data[i]
            }
            return Operand(shape: s, data: out)
        case .maskAfter(let value):
            let s = x[0].shape
            let p = x[1].data[0]  // compared as Double: any int64 position is valid
            var out = x[0].data
            for i in out.indices where Double(unravel(i, s)[s.count - 1]) > p { out[i] = Double(value) }
            return Operand(shape: s, data: out)
        case .attention(let heads, let scale, let mask, let offsets, let rowScale):
            let q = x[0], k = x[1], v = x[2]
            let d = v.shape.count == 4 ? v.shape[3] : (v.shape[2] - offsets[2]) / heads
            func tokens(_ t: Operand) -> Int { t.shape.count == 4 ? t.shape[2] : t.shape[1] }
            let (bn, m, n) = (q.shape[0], tokens(q), tokens(k))
            /// Flat index of (batch, token, head, column) in a row-layout or head-major operand.
            func at(_ t: Operand, _ off: Int, _ b: Int, _ i: Int, _ h: Int, _ c: Int) -> Int {
                t.shape.count == 4 ? ((b * heads + h) * t.shape[2] + i) * d + c : (b * t.shape[1] + i) * t.shape[2] + off + h * d + c
            }
            var next = 3
            var rs = [Double](repeating: 1, count: bn)
            if rowScale { rs = x[next].data; next += 1 }
            let pos = mask == .afterPosition ? Int(clamping: Int64(exactly: x[next].data[0].rounded()) ?? (x[next].data[0] < 0 ? Int64.min : Int64.max)) : Int.max
            var out = [Double](repeating: 0, count: bn * m * heads * d)
            for b in 0..<bn {
                for h in 0..<heads {
                    for i in 0..<m {
                        var sc = [Double](repeating: -.infinity, count: n)
                        for j in 0..<n {
                            if mask == .causal && j > i + n - m { continue }
                            if mask == .afterPosition && j > pos { continue }
                            var dot = 0.0
                            for t in 0..<d { dot += q.data[at(q, offsets[0], b, i, h, t)] * k.data[at(k, offsets[1], b, j, h, t)] }
                            sc[j] = Double(scale) * rs[b] * dot
                        }
                        let mx = sc.max() ?? 0
                        let e = sc.map { $0 == -.infinity ? 0 : Glibc.exp($0 - mx) }
                        let z = e.reduce(0, +)
                        // No visible key: softmax over all −inf is NaN, as the unfused ops give.
                        if z == 0 {
                            for t in 0..<d { out[(b * m + i) * heads * d + h * d + t] = .nan }
                            continue
                        }
                        for t in 0..<d {
                            var acc = 0.0
                            for j in 0..<n where e[j] != 0 { acc += e[j] / z * v.data[at(v, offsets[2], b, j, h, t)] }
                            out[(b * m + i) * heads * d + h * d + t] = acc
                        }
                    }
                }
            }
            return Operand(shape: [bn, m, heads * d], data: out)
        case .fusedLinear(let act, let hasBias, let hasResidual):
            var y = try evaluate(.linear, Array(x.prefix(hasBias ? 3 : 2)), model: model, outputType: outputType, bindings: bindings)
            if act == .gelu { y = try evaluate(.gelu, [y], model: model, outputType: outputType, bindings: bindings) }
            if hasResidual { y = Operand(shape: y.shape, data: zip(y.data, x[hasBias ? 3 : 2].data).map { $0 + $1 }) }
            return y
        case .affineCoupling(let shift, let hasScale, let flip):
            let xs = x[0].shape
            let (bn, t, d) = (xs[0], xs[1], xs[2])
            let pw = hasScale ? 2 * d : d
            var out = [Double](repeating: 0, count: bn * t * d)
            for b in 0..<bn {
                for i in 0..<t {
                    let o = (b * t + (flip ? t - 1 - i : i)) * d
                    for j in 0..<d {
                        let xv = x[0].data[(b * t + i) * d + j]
                        if i < shift { out[o + j] = xv; continue }
                        let p = (b * t + i - shift) * pw
                        out[o + j] = hasScale ? (xv - x[1].data[p + d + j]) * Glibc.exp(-x[1].data[p + j]) : xv - x[1].data[p + j]
                    }
                }
            }
            return Operand(shape: xs, data: out)
        case .reduceSum(let axes, let keep), .reduceMean(let axes, let keep):
            let s = x[0].shape
            let kept = s.enumerated().map { axes.contains($0.offset) ? 1 : $0.element }
            var out = [Double](repeating: 0, count: count(kept))
            for i in x[0].data.indices {
                var idx = unravel(i, s)
                for a in axes { idx[a] = 0 }
                out[ravel(idx, kept)] += x[0].data[i]
            }
            if case .reduceMean = op {
                let n = Double(axes.reduce(1) { $0 * s[$1] })
                out = out.map { $0 / n }
            }
            let so = keep ? kept : s.enumerated().filter { !axes.contains($0.offset) }.map(\.element)
            return Operand(shape: so, data: out)
        }
    }
}
