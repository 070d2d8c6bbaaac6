import CFlowKernels
#if canImport(Glibc)
import Glibc
#endif

/// Work that a thread pool splits by index. Jobs are classes made when a plan is prepared, so
/// handing one to the pool allocates nothing.
protocol ParallelJob: AnyObject {
    /// Does item `index`; `worker` (0 ..< threads) picks per-thread scratch.
    func run(_ index: Int, worker: Int)
    /// Rough work of the whole job in flops; below `ThreadPool.parallelThreshold` the caller's
    /// thread does it alone (handing out a tiny decode-step op costs more than it saves).
    var work: Double { get }
    /// Item i must run on thread i mod threads (see `RowAffinity`); such jobs are handed out
    /// whatever their size.
    var affinity: Bool { get }
}

extension ParallelJob {
    var affinity: Bool { false }
}

/// Row ranges that stay on one thread from step to step. In a batch-1 pass with per-op threads,
/// each op's output used to be read by the other core in the next op; when LayerNorm, linear
/// layers and attention all give thread w the same rows, only attention's keys and values
/// cross between cores. It matters most when the cores share no cache: on this project's VM,
/// whose vCPUs sit that way for minutes at a time, a batch-1 MNIST forward went from 3.07 to
/// 2.29 ms (1.92 to 1.87 ms when they share one). TARFLOW_AFFINITY=0 turns it off.
enum RowAffinity {
    /// Rows per thread (the last thread takes the rest) when `rows` rows are split this way:
    /// several threads, at least 8 rows each, and at most 512 (one GEMM row tile) each.
    static let enabled: Bool = getenv("TARFLOW_AFFINITY").map { String(cString: $0) != "0" } ?? true

    static func rowsPerThread(rows: Int, threads: Int) -> Int? {
        guard enabled, threads > 1, rows >= 8 * threads, rows <= 512 * threads else { return nil }
        return (rows + threads - 1) / threads
    }
}

/// A job as the C pool sees it: a context pointer to this box, which holds the job strongly
/// for as long as the prepared step exists.
final class JobBox {
    let job: ParallelJob
    init(_ job: ParallelJob) { self.job = job }
}

/// A fixed set of worker threads (the C pool in CFlowKernels/pool.c) that run `ParallelJob`s:
/// items are taken one by one from a shared counter, the caller's thread works too, and `run`
/// returns when all are done. Workers spin between back-to-back steps and sleep when idle.
/// Which thread does which item varies (unless the job asks for `affinity`), so jobs write
/// disjoint outputs and results do not depend on it.
final class ThreadPool: @unchecked Sendable {
    let threads: Int
    private let pool: OpaquePointer?

    /// Creates the pool; if the system refuses a thread, falls back to fewer (down to the
    /// caller's thread alone), since results do not depend on the thread count's split.
    init(threads: Int) {
        var n = max(1, threads)
        var p: OpaquePointer? = nil
        while n > 1 {
            p = fk_pool_create(Int32(clamping: n), ThreadPool.spinSeconds)
            if p != nil { break }
            n -= 1
        }
        pool = p
        self.threads = p == nil ? 1 : n
    }

    deinit { if let pool { fk_pool_destroy(pool) } }

    /// A pool of the caller's thread alone (load-time steps, the parts of a `BatchSplitPlan`).
    static let serial = ThreadPool(threads: 1)

    /// How long idle workers spin before sleeping (TARFLOW_SPIN_US, default 500 µs): long
    /// enough to bridge the gaps between a sampler's decode steps.
    static let spinSeconds: Double = {
        if let e = getenv("TARFLOW_SPIN_US"), let v = Double(String(cString: e)), v >= 0 { return v * 1e-6 }
        return 500e-6
    }()

    /// Below this many flops a job runs on the caller's thread alone (TARFLOW_PARALLEL_MIN).
    static let parallelThreshold: Double = {
        if let e = getenv("TARFLOW_PARALLEL_MIN"), let v = Double(String(cString: e)), v >= 0 { return v }
        return 2.0e5
    }()

    /// Runs items 0 ..< count of `job` on all threads and waits for them.
    func run(_ box: JobBox, count: Int) {
        guard count > 0 else { return }
        let affinity = box.job.affinity
        if threads == 1 || count == 1 || (!affinity && box.job.work < ThreadPool.parallelThreshold) {
            for i in 0..<count { box.job.run(i, worker: 0) }
            return
        }
        fk_pool_run_affine(pool, { ctx, i, w in
            Unmanaged<JobBox>.fromOpaque(ctx!).takeUnretainedValue().job.run(i, worker: Int(w))
        }, Unmanaged.passUnretained(box).toOpaque(), count, affinity ? 1 : 0)
    }
}
