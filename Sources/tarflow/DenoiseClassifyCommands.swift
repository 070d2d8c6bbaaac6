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
            guard batchSize > 0 else { throw TarFlowError.invalidInput("--batch-size must be positive") }
            guard threads > 0 else { throw TarFlowError.invalidInput("--threads must be positive") }
            let m = try TarFlowModel(contentsOf: URL(fileURLWithPath: model), threads: threads)
            let set = try ImageSet.load(contentsOf: URL(fileURLWithPath: images), channels: m.config.inChannels, size: m.config.imgSize)
            guard !set.isInteger else {
                throw TarFlowError.invalidInput("\(images): denoising acts on continuous images; give a float .npy in [-1, 1]")
            }
            let labs = try labels.map { try ImageSet.loadLabels(contentsOf: URL(fileURLWithPath: $0)) }
            if let labs, labs.count != set.count { throw TarFlowError.invalidInput("\(labs.count) labels for \(set.count) images") }
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

    func run() throws {
        guarded {
            guard batchSize > 0 else { throw TarFlowError.invalidInput("--batch-size must be positive") }
            guard offset >= 0 else { throw TarFlowError.invalidInput("--offset must be >= 0") }
            if let limit, limit <= 0 { throw TarFlowError.invalidInput("--limit must be positive") }
            guard threads > 0 else { throw TarFlowError.invalidInput("--threads must be positive") }
            let m = try TarFlowModel(contentsOf: URL(fileURLWithPath: model), threads: threads)
            let set = try ImageSet.load(contentsOf: URL(fileURLWithPath: images), channels: m.config.inChannels, size: m.config.imgSize)
            guard offset < set.count else { throw TarFlowError.invalidInput("--offset \(offset) is past the \(set.count) images") }
            let end = limit.map { min(set.count, offset + $0) } ?? set.count
            let truth = try trueLabels.map { try ImageSet.loadLabels(contentsOf: URL(fileURLWithPath: $0)) }
            if let truth, truth.count != set.count { throw TarFlowError.invalidInput("\(truth.count) true labels for \(set.count) images") }
            let r = try m.classify(images: set, range: offset..<end, batchSize: batchSize)
            let n = r.predictions.count
            if let save { try NPY.write(HostArray(shape: [n], int64s: r.predictions.map(Int64.init)), to: URL(fileURLWithPath: save)) }
            if let saveLosses { try NPY.write(HostArray(shape: [n, r.numClasses], floats: r.losses), to: URL(fileURLWithPath: saveLosses)) }
            var accuracy: Double?
            if let truth {
                let correct = zip(r.predictions, truth[offset..<end]).filter { $0 == $1 }.count
                accuracy = Double(correct) / Double(max(n, 1))
            }
            if json {
                print("{" + (accuracy.map { "\"accuracy\": \($0), " } ?? "") + "\"count\": \(n)}")
            } else {
                print("classified \(n) image(s)" + (accuracy.map { String(format: ", accuracy %.2f%%", 100 * $0) } ?? ""))
            }
        }
    }
}
