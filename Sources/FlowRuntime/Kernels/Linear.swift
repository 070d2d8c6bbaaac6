// Linear family: `matmul`, `linear` and `fused_linear` (FlowIR/Op.swift). Which kernels are
// C and which Swift, and why: docs/ARCHITECTURE.md "Kernels".
import CFlowKernels
import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

extension Kernels {
    /// One GEMM of a batched matmul: c[M, N] = op(a) · op(b).
    static func gemm(a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>,
                     m: Int, n: Int, k: Int, transA: Bool, transB: Bool) {
        guard m > 0, n > 0 else { return }
        if k == 0 {
            c.update(repeating: 0, count: m * n)
            return
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), 1, a, Int32(transA ? m : k), b, Int32(transB ? k : n), 0, c, Int32(n))
    }

    /// `matmul`: one `gemm` per matrix of the batch; `offsets[i]` are the element offsets of
    /// matrix i's operands (broadcast batch dims repeat an offset), c's matrices are contiguous.
    static func matmul(a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>,
                       m: Int, n: Int, k: Int, transA: Bool, transB: Bool, offsets: [(Int, Int)]) {
        for (i, (oa, ob)) in offsets.enumerated() {
            gemm(a: a + oa, b: b + ob, c: c + i * m * n, m: m, n: n, k: k, transA: transA, transB: transB)
        }
    }
}

/// `linear` and `fused_linear`: act(x · Wᵀ + bias) + residual over tiles of rows × columns, a
/// `ParallelJob` (the executor prepares one per step; the pool runs its tiles).
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
        let streams = packed.map { LinearJob.streamsWeights(bytes: $0.bytes, rows: rows, threads: threads) } ?? false
        if packed != nil, !streams, let per = RowAffinity.rowsPerThread(rows: rows, threads: threads) {
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
        // Two column tiles per thread, for balance; but against streaming weights one per
        // thread, so each streams one run of panels and its prefetch runs ahead through all of
        // them (AFHQ-256 f16 decode at batch 16, 2 threads, alternating runs: linear layers
        // 5.8–6.8 → 4.8–5.4 ms per step).
        let perThread = streams ? 1 : 2
        if threads > 1 && rt < 2 * threads { ct = Swift.min(units, (perThread * threads + rt - 1) / rt) }
        let cb = (units + ct - 1) / ct * unit
        rowBlock = rb; rowTiles = rt; colBlock = cb; colTiles = (n + cb - 1) / cb
    }

    /// Few rows against weights that stream from memory (a decode step at paper size): split
    /// by rows, every thread would read all the weights; split by columns, each is read once,
    /// and the few rows of activations cost nothing to share between cores (AFHQ-256 f16 decode
    /// at batch 16, 2 threads, alternating runs when this split was added: linear layers 22–36 →
    /// 18–22 ms per step; the one-tile-per-thread count above: 5.8–6.8 → 4.8–5.4 ms).
    static func streamsWeights(bytes: Int, rows: Int, threads: Int) -> Bool {
        bytes > Int(FK_STREAMED_WEIGHT_BYTES) && rows < 64 * threads
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

