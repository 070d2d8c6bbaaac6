// Reductions family: `reduce_sum` and `reduce_mean` (FlowIR/Op.swift). Which kernels are C and
// which Swift, and why: docs/ARCHITECTURE.md "Kernels".

extension Kernels {
    /// y = scale · Σ of x over the reduced axes. x is read contiguously along `walk`, whose
    /// second strides address the kept dims of y (0 on reduced dims); sums are in float64 in
    /// `acc` (outCount doubles), rounded to float once at the end.
    static func reduce(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, walk: StridedWalk, acc: UnsafeMutablePointer<Double>,
                       outCount: Int, scale: Double) {
        acc.update(repeating: 0, count: outCount)
        var o = 0
        walk.forEachRow { _, ob, len, _, sb in
            let px = x + o
            if sb == 0 {
                var s = 0.0
                for i in 0..<len { s += Double(px[i]) }
                acc[ob] += s
            } else {
                for i in 0..<len { acc[ob + i * sb] += Double(px[i]) }
            }
            o += len
        }
        for i in 0..<outCount { y[i] = Float(acc[i] * scale) }
    }
}
