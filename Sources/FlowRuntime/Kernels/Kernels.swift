import FlowIR

// The namespace of FlowRuntime's kernels and the index helpers the families share. One file per
// op family beside this one (Elementwise, Linear, Normalization, Attention, Coupling, Layout,
// Reductions); which kernels are C and which Swift, and why: docs/ARCHITECTURE.md "Kernels".

/// Kernels on raw buffers. Every kernel takes pointers and sizes prepared once per binding by
/// `Executor.prepare` and is called from `PreparedStep.execute`; none allocates.
enum Kernels {
    /// Views a tensor as [outer, n, inner] around `axis`.
    static func around(_ shape: [Int], _ axis: Int) -> (outer: Int, n: Int, inner: Int) {
        (elementCount(shape[..<axis]) ?? 0, shape[axis], elementCount(shape[(axis + 1)...]) ?? 0)
    }
}

/// A strided N-d walk: `outer` dims iterated by an odometer, the last dim done by a tight loop.
/// Strides are in elements; up to 8 dims. Filled once at prepare time.
struct StridedWalk {
    var rank = 0
    var dims: (Int, Int, Int, Int, Int, Int, Int, Int) = (1, 1, 1, 1, 1, 1, 1, 1)
    var sa: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)
    var sb: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)

    /// Merges adjacent dims that are contiguous for both operands (fewer, longer inner loops).
    init(dims d: [Int], stridesA a: [Int], stridesB b: [Int]) {
        var dd: [Int] = [], aa: [Int] = [], bb: [Int] = []
        for i in d.indices where d[i] != 1 {
            if let last = dd.indices.last, aa[last] == a[i] * d[i], bb[last] == b[i] * d[i] {
                dd[last] *= d[i]
                aa[last] = a[i]
                bb[last] = b[i]
            } else {
                dd.append(d[i])
                aa.append(a[i])
                bb.append(b[i])
            }
        }
        if dd.isEmpty { dd = [1]; aa = [0]; bb = [0] }
        precondition(dd.count <= 8, "rank > 8")
        rank = dd.count
        withUnsafeMutableBytes(of: &dims) { p in for i in 0..<rank { p.storeBytes(of: dd[i], toByteOffset: i * 8, as: Int.self) } }
        withUnsafeMutableBytes(of: &sa) { p in for i in 0..<rank { p.storeBytes(of: aa[i], toByteOffset: i * 8, as: Int.self) } }
        withUnsafeMutableBytes(of: &sb) { p in for i in 0..<rank { p.storeBytes(of: bb[i], toByteOffset: i * 8, as: Int.self) } }
    }

    /// Calls `body(offsetA, offsetB, innerCount, innerStrideA, innerStrideB)` for every inner row;
    /// the output is written contiguously in walk order by the caller.
    @inline(__always)
    func forEachRow(_ body: (Int, Int, Int, Int, Int) -> Void) {
        withUnsafeBytes(of: dims) { dp in
            withUnsafeBytes(of: sa) { ap in
                withUnsafeBytes(of: sb) { bp in
                    let d = dp.bindMemory(to: Int.self), a = ap.bindMemory(to: Int.self), b = bp.bindMemory(to: Int.self)
                    let r = rank
                    let inner = d[r - 1], ia = a[r - 1], ib = b[r - 1]
                    var idx: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)
                    withUnsafeMutableBytes(of: &idx) { ip in
                        let ix = ip.bindMemory(to: Int.self)
                        var offA = 0, offB = 0
                        while true {
                            body(offA, offB, inner, ia, ib)
                            // Odometer over dims 0..<r-1.
                            var k = r - 2
                            while k >= 0 {
                                ix[k] += 1
                                offA += a[k]
                                offB += b[k]
                                if ix[k] < d[k] { break }
                                offA -= a[k] * d[k]
                                offB -= b[k] * d[k]
                                ix[k] = 0
                                k -= 1
                            }
                            if k < 0 { return }
                        }
                    }
                }
            }
        }
    }
}

/// Row-major strides of a shape.
func contiguousStrides(_ shape: [Int]) -> [Int] {
    var s = [Int](repeating: 1, count: shape.count)
    var acc = 1
    for i in shape.indices.reversed() {
        s[i] = acc
        acc *= shape[i]
    }
    return s
}

/// Strides of `shape` broadcast to `out` (0 on broadcast dims), right-aligned as in NumPy.
func broadcastStrides(_ shape: [Int], to out: [Int]) -> [Int] {
    let cs = contiguousStrides(shape)
    let off = out.count - shape.count
    return out.indices.map { i in
        let j = i - off
        if j < 0 || shape[j] == 1 { return 0 }
        return cs[j]
    }
}
