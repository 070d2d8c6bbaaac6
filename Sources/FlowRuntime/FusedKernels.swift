import CFlowKernels
import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// Kernels of the fused ops, written as `ParallelJob`s: the executor prepares one job object
/// per step (pointers, sizes, per-thread scratch) and the pool runs its items. OpenBLAS runs
/// single-threaded inside a job; the pool is the only source of parallelism, so a thread
/// count always splits work the same way and gives the same bits.
/// act(x · Wᵀ + bias) + residual over tiles of rows × columns.
///
/// With W packed at load (a constant weight; see `Executor`), tiles run `fk_linear`, whose sums
/// stay in registers through the epilogue and whose results do not depend on the tiling.
/// Otherwise (a weight computed at run time) each tile is an OpenBLAS sgemm followed by the
/// epilogue while the tile is in cache.
final class LinearJob: ParallelJob {
    let x: UnsafePointer<Float>, w: UnsafePointer<Float>
    /// The packed weights (f32, f16 or bf16; see `WeightStore`), if W was known at load.
    let packed: UnsafeRawPointer?, packedType: Int32
    let bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?
    let y: UnsafeMutablePointer<Float>
    let rows: Int, k: Int, n: Int
    let gelu: Bool
    /// Rows per tile; columns per tile (a multiple of 32, the packed panel width, when packed).
    let rowBlock: Int, colBlock: Int, rowTiles: Int, colTiles: Int
    /// Tile i runs on thread i (see `RowAffinity`).
    let affinity: Bool

    init(x: UnsafePointer<Float>, w: UnsafePointer<Float>, packed: WeightStore.Packed?, bias: UnsafePointer<Float>?,
         residual: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>, rows: Int, k: Int, n: Int, gelu: Bool, threads: Int) {
        self.x = x; self.w = w; self.packed = packed?.pointer; packedType = packed?.type ?? Int32(FK_WEIGHTS_F32)
        self.bias = bias; self.residual = residual; self.y = y
        self.rows = rows; self.k = k; self.n = n; self.gelu = gelu
        // Row tiles of ≤ 512 rows keep a tile's output near L2 for the epilogue; the tile count
        // is a multiple of the thread count, so no thread idles on the last round. When there
        // are too few row tiles to feed every thread (batch-1 passes, decode steps), columns
        // are split too.
        if packed != nil, let per = RowAffinity.rowsPerThread(rows: rows, threads: threads) {
            // One row tile per thread, on the same thread as LayerNorm's and attention's rows.
            affinity = true
            rowBlock = per; rowTiles = (rows + per - 1) / per; colBlock = Swift.max(32, (n + 31) / 32 * 32); colTiles = 1
            return
        }
        affinity = false
        var rt = (Swift.max(rows, 1) + LinearJob.rowBlockLimit - 1) / LinearJob.rowBlockLimit
        if threads > 1 && rt > 1 { rt = (rt + threads - 1) / threads * threads }
        let rb = ((Swift.max(rows, 1) + rt - 1) / rt + 7) / 8 * 8
        rt = (Swift.max(rows, 1) + rb - 1) / rb
        let unit = packed != nil ? 32 : 8
        let units = Swift.max(1, (n + unit - 1) / unit)
        var ct = 1
        if threads > 1 && rt < 2 * threads { ct = Swift.min(units, (2 * threads + rt - 1) / rt) }
        let cb = (units + ct - 1) / ct * unit
        rowBlock = rb; rowTiles = rt; colBlock = cb; colTiles = (n + cb - 1) / cb
    }

    var items: Int { rows == 0 || n == 0 ? 0 : rowTiles * colTiles }
    var work: Double { 2 * Double(rows) * Double(k) * Double(n) }

    /// Per-thread room for a tile's rows of x as bf16 (native bf16 weights only).
    private(set) var bf16Rows: UnsafeMutablePointer<UInt16>? = nil
    private var bf16RowsPerThread = 0

    /// Makes the bf16 scratch (at prepare time: `run` must not allocate).
    func prepareScratch(threads: Int) {
        switch packedType {
        case Int32(FK_WEIGHTS_BF16DOT): bf16RowsPerThread = Swift.max(1, rowBlock) * ((k + 1) / 2 * 2)
        case Int32(FK_WEIGHTS_BF16AMX): bf16RowsPerThread = fk_bf16amx_scratch(Swift.max(1, rowBlock), k)
        default: return
        }
        let p = UnsafeMutablePointer<UInt16>.allocate(capacity: Swift.max(1, threads) * bf16RowsPerThread)
        p.initialize(repeating: 0, count: Swift.max(1, threads) * bf16RowsPerThread)
        bf16Rows = p
    }

    deinit { bf16Rows?.deallocate() }

    nonisolated(unsafe) static var rowBlockLimit: Int = {
        if let e = getenv("TARFLOW_ROW_BLOCK"), let v = Int(String(cString: e)), v > 0 { return v }
        return 512
    }()

    func run(_ index: Int, worker: Int) {
        let r0 = (index / colTiles) * rowBlock, c0 = (index % colTiles) * colBlock
        let mb = Swift.min(rowBlock, rows - r0), nb = Swift.min(colBlock, n - c0)
        guard mb > 0, nb > 0 else { return }
        if let packed, let scratch = bf16Rows, packedType == Int32(FK_WEIGHTS_BF16AMX) {
            fk_linear_bf16amx(x + r0 * k, packed.assumingMemoryBound(to: UInt16.self), bias, residual.map { $0 + r0 * n }, y + r0 * n, mb, k, n,
                              c0 / 32, (nb + 31) / 32, gelu ? 1 : 0, scratch + worker * bf16RowsPerThread)
            return
        }
        if let packed, let scratch = bf16Rows {
            fk_linear_bf16dot(x + r0 * k, packed.assumingMemoryBound(to: UInt16.self), bias, residual.map { $0 + r0 * n }, y + r0 * n, mb, k, n,
                              c0 / 32, (nb + 31) / 32, gelu ? 1 : 0, scratch + worker * bf16RowsPerThread)
            return
        }
        if let packed {
            fk_linear_w(x + r0 * k, packed, packedType, bias, residual.map { $0 + r0 * n }, y + r0 * n, mb, k, n, c0 / 32, (nb + 31) / 32, gelu ? 1 : 0)
            return
        }
        let yt = y + r0 * n + c0
        let addResidualAfter = residual != nil && gelu
        var beta: Float = 0
        if let residual, !gelu {
            // act is identity: residual (+ bias) rides on β = 1.
            if UnsafePointer(y) != residual { for r in 0..<mb { (yt + r * n).update(from: residual + (r0 + r) * n + c0, count: nb) } }
            if let bias { for r in 0..<mb { let row = yt + r * n; for j in 0..<nb { row[j] += bias[c0 + j] } } }
            beta = 1
        } else if let bias {
            for r in 0..<mb { (yt + r * n).update(from: bias + c0, count: nb) }
            beta = 1
        }
        if k > 0 {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(mb), Int32(nb), Int32(k), 1,
                        x + r0 * k, Int32(k), w + c0 * k, Int32(k), beta, yt, Int32(n))
        } else if beta == 0 {
            for r in 0..<mb { (yt + r * n).update(repeating: 0, count: nb) }
        }
        if gelu { for r in 0..<mb { fk_gelu(yt + r * n, yt + r * n, nb) } }
        if addResidualAfter, let residual {
            for r in 0..<mb { let row = yt + r * n, res = residual + (r0 + r) * n + c0; for j in 0..<nb { row[j] += res[j] } }
        }
    }
}

/// Multi-head attention, one item per (batch, head): query rows in blocks, scores by GEMM
/// straight from the row layouts (lda = the source's width), mask inline, softmax per row,
/// then P·V into the merged-heads output.
final class AttentionJob: ParallelJob {
    let q: UnsafePointer<Float>
    /// Keys and values: f32, or f16 when `kvHalf` (a KV cache kept in half precision).
    let k: UnsafeRawPointer, v: UnsafeRawPointer
    let kvHalf: Bool
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
         shapes: ([Int], [Int], [Int]), offsets: [Int], scale: Float, causal: Bool, threads: Int) {
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
        perWorker = fk_attention_scratch(nKeys, d)
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
        } else {
            fk_attention(qh, lq.row, k.assumingMemoryBound(to: Float.self) + ko, lk.row, v.assumingMemoryBound(to: Float.self) + vo, lv.row,
                         yh, wy, m, nKeys, d, alpha, causal ? 1 : 0, limit, row0, rows, s)
        }
    }
}

/// LayerNorm over rows, in chunks of rows.
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

enum CouplingKernel {
    /// z_t = (x_t − b_{t−s})·exp(−a_{t−s}) (t ≥ s), z_t = x_t (t < s); token-reversed if `flip`.
    static func run(x: UnsafePointer<Float>, params: UnsafePointer<Float>, z: UnsafeMutablePointer<Float>,
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
