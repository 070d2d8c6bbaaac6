// Normalization family: `layer_norm` and `softmax` (FlowIR/Op.swift). Which kernels are C
// and which Swift, and why: docs/ARCHITECTURE.md "Kernels".
import CFlowKernels
#if canImport(Glibc)
import Glibc
#endif

/// `layer_norm` over rows (`fk_layer_norm`), in chunks of rows.
final class LayerNormJob: ParallelJob {
    let x: UnsafePointer<Float>, w: UnsafePointer<Float>, b: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>
    let rows: Int, c: Int, eps: Float, chunk: Int

    let affinity: Bool

    init(x: UnsafePointer<Float>, w: UnsafePointer<Float>, b: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, rows: Int, c: Int, eps: Float,
         threads: Int = 1) {
        self.x = x; self.w = w; self.b = b; self.y = y; self.rows = rows; self.c = c; self.eps = eps
        if let per = RowAffinity.rowsPerThread(rows: rows, threads: threads) {
            chunk = per
            affinity = true
        } else {
            chunk = Swift.max(1, 16384 / Swift.max(c, 1))
            affinity = false
        }
    }

    var items: Int { (rows + chunk - 1) / chunk }
    var work: Double { 8 * Double(rows) * Double(c) }

    func run(_ index: Int, worker: Int) {
        let r0 = index * chunk, n = Swift.min(chunk, rows - r0)
        fk_layer_norm(x + r0 * c, w, b, y + r0 * c, n, c, eps)
    }
}


extension Kernels {
    /// `softmax` along an axis of a tensor viewed as [outer, n, inner].
    static func softmax(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, outer: Int, n: Int, inner: Int) {
        guard n > 0 else { return }
        for o in 0..<outer {
            for i in 0..<inner {
                let base = o * n * inner + i
                var m = -Float.infinity
                for j in 0..<n { m = Swift.max(m, x[base + j * inner]) }
                // A row that is entirely -inf has no defined softmax; PyTorch gives NaN too.
                var s: Float = 0
                for j in 0..<n {
                    let e = expf(x[base + j * inner] - m)
                    y[base + j * inner] = e
                    s += e
                }
                let inv = 1 / s
                for j in 0..<n { y[base + j * inner] *= inv }
            }
        }
    }
}
