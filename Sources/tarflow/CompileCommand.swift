import ArgumentParser
import Foundation
import TarFlow

struct Compile: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compile a model ahead of time: store the optimized graphs and memory plans in the model file.",
        discussion: """
            Loading the result runs no compiler passes and uses the stored memory plans for the batch sizes \
            given (other batch sizes are planned when first used). With --config and --random-weights, \
            the model is made from a config file alone (weights drawn from the seed), to compile, inspect \
            and benchmark a configuration without its checkpoint.
            """)

    @Argument(help: "The model file (.tflow) to compile; omit with --config.") var model: String?
    @Option(name: .shortAndLong, help: "The compiled model file to write (.tflow).") var output: String
    @Option(parsing: .unconditional, help: "Batch sizes to plan memory for, e.g. 1,16,64 (decode steps also get twice each, for guidance).")
    var batch: String = "1"
    @Option(help: "Functions to compile: any of forward, sample, gradient; none writes the model without compiled functions.")
    var functions: String = "forward,sample,gradient"
    @Option(help: "A config JSON (keys as Tests/Fixtures/*/case.json) instead of a model file; needs --random-weights.")
    var config: String?
    @Option(help: "Seed of the generated weights for --config.") var randomWeights: UInt64?
    @Option(help: "Re-encode the linear-layer weights: f32, f16 or bf16 (default: keep the file's).") var weights: WeightsDType?
    @Option(help: "KV cache of the compiled decode steps: f32 or f16 (default: f16 for f16/bf16 weights, f32 for f32).")
    var kvCache: KVCacheDType?
    @Flag(help: "No progress bar (drawn on stderr only when it is a terminal).") var quiet = false

    func run() throws {
        guarded {
            try Checks.output(output, "-o")
            try Checks.distinct(outputs: [("-o", output)], inputs: [("model", model), ("--config", config)])
            let batches = try AheadOfTime.parseBatches(batch)
            let fs = try AheadOfTime.parseFunctions(functions)
            // The file is verified once, as it is read; a drawn model once, here.
            let source: VerifiedModel
            switch (model, config) {
            case (let path?, nil):
                guard randomWeights == nil else { throw CLIError.invalidInput("--random-weights goes with --config, not with a model file") }
                // Compiled functions already in the file are replaced, so stale ones need not load.
                source = try ModelFile.readVerified(contentsOf: URL(fileURLWithPath: path), compiledFunctions: .drop)
            case (nil, let path?):
                guard let seed = randomWeights else {
                    throw CLIError.invalidInput("--config needs --random-weights SEED (there is no checkpoint to take weights from)")
                }
                let (c, noise) = try AheadOfTime.loadConfig(contentsOf: URL(fileURLWithPath: path))
                try Checks.memory(c.weightMemoryNeed, "--config \(path)", fix: "use a smaller config")
                var m = try AheadOfTime.randomModel(config: c, seed: seed, noiseStd: noise)
                m.metadata["source.file"] = .string(URL(fileURLWithPath: path).lastPathComponent)
                source = try m.verified()
            case (.some, .some):
                throw CLIError.invalidInput("give a model file or --config, not both")
            case (nil, nil):
                throw CLIError.invalidInput("give a model file to compile, or --config CONFIG.json --random-weights SEED")
            }
            var model = source
            if let weights {
                try Checks.memory(model.model.reencodingMemoryNeed(as: weights.dtype), "--weights \(weights.rawValue)", fix: "keep the file's precision (drop --weights)")
                model = try model.storingLinearWeights(as: weights.dtype)
            }
            try Checks.memory(model.model.packingMemoryNeed(), "-o \(output)", fix: "free memory, or raise the memory limit")
            var bar: ProgressBar?
            let compiled = try AheadOfTime.compile(model, functions: fs, batches: batches, kvCache: kvCache?.dtype, progress: { done, total in
                if bar == nil { bar = ProgressBar("compile", total: total, unit: "graphs", quiet: quiet) }
                bar?.update(done)
            })
            bar?.finish()
            try ModelFile.write(compiled, to: URL(fileURLWithPath: output))
            let plans = compiled.compiled.reduce(0) { $0 + $1.plans.count }
            if compiled.compiled.isEmpty { print("wrote \(output): no compiled functions (--functions none)"); return }
            print("wrote \(output): \(compiled.compiled.count) compiled function(s) (\(compiled.compiled.map(\.name).joined(separator: ", "))), "
                + "\(plans) memory plan(s) for batch \(batches.map(String.init).joined(separator: ","))")
        }
    }
}
