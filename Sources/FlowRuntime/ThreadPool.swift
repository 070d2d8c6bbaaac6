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
/// Which thread does which item varies, so jobs write disjoint outputs and results do not
/// depend on it.
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
        if threads == 1 || count == 1 || box.job.work < ThreadPool.parallelThreshold {
            for i in 0..<count { box.job.run(i, worker: 0) }
            return
        }
        fk_pool_run(pool, { ctx, i, w in
            Unmanaged<JobBox>.fromOpaque(ctx!).takeUnretainedValue().job.run(i, worker: Int(w))
        }, Unmanaged.passUnretained(box).toOpaque(), count)
    }
}
