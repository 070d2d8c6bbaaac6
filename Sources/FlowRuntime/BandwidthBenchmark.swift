import CFlowKernels
import Dispatch

/// What this machine's memory delivers to reads: the yardstick for bandwidth-bound runs (a
/// decode step reads every weight once per token), as `SgemmBenchmark` is for compute.
public enum BandwidthBenchmark {
    /// Reads `bytes` (far beyond the caches) `reps` times, each thread summing one contiguous
    /// part; returns the median and best seconds per pass and GB/s of the median (10⁹ B/s).
    public static func run(bytes: Int = 1 << 30, threads: Int, reps: Int) -> (median: Double, best: Double, gbytesPerSecond: Double) {
        let n = max(1 << 20, bytes / 4)
        let data = UnsafeMutablePointer<Float>.allocate(capacity: n)
        defer { data.deallocate() }
        data.initialize(repeating: 1, count: n)  // touched, so every page is resident
        let pool = ThreadPool(threads: threads)
        let job = SumJob(data, count: n, parts: pool.threads)
        let box = JobBox(job)
        var times: [Double] = []
        for r in 0...reps {
            let t0 = DispatchTime.now().uptimeNanoseconds
            pool.run(box, count: job.parts)
            if r > 0 { times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9) }
        }
        let sorted = times.sorted()
        let med = sorted[sorted.count / 2]
        return (med, sorted[0], Double(n * 4) / med / 1e9)
    }

    private final class SumJob: ParallelJob {
        let data: UnsafeMutablePointer<Float>, count: Int, parts: Int
        /// One sum per part, kept so the reads cannot be optimized away.
        let sums: UnsafeMutablePointer<Float>
        init(_ data: UnsafeMutablePointer<Float>, count: Int, parts: Int) {
            self.data = data; self.count = count; self.parts = parts
            sums = .allocate(capacity: parts)
            sums.initialize(repeating: 0, count: parts)
        }
        deinit { sums.deallocate() }
        var work: Double { .infinity }
        func run(_ index: Int, worker: Int) {
            let per = (count + parts - 1) / parts
            let lo = index * per, hi = Swift.min(count, lo + per)
            if lo < hi { sums[index] = fk_sum(data + lo, hi - lo) }
        }
    }
}
