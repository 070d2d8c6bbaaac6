import CFlowKernels
import FlowCompiler
import FlowIR
#if canImport(Glibc)
import Glibc
#endif

typealias FPtr = UnsafeMutablePointer<Float>

/// One step with everything resolved: pointers, sizes, strides. `execute` does no allocation:
/// it calls one kernel (Sources/FlowRuntime/Kernels/, one file per op family).
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
            Kernels.affineCoupling(x: x, params: params, z: z, batch: batch, tokens: tokens, d: d, shift: shift, hasScale: hasScale, flip: flip)
        case let .matmul(a, b, c, m, n, k, ta, tb, offsets):
            Kernels.matmul(a: a, b: b, c: c, m: m, n: n, k: k, transA: ta, transB: tb, offsets: offsets)
        case let .binary(kind, a, b, y, walk):
            Kernels.binary(kind, a: a, b: b, y: y, walk: walk)
        case let .unary(kind, x, y, count):
            Kernels.unary(kind, x: x, y: y, count: count)
        case let .softmax(x, y, outer, n, inner):
            Kernels.softmax(x: x, y: y, outer: outer, n: n, inner: inner)
        case let .causalMask(x, y, matrices, m, n, value):
            Kernels.causalMask(x: x, y: y, matrices: matrices, m: m, n: n, value: value)
        case let .copyBytes(x, y, bytes):
            Kernels.copyBytes(x: x, y: y, bytes: bytes)
        case let .gatherWalk(x, y, walk):
            Kernels.gatherWalk(x: x, y: y, walk: walk)
        case let .slice(x, y, outer, n, inner, start, length):
            Kernels.slice(x: x, y: y, outer: outer, n: n, inner: inner, start: start, length: length)
        case let .concat(parts, y, outer, inner, total):
            Kernels.concat(parts: parts, y: y, outer: outer, inner: inner, total: total)
        case let .flip(x, y, outer, n, inner):
            Kernels.flip(x: x, y: y, outer: outer, n: n, inner: inner)
        case let .pad(x, y, outer, n, inner, before, after):
            Kernels.pad(x: x, y: y, outer: outer, n: n, inner: inner, before: before, after: after)
        case let .gather(table, rows, rowSize, indices, count, y):
            if let i = Kernels.gather(table: table, rows: rows, rowSize: rowSize, indices: indices, count: count, y: y) {
                throw RuntimeError(.gatherIndex(indices[i], rows: rows))
            }
        case let .reduce(x, y, walk, acc, outCount, scale):
            Kernels.reduce(x: x, y: y, walk: walk, acc: acc, outCount: outCount, scale: scale)
        case let .fill(y, count, value):
            Kernels.fill(y: y, count: count, value: value)
        case let .writeSlice(x, update, position, y, outer, n, m, inner):
            let p = Int(position[0])
            // p comes from data: compare against n − m (≥ 0 by the shape rule) so it cannot overflow.
            guard p >= 0, p <= n - m else { throw RuntimeError(.writePosition(p, count: m, extent: n)) }
            Kernels.writeSlice(x: x, update: update, at: p, y: y, outer: outer, n: n, m: m, inner: inner)
        case let .writeSliceHalf(x, update, position, y, outer, n, m, inner):
            let p = Int(position[0])
            guard p >= 0, p <= n - m else { throw RuntimeError(.writePosition(p, count: m, extent: n)) }
            Kernels.writeSliceHalf(x: x, update: update, at: p, y: y, outer: outer, n: n, m: m, inner: inner)
        case let .maskAfter(x, position, y, rows, n, value):
            Kernels.maskAfter(x: x, position: position, y: y, rows: rows, n: n, value: value)
        }
    }
}

extension Executor {
    /// Resolves one plan step against concrete shapes and buffer pointers.
    static func prepare(_ s: ExecutionPlan.Step, graph: Graph, shapes shapeOf: (ValueID) -> [Int],
                        pointer: (ValueID) -> UnsafeMutableRawPointer, scratch: (Int) -> UnsafeMutableRawPointer,
                        packed: (ValueID) -> WeightStore.Packed? = { _ in nil }, bf16Attention: WeightStore.BF16Attention? = nil,
                        threads: Int) throws -> PreparedStep {
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
                throw RuntimeError(.mixedKVDTypes)
            }
            let job = AttentionJob(q: f(x), k: UnsafeRawPointer(pointer(s.inputs[1])), v: UnsafeRawPointer(pointer(s.inputs[2])), kvHalf: kvHalf,
                                   y: f(out), rowScale: rs, position: pos, heads: heads, shapes: (qs, ks, vs), offsets: offsets,
                                   scale: scale, causal: mask == .causal, bf16: bf16Attention, threads: threads)
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
