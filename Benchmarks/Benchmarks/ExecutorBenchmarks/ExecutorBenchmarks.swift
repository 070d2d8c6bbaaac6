@preconcurrency import Benchmark
import Foundation
import TarFlow

/// The shipped MNIST model, found from this file's location.
let modelURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Models/mnist.tflow")

let threads = Int(ProcessInfo.processInfo.environment["TARFLOW_THREADS"] ?? "") ?? 2

/// Zero allocations per call is a target, so the threshold is absolute zero. Each sample runs
/// many calls (scaling factor) because the harness itself allocates a constant few times per
/// sample (16, whatever the iteration count); per call that rounds to 0.
let zeroMallocs: [BenchmarkMetric: BenchmarkThresholds] = [.mallocCountTotal: .init(absolute: [.p50: 0, .p90: 0])]

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .memoryLeaked, .peakMemoryResident],
        warmupIterations: 2,
        maxDuration: .seconds(5),
        maxIterations: 50
    )

    // Forward pass: the bound plan with inputs written in place; the measured loop is the
    // executor alone.
    for batch in [1, 64] {
        Benchmark("forward B=\(batch)", configuration: .init(scalingFactor: batch == 1 ? .kilo : .one, maxDuration: .seconds(10),
                                                         thresholds: batch == 1 ? zeroMallocs : [:])) { (benchmark: Benchmark, bound: BoundPlan) in
            for _ in benchmark.scaledIterations { try bound.run() }
        } setup: {
            let m = try TarFlowModel(contentsOf: modelURL, threads: threads)
            let bound = try m.forwardPlan().bind(["B": batch])
            let x = bound.buffer("x")!.pointer.assumingMemoryBound(to: Float.self)
            for i in 0..<(batch * m.config.imageDim) { x[i] = Float(i % 255) / 127.5 - 1 }
            if let y = bound.buffer("y") { for i in 0..<batch { y.pointer.assumingMemoryBound(to: Int64.self)[i] = Int64(i % 10) } }
            try bound.run()
            return bound
        }
    }

    // One KV-cache decode step (block 0, middle token).
    for batch in [1, 16] {
        Benchmark("decode step B=\(batch)", configuration: .init(scalingFactor: .kilo, maxDuration: .seconds(10), thresholds: zeroMallocs)) { (benchmark: Benchmark, bound: BoundPlan) in
            for _ in benchmark.scaledIterations { try bound.run() }
        } setup: {
            let m = try TarFlowModel(contentsOf: modelURL, threads: threads)
            let bound = try m.decodeStep(block: 0, batch: batch)
            bound.buffer("pos")!.pointer.assumingMemoryBound(to: Int64.self)[0] = 24
            let ls = bound.buffer("logit_scale")!.pointer.assumingMemoryBound(to: Float.self)
            for i in 0..<batch { ls[i] = 0.125 }
            try bound.run()
            return bound
        }
    }

    // The same with the batch split between threads (one single-threaded plan per slice of
    // rows), the way `TarFlowModel.forward` and `sample` run batches of at least one row per thread.
    Benchmark("forward B=64 split", configuration: .init(maxDuration: .seconds(10))) { (benchmark: Benchmark, split: BatchSplitPlan) in
        for _ in benchmark.scaledIterations { try split.run() }
    } setup: {
        let m = try TarFlowModel(contentsOf: modelURL, threads: threads)
        let split = try m.forwardPlan().bindSplit(["B": 64])
        for r in 0..<64 {
            let x = split.row("x", r)!.assumingMemoryBound(to: Float.self)
            for i in 0..<m.config.imageDim { x[i] = Float((r + i) % 255) / 127.5 - 1 }
            split.row("y", r)?.assumingMemoryBound(to: Int64.self).pointee = Int64(r % 10)
        }
        try split.run()
        return split
    }
    Benchmark("decode step B=16 split", configuration: .init(scalingFactor: .kilo, maxDuration: .seconds(10), thresholds: zeroMallocs)) { (benchmark: Benchmark, split: BatchSplitPlan) in
        for _ in benchmark.scaledIterations { try split.run() }
    } setup: {
        let m = try TarFlowModel(contentsOf: modelURL, threads: threads)
        let split = try m.decodeStepSplit(block: 0, batch: 16)
        for p in split.buffers("pos") { p.assumingMemoryBound(to: Int64.self).pointee = 24 }
        for r in 0..<16 { split.row("logit_scale", r)!.assumingMemoryBound(to: Float.self).pointee = 0.125 }
        try split.run()
        return split
    }

    // Whole sampling runs (allocations here are the per-call tensors, not per step).
    for batch in [1, 16] {
        Benchmark("sample B=\(batch)", configuration: .init(metrics: [.wallClock, .mallocCountTotal], maxIterations: 10)) { (benchmark: Benchmark, m: TarFlowModel) in
            let z = m.noise(count: batch, seed: 0)
            for _ in benchmark.scaledIterations { blackHole(try m.sample(noise: z)) }
        } setup: {
            try TarFlowModel(contentsOf: modelURL, threads: threads)
        }
    }
}
