/// The closed op set of FlowIR. Every `switch` over it is exhaustive, so a new op cannot be
/// forgotten by the verifier, the printer, the serializer, the compiler or a runtime.
/// Spec/IR.md gives the exact math and shape rule of each.
public enum Op: Sendable, Hashable {
    // Sources.
    /// A tensor of the model's tensor table.
    case constant(tensor: String)
    /// A tensor of the given shape filled with `value`; symbols are bound from the inputs.
    case full(value: Float, shape: [Dim])

    // Elementwise; binary ops broadcast as NumPy does.
    case add, sub, mul, div
    case neg, exp, gelu, sqrt, log
    /// The error function; the derivative of `gelu` needs it.
    case erf
    /// `value * x`.
    case scale(Float)

    // Linear algebra.
    /// Batched matrix product over the last two axes; leading axes broadcast.
    case matmul(transposeA: Bool, transposeB: Bool)
    /// `x[..., K] · W[N, K]ᵀ (+ bias[N])`, the PyTorch `Linear` layout.
    case linear

    // Normalization and attention pieces.
    /// LayerNorm over the last axis (biased variance); inputs x, weight, bias.
    case layerNorm(eps: Float)
    case softmax(axis: Int)
    /// Over the last two axes [M, N], sets (i, j) with j > i + N − M to `value`.
    case causalMask(value: Float)

    // Layout.
    case reshape(shape: [Dim])
    case transpose(perm: [Int])
    case slice(axis: Int, start: Int, end: Int)
    case concat(axis: Int)
    case flip(axis: Int)
    /// Zero padding along one axis.
    case pad(axis: Int, before: Int, after: Int)
    /// Rows of `table` (axis 0) picked by int64 `indices`; a negative index counts from the end.
    case gather
    /// `state` with the slice [position, position + u) along `axis` replaced by `update`
    /// (u = update's size on that axis). Runtimes do it in place when `state` is a graph state.
    case writeSlice(axis: Int)
    /// Sets entries of the last axis with index j > position to `value` (a causal mask for a
    /// single query row at a run-time position, as in a KV-cache decode step).
    case maskAfter(value: Float)

    // Reductions.
    case reduceSum(axes: [Int], keepDims: Bool)
    case reduceMean(axes: [Int], keepDims: Bool)

    /// The name used by the text printer and in error messages.
    public var name: String {
        switch self {
        case .constant: "constant"
        case .full: "full"
        case .add: "add"
        case .sub: "sub"
        case .mul: "mul"
        case .div: "div"
        case .neg: "neg"
        case .exp: "exp"
        case .gelu: "gelu"
        case .sqrt: "sqrt"
        case .log: "log"
        case .erf: "erf"
        case .scale: "scale"
        case .matmul: "matmul"
        case .linear: "linear"
        case .layerNorm: "layer_norm"
        case .softmax: "softmax"
        case .causalMask: "causal_mask"
        case .reshape: "reshape"
        case .transpose: "transpose"
        case .slice: "slice"
        case .concat: "concat"
        case .flip: "flip"
        case .pad: "pad"
        case .gather: "gather"
        case .writeSlice: "write_slice"
        case .maskAfter: "mask_after"
        case .reduceSum: "reduce_sum"
        case .reduceMean: "reduce_mean"
        }
    }

    /// Number of inputs the op takes (`nil`: variadic, see the shape rule).
    public var arity: ClosedRange<Int> {
        switch self {
        case .constant, .full: 0...0
        case .add, .sub, .mul, .div, .matmul, .gather, .maskAfter: 2...2
        case .writeSlice: 3...3
        case .neg, .exp, .gelu, .sqrt, .log, .erf, .scale, .softmax, .causalMask, .reshape, .transpose,
            .slice, .flip, .pad, .reduceSum, .reduceMean:
            1...1
        case .linear: 2...3
        case .layerNorm: 3...3
        case .concat: 1...Int.max
        }
    }

    /// True for ops whose output element i depends only on input element i (same shape).
    public var isUnaryElementwise: Bool {
        switch self {
        case .neg, .exp, .gelu, .sqrt, .log, .erf, .scale: true
        default: false
        }
    }
}
