// Coupling family: the fused `affine_coupling` op (FlowIR/Op.swift). Which kernels are C and
// which Swift, and why: docs/ARCHITECTURE.md "Kernels".
#if canImport(Glibc)
import Glibc
#endif

extension Kernels {
    /// `affine_coupling`: z_t = (x_t − b_{t−s})·exp(−a_{t−s}) (t ≥ s), z_t = x_t (t < s), over
    /// [batch, tokens, d]; params rows hold [a, b] (`hasScale`) or b; token-reversed if `flip`.
    static func affineCoupling(x: UnsafePointer<Float>, params: UnsafePointer<Float>, z: UnsafeMutablePointer<Float>,
                               batch: Int, tokens t: Int, d: Int, shift: Int, hasScale: Bool, flip: Bool) {
        let pw = hasScale ? 2 * d : d
        for b in 0..<batch {
            for i in 0..<t {
                let xi = x + (b * t + i) * d
                let zi = z + (b * t + (flip ? t - 1 - i : i)) * d
                if i < shift {
                    zi.update(from: xi, count: d)
                    continue
                }
                let p = params + (b * t + i - shift) * pw
                if hasScale {
                    for j in 0..<d { zi[j] = (xi[j] - p[d + j]) * expf(-p[j]) }
                } else {
                    for j in 0..<d { zi[j] = xi[j] - p[j] }
                }
            }
        }
    }
}
