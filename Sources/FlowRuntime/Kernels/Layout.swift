// Layout family: `reshape`, `transpose`, `slice`, `concat`, `flip`, `pad`, `gather` and
// `write_slice` (FlowIR/Op.swift): copies, no arithmetic. Which kernels are C and which Swift,
// and why: docs/ARCHITECTURE.md "Kernels".
import CFlowKernels

extension Kernels {
    /// `reshape`: the bytes as they are (nothing to do when the planner gave y x's buffer).
    static func copyBytes(x: UnsafeRawPointer, y: UnsafeMutableRawPointer, bytes: Int) {
        if x != UnsafeRawPointer(y) { y.copyMemory(from: x, byteCount: bytes) }
    }

    /// `transpose`: y (contiguous) = x read along `walk`'s first strides.
    static func gatherWalk(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, walk: StridedWalk) {
        var o = 0
        walk.forEachRow { oa, _, len, sa, _ in
            let px = x + oa, py = y + o
            if sa == 1 { py.update(from: px, count: len) } else { for i in 0..<len { py[i] = px[i * sa] } }
            o += len
        }
    }

    /// `slice`: rows start ..< start + length of x viewed as [outer, n, inner].
    static func slice(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, outer: Int, n: Int, inner: Int, start: Int, length: Int) {
        for o in 0..<outer { (y + o * length * inner).update(from: x + (o * n + start) * inner, count: length * inner) }
    }

    /// `concat`: each part (pointer, its size n on the axis) after the previous, y viewed as
    /// [outer, total, inner].
    static func concat(parts: [(FPtr, Int)], y: UnsafeMutablePointer<Float>, outer: Int, inner: Int, total: Int) {
        var off = 0
        for (p, n) in parts {
            for o in 0..<outer { (y + (o * total + off) * inner).update(from: p + o * n * inner, count: n * inner) }
            off += n
        }
    }

    /// `flip`: x viewed as [outer, n, inner] with the n axis reversed.
    static func flip(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, outer: Int, n: Int, inner: Int) {
        for o in 0..<outer {
            for j in 0..<n { (y + (o * n + j) * inner).update(from: x + (o * n + n - 1 - j) * inner, count: inner) }
        }
    }

    /// `pad`: `before` and `after` zero rows around the n axis of x viewed as [outer, n, inner].
    static func pad(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, outer: Int, n: Int, inner: Int, before: Int, after: Int) {
        let m = n + before + after
        for o in 0..<outer {
            let yo = y + o * m * inner
            yo.update(repeating: 0, count: before * inner)
            (yo + before * inner).update(from: x + o * n * inner, count: n * inner)
            (yo + (before + n) * inner).update(repeating: 0, count: after * inner)
        }
    }

    /// `gather`: y row i = table row indices[i] (negative counts from the end). Stops at the
    /// first index outside the table and returns its position in `indices`; nil when all fit.
    static func gather(table: UnsafePointer<Float>, rows: Int, rowSize: Int, indices: UnsafePointer<Int64>, count: Int,
                       y: UnsafeMutablePointer<Float>) -> Int? {
        for i in 0..<count {
            var r = Int(indices[i])
            if r < 0 { r += rows }
            guard r >= 0, r < rows else { return i }
            (y + i * rowSize).update(from: table + r * rowSize, count: rowSize)
        }
        return nil
    }

    /// `write_slice` at a position p the caller checked (0 ≤ p ≤ n − m): y = x with rows
    /// p ..< p + m of the [outer, n, inner] view replaced by `update` ([outer, m, inner]).
    static func writeSlice(x: UnsafePointer<Float>, update: UnsafePointer<Float>, at p: Int, y: UnsafeMutablePointer<Float>,
                           outer: Int, n: Int, m: Int, inner: Int) {
        if UnsafePointer(y) != x { y.update(from: x, count: outer * n * inner) }
        for o in 0..<outer { (y + (o * n + p) * inner).update(from: update + o * m * inner, count: m * inner) }
    }

    /// `writeSlice` into an f16 state: the update is rounded to half precision as it is written.
    static func writeSliceHalf(x: UnsafePointer<UInt16>, update: UnsafePointer<Float>, at p: Int, y: UnsafeMutablePointer<UInt16>,
                               outer: Int, n: Int, m: Int, inner: Int) {
        if UnsafePointer(y) != x { y.update(from: x, count: outer * n * inner) }
        for o in 0..<outer { fk_f32_to_f16(update + o * m * inner, y + (o * n + p) * inner, m * inner) }
    }
}
