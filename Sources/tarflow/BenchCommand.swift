import ArgumentParser
import Foundation
import FlowRuntime
import TarFlow

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Time the forward pass or sampling; prints one JSON line.")

    @Argument(help: "The model file.") var model: String?
    @Option(help: "forward, sample, or load (open the file to the first forward result, a fresh load each repetition).") var what: String = "forward"
    @Option(parsing: .unconditional, help: "Images per call.") var batch: Int = 64
    @Option(parsing: .unconditional, help: "Threads.") var threads: Int = 1
    @Option(parsing: .unconditional, help: "Timed repetitions (after 0.3 s of untimed warm-up calls).") var reps: Int = 10
    @Flag(help: "Measure OpenBLAS sgemm on 2048³ instead.") var sgemm = false
    @Flag(help: "Also print a per-op time profile of one forward call on stderr.") var profile = false

    func run() throws {
        guarded {
            guard batch > 0, threads > 0, reps > 0 else { throw TarFlowError.invalidInput("--batch, --threads and --reps must be positive") }
            try Checks.threads(threads)
            if sgemm {
                let s = SgemmBenchmark.run(n: 2048, threads: threads, reps: reps)
                print("{\"what\": \"sgemm\", \"n\": 2048, \"threads\": \(threads), \"seconds_median\": \(s.median), \"gflops\": \(s.gflops)}")
                return
            }
            guard let model else { throw TarFlowError.invalidInput("give a model file (or --sgemm)") }
            let m = try Checks.model(model, threads: threads)
            guard ["forward", "sample", "load"].contains(what) else { throw TarFlowError.invalidInput("--what must be forward, sample or load, is \(what)") }
            try Checks.memory(what == "sample" ? try Checks.sampleBytes(m, images: batch, rows: batch) : try Checks.forwardBytes(m, rows: batch),
                              batchFlag: "--batch", batch: batch)
            let r: BenchSupport.Result
            switch what {
            case "forward": r = try BenchSupport.forward(m, batch: batch, reps: reps, profile: profile)
            case "sample": r = try BenchSupport.sample(m, batch: batch, reps: reps, profile: profile)
            case "load": r = try BenchSupport.load(contentsOf: URL(fileURLWithPath: model), batch: batch, reps: reps, threads: threads)
            default: throw TarFlowError.invalidInput("--what must be forward, sample or load, is \(what)")
            }
            let all = r.seconds.map { String($0) }.joined(separator: ", ")
            let ready = r.readySeconds.isEmpty ? "" : ", \"ready_seconds_median\": \(r.readySeconds.sorted()[r.readySeconds.count / 2]), \"ready_seconds_all\": [\(r.readySeconds.map { String($0) }.joined(separator: ", "))]"
            print("{\"what\": \"\(what)\", \"batch\": \(batch), \"threads\": \(threads), \"reps\": \(reps), \"seconds_median\": \(r.median), \"seconds_all\": [\(all)], \"images_per_second\": \(Double(batch) / r.median), \"gflops\": \(r.flops / r.median / 1e9), \"arena_bytes\": \(r.arenaBytes), \"peak_rss_bytes\": \(BenchSupport.peakRSS())\(ready)}")
        }
    }
}
