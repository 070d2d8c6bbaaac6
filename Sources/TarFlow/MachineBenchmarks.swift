import FlowRuntime

extension BenchSupport {
    /// OpenBLAS sgemm on n×n matrices (`tarflow bench --sgemm`), after a preflight of its three
    /// matrices.
    public static func sgemm(n: Int, threads: Int, reps: Int) throws -> (median: Double, gflops: Double) {
        var need = MemoryNeed()
        need.add("three \(n)x\(n) f32 matrices", Saturating.mul(Saturating.mul(Saturating.mul(n, n), 4), 3))
        try need.check()
        return SgemmBenchmark.run(n: n, threads: threads, reps: reps)
    }

    /// Memory read bandwidth over `bytes` (`tarflow bench --bandwidth`), after a preflight of
    /// the buffer it reads.
    public static func bandwidth(bytes: Int = 1 << 30, threads: Int, reps: Int) throws -> (median: Double, best: Double, gbytesPerSecond: Double) {
        var need = MemoryNeed()
        need.add("the buffer read", bytes)
        try need.check()
        return BandwidthBenchmark.run(bytes: bytes, threads: threads, reps: reps)
    }
}
