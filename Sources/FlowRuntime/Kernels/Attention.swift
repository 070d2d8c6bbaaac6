// Attention family: the fused `attention` op and the masks of unfused attention, `causal_mask`
// and `mask_after` (FlowIR/Op.swift). Which kernels are C and which Swift, and why:
// docs/ARCHITECTURE.md "Kernels".
import CFlowKernels

/// The fused `attention` op as a `ParallelJob`: one item per (batch, head) or, for one
/// sequence with too few heads to feed every thread, one block of query rows over all heads.
/// Each head is one `fk_attention` call (`fk_attention_kvh` over an f16 KV cache) that reads
/// q, k and v where they are (row or head-major layout) and writes the merged-heads output.
final class AttentionJob: ParallelJob {
    let q: UnsafePointer<Float>
    /// Keys and values: f32, or f16 when `kvHalf` (a KV cache kept in half precision).
    let k: UnsafeRawPointer, v: UnsafeRawPointer
    let kvHalf: Bool
    /// f32 keys and values rounded to bf16 on AMX tiles or bf16 dot products
    /// (`WeightStore.bf16Attention`), where the head width allows it.
    let bf16: WeightStore.BF16Attention?
    let y: UnsafeMutablePointer<Float>
    let rowScale: UnsafePointer<Float>?
    let position: UnsafePointer<Int64>?
    let batch: Int, heads: Int, d: Int, m: Int, nKeys: Int
    /// Per operand: element strides between batches, heads and rows (row layout or head-major).
    let lq: Layout, lk: Layout, lv: Layout

    struct Layout {
        var batch: Int, head: Int, row: Int, offset: Int
        /// Row layout [B, N, W] (head h at columns offset + h·d) or head-major [B, H, N, d].
        init(shape s: [Int], offset: Int, heads: Int, d: Int) {
            if s.count == 4 {
                (batch, head, row, self.offset) = (heads * s[2] * d, s[2] * d, d, 0)
            } else {
                (batch, head, row, self.offset) = (s[1] * s[2], d, s[2], offset)
            }
        }
        @inline(__always) func base(_ b: Int, _ h: Int) -> Int { b * batch + h * head + offset }
    }
    let scale: Float
    let causal: Bool
    let scratch: UnsafeMutablePointer<Float>  // threads × perWorker
    let perWorker: Int
    let threads: Int

    init(q: UnsafePointer<Float>, k: UnsafeRawPointer, v: UnsafeRawPointer, kvHalf: Bool, y: UnsafeMutablePointer<Float>,
         rowScale: UnsafePointer<Float>?, position: UnsafePointer<Int64>?, heads: Int,
         shapes: ([Int], [Int], [Int]), offsets: [Int], scale: Float, causal: Bool, bf16: WeightStore.BF16Attention? = nil, threads: Int) {
        self.q = q; self.k = k; self.v = v; self.kvHalf = kvHalf; self.y = y; self.rowScale = rowScale; self.position = position
        let (qs, ks, vs) = shapes
        let d = vs.count == 4 ? vs[3] : (vs[2] - offsets[2]) / heads
        self.batch = qs[0]; self.heads = heads; self.d = d
        m = qs.count == 4 ? qs[2] : qs[1]
        nKeys = ks.count == 4 ? ks[2] : ks[1]
        lq = Layout(shape: qs, offset: offsets[0], heads: heads, d: d)
        lk = Layout(shape: ks, offset: offsets[1], heads: heads, d: d)
        lv = Layout(shape: vs, offset: offsets[2], heads: heads, d: d)
        self.scale = scale; self.causal = causal; self.threads = threads
        // Decode steps (one row) keep the row path.
        self.bf16 = kvHalf || m < 16 ? nil : bf16.flatMap { kind in
            (kind == .amx ? fk_attention_bf16amx_supported(d) : fk_attention_bf16dot_supported(d)) != 0 ? kind : nil
        }
        perWorker = switch self.bf16 {
        case .amx: fk_attention_bf16amx_scratch(nKeys, d)
        case .dot: fk_attention_bf16dot_scratch(nKeys, d)
        case nil: fk_attention_scratch(nKeys, d)
        }
        scratch = .allocate(capacity: Swift.max(1, threads * perWorker))
        // One sequence with too few heads to feed every thread: split its query rows between
        // threads as the linear layers split them. Otherwise whole heads: under a causal mask
        // a head's last rows cost the most, so row splits would leave threads idle.
        affinityRows = batch == 1 && heads < 2 * threads ? RowAffinity.rowsPerThread(rows: m, threads: threads) : nil
    }

    /// Query rows per item when items are row blocks of the one sequence (all heads each).
    let affinityRows: Int?
    var affinity: Bool { affinityRows != nil }

    deinit { scratch.deallocate() }

    var items: Int { affinityRows.map { (m + $0 - 1) / $0 } ?? batch * heads }
    var work: Double { 4 * Double(batch * heads) * Double(m) * Double(nKeys) * Double(d) }

    func run(_ index: Int, worker: Int) {
        if let per = affinityRows {
            // Query rows q0 ..< q1 of every head.
            let q0 = index * per, q1 = Swift.min(m, q0 + per)
            guard q0 < q1 else { return }
            let wy = heads * d
            var limit = nKeys
            if let position { limit = position[0] < 0 ? 0 : (position[0] >= Int64(nKeys) ? nKeys : Int(position[0]) + 1) }
            let alpha = scale * (rowScale?[0] ?? 1)
            for h in 0..<heads {
                head(q + lq.base(0, h), lk.base(0, h), lv.base(0, h), y + h * d, wy, alpha, limit, q0, q1 - q0, worker)
            }
            return
        }
        let b = index / heads, h = index % heads
        let wy = heads * d
        let alpha = scale * (rowScale?[b] ?? 1)
        var limit = nKeys
        if let position { limit = position[0] < 0 ? 0 : (position[0] >= Int64(nKeys) ? nKeys : Int(position[0]) + 1) }
        head(q + lq.base(b, h), lk.base(b, h), lv.base(b, h), y + b * m * wy + h * d, wy, alpha, limit, 0, m, worker)
    }

    /// Query rows row0 ..< row0 + rows of one (batch, head); k and v at element offsets ko, vo.
    @inline(__always)
    func head(_ qh: UnsafePointer<Float>, _ ko: Int, _ vo: Int, _ yh: UnsafeMutablePointer<Float>, _ wy: Int, _ alpha: Float,
              _ limit: Int, _ row0: Int, _ rows: Int, _ worker: Int) {
        let s = scratch + worker * perWorker
        if kvHalf {
            fk_attention_kvh(qh, lq.row, k.assumingMemoryBound(to: UInt16.self) + ko, lk.row, v.assumingMemoryBound(to: UInt16.self) + vo, lv.row,
                             yh, wy, m, nKeys, d, alpha, causal ? 1 : 0, limit, row0, rows, s)
        } else if bf16 == .dot {
            fk_attention_bf16dot(qh, lq.row, k.assumingMemoryBound(to: Float.self) + ko, lk.row, v.assumingMemoryBound(to: Float.self) + vo, lv.row,
                                 yh, wy, m, nKeys, d, alpha, causal ? 1 : 0, limit, row0, rows, s)
        } else if bf16 == .amx {
            fk_attention_bf16amx(qh, lq.row, k.assumingMemoryBound(to: Float.self) + ko, lk.row, v.assumingMemoryBound(to: Float.self) + vo, lv.row,
                                 yh, wy, m, nKeys, d, alpha, causal ? 1 : 0, limit, row0, rows, s)
        } else {
            fk_attention(qh, lq.row, k.assumingMemoryBound(to: Float.self) + ko, lk.row, v.assumingMemoryBound(to: Float.self) + vo, lv.row,
                         yh, wy, m, nKeys, d, alpha, causal ? 1 : 0, limit, row0, rows, s)
        }
    }
}


extension Kernels {
    /// `causal_mask`: y = x with entries j > i + n − m of each [m, n] matrix set to `value`.
    static func causalMask(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, matrices: Int, m: Int, n: Int, value: Float) {
        let off = n - m
        for t in 0..<matrices {
            let xs = x + t * m * n, ys = y + t * m * n
            if UnsafePointer(ys) != xs { ys.update(from: xs, count: m * n) }
            for i in 0..<m where i + off + 1 < n {
                (ys + i * n + i + off + 1).update(repeating: value, count: n - (i + off + 1))
            }
        }
    }

    /// `mask_after`: y = x with entries j > position of each row of n set to `value`.
    static func maskAfter(x: UnsafePointer<Float>, position: UnsafePointer<Int64>, y: UnsafeMutablePointer<Float>, rows: Int, n: Int, value: Float) {
        let p = Int(position[0])
        if UnsafePointer(y) != x { y.update(from: x, count: rows * n) }
        // Any position is valid (p ≥ n − 1 masks nothing); p + 1 is formed only when p < n.
        let first = p >= n ? n : max(0, p + 1)
        if first < n { for r in 0..<rows { (y + r * n + first).update(repeating: value, count: n - first) } }
    }
}
