import CFlowKernels
import FlowIR
#if canImport(Glibc)
import Glibc
#endif

/// The weights of one model as the kernels read them, made once and shared by every executor
/// of the model (the forward plan, each decode block, the gradient): linear-layer weights
/// packed for `fk_linear_w` in their stored precision (f32, f16 or bf16), and f16/bf16
/// tensors that other ops read, widened to f32. A packed weight's mapped file pages are then
/// released, so its bytes are resident once, not twice. Weights a file stores packed
/// (`panels32`, written by `tarflow compile`) are read where they lie: nothing is copied, and
/// processes mapping the same file share one copy in the page cache.
public final class WeightStore: @unchecked Sendable {
    public let model: Model
    /// A linear weight packed in panels of 32 output columns (see `fk_pack_weights`).
    struct Packed {
        let pointer: UnsafeRawPointer
        /// FK_WEIGHTS_F32, FK_WEIGHTS_F16, FK_WEIGHTS_BF16, or a native bf16 layout
        /// (FK_WEIGHTS_BF16DOT, FK_WEIGHTS_BF16AMX).
        let type: Int32
        let bytes: Int
    }
    private var packed: [String: Packed] = [:]
    private var widened: [String: UnsafeMutableRawPointer] = [:]
    private var owned: [UnsafeMutableRawPointer] = []
    /// Weights the kernels read where they lie in the model (stored in `panels32`).
    private var inPlace = Set<String>()
    private let lock = NSLockLike()
    /// Bytes this store allocated (packed and widened copies).
    public private(set) var allocatedBytes = 0
    /// Bytes of the packed weights (what one pass over every linear layer reads).
    public private(set) var packedBytes = 0
    /// Bytes of the packed weights read where the model holds them (stored in `panels32`).
    public private(set) var inPlaceBytes = 0

    /// Attention in bf16 (q, k, v and probabilities rounded to bf16, sums and softmax in f32)
    /// when the linear weights are bf16 and run on native bf16 products: such a model already
    /// rounds its linear layers' activations to bf16. On AMX tiles (`fk_attention_bf16amx`) or
    /// AVX512-BF16 dot products (`fk_attention_bf16dot`); `TARFLOW_AMX=0` and
    /// `TARFLOW_BF16DOT=0` turn them off with the linear paths.
    public enum BF16Attention: Sendable { case amx, dot }
    public let bf16Attention: BF16Attention?

    public init(model: Model) {
        self.model = model
        bf16Attention = model.linearWeightDType != .bfloat16 ? nil : WeightStore.amxBF16 ? .amx : WeightStore.nativeBF16 ? .dot : nil
    }

    /// bf16 weights run on native bf16 dot products (activations rounded to bf16) where the CPU
    /// has them (AVX512-BF16), else widened to f32 in registers. `TARFLOW_BF16DOT=0` turns the
    /// native path off, for comparisons.
    public static var nativeBF16: Bool {
        fk_bf16dot_available() != 0 && getenv("TARFLOW_BF16DOT").map { String(cString: $0) != "0" } ?? true
    }

    /// Native bf16 runs on AMX tiles where the CPU has AMX-BF16 and the OS grants the tile
    /// state (Sapphire Rapids and later): about 4× the vector path's multiply-adds per second.
    /// `TARFLOW_AMX=0` keeps the vector dot products, for comparisons.
    public static var amxBF16: Bool {
        nativeBF16 && fk_bf16amx_available() != 0 && getenv("TARFLOW_AMX").map { String(cString: $0) != "0" } ?? true
    }

    /// How bf16 linear weights run here: "amx", "dot" (AVX512-BF16 vector dot products) or
    /// "widened" (to f32 in registers).
    public static var bf16Path: String { amxBF16 ? "amx" : nativeBF16 ? "dot" : "widened" }

    deinit { for p in owned { p.deallocate() } }

    private func allocate(_ bytes: Int, limit: Int) throws -> UnsafeMutableRawPointer {
        guard case let (total, o) = allocatedBytes.addingReportingOverflow(bytes), !o, total <= limit else {
            throw RuntimeError(.weightsTooLarge(limit: limit))
        }
        allocatedBytes = total
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 64), alignment: 64)
        owned.append(p)
        return p
    }

    /// The packed form of linear weight `name` ([n, k]), made on first use.
    func packed(_ name: String, n: Int, k: Int) throws -> Packed {
        lock.lock()
        defer { lock.unlock() }
        if let p = packed[name] { return p }
        guard let stored = model.tensor(named: name), stored.shape == [n, k] else { throw RuntimeError(.missingLinearWeight(name: name, n: n, k: k)) }
        let native = stored.dtype == .bfloat16 && WeightStore.nativeBF16
        if stored.layout == .panels32, !native, Int(bitPattern: stored.bytes.pointer) % 64 == 0 {
            // Stored as the kernel reads it (`tarflow compile`): used where it lies, no copy.
            let type = stored.dtype == .float32 ? FK_WEIGHTS_F32 : stored.dtype == .float16 ? FK_WEIGHTS_F16 : FK_WEIGHTS_BF16
            let result = Packed(pointer: stored.bytes.pointer, type: Int32(type), bytes: stored.bytes.count)
            inPlace.insert(name)
            inPlaceBytes += result.bytes
            packedBytes += result.bytes
            packed[name] = result
            return result
        }
        // Another layout than this CPU's kernel reads: packed from a row-major copy.
        let t = stored.inLayout(.rowMajor)
        let elements = fk_packed_size(n, k)
        let result: Packed
        switch t.dtype {
        case .bfloat16 where WeightStore.amxBF16:
            let count = fk_packed_size_amx(n, k)
            let p = try allocate(count * 2, limit: Executor.memoryLimit)
            fk_pack_weights_amx(t.bytes.pointer.assumingMemoryBound(to: UInt16.self), n, k, p.assumingMemoryBound(to: UInt16.self))
            result = Packed(pointer: UnsafeRawPointer(p), type: Int32(FK_WEIGHTS_BF16AMX), bytes: count * 2)
        case .bfloat16 where WeightStore.nativeBF16:
            let count = fk_packed_size_bf16dot(n, k)
            let p = try allocate(count * 2, limit: Executor.memoryLimit)
            fk_pack_weights_bf16dot(t.bytes.pointer.assumingMemoryBound(to: UInt16.self), n, k, p.assumingMemoryBound(to: UInt16.self))
            result = Packed(pointer: UnsafeRawPointer(p), type: Int32(FK_WEIGHTS_BF16DOT), bytes: count * 2)
        case .float16, .bfloat16:
            let p = try allocate(elements * 2, limit: Executor.memoryLimit)
            fk_pack_weights_16(t.bytes.pointer.assumingMemoryBound(to: UInt16.self), n, k, p.assumingMemoryBound(to: UInt16.self))
            result = Packed(pointer: UnsafeRawPointer(p), type: Int32(t.dtype == .float16 ? FK_WEIGHTS_F16 : FK_WEIGHTS_BF16), bytes: elements * 2)
        case .float32:
            let p = try allocate(elements * 4, limit: Executor.memoryLimit)
            let src = Int(bitPattern: t.bytes.pointer) % 4 == 0 ? nil : t.floats()
            if let src {
                src.withUnsafeBufferPointer { fk_pack_weights($0.baseAddress!, n, k, p.assumingMemoryBound(to: Float.self)) }
            } else {
                fk_pack_weights(t.bytes.pointer.assumingMemoryBound(to: Float.self), n, k, p.assumingMemoryBound(to: Float.self))
            }
            result = Packed(pointer: UnsafeRawPointer(p), type: Int32(FK_WEIGHTS_F32), bytes: elements * 4)
        case .int64, .float64, .uint8, .int32:
            throw RuntimeError(.linearWeightDType(name: name, t.dtype))
        }
        stored.bytes.releaseResidentPages()
        packedBytes += result.bytes
        packed[name] = result
        return result
    }

    /// Constant `name` as the kernels read it: f32 and i64 in place when the model is in
    /// memory; copied once when it is a mapped file, so that runs never touch the mapping (a
    /// fault on a 3 KB bias maps up to 2 MB of the packed weights around it back in: 0.45 GB
    /// over a paper-size forward); f16 and bf16 widened once to f32.
    func values(_ name: String) throws -> UnsafeMutableRawPointer {
        guard let t = model.tensor(named: name) else { throw RuntimeError(.missingConstant(name)) }
        let rowMajor = t.layout == .rowMajor
        if (t.dtype == .float32 || t.dtype == .int64) && rowMajor && Int(bitPattern: t.bytes.pointer) % t.dtype.byteSize == 0 && !t.bytes.isMapped {
            return UnsafeMutableRawPointer(mutating: t.bytes.pointer)
        }
        lock.lock()
        defer { lock.unlock() }
        if let p = widened[name] { return p }
        let es = t.dtype == .int64 ? 8 : 4
        guard let elements = TensorLayout.rowMajor.storedElements(t.shape) else { throw RuntimeError(.constantShapeOverflow(name: name, shape: t.shape)) }
        let p = try allocate(elements * es, limit: Executor.memoryLimit)
        if (t.dtype == .int64 || t.dtype == .float32) && rowMajor {
            p.copyMemory(from: t.bytes.pointer, byteCount: t.bytes.count)
        } else {
            let f = t.floats()
            f.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        t.bytes.releaseResidentPages()
        widened[name] = p
        return p
    }

    /// Drops every resident page of a mapped model file once an executor has what it reads
    /// (packed weights and copied constants): faults while reading them mapped neighbouring
    /// pages too. Later readers of the tensors (none in a run) read the file again.
    func releaseMappedPages() {
        lock.lock()
        defer { lock.unlock() }
        for t in model.tensors where t.bytes.isMapped && !inPlace.contains(t.name) { t.bytes.releaseResidentPages(sharedPages: true) }
    }
}
