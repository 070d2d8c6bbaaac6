/// How a constant's elements are ordered in its bytes (Spec/ModelFile.md §2, "Layouts").
///
/// `panels32` is the order the linear kernels read a weight W [n, k] in: ⌈n/32⌉ panels, each
/// k groups of 32 elements, element j of group c of panel p being W[32p + j, c] (zero where
/// 32p + j ≥ n). `tarflow compile` stores linear weights this way so that a loader maps them
/// and uses them where they lie, instead of packing a copy per process.
public enum TensorLayout: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case rowMajor, panels32

    /// Output rows per panel.
    public static let panelRows = 32

    public var description: String {
        switch self {
        case .rowMajor: "row-major"
        case .panels32: "panels32"
        }
    }

    init?(proto: Flowir_Layout) {
        guard let l = TensorLayout.mirroring(proto, via: \.proto) else { return nil }
        self = l
    }

    var proto: Flowir_Layout {
        switch self {
        case .rowMajor: .rowMajor
        case .panels32: .panels32
        }
    }

    /// Why a tensor of `dtype` and `shape` cannot have this layout, or nil when it can.
    public func refusal(_ dtype: DType, _ shape: [Int]) -> String? {
        switch self {
        case .rowMajor: return nil
        case .panels32:
            guard shape.count == 2, dtype != .int64 else { return "layout panels32 needs a rank-2 f32, f16 or bf16 tensor, not \(dtype) \(shape)" }
            return nil
        }
    }

    /// Elements stored for `shape` in this layout (panel padding included), or nil on overflow.
    /// Only for shapes `refusal` accepts.
    public func storedElements(_ shape: [Int]) -> Int? {
        switch self {
        case .rowMajor:
            return elementCount(shape)
        case .panels32:
            let r = Self.panelRows
            let (padded, o1) = ((shape[0] + r - 1) / r).multipliedReportingOverflow(by: r)
            let (n, o2) = padded.multipliedReportingOverflow(by: shape[1])
            return o1 || o2 ? nil : n
        }
    }
}

extension WeightTensor {
    /// This tensor in `layout`, with the same dtype and values (a copy; self when it already is).
    public func inLayout(_ layout: TensorLayout) -> WeightTensor {
        guard layout != self.layout, layout.refusal(dtype, shape) == nil, self.layout.refusal(dtype, shape) == nil,
              let elements = layout.storedElements(shape) else { return self }
        let toPanels = layout == .panels32
        let (n, k) = (shape[0], shape[1])
        let out = TensorBytes(count: elements * dtype.byteSize) { dst in
            switch dtype.byteSize {
            case 4: Self.permute(bytes.pointer, dst.baseAddress!, n: n, k: k, toPanels: toPanels, as: UInt32.self)
            case 2: Self.permute(bytes.pointer, dst.baseAddress!, n: n, k: k, toPanels: toPanels, as: UInt16.self)
            default: break  // refusal: only f32, f16, bf16
            }
        }
        return WeightTensor(name: name, dtype: dtype, shape: shape, bytes: out, layout: layout)
    }

    /// Row-major [n, k] ↔ panels32 (padding rows are left as they are: zero in a fresh buffer).
    /// The source may be unaligned (a model decoded from an array); the destination is fresh.
    static func permute<T: BitwiseCopyable>(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, n: Int, k: Int, toPanels: Bool, as: T.Type) {
        let r = TensorLayout.panelRows
        let d = dst.assumingMemoryBound(to: T.self)
        let es = MemoryLayout<T>.stride
        for p in 0..<(n + r - 1) / r {
            let panel = p * k * r
            for j in 0..<min(r, n - p * r) {
                let row = (p * r + j) * k
                for c in 0..<k {
                    let (from, to) = toPanels ? (row + c, panel + c * r + j) : (panel + c * r + j, row + c)
                    d[to] = src.loadUnaligned(fromByteOffset: from * es, as: T.self)
                }
            }
        }
    }
}

extension Model {
    /// This model with every linear-layer weight (`linearWeightNames`) stored in `panels32`, as
    /// `tarflow compile` writes it; other tensors, graphs and compiled functions are unchanged
    /// (a layout is not part of a source digest, F12).
    public func packingLinearWeights() -> Model {
        let names = linearWeightNames
        var m = self
        for (i, t) in tensors.enumerated() where names.contains(t.name) && TensorLayout.panels32.refusal(t.dtype, t.shape) == nil {
            m.tensors[i] = t.inLayout(.panels32)
        }
        return m
    }
}
