/// The closed op set of FlowIR. Every `switch` over it is exhaustive, so a new op cannot be
/// forgotten by the verifier, the printer, the serializer, the compiler or a runtime.
/// Spec/IR.md gives the exact math and shape rule of each.
/// Which scores an attention op masks out.
public enum AttentionMask: Int, Sendable, Hashable {
    case none = 0
    /// Key j > query i + N − M (the causal mask for M queries over N keys).
    case causal = 1
    /// Key j > position, the op's last input (int64 [1]): a decode step at a run-time position.
    case afterPosition = 2
}

/// An activation applied in a GEMM epilogue.
public enum Activation: Int, Sendable, Hashable {
    case none = 0
    case gelu = 1
}

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

    // Fused ops (made by the compiler's fusion passes; Spec/IR.md "Fused ops").
    /// Multi-head attention over row layouts: q, k, v are [B, M|N, width] sources whose head h
    /// occupies columns offset + h·d ..< offset + (h+1)·d; the output [B, M, heads·d] has the
    /// heads merged. Scores are `scale` (× a per-row factor when `rowScale`) · q·k, masked, and
    /// softmax-normalized per query row.
    case attention(heads: Int, scale: Float, mask: AttentionMask, offsets: [Int], rowScale: Bool)
    /// act(x · Wᵀ + bias) + residual, the GEMM with its epilogue.
    case fusedLinear(activation: Activation, hasBias: Bool, hasResidual: Bool)
    /// z_t = (x_t − b_{t−s})·exp(−a_{t−s}) for t ≥ s and z_t = x_t for t < s, along axis 1, where
    /// the last axis of `params` holds [a, b] (`hasScale`) or just b; optionally token-reversed.
    case affineCoupling(shift: Int, hasScale: Bool, flip: Bool)

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
        case .attention: "attention"
        case .fusedLinear: "fused_linear"
        case .affineCoupling: "affine_coupling"
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
        case .attention(_, _, let mask, _, let rowScale): (3 + (rowScale ? 1 : 0) + (mask == .afterPosition ? 1 : 0))...(3 + (rowScale ? 1 : 0) + (mask == .afterPosition ? 1 : 0))
        case .fusedLinear(_, let b, let r): (2 + (b ? 1 : 0) + (r ? 1 : 0))...(2 + (b ? 1 : 0) + (r ? 1 : 0))
        case .affineCoupling: 2...2
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
