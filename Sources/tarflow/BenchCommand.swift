import ArgumentParser
import Foundation
import TarFlow

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Time the forward pass, sampling or decode steps, or measure the machine; prints one JSON line.")

    @Argument(help: "The model file.") var model: String?
    @Option(help: "forward, sample, decode (--steps decode steps of the first block sampling runs), or load (open the file to the first forward result, a fresh load each repetition).") var what: String = "forward"
    @Option(parsing: .unconditional, help: "Images per call.") var batch: Int = 64
    @Option(parsing: .unconditional, help: "Threads.") var threads: Int = 1
    @Option(parsing: .unconditional, help: "Timed repetitions (after 0.3 s of untimed warm-up calls).") var reps: Int = 10
    @Flag(help: "Measure OpenBLAS sgemm on 2048³ instead.") var sgemm = false
    @Flag(help: "Measure the memory read bandwidth instead (1 GiB read per pass by --threads threads).") var bandwidth = false
    @Option(parsing: .unconditional, help: "Decode steps to time with --what decode (spread over the block's positions).") var steps: Int = 64
    @Option(help: "KV cache of --what decode and sample: f32 or f16 (default: f16 for f16/bf16 models, f32 for f32).") var kvCache: KVCacheDType?
    @Flag(help: "Also print a per-op time profile on stderr: of one forward call, of one sampling decode step (--what sample), or averaged over the timed decode steps (--what decode).") var profile = false

    func run() throws {
        guarded {
            guard batch > 0, threads > 0, reps > 0 else { throw CLIError.invalidInput("--batch, --threads and --reps must be positive") }
            try Checks.threads(threads)
            if sgemm {
                let s = try BenchSupport.sgemm(n: 2048, threads: threads, reps: reps)
                print("{\"what\": \"sgemm\", \"n\": 2048, \"threads\": \(threads), \"seconds_median\": \(s.median), \"gflops\": \(s.gflops)}")
                return
            }
            if bandwidth {
                let b = try BenchSupport.bandwidth(bytes: 1 << 30, threads: threads, reps: reps)
                print("{\"what\": \"bandwidth\", \"bytes\": \(1 << 30), \"threads\": \(threads), \"seconds_median\": \(b.median), \"gbytes_per_second\": \(b.gbytesPerSecond), \"gbytes_per_second_best\": \(Double(1 << 30) / b.best / 1e9)}")
                return
            }
            guard let model else { throw CLIError.invalidInput("give a model file (or --sgemm, --bandwidth)") }
            let m = try Checks.model(model, threads: threads)
            if what == "decode" {
                guard steps > 0 else { throw CLIError.invalidInput("--steps must be positive, is \(steps)") }
                try Checks.memory(m, .benchSample(batch: batch, kvCache: kvCache?.dtype), flag: "--batch")
                let d = try BenchSupport.decode(m, batch: batch, steps: steps, kvCache: kvCache?.dtype, profile: profile)
                print("{\"what\": \"decode\", \"batch\": \(batch), \"threads\": \(threads), \"steps\": \(steps), \"weights\": \"\(m.weightDType)\", \"kv_cache\": \"\(d.kvCache)\", \"batch_split\": \(d.split), \"seconds_per_step\": \(d.secondsPerStep), \"seconds_per_image_estimate\": \(d.secondsPerImageEstimate), \"bytes_per_step\": \(Int(d.bytesPerStep)), \"weight_bytes_per_step\": \(d.weightBytes), \"gbytes_per_second\": \(d.gbytesPerSecond), \"peak_rss_bytes\": \(BenchSupport.peakRSS())}")
                return
            }
            guard what == "forward" || what == "sample" || what == "load" else { throw CLIError.invalidInput("--what must be forward, sample, decode or load, is \(what)") }
            try Checks.memory(m, what == "sample" ? .benchSample(batch: batch, kvCache: kvCache?.dtype) : .benchForward(batch: batch, profile: profile || what == "load"), flag: "--batch")
            let r: BenchSupport.Result
            switch what {
            case "forward": r = try BenchSupport.forward(m, batch: batch, reps: reps, profile: profile)
            case "sample": r = try BenchSupport.sample(m, batch: batch, reps: reps, profile: profile, kvCache: kvCache?.dtype)
            case "load": r = try BenchSupport.load(contentsOf: URL(fileURLWithPath: model), batch: batch, reps: reps, threads: threads)
            default: throw CLIError.invalidInput("--what must be forward, sample or load, is \(what)")
            }
            let all = r.seconds.map { String($0) }.joined(separator: ", ")
            let ready = r.readySeconds.isEmpty ? "" : ", \"ready_seconds_median\": \(r.readySeconds.sorted()[r.readySeconds.count / 2]), \"ready_seconds_all\": [\(r.readySeconds.map { String($0) }.joined(separator: ", "))]"
            print("{\"what\": \"\(what)\", \"batch\": \(batch), \"threads\": \(threads), \"reps\": \(reps), \"seconds_median\": \(r.median), \"seconds_all\": [\(all)], \"images_per_second\": \(Double(batch) / r.median), \"gflops\": \(r.flops / r.median / 1e9), \"arena_bytes\": \(r.arenaBytes), \"peak_rss_bytes\": \(BenchSupport.peakRSS())\(ready)}")
        }
    }
}

/// `--kv-cache` values.
enum KVCacheDType: String, ExpressibleByArgument, CaseIterable {
    case f32, f16
    var dtype: DType { self == .f32 ? .float32 : .float16 }
}

/// `--weights` values: the storage precision of linear-layer weights.
enum WeightsDType: String, ExpressibleByArgument, CaseIterable {
    case f32, f16, bf16
    var dtype: DType {
        switch self {
        case .f32: .float32
        case .f16: .float16
        case .bf16: .bfloat16
        }
    }
}
