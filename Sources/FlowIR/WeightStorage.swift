#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Storage precision of linear-layer weights: the bytes a bandwidth-bound run (a decode step)
/// reads. Kernels read f16 and bf16 weights as they are stored and sum in f32.
extension Model {
    /// Names of the tensors some graph uses as the weight operand (`W`) of `linear` or
    /// `fused_linear`.
    public var linearWeightNames: Set<String> {
        var names = Set<String>()
        for g in graphs + compiled.map(\.graph) {
            var constantOf: [ValueID: String] = [:]
            for n in g.nodes {
                switch n.op {
                case .constant(let t): constantOf[n.outputs[0]] = t
                case .linear, .fusedLinear:
                    if n.inputs.count > 1, let t = constantOf[n.inputs[1]] { names.insert(t) }
                default: break
                }
            }
        }
        return names
    }

    /// This model with every linear-layer weight stored as `dtype` (f32, f16 or bf16, rounded
    /// to nearest, ties to even); other tensors are unchanged. Graph types do not change (a
    /// constant is f32 in a graph whatever its storage, rule W6), so compiled functions stay
    /// valid; they are dropped all the same, as the caller recompiles for the new storage.
    public func storingLinearWeights(as dtype: DType) throws(IRError) -> Model {
        guard dtype.computeType == .float32, dtype.inModelFile else { throw IRError(rule: "F3", "weights can be stored as f32, f16 or bf16, not \(dtype)") }
        let names = linearWeightNames
        var m = self
        m.compiled = []
        for (i, t) in tensors.enumerated() where names.contains(t.name) && t.dtype != dtype && t.dtype != .int64 {
            let f = t.floats()
            let bytes = TensorBytes(count: f.count * dtype.byteSize) { out in
                switch dtype {
                case .float32:
                    f.withUnsafeBytes { out.copyMemory(from: $0) }
                case .float16:
                    for (j, x) in f.enumerated() { out.storeBytes(of: halfBits(x).littleEndian, toByteOffset: 2 * j, as: UInt16.self) }
                case .bfloat16:
                    for (j, x) in f.enumerated() { out.storeBytes(of: bfloat16Bits(x).littleEndian, toByteOffset: 2 * j, as: UInt16.self) }
                case .int64, .float64, .uint8, .int32:
                    break
                }
            }
            m.tensors[i] = WeightTensor(name: t.name, dtype: dtype, shape: t.shape, bytes: bytes)
        }
        return m
    }

    /// The storage dtype of the linear-layer weights: one dtype, or nil when they differ (or
    /// there are none).
    public var linearWeightDType: DType? {
        let names = linearWeightNames
        let types = Set(tensors.filter { names.contains($0.name) }.map(\.dtype))
        return types.count == 1 ? types.first : nil
    }
}

extension TensorBytes {
    /// Lets the kernel drop this window's pages from memory (they are read again from the file
    /// if touched): for weights whose contents now live in a packed copy, so they are not
    /// resident twice. Owned copies are left alone. Pages shared with a neighbouring tensor
    /// are kept (only whole pages inside the window are released).
    /// With `sharedPages`, the pages the window shares with its neighbours go too (for a
    /// caller that no longer reads any tensor of the file in place).
    public func releaseResidentPages(sharedPages: Bool = false) {
        guard isMapped else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard page > 0 else { return }
        let start = (Int(bitPattern: pointer) + (sharedPages ? 0 : page - 1)) / page * page
        let end = (Int(bitPattern: pointer) + count + (sharedPages ? page - 1 : 0)) / page * page
        guard end > start, let p = UnsafeMutableRawPointer(bitPattern: start) else { return }
        _ = madvise(p, end - start, Int32(MADV_DONTNEED))
    }
}

extension Graph {
    /// Whether some state is kept in f16 (`HalfPrecisionState`).
    public var hasHalfPrecisionState: Bool { state.contains { values[$0.input].type.dtype == .float16 } }
}
