/// The shape rule of every op: result type from input types and attributes.
/// The verifier (rule W5) and the graph builder both use it, so a graph that verifies has
/// exactly the types these rules give.
extension Op {
    public func resultType(_ inputs: [TensorType]) throws(IRError) -> TensorType {
        func fail(_ m: String) -> IRError { IRError(rule: "W5", "\(name): \(m)") }
        func needFloat(_ t: TensorType, _ what: String) throws(IRError) {
            if t.dtype != .float32 { throw IRError(rule: "W9", "\(name): \(what) must be f32, is \(t.dtype)") }
        }
        func checkAxis(_ axis: Int, _ rank: Int) throws(IRError) {
            if axis < 0 || axis >= rank { throw fail("axis \(axis) out of range for rank \(rank)") }
        }
        func fixedAxis(_ t: TensorType, _ axis: Int) throws(IRError) -> Int {
            try checkAxis(axis, t.rank)
            guard let n = t.shape[axis].fixedSize else { throw fail("axis \(axis) must have a fixed size, is \(t.shape[axis])") }
            return n
        }
        if !arity.contains(inputs.count) {
            throw IRError(rule: "W4", "\(name) takes \(arity.lowerBound == arity.upperBound ? "\(arity.lowerBound)" : "\(arity.lowerBound)+") inputs, has \(inputs.count)")
        }
        switch self {
        case .constant:
            throw fail("the type of a constant comes from the tensor table")
        case .full(_, let shape):
            for d in shape { if case .fixed(let n) = d, n < 0 { throw fail("negative size \(n)") } }
            return TensorType(.float32, shape)
        case .add, .sub, .mul, .div:
            try needFloat(inputs[0], "lhs")
            try needFloat(inputs[1], "rhs")
            return TensorType(.float32, try Op.broadcast(inputs[0].shape, inputs[1].shape, fail))
        case .neg, .exp, .gelu, .sqrt, .log, .erf, .scale:
            try needFloat(inputs[0], "input")
            return inputs[0]
        case .matmul(let ta, let tb):
            let a = inputs[0], b = inputs[1]
            try needFloat(a, "lhs")
            try needFloat(b, "rhs")
            guard a.rank >= 2, b.rank >= 2 else { throw fail("operands need rank >= 2, have \(a.rank) and \(b.rank)") }
            let (m, ka) = ta ? (a.shape[a.rank - 1], a.shape[a.rank - 2]) : (a.shape[a.rank - 2], a.shape[a.rank - 1])
            let (kb, n) = tb ? (b.shape[b.rank - 1], b.shape[b.rank - 2]) : (b.shape[b.rank - 2], b.shape[b.rank - 1])
            guard ka == kb else { throw fail("contracted sizes differ: \(ka) vs \(kb)") }
            let batch = try Op.broadcast(Array(a.shape.dropLast(2)), Array(b.shape.dropLast(2)), fail)
            return TensorType(.float32, batch + [m, n])
        case .linear:
            let x = inputs[0], w = inputs[1]
            try needFloat(x, "input")
            try needFloat(w, "weight")
            guard x.rank >= 1, w.rank == 2 else { throw fail("needs x[..., K] and W[N, K]") }
            guard x.shape[x.rank - 1] == w.shape[1] else { throw fail("x has \(x.shape[x.rank - 1]) features, W expects \(w.shape[1])") }
            if inputs.count == 3 {
                try needFloat(inputs[2], "bias")
                guard inputs[2].shape == [w.shape[0]] else { throw fail("bias must be [\(w.shape[0])], is \(inputs[2])") }
            }
            return TensorType(.float32, Array(x.shape.dropLast()) + [w.shape[0]])
        case .layerNorm(let eps):
            let x = inputs[0]
            for t in inputs { try needFloat(t, "operand") }
            guard x.rank >= 1 else { throw fail("needs rank >= 1") }
            guard eps > 0, eps.isFinite else { throw fail("eps must be positive, is \(eps)") }
            let c = x.shape[x.rank - 1]
            guard inputs[1].shape == [c], inputs[2].shape == [c] else { throw fail("weight and bias must be [\(c)]") }
            return x
        case .softmax(let axis):
            try needFloat(inputs[0], "input")
            try checkAxis(axis, inputs[0].rank)
            return inputs[0]
        case .causalMask:
            let x = inputs[0]
            try needFloat(x, "input")
            guard x.rank >= 2 else { throw fail("needs rank >= 2") }
            let m = try fixedAxis(x, x.rank - 2), n = try fixedAxis(x, x.rank - 1)
            guard m <= n else { throw fail("needs M <= N, has [\(m), \(n)]") }
            return x
        case .reshape(let shape):
            let x = inputs[0]
            for d in shape { if case .fixed(let n) = d, n < 0 { throw fail("negative size \(n)") } }
            guard Op.sameElementCount(x.shape, shape) else { throw fail("cannot reshape \(x) to [\(shape.map(\.description).joined(separator: ","))]") }
            return TensorType(x.dtype, shape)
        case .transpose(let perm):
            let x = inputs[0]
            try needFloat(x, "input")
            guard perm.count == x.rank, Set(perm) == Set(0..<x.rank) else { throw fail("perm \(perm) is not a permutation of 0..<\(x.rank)") }
            return TensorType(x.dtype, perm.map { x.shape[$0] })
        case .slice(let axis, let start, let end):
            let x = inputs[0]
            try needFloat(x, "input")
            let n = try fixedAxis(x, axis)
            guard 0 <= start, start <= end, end <= n else { throw fail("range \(start)..<\(end) outside 0..<\(n)") }
            var s = x.shape
            s[axis] = .fixed(end - start)
            return TensorType(x.dtype, s)
        case .concat(let axis):
            let first = inputs[0]
            var total = 0
            for t in inputs {
                try needFloat(t, "operand")
                guard t.dtype == first.dtype, t.rank == first.rank else { throw fail("operands differ in dtype or rank") }
                let (sum, o) = total.addingReportingOverflow(try fixedAxis(t, axis))
                guard !o else { throw fail("concatenated size overflows") }
                total = sum
                for i in 0..<t.rank where i != axis && t.shape[i] != first.shape[i] {
                    throw fail("operands differ on axis \(i): \(t.shape[i]) vs \(first.shape[i])")
                }
            }
            var s = first.shape
            s[axis] = .fixed(total)
            return TensorType(first.dtype, s)
        case .flip(let axis):
            try needFloat(inputs[0], "input")
            try checkAxis(axis, inputs[0].rank)
            return inputs[0]
        case .pad(let axis, let before, let after):
            let x = inputs[0]
            try needFloat(x, "input")
            let n = try fixedAxis(x, axis)
            guard before >= 0, after >= 0 else { throw fail("negative padding") }
            let (nb, o1) = n.addingReportingOverflow(before)
            let (size, o2) = nb.addingReportingOverflow(after)
            guard !o1, !o2 else { throw fail("padded size overflows") }
            var s = x.shape
            s[axis] = .fixed(size)
            return TensorType(x.dtype, s)
        case .gather:
            let table = inputs[0], idx = inputs[1]
            try needFloat(table, "table")
            guard idx.dtype == .int64 else { throw IRError(rule: "W9", "gather: indices must be i64, are \(idx.dtype)") }
            guard table.rank >= 1 else { throw fail("table needs rank >= 1") }
            _ = try fixedAxis(table, 0)
            return TensorType(.float32, idx.shape + table.shape.dropFirst())
        case .writeSlice(let axis):
            let s = inputs[0], u = inputs[1], p = inputs[2]
            // The state may be stored as f16 (the update is rounded to it).
            if s.dtype != .float16 { try needFloat(s, "state") }
            try needFloat(u, "update")
            guard p.dtype == .int64, p.shape == [1] else { throw IRError(rule: "W9", "write_slice: position must be i64[1], is \(p)") }
            guard s.rank == u.rank else { throw fail("state and update differ in rank") }
            let n = try fixedAxis(s, axis), m = try fixedAxis(u, axis)
            guard m <= n else { throw fail("update is longer (\(m)) than the state (\(n)) on axis \(axis)") }
            for i in 0..<s.rank where i != axis && s.shape[i] != u.shape[i] {
                throw fail("state and update differ on axis \(i): \(s.shape[i]) vs \(u.shape[i])")
            }
            return s
        case .maskAfter:
            let x = inputs[0], p = inputs[1]
            try needFloat(x, "input")
            guard x.rank >= 1 else { throw fail("needs rank >= 1") }
            guard p.dtype == .int64, p.shape == [1] else { throw IRError(rule: "W9", "mask_after: position must be i64[1], is \(p)") }
            return x
        case .attention(let heads, let scale, let mask, let offsets, let rowScale):
            // Each of q, k, v is a row layout [B, tokens, width] (head h at columns offset + h·d)
            // or head-major [B, heads, tokens, d] (offset 0).
            let q = inputs[0], k = inputs[1], v = inputs[2]
            guard heads > 0, scale.isFinite, offsets.count == 3, offsets.allSatisfy({ $0 >= 0 }) else {
                throw fail("needs heads > 0, a finite scale and 3 non-negative column offsets")
            }
            try needFloat(q, "q")
            for t in [k, v] where t.dtype != .float16 { try needFloat(t, "k and v (f32, or f16 as stored in a cache)") }
            for t in [q, k, v] {
                guard t.rank == 3 || (t.rank == 4 && t.shape[1] == .fixed(heads)) else {
                    throw fail("q, k and v must be [B, tokens, width] or [B, \(heads), tokens, d], one is \(t)")
                }
            }
            let d = v.rank == 4 ? try fixedAxis(v, 3) : (try fixedAxis(v, 2) - offsets[2]) / heads
            guard d > 0 else { throw fail("head width must be positive") }
            var tokens: [Dim] = []
            for (t, off) in zip([q, k, v], offsets) {
                if t.rank == 4 {
                    guard off == 0, try fixedAxis(t, 3) == d else { throw fail("head-major operand \(t) needs offset 0 and head width \(d)") }
                    tokens.append(t.shape[2])
                } else {
                    let w = try fixedAxis(t, 2)
                    guard off + heads * d <= w else { throw fail("\(heads) heads × \(d) at offset \(off) do not fit width \(w)") }
                    tokens.append(t.shape[1])
                }
            }
            guard q.shape[0] == k.shape[0], q.shape[0] == v.shape[0], tokens[1] == tokens[2] else {
                throw fail("q, k, v batch or key counts differ: \(q), \(k), \(v)")
            }
            guard let m = tokens[0].fixedSize, let n = tokens[1].fixedSize else { throw fail("token counts must be fixed") }
            if mask == .causal && m > n { throw fail("causal attention needs M <= N, has M = \(m), N = \(n)") }
            var next = 3
            if rowScale {
                let r = inputs[next]
                try needFloat(r, "row scale")
                guard r.shape == [q.shape[0], 1, 1, 1] else { throw fail("row scale must be [\(q.shape[0]),1,1,1], is \(r)") }
                next += 1
            }
            if mask == .afterPosition {
                let p = inputs[next]
                guard p.dtype == .int64, p.shape == [1] else { throw IRError(rule: "W9", "attention: position must be i64[1], is \(p)") }
            }
            return TensorType(.float32, [q.shape[0], .fixed(m), .fixed(heads * d)])
        case .fusedLinear(_, let hasBias, let hasResidual):
            let base = try Op.linear.resultType(Array(inputs.prefix(hasBias ? 3 : 2)))
            if hasResidual {
                let r = inputs[hasBias ? 3 : 2]
                try needFloat(r, "residual")
                guard r.shape == base.shape else { throw fail("residual must be \(base), is \(r)") }
            }
            return base
        case .affineCoupling(let shift, let hasScale, _):
            let x = inputs[0], p = inputs[1]
            try needFloat(x, "x")
            try needFloat(p, "params")
            guard x.rank == 3, p.rank == 3, x.shape[0] == p.shape[0], x.shape[1] == p.shape[1] else {
                throw fail("x and params must be [B, T, ·] with equal B and T, are \(x) and \(p)")
            }
            let t = try fixedAxis(x, 1), d = try fixedAxis(x, 2), w = try fixedAxis(p, 2)
            guard shift >= 0, shift <= t else { throw fail("shift \(shift) outside 0...\(t)") }
            guard w == (hasScale ? 2 * d : d) else { throw fail("params width \(w) must be \(hasScale ? 2 * d : d)") }
            return x
        case .reduceSum(let axes, let keep), .reduceMean(let axes, let keep):
            let x = inputs[0]
            try needFloat(x, "input")
            guard !axes.isEmpty, axes == axes.sorted(), Set(axes).count == axes.count else {
                throw fail("axes \(axes) must be non-empty, sorted and unique")
            }
            for a in axes { try checkAxis(a, x.rank) }
            var s: [Dim] = []
            for (i, d) in x.shape.enumerated() {
                if axes.contains(i) { if keep { s.append(1) } } else { s.append(d) }
            }
            return TensorType(.float32, s)
        }
    }

    /// NumPy broadcasting of two shapes; a symbol matches only itself or a fixed 1.
    static func broadcast(_ a: [Dim], _ b: [Dim], _ fail: (String) -> IRError) throws(IRError) -> [Dim] {
        let r = max(a.count, b.count)
        var out: [Dim] = []
        out.reserveCapacity(r)
        for i in 0..<r {
            let da = i < r - a.count ? Dim.fixed(1) : a[i - (r - a.count)]
            let db = i < r - b.count ? Dim.fixed(1) : b[i - (r - b.count)]
            if da == db { out.append(da) } else if da == .fixed(1) { out.append(db) } else if db == .fixed(1) { out.append(da) } else {
                throw fail("cannot broadcast \(a) with \(b)")
            }
        }
        return out
    }

    /// Whether two shapes have the same element count for every binding of their symbols.
    static func sameElementCount(_ a: [Dim], _ b: [Dim]) -> Bool {
        func split(_ s: [Dim]) -> (Int, [String]) {
            let syms = s.compactMap { if case .symbol(let x) = $0 { x } else { nil } }
            return (elementCount(s.compactMap(\.fixedSize)) ?? -1, syms.sorted())
        }
        let (pa, sa) = split(a), (pb, sb) = split(b)
        return pa == pb && pa >= 0 && sa == sb
    }
}
