import CFlowKernels
import FlowCompiler
import FlowIR
#if canImport(Glibc)
import Glibc
#endif

typealias FPtr = UnsafeMutablePointer<Float>

/// One step with everything resolved: pointers, sizes, strides. `execute` does no allocation.
enum PreparedStep {
    case matmul(a: FPtr, b: FPtr, c: FPtr, m: Int, n: Int, k: Int, ta: Bool, tb: Bool, offsets: [(Int, Int)])
    case binary(BinaryKind, a: FPtr, b: FPtr, y: FPtr, walk: StridedWalk)
    case unary(UnaryKind, x: FPtr, y: FPtr, count: Int)
    case softmax(x: FPtr, y: FPtr, outer: Int, n: Int, inner: Int)
    case causalMask(x: FPtr, y: FPtr, matrices: Int, m: Int, n: Int, value: Float)
    case copyBytes(x: UnsafeMutableRawPointer, y: UnsafeMutableRawPointer, bytes: Int)
    case gatherWalk(x: FPtr, y: FPtr, walk: StridedWalk)
    case slice(x: FPtr, y: FPtr, outer: Int, n: Int, inner: Int, start: Int, length: Int)
    case concat(parts: [(FPtr, Int)], y: FPtr, outer: Int, inner: Int, total: Int)
    case flip(x: FPtr, y: FPtr, outer: Int, n: Int, inner: Int)
    case pad(x: FPtr, y: FPtr, outer: Int, n: Int, inner: Int, before: Int, after: Int)
    case gather(table: FPtr, rows: Int, rowSize: Int, indices: UnsafeMutablePointer<Int64>, count: Int, y: FPtr)
    case reduce(x: FPtr, y: FPtr, walk: StridedWalk, acc: UnsafeMutablePointer<Double>, outCount: Int, scale: Double)
    case fill(y: FPtr, count: Int, value: Float)
    case writeSlice(x: FPtr, update: FPtr, position: UnsafeMutablePointer<Int64>, y: FPtr, outer: Int, n: Int, m: Int, inner: Int)
    /// write_slice into an f16 state: the update is rounded to half precision as it is written.
    case writeSliceHalf(x: UnsafeMutablePointer<UInt16>, update: FPtr, position: UnsafeMutablePointer<Int64>, y: UnsafeMutablePointer<UInt16>,
                        outer: Int, n: Int, m: Int, inner: Int)
    case maskAfter(x: FPtr, position: UnsafeMutablePointer<Int64>, y: FPtr, rows: Int, n: Int, value: Float)
    /// Work split over the thread pool (GEMMs with epilogues, attention, LayerNorm).
    case parallel(JobBox, items: Int)
    case coupling(x: FPtr, params: FPtr, z: FPtr, batch: Int, tokens: Int, d: Int, shift: Int, hasScale: Bool, flip: Bool)

    enum BinaryKind { case add, sub, mul, div }
    enum UnaryKind { case neg, exp, gelu, sqrt, log, erf, scale(Float) }

    func execute(_ pool: ThreadPool) throws {
        switch self {
        case let .parallel(job, items):
            pool.run(job, count: items)
        case let .coupling(x, params, z, batch, tokens, d, shift, hasScale, flip):
            CouplingKernel.run(x: x, params: params, z: z, batch: batch, tokens: tokens, d: d, shift: shift, hasScale: hasScale, flip: flip)
        case let .matmul(a, b, c, m, n, k, ta, tb, offsets):
            for (i, (oa, ob)) in offsets.enumerated() {
                Kernels.gemm(a: a + oa, b: b + ob, c: c + i * m * n, m: m, n: n, k: k, transA: ta, transB: tb)
            }
        case let .binary(kind, a, b, y, walk):
            var o = 0
            walk.forEachRow { oa, ob, len, sa, sb in
                let pa = a + oa, pb = b + ob, py = y + o
                switch kind {
                case .add: for i in 0..<len { py[i] = pa[i * sa] + pb[i * sb] }
                case .sub: for i in 0..<len { py[i] = pa[i * sa] - pb[i * sb] }
                case .mul: for i in 0..<len { py[i] = pa[i * sa] * pb[i * sb] }
                case .div: for i in 0..<len { py[i] = pa[i * sa] / pb[i * sb] }
                }
                o += len
            }
        case let .unary(kind, x, y, count):
            switch kind {
            case .neg: for i in 0..<count { y[i] = -x[i] }
            case .exp: for i in 0..<count { y[i] = expf(x[i]) }
            case .gelu: fk_gelu(x, y, count)
            case .sqrt: for i in 0..<count { y[i] = x[i].squareRoot() }
            case .log: for i in 0..<count { y[i] = logf(x[i]) }
            case .erf: fk_erf(x, y, count)
            case .scale(let s): for i in 0..<count { y[i] = s * x[i] }
            }
        case let .softmax(x, y, outer, n, inner):
            Kernels.softmax(x: x, y: y, outer: outer, n: n, inner: inner)
        case let .causalMask(x, y, matrices, m, n, value):
            Kernels.causalMask(x: x, y: y, matrices: matrices, m: m, n: n, value: value)
        case let .copyBytes(x, y, bytes):
            if x != y { y.copyMemory(from: x, byteCount: bytes) }
        case let .gatherWalk(x, y, walk):
            var o = 0
            walk.forEachRow { oa, _, len, sa, _ in
                let px = x + oa, py = y + o
                if sa == 1 { py.update(from: px, count: len) } else { for i in 0..<len { py[i] = px[i * sa] } }
                o += len
            }
        case let .slice(x, y, outer, n, inner, start, length):
            for o in 0..<outer { (y + o * length * inner).update(from: x + (o * n + start) * inner, count: length * inner) }
        case let .concat(parts, y, outer, inner, total):
            var off = 0
            for (p, n) in parts {
                for o in 0..<outer { (y + (o * total + off) * inner).update(from: p + o * n * inner, count: n * inner) }
                off += n
            }
        case let .flip(x, y, outer, n, inner):
            for o in 0..<outer {
                for j in 0..<n { (y + (o * n + j) * inner).update(from: x + (o * n + n - 1 - j) * inner, count: inner) }
            }
        case let .pad(x, y, outer, n, inner, before, after):
            let m = n + before + after
            for o in 0..<outer {
                let yo = y + o * m * inner
                yo.update(repeating: 0, count: before * inner)
                (yo + before * inner).update(from: x + o * n * inner, count: n * inner)
                (yo + (before + n) * inner).update(repeating: 0, count: after * inner)
            }
        case let .gather(table, rows, rowSize, indices, count, y):
            for i in 0..<count {
                var r = Int(indices[i])
                if r < 0 { r += rows }
                guard r >= 0, r < rows else {
                    throw RuntimeError(.indexOutOfRange, "gather: index \(indices[i]) out of range for a table of \(rows) rows")
                }
                (y + i * rowSize).update(from: table + r * rowSize, count: rowSize)
            }
        case let .reduce(x, y, walk, acc, outCount, scale):
            acc.update(repeating: 0, count: outCount)
            var o = 0
            walk.forEachRow { _, ob, len, _, sb in
                let px = x + o
                if sb == 0 {
                    var s = 0.0
                    for i in 0..<len { s += Double(px[i]) }
                    acc[ob] += s
                } else {
                    for i in 0..<len { acc[ob + i * sb] += Double(px[i]) }
                }
                o += len
            }
            for i in 0..<outCount { y[i] = Float(acc[i] * scale) }
        case let .fill(y, count, value):
            y.update(repeating: value, count: count)
        case let .writeSlice(x, update, position, y, outer, n, m, inner):
            let p = Int(position[0])
            // p comes from data: compare against n − m (≥ 0 by the shape rule) so it cannot overflow.
            guard p >= 0, p <= n - m else { throw RuntimeError(.indexOutOfRange, "write_slice: position \(p) + \(m) is outside 0..<\(n)") }
            if x != y { y.update(from: x, count: outer * n * inner) }
            for o in 0..<outer { (y + (o * n + p) * inner).update(from: update + o * m * inner, count: m * inner) }
        case let .writeSliceHalf(x, update, position, y, outer, n, m, inner):
            let p = Int(position[0])
            guard p >= 0, p <= n - m else { throw RuntimeError(.indexOutOfRange, "write_slice: position \(p) + \(m) is outside 0..<\(n)") }
            if x != y { y.update(from: x, count: outer * n * inner) }
            for o in 0..<outer { fk_f32_to_f16(update + o * m * inner, y + (o * n + p) * inner, m * inner) }
        case let .maskAfter(x, position, y, rows, n, value):
            let p = Int(position[0])
            if x != y { y.update(from: x, count: rows * n) }
            // Any position is valid (p ≥ n − 1 masks nothing); p + 1 is formed only when p < n.
            let first = p >= n ? n : max(0, p + 1)
            if first < n { for r in 0..<rows { (y + r * n + first).update(repeating: value, count: n - first) } }
        }
    }
}

extension Executor {
    /// Resolves one plan step against concrete shapes and buffer pointers.
    static func prepare(_ s: ExecutionPlan.Step, graph: Graph, shapes shapeOf: (ValueID) -> [Int],
                        pointer: (ValueID) -> UnsafeMutableRawPointer, scratch: (Int) -> UnsafeMutableRawPointer,
                        packed: (ValueID) -> WeightStore.Packed? = { _ in nil }, threads: Int) throws -> PreparedStep {
        func f(_ v: ValueID) -> FPtr { pointer(v).assumingMemoryBound(to: Float.self) }
        let out = s.outputs[0]
        let oshape = shapeOf(out)
        let ocount = elementCount(oshape) ?? 0
        let x = s.inputs.first ?? out
        let xshape = shapeOf(x)
        switch s.op {
        case .constant:
            return .fill(y: f(out), count: 0, value: 0)
        case .full(let value, _):
            return .fill(y: f(out), count: ocount, value: value)
        case .add, .sub, .mul, .div:
            let kind: PreparedStep.BinaryKind = switch s.op {
            case .add: .add
            case .sub: .sub
            case .mul: .mul
            default: .div
            }
            let walk = StridedWalk(dims: oshape, stridesA: broadcastStrides(shapeOf(s.inputs[0]), to: oshape),
                                   stridesB: broadcastStrides(shapeOf(s.inputs[1]), to: oshape))
            return .binary(kind, a: f(s.inputs[0]), b: f(s.inputs[1]), y: f(out), walk: walk)
        case .neg: return .unary(.neg, x: f(x), y: f(out), count: ocount)
        case .exp: return .unary(.exp, x: f(x), y: f(out), count: ocount)
        case .gelu: return .unary(.gelu, x: f(x), y: f(out), count: ocount)
        case .sqrt: return .unary(.sqrt, x: f(x), y: f(out), count: ocount)
        case .log: return .unary(.log, x: f(x), y: f(out), count: ocount)
        case .erf: return .unary(.erf, x: f(x), y: f(out), count: ocount)
        case .scale(let v): return .unary(.scale(v), x: f(x), y: f(out), count: ocount)
        case .linear, .fusedLinear:
            let w = shapeOf(s.inputs[1])
            let k = w[1], n = w[0]
            var act = Activation.none, hasBias = s.inputs.count == 3, hasResidual = false
            if case .fusedLinear(let a, let b, let r) = s.op { (act, hasBias, hasResidual) = (a, b, r) }
            let job = LinearJob(x: f(x), w: f(s.inputs[1]), packed: packed(s.inputs[1]), bias: hasBias ? UnsafePointer(f(s.inputs[2])) : nil,
                                residual: hasResidual ? UnsafePointer(f(s.inputs[hasBias ? 3 : 2])) : nil, y: f(out),
                                rows: n == 0 ? 0 : ocount / n, k: k, n: n, gelu: act == .gelu, threads: threads)
            job.prepareScratch(threads: threads)
            return .parallel(JobBox(job), items: job.items)
        case .attention(let heads, let scale, let mask, let offsets, let rowScale):
            let qs = xshape, ks = shapeOf(s.inputs[1]), vs = shapeOf(s.inputs[2])
            var next = 3
            var rs: UnsafePointer<Float>? = nil
            if rowScale { rs = UnsafePointer(f(s.inputs[next])); next += 1 }
            let pos: UnsafePointer<Int64>? = mask == .afterPosition ? UnsafePointer(pointer(s.inputs[next]).assumingMemoryBound(to: Int64.self)) : nil
            let kvHalf = graph.values[s.inputs[1]].type.dtype == .float16
            guard kvHalf == (graph.values[s.inputs[2]].type.dtype == .float16) else {
                throw RuntimeError(.unsupported, "attention: k and v must have the same dtype (both f32 or both f16)")
            }
            let job = AttentionJob(q: f(x), k: UnsafeRawPointer(pointer(s.inputs[1])), v: UnsafeRawPointer(pointer(s.inputs[2])), kvHalf: kvHalf,
                                   y: f(out), rowScale: rs, position: pos, heads: heads, shapes: (qs, ks, vs), offsets: offsets,
                                   scale: scale, causal: mask == .causal, threads: threads)
            return .parallel(JobBox(job), items: job.items)
        case .affineCoupling(let shift, let hasScale, let flip):
            return .coupling(x: f(x), params: f(s.inputs[1]), z: f(out), batch: xshape[0], tokens: xshape[1], d: xshape[2],
                             shift: shift, hasScale: hasScale, flip: flip)
        case .matmul(let ta, let tb):
            let a = xshape, b = shapeOf(s.inputs[1])
            let m = oshape[oshape.count - 2], n = oshape[oshape.count - 1]
            let k = ta ? a[a.count - 2] : a[a.count - 1]
            let batch = Array(oshape.dropLast(2))
            let sa = broadcastStrides(Array(a.dropLast(2)), to: batch).map { $0 * a[a.count - 1] * a[a.count - 2] }
            let sb = broadcastStrides(Array(b.dropLast(2)), to: batch).map { $0 * b[b.count - 1] * b[b.count - 2] }
            var offsets: [(Int, Int)] = []
            let nb = elementCount(batch) ?? 0
            var idx = [Int](repeating: 0, count: batch.count)
            for _ in 0..<nb {
                var oa = 0, ob = 0
                for d in batch.indices {
                    oa += idx[d] * sa[d]
                    ob += idx[d] * sb[d]
                }
                offsets.append((oa, ob))
                var d = batch.count - 1
                while d >= 0 {
                    idx[d] += 1
                    if idx[d] < batch[d] { break }
                    idx[d] = 0
                    d -= 1
                }
            }
            return .matmul(a: f(x), b: f(s.inputs[1]), c: f(out), m: m, n: n, k: k, ta: ta, tb: tb, offsets: offsets)
        case .layerNorm(let eps):
            let c = xshape.last ?? 1
            let job = LayerNormJob(x: f(x), w: f(s.inputs[1]), b: f(s.inputs[2]), y: f(out), rows: c == 0 ? 0 : ocount / c, c: c, eps: eps, threads: threads)
            return .parallel(JobBox(job), items: job.items)
        case .softmax(let axis):
            let (o, n, i) = Kernels.around(xshape, axis)
            return .softmax(x: f(x), y: f(out), outer: o, n: n, inner: i)
        case .causalMask(let value):
            let m = xshape[xshape.count - 2], n = xshape[xshape.count - 1]
            return .causalMask(x: f(x), y: f(out), matrices: m * n == 0 ? 0 : ocount / (m * n), m: m, n: n, value: value)
        case .reshape:
            let es = graph.values[out].type.dtype.byteSize
            return .copyBytes(x: pointer(x), y: pointer(out), bytes: ocount * es)
        case .transpose(let perm):
            let cs = contiguousStrides(xshape)
            let walk = StridedWalk(dims: oshape, stridesA: perm.map { cs[$0] }, stridesB: [Int](repeating: 0, count: perm.count))
            return .gatherWalk(x: f(x), y: f(out), walk: walk)
        case .slice(let axis, let start, let end):
            let (o, n, i) = Kernels.around(xshape, axis)
            return .slice(x: f(x), y: f(out), outer: o, n: n, inner: i, start: start, length: end - start)
        case .concat(let axis):
            let (o, total, i) = Kernels.around(oshape, axis)
            return .concat(parts: s.inputs.map { (f($0), shapeOf($0)[axis]) }, y: f(out), outer: o, inner: i, total: total)
        case .flip(let axis):
            let (o, n, i) = Kernels.around(xshape, axis)
            return .flip(x: f(x), y: f(out), outer: o, n: n, inner: i)
        case .pad(let axis, let before, let after):
            let (o, n, i) = Kernels.around(xshape, axis)
            return .pad(x: f(x), y: f(out), outer: o, n: n, inner: i, before: before, after: after)
        case .gather:
            let t = xshape
            let rowSize = elementCount(Array(t.dropFirst())) ?? 0
            let idx = pointer(s.inputs[1]).assumingMemoryBound(to: Int64.self)
            return .gather(table: f(x), rows: t[0], rowSize: rowSize, indices: idx, count: elementCount(shapeOf(s.inputs[1])) ?? 0, y: f(out))
        case .writeSlice(let axis):
            let (o, n, i) = Kernels.around(xshape, axis)
            let m = shapeOf(s.inputs[1])[axis]
            if graph.values[out].type.dtype == .float16 {
                func h(_ v: ValueID) -> UnsafeMutablePointer<UInt16> { pointer(v).assumingMemoryBound(to: UInt16.self) }
                return .writeSliceHalf(x: h(x), update: f(s.inputs[1]), position: pointer(s.inputs[2]).assumingMemoryBound(to: Int64.self),
                                       y: h(out), outer: o, n: n, m: m, inner: i)
            }
            return .writeSlice(x: f(x), update: f(s.inputs[1]), position: pointer(s.inputs[2]).assumingMemoryBound(to: Int64.self),
                               y: f(out), outer: o, n: n, m: m, inner: i)
        case .maskAfter(let value):
            let n = xshape.last ?? 1
            return .maskAfter(x: f(x), position: pointer(s.inputs[1]).assumingMemoryBound(to: Int64.self), y: f(out),
                              rows: n == 0 ? 0 : ocount / n, n: n, value: value)
        case .reduceSum(let axes, _), .reduceMean(let axes, _):
            // Walk the input contiguously; B-offsets address the kept dims of the output.
            var ostr = [Int](repeating: 0, count: xshape.count)
            var acc = 1
            for d in xshape.indices.reversed() where !axes.contains(d) {
                ostr[d] = acc
                acc *= xshape[d]
            }
            let walk = StridedWalk(dims: xshape, stridesA: contiguousStrides(xshape), stridesB: ostr)
            var reduced = 1
            for a in axes { reduced *= xshape[a] }
            let isMean: Bool = if case .reduceMean = s.op { true } else { false }
            let buf = scratch(max(ocount, 1) * 8).assumingMemoryBound(to: Double.self)
            return .reduce(x: f(x), y: f(out), walk: walk, acc: buf, outCount: ocount, scale: isMean ? 1 / Double(max(reduced, 1)) : 1)
        }
    }
}
