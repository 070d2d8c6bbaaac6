import COpenBLAS
import Dispatch

/// What OpenBLAS sgemm reaches on this machine: the yardstick for the executor's GFLOP/s.
public enum SgemmBenchmark {
    public static func run(n: Int, threads: Int, reps: Int) -> (median: Double, gflops: Double) {
        Executor.setBLASThreads(threads)
        let a = [Float](repeating: 0.5, count: n * n), b = [Float](repeating: 0.25, count: n * n)
        var c = [Float](repeating: 0, count: n * n)
        var times: [Double] = []
        for r in 0...reps {
            let t0 = DispatchTime.now().uptimeNanoseconds
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, a, Int32(n), b, Int32(n), 0, &c, Int32(n))
            if r > 0 { times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9) }
        }
        let med = times.sorted()[times.count / 2]
        return (med, 2 * Double(n) * Double(n) * Double(n) / med / 1e9)
    }
}
