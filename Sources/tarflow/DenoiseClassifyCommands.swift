import ArgumentParser
import Foundation
import FlowRuntime
import TarFlow

struct Denoise: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "One score-based denoising step, x + σ²∇ₓ log p(x), as the official code.")

    @Argument(help: "The model file.") var model: String
    @Option(help: "Float images: a float32/float64 .npy of shape (B, C, H, W) (or (B, H, W) when C = 1) in [-1, 1].") var images: String
    @Option(help: "Labels: an int64/int32 .npy; -1 = unconditional.") var labels: String?
    @Option(parsing: .unconditional, help: "Noise level σ (default: the one stored in the model).") var noiseStd: Double?
    @Option(parsing: .unconditional, help: "Images per step.") var batchSize: Int = 64
    @Option(name: .shortAndLong, help: "Output .npy (float32, B,C,H,W).") var output: String
    @Option(help: "Also write the gradient of each batch's loss 0.5·mean(z²) − mean(logdets) (.npy).") var saveGrad: String?
    @Option(parsing: .unconditional, help: "Threads for the GEMMs.") var threads: Int = 1

    func run() throws {
        guarded {
            try Checks.positive(batchSize, "--batch-size")
            try Checks.threads(threads)
            if let n = noiseStd, !(n >= 0 && n.isFinite) { throw CLIError("--noise-std \(n) must be a finite number >= 0") }
            try Checks.output(output, "-o")
            try Checks.output(saveGrad, "--save-grad")
            let m = try Checks.model(model, threads: threads)
            if noiseStd == nil, m.noiseStd == nil { throw CLIError("the model records no training noise level; pass --noise-std σ") }
            let set = try ImageSet.load(contentsOf: URL(fileURLWithPath: images), channels: m.config.inChannels, size: m.config.imgSize)
            guard !set.isInteger else {
                throw CLIError("--images \(images): denoising acts on continuous images; give a float .npy in [-1, 1]")
            }
            let labs = try labels.map { try ImageSet.loadLabels(contentsOf: URL(fileURLWithPath: $0)) }
            if let labels, let labs {
                guard labs.count == set.count else { throw CLIError("--labels \(labels): \(labs.count) labels for \(set.count) images") }
                try Checks.labels(labs, from: "--labels \(labels)", config: m.config)
            }
            let rows = min(batchSize, set.count)
            try Checks.memory(Checks.add(try Checks.gradientBytes(m, rows: rows), Checks.mul(set.count, Checks.mul(m.config.imageDim, 8))),
                              batchFlag: "--batch-size", batch: rows)
            var out: [Float] = [], grads: [Float] = []
            var start = 0
            while start < set.count {
                let end = min(start + batchSize, set.count)
                let r = try m.denoise(images: set.batch(start..<end, dequantization: .none), labels: labs.map { Array($0[start..<end]) }, noiseStd: noiseStd)
                out += r.images.floats
                if saveGrad != nil { grads += r.gradient.floats }
                start = end
            }
            let shape = [set.count, set.channels, set.size, set.size]
            try NPY.write(HostArray(shape: shape, floats: out), to: URL(fileURLWithPath: output))
            if let saveGrad { try NPY.write(HostArray(shape: shape, floats: grads), to: URL(fileURLWithPath: saveGrad)) }
        }
    }
}

struct Classify: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Classify images by Bayes rule: the label with the smallest loss 0.5·mean(z²) − logdets.")

    @Argument(help: "The model file.") var model: String
    @Option(help: "Images as for `likelihood`; integer images map to x/255·2−1 with no noise.") var images: String
    @Option(help: "True labels (.npy or IDX) to report accuracy.") var trueLabels: String?
    @Option(parsing: .unconditional, help: "Images per chunk (each runs as one batch of chunk × classes).") var batchSize: Int = 64
    @Option(parsing: .unconditional, help: "Index of the first image.") var offset: Int = 0
    @Option(parsing: .unconditional, help: "Number of images (default: all after --offset).") var limit: Int?
    @Option(help: "Write int64 predictions (B) to this .npy.") var save: String?
    @Option(help: "Write float32 losses (B, classes) to this .npy.") var saveLosses: String?
    @Option(parsing: .unconditional, help: "Threads for the GEMMs.") var threads: Int = 1
    @Flag(help: "Print one JSON line.") var json = false
    @OptionGroup var sharding: ShardOptions

    func run() throws {
        guarded {
            try Checks.batching(batchSize: batchSize, offset: offset, limit: limit, threads: threads)
            let shard = try sharding.resolve()
            let save = shardPath(self.save, shard), saveLosses = shardPath(self.saveLosses, shard)
            for (path, flag) in [(save, "--save"), (saveLosses, "--save-losses")] {
                if let path, ![PartFormat.npy, .npz].contains(try? PartFormat(path: path)) { throw CLIError("\(flag) \(path) must end in .npy (or .npz)") }
                try Checks.output(path, flag)
            }
            let m = try Checks.model(model, threads: threads)
            guard m.config.numClasses > 0 else { throw CLIError("\(model): the model is unconditional (num_classes = 0); it cannot classify") }
            let set = try ImageSet.load(contentsOf: URL(fileURLWithPath: images), channels: m.config.inChannels, size: m.config.imgSize)
            guard offset < set.count else { throw CLIError("--offset \(offset) is past the \(set.count) images") }
            let end = limit.map { min(set.count, offset + min($0, set.count)) } ?? set.count
            let truth = try trueLabels.map { try ImageSet.loadLabels(contentsOf: URL(fileURLWithPath: $0)) }
            if let truth, truth.count != set.count { throw CLIError("--true-labels \(trueLabels ?? ""): \(truth.count) labels for \(set.count) images") }
            let part = try shard?.images(of: offset..<end) ?? offset..<end
            let rows = Checks.mul(min(batchSize, part.count), m.config.numClasses)
            try Checks.memory(Checks.mul(try Checks.forwardBytes(m, rows: rows), 2), batchFlag: "--batch-size", batch: min(batchSize, part.count))
            let r = try m.classify(images: set, range: part, batchSize: batchSize)
            let n = r.predictions.count
            let correct = truth.map { t in zip(r.predictions, t[part]).filter { $0 == $1 }.count }
            func record(_ output: String) throws -> RunRecord? {
                try shard.map { s in
                    RunRecord(command: "classify", output: output, model: try ContentDigest.file(URL(fileURLWithPath: model)), seed: nil,
                              parameters: ["--images": ContentDigest.of(set), "--true-labels": truth.map { ContentDigest.of($0) } ?? "none"],
                              shard: s, part: part, run: offset..<end, correct: correct)
                }
            }
            if let save {
                try ShardMerge.write([("predictions", HostArray(shape: [n], int64s: r.predictions.map(Int64.init)))], record: try record("--save"), to: URL(fileURLWithPath: save))
            }
            if let saveLosses {
                try ShardMerge.write([("losses", HostArray(shape: [n, r.numClasses], floats: r.losses))], record: try record("--save-losses"), to: URL(fileURLWithPath: saveLosses))
            }
            Summary.classify(count: n, correct: correct, json: json)
        }
    }
}
