// Elementwise family: `add`, `sub`, `mul`, `div` (broadcast), `neg`, `exp`, `gelu`, `sqrt`,
// `log`, `erf`, `scale`, and the sources `full` and `constant` (FlowIR/Op.swift). Which
// kernels are C and which Swift, and why: docs/ARCHITECTURE.md "Kernels".
import CFlowKernels
#if canImport(Glibc)
import Glibc
#endif

extension Kernels {
    /// y = a ∘ b along `walk` (a's and b's strides; broadcast dims have stride 0), y contiguous.
    static func binary(_ kind: PreparedStep.BinaryKind, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                       y: UnsafeMutablePointer<Float>, walk: StridedWalk) {
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
    }

    /// y[i] = f(x[i]) for `count` contiguous elements; x and y may be the same buffer.
    static func unary(_ kind: PreparedStep.UnaryKind, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, count: Int) {
        switch kind {
        case .neg: for i in 0..<count { y[i] = -x[i] }
        case .exp: for i in 0..<count { y[i] = expf(x[i]) }
        case .gelu: fk_gelu(x, y, count)
        case .sqrt: for i in 0..<count { y[i] = x[i].squareRoot() }
        case .log: for i in 0..<count { y[i] = logf(x[i]) }
        case .erf: fk_erf(x, y, count)
        case .scale(let s): for i in 0..<count { y[i] = s * x[i] }
        }
    }

    /// `full`: `count` copies of `value` (`constant` prepares as a fill of 0 elements: its
    /// buffer holds the weight already).
    static func fill(y: UnsafeMutablePointer<Float>, count: Int, value: Float) {
        y.update(repeating: value, count: count)
    }
}
