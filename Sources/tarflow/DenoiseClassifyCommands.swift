import ArgumentParser
import Foundation
import TarFlow

struct Denoise: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "One score-based denoising step, x + σ²∇ₓ log p(x), as the official code.")

    @Argument(help: "The model file.") var model: String
    @Option(help: "Float images: a float32/float64 .npy of shape (B, C, H, W) (or (B, H, W) when C = 1) in [-1, 1].") var images: String
    @Option(help: "Labels: an int64/int32 .npy; -1 = unconditional.") var labels: String?
    @Option(parsing: .unconditional, help: "Noise level σ (default: the one stored in the model).") var noiseStd: Double?
    @Option(parsing: .unconditional, help: "Images per step.") var batchSize: Int = 64
    @Option(name: .shortAndLong, help: "Output .npy or .npz (float32, B,C,H,W; the .npz member is 'images').") var output: String
    @Option(help: "Also write the gradient of each batch's loss 0.5·mean(z²) − mean(logdets) (.npy, or .npz with member 'grad').") var saveGrad: String?
    @Option(parsing: .unconditional, help: "Threads for the GEMMs.") var threads: Int = 1
    @Flag(help: "No progress bar (drawn on stderr only when it is a terminal).") var quiet = false

    func run() throws {
        guarded {
            try Checks.positive(batchSize, "--batch-size")
            try Checks.threads(threads)
            if let n = noiseStd, !(n >= 0 && n.isFinite) { throw CLIError("--noise-std \(n) must be a finite number >= 0") }
            try OutputFormat.check(output, "-o", allowed: [.npy, .npz])
            try OutputFormat.check(saveGrad, "--save-grad", allowed: [.npy, .npz])
            try Checks.output(output, "-o")
            try Checks.output(saveGrad, "--save-grad")
            try Checks.distinct(outputs: [("-o", output), ("--save-grad", saveGrad)], inputs: [("model", model), ("--images", images), ("--labels", labels)])
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
            try Checks.memory(m, .denoise(images: set.count, batchSize: batchSize, keepGradient: saveGrad != nil), flag: "--batch-size")
            try Checks.imageRange(set, flag: "--images", path: images)
            var out: [Float] = [], grads: [Float] = []
            var start = 0
            let bar = ProgressBar("denoise", total: set.count, unit: "images", quiet: quiet)
            while start < set.count {
                let end = min(start + batchSize, set.count)
                let r = try m.denoise(images: set.batch(start..<end, dequantization: .none), labels: labs.map { Array($0[start..<end]) }, noiseStd: noiseStd, firstImage: start)
                out += r.images.floats
                if saveGrad != nil { grads += r.gradient.floats }
                start = end
                bar.update(start)
            }
            bar.finish()
            let shape = [set.count, set.channels, set.size, set.size]
            try OutputFormat.write([("images", Tensor(shape: shape, floats: out))], to: output, "-o", allowed: [.npy, .npz])
            if let saveGrad { try OutputFormat.write([("grad", Tensor(shape: shape, floats: grads))], to: saveGrad, "--save-grad", allowed: [.npy, .npz]) }
        }
    }
}

struct Classify: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Classify images by Bayes rule: the label with the smallest loss 0.5·mean(z²) − logdets.")

    @Argument(help: "The model file.") var model: String
    @Option(help: "Images as for `likelihood`; integer images map to x/255·2−1 with no noise.") var images: String
    @Option(help: "True labels (.npy or IDX) to report accuracy.") var trueLabels: String?
    @Flag(help: "Image folders: the sorted subfolder names are the classes and give the true labels, as torchvision's ImageFolder.") var labelsFromFolders = false
    @Flag(help: "Image folders: torchvision's Resize(image size) (shorter side, bilinear, antialiased) then CenterCrop; without it images must have the model's size.") var resize = false
    @Option(parsing: .unconditional, help: "Images per chunk (each runs as one batch of chunk × classes).") var batchSize: Int = 64
    @Option(parsing: .unconditional, help: "Index of the first image.") var offset: Int = 0
    @Option(parsing: .unconditional, help: "Number of images (default: all after --offset).") var limit: Int?
    @Option(help: "Write int64 predictions (B) to this .npy or .npz (member 'predictions').") var save: String?
    @Option(help: "Write float32 losses (B, classes) to this .npy or .npz (member 'losses').") var saveLosses: String?
    @OptionGroup var common: ChunkedRunOptions

    func run() throws {
        guarded {
            let shard = try common.start(batchSize: batchSize, offset: offset, limit: limit)
            let save = shardPath(self.save, shard), saveLosses = shardPath(self.saveLosses, shard)
            try OutputFormat.check(save, "--save", allowed: [.npy, .npz])
            try OutputFormat.check(saveLosses, "--save-losses", allowed: [.npy, .npz])
            try Checks.output(save, "--save")
            try Checks.output(saveLosses, "--save-losses")
            try Checks.distinct(outputs: [("--save", save), ("--save-losses", saveLosses)],
                                inputs: [("model", model), ("--images", images), ("--true-labels", trueLabels)])
            let m = try Checks.model(model, threads: common.threads)
            guard m.config.numClasses > 0 else { throw CLIError("\(model): the model is unconditional (num_classes = 0); it cannot classify") }
            if trueLabels != nil, labelsFromFolders { throw CLIError("give --true-labels or --labels-from-folders, not both") }
            // Only the images up to --offset + --limit are read (and inflated).
            let needed = limit.map { Saturating.add(offset, $0) }
            let (set, folderLabels) = try Checks.images(images, model: m, resize: resize, labelsFromFolders: labelsFromFolders, limit: needed)
            guard offset < set.count else { throw CLIError("--offset \(offset) is past the \(set.fileCount) images") }
            let end = limit.map { min(set.count, offset + min($0, set.count)) } ?? set.count
            let truthFile = try trueLabels.map { try ImageSet.loadLabels(contentsOf: URL(fileURLWithPath: $0), limit: needed) }
            let truth = truthFile?.labels ?? folderLabels
            if let truthFile, truthFile.fileCount != set.fileCount { throw CLIError("--true-labels \(trueLabels ?? ""): \(truthFile.fileCount) labels for \(set.fileCount) images") }
            if let truth { try Checks.trueLabels(truth, from: trueLabels.map { "--true-labels \($0)" } ?? "--labels-from-folders", classes: m.config.numClasses) }
            let part = try shard?.images(of: offset..<end) ?? offset..<end
            try Checks.memory(m, .classify(images: part.count, batchSize: batchSize), flag: "--batch-size")
            try Checks.imageRange(set, flag: "--images", path: images)
            let bar = ProgressBar("classify", total: part.count, unit: "images", quiet: common.quiet)
            let r = try m.classify(images: set, range: part, batchSize: batchSize, progress: { done, _ in bar.update(done) })
            bar.finish()
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
                try ShardMerge.write([("predictions", Tensor(shape: [n], int64s: r.predictions.map(Int64.init)))], record: try record("--save"), to: URL(fileURLWithPath: save))
            }
            if let saveLosses {
                try ShardMerge.write([("losses", Tensor(shape: [n, r.numClasses], floats: r.losses))], record: try record("--save-losses"), to: URL(fileURLWithPath: saveLosses))
            }
            Summary.classify(count: n, correct: correct, json: common.json)
        }
    }
}
